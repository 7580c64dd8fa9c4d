"""What a mutation sweep of the typed settings (settings.py), the run config (config/) and the
family configs (families/) found unchecked: the declared bounds of many keys (a value at its bound
taken, one past it refused naming the key: missing_rate, ema, skip_grad_factor, lr_decay, dropout,
codes, classes, ...), the length limits of lists and text, an empty path refused, settings.from_dict
range-checking a section of its own, a mistyped value named before a rule between keys reads it,
NumPy scalars and tuples taken as plain values, several rules between keys (codes_of with
missing_rate or image_shape, latent_draws of a family fitted without batches, a 4-value
image_shape, table_input of a family that does not use it), a resume dropping the time budget, a
family switch by replace, the defaults that the docs' --help transcripts state, the components a
prior gets by default, shapes the families build (ppca's M < D, a categorical likelihood's input
scale, a mixed table's one-hot or index encoder, conv sides divisible by 4, a residual HVAE's
doublings), and what old run formats meant (format 3 diffusion's Fourier exponents, format 4's
index table input and unit VampPrior range); and from a sweep of the families' own rules: table_input
index refused with every likelihood but the mixed one, conv_channels of one or three stages refused
as a config error, a VampPrior started at data taking exactly K images, refusing K - 1, and keeping
the pseudo-inputs of data with levels in (0, 1)"""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dgmkit.cli.flags import flag_name
from dgmkit.cli.main import main
from dgmkit.config import DataConfig, OptimConfig, RunConfig, load_config_file
from dgmkit.config.migrate import check_record, migrate_record
from dgmkit.errors import CheckpointError, ConfigError
from dgmkit.families import FAMILIES
from dgmkit.families.base import DataSpec
from dgmkit.settings import MAX_LIST, default_of, from_dict

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize(
    "base, key, good, bad, needle",
    [
        ({}, "missing_rate", 0.99, 1.0, "missing_rate must be <= 0.99"),  # 1: no entry left observed
        ({}, "ema", 0.99999, 1.0, "ema must be <= 0.99999"),  # 1: an average that never moves
        ({}, "skip_grad_factor", 1.001, 1.0, "skip_grad_factor must be > 1"),  # 1: half the updates skipped
        ({"lr_schedule": "exponential"}, "lr_decay", 1.0, 1.01, "lr_decay must be <= 1"),  # > 1: a growing rate
        ({"lr_schedule": "exponential"}, "lr_decay_every", 1, 0, "lr_decay_every must be >= 1"),
        ({}, "patience", 1, 0, "patience must be >= 1"),
        ({}, "weight_decay", 0.0, -1e-9, "weight_decay must be >= 0"),
        ({}, "lr_min", 10.0, 10.5, "lr_min must be <= 10.0"),
        ({}, "iw_samples", 0, -1, "iw_samples must be >= 0"),
        ({"model": "m2", "labels": 100}, "labels_seed", 0, -1, "labels_seed must be >= 0"),
        ({"model": "diffusion"}, "dropout", 0.99, 1.0, "dropout must be < 1"),  # 1: every activation dropped
        ({"model": "vqvae"}, "codes", 2, 1, "codes must be >= 2"),
        ({"model": "m2"}, "classes", 2, 1, "classes must be >= 2"),
        ({"likelihood": "student-t"}, "student_min_df", 1.001, 1.0, "student_min_df must be > 1"),
        ({"likelihood": "gaussian"}, "gaussian_scale", 1e-6, 0.0, "gaussian_scale must be > 0"),
        ({"likelihood": "logistic"}, "logistic_components", 1, 0, "logistic_components must be >= 1"),
        ({"prior": "flow"}, "flow_layers", 1, 0, "flow_layers must be >= 1"),
        ({"prior": "mog"}, "prior_components", 1, 0, "prior_components must be >= 1"),
        ({"model": "dvae"}, "gumbel_temperature_min", 1.1754943508222875e-38, 1e-39, "must be >= 1.17"),
        ({}, "hidden", [8] * MAX_LIST, [8] * (MAX_LIST + 1), f"hidden may hold at most {MAX_LIST} values"),
        ({}, "dataset", "d" * 4096, "d" * 4097, "dataset is not a usable text value"),
    ],
)
def test_a_setting_at_its_bound_is_taken_and_one_past_it_is_refused_naming_it(base, key, good, bad, needle):
    cfg = RunConfig.of(**base, **{key: good})
    assert cfg.flat()[key] == good
    with pytest.raises(ConfigError) as e:
        RunConfig.of(**base, **{key: bad})
    assert needle in str(e.value)


