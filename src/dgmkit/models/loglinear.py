r"""A log-linear latent variable model over a small discrete space, trained by EM.

    p(z = k) = pi_k,   p(x | z) = exp(w . f(x, z)) / Z_z,   x in {0, 1}^D,  z in {1..K}

with features f(x, z) = (x_d [z = k])_{d,k} (a weight per pixel and state), x (a shared bias)
and x_i x_j for neighbouring pixels (pairwise couplings shared across states). The couplings
make the normaliser Z_z = sum_x exp(w . f(x, z)) a sum over all 2^D images, computed exactly by
enumeration, as is the E-step p(z | x). This is the kind of model the field used before neural
recognition networks: exact inference by enumeration, learning by expectation-maximization.

EM (Dempster et al. 1977): the E-step computes responsibilities r_nk = p(z = k | x_n); the
M-step sets pi_k = mean_n r_nk and raises Q(w) = sum_nk r_nk log p(x_n | z = k), a concave
function of w, with line-searched L-BFGS, keeping the step only if Q does not fall. Each
iteration therefore cannot decrease the log-likelihood.
"""

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, OneHotCategorical, constraints

from dgmkit._rng import seeded_by
from dgmkit.devices import device_of
from dgmkit.distributions.categorical import one_hot_categorical
from dgmkit.errors import DataError, whole_at_least
from dgmkit.models.base import EMFit, ExactLatentVariableModel, data_batch

__all__ = ["LogLinearLVM", "EnumeratedBinary", "grid_edges"]

MAX_PIXELS = 20
# the energies of every image under every state, a (2^D, K) table that each likelihood and each
# step of the M-step forms (with its gradient: several at once, about 18 bytes an entry at the
# peak of an EM step): at most 2^31 entries, about 36 GiB, a bound on what can have been trained
# (checked where any model is built, a recorded run's too), not on what fits a given machine
MAX_TABLE = 2**31
PEAK_BYTES_PER_ENTRY = 18


def grid_edges(height: int, width: int) -> list[tuple[int, int]]:
    """Horizontal and vertical neighbour pairs of an H x W grid, in row-major pixel indices."""
    edges = []
    for r, c in itertools.product(range(height), range(width)):
        i = r * width + c
        if c + 1 < width:
            edges.append((i, i + 1))
        if r + 1 < height:
            edges.append((i, i + width))
    return edges


class EnumeratedBinary(Distribution):
    """A distribution over {0, 1}^D given the log-probabilities of all 2^D states."""

    arg_constraints = {}
    support = constraints.boolean
    has_rsample = False

    def __init__(self, log_probs: torch.Tensor, states: torch.Tensor, event_shape: tuple[int, ...]):
        self.log_probs, self.states = log_probs, states  # (..., S), (S, D)
        self._weights = 2 ** torch.arange(states.shape[1] - 1, -1, -1, device=states.device)
        super().__init__(log_probs.shape[:-1], torch.Size(event_shape), validate_args=False)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        codes = (x.flatten(-len(self.event_shape)).long() * self._weights).sum(-1)  # (..., )
        shape = torch.broadcast_shapes(codes.shape, self.log_probs.shape[:-1])
        return self.log_probs.expand(*shape, -1).gather(-1, codes.expand(shape).unsqueeze(-1)).squeeze(-1)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        n = int(torch.Size(sample_shape).numel())
        flat = self.log_probs.reshape(-1, self.log_probs.shape[-1]).exp()
        idx = torch.multinomial(flat, n, replacement=True).T  # (n, batch)
        return self.states[idx].reshape(*sample_shape, *self.batch_shape, *self.event_shape)

    @property
    def mean(self) -> torch.Tensor:
        return (self.log_probs.exp() @ self.states).reshape(*self.batch_shape, *self.event_shape)


