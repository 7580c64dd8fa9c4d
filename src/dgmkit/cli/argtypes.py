"""Types of the flags that are not run settings (``-n``, ``--seed``, ``--temperature``, ...):
each checks its range and finiteness where the value enters, so a command never sees a count
below one, a negative grid or an infinite temperature."""

import argparse
import math
import re
from collections.abc import Callable

from dgmkit.config.schema import MAX_SEED  # (as the run settings `seed`, `missing_seed` and `labels_seed`)
from dgmkit.errors import shown_value as _shown

__all__ = ["count", "real", "SEED", "MAX_SEED", "given_count", "given_real", "keyword"]


def count(lo: int = 1, hi: int = 10**9, what: str = "a count") -> Callable[[str], int]:
    """An integer in lo..hi (Python integers: no overflow whatever the text)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            digits = re.fullmatch(r"\s*[+-]?(\d+)\s*", text)
            if digits:  # an integer of more digits than int() reads (4300)
                raise argparse.ArgumentTypeError(
                    f"{what} must be in {lo}..{hi}, got an integer of {len(digits[1])} digits"
                ) from None
            raise argparse.ArgumentTypeError(f"expected an integer, got {_shown(text)}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be in {lo}..{hi}, got {_shown(value)}")
        return value

    parse.__name__ = "integer"
    return parse


def real(gt: float | None = None, lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
    """A finite real number, > gt / >= lo / <= hi where given."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {_shown(text)}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {_shown(text)}")
        if (gt is not None and not value > gt) or (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = [f"> {gt:g}" if gt is not None else "", f">= {lo:g}" if lo is not None else ""]
            bounds.append(f"<= {hi:g}" if hi is not None else "")
            raise argparse.ArgumentTypeError(f"must be {' and '.join(b for b in bounds if b)}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


SEED = count(0, MAX_SEED, "a seed")


def keyword(flag: str) -> str:
    """A flag as the keyword of the Python function that takes its value (``--iw-samples``:
    ``iw_samples``), for a refusal that a Python caller reads."""
    return flag.removeprefix("--").replace("-", "_")


def given_count(value: object, lo: int, hi: int, what: str) -> int:
    """``value`` given from Python where a flag takes ``count(lo, hi)``: an integer (a NumPy one
    too; not a bool) in lo..hi, else a ConfigError that names ``what``."""
    from dgmkit.errors import ConfigError, whole_in

    return whole_in(what, value, lo, hi, ConfigError)


def given_real(value: object, gt: float, hi: float, what: str) -> float:
    """``value`` given from Python where a flag takes ``real(gt=gt, hi=hi)``: a finite real number
    (not a bool) with gt < value <= hi, else a ConfigError that names ``what``."""
    import numbers

    from dgmkit.errors import ConfigError

    try:
        f = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an integer beyond float's range
        f = math.inf
    if not (math.isfinite(f) and gt < f <= hi):
        raise ConfigError(f"{what} must be a finite number > {gt:g} and <= {hi:g}, got {_shown(value)}")
    return f
