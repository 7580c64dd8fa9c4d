"""``dgm report RUN [RUN ...] --out report.html``: one self-contained HTML page of one or more
runs: the configuration, learning curves, the evaluations with their protocols, figures drawn
from the model (samples; reconstructions and latent means for models with latents; a 2-D
density's heat map) and, for
several runs, a comparison table."""

import argparse
import math
from collections.abc import Collection, Sequence
from pathlib import Path

import torch

from dgmkit._io import atomic_write_bytes, full_path
from dgmkit.cli.argtypes import SEED
from dgmkit.cli.common import (
    add_count_flag,
    add_data_flags,
    add_device_flag,
    chain_reads_folder,
    codes_name,
    command_output,
    data_dir_unread,
    data_name,
    fit_step,
    given_data_flags,
    holes_note,
    plural,
    run_data,
    say,
    score_label,
    shell_path,
    shows_images,
    split_data,
    to_display,
)
from dgmkit.cli.density import density_figure, draws_density
from dgmkit.cli.evaluate import EVALS, eval_notes, protocol_key, read_eval_json
from dgmkit.cli.figures import (
    MAX_SAMPLE_STEPS,
    SampleOptions,
    draw_samples,
    latent_scatter,
    non_finite_draws,
    reconstruction_pairs,
)
from dgmkit.config import Run, RunConfig, build_objective, load_run
from dgmkit.config.inputs import attach_input
from dgmkit.data.registry import is_table
from dgmkit.data.transforms import scores_densities
from dgmkit.distributions.flow import POSTERIOR_MEANS
from dgmkit.errors import ConfigError, DataError, DgmError, EvaluationError
from dgmkit.evaluation.figures import image_grid_png
from dgmkit.evaluation.report import finite_number, words_of_data
from dgmkit.reporting import NOT_DRAWN, RunPage, curves_left_out, logged_epoch, metric_keys, render_page
from dgmkit.settings import unused_keys
from dgmkit.training.checkpoint import counters_in, read_metadata, record_of
from dgmkit.training.metrics_file import MAX_METRICS_LINE_BYTES, MAX_METRICS_LINES, MetricsFileError, metrics_lines

__all__ = ["add_parser", "run_report", "read_metrics", "MAX_METRICS_LINES", "MAX_METRICS_LINE_BYTES"]


