"""--time-budget: a run stops at the end of the step in which its budget runs out, with a
checkpoint from which --resume goes on exactly (within an epoch too), so that a long run can be
done as several shorter commands."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import load_file

from dgmkit.cli.main import main
from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import load_dataset, make_transform
from dgmkit.errors import CheckpointError, plural
from dgmkit.training import MovingAverage, StepGuard, TimeBudget, Trainer, read_metadata
from run_records import crafted_checkpoint


class Clock:
    """A clock that advances one second each time it is read: a budget of T seconds runs out
    after a known number of readings (one when fit starts, one before each epoch but the first
    of the call, one after each step but an epoch's last)."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


CFG = RunConfig.of(dataset="digits", hidden=[16], latent_dim=3, batch_size=64, epochs=3, seed=5, ema=0.9, device="cpu")


def _trainer(digits, run_dir, budget=None, **kw) -> Trainer:
    model = build_model(CFG, digits.event_shape, digits.num_levels)
    parts = [MovingAverage(0.9), StepGuard(skip_factor=1.5), *([] if budget is None else [TimeBudget(budget, Clock())])]
    return Trainer(
        model, build_objective(CFG), digits.train, make_transform("bernoulli", digits), valid=digits.valid, epochs=3,
        batch_size=64, seed=5, run_dir=run_dir, progress=False, device="cpu", parts=parts, **kw,
    )  # fmt: skip


def _tensors(path) -> dict:
    return load_file(str(path / "checkpoint.safetensors"))


def test_a_run_stopped_within_epochs_and_resumed_ends_bit_for_bit_as_the_uninterrupted_one(digits, tmp_path):
    whole = _trainer(digits, tmp_path / "whole")
    whole.fit()
    steps = whole.steps_per_epoch  # 19 steps per epoch
    run = tmp_path / "parts"
    first = _trainer(digits, run, budget=5.5)  # out after step 6 of epoch 1
    assert first.fit() == [] and first.budget_spent and first.steps_into_epoch == 6 and first.step == 6
    assert not (run / "metrics.jsonl").exists()  # no epoch finished
    done = 6
    for budget in (steps + 4.5, 2.5, 1000.0):  # into epoch 2, a little further, then to the end
        t = _trainer(digits, run, budget=budget)
        t.resume()
        assert t.step == done
        t.fit()
        done = t.step
    assert not t.budget_spent and t.epoch == 3
    a, b = _tensors(tmp_path / "whole"), _tensors(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = [[json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()] for p in (tmp_path / "whole", run)]
    drop = ("time_s", "images_per_s")
    assert [{k: v for k, v in m.items() if k not in drop} for m in lines[0]] == [
        {k: v for k, v in m.items() if k not in drop} for m in lines[1]
    ]


def test_a_budget_that_runs_out_with_an_epoch_stops_before_the_next(digits, tmp_path):
    t = _trainer(digits, tmp_path, budget=18.5)  # 1 + 18 readings in epoch 1, the 20th after it
    history = t.fit()
    assert len(history) == 1 and t.budget_spent and t.steps_into_epoch == 0 and t.epoch == 1


def _rewrite(path, change_trainer=None, change_tensors=None) -> None:
    tensors, meta = st_load(path.read_bytes()), read_metadata(path)
    counters = json.loads(meta["trainer"])
    if change_trainer:
        change_trainer(counters)
    meta["trainer"] = json.dumps(counters)
    if change_tensors:
        change_tensors(tensors)
    path.write_bytes(crafted_checkpoint(tensors, meta))  # (its checksum agrees: the checks behind it are tested)


@pytest.mark.parametrize(
    "what, change_trainer, change_tensors",
    [
        ("step beyond the epoch", lambda c: c["epoch_progress"].update(step=10**6), None),
        ("step 0", lambda c: c["epoch_progress"].update(step=0), None),
        ("a loss that is not a number", lambda c: c["epoch_progress"].update(loss_sum="x"), None),
        ("a loss beyond float32", lambda c: c["epoch_progress"].update(loss_sum=1e308), None),
        ("a negative norm", lambda c: c["epoch_progress"].update(norms=[-1.0]), None),
        ("a pace of 1e300 s a step", lambda c: c["epoch_progress"].update(pace_s=1e300), None),
        ("a pace that is text", lambda c: c["epoch_progress"].update(pace_s="0.1"), None),
        ("a negative time spent", lambda c: c["epoch_progress"].update(pace_spent_s=-1.0), None),
        ("more skipped than seen", lambda c: c["epoch_progress"].update(skipped=99), None),
        ("no order", None, lambda t: t.pop("rng/epoch_perm")),
        ("an order with a repeat", None, lambda t: t["rng/epoch_perm"].__setitem__(0, t["rng/epoch_perm"][1].item())),
        ("an order of another length", None, lambda t: t.update({"rng/epoch_perm": t["rng/epoch_perm"][:-1].clone()})),
        ("an order of floats", None, lambda t: t.update({"rng/epoch_perm": t["rng/epoch_perm"].double()})),
    ],
)
def test_a_crafted_place_within_an_epoch_is_refused(digits, tmp_path, what, change_trainer, change_tensors):
    _trainer(digits, tmp_path, budget=7.5).fit()
    _rewrite(tmp_path / "checkpoint.safetensors", change_trainer, change_tensors)
    with pytest.raises(CheckpointError, match="the place within an epoch it records is malformed or does not fit this run"):
        _trainer(digits, tmp_path).resume()


def test_dgm_train_time_budget_says_where_it_stopped_and_how_to_go_on(tmp_path, capsys):
    args = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "3", "--batch-size", "8", "--epochs", "2"]
    out = str(tmp_path / "my run")
    assert main([*args, "--time-budget", "1e-6", "--out", out]) == 0  # out of time after the first step
    said = capsys.readouterr().out
    assert "stopped by --time-budget (1e-06 s) in epoch 1 after step 1 of 150" in said
    assert f"go on with: dgm train --resume --out '{out}'" in said  # (quoted for the shell, as Ctrl-C's line)
    assert main(["eval", out, "--iw-samples", "5"]) == 0  # the weights of one step, said so
    said = capsys.readouterr().out
    assert "the weights are of a run stopped in epoch 1 after step 1 (0 epochs finished)" in said
    assert main([*args, "--resume", "--out", out]) == 0  # the budget was that command's: this one has none
    said = capsys.readouterr().out
    assert "resuming" in said and "in epoch 1 after step 1" in said and "trained 2 epochs" in said


def test_a_run_stopped_within_an_epoch_resumes_on_two_processes_with_the_epoch_loss_of_one(tmp_path):
    """The epoch's loss so far is kept once (rank 0's), and the ranks' sums are added."""
    import subprocess
    import sys

    args = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "3", "--batch-size", "64", "--epochs", "1"]
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    assert main([*args, "--quiet", "--out", whole]) == 0
    assert main([*args, "--quiet", "--time-budget", "1e-6", "--out", parts]) == 0  # one step, then stopped
    cmd = [sys.executable, "-m", "dgmkit", *args, "--resume", "--nproc", "2", "--device", "cpu", "--out", parts]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    a, b = (json.loads((tmp_path / r / "metrics.jsonl").read_text()) for r in ("whole", "parts"))
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-3)  # (the ranks' steps agree to float error)


