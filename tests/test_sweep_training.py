"""What a mutation sweep of the training loop's pieces (training/: schedules, the moving average,
the batch source, the step guard, checkpoints, precision, EM fits, the trainer's counters) found
unchecked: the range checks of a schedule's floor and of the average's decay, an average kept on
the device then told by bools, an epoch's coverage of the rows and its row count with a short
last batch or labelled rows, the spread of data given as Gaussians, the refusals of a
checkpoint's header, record and dtypes, a learning rate held as a tensor, fused Adam's skip on
the device, bf16 on a CPU, an EM fit's ties and non-finite scores, the finite-loss check's
steps, and which epoch writes best.safetensors.

A second sweep (the trainer's resume, counters and time budget, ``Pace`` and ``TrainFor``, the
other parts, the guard's and the average's last checks) found unchecked: the counters a resumed
run records (its skipped updates), a budget of whole seconds (which runs out on the reading at
which they have passed), config.json of a resumed run stopped within its first epoch, the
patience lowered on resume with an epoch under way, the record of ``TrainFor``'s epochs with the
first epoch's files, the pace of a call resumed within the first epoch (its own tenth, its
last step's time, its warm-up), a stop where the pace was marked and the seconds of earlier
calls, a second call on the same pace, a mutation rate of 1, the eps of normalised gradients,
the labelled rows told to the objective, the guard's epoch resumed within, and a moving
average of no update or counted on the device taking a loaded count."""

import hashlib
import json
import math
import struct
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from torch import nn

from dgmkit.config import RunConfig, build_model, build_objective, trainer_options
from dgmkit.data import DataTransform, Split, load_dataset, make_transform
from dgmkit.errors import CheckpointError, ConfigError, TrainingError
from dgmkit.training import Trainer
from dgmkit.training.batches import BatchSource, in_precision
from dgmkit.training.checkpoint import (
    FORMAT,
    MAX_HEADER_BYTES,
    VERSION,
    check_dtypes,
    counters_or_none,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from dgmkit.training.compiled import CompiledOrEager
from dgmkit.training.ema import EMA
from dgmkit.training.fit import fit_em
from dgmkit.training.parts import (
    ChannelsLast,
    Compile,
    KLWarmup,
    LabelledRows,
    MovingAverage,
    Mutation,
    NormalisedGradients,
    Pace,
    StepGuard,
    TimeBudget,
    TrainFor,
)
from dgmkit.training.precision import MixedPrecision, resolve_precision
from dgmkit.training.schedules import LRSchedule
from dgmkit.training.step_guard import FiniteLossCheck, GradientGuard
from run_records import crafted_checkpoint, edit_metadata, edit_tensors

IDENTITY = DataTransform("continuous", None)


# ----------------------------------------------------------------------------- schedules and EMA
def test_a_learning_rate_floor_below_zero_is_refused():
    with pytest.raises(ValueError, match="minimum must be a finite number >= 0"):
        LRSchedule("cosine", minimum=-1e-4)
    assert LRSchedule("cosine", minimum=0.0).learning_rate(1e-3, 10, 10) == 0.0  # the edge: allowed


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"minimum": True}, "minimum must be a finite number"),  # trained at lr 1, written "lr": true
        ({"minimum": math.inf}, "minimum must be a finite number"),  # every weight NaN at the first step
        ({"decay": True}, "decay must be a finite number"),
        ({"decay": math.nan}, "decay must be a finite number"),
        ({"decay": "0.5"}, "decay must be a finite number"),  # (a TypeError from deep in the check)
        ({"decay": 1.5}, r"decay must be in \(0, 1\]"),
    ],
)
def test_a_schedules_decay_and_floor_are_finite_numbers_named_where_they_enter(kw, needle):
    with pytest.raises(ValueError, match=needle):
        LRSchedule("exponential", **kw)


def test_a_schedule_of_numpy_numbers_gives_python_floats_that_the_metrics_line_writes():
    """A NumPy float32 decay or floor made every learning rate a float32 (NumPy 2 keeps a Python
    float's product with it in float32), and metrics.jsonl failed after the first epoch with
    "Object of type float32 is not JSON serializable"."""
    np = pytest.importorskip("numpy")
    decayed = LRSchedule("exponential", decay=np.float32(0.5)).learning_rate(1e-3, 1, 3)
    floored = LRSchedule("cosine", minimum=np.float32(0.5)).learning_rate(1e-3, 1, 3)
    assert type(decayed) is float and decayed == 5e-4 and type(floored) is float and floored == 0.5
    assert json.loads(json.dumps({"lr": decayed})) == {"lr": 5e-4}


def test_a_moving_average_of_decay_one_is_refused():
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        EMA(nn.Linear(2, 1), 1.0)


