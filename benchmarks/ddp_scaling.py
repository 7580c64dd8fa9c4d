"""Data-parallel scaling on this machine: one process with one thread against N processes with
one thread each (``dgm train --nproc N``: torchrun, gloo), the same model, data, global batch,
seed and epochs, measured one after the other in this run.

Reported per model: training images/s of each (the median over the epochs after the first,
from metrics.jsonl, validation excluded), their ratio, and the final validation score of
each: at equal epochs and global batch the two runs take the same optimiser steps, so the
scores differ only by the noise the model draws (each rank draws its own).

    python benchmarks/ddp_scaling.py [--nproc 2] [--epochs 3] [--models vae conv-vae]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir, machine  # noqa: E402

MODELS = {
    # the speed benchmarks' reference: the 784-512-256-32 MLP VAE, Bernoulli likelihood, batch 128
    "vae": ["--dataset", "binarized-mnist", "--hidden", "512", "256", "--latent-dim", "32", "--batch-size", "128"],
    # a convolutional VAE (more arithmetic per parameter: less to all-reduce per unit of work)
    "conv-vae": ["--dataset", "binarized-mnist", "--encoder", "conv", "--latent-dim", "32", "--batch-size", "128"],
    # the gated PixelCNN of configs/arm-bmnist-pixelcnn.toml
    "pixelcnn": [
        "--dataset",
        "binarized-mnist",
        "--model",
        "arm",
        "--arm",
        "pixelcnn",
        "--channels",
        "24",
        "--arm-layers",
        "7",
        "--batch-size",
        "128",
    ],  # fmt: skip
}


def _run(flags: list[str], epochs: int, nproc: int, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DGMKIT_DATA": data_dir()}
    cmd = [sys.executable, "-m", "dgmkit", "train", *flags, "--epochs", str(epochs), "--seed", "0", "--quiet"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    t0 = time.perf_counter()
    done = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    score = next(k for k in lines[-1] if k.startswith("valid_") and k[6:] in ("elbo", "log_px", "bound"))
    speeds = [m["images_per_s"] for m in lines[1:]] or [lines[0]["images_per_s"]]
    return {
        "images_per_s": statistics.median(speeds),
        "score": lines[-1][score],
        "name": score,
        "wall": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--models", nargs="+", default=["vae", "conv-vae"], choices=list(MODELS))
    a = p.parse_args()
    print(f"# {machine()}; 1 process x 1 thread against {a.nproc} processes x 1 thread, {a.epochs} epochs each")
    with tempfile.TemporaryDirectory() as tmp:
        _run(MODELS[a.models[0]], 1, 1, Path(tmp) / "warm-up")  # the first heavy process runs slowly
        for name in a.models:
            one = _run(MODELS[name], a.epochs, 1, Path(tmp) / f"{name}-1")
            many = _run(MODELS[name], a.epochs, a.nproc, Path(tmp) / f"{name}-{a.nproc}")
            print(
                f"{name:9s} 1 process {one['images_per_s']:8.1f} images/s, {a.nproc} processes {many['images_per_s']:8.1f}"
                f" images/s: ratio {many['images_per_s'] / one['images_per_s']:.2f}x; final {one['name']} "
                f"{one['score']:.3f} vs {many['score']:.3f} nats"
            )


if __name__ == "__main__":
    main()
