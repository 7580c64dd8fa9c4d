"""``dgm ood``: out-of-distribution detection with a run's likelihood (``evaluation.ood_scores``).

    dgm ood runs/fashion --in test --ood mnist                      # -log p(x), typicality, complexity
    dgm ood runs/fashion --ood mnist --background runs/fashion-bg   # + Ren et al.'s likelihood ratio

The OOD inputs must have the run's image shape and number of levels, and are transformed as the
run's data are (with the same fixed held-out noise seed). Results are kept in the run folder's
ood.json by protocol (as ``dgm eval`` keeps evals.json); ``--json`` and ``--out`` write copies
and a histogram figure, never over an existing file without ``--force``.
"""

import argparse
import csv
import dataclasses
import hashlib
import io
import math
import time
from pathlib import Path
from typing import NamedTuple, TypeGuard

import torch

from dgmkit._io import atomic_write_bytes, atomic_write_json
from dgmkit.cli.argtypes import SEED
from dgmkit.cli.common import (
    SPLITS,
    ResultsFile,
    add_count_flag,
    add_data_flags,
    add_device_flag,
    add_limit_flag,
    add_run_parser,
    array_of_table_note,
    command_output,
    data_dir_unread,
    estimate_words,
    own_result_table,
    plural,
    png_output,
    run_data,
    run_table,
    say,
    say_partly_trained,
    seeded_rows,
    standardized_note,
    write_png,
)
from dgmkit.cli.evaluate import estimate_samples
from dgmkit.config import Run, load_run
from dgmkit.config.run import holds_recorded_data
from dgmkit.config.schema import MAX_IW_SAMPLES
from dgmkit.data import DATASETS, Dataset, Split, default_data_dir, load_dataset
from dgmkit.data.registry import ANOTHER_FOLDER, FOLDER_DATASETS, is_data_file
from dgmkit.data.table import TABLE_SUFFIXES
from dgmkit.data.transforms import scores_densities, values_seen
from dgmkit.errors import ConfigError, DataError, EvaluationError
from dgmkit.evaluation.ood_scores import SCORES, OODScores, histogram_png, log_likelihoods, ood_scores, png_code_length

__all__ = ["add_parser", "run_ood"]

# what the model's likelihood inputs are, by transform: runs of one space score the same inputs
_SPACE = {"binary": "binary", "dynamic-binarize": "binary", "integers": "integers", "dequantize": "integers"}
_KEPT = "ood.json"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_run_parser(
        sub,
        "ood",
        help="out-of-distribution detection: likelihood, likelihood ratio, typicality and complexity scores",
        description="Score in-distribution inputs (a split of the run's data) against OOD inputs (another dataset) "
        "by -log p(x), Ren et al.'s likelihood ratio (with --background), Nalisnick et al.'s typicality test and "
        "Serra et al.'s complexity correction (L(x): the bits of a PNG file, Pillow optimize=True); report AUROC, "
        "AUPRC (as average precision) and the FPR at 95% TPR with the OOD inputs as positives.",
    )
    p.add_argument("--in", dest="in_split", default="test", choices=SPLITS, help="in-distribution split")
    p.add_argument(
        "--ood",
        required=True,
        metavar="DATASET",
        help="the OOD data: a named dataset or a data file (.npy, .npz, .mat, .csv, .parquet)",
    )
    p.add_argument(
        "--ood-split",
        default="test",
        choices=(*SPLITS, "all"),
        help="the split of --ood to use (a data file is split as for training, 80/10/10 seeded); all: every row, "
        "of a data file in the file's own order, of a named dataset its train, valid and test splits one after the other",
    )
    p.add_argument(
        "--ood-data-dir", default=None, help="folder of --ood's files, of a dataset read from one (default: as --data-dir)"
    )
    p.add_argument(
        "--background",
        default=None,
        metavar="RUN",
        help="a run trained on mutated inputs (dgm train --mutation-rate): scores the likelihood ratio",
    )
    add_count_flag(
        p, "--iw-samples", 1, MAX_IW_SAMPLES, help="importance samples k of a latent variable model (default: the run's)"
    )
    add_count_flag(
        p,
        "--typicality-batch",
        1,
        10**6,
        default=25,
        help="M: inputs per batch of the batch typicality test (1: per input only)",
    )
    add_count_flag(
        p,
        "--fit-limit",
        1,
        10**9,
        default=10000,
        help="training inputs (for H) and held-out inputs (for epsilon) of the typicality test: a seeded random "
        "subset of at most this many of each",
    )
    add_limit_flag(p, "a seeded random subset of at most N in-distribution and N OOD inputs")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the subsets, the sampling and the batches")
    add_device_flag(p, "where the models score the inputs (the run's and --background's)")
    p.add_argument("--out", default=None, help="a PNG file: histograms of every score, in-distribution against OOD")
    p.add_argument("--json", default=None, help="also write this result to a JSON file")
    p.add_argument("--force", action="store_true", help="replace --out and --json if they exist")
    add_data_flags(p)
    p.set_defaults(func=run_ood)


