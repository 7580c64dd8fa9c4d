"""Data-parallel scaling on this machine: one process with one thread against N processes with
one thread each (``dgm train --nproc N``: torchrun), the same model, data, global batch,
seed and epochs, measured one after the other in this run.

Reported per model: training images/s of each (the median over the epochs after the first,
from metrics.jsonl, validation excluded; with ``--epochs 1`` the one epoch's, its warm-up
included, as the header says), their ratio, and the final validation score of
each. The N processes run twice: with the gradients averaged through shared memory (the
default for ranks on one machine) and through gloo's all-reduce (``DGMKIT_SHM_ALLREDUCE=0``).
At equal epochs and global batch the runs take the same optimiser steps, so the scores differ
only by the noise the model draws (each rank draws its own). For the scale of that noise, one
more run (one process, seed 1) gives its final score too. A diffusion model's validation bound
(one sampled time per image) is too noisy to compare runs by: its final weights are scored
again by ``dgm eval --split valid`` with 16 times per image.

The two VAEs train on all of static binarized MNIST. The two heavy models (a gated PixelCNN and
a masked diffusion U-Net, about 1.9 s and 3.2 s per step of 128 images in one thread) train on a
seeded random 6000 of its training images (a .npy file that dgmkit splits 80/10/10), so that
their epochs take minutes.

    python benchmarks/ddp_scaling.py [--nproc 2] [--epochs 3] [--models vae conv-vae pixelcnn masked-diffusion]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count, data_dir, dataset, machine  # noqa: E402

BMNIST = ["--dataset", "binarized-mnist"]
SUBSET = ["--dataset", "{subset}"]  # a seeded random 6000 of binarized MNIST's training images
MODELS = {
    # the speed benchmarks' reference: the 784-512-256-32 MLP VAE, Bernoulli likelihood, batch 128
    "vae": [*BMNIST, "--hidden", "512", "256", "--latent-dim", "32", "--batch-size", "128"],
    # a convolutional VAE (more arithmetic per parameter: less to all-reduce per unit of work)
    "conv-vae": [*BMNIST, "--encoder", "conv", "--latent-dim", "32", "--batch-size", "128"],
    # the gated PixelCNN of configs/arm-bmnist-pixelcnn.toml
    "pixelcnn": [*SUBSET, *"--model arm --arm pixelcnn --channels 24 --arm-layers 7 --batch-size 128".split()],
    # the masked diffusion U-Net of configs/diffusion-bmnist-masked.toml
    "masked-diffusion": [
        *SUBSET,
        *"--model diffusion --process masked --diffusion-steps 0 --unet-channels 32 64 64 --unet-blocks 1".split(),
        *"--attention --batch-size 128 --lr 5e-4".split(),
    ],
}
SUBSET_SIZE, SUBSET_SEED = 6000, 0
TIME_SAMPLES = 16


def _subset(folder: Path) -> Path:
    """A seeded random SUBSET_SIZE of binarized MNIST's training images, as a .npy file."""
    import numpy as np
    import torch

    x = dataset("binarized-mnist").train.x
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(SUBSET_SEED))[:SUBSET_SIZE]
    path = folder / f"binarized-mnist-train-{SUBSET_SIZE}.npy"
    np.save(path, x[pick].squeeze(1).numpy())
    return path


def _run(flags: list[str], epochs: int, nproc: int, out: Path, seed: int = 0, shm: bool = True) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DGMKIT_DATA": data_dir(), "DGMKIT_SHM_ALLREDUCE": str(int(shm))}
    cmd = [sys.executable, "-m", "dgmkit", "train", *flags, "--epochs", str(epochs), "--seed", str(seed), "--quiet"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    done = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    score = next(k for k in lines[-1] if k.startswith("valid_") and k[6:] in ("elbo", "log_px", "bound"))
    speeds = [m["images_per_s"] for m in lines[1:]] or [lines[0]["images_per_s"]]
    result = {"images_per_s": statistics.median(speeds), "score": f"{lines[-1][score]:.2f}", "name": score}
    if score == "valid_bound":  # a bound over sampled times: one time per image is too noisy to compare runs by
        (out / "best.safetensors").unlink()  # (this script's own run) the last weights: equal epochs, not the best
        ev = [sys.executable, "-m", "dgmkit", "eval", str(out), "--split", "valid", "--time-samples", str(TIME_SAMPLES)]
        done = subprocess.run(ev, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{' '.join(ev)} failed:\n{done.stderr[-2000:]}")
        r = json.loads((out / "eval.json").read_text())
        result["score"] = f"{-r['nll']:.2f} +- {r['nll_stderr']:.2f}"
        result["name"] = f"valid bound ({TIME_SAMPLES} times per image, dgm eval)"
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nproc", type=count, default=2, help="processes of the data-parallel runs (2 or more)")
    p.add_argument("--epochs", type=count, default=3)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    a = p.parse_args()
    if a.nproc < 2:  # (one process against one, printed as "1 processes ... through shared memory, through gloo")
        p.error(f"argument --nproc: data-parallel runs need 2 or more processes, got {a.nproc}")
    timed = "images/s: the median of the epochs after the first" if a.epochs > 1 else (
        "images/s: of the one epoch, its warm-up included (--epochs 2 or more leaves the first out)")  # fmt: skip
    print(f"# {machine()}; 1 process x 1 thread against {a.nproc} processes x 1 thread, {a.epochs} epochs each; {timed}")
    with tempfile.TemporaryDirectory() as tmp:
        subset = str(_subset(Path(tmp))) if any("{subset}" in MODELS[m] for m in a.models) else ""
        models = {m: [f.format(subset=subset) for f in MODELS[m]] for m in a.models}
        _run(MODELS["vae"], 1, 1, Path(tmp) / "warm-up")  # the first heavy process runs slowly
        for name, flags in models.items():
            one = _run(flags, a.epochs, 1, Path(tmp) / f"{name}-1")
            many = _run(flags, a.epochs, a.nproc, Path(tmp) / f"{name}-{a.nproc}")
            gloo = _run(flags, a.epochs, a.nproc, Path(tmp) / f"{name}-{a.nproc}-gloo", shm=False)
            other = _run(flags, a.epochs, 1, Path(tmp) / f"{name}-1-seed1", seed=1)  # the noise between runs
            base = one["images_per_s"]
            print(
                f"{name}: 1 process {base:.1f} images/s; {a.nproc} processes {many['images_per_s']:.1f} images/s "
                f"({many['images_per_s'] / base:.2f}x) through shared memory, {gloo['images_per_s']:.1f} images/s "
                f"({gloo['images_per_s'] / base:.2f}x) through gloo; final {one['name']} (nats): 1 process "
                f"{one['score']}, {a.nproc} processes {many['score']} (shared memory) and {gloo['score']} (gloo); "
                f"1 process, seed 1: {other['score']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
