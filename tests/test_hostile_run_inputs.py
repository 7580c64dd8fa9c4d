"""What a hostile pass over run folders as inputs found (a trained run's config.json and
checkpoints copied and damaged, then read by eval, sample, score, impute, report, compress and
train --resume): a config.json whose section was edited to another type ([model] a list) was said
to lack every one of that section's settings, and now says the section is not a table. The rest
(truncated, empty and pickled checkpoints; missing, extra, reshaped, relabelled, NaN and inf
tensors, re-hashed; another family's or size's checkpoint dropped in; config.json edited to
another latent size, family, format, unknown keys, wrong types, huge numbers, non-UTF-8, duplicate
keys, deep nesting; checkpoints that are links elsewhere, dangling links, FIFOs or folders; a run
folder that is a file; missing files) was refused in one line naming the file, without a change
to the folder, or read as documented."""

import json
import shutil

import pytest

from dgm_cli import dgm, refused
from dgmkit.cli.main import main

TINY = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--batch-size", "256", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


def _copy(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


@pytest.mark.parametrize("value", [[], 3])
def test_a_config_section_edited_to_another_type_is_named_not_said_to_lack_every_setting(trained, tmp_path, capsys, value):
    out = _copy(trained, tmp_path)
    record = json.loads((out / "config.json").read_text())
    record["config"]["model"] = value
    (out / "config.json").write_text(json.dumps(record))
    code, _, err = dgm(capsys, "eval", out)
    refused(code, err, f"{out / 'config.json'}", "[model] must be a table of keys")
    assert "lacks" not in err


def test_load_checkpoint_of_a_folder_or_a_special_file_says_what_is_there(tmp_path):
    """load_checkpoint (and read_metadata) of a run folder, or of a FIFO or device, said "no
    checkpoint at PATH", as of a path with nothing there."""
    from dgmkit.errors import CheckpointError
    from dgmkit.training import load_checkpoint

    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file .*dgmkit.load"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="/dev/null is not a regular file"):
        load_checkpoint("/dev/null")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "absent.safetensors")


def _rewrite(path, edit):
    """The checkpoint at ``path`` with its tensors changed by ``edit``, its SHA-256 recomputed (a
    crafted file, which the digest does not tell from one dgmkit wrote)."""
    import struct

    from safetensors.torch import load, save

    from dgmkit.training.checkpoint import content_sha256

    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8 : 8 + n])["__metadata__"]
    tensors = load(data)
    edit(tensors)
    meta["content_sha256"] = content_sha256(tensors, meta)
    path.write_bytes(save(tensors, metadata=meta))


@pytest.mark.parametrize("key", ["torch", "data"])
def test_a_random_state_of_another_size_is_named_as_such_not_as_a_misfit_of_model_and_optimizer(
    trained, tmp_path, capsys, key
):
    import torch

    out = _copy(trained, tmp_path)
    _rewrite(out / "checkpoint.safetensors", lambda t: t.update({f"rng/{key}": torch.zeros(5, dtype=torch.uint8)}))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = dgm(capsys, "train", "--resume", "--epochs", "2", "--out", out)
    refused(code, err, f"{out / 'checkpoint.safetensors'} holds a malformed random generator state: rng/{key} is 5 bytes")
    assert "model and optimizer" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
