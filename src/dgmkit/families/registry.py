"""The family registry: a name -> FamilyConfig subclass map, filled by ``@register_family``."""

import difflib

from dgmkit.errors import ConfigError
from dgmkit.families.base import FIT_PATHS, FamilyConfig

__all__ = ["FAMILIES", "register_family", "get_family"]

FAMILIES: dict[str, type[FamilyConfig]] = {}


def register_family(cls: type[FamilyConfig]) -> type[FamilyConfig]:
    """Class decorator: make ``cls`` available as ``--model cls.name``."""
    if cls.name in FAMILIES and FAMILIES[cls.name] is not cls:
        raise ValueError(f"a family named {cls.name!r} is registered already")
    if cls.fit not in FIT_PATHS:
        raise ValueError(f"{cls.__name__}.fit must be one of {FIT_PATHS}, got {cls.fit!r}")
    FAMILIES[cls.name] = cls
    return cls


def get_family(name: object) -> type[FamilyConfig]:
    if not isinstance(name, str):
        raise ConfigError(f"the model must be named by a string, got {type(name).__name__} {str(name)[:40]}")
    if name not in FAMILIES:
        close = difflib.get_close_matches(str(name), list(FAMILIES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint}; choose from {', '.join(FAMILIES)}")
    return FAMILIES[name]
