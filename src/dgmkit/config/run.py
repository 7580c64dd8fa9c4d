"""Run folders: ``config.json`` (the run's full config and its data's description), the
checkpoints, ``metrics.jsonl`` and ``eval.json``. A run folder describes itself, so every
command after ``dgm train`` needs only its path. Folders written by dgmkit 0.1 load through
``config.migrate``."""

import hashlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dgmkit import __version__
from dgmkit._io import is_text_path, parse_json, shell_path
from dgmkit.config.migrate import FORMAT, check_record, migrate_record
from dgmkit.config.schema import FREE_ON_RESUME, MOVABLE, RELOCATABLE, RunConfig
from dgmkit.data import Dataset, DataTransform
from dgmkit.data.labels import labels_shown
from dgmkit.devices import device_of, resolve_device
from dgmkit.errors import CheckpointError, ConfigError, DataError, shown_value
from dgmkit.models import GenerativeModel
from dgmkit.objectives import Objective
from dgmkit.training import load_checkpoint
from dgmkit.training.checkpoint import check_dtypes, counters_or_none, read_metadata, record_of
from dgmkit.training.parts import (
    ChannelsLast,
    Compile,
    GraphStep,
    MovingAverage,
    Mutation,
    NormalisedGradients,
    Precision,
    StepGuard,
    TimeBudget,
    TrainFor,
    TrainingPart,
)
from dgmkit.training.run_writer import MAX_RECORD_BYTES, new_run_id, nonfinite_state, read_run_file
from dgmkit.training.schedules import LRSchedule

log = logging.getLogger(__name__)

__all__ = [
    "holds_recorded_data",
    "Run",
    "load_run",
    "run_record",
    "build_model",
    "build_objective",
    "trainer_options",
    "read_json",
    "load_weights",
    "check_weights_fit",
    "in_checkpoint_precision",
    "float64_weights",
    "check_same_run",
    "recorded_config",
]


def holds_recorded_data(dataset: Dataset, recorded: str | None) -> bool:
    """Whether ``dataset`` is the data a run recorded by ``sha256`` (``run_record``): its
    fingerprint, or for generated data that an older run pinned by content, that content's
    digest, or for a table that an older run pinned by its standardized values alone, their
    digest. A run with no digest (older formats, data made by another run) holds any."""
    if recorded is None:
        return True
    if dataset.fingerprint() == recorded:
        return True
    return bool(dataset.generator and dataset.content_digest() == recorded) or bool(
        dataset.columns and dataset.content_digest(columns=False) == recorded
    )


def run_record(
    cfg: RunConfig, dataset: Dataset, transform: DataTransform, run_id: str | None = None, digest: str | None = None
) -> dict:
    """What config.json and every checkpoint store about a run; ``run_id`` (new if not given)
    is what ties the run's checkpoints to it. The data are pinned by ``sha256``,
    ``Dataset.fingerprint()`` (a digest of the content of data read from files, of the
    definition of generated data), so that data changed after training are refused (data made by
    another run, ``codes_of``, are pinned by their name, which holds that run's checkpoint digest:
    not by their content, whose floats may differ in their last bits on another machine). ``digest``: the
    one a resumed run recorded, where it pinned generated data by their content (older runs)."""
    data = {
        "name": dataset.name,
        "event_shape": list(dataset.event_shape),
        "num_levels": dataset.num_levels,
        "transform": transform.kind,
    }
    if not cfg.data.codes_of:
        data["sha256"] = digest or dataset.fingerprint()
    if dataset.units is not None:
        data["units"] = list(dataset.units)  # the latent units kept of another run (active_latents), kept again
    record = {
        "format": FORMAT,
        "run_id": run_id or new_run_id(),
        "dgmkit_version": __version__,
        "config": cfg.to_dict(),
        "data": data,
    }
    # continuous values may lie anywhere: the figures draw this range (beside "data", which same-run checks compare,
    # and a dgmkit before 2026-11-29 compares whole: a key there would make it refuse to resume the run)
    seen = _value_range(dataset) if transform.kind == "continuous" and not dataset.columns else None
    if seen is not None:
        record["value_range"] = seen
    if _incomplete(dataset):  # (its scores are of log p(x_o): what a report says of a run that no evaluation has)
        record["observed_only"] = True
    if cfg.model.uses_labels and dataset.train.y is not None:  # the training labels it is shown (beside "data", as above)
        shown = int(labels_shown(dataset.train.y).sum())  # (a partly labelled data file hides some: -1)
        record["labelled"] = shown if cfg.data.labels is None else min(cfg.data.labels, shown)
    return record


