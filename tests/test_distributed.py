"""Data-parallel training: 2 processes on CPU with gloo, on localhost, against one process.

The models here have deterministic objectives given the data (an autoregressive model and a
Glow flow by maximum likelihood, their binarization and dequantization noise drawn once per
global batch), so two processes sharing a batch must do what one process does with it. Glow's
check uses a tiny learning rate: Adam's first step is about lr * sign(gradient), which turns the
float noise of near-zero gradients (its zero-initialised layers) into lr-sized differences; with
lr = 1e-9 the weights after the step are those that ActNorm's data-dependent start chose."""

import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dgmkit import distributed as dd
from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import DataTransform, Split
from dgmkit.errors import ConfigError
from dgmkit.families import FAMILIES
from dgmkit.objectives import MaximumLikelihood
from dgmkit.training import Trainer
from family_variants import family_variants, variant_id

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_process(worker):
    """A worker run in a process of its own as dgmkit runs a rank: whatever happens, the
    process ends through ``distributed.end_process`` (status 1, with the traceback on stderr,
    where the worker raised), never through the interpreter's shutdown beside gloo's threads."""

    @functools.wraps(worker)
    def run(rank: int, *args) -> None:
        status = 0
        try:
            worker(rank, *args)
        except BaseException:
            traceback.print_exc()
            status = 1
        dd.end_process(status)

    return run