def _likelihood_run(path: str, what: str, device: str) -> Run:
    run = load_run(path, device=device)
    if run.model.estimate_kind == "reconstruction":
        raise ConfigError(
            f"{what} {path}: {run.cfg.model.describe()} defines no density over x (a reconstruction score only); "
            "dgm ood needs a model with a likelihood"
        )
    return run


def _same_weights(a: Run, b: Run) -> bool:
    """Whether two runs' models hold the same tensors (a copy, or the same run read from another
    checkpoint file of the same weights)."""
    if a.weights_digest() == b.weights_digest():
        return True
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype and torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa
    )


def _check_background(run: Run, bg: Run, path: str) -> None:
    if _same_weights(run, bg):
        raise ConfigError(
            f"--background {path} holds the same weights as {run.path}: the likelihood ratio would be 0 for every "
            "input; name a background model trained on the run's data with --mutation-rate"
        )
    a, b = run.record["data"], bg.record["data"]
    if list(a["event_shape"]) != list(b["event_shape"]) or a["num_levels"] != b["num_levels"]:
        raise DataError(
            f"--background {path} models inputs of shape {b['event_shape']} with {_levels(b['num_levels'])}, but "
            f"{run.path} models {a['event_shape']} with {_levels(a['num_levels'])}: a likelihood ratio needs both on "
            "one space"
        )
    if _SPACE.get(a["transform"], a["transform"]) != _SPACE.get(b["transform"], b["transform"]):
        raise DataError(
            f"--background {path} scores {b['transform']} data and {run.path} {a['transform']} data: "
            "their likelihoods are of different inputs"
        )


def _background_data(run: Run, bg: Run, path: str, ood: Dataset) -> str | None:
    """None where the background model was trained on the run's own data (Ren et al.'s protocol);
    a note where it was trained on other data (a ratio against a more general model); refused where
    those data are the OOD inputs' own dataset, whose statistics the ratio would then carry."""
    a, b = run.record["data"], bg.record["data"]
    if a.get("sha256") and b.get("sha256"):  # the data are told apart by content
        same_data, on_ood = a["sha256"] == b["sha256"], holds_recorded_data(ood, b["sha256"])
    else:  # by name, where an older run recorded no digest
        same_data, on_ood = a.get("name") == b.get("name"), b.get("name") == ood.name
    if same_data:
        return None
    if on_ood:
        raise DataError(
            f"--background {path} was trained on {b.get('name')}, the OOD dataset itself: the ratio would score the "
            "OOD inputs with a model of them; train the background model on the run's data (dgm train --mutation-rate)"
        )
    return (
        f"--background {path} was trained on other data than {run.path} (its {b.get('name')}, content SHA-256 "
        f"{str(b.get('sha256'))[:16]}..., against {a.get('name')}, {str(a.get('sha256'))[:16]}...): a ratio against a "
        "model of other data, not Ren et al.'s (their background model sees the run's data, mutated)"
    )


def _own_data_dir(run: Run, args: argparse.Namespace) -> str | None:
    """--data-dir as the folder of the run's own data, where they are read from one; None where
    they are not and it names --ood's folder alone (a named dataset, with no --ood-data-dir: a run
    on a data file of 28x28 images against MNIST), refused where it names neither."""
    if args.data_dir is None or run.cfg.data.reads_folder:
        return args.data_dir
    if args.ood_data_dir is None and args.ood in FOLDER_DATASETS:
        return None
    raise ConfigError(data_dir_unread(run.cfg.data, run.path))


def _check_ood_data_dir(args: argparse.Namespace) -> None:
    """--ood-data-dir refused where --ood is read from no folder (a data file, a bundled or generated
    dataset): it would be left unread."""
    if args.ood_data_dir is None or args.ood in FOLDER_DATASETS:
        return
    if is_data_file(args.ood) or args.ood in DATASETS:  # (an unknown name is refused as such by the loader)
        read = "from its path" if is_data_file(args.ood) else "from no folder"
        raise ConfigError(
            f"--ood-data-dir is the folder of an --ood dataset read from one ({', '.join(FOLDER_DATASETS)}); "
            f"--ood {args.ood} is read {read}: leave out --ood-data-dir"
        )


def _held(ds: Dataset) -> str:
    """The levels of the OOD data ``ds`` in words, or the values it holds where it has no levels
    (whole numbers beyond the levels 0..255 are read as no levels: not "continuous")."""
    seen = _observed(ds) if ds.num_levels is None else None
    if seen is not None and len(seen) and (not seen.is_floating_point() or bool((seen == seen.round()).all())):
        return values_seen(seen)
    return _levels(ds.num_levels)


