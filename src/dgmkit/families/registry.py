"""The family registry: a name -> FamilyConfig subclass map, filled by ``@register_family``."""

from dgmkit.errors import ConfigError, did_you_mean, shown_value
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
        raise ConfigError(
            f"unknown model {shown_value(name)}{did_you_mean(name, FAMILIES)}; choose from {', '.join(FAMILIES)}"
        )
    return FAMILIES[name]
