"""The evaluation report of any model on one split: its estimate of log p(x) (of the kind the
model declares), the ELBO split where it has one, bits/dim and latent diagnostics."""

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TypeGuard, cast, overload

import torch

from dgmkit import distributed
from dgmkit._modes import evaluates
from dgmkit._rng import seeded
from dgmkit.data.labels import class_indices
from dgmkit.devices import device_of
from dgmkit.errors import generator_seed, shown_value, whole_in
from dgmkit.evaluation.diagnostics import diagnose
from dgmkit.evaluation.estimates import MAX_ORDERS, OrderStore, check_log_volume, draw_orders, estimate
from dgmkit.evaluation.metrics import bits_per_dim, discrete_nll, observed_entries, posterior_statistics, standard_error
from dgmkit.models import Autoencoder, GenerativeModel, LatentVariableModel
from dgmkit.models.base import TimeSampledBound
from dgmkit.models.terms import TERM_LEVELS, refuse_non_finite

__all__ = [
    "EvalReport",
    "evaluate",
    "record_terms",
    "one_draw_bound",
    "estimate_label",
    "estimate_protocol",
    "data_words",
    "words_of_data",
    "data_notes",
    "record_problem",
    "finite_number",
    "active_units_words",
]


@dataclass
class EvalReport:
    """Per-datapoint means in nats. ``estimate`` says what ``nll`` is: ``exact``,
    ``importance-sampled`` (k = ``iw_samples`` draws; a stochastic bound that tends to the
    truth), ``bound``, or ``reconstruction`` (no density: ``nll`` and ``bpd`` are None).
    ``elbo`` is a variational lower bound (negative for discrete data; a log-density of continuous
    data may have either sign), present only where the model has one. For
    dequantized data every number is of the integer data (see ``discrete_nll``). ``density_of``
    says what the numbers are of: ``discrete`` data (a log-probability; bits/dim are given) or
    ``continuous`` data (a log-density of the values as given, which shifts with their scale:
    no bits/dim, as they would not be comparable with those of discrete data). For data with
    missing entries (NaN) every number is of the observed entries, log p(x_o), and bits/dim are
    per observed entry (``observed_dims``: their mean number per datapoint). ``terms``: the
    numbers the model adds beyond these (a WAE's MMD, a diffusion model's KL split, a
    classifier's accuracy), each a ``Term.record()``: name, label, mean value, unit, note, level."""

    estimate: str
    nll: float | None
    # the standard error of ``nll`` as a mean over the datapoints (their sample sd, ddof 1, over
    # sqrt(n)): the spread between datapoints and the estimate's own noise together
    nll_stderr: float | None
    bpd: float | None
    elbo: float | None
    elbo_bpd: float | None
    recon: float | None
    kl: float | None
    iw_samples: int
    n: int
    num_dims: int
    active_units: int | None
    latent_dim: int | None
    kl_per_dim: list | None
    seconds: float
    layers: list | None = None  # several stochastic layers: [{"name", "size", "kl", "kl_stderr", "active_units"}, ...]
    density_of: str = "discrete"
    observed_dims: float | None = None  # data with missing entries: the mean observed entries per datapoint
    # a time-sampled bound: how the times were drawn, and the standard error of the mean from the
    # time sampling alone (``nll_stderr`` holds data and times together)
    variance_reduction: str | None = None
    time_stderr: float | None = None
    # what the model adds (``GenerativeModel.evaluation_terms``), in its order: ``Term.record()`` each
    terms: list = field(default_factory=list)
    # the ELBO's standard error over datapoints (one posterior draw each, as the ELBO itself)
    elbo_stderr: float | None = None
    # scored with a log_volume: uniformly dequantized integers (eval.json says so by its transform)
    dequantized: bool = False

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["dequantized"]
        return out

    @property
    def estimate_label(self) -> str:
        """What ``nll`` is, as ``dgm eval`` names it: "exact", "importance-sampled, k=5000", "one-draw
        bound" (an exact density of uniformly dequantized integers: ``estimate`` stays "exact")."""
        return estimate_protocol({**self.to_dict(), "transform": "dequantize" if self.dequantized else ""})

    def term(self, name: str) -> float | None:
        """The value of the term ``name`` that the model added (None where it has no value)."""
        for t in self.terms:
            if t["name"] == name:
                return t["value"]
        raise KeyError(f"this evaluation has no term {name!r}; it has {[t['name'] for t in self.terms]}")


