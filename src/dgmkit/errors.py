"""Errors that carry a message meant for the user.

Library code raises a subclass of :class:`DgmError` for bad input (unknown names, missing
or malformed files, wrong shapes, corrupt checkpoints). The CLI prints the message and exits
with a non-zero code, without a traceback.
"""

import difflib
import math
import numbers
from collections.abc import Iterable

__all__ = [
    "DgmError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "TrainingError",
    "EvaluationError",
    "did_you_mean",
    "plural",
    "closest_name",
    "first_line",
    "described",
    "shown_value",
    "whole_at_least",
    "true_or_false",
    "whole_in",
    "generator_seed",
    "finite_at_least",
    "sizes_at_least",
]


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``: a count with its noun in the right number."""
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"


# names that other libraries and papers give to this project's settings: their spelling is no
# guide (learning_rate is nearer to missing_rate than to lr)
_OTHER_NAMES = {
    "lr": ("learning_rate", "learningrate", "step_size", "stepsize", "lr_rate"),
    "batch_size": ("batch", "bs", "batchsize", "minibatch", "minibatch_size", "mini_batch_size"),
    "epochs": ("n_epochs", "num_epochs", "max_epochs", "nepochs", "epoch"),
    "latent_dim": ("z_dim", "zdim", "latent_size", "latent_dims", "latent_dimension", "n_latent", "num_latent", "code_size"),
    "hidden": ("hidden_dim", "hidden_dims", "hidden_size", "hidden_sizes", "hidden_units", "hidden_layers", "units"),
    "iw_samples": ("importance_samples", "eval_samples", "num_importance_samples"),
    "warmup": ("kl_warmup", "warm_up", "kl_annealing", "annealing", "kl_anneal"),
    "grad_clip": ("clip_grad", "gradient_clip", "clip_grad_norm", "max_grad_norm", "clip", "gradient_clipping"),
    "weight_decay": ("wd", "l2", "l2_penalty"),
    "prior_components": ("n_components", "num_components"),
    "activation": ("act", "activation_fn", "nonlinearity"),
    "flow_layers": ("n_flows", "num_flows", "flow_steps", "flow_length", "n_flow_layers"),
    "lr_schedule": ("scheduler", "lr_scheduler", "schedule"),
    "patience": ("early_stopping", "early_stop"),
    "precision": ("dtype", "amp", "mixed_precision"),
    "model": ("family", "model_type"),
    "seed": ("random_seed", "rng_seed", "random_state"),
    "beta": ("kl_weight", "beta_kl"),
    "free_bits": ("free_nats", "kl_free_bits"),
    "dataset": ("data_set", "data_name", "data_path"),
    "data_dir": ("data_root", "root", "datadir"),
}
_ALIASES = {other: ours for ours, others in _OTHER_NAMES.items() for other in others}


def closest_name(name: object, known: Iterable[object], cutoff: float = 0.6) -> str | None:
    """The known name that a mistyped or foreign ``name`` most likely means: the one this project
    uses for a name common elsewhere (``learning_rate`` for ``lr``), else the closest spelling;
    None if none is close; a name spelt nearly as a known one is that one. For the other names, a
    flag's ``--`` is dropped and ``-`` read as ``_``."""
    text, names = str(name), [str(k) for k in known]
    ours = _ALIASES.get(text.removeprefix("--").replace("-", "_").lower())
    same = [n for n in names if ours is not None and n.removeprefix("--").replace("-", "_") == ours]
    nearly = difflib.get_close_matches(text, names, n=1, cutoff=0.85)  # (scheduler: a family's schedule first)
    close = nearly or same or difflib.get_close_matches(text, names, n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(name: object, known: Iterable[object]) -> str:
    """`` (did you mean 'X'?)`` for the known name that a mistyped ``name`` most likely means, else ''."""
    close = closest_name(name, known)
    return f" (did you mean {close!r}?)" if close else ""


def first_line(text: str) -> str:
    """The first line of ``text`` that is not blank, stripped, at most 300 characters."""
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:300]


def described(e: BaseException) -> str:
    """``Type: first line of its message``, at most 300 characters: an error said in one line."""
    return f"{type(e).__name__}: {first_line(str(e))}"[:300]


