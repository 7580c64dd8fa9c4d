"""Missing-data imputation (issue 13): MIWAE against the classical imputers, in one run.

The MIWAE protocol (Mattei & Frellsen 2019) on scikit-learn's bundled UCI tables: each table
standardized (every column to mean 0, sd 1), 50% of the entries removed completely at random
(`--missing-rate 0.5`, seed 0), a VAE with a 10-D latent, a Gaussian likelihood with predicted
variances and 128-128-128 tanh networks trained by the MIWAE bound (K = 20) on the incomplete
data (up to --epochs, stopped after 100 epochs without a better validation bound; the weights
of the best validation bound are used: with predicted variances the training bound keeps
rising long after the validation bound has turned), imputation by self-normalized importance
sampling with k = 10000 draws. Scored by the RMSE on the removed entries of the training split
(in-sample, as the protocol: the model and the imputers see the same incomplete rows), next to
the column means, scikit-learn's KNNImputer and IterativeImputer fitted on the same rows.

Images: static binarized MNIST with half the pixels removed (same mechanism), a VAE trained by
the MIWAE bound, imputations of the whole test split scored by RMSE on the removed pixels (of
the 0/1 values: the mean imputation is a probability), against the column means and KNN on the
same test images (KNN, whose cost grows with N^2, on a random 2000 of them, seed 0); the bound
log p(x_o) of the observed pixels by `dgm eval`; a figure of observed / imputed / true digits.

    python benchmarks/imputation.py --out runs/imputation [--epochs 2000] [--mnist-epochs 20]
    python benchmarks/imputation.py --out /tmp/imp --quick     # a smoke run: few epochs, small k
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

from dgmkit.cli.main import main as dgm  # noqa: E402

TABLES = ["breast-cancer", "wine", "iris", "diabetes"]
TABLE_MODEL = [
    "--model", "vae", "--objective", "miwae", "--iw-k", "20", "--latent-dim", "10",
    "--hidden", "128", "128", "128", "--activation", "tanh",
    "--likelihood", "gaussian", "--gaussian-variance", "predicted",
    "--missing-rate", "0.5", "--batch-size", "64", "--patience", "100",
]  # fmt: skip


def _train(out: Path, flags: list[str]) -> float:
    t0 = time.perf_counter()
    if not (out / "best.safetensors").is_file():
        if dgm(["train", *flags, "--out", str(out), "--quiet"]):
            raise SystemExit(f"dgm train {' '.join(flags)} failed")
    return time.perf_counter() - t0


def table(name: str, args) -> dict:
    out = Path(args.out) / name
    seconds = _train(out, ["--dataset", name, *TABLE_MODEL, "--epochs", str(args.epochs)])
    imputed = out.parent / f"{name}-imputed.npy"
    code = dgm(
        [
            "impute",
            str(out),
            "--split",
            "train",
            "--k",
            str(args.k),
            "--out",
            str(imputed),
            "--force",
            "--baselines",
            "mean",
            "knn",
            "iterative",
        ]
    )
    if code:
        raise SystemExit(f"dgm impute {name} failed")
    scores = json.loads((out / "impute.json").read_text())
    return {"table": name, "train_s": seconds, **scores}


def mnist(args) -> dict:
    out = Path(args.out) / "bmnist"
    flags = [
        "--dataset", "binarized-mnist", "--model", "vae", "--objective", "miwae", "--iw-k", "5",
        "--latent-dim", "32", "--missing-rate", "0.5", "--epochs", str(args.mnist_epochs),
    ]  # fmt: skip
    seconds = _train(out, flags)
    k = str(args.mnist_k)
    results = {}
    # the whole test split against the column means; KNN (quadratic in N) on a seeded random 2000
    for tag, extra in (("all", ["--baselines", "mean"]), ("random-2000", ["--limit", "2000", "--baselines", "mean", "knn"])):
        code = dgm(
            ["impute", str(out), "--split", "test", "--k", k, "--out", str(out.parent / f"bmnist-{tag}.npy"), "--force",
             *extra, *(["--figure", str(out.parent / "bmnist-imputation.png")] if tag == "all" else [])]
        )  # fmt: skip
        if code:
            raise SystemExit("dgm impute bmnist failed")
        results[tag] = json.loads((out / "impute.json").read_text())
    if dgm(["eval", str(out), "--split", "test", "--iw-samples", k]):
        raise SystemExit("dgm eval bmnist failed")
    bound = json.loads((out / "eval.json").read_text())
    return {"table": "binarized-mnist", "train_s": seconds, **results["all"], "subset": results["random-2000"],
            "observed_nll": bound["nll"], "observed_dims": bound["observed_dims"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=2000, help="UCI tables: epochs of batch 64")
    p.add_argument("--k", type=int, default=10000, help="UCI tables: importance samples of the imputation")
    p.add_argument("--mnist-epochs", type=int, default=20)
    p.add_argument("--mnist-k", type=int, default=1000)
    p.add_argument("--tables", nargs="*", default=TABLES)
    p.add_argument("--no-mnist", action="store_true")
    p.add_argument("--quick", action="store_true", help="a smoke run: 5 epochs, k = 100, 1 MNIST epoch")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.k, args.mnist_epochs, args.mnist_k = 5, 100, 1, 20
    print(machine())
    rows = [table(t, args) for t in args.tables]
    if not args.no_mnist:
        rows.append(mnist(args))
    print("\n| data | missing entries (rows) | MIWAE | mean | KNN | iterative |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        s = r["rmse"]
        miwae = next(v for k, v in s.items() if k.startswith("MIWAE"))
        cells = [f"{s[b]:.4f}" if b in s else "n/a" for b in ("mean", "knn", "iterative")]
        print(f"| {r['table']} | {r['missing']} ({r['n']} rows) | {miwae:.4f} | {' | '.join(cells)} |")
        if "subset" in r:
            s = r["subset"]["rmse"]
            miwae = next(v for k, v in s.items() if k.startswith("MIWAE"))
            print(f"| {r['table']}, random 2000 (seed 0) | {r['subset']['missing']} | {miwae:.4f} | {s['mean']:.4f} | "
                  f"{s['knn']:.4f} | n/a |")  # fmt: skip
    (Path(args.out) / "imputation.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
