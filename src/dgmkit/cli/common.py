"""Helpers shared by the CLI commands: loading data for a run, display scaling, output."""

import argparse
import contextlib
import dataclasses
import json
import math
import operator
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch
from torch.distributions import Distribution

from dgmkit import _lock
from dgmkit._io import (
    atomic_write_bytes,
    atomic_write_json,
    check_new_output,
    full_path,
    parse_json,
    read_regular,
    shell_path,
    stale_temporaries,
)
from dgmkit.cli.argtypes import SEED, count
from dgmkit.config import Run, load_run
from dgmkit.config.inputs import attach_input, check_derived_current, recorded_chain, run_dataset
from dgmkit.config.run import holds_recorded_data, recorded_config
from dgmkit.config.schema import DataConfig, RunConfig
from dgmkit.data import Dataset, default_data_dir
from dgmkit.data.formats import read_arrays
from dgmkit.data.registry import FOLDER_DATASETS, check_images, is_data_file, is_table
from dgmkit.data.table import TABLE_SUFFIXES, read_table
from dgmkit.data.transforms import values_seen
from dgmkit.distributions import location
from dgmkit.distributions.flow import location_name
from dgmkit.errors import ConfigError, DataError, DgmError, plural, shortened, shown_value
from dgmkit.evaluation.figures import check_finite
from dgmkit.evaluation.report import one_draw_bound
from dgmkit.models.hvae import LayerStack
from dgmkit.training.run_writer import results_lock, run_files

__all__ = [
    "ResultsFile",
    "layers_note",
    "results_locked",
    "array_of_table_note",
    "run_table",
    "plural",
    "posterior_means",
    "codes_name",
    "DECODE_BATCH",
    "decoded_means",
    "decoded_name",
    "reconstructions",
    "LatentModel",
    "latent_model",
    "split_data",
    "run_data",
    "data_dir_unread",
    "chain_reads_folder",
    "add_data_flags",
    "add_count_flag",
    "add_limit_flag",
    "seeded_rows",
    "add_seeded_data_flags",
    "add_split_flag",
    "figure_run",
    "figure_split",
    "fit_step",
    "own_result",
    "own_result_file",
    "write_own_result",
    "own_result_table",
    "standardized_note",
    "enough_rows",
    "positive_count",
    "shows_images",
    "images_only",
    "add_run_parser",
    "to_display",
    "data_to_display",
    "holes_note",
    "encoded_holes_note",
    "given_data_flags",
    "estimate_words",
    "one_draw_bound",
    "score_label",
    "write_png",
    "png_output",
    "data_name",
    "command_output",
    "add_output_flags",
    "say",
]


class LatentModel(Protocol):
    """A model with ``has_latents`` (a latent variable model, an autoencoder) as the commands use it;
    ``reconstruct`` also a model that ``reconstructs`` (a VQ-VAE)."""

    def posterior(self, x: torch.Tensor) -> Distribution: ...

    def likelihood(self, z: torch.Tensor) -> Distribution: ...

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor: ...

    def reconstruction_code(self, x: torch.Tensor) -> torch.Tensor: ...

    @property
    def decoded_dims(self) -> int | None: ...


def latent_model(run: Run) -> LatentModel:
    """The run's model, which the command has checked has latents (or reconstructs)."""
    return cast(LatentModel, run.model)


def say(msg: str = "") -> None:
    """``msg`` as a line of the output. A character that stdout cannot write (a lone surrogate of an
    undecodable file name, under a strict encoding such as PYTHONIOENCODING=utf-8:strict) is
    written as its escape, ``\\udc80``, not raised as UnicodeEncodeError after the work is done."""
    try:
        print(msg, file=sys.stdout, flush=True)
    except UnicodeEncodeError:  # (raised before any of it is written: the line is encoded whole)
        encoding = sys.stdout.encoding or "utf-8"
        print(msg.encode(encoding, "backslashreplace").decode(encoding), file=sys.stdout, flush=True)


def trained_so_far(run: Run) -> dict | None:
    """How far training had gone when ``run``'s weights were written: epochs finished and, for a
    run stopped within an epoch (--time-budget, or Ctrl-C with an in-epoch checkpoint), the steps
    into the next (None: unknown)."""
    t = run.trainer
    if t is None:
        return None
    progress = t.get("epoch_progress")
    step = progress.get("step") if isinstance(progress, dict) else None
    return {"epochs": t["epoch"], "steps_into_next": step if isinstance(step, int) else 0}


def partly_trained(trained: dict | None, whose: str = "the weights") -> str | None:
    """The words that say weights are of a run stopped within an epoch, from ``trained``
    (``trained_so_far``'s record: dgm eval keeps it), ``whose`` naming them; None for the weights
    of whole epochs, or where it is not known."""
    if not trained or not trained.get("steps_into_next"):
        return None
    return (
        f"{whose} are of a run stopped in epoch {trained['epochs'] + 1} after step {trained['steps_into_next']} "
        f"({trained['epochs']} epochs finished): a partly trained model; go on with dgm train --resume"
    )


def say_partly_trained(run: Run, indent: str = "", whose: str = "the weights") -> None:
    """Says, as a note, that ``run``'s weights are partly trained (``partly_trained``), where they are."""
    words = partly_trained(trained_so_far(run), whose)
    if words:
        say(f"{indent}note: {words}")


def add_run_parser(sub: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    """The parser of the command ``name`` (``kwargs``: its help, ...), whose first argument is a
    run folder, ``run_dir``."""
    p = sub.add_parser(name, **kwargs)
    p.add_argument("run_dir")
    return p


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """--data-dir, --data and --schema: where a run's data are read from, if not where they were."""
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"folder of a named dataset's files, of a run on {', '.join(FOLDER_DATASETS)} (default: the run's, else "
        "$DGMKIT_DATA)",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="a run trained on a data file: read it from PATH (moved or copied); its content must be the same. A run "
        "trained on another run's data (--codes-of): that run's folder at PATH (the same run, the same weights), or "
        "the data file that run was trained on, moved",
    )
    p.add_argument(
        "--schema",
        default=None,
        metavar="PATH",
        help="a run trained on a table with a --schema: read the schema from PATH (moved or copied); the columns it "
        "gives must be the same",
    )


