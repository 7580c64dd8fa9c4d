"""``dgm impute``: fill in the missing entries of data with a model trained on incomplete data.

The model's importance-sampling imputation (``objectives.miwae.impute``, K draws per
datapoint): a single imputation (the self-normalized estimate of E[x_m | x_o]; a model that gives
it in closed form, PPCA, gives it exactly, ``exact_imputation``) and, with
``--draws``, multiple imputations drawn from p(x_m | x_o), written as the data are stored (data
stored as integer levels: rounded to the nearest level; a table's whole-number columns: to a
whole number in their units, as the CSV writes them). The data are either a split of the run's
own data (missing entries from ``--missing-rate`` or from the file) or a file given by path (NaN
marks a missing entry). Where the run removed the entries itself, the values that were there
are known: the imputations are scored as written (RMSE on the missing entries), next to the
classical imputers (``--baselines``) on the same incomplete data, rounded alike.
"""

import argparse
import dataclasses
import io
import math
import shlex
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from dgmkit._io import atomic_write_bytes
from dgmkit.cli.argtypes import SEED
from dgmkit.cli.common import (
    add_count_flag,
    add_data_flags,
    add_device_flag,
    add_limit_flag,
    add_run_parser,
    add_split_flag,
    array_of_table_note,
    command_output,
    data_to_display,
    own_result_file,
    plural,
    read_input_file,
    run_data,
    say,
    say_partly_trained,
    seeded_rows,
    shows_images,
    write_own_result,
)
from dgmkit.config import Run, load_run
from dgmkit.config.inputs import run_dataset
from dgmkit.data import Dataset
from dgmkit.data.missing import observed
from dgmkit.data.registry import is_data_file, is_table
from dgmkit.data.table import TABLE_SUFFIXES, write_table
from dgmkit.errors import ConfigError, DataError
from dgmkit.evaluation.figures import image_grid_png
from dgmkit.evaluation.imputation import (
    BASELINES,
    baseline_impute,
    check_imputes,
    from_data_units,
    impute_batched,
    rmse,
    to_data_units,
)
from dgmkit.models import LatentVariableModel

__all__ = ["add_parser", "run_impute"]

_OUT_SUFFIXES = (".npy", ".npz", ".csv")
MAX_DRAWN_VALUES = 1 << 28  # the multiple imputations, held in memory (float64) and written at once
# the values of an INPUT file (rows x values per row) in one call, as dgm score takes: read as float64, with the
# model's copy, its imputation and the output some 40 bytes a value (MNIST's training split, 47M values, fits)
MAX_IMPUTE_VALUES = 1 << 26


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_run_parser(
        sub,
        "impute",
        help="fill in missing entries (NaN) with a VAE trained by --objective miwae, or with a VAE trained on complete "
        "data (by the ELBO or another objective) given a file of inputs with NaN",
        description="Fill in the missing entries (NaN; empty cells of a table) of a split of the run's data or of a "
        "file of inputs named after the run folder. The run is a VAE trained by --objective miwae (its splits hold "
        "missing entries where it was trained with --missing-rate or on a file with NaN), or a VAE trained on "
        "complete data by the ELBO or another of its objectives, given a file of inputs with NaN (a note then says "
        "that nothing fitted its encoder to incomplete inputs), or a PPCA run (fitted by EM where its splits hold missing "
        "entries) of its split or given such a file (imputed exactly: "
        "E[x_m | x_o] and, with --draws, draws of p(x_m | x_o); --k unused).",
    )
    p.add_argument(
        "input",
        nargs="?",
        default=None,
        help="a .npy or .npz file with missing entries as NaN, or a table (.csv or .parquet) like the one the run was "
        "trained on, with empty cells (default: the run's own --split)",
    )
    p.add_argument(
        "--out",
        required=True,
        help=".npy (the single imputation), .npz (x, and draws with --draws) or, for a table, .csv (in its own units)",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_split_flag(p, None, "the split of the run's own data to impute, where no INPUT is given (default: train)")
    add_count_flag(p, "--k", 1, 10**7, default=10000, help="importance samples per datapoint (PPCA: none)")
    add_count_flag(
        p,
        "--draws",
        0,
        10**4,
        default=0,
        help="multiple imputations to draw (sampling importance resampling; PPCA: exact draws)",
    )
    p.add_argument(
        "--baselines",
        nargs="+",
        choices=BASELINES,
        default=[],
        metavar="NAME",
        help=f"classical imputers to score beside the model, on the same incomplete data: {', '.join(BASELINES)}",
    )
    add_limit_flag(p, "a seeded random subset of N datapoints of the split; of an INPUT file, its first N rows")
    p.add_argument(
        "--weights",
        choices=["best", "last"],
        default="best",
        help="the weights that impute: best (of the validation score) or last (the end of training: MIWAE's "
        "in-sample protocol, a fixed number of epochs)",
    )
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--figure", default=None, metavar="PNG", help="image data: observed, imputed and true images side by side"
    )
    add_data_flags(p)
    add_device_flag(p)
    p.set_defaults(func=run_impute)


