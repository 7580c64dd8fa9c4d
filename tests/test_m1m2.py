"""M1+M2 (Kingma et al. 2014, arXiv 1406.5298): a VAE's runs make their latents for other runs
(``derived_data = "latents"``), and M2 trains on them with ``--codes-of``: the latents are the
posterior means of the held-out-transformed images, labels and splits carried, and a run on
them refuses them once the VAE was trained on since."""

import json

import numpy as np
import pytest
import torch

from dgmkit.cli.common import recorded_inputs
from dgmkit.cli.main import main
from dgmkit.cli.train import _with_kept_labels
from dgmkit.config import RunConfig, inputs, load_run
from dgmkit.config.inputs import ACTIVE_VARIANCE, derived_dataset, run_dataset
from dgmkit.data import DataTransform, Split, load_dataset
from dgmkit.data.labels import HIDDEN, keep_labels
from dgmkit.distributions import location
from dgmkit.errors import ConfigError, DataError
from dgmkit.training.batches import BatchSource
from dgmkit.training.run_writer import run_files
from dgmkit.training.trainer import VALID_SEED

M = 3
VAE = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", str(M), "--epochs", "1", "--quiet"]
M2 = ["train", "--model", "m2", "--likelihood", "gaussian", "--hidden", "16", "--latent-dim", "2", "--quiet"]
M2 += ["--labels", "30", "--labelled-batch", "8", "--batch-size", "64", "--epochs", "1"]