def test_a_moving_average_kept_on_the_device_takes_bools_after_it_as_the_host_does():
    """Once told by a tensor (a step decided on the device), the count lives on the device; a
    later step told by a bool (an uncaptured step of the same run) still updates where taken
    and only there, with the warm-up's decay: the recursion by hand."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, 0.9)
    expected, n = 0.0, 0
    for value, taken in ((1.0, torch.tensor(True)), (2.0, True), (5.0, False), (3.0, torch.tensor(False)), (4.0, True)):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model, taken)
        if bool(taken):
            d = min(0.9, (1 + n) / (10 + n))
            expected, n = d * expected + (1 - d) * value, n + 1
        assert ema.weights["weight"].item() == pytest.approx(expected, rel=1e-6)
    assert ema.updates == n == 3


def test_a_moving_average_state_is_refused_for_a_flag_count_or_integer_weights_and_left_as_it_was():
    model = nn.Linear(2, 1)
    ema = EMA(model, 0.5)
    before = {k: v.clone() for k, v in ema.weights.items()}
    good = {k: torch.zeros_like(v) for k, v in before.items()}
    with pytest.raises(ValueError, match="update count"):
        ema.load_state_dict({"updates": True, "weights": good})
    with pytest.raises(ValueError, match="does not match the parameter"):
        ema.load_state_dict({"updates": 1, "weights": {k: v.long() for k, v in good.items()}})
    assert ema.updates == 0 and all(torch.equal(ema.weights[k], before[k]) for k in before)
    ema.load_state_dict({"updates": 7, "weights": good})
    assert ema.updates == 7 and ema.current_decay() == pytest.approx(min(0.5, 8 / 17))


# ----------------------------------------------------------------------------- the batch source
def _source(n: int, batch_size: int, y=None, scale=None, seed: int = 0) -> BatchSource:
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    steps = -(-n // batch_size)
    return BatchSource(x, y, IDENTITY, torch.Generator().manual_seed(seed), batch_size, steps, scale=scale)


def test_an_epoch_gives_every_row_once_in_batches_of_the_batch_size_and_goes_on_where_it_stopped():
    source = _source(10, 4)
    batches = [x.flatten().long().tolist() for x, _ in source.epoch()]
    assert [len(b) for b in batches] == [4, 4, 2]  # a short last batch
    assert sorted(sum(batches, [])) == list(range(10))  # every row once
    assert source.rows_per_epoch == 10  # (not 3 steps * 4)
    # a stopped epoch goes on with its order from step 1: the batches the uninterrupted one drew from there
    rest = [x.flatten().long().tolist() for x, _ in source.epoch(source.perm, start=1)]
    assert rest == batches[1:]


def test_labelled_rows_are_drawn_from_the_labelled_ones_class_zero_included_and_counted_each_step():
    y = torch.tensor([0, -1, -1, 0, -1, -1, -1, -1])  # two rows labelled, both with class 0
    source = _source(8, 4, y=y)
    assert source.labelled_count == 2
    source.add_labelled(3)
    assert source.rows_per_epoch == 8 + 2 * 3  # 2 steps, 3 drawn rows each
    for x, labels in source.epoch():
        drawn = x.flatten().long()[4:]
        assert len(drawn) == 3 and set(drawn.tolist()) <= {0, 3}  # the labelled rows themselves
        assert labels[4:].tolist() == [0, 0, 0]
    hidden = _source(4, 2, y=torch.full((4,), -1))  # labels, every one hidden
    hidden.add_labelled(0)  # none drawn: nothing to refuse
    with pytest.raises(ConfigError, match="no training label"):
        hidden.add_labelled(1)


def test_data_given_as_gaussians_are_drawn_with_their_standard_deviation():
    n = 20_000
    scale = torch.full((n, 1), 3.0)
    source = BatchSource(torch.zeros(n, 1), None, IDENTITY, torch.Generator().manual_seed(0), n, 1, scale=scale)
    (x, _), *_ = list(source.epoch())
    assert x.std().item() == pytest.approx(3.0, rel=0.03)  # x + scale * eps: sd 3, not 9
    with pytest.raises(ConfigError, match=r"spread has shape \(4, 1\), the data \(20000, 1\)"):
        BatchSource(torch.zeros(n, 1), None, IDENTITY, torch.Generator(), n, 1, scale=torch.ones(4, 1))


def test_integer_data_keep_their_dtype_and_floats_take_the_model_s():
    ints = torch.tensor([1, 2, 3])
    assert in_precision(ints, torch.float64).dtype == torch.int64
    assert in_precision(ints.float(), torch.float64).dtype == torch.float64


def test_a_mutated_batch_replaces_about_its_rate_of_the_pixels():
    n = 4000
    source = BatchSource(torch.zeros(n, 1, dtype=torch.long), None, DataTransform("scale", 256), torch.Generator(), n, 1)
    source.mutate(0.3)
    (x, _), *_ = list(source.epoch())
    changed = (x != 0).float().mean().item()  # a replacement level is 0 one time in 256
    assert changed == pytest.approx(0.3 * 255 / 256, abs=0.03)
    continuous = _source(4, 2)
    continuous.mutate(0.0)  # no mutation: nothing to refuse
    with pytest.raises(ConfigError, match="quantized data"):
        continuous.mutate(0.1)


# ----------------------------------------------------------------------------- checkpoints
def _raw_checkpoint(path, metadata: dict) -> None:
    """A safetensors file of one tensor whose header's metadata is ``metadata`` as given (any JSON)."""
    header = {"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": metadata}
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"\0\0\0\0")


def test_a_checkpoint_header_of_other_than_strings_or_of_a_huge_version_is_refused_by_name(tmp_path):
    path = tmp_path / "c.safetensors"
    _raw_checkpoint(path, {"format": FORMAT, "version": 1})  # a number, not the string safetensors writes
    with pytest.raises(CheckpointError, match="metadata table of strings"):
        read_metadata(path)
    _raw_checkpoint(path, {"format": FORMAT, "version": "1" + "0" * 5000})  # (int() refuses so many digits)
    with pytest.raises(CheckpointError, match="malformed format version"):
        read_metadata(path)
    _raw_checkpoint(path, {"format": FORMAT, "version": str(VERSION + 1)})  # the next format version
    with pytest.raises(CheckpointError, match="newer dgmkit"):
        read_metadata(path)
    _raw_checkpoint(path, {"format": "someone-else's", "version": "1"})  # a foreign file of string metadata
    with pytest.raises(CheckpointError, match="is not a dgmkit checkpoint"):
        read_metadata(path)
    _raw_checkpoint(path, {"format": FORMAT, "version": "0000001"})
    with pytest.raises(CheckpointError, match="malformed format version"):
        read_metadata(path)


def test_a_torch_save_file_named_as_a_checkpoint_is_refused_unpickled_and_said_as_one(tmp_path):
    # (its zip or pickle bytes read as a header length of ~5.8e17: "claims ... bytes", with no word of what it was)
    class Unpickled:
        def __reduce__(self):
            return (pytest.fail, ("a checkpoint was unpickled",))

    for name, legacy in (("zip", False), ("pickle", True)):
        path = tmp_path / f"{name}.safetensors"
        torch.save({"model": Unpickled()}, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(CheckpointError, match="a torch.save file.*never unpickles"):
            read_metadata(path)


def test_a_checkpoint_header_over_the_cap_is_refused_unread_and_one_at_the_cap_is_read(tmp_path, monkeypatch):
    def write(path, n):  # a valid dgmkit header of exactly n bytes (padded by a metadata string), one tensor after it
        meta = {"format": FORMAT, "version": "1", "pad": ""}
        header = {"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": meta}
        meta["pad"] = "x" * (n - len(json.dumps(header).encode()))
        head = json.dumps(header).encode()
        assert len(head) == n
        path.write_bytes(struct.pack("<Q", n) + head + b"\0\0\0\0")

    at, over = tmp_path / "at.safetensors", tmp_path / "over.safetensors"
    write(at, MAX_HEADER_BYTES)
    write(over, MAX_HEADER_BYTES + 1)
    assert read_metadata(at)["format"] == FORMAT
    parsed = []
    monkeypatch.setattr(json, "loads", lambda *a, **k: parsed.append(1))  # refused before any JSON is parsed
    for reader in (read_metadata, load_checkpoint):
        with pytest.raises(CheckpointError, match=f"header is {MAX_HEADER_BYTES + 1} bytes, more than the 16 MiB"):
            reader(over)
    assert not parsed


def test_a_checkpoint_whose_header_would_pass_the_cap_is_not_written(tmp_path, monkeypatch):
    import dgmkit.training.checkpoint as checkpoint

    path = tmp_path / "c.safetensors"
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(30)])  # 60 tensors: some 3 KB of header
    save_checkpoint(path, model, {"model": "mlp"})
    kept = path.read_bytes()
    monkeypatch.setattr(checkpoint, "MAX_HEADER_BYTES", 2048)
    with pytest.raises(CheckpointError, match=r"its 60 tensors and the run record\) would be [\d,]+ bytes, more than"):
        save_checkpoint(path, model, {"model": "mlp", "changed": True})
    assert path.read_bytes() == kept and sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]
    save_checkpoint(path, nn.Linear(2, 2), {"model": "linear"})  # a header within it is written
    assert load_checkpoint(path)["config"] == {"model": "linear"}


