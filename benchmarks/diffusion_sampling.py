"""Sampling speed of diffusion models: images per second against the number of ancestral
steps, for a Gaussian (VDM) and a masked model, measured one after the other in one run.

    python benchmarks/diffusion_sampling.py [VDM_RUN [MASKED_RUN]] [--n N] [--steps S ...]

With run folders (trained --model diffusion runs) their models (EMA weights where kept) are
used; without, randomly initialised models of the presets' sizes on 28x28 images (the speed
does not depend on the weights). Sampling cost is one U-Net pass per step for the whole batch
(the masked model skips steps that reveal nothing).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count, machine, run_of  # noqa: E402

from dgmkit.families.diffusion import DiffusionConfig  # noqa: E402


def _model(run: str | None, process: str, levels: int) -> tuple[torch.nn.Module, str]:
    if run:
        loaded = run_of(run)  # (no run there: said in words)
        own = getattr(loaded.cfg.model, "process", None)
        if own != process:  # the rows are labelled by position: VDM_RUN first, MASKED_RUN second
            what = f"a {own} diffusion run" if own else loaded.cfg.model.describe()  # (which says its article)
            sys.exit(f"{run} is {what}, given where the {process} diffusion run goes (usage: VDM_RUN [MASKED_RUN])")
        return loaded.model.eval(), run
    torch.manual_seed(0)
    return DiffusionConfig(process=process).build((1, 28, 28), levels).eval(), "random weights"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="*")
    p.add_argument("--n", type=count, default=64)
    p.add_argument("--steps", type=count, nargs="+", default=[25, 100, 250])
    a = p.parse_args()
    if len(a.runs) > 2:
        p.error(f"at most two run folders (VDM_RUN MASKED_RUN), got {len(a.runs)}")
    runs = [*a.runs, None, None][:2]
    print(f"# {machine()}; batches of {a.n} images")
    for run, process, levels in ((runs[0], "gaussian", 256), (runs[1], "masked", 2)):
        model, what = _model(run, process, levels)
        params = sum(q.numel() for q in model.parameters())
        print(f"{process} diffusion ({what}), {params} parameters")
        with torch.no_grad():
            model.sample(2, torch.Generator().manual_seed(0), steps=2)  # warm-up
            for steps in a.steps:
                t0 = time.perf_counter()
                model.sample(a.n, torch.Generator().manual_seed(0), steps=steps)
                dt = time.perf_counter() - t0
                print(f"  {steps:5d} steps: {a.n} images in {dt:7.1f} s = {a.n / dt:8.3f} images/s")


if __name__ == "__main__":
    main()
