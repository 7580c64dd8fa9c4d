"""Lossless compression with a trained model: an entropy coder (constriction's) driven by an
autoregressive model's conditionals (``arm_coder``: a range coder, pixel by pixel) or by a latent
variable model's q(z|x), p(x|z) and p(z) (``bitsback``: bits-back coding on an ANS stack), in a
self-checking file format whose header is checked against a schema before anything uses it.

A model says which coder codes it (``GenerativeModel.coding``); ``coder_of`` gives it."""

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from dgmkit.coding.arm_coder import check_sequential, decode_images, encode_images, most_coding_batch, sequential_nll
from dgmkit.coding.bitsback import (
    check_bits_back,
    decode_bits_back,
    encode_bits_back,
    first_words_bits,
    most_bits_back_batch,
    negative_elbo,
)
from dgmkit.coding.container import (
    CompressedFile,
    check_against_model,
    check_header,
    model_fingerprint,
    read_container,
    write_container,
)
from dgmkit.models.base import GenerativeModel

__all__ = [
    "Coder",
    "coder_of",
    "CODERS",
    "encode_images",
    "decode_images",
    "encode_bits_back",
    "decode_bits_back",
    "CompressedFile",
    "read_container",
    "write_container",
    "check_header",
    "check_against_model",
    "model_fingerprint",
]


class Coder(NamedTuple):
    """How a kind of model codes images: ``name`` (the file header's ``coder``, checked when
    decoding), ``check(model)`` (the levels of a pixel, or a ConfigError saying why the model
    cannot code), ``encode(model, x, batch_size)`` -> words, ``decode(model, words, n,
    batch_size)`` -> images, ``reference``: what the rate is set beside (a label, and
    ``(model, x) -> nats a datapoint``), and ``most_batch(model)``: the most images it codes
    together (an autoregressive model's caches grow with them), and ``first_bits(model, x)``:
    the bits of the words that ``encode``'s payload starts with whatever the images, paid once a
    file (a bits-back stack's first words; none for the range coder)."""

    name: str
    check: Callable[[Any], int]
    encode: Callable[[Any, torch.Tensor, int], np.ndarray]
    decode: Callable[[Any, np.ndarray, int, int], torch.Tensor]
    reference: tuple[str, Callable[[Any, torch.Tensor], torch.Tensor]]
    most_batch: Callable[[Any], int]
    first_bits: Callable[[Any, torch.Tensor], int]


def _no_first_words(model: Any, x: torch.Tensor) -> int:
    return 0  # (the range coder starts from nothing)


CODERS = {
    "sequential": Coder(
        "constriction range coder, categorical models (perfect=False)",
        check_sequential,
        encode_images,
        decode_images,
        ("the model's NLL", sequential_nll),
        most_coding_batch,
        _no_first_words,
    ),
    "bits-back": Coder(
        "constriction ANS coder, bits-back (BB-ANS), latent buckets of 2^-8 prior scales, posterior windows of 8 scales",
        check_bits_back,
        encode_bits_back,
        decode_bits_back,
        ("the model's -ELBO, one draw a datapoint", negative_elbo),
        most_bits_back_batch,
        first_words_bits,
    ),
}


def coder_of(model: GenerativeModel) -> Coder | None:
    """The coder of a model that declares one (``model.coding``), else None."""
    return CODERS.get(model.coding)  # type: ignore[arg-type]  # (None: no coder)