def _outputs(args: argparse.Namespace, run: Run) -> tuple[Path, Path | None]:
    out = Path(args.out)
    if out.suffix.lower() not in _OUT_SUFFIXES:
        raise ConfigError(f"--out must name a .npy, .npz or (for a table) .csv file, got {out}")
    if args.draws and out.suffix.lower() != ".npz":
        raise ConfigError("--draws writes several imputations: --out must name a .npz file")
    table_run = is_table(run.cfg.data.dataset)
    if args.input and Path(args.input).suffix.lower() in TABLE_SUFFIXES and not table_run:
        raise DataError(f"{args.input} is a table, and {run.path} was trained on images: give them as a .npy or .npz file")
    if out.suffix.lower() == ".csv" and not table_run:
        raise ConfigError(f"--out .csv writes a table, and {run.path} was not trained on one; name a .npy file")
    reads = [args.input] if args.input else []
    out = command_output(args, out, reads=reads)
    figure = None
    if args.figure is not None:
        figure = Path(args.figure)
        if figure.suffix.lower() != ".png":
            raise ConfigError(f"--figure must name a .png file, got {figure}")
        if table_run:
            raise ConfigError("--figure shows images; the run models a table: leave it out")
        shape = tuple(run.record["data"]["event_shape"])
        if not shows_images(run):  # (flat rows drew strips one pixel high; dgm reconstruct and the others refuse them)
            raise ConfigError(
                f"--figure shows images; the run's data are rows of {math.prod(shape)} values {shape}, not "
                "images: leave it out"
            )
        if run.cfg.data.codes_of:
            raise ConfigError(
                f"--figure shows images; the run models the codes of {run.cfg.data.codes_of}, grids of "
                "code indices in an arbitrary order, which no picture shows: leave it out"
            )
        figure = command_output(args, figure, reads=reads, written=[out], what="--figure")
    return out, figure


def _array_bytes(out: Path, arrays: dict[str, np.ndarray]) -> bytes:
    """The bytes of ``out``: a .npy file of the single imputation, or a .npz archive of every array
    (``x``, and ``draws`` with --draws), whatever their number."""
    buf = io.BytesIO()
    if out.suffix.lower() == ".npy":
        np.save(buf, arrays["x"])
    else:
        np.savez(buf, **cast("dict[str, Any]", arrays))  # names the caller's: none is savez's allow_pickle
    return buf.getvalue()


def run_impute(args: argparse.Namespace) -> int:
    run = load_run(args.run_dir, which=args.weights, device=args.device)
    out, figure = _outputs(args, run)
    own_result_file(run.path / "impute.json", "rmse", "impute again")  # a foreign impute.json is refused before any work
    _check_request(args, run)
    args.split = args.split or "train"  # (None where not given, so that INPUT refuses it)
    transform = run.transform
    dataset = run_data(run, args.data_dir, args.data, args.schema)
    columns = dataset.columns
    data, truth, file_shape, where = _incomplete(args, run, dataset)
    missing = ~observed(data)
    # the data, masks and scores stay on the CPU (the noise of the transform drawn there, the same on any
    # device); only the model's input goes to its device, and its imputations come back
    x = transform.held_out(data).to(run.device)
    single, multiple = impute_batched(cast(LatentVariableModel, run.model), x, k=args.k, draws=args.draws, seed=args.seed)
    single, multiple = single.cpu(), None if multiple is None else multiple.cpu()
    single_data = _written(torch.where(missing, to_data_units(single, transform), data.double()), missing, columns, run)
    say(
        f"imputed {plural(int(missing.sum()), 'missing entry', 'missing entries')} of "
        f"{plural(len(data), 'datapoint')} ({where}) "
        + ("by the exact E[x_m | x_o]" if run.model.exact_imputation else f"with k = {args.k} importance samples")
        + (f", and {plural(args.draws, 'multiple imputation')}" if args.draws else "")
    )
    _model_notes(args, run, dataset)
    arrays = {"x": single_data.numpy().reshape(file_shape)}
    if multiple is not None:
        draws = _written(torch.where(missing, to_data_units(multiple, transform), data.double()), missing, columns, run)
        arrays["draws"] = draws.numpy().reshape(args.draws, *file_shape)
    scores = None
    if truth is not None:
        scores = _scores(args, run, data, truth, single_data, missing, columns)
    _write_imputed(args, out, arrays["x"].reshape(len(data), -1), columns, arrays)
    say(f"wrote {out}")
    _output_notes(args, run, out, columns, (len(data), len(dataset.split(args.split).x)))
    if figure is not None:
        _figure(figure, run, data, single_data, truth)
        say(f"wrote {figure}")
    if scores is not None:
        write_own_result(run.path / "impute.json", "rmse", "impute again", scores)
        say(f"wrote {run.path / 'impute.json'}")
    return 0