def shortened(text: str, most: int = 40) -> str:
    """``text`` cut to at most ``most`` characters for a message, ending "..." where cut."""
    return text if len(text) <= most else text[: most - 3] + "..."


def shown_value(value: object) -> str:
    """``value`` for a one-line message: its repr on one line, cut to 40 characters; an array or
    tensor of more than one value by its type and shape, an integer of over 38 digits by its size
    (Python prints none of over 4300), and a value whose repr cannot be made by its type."""
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and math.prod(shape) != 1 and all(isinstance(n, int) for n in shape):
        name = {"ndarray": "NumPy array", "Tensor": "tensor"}.get(type(value).__name__, type(value).__name__)
        return f"a {name} of shape {tuple(shape)}"
    if isinstance(value, int) and value.bit_length() > 128:
        digits = int((value.bit_length() - 1) * math.log10(2)) + 1  # the fewest an integer of its bits has
        return f"an integer of {digits + (abs(value) >= 10**digits)} digits"
    try:
        text = " ".join(repr(value).split())
    except ValueError:  # e.g. a Fraction of such an integer
        return f"a {type(value).__name__} too large to print"
    return shortened(text)


def true_or_false(name: str, value: object, error: type[Exception] = ValueError) -> bool:
    """``value`` if it is True or False, else ``error`` naming it: a string such as "no" (or 0,
    1) is no switch (``bool("false")`` is true: normalise="false" trained NVIL's estimator)."""
    if not isinstance(value, bool):
        raise error(f"{name} must be True or False, got {shown_value(value)}")
    return value


def whole_at_least(name: str, value: object, low: int, error: type[Exception] = ValueError) -> int:
    """``value`` as an int if it is a whole number (a NumPy one too; not a bool) of at least
    ``low``, else ``error`` saying so by ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise error(f"{name} must be an integer >= {low}, got {shown_value(value)}")
    return int(value)


def whole_in(name: str, value: object, low: int, high: int, error: type[Exception] = ValueError) -> int:
    """``value`` as an int if it is a whole number (a NumPy one too; not a bool) in low..high,
    else ``error`` saying so by ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= int(value) <= high:
        raise error(f"{name} must be an integer in {low}..{high}, got {shown_value(value)}")
    return int(value)


def generator_seed(value: object, name: str = "seed", error: type[Exception] = ValueError) -> int:
    """``value`` as the seed of a torch generator: a whole number (a NumPy one too; not a bool)
    in 0..2**63 - 1, else ``error`` saying so by ``name`` (``manual_seed`` of 2**64 or more
    failed with "Overflow when unpacking long long", naming nothing; the Trainer seeds seed + 1)."""
    seed = whole_at_least(name, value, 0, error)
    if seed >= 2**63:
        raise error(f"{name} must be an integer in 0..2**63 - 1 (a torch generator's seed), got {shown_value(value)}")
    return seed


def finite_at_least(
    name: str, value: object, low: float, strict: bool = False, error: type[Exception] = ValueError
) -> float:
    """``value`` if it is a finite real number (a NumPy one too; not a bool) of at least ``low``
    (above it where ``strict``), else ``error`` saying so by ``name`` (NaN never is)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value > low if strict else value >= low)):  # type: ignore[operator]
        raise error(f"{name} must be a finite number {'>' if strict else '>='} {low}, got {shown_value(value)}")
    return value  # type: ignore[return-value]


def sizes_at_least(owner: str, sizes: dict[str, object], low: int = 1) -> None:
    """Each of a network's ``sizes`` (name -> value) a whole number of at least ``low``, else a
    ValueError that names it as ``owner``'s."""
    for name, value in sizes.items():
        whole_at_least(f"{owner}'s {name}", value, low)


class DgmError(Exception):
    """Base class of all user-facing dgmkit errors."""


class ConfigError(DgmError, ValueError):
    """An unknown key, an unknown name or a value out of range in a run configuration."""


class DataError(DgmError, ValueError):
    """A data file that is missing or malformed, or data that does not fit the model."""


class CheckpointError(DgmError):
    """A checkpoint or run folder that is missing, corrupt or not written by dgmkit."""


class TrainingError(DgmError):
    """Training cannot go on (for example the loss became NaN or inf)."""


class EvaluationError(DgmError):
    """An evaluation that cannot give a valid number (a non-finite log-likelihood)."""
