r"""Auxiliary deep generative models for semi-supervised learning (Maaløe et al. 2016, arXiv 1602.05473).

M2 (``models.m2``) with an auxiliary latent a that makes the inference model richer: q(y|a,x)
and q(z|a,x,y) see a draw of a ~ q(a|x), so q(y, z | x) = E_q(a|x)[q(y|a,x) q(z|a,x,y)] is an
infinite mixture rather than a product of Gaussians. Two generative models:

- **ADGM**: p(x, y, z, a) = p(y) p(z) p(x|y,z) p(a|x,y,z). The auxiliary factor integrates
  to one over a, so p(x) is M2's: a changes only the posterior.
- **SDGM** (``skip``): p(x, y, z, a) = p(y) p(z) p(a|y,z) p(x|a,y,z): a becomes a second
  stochastic layer of the generative model, with a skip connection from z and y to x.

Both share the inference model q(a|x) q(y|a,x) q(z|a,x,y), and p(y) = 1/K, p(z) = N(0, I).
For a labelled pair and one draw a ~ q(a|x), z ~ q(z|a,x,y), the bound on log p(x, y) is

    L(x, y) = log p(x|.) + log p(a|.) + log p(y) - KL(q(z|a,x,y) || p(z)) - log q(a|x)

(the KL over z in closed form given a, the terms in a by Monte Carlo), and for unlabelled x the
class is summed out exactly given the same a:

    U(x) = sum_y q(y|a,x) (L(x, y) - log q(y|a,x)),   E_q(a|x)[U(x)] <= log p(x).

The classifier is q(y|x) = E_q(a|x)[q(y|a,x)], estimated with ``class_samples`` draws of a.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, kl_divergence

from dgmkit._rng import seeded_by
from dgmkit.conditional import Decoder
from dgmkit.conditional.base import ConditionalDistribution
from dgmkit.devices import widened
from dgmkit.distributions.flow import standard_normal
from dgmkit.distributions.sampling import rsample_and_log_prob
from dgmkit.errors import whole_at_least
from dgmkit.models.base import JointTerms, check_decoder
from dgmkit.models.m2 import EnumeratedTerms, SemiSupervisedVAE
from dgmkit.models.terms import Term

__all__ = ["AuxiliaryDGM"]


class AuxiliaryDGM(SemiSupervisedVAE):
    """The ADGM, or with ``skip`` the SDGM (module docstring), over data of ``event_shape`` seen
    flat (D values, times ``input_scale``), with K = ``num_classes``, z of ``latent_dim`` and a of
    ``aux_dim`` dimensions. The networks and their inputs (y one-hot):

    - ``aux_encoder``: x (B, D) -> q(a|x);
    - ``classifier``: [x, a] (B, D + A) -> K logits of q(y|a,x);
    - ``encoder``: [x, a, y] (B, D + A + K) -> q(z|a,x,y);
    - ``aux_decoder``: p(a|.): [x, y, z] (B, D + K + M) for the ADGM, [y, z] (B, K + M) for the SDGM;
    - ``decoder``: p(x|.): [y, z] (B, K + M) for the ADGM, [y, z, a] (B, K + M + A) for the SDGM.

    ``dgm eval`` estimates log p(x) by importance sampling: each of the k draws takes a ~ q(a|x)
    and one z_y ~ q(z|a,x,y) per class, with weight sum_y p(y) p(x, a, z_y | y) / (q(a|x) q(z_y|a,x,y)),
    an unbiased estimate of p(x) (``joint_pass``).
    """

    def __init__(
        self,
        aux_encoder: ConditionalDistribution,
        classifier: nn.Module,
        encoder: ConditionalDistribution,
        aux_decoder: ConditionalDistribution,
        decoder: Decoder,
        num_classes: int,
        latent_dim: int,
        aux_dim: int,
        event_shape: tuple[int, ...],
        skip: bool = False,
        input_scale: float = 1.0,
        class_samples: int = 100,
    ):
        super().__init__(num_classes, latent_dim, event_shape, input_scale)
        # (2.5 draws of a met a TypeError inside torch.Size at the first classification, "3" one at this check)
        class_samples = whole_at_least("the auxiliary model's class_samples", class_samples, 1)
        aux_dim = whole_at_least("the auxiliary model's aux_dim", aux_dim, 1)
        self.aux_encoder, self.classifier, self.encoder = aux_encoder, classifier, encoder
        check_decoder(decoder)
        self.aux_decoder, self.decoder = aux_decoder, decoder
        self.aux_dim, self.skip, self.class_samples = aux_dim, skip, class_samples

    # ----- the networks, given the draws; every argument has the same leading shape -----

    def _log_qy(self, flat: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """log q(y|a,x), shape (*, K)."""
        return F.log_softmax(widened(self.classifier(torch.cat([flat, a.to(flat.dtype)], -1))), dim=-1)

    def _p_a(self, flat: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> Distribution:
        """p(a|y,z) (SDGM) or p(a|x,y,z) (ADGM)."""
        return self.aux_decoder(torch.cat([y, z] if self.skip else [flat, y, z], -1))

    def _p_x(self, y: torch.Tensor, z: torch.Tensor, a: torch.Tensor) -> Distribution:
        """p(x|y,z,a) (SDGM) or p(x|y,z) (ADGM)."""
        return self.decoder(torch.cat([y, z, a] if self.skip else [y, z], -1))

    # ----- the contract -----

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(a|x), the first factor of the proposal (y and z are drawn given a)."""
        return self.aux_encoder(self._flat(x))

    def class_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log q(y|x) = log E_q(a|x)[q(y|a,x)], by ``class_samples`` draws of a, shape (B, K)."""
        flat = self._flat(x)
        a = self.aux_encoder(flat).sample((self.class_samples,))  # (S, B, A)
        log_qy = self._log_qy(flat.expand(len(a), *flat.shape), a)
        return torch.logsumexp(log_qy, dim=0) - math.log(len(a))

    def _enumerate_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For one draw a ~ q(a|x) per datapoint and one z ~ q(z|a,x,y) per class, each (B, K):
        log q(y|a,x); log p(x|.); KL(q(z|a,x,y) || p(z)); and log q(a|x) - log p(a|.), the
        auxiliary part of the KL."""
        b, k = len(x), self.num_classes
        flat = self._flat(x)
        qa = self.aux_encoder(flat)
        a = qa.rsample()  # (B, A)
        log_qa, log_qy = widened(qa.log_prob(a)), self._log_qy(flat, a)
        xk, flatk, onehot = self._per_class(x)
        ak = a.repeat_interleave(k, dim=0)  # (B*K, A)
        qz = self.encoder(torch.cat([flatk, ak.to(flatk.dtype), onehot], -1))
        z = qz.rsample()  # (B*K, M)
        y = onehot.to(z.dtype)
        recon = self._p_x(y, z, ak.to(z.dtype)).log_prob(xk)
        kl_z = kl_divergence(qz, standard_normal(self.latent_dim, device=z.device, dtype=z.dtype))
        log_pa = self._p_a(flatk.to(z.dtype), y, z).log_prob(ak)
        aux = log_qa[:, None] - widened(log_pa).view(b, k)
        return log_qy, widened(recon).view(b, k), widened(kl_z).view(b, k), aux

    def enumerate(self, x: torch.Tensor) -> EnumeratedTerms:
        """L(x, y) and log q(y|a,x), each (B, K), for one draw of a per datapoint and one z per
        class (``_enumerate_parts``). ``kl_z`` holds the whole KL part of L, KL(q(z|.) || p(z)) +
        log q(a|x) - log p(a|.), so that ``bound`` = ``recon`` - ``kl_z`` + log p(y)."""
        log_qy, recon, kl_z, aux = self._enumerate_parts(x)
        kl = kl_z + aux
        return EnumeratedTerms(log_qy, recon - kl - math.log(self.num_classes), recon, kl)

    def elbo_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """U(x) = recon - KL, shape (B,), with the KL in its three parts (each averaged over
        q(y|a,x)): ``kl_a`` = log q(a|x) - log p(a|.), ``kl_z`` = KL(q(z|a,x,y) || p(z)) and
        ``kl_y`` = KL(q(y|a,x) || p(y))."""
        log_qy, recon, kl_z, aux = self._enumerate_parts(x)
        qy = log_qy.exp()
        parts = {
            "kl_a": (qy * aux).sum(-1),
            "kl_z": (qy * kl_z).sum(-1),
            "kl_y": (qy * (log_qy + math.log(self.num_classes))).sum(-1),
        }
        recon_mean = (qy * recon).sum(-1)
        kl = parts["kl_a"] + parts["kl_z"] + parts["kl_y"]
        return {"elbo": recon_mean - kl, "recon": recon_mean, "kl": kl, **parts}

    def evaluation_terms(
        self, x: torch.Tensor, y: torch.Tensor | None, estimate: dict[str, torch.Tensor], batch_size: int
    ) -> dict[str, Term]:
        """The accuracy (``Classifier``) and the KL of the ELBO in its parts: how much the
        auxiliary a, the continuous z and the class y each cost."""
        terms = super().evaluation_terms(x, y, estimate, batch_size)
        if "kl_a" in estimate:
            terms["kl_a"] = Term("KL of a", estimate["kl_a"], note="log q(a|x) - log p(a|.), one draw of a", level=2)
            terms["kl_z"] = Term("KL of z", estimate["kl_z"], note="KL(q(z|a,x,y) || p(z)), closed form", level=2)
            terms["kl_y"] = Term("KL of y", estimate["kl_y"], note="KL(q(y|a,x) || p(y)), y enumerated", level=2)
        return terms

    def joint_pass(
        self, x: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """k importance weights of log p(x) (see the class docstring), as the four terms of
        ``objectives.ImportanceWeights``: the draws [a, z_y] (k, B, K, A + M), and the whole
        log weight in the first term, shape (k, B); the other two are zero."""
        b, n = len(x), self.num_classes
        flat = self._flat(x)
        a, log_qa = rsample_and_log_prob(self.aux_encoder(flat), (k,), generator, device=x.device)  # (k, B, A), (k, B)
        xk, flatk, onehot = self._per_class(x)
        ak = a.repeat_interleave(n, dim=1)  # (k, B*K, A)
        flatk, onehot = flatk.expand(k, *flatk.shape), onehot.expand(k, *onehot.shape)
        qz = self.encoder(torch.cat([flatk, ak.to(flatk.dtype), onehot], -1))
        z, log_qz = rsample_and_log_prob(qz, (), generator, device=x.device)  # (k, B*K, M), (k, B*K)
        y = onehot.to(z.dtype)
        log_pz = standard_normal(self.latent_dim, device=z.device, dtype=z.dtype).log_prob(z)
        log_pa = self._p_a(flatk.to(z.dtype), y, z).log_prob(ak)
        log_px = self._p_x(y, z, ak.to(z.dtype)).log_prob(xk.expand(k, *xk.shape))
        log_w = widened(log_px + log_pa + log_pz - log_qz).view(k, b, n) - math.log(n)
        total = torch.logsumexp(log_w, dim=-1) - widened(log_qa)  # (k, B)
        zero = torch.zeros_like(total)
        return torch.cat([ak, z], -1).view(k, b, n, -1), total, zero, zero

    def log_joint(self, x: torch.Tensor, z: torch.Tensor, prior: object = None) -> JointTerms:
        """log p(x|.) and log p(y) + log p(z) + log p(a|.) for latents [onehot(y), z, a] of
        shape (*sample, B, K + M + A)."""
        y, zz, a = z.split([self.num_classes, self.latent_dim, self.aux_dim], dim=-1)
        flat = self._flat(x).to(z.dtype).expand(*z.shape[:-1], -1)
        log_prior = standard_normal(self.latent_dim, device=z.device, dtype=z.dtype).log_prob(zz) - math.log(
            self.num_classes
        )
        return JointTerms(self._p_x(y, zz, a).log_prob(x), log_prior + self._p_a(flat, y, zz).log_prob(a))

    sample_kind = "float"

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws with the classes in turn (y = i mod K), z ~ p(z) (and a ~ p(a|y,z) for the
        SDGM): x ~ p(x|.) and its mean."""
        device = self._eye.device
        with seeded_by(generator, device):
            z = torch.randn(n, self.latent_dim, device=device)
            y = self._eye[torch.arange(n, device=device) % self.num_classes]
            a = self.aux_decoder(torch.cat([y, z], -1)).sample() if self.skip else z[:, :0]
            px = self._p_x(y, z, a)
            return px.sample(), px.mean

    def extra_repr(self) -> str:
        return f"{'SDGM' if self.skip else 'ADGM'}, class_samples={self.class_samples}"