def _incomplete(dataset: Dataset) -> bool:
    """Whether the training or the validation split holds a missing entry (NaN), looked for in
    parts of 2^22 values."""
    splits = (dataset.train.x, dataset.valid.x)
    return any(x.is_floating_point() and bool(part.isnan().any()) for x in splits for part in x.reshape(-1).split(1 << 22))


def _value_range(dataset: Dataset) -> list[float] | None:
    """The lowest and the highest finite value of the data's splits (None: no finite value), read
    in parts of 2^22 values (a copy of the finite values of all at once: 800 MB of 50M values)."""
    lo, hi = math.inf, -math.inf
    for s in ("train", "valid", "test"):
        for part in dataset.split(s).x.reshape(-1).split(1 << 22):
            finite = part[torch.isfinite(part)] if part.is_floating_point() else part
            if finite.numel():
                a, b = torch.aminmax(finite)
                lo, hi = min(lo, float(a)), max(hi, float(b))
    return [lo, hi] if lo <= hi else None


MAX_PARAMETERS = 2**30  # weights of one model: 4 GiB in fp32, some 16 GiB in training (gradients, Adam's moments)


def _check_model_size(cfg: RunConfig, event_shape: tuple[int, ...], num_levels: int | None) -> None:
    """Refuse settings whose model would hold more than MAX_PARAMETERS weights, counted on a model
    built on the meta device (no memory; ``hidden = [16384] * 64`` asks for 64 GiB of them, which
    the real build would allocate and write until the machine's memory ran out). A family whose
    build cannot run there (one that reads its data or a value at build time) is built as it was."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            size = sum(p.numel() for p in cfg.model.build(event_shape, num_levels, None, cfg.optim.seed).parameters())
    except Exception:  # (not buildable without memory: the real build says what is wrong)
        return
    if size > MAX_PARAMETERS:
        raise ConfigError(
            f"the {cfg.model.name} model of these settings (hidden, latent_dim, layers, channels) would hold "
            f"{size:,} weights, {size * 4 / 2**30:.0f} GiB in fp32; dgmkit builds at most {MAX_PARAMETERS:,}"
        )


def build_model(
    cfg: RunConfig, event_shape: tuple[int, ...], num_levels: int | None, init_data: torch.Tensor | None = None
) -> GenerativeModel:
    """The model that ``cfg`` describes, its initial weights drawn from the run's seed (the
    global generator is left as it was); one of more than MAX_PARAMETERS weights is refused."""
    _check_model_size(cfg, tuple(event_shape), num_levels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.optim.seed)
        return cfg.model.build(tuple(event_shape), num_levels, init_data, cfg.optim.seed)


def build_objective(cfg: RunConfig) -> Objective:
    """What gradient training of ``cfg``'s model minimizes."""
    return cfg.model.training_objective()