def _binarize_hint(ds: Dataset, want: tuple[int, ...], levels: int | None) -> str:
    """What to do with OOD images of a run's shape with more levels than its two (a run on binary
    images, binarized MNIST, against 8-bit ones: binarized, they are the run's kind of data)."""
    if tuple(ds.event_shape) == want and levels == 2 and (ds.num_levels or 0) > 2:
        return (": binarize them as the run's data were (a seeded Bernoulli draw of each pixel's intensity) into a "
                ".npy file of 0/1 and give its path")  # fmt: skip
    return ""


def _ood_dataset(run: Run, args: argparse.Namespace) -> Dataset:
    """The OOD dataset, refused unless it has the run's image shape and number of levels."""
    cfg = run.cfg.data
    given_table = args.ood.lower().endswith(TABLE_SUFFIXES)
    table = run_table(run, given_table, _own_data_dir(run, args), args.data, args.schema)  # read by the run's columns
    columns = table.columns if table is not None and given_table else None
    folder = args.ood_data_dir or args.data_dir or cfg.data_dir
    try:
        ds = load_dataset(args.ood, folder, download=cfg.download, columns=columns)
    except DataError as e:
        # (the loader names --data-dir, the flag of a run's own data: where it reads them, another would not)
        if args.ood_data_dir or args.data_dir and cfg.reads_folder:
            raise DataError(str(e).replace(ANOTHER_FOLDER, "name another --ood-data-dir")) from None
        if args.data_dir or is_data_file(args.ood) or args.ood not in DATASETS:
            raise  # (a folder named by the user's flag, a file, or an unknown name: no folder helps)
        where = f"the run's data folder {folder}" if folder else f"the default data folder {default_data_dir()}"
        raise DataError(
            f"{e} (--ood {args.ood} was looked for in {where}: name the folder of its own with --ood-data-dir)"
        ) from None
    if table is not None and not given_table and is_data_file(args.ood):
        say(array_of_table_note(args.ood, table))
    want, levels = tuple(run.record["data"]["event_shape"]), run.record["data"]["num_levels"]
    if is_data_file(args.ood) and not ds.columns and len(want) == 3 and tuple(ds.event_shape) == (1, 1, math.prod(want)):
        ds = _as_images(ds, want)  # flat rows of the run's images, as dgm score reads them
    # a file's levels are read off its highest value: 0..12 are levels of a run of 17 (as dgm score takes them)
    fewer = is_data_file(args.ood) and None not in (ds.num_levels, levels) and ds.num_levels <= levels
    if tuple(ds.event_shape) != want or (ds.num_levels != levels and not fewer):
        rows = ds.columns or table is not None and is_data_file(args.ood)
        raise DataError(
            f"--ood {args.ood}: {'rows' if rows else 'images'} of shape {tuple(ds.event_shape)} with {_held(ds)}, but "
            f"{run.path} models {want} with {_levels(levels)}; OOD inputs must be of the run's shape and levels"
            f"{_binarize_hint(ds, want, levels)}"
        )
    if fewer and ds.num_levels == 2 < levels and bool((_observed(ds) == 1).any()):  # (all zeros: black, as said)
        say(
            f"note: {args.ood} holds only the values 0 and 1 of the run's levels 0..{levels - 1}, which it reads as "
            f"nearly black images (binary images are the levels 0 and {levels - 1})"
        )
    return ds


def _as_images(ds: Dataset, shape: tuple[int, ...]) -> Dataset:
    """``ds`` with each split's flat rows (N, 1, 1, D) as images of ``shape`` (D values each)."""

    def images(v: Split) -> Split:
        return dataclasses.replace(v, x=v.x.reshape(len(v.x), *shape))

    return dataclasses.replace(ds, train=images(ds.train), valid=images(ds.valid), test=images(ds.test))


def _levels(n: int | None) -> str:
    """``17 levels``, or ``continuous values`` for data of no levels (None)."""
    return "continuous values" if n is None else f"{n} levels"


def _observed(ds: Dataset) -> torch.Tensor:
    """The dataset's observed values (NaN left out), of all its splits, flat."""
    x = torch.cat([s.x.reshape(-1) for s in (ds.train, ds.valid, ds.test) if len(s.x)])
    return x[~torch.isnan(x)] if x.is_floating_point() else x


def _subset(x: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, dict | None]:
    """A seeded random subset of n rows (in order), and its record (with the rows' indices)."""
    idx = seeded_rows(len(x), n, seed)
    if idx is None:
        return x, None
    return x[idx], {"seed": seed, "of": len(x), "n": n, "indices": idx.tolist()}


PER_INPUT = "ood-scores.csv"
FEW_INPUTS = 100  # fewer in either set: the AUROC moves in steps of 1/n or more (said in a note)


