"""The training step's reduced forward pass (training/step.py): the same numbers as reducing the
objective's terms outside, and one output with a gradient, so that a compiled step's backward
pass gets one gradient."""

from types import SimpleNamespace
from typing import NamedTuple

import pytest
import torch

from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import load_dataset, make_transform
from dgmkit.objectives import Objective
from dgmkit.training import Compile, Trainer
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
    assert out.losses is None  # (one process differentiates and checks the mean)
    assert torch.equal(out.score_sum, getattr(terms, objective.score).detach().sum())
    assert torch.equal(out.loss_sum, terms.loss.mean().detach() * len(x))


@pytest.mark.parametrize("keep_graph", [False, True])
def test_only_the_mean_loss_carries_a_gradient_unless_the_rows_must(parts, keep_graph):
    _, model, objective, x = parts
    module = ObjectiveModule(model, lambda x, beta, y: objective(model, x, beta))
    out = ReducedStep(module, objective.score, keep_graph=keep_graph)(x, 1.0, None)
    assert out.loss.requires_grad and out.loss.dim() == 0
    if keep_graph:  # data-parallel training differentiates their sum
        assert out.losses is not None and out.losses.requires_grad and out.losses.shape == (len(x),)
    else:
        assert out.losses is None
    assert not out.score_sum.requires_grad and not out.loss_sum.requires_grad


class _Probe:
    """A term that records whether autocast is on where it is reduced."""

    shape = torch.Size([3])  # per-example, of a batch of 3 rows (the step checks it)

    def __init__(self, seen: list):
        self.seen = seen

    def mean(self) -> torch.Tensor:
        self.seen.append(("mean", torch.is_autocast_enabled("cpu")))
        return torch.ones(())

    def detach(self) -> torch.Tensor:
        self.seen.append(("detach", torch.is_autocast_enabled("cpu")))
        return torch.ones(3)


def test_the_forward_pass_runs_under_autocast_and_the_reductions_outside_it():
    seen: list = []

    class Terms(NamedTuple):
        loss: object
        elbo: object

    def forward(x, beta, y):
        seen.append(("forward", torch.is_autocast_enabled("cpu")))
        return Terms(_Probe(seen), _Probe(seen))

    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    out = ReducedStep(forward, "elbo", autocast=bf16)(torch.zeros(3, 1), 1.0, None)
    assert seen == [("forward", True), ("mean", False), ("detach", False)]
    assert out.score_sum.item() == 3.0 and out.loss_sum.item() == 3.0


def test_the_trainer_reads_its_precision_when_it_steps(parts):
    """The Trainer's step enters the autocast of the precision it has when it steps (a Precision
    part replaces it after the step is built), not of the one it was built with."""
    digits, model, objective, x = parts
    trainer = Trainer(model, objective, digits.train, make_transform("bernoulli", digits), epochs=1, progress=False,
                      device="cpu")  # fmt: skip
    trainer.amp = SimpleNamespace(autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))  # as a part would
    seen = []
    inner = trainer.forward.forward

    def probe(x, beta, y):
        seen.append(torch.is_autocast_enabled("cpu"))
        return inner(x, beta, y)

    trainer.forward.forward = probe
    trainer.forward(x, 1.0, None)
    assert seen == [True]


class _Deterministic(torch.nn.Module):
    """A model of no randomness whose loss does not move in training (its one weight gets a zero
    gradient), so that an epoch's sums are known: the loss of a row is the sum of its pixels."""

    has_latents = False

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))


class _PixelSum(Objective):
    score = "elbo"
    score_label = "ELBO"

    class Terms(NamedTuple):
        loss: torch.Tensor
        elbo: torch.Tensor

    def __call__(self, model, x, beta=1.0):
        loss = x.flatten(1).sum(1) + 0.0 * model.w
        return self.Terms(loss, -2.0 * loss.detach())


def test_the_epoch_line_holds_the_sums_of_the_reduced_terms():
    digits = load_dataset("digits")
    transform = make_transform("bernoulli", digits)
    trainer = Trainer(_Deterministic(), _PixelSum(), digits.train, transform, epochs=1, batch_size=100, progress=False,
                      device="cpu")  # fmt: skip
    metrics = trainer._train_epoch()
    pixels = metrics["train_loss"] * len(digits.train)  # every row once: the sum of all rows' pixel counts
    assert metrics["train_elbo"] == pytest.approx(-2.0 * metrics["train_loss"], rel=1e-6)
    assert 0 < metrics["train_loss"] <= 64  # a mean of the pixel counts of 8x8 binary images
    assert pixels == pytest.approx(round(pixels), abs=1e-2)  # a sum of whole pixel counts


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
    original = step._weight.tensor.fill_

    def counting_fill(v):
        fills.append(v)
        return original(v)

    step._weight.tensor.fill_ = counting_fill  # type: ignore[method-assign]
    for beta in (0.1, 0.2, 0.2, 1.0, 1.0, 1.0):  # the first call is eager
        step(torch.zeros(1), beta)
    assert calls == pytest.approx([0.2, 0.2, 1.0, 1.0, 1.0])
    assert fills == [0.2, 1.0]  # set again only when the weight changed


@pytest.mark.parametrize("parallel", [False, True])
def test_compile_takes_the_reduced_step_whole_except_around_ddp(parallel):
    """Dynamo does not trace into DistributedDataParallel's forward: under data-parallel training
    the reductions would be a second graph, so only the inner forward pass is compiled there."""
    step = ReducedStep(lambda x, beta, y: None, "elbo", keep_graph=parallel)
    trainer = SimpleNamespace(forward=step, parallel=object() if parallel else None, device=torch.device("cpu"))
    Compile().attach(trainer)  # type: ignore[arg-type]
    if parallel:
        assert trainer.forward is step and isinstance(step.forward, CompiledOrEager)
    else:
        assert isinstance(trainer.forward, CompiledOrEager) and trainer.forward.module is step
