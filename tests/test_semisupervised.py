"""Semi-supervised models: M2's bound with the class summed out exactly, labelled subsets kept
balanced and seeded, labels through the Trainer, the hybrid flow's two factors, and the CLI."""

import dataclasses
import json
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from dgmkit.cli.main import main
from dgmkit.config import RunConfig, build_model, build_objective, load_run
from dgmkit.data import Split, load_dataset
from dgmkit.data.labels import HIDDEN, check_labels, keep_labels, labels_are_checked, labels_checked
from dgmkit.distributions import DiagonalNormal
from dgmkit.errors import ConfigError, DataError
from dgmkit.models import M2, HybridFlow
from dgmkit.models.m2 import EnumeratedTerms, SemiSupervisedVAE
from dgmkit.objectives import importance_sampled_log_likelihood
from dgmkit.objectives.semisupervised import HybridObjective, M2Objective
from dgmkit.training import LabelledRows, Trainer
from dgmkit.training.batches import BatchSource

K, M = 3, 2


def _tiny_m2(seed: int = 0, perturb: float = 0.3) -> M2:
    torch.manual_seed(seed)
    cfg = RunConfig.of(model="m2", hidden=[8], latent_dim=M, classes=K)
    model = build_model(cfg, (1, 4, 4), 2)
    with torch.no_grad():  # away from the initialisation's near-uniform q(y|x)
        for p in model.parameters():
            p.add_(perturb * torch.randn_like(p))
    return model


def _binary(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 2, (n, 1, 4, 4), generator=torch.Generator().manual_seed(seed)).float()


