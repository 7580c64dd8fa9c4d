"""benchmarks/hvae_speed.py: its plain PyTorch HVAE is the model and objective that dgmkit builds
for `dgm train --model hvae --posterior top-down --encoder gated` (same weights and noise, same
loss), so the speed comparison is between two implementations of one thing."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "hvae_speed.py"


@pytest.fixture(scope="module")
def bench():
    path = list(sys.path)
    try:  # the script puts benchmarks/ on sys.path for its _common import; take it off again
        spec = importlib.util.spec_from_file_location("hvae_speed", BENCH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module


@pytest.mark.parametrize("prior", ["standard", "vampprior"])
def test_plain_model_computes_dgmkits_loss(bench, prior):
    ds = bench.synthetic(200)
    ours, plain = bench.same_function_check(ds, ds.train.x.float().flatten(1), prior)
    assert plain == pytest.approx(ours, rel=1e-5)


@pytest.mark.slow
def test_quick_run(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["hvae_speed.py", "--quick", "--synthetic"])
    bench.main()
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "ratio:" in out and "of which the model:" in out
