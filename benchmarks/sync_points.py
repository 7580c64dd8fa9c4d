"""Where a training step waits for the GPU: every host synchronisation in the Trainer's steps,
counted per source line (issue 28: "no host synchronisation inside a step").

For each model (the presets of ``gpu_speed.py``) the script trains a warm-up epoch of
``--steps`` steps, then a second one under ``torch.cuda.set_sync_debug_mode("warn")``, and lists
the lines of dgmkit (and of the benchmark) that synchronised, with how often; it does so again
with epochs of twice the steps. The synchronisations per step are the difference of the two
epochs' counts over ``--steps``: what an epoch's end adds (the finiteness check, the metrics,
the checkpoint) cancels. (Before 2026-11-29 the script counted every line seen ``steps`` times
or more, the end-of-epoch check of each parameter among them: its "about N per step" of earlier
outputs overstates.) CUDA only.

    python benchmarks/sync_points.py [--models gated-vae,hvae] [--steps 20]
"""

import argparse
import collections
import sys
import traceback
import warnings

import torch
from _common import count, data_dir
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


def parser() -> argparse.ArgumentParser:
    """The script's flags (``--models`` checked against gpu_speed's ``MODELS`` in ``main``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--steps", type=count, default=20)
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    unknown = [name for name in args.models.split(",") if name not in MODELS]
    if unknown:
        ap.error(f"--models: {', '.join(unknown)} not among {', '.join(MODELS)}")
    if not torch.cuda.is_available():
        sys.exit("sync_points.py needs a CUDA device")
    device = torch.device("cuda")
    for name in args.models.split(","):
        try:
            short, long = (sync_sites(name, device, steps) for steps in (args.steps, 2 * args.steps))
        except Exception as e:  # noqa: BLE001 - one model's failure is reported, the others go on
            print(f"== {name}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        a, b = sum(short.values()), sum(long.values())
        print(f"== {name}: {a} synchronisations in an epoch of {args.steps} steps, {b} in one of {2 * args.steps}: "
              f"{(b - a) / args.steps:.1f} per step (the difference), {2 * a - b} at an epoch's end",
              flush=True)  # fmt: skip
        print(f"  {args.steps:>6d}  {2 * args.steps:>6d}  steps: where", flush=True)
        for where, n in long.most_common(15):
            print(f"  {short[where]:6d}  {n:6d}  {where}", flush=True)


if __name__ == "__main__":
    main()
