"""Entry point of the ``dgm`` command.

Exit codes: 0 success; 1 a user error (bad flag, config, data file, checkpoint...), reported as
one line ``dgm: error: ...`` on stderr without a traceback; 2 a bug: an exception that no check
anticipated, reported as one line that says so and names a file holding the traceback;
130 interrupted (a SIGTERM during a write: the command ends by the signal, 143, its partial
output removed). Files are written atomically, so a failed command leaves no half-written file.
"""

import argparse
import datetime
import logging
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from typing import NoReturn

from dgmkit import __version__
from dgmkit._io import control_character, describe_os_error, shown_text
from dgmkit.errors import DgmError, closest_name

__all__ = ["main", "build_parser", "EXIT_USER_ERROR", "EXIT_BUG"]

EXIT_USER_ERROR = 1
EXIT_BUG = 2


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it (or it is none,
    an empty list: nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shows = not (default is None or default is False or default is argparse.SUPPRESS or default == [])
        if shows and action.option_strings and "default" not in text:
            shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
            shown = shown.replace("%", "%%")
            text = f"{text} (default: {shown})" if text else f"(default: {shown})"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error convention: one ``dgm: error:`` line, exit 1; help
    texts show defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # (a flag's prefix is not taken for it: --epoch for --epochs)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("dgm").strip()
        hint = f" (see dgm {command} --help)" if command else " (see dgm --help)"
        _say_error(f"{message}{hint}")
        sys.exit(EXIT_USER_ERROR)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, but arguments that no parser took are refused by the
    command's own parser (its help named), with the flag of that command closest to a misspelt one."""
    ns, extras = parser.parse_known_args(argv)
    if extras:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        command = str(getattr(ns, "command", ""))
        before = command in argv and argv.index(extras[0]) < argv.index(command)  # (dgm --verbos eval: dgm's own)
        owner = parser if before or not subs else subs[0].choices.get(command, parser)
        flags = [
            o for p in {owner, parser} for a in p._actions if a.help != argparse.SUPPRESS for o in a.option_strings
            if o.startswith("--")
        ]  # fmt: skip
        given = [e.split("=", 1)[0] for e in extras if e.startswith("--")]
        near = next((m for g in given if (m := closest_name(g, flags, cutoff=0.75))), None)
        owner.error(f"unrecognized arguments: {' '.join(extras)}" + (f"; did you mean {near}?" if near else ""))
    return ns


# the help of flags that several commands share, where a command gives none of its own
_COMMON_HELP = {
    "run_dir": "a run folder written by dgm train",
    "split": "the data split to use",
    "seed": "seed of the random draws, so that a command repeats exactly",
    "pairs": "pairs of images to interpolate between",
    "steps": "decoded points on each line, from the code that reconstructs one image to that of the other (both included)",
    "file": "a file written by dgm compress",
    "epochs": "passes over the training data",
    "quiet": "no per-epoch lines",
}


def _fill_help(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _fill_help(sub)
        elif not action.help and action.dest in _COMMON_HELP:
            action.help = _COMMON_HELP[action.dest]
            if action.dest == "seed" and any(a.dest == "limit" for a in parser._actions):
                action.help = "seed of the random draws and of a --limit subset, so that a command repeats exactly"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``dgm`` parser; ``argv`` (when given) picks the family whose flags ``dgm train`` offers."""
    from dgmkit.cli import (
        cluster,
        compress,
        demo,
        density,
        diagnose,
        disentangle,
        evaluate,
        figures,
        impute,
        ood,
        report,
        score,
        train,
    )

    parser = _Parser(prog="dgm", description="dgmkit: likelihood-based deep generative models")
    parser.add_argument("--version", action="version", version=f"dgmkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug information")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    train.add_parser(sub, train.family_from_argv(list(argv or [])))
    evaluate.add_parser(sub)
    ood.add_parser(sub)
    diagnose.add_parser(sub)
    disentangle.add_parsers(sub)
    figures.add_parsers(sub)
    cluster.add_parser(sub)
    impute.add_parser(sub)
    score.add_parser(sub)
    density.add_parser(sub)
    compress.add_parsers(sub)
    report.add_parser(sub)
    demo.add_parser(sub)
    _fill_help(parser)
    return parser


def _takes_no_value(argv: list[str], flag: str) -> bool:
    """Whether ``flag`` is one that takes no value (``--force``, ``--draw``) in the parser of the
    command ``argv`` names (its first argument that is not a flag), or in dgm's own."""
    parser = build_parser(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            parsers.append(action.choices[command])
    return any(flag in a.option_strings and a.nargs == 0 for p in parsers for a in p._actions)


def _refused_argument(argv: list[str]) -> str | None:
    """What is wrong with the first argument that holds a control character (a line break, an
    escape, ...), which no path, name or value of ``dgm`` takes: printed back, as a run folder's
    name is ("run folder: ..."), it would forge lines of the output or drive the terminal; or
    that is empty, which no flag reads as its default (an empty path would be the working folder)."""
    for i, arg in enumerate(argv):
        control = control_character(arg)
        if control is not None:
            return f"the argument '{shown_text(arg)}' holds {control}: no path, name or value takes one"
        flag = arg[:-1] if arg.startswith("--") and arg.count("=") == 1 and arg.endswith("=") else None
        if arg == "" and i and argv[i - 1].startswith("--") and "=" not in argv[i - 1]:
            if _takes_no_value(argv[:i], argv[i - 1]):  # (then '' is an argument of its own)
                return f"an argument is empty ('', after {argv[i - 1]}, which takes no value): no path, name or value is"
            flag = argv[i - 1]
        if flag is not None:
            return f"{flag} is empty: name a path or value, or leave the flag out for its default"
        if arg == "":
            return "an argument is empty (''): no path, name or value is"
    return None


def _one_line(text: object) -> str:
    """``text`` as one line to show: its breaks made spaces, and an invisible character (a bidi
    override in a file name that a message names, read from a table's or a file's name) escaped
    (``shown_text``), whichever message it comes from."""
    return shown_text(" ".join(str(text).split()))


def _say_error(message: object) -> None:
    _error_line(f"dgm: error: {_one_line(message)}")


def _error_line(line: str, here: bool = True) -> None:
    """Say ``line`` on stderr; a rank under ``dgm train --nproc``'s launcher leaves it in the
    launcher's folder, which shows the lines of ranks other than 0 once, and after the causes a
    rank 0 that only lost contact with another (``cli.launch``). ``here=False``: said by rank 0
    alone where no launcher collects the line (every rank of the run says it alike)."""
    from dgmkit.cli.launch import left_to_launcher, rank_error_file

    rank = os.environ.get("RANK", "0")
    parallel = os.environ.get("WORLD_SIZE", "1") != "1" and rank.isascii() and rank.isdigit()
    path = rank_error_file(int(rank)) if parallel else None
    if path is not None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(line + "\n")
            if rank != "0" or left_to_launcher(line):
                return
        except OSError:  # not left for the launcher: said here
            pass
    if here or rank in ("0", ""):
        print(line, file=sys.stderr, flush=True)


def _report_bug(e: BaseException) -> int:
    """Write the traceback to a file and say, in one line, that this is a bug."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    where = "(the traceback could not be saved)"
    try:
        fd, path = tempfile.mkstemp(prefix=f"dgm-bug-{stamp}-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"dgmkit {__version__}, python {sys.version.split()[0]}\nargv: {sys.argv!r}\n\n")
            f.write("".join(traceback.format_exception(e)))
        where = f"the traceback is in {path}"
    except OSError:
        pass
    what = f"{type(e).__name__}: {_one_line(e)[:300]}"
    _error_line(f"dgm: internal error (a bug in dgmkit, please report it): {what}; {where}")
    return EXIT_BUG


_PARALLEL_COMMANDS = ("train", "eval")


def _as_rank(args: argparse.Namespace) -> int:
    """One of several processes that torchrun started: join the process group; rank 0 alone
    prints (the others' stdout goes nowhere; their errors still show). A collective that fails
    because another rank is gone is said as such, not as a bug of this rank. A SIGTERM unwinds
    the command, which says what it keeps (rank 0: ``dgm: interrupted (SIGTERM); ...``), and then
    ends the rank by the signal (``distributed.sigterm_unwinds``)."""
    import torch.distributed as dist

    from dgmkit._io import Terminated
    from dgmkit.cli.launch import lost_contact, mark_sent_sigterm
    from dgmkit.distributed import init_from_environment, sigterm_sent, sigterm_unwinds

    if args.command not in _PARALLEL_COMMANDS:
        raise DgmError(f"dgm {args.command} runs in one process; only {' and '.join(_PARALLEL_COMMANDS)} run under torchrun")
    ctx = init_from_environment()
    if not ctx.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of this process
        logging.getLogger().setLevel(logging.ERROR)  # a note (e.g. --compile falling back) once, from rank 0
        logging.getLogger("torch").setLevel(logging.ERROR)  # (torch's loggers print on their own, not through the root's)
        warnings.simplefilter("ignore")  # and PyTorch's warnings once, from rank 0 (every rank meets them alike)
    try:
        with sigterm_unwinds():
            try:
                return args.func(args)
            except Terminated as e:
                _say_interrupted(str(e), "SIGTERM")
                if sigterm_sent():  # (not only stopped with the rank that was: the launcher names it)
                    mark_sent_sigterm(ctx.rank)
                raise
    except (dist.DistError, RuntimeError) as e:
        lost = lost_contact(e, ctx.rank)
        if lost is None:
            raise  # not a collective that failed
        raise lost from e


def _status(run: Callable[[], int]) -> int:
    """``run()``'s exit status, with every error said in one line (the module's exit codes)."""
    try:
        return run()
    except BrokenPipeError:  # the reader went away (dgm ... | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except DgmError as e:
        _say_error(e)
        return EXIT_USER_ERROR
    except OSError as e:
        _say_error(describe_os_error(e))
        return EXIT_USER_ERROR
    except MemoryError:
        _say_error(_OUT_OF_MEMORY)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as e:
        _say_interrupted(str(e))
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: a bug, said as such
        if _out_of_memory(e):
            _say_error(f"{_OUT_OF_MEMORY} ({_allocation(e)})")
            return EXIT_USER_ERROR
        return _report_bug(e)


def _say_interrupted(note: str = "", by: str = "") -> None:
    """``note``: what the command leaves that goes on (a run's checkpoint, and how to resume it);
    ``by``: the signal, where it is not SIGINT (the terminal's Ctrl-C)."""
    # under torchrun every rank is interrupted at once: rank 0 says it (one rank alone: the launcher says which)
    _error_line(f"dgm: interrupted{f' ({by})' if by else ''}{'; ' + note if note else ''}", here=False)


_OUT_OF_MEMORY = "out of memory: the sizes asked for (batch, samples, images) need more memory than this machine has"


def _out_of_memory(e: Exception) -> bool:
    """Whether ``e`` is PyTorch's failure to allocate: on a GPU its OutOfMemoryError, on the CPU a
    RuntimeError of its allocator."""
    import torch

    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "DefaultCPUAllocator:" in str(e) and "memory" in str(e)  # (Windows: "not enough")
    )


def _allocation(e: Exception) -> str:
    """What the allocator said it was asked for, in one short phrase."""
    import re

    m = re.search(r"tried to allocate (\d+) bytes", str(e))
    if m:
        return f"{int(m[1]) / 2**30:.1f} GiB asked for at once"
    m = re.search(r"Tried to allocate ([\d.]+ [KMGT]iB)", str(e))
    return f"{m[1]} asked for at once on the GPU" if m else "an allocation failed"


def main(argv: list[str] | None = None) -> int:
    """Run ``dgm`` with ``argv`` (default: the command line); the exit status. In a process
    that torchrun started as one rank of several, this does not return: the process ends with
    the status (``dgmkit.distributed.end_process``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    bad = _refused_argument(argv)
    if bad is not None:
        _say_error(bad)
        return EXIT_USER_ERROR
    try:
        parser = build_parser(argv)
        args = _parse(parser, argv)
    except SystemExit as e:  # --help, --version and usage errors end here
        return e.code if isinstance(e.code, int) else EXIT_USER_ERROR
    except KeyboardInterrupt:  # while the commands' modules load
        _say_interrupted()
        return 130
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    args._argv = argv
    from dgmkit import distributed

    try:
        parallel = distributed.launched_by_torchrun()
    except DgmError as e:
        _say_error(e)
        return EXIT_USER_ERROR
    if parallel:  # one of several processes torchrun started
        from dgmkit.cli.launch import watch_launcher

        watch_launcher()  # (under dgm train --nproc: the rank ends with its launcher)
        distributed.end_process(_status(lambda: _as_rank(args)))
    return _status(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