@pytest.mark.parametrize("key", ["data_dir", "data_key", "schema", "codes_of"])
def test_an_empty_path_or_name_is_refused_naming_the_key(key):
    with pytest.raises(ConfigError, match=f"{key} is empty"):
        RunConfig.of(**{key: ""})


@pytest.mark.parametrize("prior, components", [("mog", 10), ("vampprior", 500)])
def test_the_prior_components_default_to_what_help_states(prior, components):
    """--help: "mog / vampprior components K (default 10 / 500)"."""
    cfg = RunConfig.of(prior=prior, hidden=[8], latent_dim=2)
    assert cfg.model.prior_components is None
    model = cfg.model.build((1, 4, 4), 2)
    assert model.prior_module.components == components


def test_a_value_of_the_wrong_type_is_named_before_a_rule_between_keys_reads_it():
    """from_dict checks each value before the family's own __post_init__ compares them: a mistyped
    likelihood is named as such, not reported as a table_input that needs the mixed likelihood."""
    with pytest.raises(ConfigError, match="unknown likelihood 'mixd'.*did you mean 'mixed'"):
        RunConfig.of(likelihood="mixd", table_input="index")
    with pytest.raises(ConfigError, match="likelihood has the wrong type|unknown likelihood"):
        RunConfig.of(likelihood=["mixed"], table_input="index")


def _documented_defaults(family: str) -> dict[str, str]:
    """Each flag of docs/transcripts/flags-FAMILY.txt (a stored `dgm train --model FAMILY --help`)
    and the default its help text states."""
    text = (DOCS / "transcripts" / f"flags-{family}.txt").read_text()
    out = {}
    for block in re.split(r"\n(?=  --)", text)[1:]:
        flag = block.split()[0].rstrip(",")  # (a switch: --name, --no-name)
        said = re.findall(r"; default (.*?)\)$", " ".join(block.split()))
        if said:
            out[flag] = said[-1]
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_defaults_the_flag_transcripts_state_are_the_families_defaults(family):
    """The docs quote each family's --help (docs/transcripts/flags-*.txt); a default changed in
    code without them would leave the docs stating another model than `dgm train` builds."""
    said = _documented_defaults(family)
    cls = FAMILIES[family]
    flags = {flag_name(f): f for f in dataclasses.fields(cls) if f.name not in cls.unused_settings}
    assert said and set(said) <= set(flags), set(said) - set(flags)
    for flag, text in said.items():
        assert text == str(default_of(flags[flag])), (family, flag, text)


@pytest.mark.parametrize(
    "section, values, needle",
    [
        (DataConfig, {"missing_rate": 1.0}, "missing_rate must be <= 0.99"),
        (OptimConfig, {"epochs": 0}, "epochs must be >= 1"),
        (OptimConfig, {"lr": 0.0}, "lr must be > 0"),
    ],
)
def test_settings_from_dict_range_checks_a_section_of_its_own(section, values, needle):
    """settings.from_dict, public, checks ranges itself: not only where RunConfig checks its parts again."""
    with pytest.raises(ConfigError, match=f"t: .*{needle}|{needle}"):
        from_dict(section, values, "t")


