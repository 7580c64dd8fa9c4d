"""Every preset in configs/ parses, passes validation and builds its model and objective."""

from pathlib import Path

import pytest
import torch

from dgmkit.config import RunConfig, build_model, build_objective, load_config_file
from dgmkit.errors import ConfigError

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


def test_there_are_presets():
    assert len(PRESETS) >= 6


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_builds(path):
    cfg = RunConfig.from_dict(load_config_file(path), source=str(path))
    if path.stem.startswith("m1m2-"):  # its run names its M1 by --codes-of, whose latents latent_draws shapes
        cfg = cfg.replace(codes_of="runs/m1")
    cfg.check_inert(str(path))  # dgm train --config refuses a preset that sets what its choices do not read
    if path.stem.endswith("-prior"):  # the second stage of a VQ-VAE: its data come from --codes-of
        assert cfg.family == "arm" and cfg.model.likelihood == "categorical"
        cfg.check_inert(str(path), event_shape=(1, 7, 7), num_levels=512)  # (what its data leave unread: checked once known)
        model = build_model(cfg, (1, 7, 7), 512)
        terms = build_objective(cfg)(model, torch.randint(0, 512, (2, 1, 7, 7)))
        assert terms.loss.shape == (2,) and torch.isfinite(terms.loss).all()
        return
    if path.stem.startswith("m1m2-"):  # M2 on the latents of an M1 run (--codes-of): 50-D continuous vectors
        assert cfg.family == "m2" and cfg.model.likelihood == "gaussian" and cfg.data.labels
        cfg.check_inert(str(path), event_shape=(1, 1, 50))
        model = build_model(cfg, (1, 1, 50), None)
        y = torch.tensor([3, -1])  # a labelled row and a hidden one
        terms = build_objective(cfg)(model, torch.randn(2, 1, 1, 50), y=y)
        assert terms.loss.shape == (2,) and torch.isfinite(terms.loss).all()
        return
    if cfg.data.dataset == "breast-cancer":  # a table with half its entries missing (MIWAE)
        assert cfg.data.missing_rate == 0.5 and cfg.model.objective == "miwae"
        cfg.check_inert(str(path), event_shape=(1, 1, 30))
        model = build_model(cfg, (1, 1, 30), None)
        x = torch.randn(2, 1, 1, 30).masked_fill(torch.rand(2, 1, 1, 30) < 0.5, float("nan"))
        terms = build_objective(cfg)(model, x)
        assert terms.loss.shape == (2,) and torch.isfinite(terms.loss).all()
        return
    assert cfg.data.dataset in ("binarized-mnist", "mnist", "fashion-mnist")
    levels = 2 if cfg.data.dataset == "binarized-mnist" else 256
    cfg.check_inert(str(path), event_shape=(1, 28, 28), num_levels=levels)  # (an image flow reads hidden's first entry only)
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