class _FixedNoise(DiagonalNormal):
    """q(z|x,y) whose draw uses given noise: z = loc + scale * eps."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor):
        super().__init__(loc, scale)
        self.eps = eps

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.loc + self.scale * self.eps


class _FixedEncoder(nn.Module):
    def __init__(self, encoder: nn.Module, eps: torch.Tensor):
        super().__init__()
        self.encoder, self.eps = encoder, eps

    def forward(self, inputs: torch.Tensor) -> DiagonalNormal:
        q = self.encoder(inputs)
        return _FixedNoise(q.loc, q.scale, self.eps)


@torch.no_grad()
def test_unlabelled_bound_sums_over_every_class_exactly():
    """U(x) = sum_y q(y|x) [E log p(x|y,z) - KL(q(z|x,y) || p(z)) + log p(y) - log q(y|x)],
    computed here by hand class by class (same noise for z) against the objective."""
    model = _tiny_m2().double()
    x = _binary(4).double()
    b = len(x)
    eps = torch.randn(b * K, M, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    encoder = model.encoder
    model.encoder = _FixedEncoder(encoder, eps)
    terms = M2Objective()(model, x, y=torch.full((b,), HIDDEN))
    flat = x.flatten(1)
    log_qy = torch.log_softmax(model.classifier(flat), -1)  # (B, K)
    expected = torch.zeros(b, dtype=torch.float64)
    for c in range(K):
        onehot = nn.functional.one_hot(torch.full((b,), c), K).double()
        q = encoder(torch.cat([flat, onehot], -1))
        z = q.loc + q.scale * eps[c::K]  # rows b * K + c are class c
        recon = model.decoder(torch.cat([z, onehot], -1)).log_prob(x)
        kl = 0.5 * (q.scale**2 + q.loc**2 - 1 - 2 * q.scale.log()).sum(-1)
        bound = recon - kl + math.log(1 / K)
        expected += log_qy[:, c].exp() * (bound - log_qy[:, c])
    torch.testing.assert_close(terms.elbo, expected)
    torch.testing.assert_close(terms.loss, -expected)  # all unlabelled: the loss is -U(x)
    # a labelled example's loss is -L(x, y) - (alpha / N_l) log q(y|x), alpha = a N (the paper's eq. 9)
    objective = M2Objective(alpha_fraction=0.5)
    objective.setup(10)
    objective.setup_labels(10)  # all labelled: each row keeps weight 1
    y = torch.tensor([0, 1, 2, 0])
    t = model.enumerate(x)
    labelled = objective(model, x, y=y)
    by_hand = -(t.bound.gather(1, y[:, None]).squeeze(1) + 0.5 * 10 / 10 * t.log_qy.gather(1, y[:, None]).squeeze(1))
    torch.testing.assert_close(labelled.loss, by_hand)
    torch.testing.assert_close(labelled.elbo, expected)  # the score stays U(x), for every example


@torch.no_grad()
@pytest.mark.parametrize("samples", [1, 3])
def test_m2_validation_classifies_by_the_enumerations_q_y_without_a_second_pass(samples):
    """In eval mode (validation) M2's accuracy is that of q(y|x), which the enumeration has
    computed already: one pass of the classifier per batch, not two; the same accuracy."""
    model = _tiny_m2().eval()
    x, y = _binary(12), torch.arange(12) % K
    calls = []
    model.classifier.register_forward_hook(lambda *_: calls.append(1))
    terms = M2Objective(num_samples=samples)(model, x, y=y)
    assert len(calls) == 1
    want = (model.class_log_probs(x).argmax(-1) == y).float()
    torch.testing.assert_close(terms.accuracy, want)
    assert 0 < want.sum() < len(y)  # (not vacuous)


@torch.no_grad()
def test_group_weights_make_the_batch_mean_estimate_the_whole_sum():
    model = _tiny_m2().double()
    x = _binary(6).double()
    y = torch.tensor([0, 1, -1, -1, -1, -1])
    objective = M2Objective(alpha_fraction=0.0)
    objective.setup(1000)
    objective.setup_labels(10, added=2)  # 1% labelled, but a third of this batch (2 rows added to each)
    torch.manual_seed(0)
    t = objective(model, x, y=y)
    torch.manual_seed(0)
    e = model.enumerate(x)
    labelled = -e.bound.gather(1, y.clamp(min=0)[:, None]).squeeze(1)
    want = torch.where(y >= 0, 0.01 * 6 / 2 * labelled, 0.99 * 6 / 4 * -e.unlabelled())
    torch.testing.assert_close(t.loss, want)


@torch.no_grad()
def test_hybrid_group_weights_make_the_batch_mean_estimate_the_whole_sum():
    """Labelled rows added to every batch (--labelled-batch) are reweighted to their share of the
    training set, as M2's: unweighted, 2 of 10 labelled images held a third of every batch's p(x) term."""
    torch.manual_seed(0)
    cfg = RunConfig.of(model="hybrid", hidden=[8], flow_layers=2, flow_levels=1, classes=K)
    model: HybridFlow = build_model(cfg, (1, 4, 4), 4).double()
    x = (torch.randint(0, 4, (6, 1, 4, 4)) + torch.rand(6, 1, 4, 4)).double() / 4
    y = torch.tensor([0, 1, -1, -1, -1, -1])
    objective = HybridObjective()
    objective.setup(1000)
    objective.setup_labels(10, added=2)  # 1% labelled, but a third of this batch (2 rows added to each)
    t = objective(model, x, y=y)
    torch.testing.assert_close(t.loss, torch.where(y >= 0, 0.01 * 6 / 2, 0.99 * 6 / 4).double() * -t.objective)
    objective.setup_labels(10)  # uniform batches: every row weight 1
    torch.testing.assert_close(objective(model, x, y=y).loss, -t.objective)


@torch.no_grad()
def test_several_draws_average_each_datapoints_terms_with_u_formed_per_draw():
    """num_samples = S: L(x, y), log q(y|x) and U(x) are the means over S draws of the latents
    (in the ADGM, q(y|a,x) moves with a, so U(x) must be formed per draw before the mean)."""
    torch.manual_seed(0)
    cfg = RunConfig.of(model="adgm", hidden=[8], latent_dim=2, aux_dim=2, classes=K, samples=3)
    model = build_model(cfg, (1, 4, 4), 2).double()
    objective = build_objective(cfg)
    assert isinstance(objective, M2Objective) and objective.num_samples == 3
    objective.setup(100)
    objective.setup_labels(10)
    x, y = _binary(4).double(), torch.tensor([0, 2, -1, -1])
    torch.manual_seed(1)
    got = objective(model, x, y=y)
    torch.manual_seed(1)
    e = model.enumerate(x.repeat_interleave(3, 0))  # the same draws, rows b * 3 + s
    u = e.unlabelled().view(4, 3).mean(1)
    bound, log_qy = e.bound.view(4, 3, K).mean(1), e.log_qy.view(4, 3, K).mean(1)
    at = y.clamp(min=0)[:, None]
    labelled = -(bound.gather(1, at) + 0.1 * 100 / 10 * log_qy.gather(1, at)).squeeze(1)
    torch.testing.assert_close(got.elbo, u)
    torch.testing.assert_close(got.loss, torch.where(y >= 0, labelled, -u))
    assert not torch.allclose(u, e.unlabelled()[::3])  # the draws differ: one draw is not the mean
    torch.testing.assert_close(got.log_qy[:2], log_qy.gather(1, at).squeeze(1)[:2])


@pytest.mark.parametrize("objective", ["m2", "hybrid"])
def test_the_objectives_called_directly_refuse_labels_outside_the_classes_in_words(objective):
    """Labels given to M2's or the hybrid's objective from Python are checked as the Trainer's
    are (``class_indices``): a label of K met 'index 3 is out of bounds for dimension 1 with
    size 3', and -2 was taken as hidden and 2.5 as class 2, silently. The Trainer, which checked
    its labels once, says so (``data.labels.labels_checked``) and is not read back from a GPU every step."""
    torch.manual_seed(0)
    if objective == "m2":
        model, call, x = _tiny_m2(), M2Objective(), _binary(4)
    else:
        cfg = RunConfig.of(model="hybrid", hidden=[8], flow_layers=2, flow_levels=1, classes=K)
        model, call, x = build_model(cfg, (1, 4, 4), 4), HybridObjective(), (_binary(4) + torch.rand(4, 1, 4, 4)) / 2
    for y, needle in (
        ([0, 1, K, -1], f"holds labels -1..{K}, outside the model's classes 0..{K - 1} and -1"),
        ([0, 1, -2, -1], f"holds labels -2..1, outside the model's classes 0..{K - 1} and -1"),
        ([0, 1, 2.5, -1], "must be class indices, whole numbers"),
        ([0, 1, 2], "must be one label per datapoint, shape (4,), got shape (3,)"),
    ):
        with pytest.raises(DataError, match=re.escape(needle)):
            call(model, x, y=torch.tensor(y))
    t = call(model, x, y=torch.tensor([0.0, 1.0, 2.0, -1.0]))  # whole floats are labels, as the Trainer takes them
    assert t.labelled.tolist() == [1, 1, 1, 0]
    assert not labels_are_checked()
    with pytest.raises(TypeError, match=r"the third argument is beta.*pass the labels as y="):  # (labels read as beta)
        call(model, x, torch.tensor([0, 1, 2, -1]))
    assert torch.equal(call(model, x, torch.tensor(1.0), y=torch.tensor([0, 1, 2, -1])).labelled, t.labelled)  # 0-dim
    with labels_checked():  # (the Trainer's steps: checked once before; what the context leaves out is the check)
        assert labels_are_checked()
        call(model, x, y=torch.tensor([0, 1, 2, -2]))
    assert not labels_are_checked()


class _TabledTerms:
    """A stand-in for an M2 model whose terms are fixed per training example (its index is x),
    in training mode (the objective's accuracy reads the enumeration's q(y|x) there)."""

    training = True
    num_classes = K

    def __init__(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.bound = -50 - 10 * torch.rand(n, K, generator=g, dtype=torch.float64)
        self.log_qy = torch.log_softmax(3 * torch.randn(n, K, generator=g, dtype=torch.float64), -1)

    def enumerate(self, x: torch.Tensor) -> EnumeratedTerms:
        i = x[:, 0].long()
        return EnumeratedTerms(self.log_qy[i], self.bound[i], self.bound[i], torch.zeros_like(self.bound[i]))


SemiSupervisedVAE.register(_TabledTerms)  # (a stand-in the objective's check of the model's kind takes)


@torch.no_grad()
def test_uniform_batches_estimate_the_whole_objective_even_when_a_batch_holds_no_label():
    """Without labelled rows added to every batch, batches are uniform draws from the training set:
    the mean over one epoch of equal batches' mean losses is exactly -J / N, also where some of
    those batches hold no label (group weights would drop the labelled term from them)."""
    n, n_l, a, bs = 1000, 20, 0.1, 50
    tabled = _TabledTerms(n)
    y = torch.full((n,), -1)
    kept = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:n_l]
    y[kept] = kept % K
    lab = y >= 0
    rows = torch.arange(n)
    u = tabled.enumerate(rows.double()[:, None]).unlabelled()
    j = tabled.bound[rows[lab], y[lab]].sum() + u[~lab].sum() + a * n * tabled.log_qy[rows[lab], y[lab]].mean()
    objective = M2Objective(alpha_fraction=a)
    objective.setup(n)
    objective.setup_labels(n_l, added=0)
    x = rows.double()[:, None]
    source = BatchSource(x, y, lambda v, g: v, torch.Generator().manual_seed(2), bs, n // bs)
    means, unlabelled_batches = [], 0
    for xb, yb in source.epoch():
        means.append(objective(tabled, xb, y=yb).loss.mean())
        unlabelled_batches += int(not bool((yb >= 0).any()))
    assert unlabelled_batches > 0  # the case that matters
    torch.testing.assert_close(torch.stack(means).mean(), -j / n)


@torch.no_grad()
def test_eval_log_likelihood_sums_over_the_classes():
    """The stratified importance weights (one z per class) estimate log sum_y p(y) p(x|y): with
    many draws they agree with a grid integral over the 2-D z, and stay above the bound U(x)."""
    model = _tiny_m2(perturb=0.1).double()  # a proposal close enough for 4000 draws
    x = _binary(3).double()

    est = importance_sampled_log_likelihood(model, x, k=4000, generator=torch.Generator().manual_seed(0))
    axis = torch.linspace(-7, 7, 201, dtype=torch.float64)
    z = torch.cartesian_prod(axis, axis)
    per_class = []
    for c in range(K):
        latent = torch.cat([nn.functional.one_hot(torch.full((len(z),), c), K).double(), z], -1)
        log_px_z, log_prior = model.log_joint(x, latent.unsqueeze(1).expand(len(z), len(x), -1))
        per_class.append(torch.logsumexp(log_px_z + log_prior, 0))
    exact = torch.logsumexp(torch.stack(per_class), 0) + 2 * math.log(float(axis[1] - axis[0]))
    torch.testing.assert_close(est, exact, atol=0.05, rtol=0)
    assert (model.elbo_terms(x)["elbo"] <= exact + 1e-6).all()


def test_keep_labels_is_balanced_seeded_and_exact():
    y = torch.arange(100) % 10
    split = Split(torch.zeros(100, 1, 2, 2), y)
    kept = keep_labels(split, 30, num_classes=10, seed=5).y
    assert (kept >= 0).sum() == 30
    assert torch.equal(torch.bincount(kept[kept >= 0], minlength=10), torch.full((10,), 3))
    assert ((kept == y) | (kept == HIDDEN)).all()  # kept labels are the true ones
    assert torch.equal(keep_labels(split, 30, 10, seed=5).y, kept)  # same seed, same draw
    assert not torch.equal(keep_labels(split, 30, 10, seed=6).y, kept)
    assert torch.equal(keep_labels(split, None, 10, seed=5).y, y)  # None: all of them
    with pytest.raises(DataError, match="multiple of 10"):
        keep_labels(split, 25, 10, seed=0)
    with pytest.raises(DataError, match="more than the 100"):
        keep_labels(split, 110, 10, seed=0)
    skewed = Split(split.x, (torch.arange(100) >= 90).long())  # 90 of class 0, 10 of class 1
    with pytest.raises(DataError, match="needs 20 examples of class 1"):
        keep_labels(skewed, 40, 2, seed=0)
    three = Split(split.x, torch.arange(100) % 3)  # labels 0..2, and a model of 10 classes
    with pytest.raises(DataError, match=r"class 3; the training split holds 0 \(its labels take 3 values: --classes 3\?\)"):
        keep_labels(three, 30, 10, seed=0)
    with pytest.raises(DataError, match="outside the model's classes 0..4"):
        keep_labels(split, 10, 5, seed=0)
    with pytest.raises(DataError, match="no labels"):
        keep_labels(Split(split.x), 10, 10, seed=0)


def test_trainer_passes_labels_and_adds_labelled_rows():
    digits = load_dataset("digits")
    cfg = RunConfig.of(model="m2", hidden=[16], latent_dim=2, labels=20, labelled_batch=7, batch_size=32, epochs=1)
    model = build_model(cfg, digits.event_shape, digits.num_levels)
    train = keep_labels(digits.train.subset(torch.arange(200)), 20, 10, seed=0)
    seen = []
    objective = build_objective(cfg)
    real = objective.__call__

    def spy(model, x, beta=1.0, y=None):  # (an objective's call as documented: no more arguments)
        assert labels_are_checked()  # (the Trainer checked its labels once: none read back in every step)
        seen.append((len(x), None if y is None else y.clone()))
        return real(model, x, beta, y=y)

    objective.__call__ = spy  # instance attribute: the Trainer calls objective(...) through the class
    type_call = type(objective).__call__
    type(objective).__call__ = lambda self, *a, **k: spy(*a, **k)
    try:
        trainer = Trainer(
            model, objective, train, cfg.model.transform(digits), valid=digits.valid.subset(torch.arange(50)),
            epochs=1, batch_size=32, progress=False, parts=[LabelledRows(7)],
        )  # fmt: skip
        (m,) = trainer.fit()
    finally:
        type(objective).__call__ = type_call
    assert objective.labelled == 20 and objective.train_size == 200 and objective.added == 7
    train_calls = seen[:-1]  # the last call is the validation batch
    assert len(train_calls) == math.ceil(200 / 32)
    for n, y in train_calls:
        assert y is not None and len(y) == n and (y[-7:] >= 0).all()  # the labelled rows added
    n, y = seen[-1]
    assert n == 50 and torch.equal(y, digits.valid.y[:50].long())  # validation: every label
    assert 0 <= m["valid_accuracy"] <= 1 and math.isfinite(m["valid_elbo"])
    # the throughput counts every row trained, the 7 labelled ones drawn into each of the 7 batches too
    assert trainer.images_per_s(2.0) == (200 + 7 * 7) / 2.0


@torch.no_grad()
@pytest.mark.parametrize("family", ["m2", "hybrid"])
def test_validation_means_label_terms_over_the_labelled_examples_alone(family):
    """A validation split with some labels hidden: the accuracy and the log-probability of the
    label are means over its labelled examples, not shares of every example; with no label at all
    they are not reported (not a 0% accuracy)."""
    digits = load_dataset("digits")
    extra = {"hidden": [16], "latent_dim": 2} if family == "m2" else {"hidden": [8], "flow_layers": 2, "flow_levels": 1}
    cfg = RunConfig.of(model=family, batch_size=64, epochs=1, **extra)
    torch.manual_seed(0)
    model = build_model(cfg, digits.event_shape, digits.num_levels)
    objective = build_objective(cfg)
    valid = digits.valid.subset(torch.arange(60))
    y = valid.y.clone().long()
    y[::3] = HIDDEN  # 20 of the 60 labels hidden

    def trainer(split):
        return Trainer(model, objective, digits.train.subset(torch.arange(64)), cfg.model.transform(digits), valid=split,
                       epochs=1, batch_size=64, progress=False, eval_batch_size=25)  # fmt: skip

    t = trainer(dataclasses.replace(valid, y=y))
    got = t.validate()
    with torch.no_grad():
        terms = objective(model.eval(), t._valid_x, 1.0, y=y.to(t._valid_x.device))
    (label_term,) = [k for k in objective.label_terms if k != "accuracy"]
    assert got["valid_labelled"] == pytest.approx(40 / 60)
    for k in ("accuracy", label_term):
        want = getattr(terms, k).double()[y >= 0].mean().item()
        assert got[f"valid_{k}"] == pytest.approx(want, rel=1e-5)
    assert got["valid_accuracy"] > 0 and got[f"valid_{label_term}"] < 0  # (not vacuous: terms that move)
    on_none = trainer(dataclasses.replace(valid, y=None)).validate()
    assert "valid_accuracy" not in on_none and f"valid_{label_term}" not in on_none and on_none["valid_labelled"] == 0


def test_hybrid_objective_pieces_are_exact():
    torch.manual_seed(0)
    cfg = RunConfig.of(model="hybrid", hidden=[8], flow_layers=2, flow_levels=1, classes=K, px_weight=2.0)
    model: HybridFlow = build_model(cfg, (1, 4, 4), 4).double()
    x = (torch.randint(0, 4, (5, 1, 4, 4)) + torch.rand(5, 1, 4, 4)).double() / 4
    y = torch.tensor([0, 1, 2, -1, 1])
    t = HybridObjective(2.0)(model, x, y=y)
    torch.testing.assert_close(t.log_px, model.flow.log_prob(x))  # the flow's exact density
    z, _ = model.flow.transform(x)
    log_py = torch.log_softmax(model.head(z), -1)  # the linear model of the flow's output
    want_py = torch.where(y >= 0, log_py.gather(1, y.clamp(min=0)[:, None]).squeeze(1), torch.zeros(5).double())
    torch.testing.assert_close(t.log_py_x, want_py)
    torch.testing.assert_close(t.objective, want_py + 2.0 / 16 * t.log_px)
    torch.testing.assert_close(t.loss, -t.objective)
    # log p(x) by the change of variables on the flow's Jacobian
    xf = x[:1].flatten(1).requires_grad_(True)
    jac = torch.autograd.functional.jacobian(lambda v: model.flow.transform(v.view(1, 1, 4, 4))[0].flatten(), xf)
    logdet = torch.linalg.slogdet(jac.reshape(16, 16))[1]
    base = -0.5 * z[0].pow(2).sum() - 8 * math.log(2 * math.pi)
    torch.testing.assert_close(t.log_px[0], base + logdet)


def test_refusals():
    with pytest.raises(ConfigError, match="not trained on labels"):
        RunConfig.of(model="vae", labels=100)
    with pytest.raises(ConfigError, match="uniform dequantization"):
        RunConfig.of(model="hybrid", dequantization="variational")


def test_cli_trains_evaluates_and_resumes_with_the_same_labels(tmp_path, capsys):
    out = tmp_path / "m2"
    flags = ["--model", "m2", "--dataset", "digits", "--labels", "50", "--hidden", "32", "--latent-dim", "4"]
    flags += ["--batch-size", "64", "--labelled-batch", "16", "--quiet", "--out", str(out)]
    assert main(["train", *flags, "--epochs", "2"]) == 0
    run = load_run(out)
    assert run.cfg.data.labels == 50 and run.cfg.model.labelled_batch == 16
    assert main(["train", *flags, "--epochs", "3", "--resume"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--iw-samples", "5"]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "NLL (k=5)" in text
    r = json.loads((out / "eval.json").read_text())
    (accuracy,) = [t["value"] for t in r["terms"] if t["name"] == "accuracy"]
    assert 0 <= accuracy <= 1 and r["elbo"] <= -r["nll"] + 1.0
    # the resumed run is the uninterrupted one
    ref = tmp_path / "ref"
    assert main(["train", *flags[:-1], str(ref), "--epochs", "3"]) == 0
    a = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [m["valid_elbo"] for m in a] == pytest.approx([m["valid_elbo"] for m in b], rel=1e-6)
    # the hybrid, all labels by default
    hy = tmp_path / "hy"
    args = ["train", "--model", "hybrid", "--dataset", "digits", "--hidden", "16", "--flow-layers", "1"]
    assert main([*args, "--epochs", "1", "--quiet", "--out", str(hy)]) == 0
    capsys.readouterr()
    assert main(["eval", str(hy)]) == 0
    text = capsys.readouterr().out
    assert "NLL (one-draw bound)" in text and "bits/dim" in text and "accuracy" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "vae", "--labels", "10"], "not trained on labels"),
        (["--model", "m2", "--labels", "15"], "multiple of 10"),
        (["--model", "m2", "--labels", "100000"], "more than the"),
        (["--model", "m2", "--dataset", "two-moons", "--likelihood", "gaussian"], "no labels"),
        (["--model", "m2", "--classes", "5"], "outside the model's classes"),
    ],
)
def test_cli_refuses_with_one_line(argv, message, tmp_path, capsys):
    if "--dataset" not in argv:
        argv = [*argv, "--dataset", "digits"]
    code = main(["train", *argv, "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_cli_refuses_a_test_label_beyond_the_classes(tmp_path, capsys):
    # dgm eval's accuracy counted the test split's label 2 of a 2-class model as an error, silently
    x = torch.randint(0, 2, (60, 1, 4, 4), generator=torch.Generator().manual_seed(0)).numpy().astype(np.uint8)
    y = np.arange(60) % 2
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    y[int(load_dataset(str(data)).test.rows[0])] = 2  # a test row: training and validation labels stay 0..1
    np.savez(data, x=x, y=y)
    argv = ["train", "--model", "m2", "--dataset", str(data), "--classes", "2", "--hidden", "8", "--latent-dim", "2"]
    assert main([*argv, "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "the test split holds labels 0..2, outside the model's classes 0..1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_labels_counted_from_1_are_refused_as_outside_the_classes(tmp_path, capsys):
    """Labels 1..K for K classes left class 0 without an example: the refusal said so and asked for
    "data with an example of every class", naming neither the labels' range nor that they lie outside
    0..K-1; the labels outside the classes are named first, with the likely cause."""
    rng = np.random.default_rng(0)
    data = tmp_path / "one-based.npz"
    np.savez(data, x=(rng.random((60, 1, 4, 4)) > 0.5).astype(np.uint8), y=np.arange(60) % 2 + 1)
    argv = ["train", "--model", "m2", "--dataset", str(data), "--classes", "2", "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "holds labels 1..2, outside the model's classes 0..1" in err and "counted from 1" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    with pytest.raises(DataError, match="holds labels 3..7, outside the model's classes 0..4 \\(set --classes\\)$"):
        check_labels(Split(torch.zeros(5, 1, 1, 1), torch.arange(3, 8)), 5)  # (no hint: not 1..K)


def test_the_trainer_refuses_labels_outside_the_classes_of_a_classifier():
    """A Trainer given labels beyond a classifier's classes failed at its first step with torch's
    "index 10 is out of bounds" (a device-side assert on CUDA), and took a label below -1 as hidden,
    silently; both are refused where it is made, naming the split and the labels' range."""
    digits = load_dataset("digits")
    cfg = RunConfig.of(model="m2", hidden=[8], latent_dim=2, batch_size=32, epochs=1)
    model = build_model(cfg, digits.event_shape, digits.num_levels)
    train, valid = digits.train.subset(torch.arange(40)), digits.valid.subset(torch.arange(20))
    beyond, below, valid_beyond = train.y + 1, train.y - 2, dataclasses.replace(valid, y=valid.y + 1)
    for y, what in ((beyond, "the training split"), (below, "the training split"), (None, "the validation split")):
        tr, va = (train, valid_beyond) if y is None else (dataclasses.replace(train, y=y), valid)
        says = f"{what} holds labels -?\\d+\\.\\.\\d+, outside the model's classes 0\\.\\.9 and -1 \\(hidden\\)"
        with pytest.raises(DataError, match=says):
            Trainer(model, build_objective(cfg), tr, cfg.model.transform(digits), valid=va, epochs=1, progress=False)
    every = digits.train.subset(torch.arange(200))  # (the 100 labels it shows hold an example of every class)
    hidden = dataclasses.replace(every, y=torch.where(torch.arange(200) % 2 == 0, every.y, HIDDEN))
    Trainer(model, build_objective(cfg), hidden, cfg.model.transform(digits), valid=valid, epochs=1, progress=False)