# --train-for: the run's epochs from its first epoch's pace


class FakeTrainer:
    steps_per_epoch, epochs, device = 100, 1000, torch.device("cpu")


def test_the_pace_leaves_out_the_first_tenth_and_the_short_last_step_and_counts_their_time_once():
    from dgmkit.training import Pace

    # the epoch starts at 0 s; the mark after its 11th step at 3 s; its 99th step ends 88 steps
    # of 0.1 s later; its last (short, compiled again) at 12.8 s; its validation at 13.8 s; its
    # files at 14.8 s
    readings = iter([0.0, 3.0, 11.8, 12.8, 13.8, 14.8])
    pace, t = Pace(113.0, clock=lambda: next(readings)), FakeTrainer()
    pace.start_epoch()
    for i in range(100):
        pace.after_step(t, i)
    assert pace.measured and pace.step_s == pytest.approx(0.1)
    # an epoch: 100 steps of 0.1 s and 1 s of validation; warm-up: 12.8 - 10 = 2.8 s, once
    assert pace.decide(t) == (10, pytest.approx(11.0), pytest.approx(2.8))  # (113 - 2.8) // 11
    t.epochs = 10
    assert pace.with_files(t) == (9, pytest.approx(12.0), pytest.approx(2.8))  # and 1 s of files: // 12
    for seconds, cap, chosen in ((113.0, 7, 7), (1.0, 7, 1)):  # never more than the run's epochs, nor fewer than 1
        pace, t.epochs = Pace(seconds, clock=iter([0.0, 3.0, 11.8, 12.8, 13.8]).__next__), cap
        pace.start_epoch()
        for i in range(100):
            pace.after_step(t, i)
        assert pace.decide(t)[0] == chosen


