"""--graph-step: the whole training step captured as one CUDA graph and replayed. On the CPU the
capture is emulated (``op_replay``: the step's operations recorded and run again without its
Python, as a CUDA graph runs them), so that what a CUDA graph would freeze is found here: a
replayed run must end bit for bit where a run that executes its Python at every step ends."""

import contextlib
import logging
import math
import warnings
import weakref

import pytest
import torch
from tests.test_cli import run

from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.config.run import trainer_options
from dgmkit.data import Split, load_dataset, make_transform
from dgmkit.errors import ConfigError, TrainingError
from dgmkit.families import FAMILIES
from dgmkit.training import GraphStep, Trainer
from dgmkit.training.graphed import WARMUP, StepGraph, capture_cuda
from family_variants import family_variants, variant_id
from op_replay import RecordedCapture, capture_recorded, capture_rerun

DIGITS = load_dataset("digits")
# a warm-up of the KL weight (a new weight every step), a cosine learning rate (a new one every
# epoch), clipping, a moving average (its decay warms up with its count on the device)
SETTINGS = {  # (on the CPU, where the emulated capture replays: the CUDA tests set their device)
    "device": "cpu",
    "model": "vae",
    "dataset": "digits",
    "epochs": 2,
    "batch_size": 64,
    "hidden": [32],
    "latent_dim": 4,
    "ema": 0.99,
    "warmup": 1,
    "lr_schedule": "cosine",
    "grad_clip": 100.0,
}


def trainer(capture=None, run_dir=None, objective=None, **settings) -> Trainer:
    cfg = RunConfig.from_dict({**SETTINGS, **settings})
    torch.manual_seed(0)
    model = build_model(cfg, DIGITS.event_shape, DIGITS.num_levels)
    opts = trainer_options(cfg)
    if capture is not None:
        opts["parts"] = [*opts["parts"], GraphStep(capture)]
    return Trainer(
        model,
        objective if objective is not None else build_objective(cfg),
        DIGITS.train,
        make_transform("bernoulli", DIGITS),
        valid=DIGITS.valid,
        progress=False,
        run_dir=run_dir,
        **opts,
    )


def same_state(a: Trainer, b: Trainer) -> bool:
    tensors = [
        *zip(a.model.state_dict().values(), b.model.state_dict().values()),
        *zip(a.ema.weights.values(), b.ema.weights.values()),
        *(
            (a.optimizer.state[p][k], b.optimizer.state[q][k])
            for p, q in zip(a.model.parameters(), b.model.parameters())
            for k in a.optimizer.state[p]
        ),
    ]
    return all(torch.equal(u, v) for u, v in tensors) and a.ema.updates == b.ema.updates


def test_the_emulated_capture_freezes_python_and_refuses_reads_as_a_cuda_graph_does():
    total, k = torch.zeros(()), [2.0]
    out, replay = capture_recorded(lambda: total.add_(torch.ones(()) * k[0]))
    k[0] = 5.0  # a number that Python read during the capture: the replays keep the captured one
    replay()
    replay()
    assert total.item() == 6.0 and out is total
    total.zero_()
    _, again = capture_rerun(lambda: total.add_(torch.ones(()) * k[0]))
    again()
    assert total.item() == 10.0
    with pytest.raises(RuntimeError, match="reads a value back"):
        capture_recorded(lambda: float(total.sum()))


