"""Every preset in configs/ parses, passes validation and builds its model and objective."""

from pathlib import Path

import pytest
import torch

from dgmkit.config import RunConfig, build_model, build_objective, load_config_file

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


def test_there_are_presets():
    assert len(PRESETS) >= 6


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_builds(path):
    cfg = RunConfig.from_dict(load_config_file(path), source=str(path))
    cfg.check_inert(str(path))  # dgm train --config refuses a preset that sets what its choices do not read
    if path.stem.endswith("-prior"):  # the second stage of a VQ-VAE: its data come from --codes-of
        assert cfg.family == "arm" and cfg.model.likelihood == "categorical"
        model = build_model(cfg, (1, 7, 7), 512)
        terms = build_objective(cfg)(model, torch.randint(0, 512, (2, 1, 7, 7)))
        assert terms.loss.shape == (2,) and torch.isfinite(terms.loss).all()
        return
    if path.stem.startswith("m1m2-"):  # M2 on the latents of an M1 run (--codes-of): 50-D continuous vectors
        assert cfg.family == "m2" and cfg.model.likelihood == "gaussian" and cfg.data.labels
        model = build_model(cfg, (1, 1, 50), None)
        y = torch.tensor([3, -1])  # a labelled row and a hidden one
        terms = build_objective(cfg)(model, torch.randn(2, 1, 1, 50), y=y)
        assert terms.loss.shape == (2,) and torch.isfinite(terms.loss).all()
        return
    if cfg.data.dataset == "breast-cancer":  # a table with half its entries missing (MIWAE)
        assert cfg.data.missing_rate == 0.5 and cfg.model.objective == "miwae"
        model = build_model(cfg, (1, 1, 30), None)
        x = torch.randn(2, 1, 1, 30).masked_fill(torch.rand(2, 1, 1, 30) < 0.5, float("nan"))
        terms = build_objective(cfg)(model, x)
        assert terms.loss.shape == (2,) and torch.isfinite(terms.loss).all()
        return
    assert cfg.data.dataset in ("binarized-mnist", "mnist", "fashion-mnist")
    levels = 2 if cfg.data.dataset == "binarized-mnist" else 256
    model = build_model(cfg, (1, 28, 28), levels)
    if cfg.family == "flow":  # dequantized 8-bit images in [0, 1)
        x = torch.randint(0, 256, (2, 1, 28, 28)).float().add(torch.rand(2, 1, 28, 28)).div(256)
    else:
        x = (torch.rand(2, 1, 28, 28) < 0.2).float()
    objective = build_objective(cfg)
    terms = objective(model, x, y=torch.tensor([3, -1])) if objective.takes_labels else objective(model, x)
    assert terms.loss.shape == (2,) and torch.isfinite(terms.loss).all()


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_states_its_budget(path):
    """The leading comment says how long the preset's run takes and on what (or that it was not
    timed): a paragraph that starts with "Budget:"."""
    lines = path.read_text().splitlines()
    comment = lines[: next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))]
    budget = [line for line in comment if line.startswith("# Budget:")]
    assert len(budget) == 1, f"{path.name}: the leading comment needs one line starting '# Budget:'"
