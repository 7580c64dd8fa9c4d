"""What a hostile pass over ``dgm train``, ``dgm eval`` and ``dgm sample`` of the less common families
(wae, dvae, helmholtz, hvae and its residual posterior, pixelvae, adgm, vqvae) found: settings that the
run's other choices leave unread were taken and recorded as if they had been used, and are now refused
as every other unread setting is (``RunConfig.check_inert``): ``--decoder-input`` of a stack of one
stochastic layer (the decoder sees z_1 whatever it says)."""

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
