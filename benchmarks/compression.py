"""Lossless compression of a dataset's test images with a trained model (an autoregressive model
with the range coder, a VAE by bits-back coding), next to the model's own limit (an ARM's NLL, a
VAE's negative ELBO; for a VAE also its importance-sampled NLL where its eval.json holds one of
all the test images) and to PNG, gzip and xz of the same images, by one protocol:

- all test images, in their stored order; bits/dim = 8 * compressed bytes / (images * pixels);
- dgmkit: the whole file that `dgm compress` writes (header, payload and checksum), coded in
  batches of 500, then decoded and compared with the originals;
- PNG: every image as its own PNG (1-bit for binary data, 8-bit grey otherwise), Pillow with
  optimize=True, file sizes summed;
- gzip -9 and xz -9e of the whole uint8 array (one byte per pixel), and of the array packed
  8 pixels per byte for binary data.

    python benchmarks/compression.py RUN_DIR
"""

import gzip
import io
import json
import lzma
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import coded_test_split, machine, run_of, the_argument  # noqa: E402

from dgmkit import __version__  # noqa: E402
from dgmkit.coding import model_fingerprint, write_container  # noqa: E402
from dgmkit.coding.container import content_digest  # noqa: E402


def png_bytes(x: np.ndarray, binary: bool) -> int:
    from PIL import Image

    total = 0
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(img.astype(bool) if binary else img).save(buf, format="PNG", optimize=True)
        total += len(buf.getvalue())
    return total


def main() -> None:
    folder = the_argument(__doc__)
    run = run_of(folder)
    model = run.model
    coder, ds = coded_test_split(folder, run)  # (a model that cannot code them: said in words)
    x = ds.test.x[:, 0].numpy()  # (N, H, W) uint8
    n, dims = len(x), x[0].size
    binary = ds.num_levels == 2
    xt = torch.from_numpy(x.astype(np.int64)).unsqueeze(1)
    print(f"# {run.cfg.model.describe()} ({folder}) on {run.cfg.data.dataset} test: {n} images of {dims} pixels")
    print(f"# {coder.name}; {machine()}")
    label, reference = coder.reference
    limit = reference(model, xt).sum().item()
    t0 = time.perf_counter()
    words = coder.encode(model, xt, 500)
    t_enc = time.perf_counter() - t0
    header = {"model_fingerprint": model_fingerprint(model), "shape": list(x.shape), "dtype": x.dtype.str}
    header |= {"batch_size": 500, "content_sha256": content_digest(x), "levels": ds.num_levels, "source": "npy"}
    header |= {"dgmkit_version": __version__, "coder": coder.name, "device": "cpu"}
    header |= {"model": {"kind": run.cfg.model.describe(), "dataset": run.cfg.data.dataset}}  # as dgm compress writes it
    size = len(write_container(header, words))
    t0 = time.perf_counter()
    back = coder.decode(model, words, n, 500)
    t_dec = time.perf_counter() - t0
    exact = torch.equal(back, xt)
    raw = x.astype(np.uint8).tobytes()
    rows = [(f"{label} (the limit)", limit / math.log(2) / 8)]
    ev = run.path / "eval.json"
    if model.coding == "bits-back" and ev.exists():
        e = json.loads(ev.read_text())
        if e.get("split") == "test" and e.get("n") == n and e.get("nll") is not None:
            rows.append((f"the model's NLL (IS, k={e['iw_samples']})", e["nll"] * n / math.log(2) / 8))
    rows += [
        ("dgmkit (coder + model)", size),
        ("PNG per image", png_bytes(x, binary)),
        ("gzip -9, 1 byte/pixel", len(gzip.compress(raw, 9))),
        ("xz -9e, 1 byte/pixel", len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))),
    ]
    if binary:
        packed = np.packbits(x.reshape(n, -1), axis=1).tobytes()
        rows += [
            ("gzip -9, packed bits", len(gzip.compress(packed, 9))),
            ("xz -9e, packed bits", len(lzma.compress(packed, preset=9 | lzma.PRESET_EXTREME))),
        ]
    print(f"{'method':32s} {'bytes':>10s} {'bits/dim':>9s}")
    for name, b in rows:
        print(f"{name:32s} {b:10.0f} {8 * b / (n * dims):9.4f}")
    mb = x.nbytes / 1e6
    print(f"dgmkit rate / {label} = {size * 8 / (limit / math.log(2)):.4f}; round trip exact: {exact}")
    print(f"encode {t_enc:.1f} s ({mb / t_enc:.3f} MB/s), decode {t_dec:.1f} s ({mb / t_dec:.3f} MB/s) of {mb:.2f} MB")


if __name__ == "__main__":
    main()
