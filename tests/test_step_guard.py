"""Clipping and skipping of updates by gradient norm (training.step_guard), and the Trainer
with them: counted, reported, resumed exactly, and never silently skipping every update."""

import math
import warnings

import pytest
import torch

from dgmkit.cli.main import main
from dgmkit.training.step_guard import GradientGuard


def _param(norm: float) -> torch.nn.Parameter:
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([norm, 0.0, 0.0, 0.0])
    return p


def _decide(guard: GradientGuard, norms: list[float]) -> list[bool]:
    return [guard.take([_param(n)]) for n in norms]


def test_an_absolute_threshold_skips_larger_and_non_finite_norms_only():
    guard = GradientGuard(skip_norm=2.0)
    assert _decide(guard, [1.0, 2.0, 2.5, math.nan, math.inf, 0.5]) == [True, True, False, False, False, True]
    assert guard.epoch_skipped == guard.skipped_total == 3 and guard.epoch_problem() is None


def test_a_relative_threshold_follows_the_median_of_the_recent_updates_taken():
    guard = GradientGuard(skip_factor=3.0, window=4)
    assert all(_decide(guard, [100.0, 1.0, 2.0, 3.0]))  # nothing is skipped before the window fills
    assert guard.threshold() == pytest.approx(3.0 * 2.5)  # median of 100, 1, 2, 3
    assert _decide(guard, [7.0, 8.0]) == [True, False]  # 7 < 7.5; then the median of 1, 2, 3, 7 is 2.5 again
    assert guard.recent == [1.0, 2.0, 3.0, 7.0]  # only updates taken enter the window
    both = GradientGuard(skip_norm=5.0, skip_factor=3.0, window=1)
    assert _decide(both, [1.0, 2.9, 6.0]) == [True, True, False]  # the lower of the two thresholds holds


@pytest.mark.parametrize("kw", [dict(skip_norm=2.0), dict(skip_factor=1.5, window=4), dict(skip_norm=3.0, skip_factor=1.3)])
def test_the_decisions_on_the_device_are_those_of_the_host_rule(kw):
    """on_device=True (run here on the CPU's tensors) decides as the host rule, step by step,
    and reads back the same norms, counts, lowest threshold and window; a state saved from one
    resumes in the other."""
    g = torch.Generator().manual_seed(0)
    norms = (torch.rand(60, generator=g) * 4).tolist() + [math.nan, math.inf] + (torch.rand(30, generator=g) * 8).tolist()
    norms[20:20] = [2.0, 3.0, float(torch.tensor(0.1).item()) * 20]  # at and near an absolute threshold
    host, device = GradientGuard(**kw), GradientGuard(**kw, on_device=True)
    a = _decide(host, norms[:70])
    b = [bool(t) for t in _decide(device, norms[:70])]
    assert a == b and not all(a) and any(a)
    assert str(device.epoch_norms) == str(host.epoch_norms)  # exactly (NaN included)
    assert device.epoch_skipped == host.epoch_skipped and device.skipped_total == host.skipped_total
    assert device.epoch_threshold == host.epoch_threshold and device.recent == host.recent
    resumed = GradientGuard(**kw, on_device=True)
    resumed.load_state(**dict(zip(("skipped_total", "recent"), host.state().values())))
    assert [bool(t) for t in _decide(resumed, norms[70:])] == _decide(host, norms[70:])
    assert resumed.skipped_total == host.skipped_total and resumed.recent == pytest.approx(host.recent)


def test_an_infinite_norm_is_never_taken_even_before_the_window_fills():
    for on_device in (False, True):
        guard = GradientGuard(skip_factor=2.0, window=4, on_device=on_device)
        assert [bool(t) for t in _decide(guard, [1.0, math.inf, math.nan, 2.0])] == [True, False, False, True]
        assert guard.recent == [1.0, 2.0]
        GradientGuard(skip_factor=2.0, window=4).load_state(**dict(zip(("skipped_total", "recent"), guard.state().values())))


def test_a_threshold_at_a_norm_s_float32_neighbour_decides_as_on_the_host():
    """The norms are float32, the thresholds Python floats: the device compares in float64."""
    norm = float(torch.tensor(0.1, dtype=torch.float32))  # 0.10000000149...
    for limit, expected in ((0.1, False), (norm, True)):
        host, device = GradientGuard(skip_norm=limit), GradientGuard(skip_norm=limit, on_device=True)
        assert _decide(host, [norm]) == [expected] and [bool(t) for t in _decide(device, [norm])] == [expected]
        assert device.epoch_threshold == host.epoch_threshold == limit


