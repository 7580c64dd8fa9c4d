"""The compressed file format (version 1).

    b"DGMZ" | version (u16) | header length (u32) | header (UTF-8 JSON) |
    payload length (u64) | payload (little-endian u32 words of the range coder) |
    SHA-256 of everything before it (32 bytes)

The header holds the model's fingerprint, the images' shape, dtype and number of levels, the
coding batch size and the SHA-256 of the images as decoding rebuilds them (the original array's
values in its dtype); decoding checks all of them, so a file read with another model,
truncated, corrupted, or not ours fails with a clear error.

The trailing SHA-256 detects accidents only: whoever crafts a file can recompute it. So every
header field is treated as hostile and checked against a schema (``check_header``) before
anything uses it: types, ranges, a bound on the number of pixels to decode (nothing of the
declared size is allocated before that), file names that are plain base names, one per image.
"""

import hashlib
import json
import math
import re
import struct
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dgmkit._io import check_base_name, invisible_character, parse_json
from dgmkit.errors import DataError, DgmError, plural
from dgmkit.errors import shown_value as _short

__all__ = [
    "CompressedFile",
    "write_container",
    "read_container",
    "check_header",
    "check_words",
    "check_against_model",
    "check_coding_device",
    "coding_device",
    "check_png_names",
    "name_key",
    "model_fingerprint",
    "content_digest",
    "FORMAT_VERSION",
    "MAX_PIXELS",
    "MAX_DECODED_BYTES",
    "MAX_BATCH_PIXELS",
    "MAX_CODING_BYTES",
    "MAX_FILE_BYTES",
]

MAGIC = b"DGMZ"
FORMAT_VERSION = 1

MAX_PIXELS = 2**31  # pixels (images x pixels per image) one file may declare
MAX_DECODED_BYTES = 2**30  # bytes of the decoded array (int64 while decoding, then the file's dtype)
MAX_BATCH_PIXELS = 2**22  # pixels coded together (one batch): bounds the model's sequential caches
# a batch's sequential caches, the model's estimate (they grow with its width and depth as well as the pixels):
# a file's batch size is checked against it before anything of that size is allocated
# (2 GiB: 500 MNIST images, compress's default batch, take 0.3 GB by the estimate with a causal convolution of 6 layers of
# 32 channels, 0.069 with a 12-layer 32-channel PixelCNN: docs/uses/compression.md)
MAX_CODING_BYTES = 2**31
MAX_HEADER_BYTES = 64 * 2**20
MAX_FILE_BYTES = 2**30  # a file holds at most MAX_DECODED_BYTES // 8 pixels, at < 32 bits each, and its header
MAX_NDIM = 32
_OPTIONAL_KEYS = ("names", "png_mode", "device")  # names, png_mode: PNG sources only; device: absent in older files
MAX_TEXT = 1000  # characters of a free-text field (version, model description, coder)
MIN_LEVELS, MAX_LEVELS = 2, 65536
SOURCES = ("npy", "png")
PNG_MODES = {"1": "|b1", "L": "|u1"}  # PNG mode -> the dtype of its pixel array

# dtypes an image array may have (both byte orders): no object, complex, string or structured ones
DTYPES = frozenset(
    np.dtype(t).newbyteorder(order).str
    for t in ("b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8")
    for order in ("<", ">")
)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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
    digest = hashlib.sha256(f"{x.shape}:{x.dtype.str}".encode())
    digest.update(x.reshape(-1).view(np.uint8).data)  # the bytes in place, not a copy of them
    return digest.hexdigest()


# -- the header's schema ---------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_DEVICE = re.compile(r"cpu|cuda( \([^()]{1,150}\))?")  # coding_device's names


def _text(h: dict, key: str, source: str, max_len: int = MAX_TEXT) -> str:
    v = h[key]  # (printed back in messages: no control character, nor one that shows a text as another, U+202E)
    if not isinstance(v, str) or len(v) > max_len or _CONTROL.search(v) or invisible_character(v) is not None:
        raise DataError(
            f"{source} has a bad header: {key!r} must be a text of at most {max_len} printable characters, got {_short(v)}"
        )
    return v


def _int(h: dict, key: str, source: str, lo: int, hi: int) -> int:
    v = h[key]
    if not _is_int(v) or not lo <= v <= hi:
        raise DataError(f"{source} has a bad header: {key!r} must be an integer in {lo}..{hi}, got {_short(v)}")
    return v


