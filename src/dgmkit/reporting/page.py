"""One self-contained HTML page about one or more runs: everything inline (PNG figures as data
URIs, the style sheet, a few lines of script that only check the page rendered), so the file
opens anywhere with no network access.

The page is built from plain values (``RunPage``), gathered by the command (``cli/report.py``);
every string that came from a file is escaped here, so a crafted run folder cannot inject markup
(nor, with invisible characters such as a right-to-left override, show a name as another).
"""

import base64
import html
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np

from dgmkit._io import shown_text
from dgmkit.errors import plural
from dgmkit.evaluation.figures import figure_png, literal
from dgmkit.evaluation.report import (
    active_units_words,
    data_notes,
    data_words,
    estimate_label,
    estimate_protocol,
    record_terms,
)
from dgmkit.models.terms import format_term

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "RunPage",
    "NOT_DRAWN",
    "curves_png",
    "curves_left_out",
    "render_page",
    "metric_series",
    "metric_keys",
    "logged_epoch",
]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #1b1b1b; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #d0d0d0; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: .9em; } figure { margin: 1em 0; } figcaption { color: #444; font-size: .9em; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #e4e4e4; }
code { background: #f5f5f5; padding: 0 .2em; }
"""

# after loading: how many images decoded, in the body's data-rendered attribute (a headless
# browser's test reads it from the DOM; a person never sees it)
_CHECK = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-rendered", ok + "/" + imgs.length);
});
"""


@dataclass
class RunPage:
    """What the page shows of one run. ``figures``: (title, caption, PNG bytes)."""

    name: str
    describe: str
    dataset: str
    config: dict
    metrics: list[dict]
    score: str  # the monitored score's key in metrics.jsonl (train_SCORE, valid_SCORE)
    score_label: str
    evals: dict[str, dict]
    figures: list[tuple[str, str, bytes]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    weights: str | None = None  # the digest of the weights evaluated now: the comparison takes only theirs
    eval_notes: list[str] = field(default_factory=list)  # what dgm eval says under the evaluations' numbers
    shift: float = 0.0  # nats of the integers from nats of dequantized data (D log L), as dgm train prints them
    marks: dict[str, str] = field(default_factory=dict)  # by protocol: what an evaluation not of the weights now is of
    step: str = "epoch"  # what a metrics line is of, as dgm train says it ("EM iteration" for EM fits)
    checkpointed: int | None = None  # the epoch of checkpoint.safetensors: a line logged after it is of no weights kept
    fit: str = "gradient"  # how the family is fitted (FamilyConfig.fit): "closed-form" has no epochs to count
    data_words: tuple[str, ...] = ()  # what the run's numbers are of, in words: said where no test result says it


def _e(v: object) -> str:
    """``v`` as text of the page: markup escaped, and invisible characters (``shown_text``)."""
    return html.escape(shown_text(str(v)), quote=True)


def _num(v: object, digits: int = 3) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "–" if v is None else _e(v)
    if isinstance(v, int) and abs(v) >= 10**15:  # (exactly, as a Decimal: an integer past a float's range has no float)
        return f"{Decimal(v):.{max(digits, 3)}e}"  # (rounded; a count, of 0 digits, was "4.e+18" for 4.6e18)
    if isinstance(v, int):
        return str(v)
    if not math.isfinite(v):
        return "–"
    return f"{v:.{digits}f}" if abs(v) < 1e15 else f"{v:.{digits}e}"  # (1e308 in fixed point: 309 digits)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


NOT_DRAWN = "(a value the page does not draw)"  # a reader's stand-in for text, a dict, a list too long (dgm report's)
PLOTTED_MAX = 1e30  # beyond it, a curve's axis cannot be laid out (matplotlib's ticks overflow near 1e308)


def _finite(v: object) -> float | None:
    """v as a float to plot, or None (not a number, a bool, NaN, inf or beyond +-PLOTTED_MAX)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) and abs(f) <= PLOTTED_MAX else None


def logged_epoch(m: dict) -> int | None:
    """The epoch (or iteration) a metrics.jsonl line logs; None unless a whole number in 0..2**31-1."""
    ep = m.get("epoch", m.get("iteration"))
    return ep if isinstance(ep, int) and not isinstance(ep, bool) and 0 <= ep < 2**31 else None


def metric_series(metrics: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one scalar metric, leaving out epochs where it is missing or not a number."""
    xs, ys = [], []
    for m in metrics:
        v, ep = _finite(m.get(key)), logged_epoch(m)
        if v is not None and ep is not None:
            xs.append(float(ep))
            ys.append(v)
    return xs, ys


def _layer_series(metrics: list[dict], key: str) -> tuple[list[float], np.ndarray] | None:
    """(epochs, values (E, L)) of a per-layer metric (a list of numbers per epoch; NaN where one is not)."""
    raw = [(logged_epoch(m), m.get(key)) for m in metrics]
    rows = [(ep, v) for ep, v in raw if ep is not None and isinstance(v, list) and 0 < len(v) <= 1024]
    if not rows or len({len(v) for _, v in rows}) != 1:
        return None
    values = np.array([[np.nan if _finite(a) is None else _finite(a) for a in v] for _, v in rows], dtype=float)
    return [float(ep) for ep, _ in rows], values


def _layer_or_total(metrics: list[dict], key: str, titles: tuple[str, str], label: str) -> list[tuple]:
    """A panel of the per-layer series ``valid_layer_{key}`` (one line per layer, the first title)
    where the run logged one of several layers, else of the total ``valid_{key}`` (one line, the
    second), else none."""
    layers = _layer_series(metrics, f"valid_layer_{key}")
    if layers is not None and layers[1].shape[1] > 1:
        eps, vals = layers
        return [(titles[0], [(f"layer {i + 1}", (eps, list(vals[:, i]))) for i in range(vals.shape[1])])]
    total = metric_series(metrics, f"valid_{key}")
    if not total[0] and layers is not None:  # one layer: its series is the total
        total = (layers[0], list(layers[1][:, 0]))
    return [(titles[1], [(label, total)])] if total[0] else []


def metric_keys(score: str) -> set[str]:
    """The keys of metrics.jsonl that the page reads (its curves, the best score, the epochs) for
    a run that monitors ``score``: a reader may keep these alone."""
    layered = [f"valid_{k}" for k in ("kl", "active_units")] + [f"valid_layer_{k}" for k in ("kl", "active_units")]
    return {"epoch", "iteration", f"train_{score}", f"valid_{score}", "lr", *layered}


def _curve_panels(metrics: list[dict], score_label: str, score: str, shift: float = 0.0) -> list[tuple]:
    """The learning-curve panels the run logged: (title, [(label, (epochs, values))]); the score
    less ``shift`` (D log L: nats of the integers from nats of dequantized data, as the epoch line
    and the comparison table give them)."""
    panels = []
    (te, tv), (ve, vv) = metric_series(metrics, f"train_{score}"), metric_series(metrics, f"valid_{score}")
    train, valid = (te, [v - shift for v in tv]), (ve, [v - shift for v in vv])
    if train[0] or valid[0]:
        panels.append(("score (nats)", [(f"train {score_label}", train), (f"valid {score_label}", valid)]))
    panels += _layer_or_total(metrics, "kl", ("KL per layer (valid, nats)", "KL (valid, nats)"), "KL")
    panels += _layer_or_total(metrics, "active_units", ("active units (valid)",) * 2, "active units")
    lr = metric_series(metrics, "lr")
    if lr[0]:
        panels.append(("learning rate", [("lr", lr)]))
    return panels


def _why_left_out(v: object) -> str | None:
    """Why the curves leave out a logged value ``v`` (``_finite``), in words; None: plotted."""
    if _finite(v) is not None:
        return None
    if v is None:
        return "null (NaN or infinite when logged: metrics.jsonl writes them as null)"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            finite = math.isfinite(float(v))
        except OverflowError:  # (an integer past a float's range)
            finite = True
        return f"beyond +-{PLOTTED_MAX:g}" if finite else "not finite (NaN or infinite)"
    return "not numbers (text, true or false, lists)"


def curves_left_out(metrics: list[dict], score: str) -> str | None:
    """What the learning curves leave out of the values metrics.jsonl logs for them, counted by
    reason, as a note for the page (they were left out without a word); None where nothing is.
    A line of no whole epoch is left out whole; a per-layer panel's entries are counted where the
    panel is drawn (``_layer_or_total``)."""
    keys = [f"train_{score}", f"valid_{score}", "lr"]
    for key in ("kl", "active_units"):
        layers = _layer_series(metrics, f"valid_layer_{key}")
        keys.append(f"valid_layer_{key}" if layers is not None and layers[1].shape[1] > 1 else f"valid_{key}")
    reasons: dict[str, int] = {}
    for m in metrics:
        present = [k for k in keys if k in m]
        if present and logged_epoch(m) is None:
            why = "in lines with no whole epoch (or iteration) number"
            reasons[why] = reasons.get(why, 0) + len(present)
            continue
        for k in present:
            values = m[k] if k.startswith("valid_layer_") and isinstance(m[k], list) else [m[k]]
            for why in filter(None, map(_why_left_out, values)):
                reasons[why] = reasons.get(why, 0) + 1
    if not reasons:
        return None
    said = "; ".join(f"{why}: {n}" for why, n in reasons.items())
    return f"the curves leave out {plural(sum(reasons.values()), 'logged value')} of metrics.jsonl ({said})"


LEGEND_LINES = 10  # the most lines a panel names in a legend (matplotlib's 10 colours; a legend of more overflows)


def _draw_panel(fig: "Figure", ax: "Axes", lines: list[tuple]) -> None:
    """The ``lines`` of one panel on ``ax``, named in a legend where there are a few; more (the
    layers of a deep hierarchy: 16 by default for the residual HVAE) are coloured along a colour
    map with a colour bar of their number (a legend of them ran over the panels below, and
    matplotlib's 10 colours drew layer 11 as layer 1)."""
    import matplotlib

    ramp = matplotlib.colormaps["viridis"] if len(lines) > LEGEND_LINES else None
    for i, (label, (xs, ys)) in enumerate(lines):
        if xs:
            colour = None if ramp is None else ramp(i / (len(lines) - 1))
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=literal(label), color=colour)
    if ramp is None:
        if len(lines) > 1:
            ax.legend(fontsize=8)
        return
    shown = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(1, len(lines)), ramp)
    fig.colorbar(shown, ax=ax, label="layer").ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def curves_png(metrics: list[dict], score_label: str, score: str, shift: float = 0.0, step: str = "epoch") -> bytes | None:
    """Learning curves as one PNG: the monitored score (train and valid; less ``shift``, see
    ``RunPage.shift``), the KL (total or per layer), the active units and the learning rate, each
    panel only where the run logged it, against the ``step`` (``RunPage.step``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = _curve_panels(metrics, score_label, score, shift)
    if not panels:
        return None
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels):
        _draw_panel(fig, ax, lines)
        ax.set_title(literal(title), fontsize=10)
        ax.set_xlabel(literal(step))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # (epochs, iterations: not 0.96 .. 1.04 of one)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    return figure_png(fig)


_EVAL_COLUMNS = [
    ("estimate", "estimate", None),
    ("n", "datapoints", None),
    ("nll", "NLL (nats)", 3),
    ("nll_stderr", "± stderr", 3),
    ("bpd", "bits/dim", 4),
    ("elbo", "ELBO (nats)", 3),
    ("elbo_stderr", "ELBO ± stderr", 3),
    ("elbo_bpd", "ELBO bits/dim", 4),
    ("recon", "reconstruction", 3),
    ("kl", "KL", 3),
    ("active_units", "active units", None),
    ("seconds", "time (s)", 1),
]


def _eval_cell(r: dict, key: str, digits: int | None) -> str:
    """A cell of the evaluation table, as dgm eval says its value: the estimate with its samples,
    the active units of the latent dimensions ("1 / 2"), numbers to ``digits`` decimals."""
    if key == "estimate":
        return f"<td>{_e(estimate_protocol(r))}</td>"
    shown = _e(active_units_words(r) or "–") if key == "active_units" else _num(r.get(key), digits or 0)
    return f'<td class="num">{shown}</td>'


def _eval_table(evals: dict[str, dict], marks: dict[str, str] | None = None, said: list[str] | None = None) -> str:
    if not evals:
        return '<p class="note">no evaluation yet (<code>dgm eval RUN</code> adds one)</p>'
    # the terms the models added, one column each, in the order they first appear
    added: dict[str, str] = {}
    for r in evals.values():
        for t in record_terms(r):
            added.setdefault(str(t.get("name")), str(t.get("label", "?")))  # (its unit: in its cells, as dgm eval says it)
    head = "".join(f"<th>{_e(h)}</th>" for _, h, _ in _EVAL_COLUMNS) + "".join(f"<th>{_e(h)}</th>" for h in added.values())
    body = []
    for protocol, r in evals.items():
        cells = "".join(_eval_cell(r, k, d) for k, _, d in _EVAL_COLUMNS)
        own = {str(t.get("name")): t for t in record_terms(r)}
        cells += "".join(f'<td class="num">{_e(format_term(own[n])[1]) if n in own else "–"}</td>' for n in added)
        whose = f" ({marks[protocol]})" if marks and marks.get(protocol) else ""
        body.append(f"<tr><td>{_e(r.get('split', '?'))}</td>{cells}<td class='note'>{_e(protocol)}{_e(whose)}</td></tr>")
    notes = dict.fromkeys(  # what the numbers are of, said once for the records alike (``said``: dgm eval's notes)
        [f"data: {w}" for w in map(data_words, evals.values()) if w]
        + (said if said is not None else [n for r in evals.values() for n in data_notes(r)])
    )
    return (
        f"<table><tr><th>split</th>{head}<th>protocol (split | subset | estimate | seed | weights)</th></tr>"
        + "".join(body)
        + "</table>"
        + "".join(f"<p class='note'>{_e(n)}</p>" for n in notes)
    )


def _config_table(config: dict) -> str:
    parts = []
    for section, values in config.items():
        if not isinstance(values, dict):
            parts.append(f"<tr><th>{_e(section)}</th><td colspan='2'>{_e(values)}</td></tr>")
            continue
        for i, (k, v) in enumerate(sorted(values.items())):
            head = f"<th rowspan='{len(values)}'>{_e(section)}</th>" if i == 0 else ""
            parts.append(f"<tr>{head}<td>{_e(k)}</td><td>{_e(v)}</td></tr>")
    return "<table>" + "".join(parts) + "</table>"


def _best(metrics: list[dict], score: str, upto: int | None = None) -> tuple[float | None, int | None]:
    """The best validation score and its epoch (up to the epoch ``upto``, where given)."""
    eps, vals = metric_series(metrics, f"valid_{score}")
    if upto is not None:
        eps, vals = [e for e in eps if e <= upto], [v for e, v in zip(eps, vals) if e <= upto]
    if not vals:
        return None, None
    i = int(np.argmax(vals))
    return vals[i], int(eps[i])


# the order of preference of a test result's kinds (``_test_result``)
_KIND_RANK = {"exact": 3, "order-mixture": 3, "importance-sampled": 2, "bound": 1, "time-sampled": 1, "one-draw bound": 1}


def _test_result(evals: dict[str, dict], weights: str | None) -> dict | None:
    """The evaluation of the current weights on the whole test set of the most preferred kind
    (``_KIND_RANK``), then with the most samples (the last written among equals)."""
    full = [r for r in evals.values() if r.get("split") == "test" and not r.get("subset")]
    full = [r for r in full if weights is None or r.get("weights") == weights]
    if not full:
        return None
    k = [r.get("iw_samples") if isinstance(r.get("iw_samples"), int) else 0 for r in full]
    # an exact number first, then an estimate that tends to it, then a bound; within a kind the most samples
    rank = [_KIND_RANK.get(estimate_label(r), 0) for r in full]
    return full[max(range(len(full)), key=lambda i: (rank[i], k[i], i))]


def _data_cell(t: dict, run_words: tuple[str, ...] = ()) -> list[str]:
    """What a test result's numbers are of, beside the dataset's name in the comparison: its data
    words (``data_words``), and "observed entries only" for log p(x_o) of incomplete data, which
    compares with no complete split's number; where there is no test result, ``run_words``, of the
    run's data (its best validation score is of them)."""
    if not t:
        return list(run_words)
    return [w for w in (data_words(t), "observed entries only" if t.get("observed_dims") is not None else None) if w]