def test_latents_are_the_posterior_means_of_the_held_out_images(tmp_path):
    for posterior in ("gaussian", "iaf"):  # an IAF posterior gives its code at eps = 0 (its location)
        out = tmp_path / posterior
        layers = ["--flow-layers", "1"] if posterior == "iaf" else []  # (a gaussian posterior reads none)
        assert main([*VAE, "--posterior", posterior, *layers, "--out", str(out)]) == 0
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
    other = tmp_path / "m1other"  # --data names another run: the message names that one, not the recorded one
    assert main([*VAE, "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["eval", str(m2), "--iw-samples", "2", "--data", str(other)]) == 1
    assert f"other data than the run {other.resolve()} now makes" in capsys.readouterr().err


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
    # moved: the error names the first run's file and how to name its new path, which is then read
    moved = tmp_path / "elsewhere.npz"
    data.rename(moved)
    capsys.readouterr()
    assert main(["eval", str(m2), "--iw-samples", "2"]) == 1
    said = capsys.readouterr().err
    assert f"no such data file: {data}, the data of {m1.resolve()}, from which this run's data are made" in said
    assert "--data NEW_FILE" in said
    assert main(["eval", str(m2), "--iw-samples", "2", "--data", str(moved)]) == 0
    import dgmkit  # (from Python a path object, which crashed: is_data_file took strings alone)
    from dgmkit.data.registry import is_data_file, is_table

    assert is_data_file(moved) and is_table(tmp_path / "t.csv") and not is_table(moved)

    assert dgmkit.evaluate(m2, "test", iw_samples=2, data=moved).n == json.loads((m2 / "eval.json").read_text())["n"]
    assert str(moved.resolve()) in {str(p.resolve()) for p in recorded_inputs(m2, str(moved))}  # (never replaced)
    np.savez(data, x=x[:, :, :, ::-1].copy(), y=y)  # the same shape, the images mirrored
    capsys.readouterr()
    assert main(["eval", str(m2), "--iw-samples", "2"]) == 1
    assert "now holds other data than" in capsys.readouterr().err
    assert main(["eval", str(m2), "--iw-samples", "2", "--data", str(data)]) == 1  # (the moved file is pinned alike)
    assert f"{data} now holds other data than {m1.resolve()}" in capsys.readouterr().err


def test_no_output_replaces_the_data_file_of_the_run_whose_latents_a_run_models(tmp_path, capsys):
    """A command on a run of another run's latents reads that run's data file too: it is among
    the run's inputs, which no output may replace, even with --force."""
    digits = load_dataset("digits")
    data = tmp_path / "data.npz"
    np.savez(data, x=torch.cat([digits.split(s).x for s in ("train", "valid", "test")]).numpy(),
             y=torch.cat([digits.split(s).y for s in ("train", "valid", "test")]).numpy())  # fmt: skip
    m1, m2 = tmp_path / "m1", tmp_path / "m2"
    assert main([*(a if a != "digits" else str(data) for a in VAE), "--binarize", "dynamic", "--out", str(m1)]) == 0
    assert main([*M2, "--codes-of", str(m1), "--out", str(m2)]) == 0
    inputs = {p.resolve() for p in recorded_inputs(m2)}
    assert data.resolve() in inputs and (m1 / "config.json").resolve() in inputs
    before = data.read_bytes()
    ood = tmp_path / "ood.npy"  # latents of another kind
    np.save(ood, np.random.default_rng(0).normal(3.0, 1.0, (20, 1, 1, M)).astype(np.float32))
    capsys.readouterr()
    assert main(["ood", str(m2), "--ood", str(ood), "--json", str(data), "--force"]) == 1
    assert str(data) in capsys.readouterr().err
    # scored: -log p(x) of the latents is a log-density, said so (dgm eval says it too)
    assert main(["ood", str(m2), "--ood", str(ood), "--iw-samples", "2"]) == 0
    assert "continuous data: -log p(x) is a log-density of the values as given (nats)" in capsys.readouterr().out
    assert data.read_bytes() == before


def test_latents_need_a_density_and_have_no_entries_to_remove(tmp_path, capsys):
    m1 = tmp_path / "m1"
    assert main([*VAE, "--out", str(m1)]) == 0
    capsys.readouterr()
    for likelihood, says in (("bernoulli", "--likelihood gaussian"), ("categorical", "needs integer")):
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


def test_latents_carry_their_posterior_spread_and_a_run_may_draw_from_it(tmp_path, capsys):
    """Kingma et al.'s code trains M2 on z1 ~ q(z1|x) drawn afresh at every batch (held-out data at
    the means): the VAE's latents carry q's standard deviations, which a run takes with
    ``latent_draws`` and otherwise drops."""
    m1 = tmp_path / "m1"
    assert main([*VAE, "--out", str(m1)]) == 0
    run, digits = load_run(m1), load_dataset("digits")
    latents = derived_dataset(m1)
    for split in ("train", "valid", "test"):
        x = run.transform(digits.split(split).x, torch.Generator().manual_seed(VALID_SEED))
        with torch.no_grad():
            want = run.model.posterior(x).stddev
        torch.testing.assert_close(latents.split(split).x_scale.flatten(1), want, rtol=0, atol=1e-6)
    drawn = run_dataset(RunConfig.of(model="m2", codes_of=str(m1), latent_draws=True).data)
    means = run_dataset(RunConfig.of(model="m2", codes_of=str(m1)).data)
    assert torch.equal(drawn.train.x_scale, latents.train.x_scale) and torch.equal(drawn.test.x, latents.test.x)
    assert all(means.split(s).x_scale is None for s in ("train", "valid", "test"))
    m2 = tmp_path / "m2"
    assert main([*M2, "--codes-of", str(m1), "--latent-draws", "--out", str(m2)]) == 0
    assert json.loads((m2 / "config.json").read_text())["config"]["data"]["latent_draws"] is True
    preset = tmp_path / "m1m2.toml"  # a preset sets it, and the run names its M1 by flag
    preset.write_text('model = "m2"\nlatent_draws = true\nlikelihood = "gaussian"\n')
    argv = [*M2[3:], "--config", str(preset), "--codes-of", str(m1), "--out", str(tmp_path / "preset")]
    assert main(["train", *argv]) == 0
    capsys.readouterr()
    assert main(["eval", str(m2), "--iw-samples", "2"]) == 0  # held-out rows at their means
    # an IAF posterior has no per-unit spread to draw from
    iaf = tmp_path / "iaf"
    assert main([*VAE, "--posterior", "iaf", "--flow-layers", "1", "--out", str(iaf)]) == 0
    assert derived_dataset(iaf).train.x_scale is None
    capsys.readouterr()
    assert main([*M2, "--codes-of", str(iaf), "--latent-draws", "--out", str(tmp_path / "x")]) == 1
    assert "no spread to draw from" in capsys.readouterr().err


def test_active_latents_keeps_the_units_whose_means_vary(tmp_path, monkeypatch, capsys):
    m1 = tmp_path / "m1"
    assert main([*VAE, "--latent-dim", "6", "--epochs", "5", "--out", str(m1)]) == 0
    full = derived_dataset(m1)
    keep = full.train.x.flatten(1).double().var(0) > ACTIVE_VARIANCE
    assert 0 < int(keep.sum()) < 6  # five epochs of a 6-D VAE on the digits leave some units unused
    data = run_dataset(RunConfig.of(model="m2", codes_of=str(m1), active_latents=True, latent_draws=True).data)
    for split in ("train", "valid", "test"):
        s, f = data.split(split), full.split(split)
        assert s.x.shape == (len(f), 1, 1, int(keep.sum()))
        assert torch.equal(s.x, f.x[..., keep]) and torch.equal(s.x_scale, f.x_scale[..., keep])
    # a run records the units it keeps and keeps them again, whatever the threshold would now choose
    m2 = tmp_path / "m2"
    assert main([*M2, "--codes-of", str(m1), "--active-latents", "--latent-draws", "--out", str(m2)]) == 0
    record = json.loads((m2 / "config.json").read_text())
    assert record["data"]["units"] == torch.nonzero(keep).flatten().tolist()
    assert record["data"]["event_shape"] == [1, 1, int(keep.sum())]
    monkeypatch.setattr(inputs, "ACTIVE_VARIANCE", 0.0)  # would keep every unit
    assert run_dataset(RunConfig.of(model="m2", codes_of=str(m1), active_latents=True).data).train.x.shape[-1] == 6
    assert main(["eval", str(m2), "--iw-samples", "2"]) == 0
    assert main(["train", "--resume", "--out", str(m2), "--epochs", "2", "--quiet"]) == 0
    monkeypatch.undo()
    record["data"]["units"] = [0]  # config.json edited: its checkpoints say otherwise
    (m2 / "config.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["eval", str(m2), "--iw-samples", "2"]) == 1
    assert "describe different runs" in capsys.readouterr().err
    for bad in ([0, 0], [6], [-1], [], "0,1", [True], [0.0], [[0]], {"0": 1}, None.__class__):  # names no units
        with pytest.raises(DataError, match="names the latent units it keeps"):
            run_dataset(RunConfig.of(model="m2", codes_of=str(m1), active_latents=True).data, units=bad)
    one = tmp_path / "one"  # after one epoch no unit is active yet
    assert main([*VAE, "--latent-dim", "6", "--out", str(one)]) == 0
    with pytest.raises(DataError, match="no latent unit"):
        run_dataset(RunConfig.of(model="m2", codes_of=str(one), active_latents=True).data)
    for key in ("active_latents", "latent_draws"):  # a preset may set them; the data need --codes-of
        with pytest.raises(ConfigError, match="give --codes-of"):
            run_dataset(RunConfig.of(model="m2", **{key: True}).data)
    with pytest.raises(ConfigError, match="fitted in closed form, without batches"):  # a closed-form fit would ignore it
        RunConfig.of(model="ppca", codes_of=str(m1), latent_draws=True)


def test_a_split_checks_its_spread_and_keeps_it_through_subsets_and_labels():
    x = torch.randn(6, 1, 1, 2)
    s = Split(x, torch.tensor([0, 0, 0, 1, 1, 1]), x_scale=torch.rand(6, 1, 1, 2))
    assert torch.equal(s.subset(torch.tensor([1, 4])).x_scale, s.x_scale[[1, 4]])
    assert torch.equal(keep_labels(s, 2, 2, seed=0).x_scale, s.x_scale)
    for bad, says in (
        (torch.rand(6, 1, 1, 3), "one float per entry"),
        (torch.full((6, 1, 1, 2), -1.0), "finite and >= 0"),
        (torch.full((6, 1, 1, 2), float("inf")), "finite and >= 0"),
    ):
        with pytest.raises(DataError, match=says):
            Split(x, x_scale=bad)
    with pytest.raises(DataError, match="one float per entry"):
        Split(torch.zeros(6, 1, 1, 2, dtype=torch.uint8), x_scale=torch.rand(6, 1, 1, 2))
    with pytest.raises(DataError, match="one float per entry"):
        Split(x, x_scale=torch.rand(6, 1, 1, 2, dtype=torch.float64))


def test_training_batches_draw_from_the_spread_afresh():
    n, d = 50, 4
    x, scale = torch.randn(n, 1, 1, d), torch.rand(n, 1, 1, d) + 0.5
    scale[0] = 0.0  # a row with no spread stays at its mean

    def batches(seed: int) -> list[torch.Tensor]:
        src = BatchSource(x, None, DataTransform("continuous", None), torch.Generator().manual_seed(seed), n, 1, scale=scale)
        return [b for _ in range(400) for b, _ in src.epoch(perm=torch.arange(n))]

    draws = torch.stack(batches(0))  # (400, n, 1, 1, d)
    assert torch.equal(draws[:, 0], x[0].expand(400, 1, 1, d))
    z = (draws - x) / scale.clamp_min(1e-12)
    assert abs(z[:, 1:].mean().item()) < 0.02 and abs(z[:, 1:].std().item() - 1) < 0.02  # x + scale * N(0, 1)
    assert not torch.equal(draws[0], draws[1])  # afresh for every batch
    assert torch.equal(draws, torch.stack(batches(0)))  # and the same again from the same seed
    with pytest.raises(ConfigError, match="spread has shape"):
        BatchSource(x, None, DataTransform("continuous", None), torch.Generator(), n, 1, scale=scale[:, :, :, :2])


def test_a_run_made_from_its_own_data_is_refused_not_loaded_without_end(tmp_path, monkeypatch):
    """A crafted record whose codes_of names its own folder (or a loop of runs) would load the
    run again and again, every model held, up to Python's recursion limit: refused by name."""
    from run_records import rewrite_records

    m1 = tmp_path / "m1"
    assert main([*VAE, "--out", str(m1)]) == 0

    def loop(record: dict) -> dict:
        record["config"]["data"]["codes_of"] = str(m1)
        return record

    x = tmp_path / "x.npy"
    np.save(x, load_dataset("digits").test.x[:5].numpy())
    assert main(["score", str(m1), str(x), "--out", str(tmp_path / "before.csv"), "--k", "5"]) == 0
    rewrite_records(m1, loop)
    # what a command reads is listed without end; inputs given with the run are scored as before the loop
    assert recorded_inputs(m1) == 2 * run_files(m1)
    assert main(["score", str(m1), str(x), "--out", str(tmp_path / "after.csv"), "--k", "5"]) == 0
    assert (tmp_path / "after.csv").read_text() == (tmp_path / "before.csv").read_text()
    with pytest.raises(ConfigError, match="made from its own data"):
        derived_dataset(m1)
    with pytest.raises(ConfigError, match="made from its own data"):
        run_dataset(load_run(m1).cfg.data)
    monkeypatch.setattr(inputs, "MAX_CHAIN", 0)  # a chain longer than the cap
    with pytest.raises(ConfigError, match="more than 0 runs"):
        run_dataset(load_run(m1).cfg.data)


def test_m2_on_the_latents_of_a_run_whose_data_have_no_labels_says_so(tmp_path, capsys):
    """It said "the validation split has no labels", as if the training split had some."""
    data = tmp_path / "x.npy"
    np.save(data, load_dataset("digits").train.x.numpy())
    m1 = tmp_path / "m1"
    assert main([*(a if a != "digits" else str(data) for a in VAE), "--binarize", "dynamic", "--out", str(m1)]) == 0
    capsys.readouterr()
    assert main([*M2, "--codes-of", str(m1), "--out", str(tmp_path / "m2")]) == 1
    err = capsys.readouterr().err
    assert f"the data of {m1.resolve()} have no labels in any split, and the m2 model is trained on labels" in err