SAMPLES = 16  # images sampled per run, by default
DENSITY_GRID, DENSITY_SAMPLES = 200, 1000  # a 2-D density's figure: grid points per axis, samples beside it


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page of one or more runs (curves, evaluations, figures)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders written by dgm train")
    p.add_argument("--out", required=True, help="the .html file to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_count_flag(p, "--samples", 0, 400, help=f"images sampled per run (0: none; default: {SAMPLES})")
    add_count_flag(p, "--steps", 1, MAX_SAMPLE_STEPS, help="diffusion models: sampling steps (default: the model's)")
    p.add_argument("--no-figures", action="store_true", help="leave out the figures (no model passes, no data read)")
    p.add_argument("--title", default="dgmkit report", help="the page's title")
    p.add_argument("--seed", type=SEED, help="seed of the samples and of the images shown (default: 0)")
    add_data_flags(p)
    add_device_flag(p, "where the models draw the figures")
    p.set_defaults(func=run_report)


PLOTTED_LAYERS = 1024  # the most values a line's list may hold for the page to draw (``reporting.page._layer_series``)


def _drawable(v: object) -> bool:
    """Whether ``v``, a value of metrics.jsonl, is one the page draws: a number (or null), or a
    list of at most PLOTTED_LAYERS of them (a value per layer). Nothing else is kept."""
    if isinstance(v, list):
        return len(v) <= PLOTTED_LAYERS and all(a is None or isinstance(a, (int, float)) for a in v)
    return v is None or isinstance(v, (int, float))


def read_metrics(path: Path, keys: Collection[str] | None = None) -> list[dict]:
    """The epochs of a metrics.jsonl: one JSON object per line (where ``keys`` are given, only
    those, only values the page can draw (``_drawable``: numbers, lists of them), and only lines
    that hold one: what the page draws, so that memory stays within a few times the file's size;
    it was 55 times, 14 GB at the size cap; any other value is kept as the one string
    ``NOT_DRAWN``, which the page counts among the values its curves leave out). The file is
    read and checked a line at a time by ``training.metrics_file.metrics_lines``, as every
    reader of it does: a last line cut short (a run still writing) is left out; DataError where
    the file or a line is not one dgmkit writes (not a regular file, too large, too many lines, a
    line too long, not a JSON object, JSON dgmkit never writes: NaN or Infinity, a key twice)."""
    out: list[dict] = []
    try:
        for line in metrics_lines(path):
            row = line.row
            kept = row if keys is None else {k: row[k] if _drawable(row[k]) else NOT_DRAWN for k in keys if k in row}
            if kept or keys is None:  # (a line with none of the keys: nothing to keep)
                out.append(kept)
    except MetricsFileError as e:
        raise DataError(str(e) if e.unreadable else f"{e}; not a metrics file of dgmkit") from None
    return out


def _evaluations(run_dir: Path) -> dict[str, dict]:
    """The run's evaluations by protocol (evals.json), or its one eval.json where a run written
    before evals.json existed has only that, each read and checked as dgm eval reads them."""
    kept = EVALS.kept(run_dir)
    if kept:
        return kept
    one = read_eval_json(run_dir)
    return {} if one is None else {protocol_key(one): one}


def _notes_of(evals: dict[str, dict]) -> list[str]:
    """The notes dgm eval prints under these evaluations, each once (a record too old to hold
    what they need has none)."""
    notes: dict[str, None] = {}
    for r in evals.values():
        try:
            notes.update(dict.fromkeys(eval_notes(r)))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return list(notes)


def _whose(r: dict, run: Run, weights: str) -> str:
    """What an evaluation record is of where it is not of the run's weights now ("" where it
    is): another run's (the record names another run_id or model: a file copied or linked from
    there), of weights it does not name (dgmkit 0.1's), of earlier weights of this run, or of
    other weights where the record names no run (records before run_id)."""
    if r.get("run_id") is not None and r["run_id"] != run.record.get("run_id"):
        return f"not this run's: an evaluation of the run {r['run_id']}"
    if r.get("model") is not None and r["model"] != run.cfg.family:
        return f"not this run's: an evaluation of a {r['model']} model"
    if r.get("weights") == weights:
        return ""
    if r.get("weights") is None:
        return "of weights it does not name"
    if r.get("run_id") is not None:
        return "earlier weights than the run's now"
    return "other weights than the run's now (the record names no run)"


def _last_counters(run: Run) -> tuple[dict | None, str | None]:
    """The trainer's counters in the run's checkpoint.safetensors, read from its header alone (None
    where it holds none or cannot be read), and a note where that file is another run's (its record
    names another run id: a file copied or linked from there), whose counters are then not taken
    as the run's (None): its epochs would be said as the run's training, and bound its best score."""
    path = run.path / "checkpoint.safetensors"
    try:
        meta = read_metadata(path)  # (the header once: its record and counters)
        theirs = record_of(meta, path).get("run_id")
    except DgmError:
        return None, None
    own = run.record.get("run_id")
    if theirs != own:
        return None, (
            f"checkpoint.safetensors is of another run (run id {str(theirs)[:12]!r}, this run's {str(own)[:12]!r}): "
            "how far this run was trained is not known from it"
        )
    return counters_in(meta), None


def _shift(run: Run) -> float:
    """D log L: what takes a score of uniformly dequantized data (metrics.jsonl's, the checkpoint's
    best) to nats of the integers, as dgm train prints them and the page shows them (0 for other data)."""
    return math.prod(run.record["data"]["event_shape"]) * run.transform.log_volume


def _metrics_notes(run: Run, metrics: list[dict], t: dict | None) -> list[str]:
    """Where metrics.jsonl contradicts the trainer's counters ``t`` of checkpoint.safetensors (the
    epochs done; the best score at its epoch), a note (a file of another run, say); none where
    the checkpoint holds no counters of the run (``_last_counters``: None). The best score is looked for
    among the line's scores (the monitored one was another in runs of older versions: dgmkit
    0.1 tracked the ELBO of every family); a line one epoch ahead is a run stopped before that
    epoch's checkpoint."""
    if t is None:
        return []
    lines = {ep: m for m in metrics if (ep := logged_epoch(m)) is not None}
    notes, step, done = [], fit_step(run.cfg), t["epoch"]
    if lines and max(lines) == done + 1:
        notes.append(
            f"metrics.jsonl logs {step} {done + 1}, but the run stopped before its checkpoint (checkpoint.safetensors is "
            f"of {step} {done}: dgm train --resume goes on from there)"
        )
    elif lines and max(lines) != done:
        notes.append(
            f"metrics.jsonl logs {step}s up to {max(lines)}, but checkpoint.safetensors was written after {step} "
            f"{done}: the curves may not be of this run"
        )
    elif not lines and done > 0:  # (a file emptied, removed or not copied: no curves, and no best score to show)
        notes.append(f"metrics.jsonl logs no {step}, but checkpoint.safetensors was written after {step} {done}")
    best, at = t.get("best_valid"), t.get("best_epoch")
    line = lines.get(at) if type(at) is int else None
    if finite_number(best) and line is not None:
        scores = {k: v for k, v in line.items() if k.startswith(("valid_", "train_")) and finite_number(v)}
        if scores and not any(math.isclose(v, best, rel_tol=1e-9, abs_tol=1e-9) for v in scores.values()):
            notes.append(  # (in the units of the curves and of dgm train's line: nats of the integers, less the shift)
                f"metrics.jsonl gives no score of {best - _shift(run):.3f} at {step} {at}, where checkpoint.safetensors "
                "records that best score: the curves may not be of this run"
            )
    return notes


def _data_words(run: Run) -> tuple[str, ...]:
    """What the run's numbers are of, in words, as the comparison says them of its evaluations'
    records (binarized, dequantized integer levels, a table's standardized rows; "observed
    entries only" of incomplete data), from the run's record alone: its best validation score is
    of those data where no evaluation says so."""
    continuous = scores_densities(run.transform.kind, run.cfg.model)  # (a table's numeric columns, standardized)
    words = words_of_data(run.transform.kind, continuous, continuous and is_table(run.cfg.data.dataset))
    # (a run before 2026-11-30 recorded no observed_only: its missing_rate says it, a table's own holes do not)
    holes = run.record.get("observed_only") or run.cfg.data.missing_rate > 0
    return tuple(w for w in (words, "observed entries only" if holes else None) if w)


def _used_config(cfg: RunConfig, event_shape: Sequence[int] | None = None, num_levels: int | None = None) -> dict:
    """The run's config as config.json holds it, less the settings that do not apply to it
    (another likelihood's, say: ``settings.unused_keys``) and those its choices, and its data of
    ``event_shape`` with ``num_levels``, leave unread (``RunConfig.unread_keys``: a family's
    ``inert_settings``, lr_decay under a constant schedule, missing_seed without missing_rate, ...)."""
    config = cfg.to_dict()
    unused = set(unused_keys(cfg.model)) | cfg.unread_keys(event_shape, num_levels)
    return {name: {k: v for k, v in table.items() if k not in unused} for name, table in config.items()}


def _data_dir(run: Run, args: argparse.Namespace) -> str | None:
    """--data-dir for a run whose data are read from a folder; None for another (a run on digits
    beside one on MNIST, or on the latents of a run on digits: the folder is the other run's)."""
    return args.data_dir if chain_reads_folder(run.cfg.data) else None


@torch.no_grad()
def _figures(run: Run, args: argparse.Namespace) -> tuple[list[tuple[str, str, bytes]], list[str]]:
    figs: list[tuple[str, str, bytes]] = []
    notes: list[str] = []
    model = run.model
    images = shows_images(run)
    if args.samples and model.can_sample and images and run.cfg.data.codes_of:  # (code grids: no pictures of them)
        _decoded_samples(run, args, figs, notes)  # the images they stand for, through the VQ-VAE's decoder
    elif args.samples and model.can_sample and images:
        _samples(run, args, figs, notes)
    if draws_density(run):  # a 2-D flow (or PPCA of two columns): its density, as dgm density draws it
        _density(run, args, figs, notes)
    if not (model.has_latents or model.reconstructs):  # (a VQ-VAE reconstructs, and has no one vector per image)
        return figs, notes
    try:
        x, y = split_data(run, "test", _data_dir(run, args), args.data, schema=args.schema)
    except (DataError, ConfigError) as e:  # (--data and --schema name one run's files: another run's page goes on)
        notes.append(f"no reconstruction or latent figures: the test data could not be read ({e})")
        return figs, notes
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed)).to(x.device)  # the same on any device
    if images and model.reconstructs and run.cfg.data.codes_of:
        notes.append(f"no reconstruction figure: the run models the codes of {run.cfg.data.codes_of}, grids of code "
                     "indices in an arbitrary order, which no picture shows")  # fmt: skip
    elif images and model.reconstructs:
        shown = x[idx[:8]]
        pairs = reconstruction_pairs(run, shown).cpu()
        caption = (
            f"{plural(len(shown), 'random test image')} (left) and their reconstructions (right), seed {args.seed}"
            f"{holes_note(shown)}"
        )
        figs.append(("reconstructions", caption, image_grid_png(pairs, 4)))
    if not model.has_latents:
        return figs, notes
    pick = idx[:1000]
    what = "rows" if not images else "code grids" if run.cfg.data.codes_of else "images"  # (as dgm sample says them)
    if len(pick) < 2:
        notes.append(f"no latent figure: the test split holds {len(pick)} row (a scatter needs at least 2)")
        return figs, notes
    name = codes_name(run, x[pick])
    title = f"{data_name(run)} test: {name} (n={len(pick)})"
    scatter, axes = latent_scatter(run, x[pick], None if y is None else y[pick].cpu(), title)  # labels: for matplotlib
    alt = "latent means" if name == POSTERIOR_MEANS else "latent codes"  # (an autoencoder's z = f(x): no means)
    figs.append((alt, f"{name} of {len(pick)} random test {what} ({axes})", scatter))
    return figs, notes


