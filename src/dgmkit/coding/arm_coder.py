r"""Entropy coding of images with an autoregressive model's conditionals.

Encoder and decoder run the same sequential loop (the model's cached generation path) on the
same batches, so both see bit-identical probabilities p(x_d | x_<d) on the same machine and
software: the encoder feeds the known pixel at each step, the decoder the one it just
decoded. The range coder (queue: first in, first out) spends -log2 p(x_d | x_<d) bits per
pixel plus a small constant per file (one coder runs over all the batches: its final state, and
the last word's padding), so the rate approaches the model's NLL.

The probabilities reach the coder through ``_probabilities``, the one boundary between torch
and constriction: a C-ordered float64 array (batch, levels) of finite, normalised rows. The
coder reads the array's memory row by row whatever its strides say, so a transposed view
(which a head may return) would give every image another pixel's probabilities: encoder and
decoder would agree and round trips would succeed, at a rate far from the model's NLL.
"""

import contextlib
import math
import numbers
from collections.abc import Iterator

import numpy as np
import torch

from dgmkit._modes import codes
from dgmkit.coding.container import MAX_CODING_BYTES, MAX_DECODED_BYTES, check_words
from dgmkit.devices import device_of
from dgmkit.errors import ConfigError, DataError
from dgmkit.models.autoregressive import AutoregressiveModel
from dgmkit.models.base import GenerativeModel

__all__ = [
    "encode_images",
    "decode_images",
    "check_sequential",
    "sequential_nll",
    "one_thread",
    "pmf_rows",
    "check_images",
    "check_batch_size",
    "check_coding_memory",
    "most_coding_batch",
    "check_count",
    "check_payload_size",
    "least_bits",
    "most_words",
]

# what constriction raises on an impossible symbol (KeyError), probabilities it cannot use
# (ValueError) or compressed data that its model cannot have produced (AssertionError)
_CODER_ERRORS = (AssertionError, ValueError, KeyError, RuntimeError, OverflowError)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread while it computes coding probabilities: a matrix product's last
    bits depend on how many threads share it (a batch of 9 images differed by up to 6e-8 between
    1 and 2), so a file coded with N threads would decode only with N; with one, on any machine
    of the same type and software."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _coder():
    try:
        import constriction
    except ImportError:  # an optional extra (dgmkit[compress])
        raise ConfigError(
            "lossless compression needs the constriction package (a compiled range coder): "
            "pip install 'dgmkit[compress]' (or pip install constriction)"
        ) from None
    return constriction.stream


def _probabilities(log_pmf: torch.Tensor, batch: int, levels: int, t: int) -> np.ndarray:
    """The conditionals of pixel step ``t`` as the coder needs them (``pmf_rows``), of shape
    (batch, levels)."""
    if tuple(log_pmf.shape) != (batch, levels):
        raise DataError(
            f"internal: the model gave probabilities of shape {tuple(log_pmf.shape)} at pixel step {t}, "
            f"expected ({batch}, {levels})"
        )
    return pmf_rows(log_pmf, levels, f"at pixel step {t}")


def pmf_rows(log_pmf: torch.Tensor, levels: int, where: str) -> np.ndarray:
    """Log-probabilities (..., levels) as the coder needs them: a C-contiguous float64 array
    (rows, levels) whose rows are finite, non-negative and sum to one; a DataError naming
    ``where`` for non-finite or all-zero rows (weights that are not finite)."""
    p = np.ascontiguousarray(log_pmf.detach().cpu().to(torch.float64).exp().reshape(-1, levels).numpy())
    total = p.sum(axis=1, keepdims=True)
    if not (np.isfinite(p).all() and np.isfinite(total).all() and (total > 0).all()):
        raise DataError(
            f"the model gives non-finite or zero probabilities {where} (are its weights finite?): "
            "these images cannot be coded with it"
        )
    p /= total
    return p


def check_images(model: GenerativeModel, x: torch.Tensor, levels: int) -> torch.Tensor:
    """``x`` as int64 images of the model's event shape, each pixel one of the ``levels`` it codes."""
    if tuple(x.shape[1:]) != tuple(model.event_shape):
        raise DataError(f"expected images of shape (N, {', '.join(map(str, model.event_shape))}), got {tuple(x.shape)}")
    if x.dtype.is_complex or (x.dtype.is_floating_point and not torch.equal(x, x.round())):
        raise DataError("the images to code must hold integers")
    x = x.long()
    if len(x) and (int(x.min()) < 0 or int(x.max()) >= levels):
        raise DataError(f"the model codes integer pixels 0..{levels - 1}; these run from {int(x.min())} to {int(x.max())}")
    return x


