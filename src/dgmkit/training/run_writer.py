"""The one writer of run folders: every fit path (gradient steps, closed form, EM) writes
``config.json`` once, one ``metrics.jsonl`` line per epoch (or iteration), and the checkpoints
``checkpoint.safetensors`` (every epoch, with the training state where there is one) and
``best.safetensors`` (whenever the monitored score improves), each atomically.

A run folder belongs to one run: its record carries a ``run_id`` made when the run starts, and
every checkpoint stores that record, so a checkpoint copied in from another run is recognised.
``RunFolder`` holds an exclusive lock (``.dgm.lock``, through ``filelock``) on the folder while
a run is written (two trainings into one folder cannot interleave), removes the temporaries that
a killed write left behind, and refuses to start a fresh run in a folder that holds anything
else.
"""

import contextlib
import itertools
import os
import uuid
from pathlib import Path

import torch

from dgmkit import _lock
from dgmkit._io import (
    append_bytes,
    atomic_write_bytes,
    atomic_write_json,
    describe_os_error,
    parse_json,
    read_regular,
    remove_stale_temporaries,
    shell_path,
    to_json,
)
from dgmkit.errors import CheckpointError, ConfigError, DgmError, TrainingError
from dgmkit.training.checkpoint import save_checkpoint
from dgmkit.training.metrics_file import MAX_METRICS_BYTES, MAX_METRICS_LINE_BYTES, MetricsFileError, metrics_lines

__all__ = [
    "RunWriter", "RunFolder", "RUN_FILES", "LOCK_NAME", "MAX_RECORD_BYTES", "MAX_METRICS_BYTES", "MAX_METRICS_LINE_BYTES",
    "read_run_file",
    "run_files", "results_lock", "new_run_id", "nonfinite_state",
]  # fmt: skip

RUN_FILES = (
    "config.json", "checkpoint.safetensors", "best.safetensors", "metrics.jsonl", "eval.json", "evals.json", "cluster.json",
    "cluster-assignments.csv", "diagnose.json", "disentangle.json", "impute.json", "ood.json", "ood-scores.csv",
)  # fmt: skip
LOCK_NAME = ".dgm.lock"
MAX_RECORD_BYTES = 16 << 20  # a run's config.json (dgmkit's are a few kB)


def read_run_file(path: Path, limit: int) -> bytes:
    """The bytes of the run folder's file ``path``: a regular file of at most ``limit`` bytes (a
    FIFO in its place would block, a link to ``/dev/zero`` never end); CheckpointError otherwise."""
    try:
        raw = read_regular(path, limit)
    except OSError as e:
        raise CheckpointError(describe_os_error(e, path, "read")) from None
    if len(raw) > limit:
        raise CheckpointError(f"{path} is larger than {limit >> 20} MiB: not a file of a dgmkit run")
    return raw


def results_lock(name: str) -> str:
    """The name of the lock under which the run folder's results file ``name`` is rewritten."""
    return f".{Path(name).stem}.lock"


def run_files(run_dir: os.PathLike[str] | str) -> list[Path]:
    """The paths of a run folder's own files, which no command's output may replace: RUN_FILES,
    the run's lock and the locks under which results are kept (replacing a lock's file while a
    process holds it would let a second process lock the new one and write the run too)."""
    locks = [LOCK_NAME] + [results_lock(n) for n in RUN_FILES if n.endswith(".json")]
    return [Path(run_dir) / n for n in (*RUN_FILES, *locks)]


def new_run_id() -> str:
    return uuid.uuid4().hex


def nonfinite_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: dict[str, torch.Tensor] | None = None,
) -> str | None:
    """The first parameter, buffer, optimizer state tensor or averaged weight (``ema``: the
    moving average of the parameters, by name) that holds NaN or inf, named; else None. The
    tensors are checked on their device and read back once per device (not once per tensor)."""
    own = [*model.named_parameters(), *model.named_buffers()]
    named = [(f"the model's {name}", t) for name, t in own if t.is_floating_point()]
    named += [(f"the moving average of the model's {name}", t) for name, t in (ema or {}).items()]
    if optimizer is not None:
        for i, state in enumerate(optimizer.state.values()):
            named += [(f"the optimizer's {key} of parameter {i}", v) for key, v in state.items()
                      if torch.is_tensor(v) and v.is_floating_point()]  # fmt: skip
    finite: dict[int, bool] = {}
    for device in {t.device for _, t in named}:
        at = [i for i, (_, t) in enumerate(named) if t.device == device]
        flags = torch.stack([torch.isfinite(named[i][1]).all() for i in at]).tolist()
        finite.update(zip(at, flags))
    return next((name for i, (name, _) in enumerate(named) if not finite[i]), None)


