"""``dgm compress`` and ``dgm decompress``: lossless compression with a trained
autoregressive model or VAE (see ``dgmkit.coding``).

Both commands check everything they can before the slow coding: the outputs (never an
existing file without ``--force``, never an input, the run's data file among them, or a file of
the run), the inputs (PNG sizes before any pixel is decoded; file names that decompression can
write back one per image) and, for decompression, every field of the file's header
(``dgmkit.coding.container.check_header``).
Outputs are written atomically: a new PNG folder appears whole or not at all (into one that exists,
the files move one by one; an error or interrupt takes back the new ones).
"""

import argparse
import io
import math
import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from dgmkit import __version__
from dgmkit._io import (
    NotRegularFile,
    atomic_folder,
    atomic_write_bytes,
    check_base_name,
    describe_os_error,
    open_regular,
)
from dgmkit.cli.common import (
    add_count_flag,
    add_device_flag,
    add_run_parser,
    check_row_shape,
    command_output,
    note_stale_temporaries,
    plural,
    say,
)
from dgmkit.coding import Coder, coder_of, model_fingerprint, read_container, write_container
from dgmkit.coding.container import (
    DTYPES,
    MAX_BATCH_PIXELS,
    MAX_DECODED_BYTES,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    check_against_model,
    check_coding_device,
    coding_device,
    content_digest,
    name_key,
)
from dgmkit.config import Run, load_run
from dgmkit.errors import ConfigError, DataError, DgmError
from dgmkit.models import GenerativeModel

__all__ = ["add_parsers"]

_DEVICE_WHAT = "where the model computes the coding probabilities"
_DEVICE_WHY = "a file decodes only on the kind of device that encoded it (recorded in the file), and every machine has a CPU"


def _pil_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises on a file that is not a readable image (its plugins use several kinds)."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)


def _text(value: object, limit: int = 200) -> str:
    """A free-text header field the schema accepts: printable (control characters escaped), short."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _coding_model(run_dir: str, device: str) -> tuple[Run, GenerativeModel, int, Coder]:
    run = load_run(run_dir, device=device)
    model = run.model
    coder = coder_of(model)
    if coder is None:
        raise ConfigError(
            f"{run_dir} holds {run.cfg.model.describe()}, which declares no coder (neither exact sequential "
            "conditionals for the entropy coder nor a p(x|z) over independent discrete pixels for bits-back coding): "
            "compression needs an autoregressive model (--model arm), or a VAE (--model vae), discrete VAE "
            "(--model dvae) or hierarchical VAE (--model hvae) with a discrete likelihood"
        )
    try:
        levels = coder.check(model)
    except ConfigError as e:
        raise ConfigError(f"{run_dir} holds {run.cfg.model.describe()}, which cannot be compressed: {e}") from None
    return run, model, levels, coder


def _read_npy(path: str) -> np.ndarray:
    from dgmkit.data.formats import read_array  # the data loaders' safe reader (no pickles, checked header)

    return read_array(Path(path))


def _read_png(p: str, height: int, width: int, errors: tuple[type[BaseException], ...]) -> tuple[np.ndarray, str]:
    """One single-channel PNG image of the model's size without transparency, and its mode ("1" or "L")."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # the size is checked below, before any pixel is decoded
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_regular(p) as f, Image.open(f) as im:  # (a FIFO would block, a device never end)
                if im.format != "PNG":
                    raise DataError(f"{p} is not a PNG file (it holds a {im.format} image)")
                if im.mode not in ("1", "L"):
                    raise DataError(f"{p}: a {im.mode} PNG; these models code single-channel (1-bit or 8-bit grey) images")
                if "transparency" in im.info:  # (a tRNS chunk: decompression would write the image without it)
                    raise DataError(
                        f"{p} has transparency (a tRNS chunk), which these models do not code: give opaque images"
                    )
                if im.size != (width, height):
                    raise DataError(f"{p} is {im.size[0]}x{im.size[1]} pixels; the model codes {width}x{height} images")
                if getattr(im, "n_frames", 1) != 1:
                    raise DataError(f"{p} is an animated PNG; give single images")
                im.load()
                return np.asarray(im), im.mode
    except DataError:
        raise
    except NotRegularFile:
        raise DataError(f"{p} is not a regular file (a pipe, a device or a folder): give PNG files") from None
    except FileNotFoundError:
        raise DataError(f"no such PNG file: {p}") from None
    except errors as e:
        if type(e).__name__ == "UnidentifiedImageError":  # (its message names the open file object, not the file)
            raise DataError(
                f"cannot read {p} as a PNG: no image format that PIL knows (an empty or damaged file?)"
            ) from None
        raise DataError(f"cannot read {p} as a PNG: {type(e).__name__}: {e}") from None