def test_numpy_numbers_and_tuples_from_python_are_the_plain_values_a_config_file_gives():
    """A Python caller's NumPy scalars and tuples are taken as the numbers and lists they hold
    (and stored so: config.json is JSON), not refused as of the wrong type."""
    cfg = RunConfig.of(epochs=np.int64(3), lr=np.float32(0.5), hidden=(np.int32(8), 4), image_shape=(4, 4))
    flat = cfg.flat()
    assert (flat["epochs"], flat["lr"], flat["hidden"], flat["image_shape"]) == (3, 0.5, [8, 4], [4, 4])
    assert type(flat["epochs"]) is int and type(flat["lr"]) is float and all(type(v) is int for v in flat["hidden"])
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"model": "diffusion", "iw_samples": 10}, "iw_samples: the diffusion model is scored without importance"),
        ({"image_shape": [1, 1, 4, 4]}, "image_shape takes H W or C H W, got [1, 1, 4, 4]"),
        ({"codes_of": "runs/a", "missing_rate": 0.1}, "missing_rate removes entries of stored data"),
        (
            {"codes_of": "runs/a", "image_shape": [4, 4]},
            "codes_of takes its data from the other run; leave out image_shape = [4, 4] (",
        ),
        ({"model": "ppca", "codes_of": "runs/a", "latent_draws": True}, "the ppca model is fitted in closed form"),
        ({"model": "vqvae", "likelihood": "mixed", "table_input": "index"}, "table_input: the vqvae model does not use"),
        ({"labels_seed": 3}, "labels_seed draws the labelled subset of --labels N"),
        ({"model": "hvae", "objective": "miwae"}, "choose from elbo, iwae (objective miwae is offered by the vae model"),
        ({"model": "arm", "likelihood": "gaussian"}, "(likelihood gaussian is offered by the vae, hvae, "),
        ({"labels": 100}, "labels: the vae model is not trained on labels"),
        ({"lr_decay": 0.5}, "lr_decay and lr_decay_every shape the exponential schedule"),
        ({"lr_schedule": "cosine", "lr_decay_every": 2}, "lr_decay and lr_decay_every shape the exponential schedule"),
        ({"normalise_gradients": True, "grad_clip": 1.0}, "grad_clip would do nothing with normalise_gradients"),
        ({"model": "vqvae", "ema": 0.9}, "--ema averages the networks' weights but not the codebook"),
    ],
)
def test_a_rule_between_keys_is_refused_naming_the_keys(values, needle):
    with pytest.raises(ConfigError) as e:
        RunConfig.of(**values)
    assert needle in str(e.value)


def test_a_resume_drops_the_time_budget_unless_it_names_one_and_a_family_switch_drops_the_old_familys_keys():
    cfg = RunConfig.of(time_budget=5.0, epochs=7, latent_dim=3)
    assert cfg.resumed({}).optim.time_budget is None
    assert cfg.resumed({"time_budget": 3.0}).optim.time_budget == 3.0
    flow = cfg.replace(model="flow")  # latent_dim is no key of a flow: the switch keeps the sections' keys only
    assert flow.family == "flow" and flow.optim.epochs == 7 and flow.optim.time_budget == 5.0


def test_a_config_file_that_holds_no_table_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=f"config file {re.escape(str(path))} must hold a table of keys"):
        load_config_file(path)


def _first_linear(module: torch.nn.Module) -> torch.nn.Linear:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Linear))


def test_a_family_builds_the_declared_shapes_and_refuses_data_it_cannot_model():
    # ppca: M < D (M = D leaves no noise subspace: the closed-form fit divides by zero)
    assert RunConfig.of(model="ppca", latent_dim=15).model.build((16,), None).latent_dim == 15
    with pytest.raises(ConfigError, match="latent_dim must be below"):
        RunConfig.of(model="ppca", latent_dim=16).model.build((16,), None)
    # a categorical likelihood's networks read x / (L - 1): the top level at 1, as the other scaled families
    vae = RunConfig.of(likelihood="categorical", hidden=[8], latent_dim=2).model.build((1, 4, 4), 17)
    assert vae.input_scale == 1 / 16
    # a mixed table's categorical columns reach the encoder one-hot (4 inputs for [0, 3]), or as indices (2)
    for table_input, width in [("one-hot", 4), ("index", 2)]:
        cfg = RunConfig.of(likelihood="mixed", table_levels=[0, 3], table_input=table_input, hidden=[8], latent_dim=2)
        assert _first_linear(cfg.model.build((1, 1, 2), None).encoder).in_features == width
    # conv networks halve the image twice
    conv = RunConfig.of(encoder="conv", hidden=[8], latent_dim=2).model
    conv.build((1, 8, 12), 2)
    with pytest.raises(ConfigError, match="divisible by 4"):
        conv.build((1, 6, 8), 2)


