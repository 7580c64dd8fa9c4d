"""PNG figures: image grids and 2-D latent scatter plots, returned as bytes."""

import io
import textwrap
from typing import TYPE_CHECKING

import numpy as np
import torch

from dgmkit._io import shown_text
from dgmkit.data.labels import HIDDEN, labels_shown
from dgmkit.errors import DataError, EvaluationError, whole_at_least

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "MAX_GRID_PIXELS",
    "MAX_GRID_SIDE",
    "figure_png",
    "image_grid_png",
    "check_grid",
    "scatter_png",
    "project_2d",
    "diagnosis_png",
    "check_finite",
    "literal",
]


MAX_GRID_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS: a larger PNG is a "decompression bomb" to Pillow
MAX_GRID_SIDE = 65_535  # pixels on a side: the most that many viewers open (JPEG's, and some browsers' limit)


def check_finite(
    t: torch.Tensor, what: str, whose: str = "the model gives", why: str = "its weights may be too large"
) -> None:
    """Refuse values to draw or print that hold NaN or inf (a model with huge weights gives them):
    no picture of NaN, no table of nan. ``whose``, ``why``: who gave them and why they might hold
    such values, as the refusal says it."""
    t = t.detach()
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise EvaluationError(
            f"{whose} non-finite {what} ({bad} of {t.numel()} values are NaN or inf; {why}); nothing was written"
        )


def literal(text: object) -> str:
    """``text`` as matplotlib shows it letter for letter: every ``$`` escaped, so that no part of
    a name (a data file's, a column's, a run folder's) is read as mathtext (``costs_$1_$2.csv``
    failed to parse; ``US$ and CA$`` lost its dollar signs), and invisible characters escaped
    (``shown_text``: a right-to-left override would show a name as another). Every text a
    figure is given goes through it."""
    return shown_text(str(text)).replace("$", r"\$")