def test_keep_labels_draws_at_random_within_each_class_and_takes_the_boundaries():
    y = torch.arange(40) % 2  # 20 of each class
    split = Split(torch.zeros(40, 1, 1, 1), y)
    kept_rows = set()
    for seed in range(10):
        kept = keep_labels(split, 4, num_classes=2, seed=seed).y
        kept_rows |= set(torch.nonzero(kept >= 0).flatten().tolist())
    assert len(kept_rows) > 10  # not the first members of each class every time: 10 draws of 2 of 20 each
    small = Split(torch.zeros(4, 1, 1, 1), torch.tensor([1, 0, 0, 1]))
    assert torch.equal(keep_labels(small, 4, num_classes=2, seed=0).y, small.y)  # every label: n = N, n / K per class
    assert torch.equal(check_labels(small, 2), small.y)  # classes 0 and K - 1 are inside
    with pytest.raises(DataError, match="outside"):
        check_labels(Split(small.x, torch.tensor([0, 2, 1, 1])), 2)
    with pytest.raises(DataError, match="outside"):
        check_labels(Split(small.x, torch.tensor([0, -1, 1, 1])), 2)


def test_the_labelled_rows_added_to_batches_are_drawn_from_every_labelled_row():
    y = torch.full((30,), HIDDEN)
    y[[3, 11, 29]] = torch.tensor([0, 1, 0])  # three labelled rows, the last row among them
    source = BatchSource(torch.arange(30.0)[:, None], y, lambda v, g: v, torch.Generator().manual_seed(0), 10, 3)
    source.add_labelled(20)
    assert source.rows_per_epoch == 30 + 3 * 20
    drawn = torch.cat([xb[10:, 0] for xb, _ in source.epoch()]).long()
    assert set(drawn.tolist()) == {3, 11, 29}  # 60 draws with replacement: each labelled row comes up


