"""``dgm sample``, ``dgm reconstruct``, ``dgm interpolate`` and ``dgm latents``: PNG figures
(and a table run's samples as rows of its table)."""

import argparse
import io
import math
import shlex
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch

from dgmkit._io import atomic_write_bytes
from dgmkit.cli.argtypes import SEED, given_count, given_real, keyword, real
from dgmkit.cli.common import (
    add_count_flag,
    add_data_flags,
    add_device_flag,
    add_input_flags,
    add_limit_flag,
    add_output_flags,
    add_run_parser,
    add_seeded_data_flags,
    add_split_flag,
    attach_inputs,
    codes_name,
    command_output,
    data_name,
    data_to_display,
    decoded_means,
    decoded_name,
    encoded_holes_note,
    figure_split,
    given_data_flags,
    holes_note,
    images_only,
    latent_model,
    layers_note,
    plural,
    png_output,
    posterior_means,
    reconstructions,
    run_data,
    say,
    shows_images,
    to_display,
    write_png,
)
from dgmkit.config import Run, load_run
from dgmkit.data.registry import is_table
from dgmkit.data.table import write_table
from dgmkit.distributions.flow import POSTERIOR_MEANS
from dgmkit.errors import ConfigError, DataError, EvaluationError, shown_value
from dgmkit.evaluation.figures import check_grid, image_grid_png, project_2d, scatter_png
from dgmkit.models.diffusion import MAX_SAMPLE_STEPS, sampling_steps

__all__ = [
    "add_parsers",
    "sample",
    "reconstruct",
    "interpolate",
    "latents",
    "draw_samples",
    "non_finite_draws",
    "SampleOptions",
    "reconstruction_pairs",
    "needs_latents",
    "reconstructs",
    "picked_images",
    "picked_pairs",
    "interpolation",
    "latent_scatter",
    "MAX_SAMPLES",
    "MAX_SAMPLE_STEPS",
    "MAX_TEMPERATURE",
]

MAX_SAMPLES = 10_000  # images one ``dgm sample`` draws
SAMPLE_BATCH = 1000  # drawn at once: the memory of sampling is that of one batch (a PixelCNN's cache, a U-Net's step)
MAX_TEMPERATURE = 100.0  # a flow's base scale


def _pick(n_total: int, n: int, seed: int) -> torch.Tensor:
    """n of n_total indices, a seeded draw on the CPU (the same pick on any device)."""
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]


def _noun(x: torch.Tensor) -> str:
    """What a row of x (N, *event) is called: an image, or a datapoint where the rows are a table's
    or vectors, (1, 1, D) (as ``shows_images`` tells them)."""
    return "image" if x.dim() == 4 and x.shape[2] > 1 and x.shape[3] > 1 else "datapoint"


def picked_images(x: torch.Tensor, n: int, seed: int, split: str, flag: str = "-n") -> torch.Tensor:
    """n rows of a split's x, drawn at random with ``seed`` (refused where the split holds fewer)."""
    if n > len(x):
        raise ConfigError(f"{flag} {n} is more than the {plural(len(x), _noun(x))} of the {split} split")
    return x[_pick(len(x), n, seed).to(x.device)]


def picked_pairs(
    x: torch.Tensor, pairs: int, seed: int, split: str, flag: str = "--pairs"
) -> tuple[torch.Tensor, torch.Tensor]:
    """2 x ``pairs`` distinct rows of a split's x drawn at random with ``seed``, as the pairs' first
    and second images."""
    if 2 * pairs > len(x):
        raise ConfigError(f"{flag} {pairs} needs {2 * pairs} {_noun(x)}s; the {split} split has {len(x)}")
    idx = _pick(len(x), 2 * pairs, seed).to(x.device)
    return x[idx[:pairs]], x[idx[pairs:]]


