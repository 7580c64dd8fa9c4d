"""--compile: the training forward pass through torch.compile, with a fallback to the eager
pass, said once, where compilation fails."""

import functools
import json
import logging

import pytest
import torch

from dgmkit.cli.main import main
from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import DataTransform
from dgmkit.data.labels import labels_checked
from dgmkit.distributions import complete_data
from dgmkit.errors import ConfigError, DataError
from dgmkit.families import FAMILIES
from dgmkit.training.compiled import CompiledOrEager
from dgmkit.training.data_parallel import ObjectiveModule
from dgmkit.training.step import ReducedStep
from family_variants import family_variants, variant_id


class _Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, beta):
        self.calls += 1
        return x * 2


def _failing_compiler(module, **kwargs):
    def compiled(*args):
        raise RuntimeError("backend failed: no C++ compiler\nmore detail")

    return compiled


def test_the_first_step_is_eager_then_the_compiled_one_is_used():
    """The first call fills what Python fills on a first pass (torch.distributions' KL lookup)
    before dynamo traces the step."""
    module = _Counting()
    forward = CompiledOrEager(module, lambda m, **kw: lambda *a: m(*a) + 1)
    assert torch.equal(forward(torch.ones(1), 1.0), torch.full((1,), 2.0)) and module.calls == 1
    assert torch.equal(forward(torch.ones(1), 1.0), torch.full((1,), 3.0)) and forward.failure is None


def test_a_failed_compilation_falls_back_to_the_eager_pass_and_says_so_once(caplog):
    module = _Counting()
    forward = CompiledOrEager(module, _failing_compiler)
    with caplog.at_level(logging.WARNING, logger="dgmkit.training.compiled"):
        out = [forward(torch.ones(2), 0.5) for _ in range(3)]
    assert all(torch.equal(o, torch.full((2,), 2.0)) for o in out) and module.calls == 3
    assert forward.failure == "RuntimeError: backend failed: no C++ compiler"
    warnings = [r for r in caplog.records if "cannot be compiled" in r.getMessage()]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0].getMessage()


def test_a_compiler_that_refuses_at_once_falls_back_too(caplog):
    def refusing(module, **kwargs):
        raise RuntimeError("torch.compile is not supported on this Python")

    with caplog.at_level(logging.WARNING, logger="dgmkit.training.compiled"):
        forward = CompiledOrEager(_Counting(), refusing)
        assert torch.equal(forward(torch.ones(1), 1.0), torch.full((1,), 2.0))
    assert forward.failure == "RuntimeError: torch.compile is not supported on this Python"
    assert sum("cannot be compiled" in r.getMessage() for r in caplog.records) == 1


def test_cuda_graphs_that_inductor_skips_are_said_once_with_its_reason(caplog, monkeypatch):
    """A step compiled without its CUDA graphs runs, but launches each kernel from Python: the
    run says so (inductor counts the skip, in the forward pass or in the backward pass after it)."""
    from torch._dynamo.utils import counters

    class Metrics:
        cudagraph_skip_reason = "skipping cudagraphs due to mutated inputs (1 instances). Found from :\n  x.add_(1)"

    monkeypatch.setattr("torch._dynamo.utils.get_compilation_metrics", lambda: [Metrics()])
    calls = []

    def skipping(module, **kwargs):
        def compiled(*args):
            calls.append(1)
            if len(calls) == 2:  # (not at the first compiled call: said at the call after the skip)
                counters["inductor"]["cudagraph_skips"] += 1
            return module(*args)

        return compiled

    monkeypatch.setitem(counters["inductor"], "cudagraph_skips", counters["inductor"]["cudagraph_skips"])  # (put back)
    with caplog.at_level(logging.WARNING, logger="dgmkit.training.compiled"):
        quiet = CompiledOrEager(_Counting(), lambda m, **kw: m, graphs=True)
        no_graphs = CompiledOrEager(_Counting(), lambda m, **kw: m)  # (on the CPU: no CUDA graphs to miss)
        for _ in range(3):
            quiet(torch.ones(1), 1.0)
        assert not caplog.records
        forward = CompiledOrEager(_Counting(), skipping, graphs=True)
        for _ in range(3):
            forward(torch.ones(1), 1.0)
        assert not caplog.records  # (the eager first step, then two compiled ones: the skip counted in the last)
        for _ in range(3):
            forward(torch.ones(1), 1.0)
            no_graphs(torch.ones(1), 1.0)
        counters["inductor"]["cudagraph_skips"] -= 5  # (a counter cleared: not a skip)
        fresh = CompiledOrEager(_Counting(), lambda m, **kw: m, graphs=True)
        counters["inductor"]["cudagraph_skips"] -= 1
        for _ in range(3):
            fresh(torch.ones(1), 1.0)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "CUDA graphs were skipped" in said[0]  # forward's: not no_graphs', nor fresh's (a fall)
    assert (
        "the last reason torch recorded: skipping cudagraphs due to mutated inputs (1 instances). Found from :)" in said[0]
    )
    assert "x.add_" not in said[0]