def _setup(settings: dict, levels: int) -> tuple:
    torch.manual_seed(0)
    cfg = RunConfig.of(**settings)
    model = build_model(cfg, (1, 8, 8), levels)
    x = torch.randint(0, levels, (24, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    return cfg, model, Split(x)


CASES = {
    "arm": (dict(model="arm", arm="made", made_hidden=[16]), 2, "binary", 1e-2),
    "glow": (dict(model="flow", flow="glow", hidden=[8], flow_layers=2, flow_levels=1), 17, "dequantize", 1e-9),
    # models that draw noise (each rank its own): the ranks must still hold one model
    "vae-glow-prior": (
        dict(model="vae", hidden=[8], latent_dim=4, prior="flow", flow="glow", flow_layers=1),
        2,
        "binary",
        1e-2,
    ),
    "vqvae-ema": (dict(model="vqvae", codes=4, code_dim=2, vq_width=4, downsample=1, res_blocks=1), 2, "binary", 1e-2),
    # NVIL's running moments of its signal: of the whole batch (all-reduced), or each rank's would differ
    "dvae-nvil": (dict(model="dvae", hidden=[8], latent_dim=2, latent_classes=3, objective="nvil"), 2, "binary", 1e-2),
}


def _train(case: str, steps_batch: int, epochs: int) -> Trainer:
    settings, levels, kind, lr = CASES[case]
    cfg, model, train = _setup(settings, levels)
    trainer = Trainer(
        model, build_objective(cfg), train, DataTransform(kind, levels), epochs=epochs, batch_size=steps_batch, lr=lr,
        seed=3, progress=False,
    )  # fmt: skip
    trainer.fit()
    return trainer


@_rank_process
def _worker(rank: int, port: int, case: str, batch: int, epochs: int, out: str, shm: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    os.environ["DGMKIT_SHM_ALLREDUCE"] = "1" if shm else "0"
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    trainer = _train(case, batch, epochs)
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    params = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    state = {n: t.detach().clone() for n, t in trainer.model.state_dict().items()}
    torch.save({"grads": grads, "params": params, "state": state, "transport": trainer.gradient_transport}, f"{out}.{rank}")


def _two_processes(tmp_path, case: str, batch: int, epochs: int, shm: bool = True) -> list[dict]:
    out = str(tmp_path / f"{case}.pt")
    args = (_free_port(), case, batch, epochs, out, shm)
    mp.start_processes(_worker, args=args, nprocs=WORLD, start_method="spawn")
    ranks = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    assert all(r["transport"] == ("shared memory" if shm else "gloo") for r in ranks)
    return ranks


@pytest.mark.parametrize("case, shm", [("arm", True), ("arm", False), ("glow", True), ("glow", False), ("vqvae-ema", True)])
def test_two_processes_give_the_gradients_and_steps_of_one_on_the_global_batch(case, shm, tmp_path):
    """Through shared memory (the default for ranks on one machine) and through gloo. The
    codebook's k-means start and moving averages too: the ranks' start on the global batch
    updated the averages once more, counting that batch twice (gradients 6-12% off)."""
    ranks = _two_processes(tmp_path, case, batch=24, epochs=1, shm=shm)  # one step: the gradient of the whole batch
    one = _train(case, 24, 1)
    for r in ranks:
        for name, p in one.model.named_parameters():
            if p.grad is not None:
                # float32 sums in another order: differences of about 1e-6 of the tensor's largest entry
                atol = max(1e-6, 1e-5 * float(p.grad.abs().max()))
                torch.testing.assert_close(r["grads"][name], p.grad, rtol=1e-4, atol=atol, msg=f"gradient of {name}")
            torch.testing.assert_close(r["params"][name], p.detach(), rtol=1e-4, atol=1e-6, msg=f"{name} after a step")
        for name, t in one.model.state_dict().items():  # buffers too: the codebook's counts and sums
            torch.testing.assert_close(r["state"][name], t, rtol=1e-4, atol=1e-5, msg=f"{name} after a step")
    if case != "arm":
        return
    several = _two_processes(tmp_path, case, batch=8, epochs=2, shm=shm)  # 6 steps: the same weights after each
    one = _train(case, 8, 2)
    for name, p in one.model.named_parameters():
        for r in several:
            torch.testing.assert_close(r["params"][name], p.detach(), rtol=1e-3, atol=1e-5, msg=f"{name} after 6 steps")


@pytest.mark.parametrize("case", ["vae-glow-prior", "vqvae-ema", "dvae-nvil"])
def test_ranks_hold_one_model_when_the_model_draws_noise(case, tmp_path):
    """ActNorm started after random draws, a codebook from k-means and moving averages: rank 0's
    start is every rank's, and the codebook's averages add every rank's part of the batch."""
    a, b = _two_processes(tmp_path, case, batch=8, epochs=2)
    assert a["state"].keys() == b["state"].keys()
    for name in a["state"]:
        torch.testing.assert_close(a["state"][name], b["state"][name], rtol=0, atol=0, msg=name)


def test_ddp_says_nothing_of_a_gradient_whose_strides_differ_from_its_bucket_only_in_a_dimension_of_one(tmp_path, capfd):
    """The VQ-VAE's first convolution has one input channel: its weight gradient comes out with
    the strides of channels-last memory, the same memory as its bucket's; DDP's warning about it
    ("Grad strides do not match bucket view strides", with C++ sizes and strides) was printed
    by every `dgm train --nproc` of a VQ-VAE on grayscale images."""
    _two_processes(tmp_path, "vqvae-ema", batch=8, epochs=1)
    assert "strides" not in capfd.readouterr().err


class _Clock:
    """A clock that advances one second each time it is read (as tests/test_time_budget.py's)."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def _made_in_batches_of_23(run, budget: float | None = None) -> Trainer:
    """The MADE case's 24 rows in batches of 23: 2 steps an epoch in one process, 1 on 2 (the
    last row cannot be shared); ``budget``: a time budget of the clock above."""
    from dgmkit.training import TimeBudget

    settings, levels, kind, lr = CASES["arm"]
    cfg, model, train = _setup(settings, levels)
    parts = [] if budget is None else [TimeBudget(budget, _Clock())]
    return Trainer(
        model, build_objective(cfg), train, DataTransform(kind, levels), epochs=2, batch_size=23, lr=lr, seed=3,
        progress=False, run_dir=run, parts=parts,
    )  # fmt: skip


@_rank_process
def _resuming_worker(rank: int, port: int, run: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    trainer = _made_in_batches_of_23(run)
    trainer.resume()
    start = (trainer.epoch, trainer.steps_into_epoch, trainer.steps_per_epoch)
    trainer.fit()
    params = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    torch.save({"start": start, "epoch": trainer.epoch, "step": trainer.step, "params": params}, f"{out}.{rank}")


def test_a_run_that_one_process_stopped_before_a_step_the_ranks_leave_out_resumes_on_two(tmp_path):
    """Stopped by its time budget after step 1 of 2 in one process, the run is at the end of
    the ranks' epoch (their last batch, of one row, is left out): on 2 processes it goes on
    from there, to epoch 2 (it was refused as a checkpoint whose place in the epoch is malformed)."""
    run, out = tmp_path / "run", str(tmp_path / "resumed.pt")
    first = _made_in_batches_of_23(run, budget=0.5)  # out after the first step
    first.fit()
    assert first.budget_spent and first.steps_into_epoch == 1 and first.step == 1
    mp.start_processes(_resuming_worker, args=(_free_port(), str(run), out), nprocs=WORLD, start_method="spawn")
    a, b = (torch.load(f"{out}.{rank}") for rank in range(WORLD))
    for r in (a, b):
        assert r["start"] == (0, 1, 1) and r["epoch"] == 2 and r["step"] == 2  # epoch 1 ends; epoch 2's one step
    assert all(torch.equal(a["params"][n], b["params"][n]) for n in a["params"])
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


class _NaNOnRankOne:
    """The objective, except that rank 1's third training loss is NaN."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, model, x, beta, **kw):
        terms = self.inner(model, x, beta, **kw)
        self.calls += model.training
        if dd.current().rank == 1 and model.training and self.calls == 3:
            return terms._replace(loss=terms.loss * float("nan"))
        return terms


@_rank_process
def _stopping_worker(rank: int, port: int, out: str, fault: str) -> None:
    """Trains the MADE case on 2 ranks with a fault planted: ``nan`` (rank 1's third loss is
    NaN) or ``unused`` (a parameter that the objective never uses); saves how training ended."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from dgmkit.errors import TrainingError

    settings, levels, kind, lr = CASES["arm"]
    cfg, model, train = _setup(settings, levels)
    objective = build_objective(cfg)
    if fault == "nan":
        objective = _NaNOnRankOne(objective)
    else:
        model.register_parameter("spare", torch.nn.Parameter(torch.zeros(3)))
    trainer = Trainer(
        model, objective, train, DataTransform(kind, levels), epochs=2, batch_size=8, lr=lr, seed=3, progress=False
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    try:
        trainer.fit()
        result = "finished"
    except TrainingError as e:
        result = str(e)
    moved = any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters())
    torch.save({"result": result, "step": trainer.step, "moved": moved}, f"{out}.{rank}")


def test_a_bad_loss_on_one_rank_stops_every_rank_before_the_step(tmp_path):
    out = str(tmp_path / "nan.pt")
    args = (_free_port(), out, "nan")
    ctx = mp.start_processes(_stopping_worker, args=args, nprocs=WORLD, start_method="spawn", join=False)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:  # a rank left waiting for the other is the failure this guards against
            for p in ctx.processes:
                p.kill()
            pytest.fail("the ranks did not stop together on a NaN loss")
    for r in (torch.load(f"{out}.{rank}") for rank in range(WORLD)):
        assert "training loss became nan" in r["result"] and "epoch 1, step 3" in r["result"]
        assert r["step"] == 2 and r["moved"]  # two steps taken, the third refused on both ranks


GRADIENT_VARIANTS = [(n, c) for n, c in family_variants() if FAMILIES[n].fit == "gradient"]


@pytest.mark.parametrize("name, change", GRADIENT_VARIANTS, ids=variant_id)
def test_every_family_gives_every_trainable_parameter_a_gradient_in_every_step(name, change):
    """What data-parallel training relies on (DDP runs without its search for unused
    parameters): the training loss reaches every trainable parameter, with and without labels."""
    try:
        cfg = RunConfig.of(model=name, **change)
        model = build_model(cfg, (1, 8, 8), 2)
    except ConfigError as e:  # a choice that needs other keys, or data of another kind (a table, 28x28)
        pytest.skip(str(e))
    objective = build_objective(cfg)
    objective.setup(100)
    if objective.takes_labels:
        objective.setup_labels(50)
    transform = DataTransform("binary", 2)
    x = torch.randint(0, 2, (24, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    model.train()
    for step in range(3):
        batch = transform(x[8 * step : 8 * (step + 1)], torch.Generator().manual_seed(step))
        model.zero_grad(set_to_none=True)
        objective.update(step)
        if objective.takes_labels:  # all hidden, then half of them given
            y = torch.full((8,), -1) if step % 2 == 0 else torch.tensor([0, 1, 2, 3, -1, -1, -1, -1])
            terms = objective(model, batch, 1.0, y=y)
        else:
            terms = objective(model, batch, 1.0)
        # one value per example: a data-parallel step differentiates their sum times the ranks over the global rows
        assert terms.loss.shape == getattr(terms, objective.score).shape == (8,)
        terms.loss.mean().backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"step {step}: no gradient for {missing}"


class _BatchTerms(NamedTuple):
    loss: torch.Tensor
    log_px: torch.Tensor


class _BatchMean(MaximumLikelihood):
    """An objective that returns the batch's mean (or sum) as one number instead of the per-example terms."""

    def __init__(self, reduce):
        self.reduce = reduce

    def __call__(self, model, x, beta=1.0):
        log_px = model.log_prob(x)
        return _BatchTerms(-self.reduce(log_px), self.reduce(log_px))


@pytest.mark.parametrize("reduce", [torch.mean, torch.sum, lambda t: t[:, None]])
def test_an_objective_whose_loss_is_not_per_example_is_refused_by_name(reduce):
    """Data-parallel ranks differentiate the sum of their rows' losses times the ranks over the global
    rows: a batch's mean returned as one number trained there with a gradient 1/(B/W) of one process's
    (a sum's: 1/B), and in one process it trained silently with its epoch numbers off by the batch size."""
    cfg, model, train = _setup(CASES["arm"][0], 2)
    trainer = Trainer(model, _BatchMean(reduce), train, DataTransform("binary", 2), epochs=1, batch_size=8,
                      progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"'loss' term has shape .* shape \(8,\): return the per-example terms"):
        trainer.fit()


def test_a_parameter_without_a_gradient_stops_every_rank_before_the_step(tmp_path):
    out = str(tmp_path / "unused.pt")
    mp.start_processes(_stopping_worker, args=(_free_port(), out, "unused"), nprocs=WORLD, start_method="spawn")
    for r in (torch.load(f"{out}.{rank}") for rank in range(WORLD)):
        assert "spare got none at step 1" in r["result"] and not r["moved"]


class _TwoDtypes(torch.nn.Module):
    """A small network with float64 and float32 parameters (buckets of each dtype)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(10, 300), torch.nn.Tanh(), torch.nn.Linear(300, 7)).double()
        self.head = torch.nn.Linear(7, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return h.square().sum() + self.head(h.float()).sum()


@_rank_process
def _shm_worker(rank: int, port: int, slot_bytes: int | None, out: str, world: int = WORLD) -> None:
    """Gradients averaged by the shared-memory hook (buckets of about 4 KB, slots of
    ``slot_bytes``), against gloo's all-reduce of the same local gradients."""
    from dgmkit.training import shared_memory

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    if slot_bytes is not None:
        shared_memory.MAX_SLOT_BYTES = slot_bytes
    torch.manual_seed(0)
    net = _TwoDtypes()
    ddp = torch.nn.parallel.DistributedDataParallel(net, bucket_cap_mb=0.004, gradient_as_bucket_view=True)
    before = {p.name for p in shared_memory.SHM_DIR.iterdir()}
    hook = shared_memory.attach(ddp, sum(p.numel() * p.element_size() for p in net.parameters()))
    results = []
    for step in range(2):  # the second step uses the other set of slots
        x = torch.randn(5, 10, generator=torch.Generator().manual_seed(10 * step + rank), dtype=torch.float64)
        with ddp.no_sync():  # this rank's own gradients, averaged by gloo
            net.zero_grad(set_to_none=True)
            ddp(x).backward()
        expected = [p.grad.clone() for p in net.parameters()]
        for g in expected:
            dist.all_reduce(g)
            g /= world
        net.zero_grad(set_to_none=True)
        ddp(x).backward()
        results.append((expected, [p.grad.clone() for p in net.parameters()]))
    left = {p.name for p in shared_memory.SHM_DIR.iterdir()} - before  # (after a barrier: rank 0 is past its unlink)
    torch.save({"results": results, "exchanges": hook.exchanges, "left": left}, f"{out}.{rank}")


@pytest.mark.parametrize("slot_bytes, world", [(None, 2), (1024, 2), (None, 3)])
def test_shared_memory_averages_as_the_all_reduce_does(slot_bytes, world, tmp_path):
    """Several buckets of two dtypes averaged in one exchange per step (or, in slots of 1024
    bytes, in pieces and several exchanges): gloo's average, the same bits on every rank, and
    no file left in /dev/shm; with three ranks too (every rank's slot summed, not two)."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm here")
    out = str(tmp_path / "shm.pt")
    mp.start_processes(_shm_worker, args=(_free_port(), slot_bytes, out, world), nprocs=world, start_method="spawn")
    ranks = [torch.load(f"{out}.{rank}") for rank in range(world)]
    a, b = ranks[0], ranks[-1]
    for r in ranks:
        assert not r["left"]
        for expected, got in r["results"]:
            for g, want in zip(got, expected):
                # sums of three in another order: float64 rounding of the largest entry's size, no more
                tol = 1e-5 if g.dtype == torch.float32 else 1e-12
                torch.testing.assert_close(g, want, rtol=tol, atol=tol * float(want.abs().max()))
    for (_, ga), (_, gb) in zip(a["results"], b["results"]):
        assert all(torch.equal(x, y) for x, y in zip(ga, gb))
    assert a["exchanges"] == 2 if slot_bytes is None else a["exchanges"] > 40  # 24 KB of one weight alone: 24 pieces


def test_shards_cover_the_rows_once_in_order():
    for n in (0, 1, 5, 24, 25):
        for world in (1, 2, 3):
            parts = [dd.shard(n, dd.Context(r, world)) for r in range(world)]
            rows = [i for p in parts for i in range(n)[p]]
            assert rows == list(range(n))
            assert max(len(range(n)[p]) for p in parts) - min(len(range(n)[p]) for p in parts) <= 1


def _exact_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(RunConfig.of(**CASES["arm"][0]), (1, 8, 8), 2).eval()


@_rank_process
def _estimate_worker(rank: int, port: int, out: str) -> None:
    from datetime import timedelta

    from dgmkit.evaluation.estimates import draw_orders, estimate, log_likelihoods

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=20))  # (a hang: an error)
    model, x = _exact_model(), _setup(CASES["arm"][0], 2)[2].x.float()
    got: dict = {n: log_likelihoods(model, x[:n], iw_samples=0) for n in (7, 1)}  # the same rows on every rank
    calls = {  # each rank its own rows (the DistributedSampler idiom), fewer rows than ranks on one, orders on one
        "own rows": lambda: log_likelihoods(model, x[4 * rank : 4 * rank + 4], iw_samples=0),
        "own count": lambda: log_likelihoods(model, x[: 1 + 2 * rank], iw_samples=0),
        "own orders": lambda: estimate(model, x[:4], 0, orders=draw_orders(1, 64) if rank == 0 else None),
    }
    for name, call in calls.items():
        try:
            got[name] = call()
        except ValueError as e:
            got[name] = str(e)
    torch.save(got, f"{out}.{rank}")


def test_estimates_gather_every_row_once_in_order_and_refuse_ranks_given_different_data(tmp_path):
    """An exact model's per-datapoint values on 2 ranks are one process's, in the data's order,
    for 7 rows (not divisible by the ranks) and 1 (fewer than the ranks). Ranks given different
    rows were refused by neither: each passing its own 4 rows got rows 0, 1, 6, 7 of the 8 back on
    both (rank 0's last two and rank 1's first two dropped), and one rank holding 1 row, the other
    3, left the second waiting in its gather for the first, which had returned; orders given on
    rank 0 alone left it waiting in their broadcast for ever."""
    from dgmkit.evaluation.estimates import log_likelihoods

    out = str(tmp_path / "est.pt")
    mp.start_processes(_estimate_worker, args=(_free_port(), out), nprocs=WORLD, start_method="spawn")
    model, x = _exact_model(), _setup(CASES["arm"][0], 2)[2].x.float()
    for rank in range(WORLD):
        got = torch.load(f"{out}.{rank}")
        for n in (7, 1):
            torch.testing.assert_close(got[n], log_likelihoods(model, x[:n], iw_samples=0), rtol=1e-6, atol=1e-5)
        assert "different data to estimate (data: rank 0 " in got["own rows"]
        assert "shape: rank 0 (1, 1, 8, 8), rank 1 (3, 1, 8, 8)" in got["own count"]
        assert "(orders: rank 0 (1, 64), rank 1 None)" in got["own orders"]


def _torchrun(args: list[str], nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as logs:  # (torchrun's own default: a torchelastic_* left in /tmp)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        cmd += ["--log-dir", logs, "-m", "dgmkit"]
        return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=600)


def _weights(run) -> dict:
    from safetensors.torch import load_file

    weights = {k: v for k, v in load_file(str(run / "checkpoint.safetensors")).items() if k.startswith("model/")}
    assert weights  # (a prefix that matched no tensor compared nothing)
    return weights


def test_torchrun_writes_the_run_once_and_resumes_across_process_counts(tmp_path):
    base = ["train", "--dataset", "digits", "--model", "arm", "--arm", "made", "--made-hidden", "32", "--device", "cpu"]
    base += ["--batch-size", "64"]
    mixed, single = tmp_path / "mixed", tmp_path / "single"
    first = _torchrun([*base, "--epochs", "2", "--out", str(mixed)], 2)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("epoch    1/2") == 1 and "data-parallel: 2 processes" in first.stdout  # rank 0 alone prints
    lines = (mixed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # one line per epoch: one writer
    assert sorted(p.name for p in mixed.iterdir() if not p.name.startswith(".")) == [
        "best.safetensors", "checkpoint.safetensors", "config.json", "metrics.jsonl"
    ]  # fmt: skip
    from dgmkit.cli.main import main

    assert main([*base[:-2], "--batch-size", "64", "--epochs", "3", "--resume", "--out", str(mixed), "--quiet"]) == 0
    again = _torchrun([*base, "--epochs", "4", "--resume", "--out", str(mixed)], 2)  # 1 process, then 2 again
    assert again.returncode == 0, again.stderr[-3000:]
    assert main([*base, "--epochs", "4", "--out", str(single), "--quiet"]) == 0
    a, b = _weights(mixed), _weights(single)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5, msg=k)
    assert [json.loads(line)["epoch"] for line in (mixed / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_dgmkit_train_in_a_script_under_torchrun_trains_data_parallel(tmp_path):
    """``torchrun --nproc-per-node 2 script.py`` with ``dgmkit.train`` in it: the call joins the
    group (it trained once per rank before, racing on one folder, and one rank failed), rank 0
    alone writes and prints, and every rank gets the run, the weights of one process's run."""
    script = tmp_path / "script.py"
    script.write_text(
        "import os, sys, dgmkit\n"
        "run = dgmkit.train(sys.argv[1], dataset='digits', model='arm', arm='made', made_hidden=[32], batch_size=64,\n"
        "                   epochs=2, device='cpu', quiet=False)\n"
        # one write of the whole line: the ranks' prints, piece by piece, interleaved ("rankrank 0 has")
        "os.write(1, f\"rank {os.environ['RANK']} has {type(run.model).__name__}\\n\".encode())\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH")])
    )
    with tempfile.TemporaryDirectory() as logs:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--log-dir", logs]
        p = subprocess.run([*cmd, str(script), str(tmp_path / "ddp")], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.stdout.count("data-parallel: 2 processes") == 1 and p.stdout.count("epoch    1/2") == 1, p.stdout
    assert sorted(line.split()[1] for line in p.stdout.splitlines() if line.startswith("rank ")) == ["0", "1"], p.stdout
    import dgmkit

    dgmkit.train(tmp_path / "one", dataset="digits", model="arm", arm="made", made_hidden=[32], batch_size=64, epochs=2,
                 device="cpu")  # fmt: skip
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "one")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5, msg=k)