def read_pngs(paths: list[str], height: int, width: int, written_back: bool = True) -> tuple[np.ndarray, dict]:
    """PNG files of the model's size, single-channel: the images (N, H, W) (1-bit ones as bool)
    and their "names" and "png_mode" ("1" or "L"). ``written_back`` (compression, whose header
    holds this): each base name one that decompression can write back into one folder, distinct,
    and the images of one mode; else (names that only label the images) "png_modes", each
    image's, and "png_mode" None where they differ (bytes, 1-bit images as 0 and 1)."""
    errors = _pil_errors()
    images, names, modes = [], [], []
    seen: dict[str, str] = {}
    for p in paths:
        if not p.lower().endswith(".png"):
            raise DataError(f"{p}: give one .npy file or PNG files")
        name = Path(p).name
        if written_back:
            try:
                check_base_name(name, "image file name")
            except DgmError as e:
                raise DataError(f"{p}: {e}; decompression could not write it back under its name") from None
            key = name_key(name)
            if key in seen:
                raise DataError(
                    f"{seen[key]} and {p} have the same file name {name!r} (ignoring case): decompression writes the "
                    "images into one folder under their names; rename one of them"
                )
            seen[key] = p
        a, mode = _read_png(p, height, width, errors)
        modes.append(mode)
        images.append(a != 0 if a.dtype == bool else a)  # canonical 0/1 bytes for 1-bit images
        names.append(name)
    if written_back:
        if len(set(modes)) != 1:
            raise DataError("the PNG files differ in mode: give all 1-bit or all 8-bit grey images")
        return np.stack(images), {"source": "png", "names": names, "png_mode": modes[0]}
    shared = modes[0] if len(set(modes)) == 1 else None
    return np.stack(images).astype(np.uint8), {"source": "png", "names": names, "png_mode": shared, "png_modes": modes}


def _read_images(paths: list[str], event_shape: tuple[int, ...]) -> tuple[np.ndarray, dict]:
    """A .npy array of images, or PNG files, and how to write them back."""
    if len(paths) == 1 and paths[0].lower().endswith(".npy"):
        return _read_npy(paths[0]), {"source": "npy"}
    return read_pngs(paths, event_shape[-2], event_shape[-1])


def _which_image(bad: np.ndarray, names: list[str] | None) -> tuple[int, str]:
    """The first image (N, ...) that ``bad`` marks anywhere, and how to name it: its PNG file, or its
    index in the array."""
    i = int(np.argmax(bad.reshape(len(bad), -1).any(axis=1)))
    return i, (names[i] if names else f"image {i} (counting from 0)")


def _to_model_input(
    x: np.ndarray, event_shape: tuple[int, ...], levels: int, names: list[str] | None = None
) -> torch.Tensor:
    """The images as int64 (N, *event_shape), each pixel one of the model's levels; the first image
    that is not so is named (``names``: PNG files, else its index)."""
    n_dims = math.prod(event_shape)
    if x.ndim < 2 or math.prod(x.shape[1:]) != n_dims:
        raise DataError(f"expected N images of {event_shape[1]}x{event_shape[2]} pixels, got an array of shape {x.shape}")
    if x.dtype.str not in DTYPES:
        raise DataError(f"expected an array of integer pixel values, got dtype {x.dtype}")
    if x.dtype == bool:
        x = x.astype(np.uint8)
    want = f"the model codes integer pixels 0..{levels - 1}"
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.isfinite(x).sum())
        _, which = _which_image(~np.isfinite(x), names)
        raise DataError(f"{want}; {bad} of these values are NaN or infinite, the first in {which}")
    if not np.array_equal(x, np.round(x)):
        i, which = _which_image(x != np.round(x), names)
        first = x[i].flat[int(np.flatnonzero(x[i] != np.round(x[i]))[0])]
        raise DataError(f"{want}; these values are not all integers (one is {first}), the first in {which}")
    if x.size and (x.min() < 0 or x.max() >= levels):
        i, which = _which_image((x < 0) | (x >= levels), names)
        value = x[i].flat[int(np.flatnonzero((x[i] < 0) | (x[i] >= levels))[0])]
        raise DataError(
            f"{want}; these values run from {x.min()} to {x.max()}: {which} holds {value}, outside the model's levels"
        )
    return torch.from_numpy(x.astype(np.int64).reshape(len(x), *event_shape))


