"""Command-line flags derived from settings dataclasses: one flag per field, with its type,
choices and help from the field's declaration (``dgmkit.settings``)."""

import argparse
import dataclasses
import re
import typing

from dgmkit.errors import ConfigError, shown_value
from dgmkit.settings import choices_of, default_of, describe_type, field_kind

__all__ = ["add_settings_flags", "given_values", "flag_name"]

_NONE = ("none", "null", "off")


class _NoneGiven:
    """What an optional setting's flag holds when it was given as none: told apart from a flag left
    out (argparse's default, None), so that ``--grad-clip none`` overrides a config file's value."""

    def __repr__(self) -> str:
        return "none"


NONE_GIVEN = _NoneGiven()


class _ListOrNone(argparse.Action):
    """An optional list setting's flag: its values, or none alone (``--layer-hidden none``: a
    config file's or preset's list set back to the default)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: typing.Any,
        option_string: str | None = None,
    ) -> None:
        if NONE_GIVEN in values and len(values) > 1:
            raise argparse.ArgumentError(self, "none stands alone: give numbers, or none for the default")
        setattr(namespace, self.dest, NONE_GIVEN if NONE_GIVEN in values else values)


def flag_name(field: dataclasses.Field) -> str:
    return "--" + (field.metadata.get("flag") or field.name).replace("_", "-")


def _parser(kind: str, optional: bool, name: str):
    base = {"int": int, "float": float, "str": str, "choice": str, "list[int]": int}[kind]

    def parse(text: str):
        if optional and text.lower() in _NONE:
            return NONE_GIVEN
        try:
            return base(text)
        except ValueError:
            digits = re.fullmatch(r"\s*[+-]?(\d+)\s*", text) if base is int else None
            if digits:  # an integer of more digits than int() reads (4300): every setting's range ends far below
                raise argparse.ArgumentTypeError(
                    f"{name} takes int, got an integer of {len(digits[1])} digits, beyond its range"
                ) from None
            spaced = " ".join(v.strip() for v in text.split(",") if v.strip())
            hint = f" (values are separated by spaces: {spaced})" if kind == "list[int]" and "," in text else ""
            raise argparse.ArgumentTypeError(
                f"{name} takes {kind.replace('choice', 'a name')}, got {shown_value(text)}{hint if len(hint) < 100 else ''}"
            ) from None

    parse.__name__ = kind  # argparse names the type in its messages
    return parse


def add_settings_flags(group: argparse._ActionsContainer, cls: type, skip: typing.Collection[str] = ()) -> list[str]:
    """Add a flag for every field of settings dataclass ``cls`` but those in ``skip``; returns
    their dest names. Every default is None, so that ``given_values`` can tell what the user set."""
    hints = typing.get_type_hints(cls)
    dests = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind, optional = field_kind(hints[f.name])
        default = default_of(f)
        helptext = f"{f.metadata.get('help', '')} ({describe_type(hints[f.name])}; default {default})"
        kw: dict[str, typing.Any] = dict(dest=f.name, default=None, help=helptext.replace("%", "%%"))
        if kind == "bool":
            group.add_argument(flag_name(f), action=argparse.BooleanOptionalAction, **kw)
        elif kind == "list[int]":
            action = _ListOrNone if optional else "store"  # (an optional list: none alone sets it back to its default)
            group.add_argument(
                flag_name(f), nargs="+", type=_parser(kind, optional, f.name), metavar="N", action=action, **kw
            )
        else:
            choices = choices_of(hints[f.name])
            metavar = "{" + ",".join(map(str, choices)) + "}" if choices else f.name.upper()
            group.add_argument(flag_name(f), type=_parser(kind, optional, f.name), metavar=metavar, **kw)
        dests.append(f.name)
    return dests


def given_values(args: argparse.Namespace, dests: list[str]) -> dict:
    """The settings the user gave on the command line (one given as none: None)."""
    given = {d: getattr(args, d) for d in dests if getattr(args, d, None) is not None}
    return {d: None if v is NONE_GIVEN else v for d, v in given.items()}


def reject_foreign(args: argparse.Namespace, foreign: dict[str, list[str]], family: str) -> None:
    """Flags that belong to other families only: name the family they belong to."""
    for dest, owners in foreign.items():
        if getattr(args, "_foreign_" + dest, None) is not None:
            names = owners[0] if len(owners) == 1 else f"{', '.join(owners[:-1])} and {owners[-1]}"
            raise ConfigError(
                f"--{dest.replace('_', '-')} is a setting of the {names} model"
                f"{'s' if len(owners) > 1 else ''}, not of {family} (choose the model with --model)"
            )
