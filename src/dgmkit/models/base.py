"""The model contract: what objectives, evaluation and the CLI may rely on.

Capabilities are declared as class attributes, in the manner of ``Distribution.has_rsample``
and ``has_enumerate_support``, so that no code outside a model's own module needs to know its
class:

- ``estimate_kind``: how ``dgm eval`` estimates log p(x): ``"exact"`` (``log_prob``),
  ``"importance-sampled"`` (k draws from ``posterior``, a stochastic lower bound that tends to
  log p(x)), ``"bound"`` (an importance-weighted bound that stays a bound, e.g. variational
  dequantization of integer data) or ``"reconstruction"`` (no density: log p(x | z = f(x))).
- ``estimate_draws``: what that estimate (and the evaluation's other terms) draws at random,
  in words (``"the importance samples"``), or None where it draws nothing: inputs scored
  together share the draws, and a seed given for nothing drawn is refused.
- ``time-sampled``: a variational bound with no proposal to importance-sample, estimated by
  averaging ``bound_terms(x, t)`` over times t (a diffusion model, ``TimeSampledBound``).
- ``AnyOrderModel``: a network that predicts any entries from any others (a masked diffusion
  model) is an autoregressive model in every order of the entries; ``dgm eval --orders M`` scores
  the exact likelihood of the uniform mixture of M such orders.
- ``has_latents``: ``posterior(x)`` is over interpretable latents: reconstructions,
  interpolations, latent plots and active units apply; ``decoded_name``: what decoding a code
  shows, in words (the means of p(x|z); a PixelVAE's greedy decode, as it has no mean).
- ``can_sample``, ``sample_means``, ``sample_temperature``, ``sample_cached``: what
  ``sample`` offers (a prior to sample from; a separate mean of p(x|z) to show; a base
  temperature; a cached sequential path beside the naive one).
- ``sample_steps``: ``sample`` takes the keyword ``steps`` (a diffusion model's ancestral
  sampling steps).
- ``sample_kind``: what ``sample`` returns, so that ``sample(0)`` gives ``no_samples()`` without
  a draw (it ran the whole network, chain or pixel loop once): ``"float"`` (two tensors
  (n, *event_shape) in the model's floating dtype), ``"levels"`` (two of integer levels, int64),
  or None (unsaid: ``sample(0)`` makes one draw and cuts it to none). A class that defines its
  own ``sample`` says it again, or it is None. The options the toolkit's samplers take (``steps``,
  ``temperature``, ``cached``) are checked, with n and the generator, before either answer.
- ``sample_period``: the draws of one ``sample(n)`` call come in cycles of this many (a class-
  conditional model's classes in turn), so a caller that draws in batches keeps each batch a
  multiple of it; 1 for the rest.
- ``trains_in_bf16``: training under bf16 autocast was checked for this family and holds, so
  that ``--precision auto`` uses bf16 on a GPU that has it; a family that does not declare it
  trains in fp32 under auto (bf16 when asked for by name). Measured on an H100: the two-layer
  VampPrior HVAE's loss became NaN within 200 steps of a compiled bf16 step (fp32: no NaN),
  and a small gated VAE steps faster in fp32 than in bf16 (the casts cost more than they save).
- ``coding``: how ``dgm compress`` codes the model's data losslessly (``dgmkit.coding``):
  ``"sequential"`` (a range coder driven by exact conditionals p(x_d | x_<d), an autoregressive
  model) or ``"bits-back"`` (an ANS stack driven by q(z|x), p(x|z) and p(z), a VAE), or None;
  ``coding_levels``: the number of values of a pixel it codes, or None where it cannot.
- ``data_support``: the values an entry of the data may take (a ``torch.distributions``
  constraint: 0 or 1, the integers 0..L-1), or None for a density on the real line;
  ``check_data(x)`` refuses data outside it, as every evaluation function and the Trainer do
  where data enter. ``discrete_data``: whether ``log_prob`` is a probability of discrete values
  (a discrete support, or a likelihood head that says ``discrete``) rather than a density, so
  that ``evaluate`` gives bits/dim of the data as they stand where no bins are named.
- ``reconstructs``: ``reconstruct(x)`` gives the mean of p(x|z) at a representative code of x
  (latent models, autoencoders, code models).
- ``has_layers``: a stack of stochastic layers (``path``, ``top``, ``descend``): diagnosed and
  reported layer by layer.
- ``point_mass_posterior``: q(z|x) is a point mass (a VQ-VAE's code grid): more importance draws
  change nothing, and the bound splits into log p(x|z_q) and log p(z_q).
- ``can_impute``: the encoder reads missing entries (as 0, as MIWAE trains it) and the
  likelihood leaves them out, or the model scores them exactly (PPCA's Gaussian marginal of the
  observed entries and its exact p(z | x_o)), so data with missing entries (NaN) can be scored,
  log p(x_o) of the observed entries, and their missing entries imputed by importance sampling;
  other models refuse incomplete data (``check_data``). ``exact_imputation``: the model gives
  E[x_m | x_o] in closed form (``conditional_mean``), which imputation takes as its single
  imputation in place of the importance-sampled estimate; its ``posterior`` is the exact
  p(z | x_o), whose independent draws give its multiple imputations (no importance resampling).
- ``produces_codes``: ``codes(x)`` gives discrete code grids another model can be trained on
  (``--codes-of``) and whose prior it can take back (``--code-prior``).
- ``discrete_latents``: z takes discrete values (one-hot categories, binary units), so a code
  dimension cannot be swept across a range (``dgm traverse``).
- ``decoded_dims``: how many leading dimensions of a flattened code p(x|z) reads (None: all); a
  hierarchical VAE whose decoder sees z_1 alone reads z_1's, and a sweep of a higher layer's
  dimension would leave the picture unchanged (``dgm traverse`` sweeps the ones read).
- ``fixed_step``: a training step runs the same device operations every time (what a step
  captured as one CUDA graph, ``--graph-step``, replays); a model that chooses on the host
  between variants in each step (a MADE drawing one of its masks) does not.

What a model reports beyond the numbers every model has (a WAE's MMD, a diffusion model's KL
split, a classifier's accuracy) it declares by ``evaluation_terms`` (``models.terms.Term``).
"""

