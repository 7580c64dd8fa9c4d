"""benchmarks/gpu_speed.py's ``--profile``: where a contender's time per step goes, counted per
step from ``torch.profiler`` (the next GPU session's first look at the gap between dgmkit's
compiled step and a plain CUDA-graph loop; issue 28). Checked here on the CPU."""

import sys

import pytest
import torch

from benchmark_scripts import load


@pytest.fixture(scope="module")
def bench():
    return load("gpu_speed")


def test_the_summary_counts_the_outermost_operators_of_each_step(bench):
    from torch.profiler import ProfilerActivity, profile

    x = torch.ones(64)
    steps = 4
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            x.add_(1)  # one outermost operator
            x.mul(2).sum()  # two more, the sum's own calls nested within it
    line, tables = bench.profile_summary(prof.events(), seconds=0.004, steps=steps, gpu=False)
    assert "1000.0 us a step under the profiler" in line
    assert "3.0 top-level aten ops a step" in line
    assert "kernels" not in line  # no device here
    rows = {r.split()[0]: r.split()[1:] for r in tables.splitlines()[1:] if r.startswith("aten::")}
    assert set(rows) == {"aten::add_", "aten::mul", "aten::sum"}
    assert all(calls == "1.00" for calls, _ in rows.values())


def test_each_contender_is_profiled_after_its_timing(bench, data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DGMKIT_DATA", str(data_dir))
    contenders = "plain eager,dgmkit"
    argv = ["gpu_speed.py", "--device", "cpu", "--models", "gated-vae", "--steps", "2", "--k", "0"]
    monkeypatch.setattr(sys, "argv", [*argv, "--contenders", contenders, "--profile", str(tmp_path / "p")])
    bench.main()
    out = capsys.readouterr().out
    assert out.count("profile: ") == 2, out
    sections = (tmp_path / "p" / "gated-vae.txt").read_text().split("## ")[1:]  # the model's file, a section each
    assert [s.split(":")[0] for s in sections] == [f"gated-vae, {label}" for label in contenders.split(",")]
    for s in sections:
        assert "outermost host event" in s
        assert "Optimizer.step#Adam.step" in s  # every step's update is among them, once a step
