"""Every pair of two non-default choices of a family's settings: a config that ``validate``
accepts builds a model whose training step, importance-sampled estimate and samples run and are
finite; a conflict is refused by name when the config is made or the model built, never left to
fail inside a step (as the VampPrior with an IAF posterior once did: it built, then crashed at the
first step). A seeded eighth of the pairs runs by default, all with --run-slow."""

import dataclasses
import random

import pytest
import torch

from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import DataTransform
from dgmkit.errors import ConfigError, DataError
from dgmkit.evaluation import log_likelihoods
from dgmkit.families import FAMILIES
from family_variants import setting_pairs, variant_id

_PAIRS = setting_pairs()
_SHOWN = set(random.Random(0).sample(range(len(_PAIRS)), len(_PAIRS) // 8))  # the default run's pairs
PAIRS = [pytest.param(n, c, marks=[] if i in _SHOWN else [pytest.mark.slow]) for i, (n, c) in enumerate(_PAIRS)]


def _config(name: str, change: dict) -> RunConfig:
    small = {"hidden": [8]} if "hidden" in {f.name for f in dataclasses.fields(FAMILIES[name])} else {}
    return RunConfig.of(model=name, **small, **change)


def _built(name: str, change: dict):
    cfg = _config(name, change)
    return cfg, build_model(cfg, (1, 8, 8), 2)


@pytest.mark.parametrize("name, change", PAIRS, ids=variant_id)
def test_a_pair_of_settings_is_refused_by_name_or_trains_scores_and_samples(name, change):
    try:
        cfg, model = _built(name, change)
    except (ConfigError, DataError) as e:
        for key, value in change.items():  # a choice refused alone (data of another kind) says nothing of the pair
            try:
                _built(name, {key: value})
            except (ConfigError, DataError):
                pytest.skip(f"{key} = {value!r} is refused alone")
        words = {w for k, v in change.items() for w in (k, k.replace("_", "-"), str(v))}
        assert any(w in str(e) for w in words), f"a conflict of {change} refused without naming either: {e}"
        return
    torch.manual_seed(0)
    x = DataTransform("binary", 2)(torch.randint(0, 2, (6, 1, 8, 8), dtype=torch.uint8), torch.Generator())
    if cfg.model.fit == "gradient":
        objective = build_objective(cfg)
        objective.setup(100)
        if objective.takes_labels:
            objective.setup_labels(3)
            terms = objective(model, x, 0.5, y=torch.tensor([0, 1, -1, 2, -1, -1]))
        else:
            terms = objective(model, x, 0.5)
        assert torch.isfinite(terms.loss).all(), terms
        terms.loss.mean().backward()
    model.eval()
    with torch.no_grad():
        if model.estimate_kind != "reconstruction":
            assert torch.isfinite(log_likelihoods(model, x, iw_samples=3, batch_size=3)).all()
        if model.can_sample:
            shown = model.sample(2)[0]
            assert shown.shape == (2, 1, 8, 8) and torch.isfinite(shown.float()).all()
