"""``dgm score``: log p(x) of each of a user's own inputs under a trained run, to a CSV file.

The inputs are a data file (.npy, .npz or, for a run trained on a table, .csv) or PNG images of
the run's size; each is checked against the run's data (shape, levels) and transformed as the
model scores it (a binarization or dequantization with the fixed held-out seed). Each row of
the CSV is one input: its name (the PNG's file name, or its row index), log p(x) in nats (the
estimate the family declares: exact, importance-sampled with k draws, a bound, or a diffusion
bound over sampled times), and bits/dim where the data are discrete. Datapoints with missing
entries (NaN) are scored by log p(x_o) of their observed entries.
"""

import argparse
import csv
import io
import math
from pathlib import Path

import numpy as np
import torch

from dgmkit._io import atomic_write_bytes, invisible_character, shown_text
from dgmkit.cli.argtypes import SEED
from dgmkit.cli.common import (
    add_count_flag,
    add_data_flags,
    add_device_flag,
    add_input_flags,
    array_of_table_note,
    attach_inputs,
    command_output,
    estimate_words,
    plural,
    read_input_file,
    run_table,
    say,
    say_partly_trained,
    standardized_note,
)
from dgmkit.cli.compress import read_pngs
from dgmkit.cli.evaluate import drawing_nothing, estimate_samples
from dgmkit.config import Run, load_run
from dgmkit.config.schema import MAX_IW_SAMPLES
from dgmkit.data import Dataset
from dgmkit.data.registry import is_table
from dgmkit.data.table import TABLE_SUFFIXES
from dgmkit.data.transforms import scores_densities
from dgmkit.errors import ConfigError, DataError
from dgmkit.evaluation.estimates import log_likelihoods
from dgmkit.evaluation.metrics import observed_entries

__all__ = ["add_parser", "run_score", "score_inputs"]