def _levels(model: AutoregressiveModel) -> int:
    if getattr(model, "coding", None) != "sequential":  # (a VAE's bits-back levels: model.order()'s AttributeError)
        raise ConfigError(
            f"a {type(model).__name__} does not declare sequential coding (its coding is "
            f"{getattr(model, 'coding', None)!r}): dgmkit.coding.coder_of(model) gives its coder, if it has one"
        )
    levels = model.coding_levels
    if levels is None:
        raise DataError("this model has no exact sequential conditionals over discrete values to code with")
    return int(levels)


def check_sequential(model: AutoregressiveModel) -> int:
    """The number of levels of a pixel that ``model`` codes, or a ConfigError saying why it cannot."""
    if model.coding_levels is None:
        raise ConfigError(
            "it has no exact sequential conditionals to drive the entropy coder (a MADE mixture over connectivities, "
            "made_masks > 1, has none; one pixel order has)"
        )
    return int(model.coding_levels)


@torch.no_grad()
def sequential_nll(model: AutoregressiveModel, x: torch.Tensor) -> torch.Tensor:
    """-log p(x) of each image (nats, float64), 1000 images at a time."""
    device = device_of(model)
    return -torch.cat([model.log_prob(x[i : i + 1000].to(device)).cpu() for i in range(0, len(x), 1000)]).double()


def check_count(n: int, event_shape: tuple[int, ...]) -> int:
    """The number of images of ``event_shape`` a decoder is to give: a non-negative integer (a NumPy
    one too), of no more pixels than a compressed file may declare (``MAX_DECODED_BYTES`` as int64)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise DataError(f"the number of images to decode must be a non-negative integer, got {n!r}")
    pixels = math.prod(event_shape)
    if int(n) * pixels * 8 > MAX_DECODED_BYTES:  # (the images were allocated at once: the allocator's RuntimeError)
        raise DataError(
            f"{n} images of {pixels} pixels are more than this dgmkit decodes ({MAX_DECODED_BYTES // 8} pixels at most)"
        )
    return int(n)


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise DataError(f"the coding batch size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def most_coding_batch(model: AutoregressiveModel) -> int:
    """The most images coded together whose sequential caches (``coding_bytes_per_image``) stay
    within ``MAX_CODING_BYTES`` (at least 1)."""
    return max(1, MAX_CODING_BYTES // model.coding_bytes_per_image())


def check_coding_memory(model: AutoregressiveModel, batch: int) -> None:
    """Refuse, before anything is allocated, a coding batch of ``batch`` images whose sequential caches
    (``coding_bytes_per_image``) exceed ``MAX_CODING_BYTES``: a file's header chooses the batch size, and a
    causal convolution's caches hold every layer at every pixel (3 GB for a few bytes of payload)."""
    per_image = model.coding_bytes_per_image()
    if batch * per_image > MAX_CODING_BYTES:
        raise DataError(
            f"a coding batch of {batch} images takes about {batch * per_image / 2**20:.0f} MiB of this model's caches, "
            f"more than {MAX_CODING_BYTES // 2**20} MiB: code at most {most_coding_batch(model)} images at once "
            "(dgm compress never writes a file of more per batch: this one is damaged or crafted)"
        )


