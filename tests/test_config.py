"""The typed run configuration: every key is type- and range-checked from its declaration,
bad input fails with ConfigError (and a message that helps), flat and sectioned forms agree,
presets load, and ``dgm train`` refuses what the config refuses, including on --resume."""

import dataclasses
import json
import typing
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from dgmkit.cli.main import main
from dgmkit.config import SECTIONS, RunConfig, load_config_file
from dgmkit.data.registry import FOLDER_DATASETS
from dgmkit.errors import ConfigError
from dgmkit.families import DEFAULT_FAMILY, FAMILIES
from dgmkit.settings import check, choices_of, field_kind, from_dict, setting
from dgmkit.training import load_checkpoint
from family_variants import family_variants, variant_id

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
SECTION_KEYS = {f.name: name for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
FAMILY_KEYS = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in FAMILIES.items()}
KNOWN_KEYS = sorted(set(SECTION_KEYS) | set().union(*FAMILY_KEYS.values()))
NON_GRADIENT = sorted(n for n, c in FAMILIES.items() if c.fit != "gradient")


def _choices() -> list[str]:
    out = set()
    for cls in [*FAMILIES.values(), *SECTIONS.values()]:
        for tp in typing.get_type_hints(cls).values():
            out |= {c for c in choices_of(tp) or () if isinstance(c, str)}
    return sorted(out)


# ------------------------------------------------------------------------ property test


def test_from_dict_raises_only_config_error_on_any_json_like_input():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 600),
        st.integers(),  # unbounded: JSON integers have no size limit
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(0, 1),
        st.text(max_size=6),
        st.sampled_from(_choices() + list(FAMILIES)),
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
        max_leaves=6,
    )
    keys = st.sampled_from(KNOWN_KEYS)
    flat = st.builds(
        lambda model, rest: {**rest, **({} if model is None else {"model": model})},
        st.one_of(st.none(), st.sampled_from(list(FAMILIES)), values),
        st.dictionaries(keys, values, max_size=6),
    )
    section = st.one_of(st.dictionaries(st.one_of(keys, st.just("name")), values, max_size=4), values)
    sectioned = st.dictionaries(st.sampled_from(["model", "data", "optim", "eval", "extra"]), section, max_size=4)

    @hypothesis.settings(max_examples=400, deadline=None, database=None, derandomize=True)
    @hypothesis.given(st.one_of(flat, sectioned))
    def prop(config):
        try:
            cfg = RunConfig.from_dict(config, source="hypothesis")
        except ConfigError:
            return
        # whatever is accepted is a valid config that round-trips through both forms
        for part in (cfg.model, cfg.data, cfg.optim, cfg.eval):
            check(part)
        assert RunConfig.from_dict(cfg.to_dict(), "sectioned") == cfg
        assert RunConfig.from_dict(cfg.flat(), "flat") == cfg

    prop()


# ---------------------------------------------------------------- round trips and presets


@pytest.mark.parametrize("name, change", family_variants(), ids=variant_id)
def test_config_round_trips_through_the_sectioned_and_flat_forms(name, change):
    try:
        cfg = RunConfig.of(model=name, **change)
    except ConfigError as e:  # a choice that needs other keys set with it (validate)
        assert "need" in str(e) or "must" in str(e), e
        pytest.skip(f"{change} alone is not a valid {name} config: {e}")
    assert cfg.family == name and isinstance(cfg.model, FAMILIES[name])
    for key, value in change.items():
        assert getattr(cfg.model, key) == value
    sectioned = cfg.to_dict()
    assert set(sectioned) == {"model", *SECTIONS} and sectioned["model"]["name"] == name
    json.dumps(sectioned)  # what config.json stores is plain JSON
    flat = cfg.flat()
    assert flat["model"] == name and set(flat) == {"model"} | FAMILY_KEYS[name] | (
        set(SECTION_KEYS)
        if cfg.model.fit == "gradient"
        else {k for k, s in SECTION_KEYS.items() if s != "optim"} | {"seed", "device"}
    )
    assert RunConfig.from_dict(sectioned).flat() == flat
    assert RunConfig.from_dict(flat) == RunConfig.from_dict(sectioned) == cfg
    assert RunConfig.from_dict(json.loads(json.dumps(sectioned))) == cfg


@pytest.mark.parametrize("name", NON_GRADIENT)
def test_families_fitted_without_gradients_store_only_meaningful_optim_keys(name):
    cfg = RunConfig.of(model=name, seed=3, device="cpu")
    assert cfg.to_dict()["optim"] == {"seed": 3, "device": "cpu"}
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_sectioned_and_flat_inputs_agree():
    flat = {"model": "flow", "flow": "glow", "hidden": [16], "epochs": 3, "lr": 5e-4, "dataset": "digits", "iw_samples": 7}
    sectioned = {
        "model": {"name": "flow", "flow": "glow", "hidden": [16]},
        "optim": {"epochs": 3, "lr": 5e-4},
        "data": {"dataset": "digits"},
        "eval": {"iw_samples": 7},
    }
    a, b = RunConfig.from_dict(flat), RunConfig.from_dict(sectioned)
    assert a == b and a.optim.epochs == 3 and a.model.flow == "glow" and a.iw_samples == 7
    assert RunConfig.of(**flat) == a
    # sections that are left out take their defaults; a [model] table without a name is the default family
    assert RunConfig.from_dict({"model": {}}) == RunConfig.from_dict({}) == RunConfig()
    assert RunConfig.from_dict({"model": {}}).family == DEFAULT_FAMILY


def test_iw_samples_default_to_the_family_and_an_explicit_value_wins():
    for name, cls in FAMILIES.items():
        assert RunConfig.of(model=name).iw_samples == cls().default_iw_samples
        if cls.time_sampled:  # no importance samples to set: its time samples are a model setting
            with pytest.raises(ConfigError, match="without importance sampling"):
                RunConfig.of(model=name, iw_samples=3)
            assert RunConfig.of(model=name, time_samples=3).iw_samples == 3
            continue
        assert RunConfig.of(model=name, iw_samples=3).iw_samples == 3


def test_there_are_presets():
    assert len(PRESETS) >= 6


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads_and_keeps_its_values(path):
    values = load_config_file(path)
    cfg = RunConfig.from_dict(values, source=str(path))
    flat = cfg.flat()
    written = values if "model" not in values or isinstance(values["model"], str) else None
    assert written is not None, "presets are flat files"
    for key, value in written.items():
        assert flat[key] == value, f"{path.name}: {key} = {value!r} became {flat[key]!r}"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------- types and ranges


def test_an_int_is_a_float():
    cfg = RunConfig.of(lr=1, beta=2)
    assert cfg.optim.lr == 1 and cfg.model.beta == 2


def test_a_path_given_from_python_is_its_text():
    """dgmkit.evaluate took data_dir=Path(...) and dgmkit.train refused it as the wrong type."""
    from pathlib import Path

    cfg = RunConfig.of(data_dir=Path("/data/here"), dataset=Path("mine.npz"))
    assert cfg.data.data_dir == "/data/here" and cfg.data.dataset == "mine.npz"
    with pytest.raises(ConfigError, match="data_dir has the wrong type"):
        RunConfig.of(data_dir=3)


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"epochs": 1.5}, "epochs has the wrong type"),
        ({"epochs": 2.0}, "epochs has the wrong type"),  # an integral float is still a float
        ({"epochs": True}, "epochs has the wrong type"),
        ({"batch_size": "128"}, "batch_size has the wrong type"),
        ({"lr": True}, "lr has the wrong type"),
        ({"lr": "1e-3"}, "lr has the wrong type"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"beta": -float("inf")}, "beta must be a finite number"),
        ({"weight_decay": float("nan")}, "finite"),
        ({"epochs": -1}, "epochs must be >= 1"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"epochs": 10**7}, "epochs must be <= "),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": -1e-3}, "lr must be > 0"),
        ({"model": "flow", "logit_alpha": 0.0}, "logit_alpha must be > 0"),
        ({"model": "flow", "logit_alpha": 0.5}, "logit_alpha must be < 0.5"),
        ({"hidden": []}, "hidden must be a non-empty list"),
        ({"hidden": [8, 0]}, "hidden must be >= 1"),
        ({"hidden": [8.0]}, "hidden has the wrong type"),
        ({"hidden": [True]}, "hidden has the wrong type"),
        ({"hidden": 8}, "hidden has the wrong type"),
        ({"latent_dim": None}, "latent_dim must be set"),
        ({"prior_components": 0}, "prior_components must be >= 1"),
        ({"straight_through": 1, "model": "dvae"}, "straight_through has the wrong type"),
        ({"likelihood": "poisson"}, "unknown likelihood 'poisson'"),
        ({"prior": "vamprior"}, "did you mean 'vampprior'"),
        ({"dataset": "a\0b"}, "dataset is not a usable text value"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"model": "gan"}, "unknown model 'gan'"),
        ({"model": "vea"}, "did you mean 'vae'"),
        ({"model": 3}, "must be named by a string, got int 3"),
        ({"model": {"name": None}}, "test: the model must be named by a string, got null (leave name out for vae)"),
    ],
)
def test_bad_values_raise_config_error(values, needle):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(values, source="test")
    assert needle in str(e.value)


