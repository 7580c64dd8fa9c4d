r"""The vector quantizer of the VQ-VAE (van den Oord et al. 2017), with the usual fixes for codebook
collapse.

Each encoder output vector z_e (the last dimension, or the channels of an image-shaped map) is
replaced by its nearest code e_k of a codebook of K vectors, k = argmin_k |z_e - e_k|^2, and the
gradient is passed straight through (z_q = z_e + sg(e_k - z_e)). The codebook learns

- by an exponential moving average of the vectors assigned to each code (``ema=True``, the
  default; van den Oord et al., appendix A.1; Razavi et al. 2019):
      N_k <- d N_k + (1 - d) n_k,   m_k <- d m_k + (1 - d) sum_{i: k_i = k} z_e,i,
      e_k = m_k / N~_k,  N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j  (Laplace smoothing),
- or by gradient on the codebook loss |sg(z_e) - e_k|^2 (``ema=False``).

The encoder is pulled towards its codes by the commitment loss beta |z_e - sg(e_k)|^2. Against
dead codes: the codebook starts as k-means centres of the first training batch (``kmeans_init``:
Lloyd's algorithm from K distinct random vectors of the batch), and a code whose moving-average
count N_k falls below ``dead_threshold`` (default 1: less than one vector per batch, as in
Jukebox, Dhariwal et al. 2020) is restarted at a random encoder output of the current batch
(``restart_dead``, with the EMA codebook); where the batches hold fewer vectors N than codes K,
the threshold is that fraction of a code's even share N/K (``dead_below``: N < K codes cannot all
get a vector a batch, and a threshold of 1 restarted most of the codebook in every step). Both
use the global random generator (which the Trainer owns, so runs repeat).

Losses are per example: the sum over positions and dimensions of the squared errors.
"""

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from dgmkit.devices import reads_are_free
from dgmkit.nn.data_init import DataInitialised

__all__ = ["VectorQuantizer", "Quantized", "perplexity"]


