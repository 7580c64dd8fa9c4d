"""Throughput and peak memory of a deep hierarchical VAE preset on this machine.

Builds the model of a preset (default: the very deep residual top-down VAE of
``configs/hvae-residual-cpu-hour.toml``) and measures, after a warm-up:

- training: images/s of Trainer steps (the preset's objective, batch size and optimizer
  options; ``--steps`` steps per round, median of ``--rounds``), no validation split;
- evaluation: images/s of the importance-sampled log-likelihood with ``--k`` draws per image
  (one top-down pass gives q, p and p(x|z)), on ``--eval-n`` images;
- memory: the process's peak resident set size (``ru_maxrss``) after each phase, and before the
  model was built, in MiB.

Data: static binarized MNIST from $DGMKIT_DATA or ../shared/data when present, else random
binary images of the same shape (said in the output).

    python benchmarks/deep_hvae_throughput.py [--config configs/hvae-residual-cpu-hour.toml] [--steps 20]
"""

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count, found_data_dir, machine  # noqa: E402

from dgmkit.config import RunConfig, build_model, load_config_file, trainer_options  # noqa: E402
from dgmkit.data import Dataset, Split, load_dataset  # noqa: E402
from dgmkit.errors import DgmError  # noqa: E402
from dgmkit.evaluation import importance_sampled_log_likelihood  # noqa: E402
from dgmkit.training import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "hvae-residual-cpu-hour.toml"))
    ap.add_argument("--steps", type=count, default=20, help="training steps per round")
    ap.add_argument("--rounds", type=count, default=3)
    ap.add_argument("--k", type=count, default=100, help="importance samples per image for the evaluation timing")
    ap.add_argument("--eval-n", type=count, default=20, help="images for the evaluation timing")
    args = ap.parse_args()
    base = peak_mib()
    try:
        cfg = RunConfig.of(**load_config_file(args.config))
    except DgmError as e:  # (no such file, a wrong value in it): dgmkit's words, not a traceback
        sys.exit(str(e))
    try:
        if (root := found_data_dir()) is None:
            raise DgmError("no data folder: DGMKIT_DATA unset and no ../shared/data")
        dataset = load_dataset(cfg.data.dataset, root)
        where = f"{cfg.data.dataset} from {root}"
    except DgmError as e:  # the benchmark runs anywhere; it says what it used
        x = (torch.rand(5000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.3).to(torch.uint8)
        dataset = Dataset("synthetic-binary", Split(x), Split(x[:500]), Split(x[:500]), 2)
        where = f"random binary images ({e})"
    family, o = cfg.model, cfg.optim
    transform = family.transform(dataset, cfg.data.binarize)
    model = build_model(cfg, dataset.event_shape, dataset.num_levels)
    if not getattr(model, "has_layers", False):  # (its layers are what the script reports)
        sys.exit(f'{args.config} builds {family.describe()}, not a hierarchical VAE (model = "hvae") of latent layers')
    objective = family.training_objective()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"# {Path(args.config).name}: {family.describe()}")
    print(f"# {n_params} parameters, {model.latent_dim} latent dimensions in {model.num_layers} layers")
    print(f"# {machine()}")
    print(f"# data: {where}")
    if len(dataset.train.x) < o.batch_size * args.steps:
        print(f"# --steps {args.steps}: the training split holds {len(dataset.train.x)} images; a round trains on them all")
    after_build = peak_mib()
    bs = o.batch_size
    sub = Split(dataset.train.x[: bs * args.steps])
    steps = -(-len(sub) // bs)  # (fewer than --steps where the training split holds fewer batches: said as run)
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds + 1):  # the first round warms up
            trainer = Trainer(  # the preset's settings as `dgm train` passes them, one epoch of the subset
                model,
                objective,
                sub,
                transform,
                run_dir=Path(tmp) / f"r{r}",
                progress=False,
                **trainer_options(cfg.replace(epochs=1, seed=r)),
            )
            t0 = time.perf_counter()
            trainer.fit()
            dt = time.perf_counter() - t0
            if r:
                rates.append(len(sub) / dt)
                print(f"round {r}: training {len(sub) / dt:.1f} images/s")
    train_peak = peak_mib()
    x = transform(dataset.test.x[: args.eval_n], torch.Generator().manual_seed(0))
    importance_sampled_log_likelihood(model, x[:2], k=args.k)  # warm-up
    t0 = time.perf_counter()
    importance_sampled_log_likelihood(model, x, k=args.k)
    dt = time.perf_counter() - t0
    eval_peak = peak_mib()
    rate = statistics.median(rates)
    print(f"training:   {rate:.1f} images/s (batch {bs}, median of {args.rounds} rounds of {steps} steps)")
    print(f"            {len(dataset.train.x) / rate / 60:.1f} min per epoch of {len(dataset.train.x)} images")
    print(f"evaluation: {len(x) / dt:.2f} images/s at k={args.k} ({len(x) * args.k / dt:.0f} posterior draws/s)")
    print(
        f"peak memory (RSS): {base:.0f} MiB before the model, {after_build:.0f} after building it, "
        f"{train_peak:.0f} after training, {eval_peak:.0f} after evaluation"
    )


if __name__ == "__main__":
    main()