def test_an_unknown_key_is_refused_with_the_closest_name():
    with pytest.raises(ConfigError, match="unknown key.*'latnet_dim'.*did you mean 'latent_dim'"):
        RunConfig.of(latnet_dim=3)
    with pytest.raises(ConfigError, match="'epoch'.*did you mean 'epochs'"):
        RunConfig.from_dict({"optim": {"epoch": 3}})
    with pytest.raises(ConfigError, match="'modle'"):
        RunConfig.from_dict({"model": {"name": "vae"}, "modle": {}})


@pytest.mark.parametrize(
    "family, key, value, owners",
    [
        ("vae", "arm", "made", ["arm"]),
        ("vae", "states", 3, ["loglinear"]),
        ("arm", "latent_dim", 2, ["vae", "dvae", "ae", "ppca"]),
        ("ppca", "flow_layers", 2, ["vae", "flow"]),
        ("flow", "layers", [4], ["helmholtz"]),
    ],
)
def test_a_key_of_another_family_names_that_family(family, key, value, owners):
    with pytest.raises(ConfigError) as e:
        RunConfig.of(model=family, **{key: value})
    msg = str(e.value)
    assert f"{key!r} is a key of the" in msg and f"not of {family}" in msg
    for owner in owners:
        assert owner in msg.split("not of")[0], msg


@pytest.mark.parametrize("name", NON_GRADIENT)
@pytest.mark.parametrize(
    "key, value", [("lr", 0.1), ("epochs", 3), ("batch_size", 8), ("grad_clip", 1.0), ("precision", "fp32")]
)
def test_optim_keys_are_refused_for_families_fitted_without_gradients(name, key, value):
    words = {"closed-form": "in closed form", "em": "by EM"}[FAMILIES[name].fit]
    for values in ({"model": name, key: value}, {"model": {"name": name}, "optim": {key: value}}):
        with pytest.raises(ConfigError, match=f"fitted {words}.*{key}"):
            RunConfig.from_dict(values)
    assert RunConfig.of(model=name, seed=5, device="cpu").optim.seed == 5  # the keys that do mean something


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"model": "dvae", "gumbel_temperature": 0.5, "gumbel_temperature_min": 0.9}, "gumbel_temperature_min"),
        ({"model": "arm", "arm": "pixelcnn", "arm_kernel": 4}, "odd"),
        ({"model": "vae", "free_bits": 0.5, "objective": "iwae"}, "free_bits"),
        ({"model": "vae", "free_bits": 0.5, "prior": "mog"}, "free_bits"),
    ],
)
def test_rules_between_keys(values, needle):
    with pytest.raises(ConfigError, match=needle):
        RunConfig.from_dict(values)


def test_the_device_key_takes_cuda_n_and_refuses_other_names():
    assert RunConfig.of(device="cuda:1").optim.device == "cuda:1"  # (was refused by the schema's choices)
    for bad in ("gpu", "cuda:", "cuda:x", "cuda:\u0661", "CPU"):
        with pytest.raises(ConfigError, match="choose auto, cpu, cuda or cuda:N"):
            RunConfig.of(device=bad)


def test_a_device_is_named_by_a_string_or_a_torch_device_and_a_module_without_tensors_is_on_the_cpu():
    from dgmkit.devices import device_of, resolve_device

    assert resolve_device(torch.device("cpu")) == resolve_device("cpu") == torch.device("cpu")
    for bad in (0, None, ["cpu"]):  # (torch.device(0) would be CUDA device 0)
        with pytest.raises(ConfigError, match=f"a device is named by a string .*got {type(bad).__name__}"):
            resolve_device(bad)
    assert device_of(torch.nn.ReLU()) == torch.device("cpu")
    holder = torch.nn.Module()
    holder.register_buffer("b", torch.zeros(1, device="meta"))
    assert device_of(holder) == torch.device("meta")  # a module of buffers only: theirs


def test_a_modules_precision_is_that_of_its_first_floating_tensor_past_integer_ones():
    from dgmkit.devices import dtype_of

    holder = torch.nn.Module()
    holder.register_buffer("index", torch.arange(3))  # (int64: no precision of the module's draws)
    assert dtype_of(holder) == torch.get_default_dtype()
    holder.register_buffer("scale", torch.ones(2, dtype=torch.float64))
    assert dtype_of(holder) == torch.float64
    holder.weight = torch.nn.Parameter(torch.zeros(2, dtype=torch.float16))  # parameters come first
    assert dtype_of(holder) == torch.float16


def test_a_modules_precision_is_read_off_its_first_floating_tensor_without_listing_the_others():
    """An AE, a WAE and a VQ-VAE ask dtype_of on every forward pass: it stops at the first
    floating tensor (a tuple of every parameter and buffer was built first, 30 to 75 us a call)."""
    from dgmkit.devices import dtype_of

    class Listed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

        def parameters(self, recurse=True):
            yield self.weight
            raise AssertionError("read past the first parameter")

    assert dtype_of(Listed()) == torch.float64


def test_sections_must_be_tables():
    for values in ([("model", "vae")], "vae", None, {"model": {"name": "vae"}, "extra": {}}):
        with pytest.raises(ConfigError):
            RunConfig.from_dict(values)


def test_given_keys_are_the_keys_a_table_sets_flat_or_in_sections():
    """What --resume and dgmkit.train read of a config file: its own keys, not the defaults of the rest."""
    assert RunConfig.given_keys({"epochs": 3, "latent_dim": 2}) == {"epochs": 3, "latent_dim": 2}
    sectioned = {"model": {"name": "flow", "flow": "maf"}, "optim": {"epochs": 3}, "eval": {"iw_samples": 2}}
    assert RunConfig.given_keys(sectioned) == {"model": "flow", "flow": "maf", "epochs": 3, "iw_samples": 2}
    assert RunConfig.given_keys({"model": "flow", "optim": {"epochs": 3}}) == {"model": "flow", "epochs": 3}
    for bad, needle in (
        ([("epochs", 3)], "expected a table of keys, got list"),
        ({"optim": {}, "extra": {}}, "unknown key(s) 'extra'"),
        ({"data": {}, "optim": [1]}, "[optim] must be a table of keys, got list"),
        ({"model": 3, "optim": {}}, "[model] must be a table of keys, got int"),
    ):
        with pytest.raises(ConfigError) as e:
            RunConfig.given_keys(bad, "c.toml")
        assert str(e.value).startswith("c.toml: ") and needle in str(e.value)


def test_a_long_unknown_key_or_model_name_and_many_unknown_keys_are_named_in_a_short_line():
    """A crafted file's key or model name of a megabyte was echoed whole, and 20000 unknown keys of a
    table each named with its closest name: one error line of megabytes."""
    long = "a" * 100_000
    for values, needle in (
        ({long: 1}, r"^config: unknown key\(s\) 'a{36}\.\.\.$"),
        ({"model": long}, r"^unknown model 'a{36}\.\.\.; choose from vae, "),
        (
            {"optim": {f"k{i}": 1 for i in range(1000)}},
            r"\(optim\): unknown key\(s\) 'k0', 'k1', 'k2', 'k3', 'k4' and 995 more$",
        ),
        ({"optim": {"epoch": 1}}, r"\(optim\): unknown key\(s\) 'epoch' \(did you mean 'epochs'\?\)$"),
    ):
        with pytest.raises(ConfigError, match=needle) as e:
            RunConfig.from_dict(values)
        assert len(str(e.value)) < 300


