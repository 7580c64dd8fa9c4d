"""Every family's defaults, and each choice of each of its choice-valued keys: the configs that
tests run over every family (round trips, gradients reaching every parameter)."""

import typing

from dgmkit.families import FAMILIES
from dgmkit.settings import choices_of


def family_variants() -> list[tuple[str, dict]]:
    out = []
    for name, cls in FAMILIES.items():
        out.append((name, {}))
        for key, tp in typing.get_type_hints(cls).items():
            if key in cls.unused_settings:  # refused unless left at its default
                continue
            for choice in choices_of(tp) or ():
                if choice is not None and choice != getattr(cls(), key):
                    out.append((name, {key: choice}))
    return out


def setting_pairs() -> list[tuple[str, dict]]:
    """Each family's pairs of two of its variants on different keys (every choice of one
    choice-valued key with every choice of another): the combinations whose conflicts a family's
    ``validate`` must refuse by name rather than leave to fail in a step."""
    out = []
    singles = [(name, change) for name, change in family_variants() if change]
    for i, (name, a) in enumerate(singles):
        for other, b in singles[i + 1 :]:
            if other == name and a.keys().isdisjoint(b):
                out.append((name, {**a, **b}))
    return out


def variant_id(v: object) -> str:
    return v if isinstance(v, str) else "-".join(map(str, v.values()))