def name_key(name: str) -> str:
    """The form under which two names denote one file on a case-insensitive, normalising file
    system (canonical caseless matching)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", name).casefold())


def check_png_names(names: Any, n: int, source: str = "the file") -> list[str]:
    """``names`` if it is a list of exactly ``n`` distinct plain base names ending in .png
    (distinct also when case and Unicode normalisation are ignored)."""
    if not isinstance(names, list) or not all(isinstance(s, str) for s in names):
        raise DataError(f"{source} has a bad header: 'names' must be a list of file names, got {_short(names)}")
    if len(names) != n:
        raise DataError(f"{source} has a bad header: it holds {n} images but {len(names)} file names")
    seen: dict[str, str] = {}
    for name in names:
        try:
            check_base_name(name, "image file name")
        except DgmError as e:
            raise DataError(f"{source} has a bad header: {e}") from None
        if not name.lower().endswith(".png") or len(name) <= 4:
            raise DataError(f"{source} has a bad header: image file name {name!r} does not end in .png")
        key = name_key(name)
        if key in seen:
            raise DataError(f"{source} has a bad header: the image file names {seen[key]!r} and {name!r} name the same file")
        seen[key] = name
    return names


def check_header(header: Any, source: str = "the file") -> dict:
    """``header`` if it is a well-formed version-1 header, else a DataError naming the first
    bad field. Bounds the data it declares, so decoding it allocates at most
    ``MAX_DECODED_BYTES``."""
    if not isinstance(header, dict):
        raise DataError(f"{source} has a bad header: expected a JSON object, got {type(header).__name__}")
    h = header
    required = [
        "dgmkit_version", "model_fingerprint", "model", "levels", "shape", "dtype", "batch_size",
        "content_sha256", "coder", "source",
    ]  # fmt: skip
    missing = [k for k in required if k not in h]
    if missing:
        raise DataError(f"{source} has a bad header: it lacks {', '.join(map(repr, missing))}")
    unknown = [k for k in h if k not in (*required, *_OPTIONAL_KEYS)]
    if unknown:
        raise DataError(f"{source} has a bad header: unknown key(s) {', '.join(_short(k) for k in unknown[:3])}")
    _text(h, "dgmkit_version", source, 100)
    _text(h, "coder", source)
    if "device" in h:
        device = _text(h, "device", source, 200)
        if not _DEVICE.fullmatch(device):  # (an invisible character in a GPU's name: refused by _text)
            raise DataError(f"{source} has a bad header: 'device' must be 'cpu' or 'cuda (GPU NAME)', got {_short(device)}")
    for key in ("model_fingerprint", "content_sha256"):
        v = h[key]
        if not isinstance(v, str) or not _HEX64.fullmatch(v):
            raise DataError(f"{source} has a bad header: {key!r} must be 64 hexadecimal digits, got {_short(v)}")
    m = h["model"]
    if not isinstance(m, dict) or set(m) != {"kind", "dataset"}:
        raise DataError(f"{source} has a bad header: 'model' must be an object with 'kind' and 'dataset', got {_short(m)}")
    _text(m, "kind", source)
    _text(m, "dataset", source)
    levels = _int(h, "levels", source, MIN_LEVELS, MAX_LEVELS)
    shape = h["shape"]
    if (
        not isinstance(shape, list)
        or not 2 <= len(shape) <= MAX_NDIM
        or not all(_is_int(s) and 1 <= s <= MAX_PIXELS for s in shape)
    ):
        raise DataError(
            f"{source} has a bad header: 'shape' must be a list of 2 to {MAX_NDIM} positive integers, got {_short(shape)}"
        )
    dtype = h["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise DataError(
            f"{source} has a bad header: 'dtype' must be a boolean, integer or float type such as '|u1', got {_short(dtype)}"
        )
    _check_sizes(h, shape, dtype, source)
    _check_source(h, shape, dtype, levels, source)
    return h


def _check_sizes(h: dict, shape: list[int], dtype: str, source: str) -> None:
    """The data a header declares and its batches, bounded: decoding allocates at most
    ``MAX_DECODED_BYTES``, a batch codes at most ``MAX_BATCH_PIXELS`` pixels."""
    n, pixels = shape[0], math.prod(shape[1:])  # python integers: no overflow
    item = max(8, np.dtype(dtype).itemsize)  # int64 while decoding
    if n * pixels > MAX_PIXELS or n * pixels * item > MAX_DECODED_BYTES:
        raise DataError(
            f"{source} declares {n} images of {pixels} pixels: more than this dgmkit decodes "
            f"({MAX_DECODED_BYTES // 8} pixels at most)"
        )
    batch_size = _int(h, "batch_size", source, 1, MAX_PIXELS)
    if min(batch_size, n) * pixels > MAX_BATCH_PIXELS:
        raise DataError(
            f"{source} has a bad header: 'batch_size' {batch_size} codes {min(batch_size, n) * pixels} pixels at once, "
            f"more than {MAX_BATCH_PIXELS}"
        )


def _check_source(h: dict, shape: list[int], dtype: str, levels: int, source: str) -> None:
    """'source' and the keys that go with it: PNG images' names and mode, or none for an array."""
    src = h["source"]
    if src not in SOURCES:
        raise DataError(f"{source} has a bad header: 'source' must be one of {', '.join(SOURCES)}, got {_short(src)}")
    if src == "png":
        for key in ("names", "png_mode"):
            if key not in h:
                raise DataError(f"{source} has a bad header: it holds PNG images but lacks {key!r}")
        mode = h["png_mode"]
        if not isinstance(mode, str) or mode not in PNG_MODES:
            raise DataError(f"{source} has a bad header: 'png_mode' must be '1' or 'L', got {_short(mode)}")
        if len(shape) != 3 or dtype != PNG_MODES[mode] or (mode == "1" and levels != 2):
            raise DataError(
                f"{source} has a bad header: PNG images of mode {mode} need a shape [N, H, W] and dtype "
                f"{PNG_MODES[mode]}{' and 2 levels' if mode == '1' else ''}, got {_short(shape)}, {dtype}, {levels}"
            )
        check_png_names(h["names"], shape[0], source)
    else:
        extra = [k for k in ("names", "png_mode") if k in h]
        if extra:
            raise DataError(f"{source} has a bad header: it holds a NumPy array but has {', '.join(map(repr, extra))}")


