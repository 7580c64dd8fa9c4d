"""Learning curves of the VampPrior-paper runs: a markdown table and a PNG.

Reads runs/paper-*/metrics.jsonl (and eval.json where `dgm eval` has been run on the test split)
and prints, per row: epochs reached, training time (the wall-clock seconds of its epochs), the best
validation ELBO, the test -ELBO and NLL with the k and the number of images of that evaluation,
and the validation -ELBO at chosen epochs; writes docs/paper-curves.png (where no run is found: an
error, and no figure).

    python benchmarks/paper_curves.py [--runs runs] [--out docs/paper-curves.png]
"""

import argparse
import json
from pathlib import Path

ROWS = ["standard", "vampprior", "mog", "iwae5", "iwae50"]
PAPER = {"standard": "88.56", "vampprior": "85.57", "mog": "-", "iwae5": "-", "iwae50": "-"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--out", default="docs/paper-curves.png")
    args = ap.parse_args()
    curves = {}
    print("| row | epochs reached | train time | best valid -ELBO (epoch) | test -ELBO | test NLL | paper NLL |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in ROWS:
        path = Path(args.runs) / f"paper-{row}" / "metrics.jsonl"
        if not path.exists():
            print(f"| {row} | not run | | | | | {PAPER[row]} |")
            continue
        m = [json.loads(s) for s in path.read_text().splitlines()]
        curves[row] = m
        best = max(m, key=lambda e: e["valid_elbo"])
        hours = sum(e["time_s"] for e in m) / 3600
        ev = Path(args.runs) / f"paper-{row}" / "eval.json"
        test_elbo = test_nll = "-"
        if ev.exists():
            r = json.loads(ev.read_text())
            if r.get("split", "test") != "test":  # (dgm eval --split valid): not a test number
                test_elbo = test_nll = f"- (eval.json is of the {r['split']} split)"
            else:
                images = "" if r.get("n") in (None, 10000) else f", {r['n']} of the 10000 images"
                test_elbo = f"{-r['elbo']:.2f}"
                test_nll = f"{r['nll']:.2f} +- {r['nll_stderr']:.2f} (k={r.get('iw_samples')}{images})"
        print(
            f"| {row} | {len(m)} of 2000 | {hours:.2f} h | {-best['valid_elbo']:.2f} ({best['epoch']}) | {test_elbo} | "
            f"{test_nll} | {PAPER[row]} |"
        )
    if not curves:  # (no figure: an empty one would replace the one at --out, docs/paper-curves.png by default)
        raise SystemExit(f"no paper-* run in {args.runs} (none of {', '.join(ROWS)}): {args.out} was not written")
    print()
    marks = [1, 5, 10, 25, 50, 100, 150, 200, 300]
    print("| row | " + " | ".join(f"epoch {e}" for e in marks) + " |")
    print("| --- |" + " --- |" * len(marks))
    for row, m in curves.items():
        by_epoch = {e["epoch"]: e for e in m}
        cells = [f"{-by_epoch[e]['valid_elbo']:.2f}" if e in by_epoch else "" for e in marks]
        print(f"| {row} | " + " | ".join(cells) + " |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for row, m in curves.items():
        ax.plot([e["epoch"] for e in m], [-e["valid_elbo"] for e in m], label=row)
    ax.set_ylim(85, 130)
    ax.set_xlabel("epoch (KL warm-up over the first 100)")
    ax.set_ylabel("validation -ELBO (nats)")
    ax.set_title("Tomczak & Welling (2018) protocol, static binarized MNIST")
    ax.axhline(88.56, color="gray", ls=":", lw=1, label="paper test NLL, standard (88.56)")
    ax.axhline(85.57, color="gray", ls="--", lw=1, label="paper test NLL, VampPrior (85.57)")
    ax.legend()
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