def test_clipping_alone_clips_and_never_skips():
    guard = GradientGuard(clip=1.0)
    p = _param(10.0)
    assert guard.take([p]) and p.grad.norm() == pytest.approx(1.0) and not guard.skips


def test_an_epoch_of_skipped_updates_is_described_with_the_threshold_and_the_norms():
    guard = GradientGuard(skip_norm=1.0)
    guard.start_epoch()
    _decide(guard, [3.0, 5.0, math.nan])
    problem = guard.epoch_problem()
    assert "every one of the epoch's 3 updates was skipped" in problem
    assert "from 3 to 5 (median 4)" in problem and "skip_grad_norm = 1" in problem
    guard.start_epoch()
    assert guard.epoch_problem() is None  # a new epoch, nothing seen yet
    relative = GradientGuard(skip_factor=2.0, window=2)
    _decide(relative, [1.0, 3.0])  # the window fills: median 2, threshold 4
    relative.start_epoch()
    _decide(relative, [5.0, math.inf])
    problem = relative.epoch_problem()
    assert "every one of the epoch's 2 updates was skipped" in problem and "from 5 to 5 (median 5)" in problem
    assert "skip_grad_factor = 2 times the recent median; lowest in force 4)" in problem
    relative.start_epoch()
    _decide(relative, [math.nan])
    assert "their gradient norms were none finite" in relative.epoch_problem()
    with pytest.raises(AttributeError, match="what the steps saw"):
        relative.epoch_skipped = 0  # (the counts are read back from the steps, never set)


def test_bad_settings_are_refused():
    for kw in (dict(skip_norm=0.0), dict(clip=-1.0), dict(skip_factor=1.0), dict(skip_norm=math.nan)):
        with pytest.raises(ValueError):
            GradientGuard(**kw)
    with pytest.raises(ValueError, match="recent gradient norms"):
        GradientGuard(skip_factor=2.0, window=2).load_state(0, [1.0, 2.0, 3.0])


ARGS = ["train", "--dataset", "digits", "--hidden", "32", "--latent-dim", "3", "--batch-size", "8", "--seed", "3"]


