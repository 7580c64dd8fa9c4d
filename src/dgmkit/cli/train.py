"""``dgm train``: train a model and write a run folder.

The flags are derived from the settings: the data, optim and eval sections, and the chosen
family's fields (``--model NAME``; ``dgm train --model NAME --help`` lists them)."""

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import torch

from dgmkit import distributed
from dgmkit._io import Terminated, full_path, shell_path
from dgmkit.cli.common import (
    add_count_flag,
    data_dir_unread,
    estimate_words,
    fit_step,
    plural,
    say,
    score_label,
)
from dgmkit.cli.flags import add_settings_flags, given_values, reject_foreign
from dgmkit.cli.launch import ENDED, KEPT, lost_contact
from dgmkit.config import SECTIONS, RunConfig, build_model, load_config_file, migrate_record, run_record, trainer_options
from dgmkit.config.inputs import check_derived_current, run_dataset
from dgmkit.config.migrate import check_record
from dgmkit.config.run import (
    check_same_run,
    check_weights_fit,
    holds_recorded_data,
    in_checkpoint_precision,
    own_record,
    read_json,
)
from dgmkit.config.schema import FREE_ON_RESUME, MOVABLE, OWN_DATA_KEYS, RELOCATABLE
from dgmkit.data import Dataset, DataTransform
from dgmkit.data.dataset import SPLITS
from dgmkit.data.labels import HIDDEN, check_labels, check_shown_classes, keep_labels, labels_shown
from dgmkit.data.missing import check_missing_allowed, has_missing, never_observed_note
from dgmkit.data.registry import is_data_file
from dgmkit.data.table import describe_columns
from dgmkit.data.transforms import scores_densities
from dgmkit.devices import resolve_device
from dgmkit.errors import CheckpointError, ConfigError, DataError, DgmError
from dgmkit.families import DEFAULT_FAMILY, FAMILIES, get_family
from dgmkit.models import ClosedFormFit, EMFit
from dgmkit.training import (
    FitResult,
    KLWarmup,
    RunFolder,
    RunWriter,
    Trainer,
    fit_closed_form,
    fit_em,
    latent_diagnostics,
    load_checkpoint,
    trainer_result,
)
from dgmkit.training.checkpoint import read_metadata, record_of, trainer_counters
from dgmkit.training.data_parallel import check_rows_per_step, check_shares, rank_device
from dgmkit.training.tensorboard import check_log_dir

if TYPE_CHECKING:
    from dgmkit.training.tensorboard import TensorBoardLogger

__all__ = ["add_parser", "run_train", "train_run", "family_from_argv"]


def family_from_argv(argv: list[str]) -> str:
    """The family a ``dgm train`` command line is about, so that its flags can be offered:
    ``--model``, else the ``--config`` file's, else the resumed run's, else the default."""

    def value(flag: str) -> str | None:  # the last one given, as argparse keeps it
        found = None
        for i, a in enumerate(argv):
            if a == flag and i + 1 < len(argv):
                found = argv[i + 1]
            elif a.startswith(flag + "="):
                found = a.split("=", 1)[1]
        return found

    name: object = value("--model")
    try:
        if name is None and (config := value("--config")) is not None:
            model = load_config_file(config).get("model")
            name = model.get("name") if isinstance(model, dict) else model
        elif name is None and "--resume" in argv and (out := value("--out")) is not None:
            name = own_record(Path(out))["config"]["model"]["name"]
    except Exception:  # the real parse reports a bad file or folder with its own message
        pass
    return name if isinstance(name, str) and name else DEFAULT_FAMILY  # (a list or table there: the parse says so)


