"""``dgm diagnose``: posterior collapse and prior holes of a latent variable model, per layer:
a table, ``diagnose.json`` in the run folder and a figure (``evaluation.diagnostics``)."""

import argparse
import math
import time
from typing import cast

import torch

from dgmkit.cli.common import (
    add_count_flag,
    add_output_flags,
    add_run_parser,
    add_seeded_data_flags,
    add_split_flag,
    decoded_name,
    enough_rows,
    figure_run,
    own_result_file,
    plural,
    say,
    seeded_rows,
    shows_images,
    split_data,
    to_display,
    write_own_result,
    write_png,
)
from dgmkit.config import Run
from dgmkit.distributions import location
from dgmkit.errors import ConfigError
from dgmkit.evaluation.diagnostics import DIAGNOSTIC_ESTIMATORS, PAIR_PASSES, diagnose
from dgmkit.evaluation.figures import diagnosis_png
from dgmkit.models import GenerativeModel, LatentVariableModel, VariationalModel
from dgmkit.models.hvae import LayerStack

__all__ = ["add_parser", "run_diagnose", "format_diagnosis"]

SATURATION = 0.25  # nats below log N at which the mutual-information estimate is flagged as saturated
MAX_N = 20_000  # -n: the largest subset (the estimator's N x N aggregate)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_run_parser(
        sub,
        "diagnose",
        help="posterior collapse and prior holes: KL, active units and I(x;z) per layer, the aggregate posterior's KL",
    )
    add_output_flags(p, "PNG file for the figure (per-layer KL and decoded prior holes)")
    add_split_flag(p)
    n_help = f"a seeded random subset of N datapoints (2..{MAX_N}; I(x;z) <= log N)"
    add_count_flag(p, "-n", 2, MAX_N, default=2000, help=n_help)
    s_help = "hierarchical models: posterior draws per datapoint for a conditional layer's marginal (default: 16)"
    add_count_flag(p, "--samples", 1, 256, help=s_help)
    add_count_flag(p, "--holes", 0, 100_000, default=2000, help="prior draws scored for holes (0: none)")
    pairs_help = (
        "the most passes of a flow posterior (an IAF's: one a latent and layer) that scoring every draw under every "
        f"datapoint's q(z|x) may take: N^2 pairs and --holes x N, times those (default: {PAIR_PASSES:,}); past it I(x;z) "
        "is left out"
    )
    add_count_flag(p, "--pair-passes", 1, 10**15, default=PAIR_PASSES, help=pairs_help)
    add_seeded_data_flags(p, "seed of the subset and of every draw")
    p.set_defaults(func=run_diagnose)


def _gap(r: dict, top: dict) -> float:
    return abs(r["top_mean_kl"] - top["mutual_info"] - r["marginal_kl"])


def _identity_error(r: dict) -> str:
    """What the gap of mean KL = I + marginal KL is measured against (``Diagnosis.identity_stderr``)."""
    se = r.get("identity_stderr")
    if r.get("kl_one_draw"):
        return ": the KL column has no closed form and is log q - log p at these draws, so the sides agree by construction"
    if se is None:  # (a record from before it was kept)
        return ": the identity holds in expectation over the posterior draws"
    return (
        f", Monte Carlo standard error {se:.3f}: the aggregate terms cancel, so the sides differ by the posterior draws "
        "alone, whatever N; a gap of several standard errors means a KL column that disagrees with the densities"
    )


def _mutual_info_lines(r: dict) -> list[str]:
    """The prior hole with the identity it checks (where the top layer's KL column obeys it), and
    the range of I(x; z) of each layer that conditions on others."""
    lines = []
    top = r["layers"][-1]
    if r["marginal_kl"] is not None and r["top_mean_kl"] is None:
        lines.append(
            f"prior hole, top layer {top['name']}: KL(q(z)||p(z)) = {r['marginal_kl']:.3f} nats (its KL column is "
            f"E KL(q({top['name']}|the layer below) || p), which exceeds E_x KL(q({top['name']}|x) || p) = I + marginal "
            "KL: no identity to check)"
        )
    elif r["marginal_kl"] is not None:
        lines.append(
            f"prior hole, top layer {top['name']}: KL(q(z)||p(z)) = {r['marginal_kl']:.3f} nats; "
            f"mean KL {r['top_mean_kl']:.3f} = I {top['mutual_info']:.3f} + marginal KL {r['marginal_kl']:.3f} "
            f"(sum {top['mutual_info'] + r['marginal_kl']:.3f}, off by {_gap(r, top):.3f}{_identity_error(r)})"
        )
    for la in r["layers"]:
        if la.get("mutual_info_apart") is not None and la["mutual_info"] is not None:
            # (I >= 0: an estimate below it, noise, is said as 0, as the low one is floored; -0.001 read as "from")
            lo, hi = sorted((la["mutual_info_apart"], max(0.0, la["mutual_info"])))
            lines.append(
                f"{la['name']}: I(x;z) from {lo:.3f} to {hi:.3f} (the table: {la['mutual_info']:.3f}): the layer "
                "conditions on others, so its q(z|x) is a mixture over their draws, estimated from a few, which counts "
                "the draw scored among them (its own term high) or not (low, by Jensen's gap); more --samples narrow it"
            )
    return lines