class Quantized(NamedTuple):
    """``z_q``: the quantized map, straight-through (shape of the input); ``indices``: the codes
    (the input's shape without the vector dimension); ``commitment``: beta |z_e - sg(e)|^2 and
    ``codebook``: |sg(z_e) - e|^2 (0 with the EMA codebook), per example (B,); ``counts`` (K,):
    how often each code was used in this batch."""

    z_q: torch.Tensor
    indices: torch.Tensor
    commitment: torch.Tensor
    codebook: torch.Tensor
    counts: torch.Tensor


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp of the entropy of the code frequencies: K when all K codes are used equally, 1 when one is."""
    p = counts.double() / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum())


class VectorQuantizer(DataInitialised):
    """See the module docstring. ``channel_dim``: the dimension that holds the vectors (1 for
    image-shaped maps (B, D, H, W); -1 for (B, ..., D))."""

    embedding: torch.Tensor
    cluster_size: torch.Tensor
    embed_sum: torch.Tensor

    def __init__(
        self,
        num_codes: int,
        dim: int,
        commitment: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        restart_dead: bool = True,
        dead_threshold: float = 1.0,
        channel_dim: int = 1,
    ):
        super().__init__()
        if num_codes < 2 or dim < 1:
            raise ValueError(f"need at least 2 codes of dimension >= 1, got {num_codes} codes of dimension {dim}")
        if not 0 < decay < 1 or commitment < 0 or eps <= 0 or dead_threshold < 0 or kmeans_iters < 0:
            raise ValueError("need 0 < decay < 1, commitment >= 0, eps > 0, dead_threshold >= 0, kmeans_iters >= 0")
        self.num_codes, self.dim = num_codes, dim
        self.commitment_weight, self.use_ema, self.decay, self.eps = commitment, ema, decay, eps
        self.kmeans_iters = kmeans_iters if kmeans_init else 0
        self.restart_dead = restart_dead and ema and dead_threshold > 0  # (no count is below 0)
        self.dead_threshold = dead_threshold
        self.channel_dim = channel_dim
        init = torch.randn(num_codes, dim) / dim**0.5
        if ema:
            self.register_buffer("embedding", init)
            self.register_buffer("cluster_size", torch.ones(num_codes))
            self.register_buffer("embed_sum", init.clone())
        else:
            self.embedding = nn.Parameter(init)
        self._register_initialized(not kmeans_init)

    # ------------------------------------------------------------ shapes
    def _flatten(self, z: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(B, ..., D) vectors (N, D) and the shape to put them back."""
        moved = z.movedim(self.channel_dim, -1)
        if moved.shape[-1] != self.dim:
            raise ValueError(
                f"expected vectors of dimension {self.dim} in dimension {self.channel_dim}, got shape {tuple(z.shape)}"
            )
        return moved.reshape(-1, self.dim), tuple(moved.shape)

    def _unflatten(self, flat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return flat.reshape(shape).movedim(-1, self.channel_dim)

    # ------------------------------------------------------------ codes
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each vector (N, D) -> (N,)."""
        return _nearest(flat, self.embedding)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The codes of an index map (B, ...) as a map of vectors (in the input's layout), of any
        integer dtype: taken as int64 (torch reads a uint8 index, the dtype of a codes dataset of
        K <= 256, as a mask: [1, 0, 3, 2] gave 3 vectors, those of codes 0, 2 and 3)."""
        integer = not (indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool)
        if not integer or (indices.numel() and (indices.min() < 0 or indices.max() >= self.num_codes)):
            raise ValueError(f"code indices must be integers in 0..{self.num_codes - 1}")
        vectors = self.embedding[indices.long()]  # (B, ..., D)
        return vectors.movedim(-1, self.channel_dim)

    @torch.no_grad()
    def _kmeans(self, flat: torch.Tensor) -> None:
        n = len(flat)
        pick = torch.randperm(n, device=flat.device)[: self.num_codes]
        if n < self.num_codes:  # fewer vectors than codes: repeat them, slightly jittered
            pick = torch.randint(n, (self.num_codes,), device=flat.device)
        centres = flat[pick].clone() + (1e-3 * torch.randn_like(flat[pick]) if n < self.num_codes else 0)
        for _ in range(self.kmeans_iters):
            k = _nearest(flat, centres)
            sums = torch.zeros_like(centres).index_add_(0, k, flat)
            counts = _counts(k, self.num_codes).to(flat.dtype)
            centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        self.embedding.data.copy_(centres)
        if self.use_ema:
            counts = _counts(_nearest(flat, centres), self.num_codes).to(flat.dtype)
            self.cluster_size.copy_(counts.clamp_min(1.0))
            self.embed_sum.copy_(centres * self.cluster_size[:, None])
        self._mark_initialized()

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, k: torch.Tensor, counts: torch.Tensor) -> None:
        d = self.decay
        flat = flat.to(self.embed_sum.dtype)  # the statistics stay in their own precision under autocast
        sums = torch.zeros_like(self.embed_sum).index_add_(0, k, flat)
        parallel = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if parallel:  # data-parallel training: the codebook learns from every rank's part of the batch
            counts = counts.clone()
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(d).add_(counts.to(self.cluster_size.dtype), alpha=1 - d)
        self.embed_sum.mul_(d).add_(sums, alpha=1 - d)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
        self.embedding.copy_(self.embed_sum / smoothed[:, None])
        if self.restart_dead:
            dead = self.cluster_size < self.dead_below(counts.sum())
            if not parallel and not reads_are_free(flat):
                self._restart_unread(flat, dead)
            elif dead.any():
                if len(flat):  # (no vector to restart a code at: a map of no positions)
                    picks = flat[torch.randint(len(flat), (int(dead.sum()),), device=flat.device)]
                    self.embedding[dead] = picks
                    self.embed_sum[dead] = picks
                    self.cluster_size[dead] = 1.0
                if parallel:  # every rank restarts the same codes (the counts agree); rank 0's picks are kept
                    for t in (self.embedding, self.embed_sum, self.cluster_size):
                        dist.broadcast(t, src=0)

    def dead_below(self, vectors: torch.Tensor) -> torch.Tensor:
        """The moving count under which a code is dead: ``dead_threshold`` vectors a batch, times
        N/K where the batch holds fewer ``vectors`` N (all ranks') than the K codes. Such a batch
        cannot give every code one vector: at least K - N codes go unused in every step, and a
        threshold of 1 restarted nearly all of them in every step (N = 16, K = 128: 120 restarts
        a step), each at a vector another code already had. A code now dies where it gets under
        ``dead_threshold`` of its even share N/K; restarted at a count of 1, it has
        log(K/N)/-log(decay) steps to win vectors (207 at N = 16, K = 128, decay 0.99)."""
        return self.dead_threshold * (vectors.to(self.cluster_size.dtype) / self.num_codes).clamp(max=1.0)

    @torch.no_grad()
    def _restart_unread(self, flat: torch.Tensor, dead: torch.Tensor) -> None:
        """The restart of dead codes without reading which are dead (on a GPU, a read waits for
        the device; under torch.compile it ends the graph): a random vector of the batch drawn
        for every code, taken where the code is dead."""
        if not len(flat):  # (no vector to restart a code at: a map of no positions)
            return
        picks = flat[torch.randint(len(flat), (self.num_codes,), device=flat.device)]
        alive = ~dead[:, None]
        self.embedding.copy_(torch.where(alive, self.embedding, picks))
        self.embed_sum.copy_(torch.where(alive, self.embed_sum, picks))
        self.cluster_size.copy_(torch.where(dead, torch.ones_like(self.cluster_size), self.cluster_size))

    # ------------------------------------------------------------ forward
    def forward(self, z_e: torch.Tensor) -> Quantized:
        flat, shape = self._flatten(z_e)
        if self.training and len(flat) and self.needs_initialising():  # (no k-means start from no vector)
            self._kmeans(flat.detach().to(self.embedding.dtype))  # float32 counts and means under autocast
        k = self.nearest(flat.detach())
        counts = _counts(k, self.num_codes)
        e = self.embedding[k]
        batch = z_e.shape[0]
        commitment = self.commitment_weight * _per_example(flat - e.detach(), shape)
        if self.use_ema:
            codebook = torch.zeros(batch, device=z_e.device, dtype=z_e.dtype)
            if self.training and not self.initialising_only:
                self._ema_update(flat.detach(), k, counts)
        else:
            codebook = _per_example(flat.detach() - e, shape)
        z_q = flat + (e - flat).detach()  # straight-through: the gradient reaches z_e unchanged
        return Quantized(self._unflatten(z_q, shape), k.reshape(shape[:-1]), commitment, codebook, counts)


