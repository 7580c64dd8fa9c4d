"""The one trainer for every model: Adam, mini-batches, schedules, early stopping, checkpoints.

The loop is deliberately plain (nanoGPT style): data lives in memory as a tensor, each epoch
draws a permutation from a seeded generator, and each step is transform, forward, backward,
step. What happens around those is a piece of its own: the batch source (``batches``), the
finite-loss check and the gradient guard (``step_guard``), the precision (``precision``), DDP
(``data_parallel``), ``--compile`` (``compiled``), and hooks after each step (the moving average
of the weights). The optional features are parts given to the Trainer (``training.parts``), each
of which attaches itself, so that a new training-time feature is a new part, not a new keyword. A run is
repeatable from its seed, and a resumed run ends where the uninterrupted one would have: the
checkpoint holds the optimizer state, every random generator's state and the moving average of
the weights where the run keeps one.

Under torchrun (a process group initialised, ``dgmkit.distributed``) the same loop runs on
every rank: one global batch per step, each rank computing its part through
DistributedDataParallel, so that the steps are those of one process with that batch; rank 0
alone writes the run folder and calls the callbacks.
"""

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeGuard, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from dgmkit import distributed
from dgmkit._io import Terminated, parse_json, sigterm_raises
from dgmkit.data import Dataset, DataTransform, Split
from dgmkit.data.labels import check_shown_classes, class_indices, labels_checked
from dgmkit.data.transforms import VALID_SEED
from dgmkit.devices import dtype_of, half_precision_words, resolve_device
from dgmkit.distributions import complete_data, may_be_incomplete
from dgmkit.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DgmError,
    TrainingError,
    finite_at_least,
    generator_seed,
    plural,
    shown_value,
    whole_at_least,
)
from dgmkit.models.base import GenerativeModel
from dgmkit.models.classifier import Classifier
from dgmkit.objectives.base import Objective
from dgmkit.training.batches import BatchSource, in_precision
from dgmkit.training.checkpoint import check_dtypes, counters_or_none, load_checkpoint, read_metadata
from dgmkit.training.compiled import CompiledOrEager
from dgmkit.training.data_parallel import (
    DataParallel,
    ObjectiveModule,
    check_rows_per_step,
    check_shares,
    rank_device,
    rows_needed,
)
from dgmkit.training.ema import EMA
from dgmkit.training.graphed import StepGraph, capture_cuda
from dgmkit.training.parts import Pace, TimeBudget, TrainingPart, attach_parts
from dgmkit.training.precision import MixedPrecision
from dgmkit.training.run_writer import RunWriter, nonfinite_state
from dgmkit.training.schedules import LRSchedule, kl_weight
from dgmkit.training.step import DeviceNumber, ReducedStep, StepTerms
from dgmkit.training.step_guard import WINDOW, FiniteLossCheck, GradientGuard

__all__ = ["Trainer", "resolve_device", "VALID_SEED"]

log = logging.getLogger(__name__)

# the SIGTERM handler of a fit that defers the signal (``Trainer._sigterm_deferred``), while it does, and
# whether a fork meanwhile blocked the signal around itself
_DEFERRING: dict = {"handler": None, "blocked": False}


def _sigterm_blocked_for_fork() -> None:
    """Before a fork during a fit that defers SIGTERM: the signal blocked in the forking thread, so
    that one sent to the child before its ``_sigterm_default_in_child`` is held (CPython forgets a
    signal that reaches a Python handler between the fork and its own after-fork reset)."""
    handler = _DEFERRING["handler"]
    if handler is not None and signal.getsignal(signal.SIGTERM) is handler:
        _DEFERRING["blocked"] = signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _sigterm_unblocked_in_parent() -> None:
    if _DEFERRING["blocked"]:
        _DEFERRING["blocked"] = False
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _sigterm_default_in_child() -> None:
    """A process forked during such a fit is no fit: SIGTERM ends it (one held since the fork, at once)."""
    if _DEFERRING["blocked"]:
        _DEFERRING["handler"], _DEFERRING["blocked"] = None, False
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


if hasattr(os, "register_at_fork") and hasattr(signal, "pthread_sigmask"):  # (POSIX)
    os.register_at_fork(
        before=_sigterm_blocked_for_fork,
        after_in_parent=_sigterm_unblocked_in_parent,
        after_in_child=_sigterm_default_in_child,
    )
_PROBE_ROWS = 1024  # training rows transformed once, before the first step, to check them against the model


def _largest_magnitude(x: torch.Tensor) -> float:
    """The largest |value| of ``x`` (missing entries, NaN, left out; an infinite one is inf)."""
    x = x if x.is_floating_point() else x.float()
    return float(x.abs().nan_to_num(nan=0.0, posinf=math.inf).max()) if x.numel() else 0.0


def _split(name: str, data: object) -> Split:
    """``data`` as a Split (a tensor of images is one without labels), of one datapoint or more."""
    if isinstance(data, torch.Tensor):
        data = Split(data)
    if not isinstance(data, Split):
        hint = ""
        if isinstance(data, Dataset):
            hint = f": a Dataset's splits are its train, valid and test (give dataset.{name})"
        elif isinstance(data, np.ndarray):
            hint = ": torch.as_tensor(x) makes a tensor of a NumPy array"
        elif isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
            hint = ": Split(x, y) (dgmkit.data) holds images and their labels"
        raise TypeError(
            f"the Trainer's {name} data: a dgmkit.data.Split or a tensor of images, got {type(data).__name__}{hint}"
        )
    if len(data.x) == 0:
        without = "; give valid=None to train without validation" if name == "valid" else ""
        raise DataError(f"the Trainer's {name} data hold no datapoint{without}")
    return data


def _check_model(objective: Objective, model: torch.nn.Module) -> None:
    """The model must be one the objective trains, in float32 or float64: one made half precision
    (``.half()``, ``.bfloat16()``) met torch's "mat1 and mat2 must have the same dtype" at the
    first step (half precision is autocast's: ``Precision("bf16")`` on CUDA)."""
    if problem := half_precision_words(model):
        raise ConfigError(f"the Trainer: {problem}")
    objective.check_model(model)


