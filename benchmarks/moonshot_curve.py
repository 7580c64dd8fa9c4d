"""Issue 29's table and figure: the test bound against training minutes, from what
``benchmarks/moonshot_gpu.sh OUT_DIR SECONDS`` left in OUT_DIR/curve/points.jsonl (one line a
chunk: the wall seconds of its training commands so far, the epochs and steps done, and the
bound on the test images), plus the exact mixtures of orders that ``... OUT_DIR orders M`` wrote.

    python benchmarks/moonshot_curve.py OUT_DIR        # prints a Markdown table, writes OUT_DIR/curve.png
"""

import json
from pathlib import Path

from _common import the_argument


def main(out: str) -> None:
    folder = Path(out)
    if not (folder / "curve" / "points.jsonl").is_file():
        raise SystemExit(f"{out}: no curve/points.jsonl (a folder that benchmarks/moonshot_gpu.sh OUT_DIR SECONDS wrote)")
    points = [json.loads(line) for line in (folder / "curve" / "points.jsonl").read_text().splitlines() if line.strip()]
    print("| training minutes | epochs (+ steps) | test -ELBO, nats | images |")
    print("| ---: | --- | ---: | ---: |")
    for p in points:
        done = f"{p['epochs']}" + (f" + {p['steps_into_next']}" if p["steps_into_next"] else "")
        print(f"| {p['train_s'] / 60:.1f} | {done} | {p['nll']:.3f} +- {p['stderr']:.3f} | {p['n']} |")
    exact = sorted(folder.glob("orders-*-seed*.eval.json"))
    for path in exact:
        r = json.loads(path.read_text())
        print(f"| {path.name} | exact, {r['iw_samples']} orders | NLL {r['nll']:.3f} +- {r['nll_stderr']:.3f} | {r['n']} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    minutes = [p["train_s"] / 60 for p in points]
    ax.errorbar(minutes, [p["nll"] for p in points], yerr=[p["stderr"] for p in points], marker="o", label="bound")
    if exact:
        ax.scatter([minutes[-1]] * len(exact), [json.loads(p.read_text())["nll"] for p in exact], marker="*", label="exact")
    ax.axhline(78.0, color="grey", linestyle="--", label="78 nats")
    ax.set(xlabel="training minutes (GPU)", ylabel="test NLL (nats)", title="static binarized MNIST")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "curve.png", dpi=120)
    print(f"wrote {folder / 'curve.png'}")


if __name__ == "__main__":
    main(the_argument(__doc__))
