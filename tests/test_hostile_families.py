"""What a hostile pass over ``dgm train``, ``dgm eval`` and ``dgm sample`` of the less common families
(wae, dvae, helmholtz, hvae and its residual posterior, pixelvae, adgm, vqvae) found: settings that the
run's other choices leave unread were taken and recorded as if they had been used, and are now refused
as every other unread setting is (``RunConfig.check_inert``): ``--decoder-input`` of a stack of one
stochastic layer (the decoder sees z_1 whatever it says); ``--warmup`` under ``--beta 0``; a WAE's
``--beta`` and ``--warmup`` under ``--mmd-weight 0``; a DVAE's ``--gumbel-temperature-min`` without
annealing and ``--anneal-rate`` of a temperature that starts at its floor; a VQ-VAE's ``--iw-samples``,
which made every ``dgm eval`` take k passes of its one draw (its posterior is a point mass) and call the
result the bound of k, as ``dgm eval --iw-samples``, ``dgm score --k`` and ``dgm ood --iw-samples`` did,
now refused there too. The rest of what was tried (other families' flags, NaN, 0, negative and huge
values, likelihoods and data a family cannot use, labels for a family trained without them, a batch
larger than the data, --resume with changed flags, a time budget that stops in the first step and its
--resume, which continued bit for bit) was refused in one line or behaved."""

import pytest

from dgm_cli import dgm, refused
from dgmkit.config import RunConfig
from dgmkit.errors import ConfigError


@pytest.mark.parametrize(
    "model, flags, key",
    [
        ("pixelvae", ["--decoder-input", "all"], "decoder_input"),  # (the PixelVAE's default: one layer)
        ("hvae", ["--latent-sizes", "8", "--decoder-input", "bottom"], "decoder_input"),
    ],
)
def test_a_setting_that_the_runs_other_choices_leave_unread_is_refused(tmp_path, capsys, model, flags, key):
    out = tmp_path / "run"
    code, _, err = dgm(capsys, "train", "--model", model, "--dataset", "digits", *flags, "--epochs", "1", "--out", out)
    refused(code, err, f"{key} = ", "is read only with")
    assert not out.exists()


def test_decoder_input_of_one_layer_names_the_layers_that_read_it():
    with pytest.raises(ConfigError, match="decoder_input = 'all' is read only with --latent-sizes of two or more layers"):
        RunConfig.of(model="hvae", latent_sizes=[8], decoder_input="all").check_inert()
    RunConfig.of(model="hvae", latent_sizes=[8, 4], decoder_input="bottom").check_inert()  # two layers: read


@pytest.mark.parametrize("k", ["10", "1", "0"])
def test_a_vqvae_run_takes_no_iw_samples_of_its_own(tmp_path, capsys, k):
    """A VQ-VAE's posterior is a point mass (its code grid): dgm eval's bound is one draw, and more
    change nothing. --iw-samples 10 was recorded, and every later dgm eval made 10 passes of the same
    draw and called the result the bound of k=10."""
    out = tmp_path / "vq"
    code, _, err = dgm(capsys, "train", "--model", "vqvae", "--dataset", "digits", "--iw-samples", k, "--out", out)
    refused(code, err, f"iw_samples = {k}: the vqvae model's posterior is a point mass", "leave it out")
    assert not out.exists()


