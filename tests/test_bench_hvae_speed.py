"""benchmarks/hvae_speed.py: its plain PyTorch HVAE is the model and objective that dgmkit builds
for `dgm train --model hvae --posterior top-down --encoder gated` (same weights and noise, same
loss), so the speed comparison is between two implementations of one thing."""

import sys

import pytest

from benchmark_scripts import load


@pytest.fixture(scope="module")
def bench():
    return load("hvae_speed")


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
