"""Where a training step waits for the GPU: every host synchronisation in the Trainer's steps,
counted per source line (issue 28: "no host synchronisation inside a step").

For each model (the presets of ``gpu_speed.py``) the script trains a warm-up epoch of
``--steps`` steps, then a second one under ``torch.cuda.set_sync_debug_mode("warn")``, and lists
the lines of dgmkit (and of the benchmark) that synchronised, with how often: a line seen
``steps`` times or more synchronises in every step. CUDA only.

    python benchmarks/sync_points.py [--models gated-vae,hvae] [--steps 20]
"""

import argparse
import collections
import sys
import traceback
import warnings

import torch
from _common import data_dir
from gpu_speed import MODELS, fresh_model, setting_up

from dgmkit.config import build_objective, trainer_options
from dgmkit.data import Split
from dgmkit.training import Trainer


def sync_sites(name: str, device: torch.device, steps: int) -> collections.Counter:
    cfg, dataset, transform, init = setting_up(name, device, data_dir())
    rows = dataset.train.x[: steps * cfg.optim.batch_size]
    options = trainer_options(cfg.replace(epochs=2, device=str(device), patience=None))
    trainer = Trainer(fresh_model(cfg, dataset, init, device), build_objective(cfg), Split(rows), transform,
                      progress=False, **options)  # fmt: skip
    trainer.epochs = 1
    trainer.fit()
    trainer.epochs = 2
    sites: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if "/dgmkit/" in f.filename or "benchmarks" in f.filename]
        frames = [f for f in frames if "sync_points.py" not in f.filename]
        where = " <- ".join(f"{f.filename.split('/src/')[-1]}:{f.lineno} {f.name}" for f in reversed(frames[-4:]))
        sites[where or f"{filename}:{lineno}"] += 1

    torch.cuda.synchronize(device)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        saved, warnings.showwarning = warnings.showwarning, record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.fit()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = saved
    return sites


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("sync_points.py needs a CUDA device")
    device = torch.device("cuda")
    for name in args.models.split(","):
        try:
            sites = sync_sites(name, device, args.steps)
        except Exception as e:  # noqa: BLE001 - one model's failure is reported, the others go on
            print(f"== {name}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        per_step = sum(n for n in sites.values() if n >= args.steps) / args.steps
        print(f"== {name}: {sum(sites.values())} synchronisations in {args.steps} steps (+ epoch end); "
              f"about {per_step:.1f} per step from lines seen every step", flush=True)  # fmt: skip
        for where, n in sites.most_common(15):
            print(f"  {n:6d}  {where}", flush=True)


if __name__ == "__main__":
    main()