def _for(digits, run_dir, train_for=None, epochs=400, budget=None) -> Trainer:
    """A run of CFG for ``epochs``, or for ``train_for`` seconds of a clock that advances 1 s at
    each reading, with a cosine schedule (``budget``: a TimeBudget)."""
    from dgmkit.config import run_record, trainer_options
    from dgmkit.training import TrainFor

    cfg = CFG.replace(epochs=epochs, lr_schedule="cosine", train_for=train_for)
    options = trainer_options(cfg)
    options["parts"] += ([] if train_for is None else [TrainFor(train_for, Clock())]) + ([budget] if budget else [])
    t = make_transform("bernoulli", digits)
    return Trainer(build_model(cfg, digits.event_shape, digits.num_levels), build_objective(cfg), digits.train, t,
                   valid=digits.valid, run_dir=run_dir, progress=False, config=run_record(cfg, digits, t),
                   **options)  # fmt: skip


def _same_runs(a, b) -> None:
    x, y = _tensors(a), _tensors(b)
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)

    def rows(run) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        drop = ("time_s", "images_per_s", "paced_epochs", "paced_epoch_s", "paced_warmup_s")
        return [{k: v for k, v in json.loads(r).items() if k not in drop} for r in lines]

    assert rows(a) == rows(b)


def _recorded_epochs(run) -> dict:
    out = {"config.json": json.loads((run / "config.json").read_text())["config"]["optim"]["epochs"]}
    for name in ("best.safetensors", "checkpoint.safetensors"):
        with safe_open(str(run / name), "pt") as f:
            out[name] = json.loads(f.metadata()["config"])["config"]["optim"]["epochs"]
    return out


def test_a_run_for_a_time_is_the_run_of_the_epochs_it_chose_given_from_the_start(digits, tmp_path):
    """The first epoch's learning rate is the base rate whatever the number of epochs (a cosine
    schedule too), so a run whose epochs were set after it trains what those epochs, given from
    the start, train: the same weights and metrics bit for bit."""
    # 19 steps; the pace's clock read at the epoch's start (1), after step 2 (2), after step 18
    # (3), after step 19 (4), after validation (5) and after the files (6): 1/16 s a step, warm-up
    # 3 - 19/16 s; an epoch 19/16 + 1 s: (20 - 1.8125) // 2.1875 = 8, with its files (+1 s): 5
    paced = _for(digits, tmp_path / "paced", train_for=20.0, budget=TimeBudget(18.5, Clock()))  # out after epoch 1
    history = paced.fit()
    assert paced.epochs == 5 and len(history) == 1 and history[0]["paced_epochs"] == 5
    assert set(_recorded_epochs(tmp_path / "paced").values()) == {5}  # every file of the run, at once
    paced = _for(digits, tmp_path / "paced", train_for=20.0, epochs=5)  # as --resume takes it from config.json
    paced.resume()
    paced.fit()
    assert paced.epoch == 5
    _for(digits, tmp_path / "given", epochs=5).fit()
    _same_runs(tmp_path / "paced", tmp_path / "given")


