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

from dgmkit._io import shell_path

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGTERM is a POSIX signal")

REPO = Path(__file__).resolve().parents[1]

# the same trainer in the test and in the process that is sent SIGTERM (the signal at ``update``
# of step ``kill_at``, before that step: the run stops after it)
MAKE = """
import os, signal
from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import load_dataset, make_transform
from dgmkit.training import MovingAverage, Trainer

def make(run_dir, kill_at=None, epochs=3, callbacks=()):
    digits = load_dataset("digits")
    cfg = RunConfig.of(dataset="digits", hidden=[16], latent_dim=3, batch_size=64, epochs=epochs, seed=5, device="cpu")
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
        make_transform("bernoulli", digits), valid=digits.valid, epochs=epochs, batch_size=64, seed=5, run_dir=run_dir,
        progress=False, device="cpu", parts=[MovingAverage(0.9)], callbacks=list(callbacks),
    )
"""


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))


def _run(script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", MAKE + script], env=_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


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
    assert f"SIGTERM: stopped {where}, with a checkpoint in {run}; resuming goes on from it" in proc.stderr
    # each run in a process of its own, alike (this one's threads and global state are other tests')
    resumed = _run(f"t = make({str(run)!r})\nt.resume()\nassert t.step == {kill_at + 1}\nt.fit()")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    whole = tmp_path / "whole"
    assert _run(f"make({str(whole)!r}).fit()").returncode == 0
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
    assert "WARNING SIGTERM: stopped " in stderr and f"with a checkpoint in {out}; resuming goes on from it" in stderr
    assert stderr.rstrip().endswith(f"resuming goes on from it: dgm train --resume --out {shell_path(out)}"), stderr
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


def test_a_sigterm_in_the_last_step_of_a_run_ends_it_after_its_files_and_says_so(tmp_path):
    proc = _run(f"make({str(tmp_path / 'run')!r}, kill_at=56).fit()")  # (57 steps in 3 epochs)
    assert proc.returncode == -signal.SIGTERM and "SIGTERM: the run had ended (epoch 3), its files written" in proc.stderr
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3


def test_an_error_after_a_sigterm_is_raised_as_it_is_not_hidden_by_the_signal(tmp_path):
    """The SIGTERM came in epoch 1's last step; epoch 1's callback fails: the error ends the run, and says so."""

    script = (
        "def fail(trainer, metrics):\n    raise RuntimeError('a callback failed')\n"
        f"make({str(tmp_path / 'run')!r}, kill_at=18, callbacks=[fail]).fit()\n"
    )
    proc = _run(script)
    assert proc.returncode == 1 and "RuntimeError: a callback failed" in proc.stderr and "SIGTERM" not in proc.stderr


def test_a_second_sigterm_ends_the_process_at_once(tmp_path):
    """A run stuck after the first (here a callback that sleeps) is ended by the next."""
    script = (
        "import sys, time\n"
        "def stuck(trainer, metrics):\n    print('stuck', flush=True)\n    time.sleep(600)\n"
        f"make({str(tmp_path / 'run')!r}, callbacks=[stuck]).fit()\n"
    )
    argv = [sys.executable, "-c", MAKE + script]
    with subprocess.Popen(argv, env=_env(), cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "stuck"
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert proc.poll() is None  # (the first one waits for the step's end)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == -signal.SIGTERM
        finally:
            proc.kill()  # (where it did not end)


def test_a_process_forked_during_the_fit_is_ended_by_sigterm_and_a_handler_set_meanwhile_is_kept(tmp_path):
    script = (
        "import multiprocessing, signal, time\n"
        "seen = []\n"
        "def fork(trainer, metrics):\n"
        "    child = multiprocessing.get_context('fork').Process(target=time.sleep, args=(600,))\n"
        "    child.start()\n    child.terminate()\n    child.join(30)\n"
        "    seen.append(child.exitcode)\n    child.kill()\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"make({str(tmp_path / 'run')!r}, epochs=1, callbacks=[fork]).fit()\n"
        "print(seen, signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)\n"
    )
    proc = _run(script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"[{-signal.SIGTERM}] True"


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="fork hooks are POSIX")
def test_a_sigterm_sent_to_a_child_as_it_is_forked_is_held_until_the_default_is_back(tmp_path):
    """CPython forgets a signal that reaches a Python handler between the fork and its own after-fork
    reset, so a child forked during the fit and sent SIGTERM at once (``Process.start`` then
    ``terminate``) could sleep on, its SIGTERM lost. The signal is blocked around the fork: a hook of
    the child's that runs before dgmkit's (registered first) finds it blocked, and a SIGTERM it sends
    itself ends the child once dgmkit's hook has put the default back; the parent's is unblocked."""
    probe = (
        "import os, signal\n"
        "r, w = os.pipe()\n"
        "def probe():\n"
        "    os.write(w, b'1' if signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []) else b'0')\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.register_at_fork(after_in_child=probe)\n"
    )
    script = (
        "import time\n"
        "def fork(trainer, metrics):\n"
        "    child = os.fork()\n"
        "    if child == 0:\n        time.sleep(600)\n        os._exit(0)\n"
        "    _, status = os.waitpid(child, 0)\n"
        "    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])\n"
        "    print(os.read(r, 1).decode(), os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM,\n"
        "          signal.SIGTERM in mask, signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)\n"
        f"make({str(tmp_path / 'run')!r}, epochs=1, callbacks=[fork]).fit()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe + MAKE + script], env=_env(), capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["1", "True", "False", "True"]  # blocked in the child; ended; the parent's as it was


# a validation of 12 batches of 16 rows, of which each takes a second more; the SIGTERM comes in its second batch
SLOW_VALIDATION = """
import time
def slowed(t, kill_in=None):
    t.eval_batch_size, objective, batches = 16, t._objective, [0]
    def scored(x, beta, y):
        if not t.model.training:
            batches[0] += 1
            if batches[0] == kill_in:
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        return objective(x, beta, y)
    t._objective = scored
    return t
"""


def test_a_sigterm_during_a_long_validation_stops_it_between_batches_and_the_resume_validates_bit_for_bit(tmp_path):
    """The run stops after the batch under way (not 11 s later, after the whole validation and the epoch's files),
    with a checkpoint after the epoch's last step; the resume validates the epoch and ends as the whole run."""
    run, whole = tmp_path / "stopped", tmp_path / "whole"
    start = time.monotonic()
    proc = _run(SLOW_VALIDATION + f"slowed(make({str(run)!r}, epochs=2), kill_in=2).fit()\nprint('fit returned')")
    assert proc.returncode == -signal.SIGTERM and "fit returned" not in proc.stdout, proc.stdout + proc.stderr
    assert "SIGTERM: stopped in epoch 1 after step 19 of 19, with a checkpoint in" in proc.stderr, proc.stderr
    assert time.monotonic() - start < 10 + 60  # (11 s of validation spared; the rest: starting Python and torch)
    assert not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text()
    resumed = _run(f"t = make({str(run)!r}, epochs=2)\nt.resume()\nassert t.step == 19\nt.fit()")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _run(f"make({str(whole)!r}, epochs=2).fit()").returncode == 0
    a, b = load_file(str(whole / "checkpoint.safetensors")), load_file(str(run / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(run) == _metrics(whole)
    # the resumed epoch trained no step in its call: no throughput measured, none written (it wrote 0.0)
    speeds = [json.loads(line).get("images_per_s") for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert speeds[0] is None and speeds[1] > 0


def test_a_sigterm_in_the_last_validation_batch_stops_the_run_before_the_diagnostics(tmp_path):
    """The diagnostics (the latent ones of ``dgm train``, which may take longer than the validation's batches) ran
    after a SIGTERM in the last of the 19 validation batches, and the run stopped only after them and the epoch's files:
    the run now stops before them, with a checkpoint after the epoch's last step."""
    script = (
        "t = make("
        + repr(str(tmp_path / "run"))
        + ", epochs=2)\nt.eval_batch_size, objective, batches = 16, t._objective, [0]\n"
        "def scored(x, beta, y):\n"
        "    batches[0] += not t.model.training\n"
        "    if batches[0] == 19:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return objective(x, beta, y)\n"
        "t._objective = scored\n"
        "t.diagnostics = lambda model, x: print('diagnosed', flush=True) or {}\n"
        "t.fit()\n"
    )
    proc = _run(script)
    assert proc.returncode == -signal.SIGTERM and "diagnosed" not in proc.stdout, proc.stdout + proc.stderr
    assert "SIGTERM: stopped in epoch 1 after step 19 of 19, with a checkpoint in" in proc.stderr, proc.stderr