class Trainer:
    """Trains ``model`` by minimizing ``objective(model, x, beta).loss`` with Adam.

    ``objective`` (an ``objectives.Objective``) returns named per-example terms with at least
    ``loss`` and the score it names (``objective.score``: ``elbo``, ``iwae``, ``log_px``, ...):
    the metrics hold ``train_<score>`` and ``valid_<score>``, and the validation score decides
    early stopping and the best checkpoint (without ``valid``, the training score does, and the
    early-stopping line says so). ``run_dir`` (optional) receives, through a
    ``RunWriter``, ``checkpoint.safetensors`` each epoch, ``best.safetensors`` whenever the
    validation score improves, and one JSON line per epoch in ``metrics.jsonl``; a folder that
    holds another run's files is refused by ``fit`` unless ``resume`` went on from them. ``config`` is
    the run record stored in every checkpoint so that a run folder describes itself
    (``config.run.run_record(cfg, dataset, transform)``; without it ``dgmkit.load`` cannot read
    the folder back). The scores are of the data as ``transform`` gives them: for uniformly
    dequantized integers, nats of the continuous y, D log L above the nats of the integers
    (``evaluation.evaluate(..., log_volume=transform.log_volume)`` reports the latter).
    ``diagnostics(model, valid_x)`` adds its dict to each epoch's validation metrics (the KL
    per latent dimension and the active units of latent variable models).

    ``parts`` (``training.parts``) are the optional training-time features: the KL weight's
    warm-up, gradient clipping and skipping, a moving average of the weights, the precision,
    ``torch.compile``, mutated or labelled batches, a time budget. With a ``MovingAverage``
    (updated after every step taken; a step skipped by the step guard or the fp16 gradient
    scaler leaves it as it is), validation, the diagnostics and ``best.safetensors`` use the
    averaged weights, and each metrics line holds ``ema``; ``checkpoint.safetensors`` holds the
    raw weights and the average, so that a resumed run continues both. ``model`` holds the raw
    weights, also after ``fit`` (so that training can go on): evaluate the average within
    ``with trainer.ema_weights():`` or from ``best.safetensors``.
    """

    @torch.inference_mode(False)  # (its counters, made within a caller's inference_mode, could not be updated)
    def __init__(
        self,
        model: torch.nn.Module,
        objective: Objective,
        train: Split | torch.Tensor,
        transform: DataTransform,
        *,
        valid: Split | torch.Tensor | None = None,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 1e-3,
        lr_schedule: str | LRSchedule = "constant",
        weight_decay: float = 0.0,
        patience: int | None = None,
        seed: int = 0,
        device: str = "auto",
        parts: Iterable[TrainingPart] = (),
        run_dir: str | Path | None = None,
        config: dict | None = None,
        progress: bool = True,
        eval_batch_size: int = 1000,
        callbacks: list[Callable[["Trainer", dict], None]] | None = None,
        diagnostics: Callable[[Any, torch.Tensor], dict] | None = None,
    ):
        epochs, batch_size, lr, weight_decay, patience, seed, eval_batch_size = _check_settings(
            epochs, batch_size, lr, weight_decay, patience, seed, eval_batch_size
        )
        train, valid = _split("train", train), None if valid is None else _split("valid", valid)
        self.lr_schedule = lr_schedule if isinstance(lr_schedule, LRSchedule) else LRSchedule(lr_schedule)  # validated there
        self.epochs, self.batch_size, self.lr, self.patience, self.seed = epochs, batch_size, lr, patience, seed
        self.dist = distributed.current()
        self.device = resolve_device(device)
        if self.dist.parallel:
            self.device = rank_device(self.dist, self.device)
            sizes = {"batch_size": batch_size, "the training split": len(train)}
            check_shares(self.dist, {**sizes, **({"the validation split": len(valid)} if valid is not None else {})})
        if isinstance(objective, type):  # (ELBO for ELBO(1): "check_model() missing 1 required positional argument")
            name = objective.__name__
            raise TypeError(f"the objective is the class {name}; give an instance of it, {name}(...)")
        # (a loss function: "'function' object has no attribute 'check_model'"; a wrapper that passes an Objective's
        # attributes on is one)
        if not isinstance(objective, Objective) and not all(hasattr(objective, a) for a in ("check_model", "score")):
            raise TypeError(
                f"the objective must be a dgmkit.objectives.Objective (ELBO(1), IWAE(5), MaximumLikelihood(), ...), got "
                f"{type(objective).__name__}: for a loss of your own, subclass Objective, whose __call__(model, x, beta) "
                "returns a NamedTuple of per-example terms, the loss and the score it names (objectives.base)"
            )
        if not isinstance(transform, DataTransform):  # (None or "bernoulli": "'NoneType' object is not callable")
            raise TypeError(
                f"the Trainer's transform must be a dgmkit.data.DataTransform, got {shown_value(transform)}: "
                "make_transform(likelihood, dataset) makes the one a likelihood needs, and DataTransform('continuous', "
                "None) gives the data as they are"
            )
        check_rows_per_step(objective, batch_size, self.dist, len(train))
        self.model = model.to(self.device)
        _check_model(objective, model)
        self.objective, self.transform, self.valid = objective, transform, valid
        self.score = objective.score
        objective.setup(len(train))
        self.optimizer = _adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        # what the step guard reads, listed once (a walk of a deep model's modules in every step
        # costs hundreds of microseconds of the host's time, which a GPU step waits for)
        self._trained = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.steps_per_epoch = math.ceil(len(train) / batch_size)
        if 0 < len(train) % batch_size < rows_needed(objective, self.dist):
            # a last batch too small to share between the ranks, or for the objective's estimate (a WAE's MMD of one
            # code is no penalty: that step trained a plain autoencoder), is left out
            self.steps_per_epoch -= 1
        self._data(train, valid)
        self._counters_from_start()
        self._output(run_dir, config, progress, eval_batch_size, callbacks, diagnostics)
        self._default_parts()
        attach_parts(self, parts)

    def _labels(self, train: Split, valid: Split | None) -> None:
        """Objectives that take labels get them (-1: hidden) with every batch (and validation's
        all, to report accuracy)."""
        self.train_y, self._valid_y = None, None
        if not self.objective.takes_labels:
            return
        if train.y is None:
            raise ConfigError(f"{type(self.objective).__name__} trains on labels, and the training data have none")
        self.train_y = _class_labels(train.y, self.model, "the training split")
        if isinstance(self.model, Classifier):  # (labels all of class 0 trained an M2 that names every datapoint 0)
            check_shown_classes(self.train_y, self.model.num_classes, "the training split")
        self.train_y = self.train_y.to(self.device)
        if valid is not None and valid.y is not None:
            self._valid_y = _class_labels(valid.y, self.model, "the validation split").to(self.device)

    def _data(self, train: Split, valid: Split | None) -> None:
        """The splits on the device, the labels where the objective takes them, and the batch
        source, with its own seeded generator."""
        self.transform.check_stored(train.x)  # every row (the probe below transforms the first _PROBE_ROWS)
        self.train_x = train.x.to(self.device)
        # looked for once here, so that no step looks for missing entries (NaN) in its batch: on a
        # GPU each look waits for the device
        self._complete = not any(may_be_incomplete(t) for t in (train.x, *(() if valid is None else (valid.x,))))
        if not (self._complete or self.objective.handles_missing):  # (as dgm train and dgmkit.train refuse them)
            raise DataError(
                f"the data hold missing entries (NaN), and {type(self.objective).__name__} cannot train on incomplete "
                "data: train a VAE by dgmkit.objectives.MIWAE (the likelihood of the observed entries), or fill them in"
            )
        self._labels(train, valid)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        scale = None if train.x_scale is None else train.x_scale.to(self.device)
        dtype = dtype_of(self.model)
        self.batches = BatchSource(
            self.train_x,
            self.train_y,
            self.transform,
            self.generator,
            self.batch_size,
            self.steps_per_epoch,
            scale=scale,
            dtype=dtype,
        )
        if self.train_y is not None:
            self.objective.setup_labels(self.batches.labelled_count)
        self._valid_x = None
        if valid is not None:
            # drawn on the CPU, as dgm eval draws it: the same binarization or noise on any device (a CUDA
            # generator of the same seed draws other bits: the best checkpoint was chosen on other data)
            valid_x = self.transform.held_out(valid.x)
            self._valid_x = in_precision(valid_x, dtype).to(self.device)
        if isinstance(self.model, GenerativeModel):  # values the likelihood does not define: refused before a step
            probe = self.transform(self.train_x[:_PROBE_ROWS], torch.Generator(device=self.device).manual_seed(0))
            self.model.check_data(in_precision(probe, dtype))
            if self._valid_x is not None:
                self.model.check_data(self._valid_x)

    def _counters_from_start(self) -> None:
        """The counters a checkpoint restores, and the random streams, as a new run has them.
        The trainer owns its random streams: the global ones (used by rsample) are swapped in
        around each epoch, so other code running between epochs or other trainers in the same
        process cannot change this run, and a checkpoint can restore them exactly."""
        self.epoch, self.step = 0, 0
        self.best_valid, self.best_epoch, self.bad_epochs = -math.inf, -1, 0
        self._record_pending = False
        self.budget_spent = False  # whether the last fit stopped for the time budget
        self._terminated = False  # whether a SIGTERM stops the fit (any rank's, agreed: ``_stop_agreed``)
        self._sigterm_heard = False  # whether this process was sent one during the fit
        self._deferring = False  # whether the fit defers SIGTERM (on every rank alike: ``_sigterm_deferred``)
        self._vote = _StopVote(self.dist.is_main)
        self._deadline: float | None = None
        self._progress: dict | None = None  # where an epoch stopped within (its checkpoint holds it)
        self._torch_state = torch.Generator().manual_seed(self._rank_seed(0)).get_state()
        self._cuda_state = None
        if self.device.type == "cuda":  # (each rank its own stream, as on the CPU)
            self._cuda_state = torch.Generator(device=self.device).manual_seed(self._rank_seed(0)).get_state()
        self.streams_moved = False  # whether a resume found the run's streams drawn on another kind of device
        self.threads_moved: tuple[int, int] | None = None  # a resume's CPU threads, before and now, where they differ
        self.processes_moved: tuple[int, int] | None = None  # a resume's data-parallel processes, likewise

    def _output(
        self,
        run_dir: str | Path | None,
        config: dict | None,
        progress: bool,
        eval_batch_size: int,
        callbacks: list[Callable[["Trainer", dict], None]] | None,
        diagnostics: Callable[[Any, torch.Tensor], dict] | None,
    ) -> None:
        """Where the run is written (rank 0 alone writes; the others read it, to resume), what
        is told after each epoch, and what validation adds."""
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.config = config or {}
        self.writer = RunWriter(self.run_dir, self.config) if self.run_dir is not None and self.dist.is_main else None
        self._folder_checked = False  # whether the folder was found free of another run's files (or this run resumed)
        self.progress, self.eval_batch_size = progress, eval_batch_size
        self.callbacks = list(callbacks or [])
        self.diagnostics = diagnostics
        self.resume_command: str | None = None  # the command that resumes the run, named where a SIGTERM stops it

    def _default_parts(self) -> None:
        """The pieces that parts replace, as a run without parts has them, and the forward pass
        (under torchrun DDP around it: its construction gives every rank rank 0's weights)."""
        self.beta, self.warmup_epochs = 1.0, 0.0
        self.guard = GradientGuard(on_device=self.device.type == "cuda")
        self.model_trains_in_bf16 = bool(getattr(self.model, "trains_in_bf16", False))
        self.amp = MixedPrecision("auto", self.device, self.model_trains_in_bf16)
        self.ema: EMA | None = None
        self.budget: TimeBudget | None = None
        self.pace: Pace | None = None  # (TrainFor: the epochs from the first epoch's pace)
        self._paced: tuple | None = None  # its decision, until the first epoch's files are counted
        # called after every step with whether it was taken (a bool, or on a GPU a boolean tensor)
        self.step_hooks: list[Callable[[bool | torch.Tensor], None]] = []
        self.graph: StepGraph | None = None  # (GraphStep: the whole step captured as a CUDA graph)
        self._weight = DeviceNumber(self.device)  # the KL weight, as a captured step reads it
        self._graph_ready = False  # (_prepare_graph done)
        self._totals = (torch.zeros((), device=self.device), torch.zeros((), device=self.device))  # the epoch's sums
        self._nonfinite = torch.zeros((), dtype=torch.long, device=self.device)  # captured steps with a loss not finite
        self.parallel = DataParallel(self.model, self._objective, self.device, self.dist) if self.dist.parallel else None
        self.gradient_transport = None if self.parallel is None else self.parallel.transport
        # the objective's terms of a batch, reduced to what the step needs (training/step.py)
        self.forward: Callable = ReducedStep(
            self.parallel.module if self.parallel is not None else ObjectiveModule(self.model, self._objective),
            self.score,
            keep_graph=self.parallel is not None,
            autocast=lambda: self.amp.autocast() if self.graph is None else self.amp.autocast(cache=False),
        )
        every = 1 if self.device.type == "cpu" else 50  # a value read on a GPU waits for it: less often
        self.loss_check = FiniteLossCheck(every, self.parallel is not None, self._nan_message)

    @property
    def precision(self) -> str:
        """The floating point the forward pass computes in (``fp32``, ``bf16``, ``fp16``)."""
        return self.amp.name

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        """The fp16 gradient scaler (None in other precisions)."""
        return self.amp.scaler

    @property
    def steps_into_epoch(self) -> int:
        """Steps of the current epoch already taken (a run stopped, or resumed, within an epoch)."""
        return self._progress["step"] if self._progress else 0

    @property
    def skipped_steps(self) -> int:
        """Updates skipped in the whole run (the ``StepGuard``'s ``skip_norm``, ``skip_factor``)."""
        return self.guard.skipped_total

    def _rank_seed(self, epoch: int) -> int:
        """The seed of the global random stream (the model's own draws): the run's seed in one
        process or on rank 0; on another rank one derived from the seed, the rank and the epoch
        it starts at, so that ranks draw independent noise and a resume with any number of
        processes is repeatable."""
        if self.dist.is_main:
            return self.seed
        return (self.seed * 1_000_003 + self.dist.rank * 7_919 + epoch * 104_729) % 2**62

    # ----------------------------------------------------------------- state
    def _rng_state(self, ranks: list | None = None) -> dict[str, torch.Tensor]:
        """The random states a checkpoint holds; ``ranks``: every rank's (torch, cuda) global
        states, in rank order, of a data-parallel run (``torch_ranks``, ``cuda_ranks``), so
        that a resume with as many processes continues every rank's stream exactly."""
        state = {"torch": self._torch_state, "data": self.generator.get_state()}
        if self._progress:
            state["epoch_perm"] = self._progress["perm"]  # the order of the epoch under way
        if self._cuda_state is not None:
            state["cuda"] = self._cuda_state
        if ranks is not None and len(ranks) > 1:
            state["torch_ranks"] = torch.stack([t for t, _ in ranks])
            if all(c is not None for _, c in ranks):
                state["cuda_ranks"] = torch.stack([c for _, c in ranks])
        return state

    def _rank_states(self, rng: dict[str, torch.Tensor], path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's (torch, cuda) global random states from a checkpoint's ``rng``: its own
        where the checkpoint holds every rank's and the number of processes is the same; else
        rank 0 the saved one and another rank a stream derived from the seed, the rank and the
        epoch (an older checkpoint, or a resume with another number of processes)."""
        cuda = rng.get("cuda") if self.device.type == "cuda" else None
        ranks, cudas = rng.get("torch_ranks"), rng.get("cuda_ranks")
        n, r = self.dist.world_size, self.dist.rank
        if isinstance(ranks, torch.Tensor) and ranks.dim() == 2 and len(ranks) == n and n > 1:
            try:  # every rank's state checked on every rank: all refuse alike, before any trains (the others
                if ranks.dtype != torch.uint8 or not torch.equal(ranks[0], rng["torch"]):  # wait for it otherwise)
                    raise ValueError("rank 0's is not the run's")
                for state in ranks:
                    torch.Generator().set_state(state.clone())  # torch's own check of a state (RuntimeError)
            except (RuntimeError, ValueError):
                raise CheckpointError(f"{path} holds malformed random states of its ranks") from None
            own = ranks[r].clone()
            if self.device.type == "cuda" and isinstance(cudas, torch.Tensor) and cudas.dim() == 2 and len(cudas) == n:
                cuda = cudas[r].clone()
            return own, cuda
        if self.dist.is_main:
            return rng["torch"], cuda
        seed = self._rank_seed(self.epoch)
        cuda = torch.Generator(device=self.device).manual_seed(seed).get_state() if self.device.type == "cuda" else None
        return torch.Generator().manual_seed(seed).get_state(), cuda

    @contextlib.contextmanager
    def _own_rng(self):
        """Run with this trainer's global RNG state, and keep where it ends."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self._torch_state)
            if self._cuda_state is not None:
                torch.cuda.set_rng_state(self._cuda_state, self.device)
            try:
                yield
            finally:
                self._torch_state = torch.get_rng_state()
                if self._cuda_state is not None:
                    self._cuda_state = torch.cuda.get_rng_state(self.device)

    def _counters(self) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "best_valid": self.best_valid if math.isfinite(self.best_valid) else None,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            **self.guard.state(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            **({"ema_updates": self.ema.updates} if self.ema is not None else {}),
            **({"epoch_progress": {k: v for k, v in self._progress.items() if k != "perm"}} if self._progress else {}),
            **({"cpu_threads": torch.get_num_threads()} if self.device.type == "cpu" else {}),
            "processes": self.dist.world_size,
        }

    def ema_weights(self) -> contextlib.AbstractContextManager:
        """Within the block, ``model`` holds the moving average of the weights (where the run
        keeps one; else its own weights); the raw weights come back afterwards."""
        return self.ema.swapped(self.model) if self.ema is not None else contextlib.nullcontext(self.model)

    def save(self, name: str = "checkpoint.safetensors", with_state: bool = True) -> None:
        """Write ``name`` into the run folder: the raw weights with the training state (the
        optimizer, the random generators and the moving average), or without it
        (``with_state=False``) the weights to evaluate, the moving average where there is one.
        Every rank of a data-parallel run calls it (the random states are gathered)."""
        # every rank's random streams, gathered by all ranks together (only rank 0 writes)
        ranks = distributed.all_gather_object((self._torch_state, self._cuda_state)) if with_state else None
        if self.writer is None:
            return
        if not with_state:
            with self.ema_weights():
                self.writer.checkpoint(self.model, name, counters=self._counters())
            return
        self.writer.checkpoint(
            self.model,
            name,
            optimizer=self.optimizer,
            rng=self._rng_state(ranks),
            counters=self._counters(),
            ema=self._ema_state(),
        )

    def resume(self, path: str | Path | None = None) -> None:
        """Restore model, optimizer, counters, random generators and the moving average of the
        weights from a checkpoint; a checkpoint that does not fit this model or holds malformed
        state is refused (CheckpointError) before anything in the run folder changes. A run with
        a ``MovingAverage`` needs the checkpoint's average (one written without it cannot be
        continued exactly, so it is refused); one without it ignores it."""
        if path is None and self.run_dir is None:
            raise ValueError("resume needs the checkpoint's path: this trainer has no run folder")
        path = Path(path) if path is not None else cast(Path, self.run_dir) / "checkpoint.safetensors"
        ckpt = load_checkpoint(path)
        t = _checked_training_state(ckpt, path, self.ema)
        if t["epoch"] > self.epochs:  # (fit would train nothing, and say the run's epochs were the ones asked)
            raise ConfigError(
                f"{path} has trained {t['epoch']} epochs, more than the {self.epochs} asked for: a run is not shortened; "
                f"give epochs {t['epoch']} or more to go on"
            )
        rng = ckpt["rng"]
        self._load_states(ckpt, t, path)
        self.epoch, self.step = t["epoch"], t["step"]
        threads = t.get("cpu_threads")  # (checked; absent where the run trained on a GPU, or before it was kept)
        now = torch.get_num_threads()
        self.threads_moved = (threads, now) if self.device.type == "cpu" and threads not in (None, now) else None
        before = processes_of(t, rng)
        self.processes_moved = (before, self.dist.world_size) if before not in (None, self.dist.world_size) else None
        self.best_valid = t["best_valid"] if t.get("best_valid") is not None else -math.inf
        self.best_epoch, self.bad_epochs = t["best_epoch"], t["bad_epochs"]
        self.guard.load_state(t["skipped_steps"], t.get("recent_grad_norms", []))
        self._torch_state, cuda = self._rank_states(rng, path)
        if cuda is not None:
            self._cuda_state = cuda
        elif self.device.type == "cuda" and rng.get("cuda") is None:  # a run on the CPU until now: a CUDA stream of its own
            seed = (self._rank_seed(self.epoch) * 1_000_003 + self.epoch * 104_729 + 2) % 2**62
            self._cuda_state = torch.Generator(device=self.device).manual_seed(seed).get_state()
        self._progress = self._place_checked(t, rng.get("epoch_perm"), path)
        self._nonfinite.zero_()
        if self.graph is not None and self.graph.captured:  # (it holds the optimizer's state just replaced: again)
            self.graph = StepGraph(self.graph_step, self.graph.capture, self.graph.undo, self.graph.keep)
        refused = None  # rank 0's files refused there (a malformed metrics line): refused on every rank alike
        if self.writer is not None:
            try:
                self.writer.truncate_metrics(self.epoch)
                self._record_pending = True  # config.json gets the resumed settings with the first epoch's files
                self._restore_best(path)
            except DgmError as e:
                refused = (type(e), str(e))
        shared = cast(tuple | None, distributed.broadcast_object(refused))  # (the others would wait for rank 0)
        if shared is not None:
            kind, said = shared
            raise kind(said)
        self._folder_checked = True  # (the folder's files are this run's, which goes on)

    def _restore_best(self, path: Path) -> None:
        """best.safetensors written again from the resumed checkpoint where that checkpoint ends on
        the run's best epoch and best.safetensors does not hold it (gone, unreadable, or of an
        earlier epoch): the run was stopped between the two writes of that epoch's end, the
        checkpoint first. Its weights (the moving average's, where there is one) are the best's."""
        assert self.writer is not None
        if self._progress is not None or self.best_epoch != self.epoch or self.epoch < 1:
            return
        best = cast(Path, self.run_dir) / "best.safetensors"  # (the run folder's, where the writer writes it)
        try:
            held = counters_or_none(parse_json(read_metadata(best)["trainer"]))
        except (CheckpointError, KeyError, ValueError):
            held = None
        if held is not None and held["epoch"] == self.epoch:
            return
        log.warning(
            "%s did not hold the best epoch (%d) that %s ends on (the run was stopped between their writes): "
            "written again from it",
            best,
            self.epoch,
            path.name,
        )
        self.save("best.safetensors", with_state=False)

    def _load_states(self, ckpt: dict, t: dict, path: Path) -> None:
        """Load the model, optimizer, data stream, scaler and moving average from checked checkpoint parts;
        on any misfit or non-finite value the data stream is put back and CheckpointError raised."""
        rng = ckpt["rng"]
        own_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        check_dtypes(self.model, ckpt["model"], path)
        generator_state = self.generator.get_state()
        try:
            self.model.load_state_dict(ckpt["model"])
            _check_optimizer_indices(ckpt["optimizer"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            for group, own in zip(self.optimizer.param_groups, own_groups):
                group.update(own)  # the hyper-parameters are the run's (its config), not the file's
            self.streams_moved = _drawn_elsewhere(rng["data"], generator_state)
            if self.streams_moved:  # a new stream, the same on every resume of this epoch
                self.generator.manual_seed(((self.seed + 1) * 1_000_003 + t["epoch"] * 104_729 + 1) % 2**62)
            else:
                self.generator.set_state(rng["data"])
            torch.Generator().set_state(rng["torch"])  # checks the state before it is used
            if self.scaler is not None and t.get("scaler"):
                self.scaler.load_state_dict(t["scaler"])
            taken = t["step"] - t["skipped_steps"]  # (a skipped step updates neither the optimizer nor the average)
            if self.ema is not None:
                updates = t.get("ema_updates")
                if isinstance(updates, int) and updates > taken:
                    raise ValueError(f"the moving average counts {updates} updates in {plural(taken, 'step')} taken")
                self.ema.load_state_dict({"updates": updates, "weights": ckpt["ema"]})
            _check_optimizer_state(self.optimizer, taken=taken)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            self.generator.set_state(generator_state)
            self.streams_moved = False
            raise CheckpointError(f"{path} does not fit this run's model and optimizer: {_first_line(e)}") from None
        bad = nonfinite_state(self.model, self.optimizer, self._ema_state())
        if bad is not None:
            self.generator.set_state(generator_state)
            raise CheckpointError(f"{path}: {bad} holds NaN or inf; it cannot be resumed")

    # ----------------------------------------------------------------- loop
    def _train_epoch(self) -> dict:
        self.model.train()
        lr = self.lr_schedule.learning_rate(self.lr, self.epoch, self.epochs)
        for group in self.optimizer.param_groups:
            if torch.is_tensor(group["lr"]):  # (GraphStep's: the captured update reads it)
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        perm, start, beta, total_loss, total_score = self._start_epoch()
        with self._progress_bar() as bar:
            bar.update(start)
            for i, (x, y) in enumerate(self.batches.epoch(perm, start), start):
                # by the place in the epochs (not the steps taken: a resume on another number of ranks may
                # change an epoch's steps by one)
                beta = kl_weight(self.beta, self.warmup_epochs, self.epoch * self.steps_per_epoch + i, self.steps_per_epoch)
                self.objective.update(self.step)
                out: StepTerms | None = None
                if self.graph is not None and self.graph.takes(x, y):
                    self._weight.set(beta)
                    out = self.graph(x, y)  # None: it could not be captured (said once), the step runs as it is
                    if out is not None and (i + 1) % self.loss_check.every == 0:
                        self._check_captured_losses(self.step + 1)
                if out is None:
                    out = self._step(x, y, beta, i)
                loss = out.loss
                if self.pace is not None and self.epoch == 0:
                    self.pace.after_step(self, i)
                self.step += 1
                bar.update(1)
                if self.progress and i % 50 == 0:
                    bar.set_postfix(loss=f"{loss.item():.2f}", beta=f"{beta:.2f}", refresh=False)
                if i + 1 < self.steps_per_epoch and self._stops_within():
                    self._check_captured_losses(self.step)
                    raise _StopWithin(self._epoch_progress(i + 1, total_loss, total_score, beta))
        self._check_captured_losses(self.step)
        return self._epoch_metrics(total_loss, total_score, beta)

    def _check_captured_losses(self, step: int) -> None:
        """Stop where a step of ``GraphStep`` had a loss that was not finite by ``step`` of the run
        (such a step takes no update, and its loss is left out of the epoch's sums)."""
        if self.graph is None:
            return
        bad = int(self._nonfinite)
        if bad:
            raise TrainingError(
                f"the training loss was not finite in {bad} step(s) by epoch {self.epoch + 1}, step {step}, which "
                f"took no update; {self._kept()}. Try a lower --lr or --grad-clip"
            )

    def _step(self, x: torch.Tensor, y: torch.Tensor | None, beta: float | torch.Tensor, i: int,
              graphed: bool = False) -> StepTerms:  # fmt: skip
        """One training step on the batch ``x`` (labels ``y``), step ``i`` of the epoch: forward,
        backward, the step guard, the update, the hooks after it, the epoch's sums. ``graphed``:
        the step that ``GraphStep`` captures (``beta`` a tensor; the update taken on the device
        where the loss is finite, such steps counted: ``_check_captured_losses``)."""
        rows = x.shape[0]  # of the global batch
        if self.parallel is not None:
            x, y = self.parallel.share(x, y, cast(float, beta))  # (a number: no step is captured under torchrun)
        # (GraphStep's last warm-up step checks here that the model's passes read nothing back to the host)
        with self.graph.strict() if graphed and self.graph is not None else contextlib.nullcontext():
            out: StepTerms = self.forward(x, beta, y)
            loss = out.loss
            self.optimizer.zero_grad(set_to_none=True)
            with contextlib.nullcontext() if graphed else self.loss_check.around_backward(i, loss, out.losses, rows):
                step_loss = loss if self.parallel is None else self.parallel.step_loss(cast(torch.Tensor, out.losses), rows)
                self.amp.backward(step_loss, self.optimizer)
        if self.parallel is not None:
            self.parallel.check_gradients(self.step)
        take = self.guard.take(self._trained)
        finite = None
        if graphed:  # (a replay cannot stop within the step: a loss that is not finite takes no update, and is counted)
            finite = torch.isfinite(loss.detach())
            take = finite if take is True else take & finite
            self._nonfinite += ~finite
        taken = self.amp.step(self.optimizer, take, tell_taken=bool(self.step_hooks))
        for hook in self.step_hooks:
            hook(taken)
        total_loss, total_score = self._totals
        if finite is None:
            total_loss += out.loss_sum
            total_score += out.score_sum
        else:
            total_loss += torch.where(finite, out.loss_sum, 0.0)
            total_score += torch.where(finite, out.score_sum, 0.0)
        # detached: a graph kept alive past its step (by the loop's ``out``, by the captured step's outputs)
        # keeps its parameters' gradient accumulators from the stream it ran on, and a later step on another
        # stream (an uncaptured short batch after a capture on the side stream) then waits for it
        return StepTerms(out.loss.detach(), None if out.losses is None else out.losses.detach(), out.loss_sum.detach(),
                         out.score_sum.detach())  # fmt: skip

    def graph_step(self, x: torch.Tensor, y: torch.Tensor | None) -> StepTerms:
        """The step that ``GraphStep`` captures: ``_step`` with the KL weight as a tensor."""
        return self._step(x, y, self._weight.tensor, -1, graphed=True)

    def _prepare_graph(self) -> None:
        """Before training with ``GraphStep``: what the captured step needs of the other parts
        (or, where it cannot be had, the step uncaptured, said once)."""
        if self.graph is None or self._graph_ready:
            return
        self._graph_ready = True
        why = (
            "it needs a CUDA device" if self.device.type != "cuda" and self.graph.capture is capture_cuda
            else "not under torchrun" if self.parallel is not None
            else "not with fp16's gradient scaler" if self.amp.scaler is not None
            else "it needs the fused Adam (which skips an update on the device)" if not self.optimizer.defaults.get("fused")
            else "this model's step changes on the host from step to step (a MADE of several masks)"
            if isinstance(self.model, GenerativeModel) and not self.model.fixed_step
            else None
        )  # fmt: skip
        if why is not None:
            log.warning("--graph-step: %s; the step runs uncaptured", why)
            self.graph = None
            return
        forward: Any = self.forward  # the compiled pass, under the parts that wrap it (channels-last), without CUDA graphs:
        while forward is not None and not isinstance(forward, CompiledOrEager):  # they are within the step's
            forward = getattr(forward, "forward", None)
        if forward is not None:
            forward.without_graphs()
        for group in self.optimizer.param_groups:  # read by the captured update, changed in place by the schedule
            if not torch.is_tensor(group["lr"]):
                group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
            group["capturable"] = True
        if self.guard.skips:  # decided on the device, each step's norm logged there (read once an epoch)
            self.guard.on_device = True
            self.guard.reserve(self.steps_per_epoch + 1, self.device)
        # (torch warns once when a capturable optimizer steps uncaptured: the warm-up steps do, by design)
        self.optimizer._warned_capturable_if_run_uncaptured = True
        self.graph.undo, self.graph.keep = self._uncaptured, self._kept_for_a_rerun

    def _kept_for_a_rerun(self) -> Callable[[], None]:
        """The random streams and the model's buffers as they are, and what puts them back."""
        cpu = torch.get_rng_state()
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        buffers = [(b, b.detach().clone()) for b in self.model.buffers()]

        def restore() -> None:
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, self.device)
            with torch.no_grad():
                for b, kept in buffers:
                    b.copy_(kept)

        return restore

    def _uncaptured(self) -> None:
        """Where the step could not be captured: the optimizer as it was set up before."""
        for group in self.optimizer.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"] = float(group["lr"])
            group["capturable"] = False

    def _start_epoch(self) -> tuple[torch.Tensor | None, int, float, torch.Tensor, torch.Tensor]:
        """Where the epoch starts: (the data order or None for a new one, the first step, the KL
        weight, the sums of loss and score so far); from the start, or, for an epoch that stopped
        within (``--time-budget``, a SIGTERM), from where it stopped."""
        total_loss, total_score = self._totals  # (the same tensors every epoch: a captured step adds to them)
        total_loss.zero_()
        total_score.zero_()
        self.guard.start_epoch()
        progress, self._progress, perm, start, beta = self._progress, None, None, 0, self.beta
        if progress is not None:
            perm, start, beta = progress["perm"].to(self.device), progress["step"], progress["beta"]
            sums = self._resumed_sums(progress)
            if sums is not None:
                total_loss.fill_(sums[0])
                total_score.fill_(sums[1])
            norms = [math.nan if v is None else v for v in progress["norms"]]
            self.guard.load_epoch(progress["skipped"], norms, progress["threshold"])
            if self.pace is not None and self.epoch == 0:  # the pace an earlier call timed in the first epoch
                self.pace.resume_from(progress)
        self._epoch_share = (self.steps_per_epoch - start) / self.steps_per_epoch  # of the epoch trained in this call
        return perm, start, beta, total_loss, total_score

    def _resumed_sums(self, progress: dict) -> tuple[float, float] | None:
        """The sums of loss and score of the epoch so far that this rank goes on from (the ranks'
        are added at the epoch's end): its own where the place holds every rank's, of as many
        processes (added as in the uninterrupted run: its metrics too are bit for bit); else the
        whole on rank 0 and none on the others."""
        ranks = progress.get("rank_sums")
        if ranks is not None and len(ranks) == self.dist.world_size > 1:
            loss, score = ranks[self.dist.rank]
            return loss, score
        return (progress["loss_sum"], progress["score_sum"]) if self.dist.is_main else None

    def images_per_s(self, seconds: float) -> float:
        """The epoch's throughput, had its training part taken ``seconds``: the rows it trains on
        (the labelled rows drawn into every batch too, as ``train_loss`` counts them), of the part
        of the epoch this call trained."""
        return self.batches.rows_per_epoch * self._epoch_share / seconds

    def _out_of_time(self) -> bool:
        """Whether --time-budget has run out. Data-parallel ranks decide together, by rank 0's
        clock: here at an epoch's end; within one at their votes (``_stops_within``)."""
        if self._deadline is None or self.budget is None:
            return False
        return bool(distributed.broadcast_object(self._past_deadline()))

    def _past_deadline(self) -> bool:
        """Whether the time budget has run out on this process's clock (no word with the other ranks)."""
        return self._deadline is not None and self.budget is not None and self.budget.clock() >= self._deadline

    def _epoch_progress(self, steps: int, total_loss: torch.Tensor, total_score: torch.Tensor, beta: float) -> dict:
        """What a checkpoint within an epoch keeps, so that --resume goes on from the next step.
        Every rank calls it (data-parallel ranks stop within an epoch together): the sums so far are
        the ranks' added, and each rank's own (``_resumed_sums``)."""
        ranks = cast(list[list[float]], distributed.all_gather_object([float(total_loss), float(total_score)]))
        return {
            "step": steps,
            "loss_sum": math.fsum(loss for loss, _ in ranks),
            "score_sum": math.fsum(score for _, score in ranks),
            **({"rank_sums": ranks} if len(ranks) > 1 else {}),
            "beta": float(beta),
            "skipped": self.guard.epoch_skipped,
            "norms": [v if math.isfinite(v) else None for v in self.guard.epoch_norms],  # None: not finite
            "threshold": self.guard.epoch_threshold if math.isfinite(self.guard.epoch_threshold) else None,
            "perm": self.batches.perm.detach().cpu().clone(),
            **(self.pace.stopped(self, steps - 1) if self.pace is not None and self.epoch == 0 else {}),
        }

    def _checked_progress(self, p: object, perm: object, path: Path) -> dict | None:
        """A checkpoint's place within an epoch, type-, range- and consistency-checked (None: none).
        The place counts global batches, which are the same on any number of processes (one process
        stops within an epoch by its time budget or a SIGTERM, data-parallel ranks together by
        either): at most the steps of one process. Where ranks go on from a place of fewer
        processes and leave out a last batch too small to share, it may be after their last step
        (the epoch then goes on with no step left, as the ranks' epochs leave that batch out)."""
        if p is None and perm is None:
            return None
        n, steps = len(self.train_x), math.ceil(len(self.train_x) / self.batch_size)
        bad = CheckpointError(f"{path}: the place within an epoch it records is malformed or does not fit this run")
        if not isinstance(p, dict) or not isinstance(perm, torch.Tensor):
            raise bad
        step, skipped, norms, threshold = p.get("step"), p.get("skipped"), p.get("norms"), p.get("threshold")
        numbers = [p.get(k) for k in ("loss_sum", "score_sum", "beta")]
        ok = (
            _count(step, 1, steps)  # (all the steps: a SIGTERM stopped the epoch's validation)
            and all(isinstance(v, float) and abs(v) <= torch.finfo(torch.float32).max for v in numbers)
            and isinstance(norms, list)
            and len(norms) <= step
            and all(v is None or (isinstance(v, float) and v >= 0) for v in norms)
            and _count(skipped, 0, len(norms))
            # (a whole number too: a skip_grad_norm of 1000 from a config file was recorded as 1000 before 2026-12-01)
            and (threshold is None or (isinstance(threshold, (int, float)) and not isinstance(threshold, bool)))
            and (threshold is None or 0 <= threshold <= sys.float_info.max)  # (10**400 has no float)
            and _seconds_or_none(p.get("pace_s"))
            and _seconds_or_none(p.get("pace_spent_s"))
            and _rank_sums_or_none(p.get("rank_sums"))
            and perm.dtype == torch.int64
            and perm.shape == (n,)
            and torch.equal(perm.sort().values, torch.arange(n))
        )
        if not ok:
            raise bad
        return {**p, "perm": perm}

    def _place_checked(self, t: dict, perm: object, path: Path) -> dict | None:
        """The checkpoint's place within an epoch (``_checked_progress``; counters ``t``, data order
        ``perm``), once its step count is what its epochs and that place take at this run's batch size:
        the steps go on from it (a discrete VAE's temperature is of the step), so a wrong count would
        train on silently as another run. An epoch has the steps of one process, or one fewer where
        data-parallel ranks left out a last batch too small to share (or the objective's estimate: a WAE's)."""
        progress = self._checked_progress(t.get("epoch_progress"), perm, path)
        steps = math.ceil(len(self.train_x) / self.batch_size)
        within = progress["step"] if progress is not None else 0
        lowest, highest = t["epoch"] * max(steps - 1, 0) + within, t["epoch"] * steps + within
        if not lowest <= t["step"] <= highest:
            raise CheckpointError(
                f"{path}: trainer counter step = {t['step']} is not the steps of its {t['epoch']} epoch(s)"
                f"{f' and {within} more' if within else ''} at batch size {self.batch_size} ({lowest} to {highest})"
            )
        return progress

    def _progress_bar(self) -> tqdm:
        return tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {self.epoch + 1}/{self.epochs}",
            leave=False,
            disable=None if self.progress and self.dist.is_main else True,
            mininterval=0.5,
            dynamic_ncols=True,
        )

    def _epoch_metrics(self, total_loss: torch.Tensor, total_score: torch.Tensor, beta: float) -> dict:
        """The epoch's training metrics (summed over the ranks), after its last checks."""
        problem = self.guard.epoch_problem()
        if problem is not None:
            raise TrainingError(f"{self._epoch_lost()}: {problem}. Raise --skip-grad-norm, or use --skip-grad-factor")
        # (copies: the sums stay this rank's own, which a stop in the validation checkpoints, ``_resumed_sums``)
        total_loss = distributed.all_reduce_sum(total_loss.clone())
        total_score = distributed.all_reduce_sum(total_score.clone())
        if not torch.isfinite(total_loss):
            raise TrainingError(self._nan_message(total_loss))
        rows = self.batches.rows_per_epoch
        return {
            "train_loss": total_loss.item() / rows,
            f"train_{self.score}": total_score.item() / rows,
            "beta": beta,
            "lr": self.lr_schedule.learning_rate(self.lr, self.epoch, self.epochs),  # (as set: GraphStep's is a tensor)
            **({"skipped_steps": self.guard.epoch_skipped, "steps": self.steps_per_epoch} if self.guard.skips else {}),
            **({"ema": self.ema.decay} if self.ema is not None else {}),  # validation uses the averaged weights
        }

    def _objective(self, x: torch.Tensor, beta: float, y: torch.Tensor | None) -> NamedTuple:
        """The objective's terms for a batch, with its labels where the objective takes them."""
        if self.objective.takes_labels:
            with labels_checked():  # (checked once, ``_class_labels``: no step reads them back from a GPU)
                return cast(_TakesLabels, self.objective)(self.model, x, beta, y=y)
        return self.objective(self.model, x, beta)

    def _nan_message(self, loss: torch.Tensor) -> str:
        where = f"the training loss became {loss.item()} at epoch {self.epoch + 1}, step {self.step + 1}; {self._kept()}. "
        if self.step == 0:  # before any update, no learning rate is to blame: the data or the model as it starts
            rows = max(1, (1 << 22) // max(1, self.train_x[:1].numel()))  # (chunks of about 4M entries)
            top = max((_largest_magnitude(c) for c in self.train_x.split(rows)), default=0.0)
            return (
                f"{where}That is the first step, before any update: the model as it starts this run gives the first "
                f"batch a loss that is no number. Look at the data (the largest magnitude in them is {top:g}; values "
                "far from the scale of the likelihood overflow it) and at the model's settings"
            )
        return f"{where}Try a lower --lr or --grad-clip"

    def _kept(self) -> str:
        """Which checkpoint a run that stops now leaves (for its error message)."""
        path = None if self.run_dir is None else self.run_dir / "checkpoint.safetensors"
        if self.epoch == 0 and (path is None or not path.is_file()):
            return "no checkpoint was written"
        what = f"of epoch {self.epoch}" if self.epoch else "written within epoch 1"
        return f"the checkpoint {what} is kept" + (f" in {path}" if path is not None else "")

    @torch.no_grad()
    def validate(self) -> dict:
        """Mean objective terms on the validation split (beta = 1), all but the loss (an
        objective's ``label_terms`` over its labelled examples), and the diagnostics; with the
        moving average of the weights where the run keeps one."""
        self.model.eval()
        assert self._valid_x is not None  # fit validates only with a validation split
        n = len(self._valid_x)
        # each rank scores its part, the sums added; where a part would hold fewer rows than the objective's estimate
        # needs (a WAE's MMD of one code is 0), every rank scores them all
        shared = self.dist.parallel and n >= self.dist.world_size * self.objective.rows_per_step
        rows = distributed.shard(n, self.dist) if shared else slice(None)
        valid_x = self._valid_x[rows]
        valid_y = None if self._valid_y is None else self._valid_y[rows]
        sums: dict[str, torch.Tensor] = {}
        every = n // self.dist.world_size if shared else n  # (the rows every rank scores: the ranks vote within them)
        with self.ema_weights():
            size, least = self.eval_batch_size, self.objective.rows_per_step
            votes = len(validation_batches(every, size, least))  # (the batches of every rank: more rows, no fewer)
            for i, batch in enumerate(validation_batches(len(valid_x), size, least)):
                if 0 < i < votes and self._stops_validating():
                    raise _StopValidating
                x = valid_x[batch]
                y = None if valid_y is None else valid_y[batch]
                terms = self._objective(x, 1.0, y)
                for k, v in terms._asdict().items():
                    if k != "loss":
                        sums[k] = sums.get(k, 0.0) + v.detach().double().sum()
            if shared:
                names = sorted(sums)
                total = distributed.all_reduce_sum(torch.stack([sums[k] for k in names]))
                sums = dict(zip(names, total))
            out = {f"valid_{k}": v.item() / n for k, v in sums.items()}
            labelled = sums["labelled"].item() if "labelled" in sums else 0.0
            for k in self.objective.label_terms:  # means over the labelled examples alone (none: not reported)
                if labelled > 0:
                    out[f"valid_{k}"] = sums[k].item() / labelled
                else:
                    out.pop(f"valid_{k}", None)
            if self.diagnostics is not None:
                if self._stops_validating(before_diagnostics=True):  # (which may take longer than the batches)
                    raise _StopValidating
                diag = self.diagnostics(self.model, self._valid_x) if self.dist.is_main else None
                out.update({f"valid_{k}": v for k, v in cast(dict, distributed.broadcast_object(diag)).items()})
        return out

    @torch.inference_mode(False)
    @torch.enable_grad()
    def fit(self) -> list[dict]:
        """Train from the current epoch to ``epochs`` (or until early stopping); returns the
        per-epoch metrics of this call (with gradients, also when the caller is within
        ``torch.no_grad()``). A SIGTERM meanwhile stops the run at the end of its step, with a
        checkpoint, and ends the process (``_sigterm_deferred``)."""
        history: list[dict] = []
        self._check_folder()
        self._check_ranks_agree()
        self._prepare_graph()
        self.budget_spent = False
        self._deadline = None if self.budget is None else self.budget.clock() + self.budget.seconds
        with self._sigterm_deferred():
            self._fit_epochs(history)
        distributed.barrier()  # the other ranks wait for rank 0's last files
        return history

    def _check_folder(self) -> None:
        """Before a new run's first write: a run folder that holds another run's files is refused
        (its metrics.jsonl would get this run's lines after its own, epoch 1 again, and its
        checkpoints would be replaced); ``resume`` takes them as this run's. Rank 0 looks (it alone
        writes, whether or not the others were given the folder), and every rank refuses alike: the
        others would wait for it in their first step."""
        if self._folder_checked:
            return
        names = ("checkpoint.safetensors", "best.safetensors", "metrics.jsonl")
        found = [n for n in names if (self.writer.run_dir / n).exists()] if self.writer is not None else []
        run_dir, found = cast(tuple, distributed.broadcast_object((self.run_dir, found)))
        if found:
            raise ConfigError(
                f"{run_dir} holds another run's {', '.join(found)}: a new run there would add its metrics to that "
                "run's and replace its checkpoints. Give the Trainer a new or empty run_dir, or call trainer.resume() "
                "before fit() to go on from that run's checkpoint.safetensors. Nothing was changed"
            )
        self._folder_checked = True

    def _check_ranks_agree(self) -> None:
        """Data-parallel ranks take every step, vote and collective together, so what decides
        them must be the same on every rank: the epochs, the batches, the validation and early
        stopping, where the run stands, and whether a time budget or ``TrainFor`` stops it (rank 0's
        clock decides, at collectives the others take part in only where they have one too). A
        Trainer built from the Python API with one of these on some ranks only waited for ever at
        the first collective that the others did not take; every rank now refuses it alike."""
        if not self.dist.parallel:
            return
        mine = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "training rows": len(self.train_x),
            "validation rows": None if self.valid is None else len(self.valid),
            "patience": self.patience,
            "epoch": self.epoch,
            "step": self.step,
            "time budget": self.budget is not None,
            "TrainFor": self.pace is not None,
        }
        ranks = cast(list[dict], distributed.all_gather_object(mine))
        differ = [k for k in mine if len({repr(r.get(k)) for r in ranks}) > 1]
        if differ:
            said = "; ".join(f"{k}: " + ", ".join(f"rank {i} {r.get(k)}" for i, r in enumerate(ranks)) for k in differ)
            raise ConfigError(
                f"the data-parallel ranks' Trainers differ ({said}): every rank must be given the same settings, "
                "parts and data, and resume alike, or they wait for each other for ever. Nothing was trained"
            )

    @contextlib.contextmanager
    def _sigterm_deferred(self):
        """A SIGTERM (a scheduler's time limit, a preemption, ``kill``) that comes while a run
        with a folder trains stops it at the end of the step, with a checkpoint of its place as
        ``--time-budget`` writes one, and then ends the process as the signal would have
        (``_end_by_sigterm``: its status says SIGTERM). Data-parallel ranks stop together: they
        vote every few steps whether any of them was sent one (``_stop_agreed``; torchrun passes a
        SIGTERM on to each rank at a moment of its own), so that all stop after the same step and
        write one checkpoint, of every rank's place and random streams. Only where every rank may
        (``_may_defer_sigterm``): a handler of the caller's is left as it is. A second SIGTERM to a
        process ends it at once (to a rank, one ``PASSED_ON_SECONDS`` after the first or later), as
        does one sent to a process forked meanwhile; an error on the way is raised as it is (the
        run ends with it, not with the signal)."""
        self._terminated = self._sigterm_heard = False
        distributed.sigterm_sent(False)  # (set where a SIGTERM sent to this rank stops the fit)
        self._deferring = self._may_defer_sigterm()
        self._vote = _StopVote(self.dist.is_main)
        if not self._deferring:
            yield
            return
        previous, pid, first = signal.getsignal(signal.SIGTERM), os.getpid(), [math.inf]

        def defer(signum: int, frame: object) -> None:
            now, passed_on = time.monotonic(), self.dist.parallel  # (a rank's: see PASSED_ON_SECONDS)
            if (self._sigterm_heard and not (passed_on and now - first[0] < PASSED_ON_SECONDS)) or os.getpid() != pid:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one, or a forked child's: the default, now
                os.kill(os.getpid(), signal.SIGTERM)
            first[0], self._sigterm_heard = min(first[0], now), True

        signal.signal(signal.SIGTERM, defer)
        _DEFERRING["handler"] = defer
        try:
            with distributed.sigterm_held():  # (a rank's watch waits for the stop: a validation may outlast it)
                yield
        finally:
            _DEFERRING["handler"] = None
            if signal.getsignal(signal.SIGTERM) is defer:  # (one installed meanwhile stays)
                signal.signal(signal.SIGTERM, previous)
        # (not where an error is raised: it ends the run, and says why.) Agreed once more, after the last
        # files: a SIGTERM to one rank after the ranks last agreed ends them all, as it ends one process
        stop = self._stop_agreed()
        self._deferring = False
        if stop:
            self._end_by_sigterm(raises=previous is not signal.SIG_DFL)

    def _may_defer_sigterm(self) -> bool:
        """Whether this fit defers SIGTERM (``_sigterm_deferred``): where it has a run folder to write
        (rank 0's), in the main thread, and SIGTERM has its default action or the one of ``dgm``'s
        ranks, which unwinds the command (``distributed.sigterm_unwinds``); under data parallelism
        where every rank may (they agree on it), else on none."""
        handler = signal.getsignal(signal.SIGTERM)
        may = (
            (self.run_dir is not None or not self.dist.is_main)
            and threading.current_thread() is threading.main_thread()
            and (handler == signal.SIG_DFL or sigterm_raises())
        )
        return not distributed.host_max([int(not may)])[0] if self.dist.parallel else may

    def _stop_agreed(self) -> bool:
        """Whether a SIGTERM stops the fit here (at an epoch's end, or after the fit's files): one
        sent to this process; under data parallelism one sent to any rank, which every rank learns
        at the same vote (``_StopVote``), so that all stop together."""
        mine = self._sigterm_heard  # (read once: one that comes during the vote is not this vote's)
        heard = self._vote(mine)[0] if self.dist.parallel and self._deferring else mine
        return self._agreed(heard, mine)

    def _agreed(self, heard: bool, mine: bool) -> bool:
        """Whether the fit stops for a SIGTERM, now that the ranks have ``heard`` whether one was
        sent to any of them (``mine``: this rank's word in that vote); at the first such vote, a rank
        that was sent it itself says so (not one that only stopped with it, or was passed it on after
        its word: ``dgm train --nproc``'s launcher names the ranks that were sent it)."""
        if heard and not self._terminated:
            distributed.sigterm_sent(mine)
        self._terminated = self._terminated or heard
        return self._terminated

    def _stops_within(self) -> bool:
        """After a step within an epoch: whether the fit stops here, for a SIGTERM (``_stop_agreed``)
        or the time budget (``_out_of_time``; ``_terminated`` tells which). Data-parallel ranks learn
        both at the same vote (``_StopVote``: after a step, every few steps), where the budget is
        rank 0's clock's, so that all stop after the same step; between votes they go on together."""
        if not self.dist.parallel:
            return self._stop_agreed() or self._out_of_time()
        if not ((self._deferring or self._deadline is not None) and self._vote.due()):
            return self._terminated
        mine = self._sigterm_heard
        heard, late = self._vote(mine, self.dist.is_main and self._past_deadline())
        return self._agreed(heard, mine) or late

    def _end_by_sigterm(self, raises: bool) -> None:
        """After a SIGTERM stopped the fit, its files written: end the process as the signal would
        have. Where SIGTERM had its default action: by the signal, after a warning of where the run
        stopped. Where the command unwinds on it (``raises``: a rank of ``dgm``) by raising
        ``Terminated``, which ``dgm train`` says with the checkpoint and the command that resumes it;
        the rank then ends by the signal."""
        k, n = self.steps_into_epoch, self.steps_per_epoch
        command = f": {self.resume_command}" if self.resume_command else ""
        if k:
            note = (f"SIGTERM: stopped in epoch {self.epoch + 1} after step {k} of {n}, with a checkpoint in "
                    f"{self.run_dir}; resuming goes on from it{command}")  # fmt: skip
        elif self.epoch < self.epochs and not self.stopped_early:
            note = (f"SIGTERM: stopped after epoch {self.epoch}, with a checkpoint in {self.run_dir}; resuming goes on "
                    f"from it{command}")  # fmt: skip
        else:
            note = f"SIGTERM: the run had ended (epoch {self.epoch}), its files written"
        if raises:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (as the command's handler does: a second one ends it at once)
            raise Terminated(note)
        if self.dist.is_main:
            log.warning("%s", note)
        for stream in (sys.stdout, sys.stderr, *(getattr(h, "stream", None) for h in logging.getLogger().handlers)):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.flush()  # (what was printed is written before the process ends)
        os.kill(os.getpid(), signal.SIGTERM)

    def _fit_epochs(self, history: list[dict]) -> None:
        while self.epoch < self.epochs and not self.stopped_early:  # (a resumed run that had stopped trains no more)
            if history and self._stop_agreed():  # (at an epoch's end, its files written)
                break
            if history and self._out_of_time():  # (a call takes one step at least: every call goes on)
                self.budget_spent = True
                break
            if self.pace is not None and self.epoch == 0:  # (once a call: the epoch ends, or the budget stops it)
                self.pace.start_epoch()
            t0 = time.perf_counter()
            try:
                with self._own_rng(), self._data_checked():
                    metrics = {"epoch": self.epoch + 1, **self._train_epoch()}
                self._validated(metrics, time.perf_counter() - t0)
            except _StopWithin as stop:  # within the epoch: its place is checkpointed, with the random states
                self._progress, self.budget_spent = stop.progress, not self._terminated
                self._write_started()
                self.save()
                break
            self._write_started()
            self.epoch += 1
            improved = self._track_best(metrics)
            metrics["time_s"] = time.perf_counter() - t0
            history.append(metrics)
            self._write_metrics(metrics)
            self.save()  # before best.safetensors: a run killed between the two has it written again on resume
            if improved:
                self.save("best.safetensors", with_state=False)
            if self._paced is not None:
                self._count_files(metrics)
            log.info(json.dumps(metrics))
            for cb in self.callbacks if self.dist.is_main else ():
                cb(self, metrics)
            if self.stopped_early:
                log.info(
                    "early stopping after epoch %d: no %s improvement in %d epoch(s)",
                    self.epoch,
                    "validation" if self.valid is not None else "training-score",
                    self.patience,
                )
                break

    @property
    def stopped_early(self) -> bool:
        """Whether the run has had ``patience`` epochs without validation improvement (between
        epochs: an epoch stopped within by the time budget goes on)."""
        return self.patience is not None and self.bad_epochs >= self.patience and self._progress is None

    def _after_training(self, metrics: dict, train_time: float) -> None:
        """An epoch's training done (in ``train_time``): its throughput, the checks, its
        validation and (``TrainFor``, after the first) the run's epochs, into ``metrics``."""
        with self._own_rng():
            if self._epoch_share > 0:  # (none: a resume after the epoch's last step trained none of it, nothing measured)
                metrics["images_per_s"] = self.images_per_s(train_time)
            self._check_finite(metrics)  # before validation, which NaN weights could make fail unclearly
            if self._valid_x is not None:
                with self._data_checked():
                    metrics.update(self.validate())
                self._check_finite(metrics, check_state=False)
            if self.pace is not None and self.epoch == 0 and self.pace.measured:
                self._set_epochs()

    def _validated(self, metrics: dict, train_time: float) -> None:
        """``_after_training``, where a SIGTERM between validation batches (``_stops_validating``) stops
        the fit after the epoch's last step: its place is checkpointed with the random streams as they
        were before the validation, which the resume then does from its start, as the whole run did."""
        streams = self._torch_state, self._cuda_state
        try:
            self._after_training(metrics, train_time)
        except _StopValidating:
            self._torch_state, self._cuda_state = streams
            total_loss, total_score = self._totals
            raise _StopWithin(self._epoch_progress(self.steps_per_epoch, total_loss, total_score, metrics["beta"])) from None

    def _stops_validating(self, before_diagnostics: bool = False) -> bool:
        """Between validation batches, and before the diagnostics: whether a SIGTERM stops the fit
        there rather than after the validation, which may take longer than a scheduler waits before
        it kills the process. Not in the first epoch of ``TrainFor``, which times it. Data-parallel
        ranks learn it together (``_StopVote``): between the batches that every rank's shard has, at
        the votes' pace as after steps, and before the diagnostics always (rank 0's may take long)."""
        if not self._deferring or (self.pace is not None and self.epoch == 0):
            return False
        if self.dist.parallel and not (before_diagnostics or self._vote.due()):
            return self._terminated
        return self._stop_agreed()

    def _set_epochs(self) -> None:
        """``TrainFor``, at the end of the first epoch, before its files: the run's epochs from
        its pace (rank 0's, on every rank), into the run's record, which config.json and the
        epoch's checkpoints then hold."""
        assert self.pace is not None
        self._paced = cast(tuple, distributed.broadcast_object(self.pace.decide(self)))
        if self._paced[0] < self.epochs:
            self.epochs = self._paced[0]
            if self._record_epochs():  # config.json first, with the epoch's files: a resume takes the epochs from it
                self._record_pending = True

    def _count_files(self, metrics: dict) -> None:
        """``TrainFor``, once the first epoch's files are written: the epochs again, their time
        counted; where fewer fit, config.json and then the checkpoints again. The numbers go into
        ``metrics`` for the callbacks (not into metrics.jsonl: config.json holds the epochs)."""
        assert self.pace is not None and self._paced is not None
        epochs, per_epoch, warmup = cast(tuple, distributed.broadcast_object(self.pace.with_files(self)))
        if epochs < self.epochs:
            self.epochs = epochs
            if self._record_epochs() and self.writer is not None:
                self.writer.start()
            self.save()
            if self.best_epoch == 1:  # (the weights of the first epoch, still the best)
                self.save("best.safetensors", with_state=False)
        metrics.update(paced_epochs=epochs, paced_epoch_s=per_epoch, paced_warmup_s=warmup)
        self._paced = None

    def _record_epochs(self) -> bool:
        """The run's epochs into its record (where the Trainer writes one); whether they went in."""
        config = self.writer.record.get("config") if self.writer is not None else None
        optim = config.get("optim") if isinstance(config, dict) else None
        if isinstance(optim, dict):
            optim["epochs"] = self.epochs
        return isinstance(optim, dict)

    def _data_checked(self) -> contextlib.AbstractContextManager:
        """Where the splits hold no missing entry: models and likelihoods need not look."""
        return complete_data() if self._complete else contextlib.nullcontext()

    def _write_started(self) -> None:
        """A resumed run's config.json (its resumed settings), with its first files."""
        if self._record_pending:
            if self.writer is not None:
                self.writer.start()
            self._record_pending = False

    def _check_finite(self, metrics: dict, check_state: bool = True) -> None:
        """Divergence ends the run before anything of the epoch is written: a non-finite
        score or loss, or (``check_state``) NaN/inf in the weights, their moving average or
        Adam's moments."""
        bad = [k for k in ("train_loss", f"train_{self.score}", f"valid_{self.score}") if k in metrics]
        bad = [f"{k} = {metrics[k]}" for k in bad if not math.isfinite(metrics[k])]
        state = nonfinite_state(self.model, self.optimizer, self._ema_state()) if check_state else None
        if state is not None:
            bad.append(f"{state} holds NaN or inf")
        if bad:
            raise TrainingError(f"{self._epoch_lost('diverged')}: {'; '.join(bad)}. Try a lower --lr or a --grad-clip")

    def _epoch_lost(self, how: str = "stopped") -> str:
        """What a run that ends in the current epoch keeps (the start of an error message)."""
        return f"training {how} in epoch {self.epoch + 1}, of which nothing more was written ({self._kept()})"

    def _ema_state(self) -> dict[str, torch.Tensor] | None:
        return self.ema.weights if self.ema is not None else None

    def _track_best(self, metrics: dict) -> bool:
        value = metrics.get(f"valid_{self.score}", metrics[f"train_{self.score}"])
        if value > self.best_valid:
            self.best_valid, self.best_epoch, self.bad_epochs = value, self.epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def _write_metrics(self, metrics: dict) -> None:
        if self.writer is not None:
            self.writer.metrics(metrics)


def _checked_training_state(ckpt: dict, path: Path, ema: EMA | None) -> dict:
    """A checkpoint's trainer counters (``_checked_counters``), once it is known to hold what a
    resumed run needs: the training state, the random generators' states, an optimizer state of
    tensors and, for a run that keeps a moving average of the weights, that average."""
    if ckpt["optimizer"] is None or ckpt["trainer"] is None:
        raise TrainingError(f"{path} holds no training state to resume from")
    t = _checked_counters(ckpt["trainer"], path)
    rng = ckpt["rng"]
    if not all(isinstance(rng.get(k), torch.Tensor) and rng[k].dtype == torch.uint8 for k in ("torch", "data")):
        raise CheckpointError(f"{path} holds no valid random generator states")
    _check_generator_sizes(rng, path)
    # (floating point too: load_state_dict converts another dtype to the parameter's silently, so float bits labelled
    # int32 would become other numbers, and the run would diverge as if its learning rate were too high)
    moments = [v for st in ckpt["optimizer"]["state"].values() for v in st.values()]
    if not all(torch.is_tensor(v) and v.is_floating_point() for v in moments):
        raise CheckpointError(f"{path} holds a malformed optimizer state (Adam's state is floating-point tensors only)")
    if ema is not None and not ckpt["ema"]:
        raise CheckpointError(
            f"{path} holds no moving average of the weights, but this run keeps one (ema = {ema.decay}); "
            "it cannot be continued exactly"
        )
    return t


def _check_optimizer_state(optimizer: torch.optim.Optimizer, taken: int = 0) -> None:
    """Refuse (ValueError) a loaded optimizer state whose entries are not tensors, or not of
    their parameter's shape (a scalar, such as Adam's step, fits any), or that Adam could not
    have written: a step count above ``taken`` (Adam's bias correction would change), a negative
    step count or second moment (the update would be NaN, and the run
    would be told to lower its learning rate), or none at all after ``taken`` updates (each update
    reaches some parameter: Adam's moments would restart from zero without a word, and the run
    would not go on as it was). One parameter with none is taken: a model of one's own may leave
    one unused, which Adam never steps (the families reach every one in every step)."""
    trained = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    if taken > 0 and trained and not any(optimizer.state.get(p) for p in trained):
        raise ValueError(f"it holds no Adam state for any parameter, after {plural(taken, 'update')}")
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, v in optimizer.state.get(p, {}).items():
                if not torch.is_tensor(v) or (v.dim() > 0 and v.shape != p.shape):
                    raise ValueError(f"the optimizer's {key} does not match a parameter of shape {tuple(p.shape)}")
                if (key == "step" or key.endswith("_sq")) and bool((v < 0).any()):
                    raise ValueError(f"the optimizer's {key} holds negative values, which it never writes")
                if key == "step" and bool((v > taken).any()):  # (fewer: a parameter some steps left without a gradient)
                    raise ValueError(
                        f"the optimizer's step counts {int(v.max())} updates, after {plural(taken, 'update')} taken: its "
                        "bias correction would not go on as it was"
                    )


def _check_optimizer_indices(state: dict) -> None:
    """Refuse (ValueError) a saved optimizer state whose parameter indices are not 0..n-1 in
    order over its groups, as ``state_dict`` writes them, or whose entries name another index:
    ``load_state_dict`` would drop such entries (a parameter's moments) without a word."""
    ids = [i for g in state["param_groups"] for i in g.get("params", [])]
    if ids != list(range(len(ids))):
        raise ValueError(f"the optimizer's parameter indices are not 0..{len(ids) - 1} in order")
    stray = [k for k in state["state"] if not (type(k) is int and 0 <= k < len(ids))]
    if stray:
        raise ValueError(f"the optimizer holds state for parameter {stray[0]!r}, which none of its groups has")


_CUDA_STATE_BYTES = 16  # a CUDA generator's state (Philox: seed and offset); a CPU one's is larger


def _check_generator_sizes(rng: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse a checkpoint whose random states (uint8, checked) are not of a generator's size: the
    global one a CPU generator's, the data order's a CPU or a CUDA one's (torch's own refusal, raised
    where the states are loaded, was said as a model and optimizer that do not fit)."""
    cpu = torch.Generator().get_state().numel()
    for key, sizes in (("torch", (cpu,)), ("data", (cpu, _CUDA_STATE_BYTES))):
        if rng[key].dim() != 1 or rng[key].numel() not in sizes:
            raise CheckpointError(
                f"{path} holds a malformed random generator state: rng/{key} is {rng[key].numel()} bytes of shape "
                f"{tuple(rng[key].shape)}, where a generator's state is {' or '.join(map(str, sizes))} bytes"
            )


def _drawn_elsewhere(saved: torch.Tensor, own: torch.Tensor) -> bool:
    """Whether a checkpoint's data-order stream ``saved`` was drawn by a generator on another kind
    of device (CPU or CUDA) than this run's (state ``own``): their states differ in kind and
    size, and one cannot be continued by the other (a resume on another device type)."""
    if saved.numel() == own.numel():
        return False
    cpu = torch.Generator().get_state().numel()
    return {saved.numel(), own.numel()} == {cpu, _CUDA_STATE_BYTES}


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]


_COUNTERS = {"epoch": 0, "step": 0, "best_epoch": -1, "bad_epochs": 0, "skipped_steps": 0}


class _TakesLabels(Protocol):
    """An objective with ``takes_labels``: it is called with the batch's labels as well."""

    def __call__(self, model: Any, x: torch.Tensor, beta: float, *, y: torch.Tensor | None) -> NamedTuple: ...


def validation_batches(n: int, size: int, least: int = 1) -> list[slice]:
    """The batches of ``size`` rows that validation scores ``n`` rows in, none smaller than the
    ``least`` rows the objective's estimate needs (``Objective.rows_per_step``: a WAE's MMD of a lone
    code was 0, which pulled ``valid_mmd`` down): a shorter tail joins the batch before it, and a
    batch is never smaller than ``least`` unless all n rows are fewer."""
    step = max(size, least)
    starts = list(range(0, n, step))
    if len(starts) > 1 and n - starts[-1] < least:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, [*starts[1:], n])]