import functools
import inspect
import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Literal, NamedTuple, TypeVar, cast

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from dgmkit._rng import checked_generator
from dgmkit.conditional import Decoder, LikelihoodHead
from dgmkit.data.transforms import values_seen
from dgmkit.devices import dtype_of
from dgmkit.distributions.pixels import observed_log_prob
from dgmkit.errors import DataError, DgmError, finite_at_least, true_or_false, whole_in
from dgmkit.models.terms import Term

if TYPE_CHECKING:
    from dgmkit.priors import Prior

__all__ = [
    "data_batch",
    "EstimateKind",
    "GenerativeModel",
    "DecodedModel",
    "ExactLikelihoodModel",
    "VariationalModel",
    "LatentVariableModel",
    "ExactLatentVariableModel",
    "JointTerms",
    "CapabilityError",
    "ClosedFormFit",
    "EMFit",
    "EnumeratedELBO",
    "ModelELBO",
    "TimeSampledBound",
]

EstimateKind = Literal["exact", "importance-sampled", "bound", "time-sampled", "reconstruction"]
ESTIMATE_KINDS: tuple[str, ...] = ("exact", "importance-sampled", "bound", "time-sampled", "reconstruction")


class CapabilityError(DgmError, ValueError):
    """A model was asked for something it does not declare (a user error: the CLI reports it in one line)."""


class JointTerms(NamedTuple):
    """log p(x | z) and log p(z), each of shape (*sample, B)."""

    log_px_z: torch.Tensor
    log_pz: torch.Tensor


R = TypeVar("R")
_ESTIMATE_DRAWS = {"importance-sampled": "the importance samples", "time-sampled": "the diffusion times"}