def coding_device(device: torch.device) -> str:
    """How a header names the device whose model outputs drove the coder: ``cpu``, or ``cuda``
    and the GPU's name. The probabilities must be reproduced bit for bit to decode, and floating
    point differs between a CPU and a GPU (and may between GPU models)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def check_coding_device(header: dict, device: torch.device, source: str = "the file") -> None:
    """Refuse to decode on another kind of device than the one that encoded (a file without the
    field was written on the CPU, the only device dgmkit coded on before it was recorded)."""
    recorded = header.get("device", "cpu")
    kind = recorded.split(" ", 1)[0]
    if kind != device.type:
        raise DataError(
            f"{source} was compressed with the model on {recorded}; decoding needs the model's probabilities bit for "
            f"bit, which differ between devices: decompress with --device {kind}"
        )


def check_against_model(header: dict, event_shape: tuple[int, ...], levels: int, source: str = "the file") -> None:
    """Whether the images a (schema-checked) header declares are ones the model codes: its
    number of levels, and images of the model's size (exactly H x W for PNG images)."""
    if header["levels"] != levels:
        raise DataError(f"{source} holds images of {header['levels']} levels; the model codes {levels}")
    shape = header["shape"]
    if math.prod(shape[1:]) != math.prod(event_shape) or (
        header["source"] == "png" and tuple(shape[1:]) != tuple(event_shape[-2:])
    ):
        raise DataError(
            f"{source} holds images of shape {tuple(shape[1:])}; the model codes images of "
            f"{'x'.join(map(str, event_shape[-2:]))} pixels"
        )


# -- reading and writing ---------------------------------------------------------------------


def check_words(words: object) -> np.ndarray:
    """A payload as the coders read it: a flat array of unsigned 32-bit words. Integers of another
    type are taken where each is one (0 .. 2^32 - 1); anything else is refused by name, not cast
    (NumPy wraps -1 to 2^32 - 1 and truncates 1.5 to 1: other words, decoded to other images)."""
    a = np.asarray(words)
    if a.ndim != 1:
        raise DataError(f"the compressed data must be a flat array of 32-bit words, got shape {a.shape}")
    if a.dtype == np.uint32 or not len(a):  # (an empty list is NumPy's float64: no word to check)
        return np.ascontiguousarray(a, dtype=np.uint32)
    if a.dtype.kind not in "iu" or (len(a) and (int(a.min()) < 0 or int(a.max()) >= 1 << 32)):
        what = f"{a.dtype} values" if a.dtype.kind not in "iu" else f"integers from {int(a.min())} to {int(a.max())}"
        raise DataError(f"the compressed data must be 32-bit words, integers 0 .. 2^32 - 1; got {what}")
    return np.ascontiguousarray(a, dtype=np.uint32)