def _per_input_csv(
    scores: dict[str, tuple[torch.Tensor, torch.Tensor]], subsets: dict, splits: tuple[str, str], file_rows: dict
) -> bytes:
    """One row per scored input: which set (in, ood), its split and index there, its row in the one
    file it was drawn from (``file_rows``, by set: empty where not known), and every score that is
    given per input (larger = more OOD)."""
    n = {w: len(scores["nll"][i]) for i, w in enumerate(("in", "ood"))}
    names = [s for s, pair in scores.items() if len(pair[0]) == n["in"] and len(pair[1]) == n["ood"]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["set", "split", "index", "file_row", *names])
    for i, which in enumerate(("in", "ood")):
        sub = subsets[which]
        index = sub["indices"] if sub else range(n[which])
        rows = None if file_rows[which] is None else file_rows[which].tolist()
        columns = [scores[s][i].double().tolist() for s in names]
        for r, j in enumerate(index):
            w.writerow([which, splits[i], j, "" if rows is None else rows[j], *(repr(c[r]) for c in columns)])
    return buf.getvalue().encode()


def _complete(raw: torch.Tensor, what: str) -> torch.Tensor:
    """``raw``, refused if any input has missing entries: log p(x_o) of different observed entries rank nothing."""
    if raw.is_floating_point() and bool(torch.isnan(raw).any()):
        rows = int(torch.isnan(raw.reshape(len(raw), -1)).any(1).sum())
        raise DataError(
            f"{rows} of {len(raw)} {what} inputs have missing entries (NaN): dgm ood compares log p(x) of complete "
            "inputs, and the log-likelihoods of different observed entries are not comparable"
        )
    return raw


def _inputs(run: Run, raw: torch.Tensor) -> torch.Tensor:
    """What the run's likelihood scores: its transform with the fixed held-out noise seed."""
    return run.transform.held_out(raw)


def _code_images(run: Run, raw: torch.Tensor) -> torch.Tensor | None:
    """The integer images the model scores, for the generic compressor (None: none to compress)."""
    kind, levels = run.transform.kind, run.transform.num_levels
    if kind in ("binary", "dynamic-binarize"):
        return _inputs(run, raw).to(torch.uint8)
    if kind in ("integers", "dequantize") and levels is not None and levels <= 256:
        return raw.to(torch.uint8)
    return None


def _code_binary(run: Run) -> bool:
    """Whether the images of ``_code_images`` are coded as 1-bit PNGs: decided by the run's data, not
    by the values a set of images happens to hold (so an image's L(x) is the same in any set)."""
    return run.transform.kind in ("binary", "dynamic-binarize") or run.transform.num_levels == 2


def _protocol(r: dict) -> str:
    sub = r["subsets"]
    limit = "all" if sub["in"] is None and sub["ood"] is None else f"limit {r['limit']} (seed {r['seed']})"
    ood = (r.get("ood_file") or r["ood"]) + (f" (content {r['ood_sha256'][:16]})" if r.get("ood_sha256") else "")
    key = f"in {r['in_split']} | ood {ood} {r['ood_split']} | {limit} | k={r['iw_samples']} | seed {r['seed']}"
    fit = r.get("typicality_fit") or {}  # (a --fit-limit of every row drew no subset: the protocol of none)
    whole = bool(fit) and fit.get("train") == fit.get("train_of") and fit.get("valid") == fit.get("valid_of")
    key += f" | typicality M={r['typicality_batch']} fit {None if whole else r['fit_limit']}"
    if r.get("background"):
        key += f" | background {r['background']} weights {r['background_weights']}"
        if r.get("background_iw_samples"):  # (0 where exact: the key it had; absent from results kept before it)
            key += f" k={r['background_iw_samples']}"
    return key + f" | weights {r['weights']}"


def _record_problem(r: dict) -> str | None:
    """What is wrong with a result of ood.json (None: nothing), checked as it is read: its scores
    (each of dgm ood's, with its metrics in [0, 1] and finite means) and the fields of its protocol."""
    scores = r.get("scores")
    if not isinstance(scores, dict) or not scores or not set(scores) <= set(SCORES):
        return "scores is not a table of dgm ood's scores"
    for name, v in scores.items():
        metrics = [v.get(k) for k in ("auroc", "auprc", "fpr_at_95_tpr")] if isinstance(v, dict) else [None]
        means = [v.get(k) for k in ("mean_in", "mean_ood")] if isinstance(v, dict) else [None]
        # (within rounding: an AUPRC of perfect separation was written as 1.0000000000000002 before it was clamped)
        if not all(_number(m) and -1e-9 <= m <= 1 + 1e-9 for m in metrics) or not all(_number(m) for m in means):
            return f"the score {name!r} holds no metrics in [0, 1] and finite means"
    try:
        _protocol(r)
    except (KeyError, TypeError, AttributeError) as e:
        return f"its protocol cannot be read ({type(e).__name__}: {e})"
    return None


def _number(v: object) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_RESULTS = ResultsFile(_KEPT, "scores", "run dgm ood again", _protocol, check=_record_problem)