class GenerativeModel(nn.Module, ABC):
    """A model of data with events of shape ``event_shape``; see the module docstring for the
    declared capabilities."""

    estimate_kind: ClassVar[str] = "exact"
    has_latents: ClassVar[bool] = False
    decoded_name: ClassVar[str] = "means of p(x|z)"  # (read where a code is decoded: models with latents)
    can_sample: ClassVar[bool] = True
    sample_means: ClassVar[bool] = False
    sample_temperature: ClassVar[bool] = False
    sample_cached: ClassVar[bool] = False
    sample_steps: ClassVar[bool] = False
    sample_kind: ClassVar[Literal["float", "levels"] | None] = None
    trains_in_bf16: ClassVar[bool] = False
    reconstructs: ClassVar[bool] = False
    has_layers: ClassVar[bool] = False
    point_mass_posterior: ClassVar[bool] = False
    can_impute: ClassVar[bool] = False
    exact_imputation: ClassVar[bool] = False
    produces_codes: ClassVar[bool] = False
    discrete_latents: ClassVar[bool] = False
    coding: ClassVar[Literal["sequential", "bits-back"] | None] = None
    event_shape: tuple[int, ...]

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Each model's own ``sample`` takes its count n checked before it draws anything: a
        whole number >= 0 (a NumPy one too; not a bool, a float or a tensor), else a ValueError
        that names n, where torch would refuse a size in its own words deep in the draw; and its
        generator a torch.Generator or None (``checked_generator``). A ``sample_kind`` inherited
        is not taken to describe a ``sample`` of the class's own."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("sample")
        if callable(own) and "sample_kind" not in cls.__dict__:
            cls.sample_kind = None
        if callable(own) and not getattr(own, "_counts_checked", False):
            cls.sample = _counted(own)  # type: ignore[method-assign]

    @property
    def estimate_draws(self) -> str | None:
        return _ESTIMATE_DRAWS.get(self.estimate_kind)

    @property
    def sample_period(self) -> int:
        return 1

    @property
    def prior_name(self) -> str:
        """The prior that ``sample`` draws its latents from, in words for a line or a caption."""
        return "p(z)"

    def untaken_sample_note(self, option: str) -> str | None:
        """Why ``sample``'s ``option`` (``"naive"``, ...), which this model does not take, would
        change nothing, in words that follow "the model's" (None: nothing to add)."""
        return None

    @property
    def coding_levels(self) -> int | None:
        return None

    @property
    def fixed_step(self) -> bool:
        return True

    @property
    def decoded_dims(self) -> int | None:
        """How many leading dimensions of a flattened code p(x|z) reads; None: all of them."""
        return None

    @property
    def data_support(self) -> constraints.Constraint | None:
        """The values an entry of the data may take (``torch.distributions.constraints``): the
        integers 0..L-1 of a discrete likelihood, 0 or 1 for binary units; None where the model
        states none (a density on the real line)."""
        return None

    @property
    def discrete_data(self) -> bool:
        """Whether the model's probabilities are of discrete values (see the module docstring)."""
        support = self.data_support
        return support is not None and support.is_discrete

    def check_data(self, x: torch.Tensor) -> None:
        """Refuses (DataError) data with an observed entry outside ``data_support``: a
        likelihood of values it does not define is no likelihood (a Bernoulli pixel's "log p" of
        the value 16 is a number, and a wrong one); infinite entries; and missing entries (NaN)
        unless the model ``can_impute`` (its likelihood of the observed entries)."""
        if x.is_complex():  # (the support's check would raise NotImplementedError)
            raise DataError(f"the data must be real numbers (bool, integers or floats), not {x.dtype}")
        if x.dim() == 0:
            raise DataError(f"the data are a single number ({float(x):g}); give datapoints, a tensor (N, *event)")
        # (flat rows to an image model: an IndexError inside; a model of one's own may keep its
        # event shape as a list or torch.Size, or not at all)
        event = getattr(self, "event_shape", None)
        if event is not None:
            data_batch(x, tuple(event), type(self).__name__)
        holes = torch.isnan(x) if x.is_floating_point() else None
        if holes is not None and not self.can_impute and bool(holes.any()):
            raise DataError(
                f"the data hold {int(holes.sum())} missing entries (NaN), and {type(self).__name__} cannot score "
                "incomplete data (a one-layer VAE whose likelihood factorizes over the entries can: its encoder reads "
                "a missing entry as 0 and its likelihood leaves it out); fill them in, or leave out the incomplete rows"
            )
        _refuse_infinite(x)
        empty = None if holes is None or x.dim() < 2 else holes.flatten(1).all(1)
        if empty is not None and bool(empty.any()):
            raise DataError(
                f"{int(empty.sum())} of the {len(x)} datapoints have no observed entry (all NaN), e.g. row "
                f"{int(empty.nonzero()[0])}: there is nothing of them to score; leave them out"
            )
        support = self.data_support
        if support is None or x.numel() == 0:
            return
        v = x if holes is None else x[~holes]
        fits = support.check(x) if holes is None else support.check(x.nan_to_num(0.0)) | holes  # (entry by entry)
        if v.numel() == 0 or bool(fits.all()):
            return
        bad, whole = x[~fits], support.is_discrete  # (whole numbers matter to a discrete support alone)
        raise DataError(
            f"the data do not fit {type(self).__name__}: its likelihood scores {_describe(support)} in each entry, "
            f"and the data hold {values_seen(v, whole)}"
            + ("" if len(bad) == len(v) else f" ({len(bad)} entries that do not fit: {values_seen(bad, whole)})")
            + ". Give it the data as its likelihood takes them (dgmkit.data.make_transform("
            "likelihood, dataset) makes the transform, as dgm does), to a model built for as many levels as they have"
        )

    def evaluation_terms(
        self, x: torch.Tensor, y: torch.Tensor | None, estimate: dict[str, torch.Tensor], batch_size: int
    ) -> dict[str, Term]:
        """The numbers this model adds to its evaluation of ``x`` (labels ``y`` where the split
        has them), keyed by a stable name; ``estimate``: the per-datapoint terms of its estimator
        (``evaluation.estimates``). Called under the evaluation's seeded random stream. None by
        default."""
        return {}

    def no_samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What ``sample(0)`` returns where the model states its ``sample_kind``: two tensors
        (0, *event_shape) of its kind, where the model is."""
        first = next(itertools.chain(self.parameters(), self.buffers()), None)
        device = torch.device("cpu") if first is None else first.device
        dtype = torch.long if self.sample_kind == "levels" else dtype_of(self)
        x = torch.empty(0, *self.event_shape, device=device, dtype=dtype)
        return x, x

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples and what to display for them (the means of p(x|z), or the samples), each
        (n, *event). Models with ``sample_temperature`` or ``sample_cached`` take the keyword
        ``temperature`` or ``cached`` as well."""
        raise CapabilityError(f"{type(self).__name__} defines no distribution to sample from")