@pytest.mark.parametrize(
    "shape, levels, needle",
    [((0, 4), 2, "positive integer sizes"), ((4,), 1, "levels must be an integer >= 2"), ((4,), True, "levels")],
)
def test_a_data_spec_refuses_what_no_model_is_built_for(shape, levels, needle):
    with pytest.raises(ConfigError, match=needle):
        DataSpec.of(shape, levels)
    DataSpec.of((1, 4), 2)


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"model": "diffusion", "gamma_min": 2.0, "gamma_max": 2.0}, "gamma_min (2.0) must be below gamma_max (2.0)"),
        (
            {"model": "diffusion", "process": "masked", "masked_training": "counts", "diffusion_steps": 10},
            "masked_training counts",
        ),
        ({"free_bits": 0.5, "prior": "mog"}, "free_bits needs the elbo objective, the standard prior"),
    ],
)
def test_a_family_rule_is_refused_at_its_edge(values, needle):
    with pytest.raises(ConfigError) as e:
        RunConfig.of(**values)
    assert needle in str(e.value)


def test_a_discrete_vae_may_keep_its_temperature_constant():
    cfg = RunConfig.of(model="dvae", gumbel_temperature=0.5, gumbel_temperature_min=0.5)
    assert cfg.model.gumbel_temperature == cfg.model.gumbel_temperature_min == 0.5
    with pytest.raises(ConfigError, match="need gumbel_temperature_min <= gumbel_temperature"):
        RunConfig.of(model="dvae", gumbel_temperature=0.5, gumbel_temperature_min=0.6)


def test_a_score_function_dvae_says_its_relaxation_temperature_is_unread_not_below_the_floor():
    # (--objective reinforce --gumbel-temperature 0.3 was refused for the default floor of 0.5 above it: a rule of
    # a relaxation the run does not have, whose fix would have been a second unread setting)
    cfg = RunConfig.of(model="dvae", objective="reinforce", gumbel_temperature=0.3)
    with pytest.raises(ConfigError, match="gumbel_temperature = 0.3 is read only with --objective gumbel-softmax"):
        cfg.check_inert()


def test_a_discrete_vae_refuses_a_temperature_float32_cannot_hold_as_a_normal_number():
    # (1e-40 was taken, and the first step's relaxed sample was NaN: "look at the data")
    cfg = RunConfig.of(model="dvae", gumbel_temperature=1.0, gumbel_temperature_min=1.2e-38)
    assert cfg.model.gumbel_temperature_min == 1.2e-38
    with pytest.raises(ConfigError, match="gumbel_temperature_min must be >= 1.17549"):
        RunConfig.of(model="dvae", gumbel_temperature=1.0, gumbel_temperature_min=1e-40)


def test_a_residual_hvae_reaches_the_image_by_doublings_only():
    cfg = RunConfig.of(model="hvae", posterior="residual", res_resolutions=[3, 6], res_layers=[1, 1], res_width=8)
    cfg.model.build((1, 12, 12), 2)
    with pytest.raises(ConfigError, match="must reach the 18x18 images by doublings"):
        cfg.model.build((1, 18, 18), 2)


def _format_3_diffusion(**model) -> dict:
    return {
        "format": 3,
        "run_id": "a" * 32,
        "config": {"model": {"name": "diffusion", **model}, "data": {}, "optim": {}, "eval": {}},
        "data": {"name": "digits", "event_shape": [1, 8, 8], "num_levels": 17, "transform": "integers"},
    }


def test_a_format_3_diffusion_run_keeps_its_fourier_features_and_its_own_exponents():
    """Format 3 runs were trained with higher exponents than VDM's (for 17 levels: 4, 5, not 2, 3);
    a run that named its own keeps them."""
    old = check_record(migrate_record(_format_3_diffusion(), "r"), "r")
    assert old.model._fourier(17) == [4, 5] and RunConfig.of(model="diffusion").model._fourier(17) == [2, 3]
    own = check_record(migrate_record(_format_3_diffusion(fourier_exponents=[1, 5]), "r"), "r")
    assert own.model.fourier_exponents == [1, 5]


