"""``dgm train --nproc N``'s launcher: torchrun's agent, run as ``python -m dgmkit.cli.launch N
ARGS...`` in a process of its own, starts N ranks of ``python -m dgmkit ARGS...`` on this
machine (a rendezvous on localhost, as ``torchrun --standalone``) and ends with their status.

What the user sees is dgmkit's, not the agent's: each rank that stops on an error says it in
one ``dgm: error:`` line, and a line that several ranks say alike is shown once (the ranks
other than 0 leave their error lines in a folder that this launcher made, named by
``DGMKIT_RANK_ERRORS``, and it shows those that differ from rank 0's, which rank 0 has said). A rank ended by a signal is
named with the signal. A rank that only lost contact with a failed one leaves its line to the
launcher too, which says the causes first. The agent's own log lines and its ChildFailedError
report are left out.

Exit status: 0 when every rank succeeded, else the highest status of a rank that exited with
one (1: a user error, 2: a bug), or 1 when ranks were ended by signals. A SIGTERM sent to a rank
alone (a scheduler's, ``kill PID``) stops every rank after a step with a checkpoint, each ended by
it: that is said as ``dgm: interrupted (SIGTERM, sent to rank 1); <what the run keeps>``, with
status 143, as for a SIGTERM to the launcher. A rank whose output's
reader went away (``dgm train --nproc 2 ... | head``) stops quietly with status 141, as one
process does: where the other ranks only stopped with it, the launcher says nothing either. Once one rank fails,
torchrun's agent ends the others with SIGTERM: those are said to have stopped with the run (a
rank that noticed the failure first says so itself: "lost contact with another process").
A launcher that is killed outright (SIGKILL, the kernel's out-of-memory killer) cannot end its
ranks: each watches it (``watch_launcher``) and ends as the launcher would have ended it. Likewise
the launcher watches ``dgm train --nproc``'s own process, its parent (``watch_command``): killed
outright, that one cannot pass a signal on, and the launcher ends its ranks and itself as on a
SIGTERM.
"""

import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from dgmkit.errors import DgmError

__all__ = [
    "COMMAND_ENV",
    "KEPT",
    "ENDED",
    "LOST_CONTACT",
    "TERMINATED",
    "RANK_ERRORS_ENV",
    "launch",
    "left_to_launcher",
    "lost_contact",
    "mark_sent_sigterm",
    "rank_error_file",
    "report",
    "watch_command",
    "watch_launcher",
]

RANK_ERRORS_ENV = "DGMKIT_RANK_ERRORS"
LOST_CONTACT = "lost contact with another process"  # what a rank says when a collective fails: not a cause
TERMINATED = "dgm: interrupted (SIGTERM)"  # a rank's line on a SIGTERM, which under this launcher comes from it
KEPT = "the run's last checkpoint"  # the start of the note that names what an interrupted run keeps and how it goes on
ENDED = "the run had ended after epoch"  # the start of that note where the run was interrupted after its last epoch
_RUN_ENV = "DGMKIT_RANK_ERRORS_RUN"  # the launcher's run id: the folder is used only by ranks of that run
_PID_ENV = "DGMKIT_LAUNCHER_PID"  # the launcher's process, the ranks' parent
COMMAND_ENV = "DGMKIT_NPROC_COMMAND_PID"  # dgm train --nproc's own process, the launcher's parent
_MAX_LINE = 4096
_FOLDER_PREFIX = "dgmkit-ranks-"  # the launcher's folder, in the temporary folder
_SENT = ".sigterm"  # the suffix of a rank's word that it was sent the SIGTERM that stopped the run
BROKEN_PIPE = 141  # a rank's status where the reader of its output went away (``cli.main``: dgm ... | head)


def rank_error_file(rank: int) -> Path | None:
    """Where a rank writes its error line under this launcher (None: not under it). Rank 0
    also says it on stderr at once; the others leave it to the launcher."""
    folder = os.environ.get(RANK_ERRORS_ENV)
    ours = folder and os.environ.get(_RUN_ENV) and os.environ.get(_RUN_ENV) == os.environ.get("TORCHELASTIC_RUN_ID")
    return Path(folder) / f"rank-{rank}.txt" if folder and ours else None


def mark_sent_sigterm(rank: int) -> None:
    """Under this launcher, leave word that rank ``rank`` was itself sent the SIGTERM that stopped
    the run (``distributed.sigterm_sent``), which the launcher names: the other ranks only stopped
    with it."""
    path = rank_error_file(rank)
    if path is not None:
        with contextlib.suppress(OSError):
            os.close(os.open(path.with_suffix(_SENT), os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600))


def left_to_launcher(line: str) -> bool:
    """Whether rank 0 leaves ``line`` to this launcher instead of saying it: a rank that lost contact
    with another is no cause, and a SIGTERM to a rank comes from the launcher (the user's or a
    scheduler's passed on, or the ranks ended after one failed), which alone knows which."""
    return LOST_CONTACT in line or line.startswith(TERMINATED)