def _trained(r: RunPage) -> str:
    """How far the run was trained, as the comparison says it: "in closed form" (or by EM), or the epochs (EM
    iterations) its checkpoint was written after (a line logged after it, of a run stopped before
    it, is of no weights kept: --resume trains that epoch again; lines missing from metrics.jsonl
    are not epochs untrained), else those logged, "21 of 500 epochs" where a
    gradient run stopped before the epochs it was set (a time budget, early stopping, a kill)."""
    if r.fit == "closed-form":  # (PPCA of incomplete data: by EM, its metrics line says, and whether it converged)
        em = next((m for m in r.metrics if type(m.get("em_iterations")) is int), None)  # (a crafted line's: not shown)
        if em is None:
            return "in closed form"
        unconverged = "" if em.get("em_converged", True) is True else ", unconverged"
        return f"by EM on the observed entries ({em['em_iterations']} iterations{unconverged})"
    logged = (e for e in map(logged_epoch, r.metrics) if e is not None)
    epochs = max(logged, default=0) if r.checkpointed is None else r.checkpointed  # (lines missing: not epochs untrained)
    planned = r.config.get("optim", {}).get("epochs") if r.fit == "gradient" else None
    of = f" of {planned}" if isinstance(planned, int) and epochs < planned else ""
    return f"{epochs}{of} {r.step}{'' if epochs == 1 and not of else 's'}"