@codes
@torch.no_grad()
@one_thread()
def encode_images(model: AutoregressiveModel, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Compress integer images (N, 1, H, W) to range-coder words (uint32)."""
    stream = _coder()
    family = stream.model.Categorical(perfect=False)
    encoder = stream.queue.RangeEncoder()
    levels = _levels(model)
    x = check_images(model, x, levels).cpu()  # the coder's values are read on the CPU
    batch_size = check_batch_size(batch_size)
    check_coding_memory(model, min(batch_size, len(x)))
    order = model.order().tolist()
    device = device_of(model)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].flatten(1)

        def choose(t: int, log_pmf: torch.Tensor, xb: torch.Tensor = xb) -> torch.Tensor:
            values = xb[:, order[t]]
            probs = _probabilities(log_pmf, len(xb), levels, t)
            try:
                encoder.encode(np.ascontiguousarray(values.numpy(), dtype=np.int32), family, probs)
            except _CODER_ERRORS:
                raise DataError(
                    f"the range coder cannot code pixel step {t}: the model gives one of its values a probability "
                    "too small to code"
                ) from None
            return values.to(device)

        model.run_cached(len(xb), choose, device)
    return encoder.get_compressed()


@codes
@torch.no_grad()
@one_thread()
def decode_images(model: AutoregressiveModel, words: np.ndarray, n: int, batch_size: int = 500) -> torch.Tensor:
    """Invert ``encode_images``: n images (N, 1, H, W) as int64. Compressed data that the model
    cannot have produced raises DataError (data that it can have produced decodes to some
    images: the caller's content checksum tells whether they are the originals)."""
    stream = _coder()
    family = stream.model.Categorical(perfect=False)
    levels = _levels(model)
    batch_size = check_batch_size(batch_size)
    n = check_count(n, tuple(model.event_shape))
    check_coding_memory(model, min(batch_size, n))
    words = check_words(words)
    if n and not len(words):  # the coder writes at least one word for any symbol
        raise DataError(f"the compressed data is empty, but {n} images are to be decoded from it")
    check_payload_size(len(words), n, math.prod(model.event_shape), levels)
    decoder = stream.queue.RangeDecoder(words)
    device = device_of(model)
    out = torch.empty(n, *model.event_shape, dtype=torch.long)
    held = _payload_bits(len(words))
    decoded = [0.0]  # bits of information decoded so far (a lower bound on the bits they took to code)
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)

        def choose(t: int, log_pmf: torch.Tensor, nb: int = nb) -> torch.Tensor:
            probs = _probabilities(log_pmf, nb, levels, t)
            try:
                values = np.asarray(decoder.decode(family, probs))
            except _CODER_ERRORS:
                raise DataError(
                    "the compressed data is invalid for this model (the range coder could not decode it)"
                ) from None
            decoded[0] += _information_bits(probs, values)
            if decoded[0] > held:
                raise DataError(
                    f"the compressed data holds {32 * len(words)} bits, but the images decoded from it so far took at "
                    f"least {decoded[0]:.0f} to code: it was not written with this model (damaged or crafted)"
                )
            return torch.from_numpy(values.astype(np.int64)).to(device)

        out[start : start + nb] = model.run_cached(nb, choose, device).round().long().cpu()
    return out


def least_bits(n: int, pixels: int, levels: int) -> float:
    """The fewest bits that coding n images of ``pixels`` values of ``levels`` levels can take: the
    coder's leaky quantization gives every value at least 2**-24 of the mass, so the likeliest value
    has at most 1 - (levels - 1) * 2**-24 and costs at least -log2 of that. A real bound only for
    many levels: 12 bits for the 2**27 binary pixels a file may declare, 758 kbit for as many of
    65536 levels."""
    return n * pixels * -math.log1p(-(levels - 1) * 2.0**-24) / math.log(2)


def most_words(n: int, pixels: int) -> int:
    """The most words the range coder writes for n images of ``pixels`` values: each value costs at
    most 24 bits (the 2**-24 floor of its probability) and the rounding of the range (at least
    2**32, scaled by (range >> 24)) less than log2(1 / (1 - 2**-8)) < 0.006 bits; its final state
    takes two words."""
    return math.ceil(24.01 * n * pixels / 32) + 2


def check_payload_size(words: int, n: int, pixels: int, levels: int) -> None:
    """Refuse, before decoding, a payload of ``words`` words that cannot be the range coder's code of
    n images of ``pixels`` values of ``levels`` levels: more words than it writes for them, or fewer
    bits than the likeliest values take."""
    if words > most_words(n, pixels):
        raise DataError(
            f"the compressed data holds {words} words, more than the range coder writes for {n} images of {pixels} "
            f"pixels ({most_words(n, pixels)} at most: 24 bits a pixel): it was not written for {n} images (damaged "
            "or crafted)"
        )
    need = least_bits(n, pixels, levels)
    if need > _payload_bits(words):
        raise DataError(
            f"{n} images of {pixels} pixels of {levels} levels take at least {need:.0f} bits to code (a pixel "
            f"{need / (n * pixels):.2g} bits even at its likeliest value), more than the compressed data's {words} words "
            f"hold: it was not written for {n} images (damaged or crafted)"
        )


# the coder gives every value a probability of at least 2**-24 (its precision) and rounds the
# others to multiples of it; -log2(p + 2 * 2**-24) is then at most what coding the value cost
_FLOOR = 2.0**-23


def _information_bits(probs: np.ndarray, values: np.ndarray) -> float:
    """A lower bound on the bits that coding ``values`` under ``probs`` took."""
    return float(-np.log2(probs[np.arange(len(values)), values] + _FLOOR).sum())


def _payload_bits(words: int) -> float:
    """The most information that a payload of ``words`` words can hold: their bits, the coder's 64-bit state and
    a margin for rounding. A payload from which more is decoded was not written by the encoder
    with this model: refused as soon as that is known, not after decoding all that its header
    declares (a file of a few hundred bytes could declare hours of decoding)."""
    bits = 32 * words + 64
    return bits * 1.01 + 128