def _per_example(diff: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The squared errors ``diff`` (N, D) summed over each example's positions and dimensions, (B,)
    for the vectors' shape (B, ..., D): by that shape, not reshape(B, -1), which an empty batch
    (B = 0) left ambiguous (a raw RuntimeError from the two-level VQ-VAE's codes of no images)."""
    return diff.square().reshape(shape).flatten(1).sum(1)


def _counts(k: torch.Tensor, num_codes: int) -> torch.Tensor:
    """How often each of the codes 0..K-1 occurs in k (K,), int64: bincount's numbers, in a
    shape known without looking at k (bincount's depends on k's largest value)."""
    return torch.zeros(num_codes, dtype=torch.int64, device=k.device).scatter_add_(0, k, torch.ones_like(k))


def _nearest(flat: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre of each vector, by |x|^2 - 2 x.e + |e|^2 about the centres' mean:
    the distances are the same, but the terms cancel at the scale of the spread, not of the offset
    (about the origin, float32 vectors near 10 with codes 0.05 apart took a farther code 8% of the time)."""
    mid = centres.mean(0)
    flat, centres = flat - mid, centres - mid
    d2 = flat.square().sum(1, keepdim=True) - 2 * flat @ centres.T + centres.square().sum(1)[None, :]
    return d2.argmin(1)