def test_dgmkit_errors_pass_through_as_they_are():
    def refusing(module, **kwargs):
        def compiled(*args):
            raise DataError("a bad batch")

        return compiled

    forward = CompiledOrEager(_Counting(), refusing)
    forward(torch.ones(1), 1.0)  # (the first step: eager)
    with pytest.raises(DataError, match="a bad batch"):
        forward(torch.ones(1), 1.0)
    assert forward.compiled is not None and forward.failure is None  # not a compilation failure


def test_the_compiled_step_gets_the_kl_weight_as_a_tensor_and_the_eager_fallback_as_a_number():
    """A warm-up changes the weight in every step: as a Python number, the compiled step would
    be compiled again for each value (and dynamo gives up after 8)."""
    seen = []
    forward = CompiledOrEager(_Counting(), lambda m, **kw: lambda x, beta: seen.append(beta) or x)
    for beta in (0.05, 0.1, 0.2):  # (the first step eager)
        forward(torch.ones(1), beta)
    assert len(seen) == 2 and all(isinstance(b, torch.Tensor) and b.shape == () for b in seen)
    assert [float(b) for b in seen] == pytest.approx([0.2, 0.2])  # one tensor, filled in each step
    assert seen[0] is seen[1]
    fallback = CompiledOrEager(_Counting(), _failing_compiler)
    with torch.no_grad():
        fallback.module.forward = lambda x, beta: seen.append(beta) or x
        fallback(torch.ones(1), 0.3)
    assert seen[-1] == 0.3


@pytest.mark.slow
def test_dgm_train_compile_on_the_digits_gives_the_kind_of_result_of_the_eager_run(tmp_path, capsys):
    """torch.compile on the CPU (inductor's C++ code): compiling takes minutes on two cores."""
    args = ["train", "--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--epochs", "3", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "eager")]) == 0
    assert main([*args, "--compile", "--out", str(tmp_path / "compiled")]) == 0
    assert "cannot be compiled" not in capsys.readouterr().err
    last = [json.loads((tmp_path / r / "metrics.jsonl").read_text().splitlines()[-1]) for r in ("eager", "compiled")]
    assert abs(last[0]["valid_elbo"] - last[1]["valid_elbo"]) < 1.0  # (measured: 40.698 and 40.595 nats)