def trainer_options(cfg: RunConfig) -> dict:
    """The Trainer's keyword arguments that ``cfg`` sets: the optim section (epochs, batch
    size, Adam, the learning-rate schedule, early stopping, seed, device) and its parts (gradient
    clipping and skipping, the moving average of the weights, precision, compile, mutation, the
    time budget, the training time) and the family's own (a KL weight schedule, labelled rows). ``dgm train`` and
    the benchmarks build their Trainers from it, so that a setting cannot be dropped on one
    path: ``Trainer(model, objective, train, transform, **trainer_options(cfg))``."""
    o = cfg.optim
    parts: list[TrainingPart] = [Precision(o.precision)]
    if o.grad_clip is not None or o.skip_grad_norm is not None or o.skip_grad_factor is not None:
        parts.append(StepGuard(o.grad_clip, o.skip_grad_norm, o.skip_grad_factor))
    if o.normalise_gradients:
        parts.append(NormalisedGradients())
    if o.ema > 0:
        parts.append(MovingAverage(o.ema))
    if o.mutation_rate > 0:
        parts.append(Mutation(o.mutation_rate))
    if o.channels_last:  # (before Compile: the compiled step sees the layout)
        parts.append(ChannelsLast())
    if o.compile:
        parts.append(Compile())
    if o.graph_step:
        parts.append(GraphStep())
    if o.time_budget is not None:
        parts.append(TimeBudget(o.time_budget))
    if o.train_for is not None:
        parts.append(TrainFor(o.train_for))
    return {
        "epochs": o.epochs,
        "batch_size": o.batch_size,
        "lr": o.lr,
        "lr_schedule": LRSchedule(o.lr_schedule, o.lr_decay, o.lr_decay_every, o.lr_min),
        "weight_decay": o.weight_decay,
        "patience": o.patience,
        "seed": o.seed,
        "device": o.device,
        "parts": [*parts, *cfg.model.training_parts()],
    }


