"""The ELBO's closed-form-KL path against the path that also formed log q(z|x) and log p(z).

Before 2026-11-27 every ELBO step drew z with log q(z|x) and scored log p(z), which only the
Monte Carlo KL reads; with a KL in closed form the ELBO now forms the reconstruction term alone.
The old path is rebuilt here from public functions (``log_importance_weights`` and ``kl_term``),
so the two are timed side by side in one process: the operations each forward and backward pass
launches (``torch.profiler``), and the median time of a pass over alternating rounds, for the
784-512-256-32 MNIST VAE and the digits' 64-256-128-32 one (batch 128, Bernoulli likelihood).

    python benchmarks/elbo_closed_form.py [--rounds 30] [--passes 50]
"""

import argparse
import collections
import statistics
import time

import torch
from _common import REFERENCE, count, machine
from torch.profiler import ProfilerActivity, profile

from dgmkit.config import build_model, build_objective
from dgmkit.distributions.pixels import complete_data
from dgmkit.objectives.elbo import kl_term
from dgmkit.objectives.importance import log_importance_weights


def old_loss(model, x):
    """-ELBO as it was formed: all three importance-weight terms, then the KL."""
    q, p = model.posterior(x), model.prior()
    w = log_importance_weights(model, x, 1, q=q, prior=p)
    return -(w.log_px_z.mean(0) - kl_term(q, p, w.log_qz, w.log_pz))


def operations(f) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        f().mean().backward()
    return sum(1 for e in prof.events() if e.name.startswith("aten::"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=count, default=30)
    ap.add_argument("--passes", type=count, default=50, help="forward and backward passes a round")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    for shape, hidden in [((1, 28, 28), [512, 256]), ((1, 8, 8), [256, 128])]:
        cfg = REFERENCE.replace(batch_size=128, hidden=hidden)
        model, objective = build_model(cfg, shape, 2), build_objective(cfg)
        x = (torch.rand(128, *shape, generator=torch.Generator().manual_seed(0)) < 0.3).float()
        paths = {
            "old": lambda m=model, x=x: old_loss(m, x),
            "new": lambda m=model, x=x, o=objective: o(m, x).loss,
        }
        times = collections.defaultdict(list)
        with complete_data():  # as the Trainer runs its steps
            for f in paths.values():  # warm-up
                for _ in range(5):
                    f().mean().backward()
            ops = {name: operations(f) for name, f in paths.items()}
            for r in range(args.rounds):
                for name in ("old", "new") if r % 2 else ("new", "old"):
                    t0 = time.perf_counter()
                    for _ in range(args.passes):
                        paths[name]().mean().backward()
                    times[name].append((time.perf_counter() - t0) / args.passes * 1e3)
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        print(
            f"{shape} hidden {hidden}: operations a pass old {ops['old']} new {ops['new']}; "
            f"ms a pass old {old:.3f} new {new:.3f} (medians of {args.rounds}); new/old {new / old:.3f}"
        )


if __name__ == "__main__":
    main()
