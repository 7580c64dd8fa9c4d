"""Representation learning side by side on the sprites (issue 12): AE, VAE, beta-VAE, beta-TCVAE,
WAE and VQ-VAE on the same data, networks and budget, several seeds.

Every contender is trained with `dgm train --dataset sprites` (MLP networks of --hidden, a
--latent-dim code, --epochs epochs of batch 256, Adam 1e-3; the VQ-VAE has its convolutional
networks and an 8x8 grid of --codes codes), then measured with the commands a user runs:

- `dgm eval RUN --split test [--iw-samples 1]`: the reconstruction log p(x | z) (at one posterior draw for the
  VAEs, at the code for AE, WAE and VQ-VAE; nats per image), the bound on log p(x) where the
  model has one (ELBO; the VQ-VAE's bound under its uniform code prior), the WAE's MMD;
- `dgm disentangle RUN` (continuous codes): MIG (20 bins) and the FactorVAE metric;
- the VQ-VAE: codebook usage and perplexity on the validation split at the last epoch.

Prints one markdown table, mean +- standard deviation over the seeds, and writes every run
folder under --out. Nothing here is tuned per model beyond the weights named in CONTENDERS.

    python benchmarks/representations.py --out runs/representations [--seeds 0 1 2] [--epochs 20]
    python benchmarks/representations.py --out /tmp/rep --quick      # 1 epoch, 1 seed: a smoke run
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count, machine  # noqa: E402

from dgmkit.cli.main import main as dgm  # noqa: E402
from dgmkit.evaluation import record_terms  # noqa: E402

CONTENDERS = {
    "AE": ["--model", "ae"],
    "VAE": ["--model", "vae"],
    "beta-VAE (beta 4)": ["--model", "vae", "--beta", "4"],
    "beta-VAE (beta 8)": ["--model", "vae", "--beta", "8"],
    "beta-TCVAE (beta 6)": ["--model", "vae", "--objective", "tcvae", "--tc-weight", "6"],
    "WAE-MMD (lambda 100)": ["--model", "wae", "--mmd-weight", "100"],
    "VQ-VAE (64 codes, 8x8)": ["--model", "vqvae", "--codes", "64", "--code-dim", "16", "--vq-width", "64"],
}


def run_one(name: str, flags: list[str], seed: int, args) -> dict:
    out = Path(args.out) / f"{name.split()[0].lower()}{'-' + flags[-1] if '--beta' in flags else ''}-s{seed}"
    common = ["--dataset", "sprites", "--epochs", str(args.epochs), "--batch-size", "256", "--seed", str(seed)]
    if "vqvae" not in flags:
        common += ["--latent-dim", str(args.latent_dim), "--hidden", *map(str, args.hidden)]
    t0 = time.perf_counter()
    if not (out / "best.safetensors").is_file():
        code = dgm(["train", *flags, *common, "--out", str(out), "--quiet"])
        if code:
            raise SystemExit(f"{name}: dgm train failed ({code})")
    train_s = time.perf_counter() - t0
    # k = 1: the ELBO is the bound reported here; AE and WAE have no density, so no k (dgm eval refuses one)
    k = [] if flags[1] in ("ae", "wae") else ["--iw-samples", "1"]
    if dgm(["eval", str(out), "--split", "test", *k]):
        raise SystemExit(f"{name}: dgm eval failed")
    report = json.loads((out / "eval.json").read_text())
    mmd = [t["value"] for t in record_terms(report) if t["name"] == "mmd"]
    row = {"recon": report["recon"], "bound": report["elbo"], "mmd": mmd[0] if mmd else None, "train_s": train_s}
    if "vqvae" in flags:
        last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        row.update(usage=last["valid_usage"], perplexity=last["valid_perplexity"])
    else:
        if dgm(["disentangle", str(out), "--votes", str(args.votes)]):
            raise SystemExit(f"{name}: dgm disentangle failed")
        d = json.loads((out / "disentangle.json").read_text())
        row.update(mig=d["mig"], factor_vae=d["factor_vae"]["accuracy"])
    return row


def fmt(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = statistics.mean(values)
    return f"{m:.3f}" if len(values) == 1 else f"{m:.3f} +- {statistics.stdev(values):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the run folders (reused: a trained run is only measured)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=count, default=20)
    ap.add_argument("--latent-dim", type=count, default=10)
    ap.add_argument("--hidden", type=int, nargs="+", default=[512, 256])
    ap.add_argument("--votes", type=count, default=800, help="FactorVAE metric votes")
    ap.add_argument(
        "--only", nargs="+", default=None, choices=list(CONTENDERS), help="contenders to run (names as in the table)"
    )
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 epoch, 1 seed, 50 votes")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.seeds, args.votes = 1, args.seeds[:1], 50
    names = [n for n in CONTENDERS if args.only is None or n in args.only]
    print(f"# sprites 32x32, {args.epochs} epochs, seeds {args.seeds}, MLP {args.hidden}, {args.latent_dim}-D codes")
    print(f"# {machine()}")
    rows = {}
    for name in names:
        rows[name] = [run_one(name, CONTENDERS[name], s, args) for s in args.seeds]
        print(f"{name}: done", flush=True)
    cols = ["recon", "bound", "mig", "factor_vae", "mmd", "usage", "perplexity", "train_s"]
    print("| model | " + " | ".join(cols) + " |")
    print("| --- " * (len(cols) + 1) + "|")
    for name, rs in rows.items():
        print(f"| {name} | " + " | ".join(fmt([r.get(c) for r in rs]) for c in cols) + " |")
    print("recon: test log p(x|z) in nats per image (higher is better); bound: test ELBO (VQ-VAE: uniform code prior);")
    print("mig, factor_vae: dgm disentangle on the test split; usage, perplexity: the VQ-VAE's codebook on validation.")
    if any(math.isnan(v) for rs in rows.values() for r in rs for v in r.values() if isinstance(v, float)):
        raise SystemExit("a measurement is NaN")


if __name__ == "__main__":
    main()