def _layer_kl_lines(layers: list[dict]) -> list[str]:
    """What a layer's KL column is where it is a random estimate, with its standard error: log q -
    log p at one draw (no closed form), or a closed form given one draw of the layers it conditions on."""
    lines = []
    for la in layers:
        if la.get("kl_stderr") is None:
            continue
        how = (
            "no closed form, so the mean over the datapoints of log q - log p at one posterior draw each"
            if la.get("kl_one_draw")
            else "in closed form given one posterior draw of the layers that its q or p conditions on, so the mean over "
            "the datapoints at one draw each"
        )
        lines.append(
            f"KL of {la['name']}: {how}, an unbiased estimate with standard error {la['kl_stderr']:.3f} nats (of the mean "
            "over the datapoints: their spread and the draws', an overestimate of the draws' alone)"
        )
    return lines


def _draw_error_line(r: dict) -> list[str]:
    """The Monte Carlo standard errors of I(x;z) and the marginal KL (none in a record from before
    they were kept): each is a mean over the datapoints of a term at one posterior draw."""
    named = [f"{la['name']} {se:.3f}" for la in r["layers"] if (se := la.get("mutual_info_stderr")) is not None]
    if not named:
        return []
    marginal = "" if r.get("marginal_kl_stderr") is None else f"; marginal KL {r['marginal_kl_stderr']:.3f}"
    return [
        f"Monte Carlo standard errors, from the spread of the datapoints' terms at one posterior draw each (another "
        f"--seed moves the estimates by about this): I(x;z) of {', '.join(named)}{marginal} nats"
    ]


def _more_data(r: dict) -> str:
    """How to raise the ceiling log N: a larger -n, where the subset is a part of the split below
    -n's most; else the split holds no more (a larger split may, where -n is not at its most: no
    split then gives more)."""
    if r["n"] >= MAX_N:
        return f"-n is at its most, {MAX_N}"
    if not str(r.get("subset", "")).startswith("all"):  # ("all N": -n at or beyond the split's size)
        return "raise -n"
    held = f"-n already reads all of the {r['split']} split"
    return held if r["split"] == "train" else f"{held}; --split train with a larger -n may read more"


def format_diagnosis(r: dict) -> str:
    head = f"{'layer':<6} {'dims':>6} {'KL (nats)':>10} {'active':>8} {'I(x;z)':>8}"
    lines = [head, "-" * len(head)]
    for layer in r["layers"]:
        mi = "n/a" if layer["mutual_info"] is None else f"{layer['mutual_info']:.3f}"
        lines.append(f"{layer['name']:<6} {layer['size']:>6} {layer['kl']:>10.3f} {layer['active_units']:>8} {mi:>8}")
    total = sum(layer["kl"] for layer in r["layers"])
    lines.append(f"{'all':<6} {sum(la['size'] for la in r['layers']):>6} {total:>10.3f} {r['active_units']:>8}")
    lines += _layer_kl_lines(r["layers"])
    lines += _mutual_info_lines(r)
    lines += _draw_error_line(r)
    ceiling = math.log(r["n"])
    full = [la["name"] for la in r["layers"] if la["mutual_info"] is not None and la["mutual_info"] > ceiling - SATURATION]
    if full:
        lines.append(
            f"saturated: I(x;z) of {', '.join(full)} is at the estimator's ceiling log N = {ceiling:.2f}; the true value "
            f"may be higher, so the marginal KL and the share of prior draws in holes are overestimates: {_more_data(r)}"
        )
    if r["hole_fraction"] is not None:
        drawn = f" of {r['holes']}" if r.get("holes") else ""  # (of how many: 14.3% was 1 of --holes 7; old record: unsaid)
        lines.append(f"prior draws in holes (q(z) < p(z)/10): {r['hole_fraction']:.1%}{drawn}")
    draws = "" if r["samples"] is None else f", {plural(r['samples'], 'posterior draw')} per datapoint"
    if r.get("seed") is not None:  # (the draws' seed; a random subset's is the same, said with it; absent: an old record)
        draws += f", draws of seed {r['seed']}"
    lines.append(f"data: {r['split']}, {plural(r['n'], 'datapoint')} ({r['subset']}){draws}")
    if r.get("missing_entries"):
        lines.append(
            f"incomplete data: {plural(r['missing_entries'], 'missing entry', 'missing entries')} (NaN); q(z|x) is of "
            "the observed entries, as the encoder reads them (the missing ones as 0, as MIWAE trains it)"
        )
    if any(la["mutual_info"] is not None for la in r["layers"]):
        lines.append(f"I(x;z) estimator: {DIAGNOSTIC_ESTIMATORS['mutual_info']}")
    if r.get("skipped"):  # (past --pair-passes; absent: an older record)
        lines.append(f"{r['skipped']}: a larger --pair-passes, a smaller -n or fewer --holes computes them")
    elif all(la["mutual_info"] is None for la in r["layers"]):
        lines.append(
            "I(x;z) not estimated (n/a): the estimator scores each draw under every datapoint's q(z|x), which this "
            "model's posterior does not offer; so neither are the prior's holes"
        )
    return "\n".join(lines)