DEFAULT_BATCH = 500


def _batch_size(asked: int | None, most: int, n: int) -> int:
    """The images coded together: ``asked`` (--batch-size), refused where more than ``most`` of
    the n images (what the model's coder holds at once); by default ``DEFAULT_BATCH`` or ``most``
    where that is fewer."""
    if asked is None:
        return min(DEFAULT_BATCH, most)
    if min(asked, n) > most:
        raise ConfigError(f"--batch-size {asked} codes more images at once than this model's coder holds: at most {most}")
    return asked


def _check_amount(n: int, pixels: int, itemsize: int, batch_size: int) -> None:
    """n images of ``pixels`` pixels: some, no more than one compressed file holds, and coded at
    most ``MAX_BATCH_PIXELS`` at once."""
    if n == 0:
        raise DataError("no images to compress")
    if n * pixels > MAX_PIXELS or n * pixels * max(8, itemsize) > MAX_DECODED_BYTES:
        raise DataError(
            f"{n} images of {pixels} pixels are more than one compressed file holds "
            f"({MAX_DECODED_BYTES // 8} pixels): compress them in parts"
        )
    if min(batch_size, n) * pixels > MAX_BATCH_PIXELS:
        raise ConfigError(
            f"--batch-size {batch_size} codes too many pixels at once: at most {MAX_BATCH_PIXELS // pixels} "
            f"images of {pixels} pixels"
        )


def _check_black_and_white(args: argparse.Namespace, x: np.ndarray, meta: dict, levels: int) -> None:
    """1-bit PNG images and a .npy of booleans are black and white: refused for a model of more
    than 2 levels (True is not level 1 of 17), with what to give instead."""
    if meta.get("png_mode") == "1" and levels != 2:
        raise DataError(
            f"1-bit PNG images are black and white; {args.run_dir}'s model codes {levels} levels: give it 8-bit grey "
            "(mode L) images, or compress these with a model of binary images"
        )
    if meta["source"] == "npy" and x.dtype == bool and levels != 2:
        raise DataError(
            f"{args.inputs[0]} holds booleans, black and white images; {args.run_dir}'s model codes {levels} levels: "
            "give it integer levels, or compress these with a model of binary images"
        )


def _check_png_levels(args: argparse.Namespace, x: np.ndarray, meta: dict, levels: int) -> None:
    """8-bit PNG images hold the levels themselves, 0..levels-1 (as dgm decompress writes them):
    the first image that does not, named."""
    if meta.get("png_mode") != "L" or levels >= 256:
        return
    over = x.reshape(len(x), -1).max(axis=1) >= levels
    if over.any():
        i = int(np.argmax(over))
        also = ", or 1-bit PNGs of black and white images" if levels == 2 else ""
        raise DataError(
            f"{args.inputs[i]} holds grey values up to {int(x[i].max())}; {args.run_dir}'s model codes integer pixels "
            f"0..{levels - 1}: give PNGs of the levels themselves, as dgm decompress writes them{also}"
        )