@dataclass
class Run:
    path: Path
    cfg: RunConfig
    record: dict
    model: GenerativeModel
    checkpoint: Path
    digest: str = ""  # ``weights_digest``'s, of the bytes the weights were read from
    trainer: dict | None = None  # the checkpoint's trainer counters (``counters_or_none``), from the same bytes
    # the runs attached to the model in the roles its family declares (``attach_input``): they stay attached, so
    # that every later result of this Run names them (a VQ-VAE's code prior: evaluations, samples)
    inputs: dict[str, "Run"] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where the model computes (``load_run``'s ``device``); its inputs go there."""
        return device_of(self.model)

    @property
    def transform(self) -> DataTransform:
        d = self.record["data"]
        return DataTransform(d["transform"], d["num_levels"])

    def weights_digest(self) -> str:
        """Which weights these are: the first 16 hex digits of the SHA-256 of the checkpoint
        file they were read from (what evaluations, OOD scores and derived data record), as it
        was when they were read: a file replaced since (a run trained on) does not change it."""
        return self.digest or hashlib.sha256(self.checkpoint.read_bytes()).hexdigest()[:16]


def load_run(run_dir: str | os.PathLike[str], *, which: str = "best", device: str | torch.device = "cpu") -> Run:
    """Load a run folder's config and model weights (``which="best"``: the best-validation
    checkpoint if it exists, else the last; ``"last"``: the last),
    the model on ``device`` (``devices.resolve_device``: auto, cpu, cuda; the CPU by default,
    where the tensors of Python callers are: the CLI passes its --device, auto by default).
    ``dgmkit.load`` is the same for Python callers (its ``device`` may come second)."""
    if not isinstance(which, str) or which not in ("best", "last"):
        raise ConfigError(f"which checkpoint to load must be 'best' or 'last', got {shown_value(which)}")
    device = resolve_device(device)  # refused before any file is read
    if not is_text_path(run_dir):
        raise ConfigError(f"a run folder is named by a path (str or os.PathLike), got {type(run_dir).__name__}")
    if not os.fspath(run_dir):  # (Path(""), the working folder)
        raise ConfigError("the run folder's path is empty")
    path = Path(run_dir)
    if not path.is_dir():
        inside = f" (a file: name the run folder that holds it, {path.parent})" if path.is_file() else ""
        raise CheckpointError(f"no run folder at {path}{inside}")
    found = _checkpoint_of(path, which)
    ckpt = load_checkpoint(found)
    counters = counters_or_none(ckpt["trainer"])
    if which == "best" and found.name != "best.safetensors" and counters is not None and counters["epoch"] >= 1:
        log.warning(  # (every run writes best.safetensors with its first epoch: this one's was removed)
            "%s holds no best.safetensors (a run writes it with its first epoch): the run's weights are read from "
            "checkpoint.safetensors, those of its last epoch (%d), not of its best validation",
            path,
            counters["epoch"],
        )
    record = migrate_record(ckpt["config"], str(found))
    cfg = check_record(record, str(found))
    if os.path.lexists(path / "config.json"):  # (one that is not a regular file is refused by read_json)
        own = migrate_record(read_json(path / "config.json"), str(path / "config.json"))
        check_same_run(own, record, path / "config.json", found, FREE_ON_RESUME + MOVABLE)
        cfg = _moved_as_recorded(cfg, own, record)  # where the runs it takes are now, and its data
        for key in ("value_range", "observed_only", "labelled"):  # (a best checkpoint from before a resume recorded them)
            if key in own and key not in record:
                record = {**record, key: own[key]}
    data = record["data"]
    try:
        DataTransform(data["transform"], data["num_levels"])
        check_weights_fit(cfg, tuple(data["event_shape"]), data["num_levels"], ckpt["model"], found)
        model = in_checkpoint_precision(build_model(cfg, tuple(data["event_shape"]), data["num_levels"]), ckpt["model"])
    except (KeyError, TypeError, ValueError, ConfigError, DataError) as e:
        raise CheckpointError(f"{found} does not describe a model this dgmkit can build: {e}") from None
    load_weights(model, ckpt["model"], found)
    bad = nonfinite_state(model)
    if bad is not None:
        raise CheckpointError(f"{found}: {bad} holds NaN or inf (the run diverged); there is nothing to evaluate or use")
    return Run(path, cfg, record, model.eval().to(device), found, ckpt["digest"], counters)


def recorded_config(run_dir: str | os.PathLike[str]) -> RunConfig:
    """The config of the run in ``run_dir`` as ``load_run`` takes it (its best checkpoint's
    record, else the last's), from that checkpoint's header alone: no weights are read and no
    model is built."""
    found = _checkpoint_of(Path(run_dir), "best")
    record = migrate_record(record_of(read_metadata(found), found), str(found))
    cfg = check_record(record, str(found))
    own = Path(run_dir) / "config.json"
    return _moved_as_recorded(cfg, migrate_record(read_json(own), str(own)), record) if os.path.lexists(own) else cfg


def _moved_as_recorded(cfg: RunConfig, own: dict, record: dict) -> RunConfig:
    """``cfg`` (a checkpoint's, whose record is ``record``) with the places of other runs
    (MOVABLE) that the run's own record ``own`` (config.json) gives, where both name one, and
    the place of its own data (RELOCATABLE) where both pin the same content: a resume that named
    a new folder rewrote config.json, and a best checkpoint may be older."""
    now = check_record(own, "config.json").flat()
    was = cfg.flat()
    moved = {k: now[k] for k in MOVABLE if now[k] and was[k] and now[k] != was[k]}
    digest = record["data"].get("sha256")
    if digest is not None and own["data"].get("sha256") == digest:
        moved.update({k: now[k] for k in RELOCATABLE if now[k] != was[k]})
    return cfg.replace(**moved)


def _checkpoint_of(path: Path, which: str) -> Path:
    """The checkpoint a run folder is read from: ``best``: best.safetensors where it exists, else
    the last; ``last``: the last."""
    names = ["best.safetensors", "checkpoint.safetensors"] if which == "best" else ["checkpoint.safetensors"]
    for found in (path / n for n in names):
        if found.is_file():
            return found
        if os.path.lexists(found):  # not passed over for the next: the run would be read from other weights than its own
            link = f", a link to {os.readlink(found)}," if found.is_symlink() else ""
            what = "names no file" if not found.exists() else "is not a regular file"
            other = (
                "; remove it to read the run's last weights, checkpoint.safetensors"
                if which == "best" and found.name == "best.safetensors"
                else ""
            )
            raise CheckpointError(
                f"{found}{link} {what}: the run's weights cannot be read from it (fetch its content{other})"
            )
    if os.path.lexists(path / "config.json"):  # (a run folder: `dgm train --out` refuses it, as not empty)
        resume = f"dgm train --resume --out {shell_path(path)}"
        raise CheckpointError(
            f"{path} holds a run's config.json but no checkpoint ({' or '.join(names)}): the run stopped before its "
            f"first checkpoint, or its checkpoints were removed; `{resume}` starts a run that stopped so early again"
        )
    raise CheckpointError(
        f"{path} holds no checkpoint ({' or '.join(names)}); train a run there with `dgm train --out {shell_path(path)}`"
    )


def check_weights_fit(
    cfg: RunConfig,
    event_shape: tuple[int, ...],
    num_levels: int | None,
    state: dict,
    source: Path,
    described_by: str = "its record",
) -> None:
    """The model ``cfg`` describes must have a checkpoint's tensors ``state`` (their names,
    shapes and dtypes), checked on a copy built on the meta device, which holds no memory: a
    record edited to describe a model of billions of weights is refused by what its file holds
    before the model is built (every family builds there: tests/test_safety_cli.py)."""
    with torch.device("meta"):
        probe = in_checkpoint_precision(build_model(cfg, event_shape, num_levels), state)
    meta = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in state.items()}
    load_weights(probe, meta, source, described_by, assign=True)  # (assigned: the probe's masks may be CPU tensors)