# the most draws one sample(n) call is asked for: more rows than any memory holds (10**30 met "Overflow when
# unpacking long long" inside torch.randn, a TypeError, where it is a count out of range)
MAX_DRAWS = 2**40
MAX_SAMPLE_STEPS = 100_000  # a diffusion model's ancestral sampling steps, given (as its T: DiffusionConfig's max)


def sampling_steps(steps: object, name: str = "sampling steps", error: type[Exception] = ValueError) -> int:
    """``steps`` given to a diffusion model's ``sample``: a whole number in 1..MAX_SAMPLE_STEPS,
    else ``error`` naming it as ``name`` (the one check of ``sample`` and of ``dgm sample --steps``:
    10**30 steps failed with "int too big to convert" in a Gaussian chain, and a masked one ran
    for ever)."""
    return whole_in(name, steps, 1, MAX_SAMPLE_STEPS, error)


# The options of the toolkit's samplers, each checked (and made an int, a float, a bool) by the
# wrapper of every model's ``sample`` before the draw and before sample(0) answers without one:
# "2.7 steps" ran as 2, a temperature of inf drew z of inf and x all NaN, cached="no" was true.
_SAMPLE_OPTIONS: dict[str, Callable[[object], object]] = {
    "steps": lambda v: None if v is None else sampling_steps(v),  # (None: the model's default)
    "temperature": lambda v: finite_at_least("the temperature", v, 0, strict=True),
    "cached": lambda v: true_or_false("cached", v),
}