def figure_png(fig: "Figure") -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def check_grid(n: int, shape: tuple[int, ...], nrow: int, min_cell: int = 28, pad: int = 2) -> tuple[int, int]:
    """Refuses (DataError) a grid of ``n`` images of ``shape`` (C, H, W), ``nrow`` per row, that
    ``image_grid_png`` would draw larger than ``MAX_GRID_PIXELS``, or images of no pixel; callable
    before the images are made (a command that decodes thousands of them). Returns ``nrow``,
    checked, and the enlargement of each image."""
    nrow = whole_at_least("nrow (images per row)", nrow, 1)
    if len(shape) != 3 or 0 in shape:
        raise DataError(f"an image grid takes images shaped (C, H, W), C, H and W >= 1, got {tuple(shape)}")
    c, h, w = shape
    scale = max(1, -(-min_cell // max(h, w)))
    shown = w if c in (1, 3, 4) else c * w  # (other channels side by side)
    tall, wide = -(-n // nrow) * (h * scale + pad) + pad, nrow * (shown * scale + pad) + pad
    if tall * wide > MAX_GRID_PIXELS:
        raise DataError(
            f"a grid of {n} images, {nrow} per row, would be {wide} x {tall} pixels ({tall * wide / 1e6:.0f} megapixels), "
            f"more than the {MAX_GRID_PIXELS / 1e6:.0f} that image viewers open (Pillow's limit): draw fewer images"
        )
    if max(tall, wide) > MAX_GRID_SIDE:
        raise DataError(
            f"a grid of {n} images, {nrow} per row, would be {wide} x {tall} pixels, more than the {MAX_GRID_SIDE} on a "
            "side that image viewers open: "
            + ("put fewer images in a row" if wide > MAX_GRID_SIDE else "draw fewer images (or, with --nrow, more in a row)")
        )
    return nrow, scale


_NAN_IMAGES = (
    "a model's outputs: its weights may be too large; a run's data with missing entries: map them to a grey first, "
    "torch.nan_to_num(x, nan=0.5)"
)


def image_grid_png(images: torch.Tensor, nrow: int, min_cell: int = 28, pad: int = 2) -> bytes:
    """A grid of images (N, C, H, W) with values in [0, 1], ``nrow`` images per row.
    Small images are enlarged (nearest neighbour) to at least ``min_cell`` pixels. 1, 3 and 4
    channels are grey, RGB and RGBA; images of another number of channels show each channel in
    grey, side by side. Refused (EvaluationError) if a value is NaN or inf; a grid of more than
    ``MAX_GRID_PIXELS`` pixels is refused (DataError) before it is drawn."""
    if images.dim() != 4:
        raise DataError(f"an image grid takes images shaped (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow, scale = check_grid(n, (c, h, w), nrow, min_cell, pad)
    check_finite(images, "pixel values", "the images to draw hold", _NAN_IMAGES)  # (from a model or a caller's data)
    x = images.detach().float().clamp(0, 1).cpu()
    if c not in (1, 3, 4):
        x, c, w = x.permute(0, 2, 1, 3).reshape(n, 1, h, c * w), 1, c * w
    x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    h, w = h * scale, w * scale
    rows = -(-n // nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad) * 0.5
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = x[i]
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    from PIL import Image

    img = Image.fromarray(arr[:, :, 0] if c == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def project_2d(z: torch.Tensor, noun: str = "means") -> tuple[np.ndarray, tuple[str, str], str]:
    """Latent means (N, M) -> (N, 2) points, the two axis labels and a description: the means
    themselves when M <= 2 (a 1-D latent against a seeded jitter), else their projection on the
    two leading principal components. ``noun``: what the rows are called in the description
    ("means"; an autoencoder's or a Helmholtz machine's: "codes")."""
    if z.dim() != 2:
        raise DataError(f"a scatter of latent means takes them shaped (N, M), got {tuple(z.shape)}")
    check_finite(z, "latent means")
    z = z.detach().double().cpu()
    if len(z) < 2:
        raise DataError(f"a scatter of latent means needs at least 2 points, got {len(z)}")
    if z.shape[1] == 1:
        jitter = torch.rand(z.shape, generator=torch.Generator().manual_seed(0), dtype=z.dtype) - 0.5
        return torch.cat([z, jitter], 1).numpy(), ("z_1", "random jitter (no meaning)"), "z_1"
    if z.shape[1] == 2:
        return z.numpy(), ("z_1", "z_2"), "z_1, z_2"
    centred = z - z.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    total = (s**2).sum()
    if total == 0:  # every mean the same point: no direction to project on
        return (
            torch.zeros(len(z), 2, dtype=z.dtype).numpy(),
            ("PC 1 (no variance)", "PC 2 (no variance)"),
            (f"all {len(z)} {z.shape[1]}-D {noun} equal (no variance)"),
        )
    share = s**2 / total
    labels = (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%} of variance)")
    return (centred @ v[:2].T).numpy(), labels, f"PCA of {z.shape[1]}-D {noun} ({share[:2].sum():.0%} of variance)"


SCATTER_TITLE_WIDTH = 60  # characters a line of a scatter's title: the width of its axes at 10 points


def scatter_png(points: np.ndarray, labels: np.ndarray | None, title: str, axes: tuple[str, str]) -> bytes:
    """A scatter of (N, 2) points, coloured by integer labels: one colour per class up to 20
    classes (tab10 or tab20), a continuous scale beyond; points whose label is hidden (``HIDDEN``,
    -1: a partly labelled data file's) as faint black crosses beneath (grey is tab10's class 7),
    said in a legend. Refused (DataError)
    unless the points are finite and (N, 2) and the labels are N whole numbers >= -1."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2 or not np.issubdtype(points.dtype, np.number):
        raise DataError(f"a scatter takes points shaped (N, 2), got {points.dtype} {points.shape}")
    check_finite(torch.from_numpy(points.astype(np.float64)), "points to scatter")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(points),):
            raise DataError(f"a scatter of {len(points)} points takes {len(points)} labels, got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"a scatter's labels are classes 0, 1, ...: whole numbers, got {labels.dtype} labels")
        if len(labels) and labels.min() < HIDDEN:  # (a label of -5 was said to be of the wrong dtype, int64)
            raise DataError(f"a scatter's labels are classes 0, 1, ... ({HIDDEN}: hidden), got label {labels.min()}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5), dpi=110)
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.5, c="tab:blue")
    else:
        _labelled_scatter(fig, ax, points, labels)
    # (wrapped: one line of a long title, a hierarchical model's codes named with the split, ran past the figure's
    # edges and lost the dataset's name; broken at spaces only, so that an escaped \$ stays whole)
    wrapped = textwrap.fill(literal(title), SCATTER_TITLE_WIDTH, break_long_words=False, break_on_hyphens=False)
    ax.set_title(wrapped, fontsize=10)
    ax.set_xlabel(literal(axes[0]))
    ax.set_ylabel(literal(axes[1]))
    fig.tight_layout()
    return figure_png(fig)


def _labelled_scatter(fig: "Figure", ax: "Axes", points: np.ndarray, labels: np.ndarray) -> None:
    """``scatter_png``'s points coloured by their labels, those hidden as crosses beneath (on a
    scale from -1 the first class would take another's colour)."""
    hidden = ~labels_shown(labels)
    if hidden.any():
        said = f"label hidden ({int(hidden.sum())})"
        ax.scatter(points[hidden, 0], points[hidden, 1], s=6, alpha=0.3, c="black", marker="x", label=said)
        ax.legend(loc="best", markerscale=3, fontsize=8)
    points, labels = points[~hidden], labels[~hidden]
    if not len(labels):
        return
    import matplotlib.pyplot as plt

    classes = int(labels.max()) + 1
    if classes <= 20:  # one band of the colour bar per class (all of tab10's or tab20's bands stood for any number)
        from matplotlib.colors import ListedColormap

        name = "tab10" if classes <= 10 else "tab20"  # (its first K colours, under its name)
        cmap = ListedColormap(plt.get_cmap(name)(np.arange(classes)), name=name)  # (integers index its entries)
        sc = ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6, c=labels, cmap=cmap, vmin=-0.5, vmax=classes - 0.5)
        fig.colorbar(sc, ax=ax, ticks=range(classes), label="label")
    else:
        sc = ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6, c=labels, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=f"label (0..{classes - 1})")


def diagnosis_png(
    report: dict, holes: torch.Tensor | None, typical: torch.Tensor | None, title: str, decoded: str = "means of p(x|z)"
) -> bytes:
    """The figure of ``dgm diagnose``: per layer, the KL of each latent dimension (or, without a
    closed form per dimension, the variance over x of its posterior mean) with active units in a
    darker colour; below, decoded prior draws where the aggregate posterior is lowest (prior
    holes) beside those where it is highest (``decoded``: what a decoded draw shows, the model's
    ``decoded_name``). ``report``: ``Diagnosis.to_json()``; images in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    rows = len(layers) + (1 if holes is not None else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(8, 2.2 * rows + 0.4), dpi=100, squeeze=False)
    for ax, layer in zip(axes[:, 0], layers):
        variance = np.asarray(layer["mean_variance"])
        values = np.asarray(layer["kl_per_dim"]) if layer["kl_per_dim"] is not None else variance
        if len(values) != len(variance):  # categorical: one value per variable either way
            values = variance
        active = variance > 0.01
        ax.bar(np.arange(len(values)), values, color=np.where(active, "tab:blue", "lightgray"), width=1.0)
        what = "each dimension's share of it (nats)" if layer["kl_per_dim"] is not None else "Var_x E[z|x]"
        mi = "n/a" if layer["mutual_info"] is None else f"{layer['mutual_info']:.2f}"
        z = str(layer["name"])
        kl = "KL(q(z|x) || p(z))" if len(layers) == 1 else f"KL(q({z}|.) || p({z}|.))"  # a layer's, given the others
        ax.set_title(
            literal(f"{z}: E_x {kl} {layer['kl']:.2f} nats, active {layer['active_units']}/{len(variance)}, I(x;{z}) {mi}"),
            fontsize=9,
        )
        ax.set_ylabel(what, fontsize=8)
        ax.set_xlabel("latent dimension", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)  # (one dimension: 0, not -0.4 .. 0.4)
        ax.tick_params(labelsize=7)
    if holes is not None:
        ax = axes[-1, 0]
        pair = torch.cat([holes, typical]) if typical is not None else holes
        png = image_grid_png(pair, nrow=len(holes))
        from PIL import Image

        ax.imshow(np.asarray(Image.open(io.BytesIO(png))), cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
        ax.set_title(
            literal(f"{decoded}, z ~ p(z): top row where q(z)/p(z) is lowest (holes), bottom row where highest"), fontsize=9
        )
    fig.suptitle(textwrap.fill(literal(title), 110), fontsize=9)
    fig.tight_layout()
    return figure_png(fig)
