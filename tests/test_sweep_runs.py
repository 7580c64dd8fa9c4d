"""What a mutation sweep of the run folder's writer (training/run_writer.py) found unchecked: which
folder counts as a run stopped before its first checkpoint, what a refusal lists, which tensors
the non-finite check reads, and which files are a run's own."""

import pytest
import torch
from torch import nn

from dgmkit.errors import CheckpointError, DgmError, TrainingError
from dgmkit.training.run_writer import (
    LOCK_NAME,
    RUN_FILES,
    RunFolder,
    RunWriter,
    new_run_id,
    nonfinite_state,
    read_run_file,
    results_lock,
    run_files,
)


def _started(folder, epochs: int = 1, best_epoch: int | None = 1) -> RunWriter:
    """A run of a linear model with ``epochs`` metrics lines and a best of ``best_epoch`` (None: none), no checkpoint."""
    writer = RunWriter(folder, {"run_id": new_run_id(), "model": "linear"})
    writer.start()
    for epoch in range(1, epochs + 1):
        writer.metrics({"epoch": epoch, "loss": 1.0 / epoch})
    if best_epoch is not None:
        writer.checkpoint(nn.Linear(2, 1), "best.safetensors", counters={"epoch": best_epoch})
    return writer


def test_a_stranded_start_is_one_epoch_of_its_own_run_and_nothing_more(tmp_path):
    _started(tmp_path / "one", best_epoch=None)
    assert RunFolder(tmp_path / "one", fresh=False).stranded_start()
    _started(tmp_path / "two-lines", epochs=2, best_epoch=None)  # a second epoch ended: its checkpoint is gone
    assert not RunFolder(tmp_path / "two-lines", fresh=False).stranded_start()
    _started(tmp_path / "best-of-one")  # best weights come after a checkpoint: there was one
    assert not RunFolder(tmp_path / "best-of-one", fresh=False).stranded_start()
    _started(tmp_path / "no-config")
    (tmp_path / "no-config" / "config.json").unlink()  # metrics and a best alone are no run's start
    assert not RunFolder(tmp_path / "no-config", fresh=False).stranded_start()


@pytest.mark.parametrize("extra, shown", [(0, "a, b, c, d)"), (1, "a, b, c, d and 1 more)")])
def test_a_refused_folder_lists_four_of_its_entries_and_counts_the_rest(tmp_path, extra, shown):
    for name in "abcde"[: 4 + extra]:
        (tmp_path / name).write_text("")
    with pytest.raises(DgmError) as refusal:
        RunFolder(tmp_path, fresh=True).check_fresh()
    assert f"(it holds {shown}: a new run needs a new or empty folder" in str(refusal.value)


def test_a_failed_write_after_the_first_checkpoint_leaves_the_run_as_it_was(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunFolder(folder, fresh=True):
            writer = _started(folder)
            writer.checkpoint(nn.Linear(2, 1), counters={"epoch": 1})
            raise RuntimeError("killed after the first checkpoint")
    names = {"config.json", "metrics.jsonl", "best.safetensors", "checkpoint.safetensors"}
    assert {p.name for p in folder.iterdir()} >= names


def test_a_nonfinite_moving_average_is_named_and_no_checkpoint_is_written(tmp_path):
    model = nn.Linear(2, 1)
    ema = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert nonfinite_state(model, ema=ema) is None
    ema["bias"][0] = float("inf")
    assert nonfinite_state(model, ema=ema) == "the moving average of the model's bias"
    writer = RunWriter(tmp_path, {"run_id": new_run_id()})
    with pytest.raises(TrainingError, match="moving average of the model's bias holds NaN or inf"):
        writer.checkpoint(model, ema=ema)
    assert not (tmp_path / "checkpoint.safetensors").exists()
    with torch.no_grad():
        model.weight[0, 1] = float("nan")
    assert nonfinite_state(model, ema=ema) == "the model's weight"


def test_a_runs_own_files_include_the_lock_of_each_results_file(tmp_path):
    assert results_lock("eval.json") == ".eval.lock" and results_lock("cluster.json") == ".cluster.lock"
    names = [p.name for p in run_files(tmp_path)]
    jsons = [n for n in RUN_FILES if n.endswith(".json")]
    assert names == [*RUN_FILES, LOCK_NAME, *(f".{n[:-5]}.lock" for n in jsons)]
    assert ".config.lock" in names and ".impute.lock" in names and ".metrics.lock" not in names


def test_a_run_file_of_exactly_the_limit_is_read_and_one_byte_more_is_refused(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"x" * (2 << 20))
    assert read_run_file(path, 2 << 20) == b"x" * (2 << 20)
    path.write_bytes(b"x" * ((2 << 20) + 1))
    with pytest.raises(CheckpointError, match="larger than 2 MiB"):
        read_run_file(path, 2 << 20)