class RunFolder:
    """An exclusive hold on a run folder for the time a run is written (``with RunFolder(path,
    fresh=True): ...``). ``fresh``: the folder must not exist or be empty (but for this
    program's lock file and stale temporaries); a folder this call creates and leaves empty is
    removed again if the block fails. ``restart``: a fresh run in a folder that holds only a run
    stopped before its first checkpoint (``stranded_start``; what ``--resume`` of it asks for):
    its config.json and metrics.jsonl are removed under the lock, then it starts as fresh."""

    STARTED = ("config.json", "metrics.jsonl")  # what a run writes before its first checkpoint

    def __init__(self, path: str | os.PathLike, fresh: bool, restart: bool = False):
        self.path = Path(path)
        self.fresh = fresh or restart
        self.restart = restart
        self._lock: _lock.FileLock | None = None  # the held ``filelock.FileLock``
        self._created = False
        self._made: list[Path] = []

    def other_entries(self) -> list[str]:
        """The folder's entries but its lock and stale temporaries of dgmkit's writes."""
        from dgmkit._io import is_own_temporary

        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise DgmError(describe_os_error(e, self.path, "read")) from None
        return sorted(n for n in names if n != LOCK_NAME and not is_own_temporary(n))

    def stranded_start(self) -> bool:
        """Whether the folder holds a run that stopped (killed, say) before its first checkpoint:
        its config.json, perhaps one line of metrics.jsonl, and nothing else but stale
        temporaries. An epoch's end writes its checkpoint before best.safetensors, so a folder
        with best weights had a checkpoint (one removed later, or of a run an earlier dgmkit was
        writing, which wrote them first): starting it again would throw away its best weights."""
        if not self.path.is_dir():
            return False
        others = self.other_entries()
        if "config.json" not in others or not set(others) <= set(self.STARTED):
            return False
        try:
            own = parse_json(read_run_file(self.path / "config.json", MAX_RECORD_BYTES)).get("run_id")
            if "metrics.jsonl" in others:  # (as a resume reads it: a last line cut short left out)
                with contextlib.closing(metrics_lines(self.path / "metrics.jsonl", being_written=True)) as lines:
                    if sum(1 for _ in itertools.islice(lines, 2)) > 1:
                        return False
        except (ValueError, AttributeError, DgmError):
            return False
        return isinstance(own, str)

    def starts_again(self, flag: str = "--resume", main: bool = True) -> bool:
        """What resuming the run in this folder does: False, go on from its checkpoint.safetensors;
        True, start again from its beginning (a run that stopped before its first checkpoint,
        ``stranded_start``). Refused, with why, where there is nothing to resume; ``flag`` names
        the way resuming was asked for, ``main``: the process that checks the lock (under torchrun
        the first: the others would find it held once that one starts)."""
        last = self.path / "checkpoint.safetensors"
        if last.is_file():
            return False
        if os.path.lexists(last):  # (not a run without one: its own is unreadable)
            link = f", a link to {os.readlink(last)}," if last.is_symlink() else ""
            what = "names no file" if not last.exists() else "is not a regular file"
            raise CheckpointError(f"{last}{link} {what}: the run cannot be resumed from it (fetch its content)")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"nothing to resume: {self.path} is a file, not a run folder")
        if not self.path.exists() and not self.path.is_symlink():
            raise ConfigError(
                f"nothing to resume: there is no run folder {self.path} (a run stopped before its first checkpoint "
                f"removes what it wrote): run it again without {flag}"
            )
        if main:  # (a run in its first epoch, being written by another process, has not stopped)
            self.check_not_in_use()
        if self.path.is_dir() and not self.other_entries():
            raise ConfigError(
                f"nothing to resume: {self.path} holds no run (one stopped before it wrote config.json leaves the "
                f"folder empty): run it again without {flag}"
            )
        if not self.stranded_start():
            kept = (
                ": its best.safetensors is kept (dgm eval reads it); a new run needs another folder"
                if (self.path / "best.safetensors").is_file()
                else ""
            )
            raise ConfigError(f"nothing to resume: {self.path} holds no checkpoint.safetensors{kept}")
        return True

    def restart_line(self) -> str:
        """What a resume that ``starts_again`` says."""
        return f"{self.path} holds a run that stopped before its first checkpoint: starting it again from its beginning"

    def check_not_in_use(self) -> None:
        """Refuse the folder if another process holds its lock (a run being written there), before
        what it holds is judged: a run in its first epoch is not one that stopped. Creates nothing
        (a folder without the lock file has no run being written)."""
        if self._lock is not None or not (self.path / LOCK_NAME).is_file():
            return
        try:
            _lock.acquire(self.path / LOCK_NAME, wait=False).release()
        except _lock.Timeout:
            raise DgmError(_in_use(self.path)) from None
        except OSError:  # (refused with its reason when the folder is locked to be written)
            return

    def check_fresh(self) -> None:
        """A fresh run needs a folder that does not exist or is empty."""
        if self.path.exists() and not self.path.is_dir():
            raise DgmError(f"--out {self.path} is a file, not a folder")
        others = self.other_entries()
        if others:
            self.check_not_in_use()
        if self.restart and set(others) <= set(self.STARTED):
            return
        if others:
            listed = sorted(others, key=lambda name: (name.startswith("."), name))  # a run's lock files last
            shown = ", ".join(listed[:4]) + (f" and {len(listed) - 4} more" if len(listed) > 4 else "")
            resume = f"dgm train --resume --out {shell_path(self.path)}"
            hint = (
                f"; a run trained by gradient steps goes on there with `{resume}`"
                if "checkpoint.safetensors" in others
                else ""
            )
            if self.stranded_start():
                hint = (
                    f"; it holds a run that stopped before its first checkpoint was written: `{resume}` starts "
                    "that run again from its beginning"
                )
            raise DgmError(
                f"{self.path} is not empty (it holds {shown}): a new run needs a new or empty folder{hint}. "
                "Nothing was changed"
            )

    def __enter__(self) -> "RunFolder":
        if self.fresh:
            self.check_fresh()
        try:
            if not self.path.exists():
                self._made = [p for p in [self.path, *self.path.parents] if not p.exists()]
                self.path.mkdir(parents=True)
                self._created = True
        except OSError as e:
            self._cleanup()
            raise DgmError(describe_os_error(e, self.path, "write")) from None
        try:
            self._lock = _lock.acquire(self.path / LOCK_NAME, wait=False)
        except _lock.Timeout:
            raise DgmError(_in_use(self.path)) from None
        except OSError as e:
            self._cleanup()
            raise DgmError(describe_os_error(e, self.path / LOCK_NAME, "lock")) from None
        remove_stale_temporaries(self.path, RUN_FILES)  # safe now: no other dgm process writes here
        if self.fresh:
            try:
                self.check_fresh()  # again under the lock: another process may have been quicker
                if self.restart:  # (config.json stays, replaced whole when the run starts: restartable throughout)
                    for name in self.STARTED[1:]:
                        (self.path / name).unlink(missing_ok=True)
            except DgmError:
                self.__exit__(None, None, None)
                raise
            except OSError as e:
                self.__exit__(None, None, None)
                raise DgmError(describe_os_error(e, self.path, "write")) from None
        return self

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        if kind is not None or value is not None:
            self._cleanup()  # under the lock: a restart that takes it next finds the folder as left
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _cleanup(self) -> None:
        """After a failed or interrupted fresh run: remove what this call wrote if no checkpoint
        came of it (config.json, metrics.jsonl; best.safetensors, written after a checkpoint, is
        this call's where the folder was fresh), and the folder if this call created it. A
        restart keeps config.json, so that --resume can start the run again."""
        if self.fresh and not (self.path / "checkpoint.safetensors").exists():
            for name in (*self.STARTED[1:], "best.safetensors") if self.restart else (*self.STARTED, "best.safetensors"):
                with contextlib.suppress(OSError):
                    (self.path / name).unlink(missing_ok=True)
        if not self._created:
            return
        with contextlib.suppress(OSError):
            if set(os.listdir(self.path)) <= {LOCK_NAME}:
                (self.path / LOCK_NAME).unlink(missing_ok=True)
                for folder in self._made:  # the run folder and the parents made for it, deepest first
                    folder.rmdir()


