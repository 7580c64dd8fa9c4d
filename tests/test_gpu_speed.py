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


def test_set_reads_toml_values_none_and_bare_words(bench):
    assert bench.setting_of("ema=0") == ("ema", 0)
    assert bench.setting_of(" hidden = [8, 4]") == ("hidden", [8, 4])
    assert bench.setting_of("skip_grad_norm=None") == ("skip_grad_norm", None)
    assert bench.setting_of("precision=bf16") == ("precision", "bf16")
    for bad in ("ema", "=1", "ema=0\nlr=5"):
        with pytest.raises(SystemExit, match="KEY=VALUE"):
            bench.setting_of(bad)


def test_graph_events_count_each_call_once_through_a_run_bound_before_timing(bench, monkeypatch):
    """CUDA-graph trees bind each graph's ``run`` when the graph is made (before the timed steps)
    and may pass a call to themselves again; each timed call is counted once, by what it did,
    and the manager's methods are put back (checked on the CPU with stand-ins for them)."""
    import functools

    from torch._inductor import cudagraph_trees

    manager = cudagraph_trees.CUDAGraphTreeManager
    again = {"now": False}

    def run(self, x, function_id):
        return self._run(x, function_id)

    def _run(self, x, function_id):
        if again["now"]:  # (the manager ends a path and passes the call to itself again)
            again["now"] = False
            return self.run(x, function_id)
        return self.record_function(x, function_id) if function_id else self.execute_node(None, x)

    monkeypatch.setattr(manager, "run", run)
    monkeypatch.setattr(manager, "_run", _run)
    monkeypatch.setattr(manager, "execute_node", lambda self, node, x: "replayed")
    monkeypatch.setattr(manager, "record_function", lambda self, x, function_id: "recorded")
    m = object.__new__(manager)
    replay, record = functools.partial(m.run, function_id=0), functools.partial(m.run, function_id=1)
    events = bench.GraphEvents()
    with events:
        for i in range(6):
            again["now"] = i == 2
            assert replay([]) == "replayed"
        assert record([]) == "recorded"
    assert manager._run is _run and manager.execute_node(m, None, []) == "replayed"  # put back
    line = events.summary(7)
    assert "1.0 graph calls a step: 6 replayed, 1 recorded, 0 warm-up runs, 0 without a graph" in line
    monkeypatch.delattr(manager, "run_eager")
    with bench.GraphEvents() as missing:
        replay([])
    assert "not counted" in missing.summary(1)


def test_busy_is_left_out_where_too_few_samples_were_taken(bench):
    meter = bench.BusyMeter(torch.device("cpu"))
    meter.samples = [100.0] * (bench.MIN_SAMPLES - 1)  # a timed part under a second: nvidia-smi's window is longer
    assert meter.utilization() is None
    meter.samples = [100.0, 50.0] * bench.MIN_SAMPLES
    assert meter.utilization() == pytest.approx(0.75)


def test_epochs_times_that_many_epochs_of_the_steps(bench, data_dir, monkeypatch, capsys):
    """Every contender's images/s counts the rows of all the timed epochs (here each timed part
    is made to take one second, and runs its steps, counted)."""
    monkeypatch.setenv("DGMKIT_DATA", str(data_dir))
    calls = []

    def one_second(device, fn, events=None):
        fn()
        return 1.0, None

    monkeypatch.setattr(bench, "timed", one_second)
    steps_of = bench.Trainer._step

    def counted(self, *args, **kwargs):
        calls.append(1)
        return steps_of(self, *args, **kwargs)

    monkeypatch.setattr(bench.Trainer, "_step", counted)
    argv = ["gpu_speed.py", "--device", "cpu", "--models", "tiny-vae", "--steps", "2", "--epochs", "3", "--k", "0"]
    monkeypatch.setattr(sys, "argv", [*argv, "--contenders", "plain eager,dgmkit"])
    bench.main()
    lines = [r.split() for r in capsys.readouterr().out.splitlines() if r.startswith("tiny-vae")]
    rows = {" ".join(r[1:-4]): r[-4] for r in lines}
    assert rows == {"plain eager": "48", "dgmkit": "48"}  # 3 epochs of 2 steps of 8 images, in a second
    assert len(calls) == 2 + 3 * 2  # the warm-up epoch, then the three timed
