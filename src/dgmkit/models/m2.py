r"""Kingma et al.'s M2 (arXiv 1406.5298): a VAE whose latents are a class y and a continuous z.

    p(x, y, z) = p(y) p(z) p(x | y, z),   p(y) = 1/K,   p(z) = N(0, I)
    q(y, z | x) = q(y | x) q(z | x, y)

For a labelled pair the bound is the ELBO of log p(x, y),

    L(x, y) = E_q(z|x,y)[log p(x|y,z)] - KL(q(z|x,y) || p(z)) + log p(y),

and for unlabelled x the class is summed out exactly (enumeration, no sampling of y):

    U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)) <= log p(x).

q(y|x) is the classifier. The networks see x flattened, with y as a one-hot vector beside x
(q(z|x,y)) or beside z (p(x|y,z)).
"""

import math
from abc import abstractmethod
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, constraints, kl_divergence

from dgmkit._rng import seeded_by
from dgmkit.conditional import Decoder
from dgmkit.conditional.base import ConditionalDistribution
from dgmkit.devices import dtype_of, widened
from dgmkit.distributions.flow import standard_normal
from dgmkit.distributions.sampling import rsample_and_log_prob
from dgmkit.errors import whole_at_least
from dgmkit.models.base import EnumeratedELBO, JointTerms, VariationalModel, check_decoder, data_batch
from dgmkit.models.classifier import Classifier

__all__ = ["M2", "SemiSupervisedVAE", "EnumeratedTerms"]


class EnumeratedTerms(NamedTuple):
    """Per datapoint and class, shape (B, K): ``log_qy`` = log q(y|x); ``bound`` = L(x, y),
    split as ``recon`` (E_q log p(x|y,z)) - ``kl_z`` (KL(q(z|x,y) || p(z))) + log p(y)."""

    log_qy: torch.Tensor
    bound: torch.Tensor
    recon: torch.Tensor
    kl_z: torch.Tensor

    def unlabelled(self) -> torch.Tensor:
        """U(x) = sum_y q(y|x) (L(x, y) - log q(y|x)), shape (B,)."""
        return (self.log_qy.exp() * (self.bound - self.log_qy)).sum(-1)