_FORMULA_START = ("=", "+", "-", "@")  # what makes a CSV cell a formula in a spreadsheet program


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="log p(x) of each of your own inputs (a data file or PNG images), in nats and bits/dim (none for "
        "continuous data), to a CSV",
        description=__doc__,
    )
    p.add_argument("run_dir", metavar="RUN", help="a run folder (dgm train --out)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="one .npy/.npz/.csv data file, or PNG images")
    p.add_argument("--out", required=True, help="the CSV file to write: name, log p(x) in nats, bits/dim")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_count_flag(
        p, "--k", 1, MAX_IW_SAMPLES, help="importance samples (or a diffusion model's times) per input (default: the run's)"
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the estimate's samples (none for an exact log-likelihood)")
    add_input_flags(p)
    add_data_flags(p)
    add_device_flag(p)
    p.set_defaults(func=run_score)


# the most values (inputs x values per input) scored in one call: scoring holds some 30 bytes a value
# (the inputs as floats, the transformed copy, the scores), some 2 GB at this many (MNIST's training
# split, 47M values, fits; a 65 kB .npz of a million blank 8x8 images held 5.6 GB before there was one)
MAX_SCORE_VALUES = 2**26


def _inputs(paths: list[str], run: Run, table: Dataset | None = None) -> tuple[torch.Tensor, list[str]]:
    """The inputs as the run's raw data (float32, NaN: missing) and a name for each; ``table``: the
    run's own table, whose columns encode a table given as the input."""
    event = tuple(run.record["data"]["event_shape"])
    if len(paths) == 1 and not paths[0].lower().endswith(".png"):
        columns = table.columns if table is not None else ()
        data, _ = read_input_file(paths[0], run, columns, "score", max_values=MAX_SCORE_VALUES)
        return data, [str(i) for i in range(len(data))]
    if len(paths) * math.prod(event) > MAX_SCORE_VALUES:
        raise DataError(
            f"{len(paths)} images of {math.prod(event)} pixels; dgm score takes at most "
            f"{MAX_SCORE_VALUES // math.prod(event)} in one call: score them in parts"
        )
    if len(event) != 3 or event[0] != 1:
        raise DataError(f"PNG images are single-channel pictures; the run's data have shape {event}: give a data file")
    levels = run.record["data"]["num_levels"]
    if levels is None:  # (a PNG's 0..255 says nothing of the scale the run's values had: / 255, * 255, standardized)
        raise DataError(
            "the run models continuous values, in the scale of its own data, which a PNG's 8-bit pixels do not "
            "carry: give the images as a .npy file of values as the run's data held them"
        )
    names = _labels(paths)
    x = _png_levels(paths, names, event, levels)
    return torch.from_numpy(x.reshape(len(x), *event)), names


def _labels(paths: list[str]) -> list[str]:
    """Each PNG's label, the first cell of its row of the CSV: its file name, or the path as given
    where two files share a name; refused where a spreadsheet would run it as a formula, where it
    is no text the UTF-8 CSV can hold (a name of bytes that are not UTF-8), or where it holds an
    invisible or control character (a right-to-left override: a row that reads as another file's)."""
    names = [Path(p).name for p in paths]
    names = names if len({n.casefold() for n in names}) == len(paths) else list(paths)
    formula = next((name for name in names if name.startswith(_FORMULA_START)), None)
    if formula is not None:  # (the other cells are numbers)
        raise DataError(
            f"the PNG file name {formula!r} begins with {formula[0]!r}: a spreadsheet program reads a cell of the "
            "output CSV that begins so as a formula; rename the file"
        )
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # (a lone surrogate: a byte of the name that is not UTF-8)
            raise DataError(
                f"the PNG file name {name!r} is not UTF-8 text, which the output CSV labels its rows in; rename the file"
            ) from None
        hidden = invisible_character(name)
        if hidden is not None:
            raise DataError(
                f"the PNG file name '{shown_text(name)}' holds the invisible or control character U+{ord(hidden):04X}, "
                "which can make its row of the output CSV read as another file's; rename the file"
            )
    return names


def _png_levels(paths: list[str], names: list[str], event: tuple, levels: int) -> np.ndarray:
    """PNG files as the run's levels (float32, (N, H, W)): 1-bit images, and for a binary run
    8-bit ones of two tones, black and white, the lowest and the highest level; other 8-bit images
    their values, which must be levels of the run (those of 0 and 1 alone noted)."""
    x, meta = read_pngs(paths, event[1], event[2], written_back=False)  # (the names only label the rows)
    x = x.astype(np.float32)
    one_bit = np.array([mode == "1" for mode in meta["png_modes"]])
    two_tone = [bool(one or np.isin(a, (0, 255)).all() or np.isin(a, (0, 1)).all()) for a, one in zip(x, one_bit)]
    if levels == 2 and not all(two_tone):
        name = names[two_tone.index(False)]
        raise DataError(f"the run models binary images; the 8-bit PNG {name} holds grey levels, not only black and white")
    black_white = one_bit | (levels == 2)  # black and white: the lowest and the highest level
    x[black_white] = (x[black_white] != 0).astype(np.float32) * (levels - 1)
    grey = x[~black_white]  # 8-bit images of a run of more levels: their values are the levels
    if grey.size and levels > 256:
        raise DataError(f"the run models {levels} levels per pixel; 8-bit PNGs hold 256: give a .npy of its levels")
    if grey.size and levels != 256 and grey.max() > levels - 1:  # (values 0..L-1: the levels, as dgm decompress writes them)
        name = np.array(names)[~black_white][int(np.argmax(grey.reshape(len(grey), -1).max(1) > levels - 1))]
        raise DataError(
            f"the run models {levels} levels per pixel, 0..{levels - 1}; the 8-bit PNG {name} holds values up to "
            f"{int(grey.max())} (of 256 grey levels): give PNGs of the levels themselves, as dgm decompress writes them"
        )
    # each image of only 0 and 1 of levels 0..L-1 (as .npy files are), noted: by its own values, not the whole call's
    shown = [n for n, a in zip(np.array(names)[~black_white].tolist(), grey) if a.max() == 1]
    if shown:
        which = (
            f"the {len(shown)} 8-bit PNGs ({shown[0]}, ...) hold" if len(shown) > 1 else f"the 8-bit PNG {shown[0]} holds"
        )
        say(
            f"note: {which} only the values 0 and 1 of the run's levels 0..{levels - 1}, which it reads as nearly black "
            f"images; black and white images are 1-bit PNGs, or 8-bit ones of the values 0 and {levels - 1}"
        )
    return x


def score_inputs(run: Run, x: torch.Tensor, k: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """log p(x) in nats of each input (raw data of the run, (N, *event)) and bits/dim where the
    data are discrete (else None): the family's declared estimate with k draws or times."""
    k = score_draws(run, k, seed)
    t = run.transform
    xt = t.held_out(x).to(run.device)  # on the CPU: the same noise on any device
    log_px = log_likelihoods(run.model, xt, log_volume=t.log_volume, iw_samples=k, seed=seed).numpy()
    dims = observed_entries(x).numpy()
    bpd = None if scores_densities(t.kind, run.cfg.model) else -log_px / (dims * math.log(2))
    return log_px, bpd


def score_draws(run: Run, k: int | None = None, seed: int = 0) -> int:
    """The k of the run's estimate that ``score_inputs`` makes (``estimate_samples``): --k
    importance samples, or a diffusion bound's times; 0 where log p(x) is exact (and a ``seed``
    other than 0 is refused where nothing is drawn with it: ``drawing_nothing``)."""
    kind = run.model.estimate_kind
    if kind == "reconstruction":
        raise ConfigError(f"{run.cfg.model.describe()} defines no density over x: there is no log p(x) to score")
    still = drawing_nothing(run)
    if seed and still:  # (the data's noise is held_out's, of a fixed seed)
        raise ConfigError(f"--seed draws an estimate's samples; {still}: nothing is drawn, leave out --seed")
    timed = kind == "time-sampled"  # --k counts the times of a diffusion bound
    return estimate_samples(run, None if timed else k, k if timed else None, iw_flag="--k", time_flag="--k")


def _estimate_said(run: Run, k: int) -> str:
    """What the scores are, for the summary line: the estimate and its k, as dgm eval says them."""
    said = estimate_words(run.model.estimate_kind, run.transform.kind)
    if run.model.point_mass_posterior:  # (a VQ-VAE: its one code grid, under the prior it holds)
        return f"{said}, log p(x|z_q(x)) + log p(z_q(x)) under {run.model.prior_name}; a point-mass posterior, one draw"
    if run.model.estimate_kind == "time-sampled":
        return f"{said}, {plural(k, 'time')} per input"
    return f"{said}, k={k}" if k else said


_DATA_DRAWS = {"dynamic-binarize": "the binarization", "dequantize": "the dequantization noise"}  # (by transform)


def run_score(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"--out must name a .csv file, got {out}")
    run = load_run(args.run_dir, device=args.device)
    attach_inputs(run, args)  # (a VQ-VAE's code prior: the prior of its bound)
    if args.schema is not None and not is_table(run.cfg.data.dataset):
        raise ConfigError(f"--schema: {run.path} was trained without a schema (its columns' kinds inferred)")
    out = command_output(args, out, reads=args.inputs)
    if (args.data is not None or args.data_dir is not None) and not is_table(run.cfg.data.dataset):
        raise ConfigError("--data and --data-dir say where a table run's table is; this run's inputs are scored alone")
    given_table = len(args.inputs) == 1 and Path(args.inputs[0]).suffix.lower() in TABLE_SUFFIXES
    # the run's table, read once: its columns encode or check the input, and name the units
    table = run_table(run, given_table, args.data_dir, args.data, args.schema)
    x, names = _inputs(args.inputs, run, table)
    k = score_draws(run, args.k, args.seed)
    said = _estimate_said(run, k)
    log_px, bpd = score_inputs(run, x, args.k, args.seed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["input", "log_px_nats", "bits_per_dim"])
    for i, name in enumerate(names):
        w.writerow([name, repr(float(log_px[i])), "" if bpd is None else repr(float(bpd[i]))])
    atomic_write_bytes(out, buf.getvalue().encode())
    # bits per entry over all inputs, as dgm eval gives them (with missing entries, not the mean of each input's)
    unit = "" if bpd is None else f", {float(-log_px.sum() / (observed_entries(x).sum().item() * math.log(2))):.4f} bits/dim"
    say(f"scored {plural(len(names), 'input')}: mean log p(x) {float(np.mean(log_px)):.3f} nats{unit} ({said}) -> {out}")
    _notes(run, x, names, k, bpd is not None)
    say_partly_trained(run)
    note = standardized_note(table) if table is not None else None
    if note:
        say(note)
    if is_table(run.cfg.data.dataset) and not given_table:
        say(array_of_table_note(args.inputs[0], table))
    return 0


def _notes(run: Run, x: torch.Tensor, names: list[str], k: int, per_dim: bool) -> None:
    """What the scores of ``x`` (inputs ``names``) are not: of complete inputs, of draws of each
    input alone, of many times of a diffusion bound."""
    incomplete = int(torch.isnan(x).flatten(1).any(1).sum())
    if incomplete:
        say(
            f"note: {incomplete} of {len(names)} inputs hold missing entries: theirs is log p(x_o) of the observed "
            f"entries{' (bits/dim per observed entry)' if per_dim else ''}, not comparable with a complete input's "
            "log p(x)"
        )
    draws = [d for d in (_DATA_DRAWS.get(run.transform.kind), run.model.estimate_draws) if d]
    if draws and len(names) > 1:  # (the data's noise is held_out's, of a fixed seed; the estimate's is --seed's)
        say(
            f"note: each row's number is of random draws made over all the inputs together ({' and '.join(draws)}; "
            "seeded: the same inputs score the same every time); a row moved, or scored alone, gets other draws "
            "and a number within their spread"
        )
    if run.model.estimate_kind == "time-sampled" and k < 1000:
        say(
            f"note: each row is the bound at {plural(k, 'time')}: unbiased, but for one input noisy (several nats at a "
            "few times), so exp of a row can be many times the input's probability; a larger --k (hundreds to "
            "thousands of times) for numbers of single inputs"
        )