def in_checkpoint_precision(model: GenerativeModel, state: dict) -> GenerativeModel:
    """``model`` made float64 where every floating tensor of a checkpoint's ``state`` is float64
    (a run of a model made float64 from Python, ``model.double()``, with its run record): loaded,
    evaluated, sampled and resumed in float64, as it trained; else ``model`` as built."""
    return model.double() if float64_weights(state) else model


def float64_weights(state: dict) -> bool:
    """Whether every floating tensor of a checkpoint's ``state`` is float64 (and it holds one)."""
    floats = [v for v in state.values() if torch.is_tensor(v) and v.is_floating_point()]
    return bool(floats) and all(v.dtype == torch.float64 for v in floats)


def load_weights(
    model: torch.nn.Module, state: dict, source: Path, described_by: str = "its record", assign: bool = False
) -> None:
    """Load a checkpoint's tensors into ``model`` (``assign``: as its tensors, not copied into
    them), or one CheckpointError line saying how they differ from the model that
    ``described_by`` describes. (Through ``load_state_dict``: older runs' tensor names are
    mapped by the modules' own hooks.)"""
    check_dtypes(model, state, source)
    try:
        model.load_state_dict(state, assign=assign)
        return
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    parts = _differences(model.state_dict(), state)
    raise CheckpointError(f"{source} does not fit the model {described_by} describes: {', '.join(parts) or first[:300]}")


