"""Training-step speed on whatever device is present, side by side in one run (issue 28).

For each model (a preset of configs/, the same network and batch in every contender) the
script times the same number of training steps of:

- ``dgmkit``: the Trainer (one epoch of exactly the timed steps; no validation, no run folder);
- ``dgmkit --compile``: the Trainer with the ``Compile()`` part (its compilation in a warm-up epoch);
- ``dgmkit NHWC``, ``dgmkit --compile NHWC``: the same with ``--channels-last`` (``ChannelsLast()``);
- ``plain``: a minimal loop over the same model object: index, transform, the objective's loss,
  backward, fused Adam;
- ``plain compile``: that loop's loss under ``torch.compile``;
- ``plain graphs``: under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs; CUDA only).

Each contender is warmed up first (compilation included), then timed; the table gives images/s,
the ratio to the plain eager loop, the peak memory the device held (CUDA) and the fraction of
the timed part during which the GPU was busy (``nvidia-smi`` sampled every 0.1 s, where it
exists; "-" where the timed part was too short to sample, under about a second: the steps of
an epoch are at most the training split's, distinct rows in every step, and ``--epochs`` times
several epochs). Then the importance-sampled NLL of the
gated VAE (untrained weights: the time does not depend on them): dgmkit's
``importance_sampled_log_likelihood`` against a plain chunked loop.

With ``--profile DIR`` each contender then runs its timed steps once more under
``torch.profiler``, to show where a contender's time per step goes that another's does not: a
line per contender (per step: the time under the profiler, the outermost operators and, on a
GPU, the device kernels, their summed time and its share of the step) and, in
``DIR/MODEL.txt``, each contender's outermost host events by host time and kernels by count
(a file a model, added to where it is there).

    python benchmarks/gpu_speed.py [--device auto] [--models gated-vae,pixelcnn] [--steps 200] [--epochs 1]
        [--eval-images 10000] [--k 5000] [--no-compile] [--precision auto] [--contenders ...]
        [--profile DIR]

On a CPU the compiled contenders take minutes to compile (``--no-compile`` leaves them out) and
CUDA graphs are skipped. Data: binarized MNIST (and 8-bit MNIST for RealNVP) from $DGMKIT_DATA.
"""

import argparse
import contextlib
import functools
import math
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib
from _common import count, data_dir, found_data_dir, machine

from dgmkit.config import RunConfig, build_model, build_objective, load_config_file, trainer_options
from dgmkit.config.inputs import run_dataset
from dgmkit.data import Split
from dgmkit.devices import resolve_device
from dgmkit.distributions import complete_data
from dgmkit.errors import DgmError
from dgmkit.objectives.importance import importance_sampled_log_likelihood
from dgmkit.training import Trainer
from dgmkit.training.precision import MixedPrecision

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = {  # name: (preset, overrides)
    "gated-vae": ("vampprior-paper-standard.toml", {}),
    "hvae": ("hvae-vampprior-cpu-hour.toml", {}),
    "conv-hvae": ("convhvae-vampprior-paper.toml", {}),
    "pixelcnn": ("arm-bmnist-pixelcnn.toml", {}),
    "realnvp": ("flow-mnist-realnvp.toml", {}),
    "masked-diffusion": ("diffusion-bmnist-masked.toml", {}),
    "residual-hvae": ("hvae-residual-cpu-hour.toml", {}),
    "glow": ("flow-mnist-glow.toml", {}),
    "vdm": ("diffusion-mnist-vdm.toml", {}),
    "vqvae": ("vqvae-bmnist.toml", {}),
    # a step of almost no compute (the embedded digits, 4 hidden units, batch 8): what a training
    # loop costs on the host a step, beside a plain loop's
    "tiny-vae": ("binarized-mnist-vae.toml", {"dataset": "digits", "hidden": [4], "latent_dim": 2, "batch_size": 8}),
}


MIN_SAMPLES = 10  # nvidia-smi samples (every 0.1 s) below which the busy fraction is not given


