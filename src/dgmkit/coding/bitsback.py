r"""Bits-back coding of images with a latent variable model (BB-ANS: Townsend, Bird & Barber,
"Practical lossless compression with latent variables using bits back coding", ICLR 2019).

An ANS coder is a stack. Each image x goes on it in three moves: decode a latent z from the
stack with q(z|x) (taking back -log2 Q(z|x) bits already there), encode x with p(x|z), encode z
with p(z). Its net cost is -log2 p(x|z) - log2 P(z) + log2 Q(z|x), whose mean over the draws is
the negative ELBO in bits. Decoding runs the moves backwards: z from p(z), x from p(x|z), and z
encoded back with q(z|x), which returns the stack to the state before the image.

A Gaussian latent is coded on a grid: each dimension, standardised by the prior's mean and
scale, falls into buckets of width ``BUCKET`` (in units of the prior's scale); P(z) and Q(z|x)
are the Gaussians' masses of its bucket (constriction's quantized Gaussian), and the decoder
reads the bucket's centre. For posteriors much wider than a bucket the net cost is the ELBO's;
one narrower than a bucket puts all its mass on one, and the code is of that coarser model.

The coder gives every bucket in a quantized Gaussian's range a mass of at least 2**-24. Over
the prior's whole range (tens of thousands of buckets) that floor would hand a narrow posterior
about a thousandth of its draws far from its mean, each costing hundreds of bits through p(x|z);
so q(z|x) is quantized over a window of its own, the buckets within about 8 of its scales of the
bucket of its mean (a power of two, the same for the decoder, which knows the mean when it gives
the bits back), and the floor's mass stays there.

A mixture prior (of diagonal Gaussians: a mixture-of-Gaussians prior, the VampPrior) codes its
component c by bits back as well (``_MixtureGrid``): c is taken back with p(c|z), then z is coded
under p(z|c) and c under p(c).

The first image has no bits on the stack to take back: the stack starts with fixed pseudo-random
words (``first_words``), part of the output: as many as the first image's latents take back from a
trial stack, an eighth more and 64 bits (at most ``seed_words``, enough for any image). The images are
coded in batches that grow with what the stack holds (``next_batch``: a batch takes back no more
than the bits on it, with a margin), and each batch's size goes on the stack after it (uniform
over 0..batch_size), so decoding reads the size of the batch it undoes next. A stack that ran
short would still decode exactly, at a worse rate. Decoding ends with exactly first words on
the stack (``first_words`` of their number: files coded with a full ``seed_words`` decode too),
which it checks; a payload larger than the declared images can fill (``most_bits``) is refused
before decoding, and the stack is checked against the images left after each batch. Encoder and
decoder compute q(z|x) on the same batches and p(x|z) on the same chunks of images, on one CPU
thread (``one_thread``), so both see the same probabilities bit for bit on the same type of
machine and software.
"""

import functools
import hashlib
import math
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import torch
from torch.distributions import Distribution, Independent, Normal, OneHotCategorical

from dgmkit._modes import codes, evaluates
from dgmkit._rng import seeded
from dgmkit.coding.arm_coder import (
    _CODER_ERRORS,
    _coder,
    check_batch_size,
    check_count,
    check_images,
    one_thread,
    pmf_rows,
)
from dgmkit.coding.container import check_words
from dgmkit.devices import device_of, dtype_of
from dgmkit.distributions import DiagonalGaussianMixture
from dgmkit.errors import ConfigError, DataError
from dgmkit.evaluation.estimates import elbo_terms
from dgmkit.models import VAE
from dgmkit.models.hvae import HierarchicalVAE
from dgmkit.models.vdvae import DeepTopDownVAE

__all__ = [
    "encode_bits_back",
    "decode_bits_back",
    "next_batch",
    "seed_words",
    "first_words",
    "first_words_bits",
    "most_bits",
    "check_bits_back",
    "most_bits_back_batch",
    "negative_elbo",
    "BUCKET",
    "RANGE",
]

BUCKET = 2.0**-8  # width of a latent bucket, in units of the prior's scale
RANGE = 32  # a posterior mean lies within the prior's mean +- RANGE scales
_CENTRES = int(RANGE / BUCKET)  # the bucket of a posterior mean: -_CENTRES.._CENTRES
_MAX_WINDOW = 2**12  # a posterior's buckets: its mean's +- 8 scales (a power of two), at most this (16 prior scales)
_EDGE = _CENTRES + _MAX_WINDOW  # bucket indices -_EDGE.._EDGE
_PRECISION_BITS = 24  # constriction's default: a latent bucket costs at most 24 bits to take back
_PMF_BUDGET = 2**22  # pixel probabilities (float64) computed at once: images x pixels x levels
_MAX_BATCH = 2**20  # images a batch (its size goes on the stack, uniform over 0..batch size: the coder takes < 2**24)