def _counted(sample: Callable[..., R]) -> Callable[..., R]:
    """``sample(self, n, ...)`` with n, its ``generator`` and the options it takes that the
    toolkit knows (``_SAMPLE_OPTIONS``) checked first, as it is called (by position or keyword);
    and sample(0), where the model states its ``sample_kind``, answered with ``no_samples()``
    (no draw), else with one draw cut to none (``GenerativeModel.__init_subclass__``)."""
    signature = inspect.signature(sample)
    count = list(signature.parameters)[1]  # (after self: n, by whatever name)

    @functools.wraps(sample)
    def checked(self: "GenerativeModel", n: int, *args: object, **kwargs: object) -> R:
        n = whole_in(f"{type(self).__name__}.sample's n (how many to draw)", n, 0, MAX_DRAWS)
        bound = signature.bind(self, n, *args, **kwargs)  # (a wrong argument: the TypeError of the call)
        for name, value in bound.arguments.items():
            if name == "generator":
                checked_generator(value, f"{type(self).__name__}.sample's generator")
            elif name in _SAMPLE_OPTIONS:
                bound.arguments[name] = _SAMPLE_OPTIONS[name](value)
        if n == 0 and self.sample_kind is not None:
            return cast(R, self.no_samples())
        if n == 0:
            bound.arguments[count] = 1
            return _none_drawn(self, lambda: sample(*bound.args, **bound.kwargs), bound.arguments.get("generator"))
        return sample(*bound.args, **bound.kwargs)

    checked._counts_checked = True  # type: ignore[attr-defined]
    return checked


def _none_drawn(model: "GenerativeModel", draw_one: Callable[[], R], generator: object) -> R:
    """What ``sample(0)`` returns: one draw's outputs cut to none of them (their shapes and types
    otherwise), with every random stream it drew from left as it was (several of torch's
    distributions refuse to draw none, or cannot reshape none)."""
    weight = next(itertools.chain(model.parameters(), model.buffers()), None)
    devices = [weight.device] if weight is not None and weight.device.type == "cuda" else []
    state = generator.get_state() if isinstance(generator, torch.Generator) else None
    with torch.random.fork_rng(devices=devices):
        out = draw_one()
    if isinstance(generator, torch.Generator) and state is not None:
        generator.set_state(state)
    return cast(R, _cut_to_none(out))


def _cut_to_none(out: object) -> object:
    """``out`` with each tensor in it cut to none of its rows: a tensor, or tuples (a NamedTuple
    kept one), lists and dicts of them; anything else as it is (a model of one's own returning
    (x, None): None[:0] failed, where its own sample(0) had given (x, None))."""
    if isinstance(out, torch.Tensor):
        return out[:0]
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return cast(Callable[..., object], type(out))(*map(_cut_to_none, out))  # (its fields, by position)
    if isinstance(out, (tuple, list)):
        return type(out)(map(_cut_to_none, out))
    if isinstance(out, dict):
        return {k: _cut_to_none(v) for k, v in out.items()}
    return out


def data_batch(x: object, event: tuple[int, ...], what: str, leading: bool = False, hint: str = "") -> torch.Tensor:
    """``x`` checked as a batch of datapoints of shape ``event``, a tensor (B, *event) (with any
    number of leading dimensions where ``leading``), for ``what`` (the method, in words): its type
    and shape only, the check of every method that takes data directly (a look at the values would
    wait for a GPU: ``check_data`` looks, where evaluations enter). A NumPy array met
    "'numpy.ndarray' object has no attribute 'to'" deep inside, and a lone datapoint of an image
    model was read as a batch of one of another shape. ``hint``: words added to a shape's refusal
    (a DataError: a ValueError)."""
    dims = ", ".join(map(str, event))
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{what} takes the data as a torch tensor (B, {dims}), got {type(x).__name__} "
            "(torch.as_tensor(x) makes one of a NumPy array)"
        )
    lead = x.dim() - len(event)
    if tuple(x.shape[max(lead, 0) :]) != tuple(event) or lead < 1 or (lead > 1 and not leading):
        if tuple(x.shape) == tuple(event):
            hint = f" (one datapoint is a batch of one: x.unsqueeze(0)){hint}"
        raise DataError(
            f"{what} was given data of shape {tuple(x.shape)}; the model's datapoints are of shape {tuple(event)}: "
            f"a batch is (B, {dims}){hint}"
        )
    return x


def _refuse_infinite(x: torch.Tensor) -> None:
    """A DataError for data with an infinite entry: no likelihood scores one (a density's support,
    the real line, lets +-inf through its check)."""
    if x.is_floating_point() and bool(torch.isinf(x).any()):
        rows = torch.isinf(x).flatten(1).any(1) if x.dim() > 1 else torch.isinf(x)
        raise DataError(
            f"the data hold {int(torch.isinf(x).sum())} infinite entries (inf or -inf), e.g. in datapoint "
            f"{int(rows.nonzero()[0])}: no likelihood scores them; mark an unknown entry as missing (NaN), or leave "
            "out those datapoints"
        )


