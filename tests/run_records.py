"""Editing a run's records in a test: the run record stored in every checkpoint of a run folder
and in its config.json, changed alike (the commands compare the two)."""

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from dgmkit.training.checkpoint import content_sha256


def rewrite_records(folder: Path, edit: Callable[[dict], dict]) -> None:
    """``edit`` applied to the run record of every checkpoint in ``folder`` (tensors unchanged)
    and to its config.json."""
    for path in folder.glob("*.safetensors"):
        edit_metadata(path, lambda meta: meta.update(config=json.dumps(edit(json.loads(meta["config"])))))
    config = folder / "config.json"
    config.write_text(json.dumps(edit(json.loads(config.read_text()))))


def crafted_checkpoint(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    """The bytes of a checkpoint of ``tensors`` with the metadata ``meta`` and its checksum
    recomputed (as its format version defines it: over the metadata too from version 2): a
    crafted file, or one edited by hand, whose header's checksum agrees, so that what a test
    reaches are the checks behind the checksum."""
    meta = {k: v for k, v in meta.items() if k != "content_sha256"}
    covered = meta if str(meta.get("version", "")).isdigit() and int(meta["version"]) >= 2 else None
    return st_save(tensors, metadata={**meta, "content_sha256": content_sha256(tensors, covered)})


def _metadata(raw: bytes) -> dict:
    n = int.from_bytes(raw[:8], "little")
    return dict(json.loads(raw[8 : 8 + n])["__metadata__"])


def edit_metadata(path: Path, edit: Callable[[dict], None]) -> None:
    """``edit`` applied in place to the metadata table of the checkpoint ``path``, its checksum
    recomputed (the tensors unchanged): no check of the library's runs."""
    raw = path.read_bytes()
    meta = _metadata(raw)
    edit(meta)
    path.write_bytes(crafted_checkpoint(st_load(raw), meta))


def edit_tensors(path: Path, edit: Callable[[dict], object]) -> None:
    """``edit`` applied in place to the tensors (by name) of the checkpoint ``path``, its checksum
    recomputed (the metadata unchanged)."""
    raw = path.read_bytes()
    tensors = st_load(raw)
    edit(tensors)
    path.write_bytes(crafted_checkpoint(tensors, _metadata(raw)))
