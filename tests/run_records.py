"""Editing a run's records in a test: the run record stored in every checkpoint of a run folder
and in its config.json, changed alike (the commands compare the two)."""

import json
import struct
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
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            meta = dict(json.loads(f.read(n))["__metadata__"])
        meta["config"] = json.dumps(edit(json.loads(meta["config"])))
        path.write_bytes(st_save(st_load(path.read_bytes()), metadata=meta))
    config = folder / "config.json"
    config.write_text(json.dumps(edit(json.loads(config.read_text()))))


def crafted_checkpoint(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    """The bytes of a checkpoint of ``tensors`` with the metadata ``meta`` and the checksum of
    those tensors recomputed: a crafted file, or one edited by hand, whose header's checksum
    agrees, so that what a test reaches are the checks behind the checksum."""
    return st_save(tensors, metadata={**meta, "content_sha256": content_sha256(tensors)})


def edit_metadata(path: Path, edit: Callable[[dict], None]) -> None:
    """``edit`` applied in place to the metadata table of the safetensors file ``path`` (the
    header rewritten as it is, the tensors' bytes unchanged: no check of the library's runs)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    edit(header["__metadata__"])
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + raw[8 + n :])