def test_a_replayed_training_step_ends_where_running_its_python_every_step_ends():
    replayed, rerun, plain = trainer(capture_recorded), trainer(capture_rerun), trainer()
    history = [t.fit() for t in (replayed, rerun, plain)]
    assert replayed.graph is not None and replayed.graph.captured and replayed.graph.captures == 1
    assert same_state(replayed, rerun)
    assert history[0] == [
        {**m, "time_s": h["time_s"], "images_per_s": h["images_per_s"]} for m, h in zip(history[1], history[0])
    ]
    # against the uncaptured step: the same run up to rounding (the learning rate in float32, the
    # moving average's update told by a tensor)
    for p, q in zip(replayed.model.parameters(), plain.model.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)
    for a, b in zip(history[0], history[2]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["valid_elbo"] == pytest.approx(b["valid_elbo"], rel=1e-6)
    # the rate that the captured update reads followed the schedule (halved by the cosine's second epoch)
    assert float(replayed.optimizer.param_groups[0]["lr"]) == pytest.approx(history[0][-1]["lr"]) == 5e-4


@pytest.mark.parametrize("capture", [capture_recorded, None])
def test_a_resumed_captured_run_ends_where_the_uninterrupted_one_does(capture, tmp_path):
    schedule = {"lr_schedule": "exponential", "lr_decay": 0.5}  # (a new rate every epoch, whatever the epochs)
    whole = trainer(capture, epochs=3, **schedule)
    whole.fit()
    first = trainer(capture, run_dir=tmp_path, epochs=2, **schedule)
    first.fit()  # (its checkpoints hold the learning rate that the captured update reads as a tensor)
    resumed = trainer(capture, run_dir=tmp_path, epochs=3, **schedule)
    resumed.resume()
    resumed.fit()
    assert same_state(whole, resumed)
    assert capture is None or (resumed.graph is not None and resumed.graph.captured)


class _ReadsBack:
    """The ELBO, with a read of a value in every step (which a CUDA graph cannot hold), after
    the step's random draws."""

    def __init__(self, objective):
        self.objective = objective
        self.reads = 0

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def __call__(self, model, x, beta=1.0):
        terms = self.objective(model, x, beta)
        if torch.is_grad_enabled():  # (a training step, not validation)
            self.reads += terms.loss.sum().item() > -math.inf
        return terms


def test_a_step_that_cannot_be_captured_says_why_once_and_trains_uncaptured(caplog, tmp_path):
    cfg = RunConfig.from_dict(SETTINGS)
    objective = _ReadsBack(build_objective(cfg))
    t = trainer(capture_recorded, objective=objective, run_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="dgmkit.training.graphed"):
        history = t.fit()
    said = [r.getMessage() for r in caplog.records if "--graph-step" in r.getMessage()]
    assert len(said) == 1 and "cannot be captured" in said[0] and "reads a value back" in said[0]
    assert t.graph is not None and not t.graph.captured and t.graph.failure is not None
    steps = 2 * t.steps_per_epoch
    assert objective.reads == steps  # every step ran once (the strict one stopped at the read), none was lost
    assert all(isinstance(g["lr"], float) and not g["capturable"] for g in t.optimizer.param_groups)
    plain = trainer()
    expected = plain.fit()
    # the same run: the random draws of the step stopped by the read are drawn again, not twice
    assert history[-1]["train_loss"] == pytest.approx(expected[-1]["train_loss"], rel=1e-6)
    for p, q in zip(t.model.parameters(), plain.model.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)
    given_up = t.graph
    t.epochs = 3
    t.resume()  # (the step stays uncaptured: it cannot be, and its learning rate is a number again)
    t.fit()
    assert t.graph is given_up and not t.graph.captured
    assert all(isinstance(g["lr"], float) and not g["capturable"] for g in t.optimizer.param_groups)


class _RefusesTensorWeights:
    """The ELBO, failing on a KL weight given as a tensor (as the captured step gives it)."""

    def __init__(self, objective):
        self.objective = objective

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def __call__(self, model, x, beta=1.0):
        if isinstance(beta, torch.Tensor):
            raise RuntimeError("no tensors here")
        return self.objective(model, x, beta)


def test_a_step_that_fails_as_set_up_for_the_capture_is_given_up_and_runs_as_before(caplog):
    cfg = RunConfig.from_dict(SETTINGS)
    t = trainer(capture_recorded, objective=_RefusesTensorWeights(build_objective(cfg)))
    with caplog.at_level(logging.WARNING, logger="dgmkit.training.graphed"):
        history = t.fit()
    said = [r.getMessage() for r in caplog.records if "--graph-step" in r.getMessage()]
    assert len(said) == 1 and "no tensors here" in said[0] and t.graph is not None and not t.graph.captured
    assert all(isinstance(g["lr"], float) and not g["capturable"] for g in t.optimizer.param_groups)
    assert history[-1]["train_loss"] == pytest.approx(trainer().fit()[-1]["train_loss"], rel=1e-5)


def test_a_captured_step_skips_updates_on_the_device_and_counts_them_as_running_it_again_does():
    probe = trainer(skip_grad_norm=1e9)  # (the norms of the run: a threshold that some of them pass)
    probe.fit()
    norms = sorted(probe.guard.epoch_norms)
    limit = {"skip_grad_norm": norms[len(norms) * 2 // 3]}
    replayed, rerun = trainer(capture_recorded, **limit), trainer(capture_rerun, **limit)
    history = [t.fit() for t in (replayed, rerun)]
    assert replayed.graph is not None and replayed.graph.captured and same_state(replayed, rerun)
    skipped = [m["skipped_steps"] for m in history[0]]
    assert skipped == [m["skipped_steps"] for m in history[1]] and 0 < sum(skipped) < 2 * replayed.steps_per_epoch
    assert replayed.guard.skipped_total == sum(skipped) == rerun.guard.skipped_total
    assert replayed.guard.epoch_norms == rerun.guard.epoch_norms


class _FailingCapture(RecordedCapture):
    def __call__(self, step, stream=None):
        raise RuntimeError("operation failed due to a previous error during capture")


def test_a_capture_that_fails_after_its_warm_up_stops_the_run_with_an_error():
    t = trainer(_FailingCapture())
    with pytest.raises(TrainingError, match="could not be captured as a CUDA graph .*train without --graph-step"):
        t.fit()


def test_the_strict_mode_is_put_back_though_torch_warns_on_setting_it(monkeypatch):
    """torch warns each time the sync debug mode is set (a prototype): where warnings are
    errors (as here), the warning must not leave the mode at "error" for everything after."""
    modes = [0]

    def set_mode(mode):
        modes.append({"default": 0, "warn": 1, "error": 2}.get(mode, mode))
        warnings.warn("Synchronization debug mode is a prototype feature ...", UserWarning, stacklevel=2)

    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", set_mode)
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: modes[-1])
    with capture_cuda.strict():
        assert modes[-1] == 2
    assert modes == [0, 2, 0]
    with pytest.raises(KeyError), capture_cuda.strict():
        raise KeyError("a failure within")
    assert modes[-1] == 0


class _Marked:
    """The objective, whose every call marks its loss's autograd node and the parameters'
    gradient accumulators (AccumulateGrad nodes) in that graph: ``alive()`` counts the marks of
    the graphs that something still holds."""

    def __init__(self, objective):
        self.objective, self.marks = objective, []

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def __call__(self, *args, **kwargs):
        terms = self.objective(*args, **kwargs)
        root = terms.loss.grad_fn
        nodes, seen = [root], set()
        while nodes:
            node = nodes.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if node is root or type(node).__name__ == "AccumulateGrad":
                mark = _Mark()
                node.metadata.setdefault("test_mark", []).append(mark)  # (as long as the node lives)
                self.marks.append(weakref.ref(mark))
            nodes.extend(n for n, _ in node.next_functions)
        return terms

    def alive(self) -> int:
        return sum(m() is not None for m in self.marks)


class _Mark:
    pass


def _held_accumulators(model: torch.nn.Module) -> int:
    """How many of ``model``'s parameters have a gradient accumulator that something holds (a
    graph of an earlier step: what torch's warning of a stream mismatch is about)."""
    marks = []
    for p in (p for p in model.parameters() if p.requires_grad):
        mark = _Mark()
        torch.autograd.graph.get_gradient_edge(p).node.metadata.setdefault("test_mark", []).append(mark)
        marks.append(weakref.ref(mark))
        del mark
    return sum(m() is not None for m in marks)


TRAIN_SHORT = Split(DIGITS.train.x[:392], DIGITS.train.y[:392])  # 6 batches of 64 and a short one of 8


@pytest.mark.parametrize("name", ["vae", "flow", "diffusion"])
@pytest.mark.parametrize("capture", [None, capture_recorded, capture_rerun], ids=["uncaptured", "recorded", "rerun"])
def test_no_steps_autograd_graph_outlives_the_step(name, capture, as_on_a_gpu):
    """Nothing keeps a step's autograd graph once the step has returned (its terms come back
    detached; the loop, the captured outputs, the parts hold none): on CUDA a graph kept alive
    keeps the parameters' gradient accumulators made on the stream it ran on, and a later step on
    another stream (the short last batch, uncaptured, after a capture on the side stream) meets
    them (torch warns of the mismatch, and it breaks a capture where the other stream is
    capturing); and it keeps its memory."""
    cfg = RunConfig.of(model=name, dataset="digits", epochs=1, batch_size=64, device="cpu", ema=0.99, grad_clip=100.0)
    torch.manual_seed(0)
    model = build_model(cfg, DIGITS.event_shape, DIGITS.num_levels)
    opts = trainer_options(cfg)
    if capture is not None:
        opts["parts"] = [*opts["parts"], GraphStep(capture)]
    objective = _Marked(cfg.model.training_objective())
    t = Trainer(model, objective, TRAIN_SHORT, cfg.model.transform(DIGITS), valid=DIGITS.valid, progress=False, **opts)
    step, held, left = t._step, [], []

    def step_then_count(*args, **kwargs):
        held.append(_held_accumulators(model))  # (an earlier step's, as this one starts)
        out = step(*args, **kwargs)
        left.append(objective.alive())  # (by reference counts: without a collection)
        return out

    t._step = step_then_count  # type: ignore[method-assign]
    t.fit()
    assert capture is None or (t.graph is not None and t.graph.captured)
    assert len(left) == (7 if capture is not capture_recorded else 5)  # (recorded: the replays run no Python)
    assert left == [0] * len(left) and objective.alive() == 0 and objective.marks
    assert held == [0] * len(left) and _held_accumulators(model) == 0


def test_the_emulated_captures_capture_on_the_side_stream_as_a_cuda_capture_does(monkeypatch):
    """As ``CudaCapture``, the emulations run the captured call on the side stream that the
    warm-up steps ran on (on CUDA; the CPU has none), and the current stream then waits for it."""
    on, said = ["current"], []

    class Stream:
        device = "cuda:0"

        def wait_stream(self, other):
            said.append(("waits", other))

    side = Stream()

    @contextlib.contextmanager
    def stream(s):
        before, on[0] = on[0], "side" if s is side else "?"
        try:
            yield
        finally:
            on[0] = before

    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: said.append(("synchronized", device)))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    calls: list[str] = []
    for capture in (capture_recorded, capture_rerun):
        calls[:], said[:] = [], []
        _, replay = capture(lambda: calls.append(on[0]), side)
        replay()
        assert calls == (["side"] if capture is capture_recorded else ["side", "current"])
        assert said == [("synchronized", "cuda:0"), ("waits", side)]
    assert capture_rerun(lambda: on[0], None)[0] == "current"  # (no stream: where it is)


def test_a_model_whose_step_changes_on_the_host_is_not_captured(caplog):
    cfg = RunConfig.of(model="arm", arm="made", made_masks=2, made_hidden=[16], dataset="digits", epochs=1, batch_size=64)
    torch.manual_seed(0)
    model = build_model(cfg, DIGITS.event_shape, DIGITS.num_levels)
    assert not model.fixed_step
    opts = trainer_options(cfg)
    t = Trainer(model, build_objective(cfg), DIGITS.train, cfg.model.transform(DIGITS), progress=False,
                **{**opts, "parts": [*opts["parts"], GraphStep(capture_recorded)]})  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="dgmkit.training.trainer"):
        t.fit()
    assert t.graph is None and any("a MADE of several masks" in r.getMessage() for r in caplog.records)