def _subset(x: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, str]:
    """A seeded random subset of n rows of x (in order; drawn on the CPU: the same on any device), or
    all of them, and which in words."""
    idx = seeded_rows(len(x), n, seed)
    if idx is None:
        return x, f"all {len(x)}"
    return x[idx.to(x.device)], f"random subset of {len(x)}, seed {seed}"


def _undiagnosable(run: Run, model: GenerativeModel) -> ConfigError:
    """Why a model that is no latent variable model with a KL to its prior has nothing to diagnose."""
    what = (
        "dgm eval reports its active units"
        if model.reconstructs and model.has_latents
        else "dgm eval reports its likelihood, and dgm sample shows what it has learnt"
    )
    if model.reconstructs and model.has_latents and model.can_sample:  # (a WAE: a prior, held by an MMD, not a KL)
        return ConfigError(
            f"the {run.cfg.family} model holds its codes to the prior p(z) by an MMD penalty, not a KL: it has no "
            "KL or ELBO to diagnose; dgm eval reports its MMD^2(q(z), p(z)) and active units"
        )
    if run.cfg.model.uses_labels and isinstance(model, VariationalModel):  # (M2, the ADGM: z of x and y)
        what = f"its z is inferred with the label, q(z|x, y), not from x alone; {what}"
    return ConfigError(
        f"the {run.cfg.family} model is not a latent variable model with a prior p(z) and an amortized q(z|x) to "
        f"diagnose: {what}"
    )


@torch.no_grad()
def run_diagnose(args: argparse.Namespace) -> int:
    out, run = figure_run(args)
    model = run.model
    if not isinstance(model, LatentVariableModel):
        raise _undiagnosable(run, model)
    hierarchical = model.has_layers and len(cast(LayerStack, model).sizes) > 1  # (a stack of one layer: q(z|x) of x)
    if args.samples is not None and not hierarchical:
        raise ConfigError(
            "--samples is for hierarchical models (draws that make a conditional layer's marginal); "
            f"{run.cfg.model.describe()} has one latent layer, whose posterior needs no draws"
        )
    samples = args.samples or 16
    kept = own_result_file(run.path / "diagnose.json", "estimators", "run dgm diagnose again")
    x, _ = split_data(run, args.split, args.data_dir, args.data, schema=args.schema)
    enough_rows(x, args.split, 2, "a covariance over the data")
    x, subset = _subset(x, args.n, args.seed)
    t0 = time.perf_counter()
    d = diagnose(model, x, samples=samples, holes=args.holes, seed=args.seed, pair_passes=args.pair_passes)
    result = {**d.to_json(), "split": args.split, "subset": subset, "checkpoint": run.checkpoint.name}
    scored = d.hole_fraction is not None or args.holes == 0  # (a posterior with no aggregate density scores none)
    result["holes"] = args.holes if scored else None  # (the prior draws scored: hole_fraction's denominator)
    result["seed"] = args.seed  # (of every draw: I(x;z), the marginal KL and the holes move with it, whatever the subset)
    result["missing_entries"] = int(torch.isnan(x).sum()) if x.is_floating_point() else 0
    if not hierarchical:
        result["samples"] = None  # one layer: its posterior is used as it is
    result["seconds"] = time.perf_counter() - t0
    say(format_diagnosis(result))
    holes = typical = None
    if d.hole_z is not None and d.typical_z is not None and shows_images(run):  # (set together); rows: no pictures
        holes = to_display(location(model.likelihood(d.hole_z)), run).cpu()  # decoded on the device, drawn by the CPU
        typical = to_display(location(model.likelihood(d.typical_z)), run).cpu()
    title = f"{run.path.name}: {run.cfg.model.describe()}"
    path = write_png(out, diagnosis_png(result, holes, typical, title, decoded_name(run)))
    write_own_result(kept, "estimators", "run dgm diagnose again", result)
    say(f"wrote {path} and {kept}")
    return 0