def _describe(support: constraints.Constraint) -> str:
    """A constraint in words: "0 or 1", "the integers 0..255", "real numbers"."""
    if isinstance(support, constraints.integer_interval):
        lo, hi = support.lower_bound, support.upper_bound
        return f"{lo} or {hi}" if hi == lo + 1 else f"the integers {lo}..{hi}"
    if support is constraints.boolean:
        return "0 or 1"
    if isinstance(support, constraints.interval | constraints.half_open_interval):  # (not "Interval(lower_bound=...)")
        close = ")" if isinstance(support, constraints.half_open_interval) else "]"
        return f"values in [{support.lower_bound:g}, {support.upper_bound:g}{close}"
    describe = getattr(support, "describe", None)  # a constraint of dgmkit's own says itself
    return describe() if callable(describe) else f"values in {support}"


def check_decoder(decoder: object) -> None:
    """A decoder p(x|z) that says its event shape and its likelihood (the data's support, the
    numbers a pixel): a ``dgmkit.conditional.Decoder``, or a module that holds one's ``head``
    and ``event_shape`` (``torch.compile`` of one, a wrapper); else a TypeError that says what to do."""
    if not isinstance(decoder, Decoder) and not (
        isinstance(decoder, nn.Module)
        and isinstance(getattr(decoder, "head", None), LikelihoodHead)
        and isinstance(getattr(decoder, "event_shape", None), tuple)
    ):
        raise TypeError(
            f"the decoder must be a dgmkit.conditional.Decoder, got {type(decoder).__name__}: wrap the network as "
            "Decoder(net, head, event_shape) with a likelihood head (dgmkit.conditional.heads; for a likelihood of your "
            "own, a LikelihoodHead subclass), so that the model knows its data's shape and support"
        )


