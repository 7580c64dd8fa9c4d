"""M1+M2 (Kingma et al. 2014, arXiv 1406.5298): a VAE's runs make their latents for other runs
(``derived_data = "latents"``), and M2 trains on them with ``--codes-of``: the latents are the
posterior means of the held-out-transformed images, labels and splits carried, and a run on
them refuses them once the VAE was trained on since."""

import json

import numpy as np
import pytest
import torch

from dgmkit.cli.main import main
from dgmkit.cli.train import _with_kept_labels
from dgmkit.config import RunConfig, load_run
from dgmkit.config.inputs import derived_dataset
from dgmkit.data import load_dataset
from dgmkit.data.labels import HIDDEN, keep_labels
from dgmkit.distributions import location
from dgmkit.errors import ConfigError
from dgmkit.training.trainer import VALID_SEED

M = 3
VAE = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", str(M), "--epochs", "1", "--quiet"]
M2 = ["train", "--model", "m2", "--likelihood", "gaussian", "--hidden", "16", "--latent-dim", "2", "--quiet"]
M2 += ["--labels", "30", "--labelled-batch", "8", "--batch-size", "64", "--epochs", "1"]


def test_latents_are_the_posterior_means_of_the_held_out_images(tmp_path):
    for posterior in ("gaussian", "iaf"):  # an IAF posterior gives its code at eps = 0 (its location)
        out = tmp_path / posterior
        assert main([*VAE, "--posterior", posterior, "--flow-layers", "1", "--out", str(out)]) == 0
        run, digits = load_run(out), load_dataset("digits")
        latents = derived_dataset(out)
        assert latents.name.startswith(f"latents:{run.record['run_id']}:") and latents.num_levels is None
        for split in ("train", "valid", "test"):
            s, z = digits.split(split), latents.split(split)
            x = run.transform(s.x, torch.Generator().manual_seed(VALID_SEED))  # the data as dgm eval sees them
            with torch.no_grad():
                want = location(run.model.posterior(x))  # (N, M)
            assert z.x.shape == (len(s), 1, 1, M) and z.x.dtype == torch.float32
            torch.testing.assert_close(z.x.flatten(1), want, rtol=0, atol=1e-6)
            assert torch.equal(z.y, s.y)
        # the same run makes the same data again (their name holds its checkpoint's digest)
        again = derived_dataset(out)
        assert again.name == latents.name and torch.equal(again.test.x, latents.test.x)


def test_m2_trains_on_a_vaes_latents_and_refuses_them_once_the_vae_changed(tmp_path, capsys):
    m1, m2 = tmp_path / "m1", tmp_path / "m2"
    assert main([*VAE, "--out", str(m1)]) == 0
    assert main([*M2, "--codes-of", str(m1), "--out", str(m2)]) == 0
    record = json.loads((m2 / "config.json").read_text())
    assert record["config"]["data"]["codes_of"] == str(m1.resolve())
    # pinned by the name (the source run's id and checkpoint digest), not by the floats' content
    assert record["data"]["name"] == derived_dataset(m1).name and "sha256" not in record["data"]
    assert record["data"]["transform"] == "continuous" and record["data"]["event_shape"] == [1, 1, M]
    capsys.readouterr()
    assert main(["eval", str(m2), "--iw-samples", "2"]) == 0
    assert "error on all 300 labels" in capsys.readouterr().out  # q(y|x) on M1's test latents
    result = json.loads((m2 / "eval.json").read_text())
    (accuracy,) = [t["value"] for t in result["terms"] if t["name"] == "accuracy"]
    model, test = load_run(m2).model, derived_dataset(m1).test
    assert accuracy == (model.predict(test.x) == test.y).double().mean().item()
    # M1 trained on since: its latents are other data, and the M2 run says so
    assert main(["train", "--resume", "--out", str(m1), "--epochs", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(m2), "--iw-samples", "2"]) == 1
    assert "other data than the run" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(m2), "--epochs", "2", "--quiet"]) == 1  # nor resumed on them
    assert "other data than the run" in capsys.readouterr().err


def test_latents_of_a_source_whose_data_file_changed_are_refused(tmp_path, capsys):
    """The source run's own data are pinned by content: replaced, the latents it would make are of
    other images, and a run on them is refused as the source run itself is."""
    digits = load_dataset("digits")
    data = tmp_path / "data.npz"
    x = torch.cat([digits.split(s).x for s in ("train", "valid", "test")]).numpy()
    y = torch.cat([digits.split(s).y for s in ("train", "valid", "test")]).numpy()
    np.savez(data, x=x, y=y)
    m1, m2 = tmp_path / "m1", tmp_path / "m2"
    vae = [*(a if a != "digits" else str(data) for a in VAE), "--binarize", "dynamic"]
    assert main([*vae, "--out", str(m1)]) == 0
    assert main([*M2, "--codes-of", str(m1), "--out", str(m2)]) == 0
    np.savez(data, x=x[:, :, :, ::-1].copy(), y=y)  # the same shape, the images mirrored
    capsys.readouterr()
    assert main(["eval", str(m2), "--iw-samples", "2"]) == 1
    assert "now holds other data than" in capsys.readouterr().err


def test_latents_need_a_density_and_have_no_entries_to_remove(tmp_path, capsys):
    m1 = tmp_path / "m1"
    assert main([*VAE, "--out", str(m1)]) == 0
    capsys.readouterr()
    for likelihood, says in (("bernoulli", "use gaussian"), ("categorical", "needs integer")):
        argv = [*M2, "--codes-of", str(m1), "--likelihood", likelihood, "--out", str(tmp_path / likelihood)]
        assert main(argv) == 1 and says in capsys.readouterr().err
    assert main([*M2, "--codes-of", str(m1), "--missing-rate", "0.5", "--out", str(tmp_path / "mcar")]) == 1
    assert "data another run makes" in capsys.readouterr().err
    # a run of a family that makes nothing for others is refused with the families that do
    m2 = tmp_path / "m2"
    assert main([*M2, "--codes-of", str(m1), "--out", str(m2)]) == 0
    capsys.readouterr()
    assert main([*M2, "--codes-of", str(m2), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "makes no data for other runs" in err and "vae (latents)" in err and "vqvae (codes)" in err


def test_the_labelled_subset_has_a_seed_of_its_own():
    """Kingma et al.'s protocol varies the labelled subset over seeds: --labels-seed draws it
    apart from --seed (the weights and batches), which it defaults to."""
    digits = load_dataset("digits")

    def kept(**keys) -> torch.Tensor:
        return _with_kept_labels(RunConfig.of(model="m2", labels=30, **keys), digits).train.y

    assert torch.equal(kept(seed=0, labels_seed=5), kept(seed=1, labels_seed=5))
    assert not torch.equal(kept(labels_seed=5), kept(labels_seed=6))
    assert torch.equal(kept(seed=3), keep_labels(digits.train, 30, 10, seed=3).y)
    assert torch.equal(kept(seed=3), kept(seed=0, labels_seed=3))
    assert (kept(labels_seed=5) != HIDDEN).sum() == 30
    with pytest.raises(ConfigError, match="give --labels"):
        RunConfig.of(model="m2", labels_seed=5)
