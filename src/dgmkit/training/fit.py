"""The one fit path: gradient steps (the Trainer), a closed-form fit or EM iterations, each
writing its run folder through one ``RunWriter`` and returning the same ``FitResult``.

Closed-form and EM fits score the exact log-likelihood (``log_px``) of the training and
validation splits after each iteration, so their metrics and checkpoints read as a trained
run's do.
"""

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch

from dgmkit.data import DataTransform, Split
from dgmkit.errors import TrainingError
from dgmkit.evaluation.diagnostics import diagnose
from dgmkit.evaluation.metrics import posterior_statistics
from dgmkit.models import Autoencoder, ClosedFormFit, EMFit, ExactLikelihoodModel, LatentVariableModel
from dgmkit.objectives import Objective
from dgmkit.training.run_writer import RunWriter
from dgmkit.training.trainer import VALID_SEED, Trainer

__all__ = ["FitResult", "fit_closed_form", "fit_em", "latent_diagnostics", "EXACT_SCORE"]

log = logging.getLogger(__name__)
EXACT_SCORE = "log_px"


@dataclass
class FitResult:
    """How a fit ended: epochs (or iterations) done, the best validation score and its epoch,
    what the score is (``score``: a metrics key suffix; ``label``: for people); ``how`` a fit
    without gradient steps was found, for people ("in closed form", "by EM ...")."""

    epoch: int
    best_valid: float
    best_epoch: int
    score: str
    label: str
    epochs: int
    how: str = ""


DIAGNOSIS_N = 1000  # validation datapoints of the per-epoch collapse diagnostics (a seeded random subset)
DIAGNOSIS_SAMPLES = 4
DIAGNOSIS_HOLES = 500
# what the aggregate terms may cost an epoch (``evaluation.diagnostics``): an IAF posterior's are
# left out (32 latents on 180 digits took over five minutes an epoch on a CPU); ``dgm diagnose``
# computes them on a subset that fits its own budget
DIAGNOSIS_PAIR_PASSES = 1 << 20


def latent_diagnostics(model: LatentVariableModel | Autoencoder, x: torch.Tensor) -> dict:
    """Per-epoch latent diagnostics: KL per dimension (where the prior factorizes) and active
    units over all of x; for models with a prior, per layer the KL, active units and I(x; z), and
    the top layer's aggregate-posterior KL and hole fraction (``evaluation.diagnostics``) on a
    seeded random subset of ``DIAGNOSIS_N`` datapoints with ``DIAGNOSIS_SAMPLES`` posterior draws."""
    stats = posterior_statistics(model, x)
    out = {"active_units": stats["active_units"]}
    if stats["kl_per_dim"] is not None:
        out["kl_per_dim"] = [round(v, 5) for v in stats["kl_per_dim"]]
    if isinstance(model, LatentVariableModel) and len(x) >= 2:
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(VALID_SEED))[:DIAGNOSIS_N]
        d = diagnose(
            model,
            x[pick.to(x.device)],
            samples=DIAGNOSIS_SAMPLES,
            holes=DIAGNOSIS_HOLES,
            seed=0,
            bracket=False,
            pair_passes=DIAGNOSIS_PAIR_PASSES,
        )
        out.update(d.metrics())
    return out


def trainer_result(trainer: Trainer, objective: Objective) -> FitResult:
    return FitResult(trainer.epoch, trainer.best_valid, trainer.best_epoch, objective.score, objective.label, trainer.epochs)


def _splits(train: Split, valid: Split | None, transform: DataTransform, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = transform(train.x, torch.Generator().manual_seed(seed))
    v = transform.held_out((valid or train).x)
    return x, v


@torch.no_grad()
def _exact_scores(model: ExactLikelihoodModel, x: torch.Tensor, v: torch.Tensor) -> dict:
    scores = {
        f"train_{EXACT_SCORE}": model.log_prob(x).mean().item(),
        f"valid_{EXACT_SCORE}": model.log_prob(v).mean().item(),
    }
    if not all(math.isfinite(s) for s in scores.values()):
        raise TrainingError(f"the fit gives a non-finite log-likelihood: {scores}")
    return scores


def fit_closed_form(
    model: ClosedFormFit,
    train: Split,
    valid: Split | None,
    transform: DataTransform,
    writer: RunWriter | None,
    seed: int = 0,
) -> FitResult:
    """Maximum likelihood in closed form (of incomplete data, PPCA's EM): one fit, written as
    epoch 1, with what the fit reports of itself (``ClosedFormFit.fit_closed_form``)."""
    t0 = time.perf_counter()
    x, v = _splits(train, valid, transform, seed)
    report = model.fit_closed_form(x)
    exact = cast(ExactLikelihoodModel, model)  # (PPCA: an exact model too)
    metrics = {"epoch": 1, **_exact_scores(exact, x, v), **report, "time_s": time.perf_counter() - t0}
    if writer is not None:
        writer.metrics(metrics)
        for name in ("checkpoint.safetensors", "best.safetensors"):
            writer.checkpoint(exact, name, counters={"epoch": 1})
    how = "in closed form"
    if "em_iterations" in report:
        unconverged = "" if report["em_converged"] else ", unconverged"
        how = f"by EM on the observed entries ({report['em_iterations']} iterations{unconverged})"
    return FitResult(1, metrics[f"valid_{EXACT_SCORE}"], 1, EXACT_SCORE, "log p(x)", 1, how)


def fit_em(
    model: EMFit,
    train: Split,
    valid: Split | None,
    transform: DataTransform,
    writer: RunWriter | None,
    iterations: int,
    seed: int = 0,
    callbacks: Sequence[Callable[[FitResult, dict], None]] = (),
) -> FitResult:
    """Expectation-maximization with exact E-steps: ``iterations`` steps on the training split;
    each step's metrics line holds the log-likelihoods after it (and the training one before)."""
    x, v = _splits(train, valid, transform, seed)
    result = FitResult(0, -math.inf, -1, EXACT_SCORE, "log p(x)", iterations)
    exact = cast(ExactLikelihoodModel, model)  # (the log-linear LVM: an exact model too)
    for it in range(1, iterations + 1):
        t0 = time.perf_counter()
        before = model.em_step(x)
        metrics = {"epoch": it, **_exact_scores(exact, x, v), f"train_{EXACT_SCORE}_before_step": before}
        metrics["time_s"] = time.perf_counter() - t0
        result.epoch = it
        improved = metrics[f"valid_{EXACT_SCORE}"] > result.best_valid
        if improved:
            result.best_valid, result.best_epoch = metrics[f"valid_{EXACT_SCORE}"], it
        if writer is not None:
            writer.metrics(metrics)
            writer.checkpoint(exact, counters={"epoch": it})
            if improved:
                writer.checkpoint(exact, "best.safetensors", counters={"epoch": it})
        log.info(json.dumps(metrics))
        for cb in callbacks:
            cb(result, metrics)
    return result