def _check_request(args: argparse.Namespace, run: Run) -> None:
    """Refuses what ``run`` cannot do with these flags: INPUT with --split, or with --baselines; a model
    that cannot impute, dequantized data, draws of a model of binarized levels."""
    if args.baselines and args.input:
        raise ConfigError(
            "--baselines score imputations against the removed values: they need the run's own data, not INPUT"
        )
    if args.split is not None and args.input:
        raise ConfigError("INPUT is imputed as it is, row for row, not a split of the run's own data: leave out --split")
    check_imputes(run.model)  # (a flow's dequantized data are refused below: that a flow cannot impute comes first)
    if run.transform.kind == "dequantize":  # (PPCA, of no likelihood to choose, was told to choose a discrete one)
        fix = (
            "train with a discrete likelihood"
            if run.cfg.model.has_setting("likelihood")
            else f"{run.cfg.model.describe()} has no discrete likelihood: it imputes tables and continuous data"
        )
        raise ConfigError(f"imputation of dequantized data is not supported: {fix}")
    if run.transform.kind == "dynamic-binarize" and args.draws:
        raise ConfigError(
            f"--draws: {run.path} models binarized versions of the data's levels {_levels(run)} "
            "(a bernoulli likelihood), so its draws are binary pixels, not draws of p(x_m | x_o) in the data's levels; "
            "leave out --draws (the single imputation is written in the levels) or train with --likelihood categorical"
        )


def _model_notes(args: argparse.Namespace, run: Run, dataset: Dataset) -> None:
    """What to know of the model that imputed: an array INPUT read as the rows of a table, a model
    trained on complete data, weights of a run stopped within an epoch."""
    if args.input and Path(args.input).suffix.lower() not in TABLE_SUFFIXES and is_table(run.cfg.data.dataset):
        say(array_of_table_note(args.input, dataset))
    # (a model of exact p(z|x_o), PPCA, has no encoder to fit to incomplete inputs)
    if args.input and not run.model.exact_imputation and not _trained_on_incomplete(dataset):
        say(
            f"note: {run.path} was trained on complete data (by its {run.cfg.model.training_objective().label}): "
            "nothing fitted its encoder q(z|x_o) to incomplete inputs, as --objective miwae on incomplete data does"
        )
    say_partly_trained(run)


def _output_notes(args: argparse.Namespace, run: Run, out: Path, columns: tuple, rows: tuple[int, int]) -> None:
    """What the file ``out`` holds: a split's rows of a data file (``rows``: how many it holds, of
    how many the split has), a table's rows as the model sees them, imputations rounded to the
    data's levels."""
    if not args.input and is_data_file(run.cfg.data.dataset):
        command = f"dgm impute {shlex.quote(str(args.run_dir))} {shlex.quote(run.cfg.data.dataset)} --out FILE"
        fill = f"; to fill the file itself, row for row: {command}"
        kept, total = rows  # (it said "the rows of the split" of the --limit rows drawn from it)
        which = "the rows" if kept == total else f"{kept} of the {total} rows, drawn with --seed {args.seed},"
        say(
            f"note: {out} holds {which} of the {args.split} split, a seeded share of {run.record['data']['name']}'s "
            f"rows in a seeded order" + (fill if run.cfg.data.missing_rate == 0 else "")
        )
    if columns and out.suffix.lower() != ".csv":
        whole = _whole_number_columns(columns)
        rounded = f"; the imputations of {', '.join(whole)} rounded to whole numbers in them, as the CSV writes them"
        say(
            f"note: {out} holds the rows as the model sees them, each numeric column standardized (not in its own "
            f"units{rounded if whole else ''}) and each categorical one as indices of its categories; --out FILE.csv "
            "writes them in the table's units"
        )
    if not columns and _levels(run) is not None:
        say(
            f"note: {out} holds each imputation rounded to the nearest of the data's levels {_levels(run)} (the "
            "estimate of E[x_m | x_o], rounded), as the data are stored"
        )


