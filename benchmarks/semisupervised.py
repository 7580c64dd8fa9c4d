"""Semi-supervised MNIST: a table of evaluated M2, M1+M2, ADGM and SDGM runs.

The runs are trained and evaluated from the command line (presets in configs/), for example:

    # M2 with N labels (the rest hidden), then its test accuracy and bound:
    dgm train --config configs/m2-mnist-100.toml --labels N --out runs/m2-N
    dgm eval runs/m2-N --iw-samples 100
    # M1+M2: M1, a VAE of the same data, then M2 on draws from M1's q(z1|x) (its active units):
    dgm train --config configs/m1-mnist.toml --out runs/m1
    dgm train --config configs/m1m2-mnist-100.toml --codes-of runs/m1 --out runs/m1m2-100
    dgm eval runs/m1m2-100 --iw-samples 100
    # a table of finished runs (their eval.json):
    python benchmarks/semisupervised.py runs/m2-100 runs/m1m2-100 ...

(An earlier ``m1m2`` subcommand trained M2 from Python on M1's posterior means; the preset,
which draws z1 ~ q(z1|x) at every batch over M1's active units, pins M1 and keeps the best
checkpoint, replaced it: on the means of all 50 units the same M2 stalled at 45% test error.)
"""

import argparse
import json
from pathlib import Path

from dgmkit.api import Evaluation


def table(runs: list[str]) -> None:
    print(f"{'run':<28} {'labels':>7} {'epochs':>6} {'test error %':>12} {'NLL':>9} {'k':>5}")
    for r in runs:
        if not (Path(r) / "eval.json").is_file():
            raise SystemExit(f"{r}: no eval.json (a run folder that dgm eval has evaluated, e.g. runs/m2-100)")
        e = Evaluation(json.loads((Path(r) / "eval.json").read_text()))  # .accuracy: old or new record
        if e.get("split", "test") != "test":  # the column is the test error
            raise SystemExit(f"{r}: its eval.json is of the {e['split']} split; run dgm eval {r} (the test split)")
        c = json.loads((Path(r) / "config.json").read_text())["config"]
        epochs = sum(1 for _ in open(Path(r) / "metrics.jsonl"))
        print(
            f"{r:<28} {str(c['data']['labels']):>7} {epochs:>6} {100 * (1 - e.accuracy):>12.2f} "
            f"{e['nll']:>9.3f} {e['iw_samples']:>5}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="evaluated run folders (each with eval.json)")
    table(p.parse_args().runs)


if __name__ == "__main__":
    main()