def _samples(run: Run, args: argparse.Namespace, figs: list, notes: list[str]) -> None:
    """The run's samples as a figure; a note in their place where some are not finite numbers (a
    flow trained little: the other runs' pages, and this one's other parts, go on)."""
    steps = args.steps if run.model.sample_steps else None  # --steps: for the diffusion models among the runs
    shown, what = draw_samples(run, args.samples, args.seed, SampleOptions(steps=steps))
    lower = f"a lower temperature (dgm sample {shell_path(run.path)} --temperature 0.7, say)"
    why = non_finite_draws(shown, run, lower=lower)
    if why:
        notes.append(f"no samples: {why}")
        return
    side = max(1, round(args.samples**0.5))
    shown = to_display(shown, run).cpu()  # to a PNG, on the CPU
    figs.append(("samples", f"{what.rstrip(',')} (seed {args.seed})", image_grid_png(shown, side)))


def _decoded_samples(run: Run, args: argparse.Namespace, figs: list, notes: list[str]) -> None:
    """Samples of a model of a VQ-VAE's code grids, as images: the grids this run draws, decoded by
    the VQ-VAE whose codes it models (``dgm sample VQ-VAE --code-prior RUN``); where that run is gone,
    or takes no code prior, a note says why there are none."""
    source = str(run.cfg.data.codes_of)
    why = f"the run models the codes of {source}, not images"
    try:
        vq = load_run(source, device=run.device)
        if "code-prior" not in vq.cfg.model.inputs:
            raise ConfigError(f"{source} is a run of the {vq.cfg.family} family, which takes no code prior")
        attach_input(vq, "code-prior", run)
    except DgmError as e:
        notes.append(f"no samples: {why}, and they could not be drawn through its decoder ({e})")
        return
    shown, what = draw_samples(vq, args.samples, args.seed)
    side = max(1, round(args.samples**0.5))
    caption = f"{what.rstrip(',')} (seed {args.seed}): code grids drawn by this run, decoded by {source}"
    figs.append(("samples", caption, image_grid_png(to_display(shown, vq).cpu(), side)))


