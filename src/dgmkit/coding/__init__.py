"""Lossless compression with exact-likelihood models: an entropy coder (constriction's range
coder) driven by an autoregressive model's conditionals, in a self-checking file format."""

from dgmkit.coding.arm_coder import decode_images, encode_images
from dgmkit.coding.container import CompressedFile, model_fingerprint, read_container, write_container

__all__ = ["encode_images", "decode_images", "CompressedFile", "read_container", "write_container", "model_fingerprint"]