class SemiSupervisedVAE(Classifier, VariationalModel, EnumeratedELBO):
    """What M2 and the auxiliary-variable models (``models.adgm``) share: K classes y (a latent
    summed out exactly where the label is hidden, ``enumerate``), data of ``event_shape`` seen
    flat by MLPs (times ``input_scale``: integer pixels for categorical likelihoods), y as a
    one-hot vector beside the networks' other inputs, and the bound U(x) on log p(x) that
    ``enumerate``'s terms give (``elbo_terms``)."""

    _eye: torch.Tensor
    decoder: Decoder  # p(x|.)

    estimate_kind: ClassVar[str] = "importance-sampled"
    has_latents: ClassVar[bool] = False  # (y, z) are not one vector that latent plots could show
    sample_means: ClassVar[bool] = True
    # whether ``enumerate``'s ``log_qy`` is ``class_log_probs(x)`` itself (M2's q(y|x)), so that the
    # classifier's accuracy needs no second pass; the auxiliary models' is q(y|a,x) at one draw of a
    enumerates_classifier: ClassVar[bool] = False

    def __init__(self, num_classes: int, latent_dim: int, event_shape: tuple[int, ...], input_scale: float = 1.0):
        super().__init__()
        self.num_classes = whole_at_least("the semi-supervised VAE's num_classes", num_classes, 2)
        self.latent_dim = whole_at_least("the semi-supervised VAE's latent_dim", latent_dim, 1)
        self.event_shape = tuple(event_shape)
        self.input_scale = input_scale
        self.register_buffer("_eye", torch.eye(num_classes), persistent=False)

    @property
    def sample_period(self) -> int:
        return self.num_classes  # (``sample`` draws the classes in turn)

    @property
    def data_support(self) -> constraints.Constraint:
        return self.decoder.head.support

    @property
    def discrete_data(self) -> bool:
        return self.decoder.head.discrete

    @abstractmethod
    def enumerate(self, x: torch.Tensor) -> EnumeratedTerms:
        """L(x, y) for every class y, with log q(y|x) (or log q(y|a,x) at the draw of a that L used)."""

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        x = data_batch(x, self.event_shape, type(self).__name__).flatten(1)
        return x.to(dtype_of(self)) * self.input_scale  # (integers, or floats of another precision: float64 failed)

    def _per_class(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x repeated for every class (B*K, *event), flat x (B*K, D) and onehot(y) (B*K, K):
        row r holds datapoint r // K and class r % K."""
        b, k = len(x), self.num_classes
        onehot = self._eye.repeat(b, 1)
        xk = x.repeat_interleave(k, dim=0)
        return xk, self._flat(xk), onehot

    def importance_rows(self, budget_bytes: int) -> int:
        """Rows (draws x datapoints) of one importance-sampling chunk that fit in ``budget_bytes``:
        each row is K rows of the networks (one per class), whose activations are about twice
        their layers' widths (the linear outputs and the nonlinearity's), in 4-byte floats."""
        widths = sum(m.out_features for m in self.modules() if isinstance(m, nn.Linear))
        return max(1, budget_bytes // (4 * 2 * self.num_classes * max(1, widths)))

    def elbo_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The bound U(x) on log p(x), shape (B,), as reconstruction - KL, where the KL is
        sum_y q(y|x) kl_z(x, y) + KL(q(y|x) || p(y))."""
        t = self.enumerate(x)
        qy = t.log_qy.exp()
        recon = (qy * t.recon).sum(-1)
        kl = (qy * t.kl_z).sum(-1) + (qy * (t.log_qy + math.log(self.num_classes))).sum(-1)
        return {"elbo": recon - kl, "recon": recon, "kl": kl}


class M2(SemiSupervisedVAE):
    """``classifier``: flat x (B, D) -> K logits; ``encoder``: [x, onehot(y)] (B, D + K) -> q(z|x,y);
    ``decoder``: [z, onehot(y)] (N, M + K) -> p(x|y,z) over ``event_shape``. ``input_scale``
    multiplies x before the networks (integer pixels for categorical likelihoods).

    ``dgm eval`` estimates log p(x) = log sum_y p(y) p(x|y) by importance sampling with y
    enumerated: each of the k draws holds one z per class, z_y ~ q(z|x,y), and its weight is
    sum_y p(y) p(x|y,z_y) p(z_y) / q(z_y|x,y), an unbiased estimate of p(x) (``joint_pass``).
    """

    enumerates_classifier: ClassVar[bool] = True

    def __init__(
        self,
        classifier: nn.Module,
        encoder: ConditionalDistribution,
        decoder: Decoder,
        num_classes: int,
        latent_dim: int,
        event_shape: tuple[int, ...],
        input_scale: float = 1.0,
    ):
        super().__init__(num_classes, latent_dim, event_shape, input_scale)
        check_decoder(decoder)
        self.classifier, self.encoder, self.decoder = classifier, encoder, decoder

    def class_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(widened(self.classifier(self._flat(x))), dim=-1)  # (B, K)

    def posterior(self, x: torch.Tensor) -> Categorical:
        """q(y|x), the proposal of the discrete latent (z's proposal q(z|x,y) depends on y)."""
        return Categorical(logits=self.class_log_probs(x))

    def enumerate(self, x: torch.Tensor) -> EnumeratedTerms:
        """L(x, y) for every class y with one reparameterized z per (x, y), and log q(y|x)."""
        b, k = len(x), self.num_classes
        xk, flat, onehot = self._per_class(x)
        q = self.encoder(torch.cat([flat, onehot], -1))  # batch (B*K,)
        z = q.rsample()  # (B*K, M)
        recon = self.decoder(torch.cat([z, onehot.to(z.dtype)], -1)).log_prob(xk)  # (B*K,)
        kl_z = kl_divergence(q, standard_normal(self.latent_dim, device=z.device, dtype=z.dtype))
        recon, kl_z = widened(recon).view(b, k), widened(kl_z).view(b, k)
        bound = recon - kl_z - math.log(k)
        return EnumeratedTerms(self.class_log_probs(x), bound, recon, kl_z)

    def joint_pass(
        self, x: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """k stratified importance weights of log p(x) (see the class docstring), as the four
        terms of ``objectives.ImportanceWeights``: z (k, B, K, M), and the whole log weight
        log sum_y p(y) p(x|y,z_y) p(z_y) / q(z_y|x,y) in the first term, shape (k, B); the
        other two are zero (the class and z are already summed and weighed in it)."""
        b, n = len(x), self.num_classes
        xk, flat, onehot = self._per_class(x)
        q = self.encoder(torch.cat([flat, onehot], -1))
        z, log_qz = rsample_and_log_prob(q, (k,), generator, device=x.device)  # (k, B*K, M), (k, B*K)
        log_pz = standard_normal(self.latent_dim, device=z.device, dtype=z.dtype).log_prob(z)
        px = self.decoder(torch.cat([z, onehot.expand(k, -1, -1).to(z.dtype)], -1))
        log_px = px.log_prob(xk.expand(k, *xk.shape))  # (k, B*K)
        log_w = widened(log_px + log_pz - log_qz).view(k, b, n) - math.log(n)
        total = torch.logsumexp(log_w, dim=-1)  # (k, B)
        zero = torch.zeros_like(total)
        return z.view(k, b, n, -1), total, zero, zero

    def log_joint(self, x: torch.Tensor, z: torch.Tensor, prior: object = None) -> JointTerms:
        """log p(x | y, z) and log p(y) + log p(z) for latents [onehot(y), z] of shape
        (*sample, B, K + M)."""
        y, zz = z.split([self.num_classes, self.latent_dim], dim=-1)
        log_prior = standard_normal(self.latent_dim, device=z.device, dtype=z.dtype).log_prob(zz) - math.log(
            self.num_classes
        )
        return JointTerms(self.decoder(torch.cat([zz, y], -1)).log_prob(x), log_prior)

    sample_kind = "float"

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws with the classes in turn (y = i mod K), z ~ p(z): x ~ p(x|y,z) and its mean."""
        device = self._eye.device
        with seeded_by(generator, device):
            z = torch.randn(n, self.latent_dim, device=device)
            px = self.decoder(torch.cat([z, self._eye[torch.arange(n, device=device) % self.num_classes]], -1))
            return px.sample(), px.mean