@torch.no_grad()
def interpolation(run: Run, a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """(P, steps, *event): the means of p(x|z) (a PixelVAE's greedy decodes: ``decoded_name``) at
    ``steps`` evenly spaced points from the code that reconstructs each image of a
    (``reconstruction_code``: a representative point of q(z|x)) to that of the image of b beside
    it (both ends included, their reconstructions), in the units the model scores."""
    model = latent_model(run)
    za, zb = model.reconstruction_code(a), model.reconstruction_code(b)  # (P, M)
    t = torch.linspace(0, 1, steps, device=za.device).view(1, -1, *[1] * (za.dim() - 1))
    z = za[:, None] * (1 - t) + zb[:, None] * t  # (P, S, *latent): for one-hot latents, through the simplex
    return decoded_means(run, z.flatten(0, 1)).unflatten(0, z.shape[:2])  # (P, S, C, H, W)


class SampleOptions(NamedTuple):
    """How ``dgm sample`` draws (each an option some models take, refused by the others):
    ``temperature`` of a flow's base distribution, the ``naive`` uncached path of an
    autoregressive model, a diffusion model's ancestral ``steps``, and ``draw``: draws of p(x|z),
    not its means."""

    temperature: float | None = None
    naive: bool = False
    steps: int | None = None
    draw: bool = False

    @classmethod
    def given(cls, args: argparse.Namespace, draw: bool | None = None) -> "SampleOptions":
        """The options of a ``dgm sample`` command line (``draw``: in place of its --draw)."""
        return cls(args.temperature, args.naive, args.steps, args.draw if draw is None else draw)


def draw_samples(
    run: Run, n: int, seed: int, options: SampleOptions | None = None, keywords: bool = False
) -> tuple[torch.Tensor, str]:
    """n samples of a run's model, seeded (the global random stream is restored afterwards), and
    what they are in words, drawn as ``options`` say (``SampleOptions``; default: the model's
    own way): the means of p(x|z) for a latent variable model (``draw``: draws of p(x|z));
    x ~ p(x) otherwise, at ``temperature`` for a flow, cached or ``naive`` for an
    autoregressive model, in ``steps`` ancestral steps for a diffusion model (default: its own).
    The draws are made where the model is (``run.device``), from a generator there seeded with
    ``seed`` (a CUDA device draws other samples than the CPU), ``SAMPLE_BATCH`` at a time
    (rounded down to a whole number of the model's ``sample_period``, so that a class-conditional
    model's classes stay in turn; one stream: the first batch of n samples is the draw of n = one
    batch). Options the model does not take are refused (``check_sample_options``; ``keywords``:
    named as ``dgmkit.sample``'s keywords, not as ``dgm sample``'s flags)."""
    options = options or SampleOptions()
    check_sample_options(run, n, options, keywords)
    temperature, naive, steps, draw = options
    # (a number given from Python, Fraction(1, 2) or np.uint8(4), as the Python number torch takes)
    temperature, steps = None if temperature is None else float(temperature), None if steps is None else int(steps)
    model = run.model
    device = run.device
    g = torch.Generator(device=device).manual_seed(seed)
    taken: dict[str, Any] = {}  # the keywords of the model's own sample
    if model.sample_temperature:
        taken["temperature"] = 1.0 if temperature is None else temperature
    if model.sample_cached:
        taken["cached"] = not naive
    if model.sample_steps:
        taken["steps"] = model.default_sample_steps if steps is None else steps
    cuda = list(range(torch.cuda.device_count())) if device.type == "cuda" else []  # manual_seed seeds them all
    batch = max(SAMPLE_BATCH // model.sample_period, 1) * model.sample_period
    shown = model.sample_means and not draw  # the means of p(x|z), else the draws
    parts = []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for start in range(0, n, batch):
            parts.append(model.sample(min(batch, n - start), generator=g, **taken)[1 if shown else 0])
    x = parts[0] if len(parts) == 1 else torch.cat(parts)
    return x, _drawn_words(model, n, shown, taken.get("temperature", 1.0), naive, taken.get("steps"))


def _drawn_words(model: Any, n: int, shown: bool, temperature: float, naive: bool, steps: int | None) -> str:
    """What ``draw_samples`` drew, in words (a class-conditional model's classes in turn said)."""
    period = model.sample_period
    classes = f" with the class y = i mod {period} of the i-th" if period > 1 else ""
    if shown:
        return plural(n, "mean", "means") + f" of p(x|z), z ~ {model.prior_name}{classes},"
    if model.sample_means:
        return plural(n, "draw") + f" x ~ p(x|z), z ~ {model.prior_name}{classes},"
    if model.sample_cached:
        return plural(n, "sample") + f" x ~ p(x), pixel by pixel ({'naive' if naive else 'cached'} path),"
    what = plural(n, "sample") + " x ~ p(x)"
    what += f" at temperature {temperature:g}" if model.sample_temperature else ""
    what += f" by ancestral sampling in {plural(cast(int, steps), 'step')}" if model.sample_steps else ""
    return what


def refuse_unsampled(run: Run) -> None:
    """Refuses (ConfigError) a run whose model has no distribution to sample from (an autoencoder)."""
    if not run.model.can_sample:
        raise ConfigError(f"the {run.cfg.family} model has no distribution to sample from (no prior)")


def check_sample_options(run: Run, n: int, options: SampleOptions, keywords: bool = False) -> None:
    """Refuses (ConfigError, in ``dgm sample``'s words; ``keywords``: naming the options as
    ``dgmkit.sample``'s keywords) n < 1 and a sampling option the run's model does not take, rather
    than ignoring it (a temperature given at 1 too)."""
    named = keyword if keywords else str
    model = run.model
    temperature, naive, steps, draw = options
    refuse_unsampled(run)
    given_count(n, 1, MAX_SAMPLES, "the number of samples")
    if steps is not None:
        sampling_steps(steps, named("--steps"), ConfigError)
    if temperature is not None:
        given_real(temperature, 0, MAX_TEMPERATURE, named("--temperature"))
    for flag, value in ((named("--naive"), naive), (named("--draw"), draw)):
        if not isinstance(value, bool):  # (from Python: draw="no" is true)
            raise ConfigError(f"{flag} is True or False, got {shown_value(value)}")
    if temperature is not None and not model.sample_temperature:
        note = model.untaken_sample_note("temperature")  # (a flow prior over z: drawn at temperature 1)
        also = "" if note is None else f"; the {run.cfg.family} model's {note}"
        raise ConfigError(
            f"{named('--temperature')} is for flows of the data (a reduced-temperature base distribution){also}"
        )
    if naive and not model.sample_cached:
        note = model.untaken_sample_note("naive")  # (a VQ-VAE's code grids, drawn by an autoregressive model of them)
        if note is not None:
            raise ConfigError(
                f"{named('--naive')} is for autoregressive models of the data (their uncached pixel-by-pixel path); the "
                f"{run.cfg.family} model's {note}"
            )
        raise ConfigError(f"{named('--naive')} is for autoregressive models (their uncached pixel-by-pixel path)")
    if steps is not None and not model.sample_steps:
        raise ConfigError(f"{named('--steps')} is for diffusion models (their ancestral sampling steps)")
    if draw and not model.sample_means:
        raise ConfigError(
            f"{named('--draw')} is for latent variable models (draws of p(x|z) instead of its means); the "
            f"{run.cfg.family} model's samples are already draws x ~ p(x)"
        )


def reconstruction_pairs(run: Run, x: torch.Tensor) -> torch.Tensor:
    """Each image of x followed by its reconstruction, both mapped to [0, 1] for a picture (x's
    missing entries, if any, at mid-grey)."""
    shown = [data_to_display(x, run), to_display(reconstructions(run, x), run)]
    return torch.stack(shown, 1).flatten(0, 1)


def latent_scatter(run: Run, x: torch.Tensor, y: torch.Tensor | None, title: str) -> tuple[bytes, str]:
    """A PNG scatter of the posterior means of x (``posterior_means``: their first two principal axes when M > 2),
    coloured by the labels y where there are any, and which axes it shows."""
    noun = "means" if codes_name(run, x) == POSTERIOR_MEANS else "codes"  # (an autoencoder's z = f(x) are no means)
    points, axis_labels, axes = project_2d(posterior_means(run, x), noun)
    return scatter_png(points, None if y is None else y.cpu().numpy(), title, axis_labels), axes


@torch.no_grad()
def sample(args: argparse.Namespace) -> int:
    suffix = Path(args.out).suffix.lower()
    if suffix == ".csv":
        return _sample_rows(args)
    _refuse_data_flags(args)
    if suffix == ".npy":
        return _sample_array(args)
    if suffix != ".png":
        raise DataError(
            f"--out must name a .png file (a grid of images), a .csv file (a run on a table) or a .npy file (the "
            f"samples as an array, as the data are stored): {args.out}"
        )
    out = png_output(args)
    run = load_run(args.run_dir, device=args.device)
    attach_inputs(run, args)
    check_sample_options(run, args.n, SampleOptions.given(args))
    _refuse_table(run)
    if run.cfg.data.codes_of:  # (a VQ-VAE's code grids drawn as grey pictures: indices in an arbitrary order)
        source = shlex.quote(run.cfg.data.codes_of)
        raise ConfigError(
            f"{run.path} models the codes of {run.cfg.data.codes_of}, not images: its samples are codes; the images "
            f"they stand for are drawn by that run, of a VQ-VAE with `dgm sample {source} --code-prior "
            f"{shlex.quote(str(run.path))}`"
        )
    images_only(run, rows_written=run.transform.kind in STORED_AS_DRAWN)
    period = run.model.sample_period  # (a class-conditional model's classes in turn: one a column, or one row of them)
    nrow = min(args.nrow or (min(period, args.n) if period > 1 else _side(args.n)), args.n)
    mixed = nrow < args.n and nrow % period != 0  # (a --nrow given is kept, and said)
    note = f" ({nrow} a row, not a multiple of the {period} classes: a column holds several classes)" if mixed else ""
    check_grid(args.n, tuple(run.record["data"]["event_shape"]), nrow)  # (before thousands are drawn)
    shown, what = draw_samples(run, args.n, args.seed, SampleOptions.given(args))
    if run.model.sample_temperature:  # (a flow's overflow said with what to do; other models' NaN: image_grid_png)
        _refuse_non_finite(shown, run, args.temperature)
    path = write_png(out, image_grid_png(to_display(shown, run), nrow=nrow))
    say(f"wrote {what} to {path}{note}")
    return 0


def _sample_rows(args: argparse.Namespace) -> int:
    """``dgm sample RUN --out FILE.csv``: a table run's samples as rows of its table, in its own
    units (numeric columns un-standardized, categories by name), drawn x ~ p(x) (a latent
    variable model's x ~ p(x|z), z ~ p(z), not the means)."""
    run = load_run(args.run_dir, device=args.device)
    attach_inputs(run, args)
    table = run_data(run, args.data_dir, args.data, args.schema)
    if not table.columns:
        raise ConfigError(f"--out .csv writes rows of a table, and {run.path} was not trained on one: name a .png file")
    out = command_output(args, args.out)
    _refuse_picture_flags(args, "a table's rows are draws x ~ p(x) already")
    x, what = draw_samples(run, args.n, args.seed, SampleOptions.given(args, draw=run.model.sample_means))
    _refuse_non_finite(x, run, args.temperature)  # (a NaN was written as an empty cell: a missing value, not a draw)
    rows = x.reshape(len(x), -1).double().cpu().numpy()
    atomic_write_bytes(out, write_table(rows, table.columns).encode())
    say(f"wrote {what} as rows of {table.name}'s columns to {out}")
    return 0


def _refuse_table(run: Run) -> None:
    """A table run's samples are rows in its own units: refused as a picture or an array."""
    if is_table(run.cfg.data.dataset):
        raise ConfigError(f"{run.path} models a table: its samples are rows, written to --out FILE.csv in its own units")


def _refuse_picture_flags(args: argparse.Namespace, why: str) -> None:
    """--nrow and --draw, which shape a picture, refused for samples written as numbers (``why``)."""
    if args.nrow is not None or args.draw:
        given = " and ".join(f for f, v in (("--nrow", args.nrow is not None), ("--draw", args.draw)) if v)
        verb = "shape" if " and " in given else "shapes"
        raise ConfigError(f"{given} {verb} a picture; {why}")


def _refuse_data_flags(args: argparse.Namespace) -> None:
    """--data-dir, --data and --schema, which only a table's rows read (its columns), refused for a
    picture or an array of samples, which are drawn without the run's data (not ignored)."""
    given = given_data_flags(args)
    if given:
        raise ConfigError(
            f"{', '.join(given)}: dgm sample reads a run's data only for a table's columns (--out FILE.csv); a picture "
            "or an array of samples is drawn without them"
        )


def non_finite_draws(
    x: torch.Tensor, run: Run | None = None, temperature: float | None = None, lower: str = "a lower --temperature, 0.7 say"
) -> str | None:
    """None where the draws ``x`` are all finite numbers; else how many are not and, for a ``run``'s
    flow, what to do (``lower``: how a lower temperature is asked for, after "draw at"): its inverse overflows (a Glow
    coupling's inverse scale, 1 / sigmoid, has no bound) on base draws far out that a flow trained
    little maps out of range, which a lower temperature draws less often."""
    bad = int((~torch.isfinite(x)).sum()) if x.is_floating_point() else 0
    if not bad:
        return None
    if run is None or not run.model.sample_temperature:
        return f"the model drew {bad} values that are not finite numbers"
    t = 1.0 if temperature is None else float(temperature)
    return (
        f"the flow drew {bad} of {x.numel()} values at temperature {t:g} that are not finite numbers (its inverse "
        f"overflowed on base draws that it maps out of range, as a flow trained little does): draw at {lower}, or "
        "train it longer"
    )


def _refuse_non_finite(x: torch.Tensor, run: Run | None = None, temperature: float | None = None) -> None:
    """Draws that are not all finite numbers refused (EvaluationError) before a file of them is
    written (of a ``run``'s flow, with what to do: ``non_finite_draws``)."""
    words = non_finite_draws(x, run, temperature)
    if words:  # (no file of numbers that are none)
        raise EvaluationError(f"{words}; nothing was written")


STORED_AS_DRAWN = ("continuous", "integers", "binary", "dequantize")  # samples written as the data are stored


def _sample_array(args: argparse.Namespace) -> int:
    """``dgm sample RUN --out FILE.npy``: draws x ~ p(x) as an array of the data as stored (rows:
    (N, D); images: (N, *event_shape)), which ``dgm score`` and ``--dataset FILE.npy`` read back:
    continuous data as the model draws them; integers and binary data as unsigned integers; a
    density of dequantized levels as the level whose bin [k/L, (k+1)/L) the draw falls in (the
    distribution over the levels that the density implies), a draw outside [0, 1) at the level
    nearest it (said in a note: mass the density puts where no level is). Data the model sees binarized at
    random or scaled (no draw of the stored levels) and tables (--out FILE.csv) are refused."""
    run = load_run(args.run_dir, device=args.device)
    attach_inputs(run, args)
    kind = run.transform.kind
    _refuse_table(run)
    refuse_unsampled(run)  # (before the data's kind: an autoencoder has no draws of any kind)
    if kind not in STORED_AS_DRAWN:
        seen = {"dynamic-binarize": "binarized at random", "scale": "scaled to [0, 1]"}.get(kind, kind)
        raise ConfigError(
            f"{run.path}'s model sees its data {seen}, so its draws are not of the levels the data are stored in: "
            "--out FILE.png draws them as a picture"
        )
    _refuse_picture_flags(args, "the array holds draws x ~ p(x)")
    out = command_output(args, args.out)
    x, what = draw_samples(run, args.n, args.seed, SampleOptions.given(args, draw=run.model.sample_means))
    shape = tuple(run.record["data"]["event_shape"])
    x = x.reshape(len(x), *(shape if shows_images(run) else (math.prod(shape),))).cpu()
    _refuse_non_finite(x, run, args.temperature)
    levels = 2 if kind == "binary" else run.transform.num_levels
    note = None
    if kind == "dequantize":
        bins = cast(int, levels)  # (a dequantizing transform knows its levels)
        outside = (x < 0) | (x >= 1)
        if outside.any():  # (a logit's margin beyond the data's cube: a density's mass that no level holds)
            rows = int(outside.flatten(1).any(1).sum())
            note = (
                f"note: {plural(int(outside.sum()), 'entry', 'entries')} of {plural(rows, 'draw')} fell outside [0, 1), "
                f"where the density puts mass that no level holds: written as the nearest level, 0 or {bins - 1}"
            )
        x = (x.double() * bins).floor().clamp(0, bins - 1)
    if kind != "continuous":
        top = levels - 1 if levels is not None else int(x.max())
        x = x.round().to(torch.uint8 if top <= 255 else torch.int64)
    array, buffer = x.numpy(), io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(out, buffer.getvalue())
    units = "" if kind == "continuous" else f", the data's levels 0..{levels - 1}" if levels else ", as integers"
    held = "rows" if not shows_images(run) else "code grids" if run.cfg.data.codes_of else "images"  # (a VQ-VAE's)
    say(f"wrote {what} as an array {array.shape} of {array.dtype} ({held}{units}) to {out}")
    if note is not None:
        say(note)
    return 0


def needs_latents(run: Run) -> None:
    """A run whose model has a latent space q(z|x) (to interpolate in, or plot), else a ConfigError
    (a VQ-VAE reconstructs, through a grid of codes: not one vector per input)."""
    if not run.model.has_latents:
        also = "; it reconstructs its inputs (dgm reconstruct)" if run.model.reconstructs else ""
        raise ConfigError(
            f"the {run.cfg.family} model has no latent space q(z|x) (one vector per input) to interpolate in or plot{also}"
        )


def reconstructs(run: Run) -> None:
    """A run whose model reconstructs its inputs, else a ConfigError."""
    if not run.model.reconstructs:  # latent models, autoencoders, code models (VQ-VAE)
        raise ConfigError(f"the {run.cfg.family} model has no latent space q(z|x) to reconstruct its inputs through")


def _reconstructs(run: Run) -> None:
    reconstructs(run)
    images_only(run)


def _interpolates(run: Run) -> None:
    needs_latents(run)
    images_only(run)


@torch.no_grad()
def reconstruct(args: argparse.Namespace) -> int:
    out, run, x, _ = figure_split(args, _reconstructs)
    xb = picked_images(x, args.n, args.seed, args.split)
    nrow = 2 * min(8, args.n)
    check_grid(2 * len(xb), tuple(xb.shape[1:]), nrow)  # (before they are reconstructed)
    pairs = reconstruction_pairs(run, xb)
    path = write_png(out, image_grid_png(pairs, nrow=nrow))
    theirs = "its reconstruction" if args.n == 1 else "their reconstructions"
    said = f"{plural(args.n, 'random ' + args.split + ' image')} (seed {args.seed}; left) and {theirs} (right)"
    say(f"wrote {said} to {path}{holes_note(xb)}")
    return 0


@torch.no_grad()
def interpolate(args: argparse.Namespace) -> int:
    out, run, x, _ = figure_split(args, _interpolates)
    a, b = picked_pairs(x, args.pairs, args.seed, args.split)
    check_grid(len(a) * (args.steps + 2), tuple(a.shape[1:]), args.steps + 2)  # (before thousands are decoded)
    dec = interpolation(run, a, b, args.steps)
    rows = torch.cat([data_to_display(a, run)[:, None], to_display(dec, run), data_to_display(b, run)[:, None]], 1)
    path = write_png(out, image_grid_png(rows.flatten(0, 1), nrow=args.steps + 2))
    between = (
        "; the latents are discrete, so the steps between the two codes are blends of class (or unit) probabilities, "
        "not codes that the prior gives mass"
        if run.model.discrete_latents
        else ""
    )
    layers = layers_note(run)  # (a hierarchy's code: every layer moved along the line at once)
    layers += ", every layer moved along the line at once" if layers else ""
    say(
        f"wrote {plural(args.pairs, 'latent interpolation')} between random pairs of {args.split} images, seed {args.seed} "
        f"({args.split} image, {args.steps} steps on the line "
        f"between the codes that reconstruct the two images, decoded to the {decoded_name(run)}, {args.split} image per "
        f"row) to {path}{holes_note(torch.cat([a, b]))}{between}{layers}"
    )
    return 0


@torch.no_grad()
def latents(args: argparse.Namespace) -> int:
    out, run, x, y = figure_split(args, needs_latents, at_least=2)  # (a scatter: before the encoder's work)
    subset = ""
    if args.limit is not None and args.limit < len(x):
        subset = f"a random subset of the {len(x)}, seed {args.seed}"  # (said with the points: not the first ones)
        idx = _pick(len(x), args.limit, args.seed).to(x.device)
        x, y = x[idx], (None if y is None else y[idx])
    elif args.seed != 0:  # (the seed picks the subset, and nothing else: no other draw was made with it)
        shown = f"--limit {args.limit} takes" if args.limit is not None else "without --limit, the scatter shows"
        raise ConfigError(
            f"--seed picks a --limit subset, and {shown} all {len(x)} {args.split} datapoints: leave out --seed"
        )
    name = codes_name(run, x)
    title = f"{data_name(run)} {args.split}: {name} (n={len(x)}{', ' + subset if subset else ''})"
    data, axes = latent_scatter(run, x, y, title)
    path = write_png(out, data)
    note = "" if y is not None else " (no labels in this dataset)"
    what = plural(len(x), "latent mean") if name == POSTERIOR_MEANS else f"{plural(len(x), 'code')}, {name}"
    if name.startswith("codes "):  # (an autoencoder's codes z = f(x): not "300 codes, codes z = f(x)")
        what = f"{len(x)} {name}"
    picked = f" of {args.split} datapoints" + (f" ({subset})" if subset else "")  # (which split: always said)
    say(f"wrote a scatter of {what}{picked} ({axes}){note}{encoded_holes_note(x)} to {path}{layers_note(run)}")
    return 0


def _side(n: int) -> int:
    return max(1, int(round(n**0.5)))


def _add_sample_parser(sub: argparse._SubParsersAction) -> None:
    p = add_run_parser(
        sub, "sample", help="sample images from the model to a PNG (a table's rows: to a CSV file; an array: to .npy)"
    )
    add_count_flag(p, "-n", 1, MAX_SAMPLES, default=64, help=f"images (1..{MAX_SAMPLES})")
    add_output_flags(
        p, "PNG file to write (a run on a table: a .csv file of rows; a .npy file: the draws as the data are stored)"
    )
    add_count_flag(p, "--nrow", 1, 10_000, help="images per row (default: a square grid)")
    p.add_argument("--draw", action="store_true", help="show draws x ~ p(x|z) instead of the means of p(x|z)")
    p.add_argument(
        "--temperature",
        type=real(gt=0, hi=MAX_TEMPERATURE),
        default=None,
        help="flows only: sample the base z ~ N(0, T^2 I); T < 1 for smoother images (default 1)",
    )
    p.add_argument("--naive", action="store_true", help="autoregressive models: a full network pass per pixel")
    add_count_flag(
        p,
        "--steps",
        1,
        MAX_SAMPLE_STEPS,
        help="diffusion models: ancestral sampling steps from t = 1 to 0 (default: the model's T, or 250 in continuous "
        "time; masked: one entry per step)",
    )
    p.add_argument("--seed", type=SEED, default=0)
    add_input_flags(p)
    add_data_flags(p)
    add_device_flag(p)
    p.set_defaults(func=sample)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_sample_parser(sub)

    p = add_run_parser(sub, "reconstruct", help="test images next to their reconstructions, to a PNG")
    add_count_flag(p, "-n", 1, 10_000, default=32, help="images (at most the split's)")
    add_output_flags(p)
    add_split_flag(p)
    add_seeded_data_flags(p)
    p.set_defaults(func=reconstruct)

    p = add_run_parser(sub, "interpolate", help="decode straight lines in latent space between test images, to a PNG")
    add_count_flag(p, "--pairs", 1, 1000, default=8)
    add_count_flag(p, "--steps", 2, 100, default=10)
    add_output_flags(p)
    add_split_flag(p)
    add_seeded_data_flags(p)
    p.set_defaults(func=interpolate)

    p = add_run_parser(sub, "latents", help="scatter of latent means coloured by label (PCA when M > 2), to a PNG")
    add_output_flags(p)
    add_split_flag(p)
    add_limit_flag(p, "a seeded random subset of N datapoints (a scatter: at least 2)", low=2)
    add_seeded_data_flags(p, "seed of the --limit subset (nothing else is drawn)")
    p.set_defaults(func=latents)