def write_container(header: dict, payload: np.ndarray) -> bytes:
    check_header(header, "the container to write")
    head = json.dumps(header, sort_keys=True, allow_nan=False).encode()
    words = check_words(payload).astype("<u4", copy=False).tobytes()  # (-1 or 2**32 refused, not wrapped)
    body = MAGIC + struct.pack("<HI", FORMAT_VERSION, len(head)) + head + struct.pack("<Q", len(words)) + words
    if len(head) > MAX_HEADER_BYTES or len(body) + 32 > MAX_FILE_BYTES:  # (the checksum's 32 bytes follow)
        raise DataError(  # (read_container refuses such a file)
            f"the compressed file would have a header of {len(head)} bytes and a payload of {len(words)} bytes, more "
            f"than this dgmkit reads ({MAX_HEADER_BYTES} and {MAX_FILE_BYTES} bytes in all): compress the images in parts"
        )
    return body + hashlib.sha256(body).digest()


def _refuse_damaged(data: bytes, source: str, version: int, head_len: int) -> None:
    """The DataError of a file whose checksum does not match: one of another format version, a
    whole file with bytes after its end (its own checksum intact: a copy with something added),
    or a file truncated or corrupted."""
    if version != FORMAT_VERSION:
        raise DataError(
            f"{source} has format version {version} (or is corrupted: its checksum does not match); this dgmkit "
            f"reads version {FORMAT_VERSION}"
        )
    start = len(MAGIC) + 6
    if start + head_len + 8 + 32 <= len(data):
        (payload_len,) = struct.unpack_from("<Q", data, start + head_len)
        end = start + head_len + 8 + payload_len
        if end + 32 < len(data) and hashlib.sha256(data[:end]).digest() == data[end : end + 32]:
            extra = len(data) - end - 32
            raise DataError(
                f"{source} has {plural(extra, 'byte')} after its end: its first {end + 32} bytes end "
                "with their own matching checksum (cut the rest off)"
            )
    raise DataError(f"{source} is truncated or corrupted: its checksum does not match its content")


def read_container(data: bytes, source: str = "the file") -> CompressedFile:
    """The header (checked against the schema) and payload of a compressed file; DataError
    for anything that is not a well-formed version-1 file."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DataError(f"{source}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_FILE_BYTES:
        raise DataError(
            f"{source} has {len(data)} bytes, more than a compressed file of this dgmkit holds ({MAX_FILE_BYTES})"
        )
    if not data.startswith(MAGIC):
        raise DataError(f"{source} is not a dgmkit compressed file (it does not start with {MAGIC!r})")
    start = len(MAGIC) + 6
    if len(data) < start + 8 + 32:
        raise DataError(f"{source} is truncated ({len(data)} bytes)")
    version, head_len = struct.unpack_from("<HI", data, len(MAGIC))
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:  # (first: a cut or a changed byte is said so, not read as sizes)
        _refuse_damaged(data, source, version, head_len)
    if version != FORMAT_VERSION:
        raise DataError(f"{source} has format version {version}; this dgmkit reads version {FORMAT_VERSION}")
    if len(body) < start + head_len + 8:
        raise DataError(
            f"{source} is truncated: its header of {head_len} bytes and the fixed fields need {start + head_len + 8 + 32} "
            f"bytes, and the file has {len(data)}"
        )
    if head_len > MAX_HEADER_BYTES:
        raise DataError(f"{source} has a header of {head_len} bytes, more than {MAX_HEADER_BYTES}")
    (payload_len,) = struct.unpack_from("<Q", body, start + head_len)
    expected = start + head_len + 8 + payload_len
    if len(body) != expected:
        raise DataError(f"{source} is truncated or has trailing bytes: {len(data)} bytes, expected {expected + 32}")
    if payload_len % 4:
        raise DataError(f"{source} is corrupted: its payload of {payload_len} bytes is not a whole number of 32-bit words")
    try:
        header = parse_json(body[start : start + head_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{source} has an unreadable header (not strict UTF-8 JSON: {e})") from None
    check_header(header, source)
    payload = np.frombuffer(body, dtype="<u4", offset=start + head_len + 8).astype(np.uint32)
    return CompressedFile(header, payload)