def _trained_on_incomplete(dataset: Dataset) -> bool:
    """Whether the training split held missing entries (NaN), so that training (MIWAE's, the one
    objective that takes them) fitted the encoder q(z|x_o) to incomplete inputs."""
    x = dataset.split("train").x
    return x.is_floating_point() and bool(torch.isnan(x).any())


def _removed_values(args: argparse.Namespace, run: Run, data: torch.Tensor) -> torch.Tensor | None:
    """The split ``data`` as it was before the run's --missing-rate removed entries of it (the run
    removed them itself: the values that were there are known); None for a run that removed none."""
    if run.cfg.data.missing_rate <= 0:
        return None
    source = dataclasses.replace(
        run.cfg.data,
        dataset=args.data or run.cfg.data.dataset,
        schema=args.schema or run.cfg.data.schema,  # (as run_data read them)
    )
    complete = run_dataset(dataclasses.replace(source, missing_rate=0.0), args.data_dir or None)
    truth = complete.split(args.split).x.float()
    if truth.shape != data.shape or not torch.equal(truth[observed(data)], data[observed(data)].float()):
        raise DataError(f"the complete data of {run.path} no longer match its incomplete data")
    return truth


def _incomplete(
    args: argparse.Namespace, run: Run, dataset: Dataset
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, ...], str]:
    """The datapoints to impute (INPUT's first --limit rows, row for row, or --limit of the split's
    drawn with --seed), the values that the run's --missing-rate removed from them (or None:
    unknown), the shape that the output file keeps, and words for where they come from; checked
    to have something to impute and, with --baselines, something to score."""
    truth = None
    if args.input:
        # its observed values are written back as they are: float64 holds those of any float file
        data, file_shape = read_input_file(
            args.input, run, dataset.columns, "impute", MAX_IMPUTE_VALUES, exact=True, first=args.limit
        )
        whole = args.limit is None or len(data) < args.limit  # (fewer rows than --limit: the file's all)
        where = args.input if whole else f"the first {plural(len(data), 'row')} of {args.input}"
    else:
        data = dataset.split(args.split).x
        file_shape = tuple(data.shape)
        where = f"the {args.split} split of {run.record['data']['name']}"
        truth = _removed_values(args, run, data)
    idx = None if args.input else seeded_rows(len(data), args.limit, args.seed)  # (a file's: its first rows, read so)
    drawn = idx is not None and bool((~observed(data)).any())  # (the split has holes; the draw may hold none)
    if idx is not None:
        data, truth = data[idx], None if truth is None else truth[idx]
        file_shape = (len(idx), *file_shape[1:])
    missing = ~observed(data)
    if not missing.any():
        _refuse_nothing_to_impute(args, where, drawn)
    if truth is not None and not (missing & ~torch.isnan(truth)).any():
        truth = None  # every missing entry was missing in the data file already: no value known to score against
    if args.baselines and truth is None:
        raise ConfigError(
            "--baselines score imputations against the values that --missing-rate removed; "
            f"{where} has no such entries (the run's --missing-rate is {run.cfg.data.missing_rate})"
        )
    if args.draws * data.numel() > MAX_DRAWN_VALUES:
        raise ConfigError(
            f"--draws {args.draws} of {plural(data.numel(), 'value')} would hold {args.draws * data.numel()} values, "
            f"more than {MAX_DRAWN_VALUES}; draw fewer, or impute fewer datapoints (--limit)"
        )
    return data, truth, file_shape, where


def _refuse_nothing_to_impute(args: argparse.Namespace, where: str, drawn: bool) -> None:
    """Refuses (DataError) datapoints ``where`` of no missing entry, saying what to give instead:
    NaN in INPUT; where the split holds some and its --limit draw none (``drawn``), a larger or
    other draw (it was said that the split held none, and --missing-rate advised to a run trained
    with it); else a file of inputs with NaN, or a run trained with --missing-rate."""
    if args.input:
        raise DataError(
            f"{where} has no missing entries (NaN) to impute: mark the entries to fill as NaN (in a table, empty cells)"
        )
    if drawn:
        raise DataError(
            f"the {plural(args.limit, 'datapoint')} that --limit {args.limit} drew (--seed {args.seed}) from {where} "
            f"{'holds' if args.limit == 1 else 'hold'} no missing entries (NaN) to impute, though the split does: "
            "draw more (a larger --limit, or none) or others (another --seed)"
        )
    raise DataError(
        f"{where} has no missing entries (NaN) to impute: name a file of inputs with missing entries (NaN; in a table, "
        "empty cells) after the run folder, or impute the splits of a run trained with --missing-rate R, which removes "
        "entries at random"
    )