def _record(version: int, **model) -> dict:
    return {
        "format": version,
        "run_id": "a" * 32,
        "config": {"model": {"name": "vae", **model}, "data": {}, "optim": {}, "eval": {}},
        "data": {"name": "digits", "event_shape": [1, 8, 8], "num_levels": 17, "transform": "integers"},
    }


@pytest.mark.parametrize("version", [2, 3, 4])
def test_a_run_of_format_4_or_before_keeps_what_its_settings_meant_then(version):
    """A mixed likelihood's encoder read categorical columns as indices, a VampPrior's pseudo-inputs
    were clipped to [0, 1]: a migrated run is the model it was trained as; a format 5 run is as written."""
    mixed = check_record(migrate_record(_record(version, likelihood="mixed", table_levels=[0, 3]), "r"), "r")
    assert mixed.model.table_input == "index"
    table = _record(version, prior="vampprior")
    table["data"] = {**table["data"], "event_shape": [1, 1, 4], "num_levels": None, "transform": "none"}
    vamp = check_record(migrate_record(table, "r"), "r")
    assert vamp.model.pseudo_range == "unit"
    # on quantized data the pseudo-inputs are clipped whatever pseudo_range says: left at its default, which
    # the run's settings repeated in a new run (dgmkit.train(out, **run.cfg.flat())) do not refuse as unread
    pixels = check_record(migrate_record(_record(version, prior="vampprior"), "r"), "r")
    assert pixels.model.pseudo_range == "data"
    pixels.check_inert(event_shape=(1, 8, 8), num_levels=17)
    assert pixels.model.model_for(DataSpec.of((1, 8, 8), 17)).prior_module.bounded
    now = check_record(migrate_record(_record(5, likelihood="mixed", table_levels=[0, 3]), "r"), "r")
    assert now.model.table_input == "one-hot"


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("name", "", "the data's name '' is not a non-empty string"),
        ("num_levels", 1, "num_levels 1 is not an integer in 2.."),
    ],
)
def test_a_record_describing_its_data_wrongly_is_refused_naming_the_key(key, value, needle):
    record = _record(5)
    check_record(record, "r")
    record["data"][key] = value
    with pytest.raises(CheckpointError, match=f"^r: {re.escape(needle)}"):
        check_record(record, "r")


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "student-t", "categorical", "logistic"])
def test_table_input_index_is_refused_with_every_likelihood_but_the_mixed_one(likelihood):
    """table_input says how a table's categorical columns reach the encoder: with any likelihood but
    the mixed one there are none, and index would be a setting that changes nothing."""
    with pytest.raises(ConfigError, match="table_input index needs the mixed likelihood"):
        RunConfig.of(likelihood=likelihood, table_input="index")
    assert RunConfig.of(likelihood=likelihood).model.table_input == "one-hot"
    assert RunConfig.of(likelihood="mixed", table_input="index").model.table_input == "index"


@pytest.mark.parametrize("channels", [[8], [8, 8, 8]])
def test_conv_channels_of_other_than_two_stages_are_refused_as_a_config_error(channels):
    """Conv networks have two stride-2 stages: one value or three is refused naming the key (not left
    to the network's own ValueError)."""
    for nets in ({"encoder": "conv"}, {"encoder": "mlp", "decoder": "conv"}):
        model = RunConfig.of(**nets, conv_channels=channels, hidden=[8], latent_dim=2).model
        needle = re.escape(f"conv_channels takes the channels of the 2 conv stages, got {channels}")
        with pytest.raises(ConfigError, match=needle):
            model.build((1, 8, 8), 2)
    RunConfig.of(encoder="conv", conv_channels=[4, 8], hidden=[8], latent_dim=2).model.build((1, 8, 8), 2)