@pytest.mark.parametrize("model", ["m2", "hybrid"])
def test_a_class_without_a_training_example_is_refused_naming_the_classes_to_set(tmp_path, capsys, model):
    """M2's default 10 classes over a dataset of 2 trained 8 classes that no example is of, and
    its uniform p(y) gave them 4/5 of its mass (up to log 5 nats off log p(x)); more --classes than a named
    dataset has did the same. Each is refused before any run folder is made, naming --classes."""
    rng = np.random.default_rng(0)
    data = tmp_path / "two.npz"
    np.savez(data, x=(rng.random((60, 1, 4, 4)) > 0.5).astype(np.uint8), y=np.arange(60) % 2)
    for argv, said, fix in (
        (["--dataset", str(data)], "shows no label of classes 2, 3, 4, 5, 6 and 3 more of the", "set --classes 2"),
        (["--dataset", "digits", "--classes", "11"], "shows no label of class 10 of the", "set --classes 10"),
    ):
        assert main(["train", "--model", model, *argv, "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]) == 1
        err = capsys.readouterr().err
        assert said in err and fix in err
        assert not (tmp_path / "r").exists()
    assert main(["train", "--model", model, "--dataset", str(data), "--classes", "2", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0  # fmt: skip


def test_a_hybrid_of_no_density_weight_is_refused_as_its_checkpoint_follows_log_p_x():
    """lambda = 0 trains no density, while early stopping and the best checkpoint follow the
    validation log p(x): a 3-epoch run kept epoch 1 (valid accuracy 25% against the last's 67%)."""
    with pytest.raises(ConfigError, match=r"--px-weight 0 trains no density.*give lambda > 0"):
        RunConfig.of(model="hybrid", px_weight=0.0)
    assert RunConfig.of(model="hybrid", px_weight=0.01).model.px_weight == 0.01
