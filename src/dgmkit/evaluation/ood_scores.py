r"""Out-of-distribution scores of a likelihood model, and their detection metrics (``ood``).

Every score is "larger means more out-of-distribution", from per-input log-likelihoods
log p(x) of the integer data in nats (``log_likelihoods``: exact, importance-sampled or a bound,
as the model declares):

- ``nll``: -log p(x). The known failure (Nalisnick et al. 2019, arXiv:1810.09136): a model of
  Fashion-MNIST gives MNIST digits a higher likelihood, so this score ranks them as *less* OOD
  (AUROC well below 0.5).
- ``likelihood_ratio``: -(log p(x) - log p_bg(x)) with p_bg a background model trained on
  mutated inputs (Ren et al. 2019, arXiv:1906.02845; ``data.mutation``), which cancels the
  population-level statistics both models share.
- ``typicality``: |-log p(x) - H| with H the entropy estimated by the mean training NLL
  (Nalisnick et al. 2019, arXiv:1906.02994); ``typicality_batch``: the same for the mean NLL of
  batches of M inputs, the test the paper proposes, with its bootstrap threshold epsilon.
- ``complexity``: S(x) = -log2 p(x) - L(x) in bits, L(x) the length of a lossless generic code
  of x (Serrà et al. 2020, arXiv:1909.11480): here a PNG file (``png_code_length``).

>>> g = torch.Generator().manual_seed(0)
>>> nll_in, nll_ood = 100 + torch.randn(500, generator=g), 90 + torch.randn(500, generator=g)
>>> r = ood_scores(-nll_in, -nll_ood, num_dims=64)
>>> r.metrics["nll"]["auroc"] < 0.01  # the OOD inputs are *more* likely
True
"""

import io
import math
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import torch

from dgmkit.errors import EvaluationError, whole_at_least
from dgmkit.evaluation.estimates import log_likelihoods
from dgmkit.evaluation.figures import figure_png, literal
from dgmkit.evaluation.ood import TypicalityTest, detection_metrics, float64_values, typicality_test

__all__ = ["SCORES", "OODScores", "log_likelihoods", "png_code_length", "ood_scores", "histogram_png"]

# score name -> what it is, for tables and figures
SCORES = {
    "nll": "-log p(x)",
    "likelihood_ratio": "likelihood ratio -(log p(x) - log p_bg(x))",
    "typicality": "typicality |-log p(x) - H|",
    "typicality_batch": "typicality of batches |mean -log p(x) - H|",
    "complexity": "complexity -log2 p(x) - L_PNG(x)",
}


def png_code_length(images: torch.Tensor, binary: bool | None = None) -> torch.Tensor:
    """(N,) float64: the bits of each image (N, C, H, W) of integers 0..255 as a PNG file
    (Pillow, optimize=True, lossless): 1-bit for binary images, 8-bit grey for one channel, RGB
    for three, and the C channels stacked vertically as one grey image otherwise. The file's
    header and chunk overhead are included: the same for every image of one size, it shifts every
    score equally and leaves the metrics unchanged. ``binary``: whether the data are binary (1-bit
    PNGs); None decides it from these images (all in {0, 1}), so pass it where images of the same
    data are coded in several calls, or one image's length would depend on its company."""
    from PIL import Image

    x = torch.as_tensor(images)
    if x.ndim != 4 or x.is_floating_point() or len(x) and (int(x.min()) < 0 or int(x.max()) > 255):
        raise ValueError(f"expected integer images (N, C, H, W) in 0..255, got {x.dtype} {tuple(x.shape)}")
    arr = x.cpu().numpy().astype(np.uint8)
    if binary is None:
        binary = bool(arr.max(initial=0) <= 1)
    elif binary and arr.max(initial=0) > 1:
        raise ValueError(f"binary=True, but the images hold values up to {int(arr.max())}")
    out = torch.empty(len(arr), dtype=torch.float64)
    for i, img in enumerate(arr):
        c, h, w = img.shape
        if binary:
            pic = Image.fromarray(img.reshape(c * h, w).astype(bool))
        elif c == 3:
            pic = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)), mode="RGB")
        else:
            pic = Image.fromarray(img.reshape(c * h, w), mode="L")
        buf = io.BytesIO()
        pic.save(buf, format="PNG", optimize=True)
        out[i] = 8 * len(buf.getvalue())
    return out


