"""Targeted tests that pin user-visible formulas (LR schedules, the active-units threshold, gradient
clipping, bits/dim, means and modes) and kill the mutants that earlier suites let through."""

import math
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dgmkit.cli.main import main
from dgmkit.conditional import BernoulliHead, Decoder, GaussianEncoder
from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import Split, load_dataset, make_transform
from dgmkit.errors import DgmError, EvaluationError
from dgmkit.evaluation import active_units, posterior_statistics
from dgmkit.models import VAE
from dgmkit.nn.scale import ClippedLogVariance
from dgmkit.priors import StandardNormalPrior
from dgmkit.training import StepGuard, Trainer, lr_factor


@pytest.mark.parametrize("epochs", [1, 4, 10])
def test_cosine_lr_factor_is_half_one_plus_cos(epochs):
    for epoch in range(epochs + 1):
        expected = 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        assert lr_factor("cosine", epoch, epochs) == pytest.approx(expected, abs=1e-12)
    assert lr_factor("cosine", 0, epochs) == pytest.approx(1.0)
    assert lr_factor("cosine", epochs, epochs) == pytest.approx(0.0, abs=1e-12)


def test_exponential_lr_factor_is_gamma_to_the_epoch_with_default_gamma_0_99():
    for epoch in (0, 1, 2, 5, 50):
        assert lr_factor("exponential", epoch, 100) == pytest.approx(0.99**epoch, rel=1e-12)
        assert lr_factor("exponential", epoch, 100, gamma=0.5) == pytest.approx(0.5**epoch, rel=1e-12)
    assert lr_factor("constant", 7, 10) == 1.0


def _fixed_mean_vae(scales):
    """A VAE whose posterior mean in unit u is scales[u] * s(x) with s(x) = +-1 (half each),
    so the unbiased sample variance of the posterior means is exactly scales[u]^2 * n / (n - 1)."""
    m = len(scales)
    a = torch.tensor(scales, dtype=torch.float32)

    class Enc(nn.Module):
        def forward(self, x):
            s = x.flatten(1)[:, :1] * 2 - 1  # +-1 from the first pixel
            out = torch.zeros(x.shape[0], 2 * m)
            out[:, :m] = s * a
            out[:, m:] = 0.0  # log sigma^2 = 0: unit scale
            return out

    return VAE(
        GaussianEncoder(Enc(), m, scale_map=ClippedLogVariance()),
        Decoder(nn.Linear(m, 4), BernoulliHead(), (1, 2, 2)),
        StandardNormalPrior(m),
    )


