"""``dgm compress`` and ``dgm decompress``: lossless compression with a trained
autoregressive model (see ``dgmkit.coding``)."""

import argparse
import io
import math
import time
from pathlib import Path

import numpy as np
import torch

from dgmkit import __version__
from dgmkit._io import atomic_write_bytes
from dgmkit.cli.common import say
from dgmkit.coding import decode_images, encode_images, model_fingerprint, read_container, write_container
from dgmkit.coding.container import content_digest
from dgmkit.config import load_run
from dgmkit.errors import ConfigError, DataError

__all__ = ["add_parsers"]


def _coding_model(run_dir: str):
    run = load_run(run_dir)
    model = run.model
    levels = model.coding_levels
    if levels is None:
        raise ConfigError(
            f"{run_dir} holds {run.cfg.model.describe()}, which has no exact sequential conditionals to drive the "
            "entropy coder: compression needs an autoregressive model (--model arm) with one pixel order "
            "(a MADE mixture over connectivities, made_masks > 1, has none)"
        )
    return run, model, levels


def _read_images(paths: list[str]) -> tuple[np.ndarray, dict]:
    """A .npy array of images, or PNG files, and how to write them back."""
    if len(paths) == 1 and paths[0].endswith(".npy"):
        try:
            x = np.load(paths[0], allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {paths[0]} as a .npy array: {e}") from None
        return x, {"source": "npy"}
    from PIL import Image, UnidentifiedImageError

    images, names = [], []
    for p in paths:
        if not p.lower().endswith(".png"):
            raise DataError(f"{p}: give one .npy file or PNG files")
        try:
            with Image.open(p) as im:
                if im.mode not in ("1", "L"):
                    raise DataError(f"{p}: a {im.mode} PNG; these models code single-channel (1-bit or 8-bit grey) images")
                a = np.asarray(im)
                images.append((a != 0 if im.mode == "1" else a, im.mode))  # canonical 0/1 bytes for 1-bit images
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"cannot read {p} as a PNG: {e}") from None
        names.append(Path(p).name)
    if len({a.shape for a, _ in images}) != 1 or len({m for _, m in images}) != 1:
        raise DataError("the PNG files differ in size or mode")
    x = np.stack([a for a, _ in images])
    return x, {"source": "png", "names": names, "png_mode": images[0][1]}


def _to_model_input(x: np.ndarray, event_shape: tuple[int, ...], levels: int) -> torch.Tensor:
    n_dims = math.prod(event_shape)
    if x.ndim < 2 or math.prod(x.shape[1:]) != n_dims:
        raise DataError(f"expected N images of {event_shape[1]}x{event_shape[2]} pixels, got an array of shape {x.shape}")
    if x.dtype == bool:
        x = x.astype(np.uint8)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"expected integer pixel values, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)) or not np.array_equal(x, np.round(x)) or x.min() < 0 or x.max() >= levels:
        raise DataError(f"the model codes integer pixels 0..{levels - 1}; these values run from {x.min()} to {x.max()}")
    return torch.from_numpy(x.astype(np.int64).reshape(len(x), *event_shape))


def compress(args: argparse.Namespace) -> int:
    run, model, levels = _coding_model(args.run_dir)
    x, meta = _read_images(args.inputs)
    if len(x) == 0:
        raise DataError("no images to compress")
    xt = _to_model_input(x, model.event_shape, levels)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    t0 = time.perf_counter()
    words = encode_images(model, xt, args.batch_size)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        nll = -torch.cat([model.log_prob(xt[i : i + 1000]) for i in range(0, len(xt), 1000)]).double().sum().item()
    header = {
        "dgmkit_version": __version__,
        "model_fingerprint": model_fingerprint(model),
        "model": {"kind": run.cfg.model.describe(), "dataset": run.cfg.data.dataset},
        "levels": levels,
        "shape": list(x.shape),
        "dtype": x.dtype.str,
        "batch_size": args.batch_size,
        "content_sha256": content_digest(x),
        "coder": "constriction range coder, categorical models (perfect=False)",
        **meta,
    }
    data = write_container(header, words)
    atomic_write_bytes(args.out, data)
    dims = xt[0].numel() * len(xt)
    rate = 8 * len(data) / dims
    say(
        f"compressed {len(x)} images ({dims} pixels) to {len(data)} bytes: {rate:.4f} bits/dim "
        f"(the model's NLL: {nll / (dims * math.log(2)):.4f} bits/dim; payload {32 * len(words) / dims:.4f}) "
        f"in {seconds:.1f} s, {x.nbytes / 1e6 / seconds:.3f} MB/s of input -> {args.out}"
    )
    return 0


def decompress(args: argparse.Namespace) -> int:
    try:
        data = Path(args.file).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {args.file}: {e.strerror or e}") from None
    f = read_container(data, str(args.file))
    h = f.header
    run, model, levels = _coding_model(args.run)
    if model_fingerprint(model) != h.get("model_fingerprint"):
        m = h.get("model", {})
        raise DataError(
            f"{args.file} was compressed with another model ({m.get('kind')} on {m.get('dataset')}, fingerprint "
            f"{str(h.get('model_fingerprint'))[:12]}); {args.run} holds a different one: decompress with the same model"
        )
    shape, dtype = tuple(h["shape"]), np.dtype(h["dtype"])
    n = shape[0]
    t0 = time.perf_counter()
    try:
        xt = decode_images(model, f.payload, n, h["batch_size"])
    except (ValueError, RuntimeError, AssertionError) as e:
        raise DataError(f"{args.file} could not be decoded: {e}") from None
    seconds = time.perf_counter() - t0
    x = xt.numpy().reshape(shape).astype(dtype)
    if h.get("png_mode") == "1":
        x = x.astype(bool)
    if content_digest(x) != h["content_sha256"]:
        raise DataError(
            f"decoding {args.file} gave images that differ from the originals (checksum mismatch): the model's "
            "probabilities were not reproduced bit for bit (another machine or software version?); nothing written"
        )
    out = Path(args.out)
    if h.get("source") == "png":
        if out.suffix:
            raise ConfigError(f"{args.file} holds PNG images: --out must name a folder, got {out}")
        from PIL import Image

        out.mkdir(parents=True, exist_ok=True)
        for img, name in zip(x, h["names"]):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")  # bool -> mode "1", uint8 -> mode "L"
            atomic_write_bytes(out / name, buf.getvalue())
        where = f"{len(x)} PNG files in {out}"
    else:
        if out.suffix != ".npy":
            raise ConfigError(f"--out must name a .npy file, got {out}")
        buf = io.BytesIO()
        np.save(buf, x, allow_pickle=False)
        atomic_write_bytes(out, buf.getvalue())
        where = str(out)
    say(f"decompressed {n} images ({x.nbytes / 1e6 / seconds:.3f} MB/s), checksum verified -> {where}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="losslessly compress images with a trained autoregressive model")
    p.add_argument("run_dir")
    p.add_argument("inputs", nargs="+", help="one .npy array of images, or PNG files")
    p.add_argument("--out", required=True, help="compressed file to write")
    p.add_argument("--batch-size", type=int, default=500, help="images coded together (recorded in the file)")
    p.set_defaults(func=compress)
    p = sub.add_parser("decompress", help="decompress a file written by dgm compress")
    p.add_argument("file")
    p.add_argument("--run", required=True, help="the run folder of the model that compressed it")
    p.add_argument("--out", required=True, help=".npy file (or a folder, for PNG inputs) to write")
    p.set_defaults(func=decompress)
