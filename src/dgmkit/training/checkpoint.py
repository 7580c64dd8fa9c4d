"""Checkpoints: one safetensors file holding the model, the optimizer and the RNG states (and
the moving average of the weights where a run keeps one), with the run's config and trainer
counters as JSON in its metadata. One file, written atomically, so
a checkpoint is always whole and consistent; its header records a SHA-256 of the tensors (their
names, dtypes, shapes and bytes) and of the rest of the metadata, so a file damaged afterwards (a
flipped bit in the weights or in a counter of the header's JSON, which the container format
itself does not notice) is refused when read.

Format versions: 2 (written now) records ``content_sha256`` over the tensors and the metadata and
must have it; 1 recorded it over the tensors alone where it recorded it at all (the earliest
checkpoints have none), and is still read, checked as far as it recorded."""

import hashlib
import io
import json
import math
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from dgmkit._io import atomic_write_bytes, parse_json
from dgmkit.errors import CheckpointError, DgmError

__all__ = [
    "FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
    "content_sha256",
    "record_of",
    "check_dtypes",
    "Checkpoint",
]

FORMAT = "dgmkit-checkpoint"
VERSION = 2
# The most bytes of a checkpoint's JSON header that are written or read. Python's json.loads takes some 26 times a
# header's size in memory for one crafted of small values ("[],[],..."); the header of a real checkpoint is its tensor
# table (some 110 bytes a tensor, times 4 or 5 with the optimizer's state and the moving average) and its record: 0.15 MB
# for the largest preset (hvae-residual-cpu-hour), 6.5 MB for a Glow of 512 steps of 4 residual blocks each.
MAX_HEADER_BYTES = 16 << 20


class Checkpoint(dict):
    """A loaded checkpoint: ``model``, ``optimizer``, ``rng`` and ``ema`` (the averaged
    parameters by name; empty without) tensor dicts, ``config`` and ``trainer`` dicts (the
    latter's keys are the trainer's counters), and ``digest``: the first 16 hex digits of the
    SHA-256 of the bytes all of it was read from."""


