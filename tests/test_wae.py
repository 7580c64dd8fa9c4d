"""The Wasserstein autoencoder: its objective is the reconstruction cost plus lambda times the
unbiased MMD of the batch's codes against prior draws; the penalty pulls the codes to the prior
(a trained WAE's codes are closer to N(0, I) than an unpenalized one's); it samples, and `dgm
eval` reports reconstruction and MMD, never a likelihood."""

import json

import pytest
import torch

from dgmkit.cli.main import main
from dgmkit.config import RunConfig, build_model, load_run
from dgmkit.distributions.mmd import imq_kernel, mmd2_unbiased


def _wae(**kw):
    cfg = RunConfig.of(model="wae", dataset="digits", hidden=[32], latent_dim=3, **kw)
    return cfg, build_model(cfg, (1, 8, 8), 2)


@pytest.mark.parametrize("encoder", ["deterministic", "gaussian"])
def test_objective_is_cost_plus_lambda_mmd(encoder):
    cfg, model = _wae(wae_encoder=encoder, mmd_weight=7.0)
    x = (torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    objective = cfg.model.training_objective()
    with torch.random.fork_rng():
        torch.manual_seed(3)
        t = objective(model, x)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        z = model.posterior(x).rsample()
        recon = model.likelihood(z).log_prob(x)
        zp = model.prior().rsample((30,))
        mmd = mmd2_unbiased(z, zp, imq_kernel())
    assert torch.allclose(t.recon, recon) and torch.allclose(t.mmd, mmd.expand(30))
    assert torch.allclose(t.loss, -recon + 7.0 * mmd)
    t.loss.mean().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    xs, means = model.sample(5, generator=torch.Generator().manual_seed(1))
    assert xs.shape == (5, 1, 8, 8) and means.shape == (5, 1, 8, 8)
    assert set(xs.unique().tolist()) <= {0.0, 1.0}


def _train(tmp_path, name, weight):
    out = tmp_path / name
    argv = ["train", "--dataset", "digits", "--model", "wae", "--latent-dim", "4", "--hidden", "64"]
    assert main([*argv, "--mmd-weight", str(weight), "--epochs", "15", "--seed", "1", "--out", str(out), "--quiet"]) == 0
    return out


def test_the_penalty_pulls_the_codes_to_the_prior_and_eval_reports_it(tmp_path, capsys):
    plain, wae = _train(tmp_path, "plain", 0), _train(tmp_path, "wae", 100)
    capsys.readouterr()
    mmd = {}
    for run in (plain, wae):
        assert main(["eval", str(run), "--split", "test"]) == 0
        out = capsys.readouterr().out
        assert "MMD^2(q(z), p(z))" in out and "no density" in out and " +- " not in out
        report = json.loads((run / "eval.json").read_text())
        assert report["nll"] is None and report["elbo"] is None
        (term,) = report["terms"]
        assert term["name"] == "mmd" and term["label"] == "MMD^2(q(z), p(z))"
        mmd[run.name] = term["value"]
    assert mmd["wae"] < mmd["plain"] / 3, mmd
    line = json.loads((wae / "metrics.jsonl").read_text().splitlines()[-1])
    assert "valid_mmd" in line and "valid_recon" in line
    assert load_run(wae).model.can_sample
    assert main(["sample", str(wae), "--out", str(tmp_path / "s.png"), "-n", "16"]) == 0
    assert main(["reconstruct", str(wae), "--out", str(tmp_path / "r.png")]) == 0


def test_eval_mmd_skips_batches_too_small_for_the_estimate():
    from dgmkit.evaluation import evaluate

    _, model = _wae()
    x = (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    assert evaluate(model.eval(), x[:1]).term("mmd") is None
    both = evaluate(model, x, batch_size=2, seed=4)  # a batch of 2 and a batch of 1
    alone = evaluate(model, x[:2], batch_size=2, seed=4)
    assert both.term("mmd") is not None and both.term("mmd") == pytest.approx(alone.term("mmd"))
    notes = {r.terms[0]["note"] for r in (both, alone)}  # the batches as they were, not the batch size asked for
    assert notes == {
        "unbiased, inverse multiquadric kernel, one batch of 2 and one of 1, one draw of q and p each",
        "unbiased, inverse multiquadric kernel, one batch of 2, one draw of q and p each",
    }
    assert "10 batches of 1000 and one of 7" in evaluate(model, x.repeat(3336, 1, 1, 1)[:10007]).terms[0]["note"]


def test_eval_names_the_kernel_the_mmd_was_taken_under():
    # a WAE given the Gaussian kernel was reported "unbiased, inverse multiquadric kernel, ..."
    from dgmkit.distributions.mmd import rbf_kernel
    from dgmkit.evaluation import evaluate
    from dgmkit.models import WassersteinAutoencoder

    _, base = _wae()
    x = (torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    notes = []
    for kernel in (rbf_kernel(2.0), lambda a, b: (-(a[:, None] - b[None]).abs().sum(-1)).exp()):
        model = WassersteinAutoencoder(base.encoder, base.decoder, base.top_prior, kernel=kernel).eval()
        notes.append(evaluate(model, x).terms[0]["note"])
    assert notes == [
        "unbiased, Gaussian kernel of lengthscale 2, one batch of 4, one draw of q and p each",
        "unbiased, the model's own kernel, one batch of 4, one draw of q and p each",
    ]


def test_the_kl_weight_scales_the_mmd_penalty():
    cfg, model = _wae(wae_encoder="gaussian", mmd_weight=7.0)
    x = (torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    t = cfg.model.training_objective()(model, x, beta=0.5)
    assert torch.allclose(t.loss, -t.recon + 0.5 * 7.0 * t.mmd)


def test_the_epoch_line_shows_the_penalty_and_the_help_says_what_beta_weighs(tmp_path, capsys):
    argv = ["train", "--dataset", "digits", "--model", "wae", "--latent-dim", "2", "--hidden", "16", "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    mmd = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])["valid_mmd"]
    assert f"  MMD^2 {mmd:.4f}" in out and "KL" not in out
    assert main(["train", "--model", "wae", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "factor of the MMD penalty: the loss weighs it beta * lambda" in shown and "KL term" not in shown


def test_a_batch_of_one_which_leaves_the_mmd_penalty_at_0_is_refused(tmp_path, capsys):
    argv = ["train", "--dataset", "digits", "--model", "wae", "--latent-dim", "2", "--hidden", "16", "--epochs", "1"]
    assert main([*argv, "--batch-size", "1", "--out", str(tmp_path / "r")]) != 0
    assert "--batch-size 1" in capsys.readouterr().err
    assert main([*argv, "--batch-size", "1", "--mmd-weight", "0", "--out", str(tmp_path / "s")]) == 0  # no penalty asked


def test_a_share_of_a_batch_too_small_for_the_mmd_is_refused_in_python_and_before_nproc_starts(tmp_path, capsys):
    """Each process estimates the MMD on its own share of the batch: --batch-size 3 over 2
    processes gave one a share of 1 (no penalty there, half the weight in the mean); refused by
    the launcher before the processes start, and by the Trainer, in one process too (the Python
    API's Trainer(batch_size=1) trained a WAE as a plain autoencoder)."""
    from dgmkit.config import RunConfig, build_model, build_objective
    from dgmkit.data import load_dataset, make_transform
    from dgmkit.errors import ConfigError
    from dgmkit.training import Trainer

    argv = ["train", "--dataset", "digits", "--model", "wae", "--nproc", "2", "--out", str(tmp_path / "n")]
    assert main([*argv, "--batch-size", "3"]) == 1
    err = capsys.readouterr()
    assert "batch size 3 shared by 2 processes, a share of 1 (take a batch size of 4 or more)" in err.err
    assert "starting" not in err.out and not (tmp_path / "n").exists()
    cfg = RunConfig.of(model="wae", dataset="digits", hidden=[8], latent_dim=2)
    data = load_dataset("digits")
    model = build_model(cfg, data.event_shape, data.num_levels)
    with pytest.raises(ConfigError, match="WAEObjective's estimate needs at least 2 datapoints of a batch together"):
        Trainer(model, build_objective(cfg), data.split("train"), make_transform("bernoulli", data), batch_size=1)
    no_penalty = build_objective(cfg.replace(mmd_weight=0.0))
    Trainer(model, no_penalty, data.split("train"), make_transform("bernoulli", data), batch_size=1, progress=False)


def test_a_last_batch_of_one_code_is_left_out_and_a_split_of_one_refused():
    """The unbiased MMD of one code is 0: a last batch of one row trained that step as a plain
    autoencoder (9 rows at batch size 4: steps of 4, 4 and 1). It is left out of each epoch, as
    data-parallel ranks leave out a last batch too small to share; a training split of one row,
    which would leave no step, is refused by name. Without a penalty every row is trained on."""
    from dgmkit.config import RunConfig, build_model, build_objective
    from dgmkit.data import Split, load_dataset, make_transform
    from dgmkit.errors import ConfigError
    from dgmkit.training import Trainer

    cfg = RunConfig.of(model="wae", dataset="digits", hidden=[8], latent_dim=2)
    data = load_dataset("digits")
    whole, transform = data.split("train"), make_transform("bernoulli", data)

    def train(n):
        return Split(whole.x[:n])

    model = build_model(cfg, data.event_shape, data.num_levels)
    sizes = []
    objective = build_objective(cfg)

    class Recording(type(objective)):
        def __call__(self, model, x, beta):
            sizes.append(len(x))
            return super().__call__(model, x, beta)

    objective.__class__ = Recording
    trainer = Trainer(model, objective, train(9), transform, batch_size=4, epochs=1, progress=False)
    assert trainer.steps_per_epoch == 2
    trainer.fit()
    assert sizes == [4, 4] and trainer.step == 2 and trainer.batches.rows_per_epoch == 8
    free = Trainer(model, build_objective(cfg.replace(mmd_weight=0.0)), train(9), transform, batch_size=4, progress=False)
    assert free.steps_per_epoch == 3
    assert Trainer(model, build_objective(cfg), train(8), transform, batch_size=4, progress=False).steps_per_epoch == 2
    with pytest.raises(ConfigError, match="needs at least 2 datapoints of a batch together; the training split has 1"):
        Trainer(model, build_objective(cfg), train(1), transform, batch_size=4, progress=False)


def test_dgm_diagnose_says_the_wae_has_a_prior_held_by_the_mmd_not_that_it_has_none(tmp_path, capsys):
    """The WAE has p(z) and q(z|x); what it lacks for dgm diagnose is a KL ("not a latent variable
    model with a prior p(z) and an amortized q(z|x)" was said of it, as of the plain autoencoder)."""
    out = tmp_path / "wae"
    argv = ["train", "--dataset", "digits", "--model", "wae", "--latent-dim", "2", "--hidden", "8", "--epochs", "1"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(out), "--out", str(tmp_path / "d.png")]) != 0
    err = capsys.readouterr().err
    assert "MMD penalty, not a KL" in err and "no KL or ELBO to diagnose" in err and "with a prior p(z)" not in err