def _in_use(path: Path) -> str:
    return f"{path} is in use by another dgm process (it holds the folder's lock)"


class RunWriter:
    def __init__(self, run_dir: str | Path, record: dict):
        self.run_dir = Path(run_dir)
        self.record = record

    def start(self) -> None:
        """Create the folder and write config.json."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_dir / "config.json", self.record)

    def checkpoint(
        self,
        model: torch.nn.Module,
        name: str = "checkpoint.safetensors",
        optimizer: torch.optim.Optimizer | None = None,
        rng: dict[str, torch.Tensor] | None = None,
        counters: dict | None = None,
        ema: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Write a checkpoint (``ema``: the moving average of the parameters, by name), unless
        the state holds NaN or inf: then TrainingError, and the last checkpoint stays as it was."""
        bad = nonfinite_state(model, optimizer, ema)
        if bad is not None:
            raise TrainingError(
                f"{bad} holds NaN or inf; {self.run_dir / name} was not written (the last one written is kept). "
                "Try a lower --lr or a --grad-clip"
            )
        save_checkpoint(self.run_dir / name, model, self.record, optimizer=optimizer, rng=rng, trainer=counters, ema=ema)

    def metrics(self, metrics: dict) -> None:
        """Append one epoch's line to metrics.jsonl (strict JSON: a non-finite value is null),
        synced before the epoch's checkpoint is written: a line cut short by a crash (a power
        cut) is of an epoch that no checkpoint holds, which a resume drops (``truncate_metrics``)."""
        append_bytes(self.run_dir / "metrics.jsonl", (to_json(metrics) + "\n").encode())

    def truncate_metrics(self, epoch: int) -> None:
        """Drop metric lines of epochs after ``epoch`` (a resumed run trains them again); the lines
        kept are written back as they were. The file is read by ``metrics_lines`` under the run's
        lock; a last line cut short (no newline, not whole JSON) is the append of an epoch that a
        crash stopped before its checkpoint (``metrics``), and is dropped too. Each line must name
        its epoch (a whole number); CheckpointError otherwise, and the file is left as it was."""
        path = self.run_dir / "metrics.jsonl"
        if not os.path.lexists(path):
            return
        kept = []
        try:
            for line in metrics_lines(path, being_written=True):  # (a last line cut short: left out)
                line_epoch = line.row.get("epoch")
                if not isinstance(line_epoch, int) or isinstance(line_epoch, bool):
                    reason = "it names no epoch" if line_epoch is None else "its epoch is not a whole number"
                    raise MetricsFileError(path, reason, line.number)
                if line_epoch <= epoch:
                    kept.append((line_epoch, line.text + b"\n"))
        except MetricsFileError as e:
            if e.line is None:
                raise CheckpointError(f"{e}; the run cannot be resumed") from None
            raise CheckpointError(
                f"{path} line {e.line} is not a metrics record of dgmkit ({e.reason}); the run cannot be resumed"
            ) from None
        held = [e for e, _ in kept]
        if held != list(range(1, epoch + 1)):  # (a resume would append to a log of missing or repeated epochs)
            shown = ", ".join(map(str, held[:8])) + (", ..." if len(held) > 8 else "")
            raise CheckpointError(
                f"{path} holds the lines of epochs [{shown}] where its checkpoint has trained {epoch} "
                f"(a line of each of epochs 1 to {epoch}, in order); the run cannot be resumed"
            )
        atomic_write_bytes(path, b"".join(text for _, text in kept))