class _StopValidating(Exception):
    """A SIGTERM came during a validation within ``fit``: it stops between batches (``Trainer._validated``)."""


class _StopWithin(Exception):
    """--time-budget ran out, or a SIGTERM came, within an epoch: ``progress`` is where
    (``Trainer._epoch_progress``)."""

    def __init__(self, progress: dict):
        super().__init__("the epoch stops within")
        self.progress = progress


VOTE_SECONDS = 0.05  # about how far apart data-parallel ranks vote whether a SIGTERM or the time budget stops them
# a data-parallel rank's SIGTERMs within this of its first are that one again: torchrun's agent passes on one that
# every process got too (a scheduler's, systemd's, `timeout`'s, `kill -- -PGID`'s), and again where it got two (from
# the group and from `dgm train --nproc`, which passes one on to it); a second one ended the rank at once
PASSED_ON_SECONDS = 2.0
MAX_VOTE_STEPS = 10_000


class _StopVote:
    """When data-parallel ranks next vote whether any of them was sent SIGTERM or rank 0's time
    budget has run out, and the vote. A vote is an all-reduce that every rank waits for (some 0.2 ms
    between idle CPU ranks, a few ms within training: the slowest rank's), so the ranks vote after every so many
    steps, about ``VOTE_SECONDS`` apart: rank 0 sets the number at each vote from the pace of the
    steps on its clock (no wait for a GPU), and every rank counts the same steps down. A stop comes
    about that long after the signal or the budget's end (and a step: the votes fall at steps'
    ends, or between validation batches: ``_stops_validating``); a signal that comes in an epoch's
    last validation batches or its files stops the ranks after them (``distributed.sigterm_held``:
    the watch waits), and a budget that runs out there stops them before the next epoch."""

    def __init__(self, is_main: bool):
        self.is_main = is_main
        self.left, self.steps, self.since = 1, 0, time.perf_counter()

    def due(self) -> bool:
        """A step is done: whether the ranks vote after it."""
        self.left -= 1
        self.steps += 1
        return self.left <= 0

    def __call__(self, heard: bool, late: bool = False) -> tuple[bool, bool]:
        """Whether any rank heard a SIGTERM (``heard``: this one's), and whether rank 0's time budget
        has run out (``late``: rank 0's; the others' are not counted), voted now in one all-reduce;
        the steps to the next vote set."""
        now = time.perf_counter()
        pace = max(1e-6, (now - self.since) / max(1, self.steps))  # seconds a step (and whatever came between)
        steps = min(MAX_VOTE_STEPS, max(1, int(VOTE_SECONDS / pace))) if self.is_main else 0  # (rank 0's, the largest)
        any_heard, self.left, out_of_time = distributed.host_max([int(heard), steps, int(late and self.is_main)])
        self.steps, self.since = 0, now
        return bool(any_heard), bool(out_of_time)