def compress(args: argparse.Namespace) -> int:
    out = command_output(args, args.out, reads=args.inputs)
    if out.suffix.lower() != ".dgmz":  # (x.npy held a container that no reader of .npy files reads)
        raise ConfigError(f"--out must name a .dgmz file (dgm decompress reads it back), got {out}")
    run, model, levels, coder = _coding_model(args.run_dir, args.device)
    x, meta = _read_images(args.inputs, model.event_shape)
    _check_black_and_white(args, x, meta, levels)
    _check_png_levels(args, x, meta, levels)
    if x.ndim < 2:
        shape = model.event_shape
        raise DataError(f"expected N images of {shape[-2]}x{shape[-1]} pixels, got an array of shape {x.shape}")
    if meta["source"] == "npy":  # (PNG files are read at the model's size)
        check_row_shape(Path(args.inputs[0]).name, x.shape, tuple(model.event_shape))
    batch_size = _batch_size(args.batch_size, coder.most_batch(model), len(x))
    _check_amount(len(x), math.prod(model.event_shape), x.dtype.itemsize, batch_size)
    batch_size = min(batch_size, len(x))  # a larger one codes the same single batch
    xt = _to_model_input(x, model.event_shape, levels, meta.get("names"))
    header = {
        "dgmkit_version": __version__,
        "model_fingerprint": model_fingerprint(model),
        "model": {"kind": _text(run.cfg.model.describe()), "dataset": _text(run.cfg.data.dataset)},
        "levels": levels,
        "shape": list(x.shape),
        "dtype": x.dtype.str,
        "batch_size": batch_size,
        # of the array as decompression rebuilds it from the coded integers (a float -0.0 comes back as 0.0)
        "content_sha256": content_digest(xt.numpy().reshape(x.shape).astype(x.dtype)),
        "coder": coder.name,
        "device": coding_device(run.device),
        **meta,
    }
    t0 = time.perf_counter()
    words = coder.encode(model, xt, batch_size)
    seconds = max(time.perf_counter() - t0, 1e-9)
    label, reference = coder.reference
    nll = reference(model, xt).sum().item()
    data = write_container(header, words)  # checks the header against the schema decompress applies
    atomic_write_bytes(out, data)
    dims = xt[0].numel() * len(xt)
    rate = 8 * len(data) / dims
    first = coder.first_bits(model, xt)
    of_which = f", of which {first / dims:.4f} the stack's first words, {first} bits once a file" if first else ""
    say(
        f"compressed {plural(len(x), 'image')} ({dims} pixels) to {len(data)} bytes: {rate:.4f} bits/dim "
        f"({label}: {nll / (dims * math.log(2)):.4f} bits/dim; payload {32 * len(words) / dims:.4f}{of_which}) "
        f"in {seconds:.1f} s, {x.nbytes / 1e6 / seconds:.3f} MB/s of input -> {out}"
    )
    return 0


def _read_compressed(path: Path) -> bytes:
    """The bytes of a regular file (never a device, a pipe or a folder), at most a compressed
    file's size read."""
    from dgmkit.data.formats import read_regular

    if path.is_dir():
        raise DataError(f"{path} is a folder, not a compressed file")
    data = read_regular(path, MAX_FILE_BYTES)
    if len(data) > MAX_FILE_BYTES:
        raise DataError(f"{path} has more than the {MAX_FILE_BYTES} bytes a compressed file of this dgmkit holds")
    return data