@pytest.mark.parametrize(
    "stop, epochs",
    [
        # after step 6: the next call times its own pace (from step 8 to 18: 1/10 s a step) and
        # counts the 2 s spent before: warm-up 3 - 1.3 + 2 s; (20 - 3.7) // (1.9 + 1 + 1) = 4
        (5.5, 4),
        # after step 16: the next call trains 3 steps, too few to time, and takes the pace timed
        # before (from step 2 to 16: 1/14 s); warm-up 1 - 3/14 + 2 s; // (19/14 + 1 + 1) = 5
        (16.5, 5),
    ],
)
def test_a_first_epoch_stopped_within_is_paced_by_the_call_that_ends_it(digits, tmp_path, stop, epochs):
    run = tmp_path / "r"
    first = _for(digits, run, train_for=20.0, budget=TimeBudget(stop, Clock()))
    first.fit()
    assert first.budget_spent and first.epoch == 0 and first.epochs == 400
    rest = _for(digits, run, train_for=20.0)
    rest.resume()
    rest.fit()
    assert rest.epochs == epochs
    _for(digits, tmp_path / "given", epochs=epochs).fit()
    _same_runs(run, tmp_path / "given")


def test_dgm_train_for_says_the_epochs_it_chose_and_a_resume_keeps_them(tmp_path, capsys):
    args = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "3", "--lr-schedule", "cosine"]
    out = str(tmp_path / "r")
    assert main([*args, "--epochs", "1000", "--train-for", "1", "--quiet", "--out", out]) == 0
    said = capsys.readouterr().out
    epochs = json.loads((tmp_path / "r" / "config.json").read_text())["config"]["optim"]["epochs"]
    assert said.startswith(f"--train-for 1 s: {epochs} epoch") and f"; the run's epochs are {epochs}\n" in said
    assert f"trained {epochs} epoch" in said and set(_recorded_epochs(tmp_path / "r").values()) == {epochs}
    assert main([*args, "--resume", "--train-for", "2", "--out", out]) == 1  # the run's own, not to change
    assert "train_for" in capsys.readouterr().err
    assert main([*args, "--resume", "--epochs", str(epochs + 2), "--quiet", "--out", out]) == 0  # extended as any run
    assert f"trained {epochs + 2} epochs" in capsys.readouterr().out
    assert main([*args, "--batch-size", "1000", "--train-for", "1", "--out", str(tmp_path / "one")]) == 1
    assert "needs 4 of them at least; an epoch of this run has 2" in capsys.readouterr().err


def test_the_pace_of_a_short_first_epoch_leaves_out_its_first_step_and_counts_the_earlier_calls_seconds():
    from dgmkit.training import Pace

    class Short(FakeTrainer):
        steps_per_epoch = 5

    # 5 steps: the mark after step 1 (not 0, the eager one: the first tenth is less than a step) at 5 s,
    # step 3 (the second-to-last) ends at 7 s, the last at 8 s, validation at 9 s: 1 s a step
    pace, t = Pace(100.0, clock=iter([0.0, 5.0, 7.0, 8.0, 9.0]).__next__), Short()
    pace.start_epoch()
    for i in range(5):
        pace.after_step(t, i)
    assert pace.step_s == pytest.approx(1.0)
    # an epoch: 5 steps of 1 s and 1 s of validation; warm-up: 8 - 5 = 3 s: (100 - 3) // 6 = 16
    assert pace.decide(t) == (16, pytest.approx(6.0), pytest.approx(3.0))
    resumed = Pace(100.0, clock=iter([0.0, 5.0, 7.0, 8.0, 9.0]).__next__)
    resumed.resume_from({"pace_s": None, "pace_spent_s": 10.0})  # an earlier call trained 10 s of this epoch
    resumed.start_epoch()
    for i in range(5):
        resumed.after_step(t, i)
    assert resumed.decide(t) == (14, pytest.approx(6.0), pytest.approx(13.0))  # (100 - 13) // 6


