"""Named numbers that a model adds to its evaluation, beyond the ones every model has.

Every evaluation reports the same common fields (the kind of estimate, the NLL and its standard
error, bits/dim, the ELBO split where there is one, n, k, time). What only some models have (a
WAE's MMD between its codes and its prior, a diffusion model's prior and diffusion KL, a
classifier's accuracy) each model declares through ``GenerativeModel.evaluation_terms`` as
``Term`` objects; ``dgm eval``, eval.json, evals.json and the report page render them without
knowing which model they came from.
"""

import math
from dataclasses import dataclass

import torch

from dgmkit.errors import EvaluationError

__all__ = ["Term", "TERM_LEVELS", "refuse_non_finite"]

TERM_LEVELS = (0, 1, 2)  # 0: a row of its own; 1: beside the ELBO's reconstruction and KL; 2: a part of the KL


def refuse_non_finite(label: str, values: torch.Tensor, bad: torch.Tensor | None = None) -> None:
    """Raise an ``EvaluationError`` that names ``label`` where any of the per-datapoint ``values``
    is NaN or infinite (or, given ``bad``, where that mask is set): no number is reported from
    them, as one NaN would make every mean and score of the evaluation NaN."""
    bad = ~torch.isfinite(values) if bad is None else bad
    if bool(bad.any()):
        raise EvaluationError(
            f"the model gives a non-finite {label} ({values[bad][0].item()}) to {int(bad.sum())} of {len(values)} "
            "datapoints; no result is reported"
        )


@dataclass
class Term:
    """One number of an evaluation, per datapoint.

    ``values``: shape (N,), one value per datapoint in ``unit`` (NaN where the value is not
    defined for that datapoint, e.g. a per-batch statistic of a batch too small to have one; left
    out of the mean). ``label``: the row's name; ``note``: what the number is, shown beside it;
    ``undefined``: what is shown when no datapoint has a value; ``partial``: NaN values mean "not
    defined here" (else a NaN is an error, as an infinity always is). ``level``: where it is shown
    (see ``TERM_LEVELS``); ``digits``: decimals shown."""

    label: str
    values: torch.Tensor
    unit: str = "nats"
    note: str = ""
    undefined: str = "n/a"
    partial: bool = False
    level: int = 0
    digits: int = 3

    def __post_init__(self) -> None:
        if self.level not in TERM_LEVELS:
            raise ValueError(f"Term {self.label!r}: level must be one of {TERM_LEVELS}, got {self.level}")
        if not 0 <= self.digits <= 8:
            raise ValueError(f"Term {self.label!r}: digits must be in 0..8, got {self.digits}")
        if self.values.dim() != 1:
            shape = tuple(self.values.shape)
            raise ValueError(f"Term {self.label!r}: values must be one per datapoint, shape (N,), got {shape}")

    def mean(self) -> float | None:
        """The mean over the datapoints that have a value (None if none has). A non-finite value
        (other than a ``partial`` term's NaN) is an error that names the term."""
        v = self.values.double()
        refuse_non_finite(self.label, v, torch.isinf(v) if self.partial else None)
        defined = v[~torch.isnan(v)]
        return None if len(defined) == 0 else defined.mean().item()

    def record(self, name: str) -> dict:
        """The term as eval.json holds it under ``name``: its mean and how to show it."""
        value = self.mean()
        return {
            "name": name,
            "label": self.label,
            "value": value,
            "unit": self.unit,
            "note": self.note if value is not None else self.undefined,
            "level": self.level,
            "digits": self.digits,
        }


def format_term(record: dict) -> tuple[str, str]:
    """(row label, shown value) of a term record (``Term.record``), indented by its level."""
    label = "  " * int(record.get("level") or 0) + str(record.get("label", "?"))
    value = record.get("value")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        # (the default reason is "n/a" itself, and an eval.json of before 2026-12-02 kept an accuracy's as "n/a: ...":
        # each was shown "n/a: n/a...")
        reason = str(record.get("note") or "").removeprefix("n/a: ")
        return label, "n/a" if reason in ("", "n/a") else f"n/a: {reason}"
    unit = f" {record['unit']}" if record.get("unit") else ""
    note = f"  ({record['note']})" if record.get("note") else ""
    digits = int(record.get("digits", 3))
    shown = f"{value:.{digits}f}" if abs(value) < 1e15 else f"{value:.{max(digits, 3)}e}"  # (1e308 fixed: 309 digits)
    return label, f"{shown}{unit}{note}"