def _write_imputed(
    args: argparse.Namespace, out: Path, rows: np.ndarray, columns: tuple, arrays: dict[str, np.ndarray]
) -> None:
    """The imputed data as a table (``.csv``: a table INPUT's other columns kept where every row
    was imputed) or as ``.npy``/``.npz`` arrays (the draws too)."""
    if out.suffix.lower() == ".csv":
        table_in = args.input if args.input and Path(args.input).suffix.lower() in TABLE_SUFFIXES else None
        atomic_write_bytes(out, write_table(rows, columns, original=table_in, first=table_in is not None).encode())
    else:
        atomic_write_bytes(out, _array_bytes(out, arrays))


def _baseline(rows: np.ndarray, name: str, seed: int, columns: tuple, run: Run) -> np.ndarray:
    """A classical imputer's filled rows as the model's are written (``_as_written``), a categorical
    column given to the column means and the neighbours as its categories' indicators, to the
    chained imputers as a column of categories to classify (``baseline_impute``)."""
    counts = [len(c.categories) if c.kind == "categorical" else 0 for c in columns] if columns else None
    filled = baseline_impute(rows, name, seed, counts)
    return _as_written(filled, np.isnan(rows), columns, run)


def _whole_number_columns(columns: tuple) -> list[str]:
    """The names of a table's numeric columns that hold whole numbers (written, and so scored, rounded)."""
    return [c.name for c in columns if c.kind == "numeric" and c.integer]


def _top_level(run: Run) -> float | None:
    """The highest level that data stored as integers take (L-1; 1 binary; inf where the run does
    not know L), or None for continuous data."""
    kind, levels = run.transform.kind, run.transform.num_levels
    if kind == "continuous":
        return None
    return 1 if kind == "binary" else math.inf if levels is None else levels - 1


def _levels(run: Run) -> str | None:
    """The levels that data stored as integers take, "0..L-1" ("0..1" binary; "0, 1, 2, ..." where
    the run does not know L), or None for continuous data (and tables)."""
    top = _top_level(run)
    return None if top is None else "0, 1, 2, ..." if math.isinf(top) else f"0..{int(top)}"


def _as_written(rows: np.ndarray, missing: np.ndarray, columns: tuple, run: Run) -> np.ndarray:
    """``rows`` (N, D) with the imputations at their ``missing`` entries as the output writes them,
    and so as they are scored: of a table's whole-number columns, rounded to a whole number in the
    column's own units as ``write_table`` rounds them (then standardized again); of its categorical
    ones, the nearest category; of data stored as integer levels, the nearest level. The observed
    entries are kept as they are."""
    out = rows.copy()
    for j, c in enumerate(columns):
        if c.kind == "categorical":
            out[:, j] = np.clip(np.round(rows[:, j]), 0, len(c.categories) - 1)
        elif c.integer:
            units = rows[:, j] * c.std + c.mean
            whole = np.abs(units) < 2**53  # (as write_table: a value beyond is written as it is)
            out[:, j] = np.where(whole, (np.round(units) - c.mean) / c.std, rows[:, j])
    top = None if columns else _top_level(run)
    if top is not None:
        out = np.clip(np.round(rows), 0, top)
    return np.where(missing, out, rows)


def _rounded(run: Run, columns: tuple) -> str | None:
    """Which imputations are written (and scored) rounded, in words; None where none are."""
    whole = _whole_number_columns(columns)
    if whole:
        return f"to whole numbers in their own units: {', '.join(whole)}"
    levels = None if columns else _levels(run)
    return None if levels is None else f"to the nearest of the levels {levels}"


def _written(values: torch.Tensor, missing: torch.Tensor, columns: tuple, run: Run) -> torch.Tensor:
    """``_as_written`` of imputed data (N, *event) or of draws of them (draws, N, *event)."""
    d = max(1, math.prod(missing.shape[1:]))
    rows = values.reshape(-1, d).numpy()
    holes = missing.expand_as(values).reshape(-1, d).numpy()
    return torch.from_numpy(_as_written(rows, holes, columns, run)).reshape(values.shape)