def _check_settings(
    epochs: int, batch_size: int, lr: float, weight_decay: float, patience: int | None, seed: int, eval_batch_size: int
) -> tuple[int, int, float, float, int | None, int, int]:
    """The Trainer's numbers as Python numbers, refused by name (ValueError) unless each is of its
    kind and range: 2.5 epochs trained 3, a patience of 0 ended in an IndexError, a learning rate
    of NaN (``nan <= 0`` is false) was left to Adam's own check. A NumPy number is taken as the
    Python number it holds (a NumPy seed failed in ``manual_seed``, a float32 learning rate in
    writing the metrics as JSON)."""
    counts: dict[str, tuple[object, int]] = {"epochs": (epochs, 1), "batch_size": (batch_size, 1)}
    counts["eval_batch_size"] = (eval_batch_size, 1)
    if patience is not None:
        counts["patience"] = (patience, 1)
    whole = {name: whole_at_least(name, value, low) for name, (value, low) in counts.items()}
    seed = generator_seed(seed)
    lr = float(finite_at_least("lr", lr, 0, strict=True))
    weight_decay = float(finite_at_least("weight_decay", weight_decay, 0))
    return whole["epochs"], whole["batch_size"], lr, weight_decay, whole.get("patience"), seed, whole["eval_batch_size"]


