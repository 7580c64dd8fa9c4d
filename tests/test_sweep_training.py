"""What a mutation sweep of the training loop's pieces (training/: schedules, the moving average,
the batch source, the step guard, checkpoints, precision, EM fits, the trainer's counters) found
unchecked: the range checks of a schedule's floor and of the average's decay, an average kept on
the device then told by bools, an epoch's coverage of the rows and its row count with a short
last batch or labelled rows, the spread of data given as Gaussians, the refusals of a
checkpoint's header, record and dtypes, a learning rate held as a tensor, fused Adam's skip on
the device, bf16 on a CPU, an EM fit's ties and non-finite scores, the finite-loss check's
steps, and which epoch writes best.safetensors."""

import hashlib
import json
import struct

import pytest
import torch
from safetensors.torch import save as st_save
from torch import nn

from dgmkit.config import RunConfig, build_model, build_objective, trainer_options
from dgmkit.data import DataTransform, Split, load_dataset, make_transform
from dgmkit.errors import CheckpointError, ConfigError, TrainingError
from dgmkit.training import Trainer
from dgmkit.training.batches import BatchSource, in_precision
from dgmkit.training.checkpoint import (
    FORMAT,
    check_dtypes,
    counters_or_none,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from dgmkit.training.ema import EMA
from dgmkit.training.fit import fit_em
from dgmkit.training.precision import MixedPrecision, resolve_precision
from dgmkit.training.schedules import LRSchedule
from dgmkit.training.step_guard import FiniteLossCheck

IDENTITY = DataTransform("continuous", None)


# ----------------------------------------------------------------------------- schedules and EMA
def test_a_learning_rate_floor_below_zero_is_refused():
    with pytest.raises(ValueError, match="minimum >= 0"):
        LRSchedule("cosine", minimum=-1e-4)
    assert LRSchedule("cosine", minimum=0.0).learning_rate(1e-3, 10, 10) == 0.0  # the edge: allowed


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
    _raw_checkpoint(path, {"format": FORMAT, "version": "2"})  # the next format version
    with pytest.raises(CheckpointError, match="newer dgmkit"):
        read_metadata(path)
    _raw_checkpoint(path, {"format": "someone-else's", "version": "1"})  # a foreign file of string metadata
    with pytest.raises(CheckpointError, match="is not a dgmkit checkpoint"):
        read_metadata(path)
    _raw_checkpoint(path, {"format": FORMAT, "version": "0000001"})
    with pytest.raises(CheckpointError, match="malformed format version"):
        read_metadata(path)


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
        bad.write_bytes(st_save({"model/weight": torch.zeros(1, 2), "model/bias": torch.zeros(1)}, {**meta, key: value}))
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


# ----------------------------------------------------------------------------- the trainer's counters
CFG = RunConfig.of(dataset="digits", hidden=[16], latent_dim=2, batch_size=256, epochs=4, seed=3, device="cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trainer(digits, run_dir, scores=None, **kw) -> Trainer:
    """A small VAE's Trainer on the digits; ``scores``: the validation scores its epochs report, in turn."""
    cfg = CFG.replace(**{k: v for k, v in kw.items() if k in CFG.flat()})
    extra = {k: v for k, v in kw.items() if k not in CFG.flat()}
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
        **trainer_options(cfg),
        **extra,
    )
    if scores is not None:
        told = iter(scores)
        trainer.validate = lambda: {f"valid_{trainer.score}": next(told)}
    return trainer


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