def test_a_resumed_three_process_run_ends_bit_identical_to_the_uninterrupted_one(tmp_path):
    """Every rank draws its own noise (a VAE's z): a checkpoint holds every rank's random stream,
    so stopping after epoch 1 and resuming on as many processes changes no bit (ranks other
    than 0 were re-seeded on resume before)."""
    base = ["train", "--dataset", "digits", "--model", "vae", "--hidden", "16", "--latent-dim", "3", "--device", "cpu",
            "--batch-size", "60", "--likelihood", "categorical", "--seed", "4"]  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for args in ([*base, "--epochs", "2", "--out", str(straight)], [*base, "--epochs", "1", "--out", str(resumed)],
                 [*base, "--epochs", "2", "--resume", "--out", str(resumed)]):  # fmt: skip
        p = _torchrun(args, 3)
        assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming" in p.stdout and "goes on in" not in p.stdout  # as many processes: no note that it is not exact
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from safetensors.torch import load_file

    states = load_file(str(resumed / "checkpoint.safetensors"))["rng/torch_ranks"]
    assert states.shape[0] == 3 and not torch.equal(states[1], states[2])


def test_dgm_train_nproc_launches_torchrun_and_eval_shards_the_data(tmp_path, capsys, monkeypatch):
    from dgmkit.cli.main import main

    run, scratch = tmp_path / "vae", tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the launcher's process
    monkeypatch.setattr(tempfile, "tempdir", None)
    args = ["train", "--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--epochs", "2", "--nproc", "2"]
    args += ["--device", "cpu"]  # (a machine with one GPU would refuse 2 processes on it)
    assert main([*args, "--out", str(run), "--quiet"]) == 0
    assert "starting 2 processes with torchrun" in capsys.readouterr().out
    assert not list(scratch.glob("torchelastic_*"))  # torchrun's agent left one a launch (PyTorch's caches stay)
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    shared = _torchrun(["eval", str(run), "--iw-samples", "20"], 2)
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert shared.stdout.count("NLL (k=20)") == 1  # rank 0 reports the gathered result
    r = json.loads((run / "eval.json").read_text())
    assert r["n"] == 300 and r["iw_samples"] == 20
    assert main(["eval", str(run), "--iw-samples", "20"]) == 0  # one process: the same estimate within noise
    one = json.loads((run / "eval.json").read_text())
    assert abs(one["nll"] - r["nll"]) < 4 * (one["nll_stderr"] + r["nll_stderr"]) / 10 + 0.5
    refused = _torchrun(["sample", str(run), "--out", str(tmp_path / "s.png")], 2)
    assert refused.returncode != 0 and "runs in one process" in refused.stderr


def test_nproc_refuses_in_one_line_before_starting_processes(tmp_path, capsys):
    from dgmkit.cli.main import main

    assert main(["train", "--model", "ppca", "--dataset", "digits", "--nproc", "2", "--out", str(tmp_path / "p")]) == 1
    assert "not trained by gradient steps" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    assert main(["train", "--dataset", "digits", "--nproc", "2", "--out", str(tmp_path / "full")]) == 1
    err = capsys.readouterr()
    assert "not empty" in err.err and "starting" not in err.out
    for flags, words in ((["--channels-last"], "channels-last"), (["--batch-size", "3"], "smaller than the 4 processes")):
        assert main(["train", "--dataset", "digits", "--nproc", "4", *flags, "--out", str(tmp_path / "n")]) == 1
        err = capsys.readouterr()
        assert words in err.err and "starting" not in err.out


