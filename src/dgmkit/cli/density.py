"""``dgm density``: a heat map of a 2-D model's density with its samples, to a PNG."""

import argparse
import math
from typing import NamedTuple, cast

import numpy as np
import torch

from dgmkit.cli.common import (
    add_count_flag,
    add_output_flags,
    add_run_parser,
    add_seeded_data_flags,
    data_name,
    figure_run,
    plural,
    run_data,
    say,
    split_data,
    write_png,
)
from dgmkit.config import Run
from dgmkit.data import Dataset
from dgmkit.errors import ConfigError, EvaluationError
from dgmkit.evaluation.figures import figure_png, literal
from dgmkit.models import ExactLikelihoodModel

__all__ = ["DensityFigure", "add_parser", "density", "density_figure", "draws_density", "window_mass"]


def density_png(
    log_p: np.ndarray,
    extent: tuple[float, float, float, float],
    samples: np.ndarray,
    title: str,
    names: tuple[str, str] | None = None,
    var: str = "x",
    note: str = "",
) -> bytes:
    """The density on the grid of ``extent`` beside ``samples``, its colour bar in the axes' units
    (per unit area of them); ``names``: the axes' (a table's columns); ``var``: the name of the
    values drawn (``y`` for dequantized integers, which ``note``, a second line of the title, says)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 5), dpi=110)
    # each grid point at its pixel's centre, the window's edges (grid points) half a pixel inside it: ``extent``
    # as imshow's spread G pixels over the G - 1 cells between the edge points, up to half a cell off the axes
    dx, dy = ((extent[2 * i + 1] - extent[2 * i]) / max(log_p.shape[i] - 1, 1) / 2 for i in (0, 1))
    pixels = (extent[0] - dx, extent[1] + dx, extent[2] - dy, extent[3] + dy)
    shown = axes[0].imshow(np.exp(log_p).T, origin="lower", extent=pixels, cmap="viridis", aspect="auto")
    bar = fig.colorbar(shown, ax=axes[0], fraction=0.046, pad=0.04)
    bar.set_label(f"p({var}), per unit area of the axes", fontsize=9)
    axes[0].set_title(f"density p({var})", fontsize=10)
    axes[1].imshow(np.exp(log_p).T, origin="lower", extent=pixels, cmap="Greys", aspect="auto", alpha=0.6)
    axes[1].scatter(samples[:, 0], samples[:, 1], s=2, c="tab:red", alpha=0.6)
    for ax in axes:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        if names is not None:
            ax.set_xlabel(literal(names[0]), fontsize=9)
            ax.set_ylabel(literal(names[1]), fontsize=9)
    axes[1].set_title(f"{plural(len(samples), 'sample')} {var} ~ p({var})", fontsize=10)
    fig.suptitle(literal(title) + (f"\n{literal(note)}" if note else ""), fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def window_mass(log_p: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> float:
    """The probability in the window [tx[0], tx[-1]] x [ty[0], ty[-1]] of the density whose log is
    ``log_p`` at the grid points (tx[i], ty[j]) (evenly spaced, both ends included): the trapezoid
    rule, each edge point standing for half a cell (a plain sum counts half a cell beyond every
    edge: a uniform density's window held (G / (G - 1))^2 > 1 of it)."""
    wx, wy = (torch.ones(len(t), dtype=torch.float64, device=log_p.device) for t in (tx, ty))
    for w in (wx, wy):
        w[[0, -1]] = 0.5
    cell = float(tx[1] - tx[0]) * float(ty[1] - ty[0])
    return float((log_p.double().exp() * wx[:, None] * wy[None, :]).sum()) * cell


def draws_density(run: Run) -> bool:
    """Whether ``dgm density`` draws the run's model (an exact density of 2-D continuous data that samples)."""
    try:
        _density_model(run)
    except ConfigError:
        return False
    return True


def _density_model(run: Run) -> ExactLikelihoodModel:
    """The run's model, refused unless it is an exact density of 2-D continuous data that samples."""
    shape = tuple(run.record["data"]["event_shape"])
    if math.prod(shape) != 2:
        raise ConfigError(f"dgm density draws 2-D data; this run has data of shape {shape}")
    model = cast(ExactLikelihoodModel, run.model)
    if model.estimate_kind != "exact" or not model.can_sample:
        raise ConfigError(
            f"dgm density needs an exact-likelihood model that samples (a flow); {run.cfg.model.describe()} has "
            f"{'no exact likelihood' if model.estimate_kind != 'exact' else 'no sampler'}"
        )
    if model.discrete_data:  # (its log_prob between the values it takes is no density)
        raise ConfigError(
            f"dgm density draws a density of continuous 2-D data; {run.cfg.model.describe()} gives probabilities of "
            "discrete values (dgm sample draws from it)"
        )
    return model


def _window(pts: torch.Tensor, values: tuple[float, float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The corners of the window drawn: the points' range and 15% beyond it on each side, within
    the interval ``values`` where the transform puts the data in one (the density's support)."""
    lo, hi = pts.min(0).values, pts.max(0).values
    span = hi - lo
    pad = 0.15 * torch.where(span > 0, span, torch.ones_like(span))  # (a constant column: a unit-wide window)
    lo, hi = lo - pad, hi + pad
    if values is not None:
        lo, hi = lo.clamp(min=values[0]), hi.clamp(max=values[1])
    return lo, hi


class DensityFigure(NamedTuple):
    """A drawn density: its PNG, the grid's probability mass in the window, the share of the
    samples in it (and its standard error), and whether the two agree (the grid resolves the density)."""

    png: bytes
    mass: float
    share: float
    stderr: float
    resolved: bool


@torch.no_grad()
def density_figure(run: Run, dataset: Dataset, grid: int, n: int, seed: int) -> DensityFigure:
    """The run's density (``draws_density``) on a ``grid`` x ``grid`` window around its test data,
    beside ``n`` samples drawn with ``seed``; a table's two columns in their own units (the density
    per unit area of them: the model's, of the standardized columns, over the product of their
    standard deviations)."""
    model = _density_model(run)
    shape = tuple(run.record["data"]["event_shape"])
    x, _ = split_data(run, "test", dataset=dataset)
    lo, hi = _window(x.reshape(-1, 2), run.transform.value_range)
    tx = torch.linspace(lo[0].item(), hi[0].item(), grid, device=run.device)
    ty = torch.linspace(lo[1].item(), hi[1].item(), grid, device=run.device)
    points = torch.stack(torch.meshgrid(tx, ty, indexing="ij"), -1).reshape(-1, *shape)
    log_p = torch.cat([model.log_prob(c) for c in points.split(50000)]).reshape(grid, grid)
    if bool(torch.isnan(log_p).any()):  # (-inf is a density of 0; NaN is no number: no picture of it)
        raise EvaluationError(
            f"the model gives NaN log-densities at {int(torch.isnan(log_p).sum())} of the {log_p.numel()} grid points; "
            "nothing was written"
        )
    mass = window_mass(log_p, tx, ty)
    samples, _ = model.sample(n, generator=torch.Generator(device=run.device).manual_seed(seed))
    flat = samples.reshape(-1, 2)
    share, stderr = _share_in(flat, lo.to(flat.device), hi.to(flat.device))
    resolved = abs(mass - share) <= 4 * stderr + 0.01  # the grid's sum and the samples' count agree
    drawn, shown = flat.cpu().numpy(), log_p.double().cpu().numpy()
    names = None
    if dataset.columns:  # a table's two columns, standardized as the model sees them: drawn in the table's own units
        mean = np.array([c.mean for c in dataset.columns])
        std = np.array([c.std for c in dataset.columns])
        lo, hi, drawn = lo.cpu().numpy() * std + mean, hi.cpu().numpy() * std + mean, drawn * std + mean
        shown = shown - float(np.log(std).sum())  # p(x) = p(z) / (std_1 std_2), z = (x - mean) / std
        names = (dataset.columns[0].name[:60], dataset.columns[1].name[:60])
    extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    said = f"{mass:.4f}" if resolved else f"{share:.4f} of the samples"
    data = data_name(run)
    title = f"{run.cfg.model.describe()} on {data}: probability mass in this window {said}"
    var, note = "x", ""
    if run.transform.kind == "dequantize":  # a density of y = (x + u) / L on [0, 1]^2, not of the integers x
        levels = cast(int, run.transform.num_levels)  # (dequantize reads an integer L >= 2)
        var, names = "y", ("y1", "y2")
        note = f"y = (x + u) / {levels}: the dequantized data (x the integer levels 0..{levels - 1}, u ~ U[0, 1) each)"
    png = density_png(shown, extent, drawn, title, names, var=var, note=note)
    return DensityFigure(png, mass, share, stderr, resolved)


def density(args: argparse.Namespace) -> int:
    out, run = figure_run(args)
    _density_model(run)  # (refused before the data are read)
    dataset = run_data(run, args.data_dir, args.data, args.schema)
    drawn = density_figure(run, dataset, args.grid, args.n, args.seed)
    mass, share, stderr = drawn.mass, drawn.share, drawn.stderr
    path = write_png(out, drawn.png)
    say(
        f"wrote the density on a {args.grid}x{args.grid} grid (mass in the window {mass:.4f}) and "
        f"{plural(args.n, 'sample')} ({share:.4f} +- {stderr:.4f} of them in the window) to {path}"
    )
    if not drawn.resolved:
        say(
            f"note: the grid's mass in the window, {mass:.4f}, is not the samples' share of it: the density changes "
            f"faster than a {args.grid}x{args.grid} grid resolves (a narrow ridge or peak), so the heat map shows it "
            "coarsely and its sum is no probability; the figure gives the samples' share (a finer --grid resolves more)"
        )
    return 0


def _share_in(points: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[float, float]:
    """The share of ``points`` (N, 2) inside the window [lo, hi] and its standard error (at
    least that of one point in N, where none or all fall inside)."""
    inside = ((points >= lo) & (points <= hi)).all(1).double()
    p, n = float(inside.mean()), len(points)
    return p, math.sqrt(max(p * (1 - p), 1 / n) / n)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_run_parser(sub, "density", help="heat map of a 2-D flow's density with samples, to a PNG")
    add_output_flags(p)
    add_count_flag(p, "--grid", 10, 2000, default=300, help="grid points per axis (10..2000)")
    add_count_flag(p, "-n", 1, 10**6, default=2000, help="samples to draw")
    add_seeded_data_flags(p)
    p.set_defaults(func=density)