def test_the_steps_an_earlier_call_trained_of_the_first_epoch_are_counted_once():
    """An earlier call trained 4 of the first epoch's 5 steps in 4 s at 1 s a step, and this call
    its last in 1 s: the epoch's training took 5 s, its steps at the pace; with 1 s of validation
    an epoch is 6 s, and 5 of them fit in 30 s. The warm-up was taken as this call's excess (0 s)
    plus the 4 s spent before, whose 4 steps the epoch's pace counts too: 4 epochs."""
    from dgmkit.training import Pace

    class Short(FakeTrainer):
        steps_per_epoch = 5

    pace, t = Pace(30.0, clock=iter([0.0, 1.0, 2.0]).__next__), Short()
    pace.resume_from({"pace_s": 1.0, "pace_spent_s": 4.0})
    pace.start_epoch()
    pace.after_step(t, 4)
    assert pace.decide(t) == (5, pytest.approx(6.0), pytest.approx(0.0))


def test_train_for_takes_an_epoch_of_the_fewest_steps_it_can_pace(digits):
    from dgmkit.errors import ConfigError
    from dgmkit.training import TrainFor

    def trainer(batch_size):
        return Trainer(
            build_model(CFG, digits.event_shape, digits.num_levels), build_objective(CFG), digits.train,
            make_transform("bernoulli", digits), epochs=3, batch_size=batch_size, progress=False, device="cpu",
            parts=[TrainFor(60.0, Clock())],
        )  # fmt: skip

    assert trainer(300).steps_per_epoch == 4  # 1197 rows: 4 steps, the fewest --train-for paces
    with pytest.raises(ConfigError, match="needs 4 of them at least; an epoch of this run has 3"):
        trainer(400)


def test_train_for_with_time_for_more_epochs_than_asked_trains_the_epochs_asked(tmp_path, capsys):
    """--train-for only lowers the epochs: where more would fit, the run's own stand, recorded
    as they were, and the line says they fit."""
    out = tmp_path / "r"
    args = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "3", "--batch-size", "64"]
    assert main([*args, "--epochs", "2", "--train-for", "3600", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "--train-for 3600 s: the run's 2 epochs fit in them at the first epoch's pace (" in said
    assert "trained 2 epochs" in said and set(_recorded_epochs(out).values()) == {2}
    lines = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]


def test_a_run_for_a_time_without_a_run_folder_chooses_the_same_epochs(digits):
    """A Trainer that writes no files (no run_dir, so no record to hold the epochs) is paced as
    one that does: its epochs are lowered in memory, and it trains those."""
    paced = _for(digits, None, train_for=20.0, budget=TimeBudget(18.5, Clock()))  # as in the test above: 5
    history = paced.fit()
    assert paced.epochs == 5 and history[0]["paced_epochs"] == 5 and paced.epoch == 1


def test_the_command_that_goes_on_names_the_processes_of_a_data_parallel_run(monkeypatch):
    """The time budget's line left out --nproc (resumed on one process: not bit for bit), as Ctrl-C's did not."""
    from types import SimpleNamespace

    import dgmkit.cli.train as train

    monkeypatch.setattr(train.distributed, "current", lambda: SimpleNamespace(world_size=2, is_main=True))
    assert train._go_on(Path("/runs/a b")) == "dgm train --resume --nproc 2 --out '/runs/a b'"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # (torchrun's, on one machine: dgm train --nproc 2 is the same)
    assert train._go_on(Path("/runs/a b")) == "dgm train --resume --nproc 2 --out '/runs/a b'"


def test_the_command_that_goes_on_with_a_run_of_several_machines_is_torchruns(monkeypatch):
    """torchrun on 2 machines of 4 processes: `dgm train --nproc 8` would start all 8 on one machine."""
    from types import SimpleNamespace

    import dgmkit.cli.train as train

    monkeypatch.setattr(train.distributed, "current", lambda: SimpleNamespace(world_size=8, is_main=True))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert train._go_on(Path("runs/a")) == "torchrun --nnodes 2 --nproc-per-node 4 ... -m dgmkit train --resume --out runs/a"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # (machines of unlike sizes)
    assert train._go_on(Path("runs/a")) == "torchrun (8 processes) ... -m dgmkit train --resume --out runs/a"


def test_the_command_that_goes_on_with_a_run_folder_named_like_a_flag_resumes_it(tmp_path, monkeypatch, capsys):
    """A relative folder that begins with "-" is shown as ./-name: as itself, `--out -run` is argparse's
    "expected one argument", so the line's command could not be run as shown."""
    import shlex

    monkeypatch.chdir(tmp_path)
    args = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "3", "--batch-size", "8", "--epochs", "1"]
    assert main([*args, "--time-budget", "1e-6", "--out=-run"]) == 0
    said = capsys.readouterr().out
    assert "go on with: dgm train --resume --out ./-run" in said and "dgm eval ./-run" in said
    command = shlex.split(said.split("go on with: ")[1].splitlines()[0])
    assert main([*command[1:], "--quiet"]) == 0  # (the command as shown, less its "dgm")
    said = capsys.readouterr().out
    assert "in epoch 1 after step 1" in said and "trained 1 epoch" in said