# eval.json records written before terms (dgmkit <= 0.4) held these numbers as fields of their own
_LEGACY_TERMS = {
    "mmd": {"label": "MMD^2(q(z), p(z))", "unit": "", "level": 0, "digits": 5, "note": "unbiased, inverse multiquadric"},
    "prior_kl": {"label": "prior KL", "unit": "nats", "level": 2, "digits": 3, "note": "KL(q(z_1|x) || p(z_1))"},
    "diffusion_kl": {
        "label": "diffusion KL",
        "unit": "nats",
        "level": 2,
        "digits": 3,
        "note": "the sum over the steps from z_1 to z_0",
    },
    "accuracy": {"label": "accuracy", "unit": "", "level": 0, "digits": 4, "note": "the share of labels it gets right"},
}


def one_draw_bound(kind: str, transform: str) -> bool:
    """Whether a model's exact density (estimate ``kind``) is of uniformly dequantized data
    (``transform``): it scores the integers by one draw of the noise, a lower bound on their
    log-likelihood in expectation, not their exact log-likelihood."""
    return kind == "exact" and transform == "dequantize"


def estimate_label(record: dict) -> str:
    """An eval record's estimate as a table shows it: its kind, or "one-draw bound" where an
    exact density scores dequantized integers (``one_draw_bound``)."""
    kind = str(record.get("estimate", "–"))
    return "one-draw bound" if one_draw_bound(kind, str(record.get("transform", ""))) else kind


_DATA_WORDS = {
    "binary": "binary values as stored",
    "dynamic-binarize": "binarized (one seeded Bernoulli draw of each pixel)",
    "dequantize": "integer levels (one seeded draw of uniform dequantization)",
    "integers": "integer levels as stored",
    "scale": "integer levels scaled to [0, 1]",
    "continuous": "continuous values as stored",
}


def data_words(record: dict) -> str | None:
    """What an eval record's numbers are of, in words ("binarized (one seeded Bernoulli draw of
    each pixel)", "a table's rows, numeric columns standardized"): compare like with like. None
    for a record that does not say."""
    continuous = record.get("density_of") != "discrete"  # (a record that does not say: as stored)
    return words_of_data(str(record.get("transform")), continuous, bool(record.get("table_note")))


def words_of_data(transform: str, continuous: bool, table: bool) -> str | None:
    """What numbers are of, in words, of data that ``transform`` feeds to a model, scored by a
    density over real values (``continuous``: ``scores_densities``) or a probability, of a table's
    rows or not (``data_words`` reads the three of an eval record; None for a transform unknown)."""
    if table:
        return "a table's rows, numeric columns standardized"
    if transform == "continuous" and not continuous:
        return "a table's rows of categories"
    return _DATA_WORDS.get(transform)


def estimate_protocol(record: dict) -> str:
    """An eval record's estimate with its samples, as ``dgm eval`` names them: "exact",
    "one-draw bound", "importance-sampled, k=50", "bound, 4 times a datapoint", "exact, 2 orders"."""
    kind, k = str(record.get("estimate", "–")), record.get("iw_samples")
    if kind == "time-sampled":
        return f"bound, {k} time{'s' if k != 1 else ''} a datapoint"
    if kind == "order-mixture":
        return f"exact, {k} order{'s' if k != 1 else ''}"
    if kind in ("importance-sampled", "bound") and isinstance(k, int):
        return f"{kind}, k={k}"
    return estimate_label(record)


def active_units_words(record: dict) -> str | None:
    """An eval record's active units as ``dgm eval`` says them, of its latent dimensions ("1 / 2";
    None where it has none)."""
    if record.get("active_units") is None:
        return None
    dims = record.get("latent_dim")
    return f"{record['active_units']}" + ("" if dims is None else f" / {dims}")