def test_a_resume_within_the_process_captures_the_step_again(tmp_path):
    t = trainer(capture_recorded, run_dir=tmp_path, epochs=1)
    t.fit()
    first = t.graph
    assert first is not None and first.captured
    t.epochs = 2
    t._nonfinite.fill_(1)  # (as a stopped run leaves it: a resumed run counts its own steps)
    t.resume()  # (the optimizer's state is new: a graph that held the old would write into freed memory on CUDA)
    assert t.graph is not first and t.graph is not None and not t.graph.captured and int(t._nonfinite) == 0
    t.fit()
    assert t.graph.captured


def test_a_captured_step_needs_cuda_or_a_capture_given(caplog):
    cfg = RunConfig.from_dict({**SETTINGS, "epochs": 1})
    torch.manual_seed(0)
    model = build_model(cfg, DIGITS.event_shape, DIGITS.num_levels)
    opts = trainer_options(cfg)
    t = Trainer(model, build_objective(cfg), DIGITS.train, make_transform("bernoulli", DIGITS), progress=False,
                **{**opts, "parts": [*opts["parts"], GraphStep()]})  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="dgmkit.training.trainer"):
        t.fit()
    assert t.graph is None and any("needs a CUDA device" in r.getMessage() for r in caplog.records)
    assert all(not torch.is_tensor(g["lr"]) for g in t.optimizer.param_groups)


