"""Host time a training step spends beside the model, for a model of many weight tensors (issue 28).

On a GPU a small step waits for the host: every microsecond the Trainer's Python spends per step
is a microsecond the device idles. This times, per call on one CPU thread, what the EMA and the
step guard do in each step, against what they did before 2026-11-27 (written out here), on a
model of N one-element weights (the residual HVAE preset has 349 weight tensors):

- the EMA's update: the parameters looked up once a model (``EMA._parameters_of``) against
  ``dict(model.named_parameters())`` and a detach of each in every step;
- the step guard's input: the optimizer's parameters listed once against ``model.parameters()``
  walked in every step;
- the gradients' norm for skipping without clipping: ``get_total_norm`` against
  ``clip_grad_norm_(params, inf)``, which also multiplies every gradient by 1.

    python benchmarks/host_costs.py [--tensors 348] [--calls 300]
"""

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count, machine  # noqa: E402

from dgmkit.training.ema import EMA  # noqa: E402
from dgmkit.training.step_guard import _total_norm  # noqa: E402


def per_call_us(fn, calls: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


@torch.no_grad()
def ema_update_before(ema: EMA, model: torch.nn.Module) -> None:
    """The EMA's host path as it was: the parameters looked up and detached in every step."""
    named = dict(model.named_parameters())
    params = [named[name].detach() for name in ema.weights]
    torch._foreach_lerp_(list(ema.weights.values()), params, 1.0 - ema.current_decay())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=count, default=348, help="one-element tensors (four a block: two Linear(1, 1))")
    ap.add_argument("--calls", type=count, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    blocks = max(1, args.tensors // 4)
    model = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Sequential(torch.nn.Linear(1, 1)))
                                  for _ in range(blocks)])  # fmt: skip
    params = list(model.parameters())
    for p in params:
        p.grad = torch.ones_like(p)
    print(f"machine: {machine()}; {len(params)} weight tensors in {sum(1 for _ in model.modules())} modules, "
          f"{args.calls} calls each, microseconds a call")  # fmt: skip
    ema = EMA(model, 0.999)
    rows = [
        ("EMA update (host path)", lambda: ema_update_before(ema, model), lambda: ema.update(model, True)),
        ("the step guard's parameters", lambda: list(model.parameters()), lambda: list(params)),
        ("gradient norm, skipping only", lambda: torch.nn.utils.clip_grad_norm_(params, math.inf),
         lambda: _total_norm(params)),
    ]  # fmt: skip
    print(f"{'':<32}{'before':>10}{'now':>10}{'saved':>10}")
    total = 0.0
    for label, before, now in rows:
        b, n = per_call_us(before, args.calls), per_call_us(now, args.calls)
        total += b - n
        print(f"{label:<32}{b:10.1f}{n:10.1f}{b - n:10.1f}")
    print(f"{'saved a step (the three rows)':<32}{'':>20}{total:10.1f}")


if __name__ == "__main__":
    main()
