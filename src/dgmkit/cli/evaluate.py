"""``dgm eval``: the model's estimate of log p(x) (of the kind it declares), the ELBO split
where it has one, bits/dim and latent diagnostics."""

import argparse

import torch

from dgmkit._io import atomic_write_json
from dgmkit.cli.argtypes import SEED, count
from dgmkit.cli.common import say, split_data
from dgmkit.config import load_run
from dgmkit.config.codes import attach_code_prior
from dgmkit.config.schema import MAX_IW_SAMPLES
from dgmkit.errors import ConfigError
from dgmkit.evaluation import evaluate

__all__ = ["add_parser", "run_eval", "format_report"]

# what each kind of estimate is called on the NLL row
_NLL_ROW = {
    "exact": lambda r: "NLL (exact)",
    "importance-sampled": lambda r: f"NLL (k={r['iw_samples']})",
    "bound": lambda r: f"NLL bound (k={r['iw_samples']})",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run: its log-likelihood estimate, ELBO, bits/dim, active units")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument(
        "--iw-samples",
        type=count(0, MAX_IW_SAMPLES, "--iw-samples"),
        default=None,
        help="importance samples k (default: the run's); memory stays bounded for any k, time grows with it",
    )
    p.add_argument("--limit", type=count(1, 10**9, "--limit"), default=None, help="a seeded random subset of N datapoints")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the subset and of the sampling")
    p.add_argument("--data-dir", default=None)
    p.add_argument(
        "--code-prior", default=None, help="VQ-VAE: a run trained with --codes-of RUN_DIR, the prior p(z) of the bound"
    )
    p.set_defaults(func=run_eval)


def format_report(r: dict) -> str:
    rows = [("split", f"{r['split']} ({r['n']} datapoints{', random subset' if r['subset'] else ''})")]
    if r["estimate"] == "reconstruction":
        rows.append(("reconstruction", f"{r['recon']:.3f} nats  (log p(x | z = f(x)))"))
        if r.get("mmd") is not None:
            rows.append(("MMD^2(q(z), p(z))", f"{r['mmd']:.5f}  (unbiased, inverse multiquadric kernel, batches of 1000)"))
        elif r.get("model") == "wae":
            rows.append(("MMD^2(q(z), p(z))", "n/a: the unbiased estimate needs at least 2 datapoints"))
    else:
        if r.get("elbo") is not None:
            exact = r["estimate"] == "exact"
            rows.append(("ELBO" + (" = log p(x)" if exact else ""), f"{r['elbo']:.3f} nats  ({r['elbo_bpd']:.4f} bits/dim)"))
            if r.get("recon") is not None:
                rows += [("  reconstruction", f"{r['recon']:.3f} nats"), ("  KL", f"{r['kl']:.3f} nats")]
        rows += [
            (_NLL_ROW[r["estimate"]](r), f"{r['nll']:.3f} +- {_num(r['nll_stderr'])} nats"),
            ("bits/dim", f"{r['bpd']:.4f}"),
        ]
    if r.get("active_units") is not None:
        rows.append(("active units", f"{r['active_units']} / {r['latent_dim']}"))
    for layer in r.get("layers") or []:
        rows.append(
            (f"  layer {layer['name']}", f"KL {layer['kl']:.3f} nats, active {layer['active_units']} / {layer['size']}")
        )
    rows += [("what", line) for line in _notes(r)]
    rows.append(("time", f"{r['seconds']:.1f} s"))
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _notes(r: dict) -> list[str]:
    notes = {
        "reconstruction": "this model defines no density over x: no ELBO, NLL or bits/dim",
        "bound": "both numbers are lower bounds on log p(x) (as -NLL); the bound tightens as k grows",
        "importance-sampled": "the NLL estimate is a stochastic upper bound that tends to the true NLL as k grows",
        "exact": "the NLL is exact",
    }
    out = [notes[r["estimate"]]]
    if r.get("model") == "vqvae":  # a point-mass posterior: every draw is the same, k changes nothing
        out = [
            "a lower bound on log p(x) (as -NLL): log p(x|z_q(x)) + log p(z_q(x)); the posterior is a point mass, "
            "so more draws (k) change nothing"
        ]
        prior = r.get("code_prior")
        out.append(f"the bound's prior over code grids: {'the model in ' + prior if prior else 'uniform over the codes'}")
    if r.get("transform") == "dequantize":
        out.append(f"uniformly dequantized data: the numbers bound those of the {r['num_dims']}-D integer data")
    return out


def run_eval(args: argparse.Namespace) -> int:
    run = load_run(args.run_dir)
    if args.code_prior is not None:
        attach_code_prior(run, args.code_prior)
    k = run.cfg.iw_samples if args.iw_samples is None else args.iw_samples
    if run.model.estimate_kind == "exact":
        k = 0  # nothing to sample
    elif run.model.estimate_kind in ("importance-sampled", "bound") and k < 1:
        raise ConfigError(
            f"{run.cfg.model.describe()} estimates log p(x) by importance sampling: --iw-samples must be >= 1 "
            "(k = 1 is the ELBO)"
        )
    x, _ = split_data(run, args.split, args.data_dir)
    subset = None
    if args.limit is not None:
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
        "model": run.cfg.family,
        "dataset": run.record["data"]["name"],
        "transform": run.transform.kind,
        "code_prior": None if args.code_prior is None else str(args.code_prior),
    }
    say(format_report(result))
    atomic_write_json(run.path / "eval.json", result)
    say(f"wrote {run.path / 'eval.json'}")
    return 0