class LogLinearLVM(ExactLatentVariableModel, EMFit):
    """K latent states over binary images of ``event_shape`` (at most 20 pixels)."""

    discrete_latents = True

    states: torch.Tensor
    edges: torch.Tensor

    def __init__(self, event_shape: tuple[int, ...], num_states: int, edges: list[tuple[int, int]] | None = None):
        super().__init__()
        whole_at_least("num_states", num_states, 1)
        self.event_shape = tuple(event_shape)
        if not self.event_shape:  # (an IndexError at the first likelihood, flattening a batch of no event dimension)
            raise ValueError("event_shape must hold at least one dimension: a single pixel is (1,)")
        d = math.prod(self.event_shape)
        if d > MAX_PIXELS:
            raise ValueError(f"the log-linear model enumerates all 2^D images: D = {d} is too large (at most {MAX_PIXELS})")
        if num_states * 2**d > MAX_TABLE:
            raise ValueError(
                f"{num_states} states are too many for D = {d} pixels: the model scores all 2^{d} images under every "
                f"state, {num_states * 2**d:.3g} energies (about {num_states * 2**d * PEAK_BYTES_PER_ENTRY / 2**30:.0f} "
                f"GiB at the peak of an EM step), more than {MAX_TABLE:.3g} (at most {MAX_TABLE // 2**d} states)"
            )
        if edges is None:
            edges = grid_edges(*self.event_shape[-2:]) if len(self.event_shape) >= 2 else []
        bad = [e for e in edges if len(e) != 2 or e[0] == e[1] or not all(0 <= i < d for i in e)]
        if bad:  # (an index past D failed at the first likelihood; a negative one coupled a pixel from the end)
            raise ValueError(f"edges are pairs of two distinct pixel indices in 0..{d - 1}, got {bad[0]}")
        self.num_states = num_states
        self.register_buffer("states", torch.tensor(list(itertools.product([0.0, 1.0], repeat=d))), persistent=False)
        self.register_buffer("edges", torch.tensor(edges, dtype=torch.long).reshape(-1, 2), persistent=False)
        g = torch.Generator().manual_seed(0)
        self.unary = nn.Parameter(0.1 * torch.randn(d, num_states, generator=g))  # symmetry breaking
        self.bias = nn.Parameter(torch.zeros(d))
        self.pairwise = nn.Parameter(torch.zeros(len(edges)))
        self.log_pi = nn.Parameter(torch.full((num_states,), -math.log(num_states)), requires_grad=False)

    @property
    def data_support(self) -> constraints.Constraint:
        return constraints.boolean

    @property
    def latent_dim(self) -> int:
        return self.num_states

    def _pair_features(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.edges[:, 0]] * x[..., self.edges[:, 1]]  # (..., E)

    def _energy(self, flat: torch.Tensor) -> torch.Tensor:
        """w . f(x, z) for every state z: (N, K)."""
        shared = flat @ self.bias + self._pair_features(flat) @ self.pairwise
        return flat @ self.unary + shared.unsqueeze(-1)

    def log_normalizers(self) -> torch.Tensor:
        return torch.logsumexp(self._energy(self.states), dim=0)  # (K,)

    def conditional_log_probs(self, flat: torch.Tensor) -> torch.Tensor:
        """log p(x | z = k): (N, K)."""
        return self._energy(flat) - self.log_normalizers()

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return data_batch(x, self.event_shape, "the log-linear model").flatten(1).to(self.bias.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(F.log_softmax(self.log_pi, 0) + self.conditional_log_probs(self._flat(x)), dim=-1)

    def prior(self) -> OneHotCategorical:
        return one_hot_categorical(self.log_pi)

    def posterior(self, x: torch.Tensor) -> OneHotCategorical:
        """The exact p(z | x), by enumeration of the K states."""
        return one_hot_categorical(F.log_softmax(self.log_pi, 0) + self.conditional_log_probs(self._flat(x)))

    def likelihood(self, z: torch.Tensor) -> EnumeratedBinary:
        """p(x | z) for one-hot z of shape (..., K); a soft z gives the mixture sum_k z_k p(x | k)."""
        table = (self._energy(self.states) - self.log_normalizers()).T  # (K, S)
        log_probs = torch.logsumexp(torch.log(z.clamp_min(1e-30)).unsqueeze(-1) + table, dim=-2)
        return EnumeratedBinary(log_probs, self.states, self.event_shape)

    sample_kind = "float"

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        with seeded_by(generator, device_of(self)):
            z = torch.multinomial(F.softmax(self.log_pi, 0), n, replacement=True)  # (n,)
            table = (self._energy(self.states) - self.log_normalizers()).T.exp()  # (K, S): p(x | z)
            x = torch.empty(n, self.states.shape[1], device=self.states.device, dtype=self.states.dtype)
            for k in z.unique().tolist():  # ancestral sampling, one state at a time
                rows = (z == k).nonzero().squeeze(1)
                x[rows] = self.states[torch.multinomial(table[k], len(rows), replacement=True)]
            mean = table[z] @ self.states
            return x.reshape(n, *self.event_shape), mean.reshape(n, *self.event_shape)

    def reconstruction_code(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable state z* of p(z | x), one-hot (reconstructions are E[x | z*])."""
        return F.one_hot(self.posterior(x).logits.argmax(-1), self.num_states).float()

    # ------------------------------------------------------------------ EM
    @torch.no_grad()
    def e_step(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x).probs  # (N, K)

    def expected_complete_log_likelihood(self, flat: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
        return (resp * self.conditional_log_probs(flat)).sum() / len(flat)

    def em_step(self, x: torch.Tensor, max_iter: int = 25) -> float:
        """One EM iteration on data ``x``; returns the mean log-likelihood before it. Data it has no
        likelihood of (not binary, missing entries, no rows) are refused: they made every parameter NaN."""
        self.check_data(x)
        if len(x) == 0:
            raise DataError("EM needs at least one datapoint, got none")
        flat = self._flat(x)
        with torch.no_grad():
            before = self.log_prob(x).mean().item()
            resp = self.e_step(x)
            self.log_pi.copy_(torch.log(resp.mean(0).clamp_min(1e-12)))
        params = [self.unary, self.bias, self.pairwise]
        old = [p.detach().clone() for p in params]
        with torch.no_grad():
            q_old = self.expected_complete_log_likelihood(flat, resp).item()
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = -self.expected_complete_log_likelihood(flat, resp)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            q_new = self.expected_complete_log_likelihood(flat, resp).item()
            if not q_new >= q_old:  # a generalized M-step must not lower Q
                for p, o in zip(params, old):
                    p.copy_(o)
        return before