class BusyMeter:
    """The fraction of samples in which ``nvidia-smi`` reports the GPU busy (utilization > 0),
    and the mean utilization, over the time the meter runs; None without nvidia-smi or CUDA."""

    def __init__(self, device: torch.device):
        self.on = device.type == "cuda" and shutil.which("nvidia-smi") is not None
        self.index = device.index or 0
        self.samples: list[float] = []

    def __enter__(self):
        self._stop = threading.Event()
        if self.on:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", f"--id={self.index}"]
        while not self._stop.is_set():
            try:
                self.samples.append(float(subprocess.run(query, capture_output=True, text=True, timeout=5).stdout))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.1)

    def __exit__(self, *exc):
        self._stop.set()
        if self.on:
            self._thread.join()

    def utilization(self) -> float | None:
        """None where fewer than ``MIN_SAMPLES`` samples were taken (a timed part under about a
        second: nvidia-smi's figure averages over its own window, longer than that part)."""
        return statistics.mean(self.samples) / 100 if len(self.samples) >= MIN_SAMPLES else None


class GraphEvents:
    """While it runs: dynamo's compilations and CUDA-graph skips, and what CUDA-graph trees did
    with each call of a compiled graph (replayed, recorded, run eagerly to warm up, or run
    without a graph: an input it mutates, too many re-recordings). The timed steps of a compiled
    contender should replay only; anything else there is where a compiled step loses its time.
    Reads torch's private counters and wraps its cudagraph trees' manager's methods, which it
    looks up on itself at each call (``run`` is bound once, when a graph is made: ``_run`` is
    counted instead); a benchmark's probe."""

    _COUNTED = ("_run", "execute_node", "record_function", "run_eager")

    def __enter__(self):
        from torch._dynamo.utils import counters

        self._counters, self.calls, self._depth, self._saved = counters, dict.fromkeys(self._COUNTED, 0), 0, {}
        self._before = (counters["stats"]["unique_graphs"], counters["inductor"]["cudagraph_skips"])
        try:  # (another torch's internals: counted where they are as here, else said to be unknown)
            from torch._inductor import cudagraph_trees

            self._manager = cudagraph_trees.CUDAGraphTreeManager
            self._saved = {name: getattr(self._manager, name) for name in self._COUNTED}
        except (ImportError, AttributeError):
            self._saved = {}
        for name, method in self._saved.items():
            setattr(self._manager, name, self._counting(name, method))
        return self

    def _counting(self, name: str, method):
        def counted(manager, *args, **kwargs):
            if name == "_run":  # (it may pass the same call to itself again, through run: counted once)
                self._depth += 1
                try:
                    self.calls[name] += self._depth == 1
                    return method(manager, *args, **kwargs)
                finally:
                    self._depth -= 1
            self.calls[name] += 1
            return method(manager, *args, **kwargs)

        return counted

    def __exit__(self, *exc):
        for name, method in self._saved.items():
            setattr(self._manager, name, method)
        self.compiled = self._counters["stats"]["unique_graphs"] - self._before[0]
        self.skipped = self._counters["inductor"]["cudagraph_skips"] - self._before[1]

    def summary(self, steps: int) -> str:
        c = self.calls
        if not self._saved:
            return f"graphs: not counted (this torch's CUDA-graph trees differ); {self.compiled} compilations"
        without = c["_run"] - c["execute_node"] - c["record_function"] - c["run_eager"]
        return (f"graphs: {c['_run'] / steps:.1f} graph calls a step: {c['execute_node']} replayed, "
                f"{c['record_function']} recorded, {c['run_eager']} warm-up runs, {without} without a graph; "
                f"{self.compiled} compilations, {self.skipped} CUDA-graph skips in the timed steps")  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn, events: GraphEvents | None = None) -> tuple[float, float | None]:
    """Seconds that ``fn()`` takes on ``device`` (waited for), and the GPU's busy fraction
    meanwhile; ``events`` counts what compiled graphs did in it."""
    _sync(device)
    with BusyMeter(device) as meter, events if events is not None else contextlib.nullcontext():
        t0 = time.perf_counter()
        fn()
        _sync(device)
        seconds = time.perf_counter() - t0
    return seconds, meter.utilization()