def test_active_units_default_threshold_is_0_01():
    n = 200
    x = torch.zeros(n, 1, 2, 2)
    x[: n // 2, 0, 0, 0] = 1.0
    # posterior-mean variances 0.0 (collapsed), ~0.0081 and ~0.0121 (just below / just above
    # the default 0.01), ~0.040 and ~0.25: three active at 0.01, one at 0.1
    scales = [0.0, 0.09, 0.11, 0.2, 0.5]
    model = _fixed_mean_vae(scales)
    stats = posterior_statistics(model, x)
    var = torch.tensor(stats["posterior_mean_variance"])
    expected = torch.tensor(scales) ** 2 * n / (n - 1)
    torch.testing.assert_close(var, expected, atol=1e-6, rtol=1e-5)
    assert stats["active_units"] == 3  # 0.0121, 0.04, 0.25 exceed 0.01
    assert active_units(model, x) == 3
    assert active_units(model, x, threshold=0.1) == 1
    assert posterior_statistics(model, x, threshold=0.001)["active_units"] == 4


def test_a_categorical_latent_is_active_when_any_of_its_class_probabilities_moves():
    """One-hot latents (V variables of K classes): the posterior means are class probabilities,
    and a variable counts as active when the variance over x of any class's probability exceeds
    the threshold (here class 0 moves by 0.0121 and class 1 with it; class 2 and variable 1 stay:
    the mean over classes, 0.0081, would call variable 0 collapsed)."""

    class OneHotPosterior(nn.Module):
        def posterior(self, x):
            s = x.flatten(1)[:, :1] * 2 - 1  # +-1, half each
            v0 = torch.cat([0.5 + 0.11 * s, 0.3 - 0.11 * s, torch.full_like(s, 0.2)], 1)
            v1 = torch.tensor([0.1, 0.2, 0.7]).expand(len(x), 3)
            probs = torch.stack([v0, v1], 1)  # (N, V = 2, K = 3)
            return torch.distributions.Independent(torch.distributions.OneHotCategorical(probs=probs), 1)

    x = torch.tensor([[0.0], [1.0]]).repeat(50, 1)  # s = -1, +1 alternately: unbiased variance 0.0121 * 100 / 99
    stats = posterior_statistics(OneHotPosterior(), x)
    assert stats["active_units"] == 1
    assert posterior_statistics(OneHotPosterior(), x, threshold=0.013)["active_units"] == 0


def test_the_layer_diagnostics_count_active_units_at_0_01_too():
    """dgm diagnose, and the per-layer rows of dgm eval and the report, use the same threshold."""
    from dgmkit.evaluation.diagnostics import diagnose

    n = 200
    x = torch.zeros(n, 1, 2, 2)
    x[: n // 2, 0, 0, 0] = 1.0
    model = _fixed_mean_vae([0.0, 0.09, 0.11, 0.2, 0.5])
    layer = diagnose(model, x, samples=1, holes=0, mutual_info=False).layers[0]
    assert layer.active_units == 3  # 0.0121, 0.04, 0.25 exceed 0.01; 0.0081 does not


def test_trainer_clips_the_gradient_norm_seen_by_the_optimizer():
    clip = 0.5
    digits = load_dataset("digits")
    cfg = RunConfig.of(dataset="digits", hidden=[16], latent_dim=2, batch_size=256, epochs=1, seed=0, device="cpu")
    torch.manual_seed(0)
    model = build_model(cfg, digits.event_shape, digits.num_levels)
    base = build_objective(cfg)

    class Huge(type(base)):  # a loss scaled so that every raw gradient norm is far above ``clip``
        def __call__(self, model, x, beta=1.0):
            terms = base(model, x, beta)
            return terms._replace(loss=terms.loss * 1e4)

    trainer = Trainer(
        model,
        Huge(),
        Split(digits.train.x[:512]),  # two steps of 256 suffice
        make_transform("bernoulli", digits),
        epochs=1,
        batch_size=256,
        parts=[StepGuard(clip=clip)],
        device="cpu",
        seed=0,
        progress=False,
    )
    norms = []

    def record(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    trainer.optimizer.register_step_pre_hook(record)
    trainer.fit()
    assert norms, "the optimizer never stepped"
    assert max(norms) <= clip * (1 + 1e-4)
    assert min(norms) == pytest.approx(clip, rel=1e-3)  # the huge raw gradients were clipped to exactly c


# ------------------------------------------------- formulas the suite did not pin (issue 32)
def test_the_logistic_mixtures_mean_is_the_mean_of_its_levels():
    """E[k] by enumeration of P(k) over the levels (the mean of the centres is not: the mass is
    cut at both ends)."""
    from dgmkit.distributions import DiscretizedLogisticMixture

    g = torch.Generator().manual_seed(0)
    for levels in (2, 5, 256):
        w, loc = (
            torch.randn(3, 1, 2, 2, 4, generator=g, dtype=torch.float64),
            torch.randn(3, 1, 2, 2, 4, generator=g, dtype=torch.float64),
        )
        log_s = torch.randn(3, 1, 2, 2, 4, generator=g, dtype=torch.float64) - 1
        d = DiscretizedLogisticMixture(w, loc, log_s, num_levels=levels, event_dims=3)
        k = torch.arange(levels, dtype=torch.float64).view(-1, 1, 1, 1, 1)
        p = d.log_prob_elements(k.long().expand(levels, 3, 1, 2, 2)).exp()
        assert torch.allclose(p.sum(0), torch.ones(3, 1, 2, 2, dtype=torch.float64))
        torch.testing.assert_close(d.mean, (k * p).sum(0), rtol=1e-10, atol=1e-10)


def test_the_categorical_mode_is_the_most_probable_level():
    from dgmkit.distributions import CategoricalPixels

    logits = torch.tensor([[[[[0.1, 2.0, -1.0, 1.9]]]], [[[[3.0, -2.0, 0.0, 2.9]]]]])  # (2, 1, 1, 1, 4)
    d = CategoricalPixels(logits, event_dims=3)
    assert d.mode.flatten().tolist() == [1, 0]


def test_a_flow_posteriors_location_is_the_image_of_its_base_mean():
    """location(q) = T^{-1}(E[u]): the bijection maps it back onto the base mean (not the mean
    of draws, not the base mean itself)."""
    from dgmkit.distributions import DiagonalNormal, FlowDistribution, location
    from dgmkit.transforms import iaf

    torch.manual_seed(1)
    bij = iaf(2, [8], 2, context_features=3).double()
    for p in bij.parameters():
        p.data += 0.3 * torch.randn_like(p)
    loc, scale = torch.randn(4, 2, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64) + 0.5
    context = torch.randn(4, 3, dtype=torch.float64)
    q = FlowDistribution(DiagonalNormal(loc, scale), bij, context=context)
    x = location(q)
    u, _ = bij(x, context)
    torch.testing.assert_close(u, loc, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(x, loc, atol=1e-3)


def test_the_vdm_prior_kl_is_kl_of_q_z1_against_the_standard_normal():
    """KL(q(z_1|x) || N(0, I)) with q(z_1|x) = N(alpha_1 x, sigma_1^2), alpha_1^2 = sigmoid(-gamma_1),
    sigma_1^2 = sigmoid(gamma_1), against torch's closed form, to float64 rounding (a sign error
    of log sigma^2 moves it by about 5 nats on MNIST, under the loose tolerance of other tests)."""
    from torch.distributions import Normal, kl_divergence

    from dgmkit.models.diffusion import GaussianDiffusion

    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    for gamma_1 in (-2.0, 1.5, 6.0):
        g = torch.tensor(gamma_1, dtype=torch.float64)
        got = GaussianDiffusion._prior_kl(None, x, g)
        q = Normal(torch.sigmoid(-g).sqrt() * x, torch.sigmoid(g).sqrt())
        want = kl_divergence(q, Normal(torch.zeros_like(x), torch.ones_like(x))).flatten(1).sum(1)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_the_vdm_prior_kl_of_a_float32_model_keeps_its_precision_at_a_large_gamma_1():
    """sigma_1^2 - 1 - log sigma_1^2 is about exp(-2 gamma_1) / 2, which float32's sigmoid(gamma_1) - 1 lost: at
    gamma_1 = 15 the term of four entries read 1.9e-7 nats for 3.1e-7 (38% off), at 20 4.1e-9 for 2.1e-9."""
    from torch.distributions import Normal, kl_divergence

    from dgmkit.models.diffusion import GaussianDiffusion

    x = torch.tensor([0.5, -0.9, 0.99, 0.0]).view(1, 1, 2, 2)
    for gamma_1 in (5.0, 10.0, 15.0, 20.0):  # (at 30 float64 loses it too)
        got = GaussianDiffusion._prior_kl(None, x, torch.tensor(gamma_1))
        g, x64 = torch.tensor(gamma_1, dtype=torch.float64), x.double()
        q = Normal(torch.sigmoid(-g).sqrt() * x64, torch.sigmoid(g).sqrt())
        want = kl_divergence(q, Normal(torch.zeros_like(x64), torch.ones_like(x64))).flatten(1).sum(1)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


def test_eval_bits_per_dim_of_the_nll_and_of_the_elbo():
    """bpd = NLL / (D ln 2) and the ELBO's bpd = -ELBO / (D ln 2): the bound's is the larger."""
    from dgmkit.evaluation import evaluate

    data = load_dataset("digits-4x4")
    cfg = RunConfig.of(dataset="digits-4x4", hidden=[16], latent_dim=2, epochs=2, batch_size=64)
    torch.manual_seed(0)
    model = build_model(cfg, data.event_shape, data.num_levels)
    t = make_transform("bernoulli", data)
    Trainer(model, build_objective(cfg), data.train, t, epochs=2, batch_size=64, seed=0, progress=False).fit()
    r = evaluate(model, t(data.test.x), iw_samples=50)
    d = 16 * math.log(2)
    assert r.bpd == pytest.approx(r.nll / d, rel=1e-12) and r.elbo_bpd == pytest.approx(-r.elbo / d, rel=1e-12)
    assert r.elbo_bpd > r.bpd > 0


# --------------------------------- survivors of a mutation pass over issue 32's and 33's code
# (each test below failed with its mutant applied and passes without it)
_TINY = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--batch-size", "256", "--quiet"]


def test_levels_are_256_from_a_largest_value_of_128():
    from dgmkit.data.registry import from_array

    rng = np.random.default_rng(0)
    x = rng.integers(0, 100, (40, 4))
    x[0, 0] = 128
    assert from_array(x).num_levels == 256
    x[0, 0] = 127
    assert from_array(x).num_levels == 128


def test_a_v4_mat_header_needs_its_o_digit_zero():
    from dgmkit.data.matlab import _v4_header

    body = b"x\x00" + bytes(8)
    assert _v4_header(struct.pack("<5i", 0, 1, 1, 0, 2) + body)
    assert not _v4_header(struct.pack("<5i", 100, 1, 1, 0, 2) + body)  # O = 1


def test_the_sprites_seed_is_part_of_their_identity():
    from dgmkit.data.sprites import sprites

    assert sprites(32, seed=0).fingerprint() != sprites(32, seed=1).fingerprint()


def test_student_t_scale_and_degrees_of_freedom_come_from_their_own_channels():
    from dgmkit.conditional import StudentTHead

    params = torch.randn(4, 1, 3, 1, 5, dtype=torch.float64)
    t = StudentTHead(min_scale=1e-3, min_df=3.0)(params).base_dist
    assert torch.allclose(t.scale, F.softplus(params[:, :, 1]) + 1e-3)
    assert torch.allclose(t.df, F.softplus(params[:, :, 2]) + 3.0)


def test_check_finite_refuses_inf_as_well_as_nan():
    from dgmkit.evaluation.figures import check_finite

    with pytest.raises(EvaluationError):
        check_finite(torch.tensor([0.0, float("inf")]), "x")  # (isnan alone would pass it)


@pytest.fixture
def tiny_run(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *_TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


def test_a_stranded_start_holds_no_best_weights(tiny_run):
    """An epoch's end writes its checkpoint before best.safetensors: a folder with best weights had
    a checkpoint (removed since), and is not started again (its best weights would be lost)."""
    from dgmkit.training import RunFolder

    (tiny_run / "checkpoint.safetensors").unlink()
    assert not RunFolder(tiny_run, fresh=False).stranded_start()  # config + metrics + own best
    (tiny_run / "best.safetensors").unlink()
    assert RunFolder(tiny_run, fresh=False).stranded_start()  # config (+ metrics) only
    (tiny_run / "config.json").write_text("[]")
    assert not RunFolder(tiny_run, fresh=False).stranded_start()  # a config.json that is no run's record


def test_a_restart_refuses_a_folder_with_other_files(tiny_run):
    from dgmkit.training import RunFolder

    (tiny_run / "checkpoint.safetensors").unlink()
    (tiny_run / "notes.txt").write_text("mine")
    with pytest.raises(DgmError, match="not empty"):
        with RunFolder(tiny_run, fresh=False, restart=True):
            pass
    assert (tiny_run / "config.json").is_file() and (tiny_run / "notes.txt").is_file()


def test_resume_refuses_generated_data_whose_recorded_digest_is_neither(tmp_path, capsys, monkeypatch):
    from dgmkit.data import Dataset

    out = tmp_path / "moons"
    argv = [
        "train",
        "--dataset",
        "two-moons",
        "--model",
        "flow",
        "--flow",
        "realnvp",
        "--flow-layers",
        "2",
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    monkeypatch.setattr(Dataset, "fingerprint", lambda self: "0" * 64)  # e.g. another generator version
    assert main(argv) == 0
    monkeypatch.undo()
    capsys.readouterr()
    rc = main(["train", "--resume", "--out", str(out), "--epochs", "2", "--quiet"])
    err = capsys.readouterr().err
    print("ERR", err)
    assert rc == 1


def test_layer_diagnostics_refuse_a_hierarchical_model_with_huge_weights(tmp_path):
    from dgmkit.config import load_run
    from dgmkit.data import load_dataset
    from dgmkit.evaluation.diagnostics import diagnose

    out = tmp_path / "hvae"
    argv = ["train", "--model", "hvae", "--latent-sizes", "4", "2", "--hidden", "16", "--dataset", "digits"]
    assert main([*argv, "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    model = load_run(out).model
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(1e20)
    x = (load_dataset("digits").test.x[:50] > 8).float()  # binary pixels, as its Bernoulli likelihood takes
    with pytest.raises(EvaluationError, match="non-finite"):
        diagnose(model, x, samples=1, holes=0, mutual_info=False)  # what dgm eval and report call


def test_a_two_process_resume_of_a_one_process_checkpoint_saves_each_ranks_own_stream(tmp_path):
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    base = [
        "train",
        "--dataset",
        "digits",
        "--model",
        "vae",
        "--hidden",
        "16",
        "--latent-dim",
        "3",
        "--device",
        "cpu",
        "--batch-size",
        "60",
        "--likelihood",
        "categorical",
        "--seed",
        "4",
        "--quiet",
    ]
    out = tmp_path / "run"
    assert main([*base, "--epochs", "1", "--out", str(out)]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd += ["--log-dir", str(tmp_path / "agent"), "-m", "dgmkit"]
    p = subprocess.run(
        [*cmd, *base, "--epochs", "2", "--resume", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    states = load_file(str(out / "checkpoint.safetensors"))["rng/torch_ranks"]  # T6b: a 2-process run keeps both
    assert states.shape[0] == 2 and not torch.equal(states[0], states[1])  # T6c: rank 1 did not reuse rank 0's stream


def test_a_checkpoint_without_every_ranks_state_reseeds_the_other_ranks():
    from pathlib import Path
    from types import SimpleNamespace

    from dgmkit.training.trainer import Trainer

    saved = torch.Generator().manual_seed(0).get_state()
    for rank in (0, 1):
        fake = SimpleNamespace(
            device=torch.device("cpu"),
            epoch=1,
            _rank_seed=lambda e: 12345,
            dist=SimpleNamespace(world_size=2, rank=rank, is_main=rank == 0),
        )
        state, cuda = Trainer._rank_states(fake, {"torch": saved}, Path("c"))
        assert torch.equal(state, saved) == (rank == 0) and cuda is None


def test_iwae_lr_factor_is_burda_et_al_s_stages_of_3_to_the_i_epochs():
    """Their code: stage i = 1..8 runs 3^(i-1) epochs at 1e-4 * round(10^(1 - (i-1)/7), 1)."""
    expected: list[float] = []
    for i in range(1, 9):
        expected += [1e-4 * round(10 ** (1 - (i - 1) / 7), 1)] * 3 ** (i - 1)
    assert len(expected) == 3280
    got = [1e-3 * lr_factor("iwae", e, 3280) for e in range(3280)]
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[:5] == pytest.approx([1e-3, 7.2e-4, 7.2e-4, 7.2e-4, 5.2e-4])
    assert 1e-3 * lr_factor("iwae", 5000, 3280) == pytest.approx(1e-4)  # the last stage's rate after them


def test_a_seeded_subset_keeps_the_split_s_order_and_a_limit_of_every_datapoint_is_no_subset():
    from dgmkit.cli.evaluate import _seeded_subset

    x, y = torch.arange(10.0) * 10, torch.arange(10)
    xs, ys, record = _seeded_subset(x, y, 4, seed=3)
    picked = sorted(torch.randperm(10, generator=torch.Generator().manual_seed(3))[:4].tolist())
    assert record == {"seed": 3, "of": 10, "indices": picked} and ys.tolist() == picked
    assert xs.tolist() == [10.0 * i for i in picked]
    assert _seeded_subset(x, y, 4, seed=4)[2]["indices"] != picked  # another seed, another subset
    assert _seeded_subset(x, y, 10, seed=3)[2] is None  # all of them: not a subset


def test_an_array_s_splits_are_drawn_with_its_seed():
    from dgmkit.data import from_array

    x = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1) / 7  # continuous rows, each its own value
    a, b, c = from_array(x, seed=0), from_array(x, seed=0), from_array(x, seed=1)
    assert (len(a.train), len(a.valid), len(a.test)) == (32, 4, 4)
    assert torch.equal(a.valid.x, b.valid.x) and not torch.equal(a.valid.x, c.valid.x)


def test_the_diagnosis_layer_variances_are_the_unbiased_ones_that_dgm_eval_reports():
    """dgm diagnose's per-layer variance of the posterior means, and its active units, are dgm
    eval's (the unbiased n / (n - 1) estimate): a unit at scale 0.0975 over n = 20 has variance
    0.010006 (active), its biased estimate 0.0095 (not)."""
    from dgmkit.evaluation.diagnostics import diagnose

    n, scales = 20, [0.0, 0.09, 0.0975, 0.2]
    x = torch.zeros(n, 1, 2, 2)
    x[: n // 2, 0, 0, 0] = 1.0
    model = _fixed_mean_vae(scales)
    layer = diagnose(model, x, samples=1, holes=0, seed=0, mutual_info=False).layers[0]
    assert layer.mean_variance == pytest.approx([s * s * n / (n - 1) for s in scales], rel=1e-5, abs=1e-9)
    assert layer.mean_variance == pytest.approx(posterior_statistics(model, x)["posterior_mean_variance"], rel=1e-5)
    assert layer.active_units == 2
