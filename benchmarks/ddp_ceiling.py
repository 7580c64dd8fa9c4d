"""Where data-parallel training's time goes on this machine: for each model of
``ddp_scaling.py`` (built from the same ``dgm train`` flags), steps of one global batch timed
side by side in one pair of processes (gloo, one thread each), in interleaved rounds:

- ``one process``: rank 0 takes the whole batch while rank 1 waits (the baseline);
- ``2 ranks, whole batch each``: both ranks take a one-process step on the whole batch at once,
  independently; its time is halved (two batches done), so its ratio is what the second core
  adds when nothing is split or exchanged: the machine's own ceiling, below 2x where two busy
  cores each run slower than one (shared cache, memory bandwidth, clocks);
- ``2 ranks, no communication``: each rank takes half the batch inside DDP's ``no_sync``, and
  nothing is exchanged: the most that splitting the batch can give on these two cores, before
  any gradient is all-reduced;
- ``2 ranks, DDP over gloo``: the same with the gradients averaged by gloo's all-reduce (TCP
  loopback), DDP set up as the Trainer sets it up;
- ``2 ranks, DDP, shared memory``: the same through ``training.shared_memory`` (the Trainer's
  choice for ranks on one machine).

A step is forward, backward and Adam's (fused) update. The ratios are the baseline's time over
each, in each round; the median over the rounds is printed with every round's value. It is not
the quotient of the two medians of ms/step beside it: the two times of a round are taken
together, and the machine's speed wanders between rounds.

    python benchmarks/ddp_ceiling.py [--models vae conv-vae pixelcnn masked-diffusion] [--rounds 5]
"""

import argparse
import copy
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count, data_dir, dataset, machine  # noqa: E402
from ddp_scaling import MODELS, _subset  # noqa: E402

STEPS = {"vae": 100, "conv-vae": 8, "pixelcnn": 2, "masked-diffusion": 2}  # per round and mode


class _Objective(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, objective: object):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.objective(self.model, x, 1.0).loss


def _build(flags: list[str]) -> tuple:
    from dgmkit.cli.main import build_parser
    from dgmkit.cli.train import resolve_config
    from dgmkit.config import build_model
    from dgmkit.config.inputs import run_dataset

    argv = ["train", *flags, "--out", "unused"]
    cfg = resolve_config(build_parser(argv).parse_args(argv))
    dataset = run_dataset(cfg.data)
    transform = cfg.model.transform(dataset, cfg.data.binarize)
    torch.manual_seed(0)
    model = build_model(cfg, dataset.event_shape, dataset.num_levels)
    x = transform(dataset.train.x[: cfg.optim.batch_size], torch.Generator().manual_seed(0))
    return model, cfg.model.training_objective(), x


def _worker(rank: int, port: int, names: list[str], flags: dict, rounds: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    lines = [line for name in names for line in _time(rank, name, flags[name], rounds)]
    if rank == 0:
        Path(out).write_text("\n".join(lines) + "\n")
    dist.destroy_process_group()


def _time(rank: int, name: str, flags: list[str], rounds: int) -> list[str]:
    """The modes' step times for one model, as lines of text."""
    from dgmkit.training import shared_memory

    model, objective, x = _build(flags)
    half = x[: len(x) // 2] if rank == 0 else x[len(x) // 2 :]
    alone = copy.deepcopy(model)
    alone_opt = torch.optim.Adam(alone.parameters(), 1e-3, fused=True)

    def wrap(m: torch.nn.Module) -> tuple:  # DDP as the Trainer sets it up
        ddp = torch.nn.parallel.DistributedDataParallel(
            _Objective(m, objective), find_unused_parameters=False, gradient_as_bucket_view=True,
            forward_sync_buffers=False,
        )  # fmt: skip
        return ddp, torch.optim.Adam(m.parameters(), 1e-3, fused=True)

    gloo, gloo_opt = wrap(copy.deepcopy(model))
    shm, shm_opt = wrap(copy.deepcopy(model))
    if shared_memory.attach(shm, sum(p.numel() * p.element_size() for p in model.parameters())) is None:
        sys.exit("shared memory could not be used here")

    def one_process() -> None:
        if rank == 0:
            loss = objective(alone, x, 1.0).loss.mean()
            alone_opt.zero_grad(set_to_none=True)
            loss.backward()
            alone_opt.step()

    def whole_batch_each() -> None:  # two independent one-process steps at once: what the two cores give
        alone_opt.zero_grad(set_to_none=True)
        objective(alone, x, 1.0).loss.mean().backward()
        alone_opt.step()

    def no_communication() -> None:
        with gloo.no_sync():
            loss = gloo(half).mean()
            gloo_opt.zero_grad(set_to_none=True)
            loss.backward()
        gloo_opt.step()

    def ddp_step(ddp: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        loss = ddp(half).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    modes = {
        "one process": one_process,
        "2 ranks, whole batch each": whole_batch_each,
        "2 ranks, no communication": no_communication,
        "2 ranks, DDP over gloo": lambda: ddp_step(gloo, gloo_opt),
        "2 ranks, DDP, shared memory": lambda: ddp_step(shm, shm_opt),
    }
    for step in modes.values():  # warm-up
        step()
    times = {m: [] for m in modes}
    for _ in range(rounds):
        for mode, step in modes.items():
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(STEPS[name]):
                step()
            dist.barrier()
            times[mode].append((time.perf_counter() - t0) / STEPS[name])
    times["2 ranks, whole batch each"] = [t / 2 for t in times["2 ranks, whole batch each"]]  # per global batch
    base = times["one process"]
    params = sum(p.numel() for p in model.parameters())
    lines = [f"{name} ({params / 1e6:.2f}M parameters, global batch {len(x)}):"]
    for mode, t in times.items():
        ratios = [b / a for a, b in zip(t, base)]
        lines.append(
            f"  {mode:29s} {statistics.median(t) * 1e3:8.1f} ms/step  ratio {statistics.median(ratios):.2f}x"
            f"  (rounds: {' '.join(f'{r:.2f}' for r in ratios)})"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--rounds", type=count, default=5)
    a = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    # the workers read the data where this process found them; missing, they are said here in words
    # (not in a traceback of each worker, after each had tried to download them)
    os.environ["DGMKIT_DATA"] = data_dir()
    dataset("binarized-mnist")
    print(f"# {machine()}; steps of one global batch, interleaved rounds: {a.rounds}; ratio: the median of the "
          "rounds' ratios (one process's time over the mode's, in the same round)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        subset = str(_subset(Path(tmp))) if any("{subset}" in MODELS[m] for m in a.models) else ""
        flags = {m: [f.format(subset=subset) for f in MODELS[m]] for m in a.models}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = str(Path(tmp) / "result.txt")
        mp.start_processes(_worker, args=(port, a.models, flags, a.rounds, out), nprocs=2, start_method="spawn")
        print(Path(out).read_text(), end="")


if __name__ == "__main__":
    main()
