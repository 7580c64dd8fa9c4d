"""The VQ-VAE: its bound log p(x|z_q(x)) + log p(z_q(x)) is at most the exact log p(x) that
enumerating every code grid gives on a tiny model; dgm eval reports that bound; training keeps
the codebook in use and logs usage and perplexity; sampling and reconstruction work."""

import itertools
import json
import math
import os
import shutil

import pytest
import torch

from dgmkit.cli.main import main
from dgmkit.config import RunConfig, build_model, load_run
from dgmkit.evaluation import evaluate
from run_records import rewrite_records


def test_the_bound_is_below_the_exact_likelihood_by_enumeration():
    cfg = RunConfig.of(model="vqvae", dataset="digits-4x4", codes=5, code_dim=3, vq_width=8, downsample=1, res_blocks=1)
    model = build_model(cfg, (1, 4, 4), 2).eval()
    assert model.code_shape == (2, 2)
    torch.manual_seed(0)
    with torch.no_grad():
        model.quantizer.embedding.copy_(torch.randn(5, 3))
    x = (torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    grids = torch.tensor(list(itertools.product(range(5), repeat=4))).reshape(-1, 2, 2)  # all 625 code grids
    with torch.no_grad():
        log_px_z = model.likelihood(grids[:, None]).log_prob(x)  # (625, 12)
        exact = torch.logsumexp(log_px_z + model.prior().log_prob(grids)[:, None], 0)
        codes = model.codes(x)
        bound = model.likelihood(codes).log_prob(x) + model.log_prior_uniform()
    assert (bound <= exact + 1e-5).all()
    assert model.log_prior_uniform() == pytest.approx(-4 * math.log(5))
    assert torch.allclose(model.prior().log_prob(codes), torch.full((12,), -4 * math.log(5)))
    # the evaluation's bound (k = 1) is the same number, and the training objective's score too
    report = evaluate(model, x, iw_samples=1)
    assert report.estimate == "bound" and report.nll == pytest.approx(-bound.double().mean().item(), rel=1e-5)
    # the bound's split: reconstruction and KL(point mass || p) = -log p(z_q) = 4 log 5 under the uniform prior
    assert report.kl == pytest.approx(4 * math.log(5), rel=1e-6)
    assert report.recon - report.kl == pytest.approx(report.elbo, rel=1e-5)
    terms = cfg.model.training_objective()(model, x)
    assert torch.allclose(terms.bound, bound, atol=1e-4)


def test_train_eval_sample_on_digits(tmp_path, capsys):
    out = tmp_path / "vq"
    argv = ["train", "--dataset", "digits", "--model", "vqvae", "--codes", "32", "--code-dim", "8", "--vq-width", "32"]
    assert (
        main(
            [*argv, "--downsample", "1", "--epochs", "8", "--lr", "3e-3", "--vq-decay", "0.9", "--out", str(out), "--quiet"]
        )
        == 0
    )
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    last = lines[-1]
    for k in ("valid_usage", "valid_perplexity", "valid_bound", "valid_recon", "valid_commitment"):
        assert k in last and math.isfinite(last[k])
    assert last["valid_usage"] >= 0.9  # k-means start and dead-code restarts keep the codebook in use
    assert last["valid_perplexity"] > 10
    assert last["valid_bound"] > lines[0]["valid_bound"]
    capsys.readouterr()
    assert main(["eval", str(out), "--split", "test"]) == 0
    text = capsys.readouterr().out
    assert "bits/dim" in text and "lower bound" in text
    report = json.loads((out / "eval.json").read_text())
    assert report["estimate"] == "bound" and report["iw_samples"] == 1
    model = load_run(out).model
    assert model.code_shape == (4, 4)
    assert main(["sample", str(out), "--out", str(tmp_path / "s.png"), "-n", "8"]) == 0
    assert main(["reconstruct", str(out), "--out", str(tmp_path / "r.png")]) == 0


def test_bad_shapes_are_refused():
    from dgmkit.errors import ConfigError

    cfg = RunConfig.of(model="vqvae", dataset="digits", downsample=4)
    with pytest.raises(ConfigError, match="divisible by 16"):
        build_model(cfg, (1, 8, 8), 17)


def test_a_learned_prior_over_codes_tightens_the_bound_and_samples(tmp_path, capsys):
    vq, other, prior = tmp_path / "vq", tmp_path / "vq2", tmp_path / "prior"
    argv = ["train", "--dataset", "digits", "--model", "vqvae", "--codes", "16", "--code-dim", "4", "--vq-width", "16"]
    for out, seed in ((vq, 0), (other, 1)):
        assert main([*argv, "--downsample", "1", "--epochs", "3", "--seed", str(seed), "--out", str(out), "--quiet"]) == 0
    arm = ["train", "--model", "arm", "--codes-of", str(vq), "--likelihood", "categorical", "--channels", "16"]
    assert main([*arm, "--arm-layers", "3", "--epochs", "6", "--lr", "3e-3", "--out", str(prior), "--quiet"]) == 0
    record = json.loads((prior / "config.json").read_text())
    assert record["data"]["event_shape"] == [1, 4, 4] and record["data"]["num_levels"] == 16
    capsys.readouterr()
    # the prior's own samples are code grids, not images (drawn as grey pictures of indices, they meant nothing)
    assert main(["sample", str(prior), "--out", str(tmp_path / "codes.png")]) == 1
    said = capsys.readouterr().err
    assert f"models the codes of {vq}" in said and f"--code-prior {prior}" in said and not (tmp_path / "codes.png").exists()
    assert main(["sample", str(prior), "-n", "2", "--out", str(tmp_path / "codes.npy")]) == 0  # (an array of them: said so)
    assert "as an array (2, 1, 4, 4) of uint8 (code grids, the data's levels 0..15)" in capsys.readouterr().out
    assert main(["eval", str(vq), "--split", "test"]) == 0
    uniform = json.loads((vq / "eval.json").read_text())
    assert main(["eval", str(vq), "--split", "test", "--code-prior", str(prior)]) == 0
    learned = json.loads((vq / "eval.json").read_text())
    assert "learned" not in capsys.readouterr().err
    assert learned["inputs"] == {"code-prior": str(prior)} and uniform["inputs"] == {}
    assert main(["eval", str(vq), "--split", "test", "--input", f"code-prior={prior}"]) == 0  # the generic spelling
    assert json.loads((vq / "eval.json").read_text())["nll"] == learned["nll"]
    evals = json.loads((vq / "evals.json").read_text())["results"]
    assert len(evals) == 2 and any(" | code prior " in key for key in evals)  # the same protocol, kept once
    assert learned["input_weights"] == {"code-prior": load_run(prior).weights_digest()}
    # another prior at the same path (trained on, or another run copied there) is another protocol, kept beside
    retrained = tmp_path / "prior-b"
    assert main([*arm, "--arm-layers", "3", "--epochs", "1", "--seed", "5", "--out", str(retrained), "--quiet"]) == 0
    shutil.move(prior, tmp_path / "prior-a")
    shutil.copytree(retrained, prior)
    assert main(["eval", str(vq), "--split", "test", "--code-prior", str(prior)]) == 0
    assert len(json.loads((vq / "evals.json").read_text())["results"]) == 3
    shutil.rmtree(prior)
    shutil.move(tmp_path / "prior-a", prior)
    # the same reconstruction term; the prior term is the prior run's code NLL instead of 16 log 16
    assert main(["eval", str(prior), "--split", "test"]) == 0
    code_nll = json.loads((prior / "eval.json").read_text())["nll"]
    assert code_nll < 16 * math.log(16)
    assert learned["nll"] == pytest.approx(uniform["nll"] - 16 * math.log(16) + code_nll, abs=1e-3)
    assert main(["sample", str(vq), "--code-prior", str(prior), "--out", str(tmp_path / "s.png"), "-n", "4"]) == 0
    # --naive: the codes are drawn by an autoregressive model, but on its cached path (it said --naive was only for
    # autoregressive models, as if the code prior were none)
    capsys.readouterr()
    assert main(["sample", str(vq), "--code-prior", str(prior), "--out", str(tmp_path / "n.png"), "--naive"]) == 1
    said = capsys.readouterr().err
    assert "the vqvae model's code prior draws its code grids by its cached path, which draws the same codes" in said
    assert not (tmp_path / "n.png").exists()
    # dgm score of the test images: the bound under either prior, as dgm eval gives it, each named (score took no prior)
    import numpy as np

    from dgmkit.cli.common import run_data

    np.save(tmp_path / "test.npy", run_data(load_run(vq)).test.x.numpy())
    capsys.readouterr()
    for flags, nll, words in (
        ([], uniform["nll"], "the uniform code prior"),
        (["--code-prior", str(prior)], learned["nll"], "the code prior"),
    ):
        out = tmp_path / f"score{len(flags)}.csv"
        assert main(["score", str(vq), str(tmp_path / "test.npy"), *flags, "--out", str(out)]) == 0
        said = capsys.readouterr().out
        assert f"mean log p(x) {-nll:.3f} nats" in said and f"under p(z), {words}; a point-mass posterior, one draw" in said
    # from Python: a prior attached by one call stays attached, and later results name it (they were computed
    # with it and said "uniform over the codes"); a loaded run is taken as a prior too, other things refused in words
    import dgmkit
    from dgmkit.errors import ConfigError

    loaded = dgmkit.load(vq)
    assert dgmkit.evaluate(loaded).inputs == {}
    with_prior = dgmkit.evaluate(loaded, code_prior=dgmkit.load(prior))
    later = dgmkit.evaluate(loaded)
    assert later.inputs == with_prior.inputs == {"code-prior": str(prior)} and later.nll == with_prior.nll
    assert "the code prior" in dgmkit.sample(loaded, 2)[1]
    zeroed = dgmkit.load(prior)  # a loaded run is attached as it is, not read again from its folder
    for p in zeroed.model.parameters():
        p.data.zero_()
    assert dgmkit.evaluate(dgmkit.load(vq), code_prior=zeroed).nll != with_prior.nll
    for bad in ({"inputs": "code-prior"}, {"code_prior": 3}, {"inputs": {"code-prior": None}}):
        with pytest.raises(ConfigError, match="inputs"):
            dgmkit.evaluate(dgmkit.load(vq), **bad)
    # a prior belongs to the codes it was trained on
    assert main(["eval", str(other), "--code-prior", str(prior)]) == 1
    assert "not trained on the codes of" in capsys.readouterr().err
    assert main(["train", "--model", "arm", "--codes-of", str(prior), "--out", str(tmp_path / "x"), "--quiet"]) == 1
    assert "family, which makes no data for other runs" in capsys.readouterr().err


def test_two_levels_bound_below_enumeration_and_the_joint_code_prior(tmp_path, capsys):
    cfg = RunConfig.of(
        model="vqvae", dataset="digits-4x4", codes=3, code_dim=2, vq_width=8, downsample=1, res_blocks=1, vq_levels=2
    )
    model = build_model(cfg, (1, 4, 4), 2).eval()
    assert model.code_shape == (1, 5) and model.top_shape == (1, 1) and model.bottom_shape == (2, 2)
    torch.manual_seed(0)
    with torch.no_grad():
        model.quantizer.embedding.copy_(torch.randn(3, 2))
        model.top_quantizer.embedding.copy_(torch.randn(3, 2))
    x = (torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    grids = torch.tensor(list(itertools.product(range(3), repeat=5))).reshape(-1, 1, 5)  # all 243 code pairs
    with torch.no_grad():
        exact = torch.logsumexp(model.likelihood(grids[:, None]).log_prob(x) + model.prior().log_prob(grids)[:, None], 0)
        codes = model.codes(x)
        bound = model.likelihood(codes).log_prob(x) + model.log_prior_uniform()
        # the code of an image decodes the same way as the training pass's quantized maps
        px, q = model.train_pass(x)
    assert codes.shape == (10, 1, 5) and torch.equal(q.indices, codes)
    with torch.no_grad():  # quantize: both levels' indices joined as codes() joins them, both codebooks' counts
        both = model.quantize(x)
    assert torch.equal(both.indices, codes) and both.counts.shape == (6,) and both.counts.sum() == 10 * 5
    assert torch.allclose(px.log_prob(x), model.likelihood(codes).log_prob(x), atol=1e-5)
    assert (bound <= exact + 1e-5).all()
    assert model.log_prior_uniform() == pytest.approx(-5 * math.log(3))
    # trained from the CLI, with an autoregressive prior over the joined (top, bottom) sequence
    vq, prior = tmp_path / "vq2", tmp_path / "prior2"
    argv = ["train", "--dataset", "digits", "--model", "vqvae", "--vq-levels", "2", "--codes", "8", "--code-dim", "4"]
    assert main([*argv, "--vq-width", "16", "--downsample", "1", "--epochs", "2", "--out", str(vq), "--quiet"]) == 0
    arm = ["train", "--model", "arm", "--arm", "causal-conv", "--codes-of", str(vq), "--likelihood", "categorical"]
    assert main([*arm, "--channels", "16", "--arm-layers", "3", "--epochs", "3", "--out", str(prior), "--quiet"]) == 0
    assert json.loads((prior / "config.json").read_text())["data"]["event_shape"] == [1, 1, 20]
    capsys.readouterr()
    assert main(["eval", str(vq), "--split", "test"]) == 0
    uniform = json.loads((vq / "eval.json").read_text())
    assert main(["eval", str(prior), "--split", "test"]) == 0
    code_nll = json.loads((prior / "eval.json").read_text())["nll"]
    assert main(["eval", str(vq), "--split", "test", "--code-prior", str(prior)]) == 0
    learned = json.loads((vq / "eval.json").read_text())
    assert learned["nll"] == pytest.approx(uniform["nll"] - 20 * math.log(8) + code_nll, abs=1e-3)
    assert main(["sample", str(vq), "--code-prior", str(prior), "--out", str(tmp_path / "s.png"), "-n", "4"]) == 0
    assert main(["reconstruct", str(vq), "--out", str(tmp_path / "r.png"), "-n", "4"]) == 0


def test_two_levels_report_the_mean_of_their_codebooks_perplexities_and_usages():
    """Each level has its own codebook of K codes: a batch that uses every code of both equally
    has perplexity K (the 2K codes' perplexity taken together was 3.3 for K = 2, more codes than
    either codebook holds), and a real pass reports the mean of the levels' own figures."""
    from dgmkit.nn.quantize import perplexity
    from dgmkit.objectives.vq import VQObjective

    cfg = RunConfig.of(
        model="vqvae", dataset="digits-4x4", codes=2, code_dim=2, vq_width=8, downsample=1, res_blocks=1, vq_levels=2
    )
    model = build_model(cfg, (1, 8, 8), 2).eval()
    x = (torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    with torch.no_grad():
        top, bottom = model._levels(x, train=False)
        terms = VQObjective()(model, x)
    levels = [perplexity(top.counts), perplexity(bottom.counts)]
    assert terms.perplexity[0].item() == pytest.approx(sum(levels).item() / 2) and terms.perplexity.max() <= 2
    assert terms.usage[0].item() == pytest.approx(((top.counts > 0).sum() + (bottom.counts > 0).sum()).item() / 4)
    px, q = model.train_pass(x)
    even = q._replace(counts=torch.tensor([10, 10, 40, 40]))  # 20 top and 80 bottom positions, every code alike
    model.train_pass = lambda x: (px, even)
    terms = VQObjective()(model, x)
    assert terms.perplexity[0].item() == pytest.approx(2.0) and terms.usage[0].item() == 1.0


def test_code_priors_must_model_integers_and_current_codes(tmp_path, capsys):
    vq = tmp_path / "vq"
    argv = ["train", "--dataset", "digits", "--model", "vqvae", "--codes", "8", "--code-dim", "4", "--vq-width", "16"]
    assert main([*argv, "--downsample", "1", "--epochs", "1", "--out", str(vq), "--quiet"]) == 0
    capsys.readouterr()
    # codes are integers: a Bernoulli or continuous model of them is refused before training
    bern = ["train", "--model", "arm", "--arm", "made", "--codes-of", str(vq), "--out", str(tmp_path / "b"), "--quiet"]
    assert main(bern) == 1 and "categorical or logistic" in capsys.readouterr().err
    assert main(["train", "--model", "ppca", "--codes-of", str(vq), "--out", str(tmp_path / "p"), "--quiet"]) == 1
    capsys.readouterr()
    # the data come from the VQ-VAE run: other data flags are refused
    assert (
        main(["train", "--model", "arm", "--codes-of", str(vq), "--dataset", "sprites", "--out", str(tmp_path / "s")]) == 1
    )
    assert "leave out dataset" in capsys.readouterr().err
    # a prior remembers its VQ-VAE by its full path, and refuses codes that changed since
    prior = tmp_path / "prior"
    arm = ["train", "--model", "arm", "--arm", "made", "--likelihood", "categorical", "--made-hidden", "32"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main([*arm, "--codes-of", "vq", "--epochs", "1", "--out", "prior", "--quiet"]) == 0
    finally:
        os.chdir(cwd)
    assert json.loads((prior / "config.json").read_text())["config"]["data"]["codes_of"] == str(vq.resolve())
    assert main(["eval", str(prior), "--split", "test"]) == 0
    # the first run's digits are read from no folder: a --data-dir would be unread (as for the VQ-VAE run itself)
    unread = f"--data-dir is of datasets read from a folder; the data of this run are made from those of {vq.resolve()}"
    assert main(["eval", str(prior), "--data-dir", str(tmp_path)]) == 1
    assert unread in (err := capsys.readouterr().err) and "trained on digits, read from no folder" in err
    assert main([*arm, "--codes-of", str(vq), "--data-dir", str(tmp_path), "--out", str(tmp_path / "d"), "--quiet"]) == 1
    assert unread in capsys.readouterr().err and not (tmp_path / "d").exists()
    # one an older dgmkit recorded, unread: the run is used as before (only a --data-dir given now is refused)
    rewrite_records(prior, lambda r: {**r, "config": {**r["config"], "data": {**r["config"]["data"], "data_dir": "/x"}}})
    assert main(["eval", str(prior), "--split", "test"]) == 0
    assert main(["train", "--resume", "--out", str(vq), "--epochs", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(prior), "--split", "test"]) == 1
    assert "other data than the run" in capsys.readouterr().err
    assert main(["eval", str(vq), "--code-prior", str(prior)]) == 1
    assert "not trained on the codes" in capsys.readouterr().err
    # roles a family does not declare, and runs that make no data for others, are refused by name
    assert main(["eval", str(prior), "--input", f"code-prior={vq}"]) == 1
    assert "whose inputs are: none" in capsys.readouterr().err
    assert main(["eval", str(vq), "--input", "background"]) == 1
    assert "ROLE=RUN_DIR" in capsys.readouterr().err
    assert main(["eval", str(vq), "--input", f"code-prior={prior}", "--code-prior", str(prior)]) == 1
    assert "--input code-prior is named twice" in capsys.readouterr().err
    # a model of the codes without an exact likelihood is no code prior (a VAE's is a bound)
    vae = tmp_path / "vae"
    flags = ["--likelihood", "categorical", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    assert main(["train", "--model", "vae", "--codes-of", str(vq), *flags, "--out", str(vae)]) == 0
    capsys.readouterr()
    assert main(["eval", str(vq), "--code-prior", str(vae)]) == 1
    err = capsys.readouterr().err
    assert "holds a vae model: a code prior needs an exact log-likelihood and sampling" in err and err.count("\n") == 1

    # the codebook is a moving average already: --ema is refused
    assert main([*argv, "--ema", "0.99", "--out", str(tmp_path / "e")]) == 1
    assert "--ema" in capsys.readouterr().err


def test_a_code_prior_follows_its_vqvae_to_a_new_folder_and_no_other(tmp_path, capsys):
    """A run on another run's data (a code prior, carried to another machine, or its VQ-VAE moved)
    takes that run's new folder (--data for the commands that read it, --codes-of on resume),
    pinned by the run's id and weights: another VQ-VAE at the new folder is refused."""
    vq, other, prior, moved = tmp_path / "vq", tmp_path / "other", tmp_path / "prior", tmp_path / "carried" / "vq"
    argv = ["train", "--dataset", "digits", "--model", "vqvae", "--codes", "8", "--code-dim", "4", "--vq-width", "16"]
    for out, seed in ((vq, 0), (other, 1)):
        assert main([*argv, "--downsample", "1", "--epochs", "1", "--seed", str(seed), "--out", str(out), "--quiet"]) == 0
    arm = ["train", "--model", "arm", "--arm", "made", "--likelihood", "categorical", "--made-hidden", "32"]
    assert main([*arm, "--codes-of", str(vq), "--epochs", "1", "--out", str(prior), "--quiet"]) == 0
    assert main(["eval", str(prior), "--split", "test"]) == 0
    before = json.loads((prior / "eval.json").read_text())["nll"]
    moved.parent.mkdir()
    shutil.move(vq, moved)
    capsys.readouterr()
    assert main(["eval", str(prior), "--split", "test"]) == 1
    err = capsys.readouterr().err
    assert f"no run folder at {vq}, the run whose data this run takes (moved?" in err and "--data NEW" in err
    assert main(["eval", str(prior), "--split", "test", "--data", str(moved)]) == 0
    assert json.loads((prior / "eval.json").read_text())["nll"] == before
    older_best = (prior / "best.safetensors").read_bytes()  # (it names the VQ-VAE's first folder)
    assert main(["train", "--resume", "--out", str(prior), "--epochs", "2", "--codes-of", str(moved), "--quiet"]) == 0
    assert json.loads((prior / "config.json").read_text())["config"]["data"]["codes_of"] == str(moved.resolve())
    assert main(["eval", str(prior), "--split", "test"]) == 0  # found where it was resumed with
    (prior / "best.safetensors").write_bytes(older_best)  # a best checkpoint from before the move (no better epoch since)
    assert main(["eval", str(prior), "--split", "test"]) == 0
    assert json.loads((prior / "eval.json").read_text())["nll"] == before
    again = tmp_path / "again" / "vq"  # moved once more: a resume with no epoch left to train records it too
    again.parent.mkdir()
    shutil.move(moved, again)
    assert main(["train", "--resume", "--out", str(prior), "--epochs", "2", "--codes-of", str(again), "--quiet"]) == 0
    assert json.loads((prior / "config.json").read_text())["config"]["data"]["codes_of"] == str(again.resolve())
    assert main(["eval", str(prior), "--split", "test"]) == 0
    shutil.move(again, moved)
    capsys.readouterr()
    assert main(["eval", str(prior), "--split", "test", "--data", str(other)]) == 1  # another run there: other codes
    assert "other data than the run" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(prior), "--epochs", "3", "--codes-of", str(other), "--quiet"]) == 1
    assert "other data than the run" in capsys.readouterr().err


def test_every_link_of_a_chain_of_runs_on_runs_data_is_pinned(tmp_path, capsys, monkeypatch):
    """C takes B's latents, B takes A's: C's data are refused once B's source is not the A it was
    trained on (its config.json pointed at another run, or A trained on since)."""
    flags = ["--epochs", "1", "--hidden", "8", "--quiet"]
    a, other, b, c = (tmp_path / n for n in ("a", "other", "b", "c"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for out, seed in ((a, 0), (other, 5)):
        assert (
            main(["train", "--dataset", "digits", *flags, "--latent-dim", "4", "--seed", str(seed), "--out", str(out)]) == 0
        )
    for out, source in ((b, "~/a"), (c, b)):  # ("~": the home folder, as a config file's codes_of may say it)
        assert main(["train", "--codes-of", str(source), "--likelihood", "gaussian", *flags, "--latent-dim", "2",
                     "--out", str(out)]) == 0  # fmt: skip
    assert json.loads((b / "config.json").read_text())["config"]["data"]["codes_of"] == str(a.resolve())
    assert main(["eval", str(c), "--split", "test"]) == 0
    kept = (b / "config.json").read_text()
    (b / "config.json").write_text(kept.replace(json.dumps(str(a.resolve())), json.dumps(str(other.resolve()))))
    capsys.readouterr()
    assert main(["eval", str(c), "--split", "test"]) == 1
    assert "other data than the run" in capsys.readouterr().err
    (b / "config.json").write_text(kept.replace(json.dumps(str(a.resolve())), "null"))  # nor may its source vanish
    assert main(["eval", str(c), "--split", "test"]) == 1
    assert "describe different runs (was config.json edited?)" in capsys.readouterr().err
    (b / "config.json").write_text(kept)
    assert main(["eval", str(c), "--split", "test"]) == 0
    assert main(["train", "--resume", "--out", str(a), "--epochs", "2", "--quiet"]) == 0  # A trained on: other latents
    capsys.readouterr()
    assert main(["eval", str(c), "--split", "test"]) == 1
    assert "other data than the run" in capsys.readouterr().err


def test_figures_of_images_refuse_a_model_of_code_grids(tmp_path, capsys, monkeypatch):
    """A VAE of a VQ-VAE's code grids: dgm reconstruct, interpolate and traverse are refused, as dgm
    sample is (they drew the grids of code indices, numbers in an arbitrary order, as grey pictures
    called "test images"); its latent means are still scattered."""
    vq, vae = tmp_path / "vq", tmp_path / "vae"
    argv = ["train", "--dataset", "digits", "--model", "vqvae", "--codes", "8", "--code-dim", "2", "--vq-width", "8"]
    assert main([*argv, "--epochs", "1", "--out", str(vq), "--quiet"]) == 0
    flags = ["--likelihood", "categorical", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    assert main(["train", "--model", "vae", "--codes-of", str(vq), *flags, "--out", str(vae)]) == 0
    capsys.readouterr()
    for command in ("reconstruct", "interpolate", "traverse"):
        assert main([command, str(vae), "--out", str(tmp_path / f"{command}.png")]) == 1
        err = capsys.readouterr().err
        assert f"models the codes of {vq}, not images" in err and "dgm latents" in err, err
        assert not (tmp_path / f"{command}.png").exists()
    assert main(["latents", str(vae), "--out", str(tmp_path / "latents.png")]) == 0
    # dgm report: no "reconstructions" of code grids either, a note instead; the latent scatter titled by the codes
    import dgmkit.cli.report as report

    shown, titles = [], []
    monkeypatch.setattr(report, "render_page", lambda runs, title: shown.extend(runs) or "<html></html>")
    scatter = report.latent_scatter
    monkeypatch.setattr(report, "latent_scatter", lambda run, x, y, title: titles.append(title) or scatter(run, x, y, title))
    assert main(["report", str(vae), "--out", str(tmp_path / "r.html"), "--samples", "0"]) == 0
    [r] = shown
    assert [f[0] for f in r.figures] == ["latent means"], [f[0] for f in r.figures]
    assert any(f"no reconstruction figure: the run models the codes of {vq}" in n for n in r.notes), r.notes
    assert titles == [f"the codes of {vq} test: posterior means E[z|x] (n=300)"], titles


@pytest.mark.parametrize("levels", [1, 2])
def test_sampling_no_images_gives_an_empty_batch(levels):
    """n = 0 is a count that every model's sample takes (a batch of none): the uniform code prior's
    draw of no grid was torch's RuntimeError ("cannot sample n_sample <= 0 samples")."""
    cfg = RunConfig.of(
        model="vqvae", dataset="digits", codes=4, code_dim=2, vq_width=8, downsample=1, res_blocks=0, vq_levels=levels
    )
    model = build_model(cfg, (1, 8, 8), 2).eval()
    x, mean = model.sample(0)
    assert x.shape == mean.shape == (0, 1, 8, 8)
    assert model.sample(3)[0].shape == (3, 1, 8, 8)


@pytest.mark.parametrize("levels", [1, 2])
def test_a_batch_of_no_images_is_coded_reconstructed_and_scored_as_an_empty_batch(levels):
    """The quantizer summed each example's squared errors by reshape(B, -1), which B = 0 leaves
    ambiguous: the two-level model's codes and reconstructions of no images, and both models'
    training objective, were torch's RuntimeError ("cannot reshape tensor of 0 elements")."""
    from dgmkit.objectives.vq import VQObjective

    cfg = RunConfig.of(
        model="vqvae", dataset="digits", codes=4, code_dim=2, vq_width=8, downsample=1, res_blocks=0, vq_levels=levels
    )
    model = build_model(cfg, (1, 8, 8), 2).eval()
    none = torch.zeros(0, 1, 8, 8)
    assert model.codes(none).shape == (0, *model.code_shape)
    assert model.reconstruct(none).shape == (0, 1, 8, 8)
    assert VQObjective()(model, none).loss.shape == (0,)
    if levels == 2:
        return
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.5), generator=torch.Generator().manual_seed(0))
    terms = VQObjective()(model, x)  # (the per-example sums are as before for a batch of some)
    flat = model.encoder(x).movedim(1, -1).reshape(3, -1, 2)
    e = model.quantizer.embedding[model.codes(x).reshape(3, -1)]
    assert torch.allclose(terms.commitment, model.quantizer.commitment_weight * (flat - e).square().sum((1, 2)))


@pytest.mark.parametrize("levels", [1, 2])
def test_code_grids_of_another_shape_or_not_codes_are_refused_by_the_likelihood_and_both_priors(levels):
    """A 2x8 grid given to a model of 4x4 grids was decoded as one and scored (the conv decoder's
    4x16 output read as 8x8), a code prior read it as 4x4, and 0.7 was code 0; code K was torch's
    IndexError from inside the uniform prior."""
    from dgmkit.models.vqvae import CodeGridPrior

    cfg = RunConfig.of(
        model="vqvae", dataset="digits", codes=4, code_dim=2, vq_width=8, downsample=1, res_blocks=0, vq_levels=levels
    )
    model = build_model(cfg, (1, 8, 8), 2).eval()
    h, w = model.code_shape
    prior_of_codes = build_model(RunConfig.of(model="arm", dataset="digits", likelihood="categorical"), (1, h, w), 4)
    priors = [model.prior(), CodeGridPrior(prior_of_codes.eval(), (h, w), 4)]
    good = torch.zeros(3, h, w, dtype=torch.long)
    assert model.likelihood(good).mean.shape == (3, 1, 8, 8)
    assert all(p.log_prob(good).shape == (3,) for p in priors)
    bad = {"shape": good.reshape(3, w, h) if h != w else good.reshape(3, 1, h * w), "in 0..3": good + 4}
    bad["whole numbers"] = good.float() + 0.7
    for words, z in bad.items():
        for score in (model.likelihood, *(p.log_prob for p in priors)):
            with pytest.raises(ValueError, match=words):
                score(z)