MAX_SECONDS = 1e9  # a pace or a time spent recorded in a checkpoint (the settings of seconds' cap)


def _class_labels(y: torch.Tensor, model: object, what: str) -> torch.Tensor:
    """``y`` as class indices (``class_indices``); for a classifier, each one of its classes or
    -1 (hidden), the labels an objective that takes labels trains on."""
    classes = model.num_classes if isinstance(model, Classifier) else None
    return class_indices(y, len(y), what, classes, hidden=True)


def _seconds_or_none(v: object) -> bool:
    return v is None or (isinstance(v, float) and 0 <= v <= MAX_SECONDS)


def _rank_sums_or_none(v: object) -> bool:
    """Every rank's sums of loss and score so far in an epoch (``Trainer._epoch_progress``), or None."""
    big = torch.finfo(torch.float32).max
    return v is None or (
        isinstance(v, list)
        and 2 <= len(v) <= 2**16
        and all(isinstance(r, list) and len(r) == 2 and all(isinstance(x, float) and abs(x) <= big for x in r) for r in v)
    )


def _count(v: object, lowest: int, highest: int) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and lowest <= v <= highest


MAX_SCORE = 1e12  # nats a datapoint: far beyond any model's (a million dimensions at a million nats each)


def _checked_counters(t: dict, path: Path) -> dict:
    """The trainer counters of a checkpoint (a table: ``load_checkpoint`` refuses other JSON),
    type- and range-checked."""
    for key, lowest in _COUNTERS.items():
        v = t.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not lowest <= v < 2**62:
            raise CheckpointError(f"{path}: trainer counter {key} = {v!r} is not an integer >= {lowest}")
    # (the epochs since the best are the epochs without improvement: before the first epoch's end, none and no best)
    since_best = t["epoch"] - t["best_epoch"] if t["epoch"] >= 1 and t["best_epoch"] >= 1 else None
    best_kept = since_best is not None or (t["epoch"] == 0 and t["best_epoch"] == -1)
    if not best_kept or t["bad_epochs"] != (since_best or 0) or t["step"] < t["epoch"] or t["skipped_steps"] > t["step"]:
        raise CheckpointError(f"{path}: the trainer counters contradict each other ({_short_counters(t)})")
    b = t.get("best_valid")
    if b is not None and (not isinstance(b, (int, float)) or isinstance(b, bool) or not math.isfinite(b)):
        raise CheckpointError(f"{path}: best_valid = {b!r} is not a finite number or null")
    if b is not None and abs(b) > MAX_SCORE:  # (1e308 printed as a best score of 309 digits)
        raise CheckpointError(f"{path}: best_valid = {b:.3g} is no score of a datapoint (beyond +-{MAX_SCORE:.0e} nats)")
    if t.get("scaler") is not None and not isinstance(t["scaler"], dict):
        raise CheckpointError(f"{path}: the gradient scaler state is not a table")
    threads = t.get("cpu_threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 2**16):
        raise CheckpointError(f"{path}: cpu_threads = {str(threads)[:40]!r} is not a number of threads (1 to 65536)")
    processes = t.get("processes")
    if processes is not None and not _count(processes, 1, 2**16):
        raise CheckpointError(f"{path}: processes = {str(processes)[:40]!r} is not a number of processes (1 to 65536)")
    norms = t.get("recent_grad_norms", [])
    if not isinstance(norms, list) or len(norms) > WINDOW or not all(_norm(v) for v in norms):
        raise CheckpointError(f"{path}: recent_grad_norms is not a list of at most {WINDOW} finite gradient norms")
    return t


def processes_of(counters: dict, rng: dict) -> int | None:
    """How many data-parallel processes wrote a checkpoint (its trainer ``counters``, its random
    states ``rng``): "processes" where it kept them; else, before they were (2026-11-29), its
    ranks' random states (kept since 2026-11-23 where there were several), one process where it
    has none but kept its CPU threads (since 2026-11-27: after those states); None: unknown."""
    if counters.get("processes") is not None:
        return counters["processes"]
    ranks = rng.get("torch_ranks")
    if isinstance(ranks, torch.Tensor) and ranks.dim() == 2:
        return len(ranks)
    return 1 if counters.get("cpu_threads") is not None else None


def _norm(v: object) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v >= 0


def _short_counters(t: dict) -> str:
    return ", ".join(f"{k} {t[k]}" for k in _COUNTERS)


def _adam(params: Iterable[torch.nn.Parameter], **kwargs) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all parameters; about 3x faster steps on CPU
    than the per-tensor loop), falling back to the default where it is unavailable."""
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, **kwargs)