def _png_targets(out: Path, names: list[str], args: argparse.Namespace) -> None:
    """Refuse, before decoding, PNG outputs that are the input, a file of the run, a folder,
    or (without --force) an existing file; every name is a plain base name (the header schema),
    so every path lies directly inside ``out``. A file may name a million images: the folder is
    listed once, and only a name of a file there (in any case or Unicode form: ``name_key``) is
    looked at on its own."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; {args.file} holds PNG images: name a folder")
    if out.suffix and not out.is_dir():
        raise ConfigError(f"{args.file} holds PNG images: --out must name a folder, got {out}")
    run_dir = Path(args.run)
    if out.is_dir() and run_dir.is_dir() and os.path.samefile(out, run_dir):
        raise ConfigError(f"--out {out} is the run folder, an input of this command; name another folder for the images")
    root = os.path.normpath(out.absolute())
    try:  # (the input and the run's files, where they lie in --out, are among them)
        there = {name_key(n) for n in os.listdir(out)} if out.is_dir() else set()
    except OSError as e:  # (a folder that cannot be listed cannot be written either)
        raise DgmError(describe_os_error(e, out, "read")) from None
    for i, name in enumerate(names):
        target = out / name
        if os.path.dirname(os.path.normpath(target.absolute())) != root:  # the schema makes this impossible
            raise DataError(f"{args.file} names an image {name!r} outside --out")
        if i == 0 or name_key(name) in there:  # (the first: the folders above it checked once)
            command_output(args, target, runs=[args.run], reads=[args.file], what="the image")
    note_stale_temporaries(out)  # (the temporary folder of a decompression into it killed before it was moved)


def decompress(args: argparse.Namespace) -> int:
    path = Path(args.file)
    f = read_container(_read_compressed(path), str(path))  # the header passed the schema
    h = f.header
    out = Path(args.out)
    png = h["source"] == "png"
    if png:
        _png_targets(out, h["names"], args)
    else:
        if out.suffix.lower() != ".npy":
            raise ConfigError(f"--out must name a .npy file, got {out}")
        command_output(args, out, runs=[args.run], reads=[args.file])
    run, model, levels, coder = _coding_model(args.run, args.device)
    check_coding_device(h, run.device, str(path))
    if model_fingerprint(model) != h["model_fingerprint"]:
        m = h["model"]
        raise DataError(
            f"{args.file} was compressed with another model ({m['kind']} on {m['dataset']}, fingerprint "
            f"{h['model_fingerprint'][:12]}); {args.run} holds a different one: decompress with the same model"
        )
    check_against_model(h, model.event_shape, levels, str(path))
    if h["coder"] != coder.name:
        raise DataError(f"{args.file} was coded by {h['coder']!r}; {args.run}'s model codes with {coder.name!r}")
    shape, dtype = tuple(h["shape"]), np.dtype(h["dtype"])
    n = shape[0]
    t0 = time.perf_counter()
    xt = coder.decode(model, f.payload, n, h["batch_size"])  # DataError on data the model cannot have coded
    seconds = max(time.perf_counter() - t0, 1e-9)
    x = xt.numpy().reshape(shape).astype(dtype)
    del xt  # the int64 images: only the file's dtype is kept from here on
    if content_digest(x) != h["content_sha256"]:
        raise DataError(
            f"decoding {args.file} gave images that differ from the originals (checksum mismatch): the file is "
            "damaged, or the model's probabilities were not reproduced bit for bit (another machine or software "
            "version?); nothing written"
        )
    if png:
        _write_pngs(out, x, h["names"], args.force)
        where = f"{plural(len(x), 'PNG file')} in {out}"
    else:
        buf = io.BytesIO()
        np.save(buf, x, allow_pickle=False)
        atomic_write_bytes(out, buf.getbuffer())  # its bytes in place, not a copy
        where = str(out)
    say(f"decompressed {plural(n, 'image')} ({x.nbytes / 1e6 / seconds:.3f} MB/s), checksum verified -> {where}")
    return 0


def _write_pngs(out: Path, x: np.ndarray, names: list[str], force: bool) -> None:
    """All the images into ``out`` or none: written into a temporary folder, moved when all are."""
    from PIL import Image

    errors = _pil_errors()
    with atomic_folder(out, names, force) as tmp:
        for img, name in zip(x, names, strict=True):
            try:
                Image.fromarray(img).save(tmp / name, format="PNG")  # bool -> mode "1", uint8 -> mode "L"
            except OSError as e:
                raise DgmError(describe_os_error(e, out / name, "write")) from None
            except errors as e:
                raise DataError(f"cannot write {out / name}: {type(e).__name__}: {e}") from None


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_run_parser(
        sub,
        "compress",
        help="losslessly compress images with a trained autoregressive model, VAE or hierarchical VAE (bits-back)",
    )
    p.add_argument("inputs", nargs="+", help="one .npy array of images, or PNG files (with distinct names)")
    p.add_argument("--out", required=True, help="compressed file to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_count_flag(
        p,
        "--batch-size",
        1,
        10**9,
        help="images coded together (recorded in the file); default 500, or fewer where an autoregressive "
        "model's caches for 500 would pass 2 GiB",
    )
    add_device_flag(p, _DEVICE_WHAT, default="cpu", why=_DEVICE_WHY)
    p.set_defaults(func=compress)
    p = sub.add_parser("decompress", help="decompress a file written by dgm compress")
    p.add_argument("file")
    p.add_argument("--run", required=True, help="the run folder of the model that compressed it")
    p.add_argument("--out", required=True, help=".npy file (or a folder, for PNG inputs) to write")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    add_device_flag(p, _DEVICE_WHAT, default="cpu", why=_DEVICE_WHY)
    p.set_defaults(func=decompress)