def _density(run: Run, args: argparse.Namespace, figs: list, notes: list[str]) -> None:
    """The run's 2-D density beside its samples (``density_figure``) added to ``figs``; what keeps
    it out, or that the grid does not resolve it, to ``notes``."""
    try:
        dataset = run_data(run, _data_dir(run, args), args.data, args.schema)
    except (DataError, ConfigError) as e:  # (the window is drawn around the test data)
        notes.append(f"no density figure: the test data could not be read ({e})")
        return
    try:
        drawn = density_figure(run, dataset, DENSITY_GRID, DENSITY_SAMPLES, args.seed)
    except EvaluationError as e:  # (NaN on the grid: the page's other parts, and the other runs', still shown)
        notes.append(f"no density figure: {e}")
        return
    caption = (
        f"density p(x) on a {DENSITY_GRID}x{DENSITY_GRID} grid around the test data (probability mass in the window "
        f"{drawn.mass:.4f}) and {DENSITY_SAMPLES} samples x ~ p(x), seed {args.seed} ({drawn.share:.4f} of them in it)"
    )
    figs.append(("density", caption, drawn.png))
    if not drawn.resolved:
        notes.append(
            f"the density changes faster than a {DENSITY_GRID}x{DENSITY_GRID} grid resolves (the grid's mass in the "
            f"window {drawn.mass:.4f}, the samples' share {drawn.share:.4f}): dgm density --grid draws it finer"
        )