def given_data_flags(args: argparse.Namespace) -> list[str]:
    """The flags of ``add_data_flags`` that were given, by name: for a command (or a form of one)
    that reads no data, which refuses them rather than ignore them."""
    flags = (("--data-dir", args.data_dir), ("--data", args.data), ("--schema", args.schema))
    return [flag for flag, value in flags if value is not None]


def add_count_flag(
    p: argparse._ActionsContainer, flag: str, lo: int, hi: int, default: int | None = None, help: str | None = None
) -> None:
    """A flag that takes a whole number in lo..hi (``argtypes.count``: its messages name the flag)."""
    p.add_argument(flag, type=count(lo, hi, flag), default=default, help=help)


def add_limit_flag(
    p: argparse._ActionsContainer, help: str = "a seeded random subset of N datapoints", low: int = 1
) -> None:
    """--limit N: a command reads a seeded random subset of the data, at most N of them (and at
    least ``low``: what the command needs)."""
    add_count_flag(p, "--limit", low, 10**9, help=help)


def seeded_rows(total: int, n: int | None, seed: int) -> torch.Tensor | None:
    """The indices of n of ``total`` rows drawn at random with ``seed`` (the subset that --limit
    reads), in their order in the data and drawn on the CPU: the same on any device. None where
    the command reads all of them (n is None or not fewer than total)."""
    if n is None or n >= total:
        return None
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


SPLITS = ["train", "valid", "test"]


def add_split_flag(p: argparse.ArgumentParser, default: str | None = "test", help: str | None = None) -> None:
    """--split: which of a run's data splits the command reads (None: a default the command
    decides, so that it can tell the flag given from the flag left out)."""
    p.add_argument("--split", default=default, choices=SPLITS, help=help)


def add_seeded_data_flags(p: argparse.ArgumentParser, seed_help: str | None = None) -> None:
    """--seed (of the command's picks and draws), --data-dir, --data and --device: the flags
    that close every command reading a run's data."""
    p.add_argument("--seed", type=SEED, default=0, help=seed_help)
    add_data_flags(p)
    add_device_flag(p)


def data_dir_unread(cfg: DataConfig, run_dir: object, moved_by: str = "--data") -> str:
    """The refusal of a --data-dir given for a run whose data are read from no folder (``moved_by``:
    the flag that names a moved data file)."""
    named = cfg.dataset
    read = f"from its path: a moved data file is named by {moved_by}" if is_data_file(named) else "from no folder"
    return f"--data-dir is of datasets read from a folder; {run_dir} was trained on {named}, read {read}"


def run_data(run: Run, data_dir: str | None = None, data: str | None = None, schema: str | None = None) -> Dataset:
    """The dataset a run was trained on, read again (``data``: the data file at a new path;
    ``schema``: the table's schema at a new path), and refused if its content is not what the run
    recorded."""
    for flag, value in (("--data-dir", data_dir), ("--data", data), ("--schema", schema)):
        if isinstance(value, str) and not value:  # ("" would be read as not given, or as the working folder)
            raise ConfigError(f"{flag} is empty: name a path, or leave it out")
        if flag != "--data" and not (value is None or isinstance(value, (str, os.PathLike))):  # (from Python)
            raise ConfigError(f"{flag.lstrip('-').replace('-', '_')} names a path, got {shown_value(value)}")
    if data_dir is not None and not run.cfg.data.reads_folder:
        raise ConfigError(data_dir_unread(run.cfg.data, run.path))
    cfg, moved_file = _moved_data(run, _moved_schema(run, run.cfg.data, schema), data)
    dataset = run_dataset(cfg, data_dir, run.record["data"].get("units"), moved_file=moved_file)
    check_derived_current(dataset, cfg, run.record, run.path)
    want = run.record["data"].get("sha256")
    # a run of generated data recorded before they were identified by their definition holds their content digest
    if not holds_recorded_data(dataset, want):
        where = cfg.dataset
        if cfg.reads_folder and not is_data_file(cfg.dataset):
            where += f" (in {default_data_dir(data_dir or cfg.data_dir)})"
        if cfg.schema:  # (a table's content is read through its schema: either may have changed)
            where += f" read with the schema {cfg.schema}"
        if is_data_file(cfg.dataset):
            fix = "Point --data at the original file" + (" and --schema at the original schema" if cfg.schema else "")
        elif cfg.reads_folder:
            fix = "Point --data-dir at the original files"
        else:  # (bundled or made here: another version of dgmkit, or of the library that ships it, makes other data)
            fix = "It is read from no folder: another version of dgmkit (or of scikit-learn, for its datasets) made it"
        raise DataError(
            f"{where} now holds other data than {run.path} was trained on (content SHA-256 {dataset.fingerprint()[:16]}..., "
            f"the run recorded {want[:16]}...): its numbers would be of different data. {fix}"
        )
    _check_as_recorded(run, dataset)
    return dataset


def _names_first_data(d: DataConfig, data: str | None) -> bool:
    """Whether --data of a run on another run's data names the data file that the first run of
    the chain was trained on (else it names that run's folder)."""
    return bool(data and d.codes_of and is_data_file(data) and not Path(data).is_dir())