@evaluates
@torch.no_grad()
def check_bits_back(model: "Codable") -> int:
    """The number of levels of a pixel that ``model`` codes by bits-back, or a ConfigError that
    says what it lacks: a diagonal Gaussian posterior and prior (or a mixture of them), or
    independent categorical ones (the posterior tried on a blank image), layers drawn from the
    top down (a hierarchical VAE), a discrete likelihood."""
    return _codec_of(model)[0]


def _codec_of(model: "Codable") -> tuple[int, "_Flat | _Layers"]:
    """``check_bits_back``'s levels, and the codec of the model's latents."""
    if getattr(model, "coding", None) != "bits-back":
        raise ConfigError(
            f"a {type(model).__name__} does not declare bits-back coding (its coding is "
            f"{getattr(model, 'coding', None)!r}): dgmkit.coding.coder_of(model) gives its coder, if it has one"
        )
    levels = model.coding_levels
    if levels is None:
        raise ConfigError(
            "bits-back coding codes x with p(x|z), which must be a probability of discrete pixels (a Bernoulli, "
            "categorical or discretized logistic likelihood of one alphabet for every pixel); this model's is not one "
            "of these (a density, or a table's likelihood of mixed columns)"
        )
    blank = torch.zeros(1, *model.event_shape, dtype=torch.long, device=device_of(model))
    if isinstance(model, (HierarchicalVAE, DeepTopDownVAE)):  # (its layers' posteriors and priors: diagonal Gaussians)
        if not model.draws_top_down:
            raise ConfigError(
                "bits-back coding of a hierarchical VAE needs a posterior that draws the layers from the top down (a "
                "top-down or ladder posterior), so that each layer's grid follows its prior given the layers above; "
                "this model's is bottom-up"
            )
        codec: _Flat | _Layers = _Layers(model, _latents(model.top(), "the top prior p(z_L)"))
    else:
        codec = _Flat(model, _latents(model.prior()))
    codec.latents_of(blank)
    return int(levels), codec


@torch.no_grad()
def negative_elbo(model: "Codable", x: torch.Tensor) -> torch.Tensor:
    """-ELBO of each image (nats, float64), one seeded draw of z a datapoint (the KL in closed
    form where it has one), 1000 images at a time: what bits-back coding's rate tends to."""
    device = device_of(model)
    with seeded(0, device):
        parts = [elbo_terms(model, x[i : i + 1000].to(device), 1000)["elbo"].cpu() for i in range(0, len(x), 1000)]
    return -torch.cat(parts)


def next_batch(stack_bits: int, bits_per_image: float, left: int, batch_size: int) -> int:
    """The size of the next batch: the images whose latents the stack can pay for, taking back
    ``bits_per_image`` each (the last batch's, with a margin of a quarter), at least one and at
    most ``batch_size`` and the images ``left``."""
    affordable = int((stack_bits - 64) / (1.25 * max(bits_per_image, 1.0)))
    return max(1, min(batch_size, left, affordable))


def first_words(n: int) -> np.ndarray:
    """n first words of a stack: fixed pseudo-random bits (SHA-256 in counter mode, the same with
    any library version), the last (the top) odd."""
    blocks = (hashlib.sha256(f"dgmkit bits-back {i}".encode()).digest() for i in range(math.ceil(n / 8)))
    words = np.frombuffer(b"".join(blocks), dtype="<u4")[:n].astype(np.uint32)
    if n:
        words[-1] |= 1  # the top word of a stack holds its state: never zero
    return words


def seed_words(latent_dim: int) -> np.ndarray:
    """The most first words a file of a model with ``latent_dim`` latent dimensions starts with:
    enough to take back any image's latents (at most 24 bits a dimension) with a margin (every
    file before 2026-11-27 starts with these)."""
    return first_words(_most_first_words(latent_dim))


def _most_first_words(latent_dim: int) -> int:
    return math.ceil((_PRECISION_BITS * latent_dim + 64) / 32) + 1


def most_bits(latent_dim: int, n: int, pixels: int) -> int:
    """The most bits that the stack of n images of ``pixels`` pixels coded with a model of
    ``latent_dim`` latent dimensions holds: its first words (at most ``seed_words``) and 24 bits for
    each value coded onto it. Coding a value of probability p >= 2**-24 (the coder's precision) turns
    a state x into one below (x / p + 1) * 2**24, so the stack's bits grow by at most 24, and taking
    a value back adds none. An image codes its pixels, its latents (``latent_dim`` of them, and a
    mixture prior's component) and at most one batch size. No bound holds the other way: an image
    can cost next to nothing (a posterior that is its prior and a sure p(x|z): a million 4x4 images
    in 1133 words), so a small payload may rightly declare many images, decoded at the usual speed."""
    return 32 * _most_first_words(latent_dim) + _PRECISION_BITS * n * (pixels + latent_dim + 2)