def _differences(own: dict, state: dict) -> list[str]:
    """How a checkpoint's tensors ``state`` differ from a model's ``own``, in a few words each."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
        if keys:
            parts.append(f"{len(keys)} tensors {what} (e.g. {keys[0]})")
    return parts


def check_same_run(
    own: dict, other: dict, own_source: Path, other_source: Path, free: tuple[str, ...] = (), fresh: bool = False
) -> None:
    """``other`` (a checkpoint's record, or with ``fresh`` one made now from the data and flags)
    must be of the run that ``own`` (config.json) describes: the same run id, the same config
    (``free`` keys may differ: what --resume may change) and the same data. A run written before
    the data digest (run format 3) has none; a fresh record is then compared without it, and so is
    a checkpoint written before a resume first recorded one (its best.safetensors, where
    validation has not improved since). Where
    both records pin the data by the same digest, the data's place and file name may differ
    (RELOCATABLE: the data moved)."""
    a, b = own.get("run_id"), other.get("run_id")
    if a != b:
        raise CheckpointError(
            f"{other_source} belongs to another run (run id {str(b)[:12]!r}, while {own_source} says {str(a)[:12]!r}); "
            "a run folder's checkpoints must come from its own training"
        )
    digest, now = own["data"].get("sha256"), other["data"].get("sha256")
    if fresh and digest is not None and now != digest:
        raise CheckpointError(
            f"the data now differ from those {own_source.parent} was trained on (content SHA-256 {str(now)[:16]}..., "
            f"the run recorded {digest[:16]}...): --resume needs the same data"
        )
    skip_digest = digest is None if fresh else now is None
    pinned = digest is not None and digest == now  # (the same content: wherever it is read from)
    placed = RELOCATABLE if pinned else ()

    def key(record: dict, source: Path) -> dict:
        try:
            c = RunConfig.from_dict(record["config"], "record").flat()
        except ConfigError as e:
            raise CheckpointError(f"{source} holds a config this dgmkit rejects: {e}") from None
        data = {
            k: v for k, v in record["data"].items() if not (k == "sha256" and skip_digest) and not (k == "name" and pinned)
        }
        kept = {
            k: (bool(v) if k in MOVABLE else v) for k, v in c.items() if (k not in free or k in MOVABLE) and k not in placed
        }
        return {"config": kept, "data": data}  # (another run's place may change; whether there is one, not)

    if not fresh:
        _check_none_dropped(own, other, own_source, other_source)
    if key(own, own_source) != key(other, other_source):
        raise CheckpointError(
            f"{own_source} and {other_source} describe different runs (was config.json edited?); "
            "restore config.json or train into a new folder"
        )


def _check_none_dropped(own: dict, other: dict, own_source: Path, other_source: Path) -> None:
    """Refuse a config.json ``own`` that lacks a setting (``section.key``) that the checkpoint's
    record ``other`` holds: a default would take its place silently (--epochs's, say). A resumed
    run writes config.json whole, with every setting of its dgmkit, before its checkpoints (an
    earlier release's checkpoint may hold fewer): one it lacks was deleted."""
    mine, theirs = own.get("config"), other.get("config")
    if not isinstance(mine, dict) or not isinstance(theirs, dict):
        return  # (RunConfig names what is wrong with a record)
    dropped = [
        f"{section}.{k}"
        for section, keys in theirs.items()
        if isinstance(keys, dict) and isinstance(mine.get(section, {}), dict)  # (a section of another type: RunConfig's)
        for k in keys
        if k not in mine.get(section, {})
    ]
    if dropped:
        raise CheckpointError(
            f"{own_source} lacks {', '.join(dropped)}, which {other_source} records (was config.json edited?); "
            "a run's config.json is written whole: restore it, or delete it (the checkpoint's record is then used)"
        )


def read_json(path: Path) -> dict:
    """The JSON object in a run's record file ``path`` (a regular file of at most
    ``MAX_RECORD_BYTES``); CheckpointError otherwise."""
    try:
        value = parse_json(read_run_file(path, MAX_RECORD_BYTES))
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return value


def own_record(run_dir: Path) -> dict:
    """The record of the run in ``run_dir`` that a resume goes on from: its config.json's, or,
    where config.json is gone (deleted by hand) and checkpoint.safetensors is there, the record
    that checkpoint holds (the same run's, written with it: the resumed run writes config.json
    again)."""
    own, last = run_dir / "config.json", run_dir / "checkpoint.safetensors"
    if not os.path.lexists(own) and last.is_file():
        return migrate_record(record_of(read_metadata(last), last), str(last))
    return migrate_record(read_json(own), str(own))