def test_dgm_eval_and_score_of_a_vqvae_run_take_no_count_of_draws(tmp_path, capsys, monkeypatch):
    """dgm eval --iw-samples 10 (dgm score --k 10) of a VQ-VAE made ten passes of the same draw, said to
    change nothing and recorded as another protocol (k=10) of the same number; a run that recorded an
    iw_samples of its own before it was refused is scored by its one draw."""
    import json

    import numpy as np

    from dgmkit.cli.common import run_data
    from dgmkit.config import load_run

    vq = tmp_path / "vq"
    small = ["--codes", "8", "--code-dim", "2", "--vq-width", "4", "--downsample", "1", "--res-blocks", "0"]
    with monkeypatch.context() as m:  # (a run written before --iw-samples was refused for it)
        m.setattr(RunConfig, "check_inert", lambda self, *a, **k: None)
        argv = ["train", "--model", "vqvae", "--dataset", "digits", *small, "--iw-samples", "10", "--epochs", "1"]
        assert dgm(capsys, *argv, "--quiet", "--out", vq)[0] == 0
    np.save(tmp_path / "x.npy", run_data(load_run(vq)).test.x[:10].numpy())
    for flag, argv in (
        ("--iw-samples", ["eval", vq, "--iw-samples", "10"]),
        ("--k", ["score", vq, tmp_path / "x.npy", "--k", "10", "--out", tmp_path / "s.csv"]),
    ):
        code, _, err = dgm(capsys, *argv)
        refused(code, err, f"{flag}: the posterior of a VQ-VAE", "is a point mass", "leave it out")
    assert not (vq / "eval.json").exists() and not (tmp_path / "s.csv").exists()
    code, said, _ = dgm(capsys, "eval", vq)  # (its own iw_samples, 10: one draw all the same)
    assert code == 0 and "NLL bound (k=1)" in said
    assert json.loads((vq / "eval.json").read_text())["iw_samples"] == 1


@pytest.mark.parametrize("model", ["vae", "hvae", "pixelvae", "dvae", "wae"])
def test_a_warm_up_to_a_weight_of_zero_is_refused(tmp_path, capsys, model):
    """--beta 0 --warmup 5: the weight goes from 0 to 0, and the warm-up was taken and recorded."""
    out = tmp_path / "run"
    code, _, err = dgm(
        capsys, "train", "--model", model, "--dataset", "digits", "--beta", "0", "--warmup", "5", "--out", out
    )
    refused(code, err, "warmup = 5.0 is read only with --beta above 0")
    assert not out.exists()
    RunConfig.of(model=model, beta=0.0).check_inert()  # (beta 0 itself: a weight of its own)


@pytest.mark.parametrize("model", ["vae", "hvae", "pixelvae"])
def test_free_bits_under_a_weight_of_zero_are_refused(model):
    """--beta 0 --free-bits 0.5: the floor is on the KL term, which the loss weighs by 0: taken and
    recorded before, refused by name now, as the warm-up to 0 is."""
    from dgmkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"free_bits = 0.5 is read only with --beta above 0"):
        RunConfig.of(model=model, dataset="digits", beta=0.0, free_bits=0.5).check_inert()
    RunConfig.of(model=model, dataset="digits", beta=0.5, free_bits=0.5).check_inert()


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--mmd-weight", "0", "--beta", "2"], "beta = 2.0 is read only with --mmd-weight above 0"),
        (["--mmd-weight", "0", "--warmup", "3"], "warmup = 3.0 is read only with --mmd-weight above 0"),
    ],
)
def test_a_wae_factor_of_no_penalty_is_refused(tmp_path, capsys, flags, said):
    """A WAE's beta (and its warm-up) is the factor of an MMD penalty that --mmd-weight 0 takes away:
    it was taken and recorded."""
    out = tmp_path / "run"
    code, _, err = dgm(capsys, "train", "--model", "wae", "--dataset", "digits", *flags, "--epochs", "1", "--out", out)
    refused(code, err, said)
    assert not out.exists()
    RunConfig.of(model="wae", mmd_weight=0.0).check_inert()  # (the setting that turns it off: read)


@pytest.mark.parametrize(
    "flags, said",
    [
        (
            ["--anneal-rate", "0", "--gumbel-temperature-min", "0.2"],
            "gumbel_temperature_min = 0.2 is read only with --anneal-rate above 0",
        ),
        (
            ["--gumbel-temperature", "0.5", "--gumbel-temperature-min", "0.5", "--anneal-rate", "0.1"],
            "anneal_rate = 0.1 is read only with --gumbel-temperature above --gumbel-temperature-min",
        ),
    ],
)
def test_a_dvae_temperature_schedule_that_cannot_move_is_refused(tmp_path, capsys, flags, said):
    """Without annealing the Gumbel-softmax temperature never reaches its floor, and one that starts at
    its floor has nothing to anneal: the floor, or the rate, was taken and recorded."""
    out = tmp_path / "run"
    code, _, err = dgm(capsys, "train", "--model", "dvae", "--dataset", "digits", *flags, "--epochs", "1", "--out", out)
    refused(code, err, said)
    assert not out.exists()
    RunConfig.of(model="dvae", anneal_rate=0.0, gumbel_temperature=0.8).check_inert()  # (tau fixed at 0.8: read)


