r"""The distribution of a flow: x = T^{-1}(u), u ~ base, with T a Bijection (data -> base).

    log p(x) = log p_U(T(x)) + log|det dT/dx|

``rsample`` draws u and pushes it through the inverse; it remembers the log-density of the
sample it returned, so ``log_prob`` of that same tensor costs nothing (which matters for an IAF
posterior, whose inverse is the sequential direction). Any other tensor is scored by the
forward pass.
"""

import typing

import torch
from torch.distributions import Distribution

from dgmkit.distributions.normal import DiagonalNormal
from dgmkit.distributions.sampling import JointSampler, rsample_and_log_prob
from dgmkit.distributions.shapes import check_event_width
from dgmkit.errors import finite_at_least

if typing.TYPE_CHECKING:
    from dgmkit.transforms.base import Bijection

__all__ = ["FlowDistribution", "POSTERIOR_MEANS", "location", "location_name", "standard_normal"]

POSTERIOR_MEANS = "posterior means E[z|x]"  # location(q) of a q(z|x) that names no point of its own


class FlowDistribution(Distribution, JointSampler):
    """A flow over vectors, event shape (D,).

    ``base``: a distribution with event shape (D,) and batch shape (), (B,) or more, (S, B);
    ``bijection``: data -> base; ``context``: (*batch, *) passed to the bijection (conditional
    flows), a row for each of the base's rows (the bijection sees them flattened: (S B, *));
    ``temperature``: samples use u = mean + T (u' - mean), the usual reduced-temperature draw
    for a Gaussian base (log_prob stays that of the flow at temperature 1).
    """

    arg_constraints: dict = {}
    has_rsample = True
    location_name: typing.ClassVar[str] = "posterior base means through the flow, T^-1(E[u|x])"

    def __init__(
        self, base: Distribution, bijection: "Bijection", context: torch.Tensor | None = None, temperature: float = 1.0
    ):
        finite_at_least("temperature", temperature, 0, strict=True)
        self.base, self.bijection, self.context, self.temperature = base, bijection, context, temperature
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def _flat_context(self, n_rows: int, sample_dims: int) -> torch.Tensor | None:
        if self.context is None:
            return None
        c = self.context
        if len(self.batch_shape) > 1:  # (S, B, *) of an encoder given (S, B, D): a row per base row, in its order
            c = c.flatten(0, len(self.batch_shape) - 1)
        return c.expand(*([n_rows // c.shape[0]] if sample_dims else []), *c.shape).reshape(n_rows, *c.shape[1:])

    def rsample_and_log_prob(
        self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size(), generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sample_shape = torch.Size(sample_shape)
        u, log_pu = rsample_and_log_prob(self.base, sample_shape, generator, device=self.base.mean.device)
        if self.temperature != 1.0:
            u = self.base.mean + self.temperature * (u - self.base.mean)
            log_pu = self.base.log_prob(u)  # (*sample, *batch)
        lead = u.shape[:-1]
        x, ladj = self.bijection.inverse(u.reshape(-1, u.shape[-1]), self._flat_context(lead.numel(), len(sample_shape)))
        x = x.reshape(u.shape)
        log_px = log_pu - ladj.reshape(lead)
        self._cache = (x, log_px)
        return x, log_px

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self._cache is not None and x is self._cache[0]:
            return self._cache[1]
        # (a MAF met another width as torch's "mat1 and mat2 shapes cannot be multiplied")
        check_event_width(x, self.event_shape[-1], "a flow", "x")
        # (the flow's precision, as a flow model's: float64 x against float32 layers was torch's
        # "mat1 and mat2 must have the same dtype" from a MADE's first layer)
        x = x.to(self.base.mean.dtype)
        sample_dims = max(x.dim() - 1 - len(self.batch_shape), 0)
        if x.shape[sample_dims:-1] != self.batch_shape:  # broadcast x over the batch (an unbatched x too)
            x = x.expand(*x.shape[:sample_dims], *self.batch_shape, x.shape[-1])
        lead = x.shape[:-1]
        u, ladj = self.bijection(x.reshape(-1, x.shape[-1]), self._flat_context(lead.numel(), sample_dims))
        return self.base.log_prob(u.reshape(x.shape)) + ladj.reshape(lead)

    def log_prob_passes(self) -> int:
        """The bijection's passes that ``log_prob`` of a point it did not draw takes (its data ->
        base direction: an IAF posterior's sequential one, a pass a latent and layer)."""
        return self.bijection.passes()

    @torch.no_grad()
    def location(self) -> torch.Tensor:
        """T^{-1}(E[u]): the image of the base mean, a representative point (for an IAF posterior,
        the code at eps = 0) used for reconstructions, plots and active units. E[x] has no
        closed form."""
        u = self.base.mean
        lead = u.shape[:-1]
        x, _ = self.bijection.inverse(u.reshape(-1, u.shape[-1]), self._flat_context(lead.numel(), 0))
        return x.reshape(u.shape)

    @property
    def mean(self) -> torch.Tensor:
        raise NotImplementedError("a flow's mean has no closed form; average samples instead")


def location(q: Distribution) -> torch.Tensor:
    """A representative point of q: its ``location()`` where it defines one (a flow: the image of
    its base mean; a hierarchical posterior: the layer-by-layer means), else its mean."""
    own = getattr(q, "location", None)
    return own() if callable(own) else q.mean


def location_name(q: Distribution) -> str:
    """What ``location(q)`` of a posterior q(z|x) is, in words for a figure's title or a line:
    the posterior means unless q names its own point (a flow's, a hierarchical posterior's)."""
    return getattr(q, "location_name", POSTERIOR_MEANS)


def standard_normal(
    features: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> DiagonalNormal:
    zeros = torch.zeros(features, device=device, dtype=dtype)
    return DiagonalNormal(zeros, torch.ones_like(zeros))