def _run_section(i: int, r: RunPage) -> list[str]:
    """The page's section of run ``i``: its notes, curves (with what they leave out), evaluations,
    figures and configuration."""
    out = [f"<h2 id='run-{i}'>{_e(r.name)}</h2>", f"<p>{_e(r.describe)} on <b>{_e(r.dataset)}</b></p>"]
    for note in r.notes:
        out.append(f"<p class='note'>{_e(note)}</p>")
    out.append("<h3>Learning curves</h3>")
    png = curves_png(r.metrics, r.score_label, r.score, r.shift, r.step)
    out.append(_img(png, f"learning curves of {r.name}") if png else "<p class='note'>no metrics logged</p>")
    left_out = curves_left_out(r.metrics, r.score)
    if left_out is not None:
        out.append(f"<p class='note'>{_e(left_out[0].upper() + left_out[1:])}.</p>")
    out.append("<h3>Evaluation</h3>" + _eval_table(r.evals, r.marks, r.eval_notes or None))
    if r.figures:
        out.append("<h3>Figures</h3>")
        for fig_title, caption, data in r.figures:
            out.append(
                f"<figure>{_img(data, fig_title)}<figcaption><b>{_e(fig_title)}</b>: {_e(caption)}</figcaption></figure>"
            )
    out.append("<h3>Configuration</h3>" + _config_table(r.config))
    return out