class Profile:
    """Where the time of ``steps`` training steps goes, from ``torch.profiler`` (``--profile``)."""

    def __init__(self, out: Path, name: str, label: str):
        self.out, self.name, self.label = out, name, label
        self.summary: str | None = None

    def __call__(self, device: torch.device, fn, steps: int) -> None:
        """Run ``fn()`` (``steps`` steps, already warmed up) under the profiler: one line in
        ``summary``, the tables added to ``out/NAME.txt``."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        try:  # a profile that fails is said in its line: the contender's timing, taken before, stands
            _sync(device)
            with profile(activities=activities) as prof:
                t0 = time.perf_counter()
                fn()
                _sync(device)
                seconds = time.perf_counter() - t0
            self.summary, tables = profile_summary(prof.events(), seconds, steps, device.type == "cuda")
        except Exception as e:  # noqa: BLE001 - whatever the profiler raises
            self.summary, tables = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}", ""
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / f"{self.name}.txt").open("a") as f:  # the model's contenders one after another
            f.write(f"## {self.name}, {self.label}: {self.summary}\n\n{tables}\n")


def profile_summary(events, seconds: float, steps: int, gpu: bool) -> tuple[str, str]:
    """A line (per step: wall time under the profiler, top-level operators, device kernels, their
    summed time and its share of the wall time) and the tables of operators by host time and by
    count, from a profile of ``steps`` steps that took ``seconds``."""
    from torch.autograd import DeviceType

    top = [e for e in events if e.device_type == DeviceType.CPU and e.cpu_parent is None]  # each thread's outermost
    ops = [e for e in top if e.name.startswith("aten::")]
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    kernel_us = sum(e.device_time for e in kernels)
    per = 1e6 / steps
    line = f"{seconds * per:8.1f} us a step under the profiler, {len(ops) / steps:6.1f} top-level aten ops a step"
    if gpu:
        line += (f", {len(kernels) / steps:6.1f} kernels a step taking {kernel_us / steps:8.1f} us "
                 f"({kernel_us / 1e6 / seconds:.0%} of the step)")  # fmt: skip
    by_host: dict[str, list[float]] = {}
    for e in top:  # their host time includes what they called
        row = by_host.setdefault(e.name, [0, 0.0])
        row[0] += 1
        row[1] += e.cpu_time_total
    rows = sorted(by_host.items(), key=lambda kv: -kv[1][1])
    lines = [f"{'outermost host event':<64}{'calls a step':>14}{'host us a step':>16}"]
    lines += [f"{name[:63]:<64}{n / steps:14.2f}{us / steps:16.1f}" for name, (n, us) in rows[:40]]
    by_kernel: dict[str, list[float]] = {}
    for e in kernels:
        row = by_kernel.setdefault(e.name, [0, 0.0])
        row[0] += 1
        row[1] += e.device_time
    if by_kernel:
        lines += ["", f"{'device kernel':<80}{'launches a step':>17}{'us a step':>11}"]
        for name, (n, us) in sorted(by_kernel.items(), key=lambda kv: -kv[1][0])[:40]:
            lines.append(f"{name[:79]:<80}{n / steps:17.2f}{us / steps:11.1f}")
    return line, "\n".join(lines) + "\n"


def config_of(name: str, device: torch.device, data: str | None, overrides: dict | None = None) -> RunConfig:
    """The model's preset with its own and ``--set``'s values (a wrong one: ConfigError)."""
    preset, own = MODELS[name]
    values = {**load_config_file(CONFIGS / preset), **own, **(overrides or {}), "device": device.type, "data_dir": data}
    return RunConfig.from_dict(values, source=f"{preset} with --set" if overrides else preset)


def setting_up(name: str, device: torch.device, data: str, overrides: dict | None = None) -> tuple:
    cfg = config_of(name, device, data, overrides)
    try:
        dataset = run_dataset(cfg.data)
    except DgmError as e:  # the data missing: said in dgmkit's words, not a traceback
        sys.exit(f"{name}: {e}")
    transform = cfg.model.transform(dataset, cfg.data.binarize)
    init = transform(dataset.train.x, torch.Generator().manual_seed(0)) if cfg.model.needs_init_data else None
    return cfg, dataset, transform, init


def setting_of(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--set``: the value read as TOML (``ema=0``), ``none`` (unset:
    ``skip_grad_norm=none``), else as a string (``precision=bf16``)."""
    key, eq, value = item.partition("=")
    if not eq or not key.strip() or "\n" in item:
        raise SystemExit(f"--set takes one KEY=VALUE, got {item!r}")
    if value.strip().lower() == "none":
        return key.strip(), None
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value.strip()  # a bare word: a string (precision=bf16)