def _family_name(text: str) -> str:
    """--model's value: a registered family's name (else the error, with the closest name)."""
    try:
        return get_family(text).name
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(sub: argparse._SubParsersAction, family_name: str = DEFAULT_FAMILY) -> None:
    family = FAMILIES.get(family_name, FAMILIES[DEFAULT_FAMILY])
    listing = "\n".join(f"  {n:<10} {c.summary}" for n, c in FAMILIES.items())
    p = sub.add_parser(
        "train",
        help="train a model and write a run folder",
        description="Train a model. A --config file (TOML or JSON) holds the same keys as the flags "
        "(with underscores), flat or in [data], [optim], [eval] and [model] tables; flags override it.",
        epilog=f"models (--model NAME; `dgm train --model NAME --help` shows its settings):\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        type=_family_name,
        choices=list(FAMILIES),
        default=None,
        help=f"the model family (default {DEFAULT_FAMILY})",
    )
    p.add_argument("--config", help="TOML or JSON file of config keys")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out (flags may only extend it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    add_count_flag(
        p,
        "--nproc",
        1,
        1024,
        default=1,
        help="data-parallel training in N processes on this machine (runs torchrun; gloo on CPU, nccl on CUDA; default 1)",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log every epoch's metrics to OUT/tensorboard for TensorBoard (needs: pip install tensorboard)",
    )
    dests = []
    for name, cls in SECTIONS.items():
        dests += add_settings_flags(p.add_argument_group(name), cls)
    group = p.add_argument_group(f"model {family.name}: {family.summary}")
    dests += add_settings_flags(group, family, skip=family.unused_settings)
    own = set(dests)
    foreign: dict[str, list[str]] = {}
    for n, cls in FAMILIES.items():
        for f in dataclasses.fields(cls):
            if f.name not in own and f.name not in cls.unused_settings:
                foreign.setdefault(f.name, []).append(n)
    for dest in foreign:
        p.add_argument("--" + dest.replace("_", "-"), dest="_foreign_" + dest, nargs="*", help=argparse.SUPPRESS)
    p.set_defaults(func=run_train, _family=family.name, _dests=dests, _foreign=foreign)


def _config_table(args: argparse.Namespace) -> dict:
    """The --config file's table ({} without one), read once in a command: what is checked is what is used."""
    if not args.config:
        return {}
    if getattr(args, "_config_table", None) is None:
        args._config_table = load_config_file(args.config)
    return args._config_table


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The config file's keys, overridden by the flags given."""
    values, table = {}, _config_table(args)
    if args.config:  # the file is checked whole, flags or not: a wrong value in it is named with the file
        values = RunConfig.from_file(table, args.config).flat()
    if args.model is not None and args.model != values.get("model", args.model):
        raise ConfigError(f"--model {args.model} contradicts the config file's model {values['model']!r}")
    if args.model is None and values.get("model", args._family) != args._family:  # (its flags were offered by the first)
        raise ConfigError(
            f"{args.config} named the model {args._family!r} when the command was read, and now "
            f"{values['model']!r}: was it changed meanwhile? Run the command again"
        )
    given = given_values(args, args._dests)
    if args.config and given.get("codes_of"):  # a preset for a run on its own data, given another run's
        own = [k for k in RunConfig.given_keys(table, args.config) if k in OWN_DATA_KEYS]
        if own:
            raise ConfigError(
                f"--codes-of takes the data of another run, and {args.config} names data of the run's own "
                f"({', '.join(own)}): remove them from {args.config}, or choose a config made for a run on another "
                "run's data"
            )
    values.update(given)
    values["model"] = args._family
    return RunConfig.from_dict(values, source=args.config or "the command line")


def resumed_config(args: argparse.Namespace, out: Path) -> RunConfig:
    """The run's own config; flags (and a --config file) may only extend it (FREE_ON_RESUME)."""
    record = own_record(out)
    source = out / "config.json" if os.path.lexists(out / "config.json") else out / "checkpoint.safetensors"
    stored = check_record(record, str(source))  # (a bad value: named as the file's that holds it)
    last = out / "checkpoint.safetensors"
    # config.json edited since the checkpoint: said before the data it names are loaded (one deleted: taken from it)
    if last.is_file() and os.path.lexists(out / "config.json"):
        theirs = migrate_record(record_of(read_metadata(last), last), str(last))
        check_same_run(record, theirs, out / "config.json", last, FREE_ON_RESUME + MOVABLE)
    flags = given_values(args, args._dests)
    flat = stored.flat()
    asked = _resume_file_keys(args, flat)
    launcher = args.nproc > 1 and not distributed.launched_by_torchrun()  # (its rank 0 says it)
    # a preset's length, not the run's: said once the settings stand (a flag that sets one is plain)
    lengths = [k for k in ("epochs", "patience") if k in asked and k not in flags and asked[k] != flat.get(k)]
    asked.update(flags)
    if args.model is not None:
        asked["model"] = args.model
    moved = {}  # the run whose data this one takes, at a new folder: the same run with the same weights, which
    if flat.get("codes_of") and asked.get("codes_of"):  # check_derived_current checks by its id and digest
        moved["codes_of"] = str(full_path(asked.pop("codes_of")))
    named = asked.get("dataset")
    if named is not None and named != flat.get("dataset") and not is_data_file(str(named)):
        # (a named dataset is the same data under its own name alone: refused before it is loaded or downloaded)
        raise ConfigError(
            f"the data now differ from those {out} was trained on ({flat.get('dataset')}): --dataset {named} names "
            "other data; --resume needs the same data (train into a new --out for them)"
        )
    # its own data, moved: the same content, checked once they are read (refused there if it recorded no digest)
    moved.update({k: asked.pop(k) for k in RELOCATABLE if k in asked and asked[k] != flat.get(k)})
    if any(k not in flat for k in asked):
        RunConfig.from_dict({**flat, **asked}, args.config or "the command line")  # names the key that is not the run's
    clash = [k for k, v in asked.items() if k not in FREE_ON_RESUME and flat.get(k) != v]
    if clash:
        shown = ", ".join(f"{k} = {asked[k]!r} (the run has {flat.get(k)!r})" for k in clash)
        raise ConfigError(
            f"--resume continues {out} as it was configured; these contradict it: {shown}. "
            f"Only {', '.join(FREE_ON_RESUME)} may change (and where the data are read from, the same data); train "
            "into a new --out for other settings"
        )
    # a value equal to the run's of another type (0.0, true) is refused here
    RunConfig.from_dict({**flat, **asked}, args.config or "the command line")
    done = (trainer_counters(last) or {}).get("epoch", 0) if lengths and last.is_file() else 0
    for k in lengths if distributed.current().is_main and not launcher else []:
        if k != "epochs" or asked[k] >= done:  # (fewer than it trained: refused where the checkpoint is read)
            say(f"note: {args.config} sets {k} = {asked[k]} (the run had {flat.get(k)}): the resumed run goes on with it")
    return stored.resumed({**{k: v for k, v in asked.items() if k in FREE_ON_RESUME}, **moved})


def _resume_file_keys(args: argparse.Namespace, flat: dict) -> dict:
    """The keys that the --config file gives a resume ({} without one), checked over the run's settings ``flat``
    and named with the file where one is wrong, flags or not, as a new run's file is (``resolve_config``); a file
    of another family is refused by the resume's own words (it contradicts the run)."""
    if not args.config:
        return {}
    asked = RunConfig.given_keys(_config_table(args), args.config)
    if asked.get("model", flat["model"]) == flat["model"]:
        RunConfig.from_file({**flat, **asked}, args.config)
    return asked


def _paced(cfg: RunConfig, m: dict) -> str:
    """What --train-for chose after the first epoch (its metrics ``m``)."""
    n, pace = m["paced_epochs"], f"({m['paced_epoch_s']:.3g} s an epoch, {m['paced_warmup_s']:.3g} s of warm-up)"
    said = (
        f"the run's {plural(n, 'epoch')} fit in them at the first epoch's pace {pace}"
        if n == cfg.optim.epochs
        else f"{plural(n, 'epoch')} at the first epoch's pace {pace}; the run's epochs are {n}"
    )
    return f"--train-for {cfg.optim.train_for:g} s: {said}"


def _reporter(
    cfg: RunConfig,
    num_dims: float,
    shift: float,
    label: str,
    score: str,
    quiet: bool,
    report_every: int,
    continuous: bool = False,
):
    """Prints one line per epoch (every ``report_every``) in nats of the stored data (bits/dim
    too for discrete data: a continuous density has none that compare)."""
    bpd = score in ("log_px", "bound") and not continuous
    weighted = any(isinstance(p, KLWarmup) for p in cfg.model.training_parts())

    def report(fit: Trainer | FitResult, m: dict) -> None:
        if "paced_epochs" in m:  # said even when quiet: it sets the run's length
            say(_paced(cfg, m))
            lowered = m["paced_epochs"] < cfg.optim.epochs  # (a warm-up longer than --epochs was said at the start)
            if lowered and isinstance(fit, Trainer) and fit.beta > 0 and fit.warmup_epochs > fit.epochs:
                say(f"note: {_warm_up_unfinished(fit)}")
        patience = getattr(fit, "patience", None)
        last = m["epoch"] == fit.epochs or (patience is not None and cast(Trainer, fit).bad_epochs >= patience)
        if quiet or (m["epoch"] % report_every and m["epoch"] != 1 and not last):
            return
        step = fit_step(cfg)
        line = f"{step} {m['epoch']:>4}/{fit.epochs}  train -{label} {shift - m[f'train_{score}']:9.3f}"
        if f"valid_{score}" in m:
            value = shift - m[f"valid_{score}"]
            line += f"  valid -{label} {value:9.3f}"
            if bpd:
                line += f" ({value / (num_dims * math.log(2)):.4f} bits/dim)"
            if score != "elbo" and "valid_elbo" in m:  # the bound people compare, beside what is optimised
                line += f"  valid -ELBO {shift - m['valid_elbo']:9.3f}"
        if "valid_kl" in m:
            line += f"  KL {m['valid_kl']:7.3f}"
        if "valid_mmd" in m:  # (a WAE's penalty: its batches' unbiased MMD^2, which can dip below 0)
            line += f"  MMD^2 {m['valid_mmd']:.4f}"
        if "valid_accuracy" in m:  # on every validation label (reported only; never used for stopping)
            line += f"  valid acc {100 * m['valid_accuracy']:6.2f}%"
        if "valid_active_units" in m:
            line += f"  AU {m['valid_active_units']:>3}"
        if weighted:
            line += f"  beta {m['beta']:.2f}"
        if "skipped_steps" in m:  # updates skipped for their gradient norm (--skip-grad-norm, --skip-grad-factor)
            line += f"  skipped {m['skipped_steps']}" + (f"/{m['steps']}" if "steps" in m else "")
        line += f"  {m['time_s']:.1f}s"
        say(line)

    return report


@torch.inference_mode(False)  # (a Python caller within torch.no_grad() or inference_mode: a run still trains)
@torch.enable_grad()
def train_run(
    cfg: RunConfig,
    out: Path,
    resume: bool = False,
    quiet: bool = False,
    report_every: int = 1,
    tensorboard: bool = False,
    restart: bool = False,
    resume_line: bool = True,
    sources: tuple[str | None, Collection[str], Collection[str]] = (None, (), ()),
) -> FitResult:
    """Fit ``cfg`` into the run folder ``out`` (or resume the run there), printing a line
    every ``report_every`` epochs (and logging to ``out/tensorboard`` with ``tensorboard``). A
    fresh run needs a new or empty folder; the folder is locked while the run is written.
    ``restart``: a fresh run in place of one that stopped before its first checkpoint;
    ``resume_line``: say where a resumed run goes on from (``dgm train`` does, even with
    --quiet); ``sources``: where a new run's settings came from (the config file, the keys the command
    line gave and those the file gave: ``RunConfig.check_inert``), said where its data leave one unread."""
    _check_fit_flags(cfg, resume, tensorboard, restart)
    if tensorboard and resume:  # a resumed run's log folder, refused before an epoch is trained (not after)
        check_log_dir(out / "tensorboard")
    cfg, dataset = _run_data(cfg, out, resume)
    read_off = cfg.model.settings_from_data(dataset)  # e.g. the heads a table's columns need
    if read_off:
        cfg = cfg.replace(**read_off)
    if not (resume or restart):  # what the model built for these data leaves unread (an image flow's activation)
        cfg.check_inert(*sources, event_shape=dataset.event_shape, num_levels=dataset.num_levels)
        cfg.model.check_new_run(cfg.optim)
    family = cfg.model
    transform = _data_transform(cfg, dataset)
    if not resume:  # (a run that trained on one goes on as it began)
        _check_no_constant_column(dataset)
        _check_every_class_seen(cfg, dataset)
        if dataset.columns and not quiet and distributed.current().is_main:
            columns = plural(len(dataset.columns), "column")
            say(f"{dataset.name}: {columns}{_kinds_source(cfg)}: {describe_columns(dataset.columns)}")
    init_data = None
    if family.needs_init_data and not resume:
        init_data = transform(dataset.train.x, torch.Generator().manual_seed(cfg.optim.seed))
    # the run's checkpoint bounds the model config.json describes (before it is built)
    state = _check_resumed_fit(cfg, dataset, out) if resume else None
    model = build_model(cfg, dataset.event_shape, dataset.num_levels, init_data)
    if state is not None:  # a resumed run of a model made float64 from Python goes on in float64
        model = in_checkpoint_precision(model, state)
        del state  # (Trainer.resume reads the tensors again)
    fitted = _with_kept_labels(cfg, dataset)
    main = distributed.current().is_main
    for note in _data_notes(cfg, dataset) if not (resume or quiet) and main else []:  # (once --labels is checked)
        say(f"note: {note}")
    with RunFolder(out, fresh=not resume, restart=restart) if main else contextlib.nullcontext():
        run_id, digest, own = _resumable_run_id(cfg, out, dataset, transform) if resume else (None, None, None)
        record = _record_written(cfg, dataset, transform, resume, run_id, digest)  # of the data as they are, all labels
        writer = RunWriter(out, record)
        lost = own is not None and not os.path.lexists(out / "config.json")  # (read from checkpoint.safetensors)
        if own is not None and main and (_moved(record, own) or lost):
            writer.start()  # the new place (pinned above): recorded now, whether or not an epoch trains
            if lost and resume_line:
                say(f"note: {out / 'config.json'} was missing; written again from the record in checkpoint.safetensors")
        if resume and not tensorboard and resume_line and main and (out / "tensorboard").is_dir():  # (said once it goes on)
            log = out / "tensorboard"
            say(f"note: {log} holds the run's TensorBoard log; resumed without --tensorboard, it logs no more epochs")
        return _fit(cfg, model, fitted, transform, writer, resume, quiet, report_every, tensorboard, resume_line)


def _check_fit_flags(cfg: RunConfig, resume: bool, tensorboard: bool, restart: bool = False) -> None:
    """What the family's way of fitting and this process refuse, before any work (``restart``: a
    run stopped before its first checkpoint, started again from its own record)."""
    family = cfg.model
    if tensorboard:
        if family.fit == "closed-form":
            raise ConfigError(f"--tensorboard: the {family.name} model is fitted in closed form; it has no epochs to log")
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:  # refused before any work, not after an epoch
            raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard")
    if distributed.current().parallel and family.fit != "gradient":
        raise ConfigError(f"the {family.name} model is fitted {family.fit == 'em' and 'by EM' or 'in closed form'} in one "
                          "process; data-parallel training (torchrun, --nproc) is for gradient training")  # fmt: skip
    if resume and family.fit != "gradient":
        raise ConfigError(f"nothing to resume: the {family.name} model is fitted in one go; fit it into a new --out")
    sampled = family.default_iw_samples > 0 and not family.point_mass_posterior  # (one draw of a point mass: inert)
    if not resume and cfg.eval.iw_samples == 0 and sampled:  # (a new run's check: as lr_min's)
        raise ConfigError(
            f"iw_samples 0: the {family.name} model's log p(x) is estimated by sampling (its default k is "
            f"{family.default_iw_samples}); give 1 or more (k = 1 is the ELBO)"
        )
    if not (resume or restart):  # (a run's own record trains as it was recorded)
        cfg.check_inert()
    o = cfg.optim
    if not resume and o.lr_min > o.lr:  # (the floor would be the learning rate of every epoch, above the one asked for)
        # a new run's check, not RunConfig's: a run recorded with such a floor trained at it, and still loads and resumes
        raise ConfigError(f"lr_min {o.lr_min:g} is above lr {o.lr:g}: the learning rate falls to lr_min, never below it")


def _with_full_paths(cfg: RunConfig, keys: Collection[str] = ("codes_of", "dataset", "data_dir", "schema")) -> RunConfig:
    """A run's source run (--codes-of), data file and data folder (of ``keys``) by their full
    paths, wherever the run is used from (a fresh run's, or a new place of a resumed run's data)."""
    if cfg.data.codes_of and "codes_of" in keys:
        cfg = cfg.replace(codes_of=str(full_path(cfg.data.codes_of)))
    for key in [k for k in ("dataset", "data_dir", "schema") if k in keys]:
        value = getattr(cfg.data, key)
        if value is None or (key == "dataset" and not is_data_file(value)):
            continue
        try:  # a file keeps its own name (a link's, whose suffix says its format, as in load_dataset)
            full = Path(value).expanduser()
            full = full.resolve() if key == "data_dir" else full.parent.resolve() / full.name
            cfg = cfg.replace(**{key: str(full)})
        except (RuntimeError, OSError, ValueError):  # ~user of an unknown user, a NUL byte...: the loader says it
            pass
    return cfg


def _check_no_constant_column(dataset: Dataset) -> None:
    """Refuses (DataError) a table's numeric column that holds one value in every row: its density
    grows without bound as the model's scale for it shrinks (a flow's), or up to a floor of that
    scale (a VAE's), a log-likelihood of no data that swamps the others'."""
    rows = torch.cat([dataset.split(s).x.reshape(len(dataset.split(s).x), -1).double() for s in SPLITS])
    for j, c in enumerate(dataset.columns):
        seen = rows[:, j][~torch.isnan(rows[:, j])]
        if c.kind == "numeric" and len(seen) and bool((seen == seen[0]).all()):
            value = float(seen[0]) * c.std + c.mean
            raise DataError(
                f"{dataset.name}: column {c.name!r} holds one value, {value:g}, in every row: a density of continuous "
                "values on it grows without bound (or to the floor of its scale), a log-likelihood of no data; leave the "
                "column out (or, with --likelihood mixed, name it categorical in a --schema: one category, probability 1)"
            )


def _kinds_source(cfg: RunConfig) -> str:
    """Where a table's column kinds come from: a schema, the file's values, or the bundled table."""
    if cfg.data.schema:
        return f" (kinds from {Path(cfg.data.schema).name})"
    return " (kinds inferred; --schema FILE.json names them)" if is_data_file(cfg.data.dataset) else ""


def _data_transform(cfg: RunConfig, dataset: Dataset) -> DataTransform:
    """The family's transform of ``dataset``, checked against what the family trains on (missing
    entries, another run's code indices, dequantized data)."""
    family = cfg.model
    objective = family.training_objective() if family.fit == "gradient" else None
    what = f"{family.describe()}" + (f" trained by the {objective.label}" if objective is not None else "")
    removed = f"--missing-rate {cfg.data.missing_rate:g}" if cfg.data.missing_rate else None
    # (a model fitted in closed form or by EM may score incomplete data yet need complete data to be fitted: not PPCA)
    cannot = "score incomplete data" if objective is not None else f"be fitted ({family.fit}) to incomplete data"
    takes = objective.handles_missing if objective is not None else family.fits_incomplete
    check_missing_allowed(dataset, takes, what, removed, cannot)
    scores_integers = (
        "(--likelihood categorical or logistic)"
        if family.has_setting("likelihood")
        else f"(the {family.name} model does not: --model arm, or a VAE family, with --likelihood categorical or logistic)"
    )
    codes_refused = ConfigError(
        f"--codes-of: code indices are integers 0..{(dataset.num_levels or 2) - 1}; model them with a family that "
        f"scores integers {scores_integers}"
    )
    codes = cfg.data.codes_of is not None and dataset.num_levels is not None  # integers made by another run
    try:
        transform = family.transform(dataset, cfg.data.binarize)
    except DataError:
        if codes:
            raise codes_refused from None
        raise
    if codes and transform.kind != "integers":
        raise codes_refused
    if transform.kind == "dequantize" and has_missing(dataset):  # its D log L shift counts every entry
        raise DataError(
            f"{dataset.name} has missing entries: model quantized data with missing entries by a discrete likelihood "
            "(--likelihood bernoulli, categorical or logistic), not a density of dequantized values"
        )
    return transform


class _Labelled(Protocol):
    """A family with ``uses_labels`` (M2, the hybrid flow): its number of classes."""

    classes: int


def _data_notes(cfg: RunConfig, dataset: Dataset) -> list[str]:
    """The family's notes on the data (``data_notes``); for a family trained on labels, of data that
    hide some (-1: a partly labelled data file), how many labels training is shown; for one trained
    by gradient on incomplete data, the entries no training row observes (PPCA refuses them)."""
    y = dataset.train.y
    hidden = 0 if y is None or not cfg.model.uses_labels else int((~labels_shown(y)).sum())
    notes = []
    if hidden:
        assert y is not None
        kept = f", of which --labels {cfg.data.labels} are kept" if cfg.data.labels is not None else ""
        notes.append(
            f"the training split of {dataset.name} shows {len(y) - hidden} labels of its {len(y)} rows{kept}; the "
            f"{hidden} rows whose label is hidden ({HIDDEN}) are trained on as unlabelled"
        )
    never = never_observed_note(dataset) if cfg.model.fit == "gradient" else None
    return [*notes, *([never] if never else []), *cfg.model.data_notes(dataset)]


def _check_every_class_seen(cfg: RunConfig, dataset: Dataset) -> None:
    """A new run of a family trained on labels: each of its --classes has an example among the
    training split's labels (before --labels hides any), else it is refused (``check_shown_classes``).
    Labels outside the classes are refused first, by ``check_labels`` (labels 1..K left class 0
    empty, and the refusal named that rather than the labels' range)."""
    if not cfg.model.uses_labels or dataset.train.y is None:
        return
    classes = cast(_Labelled, cfg.model).classes
    y = check_labels(dataset.train, classes, f"the training split of {dataset.name}", hidden=True)
    check_shown_classes(y, classes, f"the training split of {dataset.name}", "--classes")


def _with_kept_labels(cfg: RunConfig, dataset: Dataset) -> Dataset:
    """For families trained on labels: the training split with ``cfg.data.labels`` labels kept
    (balanced over the classes, drawn with ``labels_seed``, else the run's seed: the same on
    --resume) and the others hidden (-1); validation keeps all its labels, for the accuracy it
    reports. A partly labelled data file's hidden labels (-1) stay hidden: its rows are unlabelled,
    and --labels N draws from the labels it shows."""
    if not cfg.model.uses_labels:
        return dataset
    classes = cast(_Labelled, cfg.model).classes
    if dataset.columns and dataset.valid.y is None:  # (a named UCI table has its class labels)
        raise DataError(
            f"{dataset.name} is a table: every column is a feature that the model scores, none a label, and the "
            f"{cfg.model.name} model is trained on labels (give the rows as a .npz file of x and the labels y)"
        )
    if all(dataset.split(s).y is None for s in SPLITS):  # (not "the validation split has none", as if the others had)
        source = cfg.data.codes_of
        raise DataError(
            f"{f'the data of {source}' if source else dataset.name} have no labels in any split, and the "
            f"{cfg.model.name} model is trained on labels"
            + (" (a run's latents carry the labels of its data, and its data have none)" if source else "")
        )
    # (a partly labelled data file hides labels, -1, in any split: validation's accuracy is of the labels it shows)
    check_labels(dataset.valid, classes, "the validation split", hidden=True)
    if dataset.test.y is not None:  # (dgm eval's accuracy counted a test label beyond the classes as an error)
        check_labels(dataset.test, classes, "the test split", hidden=True)
    seed = cfg.optim.seed if cfg.data.labels_seed is None else cfg.data.labels_seed
    train = keep_labels(dataset.train, cfg.data.labels, classes, seed)
    return dataclasses.replace(dataset, train=train)


def _check_resumed_fit(cfg: RunConfig, dataset: Dataset, out: Path) -> dict:
    """The resumed run's checkpoint's model tensors, checked to be the model its config.json
    describes (before it is built; let go once its precision is read, Trainer.resume reads them
    again)."""
    last = out / "checkpoint.safetensors"
    state = load_checkpoint(last)["model"]
    check_weights_fit(cfg, dataset.event_shape, dataset.num_levels, state, last, str(out / "config.json"))
    return state


def _run_data(cfg: RunConfig, out: Path, resume: bool) -> tuple[RunConfig, Dataset]:
    """The run's config with the places it reads by their full paths, and its data; a resumed
    run's with the units it kept of another run's latents, and checked against the shape it
    recorded (they may be read from another place, named now: only that one is made full, the
    places the run recorded stay as they were written)."""
    if not resume:
        cfg = _with_full_paths(cfg)
        return cfg, run_dataset(cfg.data, cfg.data.data_dir)  # (given now: refused where a source run's data read none)
    own = own_record(out)
    was = own["data"]
    placed = [k for k in RELOCATABLE if getattr(cfg.data, k) != own["config"]["data"].get(k)]
    cfg = _with_full_paths(cfg, placed)
    placed = [k for k in placed if getattr(cfg.data, k) != own["config"]["data"].get(k)]  # (full: the same place?)
    if "data_dir" in placed and not cfg.data.reads_folder:  # (a new run's is refused by check_inert)
        raise ConfigError(data_dir_unread(cfg.data, out, "--dataset"))
    if placed and was.get("sha256") is None:
        why = "its data are another run's codes" if cfg.data.codes_of else "it was written by an older dgmkit"
        raise ConfigError(
            f"{out} recorded no content digest of its data ({why}), so --resume cannot tell that data read from "
            f"another place ({', '.join(placed)}) are the same: put them back where the run had them"
        )
    dataset = run_dataset(cfg.data, cfg.data.data_dir if "data_dir" in placed else None, units=was.get("units"))
    _check_resumed_data(dataset, out, was)
    return cfg, dataset


def _moved(record: dict, own: dict) -> bool:
    """Whether a resumed run reads its data, or another run's, from a new place (``record``, the
    run's record now; ``own``, config.json's)."""
    now, was = record["config"]["data"], own["config"]["data"]
    return any(now.get(k) != was.get(k) for k in (*MOVABLE, *RELOCATABLE))


def _check_resumed_data(dataset: Dataset, out: Path, was: dict) -> None:
    """Data of a resumed run (``was``: its record's data), which may be read from another place,
    must at least be of the run's shape and levels before anything is made of them (their content
    digest is compared once the run's records are read under its lock)."""
    now = {"event_shape": list(dataset.event_shape), "num_levels": dataset.num_levels}
    if any(was.get(k) != v for k, v in now.items()):
        raise CheckpointError(
            f"the data now differ from those {out} was trained on ({dataset.name}: rows of shape "
            f"{tuple(dataset.event_shape)} of {dataset.num_levels} levels; the run's {tuple(was.get('event_shape') or ())} "
            f"of {was.get('num_levels')}): --resume needs the same data"
        )


def _record_written(
    cfg: RunConfig, dataset: Dataset, transform: DataTransform, resume: bool, run_id: str | None, digest: str | None
) -> dict:
    """The record the run writes (``run_record``'s); a resumed run recorded before run ids (dgmkit 0.1, run format 1)
    goes on without one, as its checkpoints have none: a new id was refused as another run's, and would make its
    best.safetensors another run's where validation does not improve."""
    record = run_record(cfg, dataset, transform, run_id, digest)
    return {**record, "run_id": None} if resume and run_id is None else record


def _resumable_run_id(
    cfg: RunConfig, out: Path, dataset: Dataset, transform: DataTransform
) -> tuple[str | None, str | None, dict]:
    """The run id of the run in ``out``, once its config.json, its checkpoints and the data
    agree that ``cfg`` continues it (under the folder's lock); the data digest to record: the
    run's own where it pinned the data in an older form (generated data by their content, a table
    by its standardized values alone; ``holds_recorded_data``), else the data's fingerprint (taken
    once here: a digest of every split); and its config.json's record as read."""
    own = own_record(out)
    check_derived_current(dataset, cfg.data, own, out)  # data made by another run: still the ones it was trained on
    recorded, now = own["data"].get("sha256"), dataset.fingerprint()
    digest = recorded if recorded not in (None, now) and holds_recorded_data(dataset, recorded) else now
    for name in ("checkpoint.safetensors", "best.safetensors"):
        if (out / name).is_file():
            record = migrate_record(load_checkpoint(out / name)["config"], str(out / name))
            check_same_run(own, record, out / "config.json", out / name, FREE_ON_RESUME + MOVABLE)
    check_same_run(
        own,
        _record_written(cfg, dataset, transform, True, own.get("run_id"), digest),
        out / "config.json",
        Path("the data and flags"),
        FREE_ON_RESUME + MOVABLE,
        fresh=True,
    )
    return own.get("run_id"), digest, own


class _LazyTensorBoard:
    """A callback that logs to ``run_dir/tensorboard`` from its first call on (a fresh run's folder
    must be empty until the run writes it); nothing where ``enabled`` is false."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.run_dir, self.enabled = run_dir, enabled
        self.logger: TensorBoardLogger | None = None

    def __call__(self, fit: object, m: dict) -> None:
        if self.enabled and self.logger is None:
            from dgmkit.training.tensorboard import TensorBoardLogger

            self.logger = TensorBoardLogger(self.run_dir / "tensorboard")
        if self.logger is not None:
            self.logger(fit, m)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()


def _fit(
    cfg: RunConfig,
    model: torch.nn.Module,
    dataset: Dataset,
    transform: DataTransform,
    writer: RunWriter,
    resume: bool,
    quiet: bool,
    report_every: int,
    tensorboard: bool = False,
    resume_line: bool = True,
) -> FitResult:
    family, out = cfg.model, writer.run_dir
    log = _LazyTensorBoard(out, tensorboard)
    num_dims: float = math.prod(dataset.event_shape)
    shift = num_dims * transform.log_volume  # nats of the integer data from nats of dequantized data
    continuous = scores_densities(transform.kind, family)
    valid_x = dataset.valid.x
    if valid_x.is_floating_point() and bool(torch.isnan(valid_x).any()):  # log p(x_o): bits per observed entry
        num_dims = (~torch.isnan(valid_x)).flatten(1).sum(1).double().mean().item()
    if family.fit != "gradient":
        label = score_label("log p(x)", transform.kind)
        report = _reporter(cfg, num_dims, shift, label, "log_px", quiet, report_every, continuous)
        try:
            return _fit_in_one_go(cfg, model, dataset, transform, writer, [report, log], quiet, shift)
        finally:
            log.close()
    objective = family.training_objective()
    label = score_label(objective.label, transform.kind)
    if not resume and distributed.current().is_main:
        writer.start()  # before the Trainer (building it can take seconds): a run stopped meanwhile can be restarted
    trainer = Trainer(
        model,
        objective,
        dataset.train,
        transform,
        valid=dataset.valid,
        run_dir=out,
        config=writer.record,
        progress=not quiet,
        callbacks=[_reporter(cfg, num_dims, shift, label, objective.score, quiet, report_every, continuous), log],
        diagnostics=latent_diagnostics if model.has_latents else None,
        **trainer_options(cfg),
    )
    trainer.resume_command = _go_on(out)
    _start(trainer, cfg, out, resume, quiet, resume_line)
    try:
        trainer.fit()
    finally:
        log.close()
    if trainer.budget_spent:
        k, steps = trainer.steps_into_epoch, trainer.steps_per_epoch
        where = f"in epoch {trainer.epoch + 1} after step {k} of {steps}" if k else f"after epoch {trainer.epoch}"
        say(f"stopped by --time-budget ({cfg.optim.time_budget:g} s) {where}, with a checkpoint; go on with: {_go_on(out)}")
    return trainer_result(trainer, objective)


def _fit_in_one_go(
    cfg: RunConfig,
    model: torch.nn.Module,
    dataset: Dataset,
    transform: DataTransform,
    writer: RunWriter,
    callbacks: list,
    quiet: bool,
    shift: float,
) -> FitResult:
    """A family fitted in closed form or by EM (no gradient steps, no resume)."""
    family = cfg.model
    writer.start()
    if family.fit == "closed-form":
        result = fit_closed_form(cast(ClosedFormFit, model), dataset.train, dataset.valid, transform, writer, cfg.optim.seed)
        if not quiet:
            nats = result.best_valid - shift
            what = estimate_words("exact", transform.kind)  # of dequantized integers: a one-draw bound, as dgm eval says
            say(f"fitted {family.describe()} {result.how}: log-likelihood {nats:.3f} nats (valid; {what})")
        return result
    return fit_em(
        cast(EMFit, model), dataset.train, dataset.valid, transform, writer, cast(int, family.iterations), cfg.optim.seed,
        callbacks=callbacks,
    )  # fmt: skip


def _start(trainer: Trainer, cfg: RunConfig, out: Path, resume: bool, quiet: bool, resume_line: bool) -> None:
    """The checkpoint read where the run resumes, and the lines that say how the run trains (or,
    resumed with nothing left to train, that it trains none)."""
    left = True  # whether any step remains
    if resume:
        # (the checkpoint's record: config.json may have been written again already, with this resume's settings)
        last = out / "checkpoint.safetensors"
        compiled_before = migrate_record(record_of(read_metadata(last), last), str(last))["config"]["optim"].get("compile")
        trainer.resume()  # config.json is rewritten (with what FREE_ON_RESUME lets change) with the next epoch
        k = trainer.steps_into_epoch
        if resume_line:
            where = f"in epoch {trainer.epoch + 1} after step {k}" if k else f"after epoch {trainer.epoch}"
            say(f"resuming {out} {where}")
        # (within an epoch, k > 0, the run has not stopped early; --epochs as many as it finished ends before it)
        left = trainer.epoch < trainer.epochs and not trainer.stopped_early
        if trainer.dist.is_main:
            for why in _inexact_resume(trainer, bool(cfg.optim.compile or compiled_before is True)) if left else []:
                say(f"note: {why}")  # (of the steps to come: none, none said)
            if k and not left:
                say(
                    f"note: the run stopped within epoch {trainer.epoch + 1}, beyond its {plural(trainer.epochs, 'epoch')}"
                    f": it trains none; --epochs {trainer.epoch + 1} or more finishes that epoch"
                )
            elif trainer.stopped_early:  # (--epochs more would train none)
                more = " with a larger --epochs" if trainer.epoch >= trainer.epochs else ""
                say(
                    f"note: the run stopped early after epoch {trainer.epoch} ({trainer.bad_epochs} without improvement, "
                    f"its patience {trainer.patience}): it trains no more epochs; a larger --patience{more} lets it go on"
                )
            elif not left:
                say(f"note: the run has trained all its {plural(trainer.epochs, 'epoch')}: a larger --epochs extends it")
    if left and trainer.dist.is_main and trainer.beta > 0 and trainer.warmup_epochs > trainer.epochs:
        say(f"note: {_warm_up_unfinished(trainer)}")
    precision = trainer.amp.describe()  # on CUDA: the precision it trains in, and why (a warning even if quiet)
    if precision is not None and trainer.dist.is_main and (not quiet or trainer.amp.unchecked):
        say(precision)
    if trainer.dist.parallel and trainer.dist.is_main and left:  # (a script's other ranks print, under dgmkit.train)
        say(
            f"data-parallel: {trainer.dist.world_size} processes share each batch of {cfg.optim.batch_size} "
            f"(gradients averaged through {trainer.gradient_transport})"
        )


def _warm_up_unfinished(trainer: Trainer) -> str:
    """What a KL warm-up longer than the run's epochs leaves: the weight it ends at (it trained silently at a
    fraction of --beta before)."""
    reached = trainer.beta * trainer.epochs / trainer.warmup_epochs
    return (
        f"the KL warm-up of {trainer.warmup_epochs:g} epochs is longer than the run's {plural(trainer.epochs, 'epoch')}: "
        f"the KL weight ends at {reached:.3g}, not --beta {trainer.beta:g} (the ELBO reported weighs the KL by 1); "
        f"--resume with --epochs {math.ceil(trainer.warmup_epochs)} or more finishes it"
    )


def _inexact_resume(trainer: Trainer, compiled: bool) -> list[str]:
    """Why a resumed run goes on as a run of the same settings, not bit for bit: what changed
    since its checkpoint (CPU threads, processes, the kind of device) or a compiled step."""
    said = []
    threads, processes = trainer.threads_moved, trainer.processes_moved  # (both changed: each note names both remedies)
    if threads is not None:
        before, now = threads
        also = f" and resume with --nproc {processes[0]}" if processes is not None else ""
        said.append(
            f"the run trained with {plural(before, 'CPU thread')} and goes on with {now}: the CPU's kernels add in "
            f"another order, so it continues up to rounding, not bit for bit (set OMP_NUM_THREADS={before} or "
            f"torch.set_num_threads({before}){also} to continue exactly)"
        )
    if processes is not None:
        before, now = processes
        also = f" with OMP_NUM_THREADS={threads[0]}" if threads is not None else ""
        said.append(
            f"the run trained in {plural(before, 'process', 'processes')} and goes on in {now}: the ranks' random draws "
            "and the order in which their gradients add are not the same, so it continues as a run of the same "
            f"settings, not bit for bit (resume with --nproc {before}{also} to continue exactly)"
        )
    if compiled:
        said.append(
            "a compiled run resumes with an eager first step (or eager steps, without --compile now), whose random "
            "draws and rounding are not the compiled step's: it continues as a run of the same settings, not bit for bit"
        )
    if trainer.streams_moved:
        said.append(
            f"the run's random streams were drawn on another kind of device than {trainer.device.type}; they go on from "
            "a seed derived from the run's seed and epoch: the run continues as one of the same settings, not bit for "
            "bit as it would have there"
        )
    return said


def _check_processes(nproc: int, device: torch.device) -> None:
    """--nproc against this machine, before any process starts: on CUDA one process per GPU, each
    on its own (the ranks' check); on the CPU, a note where the processes outnumber the cores
    (each step waits for the slowest, and fewer train faster)."""
    if device.type == "cuda" and nproc > (gpus := torch.cuda.device_count()):
        raise ConfigError(
            f"--nproc {nproc}: data-parallel training puts one process on each GPU, and this machine has {gpus}: give "
            f"--nproc {gpus}{' or fewer' if gpus > 2 else ''}, or train on the CPU with --device cpu"
        )
    for rank in (0, nproc - 1):  # (a GPU named for all: refused as the ranks whose own it is not refuse it)
        rank_device(distributed.Context(rank, nproc, rank), device)
    if device.type == "cpu" and nproc > (cores := os.cpu_count() or 1):
        say(
            f"note: {nproc} processes on {cores} CPU core{'s' if cores != 1 else ''}: each step waits for the "
            "slowest process, so fewer processes would train faster"
        )


def _launch(args: argparse.Namespace) -> int:
    """``dgm train --nproc N``: the same command in N processes started by torchrun on this
    machine (a rendezvous on localhost); their exit status."""
    argv, rest, skip = list(args._argv), [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "dgmkit.cli.launch", str(args.nproc)]  # torchrun's agent, reporting as dgmkit
    from dgmkit.cli.launch import COMMAND_ENV

    env = {**os.environ, COMMAND_ENV: str(os.getpid())}  # (the launcher ends its ranks once this process is gone)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    say(f"starting {args.nproc} processes with torchrun (gloo on CPU, nccl on CUDA); rank 0 reports")
    return _waited_forwarding([*cmd, *rest], env, (signal.SIGTERM, signal.SIGHUP))


def _waited_forwarding(cmd: list[str], env: dict, signals: tuple[signal.Signals, ...]) -> int:
    """The exit status of ``cmd`` (the launcher), each of ``signals`` that this process gets
    meanwhile passed on to it: a SIGTERM sent to ``dgm train --nproc N`` alone (a scheduler's,
    ``kill``) reaches the launcher, which stops the ranks and ends, instead of leaving it and them
    running on, orphaned, with the run folder locked (a signal this process ignores, as SIGHUP
    under nohup, stays ignored). A terminal's Ctrl-C reaches every process of the group: its
    launcher ends the ranks and says so, and its status is this one's; a SIGINT to this process
    alone is passed on once the launcher has not ended within 2 s. A launcher ended by a signal
    before it could say so (while it starts, or killed outright) is said to have been, with the
    shell's status; its ranks end with it (``launch.watch_launcher``)."""
    child: list[subprocess.Popen] = []
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if child:
            child[0].send_signal(signum)
        else:  # (before the launcher has started: passed on once it has)
            pending.append(signum)

    previous = {s: signal.signal(s, forward) for s in signals if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        child.append(subprocess.Popen(cmd, env=env))  # noqa: S603 - our own interpreter and module
        for signum in pending:
            child[0].send_signal(signum)
        while True:
            try:
                code = child[0].wait()
                break
            except KeyboardInterrupt:
                try:
                    code = child[0].wait(timeout=2)
                    break
                except subprocess.TimeoutExpired:
                    child[0].send_signal(signal.SIGINT)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code < 0:  # ended by a signal before its own handler was in place
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        print(
            f"dgm: interrupted ({name}): the processes' launcher was ended before it could say so; a process it had "
            "started ends with it",
            file=sys.stderr,
        )
        return 128 - code
    return code


def _kept(cfg: RunConfig, out: Path, ctx: distributed.Context, any_rank: bool = False) -> tuple[str, ...]:
    """What an interrupted training keeps that ``--resume`` goes on from, said once (by rank 0;
    ``any_rank``: by any, where each says its own line): its last checkpoint and the command;
    nothing for a fit in closed form or by EM (not resumed) or a run stopped before its first
    checkpoint."""
    read = (ctx.is_main or any_rank) and cfg.model.fit == "gradient"
    counters = trainer_counters(out / "checkpoint.safetensors") if read else None
    if counters is None:
        return ()
    k = (counters.get("epoch_progress") or {}).get("step", 0)
    if not k and _ended(cfg, counters, out):  # interrupted after its last epoch's checkpoint: nothing left to train
        best = trainer_counters(out / "best.safetensors") if counters.get("best_epoch") == counters["epoch"] else None
        if counters.get("best_epoch") != counters["epoch"] or (best is not None and best["epoch"] == counters["epoch"]):
            return (f"{ENDED} {counters['epoch']}, its files written: evaluate with: "
                    f"dgm eval {shell_path(out)}",)  # fmt: skip
        return (f"{KEPT} (after epoch {counters['epoch']}, its last) is kept: best.safetensors is written again by: "
                f"{_go_on(out)}",)  # fmt: skip
    where = f"in epoch {counters['epoch'] + 1} after step {k}" if k else f"after epoch {counters['epoch']}"
    return (f"{KEPT} ({where}) is kept: go on with: {_go_on(out)}",)


def _lost_contact_said(e: Exception, cfg: RunConfig, out: Path, ctx: distributed.Context) -> DgmError:
    """The error of a rank whose collective failed (``e``: a peer is gone), with what the run keeps.
    A SIGTERM meanwhile (torchrun's agent ends the ranks once it finds that peer gone) is ignored:
    one that came as the checkpoint was read raised Terminated there, said without the checkpoint."""
    distributed.sigterm_ignored()
    return cast(DgmError, lost_contact(e, ctx.rank, *_kept(cfg, out, ctx, any_rank=True)))


def _ended(cfg: RunConfig, counters: dict, out: Path) -> bool:
    """Whether a checkpoint's counters say the run trained all it was to: its ``--epochs`` (under
    ``--train-for``, as many as its config.json holds, which it lowers once it has timed an epoch),
    or ``--patience`` epochs without improvement (a larger ``--epochs`` would extend it)."""
    epochs = cfg.optim.epochs
    if cfg.optim.train_for is not None:
        with contextlib.suppress(DgmError, KeyError, TypeError):
            recorded = read_json(out / "config.json")["config"]["optim"]["epochs"]
            epochs = recorded if type(recorded) is int else epochs
    patience, bad = cfg.optim.patience, counters.get("bad_epochs")
    return counters["epoch"] >= epochs or (patience is not None and type(bad) is int and bad >= patience)


def _go_on(out: Path) -> str:
    """The command that resumes the run in ``out`` as it runs now (on as many processes: data-parallel
    runs resumed on another number are not bit for bit), its folder quoted for the shell. A run
    that torchrun started on several machines (``LOCAL_WORLD_SIZE`` below the world's) goes on as
    it was started, by torchrun on each machine (``--nproc`` starts every process on this one)."""
    world = distributed.current().world_size
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    if world > 1 and local.isascii() and local.isdigit() and 0 < int(local) < world:
        nodes, rest = divmod(world, int(local))
        shape = f"--nnodes {nodes} --nproc-per-node {local}" if not rest else f"({world} processes)"
        return f"torchrun {shape} ... -m dgmkit train --resume --out {shell_path(out)}"
    return f"dgm train --resume{f' --nproc {world}' if world > 1 else ''} --out {shell_path(out)}"


def run_train(args: argparse.Namespace) -> int:
    reject_foreign(args, args._foreign, args._family)
    launch = args.nproc > 1 and not distributed.launched_by_torchrun()
    ctx = distributed.current()
    if not args.out:  # (Path("") is the working folder)
        raise ConfigError("--out is empty: name the run folder to write")
    out = Path(args.out)
    restart = False
    sources: tuple[str | None, Collection[str], Collection[str]] = (None, (), ())  # (a new run's: below)
    if args.resume:
        if out.exists() and not out.is_dir():  # (the flag's words)
            raise ConfigError(f"nothing to resume: --out {out} is a file, not a run folder")
        folder = RunFolder(out, fresh=False)
        restart = folder.starts_again("--resume", main=ctx.is_main)
        if restart and ctx.is_main and not launch:  # the run starts again from its beginning (--nproc: rank 0 says so)
            say(folder.restart_line())
        cfg = resumed_config(args, out)
    else:
        cfg = resolve_config(args)
        # before --nproc's processes start (train_run checks a run made from Python)
        file_keys = RunConfig.given_keys(_config_table(args), args.config) if args.config else {}
        sources = (args.config, given_values(args, args._dests), file_keys)
        cfg.check_inert(*sources)
        if ctx.is_main:
            RunFolder(out, fresh=True).check_fresh()  # before the data is loaded; again under the lock
    if launch:  # the config and the folder checked here, in one line, before N processes start
        if args.resume:  # (a run being written by another process: refused before N processes start)
            RunFolder(out, fresh=False).check_not_in_use()
        if cfg.model.fit != "gradient":
            raise ConfigError(f"--nproc: {cfg.model.name} is not trained by gradient steps; it fits in one process")
        _check_fit_flags(cfg, args.resume and not restart, args.tensorboard, restart)  # (as each rank does: once, here)
        if args.tensorboard and args.resume and not restart:
            check_log_dir(out / "tensorboard")
        if cfg.optim.channels_last:
            raise ConfigError("--nproc: channels-last memory is not supported in data-parallel training")
        launched = distributed.Context(world_size=args.nproc)
        check_shares(launched, {"the batch size": cfg.optim.batch_size})  # as each rank does
        check_rows_per_step(cfg.model.training_objective(), cfg.optim.batch_size, launched)
        _check_processes(args.nproc, resolve_device(cfg.optim.device))
        return _launch(args)
    try:
        result = train_run(
            cfg,
            out,
            resume=args.resume and not restart,
            quiet=args.quiet,
            tensorboard=args.tensorboard,
            restart=restart,
            sources=sources,
        )
    except KeyboardInterrupt:  # (Ctrl-C: what the run keeps, said with dgm's "interrupted")
        raise KeyboardInterrupt(*_kept(cfg, out, ctx)) from None
    except Terminated:  # (a rank's SIGTERM, distributed.sigterm_unwinds: likewise, and the rank then ends by it)
        raise Terminated(*_kept(cfg, out, ctx, any_rank=True)) from None  # (rank 0 alone says it, or dgm's launcher)
    except Exception as e:  # a rank whose peer is gone: what the run keeps, said by every rank that can read it
        if not ctx.parallel or lost_contact(e, ctx.rank) is None:  # (any other error: no checkpoint read for it)
            raise
        raise _lost_contact_said(e, cfg, out, ctx) from e
    if not ctx.is_main:
        return 0
    record = read_json(out / "config.json")
    data = record["data"]
    shift = math.prod(data["event_shape"]) * DataTransform(data["transform"], data["num_levels"]).log_volume
    continuous = scores_densities(data["transform"], record["config"]["model"])  # (a table's columns as read off)
    density = " (a log-density of continuous data, not a probability)" if continuous else ""
    if score_label(result.label, data["transform"]) != result.label:  # an exact density of y = (k + u) / L:
        density = f" ({estimate_words('exact', data['transform'])})"  # of the integers, as dgm eval and report say
    step = fit_step(cfg)
    best = f"{result.label} {result.best_valid - shift:.3f} nats{density}"
    if cfg.model.fit != "closed-form" and result.best_epoch >= 0:  # a closed-form fit has said what it found
        say(f"trained {plural(result.epoch, step)}; best validation {best} at {step} {result.best_epoch}")
    say(f"run folder: {out}  (evaluate with: dgm eval {shell_path(out)})")
    return 0
