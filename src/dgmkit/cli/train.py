"""``dgm train``: train a model and write a run folder."""

import argparse
import json
import math
from pathlib import Path
from types import SimpleNamespace

import torch

from dgmkit._io import atomic_write_bytes, atomic_write_json
from dgmkit.cli.common import say
from dgmkit.config import CHOICES, RunConfig, build_model, build_objective, load_config_file
from dgmkit.config.run import read_json, run_record
from dgmkit.data import DATASETS, DataTransform, density_transform, load_dataset, make_transform
from dgmkit.errors import ConfigError
from dgmkit.evaluation import posterior_statistics
from dgmkit.models import PPCA
from dgmkit.training import Trainer, save_checkpoint
from dgmkit.training.trainer import VALID_SEED

__all__ = ["add_parser", "run_train", "train_run"]

# flag name -> config key, for flags that map one-to-one onto RunConfig keys
_FLAGS = {
    "dataset": str,
    "data_dir": str,
    "binarize": str,
    "model": str,
    "encoder": str,
    "decoder": str,
    "likelihood": str,
    "latent_dim": int,
    "activation": str,
    "prior": str,
    "posterior": str,
    "flow": str,
    "flow_layers": int,
    "flow_levels": int,
    "flow_blocks": int,
    "logit_alpha": float,
    "dequantization": str,
    "arm": str,
    "arm_layers": int,
    "arm_kernel": int,
    "made_masks": int,
    "prior_components": int,
    "latent": str,
    "latent_classes": int,
    "temperature": float,
    "temperature_min": float,
    "anneal_rate": float,
    "pseudo_init": str,
    "iw_k": int,
    "free_bits": float,
    "gaussian_variance": str,
    "gaussian_scale": float,
    "gaussian_min_scale": float,
    "logistic_components": int,
    "objective": str,
    "samples": int,
    "beta": float,
    "warmup": float,
    "epochs": int,
    "batch_size": int,
    "lr": float,
    "lr_schedule": str,
    "weight_decay": float,
    "grad_clip": float,
    "patience": int,
    "seed": int,
    "device": str,
    "precision": str,
    "iw_samples": int,
}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model and write a run folder",
        description="Train a model. A --config file (TOML or JSON) holds the same keys as the "
        "flags (with underscores); flags override it.",
    )
    p.add_argument("--config", help="TOML or JSON file of config keys")
    for name, typ in _FLAGS.items():
        choices = CHOICES.get(name)
        helptext = "one of: " + ", ".join(c for c in choices if c) if choices else None
        if name == "dataset":
            helptext = f"one of: {', '.join(sorted(DATASETS))}, or a .npy/.npz file"
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, metavar=name.upper(), help=helptext)
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden layer sizes, e.g. --hidden 512 256")
    p.add_argument(
        "--straight-through",
        dest="straight_through",
        action="store_true",
        default=None,
        help="gumbel-softmax: hard one-hot forward pass, relaxed gradient",
    )
    p.add_argument(
        "--made-random-order", dest="made_random_order", action="store_true", default=None, help="MADE: random input orders"
    )
    p.add_argument(
        "--made-direct", dest="made_direct", action="store_true", default=None, help="MADE: direct input-output connections"
    )
    p.add_argument(
        "--no-download", dest="download", action="store_false", default=None, help="never download missing data files"
    )
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=run_train)


def resolve_config(args: argparse.Namespace) -> RunConfig:
    values = load_config_file(args.config) if args.config else {}
    for name in [*_FLAGS, "hidden", "download", "straight_through", "made_random_order", "made_direct"]:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    return RunConfig.from_dict(values, source=args.config or "flags")


def latent_diagnostics(model, x) -> dict:
    """Per-epoch latent diagnostics: KL per dimension (when the prior factorizes) and active units."""
    stats = posterior_statistics(model, x)
    out = {"active_units": stats["active_units"]}
    if stats["kl_per_dim"] is not None:
        out["kl_per_dim"] = [round(v, 5) for v in stats["kl_per_dim"]]
    return out