def fresh_model(cfg: RunConfig, dataset, init, device: torch.device) -> torch.nn.Module:
    return build_model(cfg, dataset.event_shape, dataset.num_levels, init).to(device)


def time_trainer(
    cfg,
    dataset,
    transform,
    init,
    device,
    steps: int,
    epochs: int,
    precision: str,
    compile: bool,
    channels_last: bool = False,
    profile: Profile | None = None,
    events: GraphEvents | None = None,
    graph_step: bool = False,
) -> tuple[float, float | None]:
    """images/s of the Trainer over ``epochs`` epochs of ``steps`` steps, after a warm-up epoch
    (``graph_step``: the whole step captured as one CUDA graph, in the warm-up epoch)."""
    b = cfg.optim.batch_size
    rows = dataset.train.x[: steps * b]
    run = dict(epochs=2, device=str(device), compile=compile, channels_last=channels_last, graph_step=graph_step,
               patience=None)  # fmt: skip
    options = trainer_options(cfg.replace(**run, precision=precision))
    trainer = Trainer(fresh_model(cfg, dataset, init, device), build_objective(cfg), Split(rows), transform,
                      progress=False, **options)  # fmt: skip
    trainer.epochs = 1
    trainer.fit()  # warm-up (and compilation)
    if graph_step and (trainer.graph is None or not trainer.graph.captured):
        why = "refused (see the warning above)" if trainer.graph is None else trainer.graph.failure
        print(f"    --graph-step: the step was not captured: {why}", flush=True)
    trainer.epochs = 1 + epochs
    seconds, busy = timed(device, trainer.fit, events)
    if profile is not None:
        trainer.epochs = 2 + epochs
        profile(device, trainer.fit, steps)
    return epochs * steps * b / seconds, busy


