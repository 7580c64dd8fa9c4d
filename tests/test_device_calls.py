"""docs/development.md's prepared device calls (its section "A session lent a GPU"): a session
lent a GPU has 15 minutes of it, and a call that fails for a renamed flag, a `python` the machine
lacks, a line break that splits a quoted argument or results left outside `$OUT` wastes them.
Each `sh` block of the section is run as it stands by bash (in a temporary folder holding a copy
of benchmarks/), with a stand-in `python3` that records each command instead of running it; every
recorded command is then parsed by the parser of what it runs: `dgm`'s for the scripts' `dgm
train` and `dgm eval` (their EXTRA flags included), gpu_speed.py's and sync_points.py's (the
models and contenders named among theirs), carry.py's verbs. (That the calls run to their end
and what they leave under $OUT was checked on the CPU in their smoke forms, DEVICE=cpu.)"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmark_scripts import load
from dgmkit.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "development.md"
RECORDER = '#!/bin/sh\nf=$(mktemp "$RECORD/call.XXXXXX") || exit 1\nprintf "%s\\0" "$@" > "$f"\nexit 0\n'


def _section() -> str:
    text = DOC.read_text()
    start = text.index("## A session lent a GPU")
    return text[start : text.index("\n## ", start + 1)]


def _blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"^ *```sh\n(.*?)\n *```", _section(), re.M | re.S)]


def test_the_section_has_its_calls_and_names_python3_only():
    blocks = _blocks()
    assert len(blocks) >= 5, "the prepared calls are the section's sh blocks"
    for block in blocks:
        assert "\n" not in block, f"a call is one line (a line break ends a command):\n{block}"
        assert len(block) <= 2000, f"the device tool takes a command of at most 2000 characters:\n{block}"
        assert "$OUT" in block, f"nothing comes back but what a call writes under $OUT:\n{block}"
    code = [c for c in re.findall(r"`[^`]+`", _section()) if re.search(r"\bpython\b", c)]
    assert not code, f"the machine has python3 (no python is known there): {code}"


def _recorded(block: str, tmp_path: Path) -> list[list[str]]:
    """The commands ``python3`` was given while bash ran ``block`` in ``tmp_path``."""
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks")
    (tmp_path / "bin").mkdir()
    (tmp_path / "record").mkdir()
    (tmp_path / "out").mkdir()
    stub = tmp_path / "bin" / "python3"
    stub.write_text(RECORDER)
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
           "RECORD": str(tmp_path / "record")}  # fmt: skip
    for name in ("DEVICE", "EXTRA", "EVAL_EXTRA", "PYTHON", "COMPILE", "SEED", "EVAL_SEED", "LABELS", "SUBSETS"):
        env.pop(name, None)  # (the calls as on the machine, whatever this shell has set)
    r = subprocess.run(["bash", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    said = ("command not found", "No such file or directory", "Permission denied", "syntax error", "unbound variable")
    missing = [line for line in r.stderr.splitlines() if line.startswith("bash: ") and any(w in line for w in said)]
    assert not missing, f"{block}\n{r.stderr}"
    calls = [f.read_bytes().split(b"\0")[:-1] for f in sorted((tmp_path / "record").iterdir(), key=os.path.getmtime)]
    return [[a.decode() for a in call] for call in calls]


def _check(call: list[str], gpu_speed, sync_points) -> None:
    """``call`` (python3's arguments) parsed by what it runs; a flag or name it does not know fails."""
    head = call[0]
    if head == "-c" and "dgmkit.cli.main" in call[1]:  # the scripts' dgm
        args = call[2:]
        try:
            build_parser(args).parse_args(args)
        except SystemExit as e:
            pytest.fail(f"dgm {' '.join(args)}: refused (exit {e.code})")
    elif head == "-":  # a script's own Python, from a here-document
        pass
    elif head == "-m":
        assert call[1] == "pytest", call
        tests = [a for a in call[2:] if not a.startswith("-")]
        assert tests and all((ROOT / t.split("::")[0]).is_file() for t in tests), call
    elif head.endswith("benchmarks/gpu_speed.py"):
        args = gpu_speed.parser().parse_args(call[1:])
        assert set(args.models.split(",")) <= set(gpu_speed.MODELS), call
        assert not args.contenders or set(args.contenders.split(",")) <= set(gpu_speed.CONTENDERS), call
    elif head.endswith("benchmarks/sync_points.py"):
        args = sync_points.parser().parse_args(call[1:])
        assert set(args.models.split(",")) <= set(gpu_speed.MODELS), call
    elif head.endswith("benchmarks/carry.py"):
        assert len(call) == 4 and call[1] in ("pack", "unpack"), call
    else:
        pytest.fail(f"python3 {' '.join(call)}: not a command this test knows")


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_each_call_runs_commands_that_their_parsers_take(index, tmp_path, monkeypatch):
    block = _blocks()[index]
    calls = _recorded(block, tmp_path)
    assert calls, f"no python3 command ran:\n{block}"
    gpu_speed, sync_points = load("gpu_speed"), load("sync_points")
    monkeypatch.chdir(ROOT)  # (dgm train reads --config's preset to know the family's flags)
    for call in calls:
        _check(call, gpu_speed, sync_points)