def test_a_preset_for_a_run_on_its_own_data_given_codes_of_names_the_file(tmp_path, capsys):
    """--codes-of with configs/m2-mnist-100.toml (M2 on the pixels) said "leave out dataset, ...",
    which no flag can do: the file and its keys are named."""
    from dgmkit.cli.main import main

    preset = Path(__file__).parents[1] / "configs" / "m2-mnist-100.toml"
    argv = ["train", "--config", str(preset), "--codes-of", str(tmp_path / "m1"), "--out", str(tmp_path / "m2")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"--codes-of takes the data of another run, and {preset} names data of the run's own (dataset" in err
    assert f"remove them from {preset}" in err and not (tmp_path / "m2").exists()


def test_a_wrong_value_in_a_config_file_is_named_with_the_file_even_where_a_flag_overrides_it(tmp_path, capsys):
    from dgmkit.cli.main import main

    for text, flags, needle in (
        ("hidden = 64\n", ["--hidden", "16"], "hidden has the wrong type: 64 (expected list[int])"),
        ("epochs = true\n", ["--epochs", "1"], "epochs has the wrong type: True (expected int)"),
        ("hiden = [3]\n", [], "unknown key(s) 'hiden' (did you mean 'hidden'?)"),
    ):
        preset = tmp_path / "c.toml"
        preset.write_text(text)
        assert main(["train", "--config", str(preset), *flags, "--out", str(tmp_path / "r")]) == 1
        assert f"dgm: error: {preset}: {needle}" in capsys.readouterr().err


def test_a_preset_is_named_by_its_bare_name_from_the_installed_package(tmp_path, monkeypatch, capsys):
    """configs/ was reachable from a checkout only: pip-installed, no preset could be named."""
    from dgmkit.cli.main import main
    from dgmkit.cli.train import family_from_argv
    from dgmkit.config.schema import PRESETS as SHIPPED
    from dgmkit.config.schema import preset_names

    assert preset_names() == sorted(p.stem for p in PRESETS) and SHIPPED.parent.name == "dgmkit"  # (configs/: a link)
    monkeypatch.chdir(tmp_path)  # outside the checkout
    assert load_config_file("vqvae-bmnist") == load_config_file(PRESETS[0].parent / "vqvae-bmnist.toml")
    assert family_from_argv(["train", "--config", "vqvae-bmnist"]) == "vqvae"  # (its flags are offered)
    assert main(["train", "--config", "vampprior-paper-standrd", "--out", "r"]) == 1
    assert "nor a preset of that name (did you mean 'vampprior-paper-standard'?)" in capsys.readouterr().err
    (tmp_path / "vqvae-bmnist").mkdir()  # (a run folder named as the preset: no file, the preset is read)
    assert load_config_file("vqvae-bmnist") == load_config_file(PRESETS[0].parent / "vqvae-bmnist.toml")
    with pytest.raises(ConfigError, match=r"m1-mnist.toml: No such file or directory \(dgmkit's preset of that name is"):
        load_config_file("m1-mnist.toml")
    with pytest.raises(ConfigError, match=r"\(dgmkit's preset of that name is --config m1-mnist\)"):  # (any case of .toml)
        load_config_file("m1-mnist.TOML")
    (tmp_path / "sub").mkdir()  # (a folder's file missing: no hint at a preset)
    with pytest.raises(ConfigError, match=r"No such file or directory$"):
        load_config_file("sub/m1-mnist.toml")
    with pytest.raises(ConfigError, match="cannot read config file sub: not a regular file"):  # (a folder, no preset)
        load_config_file("sub")
    (tmp_path / "m1-mnist").write_text('model = "ppca"\n')  # a file of that name here is the file, as always
    assert load_config_file("m1-mnist") == {"model": "ppca"}


VAMPPRIOR_PAPER = [p for p in PRESETS if "arXiv 1705.07120" in p.read_text()]


@pytest.mark.parametrize("path", VAMPPRIOR_PAPER, ids=lambda p: p.stem)
def test_a_preset_at_the_vampprior_reference_protocol_sets_its_optimiser_or_says_it_does_not(path):
    """Tomczak & Welling's reference code (jmtomczak/vae_vampprior, experiment.py and every model)
    trains each model with AdamNormGrad, He's initialisation of every dense layer and seed 14: a
    preset at its protocol sets them, or its comment names the difference (the convHVAE and
    PixelHVAE rows had plain Adam and PyTorch's initialisation, the PixelHVAE seed 15, unsaid)."""
    cfg = RunConfig.from_dict(load_config_file(path), source=str(path))
    assert cfg.optim.seed == 14
    if not (cfg.optim.normalise_gradients and cfg.model.init == "he"):
        assert "# Differences from the reference code: plain Adam" in path.read_text()
        assert "AdamNormGrad and he_init" in path.read_text()


def test_the_pixelcnn_preset_states_the_window_its_pixels_see():
    """Each output of arm-bmnist-pixelcnn reads, by the gradient of one output, the 8 rows above it
    at 15 pixels wide each (a rectangle; its comment said "widening upwards") and the 8 pixels to its
    left in its own row."""
    path = next(p for p in PRESETS if p.stem == "arm-bmnist-pixelcnn")
    cfg = RunConfig.from_dict(load_config_file(path), source=str(path))
    model = build_model(cfg, (1, 28, 28), 2)
    x = torch.rand(1, 1, 28, 28, requires_grad=True)
    model.params(x).reshape(28, 28)[20, 14].backward()
    seen = x.grad[0, 0] != 0
    widths = {r: int(seen[r].sum()) for r in range(28) if seen[r].any()}
    assert widths == {**{r: 15 for r in range(12, 20)}, 20: 8}
    assert "the 8 rows above\n# it, 15 pixels wide (7 each side) in every one of them" in path.read_text()