def test_the_commands_that_use_a_run_stopped_within_an_epoch_say_it_is_partly_trained(tmp_path, capsys):
    """dgm ood (of the run and of its background), dgm score, dgm impute and dgm cluster say what
    dgm eval says of weights of a run stopped within an epoch; of whole epochs, none says it."""
    import numpy as np

    from dgmkit.data import load_dataset

    args = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "3", "--batch-size", "8", "--epochs", "1"]
    mog, bg = str(tmp_path / "mog"), str(tmp_path / "bg")
    assert main([*args, "--prior", "mog", "--prior-components", "3", "--time-budget", "1e-6", "--out", mog]) == 0
    assert main([*args, "--mutation-rate", "0.2", "--time-budget", "1e-6", "--out", bg]) == 0
    test = load_dataset("digits").test.x[:30].numpy().astype(np.float64)
    np.save(tmp_path / "flipped.npy", test[:, :, ::-1].astype(np.uint8))
    test[:, 0, 0, :4] = np.nan
    np.save(tmp_path / "holes.npy", test)
    capsys.readouterr()
    stopped = "note: the weights are of a run stopped in epoch 1 after step 1 (0 epochs finished): a partly trained model"
    commands = [
        ["ood", mog, "--in", "test", "--ood", tmp_path / "flipped.npy", "--ood-split", "all", "--background", bg],
        ["score", mog, tmp_path / "flipped.npy", "--k", "5", "--out", tmp_path / "s.csv"],
        ["impute", mog, tmp_path / "holes.npy", "--k", "5", "--out", tmp_path / "i.npy"],
        ["cluster", mog],
    ]
    for command in commands:
        assert main([str(a) for a in command]) == 0, command
        said = capsys.readouterr().out
        assert said.count(stopped) == 1, (command, said)
        if command[0] == "ood":
            assert f"note: the weights of the background {bg} are of a run stopped in epoch 1 after step 1" in said
    assert main([*args, "--prior", "mog", "--prior-components", "3", "--resume", "--out", mog]) == 0
    capsys.readouterr()
    for command in commands:  # (the background as it was: its note alone)
        assert main([str(a) for a in command] + (["--force"] if command[0] in ("score", "impute") else [])) == 0
        said = capsys.readouterr().out
        assert "note: the weights are" not in said and said.count("partly trained") == (command[0] == "ood"), command


def test_a_warm_up_longer_than_the_epochs_train_for_chose_says_the_weight_it_ends_at(tmp_path, capsys):
    """--train-for lowered --epochs 1000 to a few, below a --warmup of 500 epochs: the KL weight ended
    near 0 without a word (the warm-up's note is said at the start, where the epochs were 1000)."""
    args = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "3", "--beta", "0.5", "--warmup", "500"]
    out = tmp_path / "r"
    assert main([*args, "--epochs", "1000", "--train-for", "1", "--quiet", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    epochs = json.loads((out / "config.json").read_text())["config"]["optim"]["epochs"]
    assert epochs < 500 and f"the KL warm-up of 500 epochs is longer than the run's {plural(epochs, 'epoch')}" in said
    assert f"the KL weight ends at {0.5 * epochs / 500:.3g}, not --beta 0.5" in said, said