def train_run(cfg: RunConfig, out: Path, resume: bool = False, quiet: bool = False, report_every: int = 1) -> Trainer:
    """Train ``cfg`` into the run folder ``out`` (or resume the run there), printing a line
    every ``report_every`` epochs."""
    dataset = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download)
    if cfg.model == "flow":
        transform = density_transform(dataset, variational=cfg.dequantization == "variational")
    else:
        transform = make_transform(cfg.likelihood, dataset, cfg.binarize)
    init_data = None
    if cfg.prior == "vampprior" and cfg.pseudo_init == "data" and not resume:
        init_data = transform(dataset.train.x, torch.Generator().manual_seed(cfg.seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the initial weights are part of what the seed repeats
        model = build_model(cfg, dataset.event_shape, dataset.num_levels, init_data)
    record = run_record(cfg, dataset, transform)
    num_dims = math.prod(dataset.event_shape)
    shift = num_dims * transform.log_volume  # nats of the integer data from nats of dequantized data

    def report(trainer, m):
        last = m["epoch"] == trainer.epochs or trainer.patience is not None and trainer.bad_epochs >= trainer.patience
        if quiet or (m["epoch"] % report_every and m["epoch"] != 1 and not last):
            return
        name = {"ae": "-log p(x|f(x))", "flow": "-log p(x)", "arm": "-log p(x)"}.get(cfg.model, "-ELBO")
        line = f"epoch {m['epoch']:>4}/{trainer.epochs}  train {name} {shift - m['train_elbo']:9.3f}"
        if "valid_elbo" in m:
            line += f"  valid {name} {shift - m['valid_elbo']:9.3f}"
            if cfg.model in ("flow", "arm"):
                line += f" ({(shift - m['valid_elbo']) / (num_dims * math.log(2)):.4f} bits/dim)"
            if "valid_kl" in m:
                line += f"  KL {m['valid_kl']:7.3f}"
            if "valid_active_units" in m:
                line += f"  AU {m['valid_active_units']:>3}"
        if cfg.model not in ("flow", "arm"):
            line += f"  beta {m['beta']:.2f}"
        line += f"  {m['time_s']:.1f}s"
        say(line)

    if cfg.model == "ppca":
        return _fit_ppca(cfg, dataset, transform, record, out)
    if cfg.model == "loglinear":
        return _fit_em(cfg, model, dataset, transform, record, out, quiet)
    trainer = Trainer(
        model,
        build_objective(cfg),
        dataset.train,
        transform,
        valid=dataset.valid,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_schedule=cfg.lr_schedule,
        weight_decay=cfg.weight_decay,
        grad_clip=cfg.grad_clip,
        patience=cfg.patience,
        beta=cfg.beta,
        warmup_epochs=cfg.warmup,
        seed=cfg.seed,
        device=cfg.device,
        precision=cfg.precision,
        run_dir=out,
        config=record,
        progress=not quiet,
        callbacks=[report],
        diagnostics=None if cfg.model in ("flow", "arm") else latent_diagnostics,
    )

    if resume:
        trainer.resume()
        say(f"resuming {out} after epoch {trainer.epoch}")
    else:
        atomic_write_json(out / "config.json", record)
    trainer.fit()
    return trainer


def _fit_ppca(cfg: RunConfig, dataset, transform, record: dict, out: Path) -> SimpleNamespace:
    """Closed-form maximum likelihood (Tipping & Bishop): no epochs, one exact fit."""
    g = torch.Generator().manual_seed(cfg.seed)
    x = transform(dataset.train.x, g)
    model = PPCA.fit(x, cfg.latent_dim)
    valid = transform(dataset.valid.x, torch.Generator().manual_seed(VALID_SEED))
    with torch.no_grad():
        fix = x[0].numel() * transform.log_volume  # per-datapoint nats of the integer data
        metrics = {
            "epoch": 1,
            "train_elbo": model.log_prob(x).mean().item() - fix,
            "valid_elbo": model.log_prob(valid).mean().item() - fix,
        }
    atomic_write_json(out / "config.json", record)
    atomic_write_bytes(out / "metrics.jsonl", (json.dumps(metrics) + "\n").encode())
    for name in ("checkpoint.safetensors", "best.safetensors"):
        save_checkpoint(out / name, model, record, trainer={"epoch": 1})
    say(
        f"fitted PPCA (M = {cfg.latent_dim}) in closed form: sigma^2 = {model.sigma2.item():.5f}; exact "
        f"log-likelihood {metrics['train_elbo']:.3f} (train), {metrics['valid_elbo']:.3f} (valid) nats"
    )
    return SimpleNamespace(epoch=1, best_valid=metrics["valid_elbo"], best_epoch=1)


def _fit_em(cfg: RunConfig, model, dataset, transform, record: dict, out: Path, quiet: bool) -> SimpleNamespace:
    """Expectation-maximization with exact E-steps: ``epochs`` iterations on the training split."""
    if transform.kind != "binary":
        raise ConfigError(f"the loglinear model needs binary data; {dataset.name} is {transform.kind} (try digits-4x4)")
    x, valid = transform(dataset.train.x), transform(dataset.valid.x)
    atomic_write_json(out / "config.json", record)
    lines, best = [], -math.inf
    for it in range(1, cfg.epochs + 1):
        before = model.em_step(x)
        with torch.no_grad():
            train_ll, valid_ll = model.log_prob(x).mean().item(), model.log_prob(valid).mean().item()
        m = {"epoch": it, "train_elbo": train_ll, "valid_elbo": valid_ll, "train_elbo_before_step": before}
        lines.append(json.dumps(m))
        atomic_write_bytes(out / "metrics.jsonl", ("\n".join(lines) + "\n").encode())
        save_checkpoint(out / "checkpoint.safetensors", model, record, trainer={"epoch": it})
        if valid_ll > best:
            best = valid_ll
            save_checkpoint(out / "best.safetensors", model, record, trainer={"epoch": it})
        if not quiet:
            say(f"EM iteration {it:>4}/{cfg.epochs}  train log p(x) {train_ll:9.4f}  valid log p(x) {valid_ll:9.4f}")
    best_epoch = max((json.loads(s) for s in lines), key=lambda m: m["valid_elbo"])["epoch"]
    return SimpleNamespace(epoch=cfg.epochs, best_valid=best, best_epoch=best_epoch)


def run_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.resume:
        if not (out / "checkpoint.safetensors").is_file():
            raise ConfigError(f"nothing to resume: {out} holds no checkpoint.safetensors")
        values = read_json(out / "config.json")["config"]
        if args.epochs is not None:
            values["epochs"] = args.epochs
        cfg = RunConfig.from_dict(values, source=str(out / "config.json"))
    else:
        cfg = resolve_config(args)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a folder")
        if (out / "checkpoint.safetensors").exists():
            raise ConfigError(f"{out} already holds a run; use --resume to continue it or choose another --out")
    trainer = train_run(cfg, out, resume=args.resume, quiet=args.quiet)
    data = read_json(out / "config.json")["data"]
    shift = (
        0.0
        if cfg.model == "ppca"
        else math.prod(data["event_shape"]) * DataTransform(data["transform"], data["num_levels"]).log_volume
    )
    what = {
        "ae": "reconstruction log-likelihood",
        "ppca": "log-likelihood",
        "loglinear": "log-likelihood",
        "flow": "log-likelihood",
        "arm": "log-likelihood",
    }
    best = trainer.best_valid - shift
    name = what.get(cfg.model, "ELBO")
    if cfg.dequantization == "variational":
        name = "log-likelihood bound (variational dequantization)"
    say(f"trained {trainer.epoch} epochs; best validation {name} {best:.3f} nats at epoch {trainer.best_epoch}")
    say(f"run folder: {out}  (evaluate with: dgm eval {out})")
    return 0