class DecodedModel(GenerativeModel):
    """A model whose events are those of its decoder p(x|.): ``event_shape`` is the decoder's,
    and so is ``data_support`` (its likelihood head's)."""

    decoder: Decoder

    @property
    def event_shape(self) -> tuple[int, ...]:  # type: ignore[override]  # read-only here: derived, never assigned
        return self.decoder.event_shape

    @property
    def data_support(self) -> constraints.Constraint | None:
        return self.decoder.head.support

    @property
    def discrete_data(self) -> bool:
        return self.decoder.head.discrete

    @property
    def coding_levels(self) -> int | None:
        """The values of a pixel that bits-back coding codes (a model whose ``coding`` is
        "bits-back"): a discrete likelihood's levels."""
        head = self.decoder.head
        return head.num_levels if self.coding == "bits-back" and head.discrete else None

    def importance_rows(self, budget_bytes: int) -> int | None:
        """Rows of log p(x|z) within ``budget_bytes``: at least the likelihood's parameters of a
        row (a 256-way categorical's are 256 numbers a pixel: 0.8 MB an MNIST image) in about
        four float32 copies (the parameters, their log-softmax, the gathered terms)."""
        per_row = 4 * 4 * self.decoder.head.params_per_pixel * math.prod(self.event_shape)
        return max(1, budget_bytes // per_row)


class ExactLikelihoodModel(GenerativeModel):
    """``log_prob(x)`` is the exact log-likelihood in nats, one value per example."""

    estimate_kind: ClassVar[str] = "exact"

    @abstractmethod
    def log_prob(self, x: torch.Tensor) -> torch.Tensor: ...


class VariationalModel(GenerativeModel):
    """A model scored through a proposal q(z|x) and a joint p(x, z): the log importance
    weights log p(x, z) - log q(z|x) of ``dgmkit.objectives.log_importance_weights`` give its
    ELBO, IWAE, reweighted wake-sleep and importance-sampled likelihood."""

    estimate_kind: ClassVar[str] = "importance-sampled"

    @abstractmethod
    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for a batch (B, *event): batch shape (B,)."""

    @abstractmethod
    def log_joint(self, x: torch.Tensor, z: torch.Tensor, prior: Distribution | None = None) -> JointTerms:
        """log p(x|z) and log p(z) for z of shape (*sample, B, *latent). ``prior``: p(z) if
        the caller has it already (it is the same for every chunk of samples)."""

    def importance_rows(self, budget_bytes: int) -> int | None:
        """The most rows (draws x datapoints) of log p(x|z) to compute at once within about
        ``budget_bytes`` of working memory, for a model whose p(x|z) is large per row (an
        autoregressive decoder's activations); None: the importance sampler's defaults suit it."""
        return None


class LatentVariableModel(VariationalModel):
    """p(z) p(x|z) with an amortized q(z|x): ``prior()``, ``likelihood(z)``, ``posterior(x)``."""

    has_latents: ClassVar[bool] = True
    sample_means: ClassVar[bool] = True
    reconstructs: ClassVar[bool] = True

    @property
    @abstractmethod
    def latent_dim(self) -> int: ...

    @abstractmethod
    def prior(self) -> Distribution:
        """p(z), batch shape ()."""

    @abstractmethod
    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z of shape (*batch, *latent): batch shape ``batch``."""

    def log_joint(
        self, x: torch.Tensor, z: torch.Tensor, prior: Distribution | None = None, px: Distribution | None = None
    ) -> JointTerms:
        """log p(x|z) (of the observed entries where x holds missing ones, NaN) and log p(z);
        ``px``: p(x|z) at these z where the caller has it already."""
        p = self.prior() if prior is None else prior
        return JointTerms(self.log_px_given_z(x, z, px), p.log_prob(z))

    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor, px: Distribution | None = None) -> torch.Tensor:
        """log p(x|z), of the observed entries where x holds missing ones (NaN), shape (*sample, B):
        ``log_joint``'s first term alone (the ELBO with a closed-form KL needs no log p(z)). A model
        whose log p(x|z) is other than its likelihood's log_prob overrides this, not ``log_joint``,
        so that both read it."""
        return observed_log_prob(self.likelihood(z) if px is None else px, x)

    def conditional_mean(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, *event) with each missing entry (NaN) replaced by the exact E[x_m | x_o], for a model
        that declares ``exact_imputation``."""
        raise CapabilityError(f"{type(self).__name__} has no closed-form E[x_m | x_o]: it imputes by importance sampling")

    def reconstruction_code(self, x: torch.Tensor) -> torch.Tensor:
        """The point of latent space that ``reconstruct`` decodes for x, (N, *latent): a
        representative point of q(z|x) (``distributions.location``: its mean, or its own point);
        a model of discrete latents whose reconstruction decodes one state says which (the
        interpolations between two images run from one such code to the other)."""
        from dgmkit.distributions import location

        return location(self.posterior(x))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """A representative point of p(x|z) (its mean, where it has one) at the
        ``reconstruction_code`` of x."""
        from dgmkit.distributions import location

        return location(self.likelihood(self.reconstruction_code(x)))

    @property
    def top_prior_module(self) -> "Prior | None":
        """The prior module of the latents drawn first (a VAE's p(z), a stack's p(z_L)), whose
        declarations are the model's: its mixture components as clusters, why a sampling option
        would not apply to it (None: no such module)."""
        return None

    def top_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The part of latents z (*batch, M) that ``top_prior_module`` is over: all of z here."""
        return z

    def untaken_sample_note(self, option: str) -> str | None:
        p = self.top_prior_module
        return None if p is None else p.untaken_sample_note(option)

    @property
    def num_components(self) -> int | None:
        """Mixture components of the prior that can serve as clusters (None: no such prior)."""
        p = self.top_prior_module
        return p.components if p is not None and p.has_components else None

    def assign_components(self, z: torch.Tensor) -> torch.Tensor:
        p = self.top_prior_module
        if p is None or not p.has_components:
            raise CapabilityError(f"{type(self).__name__} has no mixture prior whose components could be clusters")
        return p.assign(self.top_latents(z))


class ExactLatentVariableModel(ExactLikelihoodModel, LatentVariableModel):
    """A latent variable model whose log p(x) and posterior p(z|x) are exact (PPCA, the
    log-linear model): evaluation splits log p(x) into reconstruction and KL terms."""

    estimate_kind: ClassVar[str] = "exact"


class ClosedFormFit(ABC):
    """A model fitted by maximum likelihood in closed form (PPCA): no gradient steps."""

    @abstractmethod
    def fit_closed_form(self, x: torch.Tensor) -> dict[str, int | bool]:
        """Set the parameters to the maximum-likelihood fit to data x (N, *event); returns what the
        run's metrics add of how it was found (PPCA on incomplete data: ``em_iterations`` and
        ``em_converged`` of its EM), empty for a closed form."""


class EMFit(ABC):
    """A model fitted by expectation-maximization with exact E-steps."""

    @abstractmethod
    def em_step(self, x: torch.Tensor) -> float:
        """One E- and M-step on data x; returns the mean log-likelihood before the step."""


class ModelELBO(ABC):
    """A variational model whose ELBO has a form of its own, of lower variance than the
    one-sample ELBO of a generic posterior: ``elbo_terms(x)`` gives per-example ``elbo``,
    ``recon`` and ``kl``, each (B,), which ``dgm eval`` reports in place of that one-sample ELBO,
    and any other per-example terms of the same pass (parts of the KL, say), which reach the
    model's ``evaluation_terms`` in its ``estimate`` to be shown."""

    @abstractmethod
    def elbo_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]: ...