def time_plain(
    cfg,
    dataset,
    transform,
    init,
    device,
    steps: int,
    epochs: int,
    precision: str,
    mode: str,
    profile: Profile | None = None,
    events: GraphEvents | None = None,
) -> tuple[float, float | None]:
    """images/s of a minimal loop over the same model, at the Trainer's precision (autocast):
    ``mode`` eager, compile or graphs; ``epochs`` epochs of ``steps`` steps timed."""
    model = fresh_model(cfg, dataset, init, device).train()
    objective = build_objective(cfg)
    objective.setup(len(dataset.train))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, fused=True)
    x_all = dataset.train.x[: steps * cfg.optim.batch_size].to(device)
    g = torch.Generator(device=device).manual_seed(0)

    amp = MixedPrecision(precision, device, model.trains_in_bf16)

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        with amp.autocast():
            return objective(model, x, 1.0).loss.mean()

    loss_fn = loss_of if mode == "eager" else torch.compile(loss_of, mode="reduce-overhead" if mode == "graphs" else None)
    b = cfg.optim.batch_size

    def epoch() -> None:
        perm = torch.randperm(len(x_all), generator=g, device=device)
        for i in range(steps):
            x = transform(x_all[perm[i * b : (i + 1) * b]], g)
            if mode == "graphs":
                torch.compiler.cudagraph_mark_step_begin()
            loss = loss_fn(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def timed_epochs() -> None:
        for _ in range(epochs):
            epoch()

    with complete_data():  # (the data hold no missing entry: no look for one in each step)
        epoch()  # warm-up (and compilation)
        seconds, busy = timed(device, timed_epochs, events)
        if profile is not None:
            profile(device, epoch, steps)
    return epochs * steps * b / seconds, busy


def plain_is_nll(model, x: torch.Tensor, k: int, batch: int, chunk: int) -> torch.Tensor:
    """log p(x) by importance sampling, written out: batches of ``batch`` datapoints, ``chunk``
    draws at a time, a running logsumexp."""
    out = []
    with torch.no_grad():
        for xb in x.split(batch):
            q, prior = model.posterior(xb), model.prior()
            total = None
            for s in range(0, k, chunk):
                z = q.sample((min(chunk, k - s),))  # (S, B, M)
                log_w = model.likelihood(z.flatten(0, 1)).log_prob(xb.repeat(z.shape[0], *[1] * (xb.dim() - 1)))
                log_w = log_w.view(z.shape[0], -1) + prior.log_prob(z) - q.log_prob(z)
                part = torch.logsumexp(log_w.double(), 0)
                total = part if total is None else torch.logaddexp(total, part)
            out.append(total - math.log(k))
    return torch.cat(out)


CONTENDERS = ("plain eager", "dgmkit", "dgmkit --compile", "dgmkit NHWC", "dgmkit --compile NHWC", "dgmkit --graph-step",
              "dgmkit --compile --graph-step", "plain compile", "plain graphs")  # fmt: skip


def parser() -> argparse.ArgumentParser:
    """The script's flags (``--models`` and ``--contenders`` are checked against ``MODELS`` and
    ``CONTENDERS`` in ``main``; tests/test_device_calls.py checks docs/development.md's calls with it)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--steps", type=count, default=200, help="training steps an epoch (at most the training split's)")
    ap.add_argument("--epochs", type=count, default=1, help="timed epochs of --steps steps per contender (more: a busy "
                    "fraction for fast contenders, whose epoch is under a second)")  # fmt: skip
    ap.add_argument("--eval-images", type=count, default=None, help="test images for the NLL (default: 10000 on CUDA, 200)")
    ap.add_argument("--k", type=int, default=5000, help="draws per image of the IS-NLL (0: leave the NLL out)")
    ap.add_argument("--contenders", default=None, help=f"comma-separated, of: {', '.join(CONTENDERS)}")
    ap.add_argument("--no-compile", action="store_true", help="leave out the compiled contenders")
    ap.add_argument("--precision", default="auto", help="of every contender: auto (the Trainer's default), fp32, bf16")
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="then profile each contender's timed steps: a line each, the tables into DIR")  # fmt: skip
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config value of every model (a TOML value or none, e.g. ema=0), after its preset's")  # fmt: skip
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    models = [name.strip() for name in args.models.split(",")]
    wanted = {name.strip() for name in args.contenders.split(",")} if args.contenders else None
    if unknown := [name for name in models if name not in MODELS]:
        ap.error(f"--models: {', '.join(unknown)} not among {', '.join(MODELS)}")
    if wanted and (unknown := sorted(wanted - set(CONTENDERS))):
        ap.error(f"--contenders: {', '.join(unknown)} not among {', '.join(CONTENDERS)}")
    if args.k < 0:
        ap.error(f"--k must be >= 0 (0 leaves the NLL out), got {args.k}")
    overrides = dict(setting_of(item) for item in args.set)
    try:  # the device, --set and --precision, for every model before any is timed: a wrong one said in words
        device = resolve_device(args.device)
    except DgmError as e:
        sys.exit(str(e))
    for name in models:
        try:
            config_of(name, device, found_data_dir(), overrides).replace(precision=args.precision)
        except DgmError as e:
            sys.exit(f"{name}: {e}")
    data = data_dir()
    gpu = device.type == "cuda"
    print(f"machine: {machine()}; device: {torch.cuda.get_device_name(device) if gpu else 'cpu'}; "
          f"precision: {args.precision} (auto: bf16 for the families checked in it, else fp32)", flush=True)  # fmt: skip
    print(f"{'model':<18}{'contender':<30}{'images/s':>10}{'ratio':>8}{'peak MiB':>10}{'GPU busy':>10}")
    for name in models:
        cfg, dataset, transform, init = setting_up(name, device, data, overrides)
        steps = min(args.steps, len(dataset.train.x) // cfg.optim.batch_size)  # distinct rows in every step
        if steps < args.steps:
            print(f"{name}: {steps} steps (an epoch of the training split), not {args.steps}", flush=True)
        setup = (cfg, dataset, transform, init, device, steps, args.epochs, args.precision)
        contenders = {  # the plain eager loop first: every row prints its ratio to it as soon as it is timed
            "plain eager": functools.partial(time_plain, *setup, "eager"),
            "dgmkit": functools.partial(time_trainer, *setup, False),
            "dgmkit --compile": functools.partial(time_trainer, *setup, True),
            "dgmkit NHWC": functools.partial(time_trainer, *setup, False, True),  # --channels-last
            "dgmkit --compile NHWC": functools.partial(time_trainer, *setup, True, True),
            "dgmkit --graph-step": functools.partial(time_trainer, *setup, False, graph_step=True),
            "dgmkit --compile --graph-step": functools.partial(time_trainer, *setup, True, graph_step=True),
            "plain compile": functools.partial(time_plain, *setup, "compile"),
            "plain graphs": functools.partial(time_plain, *setup, "graphs"),
        }
        assert tuple(contenders) == CONTENDERS  # (the names --contenders is checked against)
        base = None
        for label, run in contenders.items():
            compiled = "compile" in label or "graphs" in label
            cuda_only = "graphs" in label or "graph-step" in label
            if (args.no_compile and compiled) or (cuda_only and not gpu) or (wanted and label not in wanted):
                continue
            if gpu:
                torch.cuda.reset_peak_memory_stats(device)
            profile = Profile(args.profile, name, label) if args.profile is not None else None
            events = GraphEvents() if gpu and compiled else None
            try:
                rate, busy = run(profile=profile, events=events)
            except Exception as e:  # noqa: BLE001 - a contender that cannot run is reported, the others go on
                print(f"{name:<18}{label:<30}  failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}", flush=True)
                continue
            base = rate if label == "plain eager" else base
            peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:10.0f}" if gpu else f"{'-':>10}"
            ratio = f"{rate / base:8.2f}" if base else f"{'-':>8}"
            busy = "-" if busy is None else f"{busy:.0%}"
            print(f"{name:<18}{label:<30}{rate:10.0f}{ratio}{peak}{busy:>10}", flush=True)
            if events is not None:
                print(f"{'':<18}{'':<30}{events.summary(steps * args.epochs)}", flush=True)
            if profile is not None and profile.summary is not None:
                print(f"{'':<18}{'':<30}profile: {profile.summary}", flush=True)
    if args.k == 0:
        return
    # the importance-sampled NLL of the gated VAE, k draws per image
    cfg, dataset, transform, init = setting_up("gated-vae", device, data)
    model = fresh_model(cfg, dataset, init, device).eval()
    n = args.eval_images or (10000 if gpu else 200)
    x = transform(dataset.test.x[torch.randperm(len(dataset.test.x), generator=torch.Generator().manual_seed(0))[:n]],
                  torch.Generator().manual_seed(1)).to(device)  # fmt: skip
    n = len(x)  # (--eval-images above the test split's size: all of it, said as what it is)
    for label, fn in (
        ("dgmkit", lambda x: importance_sampled_log_likelihood(model, x, k=args.k)),
        ("plain chunked", lambda x: plain_is_nll(model, x, args.k, 250 if gpu else 32, 256 if gpu else 64)),
    ):
        fn(x if gpu else x[:4])  # warm-up (on a GPU the first kernels compile)
        _sync(device)
        t0 = time.perf_counter()
        ll = fn(x)
        _sync(device)
        print(f"IS-NLL k={args.k} on {n} test images, {label:<14}: {time.perf_counter() - t0:7.2f} s  "
              f"(mean -log p(x) {-ll.mean().item():.2f} nats, untrained weights)", flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