GRADIENT_FAMILIES = [  # each family's defaults; its other choices with --run-slow
    pytest.param(n, c, marks=[pytest.mark.slow] if c else []) for n, c in family_variants() if FAMILIES[n].fit == "gradient"
]
SCHEDULES = [({"process": "gaussian", "schedule": s}) for s in ("learned", "linear", "ddpm")] + [{"process": "masked"}]


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")  # (dynamo's own look)
@pytest.mark.skipif(
    tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 7),
    reason="torch 2.6's dynamo breaks these steps' graphs at object.__new__ (benchmarks/min_torch.out): --compile runs "
    "them in pieces there",
)
@pytest.mark.parametrize("name, change", [*GRADIENT_FAMILIES, *(("diffusion", c) for c in SCHEDULES)], ids=variant_id)
def test_every_family_traces_as_one_graph_also_for_a_batch_of_another_size(name, change):
    """A short last batch compiles the training step again with a symbolic batch size; where
    that failed (``torch.randn(shape, generator=None)``, in the VAE, HVAE and PixelVAE
    families), --compile gave up for the whole run. And a step that reads a value on the host
    (``float(tensor)``) breaks the graph there, as it waits for a GPU in every step (the VDM's
    reconstruction window, the DDPM schedule's constants, ActNorm's and the VQ-VAE codebook's
    flag, the codebook's dead codes and its counts by bincount). Dynamo traces each family's step,
    with its eager backend, for full and short batches while the KL weight and the objective's
    own schedules move: one graph for each batch size. (The first step is eager: traced while
    empty, torch.distributions' KL lookup broke the graph, and left the KL eager in every step.)"""
    try:
        cfg = RunConfig.of(model=name, **change)
        model = build_model(cfg, (1, 8, 8), 2)
    except ConfigError as e:  # a family for data of another kind (a table, 28x28)
        pytest.skip(str(e))
    objective = build_objective(cfg)
    objective.setup(100)
    labels = objective.takes_labels
    if labels:
        objective.setup_labels(50)

    def objective_terms(x: torch.Tensor, beta: float, y: torch.Tensor | None) -> tuple:
        if not labels:
            return objective(model, x, beta)
        with labels_checked():  # (as the Trainer's step: its labels checked once; a ContextVar's read broke the graph)
            return objective(model, x, beta, y=y)

    graphs = []

    def counting(gm: torch.fx.GraphModule, inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    forward = CompiledOrEager(  # as the Trainer compiles it: the terms reduced to what the step needs
        ReducedStep(ObjectiveModule(model, objective_terms), objective.score),
        compiler=functools.partial(torch.compile, backend=counting),
    )
    x = DataTransform("binary", 2)(torch.randint(0, 2, (13, 1, 8, 8), dtype=torch.uint8), torch.Generator())
    y = torch.tensor([0, 1, -1, -1, 2, -1, 3, -1]) if labels else None
    model.train()
    torch.distributions.kl._KL_MEMOIZE.clear()  # (as in a new process: torch fills it at the first KL of a pair)
    with complete_data():  # (as the Trainer trains on data without missing entries: no look for them)
        for step, (rows, beta) in enumerate([(8, 0.5), (8, 0.6), (5, 0.7), (5, 1.0)]):  # (the last batch short)
            objective.update(1000 * step)  # (a schedule of the objective's own moves on, as in training)
            forward(x[:rows], beta, None if y is None else y[:rows]).loss.mean().backward()
            assert forward.failure is None, f"a batch of {rows} rows: {forward.failure}"
    assert len(graphs) == 2, f"{len(graphs)} graphs for two batch sizes"


def test_nvil_s_running_moments_are_updated_by_a_compiled_step_as_by_an_eager_one():
    """torch.compile's CPU code lost in-place updates of a 0-d float64 input: NVIL's moments, 0-d
    buffers, stayed at c = 0 while v shrank by 0.8 a step (--compile, 2 epochs of the digits: c -1.2
    where the eager run's was -40.3). They are of shape (1,) now."""
    from dgmkit.nn import RunningMoments

    eager, compiled = RunningMoments(), RunningMoments()
    update = torch.compile(compiled.update)
    for values in (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([5.0, -1.0, 0.5])):
        eager.update(values)
        update(values)
    assert compiled.mean.item() == pytest.approx(eager.mean.item()) and eager.mean.item() == pytest.approx(0.8 * 0.4 + 0.3)
    assert compiled.var.item() == pytest.approx(eager.var.item())
