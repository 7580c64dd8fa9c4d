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


def test_a_model_whose_codes_overflow_is_refused_in_one_line(sprite_run, tmp_path, capsys):
    """dgm disentangle ended in an internal error (a ValueError of the MIG) on a model with finite,
    huge weights; as every command, it refuses such a model in one line and writes nothing."""
    import shutil

    from safetensors import safe_open

    from run_records import crafted_checkpoint

    huge = tmp_path / "huge"
    shutil.copytree(sprite_run, huge, ignore=shutil.ignore_patterns("disentangle.json"))
    for name in ("best.safetensors", "checkpoint.safetensors"):
        with safe_open(str(huge / name), "pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        tensors = {k: t * 1e19 if k.startswith("model/") and t.dim() >= 2 else t for k, t in tensors.items()}
        (huge / name).write_bytes(crafted_checkpoint(tensors, meta))
    capsys.readouterr()
    assert main(["disentangle", str(huge), "--votes", "5", "--batch", "4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dgm: error:") and "non-finite posterior means" in err and len(err.splitlines()) == 1
    assert not (huge / "disentangle.json").exists()


def test_traverse_sweeps_the_code_dimensions_the_decoder_reads(tmp_path, capsys):
    """A hierarchical VAE whose decoder sees z_1 alone: rows of its top layer's dimensions were
    drawn unchanged; only z_1's are swept, and the line says so."""
    import torch

    from dgmkit.api import load

    out = tmp_path / "hv"
    argv = ["--model", "hvae", "--posterior", "bottom-up", "--latent-sizes", "4", "6", "--epochs", "1", "--quiet"]
    assert main(["train", "--dataset", "digits", *argv, "--out", str(out)]) == 0
    model = load(out).model
    assert model.decoded_dims == 4
    z = torch.zeros(2, 10)
    z[1, 7] = 3.0  # a top-layer dimension: p(x|z) unchanged
    means = model.likelihood(z).mean
    assert torch.equal(means[0], means[1])
    z[1, 2] = 3.0  # one of z_1's: changed
    means = model.likelihood(z).mean
    assert not torch.equal(means[0], means[1])
    capsys.readouterr()
    assert main(["traverse", str(out), "--out", str(tmp_path / "t.png"), "--dims", "10", "--steps", "3"]) == 0
    said = capsys.readouterr().out
    assert "a traversal of 4 code dimensions" in said and "reads only the first 4 of the 10 code dimensions" in said
    assert "each decoded to the means of p(x|z)" in said


def test_the_note_on_binning_bias_matches_the_plug_in_mi_of_noise():
    """Codes independent of a factor have I = 0; their plug-in MI is about (bins - 1)(values - 1) / 2N
    (the bias the note states), and the note appears where that is a tenth of the factor's entropy."""
    import torch

    from dgmkit.cli.disentangle import format_disentanglement
    from dgmkit.evaluation.disentanglement import mutual_information_gap

    g = torch.Generator().manual_seed(0)
    n, values = 2000, 4
    codes, factors = torch.randn(n, 8, generator=g), torch.randint(values, (n, 1), generator=g)
    for bins, noted in ((20, False), (200, True)):
        m = mutual_information_gap(codes, factors, bins=bins)
        bias = (bins - 1) * (values - 1) / (2 * n)
        assert 0.6 < float(m.mutual_information.mean()) / bias < 1.4
        r = {"mig": m.mig, "mig_estimator": m.estimator, "bins": bins, "n": n, "split": "test", "factor_vae": None}
        r["factors"] = [{"name": "shape", "values": values, "entropy": float(m.entropy[0]), "best_dim": 0, "gap": 0.0}]
        text = format_disentanglement(r)
        assert ("biased upward by about" in text) is noted, text
        if noted:
            assert f"about {bias:.3f} nats" in text
    del r["bins"]  # a record from before the bins were kept: nothing said
    assert "biased upward" not in format_disentanglement(r)


def test_one_vote_of_the_factor_vae_metric_is_said_in_the_singular():
    from dgmkit.cli.disentangle import format_disentanglement

    fv = {"accuracy": 1.0, "train_accuracy": 1.0, "votes": 1, "batch": 2, "active": 3}
    r = {"mig": 0.0, "mig_estimator": "", "factors": [], "factor_vae": fv, "latent_dim": 3, "split": "test", "n": 9}
    assert "majority vote, 1 vote of 2 images to fit" in format_disentanglement(r)
    assert "majority vote, 5 votes of 2 images" in format_disentanglement({**r, "factor_vae": {**fv, "votes": 5}})


def test_a_factor_vae_metric_without_active_dimensions_says_it_drew_no_votes(sprite_run, monkeypatch, capsys):
    """Codes of no active dimension (a collapsed VAE) get the metric's chance level 1/K without a
    vote: it said "majority vote, 50 votes of 16 images to fit ...; fit accuracy 0.2000", and
    disentangle.json recorded 50 votes and a fit accuracy, none of which were drawn or fitted."""
    import dgmkit.evaluation.disentanglement as disentanglement

    monkeypatch.setattr(disentanglement, "ACTIVE_VARIANCE", 1e30)  # (every dimension inactive)
    assert main(["disentangle", str(sprite_run), "--votes", "50", "--batch", "16"]) == 0
    text = capsys.readouterr().out
    assert "FactorVAE metric 0.2000  (chance, 1/5: none of the 6 code dimensions is active" in text, text
    assert "no votes were drawn" in text and "majority vote" not in text and "fit accuracy" not in text
    fv = json.loads((sprite_run / "disentangle.json").read_text())["factor_vae"]
    assert fv["active"] == 0 and fv["votes"] == 0 and fv["train_accuracy"] is None and fv["accuracy"] == 0.2


def test_the_codes_of_incomplete_images_are_said_to_be_of_incomplete_images(tmp_path, capsys):
    """A run trained with --missing-rate: MIG is of the codes of the split's images, their missing
    entries encoded as 0 (as dgm latents, dgm traverse and dgm cluster say), and the FactorVAE
    metric's images are rendered whole; dgm disentangle said neither."""
    run = tmp_path / "miss"
    argv = ["train", "--dataset", "sprites", "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--quiet"]
    assert main([*argv, "--missing-rate", "0.3", "--objective", "miwae", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["disentangle", str(run), "--votes", "5", "--batch", "4"]) == 0
    text = capsys.readouterr().out
    r = json.loads((run / "disentangle.json").read_text())
    assert r["missing_entries"] > 0
    said = f"data: test split, 4608 images ({r['missing_entries']} missing entries in the split's images, which the "
    assert said + "encoder sees as 0; the FactorVAE metric's images, drawn whole, have none)" in text, text


def test_the_factor_vae_metric_says_its_images_are_drawn_at_random_and_with_which_seed():
    """The metric's votes are images rendered for factor values drawn with --seed (another seed,
    another score); the line said neither, as if they were the split's."""
    from dgmkit.cli.disentangle import format_disentanglement

    fv = {"accuracy": 0.5, "train_accuracy": 0.5, "votes": 5, "batch": 4, "active": 3}
    r = {"mig": 0.0, "mig_estimator": "", "factors": [], "factor_vae": fv, "latent_dim": 3, "split": "test", "n": 9}
    said = "5 votes of 4 images to fit and as many to score, rendered for random factor values drawn with seed 7; 3 active"
    assert said in format_disentanglement({**r, "seed": 7})
    assert "rendered for random factor values; 3 active" in format_disentanglement(r)  # (an older record: no seed)


def test_a_result_file_made_meanwhile_is_kept_and_the_command_refuses(sprite_run, tmp_path, capsys, monkeypatch):
    """disentangle.json was checked before the work (minutes) and then replaced: a file another
    program made there meanwhile was lost. It is checked again under the results' lock, as
    cluster.json is (cli.common.write_own_result, which impute.json takes too)."""
    import shutil

    import dgmkit.cli.disentangle as command
    from dgmkit.cli.common import write_own_result
    from dgmkit.errors import DataError

    run = tmp_path / "run"
    shutil.copytree(sprite_run, run, ignore=shutil.ignore_patterns("disentangle.json"))
    shown = command.format_disentanglement

    def meanwhile(r):
        (run / "disentangle.json").write_text("my notes\n")
        return shown(r)

    monkeypatch.setattr(command, "format_disentanglement", meanwhile)
    assert main(["disentangle", str(run), "--votes", "5", "--batch", "4"]) == 1
    assert "not a disentangle.json of dgmkit" in capsys.readouterr().err
    assert (run / "disentangle.json").read_text() == "my notes\n"
    write_own_result(tmp_path / "r.json", "rmse", "again", {"rmse": 1.0})  # free, or one of dgmkit's: written
    write_own_result(tmp_path / "r.json", "rmse", "again", {"rmse": 2.0})
    assert json.loads((tmp_path / "r.json").read_text()) == {"rmse": 2.0}
    with pytest.raises(DataError, match="r.json is not a r.json of dgmkit; move it away to keep it"):
        write_own_result(tmp_path / "r.json", "mig", "again", {"mig": 0.5})