def test_a_relative_threshold_resumes_exactly_and_the_epoch_line_shows_the_skipped(tmp_path, capsys):
    """With --skip-grad-factor the decisions depend on the last 100 norms: the checkpoint keeps
    them, so that a resumed run ends bit for bit where the uninterrupted one does."""
    from safetensors.torch import load_file

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    args = [*ARGS, "--skip-grad-factor", "1.2"]
    assert main([*args, "--epochs", "3", "--out", str(whole)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch")]
    skipped = [int(ln.split("skipped ")[1].split("/")[0]) for ln in lines]
    assert len(lines) == 3 and all("skipped " in ln for ln in lines) and skipped[1] > 0  # 1.2x the median: some
    assert main([*args, "--epochs", "1", "--out", str(parts), "--quiet"]) == 0
    assert main([*args, "--epochs", "3", "--out", str(parts), "--resume", "--quiet"]) == 0
    a, b = load_file(str(whole / "checkpoint.safetensors")), load_file(str(parts / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dgm_train_stops_when_every_update_of_an_epoch_is_skipped(tmp_path, capsys):
    assert main([*ARGS, "--skip-grad-norm", "1e-6", "--epochs", "2", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "every one of the epoch's" in err and "skip_grad_norm = 1e-06" in err and "--skip-grad-factor" in err


def test_an_ema_told_by_tensors_averages_as_one_told_by_bools():
    """EMA.update with the decision as a tensor (made on the device) moves the averages as
    with a bool: not at all where the step was skipped, with the same warm-up of the decay."""
    from dgmkit.training.ema import EMA

    model = torch.nn.Linear(3, 2)
    host, device = EMA(model, 0.9), EMA(model, 0.9)
    g = torch.Generator().manual_seed(1)
    for taken in [True, False, True, True, False, True]:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        host.update(model, taken)
        device.update(model, torch.tensor(taken))
    assert device.updates == host.updates == 4
    for name, w in host.weights.items():
        torch.testing.assert_close(device.weights[name], w)


def test_an_update_decided_on_the_device_is_taken_or_skipped_alike_by_fused_and_plain_adam():
    """MixedPrecision.step with the guard's decision as a tensor: fused Adam skips on the device
    (nothing read back); Adam without the fused kernel (where it is unavailable) reads it. Both
    end with the same weights and step count."""
    from dgmkit.training.precision import MixedPrecision

    amp = MixedPrecision("fp32", torch.device("cpu"))
    ends = []
    for fused in (True, False):
        w = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 5))
        adam = torch.optim.Adam([w], lr=0.1, fused=fused)
        for take in (True, False, True, False):
            w.grad = torch.arange(5.0) - 1.5
            assert bool(amp.step(adam, torch.tensor(take))) == take
        ends.append((w.detach().clone(), float(adam.state[w]["step"])))
    torch.testing.assert_close(ends[0][0], ends[1][0])
    assert ends[0][1] == ends[1][1] == 2.0
    assert not torch.equal(ends[0][0], torch.linspace(-1.0, 1.0, 5))
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        MixedPrecision("fp8", torch.device("cpu"))


def test_auto_precision_is_bf16_on_a_gpu_only_for_families_checked_in_it(monkeypatch):
    from dgmkit.config import RunConfig, build_model
    from dgmkit.training.precision import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda, bf16_checked=False) == "fp32"
    assert resolve_precision("auto", cuda, bf16_checked=True) == "bf16"
    assert resolve_precision("bf16", cuda, bf16_checked=False) == "bf16"  # asked for by name
    assert resolve_precision("auto", torch.device("cpu"), bf16_checked=True) == "fp32"
    masked = RunConfig.of(dataset="digits", model="diffusion", process="masked", unet_channels=[4], unet_blocks=1)
    vae = RunConfig.of(dataset="digits", hidden=[8], latent_dim=2)
    assert build_model(masked, (1, 8, 8), 2).trains_in_bf16 and not build_model(vae, (1, 8, 8), 2).trains_in_bf16


def test_a_cuda_run_says_its_precision_and_warns_of_bf16_asked_of_an_unchecked_family(monkeypatch):
    from dgmkit.training.precision import MixedPrecision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = torch.device("cuda")
    said = {
        (asked, checked): MixedPrecision(asked, cuda, bf16_checked=checked).describe()
        for asked in ("auto", "fp32", "bf16")
        for checked in (False, True)
    }
    assert said[("auto", False)] == "precision: fp32 (this family's training in bf16 has not been checked)"
    assert said[("auto", True)] == "precision: bf16 autocast (auto; this family's training in bf16 was checked)"
    assert said[("fp32", True)] == said[("fp32", False)] == "precision: fp32 (as asked)"
    assert said[("bf16", True)] == "precision: bf16 autocast (as asked; this family's training in bf16 was checked)"
    assert "in bf16 has not been checked" in said[("bf16", False)] and "--precision fp32 avoids" in said[("bf16", False)]
    with warnings.catch_warnings():  # fp16's gradient scaler warns where there is no CUDA device
        warnings.simplefilter("ignore", UserWarning)
        fp16 = MixedPrecision("fp16", cuda, bf16_checked=True)  # fp16 was checked for no family
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
        no_bf16 = MixedPrecision("auto", cuda, bf16_checked=True)
    assert fp16.unchecked and "in fp16 has not been checked" in (fp16.describe() or "")
    assert no_bf16.name == "fp16" and "(auto: this GPU has no bf16)" in no_bf16.describe() and no_bf16.unchecked
    assert not MixedPrecision("auto", cuda, bf16_checked=False).unchecked
    assert MixedPrecision("auto", torch.device("cpu"), bf16_checked=True).describe() is None  # a CPU is always fp32


def test_auto_precision_takes_fp16_on_a_gpu_that_only_emulates_bf16(monkeypatch):
    """torch.cuda.is_bf16_supported() says True on a T4 or a V100, which emulate bf16 (slower
    than fp32, and no cuDNN convolutions in it): auto took bf16 there, where the docstring and
    the line a run prints ("auto: this GPU has no bf16") promise fp16."""
    from dgmkit.training.precision import MixedPrecision, resolve_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda, bf16_checked=True) == "fp16"
    assert resolve_precision("bf16", cuda, bf16_checked=True) == "bf16"  # asked for by name: as asked
    with warnings.catch_warnings():  # fp16's gradient scaler warns where there is no CUDA device
        warnings.simplefilter("ignore", UserWarning)
        assert "(auto: this GPU has no bf16)" in (MixedPrecision("auto", cuda, bf16_checked=True).describe() or "")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100, an H100
    assert resolve_precision("auto", cuda, bf16_checked=True) == "bf16"


def test_each_epoch_counts_its_own_skipped_updates_norms_and_threshold():
    guard = GradientGuard(skip_norm=2.0)
    assert _decide(guard, [3.0, 1.0, 4.0]) == [False, True, False]
    assert guard.epoch_skipped == 2 and guard.epoch_norms == [3.0, 1.0, 4.0]
    guard.start_epoch()
    assert guard.epoch_skipped == 0 and guard.epoch_norms == [] and guard.epoch_threshold == math.inf
    assert _decide(guard, [5.0, 1.0]) == [False, True]
    assert guard.epoch_skipped == 1 and guard.skipped_total == 3 and guard.epoch_threshold == 2.0
