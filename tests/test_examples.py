"""Every example script runs as printed: examples/*.py and examples/families/*.py, each in a
fresh folder as its own process, exit 0, the numbers it prints finite, and nothing written
outside runs/ there.

The README's tours (``examples/*.py``) train for as long as their printed numbers need, minutes
on 2 CPU cores; they are marked slow (``pytest --run-slow``, or ``make examples``). The family
scripts take seconds each, most of it importing torch; they run two at a time (one core each),
started together when the first of them is tested. Each script runs with one intra-op thread:
on a shared machine two threads that wait on each other spin, which made a script several
times slower."""

import math
import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOURS = sorted((ROOT / "examples").glob("*.py"))
FAMILIES = sorted((ROOT / "examples" / "families").glob("*.py"))
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|\b(?:nan|inf)\b", re.IGNORECASE)
AT_ONCE = max(1, min(2, os.cpu_count() or 1))


def _run(script: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)


def _check(script: Path, proc: subprocess.CompletedProcess, cwd: Path) -> str:
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout}\n{proc.stderr}"
    numbers = NUMBER.findall(proc.stdout)
    assert numbers, f"{script.name} printed no number:\n{proc.stdout}"
    bad = [n for n in numbers if not math.isfinite(float(n))]
    assert not bad, f"{script.name} printed {bad}:\n{proc.stdout}"
    written = {p.name for p in cwd.iterdir()}
    assert written <= {"runs"}, f"{script.name} wrote {sorted(written - {'runs'})} outside runs/"
    return proc.stdout


@pytest.fixture(scope="module")
def family_runs(request, tmp_path_factory):
    """The family scripts of the tests selected in this session, started AT_ONCE at a time:
    {script: (future of its process, its folder)}."""
    wanted = [
        item.callspec.params["script"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_family_example_runs"
    ]
    pool = ThreadPoolExecutor(max_workers=AT_ONCE)
    runs: dict[Path, tuple[Future, Path]] = {}
    for script in wanted:
        cwd = tmp_path_factory.mktemp(script.stem)
        runs[script] = (pool.submit(_run, script, cwd), cwd)
    yield runs
    pool.shutdown(cancel_futures=True)


def test_every_family_has_a_script():
    from dgmkit.families import FAMILIES as REGISTERED  # every family of `dgm train --model`

    missing = (set(REGISTERED) | {"miwae"}) - {p.stem for p in FAMILIES}
    assert not missing, f"no example script for {sorted(missing)} in examples/families/"


@pytest.mark.slow
@pytest.mark.parametrize("script", TOURS, ids=lambda p: p.stem)
def test_tour_runs(script, tmp_path):
    _check(script, _run(script, tmp_path), tmp_path)


@pytest.mark.parametrize("script", FAMILIES, ids=lambda p: p.stem)
def test_family_example_runs(script, family_runs):
    future, cwd = family_runs[script]
    out = _check(script, future.result(), cwd)
    assert list((cwd / "runs").rglob("config.json")), f"{script.name} wrote no run folder under runs/"
    if script.stem in ("m2", "hybrid"):
        assert "accuracy" in out
    if script.stem in ("ppca", "flow", "hybrid"):  # an exact density of dequantized integers: their NLL is a bound
        assert "one-draw bound" in out and "(exact)" not in out.splitlines()[-1]
    if script.stem == "miwae":
        assert "MIWAE" in out and "column means" in out
    if script.stem == "vqvae":  # the learned code prior is used, not only named
        uniform, learned = (
            float(re.search(rf"{w} code prior: test NLL <= (\S+) nats", out)[1]) for w in ("uniform", "PixelCNN")
        )
        assert learned != uniform
