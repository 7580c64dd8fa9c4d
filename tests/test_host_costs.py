"""benchmarks/host_costs.py: the host time of the EMA's update and the step guard's input and
norm, now against before, side by side (issue 28)."""

import sys

from benchmark_scripts import load


def test_it_times_each_part_before_and_now(monkeypatch, capsys):
    bench = load("host_costs")
    monkeypatch.setattr(sys, "argv", ["host_costs.py", "--tensors", "8", "--calls", "3"])
    bench.main()
    out = capsys.readouterr().out
    assert "8 weight tensors in 9 modules" in out
    for label in ("EMA update (host path)", "the step guard's parameters", "gradient norm, skipping only"):
        before, now, saved = map(float, next(line for line in out.splitlines() if line.startswith(label)).split()[-3:])
        assert before > 0 and now > 0 and abs(saved - (before - now)) <= 0.11  # (each printed to 0.1 us)