def test_a_loaded_checkpoint_s_digest_is_the_start_of_its_bytes_sha256_and_its_parts_come_back(tmp_path):
    path = tmp_path / "c.safetensors"
    model = nn.Linear(3, 2)
    ema = {k: v + 1 for k, v in model.state_dict().items()}
    state = torch.Generator().manual_seed(5).get_state()
    save_checkpoint(path, model, {"model": "linear"}, trainer={}, rng={"torch": state}, ema=ema)
    ckpt = load_checkpoint(path)
    assert ckpt["digest"] == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert ckpt["trainer"] == {}  # counters given, even none, are kept (None: not given)
    assert ckpt["config"] == {"model": "linear"}
    assert all(torch.equal(ckpt["ema"][k], ema[k]) for k in ema) and ckpt["ema"].keys() == ema.keys()
    assert torch.equal(ckpt["rng"]["torch"], state)


def test_a_record_or_optimizer_groups_that_are_not_what_was_written_are_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    model = nn.Linear(2, 1)
    save_checkpoint(path, model, {"a": 1})
    meta = read_metadata(path)
    for key, value, match in (
        ("config", "[1, 2]", "config metadata is not a dict"),
        ("optimizer", json.dumps({"param_groups": [{"betas": [[0.9], 0.99]}], "scalars": {}}), "malformed optimizer"),
        ("optimizer", json.dumps({"param_groups": [{"lr": {"a": 1}}], "scalars": {}}), "malformed optimizer"),
    ):
        bad = tmp_path / f"{key}.safetensors"
        tensors = {"model/weight": torch.zeros(1, 2), "model/bias": torch.zeros(1)}
        bad.write_bytes(crafted_checkpoint(tensors, {**meta, key: value}))
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(bad)


def test_a_learning_rate_held_as_a_tensor_is_checkpointed_as_its_number(tmp_path):
    """--graph-step keeps the learning rate as a tensor on the device: the checkpoint holds the
    number, which a plain optimizer loads."""
    model = nn.Linear(2, 1)
    adam = torch.optim.Adam(model.parameters(), lr=torch.tensor(0.25))
    model(torch.ones(1, 2)).sum().backward()
    adam.step()
    save_checkpoint(tmp_path / "c.safetensors", model, {}, optimizer=adam)
    state = load_checkpoint(tmp_path / "c.safetensors")["optimizer"]
    assert state["param_groups"][0]["lr"] == 0.25 and type(state["param_groups"][0]["lr"]) is float
    plain = torch.optim.Adam(nn.Linear(2, 1).parameters(), lr=1.0)
    plain.load_state_dict(state)
    assert plain.param_groups[0]["lr"] == 0.25
    assert torch.equal(plain.state_dict()["state"][0]["exp_avg"], adam.state_dict()["state"][0]["exp_avg"])


def test_a_checkpoint_of_other_dtypes_than_the_model_s_is_refused():
    model = nn.Linear(2, 1)
    with pytest.raises(CheckpointError, match="2 tensors of another dtype"):
        check_dtypes(model, {k: v.double() for k, v in model.state_dict().items()}, "c.safetensors")
    check_dtypes(model, model.state_dict(), "c.safetensors")  # its own: fine


def test_trainer_counters_need_a_whole_number_epoch_not_a_flag():
    assert counters_or_none({"epoch": True}) is None
    assert counters_or_none({"epoch": 2}) == {"epoch": 2}
    assert counters_or_none({"epoch": -5}) is None and counters_or_none({"epoch": 2**62}) is None  # (a forged count)