class EnumeratedELBO(ModelELBO):
    """A ``ModelELBO`` that sums a discrete latent out exactly (M2's class)."""


class TimeSampledBound(ABC):
    """A model whose negative ELBO is the mean over times t ~ U[0, 1) of ``bound_terms(x, t)``:
    a dict of per-datapoint tensors (B,) in nats, ``prior``, ``recon`` and ``diffusion``, whose
    sum is an unbiased one-sample estimate of -ELBO (a diffusion model). ``variance_reduction``
    says how the times are drawn."""

    steps: int  # T discrete steps, or 0 for continuous time
    training: bool  # (nn.Module's, beside which this contract is listed)
    eps_error: ClassVar[bool] = False  # bound_terms also gives ``mse``, the noise prediction's error (DDPM's simple loss)

    @abstractmethod
    def bound_terms(self, x: torch.Tensor, t: torch.Tensor, train: bool = False) -> dict[str, torch.Tensor]: ...

    @property
    @abstractmethod
    def variance_reduction(self) -> str: ...

    def evaluation_terms(
        self, x: torch.Tensor, y: torch.Tensor | None, estimate: dict[str, torch.Tensor], batch_size: int
    ) -> dict[str, Term]:
        """The KL split into its two parts, where the estimate is the bound over times (list this
        contract before ``GenerativeModel``)."""
        terms = super().evaluation_terms(x, y, estimate, batch_size)  # type: ignore[misc]  # a mixin: the next class in the MRO has it
        if "prior_kl" not in estimate:  # scored otherwise (an any-order model's mixture of orders)
            return terms
        terms["prior_kl"] = Term("prior KL", estimate["prior_kl"], note="KL(q(z_1|x) || p(z_1))", level=2)
        terms["diffusion_kl"] = Term(
            "diffusion KL", estimate["diffusion_kl"], note="the sum over the steps from z_1 to z_0", level=2
        )
        return terms

    @property
    @abstractmethod
    def default_sample_steps(self) -> int: ...


class AnyOrderModel(ABC):
    """A model with a conditional p(x_d | x_S) for any entry d and any set S of known entries
    (a masked diffusion model: S the unmasked entries). Each order sigma of the D entries then
    makes an autoregressive model p(x | sigma) = prod_i p(x_sigma(i) | x_sigma(<i)), normalised
    and exact; the uniform mixture of M fixed orders, p(x) = (1/M) sum_j p(x | sigma_j), is an
    exact likelihood too (Uria et al. 2014; Hoogeboom et al. 2022's ARDM; Jain et al. 2020 average
    orders the same way). Its log is at least the mean of the M per-order log-likelihoods, which in
    turn estimates the any-order bound E_sigma log p(x | sigma)."""

    @abstractmethod
    def order_log_likelihood(self, x: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        """log p(x | sigma_j), (B, M), for data x (B, *event) and ``orders`` (M, D): each row a
        permutation of the D = prod(event) flattened entries, the first revealed first."""