def lost_contact(e: BaseException, rank: int, note: str = "") -> DgmError | None:
    """The error that rank ``rank`` says where ``e`` is a collective that failed (another process
    of the run is gone), with ``note`` (what the run keeps) after it; None where ``e`` is not one."""
    import torch.distributed as dist

    if not isinstance(e, dist.DistError) and not (isinstance(e, RuntimeError) and "gloo/transport" in str(e)):
        return None
    what = " ".join(str(e).split()).split("This is typically caused", 1)[0].strip()
    what = re.sub(r"\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", what)[:200].rstrip(" .")  # (gloo's source file and line)
    return DgmError(f"rank {rank} {LOST_CONTACT} of this run, which stopped: {what}{'; ' + note if note else ''}")


def _kept_note(lines: dict[int, str | None]) -> str | None:
    """What an interrupted run keeps and how it goes on, as a rank said it in a line that it left to
    this launcher (rank 0 says its other lines itself)."""
    for rank, line in sorted(lines.items()):
        for start in (KEPT, ENDED):
            if line and start in line and (rank or left_to_launcher(line)):
                return line[line.index(start) :]
    return None


def watch_launcher(interval: float = 1.0) -> bool:
    """In a rank of this launcher: a thread that ends the rank with SIGTERM (as the launcher ends
    its ranks) once the launcher is no longer its parent. A launcher killed outright left its
    ranks training on, orphaned, writing the run folder after ``dgm train`` had said that they
    were interrupted. The launcher's folder (its ranks' error lines, the agent's logs), which it
    could not remove, goes too: one was left in the temporary folder by every launcher so killed.
    Whether a watch started (not in a process this launcher did not start)."""
    launcher = os.environ.get(_PID_ENV, "")
    if rank_error_file(0) is None or not launcher.isdigit():
        return False
    folder = Path(os.environ[RANK_ERRORS_ENV])

    def watch() -> None:
        while os.getppid() == int(launcher):
            time.sleep(interval)
        if folder.name.startswith(_FOLDER_PREFIX):  # (the launcher's own: every rank tries, whichever is first)
            shutil.rmtree(folder, ignore_errors=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="dgmkit-launcher-watch", daemon=True).start()
    return True


def watch_command(interval: float = 1.0) -> bool:
    """In the launcher: a thread that ends it with SIGTERM, which stops its ranks as a SIGTERM
    passed on by ``dgm train --nproc`` does, once that command's process (``COMMAND_ENV``, taken
    out of the environment: the ranks do not watch it) is no longer its parent. A command killed
    outright (SIGKILL, the out-of-memory killer) left the launcher and its ranks training on,
    orphaned, writing and locking the run folder. Whether a watch started."""
    command = os.environ.pop(COMMAND_ENV, "")
    if not (command.isascii() and command.isdigit()):
        return False

    def watch() -> None:
        while os.getppid() == int(command):
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="dgmkit-command-watch", daemon=True).start()
    return True


