"""The Trainer's optional parts: each training-time feature is a part handed to the Trainer
(``Trainer(..., parts=[MovingAverage(0.999), StepGuard(clip=200.0)])``), not a keyword of it.

A part is attached once, at the end of the Trainer's construction (``attach``): it puts in one
of the trainer's own pieces (the step guard, the precision, the forward pass, the batch source's
options, the KL weight, the time budget) or adds a hook that runs after every step
(``Trainer.step_hooks``). A trainer takes one part of each kind: a later one replaces an
earlier one. Without parts the trainer trains in fp32 on a CPU (auto precision), with no
clipping or skipping, no moving average, the KL weight 1, eager, and without a time budget.

- ``KLWarmup(beta, epochs)``: the KL weight of the loss, reached by linear warm-up.
- ``StepGuard(clip, skip_norm, skip_factor)``: gradient clipping and skipping
  (``step_guard.GradientGuard``).
- ``NormalisedGradients()``: each parameter's gradient scaled to unit norm before the Adam step
  (the VampPrior reference code's optimiser).
- ``MovingAverage(decay)``: an exponential moving average of the weights (``ema.EMA``).
- ``Precision(name)``: autocast and the fp16 gradient scaler (``precision.MixedPrecision``).
- ``Compile()``: the forward pass under ``torch.compile`` (``compiled.CompiledOrEager``).
- ``GraphStep()``: the whole step captured as one CUDA graph and replayed (``graphed.StepGraph``).
- ``ChannelsLast()``: convolution weights and image batches in channels-last memory (NHWC).
- ``Mutation(rate)``: Ren et al.'s mutated training batches (the background model).
- ``LabelledRows(rows)``: labelled rows added to every batch (semi-supervised training).
- ``TimeBudget(seconds)``: stop, with a checkpoint, when the budget runs out.
- ``TrainFor(seconds)``: after the first epoch, as many epochs as fit in ``seconds`` at its pace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from dgmkit.errors import ConfigError, finite_at_least, whole_at_least
from dgmkit.training.compiled import CompiledOrEager
from dgmkit.training.ema import EMA
from dgmkit.training.graphed import Capture, StepGraph
from dgmkit.training.precision import PRECISIONS, MixedPrecision
from dgmkit.training.step import ReducedStep
from dgmkit.training.step_guard import GradientGuard

if TYPE_CHECKING:
    from dgmkit.training.trainer import Trainer

__all__ = [
    "TrainingPart",
    "KLWarmup",
    "StepGuard",
    "NormalisedGradients",
    "MovingAverage",
    "Precision",
    "Compile",
    "GraphStep",
    "ChannelsLast",
    "Mutation",
    "LabelledRows",
    "TimeBudget",
    "TrainFor",
    "Pace",
]


class TrainingPart:
    """A training-time feature: ``attach(trainer)`` puts it into a trainer under construction."""

    def attach(self, trainer: Trainer) -> None:
        raise NotImplementedError


def attach_parts(trainer: Trainer, parts: Iterable[TrainingPart]) -> None:
    """Attach ``parts`` (the Trainer's construction does, once). A later part of a kind replaces
    an earlier one, as a later keyword would (``[*trainer_options(cfg)["parts"],
    Precision("fp32")]`` overrides the config's precision), and takes its place in the order;
    TypeError for what is not a part."""
    if isinstance(parts, TrainingPart) or (isinstance(parts, type) and issubclass(parts, TrainingPart)):
        shown = parts.__name__ if isinstance(parts, type) else type(parts).__name__
        raise TypeError(f"a Trainer's parts are a list of TrainingParts: parts=[{shown}(...)], got one alone")
    if not isinstance(parts, Iterable):  # (parts=None: "'NoneType' object is not iterable")
        raise TypeError(f"a Trainer's parts are a list of TrainingParts ([] for none), got {parts!r}")
    chosen: dict[type, TrainingPart] = {}
    for part in parts:
        if not isinstance(part, TrainingPart):
            raise TypeError(f"a Trainer's parts are TrainingParts (dgmkit.training.parts), got {part!r}")
        kind = _kind(part)
        chosen.pop(kind, None)
        chosen[kind] = part
    for part in chosen.values():
        part.attach(trainer)


def _kind(part: TrainingPart) -> type:
    """The part's kind: its class below TrainingPart (a subclass of MovingAverage is one)."""
    return next(c for c in type(part).__mro__ if TrainingPart in c.__bases__)


def _seconds(what: str, seconds: object, clock: object) -> None:
    """``seconds`` > 0 of a ``clock`` (a function); ``what`` names them in errors."""
    finite_at_least(f"{what} (seconds)", seconds, 0.0, strict=True)
    if not callable(clock):
        raise TypeError(f"{what}'s clock must be a function that returns seconds, got {clock!r}")


@dataclass(frozen=True)
class KLWarmup(TrainingPart):
    """The KL term's weight in the loss: ``beta``, reached from 0 by linear warm-up over
    ``epochs`` (a fraction counts); the reported bound keeps weight 1."""

    beta: float = 1.0
    epochs: float = 0.0

    def __post_init__(self) -> None:
        # Python floats (frozen: set as the dataclass sets them): a NumPy float32 went on into the KL weight of
        # every metrics line, which JSON cannot write
        object.__setattr__(self, "beta", float(finite_at_least("the KL weight beta", self.beta, 0.0)))
        object.__setattr__(self, "epochs", float(finite_at_least("the KL warm-up's epochs", self.epochs, 0.0)))

    def attach(self, trainer: Trainer) -> None:
        trainer.beta, trainer.warmup_epochs = self.beta, self.epochs


@dataclass(frozen=True)
class StepGuard(TrainingPart):
    """Clips the gradient norm to ``clip`` and skips an update whose norm is above
    ``skip_norm`` or ``skip_factor`` times the median of the recent ones (VDVAE); on a GPU
    decided there, without a read-back in each step."""

    clip: float | None = None
    skip_norm: float | None = None
    skip_factor: float | None = None

    def __post_init__(self) -> None:
        for name, v, lowest in (
            ("clip", self.clip, 0.0),
            ("skip_norm", self.skip_norm, 0.0),
            ("skip_factor", self.skip_factor, 1.0),
        ):
            if v is not None:  # (as a Python float: a NumPy float32 went on into a checkpoint's threshold, unwritable)
                object.__setattr__(self, name, float(finite_at_least(f"the step guard's {name}", v, lowest, strict=True)))

    def attach(self, trainer: Trainer) -> None:
        on_device = trainer.device.type == "cuda"
        trainer.guard = GradientGuard(self.clip, self.skip_norm, self.skip_factor, on_device=on_device)


@dataclass(frozen=True)
class NormalisedGradients(TrainingPart):
    """Scale each parameter tensor's gradient to unit L2 norm, g / (||g|| + eps), just before
    every optimizer step (after clipping, and after the fp16 scaler's unscaling): Adam on these
    is the optimiser of Tomczak & Welling's VampPrior code (``AdamNormGrad``, eps 1e-7). Each
    step then weighs the same whatever its gradient's size; Adam's moments see the normalised
    gradients. Computed where the gradients are, without a read-back."""

    eps: float = 1e-7

    def __post_init__(self) -> None:
        finite_at_least("the gradient normalisation's eps", self.eps, 0.0, strict=True)

    def attach(self, trainer: Trainer) -> None:
        eps = self.eps

        def normalise(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                norms = torch._foreach_norm(grads)
                torch._foreach_div_(grads, torch._foreach_add(norms, eps))

        trainer.optimizer.register_step_pre_hook(normalise)


@dataclass(frozen=True)
class MovingAverage(TrainingPart):
    """An exponential moving average of the weights with ``decay`` in (0, 1), from the
    initial ones, updated after every step taken: validation, the diagnostics and
    ``best.safetensors`` use it (``ema.EMA``)."""

    decay: float

    def __post_init__(self) -> None:
        # (as a Python float: a NumPy float32 went on into every metrics line's ema, which JSON cannot write)
        object.__setattr__(self, "decay", float(finite_at_least("the moving average's decay", self.decay, 0.0, strict=True)))
        if not self.decay < 1:
            raise ValueError(f"the moving average's decay must be in (0, 1), got {self.decay!r}")

    def attach(self, trainer: Trainer) -> None:
        ema = trainer.ema = EMA(trainer.model, self.decay)
        model = trainer.model
        trainer.step_hooks.append(lambda taken: ema.update(model, taken))


@dataclass(frozen=True)
class Precision(TrainingPart):
    """The forward pass's floating point: ``auto`` (fp32 on a CPU; on CUDA bf16 for the
    families whose training in bf16 was checked), ``fp32``, ``bf16`` or ``fp16`` (with the
    gradient scaler)."""

    name: str = "auto"

    def __post_init__(self) -> None:
        if self.name not in PRECISIONS:
            raise ValueError(f"unknown precision {self.name!r}; choose {', '.join(PRECISIONS)}")

    def attach(self, trainer: Trainer) -> None:
        trainer.amp = MixedPrecision(self.name, trainer.device, trainer.model_trains_in_bf16)


@dataclass(frozen=True)
class Compile(TrainingPart):
    """The training forward pass under ``torch.compile`` (with CUDA graphs on a GPU); where it
    cannot be compiled, the run says why once and goes on eagerly."""

    def attach(self, trainer: Trainer) -> None:
        step = trainer.forward
        if trainer.parallel is not None and isinstance(step, ReducedStep):
            # dynamo does not trace into DistributedDataParallel's forward: compiling the reduced
            # step would make the reductions a second graph; DDP's forward pass is compiled alone
            step.forward = CompiledOrEager(step.forward, device=trainer.device)
        else:
            trainer.forward = CompiledOrEager(step, device=trainer.device)


@dataclass(frozen=True)
class GraphStep(TrainingPart):
    """The whole training step captured as one CUDA graph after its first steps and replayed
    (``graphed.StepGraph``); with ``Compile``, the compiled forward and backward passes are
    captured in it, and gradient skipping is decided on the device. Not under torchrun, with
    fp16's gradient scaler, without the fused Adam, or for a model whose step is not fixed (the
    run says so and trains uncaptured); on a CPU it does nothing. ``capture``: the capture
    backend (the tests' recording on the CPU; default CUDA graphs)."""

    capture: Capture | None = field(default=None, compare=False)

    def attach(self, trainer: Trainer) -> None:
        # (what it needs of the other parts is checked when training starts: ``Trainer.fit``, whatever their order)
        trainer.graph = StepGraph(trainer.graph_step, self.capture)


@dataclass(frozen=True)
class ChannelsLast(TrainingPart):
    """The model's 4-D weights and every training batch of images in channels-last memory
    (NHWC), the layout that cuDNN's and oneDNN's fastest convolutions read: the same model and
    numbers up to rounding, faster convolutions. A model without 4-D weights is unchanged. Put
    it before ``Compile`` so that the compiled step sees the layout. Not with data-parallel
    training (DDP is built around the model's layout before the parts attach)."""

    def attach(self, trainer: Trainer) -> None:
        if trainer.parallel is not None:
            raise ConfigError("channels-last memory is not supported in data-parallel training")
        # the same Parameters (the optimizer's), their data re-laid (Module.to documents memory_format; its stub lacks it)
        trainer.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        trainer.forward = _ChannelsLastInput(trainer.forward)


class _ChannelsLastInput:
    """The forward pass with a batch of images (B, C, H, W) in channels-last memory."""

    def __init__(self, forward: Callable):
        self.forward = forward

    def __call__(self, x: torch.Tensor, beta: float, *args: Any) -> Any:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.forward(x, beta, *args)


@dataclass(frozen=True)
class Mutation(TrainingPart):
    """Replace each pixel of a training batch by a random level with probability ``rate``
    (Ren et al. 2019's background model); quantized data only."""

    rate: float

    def __post_init__(self) -> None:
        finite_at_least("the mutation rate", self.rate, 0.0)
        if not self.rate <= 1:
            raise ValueError(f"the mutation rate must be in [0, 1], got {self.rate!r}")

    def attach(self, trainer: Trainer) -> None:
        trainer.batches.mutate(self.rate)


@dataclass(frozen=True)
class LabelledRows(TrainingPart):
    """Add ``rows`` rows drawn from the labelled ones to every training batch (semi-supervised
    objectives, which weigh each part of a batch to its share of the training set)."""

    rows: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", whole_at_least("the labelled rows of a batch", self.rows, 0))  # (frozen)

    def attach(self, trainer: Trainer) -> None:
        if not self.rows:
            return  # (none drawn: the batches as they are, whatever the objective)
        if not trainer.objective.takes_labels:
            raise ConfigError(f"{type(trainer.objective).__name__} takes no labels: it cannot train on labelled rows")
        trainer.batches.add_labelled(int(self.rows))
        trainer.objective.setup_labels(trainer.batches.labelled_count, int(self.rows))


@dataclass(frozen=True)
class TimeBudget(TrainingPart):
    """Stop ``fit`` at the end of the step in which ``seconds`` (of ``clock``) have passed since
    it began, with a checkpoint from which ``resume`` goes on bit for bit (on the same kind of
    device and number of CPU threads, not compiled). Data-parallel ranks stop together by rank 0's
    clock, after the step of their next vote (``trainer._StopVote``, about 0.05 s apart), with one
    checkpoint of every rank's place, which ``resume`` on as many processes continues bit for bit."""

    seconds: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        _seconds("the time budget", self.seconds, self.clock)

    def attach(self, trainer: Trainer) -> None:
        trainer.budget = self


@dataclass(frozen=True)
class TrainFor(TrainingPart):
    """Train for about ``seconds`` in all: at the end of the first epoch, the trainer's epochs are
    lowered to as many as fit in ``seconds`` at that epoch's pace (``Pace``, read from ``clock``).
    Every learning-rate schedule gives the first epoch its base rate whatever the number of
    epochs, so the run is the one that this number of epochs, given from the start, would train
    (a cosine schedule ends on time); it becomes the run's recorded epochs."""

    seconds: float
    clock: Callable[[], float] = field(default=time.perf_counter, compare=False)

    def __post_init__(self) -> None:
        _seconds("the training time", self.seconds, self.clock)

    def attach(self, trainer: Trainer) -> None:
        if trainer.steps_per_epoch < MIN_PACED_STEPS:
            raise ConfigError(
                f"--train-for measures the pace of the first epoch's steps and needs {MIN_PACED_STEPS} of them at "
                f"least; an epoch of this run has {trainer.steps_per_epoch} (lower --batch-size, or give --epochs instead)"
            )
        trainer.pace = Pace(self.seconds, self.clock)


MIN_PACED_STEPS = 4  # an eager first step, a compiled second, steps to time, a (short) last one


class Pace:
    """The first epoch's pace, and the epochs that fit in ``seconds`` at it.

    The pace is timed from the end of the first tenth of the steps that this call trains of the
    first epoch (the second at the least: the first is eager and the second compiles, where the
    step is compiled) to the end of its second-to-last step (a short last batch compiles again);
    whatever the epoch's training took beyond that pace (compilation, first calls) is counted
    once: epochs = (seconds - that warm-up) // (an epoch's steps at the pace + its validation +
    its files). The epochs are decided before the first epoch's files are written (``decide``)
    and lowered again once they are (``with_files``). A first epoch stopped within by a time
    budget keeps the pace timed so far and the seconds spent (``stopped``) for the call that
    ends it (``resume_from``): that call counts them, and uses the pace where it trains too
    few steps to time its own. The device is waited for where the clock is read."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.perf_counter):
        self.seconds, self.clock = seconds, clock
        self.earlier: float | None = None  # seconds a step, timed by an earlier call in the first epoch
        self.spent = 0.0  # seconds the earlier calls trained of the first epoch
        self._t0: float | None = None
        self._forget()

    def start_epoch(self) -> None:
        """A ``fit`` call begins the first epoch (once a call: nothing of an earlier call's timed)."""
        self._forget()
        self._t0 = self.clock()

    def _forget(self) -> None:
        self._first: int | None = None
        self._mark: tuple[int, float] | None = None
        self._end: tuple[int, float] | None = None
        self._train_end: float | None = None
        self._valid_s, self._decided_at = 0.0, 0.0

    def resume_from(self, progress: dict) -> None:
        """An earlier call's ``stopped`` record (a checkpoint's place within the first epoch)."""
        self.earlier, self.spent = progress.get("pace_s"), progress.get("pace_spent_s") or 0.0

    @property
    def measured(self) -> bool:
        """Whether this call trained the end of the first epoch (then its epochs are decided)."""
        return self._train_end is not None

    def _now(self, trainer: Trainer) -> float:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        return self.clock()

    def after_step(self, trainer: Trainer, i: int) -> None:
        """Step ``i`` of the first epoch is done."""
        n = trainer.steps_per_epoch
        if self._first is None:
            self._first = i
        if self._mark is None and i < n - 2 and i >= self._first + max(1, (n - self._first) // 10):
            self._mark = (i, self._now(trainer))
        elif self._mark is not None and i == n - 2:
            self._end = (i, self._now(trainer))
        if i == n - 1:
            self._train_end = self._now(trainer)

    def stopped(self, trainer: Trainer, i: int) -> dict:
        """A time budget stopped the first epoch after step ``i``: what the call that ends it
        needs (the pace timed so far, the seconds spent), for the checkpoint."""
        now = self._now(trainer)
        if self._mark is not None and self._end is None and i > self._mark[0]:
            self._end = (i, now)
        spent = self.spent + (now - self._t0 if self._t0 is not None else 0.0)
        return {"pace_s": self.step_s, "pace_spent_s": max(0.0, spent)}

    @property
    def step_s(self) -> float | None:
        """Seconds a step at the pace timed in this call, else by an earlier one (None: neither)."""
        if self._mark is not None and self._end is not None:
            return (self._end[1] - self._mark[1]) / (self._end[0] - self._mark[0])
        return self.earlier

    def decide(self, trainer: Trainer) -> tuple[int, float, float]:
        """(the epochs to train, the seconds of an epoch at the pace, the warm-up seconds), once
        the first epoch's training and validation are done, before its files."""
        self._decided_at = self.clock()
        self._valid_s = self._decided_at - (self._train_end or self._decided_at)
        return self._fit(trainer, 0.0)

    def with_files(self, trainer: Trainer) -> tuple[int, float, float]:
        """``decide``'s numbers again, an epoch's files (the time since ``decide``) counted."""
        return self._fit(trainer, self.clock() - self._decided_at)

    def _fit(self, trainer: Trainer, files_s: float) -> tuple[int, float, float]:
        assert self._t0 is not None and self._train_end is not None and self._first is not None
        train_s, trained = self._train_end - self._t0, trainer.steps_per_epoch - self._first
        per_step = self.step_s if self.step_s is not None else train_s / trained  # (too few steps: all of them)
        per_epoch = per_step * trainer.steps_per_epoch + self._valid_s + files_s
        # the first epoch's training beyond its steps at the pace, each call's own: the earlier calls' seconds
        # (``spent``) less their steps, and this call's less its own (``spent`` whole counted the earlier calls'
        # steps twice; an earlier call recorded as 0 s leaves this call's excess as it is)
        earlier = max(0.0, self.spent - per_step * (trainer.steps_per_epoch - trained))
        warmup = earlier + max(0.0, train_s - per_step * trained)
        fit = int((self.seconds - warmup) // per_epoch) if per_epoch > 0 else trainer.epochs
        return max(1, min(trainer.epochs, fit)), per_epoch, warmup