# ----------------------------------------------------------------------------- the trainer's counters
CFG = RunConfig.of(dataset="digits", hidden=[16], latent_dim=2, batch_size=256, epochs=4, seed=3, device="cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trainer(digits, run_dir, scores=None, **kw) -> Trainer:
    """A small VAE's Trainer on the digits; ``scores``: the validation scores its epochs report, in turn."""
    cfg = CFG.replace(**{k: v for k, v in kw.items() if k in CFG.flat()})
    extra = {k: v for k, v in kw.items() if k not in CFG.flat()}
    options = trainer_options(cfg)
    options["parts"] = [*options["parts"], *extra.pop("parts", [])]
    torch.manual_seed(0)
    model = build_model(cfg, digits.event_shape, digits.num_levels)
    trainer = Trainer(
        model,
        build_objective(cfg),
        digits.train,
        make_transform("bernoulli", digits),
        valid=digits.valid,
        run_dir=run_dir,
        config={"config": cfg.to_dict()},
        progress=False,
        **options,
        **extra,
    )
    if scores is not None:
        told = iter(scores)
        trainer.validate = lambda: {f"valid_{trainer.score}": next(told)}
    return trainer


def test_parts_given_numpy_numbers_write_their_metrics_and_checkpoints(digits, tmp_path):
    """KLWarmup's beta, MovingAverage's decay and StepGuard's thresholds were kept as given: a NumPy
    float32 went on into the "beta" and "ema" of the metrics line and into the threshold a checkpoint
    within an epoch records, and the run failed after its first epoch (or at its time budget) with
    "Object of type float32 is not JSON serializable"."""
    np = pytest.importorskip("numpy")
    f = np.float32
    guard = StepGuard(f(50.0), f(1e3), f(5.0))
    parts = [KLWarmup(f(0.5), f(0.5)), MovingAverage(f(0.5)), guard]
    assert all(type(v) is float for v in (parts[0].beta, parts[0].epochs, parts[1].decay, guard.clip, guard.skip_norm))
    trainer = _trainer(digits, tmp_path, epochs=1, parts=parts, batch_size=512)
    trainer.fit()
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert line["beta"] == 0.5 and line["ema"] == 0.5
    assert type(trainer.guard.epoch_threshold) is float and trainer.guard.epoch_threshold == 1e3


def _best_epoch_on_disk(run_dir) -> int:
    return load_checkpoint(run_dir / "best.safetensors")["trainer"]["epoch"]


def test_the_best_checkpoint_is_written_by_a_strictly_better_epoch_and_patience_counts_the_others(digits, tmp_path):
    seen = []
    trainer = _trainer(digits, tmp_path, scores=[-10.0, -10.0, -20.0, -5.0], patience=3)
    trainer.callbacks.append(lambda t, m: seen.append((t.best_epoch, t.bad_epochs, _best_epoch_on_disk(tmp_path))))
    trainer.fit()
    assert seen == [(1, 0, 1), (1, 1, 1), (1, 2, 1), (4, 0, 4)]  # a tie is no improvement
    stopped = _trainer(digits, tmp_path / "stopped", scores=[-10.0, -11.0, -12.0, -1.0], patience=2)
    assert len(stopped.fit()) == 3 and stopped.stopped_early  # two epochs without improvement: the run ends


def test_a_resumed_run_keeps_its_own_optimizer_settings_and_the_file_s_moments(digits, tmp_path):
    first = _trainer(digits, tmp_path, epochs=1)
    first.fit()
    moments = [first.optimizer.state[p]["exp_avg"].clone() for p in first._trained]
    resumed = _trainer(digits, tmp_path, epochs=2, weight_decay=0.01)
    resumed.resume()
    assert all(g["weight_decay"] == 0.01 for g in resumed.optimizer.param_groups)  # the run's, not the file's 0
    assert all(torch.equal(resumed.optimizer.state[p]["exp_avg"], m) for p, m in zip(resumed._trained, moments))


# ----------------------------------------------------------------------------- precision and EM fits
def test_reduced_precision_on_a_cpu_is_refused_by_name_and_auto_is_fp32():
    for name in ("bf16", "fp16"):
        with pytest.raises(TrainingError, match=f"mixed precision \\({name}\\) is only supported on a CUDA device"):
            resolve_precision(name, torch.device("cpu"))
    assert resolve_precision("auto", torch.device("cpu"), bf16_checked=True) == "fp32"


@pytest.mark.parametrize("take", [True, False])
def test_a_step_decided_on_the_device_updates_fused_adam_exactly_where_taken(take):
    amp = MixedPrecision("fp32", torch.device("cpu"))
    w = nn.Parameter(torch.ones(3))
    adam = torch.optim.Adam([w], lr=0.1, fused=True)
    w.grad = torch.ones(3)
    amp.step(adam, torch.tensor(take))
    # Adam's first step moves each weight by lr (up to its eps); a step not taken leaves it
    torch.testing.assert_close(w.detach(), torch.full((3,), 0.9) if take else torch.ones(3), rtol=0, atol=1e-6)


class _Converged:
    """An EM fit that has converged: every step leaves its log-likelihood where it was."""

    def em_step(self, x):
        return -1.0

    def log_prob(self, x):
        return torch.full((len(x),), -1.0)


def test_an_em_fit_whose_score_ties_keeps_its_first_best_iteration():
    split = Split(torch.zeros(4, 2))
    result = fit_em(_Converged(), split, split, IDENTITY, None, iterations=3)
    assert (result.epoch, result.best_epoch, result.best_valid) == (3, 1, -1.0)


class _Diverged(_Converged):
    def log_prob(self, x):
        return torch.full((len(x),), float("nan"))


def test_an_em_fit_whose_log_likelihood_is_not_finite_stops_with_a_dgmkit_error():
    split = Split(torch.zeros(4, 2))
    with pytest.raises(TrainingError, match="non-finite log-likelihood"):
        fit_em(_Diverged(), split, split, IDENTITY, None, iterations=2)


def test_the_finite_loss_check_reads_every_every_th_step_the_first_read_at_step_every():
    check = FiniteLossCheck(3, parallel=False, message=lambda loss: f"the loss became {loss.item()}")
    nan = torch.tensor(float("nan"))
    for i in (0, 1, 3, 4):  # steps 1, 2, 4, 5: not read (a read on a GPU waits for it)
        with check.around_backward(i, nan, None, 8):
            pass
    for i in (2, 5):  # steps 3 and 6
        with pytest.raises(TrainingError, match="the loss became nan"), check.around_backward(i, nan, None, 8):
            pass


# ----------------------------------------------------------------------------- resume, the time budget and the pace
def _counters_on_disk(run_dir, name: str = "checkpoint.safetensors") -> dict:
    t = load_checkpoint(run_dir / name)["trainer"]
    return {k: t.get(k) for k in ("epoch", "step", "best_valid", "best_epoch", "bad_epochs", "skipped_steps")}


def test_a_run_resumed_between_epochs_records_the_counters_and_stops_as_the_uninterrupted_one(digits, tmp_path):
    """Validation scores -5, -10 | -7, -8, -1 with patience 3: the best is epoch 1, and the third
    epoch without improvement (epoch 4) ends the run, whether it was resumed after epoch 2 or not;
    the checkpoint counts every step of the 4 epochs, the best score and the epochs since it."""
    whole = _trainer(digits, tmp_path / "whole", scores=[-5.0, -10.0, -7.0, -8.0, -1.0], epochs=5, patience=3)
    assert len(whole.fit()) == 4 and whole.stopped_early
    steps = whole.steps_per_epoch
    expected = {"epoch": 4, "step": 4 * steps, "best_valid": -5.0, "best_epoch": 1, "bad_epochs": 3, "skipped_steps": 0}
    assert _counters_on_disk(tmp_path / "whole") == expected
    run = tmp_path / "resumed"
    _trainer(digits, run, scores=[-5.0, -10.0], epochs=2, patience=3).fit()
    resumed = _trainer(digits, run, scores=[-7.0, -8.0, -1.0], epochs=5, patience=3)
    resumed.resume()
    assert (resumed.epoch, resumed.step, resumed.best_epoch, resumed.bad_epochs) == (2, 2 * steps, 1, 1)
    assert len(resumed.fit()) == 2 and resumed.stopped_early
    assert _counters_on_disk(run) == expected
    assert _counters_on_disk(run, "best.safetensors")["epoch"] == 1  # not rewritten by the resumed epochs
    lines = [[json.loads(s) for s in (p / "metrics.jsonl").read_text().splitlines()] for p in (tmp_path / "whole", run)]
    assert [m["epoch"] for m in lines[1]] == [1, 2, 3, 4] and [m["valid_elbo"] for m in lines[1]] == [-5, -10, -7, -8]
    drop = ("time_s", "images_per_s")
    assert [{k: v for k, v in m.items() if k not in drop} for m in lines[0]] == [
        {k: v for k, v in m.items() if k not in drop} for m in lines[1]
    ]


class _Clock:
    """A clock that advances one second at each reading (the budget's: at fit's start, after
    each step but an epoch's last, and before each epoch but a call's first)."""

    def __init__(self, start: float = 0.0):
        self.t = start

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def test_a_budget_of_whole_seconds_runs_out_on_the_reading_at_which_they_have_passed(digits, tmp_path):
    """Of 5 steps an epoch: a budget of 3 s (the clock read at 101 s when fit starts) has passed at
    the reading after step 3, which stops the run there; one of 5 s at the reading before epoch 2,
    which stops it between the epochs; one of half a second still takes a step (every call does)."""
    within = _trainer(digits, tmp_path / "within", parts=[TimeBudget(3.0, _Clock(100.0))])
    assert within.steps_per_epoch == 5
    assert within.fit() == [] and within.budget_spent and (within.step, within.steps_into_epoch) == (3, 3)
    assert load_checkpoint(tmp_path / "within" / "checkpoint.safetensors")["trainer"]["epoch_progress"]["step"] == 3
    # a run that stops now keeps that checkpoint (its message says so)
    again = _trainer(digits, tmp_path / "within", epochs=1)
    again.resume()
    with torch.no_grad():
        for p in again.model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(TrainingError, match="epoch 1, step 4; the checkpoint written within epoch 1 is kept"):
        again.fit()
    rest = _trainer(digits, tmp_path / "within", epochs=1)
    rest.resume()
    assert len(rest.fit()) == 1
    # its throughput is of the 2 steps of the 5 this call trained: 2/5 of the epoch's rows a second
    assert rest.images_per_s(1.0) == pytest.approx(len(digits.train) * 2 / 5)
    between = _trainer(digits, tmp_path / "between", parts=[TimeBudget(5.0, _Clock())])
    assert len(between.fit()) == 1 and between.budget_spent and (between.step, between.steps_into_epoch) == (5, 0)
    least = _trainer(digits, None, parts=[TimeBudget(0.5, _Clock())])
    assert least.fit() == [] and least.budget_spent and least.step == 1


def test_a_resumed_run_stopped_within_its_first_epoch_has_written_its_resumed_settings(digits, tmp_path):
    """A run of 1 epoch resumed for 3 and stopped by the budget after 2 steps of epoch 2: its
    config.json says 3 epochs, as its checkpoint's record does (a later resume reads the former)."""
    _trainer(digits, tmp_path, epochs=1).fit()
    more = _trainer(digits, tmp_path, epochs=3, parts=[TimeBudget(2.0, _Clock())])
    more.resume()
    assert more.fit() == [] and more.budget_spent and more.steps_into_epoch == 2
    written = json.loads((tmp_path / "config.json").read_text())["config"]["optim"]["epochs"]
    assert written == load_checkpoint(tmp_path / "checkpoint.safetensors")["config"]["config"]["optim"]["epochs"] == 3


def test_patience_lowered_on_resume_lets_an_epoch_stopped_within_end_first(digits, tmp_path):
    """Epochs 1, 2 score -1, -2 (one without improvement) and the budget stops epoch 3 after a
    step; resumed with a patience of 1, the run ends epoch 3 (its other steps are trained) and
    stops early after it."""
    first = _trainer(digits, tmp_path, scores=[-1.0, -2.0], patience=5, parts=[TimeBudget(11.0, _Clock())])
    assert len(first.fit()) == 2 and (first.epoch, first.steps_into_epoch) == (2, 1)
    rest = _trainer(digits, tmp_path, scores=[-3.0, -4.0], patience=1)
    rest.resume()
    assert len(rest.fit()) == 1 and rest.epoch == 3 and rest.step == 3 * rest.steps_per_epoch and rest.stopped_early


def test_a_run_for_a_time_records_its_epochs_with_the_first_epoch_s_files(digits, tmp_path):
    """Stopped right after the first epoch's files (before their time is counted), the run folder
    already holds the epochs chosen from the first epoch's pace: config.json and the checkpoint."""
    run = _trainer(digits, tmp_path, epochs=400, parts=[TrainFor(20.0, _Clock())])

    def killed(trainer):
        raise KeyboardInterrupt

    assert run.pace is not None
    run.pace.with_files = killed
    with pytest.raises(KeyboardInterrupt):
        run.fit()
    assert run.epoch == 1 and run.epochs < 400
    written = json.loads((tmp_path / "config.json").read_text())["config"]["optim"]["epochs"]
    assert written == load_checkpoint(tmp_path / "checkpoint.safetensors")["config"]["config"]["optim"]["epochs"]
    assert written == run.epochs


def _change_counters(path, change) -> None:
    def edit(meta: dict) -> None:
        counters = json.loads(meta["trainer"])
        change(counters)
        meta["trainer"] = json.dumps(counters)

    edit_metadata(path, edit)


def _set_adam_steps(path, steps: int) -> None:
    """The checkpoint ``path`` with every Adam step count set to ``steps`` (a file of a run that took that
    many updates: its counters and its optimizer agree)."""

    def edit(tensors: dict) -> None:
        for name in [n for n in tensors if n.startswith("optim/") and n.endswith("/step")]:
            tensors[name] = torch.full_like(tensors[name], steps)

    edit_tensors(path, edit)


def test_a_place_within_an_epoch_past_its_end_is_refused(digits, tmp_path):
    """A checkpoint within an epoch records 1 to 5 of its 5 steps done (5: a SIGTERM stopped the
    epoch's validation, which the resume does again); 6 is past the epoch."""
    _trainer(digits, tmp_path, parts=[TimeBudget(3.0, _Clock())]).fit()
    _change_counters(tmp_path / "checkpoint.safetensors", lambda t: t["epoch_progress"].update(step=6))
    with pytest.raises(CheckpointError, match="place within an epoch"):
        _trainer(digits, tmp_path).resume()


def test_a_first_epoch_stopped_within_records_the_pace_of_its_steps_after_the_mark(digits, tmp_path):
    """Of 5 steps: the pace's clock (1 s a reading) is read at the start, after the 2nd step (the
    mark) and where the budget stops the epoch, after the 3rd: 1 step in 1 s, 2 s spent."""
    _trainer(digits, tmp_path, epochs=400, parts=[TrainFor(20.0, _Clock()), TimeBudget(3.0, _Clock())]).fit()
    place = load_checkpoint(tmp_path / "checkpoint.safetensors")["trainer"]["epoch_progress"]
    assert place["step"] == 3 and (place["pace_s"], place["pace_spent_s"]) == (1.0, 2.0)


@pytest.mark.parametrize(
    "change",
    [
        {"step": 0},
        {"best_epoch": 2},
        {"bad_epochs": 2},
        {"bad_epochs": 1},  # (its one epoch was its best: none since without improvement)
        {"best_epoch": -1},  # (an epoch trained has a best)
        {"best_epoch": 0, "bad_epochs": 1},
        {"skipped_steps": 6},  # (more updates skipped than steps taken)
    ],
)
def test_counters_that_no_run_could_have_recorded_are_refused(digits, tmp_path, change):
    """After one epoch of 5 steps: fewer steps than epochs, a best or epochs without improvement beyond it
    or other than the epochs since the best, more skipped updates than steps."""
    _trainer(digits, tmp_path, epochs=1).fit()
    _change_counters(tmp_path / "checkpoint.safetensors", lambda t: t.update(change))
    with pytest.raises(CheckpointError, match="contradict each other"):
        _trainer(digits, tmp_path, epochs=2).resume()


@pytest.mark.parametrize("step", [3, 6, 10**7])
def test_a_step_count_that_is_not_its_epochs_steps_is_refused(digits, tmp_path, step):
    """After one epoch of 5 steps the run has taken 5 (4 on data-parallel ranks that left out a last batch too
    small to share); another count would go on (a discrete VAE's temperature, of the step) as another run."""
    _trainer(digits, tmp_path, epochs=1).fit()
    _change_counters(tmp_path / "checkpoint.safetensors", lambda t: t.update(step=step))
    _set_adam_steps(tmp_path / "checkpoint.safetensors", min(step, 5))  # (else Adam's count is refused first)
    with pytest.raises(CheckpointError, match=f"step = {step} is not the steps of its 1 epoch"):
        _trainer(digits, tmp_path, epochs=2).resume()
    _change_counters(tmp_path / "checkpoint.safetensors", lambda t: t.update(step=4))
    _set_adam_steps(tmp_path / "checkpoint.safetensors", 4)  # (those ranks' Adam took 4 updates too)
    _trainer(digits, tmp_path, epochs=2).resume()


def test_a_resume_on_another_number_of_threads_says_so(digits, tmp_path):
    _trainer(digits, tmp_path, epochs=1).fit()
    now = torch.get_num_threads()
    _change_counters(tmp_path / "checkpoint.safetensors", lambda t: t.update(cpu_threads=now + 1))
    moved = _trainer(digits, tmp_path, epochs=2)
    moved.resume()
    assert moved.threads_moved == (now + 1, now)


def test_a_resume_in_another_number_of_processes_says_so(digits, tmp_path):
    """The checkpoint keeps the number of processes that wrote it ("processes"; one from before,
    of a data-parallel run, says it by its ranks' random states); a number of no run is refused."""
    _trainer(digits, tmp_path, epochs=1).fit()
    assert load_checkpoint(tmp_path / "checkpoint.safetensors")["trainer"]["processes"] == 1
    same = _trainer(digits, tmp_path, epochs=2)
    same.resume()
    assert same.processes_moved is None
    _change_counters(tmp_path / "checkpoint.safetensors", lambda t: t.update(processes=4))
    moved = _trainer(digits, tmp_path, epochs=2)
    moved.resume()
    assert moved.processes_moved == (4, 1)
    from dgmkit.training.trainer import processes_of

    two = {"torch_ranks": torch.zeros(2, 8, dtype=torch.uint8)}  # before "processes": the ranks' states say it
    assert processes_of({}, two) == 2 and processes_of({"cpu_threads": 4}, {}) == 1 and processes_of({}, {}) is None
    assert processes_of({"processes": 3, "cpu_threads": 4}, two) == 3
    for bad in (0, True, 2.0, "2", 2**17):
        _change_counters(tmp_path / "checkpoint.safetensors", lambda t, bad=bad: t.update(processes=bad))
        with pytest.raises(CheckpointError, match="is not a number of processes"):
            _trainer(digits, tmp_path, epochs=2).resume()


def test_a_checkpoint_of_nan_weights_is_refused_and_leaves_the_data_order_as_it_was(digits, tmp_path):
    _trainer(digits, tmp_path, epochs=1).fit()
    path = tmp_path / "checkpoint.safetensors"
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    name = next(k for k in tensors if k.startswith("model/") and tensors[k].is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    path.write_bytes(crafted_checkpoint(tensors, meta))
    fresh = _trainer(digits, tmp_path, epochs=2)
    before = fresh.generator.get_state()
    with pytest.raises(CheckpointError, match="NaN or inf"):
        fresh.resume()
    assert torch.equal(fresh.generator.get_state(), before)


def test_an_epoch_s_line_counts_the_updates_skipped_before_a_stop_within_it(digits, tmp_path):
    """Stopped after 3 steps whose guard (a threshold no norm reaches) had skipped 2 by the
    record: the epoch's line, once resumed and ended, counts those 2."""
    guard = StepGuard(skip_norm=1e9)
    _trainer(digits, tmp_path, epochs=1, parts=[guard, TimeBudget(3.0, _Clock())]).fit()
    _change_counters(tmp_path / "checkpoint.safetensors", lambda t: t["epoch_progress"].update(skipped=2))
    rest = _trainer(digits, tmp_path, epochs=1, parts=[guard])
    rest.resume()
    (line,) = rest.fit()
    assert (line["skipped_steps"], line["steps"]) == (2, 5)


def test_a_run_with_a_whole_number_skip_threshold_stopped_within_an_epoch_resumes(digits, tmp_path):
    """skip_grad_norm = 1000 in a config file (TOML's whole number) reached the guard as an int, the
    place within an epoch recorded "threshold": 1000, and the resume refused its own checkpoint ("the
    place within an epoch it records is malformed"). It is a float now; a place recorded so resumes."""
    _trainer(digits, tmp_path, epochs=1, skip_grad_norm=1000, parts=[TimeBudget(3.0, _Clock())]).fit()
    place = load_checkpoint(tmp_path / "checkpoint.safetensors")["trainer"]["epoch_progress"]
    assert place["step"] == 3 and place["threshold"] == 1000.0 and type(place["threshold"]) is float
    _change_counters(tmp_path / "checkpoint.safetensors", lambda t: t["epoch_progress"].update(threshold=10**400))
    with pytest.raises(CheckpointError, match="malformed"):  # (a whole number of no float: refused, not OverflowError)
        _trainer(digits, tmp_path, epochs=1, skip_grad_norm=1000).resume()
    _change_counters(tmp_path / "checkpoint.safetensors", lambda t: t["epoch_progress"].update(threshold=1000))
    rest = _trainer(digits, tmp_path, epochs=1, skip_grad_norm=1000)
    rest.resume()
    (line,) = rest.fit()
    assert (line["skipped_steps"], line["steps"]) == (0, 5) and rest.guard.epoch_threshold == 1000.0


def test_a_place_within_an_epoch_with_more_norms_than_steps_is_refused(digits, tmp_path):
    _trainer(digits, tmp_path, epochs=1, parts=[StepGuard(skip_norm=1e9), TimeBudget(3.0, _Clock())]).fit()
    _change_counters(tmp_path / "checkpoint.safetensors", lambda t: t["epoch_progress"].update(norms=[1.0] * 4))
    with pytest.raises(CheckpointError, match="place within an epoch"):
        _trainer(digits, tmp_path, epochs=1, parts=[StepGuard(skip_norm=1e9)]).resume()


@pytest.mark.parametrize(
    "sums", ["1.0", [[1.0, 2.0]], [[1.0], [2.0]], [[1.0, 2.0], [1.0, "2"]], [[1.0, 2.0], [1e39, 2.0]], [[1, 2], [3, 4]]]
)
def test_a_place_within_an_epoch_with_malformed_sums_of_the_ranks_is_refused(digits, tmp_path, sums):
    """The ranks' own sums of loss and score (a data-parallel run's, ``rank_sums``): two floats of
    float32's range for each of two ranks or more."""
    _trainer(digits, tmp_path, epochs=1, parts=[TimeBudget(3.0, _Clock())]).fit()
    _change_counters(tmp_path / "checkpoint.safetensors", lambda t: t["epoch_progress"].update(rank_sums=sums))
    with pytest.raises(CheckpointError, match="place within an epoch"):
        _trainer(digits, tmp_path, epochs=1).resume()


def test_a_run_resumed_from_an_earlier_checkpoint_drops_the_metrics_lines_after_it(digits, tmp_path):
    _trainer(digits, tmp_path, epochs=1).fit()
    earlier = (tmp_path / "checkpoint.safetensors").read_bytes()
    more = _trainer(digits, tmp_path, epochs=2)
    more.resume()
    more.fit()
    (tmp_path / "checkpoint.safetensors").write_bytes(earlier)  # (a run folder put back to epoch 1)
    again = _trainer(digits, tmp_path, epochs=2)
    again.resume()
    again.fit()
    assert [json.loads(s)["epoch"] for s in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_resumed_run_counts_the_updates_its_checkpoint_says_were_skipped(digits, tmp_path):
    """(A checkpoint of a run whose guard skipped 4 updates, as its counters record them.)"""
    _trainer(digits, tmp_path, epochs=1).fit()
    _change_counters(tmp_path / "checkpoint.safetensors", lambda t: t.update(skipped_steps=4))
    _set_adam_steps(tmp_path / "checkpoint.safetensors", 1)  # (Adam took the one update of the 5 not skipped)
    resumed = _trainer(digits, tmp_path, epochs=2)
    resumed.resume()
    assert resumed.skipped_steps == 4
    resumed.fit()  # (no guard: nothing more skipped)
    assert _counters_on_disk(tmp_path)["skipped_steps"] == 4


class _Epoch:
    """What the pace reads of a trainer: an epoch of 100 steps, on the CPU."""

    steps_per_epoch, epochs, device = 100, 1000, torch.device("cpu")


def test_a_call_that_goes_on_within_the_first_epoch_is_timed_from_the_end_of_a_tenth_of_its_own_steps():
    """A call resumed at step 50 of 100 trains 50 steps: its pace leaves out the first tenth of
    those (as a whole epoch's leaves out its first 10 of 100, the mark after its 11th step), not a
    tenth of the epoch, and ends with the second-to-last step. Steps up to 60 take 0.5 s, then 0.1 s."""
    now = [0.0]
    pace = Pace(1000.0, clock=lambda: now[0])
    pace.resume_from({"pace_s": None, "pace_spent_s": 0.0})
    pace.start_epoch()
    took = {i: 0.5 if i <= 60 else 0.1 for i in range(50, 100)}
    for i in range(50, 100):
        now[0] += took[i]
        pace.after_step(_Epoch(), i)
    # the mark after the 6th step trained (step 55), the end after step 98
    step_s = sum(took[i] for i in range(56, 99)) / 43
    assert pace.step_s == pytest.approx(step_s)
    now[0] += 2.0  # validation
    epochs, per_epoch, warmup = pace.decide(_Epoch())
    # an epoch: 100 steps at the pace and the 2 s of validation (the last step's time is training's, not
    # validation's); the warm-up: what the 50 steps took beyond the pace
    assert per_epoch == pytest.approx(100 * step_s + 2.0)
    assert warmup == pytest.approx(sum(took.values()) - 50 * step_s)
    assert epochs == int((1000.0 - warmup) // per_epoch)


def test_a_first_epoch_stopped_where_its_pace_was_marked_has_no_pace_and_its_seconds_add_up():
    now = [0.0]
    pace = Pace(1000.0, clock=lambda: now[0])
    pace.resume_from({"pace_s": None, "pace_spent_s": 10.0})  # an earlier call trained 10 s of the epoch
    pace.start_epoch()
    for i in range(11):  # the mark after step 10 (the 11th of 100)
        now[0] += 0.5
        pace.after_step(_Epoch(), i)
    # stopped right there: no step after the mark was timed (the earlier call's none either)
    assert pace.stopped(_Epoch(), 10) == {"pace_s": None, "pace_spent_s": pytest.approx(10.0 + 5.5)}


def test_a_second_call_on_the_same_pace_decides_as_a_new_pace_given_the_first_call_s_record():
    """A fit called again on the same trainer after a time budget stopped its first epoch: the
    pace keeps nothing of the first call but its record (``stopped``), as a resumed run's new
    pace has only the checkpoint's."""
    now = [0.0]

    def run(pace: Pace, steps: range) -> None:
        pace.start_epoch()
        for i in steps:
            now[0] += 0.2 if i % 3 else 0.7
            pace.after_step(_Epoch(), i)

    again = Pace(1000.0, clock=lambda: now[0])
    run(again, range(0, 30))
    record = again.stopped(_Epoch(), 29)
    again.resume_from(record)
    fresh = Pace(1000.0, clock=lambda: now[0])
    fresh.resume_from(record)
    start = now[0]
    run(again, range(30, 100))
    decided = again.decide(_Epoch())
    now[0] = start
    run(fresh, range(30, 100))
    assert decided == fresh.decide(_Epoch())


# ----------------------------------------------------------------------------- the other parts
def test_a_later_part_of_a_kind_takes_its_place_in_the_order(digits):
    """Compile given again after ChannelsLast compiles the channels-last pass (not the other way round)."""
    trainer = _trainer(digits, None, parts=[Compile(), ChannelsLast(), Compile()])
    assert isinstance(trainer.forward, CompiledOrEager)


def test_a_mutation_rate_of_one_is_allowed_and_above_it_refused():
    assert Mutation(1.0).rate == 1.0  # the edge of [0, 1]: every pixel replaced
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Mutation(1.0 + 1e-9)


def test_normalised_gradients_divide_by_the_norm_plus_eps_and_leave_a_zero_gradient_zero():
    w, z = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.ones(3))
    adam = torch.optim.Adam([w, z], lr=0.1)
    NormalisedGradients(eps=1.0).attach(SimpleNamespace(optimizer=adam))
    w.grad, z.grad = torch.tensor([3.0, 4.0]), torch.zeros(3)
    adam.step()
    torch.testing.assert_close(w.grad, torch.tensor([3.0, 4.0]) / (5.0 + 1.0))  # (divided in place, before the step)
    assert torch.equal(z.grad, torch.zeros(3)) and torch.equal(z.detach(), torch.ones(3))  # (0 / 0 would be NaN)


class _Told:
    """An objective that takes labels and records what the trainer tells it of them."""

    takes_labels = True

    def __init__(self):
        self.told: list[tuple] = []

    def setup_labels(self, labelled: int, added: int = 0) -> None:
        self.told.append((labelled, added))


def test_labelled_rows_tell_the_objective_the_rows_added_to_every_batch():
    y = torch.tensor([0, -1, 1, -1, -1, -1, -1, -1])  # two rows labelled
    objective = _Told()
    LabelledRows(3).attach(SimpleNamespace(objective=objective, batches=_source(8, 4, y=y)))
    assert objective.told == [(2, 3)]  # (it weighs each part of a batch by its share of the training set)


def test_an_epoch_resumed_within_goes_on_with_what_its_guard_had_seen():
    """The first step of an epoch (skipped at a threshold of 2) went before a stop; the resumed
    epoch's step is skipped at 5: every update of the epoch was skipped, and the lowest threshold
    in force was the first step's."""
    guard = GradientGuard(skip_norm=5.0)
    guard.start_epoch()
    guard.load_epoch(1, [9.0], 2.0)
    p = nn.Parameter(torch.zeros(1))
    p.grad = torch.tensor([7.0])
    assert guard.take([p]) is False
    assert guard.epoch_norms == [9.0, 7.0] and guard.epoch_skipped == 2
    problem = guard.epoch_problem()
    assert problem is not None and "every one of the epoch's 2 updates was skipped" in problem
    assert "lowest in force 2)" in problem


def test_a_moving_average_that_has_made_no_update_loads_back():
    """(A checkpoint of a run whose every step so far was skipped holds such an average.)"""
    model = nn.Linear(2, 1)
    fresh = EMA(model, 0.9)
    other = EMA(nn.Linear(2, 1), 0.9)
    other.load_state_dict(fresh.state_dict())
    assert other.updates == 0 and other.current_decay() == pytest.approx(0.1)
    assert all(torch.equal(other.weights[k], fresh.weights[k]) for k in fresh.weights)


def test_a_moving_average_counted_on_the_device_takes_a_loaded_count():
    """(A trainer with GraphStep that resumes after training in the same process.)"""
    model = nn.Linear(1, 1, bias=False)
    ema = EMA(model, 0.5)
    for _ in range(2):
        ema.update(model, torch.tensor(True))
    state = {"updates": 7, "weights": {"weight": torch.zeros(1, 1)}}
    ema.load_state_dict(state)
    assert ema.updates == 7
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, torch.tensor(True))  # decay min(0.5, 8 / 17): the loaded count's
    assert ema.weights["weight"].item() == pytest.approx(1 - 8 / 17) and ema.updates == 8


def test_a_trainer_made_and_fitted_within_inference_mode_trains(digits, tmp_path):
    """Its counters, made within a caller's torch.inference_mode(), were inference tensors that fit
    could not update ("Inplace update to inference tensor outside InferenceMode")."""
    cfg = CFG.replace(epochs=1)
    model = build_model(cfg, digits.event_shape, digits.num_levels)  # (its weights made outside, as a caller's are)
    with torch.inference_mode():
        transform = make_transform("bernoulli", digits)
        trainer = Trainer(model, build_objective(cfg), digits.train, transform, valid=digits.valid, run_dir=tmp_path,
                          config={"config": cfg.to_dict()}, progress=False, **trainer_options(cfg))  # fmt: skip
        history = trainer.fit()
    assert len(history) == 1 and math.isfinite(history[0]["train_elbo"])