def _check_figure_flags(args: argparse.Namespace) -> None:
    """Flags that only the figures read, refused beside --no-figures (a page made without them is
    not the one asked for), and --steps beside --samples 0."""
    if args.samples == 0 and args.steps is not None and not args.no_figures:
        raise ConfigError("--steps sets how the samples are drawn, and --samples 0 draws none: leave out one or the other")
    if not args.no_figures:
        return
    given = {
        "--samples": args.samples is not None,  # (given at all: --samples 16 beside --no-figures was taken unread)
        "--steps": args.steps is not None,
        "--seed": args.seed is not None,
        **dict.fromkeys(given_data_flags(args), True),
    }
    unread = [flag for flag, on in given.items() if on]
    if unread:
        raise ConfigError(
            f"--no-figures leaves out the figures, and {', '.join(unread)} only choose{'s' if len(unread) == 1 else ''} "
            "what they show: leave out one or the other"
        )


def _checked_out(args: argparse.Namespace) -> Path:
    """--out, an .html file that may be written, for run folders named once each, and the flags
    that only the figures read (``_check_figure_flags``)."""
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise DataError(f"--out must name an .html file, got {out}")
    _check_figure_flags(args)
    command_output(args, out, runs=args.run_dirs)
    if len(set(map(full_path, args.run_dirs))) != len(args.run_dirs):
        raise DataError("a run folder is named twice")
    return out


