"""Run records of earlier releases, brought to the current format.

A run record (``config.json``, and the same JSON in every checkpoint) is
``{"format": 5, "dgmkit_version", "config": {model, data, optim, eval}, "data": {...}}``.
dgmkit 0.1 wrote format 1 (no ``format`` key): one flat table of keys shared by every family.
Format 2 differs from 3 only in setting names that families have since changed (``renamed``:
the discrete VAE's ``temperature`` is now ``gumbel_temperature``). Format 3 differs from 4 in
what a default meant (``from_format_3``: a Gaussian diffusion's Fourier features were one
octave above VDM's; its runs keep theirs). Format 4 differs from 5 likewise (``from_format_4``:
a mixed likelihood's encoder read a table's categorical columns as indices, not one-hot).
Each family says which 0.1 configs were its own (``claims_v1``) and which of their keys it keeps
(``from_v1``), so this module needs to know no family.
"""

import dataclasses
import math
from collections.abc import Callable

from dgmkit.config.schema import SECTIONS, RunConfig
from dgmkit.errors import CheckpointError, ConfigError, shown_value
from dgmkit.families import FAMILIES, FamilyConfig

__all__ = ["FORMAT", "migrate_record", "config_from_v1", "check_record"]

FORMAT = 5
MAX_EVENT_SIZE = 2**24  # values in one datapoint of a run (4096 x 4096 grey pixels)
_V1_DEFAULT_IW_SAMPLES = 5000


def config_from_v1(flat: dict, source: str = "config") -> dict:
    """The sectioned config of a dgmkit 0.1 flat config."""
    tables = [k for k in ("model", *SECTIONS) if isinstance(flat.get(k), dict)]
    if tables:  # (a later format's record whose "format" key was removed or edited: not read as a flat one)
        raise CheckpointError(
            f'{source} is read as run format 1 (dgmkit 0.1\'s one flat table: its "format" key is 1 or missing), '
            f'but its config holds the tables {", ".join(tables)} of a later format: was its "format" key edited?'
        )
    owners = [cls for cls in FAMILIES.values() if cls.claims_v1(flat)]
    if len(owners) != 1:
        raise CheckpointError(
            f"{source}: model {str(flat.get('model'))[:40]!r} of a format-1 (flat) config is not known to this dgmkit"
        )
    family = owners[0]
    out = {"model": {"name": family.name, **family.from_v1(flat)}}
    for name, cls in SECTIONS.items():
        out[name] = {f.name: flat[f.name] for f in dataclasses.fields(cls) if f.name in flat}
    if family.fit != "gradient":
        out["optim"] = {k: v for k, v in out["optim"].items() if k in ("seed", "device")}
    if out["eval"].get("iw_samples") == _V1_DEFAULT_IW_SAMPLES:
        out["eval"]["iw_samples"] = None  # 0.1 stored its default; the family's default now applies
    return out


def _with_model_keys(config: dict, change: Callable[[type[FamilyConfig], dict], dict]) -> dict:
    """``config`` with its model keys as ``change`` (its family, the keys) gives them."""
    model = config.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    family = FAMILIES.get(name) if isinstance(name, str) else None
    if family is None or not isinstance(model, dict):
        return config  # RunConfig names what is wrong with it
    return {**config, "model": change(family, model)}


def _config_from_v2(config: dict) -> dict:
    return _with_model_keys(config, lambda family, keys: family.rename_keys(keys))


def _config_from_v3(config: dict, data: dict) -> dict:
    return _with_model_keys(config, lambda family, keys: family.from_format_3(keys, data))


def _config_from_v4(config: dict, data: dict) -> dict:
    return _with_model_keys(config, lambda family, keys: family.from_format_4(keys, data))