def _moved_data(run: Run, cfg: DataConfig, data: str | None) -> tuple[DataConfig, str | None]:
    """The run's data settings with ``data`` (--data) read as what moved: its data file, or, for a
    run on another run's data, that run's folder, or the data file the first run of the chain was
    trained on (returned apart, for ``run_dataset``)."""
    if data is not None and not isinstance(data, (str, os.PathLike)):
        raise ConfigError(
            f"data names the run's data file at a new path, got a {type(data).__name__}; to score arrays, use "
            "dgmkit.evaluation.evaluate(run.model, run.transform.held_out(x), log_volume=run.transform.log_volume) or "
            "log_likelihoods"
        )
    data = None if data is None else os.fspath(data)  # (a path from Python, as a string)
    if _names_first_data(cfg, data):
        return cfg, data
    if data is not None and cfg.codes_of:  # the run whose data it takes, at a new folder (pinned: check_derived_current)
        return dataclasses.replace(cfg, codes_of=str(full_path(data))), None
    if data is not None:
        if not is_data_file(cfg.dataset):
            where = "use --data-dir" if cfg.reads_folder else "read from no folder: it does not move"
            raise ConfigError(
                f"--data points at a moved data file, but {run.path} was trained on the named dataset {cfg.dataset!r} "
                f"({where})"
            )
        if not is_data_file(data):
            raise ConfigError(f"--data names a .npy, .npz, .mat, .csv or .parquet file, got {data!r}")
        return dataclasses.replace(cfg, dataset=data), None
    if is_data_file(cfg.dataset) and not Path(cfg.dataset).expanduser().is_file():
        raise DataError(f"no such data file: {cfg.dataset} (the data {run.path} was trained on); if it moved, --data PATH")
    return cfg, None


def _moved_schema(run: Run, cfg: DataConfig, schema: str | None) -> DataConfig:
    """The run's data settings with its table's schema read from ``schema`` (--schema), where the
    run was trained with one; a schema no longer where it was is refused, saying so."""
    if schema is not None:
        if cfg.schema is None:
            raise ConfigError(f"--schema: {run.path} was trained without a schema (its columns' kinds inferred)")
        return dataclasses.replace(cfg, schema=schema)
    if cfg.schema is not None and not Path(cfg.schema).expanduser().is_file():
        raise DataError(
            f"no such schema file: {cfg.schema} (the schema of the table {run.path} was trained on); if it moved, "
            "--schema PATH"
        )
    return cfg


def run_table(
    run: Run, given_table: bool, data_dir: str | None = None, data: str | None = None, schema: str | None = None
) -> Dataset | None:
    """The table a run was trained on (None for a run on images), read as ``run_data`` reads it
    (``data_dir``, ``data``: --data-dir, --data): its columns encode an input table and check an
    input array, and say what the numbers are of. Needed (read, or refused if it is not as
    recorded) where the input is a table (``given_table``); for an input array only where it can be
    read (a moved data file: the array is scored without its columns' names), unless a place to read
    it from was given."""
    if not is_table(run.cfg.data.dataset):
        return None
    try:
        return run_data(run, data_dir, data, schema)
    except DgmError:
        if given_table or data is not None or data_dir is not None or schema is not None:
            raise
        return None


def array_of_table_note(path: str, table: Dataset | None) -> str:
    """What an array given for a table run is taken to hold (the model's own encoding)."""
    cols = () if table is None else table.columns
    names = f" ({', '.join(c.name for c in cols[:3])}{', ...' if len(cols) > 3 else ''})" if cols else ""
    return (
        f"note: {path} is taken to hold values as the model sees them, each numeric column standardized (not in its "
        f"own units) and each categorical one as indices of its categories; for rows in the table's own units, give "
        f"a .csv with its header{names}"
    )


def _check_as_recorded(run: Run, dataset: Dataset) -> None:
    """The data's shape and levels must be those the run recorded, and the transform it recorded
    the one its model's family takes for them (a record edited from dynamic-binarize to integers
    scored integers by a Bernoulli: a positive log-likelihood)."""
    cfg, record = run.cfg.data, run.record["data"]
    want = tuple(record["event_shape"])
    if dataset.event_shape != want:
        source = f"the data of {cfg.codes_of}" if cfg.codes_of else cfg.dataset
        raise DataError(f"{source} now have shape {dataset.event_shape}, but the run was trained on {want}")
    if dataset.num_levels != record["num_levels"]:
        what = lambda n: "continuous values" if n is None else f"{n} levels"  # noqa: E731
        raise DataError(
            f"{cfg.dataset} now holds {what(dataset.num_levels)}, but the run was trained on {what(record['num_levels'])}: "
            "the data changed after training"
        )
    chosen = run.cfg.model.transform(dataset, cfg.binarize).kind
    if chosen != record["transform"]:
        raise DataError(
            f"the run records its data transformed as {record['transform']!r}, but its model ({run.cfg.family}) takes "
            f"{cfg.codes_of or cfg.dataset} as {chosen!r}: its record was edited, or the data changed after training"
        )


