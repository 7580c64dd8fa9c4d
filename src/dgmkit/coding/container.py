"""The compressed file format (version 1).

    b"DGMZ" | version (u16) | header length (u32) | header (UTF-8 JSON) |
    payload length (u64) | payload (little-endian u32 words of the range coder) |
    SHA-256 of everything before it (32 bytes)

The header holds the model's fingerprint, the images' shape, dtype and number of levels, the
coding batch size and the SHA-256 of the original array; decoding checks all of them, so a
file read with another model, truncated, corrupted, or not ours fails with a clear error.
"""

import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np
import torch

from dgmkit.errors import DataError

__all__ = ["CompressedFile", "write_container", "read_container", "model_fingerprint", "content_digest", "FORMAT_VERSION"]

MAGIC = b"DGMZ"
FORMAT_VERSION = 1


@dataclass
class CompressedFile:
    header: dict
    payload: np.ndarray  # uint32 words


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the model class and every tensor of its state (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def content_digest(x: np.ndarray) -> str:
    """SHA-256 of an array's shape, dtype and bytes (C order)."""
    x = np.ascontiguousarray(x)
    return hashlib.sha256(f"{x.shape}:{x.dtype.str}".encode() + x.tobytes()).hexdigest()


def write_container(header: dict, payload: np.ndarray) -> bytes:
    head = json.dumps(header, sort_keys=True).encode()
    words = np.ascontiguousarray(payload, dtype="<u4").tobytes()
    body = MAGIC + struct.pack("<HI", FORMAT_VERSION, len(head)) + head + struct.pack("<Q", len(words)) + words
    return body + hashlib.sha256(body).digest()


def read_container(data: bytes, source: str = "the file") -> CompressedFile:
    if not data.startswith(MAGIC):
        raise DataError(f"{source} is not a dgmkit compressed file (it does not start with {MAGIC!r})")
    if len(data) < len(MAGIC) + 6 + 8 + 32:
        raise DataError(f"{source} is truncated ({len(data)} bytes)")
    version, head_len = struct.unpack_from("<HI", data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise DataError(f"{source} has format version {version}; this dgmkit reads version {FORMAT_VERSION}")
    body, digest = data[:-32], data[-32:]
    start = len(MAGIC) + 6
    if len(body) < start + head_len + 8:
        raise DataError(f"{source} is truncated: its header says {head_len} header bytes")
    (payload_len,) = struct.unpack_from("<Q", body, start + head_len)
    expected = start + head_len + 8 + payload_len
    if len(body) != expected:
        raise DataError(f"{source} is truncated or has trailing bytes: {len(data)} bytes, expected {expected + 32}")
    if hashlib.sha256(body).digest() != digest:
        raise DataError(f"{source} is corrupted: its checksum does not match its content")
    try:
        header = json.loads(body[start : start + head_len].decode())
    except (UnicodeDecodeError, ValueError):
        raise DataError(f"{source} has an unreadable header") from None
    payload = np.frombuffer(body[start + head_len + 8 :], dtype="<u4").copy()
    return CompressedFile(header, payload)