def test_vampprior_pseudo_inputs_from_data_take_exactly_k_images_and_refuse_fewer():
    """pseudo_init = data starts each of the K pseudo-inputs at a distinct training image: K images
    suffice (each used once), K - 1 are refused naming both numbers, not left to VampPrior's shape check."""
    cfg = RunConfig.of(prior="vampprior", prior_components=4, pseudo_init="data", hidden=[8], latent_dim=2)
    images = torch.arange(16.0).view(4, 1, 2, 2) / 15
    prior = cfg.model.model_for(DataSpec.of((1, 2, 2), None, images)).prior_module
    assert torch.allclose(prior.pseudo_input_values().sort(0).values, images)  # (continuous data: free, copied)
    pixels = cfg.model.model_for(DataSpec.of((1, 2, 2), 16, images)).prior_module  # levels: pixels kept in (0, 1)
    assert pixels.bounded and torch.allclose(pixels.pseudo_input_values().sort(0).values, 0.01 + 0.98 * images)
    with pytest.raises(ConfigError, match="pseudo_init = data needs at least 4 training images, got 3"):
        cfg.model.model_for(DataSpec.of((1, 2, 2), None, images[:3]))


def test_a_json_config_file_is_read_as_json_whatever_the_case_of_its_suffix(tmp_path):
    path = tmp_path / "C.JSON"
    path.write_text('{"model": "flow", "epochs": 2}')
    assert load_config_file(path) == {"model": "flow", "epochs": 2}
    path.write_text('{"epochs": NaN}')
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config_file(path)


def test_a_config_file_with_a_byte_order_mark_is_read_and_a_refused_one_says_what_a_config_file_is(tmp_path):
    """A UTF-8 byte-order mark (as some editors write) was refused as invalid TOML or JSON; a
    YAML file's refusal said only "not valid TOML"; an integer beyond Python's 4300 digits got
    Python's advice to raise sys.set_int_max_str_digits."""
    for name, text in (("c.toml", "epochs = 2\n"), ("c.json", '{"epochs": 2}')):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert load_config_file(tmp_path / name) == {"epochs": 2}
    (tmp_path / "c.yaml").write_text("epochs: 2\n")
    with pytest.raises(ConfigError, match=re.escape("is not valid TOML (a config file is TOML, or JSON named *.json)")):
        load_config_file(tmp_path / "c.yaml")
    (tmp_path / "big.toml").write_text(f"epochs = {'9' * 5000}\n")
    with pytest.raises(ConfigError, match="it holds an integer of more than 4300 digits$"):
        load_config_file(tmp_path / "big.toml")
    with pytest.raises(ConfigError) as e:  # (a broken .toml: no hint of what a config file is, it is one)
        (tmp_path / "broken.toml").write_text("epochs = \n")
        load_config_file(tmp_path / "broken.toml")
    assert "is not valid TOML: " in str(e.value)


@pytest.mark.parametrize("key", ["dataset", "data_dir", "data_key", "schema", "codes_of"])
def test_a_text_setting_with_a_control_character_is_refused_as_an_argument_is(key, tmp_path):
    """A path or name of a config file (or from Python) is printed back as an argument is: an
    escape or a line break in it would drive the terminal or forge a line of the output."""
    path = tmp_path / "c.toml"
    path.write_text(f'{key} = "runs/\\u001b[31mred"\n')
    with pytest.raises(ConfigError, match=rf"{key} 'runs/\\x1b\[31mred' holds U\+001B \(an escape\): no path or name"):
        RunConfig.from_dict(load_config_file(path), str(path))
    with pytest.raises(ConfigError, match="holds U\\+000A \\(a line break\\)"):
        RunConfig.of(**{key: "runs/a\nb"})


def test_a_text_setting_with_a_lone_surrogate_is_refused_by_name_not_as_an_internal_error(tmp_path, capsys):
    """A JSON config's escape "\\ud800" is a lone surrogate, which no path can hold: --codes-of of one was
    an internal error (UnicodeEncodeError where its full path was made), now refused by the key's name. A
    command line's undecodable byte ("\\udc80", encodable back) is taken as the path it names."""
    path = tmp_path / "c.json"
    path.write_text('{"model": "m2", "likelihood": "gaussian", "codes_of": "\\ud800", "epochs": 1}')
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    assert "codes_of '\\ud800' holds a lone surrogate: no path or name takes one" in capsys.readouterr().err
    for key in ("dataset", "data_dir", "data_key", "schema", "codes_of", "device"):
        with pytest.raises(ConfigError, match=rf"^{key} '\\ud800x' holds a lone surrogate"):
            RunConfig.of(**{key: "\ud800x"})
    assert RunConfig.of(dataset="data/\udc80.npy").data.dataset == "data/\udc80.npy"