@dataclass
class OODScores:
    """Scores (``SCORES``; each a pair (in-distribution, OOD) of float64 tensors, larger = more
    OOD) and each score's ``metrics`` (AUROC, AUPRC, FPR at 95% TPR, with the OOD inputs as
    positives). ``typicality`` (M = 1) and ``typicality_batch`` are the fitted tests, and
    ``flagged`` the share of in-distribution and OOD inputs (or batches) each one flags at its
    threshold epsilon."""

    num_dims: int
    scores: dict[str, tuple[torch.Tensor, torch.Tensor]]
    metrics: dict[str, dict[str, float]]
    typicality: TypicalityTest | None = None
    typicality_batch: TypicalityTest | None = None
    flagged: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The metrics, the means of each score, and the typicality tests (JSON-ready)."""
        out: dict[str, Any] = {"num_dims": self.num_dims, "scores": {}}
        for name, (a, b) in self.scores.items():
            out["scores"][name] = {
                "what": SCORES[name],
                **self.metrics[name],
                "mean_in": a.mean().item(),
                "mean_ood": b.mean().item(),
                "n_in": len(a),
                "n_ood": len(b),
            }
            if name in self.flagged:
                out["scores"][name]["flagged"] = self.flagged[name]
        for name in ("typicality", "typicality_batch"):
            t = getattr(self, name)
            if t is not None:
                out[name + "_test"] = {
                    "entropy": t.entropy,
                    "epsilon": t.epsilon,
                    "batch_size": t.batch_size,
                    "alpha": t.alpha,
                }
        return out


@overload
def _pair(
    name: str, pair: tuple[torch.Tensor, torch.Tensor], n_in: int, n_ood: int
) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def _pair(
    name: str, pair: tuple[torch.Tensor, torch.Tensor] | None, n_in: int, n_ood: int
) -> tuple[torch.Tensor, torch.Tensor] | None: ...
def _pair(
    name: str, pair: tuple[torch.Tensor, torch.Tensor] | None, n_in: int, n_ood: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    if pair is None:
        return None
    a, b = (float64_values(t) for t in pair)
    if (len(a), len(b)) != (n_in, n_ood):
        raise ValueError(f"{name}: {len(a)} and {len(b)} values for {n_in} in-distribution and {n_ood} OOD inputs")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):  # (refused later as "the scores", naming none)
        raise EvaluationError(f"the {name} values hold NaN or inf: no score is reported")
    return a, b


def _shuffled(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return t[torch.randperm(len(t), generator=g)]


def ood_scores(
    log_px_in: torch.Tensor,
    log_px_ood: torch.Tensor,
    *,
    num_dims: int,
    background: tuple[torch.Tensor, torch.Tensor] | None = None,
    code_bits: tuple[torch.Tensor, torch.Tensor] | None = None,
    typicality_fit: tuple[torch.Tensor, torch.Tensor] | None = None,
    typicality_batch: int = 25,
    alpha: float = 0.01,
    seed: int = 0,
) -> OODScores:
    """The scores (module docstring) and their metrics, from per-input log-likelihoods in nats.

    ``background``: log p_bg of the same in-distribution and OOD inputs (the likelihood ratio);
    ``code_bits``: their lossless code lengths L(x) in bits (the complexity score);
    ``typicality_fit``: log p of in-distribution training and held-out inputs, from which the
    typicality test takes H and epsilon (``ood.typicality_test``); the batch test uses batches of
    ``typicality_batch`` inputs, formed after a shuffle seeded by ``seed`` (a trailing partial
    batch is dropped; 1: no batch test, the per-input one is it)."""
    m = whole_at_least("typicality_batch", typicality_batch, 1)  # (0, -3 or True skipped the batch test silently)
    a, b = _pair("log_px", (log_px_in, log_px_ood), len(log_px_in), len(log_px_ood))
    scores = {"nll": (-a, -b)}
    bg = _pair("background", background, len(a), len(b))
    if bg is not None:
        scores["likelihood_ratio"] = (bg[0] - a, bg[1] - b)
    tests, flagged = {}, {}
    if typicality_fit is not None:
        train, valid = (float64_values(t) for t in typicality_fit)
        g = torch.Generator().manual_seed(seed)
        one = typicality_test(-train, -valid, 1, alpha, generator=g)
        scores["typicality"] = (one.statistic(-a), one.statistic(-b))
        tests["typicality"] = one
        if m > 1 and min(len(a), len(b)) >= 2 * m:
            batch = typicality_test(-train, -valid, m, alpha, generator=g)
            scores["typicality_batch"] = (batch.statistic(_shuffled(-a, g)), batch.statistic(_shuffled(-b, g)))
            tests["typicality_batch"] = batch
        for name, t in tests.items():
            s_in, s_ood = scores[name]
            flagged[name] = {
                "in": (s_in > t.epsilon).double().mean().item(),
                "ood": (s_ood > t.epsilon).double().mean().item(),
            }
    bits = _pair("code_bits", code_bits, len(a), len(b))
    if bits is not None:
        scores["complexity"] = (-a / math.log(2) - bits[0], -b / math.log(2) - bits[1])
    metrics = {name: detection_metrics(*pair) for name, pair in scores.items()}
    return OODScores(num_dims, scores, metrics, tests.get("typicality"), tests.get("typicality_batch"), flagged)


def histogram_png(result: OODScores, labels: tuple[str, str] = ("in-distribution", "OOD"), title: str = "") -> bytes:
    """One panel per score: histograms of the in-distribution and OOD scores (density-normalised,
    shared bins over the 0.1% to 99.9% quantiles of both, a value beyond them counted in the edge
    bin), titled with the score and its AUROC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.scores)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows + (0.4 if title else 0)), dpi=110, squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        a, b = (t.numpy() for t in result.scores[name])
        lo, hi = np.quantile(np.r_[a, b], [0.001, 0.999])
        bins = np.linspace(lo, hi, 60) if hi > lo else 30
        if hi > lo:  # (outside the bins a value was left out: of 1 input against 1, both)
            a, b = np.clip(a, lo, hi), np.clip(b, lo, hi)
        ax.hist(a, bins=bins, density=True, alpha=0.55, label=literal(f"{labels[0]} ({len(a)})"), color="tab:blue")
        ax.hist(b, bins=bins, density=True, alpha=0.55, label=literal(f"{labels[1]} ({len(b)})"), color="tab:orange")
        ax.set_title(f"{SCORES[name]}\nAUROC {result.metrics[name]['auroc']:.3f}", fontsize=9)
        ax.set_xlabel("score (larger: more OOD)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(literal(title), fontsize=10)
    fig.tight_layout()
    return figure_png(fig)
