"""Lossless compression with exact-likelihood models: an entropy coder (constriction's range
coder) driven by an autoregressive model's conditionals, in a self-checking file format whose
header is checked against a schema before anything uses it."""

from dgmkit.coding.arm_coder import decode_images, encode_images
from dgmkit.coding.container import (
    CompressedFile,
    check_against_model,
    check_header,
    model_fingerprint,
    read_container,
    write_container,
)

__all__ = [
    "encode_images",
    "decode_images",
    "CompressedFile",
    "read_container",
    "write_container",
    "check_header",
    "check_against_model",
    "model_fingerprint",
]