def test_a_dvae_constant_temperature_below_the_default_floor_is_taken(tmp_path, capsys):
    """A constant tau of 0.3 (--anneal-rate 0) needs a floor at or below it (validate: the default 0.5
    is above it), and that floor was refused as unread: each refusal's fix led to the other."""
    out = tmp_path / "run"
    argv = ["--gumbel-temperature", "0.3", "--gumbel-temperature-min", "0.3", "--anneal-rate", "0"]
    code, _, err = dgm(capsys, "train", "--model", "dvae", "--dataset", "digits-4x4", *argv, "--epochs", "1", "--out", out)
    refused(code, err, "anneal_rate = 0.0 is read only with --gumbel-temperature above --gumbel-temperature-min")
    assert not out.exists()  # (leave --anneal-rate out: tau = max(0.3, 0.3 exp(-rate t)) = 0.3 all the same)
    RunConfig.of(model="dvae", gumbel_temperature=0.3, gumbel_temperature_min=0.2, anneal_rate=0.0).check_inert()
    RunConfig.of(model="dvae", gumbel_temperature=0.3, gumbel_temperature_min=0.3).check_inert()  # (tau fixed: read)
    with pytest.raises(ConfigError, match="gumbel_temperature_min = 0.2 is read only with --anneal-rate above 0"):
        RunConfig.of(model="dvae", gumbel_temperature=0.8, gumbel_temperature_min=0.2, anneal_rate=0.0).check_inert()


def test_a_warm_up_longer_than_the_run_says_the_weight_it_ends_at(tmp_path, capsys):
    """--warmup 10 --epochs 1 --beta 0.5 trained silently with the KL weight at 0.05 when it ended (a
    warm-up longer than the run is taken, as a first part of a run to --resume: said, not refused)."""
    import json

    out = tmp_path / "run"
    argv = ["--model", "hvae", "--dataset", "digits", "--posterior", "ladder", "--latent-sizes", "4", "2", "--hidden", "8"]
    argv += ["--epochs", "1", "--beta", "0.5", "--quiet"]
    code, said, err = dgm(capsys, "train", *argv, "--warmup", "10", "--out", out)
    assert code == 0, err
    assert "the KL weight ends at 0.05, not --beta 0.5" in said and "--epochs 10 or more finishes it" in said, said
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["beta"] == pytest.approx(0.05)
    code, said, err = dgm(capsys, "train", *argv, "--warmup", "1", "--out", out / "b")
    assert code == 0 and "warm-up" not in said, err


@pytest.mark.parametrize(
    "family, values, said",
    [
        ("hvae", {"latent_sizes": []}, "latent_sizes must be a non-empty list"),  # (was a raw IndexError)
        ("vae", {"latent_dim": True}, "latent_dim has the wrong type"),  # (was a VAE of one latent)
        ("hvae", {"latent_sizes": [8], "layer_hidden": [4, 4]}, "one width per stochastic layer"),  # (validate's)
    ],
)
def test_a_family_config_made_in_python_is_checked_when_built(family, values, said):
    from dgmkit.families import get_family

    config = get_family(family)(**values)  # (no file's checks on the way)
    with pytest.raises(ConfigError, match=said):
        config.build((1, 8, 8), 2)


def test_a_family_config_made_in_python_of_numpy_numbers_and_tuples_builds():
    import numpy as np

    from dgmkit.families import get_family

    model = get_family("vae")(hidden=(16, 8), latent_dim=np.int64(3)).build((1, 8, 8), 2)  # (as before the checks)
    assert sum(p.numel() for p in model.parameters()) > 0