def split_data(
    run: Run,
    split: str,
    data_dir: str | None = None,
    data: str | None = None,
    dataset: Dataset | None = None,
    schema: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The split of a run's dataset (``dataset`` if already read with ``run_data``), transformed
    as the model scores it (with the fixed held-out noise seed for stochastic binarization or
    dequantization), and its labels."""
    dataset = dataset if dataset is not None else run_data(run, data_dir, data, schema)
    s = dataset.split(split)
    x = run.transform.held_out(s.x)  # on the CPU: the same noise on any device
    return x.to(run.device), None if s.y is None else s.y.to(run.device)


DECODE_BATCH = 1000  # latents decoded, or images reconstructed, at once by a figure: its memory is that of one batch


@torch.no_grad()
def decoded_means(run: Run, z: torch.Tensor, batch_size: int = DECODE_BATCH) -> torch.Tensor:
    """The means of p(x|z) for the latents z (N, *latent), decoded in batches (an interpolation's
    or a traversal's 100,000 latents at once held gigabytes of a conv decoder's activations): (N, *event)."""
    model = latent_model(run)
    return torch.cat([location(model.likelihood(c)) for c in z.split(batch_size)])


def decoded_name(run: Run) -> str:
    """What ``decoded_means`` gives for this run's model, in words, as the model declares it
    (``decoded_name``): the means of p(x|z), or a PixelVAE's greedy decode (it has no mean)."""
    return run.model.decoded_name


@torch.no_grad()
def reconstructions(run: Run, x: torch.Tensor, batch_size: int = DECODE_BATCH) -> torch.Tensor:
    """The model's reconstruction of each image of x (N, *event), in batches, as ``decoded_means``."""
    model = latent_model(run)
    return torch.cat([model.reconstruct(c) for c in x.split(batch_size)])


@torch.no_grad()
def posterior_means(run: Run, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The representative point of q(z|x) (the posterior mean where it has one), flattened, in
    batches: (N, M); refused where one is not finite (a model with huge weights), which no
    metric, plot or traversal could use."""
    codes = torch.cat(
        [location(latent_model(run).posterior(x[i : i + batch_size])).flatten(1) for i in range(0, len(x), batch_size)]
    )
    check_finite(codes, "posterior means (codes)")
    return codes


def layers_note(run: Run) -> str:
    """Which dimensions of a flattened code are which layer's, for a model of stochastic layers
    (``has_layers``) of more than one: its code is (z_1, ..., z_L) concatenated, which a figure's
    line says ("" for any other model)."""
    sizes = list(cast(LayerStack, run.model).sizes) if run.model.has_layers else []  # (declared by the stack)
    if len(sizes) < 2:
        return ""
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    spans = [f"z_{i + 1} {s}" if m == 1 else f"z_{i + 1} {s}-{s + m - 1}" for i, (s, m) in enumerate(zip(starts, sizes))]
    return f"; the code is the layers ({', '.join(f'z_{i + 1}' for i in range(len(sizes)))}) side by side, dimensions " + (
        ", ".join(spans)
    )


@torch.no_grad()
def codes_name(run: Run, x: torch.Tensor) -> str:
    """What ``posterior_means`` gives for this run's model, in words (``location_name``)."""
    return location_name(latent_model(run).posterior(x[:1]))


def to_display(x: torch.Tensor, run: Run) -> torch.Tensor:
    """Map data or model means to [0, 1] for a picture: integer levels by the highest, values
    the model scores in [0, 1] as they are, continuous data (which may lie anywhere) from the
    lower of 0 and their lowest value, black, to the higher of 1 and their highest, white (as
    the run recorded them; a run recorded before 2026-11-29: [0, 1], values beyond it clipped)."""
    d = run.record["data"]
    if d["transform"] == "integers":
        return x.float() / (d["num_levels"] - 1)
    lo, hi = run.record.get("value_range") or (0.0, 1.0)
    lo, hi = min(lo, 0.0), max(hi, 1.0)
    return ((x.double() - lo) / (hi - lo)).float().clamp(0, 1) if (lo, hi) != (0.0, 1.0) else x.float().clamp(0, 1)


def data_to_display(x: torch.Tensor, run: Run) -> torch.Tensor:
    """Data images for a picture, as ``to_display``, with their missing entries (NaN: a run trained
    on incomplete data) at mid-grey, as ``dgm impute`` draws them too."""
    return to_display(x, run).nan_to_num(nan=0.5)


def holes_note(x: torch.Tensor) -> str:
    """What a figure's note says of its data images' missing entries, if they have any."""
    n = int(torch.isnan(x).sum()) if x.is_floating_point() else 0
    return f" ({plural(n, 'missing entry', 'missing entries')} of the data images at mid-grey)" if n else ""


def encoded_holes_note(x: torch.Tensor) -> str:
    """What a result of the encoder (latent means, clusters) says of its inputs' missing entries, if
    they have any: it encodes them as 0, as the run trained (``VAE.posterior``)."""
    n = int(torch.isnan(x).sum()) if x.is_floating_point() else 0
    return f" ({plural(n, 'missing entry', 'missing entries')} in the inputs, which the encoder sees as 0)" if n else ""


_ESTIMATE_WORDS = {
    "exact": "exact",
    "importance-sampled": "importance-sampled",
    "bound": "a lower bound",
    "time-sampled": "a lower bound over sampled times",
}


def estimate_words(kind: str, transform: str) -> str:
    """What a run's log p(x) is, for a line of output: the model's declared estimate (``kind``),
    or a one-draw bound (``one_draw_bound``), as ``dgm eval`` says ("NLL (one-draw bound)")."""
    if one_draw_bound(kind, transform):
        return "a one-draw estimate of a lower bound (uniform dequantization)"
    return _ESTIMATE_WORDS.get(kind, kind)


def score_label(label: str, transform: str) -> str:
    """An objective's score name (``Objective.label``) as per-epoch lines and report pages show
    it: an exact log p(x) of uniformly dequantized integers is one draw of the noise, a bound
    (``one_draw_bound``), as ``dgm eval`` says."""
    return "log p(x) (one-draw bound)" if label == "log p(x)" and one_draw_bound("exact", transform) else label


def add_device_flag(
    p: argparse.ArgumentParser, what: str = "where the model computes", default: str = "auto", why: str = ""
) -> None:
    """--device auto|cpu|cuda: one flag for every command that computes with a model
    (``devices.resolve_device``; auto: CUDA where present). ``default`` is auto but where a
    command has a reason for another, which ``why`` says in the help."""
    p.add_argument(
        "--device",
        default=default,
        metavar="{auto,cpu,cuda}",
        help=f"{what}: auto (CUDA where present), cpu or cuda (default: {default}{'; ' + why if why else ''})",
    )


def add_input_flags(p: argparse.ArgumentParser) -> None:
    """--input ROLE=RUN (repeatable): another run in a role the run's family declares
    (``config.inputs``); --code-prior RUN is short for --input code-prior=RUN."""
    p.add_argument(
        "--input",
        action="append",
        default=None,
        metavar="ROLE=RUN",
        help="another run in a role this run's family takes (a VQ-VAE: code-prior=RUN, a model of its codes)",
    )
    p.add_argument("--code-prior", default=None, metavar="RUN", help="VQ-VAE: the same as --input code-prior=RUN")


def attach_inputs(run: Run, args: argparse.Namespace) -> dict[str, Run]:
    """Attach the runs named by --input (and --code-prior) to ``run``; returns role -> that run."""
    named = list(args.input or []) + ([] if args.code_prior is None else [f"code-prior={args.code_prior}"])
    inputs: dict[str, str] = {}
    for item in named:  # every flag checked before any run is read
        role, sep, path = item.partition("=")
        if not sep or not role or not path:
            raise ConfigError(f"--input takes ROLE=RUN_DIR, got {item!r}")
        if role in inputs:
            raise ConfigError(f"--input {role} is named twice")
        inputs[role] = path
    return {role: attach_input(run, role, path) for role, path in inputs.items()}


def add_output_flags(p: argparse.ArgumentParser, what: str = "PNG file to write") -> None:
    p.add_argument("--out", required=True, help=what)
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def png_output(args: argparse.Namespace) -> Path:
    """The --out of a figure command, checked before any work: a .png name, not an existing
    file (unless --force), never a file that the command reads (``command_output``)."""
    path = Path(args.out)
    if path.suffix.lower() != ".png":
        raise DataError(f"--out must name a .png file, got {path}")
    return command_output(args, path)


OTHER_RUN_FLAGS = ("input", "code_prior", "background")  # flags that name further runs a command reads


def command_output(
    args: argparse.Namespace,
    path: str | os.PathLike[str],
    *,
    runs: Sequence[str | os.PathLike[str]] | None = None,
    reads: Sequence[str | os.PathLike[str]] = (),
    written: Sequence[str | os.PathLike[str]] = (),
    what: str = "--out",
) -> Path:
    """``path`` as a Path, if a command on runs may write it there (``check_new_output``): never
    a file of the runs it reads (``runs``, by default ``args.run_dir``, and the runs named by
    --input, --code-prior and --background), nor a file that they read (``recorded_inputs``:
    ``runs`` with --data and --schema, the others as recorded), nor ``reads`` (the
    command's own input files), nor ``written`` (what this call writes besides); an existing file
    only with --force. Every command that writes a file a user names checks it here, before any
    work, so a new command inherits the checks."""
    data, schema = getattr(args, "data", None), getattr(args, "schema", None)
    mine = [Path(d) for d in (runs if runs is not None else [args.run_dir])]
    others = [Path(d) for d in _other_runs(args)]
    inputs = [*map(Path, reads), *(p for d in mine for p in recorded_inputs(d, data, schema))]
    inputs += [p for d in others for p in recorded_inputs(d)]
    protected = [*(p for d in (*mine, *others) for p in run_files(d)), *map(Path, written)]
    typed = getattr(args, what[2:].replace("-", "_"), None) if what.startswith("--") else None
    if isinstance(typed, str) and Path(typed) == Path(path):  # (as typed: a trailing "/", which Path drops, names a folder)
        path = typed
    checked = check_new_output(path, args.force, inputs=inputs, protected=protected, what=what)
    if what.startswith("--"):  # (a PNG folder's images, checked one by one, move in from a temporary folder: not each)
        note_stale_temporaries(checked)
    return checked


def note_stale_temporaries(path: Path) -> None:
    """Says which temporaries an unfinished write of ``path`` left beside it (``stale_temporaries``:
    a killed dgm's), and that they may be deleted; removes none (they are not this call's)."""
    for tmp in stale_temporaries(path):
        try:
            age = max(time.time() - tmp.lstat().st_mtime, 0.0)
        except OSError:  # (gone meanwhile)
            continue
        when = f"{age / 3600:.1f} h" if age >= 3600 else f"{age / 60:.0f} min" if age >= 60 else f"{age:.0f} s"
        kind, rm = ("folder", "rm -r") if tmp.is_dir() else ("file", "rm")
        say(
            f"note: {tmp} is left from a write of {path.name} that did not finish (a dgm killed while writing; last "
            f"changed {when} ago); unless a dgm is writing {path.name} now, it can be deleted: {rm} {shell_path(tmp)}"
        )


def _other_runs(args: argparse.Namespace) -> list[str]:
    """The run folders that --input ROLE=RUN, --code-prior RUN and --background RUN name (as
    given: ``attach_inputs`` checks the flags themselves when it reads the runs)."""
    named: list[str] = []
    for flag in OTHER_RUN_FLAGS:
        value = getattr(args, flag, None)
        for item in value if isinstance(value, list) else [] if value is None else [value]:
            path = str(item).partition("=")[2] if flag == "input" else str(item)
            named += [path] if path else []
    return named


def figure_run(args: argparse.Namespace, check: Callable[[Run], None] | None = None) -> tuple[Path, Run]:
    """A figure command's --out (``png_output``, checked before any work) and its run, loaded
    where --device says and refused by ``check`` (a ConfigError) if it cannot make the figure."""
    out = png_output(args)
    run = load_run(args.run_dir, device=args.device)
    if check is not None:
        check(run)
    return out, run


def figure_split(
    args: argparse.Namespace, check: Callable[[Run], None] | None = None, at_least: int = 1
) -> tuple[Path, Run, torch.Tensor, torch.Tensor | None]:
    """``figure_run``, then the --split of the run's data and its labels (``split_data``), refused
    where it holds fewer than ``at_least`` rows (``enough_rows``): where a figure of the run's
    images starts."""
    out, run = figure_run(args, check)
    x, y = split_data(run, args.split, args.data_dir, args.data, schema=args.schema)
    enough_rows(x, args.split, at_least)
    return out, run, x, y


def positive_count(v: object) -> bool:
    """Whether ``v`` is an integer >= 1 (a Python or NumPy integer; not a bool, not a float)."""
    if isinstance(v, bool):
        return False
    try:
        return operator.index(v) >= 1  # type: ignore[arg-type]
    except TypeError:
        return False


def enough_rows(x: torch.Tensor, split: str, at_least: int, why: str = "a spread over the data") -> None:
    """A split of ``len(x)`` rows, refused (ConfigError) where a command needs ``at_least``."""
    if len(x) < at_least:
        raise ConfigError(f"the {split} split holds {plural(len(x), 'row')}; this needs at least {at_least} ({why})")


def data_name(run: Run) -> str:
    """What the run's data are, as a figure's title names them: its dataset, or for a run on
    another run's codes or latents (``codes_of``) "the codes of RUN" (not the dataset they came from)."""
    return f"the codes of {run.cfg.data.codes_of}" if run.cfg.data.codes_of else str(run.cfg.data.dataset)


def shows_images(run: Run) -> bool:
    """Whether the run's data are pictures: rows (1, 1, D) are a table or 2-D points, not images."""
    shape = run.record["data"]["event_shape"]
    return len(shape) == 3 and shape[1] > 1 and shape[2] > 1


def images_only(run: Run, rows_written: bool = False) -> None:
    """Refuses (ConfigError) a figure of images for a run whose data are rows of values
    (``rows_written``: dgm sample writes its samples to --out FILE.npy, and says so), or grids of a
    VQ-VAE's code indices (``codes_of``: numbers in an arbitrary order, drawn as grey they were
    pictures of nothing, called "test images")."""
    if not shows_images(run):
        shape, model = tuple(run.record["data"]["event_shape"]), run.model
        if math.prod(shape) == 2 and model.estimate_kind == "exact" and model.can_sample:  # (what dgm density draws)
            hint = "dgm density RUN_DIR --out FILE.png"
        else:
            hint = "dgm latents or dgm eval" if model.has_latents else "dgm eval or dgm score"
        written = "--out FILE.npy writes its samples as an array of rows; or " if rows_written else ""
        raise ConfigError(
            f"{run.path}'s data are rows of {math.prod(shape)} values {shape}, not images: {written}use {hint}"
        )
    if run.cfg.data.codes_of:  # (the data another run makes, shaped as images: a VQ-VAE's grids of code indices)
        hint = "dgm latents or dgm eval" if run.model.has_latents else "dgm eval"
        raise ConfigError(
            f"{run.path} models the codes of {run.cfg.data.codes_of}, not images: its data are grids of code indices, "
            f"in an arbitrary order, which no picture shows; use {hint}"
        )


def write_png(path: Path, data: bytes) -> Path:
    atomic_write_bytes(path, data)
    return path


def fit_step(cfg: RunConfig) -> str:
    """What one step of a run's fit is called where its progress is shown: an "epoch", an "EM
    iteration" for a family fitted by EM (its metrics.jsonl lines are numbered "epoch" alike)."""
    return "EM iteration" if cfg.model.fit == "em" else "epoch"


def _not_ours(path: Path, again: str, why: str = "") -> DataError:
    article = "an" if path.name[:1] in "aeiou" else "a"
    why = f" ({why})" if why else ""
    return DataError(f"{path} is not {article} {path.name} of dgmkit{why}; move it away to keep it, then {again}")


def _own_json(path: Path, again: str, max_bytes: int) -> object:
    """The JSON a run folder's result file ``path`` holds (None where there is none), read before
    any work; a folder, a file over ``max_bytes`` or one that is not JSON is refused (a DataError
    that says to move it away, then ``again``), never overwritten."""
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():
        raise _not_ours(path, again, "not a regular file")
    if path.stat().st_size > max_bytes:
        article = "an" if path.name[:1] in "aeiou" else "a"
        raise DataError(
            f"{path} is larger than {max_bytes >> 20} MiB: not {article} {path.name} of dgmkit; move it away to keep it, "
            f"then {again}"
        )
    try:
        return parse_json(read_regular(path, max_bytes))  # (regular: a FIFO put there since is_file blocks no read)
    except UnicodeDecodeError:
        raise _not_ours(path, again, "not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise _not_ours(path, again, f"not JSON: {str(e)[:200]}") from None
    except ValueError as e:  # (parse_json's words: a number beyond a float's range, a key twice, NaN, ...)
        raise _not_ours(path, again, f"not strict JSON: {str(e)[:200]}") from None
    except (OSError, DgmError):
        raise _not_ours(path, again) from None


def own_result(
    path: Path, marker: str, again: str, max_bytes: int = 64 << 20, check: Callable[[dict], str | None] | None = None
) -> dict | None:
    """The result a run folder's file of a command's latest result holds (a JSON object holding
    the field ``marker``; None where there is no file), read before any work; a folder, a file of
    anything else or a result that ``check`` finds a problem in (it names the field) is refused
    (a DataError), never overwritten."""
    old = _own_json(path, again, max_bytes)
    if old is not None and (not isinstance(old, dict) or marker not in old):
        raise _not_ours(path, again)
    problem = None if old is None or check is None else check(cast(dict, old))
    if problem is not None:
        raise _not_ours(path, again, problem)
    return cast("dict | None", old)


def own_result_file(path: Path, marker: str, again: str, max_bytes: int = 64 << 20) -> Path:
    """``path``, a run folder's file of a command's latest result (a JSON object holding the field
    ``marker``), checked before any work: absent, or one that dgmkit wrote, which the new result
    replaces; a folder or a file of anything else is refused (a DataError), never overwritten."""
    own_result(path, marker, again, max_bytes)
    return path


def write_own_result(path: Path, marker: str, again: str, result: dict) -> None:
    """Writes ``result`` to ``path``, a run folder's file of a command's latest result, under its
    lock and checked again there (``own_result_file``): a file that another program made there
    since the check before the work is refused (a DataError) and kept, never replaced."""
    with results_locked(path.parent, path.name):
        own_result(path, marker, again)
        atomic_write_json(path, result)


def own_result_table(path: Path, header: str | tuple[str, ...], again: str, named_columns: bool = False) -> Path:
    """``path``, a run folder's CSV file of a command's latest result, checked before any work as
    ``own_result_file`` checks JSON: absent, or a file whose first line is ``header`` (the columns
    dgmkit writes; one of them, given several: those it wrote before), followed, with
    ``named_columns``, by columns named as dgmkit names scores (lower-case identifiers)."""
    if not path.exists() and not path.is_symlink():
        return path
    try:
        first = read_regular(path, 4096).split(b"\n", 1)[0].decode()
    except (OSError, UnicodeDecodeError):
        raise _not_ours(path, again) from None

    def ours(header: str) -> bool:
        fixed, more = header.split(","), first.split(",")[header.count(",") + 1 :]
        named = all(c.isidentifier() and c == c.lower() for c in more) if named_columns else not more
        return first.split(",")[: len(fixed)] == fixed and named

    if not any(map(ours, (header,) if isinstance(header, str) else header)):
        raise _not_ours(path, again)
    return path


def standardized_note(dataset: Dataset) -> str | None:
    """What a score of a table's rows is of, where the table has numeric columns (None if not):
    dgmkit standardizes them as it reads them, so their densities are of standardized values."""
    numeric = [c.name for c in dataset.columns if c.kind == "numeric"]
    if not numeric:
        return None
    # (each name cut to 40 characters: the note is kept in eval.json, whose texts hold at most MAX_RECORD_TEXT)
    shown = ", ".join(shortened(n) for n in numeric[:4]) + (", ..." if len(numeric) > 4 else "")
    return (
        f"a table: its {plural(len(numeric), 'numeric column')} ({shown}) {'is' if len(numeric) == 1 else 'are'} "
        "scored standardized, as dgmkit "
        "reads them (mean 0, sd 1 over their observed values): log-densities of those values, not of the file's "
        "units (in those: less the sum of log sd over a row's observed numeric columns)"
    )


def recorded_inputs(run_dir: str | os.PathLike[str], data: str | None = None, schema: str | None = None) -> list[Path]:
    """The files a command on the run in ``run_dir`` reads besides the run folder, which no output
    may replace (even with --force): its data file (or ``data``), its table's schema (and
    ``schema``), and, for a run on the data of another run (``codes_of``), that run's files and
    the files it reads in turn. From the run's record alone (``recorded_config``: no weights
    read), so outputs are checked before the run loads; a run folder that cannot be read protects
    ``schema`` alone (loading it then says what is wrong)."""
    try:
        d = recorded_config(run_dir).data
    except DgmError:
        return [Path(schema)] if schema else []
    return [*_data_inputs(d, data), *([Path(schema)] if schema else [])]


def _data_inputs(d: DataConfig, data: str | None) -> list[Path]:
    # --data: the run whose data it takes, at a new folder (or the data file of the first run of the chain)
    moved = data if d.codes_of and data and not _names_first_data(d, data) else None
    files = [Path(v) for v in (None if moved else data, d.schema) if v]
    if d.dataset and is_data_file(d.dataset) and not data:
        files.append(Path(d.dataset))
    if d.codes_of:
        files += run_files(moved or d.codes_of)
        # (a loop, a longer chain or an unreadable source run: the command says so itself when it makes its data)
        for _, recorded in recorded_chain(moved or d.codes_of):
            if recorded is None:
                break
            files += [Path(recorded.schema)] if recorded.schema else []
            files += [Path(recorded.dataset)] if recorded.dataset and is_data_file(recorded.dataset) else []
            files += run_files(recorded.codes_of) if recorded.codes_of else []
    return files


def chain_reads_folder(d: DataConfig) -> bool:
    """Whether a run's data are read from a data folder (--data-dir): a dataset of one, or, for a run
    on another run's data (``codes_of``), the data of the first run of the chain (``reads_folder``
    says true of every such run). From the runs' records alone (no weights read); true where a run of
    the chain cannot be read, or loops (reading its data says what is wrong)."""
    if not d.codes_of:
        return d.reads_folder
    first = [recorded for _, recorded in recorded_chain(d.codes_of)][-1]  # (the chain's end: its first run, if read)
    return first is None or first.reads_folder


@dataclasses.dataclass(frozen=True)
class ResultsFile:
    """A run folder's record of a command's results, keyed by their protocol (``evals.json`` of
    ``dgm eval``, ``ood.json`` of ``dgm ood``): ``{"results": {protocol: result}}``. Each result
    holds the field ``marker``; ``again`` says how to rerun the command. A file of that name that
    dgmkit did not write is refused, before any work, never overwritten: one that is not JSON of
    results holding the marker, or holds a result that ``check`` finds a problem in (it names the
    field; ``evaluation.report.record_problem`` for evals.json)."""

    name: str
    marker: str
    again: str
    protocol: Callable[[dict], str]
    max_bytes: int = 64 << 20
    check: Callable[[dict], str | None] | None = None

    def kept(self, run_dir: Path) -> dict:
        """The results by protocol (empty if there is no file yet)."""
        path = run_dir / self.name
        old = _own_json(path, self.again, self.max_bytes)
        if old is None:
            return {}
        results = old.get("results") if isinstance(old, dict) else None
        if not isinstance(results, dict) or not all(isinstance(v, dict) and self.marker in v for v in results.values()):
            raise _not_ours(path, self.again)
        for protocol, result in results.items():
            problem = None if self.check is None else self.check(result)
            if problem is not None:
                raise _not_ours(path, self.again, f"its result {protocol!r}: {problem}")
        return results

    def keep(self, run_dir: Path, result: dict, also: Callable[[], None] | None = None) -> int:
        """Add ``result`` under its protocol, the file read again under a lock so that two
        commands on one run at once both stay; ``also`` writes, under the same lock, a file that
        goes with the result (``dgm ood``'s per-input scores: the pair is of one call). Returns how
        many results it holds."""
        with results_locked(run_dir, self.name):
            key = self.protocol(result)
            # a result kept under the words its protocol had before (ood.json's fit of every row was keyed by
            # --fit-limit) is this one's protocol all the same: replaced, not kept beside it
            kept = {k: v for k, v in self.kept(run_dir).items() if k == key or self._key(v) != key}
            kept[key] = result
            atomic_write_json(run_dir / self.name, {"results": kept})
            if also is not None:
                also()
        return len(kept)

    def _key(self, result: dict) -> str | None:
        """The protocol of a kept ``result`` as said now (None: one that cannot be said)."""
        try:
            return self.protocol(result)
        except (KeyError, TypeError, AttributeError, ValueError):
            return None


@contextlib.contextmanager
def results_locked(run_dir: Path, name: str) -> Iterator[None]:
    """Holds the lock under which the run folder's results file ``name`` (and what goes with it)
    is written, waiting for another command that holds it."""
    lock = _lock.acquire(run_dir / results_lock(name), wait=True)
    try:
        yield
    finally:
        lock.release()


def check_row_shape(name: str, shape: tuple[int, ...], event: tuple[int, ...]) -> None:
    """The rows of an array of ``shape`` (N first), refused unless they are the run's ``event``
    shape, flat, or (H, W) or (H, W, 1) of its one channel: other shapes of as many values are
    other data (images channels-last, another side)."""
    rows, size = tuple(shape[1:]), math.prod(event)
    one_channel = len(event) == 3 and event[0] == 1  # (H, W, 1) then holds its values in the same order
    taken = {event, (size,)} | ({event[1:], (*event[1:], 1)} if one_channel else set())
    if len(rows) == 3 and rows not in taken and (rows[2], rows[0], rows[1]) == event:
        raise DataError(
            f"{name}: images of shape {rows} are the run's {event} channels-last; dgmkit reads (N, C, H, W): "
            "transpose them first, as numpy.transpose(x, (0, 3, 1, 2))"
        )
    if len(shape) < 2:
        raise DataError(f"{name}: an array of shape {tuple(shape)}, but the run's data are rows of shape {event}")
    if math.prod(rows) != size:
        raise DataError(f"{name}: rows of {math.prod(rows)} values, but the run's data have rows of {size} (shape {event})")
    if rows not in taken:
        shapes = " or ".join(str(s) for s in sorted(taken, key=len, reverse=True))
        raise DataError(f"{name}: rows of shape {rows}, but the run's data are {event}: give rows of shape {shapes}")


def read_input_file(
    path: str,
    run: Run,
    columns: tuple,
    verb: str,
    max_values: int | None = None,
    exact: bool = False,
    first: int | None = None,
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """A data file's rows (a .npy, .npz or, for a table run, .csv file), checked against the run's
    data (shape, levels, categories) and shaped as them (float32, or with ``exact`` float64, which
    holds every value of a float16, float32 or float64 file as it is; NaN: missing; a bool array's
    True the highest level, as a black and white PNG is read), and the file's own shape.
    ``verb``: what the command does with them, for the messages; ``max_values``: the most values
    (rows x values per row) that the command takes in one call; ``first``: only the file's first
    rows are taken (and counted), this many."""
    p = Path(path)
    if p.suffix.lower() not in (".npy", ".npz", *TABLE_SUFFIXES):
        raise DataError(f"the data to {verb} must be a .npy, .npz, .csv or .parquet file, got {p}")
    if not p.exists():
        raise DataError(f"no such data file: {p}")
    if not p.is_file():
        raise DataError(f"{p} is not a regular file (a folder, a device or a pipe): give a data file")
    if p.suffix.lower() in TABLE_SUFFIXES:
        if not columns:
            raise DataError(f"{p.name} is a table, but {run.path} was not trained on one")
        x, _ = read_table(p, columns=columns)
    else:
        x, _ = read_arrays(p, None)
    event = tuple(run.record["data"]["event_shape"])
    check_row_shape(p.name, x.shape, event)
    x = x if first is None else x[:first]
    shape = x.shape
    if max_values is not None and x.size > max_values:  # (before a float copy of them is made)
        most = max_values // math.prod(event)
        raise DataError(
            f"{p.name} holds {len(x)} rows of {math.prod(event)} values; dgm {verb} takes at most {most} such rows "
            f"({max_values} values) in one call: {verb} them in parts"
        )
    levels = run.record["data"]["num_levels"]
    if x.dtype == np.bool_ and levels is not None:  # black and white, as a 1-bit PNG is read
        x = x.astype(np.uint8) * np.uint8(levels - 1) if levels <= 256 else x.astype(np.float32) * (levels - 1)
    x = check_images(x, p.name, min_rows=1)
    _check_input_levels(x, p, levels, columns)
    return torch.from_numpy(x.astype(np.float64 if exact else np.float32).reshape(len(x), *event)), shape


def _check_input_levels(x: np.ndarray, p: Path, levels: int | None, columns: tuple) -> None:
    """An input file's values refused unless they are the run's: its integer levels, or each
    categorical column's category indices (a table's); 0/1 images of a run of more levels noted."""
    seen = x[~np.isnan(x)] if x.dtype.kind == "f" else x
    if columns:  # a table's rows: each categorical column holds its categories' indices 0..K-1
        rows = x.reshape(len(x), -1).astype(np.float64)
        for j, c in enumerate(columns):
            v = rows[~np.isnan(rows[:, j]), j]
            bad = v.size and (v.min() < 0 or v.max() > c.levels - 1 or not np.all(v == np.round(v)))
            if c.kind == "categorical" and bad:
                raise DataError(
                    f"{p.name}: column {j} ({c.name!r}) is categorical: its values must be the indices "
                    f"0..{c.levels - 1} of its categories {list(c.categories)}"
                )
    elif (
        levels is not None
        and seen.size
        and (seen.min() < 0 or seen.max() > levels - 1 or not np.all(seen == np.round(seen)))
    ):
        hint = f" (images scaled to [0, 1]: multiply by {levels - 1} and round)" if seen.max() <= 1 < levels - 1 else ""
        raise DataError(f"{p.name}: the run's data are integers 0..{levels - 1}; the file holds {values_seen(seen)}{hint}")
    elif levels is not None and levels > 2 and np.any(seen == 1) and np.all((seen == 0) | (seen == 1)):
        say(
            f"note: {p.name} holds only the values 0 and 1 of the run's levels 0..{levels - 1}, which it reads as nearly "
            f"black images; binary images are the levels 0 and {levels - 1} (multiply them by {levels - 1}), as black "
            "and white PNGs are read"
        )