def _check_flags_read(args: argparse.Namespace, runs: list[Run]) -> None:
    """Refuses a figure flag that no run here reads (--steps, --samples, --data-dir)."""
    if args.steps is not None and not any(run.model.sample_steps for run in runs):
        raise ConfigError("--steps is for diffusion models (their ancestral sampling steps); no run here is one")
    if args.samples not in (None, 0) and not any(run.model.can_sample and shows_images(run) for run in runs):
        raise ConfigError(  # (a table's rows, 2-D points: no samples drawn as pictures, so the number went unread)
            f"--samples {args.samples}: the samples shown are images, and no run here models images (their data are rows "
            "of values): leave it out"
        )
    if args.data_dir is not None and not any(chain_reads_folder(run.cfg.data) for run in runs):
        if len(runs) == 1 and not runs[0].cfg.data.codes_of:
            raise ConfigError(data_dir_unread(runs[0].cfg.data, runs[0].path))
        raise ConfigError(  # (a run on another run's data: those of the first run of its chain)
            "--data-dir is of datasets read from a folder; no run here was trained on one, nor on the data of runs "
            "trained on one"
        )


def run_report(args: argparse.Namespace) -> int:
    out = _checked_out(args)
    runs = [load_run(d, device=args.device) for d in args.run_dirs]
    _check_flags_read(args, runs)
    args.samples = SAMPLES if args.samples is None else args.samples  # (None until here: given or not)
    args.seed = 0 if args.seed is None else args.seed
    pages = []
    for d, run in zip(args.run_dirs, runs):
        objective = build_objective(run.cfg) if run.cfg.model.fit == "gradient" else None
        score = objective.score if objective is not None else "log_px"
        label = score_label(objective.label if objective is not None else "log p(x)", run.transform.kind)
        try:
            figures, notes = ([], []) if args.no_figures else _figures(run, args)
        except EvaluationError as e:  # (a model whose values overflow: refused, as by every command, by its name)
            raise EvaluationError(f"{d}: {e}") from None
        evals = _evaluations(run.path)
        weights = run.weights_digest()
        # (and the ELBO's: dgmkit 0.1 tracked it as every family's best score, which _metrics_notes looks for; PPCA's EM
        # iterations and whether it converged, which the comparison names)
        keys = metric_keys(score) | {"train_elbo", "valid_elbo", "em_iterations", "em_converged"}
        metrics = read_metrics(run.path / "metrics.jsonl", keys)
        counters, foreign = _last_counters(run)
        pages.append(
            RunPage(
                name=str(d),
                describe=run.cfg.model.describe(),
                dataset=str(run.record["data"].get("name", run.cfg.data.dataset)),
                config=_used_config(run.cfg, run.record["data"]["event_shape"], run.record["data"]["num_levels"]),
                metrics=metrics,
                score=score,
                score_label=label,
                evals=evals,
                eval_notes=_notes_of(evals),
                figures=figures,
                notes=([foreign] if foreign else []) + _metrics_notes(run, metrics, counters) + notes,
                weights=weights,
                marks={protocol: _whose(r, run, weights) for protocol, r in evals.items()},
                step=fit_step(run.cfg),
                fit=run.cfg.model.fit,
                data_words=_data_words(run),
                checkpointed=None if counters is None else counters["epoch"],  # (the epoch it was written after)
                shift=_shift(run),
            )
        )
    atomic_write_bytes(out, render_page(pages, args.title).encode("utf-8"))  # (not over one made meanwhile)
    say(f"wrote a report of {plural(len(pages), 'run')} to {out} ({out.stat().st_size / 1024:.0f} KiB, self-contained)")
    _say_notes(pages)
    return 0


def _say_notes(pages: list[RunPage]) -> None:
    """What the page notes of each run (no figures, curves not of it, values the curves leave
    out), said on the terminal too."""
    for page in pages:
        left_out = curves_left_out(page.metrics, page.score)
        for note in [*page.notes, *([] if left_out is None else [left_out])]:
            say(f"note: {page.name}: {note}")