def data_notes(record: dict) -> list[str]:
    """What a reader of an eval record's numbers must know of its data: of incomplete data's
    observed entries, of dequantized integers (bounds), of a table's standardized values, of
    continuous values (log-densities)."""
    out = []
    if record.get("observed_dims") is not None:
        bits = "; bits per observed entry" if record.get("bpd") is not None else ""
        out.append(
            f"incomplete data: every number is of the observed entries only, log p(x_o) "
            f"({record['observed_dims']:.1f} of {record['num_dims']} per datapoint on average){bits}"
        )
    if record.get("transform") == "dequantize" and record.get("estimate") != "exact":
        out.append(f"uniformly dequantized data: the numbers bound those of the {record['num_dims']}-D integer data")
    if record.get("estimate") == "reconstruction":
        return out
    if record.get("table_note"):
        out.append(str(record["table_note"]))
    elif record.get("density_of") == "continuous":
        out.append(
            "continuous data: log-densities of the values as given, not probabilities; they shift with the data's "
            "scale (dividing by 255 adds D log 255 nats) and do not compare with bits/dim of 8-bit or binary data"
        )
    return out


def finite_number(v: object) -> TypeGuard[int | float]:
    """Whether ``v`` (read from JSON) is a finite real number: an int or a float, not a bool, NaN,
    an infinity or an integer beyond any float (JSON has them: ``10**400``)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _count(v: object, least: int) -> bool:
    # (not a bool, not a float such as 300.6 or 10.0, not a count no run could make: 10**4000)
    return type(v) is int and least <= v < 2**63


# the longest text field of an evaluation record (a path, a note: dgm eval's are under 1000): a 2 MB split
# of a crafted evals.json was shown whole, escaped, on dgm report's page
MAX_RECORD_TEXT = 10_000

# what each field of an evaluation record is (``EvalReport`` and ``evaluate_run``'s fields; the
# numbers that records before terms held in fields of their own): (test, what it must be)
_FIELDS: dict[str, tuple[Any, str]] = {
    **dict.fromkeys(("n", "num_dims", "latent_dim", "processes"), (lambda v: _count(v, 1), "a positive integer")),
    **dict.fromkeys(("iw_samples", "active_units", "seed"), (lambda v: _count(v, 0), "an integer >= 0")),
    **dict.fromkeys(("nll", "bpd", "elbo", "elbo_bpd", "recon", "kl", *_LEGACY_TERMS), (finite_number, "a finite number")),
    **dict.fromkeys(
        ("nll_stderr", "elbo_stderr", "time_stderr", "seconds", "observed_dims"),
        (lambda v: finite_number(v) and v >= 0, "a finite number >= 0"),
    ),
    **dict.fromkeys(
        ("split", "estimate", "transform", "density_of", "dataset", "checkpoint", "model", "weights", "run_id")
        + ("table_note", "order_files", "variance_reduction", "code_prior", "note"),
        (lambda v: isinstance(v, str) and len(v) <= MAX_RECORD_TEXT, f"a string of at most {MAX_RECORD_TEXT} characters"),
    ),
    **dict.fromkeys(("point_mass_posterior", "discrete_latents", "exact"), (lambda v: isinstance(v, bool), "true or false")),
    "inputs": (
        lambda v: isinstance(v, dict) and all(isinstance(a, str) for a in v.values()),
        "an object of run paths (strings)",
    ),
    "input_weights": (
        lambda v: isinstance(v, dict) and all(isinstance(a, str) for a in v.values()),
        "an object of weight digests (strings)",
    ),
    "kl_per_dim": (
        lambda v: (
            isinstance(v, list) and all(finite_number(a) or (isinstance(a, list) and all(map(finite_number, a))) for a in v)
        ),
        "a list of finite numbers (or of lists of them)",
    ),
}
_TERM_FIELDS: dict[str, tuple[Any, str]] = {
    **dict.fromkeys(("name", "label", "unit", "note"), (lambda v: isinstance(v, str), "a string")),
    "value": (finite_number, "a finite number"),
    "level": (lambda v: type(v) is int and v in TERM_LEVELS, f"one of {TERM_LEVELS}"),
    "digits": (lambda v: type(v) is int and 0 <= v <= 8, "an integer 0..8"),
}
_LAYER_FIELDS: dict[str, tuple[Any, str]] = {
    "name": (lambda v: isinstance(v, str), "a string"),
    "size": (lambda v: _count(v, 1), "a positive integer"),
    "kl": (finite_number, "a finite number"),
    "active_units": (lambda v: _count(v, 0), "an integer >= 0"),
}


def _fields_problem(d: dict, fields: dict[str, tuple[Any, str]], where: str = "") -> str | None:
    for key, (ok, what) in fields.items():
        if d.get(key) is not None and not ok(d[key]):
            return f"{where}{key} is {shown_value(d[key])}, not {what}"
    return None


def _parts_problem(r: dict, key: str, fields: dict[str, tuple[Any, str]]) -> str | None:
    """What is wrong with the list of objects ``r[key]`` (terms, layers), if anything."""
    parts = r.get(key)
    if parts is None:
        return None
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        return f"{key} is {shown_value(parts)}, not a list of objects"
    for i, part in enumerate(parts):
        problem = _fields_problem(part, fields, f"{key}[{i}].")
        if problem is not None:
            return problem
        if key == "layers" and (part.get("active_units") or 0) > (part.get("size") or math.inf):
            return f"{key}[{i}] has {part['active_units']} active units of {part['size']}"
    return None


def record_problem(record: object) -> str | None:
    """What makes ``record``, an evaluation record read from a file (eval.json, a result of
    evals.json), other than one that ``dgm eval`` writes (None: nothing): the first field of
    another type or outside its range, named with its value. Integers are ints (not bools or
    floats), counts positive, numbers finite, strings strings; the fields the readers need are
    there (a record of dgmkit 0.1, with no ``estimate``, needs only a split and an NLL field,
    null for a model with no density). Every reader of these files checks records with it, so
    that none is shown with a wrong number."""
    if not isinstance(record, dict):
        return f"it is {shown_value(record)}, not an object"
    r = record
    needed = ("split", "estimate", "iw_samples", "n", "num_dims") if "estimate" in r else ("split",)
    missing = [k for k in needed if r.get(k) is None] or ([] if "estimate" in r or "nll" in r else ["nll"])
    if missing:
        return f"it has no {missing[0]}"
    if r.get("num_dims") is None and (r.get("observed_dims") is not None or r.get("transform") == "dequantize"):
        return "it has no num_dims (the data notes need it)"
    problem = (
        _fields_problem(r, _FIELDS) or _parts_problem(r, "terms", _TERM_FIELDS) or _parts_problem(r, "layers", _LAYER_FIELDS)
    )
    if problem is not None:
        return problem
    subset, trained = r.get("subset"), r.get("trained")
    if subset is not None and not (
        isinstance(subset, dict) and _count(subset.get("of"), r.get("n") or 1) and _count(subset.get("seed"), 0)
    ):
        return f"subset is {shown_value(subset)}, not a seeded subset (of: the split's size >= n, seed)"
    if trained is not None and not (
        isinstance(trained, dict) and _count(trained.get("epochs"), 0) and _count(trained.get("steps_into_next"), 0)
    ):
        return f"trained is {shown_value(trained)}, not an object of epochs and steps_into_next (integers >= 0)"
    if (r.get("active_units") or 0) > (r.get("latent_dim") or math.inf):
        return f"active_units is {r['active_units']}, more than latent_dim {r['latent_dim']}"
    if (r.get("observed_dims") or 0) > (r.get("num_dims") or math.inf):
        return f"observed_dims is {r['observed_dims']}, more than num_dims {r['num_dims']}"
    if r.get("density_of") == "discrete":  # a probability is at most 1: its NLL and bits are >= 0 (but for rounding)
        for key in ("nll", "bpd"):
            if (r.get(key) or 0) < -1e-6:
                return f"{key} is {shown_value(r[key])}, below 0: the data are discrete, and a probability is at most 1"
    return None


def record_terms(record: dict) -> list[dict]:
    """The terms of an eval.json record (``Term.record()`` each, in the model's order), read from
    the fields that older records held them in where they have no ``terms``."""
    terms = record.get("terms")
    if isinstance(terms, list):
        return [_checked_term(t) for t in terms if isinstance(t, dict)]
    out = [
        {"name": name, **how, "value": record[name]}
        for name, how in _LEGACY_TERMS.items()
        if isinstance(record.get(name), (int, float)) and not isinstance(record.get(name), bool)
    ]
    for t in out:
        if t["name"] == "accuracy" and isinstance(record.get("n"), int):
            t["note"] = f"{100 * (1 - t['value']):.2f}% error on all {record['n']} labels"
    return out


def _checked_term(t: dict) -> dict:
    """A term as read from a file, each field of the type and range ``Term.record`` writes
    (anything else shown as missing), so that no record renders as more than text."""

    def text(key: str) -> str:
        return str(t[key])[:200] if isinstance(t.get(key), str) else ""

    value: Any = t.get("value")  # (from a file: checked here)
    finite = finite_number(value)
    level, digits = t.get("level"), t.get("digits")
    return {
        "name": text("name") or "?",
        "label": text("label") or "?",
        "value": float(value) if finite else None,
        "unit": text("unit"),
        "note": text("note"),
        "level": level if level in TERM_LEVELS and not isinstance(level, bool) else 0,
        "digits": digits if isinstance(digits, int) and not isinstance(digits, bool) and 0 <= digits <= 8 else 3,
    }


@overload
def _mean(t: torch.Tensor) -> float: ...
@overload
def _mean(t: None) -> None: ...
@overload
def _mean(t: torch.Tensor | None) -> float | None: ...
def _mean(t: torch.Tensor | None) -> float | None:
    return None if t is None else t.mean().item()


@torch.no_grad()
def _diagnostics(model: GenerativeModel, x: torch.Tensor, seed: int) -> tuple[dict | None, list[dict] | None]:
    """The latent statistics and the per-layer diagnostics of x, where the model has them (None where not;
    of one datapoint, no active units and no layers: they count units by a covariance over x)."""
    stats = posterior_statistics(cast("LatentVariableModel | Autoencoder", model), x) if model.has_latents else None
    if stats is not None and len(x) < 2:  # (a variance over one datapoint is no spread: not "0 active")
        stats["active_units"] = None
    layers = None
    if model.has_layers and len(x) >= 2:  # a hierarchical model: its KL and active units per layer
        d = diagnose(cast(LatentVariableModel, model), x, samples=1, holes=0, seed=seed, mutual_info=False)
        layers = [
            {"name": la.name, "size": la.size, "kl": la.kl, "kl_stderr": la.kl_stderr, "active_units": la.active_units}
            for la in d.layers
        ]
    return stats, layers


def _stderr(per_row: torch.Tensor, counts: torch.Tensor | None, log_volume: float) -> float:
    """The standard error of the mean of a per-datapoint number in nats of the integer data:
    each row's value less its observed entries' log volume (they differ between rows only where
    entries are missing)."""
    if counts is not None and log_volume:
        per_row = per_row.double().cpu() - counts * log_volume
    return standard_error(per_row)


@evaluates
def evaluate(
    model: GenerativeModel,
    x: torch.Tensor,
    iw_samples: int = 5000,
    log_volume: float = 0.0,
    seed: int = 0,
    batch_size: int = 1000,
    continuous: bool | None = None,
    y: torch.Tensor | None = None,
    orders: int = 0,
    order_store: OrderStore | None = None,
) -> EvalReport:
    """Evaluate ``model`` on transformed data ``x`` (what the likelihood scores).

    ``iw_samples``: importance samples where the model's estimate is sampled (0 reports the
    ELBO as the bound it is, kind ``bound`` with k = 1); for a time-sampled bound (diffusion)
    the times per datapoint (0 taken as 1, recorded so); ignored where it is exact.
    ``log_volume``: log L per dimension for uniformly dequantized data
    (``DataTransform.log_volume``), so that the numbers are of the integers. ``continuous``: the
    data are continuous values (not quantized): no bits/dim; None (the default): continuous where
    the model's probabilities are not of discrete values (``discrete_data``: a density) and no
    ``log_volume`` is given, since then nothing says what bins the data came from.
    ``orders`` M >= 1: an any-order model's exact likelihood as the mixture of M orders drawn from
    ``seed`` (``iw_samples`` unused), each order's values kept in ``order_store`` as they are done
    (see ``estimates.OrderStore``)."""
    t0 = time.perf_counter()
    # (1.5 failed in manual_seed; orders 1.5 deep in drawing them; a NumPy integer, taken, in manual_seed too)
    seed = generator_seed(seed)
    orders = whole_in("orders", orders, 0, MAX_ORDERS)  # (10**9 orders: (M, D) orders drawn until memory ran out)
    if continuous is not None and not isinstance(continuous, bool):  # ("no" is true: bits/dim silently left out)
        raise ValueError(f"continuous must be True, False or None, got {shown_value(continuous)}")
    check_log_volume(model, log_volume)
    if continuous is None:
        continuous = not model.discrete_data and log_volume == 0.0
    x = x.to(device_of(model))  # the data go where the model is
    # (a hidden label, -1, a partly labelled file's: a classifier's accuracy leaves it out, other models read no label)
    y = None if y is None else class_indices(y, len(x), "evaluate()'s labels y", hidden=True).to(x.device)
    n, num_dims = len(x), int(math.prod(x.shape[1:]))
    seen, counts = None, None
    if x.is_floating_point() and bool(torch.isnan(x).any()):  # numbers of the observed entries: log p(x_o)
        counts = observed_entries(x)  # (N,)
        seen = counts.mean().item()
    dims = num_dims if seen is None else seen  # bits per (observed) dimension
    shift = dims * log_volume
    drawn = draw_orders(orders, num_dims, torch.Generator().manual_seed(seed)) if orders else None  # on the CPU: any device
    with seeded(seed, x.device) as g:
        est = estimate(model, x, iw_samples, g, batch_size, orders=drawn, order_store=order_store)
        added = model.evaluation_terms(x, y, est.terms, batch_size)  # on every rank: the same data, the same seed
    time_var = est.terms.pop("time_var", None)
    timed = est.kind == "time-sampled"  # (a time-sampled model can be scored otherwise: --orders)
    for name, t in [("log-likelihood", est.log_px), *est.terms.items()]:
        if t is not None:
            refuse_non_finite(name, t)
    nll = None if est.log_px is None else discrete_nll(-_mean(est.log_px), dims, log_volume)
    stderr = None if est.log_px is None or n < 2 else _stderr(est.log_px, counts, log_volume)
    elbo = None if "elbo" not in est.terms else -discrete_nll(-_mean(est.terms["elbo"]), dims, log_volume)
    elbo_stderr = None if elbo is None or n < 2 else _stderr(est.terms["elbo"], counts, log_volume)
    recon = None if "recon" not in est.terms else _mean(est.terms["recon"]) - shift
    terms = [term.record(name) for name, term in added.items()]
    main = distributed.current().is_main  # under torchrun: computed once (rank 0), every rank's report the same
    stats, layers = cast(
        "tuple[dict | None, list[dict] | None]", distributed.broadcast_object(_diagnostics(model, x, seed) if main else None)
    )
    return EvalReport(
        estimate=est.kind,
        nll=nll,
        nll_stderr=stderr,
        bpd=None if nll is None or continuous else bits_per_dim(nll, dims),
        elbo=elbo,
        elbo_bpd=None if elbo is None or continuous else bits_per_dim(-elbo, dims),
        recon=recon,
        kl=_mean(est.terms.get("kl")),
        iw_samples=est.k,
        n=n,
        num_dims=num_dims,
        active_units=None if stats is None else stats["active_units"],
        latent_dim=None if stats is None else stats["latent_dim"],
        kl_per_dim=None if stats is None else stats["kl_per_dim"],
        seconds=time.perf_counter() - t0,
        layers=layers,
        density_of="continuous" if continuous else "discrete",
        observed_dims=seen,
        variance_reduction=model.variance_reduction if isinstance(model, TimeSampledBound) and timed else None,
        time_stderr=None if time_var is None else time_var.sum().sqrt().item() / n,
        terms=terms,
        elbo_stderr=elbo_stderr,
        dequantized=log_volume != 0.0,
    )