def _start_words(latents: "_Flat | _Layers", f: "_Families", x: torch.Tensor, latent_dim: int) -> np.ndarray:
    """The words the stack of images x (N, *event) starts with: ``_first_words_for`` its first
    image, ``seed_words`` for no images."""
    return _first_words_for(latents, f, x[:1], latent_dim) if len(x) else seed_words(latent_dim)


@codes
@torch.no_grad()
def first_words_bits(model: "Codable", x: torch.Tensor) -> int:
    """The bits of the first words that ``encode_bits_back(model, x)`` starts its stack with and
    its payload carries: paid once a file, whatever the number of images (chosen from the first
    image's latents, so they come from the first image alone)."""
    levels, latents, _ = _check(model, 1, len(x))
    x = check_images(model, x[:1], levels).cpu()
    with one_thread():
        return 32 * len(_start_words(latents, _Families(1), x, model.latent_dim))


def _first_words_for(latents: "_Flat | _Layers", f: "_Families", x0: torch.Tensor, latent_dim: int) -> np.ndarray:
    """The first words of a file whose first image is x0 (1, *event): what its latents take back
    from a trial stack of ``seed_words``, an eighth more and 64 bits (at most ``seed_words``): the
    first image's latents, taken from other words, take back about as much (a sum over the latent
    dimensions, each of about 1 bit's spread)."""
    most = seed_words(latent_dim)
    trial = _Ans(most)
    before = trial.bits()
    latents.take(trial, f, x0)
    need = before - trial.bits()
    return first_words(min(math.ceil((1.125 * need + 64) / 32) + 1, len(most)))