@pytest.mark.parametrize(
    "values",
    [
        {"model": {"name": "vae"}, "data": "digits"},
        {"model": {"name": "vae"}, "data": 3},
        {"model": {"name": "vae"}, "optim": [[1, 2], [3]]},
        {"model": [1], "data": {}},
    ],
)
def test_a_section_that_is_not_a_table_is_a_config_error(values):
    with pytest.raises(ConfigError):
        RunConfig.from_dict(values)


def test_a_flat_model_name_beside_a_table_is_a_config_error_or_understood():
    # a TOML file with `model = "ppca"` at the top and an [optim] table
    try:
        cfg = RunConfig.from_dict({"model": "ppca", "optim": {"seed": 1}})
    except ConfigError:
        return
    assert cfg.family == "ppca" and cfg.optim.seed == 1


@pytest.mark.parametrize("key", ["lr", "gaussian_scale", "beta"])
def test_a_huge_integer_for_a_float_key_is_a_config_error(key):
    with pytest.raises(ConfigError):
        RunConfig.of(**{key: 10**400})  # a JSON config may hold any integer


def test_replace_changes_keys_and_checks_them():
    cfg = RunConfig.of(model="vae", latent_dim=3, epochs=2, lr=1e-2)
    assert cfg.replace(epochs=5).optim.epochs == 5 and cfg.replace(epochs=5).model == cfg.model
    switched = cfg.replace(model="flow", flow="maf")
    assert switched.family == "flow" and switched.model.flow == "maf"
    assert switched.optim == cfg.optim and switched.data == cfg.data  # the common sections carry over
    with pytest.raises(ConfigError):
        cfg.replace(epochs=0)
    with pytest.raises(ConfigError):
        cfg.replace(model="ppca")  # the optim keys of a gradient run mean nothing to ppca
    assert cfg.optim.epochs == 2  # replace returns a copy


# --------------------------------------------------------------------------- settings


@dataclasses.dataclass
class Example:
    count: int = setting(3, "a count", min=1, max=10)
    rate: float = setting(0.5, "a rate", gt=0, lt=1)
    mode: Literal["a", "b"] = setting("a", "a choice")
    widths: list[int] = setting([4, 8], "sizes", min=1)
    limit: int | None = setting(None, "optional", min=0)
    flag: bool = setting(False, "a switch")
    label: str = setting("x", "a name")


def test_field_kind_reads_every_declared_type():
    hints = typing.get_type_hints(Example)
    kinds = {name: field_kind(tp) for name, tp in hints.items()}
    assert kinds == {
        "count": ("int", False),
        "rate": ("float", False),
        "mode": ("choice", False),
        "widths": ("list[int]", False),
        "limit": ("int", True),
        "flag": ("bool", False),
        "label": ("str", False),
    }
    assert field_kind(Literal["a", "b"] | None) == ("choice", True)
    assert choices_of(hints["mode"]) == ("a", "b")


def test_every_declared_key_has_a_known_kind_and_help():
    for cls in [*FAMILIES.values(), *SECTIONS.values()]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind, _ = field_kind(hints[f.name])
            assert kind in ("int", "float", "bool", "str", "choice", "list[int]")
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