def format_table(r: dict) -> str:
    """Score, means, AUROC, AUPRC and FPR at 95% TPR, then what the numbers are."""
    s = r["scores"]
    head = ("score", "mean in", "mean OOD", "AUROC", "AUPRC", "FPR@95%TPR")
    rows = []
    for name, v in s.items():
        label = SCORES[name]
        if name == "typicality_batch":
            label = f"typicality, batches of M={r['typicality_batch']}"
        unit = " (bits)" if name == "complexity" else " (nats)"
        rows.append((label + unit, f"{v['mean_in']:.2f}", f"{v['mean_ood']:.2f}", *_metrics(v)))
        if name == "nll" and r.get("bits_per_dim"):
            bpd = r["bits_per_dim"]
            rows.append(("  as bits/dim", f"{bpd['in']:.4f}", f"{bpd['ood']:.4f}", "", "", ""))
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    line = lambda row: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))
    )
    return "\n".join([line(head), *map(line, rows)])


def _metrics(v: dict) -> tuple[str, str, str]:
    return f"{v['auroc']:.4f}", f"{v['auprc']:.4f}", f"{v['fpr_at_95_tpr']:.4f}"


def _inputs_of(n: int, subset: dict | None, what: str = "") -> str:
    """``300 inputs``, or the seeded random subset of --limit (or --fit-limit) said as one: ``a random 50 of 300
    inputs``; ``what`` before the noun (``300 training inputs``)."""
    noun = f"{what} input".lstrip()
    return plural(n, noun) if not subset else f"a random {n} of {plural(subset['of'], noun)}"


def _fit_subset(fit: dict, split: str) -> dict | None:
    """The typicality fit's inputs of ``split`` as ``_inputs_of`` takes a subset (None: all of them)."""
    return None if fit[split] == fit[split + "_of"] else {"of": fit[split + "_of"]}


def _notes(r: dict) -> list[str]:
    sub = r.get("subsets") or {}
    notes = [
        f"in: {r['dataset']} {r['in_split']} ({_inputs_of(r['n_in'], sub.get('in'))}); OOD: {r['ood']} {r['ood_split']} "
        f"({_inputs_of(r['n_ood'], sub.get('ood'))}); OOD inputs are the positives, larger scores more OOD; AUPRC is the "
        "average precision (the step sum of scikit-learn's average_precision_score, not a trapezoid); FPR@95%TPR is the "
        "share of in-distribution inputs flagged at the strictest threshold that flags at least 95% of the OOD ones "
        "(a score >= it flagged; no interpolation between thresholds)",
        f"log p(x): {estimate_words(r['estimate'], r.get('transform', ''))}"
        + (f" (k={r['iw_samples']})" if r["iw_samples"] else ""),
    ]
    if "bits_per_dim" in r and r["bits_per_dim"] is None and not r.get("table_note"):  # (a table's note says it)
        notes.append(
            "continuous data: -log p(x) is a log-density of the values as given (nats), not a probability; it shifts "
            "with their scale, and there are no bits/dim"
        )
    notes += _typicality_notes(r)
    if "complexity" in r["scores"]:
        notes.append("complexity: L(x) = the bits of each image as a PNG file (Pillow, optimize=True, lossless)")
    else:
        notes.append(f"complexity: n/a ({r['complexity_note']})")
    if r.get("background"):
        what = (
            f"; its log p(x): {estimate_words(r['background_estimate'], r['background_transform'])}"
            + (f" (k={r['background_iw_samples']})" if r.get("background_iw_samples") else "")
            if r.get("background_estimate")
            else ""  # results kept before the background's estimate was recorded
        )
        notes.append(f"likelihood ratio: background {r['background']} (mutation rate {r['background_mutation_rate']}{what})")
    if r.get("table_note"):  # (the AUROCs are the same in either units: every row's shift is the same)
        notes.append(f"log p(x) of {r['table_note']}")
    return notes


def _typicality_notes(r: dict) -> list[str]:
    """What the typicality tests of result ``r`` were fitted on and flag, and where they are n/a."""
    notes: list[str] = []
    fit = r.get("typicality_fit")  # (absent from results kept before it was recorded)
    of_train, on_valid = "mean training NLL", "on held-out data"
    if fit:
        of_train = f"mean NLL of {_inputs_of(fit['train'], _fit_subset(fit, 'train'), 'training')}"
        on_valid = f"on {_inputs_of(fit['valid'], _fit_subset(fit, 'valid'), 'held-out')}"
    for name in ("typicality", "typicality_batch"):
        t, s = r.get(name + "_test"), r["scores"].get(name)
        if t and s:
            notes.append(
                f"{name.replace('_', ' ')} (M={t['batch_size']}): H = {t['entropy']:.2f} nats ({of_train}), "
                f"epsilon = {t['epsilon']:.2f} (the {1 - t['alpha']:.0%} bootstrap quantile {on_valid}); flags "
                f"{s['flagged']['in']:.1%} of in-distribution and {s['flagged']['ood']:.1%} of OOD "
                + ("inputs" if t["batch_size"] == 1 else "batches")
            )
    fitted = {"train": "H", "valid": "epsilon"}.get(r["in_split"])
    if fitted and "typicality" in r["scores"]:
        notes.append(
            f"typicality is in-sample here: {fitted} was fitted on the {r['in_split']} split that is scored as "
            "in-distribution, so the share of it flagged is not a held-out false-alarm rate (--in test is)"
        )
    if r["typicality_batch"] > 1 and "typicality_batch" not in r["scores"]:
        notes.append(f"typicality of batches: n/a (fewer than 2 batches of M={r['typicality_batch']} inputs on a side)")
    elif r["typicality_batch"] > 1:
        b = r["scores"]["typicality_batch"]
        notes.append(
            f"typicality of batches: {b['n_in']} in-distribution and {b['n_ood']} OOD batches from one shuffle of each "
            "side drawn with --seed; with few batches its metrics move with the seed"
        )
    return notes