def _flatten_optimizer(state: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}/{key}"] = value
    # a learning rate held as a tensor (``--graph-step`` changes it in place on the device) is kept as the number
    groups = [{k: float(v) if torch.is_tensor(v) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, idx, key = name.split("/", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    groups = meta["param_groups"]
    if not isinstance(groups, list) or not all(isinstance(g, dict) and all(_plain(v) for v in g.values()) for g in groups):
        raise ValueError("param_groups must be a list of tables of finite numbers, names and flags")
    return {"state": state, "param_groups": groups}


def _plain(v: object) -> bool:
    """A JSON value an optimizer's parameter group may hold: finite numbers (or lists of them),
    flags, names, null."""
    if isinstance(v, list):
        return all(_plain(u) and not isinstance(u, list) for u in v)
    if isinstance(v, float):
        return math.isfinite(v)
    return v is None or isinstance(v, (bool, int, str))


def content_sha256(tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> str:
    """The SHA-256 of a checkpoint's tensors by name, in name order: each one's name, dtype, shape
    and bytes (not the container's layout, which the safetensors library chooses); with ``meta``
    (format version 2), first each metadata key and value in key order, but ``content_sha256``."""
    h = hashlib.sha256()
    for key, value in sorted((meta or {}).items()):
        if key != "content_sha256":
            h.update(json.dumps([key, value]).encode() + b"\0")  # (JSON: no key can end where a value starts)
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def save_checkpoint(
    path: os.PathLike | str,
    model: torch.nn.Module,
    config: dict,
    optimizer: torch.optim.Optimizer | None = None,
    rng: dict[str, torch.Tensor] | None = None,
    trainer: dict | None = None,
    ema: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write ``model``'s state dict (and what else is given: the optimizer's state, random
    states, the trainer's counters, the moving average) to ``path`` atomically, with ``config``
    (a JSON-able dict: the run record where ``dgmkit.load`` is to read it back) in its metadata.
    A model composed by hand is saved like any other; ``load_checkpoint(path)["model"]`` gives
    the state dict back for ``model.load_state_dict``."""
    tensors = {f"model/{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": str(VERSION), "config": json.dumps(config)}
    if optimizer is not None:
        t, m = _flatten_optimizer(optimizer.state_dict())
        tensors.update(t)
        meta["optimizer"] = json.dumps(m)
    for k, v in (rng or {}).items():
        tensors[f"rng/{k}"] = v.detach().cpu().contiguous()
    for k, v in (ema or {}).items():
        tensors[f"ema/{k}"] = v.detach().cpu().contiguous().clone()
    if trainer is not None:
        meta["trainer"] = json.dumps(trainer)
    meta["content_sha256"] = content_sha256(tensors, meta)
    data = st_save(tensors, metadata=meta)
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:  # (written, it could not be read back: refused before it replaces a checkpoint)
        raise CheckpointError(
            f"cannot write {path}: its header (the table of its {len(tensors)} tensors and the run record) would be "
            f"{n:,} bytes, more than the {MAX_HEADER_BYTES / 2**20:g} MiB a checkpoint may have; a model of "
            "fewer layers or blocks has fewer tensors"
        )
    atomic_write_bytes(path, data)


def read_metadata(path: os.PathLike | str, data: bytes | None = None) -> dict:
    """The metadata of a dgmkit checkpoint (every value a string); CheckpointError if it is
    missing, corrupt or foreign. Reads only the header: its declared length is checked against
    the file's size and ``MAX_HEADER_BYTES`` before it is read. ``data``: the file's bytes, already read (then the file
    is not opened again, and ``path`` only names it in errors)."""
    path = Path(path)
    if data is None and not path.is_file():
        if path.is_dir():
            raise CheckpointError(f"{path} is a folder, not a checkpoint file (a run folder is read by dgmkit.load)")
        there = os.path.lexists(path)  # (a FIFO, a device, a link to nothing: something, but no file to read)
        raise CheckpointError(f"{path} is not a regular file: not a checkpoint" if there else f"no checkpoint at {path}")
    try:
        with open(path, "rb") if data is None else io.BytesIO(data) as f:
            size = os.fstat(f.fileno()).st_size if data is None else len(data)
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{size} bytes, too short")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                torch_save = head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"  # (a zip or a pickle)
                hint = ": a torch.save file? dgmkit reads safetensors and never unpickles one" if torch_save else ""
                raise ValueError(f"its header claims {n} bytes in a file of {size}{hint}")
            if n > MAX_HEADER_BYTES:  # (refused unread: parsed, it would take some 26 times its size in memory)
                raise ValueError(f"its header is {n} bytes, more than the {MAX_HEADER_BYTES / 2**20:g} MiB a checkpoint has")
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({e})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(f"{path} is not a dgmkit checkpoint (no metadata table of strings)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dgmkit checkpoint")
    version = meta.get("version", "")
    if not (version.isascii() and version.isdigit()) or len(version) > 6:  # ("²" is a digit to isdigit, not to int)
        raise CheckpointError(f"{path} has a malformed format version {version[:20]!r}")
    if int(version) > VERSION:
        raise CheckpointError(f"{path} was written by a newer dgmkit (format version {version})")
    return meta


def record_of(meta: dict, path: Path) -> dict:
    """The run record in a checkpoint's metadata ``meta`` (``read_metadata`` of ``path``)."""
    if "config" not in meta:
        raise CheckpointError(f"{path} holds no run record")
    return _json_field(meta, "config", path)


def trainer_counters(path: os.PathLike | str) -> dict | None:
    """The trainer's counters a checkpoint records (its ``trainer`` metadata: the epochs done,
    the best score and its epoch, the place in an unfinished epoch), read from the header alone;
    None where there are none or they cannot be read (a foreign or damaged file, a record
    without an integer ``epoch``)."""
    try:
        return counters_in(read_metadata(path))
    except DgmError:
        return None


def counters_in(meta: dict) -> dict | None:
    """``trainer_counters`` of a checkpoint's header metadata already read (``read_metadata``)."""
    try:
        return counters_or_none(parse_json(meta.get("trainer") or "null"))
    except ValueError:
        return None


def counters_or_none(t: object) -> dict | None:
    """A checkpoint's trainer counters where they hold a whole ``epoch`` >= 0, else None (a count
    of epochs that is none, as -5 in a forged file, is not written into a result as trained)."""
    return t if isinstance(t, dict) and type(t.get("epoch")) is int and 0 <= t["epoch"] < 2**62 else None


def _json_field(meta: dict, key: str, path: Path) -> dict:
    try:
        value = parse_json(meta[key])
    except ValueError:
        raise CheckpointError(f"{path}: its {key} metadata is not valid JSON") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: its {key} metadata is not a dict")
    return value


def check_dtypes(model: torch.nn.Module, state: dict, source: os.PathLike | str) -> None:
    """A checkpoint's tensors must have the dtypes of the model's own: ``load_state_dict`` would
    convert them silently (float bits relabelled as int32 become other numbers)."""
    own = model.state_dict()
    other = [k for k, v in state.items() if k in own and torch.is_tensor(v) and v.dtype != own[k].dtype]
    if other:
        k = other[0]
        raise CheckpointError(
            f"{source}: {len(other)} tensors of another dtype than the model's (e.g. {k}: {state[k].dtype}, "
            f"the model's {own[k].dtype}); not a checkpoint of this model"
        )


def _check_sha256(path: Path, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    recorded = meta.get("content_sha256")
    if int(meta["version"]) >= 2:
        if recorded is None:
            raise CheckpointError(f"{path} is corrupt: its header records no SHA-256 (format version 2 has one)")
        if content_sha256(tensors, meta) != recorded:
            raise CheckpointError(
                f"{path} is corrupt: its tensors or metadata do not match the SHA-256 its header records (the file "
                "was changed or damaged after it was written)"
            )
    elif recorded is not None and content_sha256(tensors) != recorded:  # (version 1: over the tensors, if at all)
        raise CheckpointError(
            f"{path} is corrupt: its tensors do not match the SHA-256 its header records (the file was changed or "
            "damaged after it was written)"
        )


def load_checkpoint(path: os.PathLike | str) -> Checkpoint:
    """The ``Checkpoint`` at ``path`` (``checkpoint.safetensors`` or ``best.safetensors`` of a run
    folder, or a file of ``save_checkpoint``), every part checked; ``CheckpointError`` naming what
    is wrong with a file that is not one."""
    path = Path(path)
    read_metadata(path)  # (a foreign file is refused by its header before the whole of it is read)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    # every part from these bytes, read once: a file replaced meanwhile (a run trained on) cannot
    # give a record of one checkpoint with the tensors or the digest of another
    meta = read_metadata(path, data)
    config = record_of(meta, path)
    trainer = _json_field(meta, "trainer", path) if "trainer" in meta else None
    optim_meta = _json_field(meta, "optimizer", path) if "optimizer" in meta else None
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types for corrupt payloads
        raise CheckpointError(f"{path} is corrupt: {e}") from None
    _check_sha256(path, meta, tensors)
    ckpt = Checkpoint(
        digest=hashlib.sha256(data).hexdigest()[:16],
        model={k[6:]: v for k, v in tensors.items() if k.startswith("model/")},
        rng={k[4:]: v for k, v in tensors.items() if k.startswith("rng/")},
        ema={k[4:]: v for k, v in tensors.items() if k.startswith("ema/")},
        config=config,
        trainer=trainer,
        optimizer=None,
    )
    if optim_meta is not None:
        opt = {k: v for k, v in tensors.items() if k.startswith("optim/")}
        try:
            ckpt["optimizer"] = _unflatten_optimizer(opt, optim_meta)
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path} holds a malformed optimizer state ({type(e).__name__}: {e})") from None
    return ckpt
