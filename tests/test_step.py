"""The training step's reduced forward pass (training/step.py): the same numbers as reducing the
objective's terms outside, and one output with a gradient, so that a compiled step's backward
pass gets one gradient."""

import pytest
import torch

from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import load_dataset, make_transform
from dgmkit.training import Trainer
from dgmkit.training.compiled import CompiledOrEager
from dgmkit.training.data_parallel import ObjectiveModule
from dgmkit.training.step import ReducedStep, StepTerms

CFG = RunConfig.of(dataset="digits", hidden=[8], latent_dim=2, batch_size=64, epochs=1, seed=0, device="cpu")


@pytest.fixture(scope="module")
def parts():
    digits = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model(CFG, digits.event_shape, digits.num_levels)
    objective = build_objective(CFG)
    x = make_transform("bernoulli", digits)(digits.train.x[:64], torch.Generator().manual_seed(0))
    return digits, model, objective, x


def test_the_reduced_terms_are_the_terms_reduced(parts):
    _, model, objective, x = parts
    module = ObjectiveModule(model, lambda x, beta, y: objective(model, x, beta))
    torch.manual_seed(1)
    terms = module(x, 0.5, None)
    torch.manual_seed(1)
    out = ReducedStep(module, objective.score)(x, 0.5, None)
    assert isinstance(out, StepTerms)
    assert torch.equal(out.loss, terms.loss.mean())  # the same operations: the same bits
    assert torch.equal(out.losses, terms.loss.detach())
    assert torch.equal(out.score_sum, getattr(terms, objective.score).detach().sum())
    assert torch.equal(out.loss_sum, terms.loss.mean().detach() * len(x))


@pytest.mark.parametrize("keep_graph", [False, True])
def test_only_the_mean_loss_carries_a_gradient_unless_the_rows_must(parts, keep_graph):
    _, model, objective, x = parts
    module = ObjectiveModule(model, lambda x, beta, y: objective(model, x, beta))
    out = ReducedStep(module, objective.score, keep_graph=keep_graph)(x, 1.0, None)
    assert out.loss.requires_grad and out.loss.dim() == 0
    assert out.losses.requires_grad is keep_graph  # data-parallel training differentiates their sum
    assert not out.score_sum.requires_grad and not out.loss_sum.requires_grad


def test_the_forward_pass_runs_under_the_autocast_it_is_given(parts):
    _, model, objective, x = parts
    seen = []

    def forward(x, beta, y):
        seen.append(torch.is_autocast_enabled("cpu"))
        return objective(model, x, beta)

    ReducedStep(forward, objective.score, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))(x, 1.0, None)
    ReducedStep(forward, objective.score)(x, 1.0, None)
    assert seen == [True, False]


def test_the_trainer_steps_on_the_reduced_terms(parts):
    digits, model, objective, _ = parts
    trainer = Trainer(
        model, objective, digits.train, make_transform("bernoulli", digits), epochs=1, progress=False, device="cpu"
    )
    assert isinstance(trainer.forward, ReducedStep)
    trainer.fit()
    assert trainer.step == trainer.steps_per_epoch


def test_the_kl_weight_reaches_the_compiled_step_and_is_set_only_when_it_changes():
    calls = []

    def fake_compile(module, **kw):
        def compiled(x, weight, *args):
            calls.append(weight.item())
            return module(x, weight, *args)

        return compiled

    step = CompiledOrEager(lambda x, beta, *a: beta, compiler=fake_compile)
    fills = []
    original = step._weight.fill_

    def counting_fill(v):
        fills.append(v)
        return original(v)

    step._weight.fill_ = counting_fill  # type: ignore[method-assign]
    for beta in (0.1, 0.2, 0.2, 1.0, 1.0, 1.0):  # the first call is eager
        step(torch.zeros(1), beta)
    assert calls == pytest.approx([0.2, 0.2, 1.0, 1.0, 1.0])
    assert fills == [0.2, 1.0]  # set again only when the weight changed