def run_ood(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    _check_ood_data_dir(args)
    run, bg, k_of = _scored_runs(args)
    figure = _checked_outputs(args, run, bg)
    _RESULTS.kept(run.path)  # a foreign ood.json or ood-scores.csv is refused before any work
    own_result_table(run.path / PER_INPUT, "set,split,index", "score again", named_columns=True)
    scored = _score(args, run, bg, k_of)
    result = {**_record(args, run, bg, k_of, scored), "seconds": time.perf_counter() - t0}
    say(format_table(result))
    for note in _notes(result):
        say(f"  {note}")
    say_partly_trained(run, "  ")
    if bg is not None:
        say_partly_trained(bg, "  ", f"the weights of the background {args.background}")
    for extra in (scored.foreign, scored.shared):
        if extra is not None:
            say(f"  note: {extra}")
    if is_data_file(args.ood) and args.ood_split != "all":
        say(
            f"  note: {args.ood} is split as for training (80/10/10, seeded): its {args.ood_split} split holds "
            f"{plural(scored.ood_rows, 'row')} of it"
            + (f" (--limit scores {result['n_ood']})" if result["n_ood"] < scored.ood_rows else "")
            + "; --ood-split all scores every row"
        )
    if min(result["n_in"], result["n_ood"]) < FEW_INPUTS:
        n_in, n_ood = result["n_in"], result["n_ood"]
        say(
            f"  note: {plural(n_in, 'in-distribution input')} and {plural(n_ood, 'OOD input')}: each OOD input carries "
            f"1/{n_ood} of the AUROC and each in-distribution one 1/{n_in}: coarse numbers; score more inputs for finer ones"
        )
    if bg is not None and bg.cfg.optim.mutation_rate == 0:
        say(f"  note: {args.background} was trained without --mutation-rate (Ren et al. used 0.1 to 0.3)")
    _write(args, run, result, scored, figure)
    return 0


def _scored_runs(args: argparse.Namespace) -> tuple[Run, Run | None, dict[int, int]]:
    """The run, its --background (or None) and each one's k (by ``id``: 0 where exact, 1 for a
    point-mass posterior; a flag given for the other model leaves those as they are), the flags
    checked against them."""
    run = _likelihood_run(args.run_dir, "the run", args.device)
    bg = None if args.background is None else _likelihood_run(args.background, "--background", args.device)
    scored = [run, *([bg] if bg else [])]
    sampled = {id(r) for r in scored if r.model.estimate_kind != "exact" and not r.model.point_mass_posterior}
    if args.iw_samples is not None and not sampled:  # each exact or a point mass: refused as dgm eval refuses it
        estimate_samples(next((r for r in scored if r.model.point_mass_posterior), run), args.iw_samples)
    if args.iw_samples is not None and any(r.model.estimate_kind == "time-sampled" for r in scored):
        raise ConfigError("--iw-samples: a diffusion model is scored by its bound over the run's time_samples, without "
                          "importance sampling")  # fmt: skip
    k_of = {id(r): estimate_samples(r, args.iw_samples if id(r) in sampled else None) for r in scored}
    if bg is not None:
        _check_background(run, bg, args.background)
    return run, bg, k_of


def _checked_outputs(args: argparse.Namespace, run: Run, bg: Run | None) -> Path | None:
    """--out's figure path (or None), and --json checked: a .json name (so never the figure, nor a
    data file such as --ood's), nor a run's file (``command_output``)."""
    if args.force and args.out is None and args.json is None:  # (ood.json in the run is kept by protocol, never replaced)
        raise ConfigError("--force replaces --out or --json where they exist, and neither is given: leave it out")
    figure = png_output(args) if args.out is not None else None
    if args.json is not None:
        if Path(args.json).suffix.lower() != ".json":
            raise DataError(f"--json must name a .json file, got {args.json}")
        command_output(args, args.json, what="--json")
    return figure


class _Scored(NamedTuple):
    scores: OODScores
    lp_in: torch.Tensor  # (N_in,) log p(x) of the run's model
    lp_ood: torch.Tensor
    subsets: dict  # the seeded subsets of --limit: {"in": ..., "ood": ...}
    code_bits: tuple[torch.Tensor, torch.Tensor] | None  # PNG code lengths, for the complexity score
    foreign: str | None  # a note on the background's data
    ood_rows: int  # the rows of --ood's split, before --limit
    file_rows: dict  # {"in": ..., "ood": ...}: each input's row of the one file it was drawn from, before --limit (or None)
    ood_digest: str  # --ood's data by their content (Dataset.fingerprint): a file's name alone names no data
    table_note: str | None  # what a table's log p(x) is of (``standardized_note``)
    fit: dict  # the training and held-out inputs the typicality test was fitted on, of how many: {"train", "train_of", ...}
    shared: str | None  # a note on OOD inputs that are inputs of the run's own data (``_shared_rows``)


def _score(args: argparse.Namespace, run: Run, bg: Run | None, k_of: dict[int, int]) -> _Scored:
    dataset = run_data(run, _own_data_dir(run, args), args.data, args.schema)
    ood = _ood_dataset(run, args)
    own = run.record["data"].get("sha256")
    if own is not None and holds_recorded_data(ood, own):
        raise DataError(
            f"--ood {args.ood} holds the data {run.path} was trained on: its inputs are in-distribution, and every "
            "score would tell them apart by chance alone; name other data"
        )
    foreign = None if bg is None else _background_data(run, bg, args.background, ood)
    raw_in, sub_in = _subset(_complete(dataset.split(args.in_split).x, "in-distribution"), args.limit, args.seed)
    ood_x, ood_file_rows = _ood_rows(args, ood)
    ood_rows = _complete(ood_x, "--ood")
    raw_ood, sub_ood = _subset(ood_rows, args.limit, args.seed + 1)
    raw_train, _ = _subset(_complete(dataset.train.x, "training"), args.fit_limit, args.seed + 2)
    raw_valid, _ = _subset(_complete(dataset.valid.x, "validation"), args.fit_limit, args.seed + 3)
    fit = {"train": len(raw_train), "train_of": len(dataset.train.x)}
    fit |= {"valid": len(raw_valid), "valid_of": len(dataset.valid.x)}

    def ll(r: Run, raw: torch.Tensor, inputs: str) -> torch.Tensor:
        model = f"the background model {args.background}" if r is bg else f"the model of {run.path}"
        return _log_px(r, raw, k_of[id(r)], args.seed, f"{model}, scoring the {inputs} inputs")

    lp_in, lp_ood = ll(run, raw_in, "in-distribution"), ll(run, raw_ood, "--ood")
    images = _code_images(run, raw_in), _code_images(run, raw_ood)
    binary = _code_binary(run)
    code_bits = (
        None
        if images[0] is None or images[1] is None
        else (png_code_length(images[0], binary=binary), png_code_length(images[1], binary=binary))
    )
    scores = ood_scores(
        lp_in,
        lp_ood,
        num_dims=math.prod(run.record["data"]["event_shape"]),
        background=None if bg is None else (ll(bg, raw_in, "in-distribution"), ll(bg, raw_ood, "--ood")),
        code_bits=code_bits,
        typicality_fit=(ll(run, raw_train, "training"), ll(run, raw_valid, "validation")),
        typicality_batch=args.typicality_batch,
        seed=args.seed,
    )
    file_rows = {"in": dataset.split(args.in_split).rows, "ood": ood_file_rows}
    subsets = {"in": sub_in, "ood": sub_ood}
    return _Scored(
        scores, lp_in, lp_ood, subsets, code_bits, foreign, len(ood_rows), file_rows, ood.fingerprint(),
        standardized_note(dataset) if dataset.columns else None, fit, _shared_rows(raw_ood, dataset, args.ood),
    )  # fmt: skip


def _log_px(r: Run, raw: torch.Tensor, k: int, seed: int, what: str) -> torch.Tensor:
    """Each input's log p(x) under ``r``'s model (``k`` importance samples where it samples), a
    non-finite one refused with ``what`` (which model, of the run and its background, and which
    inputs) before its words. The inputs are transformed on the CPU (the same noise on any
    device) and scored where the model is; ``log_likelihoods`` returns them on the CPU."""
    x = _inputs(r, raw).to(r.device)
    try:
        return log_likelihoods(r.model, x, log_volume=r.transform.log_volume, iw_samples=k, seed=seed)
    except EvaluationError as e:
        raise EvaluationError(f"{what}: {e}") from None


def _row_keys(x: torch.Tensor) -> list[bytes]:
    """A digest of each row's values, the same for the same values in any dtype (as float64, in chunks)."""
    rows = x.reshape(len(x), -1)
    return [
        hashlib.blake2b(r.tobytes(), digest_size=16).digest()
        for i in range(0, len(rows), 4096)
        for r in rows[i : i + 4096].double().numpy()
    ]


def _shared_rows(raw_ood: torch.Tensor, dataset: Dataset, name: str) -> str | None:
    """A note where scored OOD inputs are inputs of the run's own data (a file of its test images:
    ``holds_recorded_data`` tells only the whole data apart), by split; None where none is."""
    ood = _row_keys(raw_ood)
    found = []
    for split in SPLITS:
        seen = set(_row_keys(dataset.split(split).x))
        n = sum(k in seen for k in ood)
        if n:
            found.append(f"{n} in its {split} split")
    if not found:
        return None
    return (
        f"of the {plural(len(ood), 'OOD input')} of {name}, the run's own data hold the same values ({', '.join(found)}): "
        "in-distribution inputs, which no score can tell apart"
    )


def _ood_rows(args: argparse.Namespace, ood: Dataset) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The OOD inputs, and each one's row of the one file they were drawn from (None where they
    were not): --ood-split's rows; all: the train, valid and test splits one after the other (the
    indices of ood-scores.csv count in that order), in the file's own order where they were drawn
    from one file's rows (an index is then the file's row)."""
    if args.ood_split != "all":
        split = ood.split(args.ood_split)
        return split.x, split.rows
    splits = [ood.split(s) for s in SPLITS]
    x = torch.cat([s.x for s in splits])
    rows = [s.rows for s in splits if s.rows is not None]
    if len(rows) < len(splits):
        return x, None
    order = torch.cat(rows).argsort()
    return x[order], torch.cat(rows)[order]


def _record(args: argparse.Namespace, run: Run, bg: Run | None, k_of: dict[int, int], scored: _Scored) -> dict:
    """What ood.json keeps of this call (less its seconds)."""
    num_dims = math.prod(run.record["data"]["event_shape"])
    continuous = scores_densities(run.transform.kind, run.cfg.model)
    lp_in, lp_ood = scored.lp_in, scored.lp_ood
    return {
        **scored.scores.to_dict(),
        "dataset": run.record["data"]["name"],
        "in_split": args.in_split,
        "ood": args.ood,  # as given (as the table says it); a file's full path beside it, for the protocol
        "ood_file": str(Path(args.ood).expanduser().resolve()) if is_data_file(args.ood) else None,
        "ood_sha256": scored.ood_digest,
        "table_note": scored.table_note,
        "ood_split": args.ood_split,
        "n_in": len(lp_in),
        "n_ood": len(lp_ood),
        "limit": args.limit,
        "subsets": scored.subsets,
        "fit_limit": args.fit_limit,
        "typicality_fit": scored.fit,
        "typicality_batch": args.typicality_batch,
        "estimate": run.model.estimate_kind,
        "transform": run.transform.kind,
        "iw_samples": k_of[id(run)],
        "bits_per_dim": None
        if continuous
        else {w: (-t.mean().item()) / (num_dims * math.log(2)) for w, t in (("in", lp_in), ("ood", lp_ood))},
        "complexity_note": None
        if scored.code_bits
        # (a table of categorical columns only is taken as "continuous", but its numbers are probabilities)
        else f"no integer images of at most 256 levels ({_words(run.transform.kind, continuous)})",
        "background": None if bg is None else str(args.background),
        "background_weights": None if bg is None else bg.weights_digest(),
        "background_mutation_rate": None if bg is None else bg.cfg.optim.mutation_rate,
        "background_data": None if bg is None else bg.record["data"].get("name"),
        "background_estimate": None if bg is None else bg.model.estimate_kind,
        "background_transform": None if bg is None else bg.transform.kind,
        "background_iw_samples": None if bg is None else k_of[id(bg)],
        "checkpoint": run.checkpoint.name,
        "weights": run.weights_digest(),
        "seed": args.seed,
    }


def _words(kind: str, continuous: bool) -> str:
    """What the run's data are, for the complexity note: its transform's kind, or a table's categories."""
    return "a table's rows of categories" if kind == "continuous" and not continuous else f"{kind} data"


def _write(args: argparse.Namespace, run: Run, result: dict, scored: "_Scored", figure: Path | None) -> None:
    """ood.json (kept by protocol), every input's scores, and the --json and --out copies."""
    scores = scored.scores
    per_input = _per_input_csv(scores.scores, result["subsets"], (args.in_split, args.ood_split), scored.file_rows)
    count_kept = _RESULTS.keep(run.path, result, also=lambda: atomic_write_bytes(run.path / PER_INPUT, per_input))
    wrote = [f"{run.path / _KEPT} (results by protocol: {count_kept})", f"{run.path / PER_INPUT} (every input's scores)"]
    if args.json is not None:
        atomic_write_json(args.json, result)
        wrote.append(str(args.json))
    if figure is not None:
        title = f"{run.path.name}: {result['dataset']} {args.in_split} vs {args.ood} {args.ood_split}"
        write_png(figure, histogram_png(scores, (f"{result['dataset']} (in)", f"{args.ood} (OOD)"), title))
        wrote.append(str(figure))
    say(f"wrote {', '.join(wrote)}")
