"""Semi-supervised MNIST: M2 (``dgm train --model m2 --labels N``) and M1+M2 from Python.

    # M2 with N labels (the rest hidden), then its test accuracy and bound:
    dgm train --dataset mnist --model m2 --labels 100 --out runs/m2-100 ...
    dgm eval runs/m2-100 --iw-samples 100
    # M1+M2: M2 on the posterior means of a trained VAE (M1) of the same data:
    dgm train --dataset mnist --hidden 600 600 --latent-dim 50 --out runs/m1 ...
    python benchmarks/semisupervised.py m1m2 runs/m1 --labels 100 --seconds 300 --out m1m2-100.json
    # a table of finished runs (their eval.json):
    python benchmarks/semisupervised.py table runs/m2-100 runs/m2-600 ...

M1+M2 follows Kingma et al. (arXiv 1406.5298): M1's q(z1|x) gives features (here the posterior
means of the test-time binarization: every split binarized once with the held-out seed), and
M2 models them with a Gaussian p(z1|y,z2). The labelled subset is drawn as ``--labels`` does.
"""

import argparse
import json
import time
from pathlib import Path

from dgmkit.api import Evaluation
from dgmkit.cli.common import posterior_means, run_data, split_data
from dgmkit.config import RunConfig, build_model, load_run, trainer_options
from dgmkit.data import Dataset, DataTransform, Split
from dgmkit.data.labels import keep_labels
from dgmkit.training import Trainer


def m1_features(vae_dir: str) -> Dataset:
    """The M1 run's posterior means of every split, as (N, 1, 1, M) continuous data with the labels."""
    run = load_run(vae_dir)
    data = run_data(run)
    splits = {}
    for name in ("train", "valid", "test"):
        x, y = split_data(run, name, dataset=data)
        splits[name] = Split(posterior_means(run, x)[:, None, None, :], y)
    return Dataset(f"m1-features:{vae_dir}", **splits, num_levels=None)


def train_m1m2(args: argparse.Namespace) -> dict:
    features = m1_features(args.vae)
    cfg = RunConfig.of(
        model="m2", likelihood="gaussian", hidden=args.hidden, latent_dim=args.latent_dim, labels=args.labels,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
        precision="fp32",
    )  # fmt: skip
    model = build_model(cfg, features.event_shape, None)
    train = keep_labels(features.train, args.labels, cfg.model.classes, args.seed)
    start = time.perf_counter()

    def stop_in_time(trainer: Trainer, m: dict) -> None:
        print(json.dumps({k: m[k] for k in ("epoch", "train_elbo", "valid_elbo", "valid_accuracy", "time_s")}), flush=True)
        if time.perf_counter() - start > args.seconds:
            trainer.epochs = trainer.epoch  # the loop ends after this epoch

    trainer = Trainer(
        model, cfg.model.training_objective(), train, DataTransform("continuous", None), valid=features.valid,
        progress=False, callbacks=[stop_in_time], **trainer_options(cfg),
    )  # fmt: skip
    history = trainer.fit()
    model.eval()
    test = features.test
    pred = model.predict(test.x.to(trainer.device)).cpu()
    acc = (pred == test.y).double().mean().item()
    return {
        "model": "m1+m2",
        "m1_run": args.vae,
        "labels": args.labels,
        "epochs": trainer.epoch,
        "seconds": time.perf_counter() - start,
        "valid_accuracy_last": history[-1]["valid_accuracy"],
        "test_accuracy": acc,
        "test_error_percent": 100 * (1 - acc),
        "weights": "the last epoch's",
        "config": cfg.to_dict(),
    }


def table(runs: list[str]) -> None:
    print(f"{'run':<28} {'labels':>7} {'epochs':>6} {'test error %':>12} {'NLL':>9} {'k':>5}")
    for r in runs:
        e = Evaluation(json.loads((Path(r) / "eval.json").read_text()))  # .accuracy: old or new record
        c = json.loads((Path(r) / "config.json").read_text())["config"]
        epochs = sum(1 for _ in open(Path(r) / "metrics.jsonl"))
        print(
            f"{r:<28} {str(c['data']['labels']):>7} {epochs:>6} {100 * (1 - e.accuracy):>12.2f} "
            f"{e['nll']:>9.3f} {e['iw_samples']:>5}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("m1m2", help="M2 on the posterior means of a VAE run (M1)")
    m.add_argument("vae")
    m.add_argument("--labels", type=int, default=100)
    m.add_argument("--hidden", type=int, nargs="+", default=[500])
    m.add_argument("--latent-dim", type=int, default=50)
    m.add_argument("--epochs", type=int, default=1000)
    m.add_argument("--seconds", type=float, default=300.0, help="stop after the epoch that passes this")
    m.add_argument("--batch-size", type=int, default=256)
    m.add_argument("--lr", type=float, default=1e-3)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--device", default="auto")
    m.add_argument("--out", required=True)
    t = sub.add_parser("table", help="a table of evaluated M2 runs")
    t.add_argument("runs", nargs="+")
    args = p.parse_args()
    if args.cmd == "table":
        table(args.runs)
        return
    result = train_m1m2(args)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "config"}))


if __name__ == "__main__":
    main()
