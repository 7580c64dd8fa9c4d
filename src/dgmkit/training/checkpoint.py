"""Checkpoints: one safetensors file holding the model, the optimizer and the RNG states, with
the run's config and trainer counters as JSON in its metadata. One file, written atomically, so
a checkpoint is always whole and consistent."""

import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from dgmkit._io import atomic_write_bytes
from dgmkit.errors import CheckpointError

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "read_metadata", "Checkpoint"]

FORMAT = "dgmkit-checkpoint"
VERSION = 1


class Checkpoint(dict):
    """A loaded checkpoint: ``model``, ``optimizer`` and ``rng`` tensor dicts, ``config`` and
    ``trainer`` dicts (the latter's keys are the trainer's counters)."""


def _flatten_optimizer(state: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, idx, key = name.split("/", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: os.PathLike | str,
    model: torch.nn.Module,
    config: dict,
    optimizer: torch.optim.Optimizer | None = None,
    rng: dict[str, torch.Tensor] | None = None,
    trainer: dict | None = None,
) -> None:
    tensors = {f"model/{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": str(VERSION), "config": json.dumps(config)}
    if optimizer is not None:
        t, m = _flatten_optimizer(optimizer.state_dict())
        tensors.update(t)
        meta["optimizer"] = json.dumps(m)
    for k, v in (rng or {}).items():
        tensors[f"rng/{k}"] = v.detach().cpu().contiguous()
    if trainer is not None:
        meta["trainer"] = json.dumps(trainer)
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def read_metadata(path: os.PathLike | str) -> dict:
    """The metadata of a dgmkit checkpoint; CheckpointError if it is missing, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
        meta = header.get("__metadata__") or {}
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dgmkit checkpoint")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path} was written by a newer dgmkit (format version {meta['version']})")
    return meta


def load_checkpoint(path: os.PathLike | str) -> Checkpoint:
    meta = read_metadata(path)
    try:
        tensors = st_load(Path(path).read_bytes())
        ckpt = Checkpoint(
            model={k[6:]: v for k, v in tensors.items() if k.startswith("model/")},
            rng={k[4:]: v for k, v in tensors.items() if k.startswith("rng/")},
            config=json.loads(meta["config"]),
            trainer=json.loads(meta["trainer"]) if "trainer" in meta else None,
            optimizer=None,
        )
        if "optimizer" in meta:
            opt = {k: v for k, v in tensors.items() if k.startswith("optim/")}
            ckpt["optimizer"] = _unflatten_optimizer(opt, json.loads(meta["optimizer"]))
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt payloads
        raise CheckpointError(f"{path} is corrupt: {e}") from None
    return ckpt
