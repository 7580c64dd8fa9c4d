"""dgm disentangle and dgm traverse end to end on the sprites: the numbers land in
disentangle.json, a model without codes or data without factors are refused in one line."""

import json

import pytest

from dgmkit.cli.main import main


@pytest.fixture(scope="module")
def sprite_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    argv = ["train", "--dataset", "sprites", "--latent-dim", "6", "--hidden", "64", "--epochs", "1", "--batch-size", "256"]
    assert main([*argv, "--objective", "tcvae", "--out", str(out), "--quiet"]) == 0
    return out


def test_disentangle_and_traverse(sprite_run, tmp_path, capsys):
    assert main(["disentangle", str(sprite_run), "--votes", "50", "--batch", "16"]) == 0
    text = capsys.readouterr().out
    assert "MIG" in text and "FactorVAE metric" in text
    r = json.loads((sprite_run / "disentangle.json").read_text())
    assert 0 <= r["mig"] <= 1 and 0 <= r["factor_vae"]["accuracy"] <= 1
    assert [f["name"] for f in r["factors"]] == ["shape", "scale", "orientation", "x", "y"]
    assert len(r["mutual_information"]) == 6 and r["n"] == 4608
    fig = tmp_path / "t.png"
    assert main(["traverse", str(sprite_run), "--out", str(fig), "--dims", "3", "--steps", "5"]) == 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refusals(tmp_path, capsys):
    digits = tmp_path / "d"
    assert main(["train", "--dataset", "digits", "--latent-dim", "2", "--epochs", "1", "--out", str(digits), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["disentangle", str(digits)]) == 1
    assert "no known generative factors" in capsys.readouterr().err
    arm = tmp_path / "a"
    assert main(["train", "--dataset", "digits-4x4", "--model", "arm", "--epochs", "1", "--out", str(arm), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["traverse", str(arm), "--out", str(tmp_path / "x.png")]) == 1
    assert "no continuous codes" in capsys.readouterr().err