class _Poisoned:
    """The ELBO, whose loss becomes NaN from step ``at`` on (set by the loop's ``update``, outside
    the captured step, in a tensor that the captured step reads); ``before``: the weights then."""

    def __init__(self, objective, model, at: int):
        self.objective, self.model, self.at = objective, model, at
        self.poison = torch.zeros(())
        self.before: dict[str, torch.Tensor] = {}

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def update(self, step: int) -> None:
        self.objective.update(step)
        if step == self.at:
            self.before = {k: v.clone() for k, v in self.model.state_dict().items()}
            self.poison.fill_(1.0)

    def __call__(self, model, x, beta=1.0):
        terms = self.objective(model, x, beta)
        return terms._replace(loss=torch.where(self.poison > 0, math.nan, terms.loss))


def test_a_captured_step_whose_loss_is_not_finite_stops_the_run_with_the_weights_of_before(caplog):
    cfg = RunConfig.from_dict(SETTINGS)
    torch.manual_seed(0)
    model = build_model(cfg, DIGITS.event_shape, DIGITS.num_levels)
    objective = _Poisoned(build_objective(cfg), model, at=WARMUP + 3)  # two replays after the capture
    opts = trainer_options(cfg)
    t = Trainer(model, objective, DIGITS.train, make_transform("bernoulli", DIGITS), progress=False,
                **{**opts, "parts": [*opts["parts"], GraphStep(capture_recorded)]})  # fmt: skip
    with pytest.raises(TrainingError, match=r"not finite in 1 step\(s\) by epoch 1, step 7, which took no update"):
        t.fit()
    assert t.graph is not None and t.graph.captured and objective.before
    assert all(torch.equal(objective.before[k], v) for k, v in model.state_dict().items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_a_replayed_step_draws_anew_and_follows_the_generators_state():
    out = torch.zeros(8, device="cuda")

    def step(x, y):
        out.copy_(x + torch.randn(8, device="cuda"))
        return out

    graph, x = StepGraph(step), torch.zeros(8, device="cuda")
    for _ in range(WARMUP + 1):
        graph(x, None)
    assert graph.captured and graph.failure is None
    state = torch.cuda.get_rng_state()
    first, second = graph(x, None).clone(), graph(x, None).clone()
    torch.cuda.set_rng_state(state)
    assert not torch.equal(first, second) and torch.equal(graph(x, None), first)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("compiled", [False, True])
def test_on_cuda_the_captured_step_trains_as_running_it_every_step_does(compiled):
    """Against the same step run by its Python every time (``capture_rerun``): the weights to
    rounding, so that a value frozen at the capture (the learning rate of the cosine's second
    epoch, the moving average's warm-up) shows."""
    settings = {"device": "cuda", "compile": compiled}
    captured, rerun, plain = (
        trainer(None, graph_step=True, **settings),
        trainer(capture_rerun, **settings),
        trainer(None, **settings),
    )
    a, b, c = captured.fit(), rerun.fit(), plain.fit()
    assert captured.graph is not None and captured.graph.captured and captured.graph.failure is None
    for p, q in zip(captured.model.parameters(), rerun.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    for name in captured.ema.weights:
        torch.testing.assert_close(captured.ema.weights[name], rerun.ema.weights[name], rtol=1e-4, atol=1e-5)
    assert captured.ema.updates == rerun.ema.updates == plain.ema.updates
    assert a[-1]["train_loss"] == pytest.approx(b[-1]["train_loss"], rel=1e-4)
    assert a[-1]["valid_elbo"] == pytest.approx(c[-1]["valid_elbo"], rel=0.02)


def test_dgm_train_graph_step_on_a_cpu_says_it_needs_cuda_and_trains(tmp_path, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="dgmkit.training.trainer"):
        code, out, err = run(capsys, "train", "--model", "vae", "--dataset", "digits", "--epochs", "1", "--graph-step",
                             "--hidden", "16", "--latent-dim", "2", "--device", "cpu", "--out", tmp_path / "r")  # fmt: skip
    said = " ".join(r.getMessage() for r in caplog.records) + out + err
    assert code == 0 and "--graph-step: it needs a CUDA device" in said
    assert (tmp_path / "r" / "checkpoint.safetensors").is_file()


GRADIENT_FAMILIES = [  # each family's defaults; its other choices with --run-slow
    pytest.param(n, c, marks=[pytest.mark.slow] if c else []) for n, c in family_variants() if FAMILIES[n].fit == "gradient"
]


@pytest.fixture
def as_on_a_gpu(monkeypatch):
    """The code paths a step takes on a GPU, where reading a value back waits for the device
    (``devices.reads_are_free`` is False there, as it is under torch.compile)."""
    import importlib
    import pkgutil

    import dgmkit

    for info in pkgutil.walk_packages(dgmkit.__path__, "dgmkit."):
        module = importlib.import_module(info.name)
        if getattr(module, "reads_are_free", None) is not None:
            monkeypatch.setattr(module, "reads_are_free", lambda t: False)


@pytest.mark.parametrize(
    "name, change", [*GRADIENT_FAMILIES, ("diffusion", {"process": "masked", "masked_training": "counts",
                                                       "diffusion_steps": 0})], ids=variant_id
)  # fmt: skip
def test_every_familys_training_step_is_captured_as_one_graph(name, change, as_on_a_gpu):
    """No family's step reads a value back to the host on a GPU's code paths (a read would end
    the capture, and waits for the device in every uncaptured step too)."""
    try:
        cfg = RunConfig.of(model=name, dataset="digits", epochs=1, batch_size=64, device="cpu", **change)
        model = build_model(cfg, DIGITS.event_shape, DIGITS.num_levels)
    except ConfigError as e:  # a family for data of another kind (a table)
        pytest.skip(str(e))
    trainers = []
    for capture in (capture_recorded, capture_rerun):
        torch.manual_seed(0)
        model = build_model(cfg, DIGITS.event_shape, DIGITS.num_levels)
        opts = trainer_options(cfg)
        trainers.append(Trainer(model, cfg.model.training_objective(), DIGITS.train, cfg.model.transform(DIGITS),
                                progress=False, **{**opts, "parts": [*opts["parts"], GraphStep(capture)]}))  # fmt: skip
    t, rerun = trainers
    t.fit()
    if not model.fixed_step:
        assert t.graph is None
        return
    assert t.graph is not None and t.graph.failure is None and t.graph.captured
    if change:  # (the defaults also against the step run by its Python: nothing of theirs is frozen at the capture)
        return
    rerun.fit()
    assert all(torch.equal(u, v) for u, v in zip(t.model.state_dict().values(), rerun.model.state_dict().values()))