def test_settings_check_ranges_and_copy_list_defaults():
    a, b = Example(), Example()
    a.widths.append(16)
    assert b.widths == [4, 8], "a list default is shared between instances"
    check(Example(count=10, rate=0.999, limit=0))
    for bad, needle in [
        ({"count": 0}, "count must be >= 1"),
        ({"count": 11}, "count must be <= 10"),
        ({"rate": 0}, "rate must be > 0"),
        ({"rate": 1.0}, "rate must be < 1"),
        ({"limit": -1}, "limit must be >= 0"),
        ({"mode": "c"}, "unknown mode 'c'"),
        ({"flag": 0}, "flag has the wrong type"),
        ({"label": 3}, "label has the wrong type"),
        ({"widths": [4, 0]}, "widths must be >= 1"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            check(Example(**bad))
    assert from_dict(Example, {"count": 2, "limit": None}, "t") == Example(count=2)
    with pytest.raises(ConfigError, match="t: unknown key.*'cuont'.*did you mean 'count'"):
        from_dict(Example, {"cuont": 2}, "t")
    with pytest.raises(ConfigError, match="expected a table"):
        from_dict(Example, [("count", 2)], "t")


# -------------------------------------------------------------------------------- CLI


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _clean_failure(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    assert err.startswith("dgm: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--model", "arm", "--hidden", "8"], ["--hidden", "not of arm"]),
        (["--model", "vae", "--arm", "made"], ["--arm", "arm model", "not of vae"]),
        (["--model", "vae", "--states", "3"], ["--states", "loglinear"]),
        (["--model", "ppca", "--lr", "0.1"], ["ppca", "closed form", "lr"]),
        (["--model", "loglinear", "--epochs", "3"], ["loglinear", "by EM", "epochs"]),
        (["--epochs", "0"], ["epochs must be >= 1"]),
        (["--lr", "nan"], ["lr must be a finite number"]),
        (["--model", "arm", "--arm", "pixelcnn", "--arm-kernel", "4"], ["odd"]),
        (["--prior", "gaussian"], ["unknown prior 'gaussian'", "vampprior"]),
        # --model=NAME picks the flags offered as --model NAME does (else a VAE was trained, --hidden and all)
        (["--model=arm", "--hidden", "8"], ["--hidden", "not of arm"]),
        (["--image-shape", "8"], ["image_shape takes H W or C H W, got [8]"]),
        # the MIWAE bound takes missing entries; a density of dequantized integers counts every entry
        (
            ["--objective", "miwae", "--likelihood", "gaussian", "--missing-rate", "0.2"],
            ["digits has missing entries", "not a density of dequantized values"],
        ),
    ],
)
def test_train_refuses_bad_settings_with_one_error_line(argv, needles, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(capsys, "train", *argv, "--dataset", "digits", "--quiet", "--out", out)
    _clean_failure(code, err, *needles)
    assert not out.exists(), "a refused config must leave no run folder"


def test_train_refuses_a_config_file_with_a_bad_key(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": "arm", "hidden": [8]}))
    code, _, err = _run(capsys, "train", "--config", cfg, "--out", tmp_path / "run")
    _clean_failure(code, err, "'hidden' is a key of the", "not of arm")


@pytest.mark.parametrize("form", [["--config", "{c}"], ["--config={c}"]])
def test_train_refuses_a_model_flag_that_contradicts_the_config_files(tmp_path, capsys, form):
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "flow"\n')
    argv = [a.format(c=cfg) for a in form]
    code, _, err = _run(capsys, "train", *argv, "--model", "arm", "--out", tmp_path / "run")
    _clean_failure(code, err, "--model arm contradicts the config file's model 'flow'")
    assert not (tmp_path / "run").exists()


def test_train_reads_its_config_file_once_and_refuses_one_changed_after_the_flags_were_offered(
    tmp_path, capsys, monkeypatch
):
    """The file's model chose which flags the command offers; a file changed after that (another
    model) is refused, not trained as the first model with the second file's keys; the run itself
    reads the file once, so what was checked is what is used."""
    import dgmkit.cli.train as cli_train

    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "flow"\ndataset = "digits"\nepochs = 1\nflow_layers = 2\n')
    reads, load = [], cli_train.load_config_file

    def counted(path):
        reads.append(path)
        if len(reads) == 2:  # the run's read, after the parse: another model by then
            cfg.write_text('model = "arm"\ndataset = "digits"\nepochs = 1\n')
        return load(path)

    monkeypatch.setattr(cli_train, "load_config_file", counted)
    code, _, err = _run(capsys, "train", "--config", cfg, "--quiet", "--out", tmp_path / "run")
    _clean_failure(code, err, "named the model 'flow' when the command was read, and now 'arm'")
    assert len(reads) == 2 and not (tmp_path / "run").exists()
    cfg.write_text('model = "flow"\ndataset = "digits"\nepochs = 1\nflow_layers = 2\n')
    reads.clear()
    monkeypatch.setattr(cli_train, "load_config_file", lambda path: reads.append(path) or load(path))
    code, _, err = _run(capsys, "train", "--config", cfg, "--quiet", "--out", tmp_path / "run2")
    assert code == 0, err
    assert len(reads) == 2  # one to offer the model's flags, one for the run
    # a flag given twice is its last value, as argparse keeps it (the first file's model was offered)
    other = tmp_path / "other.toml"
    other.write_text('model = "arm"\n')
    assert cli_train.family_from_argv(["train", "--config", str(other), "--config", str(cfg)]) == "flow"
    assert cli_train.family_from_argv(["train", "--model", "arm", "--model=flow"]) == "flow"


@pytest.mark.parametrize("argv", [["--epochs", "1.5"], ["--batch-size", "many"], ["--model", "gan"]])
def test_malformed_flags_are_one_line_user_errors(argv, tmp_path, capsys):
    code = main(["train", *argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    _clean_failure(code, err, "see dgm train --help")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def one_epoch_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--batch-size", "256", "--seed", "3", "--quiet"]
    code, _, err = _run(capsys, "train", *argv, "--epochs", "1", "--out", out)
    assert code == 0, err
    return out, argv


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--lr", "0.5"], "lr = 0.5"),
        (["--latent-dim", "3"], "latent_dim = 3"),
        (["--model", "flow"], "model = 'flow'"),
        (["--seed", "4"], "seed = 4"),
        (["--epochs", "2", "--batch-size", "64"], "batch_size = 64"),
    ],
)
def test_resume_with_a_contradicting_flag_changes_nothing(one_epoch_run, flags, needle, capsys):
    out, _ = one_epoch_run
    before = _files(out)
    code, _, err = _run(capsys, "train", "--resume", *flags, "--quiet", "--out", out)
    _clean_failure(code, err, "--resume", needle, "contradict")
    assert _files(out) == before, "a refused resume must leave the run folder byte for byte as it was"


def test_resume_with_the_same_values_or_more_epochs_continues(one_epoch_run, tmp_path, capsys):
    out, argv = one_epoch_run
    first = (out / "metrics.jsonl").read_text().splitlines()
    assert len(first) == 1
    # repeating the run's own settings is not a contradiction
    code, text, err = _run(capsys, "train", "--resume", *argv, "--epochs", "3", "--out", out)
    assert code == 0 and "resuming" in text, err
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3]
    assert lines[0] == first[0], "resuming rewrote the metrics of an epoch it did not train again"
    # a resumed run ends where the uninterrupted one does
    straight = tmp_path / "straight"
    code, _, err = _run(capsys, "train", *argv, "--epochs", "3", "--out", straight)
    assert code == 0, err
    resumed = [json.loads(s) for s in lines]
    uninterrupted = [json.loads(s) for s in (straight / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(resumed, uninterrupted):
        for key in ("train_loss", "train_elbo", "valid_elbo"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (key, a[key], b[key])
    for name in ("checkpoint.safetensors", "best.safetensors"):
        a, b = load_checkpoint(out / name)["model"], load_checkpoint(straight / name)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (
            f"{name} differs from the uninterrupted run's"
        )


@pytest.mark.parametrize("name", sorted(n for n, c in FAMILIES.items() if c.fit == "gradient"))
def test_trainer_options_pass_every_optim_setting_and_the_familys(name):
    """``dgm train`` and the benchmarks build their Trainers from ``trainer_options``: every
    optim setting must reach the Trainer under its own name, with the config's value, and the
    Trainer must accept all of it."""
    import inspect

    from dgmkit.config import trainer_options
    from dgmkit.training import (
        ChannelsLast,
        Compile,
        GraphStep,
        MovingAverage,
        Mutation,
        NormalisedGradients,
        Precision,
        StepGuard,
        TimeBudget,
        Trainer,
        TrainFor,
    )

    ema = 0.0 if name == "vqvae" else 0.99  # the VQ-VAE refuses it (its codebook is already an average)
    cfg = RunConfig.of(
        model=name,
        epochs=3,
        batch_size=7,
        lr=2e-3,
        seed=5,
        ema=ema,
        skip_grad_norm=10.0,
        grad_clip=5.0,
        skip_grad_factor=3.0,
        precision="fp32",
        compile=True,
        graph_step=True,
        channels_last=True,
        time_budget=60.0,
        train_for=600.0,
        mutation_rate=0.1,
    )  # fmt: skip  (normalise_gradients refuses grad_clip: test_training_parts sets it)
    opts = trainer_options(cfg)
    parts = {type(p): p for p in opts["parts"]}
    assert len(parts) == len(opts["parts"])  # one of each kind
    schedule = {"lr_schedule": "kind", "lr_decay": "decay", "lr_decay_every": "every", "lr_min": "minimum"}
    in_parts = {
        "grad_clip": (StepGuard, "clip"),
        "skip_grad_norm": (StepGuard, "skip_norm"),
        "skip_grad_factor": (StepGuard, "skip_factor"),
        "ema": (MovingAverage, "decay"),
        "precision": (Precision, "name"),
        "time_budget": (TimeBudget, "seconds"),
        "train_for": (TrainFor, "seconds"),
        "mutation_rate": (Mutation, "rate"),
    }
    for f in dataclasses.fields(SECTIONS["optim"]):
        value = getattr(cfg.optim, f.name)
        if f.name in schedule:  # these four make one LRSchedule, passed as lr_schedule
            assert getattr(opts["lr_schedule"], schedule[f.name]) == value, f.name
        elif f.name in ("compile", "graph_step", "channels_last"):
            assert {"compile": Compile, "graph_step": GraphStep, "channels_last": ChannelsLast}[f.name] in parts
        elif f.name == "normalise_gradients":
            assert (NormalisedGradients in parts) == value
        elif f.name == "ema" and not value:
            assert MovingAverage not in parts
        elif f.name in in_parts:
            kind, field = in_parts[f.name]
            assert getattr(parts[kind], field) == value, f.name
        else:
            assert opts[f.name] == value, f.name
    assert all(p in opts["parts"] for p in cfg.model.training_parts())
    accepted = set(inspect.signature(Trainer).parameters)
    assert set(opts) <= accepted, set(opts) - accepted


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"iw_k": 50}, "iw_k"),  # the elbo objective
        ({"samples": 4, "objective": "iwae"}, "samples"),
        ({"tc_weight": 3.0}, "tc_weight"),
        ({"prior_components": 10}, "prior_components"),  # the standard prior
        ({"pseudo_init": "data", "prior": "mog"}, "pseudo_init"),
        ({"flow_layers": 7}, "flow_layers"),  # neither a flow prior nor an IAF posterior
        ({"model": "hvae", "iw_k": 9}, "iw_k"),
        ({"model": "hvae", "flow": "nice"}, "flow"),
        ({"model": "helmholtz", "objective": "wake-sleep", "iw_k": 50}, "iw_k"),
        ({"model": "dvae", "objective": "reinforce", "anneal_rate": 0.001}, "anneal_rate"),
        ({"model": "dvae", "objective": "vimco", "gumbel_temperature": 2.0}, "gumbel_temperature"),
        ({"model": "dvae", "objective": "reinforce", "iw_k": 3}, "iw_k"),  # (VIMCO's draws)
        ({"model": "flow", "dequantization_samples": 4}, "dequantization_samples"),  # uniform dequantization
        ({"model": "flow", "flow": "maf", "flow_levels": 3}, "flow_levels"),  # a vector flow
        ({"model": "flow", "flow": "nice", "flow_blocks": 2}, "flow_blocks"),
        ({"model": "arm", "arm": "made", "channels": 8}, "channels"),  # the convolutional models' settings
        ({"model": "arm", "made_masks": 3}, "made_masks"),  # the default pixelcnn
        ({"model": "arm", "logistic_components": 3}, "logistic_components"),  # a bernoulli likelihood
        ({"model": "hvae", "res_width": 8}, "res_width"),  # not the residual posterior
        ({"model": "hvae", "posterior": "residual", "decoder_input": "bottom"}, "decoder_input"),  # its res_* layers
        ({"model": "hvae", "posterior": "residual", "encoder": "gated"}, "encoder"),
        ({"model": "hvae", "posterior": "residual", "activation": "tanh"}, "activation"),
        ({"model": "vqvae", "codebook_update": "gradient", "vq_decay": 0.9}, "vq_decay"),
        ({"gaussian_variance": "fixed"}, "gaussian_variance"),  # the bernoulli likelihood
        ({"model": "dvae", "likelihood": "gaussian", "student_min_df": 4.0}, "student_min_df"),
        ({"likelihood": "gaussian", "binarize": "dynamic"}, "binarize"),  # binary pixels are for a bernoulli likelihood
        ({"lr_min": 1e-5}, "lr_min"),  # the constant schedule never falls to its floor
        ({"missing_seed": 5}, "missing_seed"),  # nothing removed
        ({"encoder": "gated", "activation": "elu"}, "activation"),  # gated layers gate by a sigmoid
        ({"model": "ae", "encoder": "gated", "activation": "tanh"}, "activation"),
        ({"model": "dvae", "encoder": "gated", "activation": "tanh"}, "activation"),  # (gumbel-softmax: no baseline)
        ({"model": "hvae", "encoder": "gated", "activation": "silu"}, "activation"),  # the reference HVAE's networks
        ({"model": "pixelvae", "encoder": "gated", "activation": "elu"}, "activation"),  # and a gated PixelCNN decoder
        ({"model": "hvae", "architecture": "conv-hvae", "activation": "gelu"}, "activation"),
        ({"model": "hvae", "architecture": "conv-hvae", "encoder": "gated"}, "encoder"),  # its networks are its own
        ({"objective": "miwae", "beta": 0.5}, "beta"),  # the MIWAE bound weighs no KL term
        ({"objective": "miwae", "warmup": 10.0}, "warmup"),
        ({"model": "pixelvae", "architecture": "conv-hvae", "decoder": "conv"}, "decoder"),
    ],
)
def test_a_new_run_that_sets_what_its_choices_do_not_read_is_refused_before_it_writes(tmp_path, capsys, settings, key):
    """--iw-k 50 with the elbo objective, --prior-components 10 with the standard prior: trained
    without them, the run would not be the one asked for."""
    cfg = RunConfig.of(dataset="digits", **settings)
    with pytest.raises(ConfigError, match=f"^{key} = .* is read only with (--|an mlp or conv network)"):
        cfg.check_inert()
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    assert main(["train", "--dataset", "digits", *flags, "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]) == 1
    assert f"{key} = " in capsys.readouterr().err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag", [["--data-dir", "elsewhere"], ["--no-download"]])
def test_a_folder_setting_of_data_read_from_no_folder_is_refused_where_it_enters(tmp_path, capsys, monkeypatch, flag):
    """--data-dir and --no-download are of the datasets read from a folder: with the bundled
    digits or a data file (read from its path) they were taken silently and recorded; a later
    command's --data-dir of such a run likewise."""
    np.save(tmp_path / "x.npy", (np.random.default_rng(0).random((40, 16)) < 0.5).astype(np.float32))
    tiny = ["--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--quiet"]
    for data, read in (("digits", "read from no folder"), (str(tmp_path / "x.npy"), "read from its path")):
        out = tmp_path / "r"
        assert main(["train", "--dataset", data, *flag, *tiny, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"the dataset {data} is {read}" in err and "data_dir and download are of the datasets read from a" in err
        assert "binarized-mnist, mnist, fashion-mnist, frey-faces" in err and not out.exists()
    for name in FOLDER_DATASETS:  # (read from a folder: neither is refused before loading)
        RunConfig.of(dataset=name, data_dir=str(tmp_path), download=False).check_inert()
    RunConfig.of(dataset="digits").check_inert()
    run = tmp_path / "digits"
    assert main(["train", "--dataset", "digits", *tiny, "--out", str(run)]) == 0
    assert main(["eval", str(run), "--data-dir", str(tmp_path)]) == 1
    assert f"--data-dir is of datasets read from a folder; {run} was trained on digits, read from no folder" in (
        capsys.readouterr().err
    )
    monkeypatch.chdir(tmp_path)  # a run on another run's data takes it where that run's data are read from a folder
    codes = ["--codes-of", str(run), "--likelihood", "gaussian"]
    if flag[0] == "--data-dir":  # those of the run on the digits are not: refused as for that run
        assert main(["train", *codes, *flag, *tiny, "--out", str(tmp_path / "codes")]) == 1
        err = capsys.readouterr().err
        assert f"the data of this run are made from those of {run}, trained on digits, read from no folder" in err
        assert not (tmp_path / "codes").exists()
        return
    assert main(["train", *codes, *flag, *tiny, "--out", str(tmp_path / "codes")]) == 0
    assert not json.loads((tmp_path / "codes" / "config.json").read_text())["config"]["data"]["download"]


def test_a_resume_with_a_data_dir_of_data_read_from_no_folder_is_refused_not_recorded(tmp_path, capsys):
    """--resume --data-dir with the bundled digits or a data file was taken and recorded in
    config.json, unread (the new run's and a later command's --data-dir are refused); a run that
    recorded one before it was refused resumes as it was."""
    from dgmkit import api

    np.save(tmp_path / "x.npy", (np.random.default_rng(0).random((40, 16)) < 0.5).astype(np.float32))
    tiny = ["--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--quiet"]
    for data, read in (
        ("digits", "from no folder"),
        (str(tmp_path / "x.npy"), "from its path: a moved data file is named by --dataset"),
    ):
        out = tmp_path / Path(data).stem
        assert main(["train", "--dataset", data, *tiny, "--out", str(out)]) == 0
        assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--data-dir", str(tmp_path)]) == 1
        assert f"--data-dir is of datasets read from a folder; {out} was trained on {data}, read {read}" in (
            capsys.readouterr().err
        )
        with pytest.raises(ConfigError, match="--data-dir is of datasets read from a folder"):
            api.train(out, resume=True, epochs=2, data_dir=str(tmp_path), quiet=True)
        assert json.loads((out / "config.json").read_text())["config"]["data"]["data_dir"] is None
        assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--quiet"]) == 0


def test_a_setting_left_unread_that_a_config_file_set_is_named_with_the_file_and_the_flag_that_overrides_it(
    tmp_path, capsys
):
    preset = tmp_path / "preset.toml"
    preset.write_text('dataset = "digits"\nobjective = "iwae"\niw_k = 50\nhidden = [16]\nlatent_dim = 2\n')
    out = tmp_path / "r"
    assert main(["train", "--config", str(preset), "--objective", "elbo", "--epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"iw_k = 50 (from {preset}) is read only with --objective iwae or miwae" in err
    assert f"remove it from {preset} (or give --iw-k 5, its default), or choose --objective iwae or miwae" in err
    assert (
        main(["train", "--config", str(preset), "--objective", "elbo", "--iw-k", "7", "--epochs", "1", "--out", str(out)])
        == 1
    )
    assert (
        f"iw_k = 7 is read only with --objective iwae or miwae, which this vae run does not have: leave it out and remove "
        f"it from {preset}" in capsys.readouterr().err
    )
    for typed in (["--tc-weight", "6"], ["--gaussian-variance", "learned"]):  # a flag at its default, still not read
        assert main(["train", "--dataset", "digits", *typed, "--epochs", "1", "--out", str(out)]) == 1
        assert f"{typed[0][2:].replace('-', '_')} = " in capsys.readouterr().err and not out.exists()
    for model in ("flow", "ppca"):
        assert main(["train", "--dataset", "digits", "--model", model, "--binarize", "dynamic", "--out", str(out)]) == 1
        assert f"binarizing is for a bernoulli likelihood, and the {model} model scores the data's own levels" in (
            capsys.readouterr().err
        )
    assert main(["train", "--config", str(preset), "--objective", "elbo", "--iw-k", "5", "--epochs", "1", "--quiet",
                 "--out", str(out)]) == 0  # the flag of the default sets back the file's value  # fmt: skip


def test_conv_hvae_refuses_the_encoder_and_decoder_it_does_not_read(tmp_path, capsys):
    """architecture = conv-hvae builds its own gated networks: --encoder mlp (or gated, conv) and
    --decoder trained the very same weights as without them."""
    out = tmp_path / "r"
    argv = ["train", "--dataset", "digits", "--model", "hvae", "--architecture", "conv-hvae", "--hidden", "8", "8",
            "--latent-sizes", "2", "2", "--epochs", "1", "--quiet", "--out", str(out)]  # fmt: skip
    for typed in (["--encoder", "mlp"], ["--decoder", "gated"]):  # the reviewer's --encoder mlp: the default, given
        assert main([*argv, *typed]) == 1
        assert (
            f"{typed[0][2:]} = '{typed[1]}' is read only with --architecture default, which this hvae run does not have"
            in capsys.readouterr().err
        )
        assert not out.exists()
    for model in ("hvae", "pixelvae"):
        cfg = RunConfig.of(dataset="digits", model=model, architecture="conv-hvae")
        assert {"encoder", "decoder"} <= set(cfg.model.inert_settings()) and "conv-hvae networks" in cfg.model.describe()
        cfg.check_inert()  # left out: taken
        assert {"encoder", "decoder"}.isdisjoint(RunConfig.of(model=model).model.inert_settings())


def test_a_new_residual_hvae_refuses_the_stack_settings_it_does_not_read():
    """--posterior residual builds its layers from the res_* settings: --latent-sizes 3 3 3 and
    --hidden 7 trained the same model as without them."""
    for key, value in (("latent_sizes", [3, 3, 3]), ("hidden", [7])):
        cfg = RunConfig.of(dataset="digits", model="hvae", posterior="residual", **{key: value})
        with pytest.raises(ConfigError, match=f"^{key} = .* is read only with --posterior top-down, bottom-up or ladder"):
            cfg.check_inert()


def _typed_at_default_is_refused(tmp_path, capsys, settings: dict, typed: list[str]) -> None:
    """``typed``, a flag at its default, is refused by name in a new run of ``settings`` before it writes."""
    key = typed[0][2:].replace("-", "_").removeprefix("no_")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    out = tmp_path / "r"
    assert main(["train", "--dataset", "digits", *flags, *typed, "--epochs", "1", "--quiet", "--out", str(out)]) == 1
    assert f"{key} = " in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    "settings, typed",
    [
        ({}, ["--conv-channels", "32", "64"]),  # mlp networks
        ({"encoder": "gated", "decoder": "mlp"}, ["--conv-channels", "32", "64"]),
        ({"model": "hvae", "architecture": "conv-hvae"}, ["--conv-channels", "32", "64"]),  # its own gated convolutions
        ({"model": "hvae", "posterior": "residual"}, ["--conv-channels", "32", "64"]),  # its res_* networks
        ({"model": "hvae", "posterior": "residual"}, ["--init", "default"]),  # no dense layer outside a flow
        ({"model": "hvae", "posterior": "residual"}, ["--latent-scale", "softplus"]),  # scale_min and scale_max
    ],
)
def test_network_settings_given_at_their_default_where_no_network_reads_them_are_refused(tmp_path, capsys, settings, typed):
    """check_networks and validate refused conv_channels without conv networks, and init and latent_scale of the
    residual model, only at another value than the default: --conv-channels 32 64 with mlp networks was taken."""
    assert typed[0][2:].replace("-", "_") in RunConfig.of(**settings).model.inert_settings()
    _typed_at_default_is_refused(tmp_path, capsys, settings, typed)


def test_conv_channels_init_and_latent_scale_are_taken_where_a_network_reads_them():
    for settings in (
        {"encoder": "conv", "conv_channels": [8, 16]},
        {"decoder": "conv", "conv_channels": [32, 64]},
        {"model": "ae", "encoder": "conv", "decoder": "mlp", "conv_channels": [32, 64]},
        {"model": "hvae", "encoder": "conv", "conv_channels": [32, 64]},
        {"model": "pixelvae", "decoder": "conv", "conv_channels": [32, 64]},  # the condition map's network
        {"model": "hvae", "init": "he", "latent_scale": "softplus"},
        {"model": "hvae", "architecture": "conv-hvae", "init": "default", "latent_scale": "clipped-log-variance"},
    ):
        cfg = RunConfig.of(dataset="digits", **settings)
        assert not set(settings) & set(cfg.model.inert_settings())
        cfg.check_inert(None, [k for k in settings if k != "model"])


@pytest.mark.parametrize(
    "settings, typed",
    [
        ({"objective": "iwae"}, ["--free-bits", "0"]),  # the IWAE bound has no floor
        ({"prior": "mog"}, ["--free-bits", "0"]),  # (validate refuses another value)
        ({"posterior": "iaf"}, ["--free-bits", "0"]),
        ({"model": "hvae", "objective": "iwae"}, ["--free-bits", "0"]),
        ({"model": "hvae", "posterior": "bottom-up"}, ["--free-bits", "0"]),
        ({}, ["--table-input", "one-hot"]),  # the bernoulli likelihood: no table's columns
        ({"model": "wae", "likelihood": "gaussian"}, ["--table-input", "one-hot"]),
    ],
)
def test_free_bits_and_table_input_given_at_their_default_where_unread_are_refused(tmp_path, capsys, settings, typed):
    """validate refused free_bits, and LikelihoodSettings table_input, only at another value than the default:
    --objective iwae --free-bits 0 and --table-input one-hot of a bernoulli likelihood were taken."""
    assert typed[0][2:].replace("-", "_") in RunConfig.of(**settings).model.inert_settings()
    _typed_at_default_is_refused(tmp_path, capsys, settings, typed)
    for taken in (
        {"free_bits": 0.5},
        {"model": "hvae", "posterior": "ladder", "free_bits": 0.5},
        {"model": "hvae", "posterior": "residual", "free_bits": 0.0},
        {"likelihood": "mixed", "table_input": "one-hot"},
    ):
        RunConfig.of(**taken).check_inert(None, [k for k in taken if k != "model"])


@pytest.mark.parametrize(
    "settings, typed",
    [
        ({}, ["--lr-decay", "0.99"]),  # the constant schedule
        ({"lr_schedule": "cosine"}, ["--lr-decay-every", "1"]),
        ({}, ["--labels-seed", "none"]),  # no labels kept
        ({"model": "m2"}, ["--labels-seed", "none"]),
        ({}, ["--no-latent-draws"]),  # the run's own data
        ({"model": "m2"}, ["--no-active-latents"]),
    ],
)
def test_run_settings_given_at_their_default_where_unread_are_refused(tmp_path, capsys, settings, typed):
    """RunConfig refused lr_decay and lr_decay_every outside the exponential schedule, labels_seed without labels
    and latent_draws and active_latents without codes_of only at another value than the default: --lr-decay 0.99
    of the constant schedule, or --no-latent-draws of a run on its own data, was taken."""
    _typed_at_default_is_refused(tmp_path, capsys, settings, typed)
    for taken in (
        {"lr_schedule": "exponential", "lr_decay": 0.99, "lr_decay_every": 1},
        {"model": "m2", "labels": 100, "labels_seed": 0},
        {"model": "m2", "codes_of": "runs/m1", "latent_draws": False, "active_latents": False},
    ):
        RunConfig.of(**taken).check_inert(None, [k for k in taken if k != "model"])
    with pytest.raises(ConfigError, match="^latent_draws = False is read only with gradient training"):
        RunConfig.of(model="ppca", codes_of="runs/m1").check_inert(None, ["latent_draws"])  # fitted without batches


@pytest.mark.parametrize(
    "settings, read",
    [
        ({"encoder": "conv", "hidden": [64, 32]}, "its first entry (64, the dense layer of its conv networks)"),
        ({"model": "ae", "encoder": "conv", "hidden": [64, 32]}, "its first entry (64, "),
        ({"model": "wae", "encoder": "conv", "decoder": "conv", "hidden": [64, 32]}, "its first entry (64, "),
        ({"model": "dvae", "encoder": "conv", "hidden": [64, 32]}, "its first entry (64, "),
        (
            {"model": "dvae", "encoder": "conv", "objective": "reinforce", "hidden": [64, 32, 16]},
            "its first and last entries (64 and 16, the dense layer of its conv networks and the reinforce baseline's",
        ),
        (
            {"model": "hvae", "encoder": "conv", "latent_sizes": [4], "hidden": [64, 32, 16]},
            "first and last entries (64 and 16",
        ),
        ({"model": "pixelvae", "encoder": "conv", "hidden": [64, 32, 16]}, "first and last entries (64 and 16"),
        (
            {"model": "hvae", "architecture": "conv-hvae", "latent_sizes": [4], "hidden": [300, 200]},
            "its last entry (200, the width of the conv-hvae networks' dense layers)",
        ),
        ({"model": "pixelvae", "architecture": "conv-hvae", "hidden": [300, 200]}, "its last entry (200, "),
    ],
)
def test_a_new_run_whose_networks_read_only_some_entries_of_hidden_is_refused(settings, read):
    """--encoder conv --hidden 512 256 trained conv networks with one dense layer of 512: the 256
    was never read."""
    family = settings.get("model", "vae")
    cfg = RunConfig.of(dataset="digits", **settings)
    with pytest.raises(ConfigError, match=rf"^hidden = \[.*\]: this {family} run reads only ") as e:
        cfg.check_inert()
    assert read in str(e.value) and "and would train without the others: give --hidden " in str(e.value)
    cfg.replace(hidden=cfg.model.partly_read_settings()["hidden"].read(cfg.model.hidden)).check_inert()  # the fix


def test_activation_and_hidden_left_unread_are_refused_on_the_command_line_with_their_fix(tmp_path, capsys):
    """The gated networks (the gated PixelCNN's tanh * sigmoid among them) read no --activation, and
    conv networks only --hidden's first entry: trained without them, the run was not the one asked for."""
    out = tmp_path / "r"
    digits = ["train", "--dataset", "digits", "--epochs", "1", "--quiet", "--out", str(out)]
    assert main([*digits, "--model", "pixelvae", "--encoder", "gated", "--activation", "elu"]) == 1
    assert (
        "activation = 'elu' is read only with an mlp or conv network (--encoder, --decoder), --posterior ladder (of two "
        "or more layers) or --prior flow, which this pixelvae run does not have: leave it out" in capsys.readouterr().err
    )
    assert main([*digits, "--model", "arm", "--activation", "elu"]) == 1  # no setting of the autoregressive models
    assert "--activation is a setting of the vae" in capsys.readouterr().err
    assert main([*digits, "--encoder", "conv", "--hidden", "64", "32"]) == 1
    assert (
        "hidden = [64, 32]: this vae run reads only its first entry (64, the dense layer of its conv networks), and "
        "would train without the others: give --hidden 64, or choose an mlp or gated network (--encoder, --decoder), "
        "--posterior iaf or --prior flow" in capsys.readouterr().err
    )
    assert main([*digits, "--encoder", "conv", "--hidden", "512", "256"]) == 1  # the default, given: still unread
    assert "give --hidden 512, or choose" in capsys.readouterr().err and not out.exists()
    preset = tmp_path / "preset.toml"
    preset.write_text('dataset = "digits"\nencoder = "conv"\nhidden = [16, 8]\nlatent_dim = 2\n')
    assert main(["train", "--config", str(preset), "--epochs", "1", "--quiet", "--out", str(out)]) == 1
    assert (
        f"hidden = [16, 8] (from {preset}): this vae run reads only its first entry (16, the dense layer of its conv "
        f"networks), and would train without the others: set hidden = [16] in {preset} (or give --hidden 16), or "
        "choose an mlp or gated network (--encoder, --decoder)" in capsys.readouterr().err
    )
    # the default typed over the file's value sets it back, and conv networks read the default's first entry alone
    from_file = ["train", "--config", str(preset), "--epochs", "1", "--quiet", "--out", str(out)]
    assert main([*from_file, "--hidden", "512", "256"]) == 1
    assert "hidden = [512, 256]: this vae run reads only its first entry (512, " in capsys.readouterr().err
    assert main(["train", "--config", str(preset), "--epochs", "1", "--quiet", "--hidden", "16", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["model"]["hidden"] == [16]


def test_an_image_flow_refuses_the_activation_and_hidden_entries_it_does_not_read_once_the_data_are_known(tmp_path, capsys):
    """RealNVP and Glow of images have coupling networks of their own: hidden's first entry as their
    channels, and no activation of --activation; of data whose sides their levels do not divide they
    are vector flows, which read both."""
    import dgmkit

    out = tmp_path / "r"
    glow = ["train", "--dataset", "digits", "--model", "flow", "--flow", "glow", "--flow-layers", "1", "--epochs", "1",
            "--quiet", "--out", str(out)]  # fmt: skip
    assert main([*glow, "--hidden", "8", "8"]) == 1
    assert (
        "hidden = [8, 8]: this flow run reads only its first entry (8, the channels of the glow image flow's networks), "
        "and would train without the others: give --hidden 8, or choose a vector flow (--flow nice or maf)"
        in capsys.readouterr().err
    )
    assert main([*glow, "--hidden", "8", "--activation", "elu"]) == 1
    assert (
        "activation = 'elu' is read only with a vector flow (--flow nice or maf), which this flow run does not have: "
        "leave it out, or choose a vector flow (--flow nice or maf)" in capsys.readouterr().err
    )
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"^hidden = \[8, 8\]: this hybrid run reads only its first entry"):
        dgmkit.train(out, dataset="digits", model="hybrid", flow="realnvp", hidden=[8, 8], flow_layers=1, epochs=1)
    assert not out.exists()
    preset = tmp_path / "flow.toml"
    preset.write_text('dataset = "digits"\nmodel = "flow"\nflow = "glow"\nhidden = [8, 8]\nflow_layers = 1\n')
    assert main(["train", "--config", str(preset), "--epochs", "1", "--quiet", "--out", str(out)]) == 1
    assert f"hidden = [8, 8] (from {preset}): " in capsys.readouterr().err
    assert main([*glow, "--flow-levels", "4", "--hidden", "8", "8", "--activation", "elu"]) == 0  # 8x8: a vector flow
    assert json.loads((out / "config.json").read_text())["config"]["model"]["activation"] == "elu"
    capsys.readouterr()


def test_a_flow_of_continuous_data_refuses_logit_alpha_which_only_dequantized_data_pass_through(tmp_path, capsys):
    """--logit-alpha 0.2 on iris (standardized columns, no levels) trained weights identical to the
    default's: continuous data reach the flow without the logit."""
    out = tmp_path / "r"
    flags = ["--flow", "maf", "--hidden", "8", "--flow-layers", "1", "--epochs", "1", "--quiet", "--out", str(out)]
    for model in ("flow", "hybrid"):
        assert main(["train", "--dataset", "iris", "--model", model, "--logit-alpha", "0.2", *flags]) == 1
        assert (
            f"logit_alpha = 0.2 is read only with quantized data (integer levels), which this {model} run does not have: "
            "leave it out" in capsys.readouterr().err
        )
        assert not out.exists()
    cfg = RunConfig.of(model="flow", flow="maf", logit_alpha=0.2)
    with pytest.raises(ConfigError, match="^logit_alpha = 0.2 is read only with quantized data"):
        cfg.check_inert(event_shape=(1, 1, 4), num_levels=None)
    cfg.check_inert(event_shape=(1, 8, 8), num_levels=17)  # the digits' levels: dequantized, then the logit
    # what dgm report leaves out of the run's configuration: it listed "dequantization: uniform" for iris
    assert {"logit_alpha", "dequantization"} <= RunConfig.of(model="flow", flow="maf").unread_keys((1, 1, 4), None)
    assert not {"logit_alpha", "dequantization"} & RunConfig.of(model="flow", flow="maf").unread_keys((1, 8, 8), 17)
    cfg.check_inert()  # the data not yet known
    assert main(["train", "--dataset", "digits", "--model", "flow", "--logit-alpha", "0.2", *flags]) == 0
    capsys.readouterr()


def test_a_run_recorded_with_an_activation_or_hidden_entries_it_did_not_read_loads_and_goes_on(tmp_path):
    """The check is a new run's: a run trained before it keeps its record and goes on as it was."""
    import dgmkit
    from run_records import rewrite_records

    for flags, unread in (
        (["--encoder", "gated", "--hidden", "16"], {"activation": "elu"}),
        (["--encoder", "conv", "--hidden", "16"], {"hidden": [16, 8]}),
    ):
        run = tmp_path / flags[1]
        argv = ["train", "--dataset", "digits", *flags, "--latent-dim", "2", "--epochs", "1", "--quiet", "--out", str(run)]
        assert main(argv) == 0

        def older(record: dict, unread: dict = unread) -> dict:
            record["config"]["model"].update(unread)
            return record

        rewrite_records(run, older)
        assert all(getattr(dgmkit.load(run).cfg.model, k) == v for k, v in unread.items())
        assert main(["train", "--resume", "--epochs", "2", "--quiet", "--out", str(run)]) == 0


@pytest.mark.parametrize("model", ["arm", "flow", "ppca", "ae", "loglinear"])
def test_a_new_run_of_an_exact_or_densityless_family_refuses_iw_samples_as_dgm_eval_does(tmp_path, capsys, model):
    """dgm eval refuses --iw-samples for these runs; dgm train took it, recorded it, and it was never read."""
    with pytest.raises(ConfigError, match=f"^iw_samples = 7: the {model} model's log-likelihood is exact"):
        RunConfig.of(dataset="digits", model=model, iw_samples=7).check_inert()
    out = tmp_path / "r"
    assert main(["train", "--dataset", "digits", "--model", model, "--iw-samples", "7", "--out", str(out)]) == 1
    assert "iw_samples = 7: " in capsys.readouterr().err and not out.exists()


def test_a_flag_given_as_none_overrides_the_config_file_value_of_an_optional_setting(tmp_path, capsys):
    """--grad-clip none was taken as a flag left out: the file's 0.5 trained, and a preset's
    prior_components could be neither switched off nor left unread."""
    preset = tmp_path / "preset.toml"
    preset.write_text('dataset = "digits"\nhidden = [16]\nlatent_dim = 2\ngrad_clip = 0.5\npatience = 3\n'
                      'prior = "mog"\nprior_components = 3\n')  # fmt: skip
    out = tmp_path / "r"
    argv = ["train", "--config", str(preset), "--epochs", "1", "--quiet", "--out", str(out)]
    assert main([*argv, "--prior", "standard"]) == 1
    assert "(or give --prior-components none, its default)" in capsys.readouterr().err
    assert (
        main([*argv, "--grad-clip", "none", "--patience", "off", "--prior", "standard", "--prior-components", "none"]) == 0
    )
    optim, model = (json.loads((out / "config.json").read_text())["config"][k] for k in ("optim", "model"))
    assert optim["grad_clip"] is None and optim["patience"] is None and model["prior_components"] is None
    assert main(["train", "--resume", "--grad-clip", "none", "--epochs", "2", "--out", str(out)]) == 0  # the run's own
    assert main(["train", "--resume", "--grad-clip", "0.5", "--epochs", "2", "--out", str(out)]) == 1
    capsys.readouterr()


def test_a_list_flag_given_as_none_overrides_a_preset_list_and_none_stands_alone(capsys):
    """--layer-hidden none (its help: "list[int] or none") was refused ("takes list[int], got
    'none'"): the preset iwae-2layer-k50's layer_hidden [200, 100] could not be set back to its
    default, as the refusal of --latent-sizes 8 beside it needs."""
    from dgmkit.cli.main import _parse, build_parser
    from dgmkit.cli.train import resolve_config

    preset = str(Path(__file__).parents[1] / "configs" / "iwae-2layer-k50.toml")
    argv = ["train", "--config", preset, "--latent-sizes", "8", "--out", "unused"]
    args = _parse(build_parser(argv), [*argv, "--layer-hidden", "none"])
    assert resolve_config(args).model.layer_hidden is None
    with pytest.raises(ConfigError, match=r"layer_hidden \[200, 100\] needs one width per stochastic layer"):
        resolve_config(_parse(build_parser(argv), argv))
    for values in (["3", "none"], ["x"]):
        with pytest.raises(SystemExit):
            _parse(build_parser(argv), [*argv, "--layer-hidden", *values])
    assert "none stands alone" in capsys.readouterr().err


def test_what_a_choice_reads_or_a_default_given_is_taken_and_an_old_run_that_set_more_goes_on(tmp_path):
    for settings in (
        {"objective": "iwae", "iw_k": 50},
        {"prior": "mog", "prior_components": 10},
        {"posterior": "iaf", "flow_layers": 2},
        {"prior": "flow", "flow": "nice", "flow_layers": 2},
        {"iw_k": 5, "prior_components": None, "tc_weight": 6.0},  # the defaults, as a preset may list them
        {"model": "hvae", "objective": "iwae", "iw_k": 3},
        {"model": "hvae", "posterior": "residual", "prior": "flow", "activation": "tanh"},
        {"model": "helmholtz", "objective": "rws", "iw_k": 50},
        {"model": "dvae", "straight_through": True},
        {"model": "flow", "dequantization": "variational", "dequantization_samples": 4},
        {"model": "flow", "flow": "glow", "flow_levels": 3, "flow_blocks": 2},
        {"model": "arm", "arm": "made", "made_masks": 3, "made_random_order": True},
        {"model": "arm", "likelihood": "logistic", "logistic_components": 3},
        {"likelihood": "gaussian", "gaussian_variance": "fixed", "gaussian_min_scale": 0.05},
        {"model": "vqvae", "vq_decay": 0.9},
        {"binarize": "dynamic"},
        {"lr_schedule": "cosine", "lr_min": 1e-5},
        {"missing_rate": 0.1, "missing_seed": 3, "objective": "miwae"},
        {"objective": "iwae", "beta": 0.5, "warmup": 2.0},  # (miwae's bound weighs no KL term: refused above)
        {"objective": "tcvae", "beta": 2.0, "warmup": 2.0},
        {"iw_samples": 7},
        {"model": "flow", "dequantization": "variational", "iw_samples": 8},
        {"model": "m2", "iw_samples": 7},
        {"encoder": "gated", "activation": "relu"},  # the default, given
        {"encoder": "gated", "prior": "flow", "activation": "elu"},  # the flow prior's networks read it
        {"encoder": "gated", "posterior": "iaf", "activation": "elu"},
        {"encoder": "gated", "decoder": "mlp", "activation": "elu"},
        {"model": "hvae", "encoder": "gated", "posterior": "ladder", "activation": "elu"},  # its merge networks
        {"model": "dvae", "encoder": "gated", "objective": "reinforce", "activation": "elu"},  # its baseline b(x)
        {"model": "m2", "activation": "tanh"},
        {"encoder": "conv"},  # hidden's default [512, 256], not given: the conv networks read 512, as they always did
        {"encoder": "conv", "hidden": [64]},
        {"encoder": "conv", "posterior": "iaf", "hidden": [64, 32]},  # the IAF layers' networks read every entry
        {"encoder": "conv", "decoder": "mlp", "hidden": [64, 32]},
        {"model": "hvae", "encoder": "conv", "hidden": [64, 32, 16]},  # two layers: the networks between them
        {"model": "hvae", "encoder": "conv", "latent_sizes": [4], "hidden": [64, 16]},
        {"model": "dvae", "encoder": "conv", "objective": "reinforce", "hidden": [64, 16]},
        {"model": "flow", "flow": "glow", "hidden": [16, 16], "activation": "elu"},  # (the data decide: below)
    ):
        RunConfig.of(dataset="digits", **settings).check_inert()
    from run_records import rewrite_records

    run = tmp_path / "run"  # trained before the check: a run whose record sets what its prior does not read
    assert main(["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet",
                 "--out", str(run)]) == 0  # fmt: skip

    def older(record: dict) -> dict:
        record["config"]["model"]["prior_components"] = 10
        return record

    rewrite_records(run, older)
    assert main(["train", "--resume", "--epochs", "2", "--quiet", "--out", str(run)]) == 0
    for name in ("checkpoint.safetensors", "best.safetensors", "metrics.jsonl"):  # one stopped before a checkpoint
        (run / name).unlink()
    assert main(["train", "--resume", "--quiet", "--out", str(run)]) == 0  # started again from its own record
    assert (run / "checkpoint.safetensors").is_file()


def test_an_unread_setting_is_refused_before_data_parallel_processes_start(tmp_path, capsys):
    argv = ["train", "--dataset", "digits", "--nproc", "2", "--iw-k", "50", "--epochs", "1", "--out", str(tmp_path / "r")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("dgm: error: iw_k = 50 is read only with --objective iwae or miwae") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_a_runs_config_json_given_as_a_config_file_is_named_as_a_run_record(tmp_path, capsys):
    """--config RUN/config.json (or dgmkit.train(out, that path)) said "unknown key(s) 'config',
    'dgmkit_version', ...": it is a run's record, whose settings are one level down."""
    from dgmkit.cli.main import main
    from dgmkit.config import load_config_file

    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet",
                 "--out", str(run)]) == 0  # fmt: skip
    with pytest.raises(ConfigError, match=r"is a run's record \(config.json of a run folder\), not a config file"):
        load_config_file(run / "config.json")
    capsys.readouterr()
    assert main(["train", "--config", str(run / "config.json"), "--out", str(tmp_path / "again")]) == 1
    assert "a run's record" in capsys.readouterr().err