def _gaussian(d: Distribution) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The mean and scale (*batch, M) of a diagonal Gaussian over the latent vector, or None."""
    if isinstance(d, Independent) and isinstance(d.base_dist, Normal) and d.reinterpreted_batch_ndims == 1:
        shape = (*d.batch_shape, *d.event_shape)
        return d.base_dist.loc.expand(shape), d.base_dist.scale.expand(shape)
    return None


def _categories(d: Distribution) -> torch.Tensor | None:
    """The probabilities (*batch, V, K) of V independent categorical variables (one-hot), or None."""
    if isinstance(d, Independent) and isinstance(d.base_dist, OneHotCategorical) and len(d.event_shape) == 2:
        return d.base_dist.probs.expand(*d.batch_shape, *d.event_shape)
    return None


def _refused(d: Distribution, what: str) -> ConfigError:
    inner = f" of {type(d.base_dist).__name__}" if isinstance(d, Independent) else ""
    return ConfigError(
        f"bits-back coding needs {what} to be a diagonal Gaussian over the latent vector (the prior may be a "
        f"mixture of them), or independent categorical variables; this model's is a {type(d).__name__}{inner} (a VAE "
        "with the Gaussian posterior and the standard, mixture-of-Gaussians or VampPrior prior codes, and a discrete VAE)"
    )


def _checked(a: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(a).all():
        raise DataError(f"{what} has non-finite parameters (are the weights finite?)")
    return np.ascontiguousarray(a)


class _Grid:
    """Gaussian latents on a grid of buckets ``BUCKET`` prior scales wide: bucket indices (flat,
    B*M) and the quantized Gaussians' parameters in bucket units, float64 on the CPU."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        self.loc, self.scale = loc.detach().double().cpu(), scale.detach().double().cpu()

    def posterior(self, q: Distribution) -> Any:  # (the mean and scale in bucket units)
        params = _gaussian(q)
        if params is None:
            raise _refused(q, "the posterior q(z|x)")
        mean = _checked(
            ((params[0].detach().double().cpu() - self.loc) / (self.scale * BUCKET)).reshape(-1).numpy(), "q(z|x)"
        )
        std = _checked((params[1].detach().double().cpu() / (self.scale * BUCKET)).reshape(-1).numpy(), "q(z|x)")
        if not (std > 0).all():
            raise DataError("q(z|x) has a scale that is not positive (are the weights finite?)")
        return mean, std

    def _prior(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        m = self.loc.shape[-1]  # (the loc of a layer's prior is (b, M): one for each image)
        return np.zeros(b * m), np.full(b * m, 1.0 / BUCKET)

    def prior_pop(self, ans: "_Ans", f: "_Families", b: int) -> np.ndarray:
        return ans.pop(f.gauss, *self._prior(b))

    def prior_push(self, ans: "_Ans", f: "_Families", index: np.ndarray, b: int) -> None:
        ans.push(np.ascontiguousarray(index, dtype=np.int32), f.gauss, *self._prior(b))

    def take(self, ans: "_Ans", f: "_Families", params: Any) -> np.ndarray:
        """Decode bucket indices from the stack with the posterior: each within its window."""
        mean, std = params
        centre, windows = _windows(mean, std)
        index = np.empty(len(mean), dtype=np.int64)
        for w, at in windows:
            index[at] = centre[at] + ans.pop(f.window(w), mean[at] - centre[at], std[at])
        return index

    def give(self, ans: "_Ans", f: "_Families", index: np.ndarray, params: Any) -> None:
        """Encode the indices back with the posterior (the inverse of ``take``)."""
        mean, std = params
        centre, windows = _windows(mean, std)
        for w, at in reversed(windows):
            offset = index[at] - centre[at]
            if np.abs(offset).max(initial=0) > w:  # (only a decoder of data not coded with this model meets one)
                raise _AnsFailure
            ans.push(np.ascontiguousarray(offset, dtype=np.int32), f.window(w), mean[at] - centre[at], std[at])

    def z(self, index: np.ndarray, b: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        u = torch.from_numpy(index.astype(np.float64)).view(b, -1) * BUCKET
        return (self.loc + self.scale * u).to(dtype=dtype, device=device)


class _Categories:
    """V independent categorical latents of K classes, coded exactly: class indices (flat, B*V)
    and their probabilities (B*V, K), float64 on the CPU."""

    def __init__(self, probs: torch.Tensor):
        self.probs = _checked(probs.detach().double().cpu().numpy(), "p(z)")
        self.shape = tuple(probs.shape)  # (V, K)

    def posterior(self, q: Distribution) -> Any:  # (the probabilities, (B*V, K))
        probs = _categories(q)
        if probs is None or tuple(probs.shape[-2:]) != self.shape:
            raise _refused(q, "the posterior q(z|x)")
        return _checked(probs.detach().double().cpu().reshape(-1, self.shape[1]).numpy(), "q(z|x)")

    def prior_pop(self, ans: "_Ans", f: "_Families", b: int) -> np.ndarray:
        return ans.pop(f.categorical, np.tile(self.probs, (b, 1)))

    def prior_push(self, ans: "_Ans", f: "_Families", index: np.ndarray, b: int) -> None:
        ans.push(np.ascontiguousarray(index, dtype=np.int32), f.categorical, np.tile(self.probs, (b, 1)))

    def take(self, ans: "_Ans", f: "_Families", probs: Any) -> np.ndarray:
        return ans.pop(f.categorical, probs).astype(np.int64)

    def give(self, ans: "_Ans", f: "_Families", index: np.ndarray, probs: Any) -> None:
        ans.push(np.ascontiguousarray(index, dtype=np.int32), f.categorical, probs)

    def z(self, index: np.ndarray, b: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        one_hot = torch.nn.functional.one_hot(torch.from_numpy(index.astype(np.int64)), self.shape[1])
        return one_hot.view(b, *self.shape).to(dtype=dtype, device=device)


class _MixtureGrid(_Grid):
    """Gaussian latents under a mixture of diagonal Gaussians (a mixture-of-Gaussians prior, the
    VampPrior) on a grid ``BUCKET`` of the mixture's own scales wide (each dimension standardised
    by the mixture's mean and standard deviation, widened where a component's mean +- 8 of its
    scales would lie beyond ``RANGE / 2`` of them). z is coded with bits back on its component c
    as well (the posterior then is p(c|z)): taking c back under p(c|z), z coded under p(z|c) and
    c under p(c) cost -log2 p(z) in all. p(c|z) is computed from the bucket's centre, in float64
    with elementwise operations only, so encoder and decoder get the same numbers; at most
    ``_PMF_BUDGET`` numbers at once."""

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor):
        log_w = torch.log_softmax(logits.detach().double().cpu(), -1)
        w, loc, scale = log_w.exp(), loc.detach().double().cpu(), scale.detach().double().cpu()
        mean = (w[:, None] * loc).sum(0)
        std = ((w[:, None] * (scale.square() + (loc - mean).square())).sum(0)).sqrt()
        std = torch.maximum(std, ((loc - mean).abs() + 8 * scale).amax(0) / (RANGE / 2))  # every component on it
        super().__init__(mean, std)
        self.log_weights = _checked(log_w.numpy(), "p(z)'s weights")  # (K,)
        self.weights = _coder().model.Categorical(_checked(w.numpy(), "p(z)'s weights"), perfect=False)
        self.means = _checked(((loc - mean) / (std * BUCKET)).numpy(), "p(z)")  # (K, M), in buckets
        self.stds = _checked((scale / (std * BUCKET)).numpy(), "p(z)")
        if not (self.stds > 0).all():
            raise DataError("p(z) has a component of a scale that is not positive (are the weights finite?)")

    def _rows(self, b: int) -> list[tuple[int, int]]:
        """The images whose p(c|z) is computed (and coded) together."""
        rows = max(1, _PMF_BUDGET // self.means.size)
        return [(s, min(s + rows, b)) for s in range(0, b, rows)]

    def _given_z(self, index: np.ndarray) -> np.ndarray:
        """p(c|z) of each image (B, K) of bucket indices (B*M,): z at its buckets' centres."""
        i = index.reshape(-1, 1, self.means.shape[1]).astype(np.float64)
        log_joint = self.log_weights - np.log(self.stds).sum(-1) - 0.5 * np.square((i - self.means) / self.stds).sum(-1)
        p = np.exp(log_joint - log_joint.max(-1, keepdims=True))
        return p / p.sum(-1, keepdims=True)

    def _component(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.means[c].reshape(-1), self.stds[c].reshape(-1)

    def prior_pop(self, ans: "_Ans", f: "_Families", b: int) -> np.ndarray:
        c = ans.pop(self.weights, b).astype(np.int64)
        index = ans.pop(f.gauss, *self._component(c)).astype(np.int64)
        m = self.means.shape[1]
        for s, e in reversed(self._rows(b)):  # c's bits given back, as ``prior_push`` took them
            p = self._given_z(index[s * m : e * m])
            ans.push(np.ascontiguousarray(c[s:e], dtype=np.int32), f.categorical, p)
        return index

    def prior_push(self, ans: "_Ans", f: "_Families", index: np.ndarray, b: int) -> None:
        m, c = self.means.shape[1], np.empty(b, dtype=np.int64)
        for s, e in self._rows(b):  # bits back
            c[s:e] = ans.pop(f.categorical, self._given_z(index[s * m : e * m]))
        ans.push(np.ascontiguousarray(index, dtype=np.int32), f.gauss, *self._component(c))
        ans.push(np.ascontiguousarray(c, dtype=np.int32), self.weights)


def _latents(prior: Distribution, what: str = "the prior p(z)") -> "_Grid | _Categories":
    """How the model's latents are coded, from its prior p(z)."""
    gaussian, categories = _gaussian(prior), _categories(prior)
    if gaussian is not None:
        return _Grid(*gaussian)
    if isinstance(prior, DiagonalGaussianMixture):
        if len(prior.logits) == 1:  # (one component: no choice to code)
            return _Grid(prior.loc[0], prior.scale[0])
        return _MixtureGrid(prior.logits, prior.loc, prior.scale)
    if categories is not None:
        return _Categories(categories)
    raise _refused(prior, what)


class _BeyondRange(DataError):
    """A posterior mean beyond the grid's ``RANGE`` prior scales: its entry ``at`` of the ``size``
    (B*M) that the grid coded at once, ``scales`` from the prior's mean."""

    def __init__(self, scales: float, at: int, size: int):
        self.scales, self.at, self.size = scales, at, size
        super().__init__(
            f"q(z|x) puts a latent's mean {scales:.0f} prior scales from the prior's mean, beyond the +-{RANGE} prior "
            "scales that bits-back coding's grid covers"
        )

    def of_image(self, first: int, images: int) -> DataError:
        """The refusal of coding the ``images`` images from ``first`` on (0-based) whose grid this
        was: which one, what happened and what to do (a legitimate image, with sound weights: one far
        from those the model was trained on can be given such a code)."""
        i = first + self.at // max(self.size // images, 1)
        return DataError(
            f"image {i} (counting from 0) cannot be coded by bits back with this model: q(z|x) puts one of its "
            f"latents' means {self.scales:.0f} prior scales from the prior's mean, beyond the +-{RANGE} prior scales "
            "that the coder's grid covers (an image unlike those the model was trained on, whose code p(z) deems all "
            "but impossible); leave it out of the images to compress, or compress it with another model"
        )


def _windows(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """The bucket of each posterior mean, and the entries grouped by their window's half-width
    (the power of two at or above 8 scales, at least 16 buckets, at most ``_MAX_WINDOW``), in
    increasing order; a mean beyond ``RANGE`` prior scales is refused (``_BeyondRange``)."""
    centre = np.rint(mean)
    if np.abs(centre).max(initial=0) > _CENTRES:
        at = int(np.abs(centre).argmax())
        raise _BeyondRange(float(np.abs(mean[at])) * BUCKET, at, len(mean))
    half = np.minimum(2.0 ** np.ceil(np.log2(np.maximum(8 * std, 16))), _MAX_WINDOW).astype(np.int64)
    return centre.astype(np.int64), [(int(w), np.flatnonzero(half == w)) for w in np.unique(half)]


class _Flat:
    """A VAE's latent vector, coded with q(z|x) and p(z) as ``latents`` (its codec) says."""

    def __init__(self, model: VAE, latents: "_Grid | _MixtureGrid | _Categories"):
        self.model, self.latents = model, latents

    def latents_of(self, x: torch.Tensor) -> Any:
        """q(z|x)'s parameters as the codec reads them (checked)."""
        return self.latents.posterior(self.model.posterior(x.to(device_of(self.model))))

    def take(self, ans: "_Ans", f: "_Families", x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """Decode z from the stack with q(z|x) (bits back): what ``give`` needs, and z."""
        index = self.latents.take(ans, f, self.latents_of(x))
        return index, self.latents.z(index, len(x), dtype_of(self.model), device_of(self.model))

    def prior_push(self, ans: "_Ans", f: "_Families", taken: Any, b: int) -> None:
        self.latents.prior_push(ans, f, taken, b)

    def prior_pop(self, ans: "_Ans", f: "_Families", b: int) -> tuple[Any, torch.Tensor]:
        index = self.latents.prior_pop(ans, f, b)
        return index, self.latents.z(index, b, dtype_of(self.model), device_of(self.model))

    def give(self, ans: "_Ans", f: "_Families", x: torch.Tensor, taken: Any, z: torch.Tensor) -> None:
        """Encode z back with q(z|x): the inverse of ``take``."""
        self.latents.give(ans, f, taken, self.latents_of(x))


class _Layers:
    """A stack of layers drawn from the top down (a hierarchical VAE with a top-down or ladder
    posterior, the deep residual top-down VAE), each layer coded as a VAE's latent vector is:
    taken from the stack top layer first with q(z_l | x, z_{>l}) on the grid of the layer's prior
    given the layers above, p(z_l | z_{>l}) (the top layer: the top prior's, a mixture's
    included), and coded under those priors bottom layer first, so that decoding reads the top
    layer first and knows each layer's prior, and so its grid, when it comes to it. One pass of
    the model's ``top_down_steps`` a batch on each side gives every layer's prior and posterior
    from the same layers above, so encoder and decoder see the same numbers."""

    def __init__(self, model: "HierarchicalVAE | DeepTopDownVAE", top: "_Grid | _MixtureGrid | _Categories"):
        if not isinstance(top, _Grid):
            raise _refused(model.top(), "the top prior p(z_L)")
        self.model, self.top = model, top

    def _walk(
        self, x: torch.Tensor | None, b: int, choose: Callable[[int, _Grid, Any], np.ndarray]
    ) -> tuple[Any, torch.Tensor]:
        """One top-down pass over b rows (of x, or of the priors alone): each layer's grid (its
        prior given the layers above), its bucket indices ``choose(layer, grid, q)`` (q: its
        posterior, None without x), and z at their centres. Returns {layer: (indices, grid, q)}
        and the joint z (b, sum M_l)."""
        model = self.model
        steps = model.top_down_steps(None if x is None else x.to(device_of(model)), b)
        layer, p, q = next(steps)
        taken, zs = {}, [torch.empty(0)] * model.num_layers
        while True:
            grid = self.top if p is None else _Grid(p.mean, p.stddev)
            index = choose(layer, grid, q)
            taken[layer], zs[layer] = (index, grid, q), grid.z(index, b, dtype_of(model), device_of(model))
            try:
                layer, p, q = steps.send(zs[layer])
            except StopIteration:
                return taken, torch.cat(zs, -1)

    def latents_of(self, x: torch.Tensor) -> Any:
        _, _, q = next(self.model.top_down_steps(x.to(device_of(self.model)), len(x)))
        assert q is not None  # (given x)
        return self.top.posterior(q)

    def take(self, ans: "_Ans", f: "_Families", x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        return self._walk(x, len(x), lambda _, grid, q: grid.take(ans, f, grid.posterior(q)))

    def prior_push(self, ans: "_Ans", f: "_Families", taken: Any, b: int) -> None:
        for layer in range(self.model.num_layers):
            index, grid, _ = taken[layer]
            grid.prior_push(ans, f, index, b)

    def prior_pop(self, ans: "_Ans", f: "_Families", b: int) -> tuple[Any, torch.Tensor]:
        return self._walk(None, b, lambda _, grid, q: grid.prior_pop(ans, f, b))

    def give(self, ans: "_Ans", f: "_Families", x: torch.Tensor, taken: Any, z: torch.Tensor) -> None:
        """The reverse of ``take``: the layers' posteriors from one pass with x and the decoded
        layers, given back bottom layer first."""
        posteriors, _ = self._walk(x, len(x), lambda layer, grid, q: taken[layer][0])
        for layer in range(self.model.num_layers):
            index, grid, q = posteriors[layer]
            grid.give(ans, f, index, grid.posterior(q))


Codable: TypeAlias = VAE | HierarchicalVAE | DeepTopDownVAE  # one latent vector, or layers drawn top-down


def _pixel_probabilities(model: Codable, z: torch.Tensor, levels: int) -> np.ndarray:
    """p(x_d = v | z) for every pixel of each image, a C-ordered float64 array (B * D, levels) of
    finite, normalised rows."""
    return pmf_rows(model.pixel_log_pmf(z), levels, "of pixels given z")


def _chunks(b: int, pixels: int, levels: int) -> list[tuple[int, int]]:
    """The images of a batch whose pixel probabilities are computed (and coded) together."""
    rows = max(1, _PMF_BUDGET // (pixels * levels))
    return [(s, min(s + rows, b)) for s in range(0, b, rows)]


def most_bits_back_batch(model: "Codable") -> int:
    """The most images a batch codes (its size goes on the stack), whatever the model."""
    return _MAX_BATCH


def _check(model: Codable, batch_size: int, n: int) -> tuple[int, "_Flat | _Layers", int]:
    """The levels, the latents' codec and the largest batch (``batch_size``, at most ``n``)."""
    batch_size = min(check_batch_size(batch_size), max(n, 1))
    if batch_size > _MAX_BATCH:
        raise DataError(f"the coding batch size must be at most {_MAX_BATCH} images, got {batch_size}")
    with one_thread():  # (a VampPrior's components come from the encoder: on one thread, as the coding)
        return (*_codec_of(model), batch_size)


class _AnsFailure(Exception):
    """constriction refused a symbol or its probabilities (an error, or a panic of its Rust code)."""


class _Ans:
    """constriction's ANS stack, its refusals raised as ``_AnsFailure``: torch's own errors in the
    loop around it stay what they are."""

    def __init__(self, words: np.ndarray):
        self.stack = _coder().stack.AnsCoder(words)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except _CODER_ERRORS:
            raise _AnsFailure from None
        except BaseException as e:  # pyo3's PanicException derives from BaseException
            if type(e).__name__ != "PanicException":
                raise
            raise _AnsFailure from None

    def pop(self, family: Any, *params: Any) -> np.ndarray:
        return np.asarray(self._call(self.stack.decode, family, *params))

    def push(self, symbols: np.ndarray | np.integer, family: Any, *params: Any) -> None:
        self._call(self.stack.encode_reverse, symbols, family, *params)

    def bits(self) -> int:
        return int(self.stack.num_valid_bits())  # (num_bits counts whole words)


class _Families:
    """The coder's models: latent buckets under the prior, a posterior's window, pixels, batch sizes."""

    def __init__(self, batch_size: int):
        model = _coder().model
        self.gauss = model.QuantizedGaussian(-_EDGE, _EDGE)
        self.window = functools.cache(lambda w: model.QuantizedGaussian(-w, w))
        self.categorical = model.Categorical(perfect=False)  # (pixels, categorical latents)
        self.sizes = model.Uniform(batch_size + 1)  # (constriction's uniform model needs two values or more)


@codes
@torch.no_grad()
def encode_bits_back(model: Codable, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Compress integer images (N, *event) to ANS words (uint32) by bits-back coding (on one
    CPU thread: see ``one_thread``)."""
    levels, latents, batch_size = _check(model, batch_size, len(x))
    x = check_images(model, x, levels).cpu()
    f = _Families(batch_size)
    pixels = math.prod(x.shape[1:])
    start, taken = 0, float(_PRECISION_BITS * model.latent_dim)  # bits taken back an image: at most this at first
    b = 1  # (the images whose latents are taken: the first one alone, on a trial stack, then each batch)
    try:
        with one_thread():
            ans = _Ans(_start_words(latents, f, x, model.latent_dim))
            while start < len(x):
                b = next_batch(ans.bits(), taken, len(x) - start, batch_size)
                xb = x[start : start + b]
                before = ans.bits()
                taken_z, z = latents.take(ans, f, xb)  # bits back
                taken = (before - ans.bits()) / b
                for s, e in _chunks(b, pixels, levels):
                    probs = _pixel_probabilities(model, z[s:e], levels)
                    ans.push(np.ascontiguousarray(xb[s:e].reshape(-1).numpy(), dtype=np.int32), f.categorical, probs)
                latents.prior_push(ans, f, taken_z, b)
                ans.push(np.int32(b), f.sizes)  # read first when decoding
                start += b
    except _BeyondRange as e:
        raise e.of_image(start, b) from None
    except _AnsFailure:
        raise DataError(
            "the ANS coder cannot code these images: the model gives one of their pixels (or latents) a probability too "
            "small to code"
        ) from None
    return np.asarray(ans.stack.get_compressed(), dtype=np.uint32)


def _check_stack_size(words: int, latent_dim: int, n: int, pixels: int) -> None:
    """Refuses, before decoding, a stack of more ``words`` than coding n images can leave (``most_bits``)."""
    most = math.ceil(most_bits(latent_dim, n, pixels) / 32)  # (a stack of b valid bits is ceil(b / 32) words)
    if words > most:
        raise DataError(
            f"the compressed data holds {words} words, more than bits-back coding with this model writes for "
            f"{n} images of {pixels} pixels ({most} at most: its first words and 24 bits for each pixel, latent and "
            f"batch size): it was not coded for {n} images (damaged, crafted, or joined to other data)"
        )


@codes
@torch.no_grad()
def decode_bits_back(model: Codable, words: np.ndarray, n: int, batch_size: int = 500) -> torch.Tensor:
    """Invert ``encode_bits_back``: n images (N, *event) as int64, ``batch_size`` the one it was
    given. Words that the model cannot have produced raise DataError (the stack must end as it began)."""
    n = check_count(n, tuple(model.event_shape))
    levels, latents, batch_size = _check(model, batch_size, n)
    words = check_words(words)
    if not len(words) or words[-1] == 0:
        raise DataError("the compressed data is not an ANS stack of this coder (empty, or its top word is zero)")
    shape, pixels = model.event_shape, math.prod(model.event_shape)
    _check_stack_size(len(words), model.latent_dim, n, pixels)
    f, ans = _Families(batch_size), _Ans(words)
    out = torch.empty(n, *shape, dtype=torch.long)
    end, over = n, 0
    try:
        with one_thread():
            while end > 0:
                if ans.bits() > most_bits(model.latent_dim, end, pixels):  # (more than coding the first ``end`` left)
                    over = ans.bits()
                    break
                b = int(ans.pop(f.sizes))
                if not 1 <= b <= end:
                    raise _AnsFailure
                taken_z, z = latents.prior_pop(ans, f, b)
                xb = torch.empty(b, pixels, dtype=torch.long)
                for s, e in reversed(_chunks(b, pixels, levels)):
                    probs = _pixel_probabilities(model, z[s:e], levels)
                    xb[s:e] = torch.from_numpy(ans.pop(f.categorical, probs).astype(np.int64)).view(e - s, -1)
                xb = xb.view(b, *shape)
                latents.give(ans, f, xb, taken_z, z)  # the bits given back
                out[end - b : end] = xb
                end -= b
    except _AnsFailure:
        raise DataError(
            f"the compressed data is invalid for this model (the ANS coder could not decode it): {_not_ours(batch_size)}"
        ) from None
    except DataError:  # (a latent or pixel no coded image reaches: a grid's posterior mean out of range, say)
        raise DataError(
            "the compressed data is invalid for this model (it decodes to latents that coding no image gives): "
            + _not_ours(batch_size)
        ) from None
    if over:
        raise DataError(
            f"the compressed data is invalid for this model: with {end} of its {n} images left to decode, its stack "
            f"holds {over} bits, more than the code of {end} images ({most_bits(model.latent_dim, end, pixels)} at "
            f"most): {_not_ours(batch_size)}"
        )
    _check_ended(np.asarray(ans.stack.get_compressed()), model.latent_dim, batch_size)
    return out


def _not_ours(batch_size: int) -> str:
    """Why a decoder meets data that coding with its model does not write (a batch size other than
    the encoder's changes the code: each batch's size is coded uniformly over 0..batch_size)."""
    return (
        f"it was not coded with this model, or it is damaged (or it was coded in batches of another size than {batch_size})"
    )


def _check_ended(left: np.ndarray, latent_dim: int, batch_size: int) -> None:
    """Refuses a decode whose stack did not end on the first words that coding began with (never
    more than ``seed_words``)."""
    if not 0 < len(left) <= _most_first_words(latent_dim) or not np.array_equal(left, first_words(len(left))):
        raise DataError(f"decoding did not end where coding began (the stack's first words differ): {_not_ours(batch_size)}")
