"""``dgm eval``: test ELBO, importance-sampled NLL, bits/dim and latent diagnostics."""

import argparse

import torch

from dgmkit._io import atomic_write_json
from dgmkit.cli.common import say, split_data
from dgmkit.config import load_run
from dgmkit.errors import ConfigError
from dgmkit.evaluation import evaluate
from dgmkit.models import VariationallyDequantizedFlow

__all__ = ["add_parser", "run_eval", "format_report"]


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run: ELBO, NLL (importance sampled), bits/dim, active units")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--iw-samples", type=int, default=None, help="importance samples k (default: the run's, 5000)")
    p.add_argument("--limit", type=int, default=None, help="evaluate a seeded random subset of N datapoints")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and of the sampling")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=run_eval)


def format_report(r: dict) -> str:
    if r.get("nll") is None:  # no density (an autoencoder)
        rows = [
            ("split", f"{r['split']} ({r['n']} datapoints{', random subset' if r['subset'] else ''})"),
            ("reconstruction", f"{r['recon']:.3f} nats  (log p(x | z = f(x)))"),
            ("active units", f"{r['active_units']} / {r['latent_dim']}"),
            ("note", r["note"]),
        ]
        width = max(len(a) for a, _ in rows)
        return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)
    rows = [("split", f"{r['split']} ({r['n']} datapoints{', random subset' if r['subset'] else ''})")]
    bound = (r.get("note") or "").startswith("variational")
    if r.get("recon") is not None or bound:  # a latent variable model, or a dequantization bound
        rows.append(("ELBO", f"{r['elbo']:.3f} nats  ({r['elbo_bpd']:.4f} bits/dim)"))
        if r.get("recon") is not None:
            rows += [("  reconstruction", f"{r['recon']:.3f} nats"), ("  KL", f"{r['kl']:.3f} nats")]
    rows += [
        ("NLL (exact)" if r.get("exact") else f"NLL (k={r['iw_samples']})", f"{r['nll']:.3f} +- {r['nll_stderr']:.3f} nats"),
        ("bits/dim", f"{r['bpd']:.4f}"),
    ]
    if r.get("active_units") is not None:
        rows.append(("active units", f"{r['active_units']} / {r['latent_dim']}"))
    if bound:
        rows.append(("data", "variational dequantization: both are bounds on the integer data's NLL"))
    if r.get("transform") == "dequantize":
        rows.append(("data", f"uniformly dequantized; the NLL bounds that of the {r['num_dims']}-D integer data"))
    rows.append(("time", f"{r['seconds']:.1f} s"))
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


def run_eval(args: argparse.Namespace) -> int:
    run = load_run(args.run_dir)
    k = run.cfg.iw_samples if args.iw_samples is None else args.iw_samples
    if isinstance(run.model, VariationallyDequantizedFlow) and args.iw_samples is None:
        k = 64  # each sample is a pass of the whole flow
    if k < 0:
        raise ConfigError(f"--iw-samples must be >= 0, got {k}")
    x, _ = split_data(run, args.split, args.data_dir)
    subset = None
    if args.limit is not None:
        if args.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {args.limit}")
        if args.limit < len(x):
            total = len(x)
            idx = torch.randperm(total, generator=torch.Generator().manual_seed(args.seed))[: args.limit]
            idx = idx.sort().values
            x = x[idx]
            subset = {"seed": args.seed, "of": total, "indices": idx.tolist()}
    report = evaluate(run.model, x, iw_samples=k, log_volume=run.transform.log_volume, seed=args.seed)
    result = {
        **report.to_dict(),
        "split": args.split,
        "subset": subset,
        "checkpoint": run.checkpoint.name,
        "dataset": run.cfg.dataset,
        "transform": run.transform.kind,
    }
    say(format_report(result))
    atomic_write_json(run.path / "eval.json", result)
    say(f"wrote {run.path / 'eval.json'}")
    return 0