def _signal_name(exitcode: int) -> str:
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def _read_line(path: Path) -> str | None:
    """A rank's error line, from the file it created in our folder (no link, a bounded size)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(_MAX_LINE).decode("utf-8", "replace").strip() or None


def launch(nproc: int, args: list[str]) -> int:
    """Run ``python -m dgmkit *args`` as ``nproc`` ranks on this machine; their status."""
    import uuid

    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in ["torch.distributed.elastic", *logging.root.manager.loggerDict]:  # dgmkit reports, not the agent
        if name.startswith("torch.distributed.elastic"):  # (each of its modules' loggers sets a level of its own)
            logging.getLogger(name).setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix=_FOLDER_PREFIX) as folder:
        run_id = str(uuid.uuid4())
        os.environ.update({RANK_ERRORS_ENV: folder, _RUN_ENV: run_id, _PID_ENV: str(os.getpid())})
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=run_id, rdzv_backend="c10d",
            rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
            logs_specs=DefaultLogsSpecs(log_dir=os.path.join(folder, "agent")),  # (default: a torchelastic_* left in /tmp)
        )  # fmt: skip
        try:
            elastic_launch(config, entrypoint=sys.executable)("-m", "dgmkit", *args)
            return 0
        except ChildFailedError as e:
            failures = e.failures
        except SignalException as e:  # the launcher itself was interrupted or terminated: the ranks are ended
            note = _kept_note({r: _read_line(Path(folder) / f"rank-{r}.txt") for r in range(nproc)})
            name = signal.Signals(e.sigval).name  # (the agent has waited for the ranks: what they kept is said)
            print(f"dgm: interrupted ({name}); the processes were stopped{'; ' + note if note else ''}", file=sys.stderr)
            return 128 + int(e.sigval)  # (the shell's status of the signal: 130 for SIGINT, 143 for SIGTERM)
        return report(failures, Path(folder))


def report(failures: dict, folder: Path) -> int:
    """Say what the failed ranks (``{rank: failure with .exitcode}``) left to say, once each,
    and the launcher's exit status. The causes come first: a rank's error line, or a rank
    ended by a signal; a rank that only lost contact with a failed one, or that torchrun's agent
    ended with SIGTERM after it, stopped with the run, and is said to have only where nothing
    else explains the stop."""
    lines = {r: _read_line(folder / f"rank-{r}.txt") for r in {0, *failures}}
    lost = {r for r, line in lines.items() if line and LOST_CONTACT in line}
    piped = any(f.exitcode == BROKEN_PIPE for f in failures.values())
    if piped and all(f.exitcode in (BROKEN_PIPE, -signal.SIGTERM) or r in lost for r, f in failures.items()):
        return BROKEN_PIPE  # rank 0's reader went away and the others stopped with it: quiet, as one process is
    if not lost and _said_interrupted(failures, lines, folder):
        return 128 + signal.SIGTERM  # (the shell's status of the signal, as for a SIGTERM to the launcher)
    shown = {lines[0]} if lines[0] and 0 not in lost else set()  # rank 0 has said its line itself
    causes = errors = any(f.exitcode > 0 and r not in lost for r, f in failures.items())  # an error, said or not
    for rank in sorted(r for r in failures if r not in lost):
        line, code = lines[rank], failures[rank].exitcode
        if line is None and code > 0:  # a cause that left no line: named by its status
            print(f"dgm: error: the process of rank {rank} exited with status {code} and no message", file=sys.stderr)
        if not rank or not line or line.startswith(TERMINATED):  # (rank 0 said its line; a SIGTERM is named below)
            continue
        if line not in shown:
            tagged = line.replace("dgm: error: ", f"dgm: error (rank {rank}): ", 1)
            print(tagged if tagged != line else line.replace("dgm: ", f"dgm (rank {rank}): ", 1), file=sys.stderr)
            shown.add(line)
    killed = {r: f.exitcode for r, f in failures.items() if f.exitcode < 0}
    codes = [f.exitcode for f in failures.values() if f.exitcode > 0]
    # once a process fails, torchrun's agent ends the others with SIGTERM: those are not causes
    causes = causes or any(code != -signal.SIGTERM for code in killed.values())
    stopped = {r for r, code in killed.items() if causes and code == -signal.SIGTERM}
    for rank, code in sorted(killed.items()):
        if rank not in stopped:
            print(f"dgm: error: the process of rank {rank} was ended by {_signal_name(code)}", file=sys.stderr)
    note = _kept_note(lines) if not errors else None  # (ranks ended by signals or that lost contact: resumable)
    if lost and not causes and not killed:  # nothing else explains it: what the ranks saw
        print(lines[min(lost)], file=sys.stderr)
        note = None if note and note in str(lines[min(lost)]) else note  # (said in that line)
    stopped |= lost if causes or killed else set()
    if stopped:
        ranks = ", ".join(map(str, sorted(stopped)))
        print(f"dgm: note: rank{'s' if len(stopped) > 1 else ''} {ranks} stopped with the run", file=sys.stderr)
    if note:  # what the run keeps, and the command that goes on, last
        print(f"dgm: note: {note}", file=sys.stderr)
    return max(codes) if codes else 1


def _said_interrupted(failures: dict, lines: dict[int, str | None], folder: Path) -> bool:
    """Where every failed rank ended by SIGTERM (by the signal, or with its status: ended by its
    watch) with no line or dgm's ``TERMINATED`` one, a SIGTERM sent to a rank alone (a
    scheduler's, ``kill PID``) stopped the ranks together, a checkpoint kept: said as interrupted,
    with the ranks that were sent it (those that left word, ``mark_sent_sigterm``) and the note of
    what the run keeps, not as ranks that failed. Whether it was."""
    ends = (-signal.SIGTERM, 128 + signal.SIGTERM)
    if not failures or not all(
        f.exitcode in ends and (lines[r] is None or str(lines[r]).startswith(TERMINATED)) for r, f in failures.items()
    ):
        return False
    sent = sorted(r for r in failures if (folder / f"rank-{r}{_SENT}").exists())
    to = f", sent to rank{'s' if len(sent) > 1 else ''} {', '.join(map(str, sent))}" if sent else ""
    note = _kept_note(lines)
    print(f"dgm: interrupted (SIGTERM{to}){'; ' + note if note else ''}", file=sys.stderr)
    return True


if __name__ == "__main__":
    if len(sys.argv) < 2 or not (sys.argv[1].isascii() and sys.argv[1].isdigit() and int(sys.argv[1]) >= 1):
        sys.exit("usage: python -m dgmkit.cli.launch NPROC ARGS...")
    watch_command()
    try:
        sys.exit(launch(int(sys.argv[1]), sys.argv[2:]))
    except KeyboardInterrupt:  # (before torchrun's agent handles the signal: while it starts)
        print("dgm: interrupted (SIGINT) while the processes were starting", file=sys.stderr)
        sys.exit(130)
