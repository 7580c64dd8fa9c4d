"""Typed settings: dataclass fields that carry their own help text and ranges.

Every configurable key of dgmkit (a family's model settings, the data, optimisation and
evaluation sections of a run) is a dataclass field declared with :func:`setting`. From that one
declaration come the type and range checks of config files and flags (:func:`check`), the
command-line flags (``dgmkit.cli``) and the documentation (``--help``). Choices are ``Literal``
types; ``X | None`` means the key may be switched off.

>>> from dataclasses import dataclass
>>> @dataclass
... class Example:
...     epochs: int = setting(10, "passes over the data", min=1)
>>> check(Example(epochs=0))
Traceback (most recent call last):
...
dgmkit.errors.ConfigError: epochs must be >= 1, got 0
"""

import dataclasses
import math
import numbers
import os
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from dgmkit._io import control_character
from dgmkit.errors import ConfigError, did_you_mean, shown_value

__all__ = ["setting", "default_of", "check", "from_dict", "field_kind", "describe_type", "choices_of", "unused_keys"]

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = TypeVar("_T", bound="DataclassInstance")
MAX_LIST = 64  # a list setting (layer sizes) holds at most this many values


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    flag: str | None = None,
) -> Any:
    """A dataclass field with help text and an optional range (``min <= v <= max``,
    ``gt < v < lt``). Lists are copied per instance. ``flag`` overrides the flag's name."""
    meta = {"help": help, "min": min, "max": max, "gt": gt, "lt": lt, "flag": flag}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def default_of(f: dataclasses.Field) -> object:
    """A setting's default value (a list setting's is made afresh by its factory)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    return typing.cast("typing.Callable[[], object]", f.default_factory)()  # a setting without a default has a factory


def _split_optional(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return typing.Union[tuple(args)], optional  # noqa: UP007 - a runtime-built union
    if origin is Literal and None in typing.get_args(tp):
        return Literal[tuple(a for a in typing.get_args(tp) if a is not None)], True
    return tp, False


def field_kind(tp: Any) -> tuple[str, bool]:
    """One of "int", "float", "bool", "str", "choice", "list[int]", and whether None is allowed."""
    base, optional = _split_optional(tp)
    if typing.get_origin(base) is Literal:
        return "choice", optional
    if typing.get_origin(base) is list:
        return "list[int]", optional
    return {int: "int", float: "float", bool: "bool", str: "str"}[base], optional


def choices_of(tp: Any) -> tuple | None:
    base, _ = _split_optional(tp)
    return typing.get_args(base) if typing.get_origin(base) is Literal else None


def _choices(tp: Any) -> tuple:
    """The choices of a ``Literal`` type (``tp`` is known to be one)."""
    choices = choices_of(tp)
    assert choices is not None
    return choices


def describe_type(tp: Any) -> str:
    kind, optional = field_kind(tp)
    text = "one of " + ", ".join(map(str, _choices(tp))) if kind == "choice" else kind
    return text + (" or none" if optional else "")


def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _check_value(name: str, value: Any, tp: Any) -> None:
    kind, optional = field_kind(tp)
    if value is None:
        if not optional:
            raise ConfigError(f"{name} must be set ({describe_type(tp)}), got none")
        return
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "choice": lambda v: isinstance(v, str) and v in _choices(tp),
        "list[int]": lambda v: isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v),
    }[kind](value)
    if not ok:
        if kind == "choice":
            hint = did_you_mean(value, _choices(tp))
            raise ConfigError(f"unknown {name} {shown_value(value)}{hint}; choose from {', '.join(map(str, _choices(tp)))}")
        raise ConfigError(f"{name} has the wrong type: {shown_value(value)} (expected {describe_type(tp)})")
    if kind == "float" and not _finite(value):
        raise ConfigError(f"{name} must be a finite number, got {shown_value(value)}")
    if kind == "str" and ("\0" in value or len(value) > 4096):
        raise ConfigError(f"{name} is not a usable text value")
    control = control_character(value) if kind == "str" else None
    if control is not None:
        raise ConfigError(f"{name} {shown_value(value)} holds {control}: no path or name takes one")
    if kind == "str" and not _encodable(value):
        raise ConfigError(f"{name} {shown_value(value)} holds a lone surrogate: no path or name takes one")
    if kind == "str" and optional and not value:  # (a path or name that may be off: "" would be read as off, or as ".")
        raise ConfigError(f"{name} is empty; leave it out (or give none) for its default")


def _encodable(text: str) -> bool:
    """Whether ``text`` can name a file: a lone surrogate of a JSON escape (``"\\ud800"``) cannot, and
    opening a path that holds one raised UnicodeEncodeError (the command line's undecodable bytes,
    ``"\\udc80"`` to ``"\\udcff"``, encode back to those bytes)."""
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return False
    return True


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _check_range(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise ConfigError(f"{name} must be a non-empty list")
    if isinstance(value, list) and len(value) > MAX_LIST:
        raise ConfigError(f"{name} may hold at most {MAX_LIST} values, got {len(value)}")
    for v in items:
        if meta.get("min") is not None and v < meta["min"]:
            raise ConfigError(f"{name} must be >= {meta['min']}, got {shown_value(value)}")
        if meta.get("max") is not None and v > meta["max"]:
            raise ConfigError(f"{name} must be <= {meta['max']}, got {shown_value(value)}")
        if meta.get("gt") is not None and not v > meta["gt"]:
            raise ConfigError(f"{name} must be > {meta['gt']}, got {shown_value(value)}")
        if meta.get("lt") is not None and not v < meta["lt"]:
            raise ConfigError(f"{name} must be < {meta['lt']}, got {shown_value(value)}")


def check(obj: Any, plain: bool = False) -> None:
    """Type- and range-check every field of a settings dataclass instance (``plain``: each value as
    ``from_dict`` takes it from Python, NumPy numbers as Python's and tuples as lists)."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = _plain(getattr(obj, f.name)) if plain else getattr(obj, f.name)
        _check_value(f.name, value, hints[f.name])
        if value is not None and not isinstance(value, (bool, str)):
            _check_range(f.name, value, f.metadata)


def from_dict(cls: type[_T], values: dict, source: str) -> _T:
    """An instance of settings dataclass ``cls`` from ``values``; unknown keys are rejected
    with the closest known name."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a table of keys, got {type(values).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ConfigError(f"{source}: {unknown_keys(unknown, known)}")
    plain = {k: _plain(v) for k, v in values.items()}
    hints = _hints(cls)
    for k, v in plain.items():  # (before the class's own __post_init__ reads them)
        _check_value(k, v, hints[k])
    obj = cls(**plain)
    check(obj)
    return obj


def _plain(value: Any) -> Any:
    """A value given from Python as the plain value a config file gives: a NumPy scalar
    (``np.int64(3)``, ``np.float32(0.1)``) as the Python number it holds, a tuple of them as a
    list; anything else as it is, for ``check`` to judge."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


MAX_NAMED = 5  # the unknown keys a refusal names (the others: counted)


def unknown_keys(unknown: list, known: list) -> str:
    """The words of a refusal of ``unknown`` keys: the first few, each cut to a line's part (a
    crafted file's key may be megabytes long) with the known name it likely means; the rest counted."""
    hints = [f"{shown_value(k)}{did_you_mean(k, known)}" for k in unknown[:MAX_NAMED]]
    more = f" and {len(unknown) - MAX_NAMED} more" if len(unknown) > MAX_NAMED else ""
    return f"unknown key(s) {', '.join(hints)}{more}"


def unused_keys(obj: Any) -> list[str]:
    """The settings of a settings dataclass that do not apply to its current values: those whose
    help begins "CHOICE KEY:" (as "gaussian likelihood: the floor of the scale") where KEY is a
    choice-valued setting of the same object that holds another value than CHOICE."""
    hints = _hints(type(obj))
    out = []
    for f in dataclasses.fields(obj):
        head = str(f.metadata.get("help", "")).split(":", 1)[0].split(" ")
        if len(head) != 2:
            continue
        choice, key = head[0], head[1].replace("-", "_")
        if key in hints and key != f.name and (choices := choices_of(hints[key])) and choice in choices:
            if getattr(obj, key) != choice:
                out.append(f.name)
    return out