def render_page(runs: list[RunPage], title: str = "dgmkit report") -> str:
    """The HTML page for ``runs`` (with a comparison table when there are several)."""
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    if len(runs) > 1:
        out.append("<h2>Comparison</h2><table><tr><th>run</th><th>model</th><th>data</th><th>trained</th>")
        out.append("<th>best validation -score (nats)</th><th>test NLL (nats)</th><th>bits/dim</th><th>estimate</th></tr>")
        for i, r in enumerate(runs):
            best, at = _best(r.metrics, r.score, r.checkpointed)
            own = {p: e for p, e in r.evals.items() if not r.marks.get(p)}  # (not those marked another run's or weights')
            t = _test_result(own, r.weights) or {}
            trained = _trained(r)
            at_s = "" if r.fit == "closed-form" else f" ({r.step} {at})"  # (a closed-form fit's one line is of no epoch)
            best_s = "–" if best is None else f"-{r.score_label} {r.shift - best:.3f}{at_s}"
            out.append(
                f"<tr><td><a href='#run-{i}'>{_e(r.name)}</a></td><td>{_e(r.describe)}</td>"
                f"<td>{_e(', '.join([r.dataset, *_data_cell(t, r.data_words)]))}</td><td class='num'>{_e(trained)}</td>"
                f"<td class='num'>{_e(best_s)}</td>"
                f"<td class='num'>{_num(t.get('nll'))}</td><td class='num'>{_num(t.get('bpd'), 4)}</td>"
                f"<td>{_e(estimate_protocol(t)) if t else '–'}</td></tr>"
            )
        out.append("</table>")
        out.append(
            "<p class='note'>Test NLL: each run's evaluation on its whole test split with the most samples; "
            "compare rows only where the estimates are of the same kind and the data the same.</p>"
        )
    for i, r in enumerate(runs):
        out += _run_section(i, r)
    out.append(f"<script>{_CHECK}</script></body></html>")
    return "\n".join(out)