def migrate_record(record: object, source: str) -> dict:
    """The record in the current format, or CheckpointError naming what is wrong."""
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("config"), dict)
        or not isinstance(record.get("data"), dict)
    ):
        raise CheckpointError(
            f"{source} holds no dgmkit run record (config and data), which dgmkit.load and dgm read to rebuild "
            "the model. A Trainer writes it when given config=run_record(cfg, dataset, transform); the weights of a "
            "model composed by hand are read with dgmkit.training.load_checkpoint(path)['model'] and "
            "model.load_state_dict"
        )
    version = record.get("format", 1)
    if type(version) is int and version == FORMAT:
        return record
    if type(version) is int and version in (1, 2, 3, 4):
        config = record["config"]
        try:
            if version == 1:
                config = config_from_v1(config, source)
            elif version == 2:
                config = _config_from_v2(config)
            if version <= 3:
                config = _config_from_v3(config, record["data"])
            config = _config_from_v4(config, record["data"])
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:  # a family's keys of a crafted record
            raise CheckpointError(f"{source} holds a run record of format {version} that cannot be read ({e})") from None
        return {**record, "format": FORMAT, "config": config, "migrated_from": version}
    if isinstance(version, int) and version > FORMAT:
        raise CheckpointError(f"{source} was written by a newer dgmkit (run format {shown_value(version)}); upgrade dgmkit")
    raise CheckpointError(f"{source} has an unknown run format {shown_value(version)}")


def check_record(record: dict, source: str) -> RunConfig:
    """The RunConfig of a (migrated) record, with its data description checked."""
    try:
        cfg = RunConfig.from_dict(record["config"], source)
    except ConfigError as e:
        raise CheckpointError(f"{source} holds a config this dgmkit rejects: {e}") from None
    run_id = record.get("run_id")
    if run_id is not None and not (isinstance(run_id, str) and len(run_id) == 32 and run_id.isalnum() and run_id.isascii()):
        raise CheckpointError(f"{source}: run_id {str(run_id)[:40]!r} is not a run id of dgmkit")
    d = record["data"]
    name = d.get("name")
    if not (isinstance(name, str) and name):  # (what evaluations and OOD scores record as their dataset)
        raise CheckpointError(f"{source}: the data's name {repr(name)[:40]} is not a non-empty string")
    shape = d.get("event_shape")
    levels = d.get("num_levels")
    if not (isinstance(shape, list) and 1 <= len(shape) <= 4 and all(type(v) is int and 0 < v <= 2**16 for v in shape)):
        raise CheckpointError(f"{source}: event_shape {shown_value(shape)} is not a list of 1 to 4 positive sizes")
    if math.prod(shape) > MAX_EVENT_SIZE:  # (a model of convolutions takes any size: drawing one would not end)
        raise CheckpointError(f"{source}: event_shape {shape!r} holds more than {MAX_EVENT_SIZE} values a datapoint")
    if levels is not None and not (isinstance(levels, int) and not isinstance(levels, bool) and 2 <= levels <= 2**16):
        raise CheckpointError(f"{source}: num_levels {shown_value(levels)} is not an integer in 2..65536 or null")
    if not isinstance(d.get("transform"), str):
        raise CheckpointError(f"{source}: the data transform is missing")
    seen = record.get("value_range")
    floats = isinstance(seen, list) and len(seen) == 2 and all(type(v) is float and math.isfinite(v) for v in seen)
    if seen is not None and not (floats and seen[0] <= seen[1]):  # (floats, as written: an integer of 400 digits is none)
        raise CheckpointError(f"{source}: the data's value_range {str(seen)[:60]} is not [lowest, highest], finite numbers")
    if record.get("observed_only", True) is not True:  # (1 == True: "not in (None, True)" would take it)
        raise CheckpointError(f"{source}: observed_only {str(record['observed_only'])[:40]} is not true (or absent)")
    shown = record.get("labelled")
    if shown is not None and not (type(shown) is int and shown >= 0):
        raise CheckpointError(f"{source}: labelled {str(shown)[:40]} is not a count of training labels (or absent)")
    digest = d.get("sha256")
    if digest is not None and not (
        isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    ):
        raise CheckpointError(f"{source}: the data's sha256 {str(digest)[:70]!r} is not a SHA-256 digest")
    return cfg
