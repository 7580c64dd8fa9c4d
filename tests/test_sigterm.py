"""A SIGTERM (a scheduler's time limit, a preemption, ``kill``) stops a run at the end of the
step with a checkpoint of its place, then ends the process as the signal would have; the run
resumed from that checkpoint ends bit for bit as the uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGTERM is a POSIX signal")

REPO = Path(__file__).resolve().parents[1]

# the same trainer in the test and in the process that is sent SIGTERM (the signal at ``update``
# of step ``kill_at``, before that step: the run stops after it)
MAKE = """
import os, signal
from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import load_dataset, make_transform
from dgmkit.training import MovingAverage, Trainer

def make(run_dir, kill_at=None):
    digits = load_dataset("digits")
    cfg = RunConfig.of(dataset="digits", hidden=[16], latent_dim=3, batch_size=64, epochs=3, seed=5, device="cpu")
    objective = build_objective(cfg)
    if kill_at is not None:
        update = objective.update
        def update_and_signal(step):
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGTERM)
            update(step)
        objective.update = update_and_signal
    return Trainer(
        build_model(cfg, digits.event_shape, digits.num_levels), objective, digits.train,
        make_transform("bernoulli", digits), valid=digits.valid, epochs=3, batch_size=64, seed=5, run_dir=run_dir,
        progress=False, device="cpu", parts=[MovingAverage(0.9)],
    )
"""


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))


def _run(script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", MAKE + script], env=_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def _make(run_dir: Path, kill_at: int | None = None):
    scope: dict = {}
    exec(MAKE, scope)
    return scope["make"](run_dir, kill_at)


def _metrics(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if k not in ("time_s", "images_per_s")} for m in lines]


@pytest.mark.parametrize(
    "kill_at, where",
    [(25, "in epoch 2 after step 7 of 19"), (18, "after epoch 1")],  # (19 steps an epoch; 18: in its last step)
    ids=["within-an-epoch", "in-an-epoch-s-last-step"],
)
def test_a_run_sent_sigterm_checkpoints_its_place_ends_by_the_signal_and_resumes_bit_for_bit(tmp_path, kill_at, where):
    run = tmp_path / "stopped"
    proc = _run(f"make({str(run)!r}, kill_at={kill_at}).fit()\nprint('fit returned')")
    assert proc.returncode == -signal.SIGTERM, proc.stdout + proc.stderr
    assert "fit returned" not in proc.stdout  # (the process ended as the signal ends it)
    assert f"SIGTERM: stopped {where}, with a checkpoint in {run}; --resume goes on" in proc.stderr
    t = _make(run)
    t.resume()
    assert t.step == kill_at + 1
    t.fit()
    whole = tmp_path / "whole"
    _make(whole).fit()
    a, b = load_file(str(whole / "checkpoint.safetensors")), load_file(str(run / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(run) == _metrics(whole)


def test_a_handler_of_the_caller_s_is_left_to_handle_sigterm(tmp_path):
    run = tmp_path / "run"
    script = (
        "import signal\ncalls = []\nsignal.signal(signal.SIGTERM, lambda *a: calls.append(1))\n"
        f"t = make({str(run)!r}, kill_at=5)\nt.fit()\nprint('epochs', t.epoch, 'calls', len(calls))\n"
    )
    proc = _run(script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "epochs 3 calls 1" in proc.stdout and "SIGTERM" not in proc.stderr


def test_dgm_train_sent_sigterm_says_where_it_stopped_and_resumes(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "dgmkit.cli.main", "train", "--dataset", "digits", "--epochs", "1000", "--hidden", "16",
            "--latent-dim", "2", "--quiet", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(argv, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.safetensors").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM, stdout + stderr
    assert "WARNING SIGTERM: stopped " in stderr and f"with a checkpoint in {out}; --resume goes on" in stderr
    done = len((out / "metrics.jsonl").read_text().splitlines())
    resumed = subprocess.run(
        [*argv[:4], "--resume", "--epochs", str(done + 1), "--quiet", "--out", str(out)],
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [m["epoch"] for m in _metrics(out)] == list(range(1, done + 2))


def test_a_run_without_a_folder_is_ended_by_sigterm_at_once(tmp_path):
    """No folder, no checkpoint to write: the signal keeps its default action."""
    proc = _run("t = make(None, kill_at=5)\nt.fit()\nprint('fit returned')")
    assert proc.returncode == -signal.SIGTERM and "fit returned" not in proc.stdout
    assert "SIGTERM" not in proc.stderr and list(tmp_path.iterdir()) == []