def test_nproc_checks_the_gpus_before_starting_processes_and_notes_more_processes_than_cores(tmp_path, capsys, monkeypatch):
    """One process per GPU: more processes than GPUs, or one GPU named for all, are refused in one
    line before any process starts (a rank without a GPU failed after the others had started); on
    the CPU, more processes than cores train (slower), with a note."""
    from dgmkit.cli import train as train_cli
    from dgmkit.cli.main import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    started = []
    monkeypatch.setattr(train_cli, "_launch", lambda args: started.append(args.nproc) or 0)
    argv = ["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2"]
    for flags, words in (
        (["--nproc", "2", "--device", "cuda"], "--nproc 2: data-parallel training puts one process on each GPU, and this"),
        (["--nproc", "2"], "machine has 1: give --nproc 1, or train on the CPU"),  # (auto: CUDA where present)
    ):
        assert main([*argv, *flags, "--out", str(tmp_path / "g")]) == 1
        err = capsys.readouterr()
        assert words in err.err and "starting" not in err.out, flags
    assert started == [] and not (tmp_path / "g").exists()
    monkeypatch.setattr(train_cli.os, "cpu_count", lambda: 1)
    assert main([*argv, "--nproc", "2", "--device", "cpu", "--out", str(tmp_path / "c")]) == 0
    assert "note: 2 processes on 1 CPU core: each step waits for the slowest" in capsys.readouterr().out
    assert started == [2]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert main([*argv, "--nproc", "2", "--device", "cuda:1", "--out", str(tmp_path / "d")]) == 1  # (rank 0's is cuda:0)
    assert "--device cuda:1 in data-parallel training" in capsys.readouterr().err
    assert main([*argv, "--nproc", "2", "--device", "cuda:0", "--out", str(tmp_path / "d")]) == 1  # (rank 1's is cuda:1)
    assert "--device cuda:0 in data-parallel training" in capsys.readouterr().err
    from dgmkit.training.data_parallel import rank_device  # (a rank that names its own GPU, under torchrun: taken)

    assert rank_device(dd.Context(1, 2, 1), torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert main([*argv, "--nproc", "2", "--device", "cuda", "--out", str(tmp_path / "d")]) == 0  # (no note on a GPU)
    assert "CPU core" not in capsys.readouterr().out and started == [2, 2]


# A fault planted in the ranks of `dgm train --nproc 2`: this module, as `sitecustomize` on the
# ranks' PYTHONPATH, patches the Trainer before the command runs.
_PLANT = """
import os
fault = os.environ.get("DGMKIT_TEST_FAULT")
if fault:
    import torch
    from dgmkit import distributed
    from dgmkit.training import trainer

    if fault == "nan":  # rank 1's third training loss is NaN
        objective, calls = trainer.Trainer._objective, [0]

        def nan_on_rank_one(self, x, beta, y):
            terms = objective(self, x, beta, y)
            calls[0] += self.model.training
            if distributed.current().rank == 1 and self.model.training and calls[0] == 3:
                return terms._replace(loss=terms.loss * float("nan"))
            return terms

        trainer.Trainer._objective = nan_on_rank_one
    elif fault == "die":  # rank 1 ends by SIGKILL (the out-of-memory killer's) before step DGMKIT_TEST_DIE_AT
        import signal

        step = trainer.Trainer._step

        def dying(self, *args, **kwargs):
            if distributed.current().rank == 1 and self.step == int(os.environ["DGMKIT_TEST_DIE_AT"]):
                os.kill(os.getpid(), signal.SIGKILL)
            return step(self, *args, **kwargs)

        trainer.Trainer._step = dying
    elif fault == "sigterm":  # SIGTERM to ranks, DGMKIT_TEST_TERM "RANK@STEP,RANK@save" (before the run's step STEP,
        import signal  # or as the checkpoint within the epoch is written, after the ranks' vote); a vote every step
        import time  # RANK@valid: as the first validation starts, which then takes 2.5 s, the watch's 1 s and more

        trainer.VOTE_SECONDS = 0.0
        items = (item.split("@") for item in os.environ["DGMKIT_TEST_TERM"].split(","))
        when = {int(rank): at for rank, at in items}.get(int(os.environ.get("RANK", -1)))  # (-1: torchrun itself)
        step, save, validate = trainer.Trainer._step, trainer.Trainer.save, trainer.Trainer.validate
        distributed.sigterm_unwinds.__wrapped__.__defaults__ = (1.0,)  # (the watch: 1 s)

        def signalled_validate(self, *args, **kwargs):
            if when == "valid" and self.epoch == 0:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(2.5)
            return validate(self, *args, **kwargs)

        trainer.Trainer.validate = signalled_validate

        def signalled_step(self, *args, **kwargs):
            if when is not None and when.partition("x")[0] == str(self.step):  # RANK@STEPx2: two, one after the other
                for _ in range(int(when.partition("x")[2] or 1)):
                    os.kill(os.getpid(), signal.SIGTERM)
            return step(self, *args, **kwargs)

        def signalled_save(self, *args, **kwargs):
            if when == "save" and self.steps_into_epoch:
                os.kill(os.getpid(), signal.SIGTERM)
            return save(self, *args, **kwargs)

        trainer.Trainer._step, trainer.Trainer.save = signalled_step, signalled_save
    elif fault == "budget":  # the time budget's clock counts the run's steps, twice as fast on rank 1; a vote every step
        from dgmkit.training.parts import TimeBudget

        trainer.VOTE_SECONDS = 0.0
        fit = trainer.Trainer.fit

        def fit_by_steps(self):
            if self.budget is not None:
                pace = 1 + distributed.current().rank
                self.budget = TimeBudget(self.budget.seconds, clock=lambda: float(self.step * pace))
            return fit(self)

        trainer.Trainer.fit = fit_by_steps
    elif fault == "slow_note":  # rank 0 takes 2 s to read the checkpoint for its last line (torchrun's SIGTERM comes)
        import time

        from dgmkit.cli import train

        kept = train._kept

        def slow_kept(cfg, out, ctx, any_rank=False):
            if ctx.rank == 0 and any_rank:
                time.sleep(2.0)
            return kept(cfg, out, ctx, any_rank)

        train._kept = slow_kept
    else:  # a parameter that the objective never uses
        init = trainer.Trainer.__init__

        def with_a_spare(self, model, *args, **kwargs):
            model.register_parameter("spare", torch.nn.Parameter(torch.zeros(3)))
            init(self, model, *args, **kwargs)

        trainer.Trainer.__init__ = with_a_spare
"""

_NPROC_ARGS = ["train", "--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--nproc", "2", "--device", "cpu"]


@pytest.mark.parametrize(
    "fault, message",
    [("nan", "the training loss became nan at epoch 1, step 3"), ("unused", "spare got none at step 1")],
)
def test_dgm_train_nproc_stops_on_a_fault_of_one_rank_with_one_line(fault, message, tmp_path, monkeypatch, capfd):
    """Every rank stops with the error and exit status 1 (no signal), and the user reads it once:
    no torchrun report, no traceback."""
    from dgmkit.cli.main import main

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_PLANT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("DGMKIT_TEST_FAULT", fault)
    assert main([*_NPROC_ARGS, "--epochs", "2", "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("dgm:")]
    assert len(errors) == 1 and errors[0].startswith("dgm: error: ") and message in errors[0], err
    for sign in ("Traceback", "SIGABRT", "terminate called", "ChildFailedError", "internal error"):
        assert sign not in err, err


def _proc(pid: int | str, what: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{what}", "rb") as f:
            return f.read()
    except OSError:  # gone meanwhile
        return b""


def _children(pid: int) -> list[int]:
    stats = {int(p): _proc(p, "stat") for p in os.listdir("/proc") if p.isdigit()}
    return [p for p, stat in stats.items() if stat and int(stat.rsplit(b")", 1)[1].split()[1]) == pid]


def _rank_of(pid: int) -> int | None:
    env = _proc(pid, "environ").split(b"\0")
    ranks = [e[5:] for e in env if e.startswith(b"RANK=")]
    return int(ranks[0]) if ranks else None


def _nproc_run_meeting(run: Path, event) -> tuple[int, str]:
    """``dgm train --nproc 2`` of many epochs into ``run``, ``event(pid)`` done to it once it trains
    (its first checkpoint written); its exit status and stderr."""
    cmd = [sys.executable, "-m", "dgmkit", *_NPROC_ARGS, "--epochs", "100000", "--out", str(run), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.safetensors").is_file():  # training is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        event(proc.pid)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks' processes in /proc")
def test_dgm_train_nproc_says_which_rank_was_killed_and_the_others_stop_in_one_line(tmp_path):
    """A rank ended by SIGKILL (as by the out-of-memory killer): the launcher names it and its
    signal; the other rank says that it lost contact (a user-facing error, exit 1), not a bug; the
    last line names the run's checkpoint and the command that resumes it."""
    _says_rank_1_was_killed(tmp_path / "run")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks' processes in /proc")
def test_dgm_train_nproc_names_the_checkpoint_where_torchrun_s_sigterm_comes_as_rank_0_reads_it(tmp_path, monkeypatch):
    """Rank 1 killed: rank 0 lost contact with it and reads the checkpoint for its line, slowly (as
    on a loaded machine), while torchrun's agent, which found rank 1 gone, sends it SIGTERM. That
    raised Terminated there, and rank 0 said 'interrupted (SIGTERM)' with no checkpoint: the
    launcher said only that rank 0 stopped with the run, not what the run keeps nor how it goes on."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_PLANT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("DGMKIT_TEST_FAULT", "slow_note")
    _says_rank_1_was_killed(tmp_path / "run")


def _says_rank_1_was_killed(run: Path) -> None:
    import signal

    from dgmkit._io import shell_path

    def kill_rank_1(pid: int) -> None:
        ranks = {_rank_of(p): p for launcher in _children(pid) for p in _children(launcher)}
        os.kill(ranks[1], signal.SIGKILL)

    code, err = _nproc_run_meeting(run, kill_rank_1)
    assert code == 1, err
    # the cause first; rank 0 noticed it in a collective (lost contact) or was ended by the launcher: not a cause
    lines = [line for line in err.splitlines() if line.startswith("dgm")]
    assert lines[:2] == ["dgm: error: the process of rank 1 was ended by SIGKILL", "dgm: note: rank 0 stopped with the run"]
    assert len(lines) == 3 and lines[2].startswith("dgm: note: the run's last checkpoint (after epoch "), err
    assert lines[2].endswith(f") is kept: go on with: dgm train --resume --nproc 2 --out {shell_path(run)}")
    assert "pair.cc" not in err and "lost contact" not in err, err
    for sign in ("Traceback", "internal error", "ChildFailedError"):
        assert sign not in err, err


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks' processes in /proc")
def test_dgm_train_nproc_says_a_sigterm_to_one_rank_alone_interrupted_the_run_and_names_that_rank(tmp_path):
    """A SIGTERM sent to rank 1 alone (a scheduler's, ``kill PID``) stops every rank after a step
    with a checkpoint, each ended by the signal: the launcher says the run was interrupted, by a
    SIGTERM sent to rank 1, with the checkpoint and the command that resumes it, in one line, and
    ends with the shell's status of SIGTERM. It said 'the process of rank 0 was ended by SIGTERM',
    and the same of rank 1, and exited with status 1, as for a failure."""
    import signal

    from dgmkit._io import shell_path

    def term_rank_1(pid: int) -> None:
        ranks = {_rank_of(p): p for launcher in _children(pid) for p in _children(launcher)}
        os.kill(ranks[1], signal.SIGTERM)

    code, err = _nproc_run_meeting(tmp_path / "run", term_rank_1)
    assert code == 128 + signal.SIGTERM, err
    said = [line for line in err.splitlines() if line.startswith("dgm")]
    assert len(said) == 1 and said[0].startswith("dgm: interrupted (SIGTERM, sent to rank 1); the run's last "), err
    assert said[0].endswith(f") is kept: go on with: dgm train --resume --nproc 2 --out {shell_path(tmp_path / 'run')}"), err
    assert "ended by" not in err and "Traceback" not in err, err


def test_a_rank_killed_under_torchrun_leaves_a_survivor_that_names_the_command_which_resumes_the_run(tmp_path, monkeypatch):
    """Rank 1 killed in epoch 2 (SIGKILL): rank 0 lost contact with it (or was ended by torchrun's
    SIGTERM first) and said only that, in a line without the checkpoint or the command; the
    command it names now goes on from epoch 1's checkpoint and ends where an uninterrupted run ends."""
    from dgmkit._io import shell_path
    from dgmkit.cli.main import main

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_PLANT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("DGMKIT_TEST_FAULT", "die")
    monkeypatch.setenv("DGMKIT_TEST_DIE_AT", "23")  # (19 steps an epoch: the 5th of epoch 2)
    base = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "3", "--device", "cpu", "--batch-size", "64",
            "--epochs", "2", "--quiet"]  # fmt: skip
    run, straight = tmp_path / "run", tmp_path / "straight"
    p = _torchrun([*base, "--out", str(run)], 2)
    assert p.returncode != 0
    said = [line for line in p.stderr.splitlines() if line.startswith("dgm:")]  # (rank 0's; rank 1 says nothing)
    command = f"dgm train --resume --nproc 2 --out {shell_path(run)}"
    assert len(said) == 1 and said[0].endswith(f"the run's last checkpoint (after epoch 1) is kept: go on with: {command}")
    assert said[0].startswith(("dgm: error: rank 0 lost contact with another process", "dgm: interrupted (SIGTERM); ")), said
    monkeypatch.delenv("DGMKIT_TEST_FAULT")
    assert main([*command.split()[1:], "--quiet"]) == 0
    assert _torchrun([*base, "--out", str(straight)], 2).returncode == 0
    a, b = _weights(straight), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = [[{k: v for k, v in json.loads(line).items() if k not in ("time_s", "images_per_s")}
              for line in (r / "metrics.jsonl").read_text().splitlines()] for r in (run, straight)]  # fmt: skip
    assert lines[0] == lines[1] and len(lines[0]) == 2


def _planted(monkeypatch, tmp_path, fault: str) -> None:
    """The ranks that torchrun or ``dgm train --nproc`` starts from here get ``fault`` (``_PLANT``)."""
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "sitecustomize.py").write_text(_PLANT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("DGMKIT_TEST_FAULT", fault)


def _counters(checkpoint: Path) -> dict:
    from dgmkit.training.checkpoint import read_metadata

    return json.loads(read_metadata(checkpoint)["trainer"])


def _metrics_lines(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if k not in ("time_s", "images_per_s")} for m in lines]


_VAE = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "3", "--device", "cpu", "--batch-size", "64",
        "--epochs", "2", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def straight_vae(tmp_path_factory) -> Path:
    """The VAE's 2 epochs on 2 processes, uninterrupted."""
    run = tmp_path_factory.mktemp("straight") / "run"
    p = _torchrun([*_VAE, "--out", str(run)], 2)
    assert p.returncode == 0, p.stderr[-3000:]
    return run


@pytest.mark.parametrize(
    "term",
    ["1@23", "0@23,1@save", "0@23x2,1@23x2"],
    ids=["to-one-rank", "to-each-rank-at-a-moment-of-its-own", "twice-to-each-rank-as-torchrun-passes-one-on"],
)
def test_a_sigterm_within_an_epoch_stops_every_rank_after_one_step_and_the_run_resumes_bit_for_bit(
    term, straight_vae, tmp_path, monkeypatch
):
    """Sent before the run's step 24 (19 steps an epoch: epoch 2's 5th) to rank 1 alone, or to rank 0
    then to rank 1 while the checkpoint is written (as torchrun passes one on, rank by rank), or twice
    to each rank at once (one that a scheduler, systemd or ``timeout`` sent every process, which
    torchrun's agent passes on too; the second ended the ranks at once, with no checkpoint): every
    rank stops after that step, one checkpoint holds the place and every rank's random streams
    (each draws its own noise: a VAE's z), every rank ends by the signal, rank 0 names the place and
    the command, and that command on as many processes ends bit for bit as the uninterrupted run."""
    from dgmkit._io import shell_path
    from dgmkit.cli.main import main

    _planted(monkeypatch, tmp_path, "sigterm")
    monkeypatch.setenv("DGMKIT_TEST_TERM", term)
    run = tmp_path / "run"
    p = _torchrun([*_VAE, "--out", str(run)], 2)
    assert p.returncode != 0 and p.stderr.count("Signal 15 (SIGTERM)") == 2, p.stderr[-3000:]  # (each rank ended by it)
    command = f"dgm train --resume --nproc 2 --out {shell_path(run)}"
    said = [line for line in p.stderr.splitlines() if line.startswith("dgm:")]
    assert said == [f"dgm: interrupted (SIGTERM); the run's last checkpoint (in epoch 2 after step 5) is kept: go on with: "
                    f"{command}"], p.stderr[-3000:]  # fmt: skip
    t = _counters(run / "checkpoint.safetensors")
    assert (t["epoch"], t["step"], t["epoch_progress"]["step"], t["processes"]) == (1, 24, 5, 2)
    assert len(_metrics_lines(run)) == 1
    monkeypatch.delenv("DGMKIT_TEST_FAULT")
    assert main(command.split()[1:]) == 0
    a, b = _weights_and_state(straight_vae), _weights_and_state(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics_lines(run) == _metrics_lines(straight_vae)


def test_a_time_budget_that_runs_out_within_an_epoch_stops_every_rank_after_one_step_and_the_run_resumes_bit_for_bit(
    straight_vae, tmp_path, monkeypatch
):
    """A budget of 23.5 s on a clock that counts the run's steps (rank 1's twice as fast, which
    would stop it in epoch 1: rank 0's clock decides) runs out in the run's step 24 (19 steps an
    epoch: epoch 2's 5th): every rank stops after that step (data-parallel ranks stopped for the
    budget only at an epoch's end, and trained the 2 epochs), one checkpoint holds the place and
    every rank's random streams, rank 0 names it and the command, which ends bit for bit as the
    uninterrupted run on as many processes."""
    from dgmkit._io import shell_path
    from dgmkit.cli.main import main

    _planted(monkeypatch, tmp_path, "budget")
    run = tmp_path / "run"
    p = _torchrun([*_VAE, "--time-budget", "23.5", "--out", str(run)], 2)
    assert p.returncode == 0, p.stderr[-3000:]
    command = f"dgm train --resume --nproc 2 --out {shell_path(run)}"
    said = [line for line in p.stdout.splitlines() if "--time-budget" in line]
    assert said == [f"stopped by --time-budget (23.5 s) in epoch 2 after step 5 of 19, with a checkpoint; go on with: "
                    f"{command}"], p.stdout[-3000:]  # fmt: skip
    t = _counters(run / "checkpoint.safetensors")
    assert (t["epoch"], t["step"], t["epoch_progress"]["step"], t["processes"]) == (1, 24, 5, 2)
    assert len(t["epoch_progress"]["rank_sums"]) == 2 and len(_metrics_lines(run)) == 1
    monkeypatch.delenv("DGMKIT_TEST_FAULT")
    assert main(command.split()[1:]) == 0
    a, b = _weights_and_state(straight_vae), _weights_and_state(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics_lines(run) == _metrics_lines(straight_vae)


def test_a_sigterm_during_a_validation_longer_than_the_watch_stops_every_rank_before_the_diagnostics(tmp_path, monkeypatch):
    """Sent to rank 1 as epoch 1's validation starts, which takes longer than the watch's seconds
    (lowered to 1 s): the ranks stop at their vote before the diagnostics, as one process does, with
    a checkpoint after the epoch's last step. The watch counted from the signal: it ended rank 1
    mid-validation ('had not stopped 1 s after SIGTERM'), rank 0 lost contact with it, and epoch 1,
    trained, was lost."""
    from dgmkit._io import shell_path

    _planted(monkeypatch, tmp_path, "sigterm")
    monkeypatch.setenv("DGMKIT_TEST_TERM", "1@valid")
    run = tmp_path / "run"
    p = _torchrun([*_VAE, "--out", str(run)], 2)
    assert p.stderr.count("Signal 15 (SIGTERM)") == 2 and "had not stopped" not in p.stderr, p.stderr[-3000:]
    said = [line for line in p.stderr.splitlines() if line.startswith("dgm:")]
    assert said == ["dgm: interrupted (SIGTERM); the run's last checkpoint (in epoch 1 after step 19) is kept: go on "
                    f"with: dgm train --resume --nproc 2 --out {shell_path(run)}"], p.stderr[-3000:]  # fmt: skip
    t = _counters(run / "checkpoint.safetensors")
    assert (t["epoch"], t["epoch_progress"]["step"]) == (0, 19) and not (run / "metrics.jsonl").exists()


def _weights_and_state(run: Path) -> dict:
    """A checkpoint's tensors: the weights, the optimizer's state and every rank's random streams."""
    from safetensors.torch import load_file

    tensors = load_file(str(run / "checkpoint.safetensors"))
    assert any(k.startswith("model/") for k in tensors) and "rng/torch_ranks" in tensors
    return tensors


def test_an_in_epoch_checkpoint_of_two_processes_goes_on_in_one_from_its_step_noted(tmp_path, monkeypatch, capsys):
    """A run of another number of processes goes on from the place (global batches: the same on any
    number), noted as not bit for bit; the objective of the MADE case draws no noise of the ranks', so
    the run ends where one process ends, up to rounding, its epoch's loss the sum over both ranks'
    steps before the stop (rank 0's alone was 13% off)."""
    from dgmkit.cli.main import main

    base = ["train", "--dataset", "digits", "--model", "arm", "--arm", "made", "--made-hidden", "32", "--device", "cpu",
            "--batch-size", "64", "--epochs", "2", "--quiet"]  # fmt: skip
    run, single = tmp_path / "run", tmp_path / "single"
    _planted(monkeypatch, tmp_path, "sigterm")
    monkeypatch.setenv("DGMKIT_TEST_TERM", "1@23")
    p = _torchrun([*base, "--out", str(run)], 2)
    assert p.returncode != 0 and "checkpoint (in epoch 2 after step 5) is kept" in p.stderr, p.stderr[-3000:]
    monkeypatch.delenv("DGMKIT_TEST_FAULT")
    capsys.readouterr()
    assert main([*base[:-1], "--resume", "--out", str(run)]) == 0
    said = capsys.readouterr().out
    assert f"resuming {run} in epoch 2 after step 5" in said and "trained in 2 processes and goes on in 1" in said, said
    assert main([*base, "--out", str(single)]) == 0
    a, b = _weights(run), _weights(single)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5, msg=k)
    losses = [[m["train_loss"] for m in _metrics_lines(r)] for r in (run, single)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


_NOTE = "the run's last checkpoint (after epoch 3) is kept: go on with: dgm train --resume --nproc 2 --out r"
_LOST = "dgm: error: rank {} lost contact with another process of this run, which stopped: Connection closed; " + _NOTE


@pytest.mark.parametrize(
    "codes, lines, said",
    [  # rank 1 killed, rank 0 ended by the launcher's SIGTERM: its line, left to the launcher, said last
        ({0: -15, 1: -9}, [f"dgm: interrupted (SIGTERM); {_NOTE}", "dgm: interrupted (SIGTERM)"],
         ["dgm: error: the process of rank 1 was ended by SIGKILL", "dgm: note: rank 0 stopped with the run",
          f"dgm: note: {_NOTE}"]),
        # rank 1 failed with an error of its own: resuming is not offered
        ({0: -15, 1: 1}, [f"dgm: interrupted (SIGTERM); {_NOTE}", "dgm: error: the data went away"],
         ["dgm: error (rank 1): the data went away", "dgm: note: rank 0 stopped with the run"]),
        # every rank only lost contact: rank 0's line, which names the command, once
        ({0: 1, 1: 1}, [_LOST.format(0), _LOST.format(1)], [_LOST.format(0)]),
    ],
)  # fmt: skip
def test_the_launcher_says_what_an_interrupted_run_keeps_last_and_not_after_an_error(codes, lines, said, tmp_path, capsys):
    from types import SimpleNamespace

    from dgmkit.cli.launch import report

    for rank, line in enumerate(lines):
        (tmp_path / f"rank-{rank}.txt").write_text(line + "\n")
    report({r: SimpleNamespace(exitcode=c) for r, c in codes.items()}, tmp_path)
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("dgm")] == said


def test_a_rank_held_in_a_collective_when_sent_sigterm_is_ended_by_the_watch(tmp_path):
    """A SIGTERM unwinds a rank where Python can run its handler; the main thread held in C++ (here a
    store's wait, as a collective whose peer is stuck) cannot, and the watch ends the rank (status 143)."""
    script = (
        "import datetime, os, signal, threading\n"
        "import torch.distributed as dist\n"
        "from dgmkit import distributed\n"
        "store = dist.TCPStore('127.0.0.1', 0, 1, True)\n"
        "with distributed.sigterm_unwinds(seconds=1):\n"
        "    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()\n"
        "    store.wait(['never'], datetime.timedelta(seconds=60))\n"
    )
    env = {**os.environ, "RANK": "1", "OMP_NUM_THREADS": "1"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 143 and time.monotonic() - t < 30, p.stderr
    assert "dgm: note: rank 1 had not stopped 1 s after SIGTERM: ended" in p.stderr, p.stderr


def _run_script(script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RANK": "1", "OMP_NUM_THREADS": "1"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_the_sigterm_watch_is_not_set_off_by_a_forked_childs_sigterm_nor_where_the_caller_handles_it():
    """A child forked within ``sigterm_unwinds`` (a data loader's worker) shared the rank's signal
    wakeup socket: a SIGTERM to the child alone set off the rank's watch, which ended the rank. A
    SIGTERM handler of the caller's is left to it, without the watch (it ended the rank too), and so
    is a wakeup fd another set; the rank's own wakeup fd is gone once the block ends."""
    script = (
        "import os, signal, socket, time\n"
        "from dgmkit import distributed\n"
        "with distributed.sigterm_unwinds(seconds=0.3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        os._exit(0)\n"
        "    assert os.waitpid(pid, 0)[1] == signal.SIGTERM\n"
        "    time.sleep(1.5)\n"
        "assert signal.set_wakeup_fd(-1) == -1\n"
        "got = []\n"
        "signal.signal(signal.SIGTERM, lambda s, f: got.append(s))\n"
        "with distributed.sigterm_unwinds(seconds=0.3):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(1.5)\n"
        "assert got == [signal.SIGTERM] and signal.set_wakeup_fd(-1) == -1, got\n"
        "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
        "a, b = socket.socketpair()\n"
        "a.setblocking(False)\n"
        "signal.set_wakeup_fd(a.fileno())\n"
        "with distributed.sigterm_unwinds(seconds=0.3):\n"
        "    assert signal.set_wakeup_fd(a.fileno()) == a.fileno()\n"
        "assert signal.set_wakeup_fd(-1) == a.fileno()\n"
        "print('alive', flush=True)\n"
    )
    p = _run_script(script)
    assert p.returncode == 0 and p.stdout == "alive\n", p.stdout + p.stderr
    assert "had not stopped" not in p.stderr, p.stderr


def test_a_sigterm_after_the_one_the_watch_heard_is_not_reported_as_a_broken_wakeup_socket():
    """A fit holds SIGTERM back with a handler of its own (here a lambda), so a rank hears a second
    one (torchrun's agent passing on one that every process got): the watch had closed its end of
    the wakeup socket, and Python printed 'Exception ignored when trying to write to the signal
    wakeup fd: BrokenPipeError'. Held (``sigterm_held``), the watch waits; then it ends the rank."""
    script = (
        "import os, signal, time\n"
        "from dgmkit import distributed\n"
        "with distributed.sigterm_unwinds(seconds=0.3):\n"
        "    signal.signal(signal.SIGTERM, lambda s, f: None)\n"
        "    with distributed.sigterm_held():\n"
        "        for _ in range(2):\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "            time.sleep(0.5)\n"
        "        print('held', flush=True)\n"
        "    time.sleep(5)\n"
    )
    p = _run_script(script)
    assert p.returncode == 143 and p.stdout == "held\n", p.stdout + p.stderr
    assert p.stderr == "dgm: note: rank 1 had not stopped 0.3 s after SIGTERM: ended\n", p.stderr


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks' processes in /proc")
def test_a_launcher_killed_outright_takes_its_ranks_with_it(tmp_path):
    """The launcher ended by SIGKILL (the out-of-memory killer's): its ranks trained on, orphaned,
    and dgm train said that the processes had been interrupted while starting."""
    import signal

    ranks: list[int] = []

    folders: list[Path] = []

    def kill_the_launcher(pid: int) -> None:
        launchers = _children(pid)
        ranks.extend(p for launcher in launchers for p in _children(launcher))
        assert len(launchers) == 1 and len(ranks) == 2
        env = [e for e in _proc(ranks[0], "environ").split(b"\0") if e.startswith(b"DGMKIT_RANK_ERRORS=")]
        folders.append(Path(os.fsdecode(env[0].split(b"=", 1)[1])))
        assert folders[0].is_dir()
        os.kill(launchers[0], signal.SIGKILL)

    code, err = _nproc_run_meeting(tmp_path / "run", kill_the_launcher)
    assert code == 128 + signal.SIGKILL, err
    assert "dgm: interrupted (SIGKILL): the processes' launcher was ended before it could say so" in err, err
    deadline = time.monotonic() + 30
    while running := [p for p in ranks if _proc(p, "stat") and _proc(p, "stat").rsplit(b")", 1)[1].split()[0] != b"Z"]:
        assert time.monotonic() < deadline, running
        time.sleep(0.2)
    assert not folders[0].exists()  # the launcher's folder, which it could not remove: not left in the temporary folder


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks' processes in /proc")
def test_dgm_train_nproc_killed_outright_takes_its_launcher_and_ranks_with_it(tmp_path):
    """``dgm train --nproc 2``'s own process ended by SIGKILL (the out-of-memory killer's, ``kill
    -9``): its launcher and both ranks trained on, orphaned, writing and locking the run folder."""
    import signal

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "dgmkit", *_NPROC_ARGS, "--epochs", "100000", "--out", str(run), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    launched: list[int] = []

    def alive() -> list[int]:
        return [p for p in launched if _proc(p, "stat") and _proc(p, "stat").rsplit(b")", 1)[1].split()[0] != b"Z"]

    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").is_file():  # training is under way
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        launched.extend(p for launcher in _children(proc.pid) for p in [launcher, *_children(launcher)])
        assert len(launched) == 3
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while alive():
            assert time.monotonic() < deadline, alive()
            time.sleep(0.2)
    finally:
        for p in alive():  # (left running where they did not end: not left behind by the test)
            os.kill(p, signal.SIGKILL)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks' processes in /proc")
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_to_dgm_train_nproc_alone_stops_the_launcher_and_every_rank(tmp_path, name):
    """A SIGTERM (a scheduler's, ``kill PID``) or SIGINT sent to ``dgm train --nproc N``'s own
    process, not to its group: the launcher and the ranks left running on, orphaned, with the
    run folder locked, after the command had ended."""
    import signal

    launched: list[int] = []

    def signal_the_command(pid: int) -> None:
        launched.extend(p for launcher in _children(pid) for p in [launcher, *_children(launcher)])
        assert len(launched) == 3
        os.kill(pid, getattr(signal, name))

    code, err = _nproc_run_meeting(tmp_path / "run", signal_the_command)
    assert code == 128 + getattr(signal, name), err  # (the shell's status: SIGTERM's was 130, SIGINT's)
    assert f"dgm: interrupted ({name}); the processes were stopped" in err and "Traceback" not in err, err
    # the run's checkpoint and the command that resumes it: rank 0's line (SIGINT) or the launcher's (SIGTERM, the last),
    # which names its place (a SIGTERM stops the ranks after a step, mostly within an epoch)
    said = [line for line in err.splitlines() if "the run's last checkpoint (" in line]
    assert len(said) == 1 and "is kept: go on with: dgm train --resume --nproc 2 --out " in said[0], err
    t = _counters(tmp_path / "run" / "checkpoint.safetensors")
    epoch, k = t["epoch"], (t.get("epoch_progress") or {}).get("step", 0)
    assert f"checkpoint ({f'in epoch {epoch + 1} after step {k}' if k else f'after epoch {epoch}'})" in said[0], err
    if name == "SIGTERM":
        assert err.rstrip().splitlines()[-1] == said[0] and said[0].startswith("dgm: interrupted (SIGTERM); the proc"), err
    assert "death signal" not in err, err  # the agent's own log line is left out
    deadline = time.monotonic() + 30
    while any(_proc(p, "stat") for p in launched):
        assert time.monotonic() < deadline, [p for p in launched if _proc(p, "stat")]
        time.sleep(0.2)


@pytest.mark.parametrize(
    "codes, said, status, lines",
    [
        ({0: -15, 1: -9}, ["the process of rank 1 was ended by SIGKILL", "note: rank 0 stopped with the run"], 1, ()),
        ({0: 1, 1: -15}, ["note: rank 1 stopped with the run", "dgm: error (rank 1): the other line"], 1, ()),
        ({0: -15, 1: -15}, ["rank 0 was ended by SIGTERM", "rank 1 was ended by SIGTERM"], 1, ()),  # ended from outside
        ({1: 2}, [], 2, ()),
        # rank 1 ended from outside, rank 0 lost contact with it: rank 1 is the cause, said first
        ({0: 1, 1: -15}, ["the process of rank 1 was ended by SIGTERM", "note: rank 0 stopped with the run"], 1, ("lost",)),
        # an interrupt of rank 1 alone: said by the launcher, for rank 1
        ({0: 1, 1: 130}, ["dgm (rank 1): interrupted", "note: rank 0 stopped with the run"], 130, ("lost", "interrupted")),
        ({0: 1, 1: 1}, ["rank 0 lost contact with another process"], 1, ("lost", "lost")),  # nothing else: what they saw
        # a rank that failed without a line: named by its status (only the note was said)
        ({0: 1, 1: 2}, ["rank 1 exited with status 2 and no message", "note: rank 0 stopped with the run"], 2, ("lost",)),
    ],
)
def test_the_launcher_names_causes_not_the_ranks_it_stopped(codes, said, status, lines, tmp_path, capsys):
    from types import SimpleNamespace

    from dgmkit.cli.launch import report

    words = {
        "lost": "dgm: error: rank {} lost contact with another process of this run, which stopped: Connection closed",
        "interrupted": "dgm: interrupted",
    }
    (tmp_path / "rank-0.txt").write_text("dgm: error: the line\n")
    (tmp_path / "rank-1.txt").write_text("dgm: error: the other line\n" if codes.get(0) == 1 else "dgm: error: the line\n")
    for rank in range(2 if lines else 0):  # the lines of this case, or none
        (tmp_path / f"rank-{rank}.txt").unlink()
        if rank < len(lines):
            (tmp_path / f"rank-{rank}.txt").write_text(words[lines[rank]].format(rank) + "\n")
    assert report({r: SimpleNamespace(exitcode=c) for r, c in codes.items()}, tmp_path) == status
    err = capsys.readouterr().err
    for s in said:
        assert s in err, err
    assert [line for line in err.splitlines() if line.startswith("dgm")] == sorted(
        (line for line in err.splitlines() if line.startswith("dgm")), key=lambda line: "note:" in line
    )  # the causes first
    if codes.get(0) != 1:
        assert "the line" not in err  # rank 1's line is rank 0's, which rank 0 has said: not repeated
    if codes.get(0) == -15 and codes.get(1) == -9:
        assert "rank 0 was ended" not in err
    if lines and said[0] != "rank 0 lost contact with another process":
        assert "lost contact" not in err  # a rank that lost contact with the cause stopped with the run


_TERM = f"dgm: interrupted (SIGTERM); {_NOTE}"


@pytest.mark.parametrize(
    "codes, lines, sent, said, status",
    [  # a SIGTERM to rank 1 alone (kill PID): every rank stopped after a step, with a checkpoint, and ended by it
        ({0: -15, 1: -15}, [_TERM, _TERM], [1], [f"dgm: interrupted (SIGTERM, sent to rank 1); {_NOTE}"], 143),
        ({0: -15, 1: -15}, [_TERM, _TERM], [0, 1], [f"dgm: interrupted (SIGTERM, sent to ranks 0, 1); {_NOTE}"], 143),
        ({0: -15, 1: -15}, [_TERM, _TERM], [], [_TERM], 143),  # (no rank left word: which is not known)
        # rank 1 ended by its watch (status 143, no line): interrupted too
        ({0: -15, 1: 143}, [_TERM], [1], [f"dgm: interrupted (SIGTERM, sent to rank 1); {_NOTE}"], 143),
        ({1: -15}, [None, "dgm: interrupted (SIGTERM)"], [1], ["dgm: interrupted (SIGTERM, sent to rank 1)"], 143),
        # a cause of another kind: said as before, a rank sent SIGTERM named as ended by it
        ({0: -15, 1: -9}, [_TERM], [0], ["dgm: error: the process of rank 1 was ended by SIGKILL",
                                         "dgm: note: rank 0 stopped with the run", f"dgm: note: {_NOTE}"], 1),
        ({0: -15, 1: 1}, [_TERM, "dgm: error: the data went away"], [0],
         ["dgm: error (rank 1): the data went away", "dgm: note: rank 0 stopped with the run"], 1),
        ({0: 1, 1: -15}, [_LOST.format(0), _TERM], [1],
         ["dgm: error: the process of rank 1 was ended by SIGTERM", "dgm: note: rank 0 stopped with the run",
          f"dgm: note: {_NOTE}"], 1),
        ({0: -15, 1: -15}, ["dgm: error: the line", "dgm: error: the line"], [1],
         [f"dgm: error: the process of rank {r} was ended by SIGTERM" for r in (0, 1)], 1),
    ],
)  # fmt: skip
def test_the_launcher_says_a_sigterm_sent_to_a_rank_alone_interrupted_the_run_and_names_the_rank(
    codes, lines, sent, said, status, tmp_path, capsys
):
    """Every failed rank ended by SIGTERM (or its watch's status 143) with no line or dgm's
    'interrupted (SIGTERM)' one: the run was interrupted, and can go on, not failed; the launcher
    says so in one line with the ranks that were sent it (the files they left,
    ``mark_sent_sigterm``) and what the run keeps, and ends with status 143. It said each rank
    'was ended by SIGTERM' and exited with status 1."""
    from types import SimpleNamespace

    from dgmkit.cli.launch import report

    for rank, line in enumerate(lines):
        if line is not None:
            (tmp_path / f"rank-{rank}.txt").write_text(line + "\n")
    for rank in sent:
        (tmp_path / f"rank-{rank}.sigterm").touch()
    assert report({r: SimpleNamespace(exitcode=c) for r, c in codes.items()}, tmp_path) == status
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("dgm")] == said


def test_a_rank_leaves_word_that_it_was_sent_the_sigterm_under_the_launcher_alone(tmp_path, monkeypatch):
    """``mark_sent_sigterm`` leaves the file that ``report`` reads, in the launcher's folder of this
    run, and nothing where the rank is not under the launcher; a fit clears the rank's flag."""
    from dgmkit import distributed
    from dgmkit.cli.launch import _RUN_ENV, RANK_ERRORS_ENV, mark_sent_sigterm

    monkeypatch.delenv(RANK_ERRORS_ENV, raising=False)
    mark_sent_sigterm(1)  # (not under the launcher: nothing, and no error)
    monkeypatch.setenv(RANK_ERRORS_ENV, str(tmp_path))
    monkeypatch.setenv(_RUN_ENV, "run")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run")
    mark_sent_sigterm(1)
    mark_sent_sigterm(1)  # (twice: the same word)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank-1.sigterm"]
    try:
        assert distributed.sigterm_sent(True) and distributed.sigterm_sent()
        assert not distributed.sigterm_sent(False) and not distributed.sigterm_sent()
    finally:
        distributed.sigterm_sent(False)


def test_the_launcher_names_a_signal_python_has_no_name_for_by_its_number(tmp_path, capsys):
    from types import SimpleNamespace

    from dgmkit.cli.launch import report

    assert report({0: SimpleNamespace(exitcode=-15), 1: SimpleNamespace(exitcode=-99)}, tmp_path) == 1
    err = capsys.readouterr().err
    assert "dgm: error: the process of rank 1 was ended by signal 99\n" in err
    assert "note: rank 0 stopped with the run" in err  # (SIGTERM after a cause: the launcher's agent ended it)


@pytest.mark.parametrize(
    "env, said",
    [
        ({"WORLD_SIZE": "\u00b2"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "2", "RANK": "abc", "LOCAL_RANK": "0"}, "RANK ('abc') is not a rank from 0 to WORLD_SIZE - 1 (1)"),
        ({"WORLD_SIZE": "2", "RANK": "5", "LOCAL_RANK": "0"}, "RANK ('5') is not a rank"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "-1"}, "LOCAL_RANK ('-1') is not a rank"),
    ],
)
def test_a_bad_torchrun_environment_is_refused_in_one_line(env, said, monkeypatch, capsys):
    from dgmkit.cli.main import main

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(os, "_exit", lambda status: (_ for _ in ()).throw(SystemExit(status)))
    try:
        status = main(["eval", "no-such-run"])  # refused before it is a rank
    except SystemExit as e:  # a rank process ends with its status
        status = e.code
    assert status == 1
    err = capsys.readouterr().err
    assert err.count("dgm: error:") == 1 and said in err, err


@pytest.mark.parametrize("command", ["report", "sample"])
def test_a_command_of_one_process_is_refused_under_torchrun_before_it_joins(command, monkeypatch, capsys, tmp_path):
    from dgmkit.cli.main import main

    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.delenv("DGMKIT_RANK_ERRORS", raising=False)
    monkeypatch.setattr(os, "_exit", lambda status: (_ for _ in ()).throw(SystemExit(status)))
    out = tmp_path / ("r.html" if command == "report" else "s.png")
    try:
        status = main([command, str(tmp_path / "run"), "--out", str(out)])
    except SystemExit as e:  # a rank process ends with its status
        status = e.code
    assert status == 1 and not dist.is_initialized() and not out.exists()
    err = capsys.readouterr().err
    assert err == f"dgm: error: dgm {command} runs in one process; only train and eval run under torchrun\n"


def test_kl_warm_up_continues_where_it_was_when_a_run_resumes_on_more_processes(tmp_path):
    """1197 training digits in batches of 299: 4 steps an epoch, and 3 on 2 processes (the last
    row cannot be shared); the warm-up followed the steps taken and jumped to 0.35, 0.45."""
    from dgmkit.cli.main import main

    base = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "3", "--device", "cpu", "--batch-size", "299"]
    base += ["--warmup", "10", "--quiet"]
    run = tmp_path / "r"
    assert main([*base, "--epochs", "2", "--out", str(run)]) == 0
    p = _torchrun([*base, "--epochs", "4", "--resume", "--out", str(run)], 2)
    assert p.returncode == 0, p.stderr[-3000:]
    betas = [json.loads(line)["beta"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert betas == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_a_rank_ending_at_once_saves_a_running_coverage_measurement_and_keeps_it_running(monkeypatch):
    """A rank exits with os._exit, which skips coverage.py's save at exit (`make coverage` read the
    data-parallel modules as 21% covered): end_process saves the measurement that is running, and
    leaves it running (a test that calls end_process in the measured process goes on measured)."""
    import types

    calls = []

    class Measurement:
        def save(self):
            calls.append("save")

        def stop(self):
            calls.append("stop")

    fake = types.ModuleType("coverage")
    fake.Coverage = types.SimpleNamespace(current=Measurement)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "coverage", fake)
    monkeypatch.setattr(os, "_exit", lambda status: calls.append(status))
    dd.end_process(3)
    assert calls == ["save", 3]
    monkeypatch.delitem(sys.modules, "coverage")
    dd.end_process(0)  # no coverage.py loaded: nothing imported, nothing saved
    assert calls == ["save", 3, 0] and "coverage" not in sys.modules


def test_a_rank_that_cannot_leave_its_process_group_still_ends_with_its_status():
    """Under torch 2.6 a gloo rank whose peers had already exited waited in destroy_process_group
    for ever (benchmarks/min_torch.out): end_process waits LEAVE_SECONDS for it, says so, and exits."""
    script = (
        "import time\nimport dgmkit.distributed as d\n"
        "d.LEAVE_SECONDS = 0.5\nd.shutdown = lambda: time.sleep(600)\nd.end_process(3)\n"
    )
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and time.monotonic() - t0 < 60, done.stderr
    assert "could not leave the process group: still waiting after 0.5 s (its peers had ended)" in done.stderr


def test_a_stranded_run_resumed_on_n_processes_is_said_to_start_again_once(tmp_path, capsys, monkeypatch):
    """``--resume --nproc 2`` of a run that stopped before its first checkpoint said "starting it
    again from its beginning" twice: in the process that launches the ranks and in rank 0. The
    launching process leaves it to rank 0 (stubbed here), which trains."""
    from dgmkit.cli import train as train_cli
    from dgmkit.cli.main import main

    out = tmp_path / "st"
    assert main(["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet",
                 "--out", str(out)]) == 0  # fmt: skip
    for name in ("checkpoint.safetensors", "best.safetensors"):  # (as a run killed in its first epoch leaves it)
        (out / name).unlink()
    (out / "metrics.jsonl").write_text("")
    capsys.readouterr()
    started = []
    monkeypatch.setattr(train_cli, "_launch", lambda args: started.append(args.nproc) or 0)
    assert main(["train", "--resume", "--nproc", "2", "--out", str(out)]) == 0
    assert started == [2] and "starting it again" not in capsys.readouterr().out
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0  # (in one process: said by it)
    assert "starting it again from its beginning" in capsys.readouterr().out


def test_a_checkpoint_with_a_malformed_random_state_of_another_rank_is_refused_alike_on_every_rank():
    """A checkpoint of 2 processes whose rank 1 random state torch cannot take (its digest made
    again: a damaged or crafted file) is refused as a checkpoint on both ranks, before either
    trains: rank 1 alone failed, in torch's set_state, and said so as a bug of dgmkit (status 2)
    after rank 0 had said it was resuming."""
    from types import SimpleNamespace

    from dgmkit.errors import CheckpointError
    from dgmkit.training.trainer import Trainer

    good = torch.Generator().manual_seed(0).get_state()
    for bad in (torch.zeros_like(good), torch.full_like(good, 255)):  # the right size, and no state of mt19937
        rng = {"torch": good, "torch_ranks": torch.stack([good, bad])}
        for rank in (0, 1):
            fake = SimpleNamespace(
                device=torch.device("cpu"), epoch=1, _rank_seed=lambda e: 12345,
                dist=SimpleNamespace(world_size=2, rank=rank, is_main=rank == 0),
            )  # fmt: skip
            with pytest.raises(CheckpointError, match="c.safetensors holds malformed random states of its ranks"):
                Trainer._rank_states(fake, rng, Path("c.safetensors"))
    rng = {"torch": good, "torch_ranks": torch.stack([good, torch.Generator().manual_seed(1).get_state()])}
    fake.dist = SimpleNamespace(world_size=3, rank=1, is_main=False)  # another number of processes: not read
    assert not torch.equal(Trainer._rank_states(fake, rng, Path("c.safetensors"))[0], rng["torch_ranks"][1])
    fake.dist = SimpleNamespace(world_size=2, rank=1, is_main=False)
    assert torch.equal(Trainer._rank_states(fake, rng, Path("c.safetensors"))[0], rng["torch_ranks"][1])


@pytest.mark.parametrize("codes, lost", [({0: 141, 1: -15}, False), ({0: 141, 1: 1}, True), ({0: -15, 1: 141}, False)])
def test_a_rank_whose_output_reader_went_away_ends_the_run_quietly_as_one_process_does(codes, lost, tmp_path, capsys):
    """``dgm train --nproc 2 ... | head -3``: rank 0's stdout is closed, it stops quietly with
    status 141 as one process does, and the others stop with it. The launcher said "error: the
    process of rank 0 exited with status 141 and no message" and "rank 1 stopped with the run";
    one process says nothing."""
    from types import SimpleNamespace

    from dgmkit.cli.launch import report

    if lost:
        line = "dgm: error: rank 1 lost contact with another process of this run, which stopped: Connection closed\n"
        (tmp_path / "rank-1.txt").write_text(line)
    assert report({r: SimpleNamespace(exitcode=c) for r, c in codes.items()}, tmp_path) == 141
    assert capsys.readouterr().err == ""
    (tmp_path / "rank-1.txt").write_text("dgm: error: a cause\n")  # a cause beside it is said as ever
    assert report({0: SimpleNamespace(exitcode=141), 1: SimpleNamespace(exitcode=1)}, tmp_path) == 141
    assert "dgm: error (rank 1): a cause" in capsys.readouterr().err


@_rank_process
def _refused_worker(rank: int, port: int, run: str, out: str, mode: str) -> None:
    """A Trainer on 2 ranks that fits into ``run`` (``mode`` "resume": resumed from it first;
    "budget": with a time budget on rank 0 alone; "epochs": of 3 epochs on rank 1, 2 on rank 0);
    saves how it ended: "trained", or what refused it."""
    from dgmkit.errors import DgmError

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    budget = 60.0 if mode == "budget" and rank == 0 else None
    trainer = _made_in_batches_of_23(run if rank == 0 or not run.endswith("alone") else None, budget)
    trainer.epochs += mode == "epochs" and rank == 1
    try:
        if mode == "resume":
            trainer.resume()
        trainer.fit()
        result = "trained"
    except DgmError as e:
        result = str(e)
    torch.save({"result": result, "step": trainer.step}, f"{out}.{rank}")


def test_a_new_run_on_two_processes_in_a_folder_of_another_run_is_refused_on_every_rank(tmp_path):
    """Only rank 0 has the run's writer: it alone refused a folder holding another run's files,
    and rank 1 went on into its first step, waiting for a rank that had stopped (gloo's 'Connection
    reset by peer' there). Rank 1 given no run_dir (only rank 0 writes) refuses it too."""
    for name in ("run", "run-alone"):
        run, out = tmp_path / name, str(tmp_path / f"{name}.pt")
        _made_in_batches_of_23(run).fit()
        before = (run / "metrics.jsonl").read_bytes()
        for r in _ranks_ended(run, out, "fit", "the ranks did not refuse the folder together"):
            assert f"{run} holds another run's checkpoint.safetensors" in r["result"] and r["step"] == 0
        assert (run / "metrics.jsonl").read_bytes() == before


def test_a_resume_on_two_processes_whose_metrics_rank_0_refuses_is_refused_on_every_rank(tmp_path):
    """Rank 0 alone reads metrics.jsonl on resuming (it alone writes): a malformed line there was
    refused on rank 0 only, and rank 1 went on to wait for it in its first step."""
    run, out = tmp_path / "run", str(tmp_path / "resumed.pt")
    _made_in_batches_of_23(run).fit()
    (run / "metrics.jsonl").write_text("not a record\n")
    for r in _ranks_ended(run, out, "resume", "the ranks did not refuse the resume together"):
        assert "line 1 is not a metrics record" in r["result"], r["result"]


def test_ranks_given_a_time_budget_or_epochs_of_their_own_are_refused_on_every_rank_before_a_step(tmp_path):
    """From the Python API each rank builds its own Trainer: a time budget on rank 0 alone had it
    take collectives (the budget's word at an epoch's end) that rank 1 never took, and epochs that
    differ had rank 0 end while rank 1 waited in its next step; both waited for ever. Every rank
    now refuses the Trainers alike, naming what differs, before the first step."""
    said = {"budget": "time budget: rank 0 True, rank 1 False", "epochs": "epochs: rank 0 2, rank 1 3"}
    for mode, words in said.items():
        run, out = tmp_path / mode, str(tmp_path / f"{mode}.pt")
        for r in _ranks_ended(run, out, mode, f"the ranks given differing {mode} did not refuse it together"):
            assert "the data-parallel ranks' Trainers differ" in r["result"] and words in r["result"], r["result"]
            assert r["step"] == 0
        assert not (run / "metrics.jsonl").exists()


def _ranks_ended(run, out: str, mode: str, failure: str) -> list[dict]:
    """What ``_refused_worker`` saved on each of the 2 ranks; the test fails with ``failure``
    where they have not all ended within 2 minutes (one waits for another)."""
    args = (_free_port(), str(run), out, mode)
    ctx = mp.start_processes(_refused_worker, args=args, nprocs=WORLD, start_method="spawn", join=False)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(failure)
    return [torch.load(f"{out}.{rank}") for rank in range(WORLD)]


def test_the_launcher_passes_on_a_rank_s_note_of_what_it_keeps_or_that_the_run_had_ended():
    """The note after 'the processes were stopped': a rank's line that names the kept checkpoint,
    or, for a run interrupted after its last epoch, that it had ended (which it dropped); rank 0's
    own lines it says itself unless it left them to the launcher (a SIGTERM's)."""
    from dgmkit.cli.launch import _kept_note

    kept = "the run's last checkpoint (in epoch 2 after step 5) is kept: go on with: dgm train --resume --nproc 2 --out r"
    ended = "the run had ended after epoch 3, its files written: evaluate with: dgm eval r"
    for note in (kept, ended):
        assert _kept_note({0: f"dgm: interrupted (SIGTERM); {note}", 1: None}) == note  # (left to the launcher)
        assert _kept_note({0: f"dgm: error: something; {note}", 1: f"dgm: interrupted (SIGTERM); {note}"}) == note
        assert _kept_note({0: f"dgm: error: something; {note}", 1: None}) is None  # (rank 0 said it)
    assert _kept_note({0: "dgm: interrupted (SIGTERM)", 1: None}) is None


def test_a_rank_passed_a_sigterm_on_during_the_vote_is_not_named_as_sent_it():
    """The rank's own word goes into the vote; one that reaches it while the ranks vote (torchrun's
    agent passing on the signal that another rank was sent) is not this vote's, and the rank only
    stopped with it: the launcher must not name it. A rank that had heard one before is named."""
    import types

    from dgmkit import distributed
    from dgmkit.training.trainer import Trainer

    for before in (False, True):
        fake = types.SimpleNamespace(_sigterm_heard=before, _terminated=False, _deferring=True)
        fake.dist = types.SimpleNamespace(parallel=True)

        def vote(mine, late=False, fake=fake):
            fake._sigterm_heard = True  # (passed on while the ranks vote)
            return True, False  # (another rank was sent one)

        fake._vote = vote
        fake._agreed = lambda heard, mine, fake=fake: Trainer._agreed(fake, heard, mine)
        try:
            assert Trainer._stop_agreed(fake) and fake._terminated
            assert distributed.sigterm_sent() is before
        finally:
            distributed.sigterm_sent(False)


def _digits_vae(run: Path, epochs: int = 2) -> Trainer:
    """A VAE on digits in batches of 64 (19 steps an epoch), validated in batches of 16 (10 on each of 2 ranks),
    with diagnostics that count their calls (``_diagnosed``)."""
    from dgmkit.data import load_dataset, make_transform

    digits = load_dataset("digits")
    cfg = RunConfig.of(dataset="digits", hidden=[16], latent_dim=3, batch_size=64, epochs=epochs, seed=5, device="cpu")
    return Trainer(
        build_model(cfg, digits.event_shape, digits.num_levels), build_objective(cfg), digits.train,
        make_transform("bernoulli", digits), valid=digits.valid, epochs=epochs, batch_size=64, seed=5, run_dir=run,
        progress=False, device="cpu", eval_batch_size=16, diagnostics=lambda model, x: _diagnosed.append(1) or {"d": 1.0},
    )  # fmt: skip


_diagnosed: list[int] = []


@_rank_process
def _validation_sigterm_worker(rank: int, port: int, tmp: str) -> None:
    """Rank 1 alone sent SIGTERM in its last validation batch of epoch 1; then the run resumed, and one straight through."""
    import signal

    from dgmkit._io import Terminated, sigterm_interrupts
    from dgmkit.training import trainer as trainer_module

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    trainer_module.VOTE_SECONDS = 0.0  # (a vote at every step and validation batch)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    stopped = _digits_vae(Path(tmp) / "stopped")
    objective, batches = stopped._objective, [0]

    def signalled(x, beta, y):
        batches[0] += not stopped.model.training
        if rank == 1 and batches[0] == 10:
            os.kill(os.getpid(), signal.SIGTERM)
        return objective(x, beta, y)

    stopped._objective = signalled
    said = ""
    with sigterm_interrupts():  # (as a rank of dgm: the fit raises Terminated once its checkpoint is written)
        try:
            stopped.fit()
        except Terminated as e:
            said = str(e)
    diagnosed = len(_diagnosed)
    resumed = _digits_vae(Path(tmp) / "stopped")
    resumed.resume()
    resumed.fit()
    _digits_vae(Path(tmp) / "straight").fit()
    with open(f"{tmp}/out.{rank}", "w") as f:
        json.dump({"said": said, "diagnosed": diagnosed, "batches": batches[0]}, f)


def test_a_sigterm_to_one_rank_in_its_last_validation_batch_stops_every_rank_before_the_diagnostics(tmp_path):
    """The ranks vote between validation batches and before the diagnostics (rank 0's, which may take long): they
    stopped after them all and the epoch's files (the ranks finished the validation with no vote), and one process
    ran the diagnostics before it stopped. Every rank stops there with one checkpoint after the epoch's last step, and
    the resumed run ends bit for bit as the uninterrupted one, its metrics too (each rank's own sums of the epoch's
    losses are checkpointed, not the ranks' total, which the resume would have added twice)."""
    mp.start_processes(_validation_sigterm_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    ranks = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(WORLD)]
    for r in ranks:
        assert r["said"].startswith("SIGTERM: stopped in epoch 1 after step 19 of 19, with a checkpoint in"), r
    assert ranks[0]["diagnosed"] == 0 and ranks[1]["batches"] == 10
    lines = [json.loads(line) for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    a, b = _weights_and_state(tmp_path / "straight"), _weights_and_state(tmp_path / "stopped")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics_lines(tmp_path / "stopped") == _metrics_lines(tmp_path / "straight")