def _rmse_units(run: Run, columns: tuple, baselines: bool) -> str:
    """What the RMSE is in: a table's standardized numeric columns (its whole-number ones rounded),
    or images' levels, rounded (and, where the model binarized grey images, that the baselines read
    their levels)."""
    if columns:
        whole = bool(_whole_number_columns(columns))
        return " of numeric columns, in standardized units" + (
            ", the imputations of whole-number columns rounded to whole numbers as written" if whole else ""
        )
    levels = _levels(run)
    if levels is None:
        return ""
    units = f", in the data's levels {levels}, each imputation rounded to the nearest level as written"
    if run.transform.kind == "dynamic-binarize" and baselines:
        units += " (the model reads the observed entries binarized, as it was trained; the baselines their levels)"
    return units


def _scores(
    args: argparse.Namespace,
    run: Run,
    data: torch.Tensor,
    truth: torch.Tensor,
    single: torch.Tensor,
    missing: torch.Tensor,
    columns: tuple,
) -> dict:
    """RMSE on the missing entries (a table's numeric columns, in standardized units) and, for a
    table's categorical columns, the share imputed wrong: the model's and each baseline's, on the
    same incomplete rows, each as written (``_as_written``; every baseline fills a categorical
    column with a category: ``baseline_impute``)."""
    n = len(data)
    rows = data.double().reshape(n, -1).numpy()
    t = truth.double().reshape(n, -1).numpy()
    m = missing.reshape(n, -1).numpy() & ~np.isnan(t)  # scored: the entries the run removed (the file's own: unknown)
    cat = np.array([c.kind == "categorical" for c in columns], dtype=bool) if columns else np.zeros(t.shape[1], bool)
    num_m, cat_m = m & ~cat, m & cat
    # (a PPCA trained on incomplete data by EM was named "MIWAE (k=10000)", its k unused)
    name = f"{run.cfg.model.describe()}, exact" if run.model.exact_imputation else f"MIWAE (k={args.k})"
    imputations = {name: single.reshape(n, -1).numpy()}  # (as written: _written)
    imputations.update({name: _baseline(rows, name, args.seed, columns, run) for name in args.baselines})
    results = {name: rmse(v, t, num_m) for name, v in imputations.items()} if num_m.any() else {}
    errors = {name: float((v[cat_m] != t[cat_m]).mean()) for name, v in imputations.items()} if cat_m.any() else {}
    d = run.cfg.data
    units = _rmse_units(run, columns, bool(args.baselines))
    removed = f"removed by --missing-rate {d.missing_rate}, seed {d.missing_seed}"
    for title, table, fmt in (
        (f"RMSE on the missing entries{units} ({removed}):", results, ".4f"),
        (f"share of missing categorical entries imputed wrong ({removed}):", errors, ".4f"),
    ):
        if table:
            say(title)
            for name, value in table.items():
                say(f"  {name:<22} {value:{fmt}}")
    return {
        "rmse": results,
        "categorical_error": errors,
        "split": args.split,
        "n": n,
        "missing": int(missing.sum()),
        "scored": int(m.sum()),
        "k": args.k,
        "seed": args.seed,
        "missing_rate": run.cfg.data.missing_rate,
        "missing_seed": run.cfg.data.missing_seed,
        "limit": args.limit,  # (drawn with --seed)
        "checkpoint": run.checkpoint.name,
        "weights": run.weights_digest(),  # which weights: a run trained on since imputes otherwise
        "run_id": run.record.get("run_id"),
        "units": "standardized (numeric columns)" if columns else "the data's own units",
        "rounded": _rounded(run, columns),  # (the imputations, as written)
    }


def _figure(path: Path, run: Run, data: torch.Tensor, single: torch.Tensor, truth: torch.Tensor | None) -> None:
    """Up to 8 datapoints: the observed entries (missing ones shown at mid-grey), the imputation,
    and the complete data where known, one row each; all three are in the data's own units, drawn
    as the model's values of them are."""
    n = min(8, len(data))

    def shown(v: torch.Tensor) -> torch.Tensor:
        return data_to_display(from_data_units(v[:n], run.transform), run)

    rows = [shown(data), shown(single)]
    if truth is not None:  # entries missing in the data file itself: unknown, mid-grey
        rows.append(shown(truth))
    atomic_write_bytes(path, image_grid_png(torch.cat(rows), nrow=n))
