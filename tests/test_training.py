"""The trainer: repeatability, exact resume, NaN guard, early stopping, checkpoint safety."""

import errno
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from dgmkit._io import atomic_write_bytes
from dgmkit.config import RunConfig, build_model, build_objective, trainer_options
from dgmkit.data import load_dataset, make_transform
from dgmkit.errors import CheckpointError, ConfigError, DataError, DgmError, TrainingError
from dgmkit.training import Trainer, load_checkpoint, read_metadata
from run_records import crafted_checkpoint

CFG = RunConfig.of(
    dataset="digits",
    hidden=[32],
    latent_dim=3,
    batch_size=64,
    epochs=3,
    seed=7,
    device="cpu",
    warmup=1.5,
    lr_schedule="cosine",
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _digits_trainer(digits, cfg, objective, run_dir, **kw):
    """A Trainer of ``cfg``'s model (seeded initialisation) on the digits' binarized splits."""
    torch.manual_seed(123)  # model initialisation
    model = build_model(cfg, digits.event_shape, digits.num_levels)
    return Trainer(
        model,
        objective,
        digits.train,
        make_transform("bernoulli", digits),
        valid=digits.valid,
        run_dir=run_dir,
        config={"config": cfg.to_dict()},
        progress=False,
        **kw,
    )


def make_trainer(digits, run_dir=None, objective=None, **kw):
    cfg = CFG.replace(**{k: v for k, v in kw.items() if k in CFG.flat()})
    extra = {k: v for k, v in kw.items() if k not in CFG.flat()}
    # the optim settings and the parts they make
    return _digits_trainer(digits, cfg, objective or build_objective(cfg), run_dir, **trainer_options(cfg), **extra)


def states_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_resume_without_a_path_or_run_folder_says_so(digits):
    # it raised TypeError (None / "checkpoint.safetensors") before
    with pytest.raises(ValueError, match="no run folder"):
        make_trainer(digits).resume()


def test_same_seed_same_run(digits):
    a, b = make_trainer(digits), make_trainer(digits)
    ha, hb = a.fit(), b.fit()
    assert states_equal(a.model.state_dict(), b.model.state_dict())
    assert [m["valid_elbo"] for m in ha] == [m["valid_elbo"] for m in hb]
    c = make_trainer(digits, seed=8)
    c.fit()
    assert not states_equal(a.model.state_dict(), c.model.state_dict())


def test_resume_ends_where_the_uninterrupted_run_ends(digits, tmp_path):
    full = make_trainer(digits, tmp_path / "full")
    full.fit()

    def interrupt(trainer, metrics):
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt

    part = make_trainer(digits, tmp_path / "part", callbacks=[interrupt])
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    resumed = make_trainer(digits, tmp_path / "part")
    resumed.resume()
    assert resumed.epoch == 2
    resumed.fit()
    assert states_equal(full.model.state_dict(), resumed.model.state_dict())
    lines = lambda p: [json.loads(s) for s in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    a, b = lines(tmp_path / "full"), lines(tmp_path / "part")
    drop = lambda m: {k: v for k, v in m.items() if k not in ("time_s", "images_per_s")}  # noqa: E731
    assert [drop(m) for m in a] == [drop(m) for m in b]
    assert len(b) == 3


def test_a_new_run_in_a_folder_of_another_run_is_refused_and_a_resumed_one_goes_on(digits, tmp_path):
    """A second Trainer given the same run_dir (a notebook's cell run again) appended its metrics
    to the first run's (epochs 1, 2, 3, 1, 2) and replaced its checkpoints."""
    first = make_trainer(digits, tmp_path, epochs=2)
    first.fit()
    before = {n: (tmp_path / n).read_bytes() for n in ("metrics.jsonl", "checkpoint.safetensors", "best.safetensors")}
    again = make_trainer(digits, tmp_path, epochs=2)
    with pytest.raises(ConfigError, match=r"holds another run's checkpoint.safetensors, best.safetensors, metrics.jsonl"):
        again.fit()
    assert {n: (tmp_path / n).read_bytes() for n in before} == before  # nothing was changed
    first.epochs = 3
    assert [m["epoch"] for m in first.fit()] == [3]  # the trainer that wrote them goes on
    resumed = make_trainer(digits, tmp_path, epochs=4)
    resumed.resume()
    resumed.fit()
    assert [json.loads(s)["epoch"] for s in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    base = build_objective(CFG)
    calls = {"n": 0}
    steps = -(-len(digits.train) // CFG.optim.batch_size)

    class Poisoned(type(base)):
        def __call__(self, model, x, beta=1.0):
            calls["n"] += 1
            terms = base(model, x, beta)
            if calls["n"] > steps + 3 and model.training:  # epoch 2, step 4
                return terms._replace(loss=terms.loss * float("nan"))
            return terms

    trainer = make_trainer(digits, tmp_path, objective=Poisoned())
    with pytest.raises(TrainingError, match=r"nan at epoch 2.*checkpoint of epoch 1 is kept"):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert ckpt["trainer"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_a_loss_that_is_no_number_at_the_first_step_points_at_the_data_not_the_learning_rate():
    """Values of 1e20 under a Gaussian p(x|z) overflow float32 at the first step: 'try a lower
    --lr' could not help a run that had taken no update."""
    cfg = RunConfig.of(likelihood="gaussian", hidden=[8], latent_dim=2, device="cpu")
    x = torch.rand(64, 1, 1, 4)
    x[3, 0, 0, 1] = 1e20
    model = build_model(cfg, (1, 1, 4), None)
    trainer = Trainer(model, build_objective(cfg), x, make_transform("gaussian", _continuous(x)), progress=False)
    with pytest.raises(TrainingError) as e:
        trainer.fit()
    said = str(e.value)
    assert "at epoch 1, step 1" in said and "before any update" in said and "largest magnitude in them is 1e+20" in said
    assert "lower --lr" not in said


def _continuous(x):
    from dgmkit.data import Dataset, Split

    return Dataset("values", Split(x), Split(x[:8]), Split(x[:8]), num_levels=None)


def test_early_stopping_on_the_validation_elbo(digits):
    trainer = make_trainer(digits, epochs=50, patience=2, lr=1e-9)  # cannot improve: stops early
    history = trainer.fit()
    assert len(history) < 50
    assert trainer.bad_epochs == 2
    assert trainer.fit() == []  # a second call trains no more


def test_a_resumed_run_that_stopped_early_trains_no_more(digits, tmp_path):
    trainer = make_trainer(digits, tmp_path, epochs=50, patience=2, lr=1e-9)
    done = len(trainer.fit())
    before = (tmp_path / "checkpoint.safetensors").read_bytes()
    again = make_trainer(digits, tmp_path, epochs=50, patience=2, lr=1e-9)
    again.resume()
    assert again.stopped_early and again.epoch == done
    assert again.fit() == []
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == done
    more = make_trainer(digits, tmp_path, epochs=50, patience=4, lr=1e-9)  # a larger patience goes on
    more.resume()
    assert not more.stopped_early and len(more.fit()) == 2


def test_a_resume_asking_for_fewer_epochs_than_the_run_trained_is_refused_and_changes_nothing(digits, tmp_path):
    """It trained nothing and returned as if the run were done at the epochs asked for (dgm train
    --resume --epochs 1 on a run of 2 said "trained 2 epochs", exit 0), the number ignored."""
    make_trainer(digits, tmp_path, epochs=2).fit()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    fewer = make_trainer(digits, tmp_path, epochs=1)
    with pytest.raises(ConfigError, match=r"has trained 2 epochs, more than the 1 asked for: .*give epochs 2 or more"):
        fewer.resume()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    same = make_trainer(digits, tmp_path, epochs=2)  # the edge: as many as trained, nothing more to do
    same.resume()
    assert same.epoch == 2 and same.fit() == []


def test_checkpoint_round_trip_and_bad_files(digits, tmp_path):
    trainer = make_trainer(digits, tmp_path, epochs=1)
    trainer.fit()
    path = tmp_path / "checkpoint.safetensors"
    assert read_metadata(path)["format"] == "dgmkit-checkpoint"
    ck = load_checkpoint(path)
    assert states_equal({k: v for k, v in trainer.model.state_dict().items()}, ck["model"])
    assert (tmp_path / "best.safetensors").is_file()
    (tmp_path / "corrupt.safetensors").write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "corrupt.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "garbage.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not a dgmkit checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_a_checkpoint_is_read_whole_from_one_version_of_its_file(digits, tmp_path, monkeypatch):
    """A checkpoint replaced while it is read (a run trained on writes by os.replace): its
    record, counters, tensors and digest all come from the same bytes, the new file's."""
    import hashlib

    import dgmkit.training.checkpoint as checkpoint

    make_trainer(digits, tmp_path, epochs=2).fit()
    path, newer = tmp_path / "best.safetensors", tmp_path / "newer.safetensors"
    newer.write_bytes((tmp_path / "checkpoint.safetensors").read_bytes())  # (other bytes: it holds Adam's state)
    new_bytes = newer.read_bytes()
    assert new_bytes != path.read_bytes() and "optimizer" not in read_metadata(path)
    header = checkpoint.read_metadata

    def swapped_after_the_header(p, data=None):
        meta = header(p, data)
        if data is None and newer.exists():
            os.replace(newer, path)
        return meta

    monkeypatch.setattr(checkpoint, "read_metadata", swapped_after_the_header)
    ck = checkpoint.load_checkpoint(path)
    assert ck["digest"] == hashlib.sha256(new_bytes).hexdigest()[:16]
    assert ck["optimizer"] is not None and ck["trainer"] == json.loads(read_metadata(path)["trainer"])


def test_the_run_writer_refuses_a_checkpoint_of_nan_or_inf_and_keeps_the_last(tmp_path):
    """The guard of every fit path that writes through a RunWriter (closed form and EM have no
    other): the file is not written, the last one stays."""
    from dgmkit.training import RunWriter

    writer = RunWriter(tmp_path, {"config": {}})
    model = torch.nn.Linear(2, 2)
    writer.checkpoint(model, counters={"epoch": 1})
    before = (tmp_path / "checkpoint.safetensors").read_bytes()
    with torch.no_grad():
        model.bias[1] = float("inf")
    with pytest.raises(TrainingError, match=r"the model's bias holds NaN or inf; .*checkpoint.safetensors was not written"):
        writer.checkpoint(model, counters={"epoch": 2})
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]


def test_atomic_write_gives_files_their_usual_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "new.bin", b"x")
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o644
        (tmp_path / "old.bin").write_bytes(b"")
        os.chmod(tmp_path / "old.bin", 0o600)
        atomic_write_bytes(tmp_path / "old.bin", b"y")
        assert (tmp_path / "old.bin").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(umask)


def test_atomic_write_on_a_full_disk_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DgmError, match="no space left"):
        atomic_write_bytes(target, b"new contents")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


@pytest.mark.parametrize("hard_links", [True, False])
def test_atomic_write_without_replace_keeps_a_file_that_is_there(tmp_path, monkeypatch, hard_links):
    """replace=False (an output checked before the work, written after it): a file at the path is
    kept, nothing left beside it; where there is none, the file is written, on a file system with
    hard links or without (a link refused: a rename)."""
    if not hard_links:

        def no_links(*a, **k):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "r.html"
    target.write_text("theirs")
    with pytest.raises(DgmError, match="r.html was made by another program while this one worked: it is kept"):
        atomic_write_bytes(target, b"ours", replace=False)
    assert target.read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == ["r.html"]
    atomic_write_bytes(tmp_path / "new.html", b"ours", replace=False)
    assert (tmp_path / "new.html").read_bytes() == b"ours" and len(list(tmp_path.iterdir())) == 2


def test_an_output_checked_free_is_not_replaced_when_another_program_makes_it_meanwhile(tmp_path):
    """Every command checks its outputs (check_new_output) before its work and writes them after
    it: a file that another program made there in between (a second dgm command, minutes later)
    was replaced by the rename. Now kept, without --force; replaced with it; and once this process
    has written the file, it is its own and a later write replaces it."""
    from dgmkit._io import check_new_output

    out = check_new_output(tmp_path / "samples.png")
    out.write_text("theirs")  # made by another program while this one worked
    with pytest.raises(DgmError, match="samples.png was made by another program while this one worked: it is kept"):
        atomic_write_bytes(out, b"ours")
    assert out.read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == ["samples.png"]
    forced = check_new_output(tmp_path / "forced.png", force=True)
    forced.write_text("theirs")
    atomic_write_bytes(forced, b"ours")
    assert forced.read_bytes() == b"ours"
    mine = check_new_output(tmp_path / "mine.json")
    atomic_write_bytes(mine, b"first")
    atomic_write_bytes(mine, b"second")  # (its own file now)
    assert mine.read_bytes() == b"second"


@pytest.mark.parametrize("cast", ["half", "bfloat16"])
def test_a_model_made_half_precision_is_refused_by_the_trainer_by_name(digits, cast):
    """A model made float16 or bfloat16 (.half(), .bfloat16()) met torch's "mat1 and mat2 must have
    the same dtype, but got Float and Half" at the first step of fit(); the Trainer refuses it
    as evaluate does, and says that half precision is autocast's."""
    model = getattr(build_model(CFG, digits.event_shape, digits.num_levels), cast)()
    with pytest.raises(ConfigError, match=r"^the Trainer: the model's parameters are (float16|bfloat16); .* autocast"):
        Trainer(model, build_objective(CFG), digits.train, make_transform("bernoulli", digits), progress=False)


def test_precision_and_device_are_checked(digits):
    with pytest.raises(TrainingError, match="only supported on a CUDA device"):
        make_trainer(digits, precision="bf16")
    if not torch.cuda.is_available():
        with pytest.raises(DgmError, match="no CUDA device"):
            make_trainer(digits, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_validation_data_are_binarized_as_dgm_eval_binarizes_them_on_any_device(digits):
    """On the CPU, with the fixed held-out seed, as dgm eval and dgm score draw them: a CUDA
    generator of the same seed draws other bits, and the best checkpoint was chosen on other data
    than the validation numbers dgm eval prints."""
    from dgmkit.training import VALID_SEED

    trainer = make_trainer(digits, device="cuda")
    want = make_transform("bernoulli", digits)(digits.valid.x, torch.Generator().manual_seed(VALID_SEED))
    assert torch.equal(trainer._valid_x.cpu(), want)


def test_the_trainers_own_arguments_are_checked_before_any_step(digits):
    """What the Python API is given directly: sizes that would train nothing, and labels that an
    objective trained on labels needs (M2) but the training split lacks."""
    from dgmkit.data import Split

    for bad, needle in (
        (dict(epochs=0), "epochs must be an integer >= 1, got 0"),
        (dict(epochs=2.5), "epochs must be an integer >= 1, got 2.5"),  # (it trained 3)
        (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
        (dict(eval_batch_size=0), "eval_batch_size must be an integer >= 1, got 0"),
        (dict(patience=0), "patience must be an integer >= 1, got 0"),
        (dict(seed=-1), "seed must be an integer >= 0, got -1"),
        (dict(lr=0.0), "lr must be a finite number > 0, got 0.0"),
        (dict(lr=float("nan")), "lr must be a finite number > 0, got nan"),  # (nan <= 0 is false)
        (dict(weight_decay=float("inf")), "weight_decay must be a finite number >= 0, got inf"),
        (dict(weight_decay=-0.1), "weight_decay must be a finite number >= 0, got -0.1"),
    ):
        with pytest.raises(ValueError) as e:
            _digits_trainer(digits, CFG, build_objective(CFG), None, **bad)
        assert str(e.value) == needle
    m2 = CFG.replace(model="m2", hidden=[8], latent_dim=2)
    model = build_model(m2, digits.event_shape, digits.num_levels)
    with pytest.raises(ConfigError, match="trains on labels, and the training data have none"):
        Trainer(model, build_objective(m2), Split(digits.train.x), make_transform("bernoulli", digits), progress=False)
    # data of no datapoint (the first fit divided by the steps of an epoch, 0), missing entries for
    # an objective that cannot train on them (dgm train refuses both), infinite ones
    model, transform = build_model(CFG, digits.event_shape, digits.num_levels), make_transform("bernoulli", digits)
    holed = digits.train.x.float().clone()
    holed[0, 0, 0, 0] = float("nan")
    endless = digits.train.x.float().clone()
    endless[1, 0, 0, 0] = float("inf")
    for train, valid, needle in (
        (digits.train.x[:0], None, "the Trainer's train data hold no datapoint"),
        (digits.train, digits.valid.x[:0], "valid data hold no datapoint; give valid=None to train without validation"),
        (holed, None, "the data hold missing entries (NaN), and ELBO cannot train on incomplete data"),
        (endless, None, "integer levels 0..16; 1 entry is infinite"),
    ):
        with pytest.raises(DataError) as e:
            Trainer(model, build_objective(CFG), train, transform, valid=valid, progress=False)
        assert needle in str(e.value)
    from dgmkit.objectives import MIWAE

    Trainer(model, MIWAE(k=2), holed, transform, progress=False)  # (the likelihood of the observed entries)


def test_the_trainers_numpy_numbers_train_as_the_python_numbers_they_hold_and_a_seed_beyond_a_generator_is_refused(
    digits, tmp_path
):
    """A NumPy seed passed the check and failed in ``manual_seed`` ("an integer is required"), a
    float32 learning rate or weight decay in writing the metrics as JSON, and a seed of 2**64 - 1
    (seed + 1 seeds the batch order) or more in ``manual_seed`` ("Overflow when unpacking long long")."""
    import numpy as np

    small = dict(epochs=1, batch_size=256)
    want = _digits_trainer(digits, CFG, build_objective(CFG), None, seed=3, lr=1e-3, weight_decay=0.5, **small).fit()
    numpy_numbers = dict(seed=np.int64(3), lr=np.float32(1e-3), weight_decay=np.float32(0.5))
    trainer = _digits_trainer(digits, CFG, build_objective(CFG), tmp_path / "run", **numpy_numbers, **small)
    assert type(trainer.seed) is int and type(trainer.lr) is float
    got = trainer.fit()
    assert got[-1]["valid_elbo"] == pytest.approx(want[-1]["valid_elbo"], rel=1e-5)
    for bad in (2**63, 2**64 - 1, 2**64):
        with pytest.raises(ValueError, match=rf"^seed must be an integer in 0\.\.2\*\*63 - 1 .*, got {bad}$"):
            _digits_trainer(digits, CFG, build_objective(CFG), None, seed=bad)


def test_adam_falls_back_to_its_plain_kernel_with_every_parameter_where_fused_is_unavailable(monkeypatch):
    """The parameters are often a generator (model.parameters()): the failed fused attempt must
    not use them up, or the fallback gets none."""
    from dgmkit.training import trainer as trainer_module

    real = torch.optim.Adam

    def without_fused(params, fused=None, **kwargs):
        params = list(params)  # as torch's Adam reads them before it refuses
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", without_fused)
    model = torch.nn.Linear(3, 2)
    adam = trainer_module._adam(model.parameters(), lr=0.01, weight_decay=0.5)
    assert not adam.defaults.get("fused")
    assert adam.param_groups[0]["params"] == list(model.parameters())
    assert adam.defaults["lr"] == 0.01 and adam.defaults["weight_decay"] == 0.5


def test_updates_with_a_gradient_norm_above_the_threshold_are_skipped_and_counted(digits, tmp_path):
    """VDVAE's guard: a step whose gradient norm exceeds skip_grad_norm leaves the weights as
    they were, and is counted; an epoch whose every update was skipped stops the run, naming
    the threshold and the norms seen, with nothing of it written."""
    all_skipped = make_trainer(digits, tmp_path, epochs=1, skip_grad_norm=1e-9)
    before = {k: v.clone() for k, v in all_skipped.model.state_dict().items()}
    with pytest.raises(TrainingError, match=r"every one of the epoch's \d+ updates was skipped") as e:
        all_skipped.fit()
    assert "skip_grad_norm = 1e-09" in str(e.value) and "gradient norms were from " in str(e.value)
    assert "training stopped in epoch 1" in str(e.value) and not any(tmp_path.iterdir())
    assert all_skipped.steps_per_epoch == all_skipped.skipped_steps
    assert all(torch.equal(before[k], v) for k, v in all_skipped.model.state_dict().items())
    none_skipped = make_trainer(digits, epochs=1, skip_grad_norm=1e9)
    (m,) = none_skipped.fit()
    assert m["skipped_steps"] == 0 and m["steps"] == none_skipped.steps_per_epoch
    plain = make_trainer(digits, epochs=1)
    (p,) = plain.fit()
    assert "skipped_steps" not in p and p["train_loss"] == pytest.approx(m["train_loss"], rel=1e-6)


def test_the_exponential_schedule_decays_in_steps_down_to_its_floor():
    from dgmkit.config.run import trainer_options
    from dgmkit.errors import ConfigError
    from dgmkit.training import LRSchedule

    steps = LRSchedule("exponential", decay=0.75, every=200, minimum=3e-5)  # Maaløe et al.'s ADGM schedule
    rates = [steps.learning_rate(3e-4, e, 1000) for e in (0, 199, 200, 399, 400, 999)]
    assert rates == pytest.approx([3e-4, 3e-4, 2.25e-4, 2.25e-4, 1.6875e-4, 3e-4 * 0.75**4])
    assert LRSchedule("exponential", decay=0.5, every=1, minimum=1e-4).learning_rate(1e-3, 10, 20) == 1e-4
    assert LRSchedule("exponential").learning_rate(1.0, 3, 10) == pytest.approx(0.99**3)  # the old default
    with pytest.raises(ValueError, match="unknown lr schedule"):
        LRSchedule("linear")
    cfg = RunConfig.of(lr_schedule="exponential", lr_decay=0.75, lr_decay_every=200, lr_min=3e-5)
    assert trainer_options(cfg)["lr_schedule"] == steps
    with pytest.raises(ConfigError, match="exponential schedule"):
        RunConfig.of(lr_decay=0.5)


def test_a_learning_rate_floor_above_the_learning_rate_is_refused_for_a_new_run_and_one_equal_to_it_holds_it(
    tmp_path, capsys
):
    """lr_min was taken as it came: above lr, every epoch trained at lr_min (with lr 1e-3 and
    lr_min 5, at 5000 times the rate asked for), without a word. A new run is refused; a run
    recorded with such a floor (it trained at it) still loads, evaluates and resumes: its config
    is not refused."""
    from dgmkit.cli.main import main
    from dgmkit.config.run import trainer_options

    for floor, schedule in ((5.0, "constant"), (2e-4, "cosine")):
        lr = 1e-3 if floor == 5.0 else 1e-4
        recorded = RunConfig.of(lr=lr, lr_min=floor, lr_schedule=schedule)
        assert RunConfig.from_dict(recorded.to_dict()).optim.lr_min == floor  # (as config.json reads back)
        out = tmp_path / f"r{floor:g}"
        argv = ["train", "--dataset", "digits", "--lr", f"{lr:g}", "--lr-min", f"{floor:g}", "--lr-schedule", schedule]
        assert main([*argv, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"lr_min {floor:g} is above lr {lr:g}: the learning rate falls to lr_min, never below" in err, err
        assert not out.exists()
    cfg = RunConfig.of(lr=1e-3, lr_min=1e-3, lr_schedule="cosine")  # the edge: a constant rate
    schedule = trainer_options(cfg)["lr_schedule"]
    assert [schedule.learning_rate(cfg.optim.lr, e, 10) for e in (0, 5, 9)] == [1e-3, 1e-3, 1e-3]


def test_the_trainer_sets_each_epochs_learning_rate_from_its_schedule(digits):
    from dgmkit.training import LRSchedule

    seen = []
    trainer = make_trainer(digits, epochs=3, callbacks=[lambda t, metrics: seen.append(t.optimizer.param_groups[0]["lr"])])
    assert trainer.lr_schedule == LRSchedule("cosine")  # a name is the schedule of that kind
    trainer.lr_schedule = LRSchedule("exponential", decay=0.5, every=2)
    trainer.fit()
    assert seen == pytest.approx([1e-3, 1e-3, 5e-4])


def test_a_run_whose_data_order_was_drawn_on_another_kind_of_device_resumes_with_a_new_stream(digits, tmp_path):
    """A CUDA generator's state (16 bytes) cannot be set on a CPU one (5056 bytes), nor the
    reverse: --resume on another device type stopped with "RNG state is wrong size"."""
    from safetensors.torch import load as st_load

    def interrupt(trainer, metrics):
        if metrics["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_trainer(digits, tmp_path, callbacks=[interrupt]).fit()
    path = tmp_path / "checkpoint.safetensors"
    tensors, meta = st_load(path.read_bytes()), read_metadata(path)  # (copies: the file is rewritten below)
    tensors["rng/data"] = torch.arange(16, dtype=torch.uint8)  # as a run on a GPU leaves it
    path.write_bytes(crafted_checkpoint(tensors, meta))
    resumed = make_trainer(digits, tmp_path)
    resumed.resume()
    assert resumed.streams_moved and resumed.epoch == 1
    resumed.fit()  # goes on to the end
    again = make_trainer(digits, tmp_path / "x")
    assert not again.streams_moved
    tensors["rng/data"] = torch.arange(17, dtype=torch.uint8)  # neither kind: malformed, refused
    path.write_bytes(crafted_checkpoint(tensors, meta))
    with pytest.raises(CheckpointError, match="malformed random generator state: rng/data is 17 bytes"):
        make_trainer(digits, tmp_path).resume()


def test_kl_weight_warms_up_linearly_by_step_and_learning_rate_settings_accept_their_bounds():
    from dgmkit.training import LRSchedule
    from dgmkit.training.schedules import kl_weight

    # beta * min(1, (step + 1) / (warmup epochs * steps an epoch)): 2 epochs of 5 steps reach beta at step 9
    assert [kl_weight(2.0, 2, s, 5) for s in (0, 4, 8, 9, 10, 50)] == pytest.approx([0.2, 1.0, 1.8, 2.0, 2.0, 2.0])
    assert kl_weight(0.7, 0, 0, 5) == 0.7  # no warm-up: beta from the first step
    assert LRSchedule("exponential", decay=1.0).learning_rate(1e-3, 50, 100) == 1e-3  # decay 1 is allowed: constant
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        LRSchedule("exponential", every=0)


def _probe_trainer(digits, objective, run_dir=None, parts=(), epochs=3, **kw):
    return _digits_trainer(
        digits,
        CFG,
        objective,
        run_dir,
        epochs=epochs,
        batch_size=64,
        lr=1e-3,
        seed=7,
        device="cpu",
        parts=list(parts),
        **kw,
    )


def test_epoch_lines_are_row_means_with_the_warmed_up_beta_and_validation_at_beta_1(digits):
    """A probe objective whose loss is 3 and whose score is the KL weight it was given, for every
    row: train_loss is 3 exactly, train_elbo the row-weighted mean of the epoch's KL weights, beta the
    weight of the epoch's last step, and validation (in batches of 64 that do not divide its 300 rows)
    scores at weight 1."""
    from dgmkit.training.parts import KLWarmup

    base = build_objective(CFG)
    seen = []

    class Probe(type(base)):
        def __call__(self, model, x, beta=1.0):
            terms = base(model, x, beta)
            if model.training:
                seen.append((float(beta), len(x)))
            return terms._replace(loss=terms.loss - terms.loss.detach() + 3.0, elbo=torch.full_like(terms.elbo, beta))

    trainer = _probe_trainer(digits, Probe(), parts=[KLWarmup(0.5, 1.5)], epochs=2, eval_batch_size=64)
    history = trainer.fit()
    s = trainer.steps_per_epoch
    assert s == 19 and len(digits.train) == 1197 and len(digits.valid) == 300  # 18 batches of 64 and one of 45
    expected = [0.5 * min(1.0, (step + 1) / (1.5 * s)) for step in range(2 * s)]
    assert [b for b, _ in seen] == pytest.approx(expected, abs=1e-12)  # by the step over the whole run
    for e, m in enumerate(history):
        epoch = seen[e * s : (e + 1) * s]
        assert m["train_loss"] == pytest.approx(3.0, abs=1e-12)
        assert m["train_elbo"] == pytest.approx(sum(b * n for b, n in epoch) / 1197, rel=1e-6)  # (float32 terms)
        assert m["beta"] == pytest.approx(expected[(e + 1) * s - 1], abs=1e-12)
        assert m["valid_elbo"] == pytest.approx(1.0, abs=1e-12)
    assert history[0]["beta"] == pytest.approx(0.5 * 2 / 3) and history[1]["beta"] == 0.5


def test_the_best_epoch_is_the_first_of_the_highest_validation_scores_and_best_holds_its_weights(digits, tmp_path):
    """Validation scores -1, -1, 0, -5 while the training score rises every epoch: the best epoch is
    1, then 1 (a tie is no improvement), then 3, then 3, with 0, 1, 0, 1 epochs without improvement;
    best.safetensors holds epoch 3's weights. Patience 2 on a flat validation score stops after 3."""
    base = build_objective(CFG)
    valid_scores, epoch = [-1.0, -1.0, 0.0, -5.0], {"n": 0}

    class Probe(type(base)):
        def __call__(self, model, x, beta=1.0):
            terms = base(model, x, beta)
            score = float(epoch["n"]) if model.training else valid_scores[epoch["n"]]
            return terms._replace(elbo=torch.full_like(terms.elbo, score))

    states, weights = [], {}

    def after(trainer, metrics):
        states.append((trainer.best_epoch, trainer.bad_epochs, trainer.best_valid))
        weights[trainer.epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        epoch["n"] += 1

    trainer = _probe_trainer(digits, Probe(), tmp_path, epochs=4, callbacks=[after])
    trainer.fit()
    assert states == [(1, 0, -1.0), (1, 1, -1.0), (3, 0, 0.0), (3, 1, 0.0)]
    best = load_checkpoint(tmp_path / "best.safetensors")["model"]
    assert states_equal(best, weights[3]) and not states_equal(best, weights[4])

    valid_scores[:] = [-1.0] * 10
    epoch["n"] = 0
    flat = _probe_trainer(digits, Probe(), epochs=10, patience=2, callbacks=[lambda t, m: epoch.update(n=epoch["n"] + 1)])
    assert len(flat.fit()) == 3 and flat.best_epoch == 1 and flat.bad_epochs == 2


def test_em_keeps_the_iteration_of_the_best_validation_log_likelihood_when_a_later_one_falls(tmp_path):
    """fit_em's best.safetensors (and its FitResult) hold the iteration whose validation score
    was the highest, not the last: a step that raises the training likelihood may lower the
    validation one. Here each "EM step" sets the weights to the next of three random states,
    the best (for validation) in the middle."""
    from dgmkit.data import DataTransform, Split
    from dgmkit.models import LogLinearLVM
    from dgmkit.training import RunWriter, fit_em

    g = torch.Generator().manual_seed(0)
    train = Split(torch.bernoulli(torch.full((40, 1, 2, 2), 0.3), generator=g).to(torch.uint8))
    valid = Split(torch.bernoulli(torch.full((30, 1, 2, 2), 0.7), generator=g).to(torch.uint8))
    states = []
    for _ in range(3):
        m = LogLinearLVM((1, 2, 2), 2)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        states.append((m.log_prob(valid.x.float()).mean().item(), {k: v.clone() for k, v in m.state_dict().items()}))
    states.sort(key=lambda s: s[0])
    states = [states[0], states[2], states[1]]  # validation: low, best, middle

    class Scheduled(LogLinearLVM):
        def em_step(self, x):
            before = self.log_prob(x).mean().item()
            self.load_state_dict(states[self.calls][1])
            self.calls += 1
            return before

    model = Scheduled((1, 2, 2), 2)
    model.calls = 0
    result = fit_em(model, train, valid, DataTransform("binary", 2), RunWriter(tmp_path, {"config": {}}), iterations=3)
    assert (result.epoch, result.best_epoch) == (3, 2)
    assert result.best_valid == pytest.approx(states[1][0])
    best, last = load_checkpoint(tmp_path / "best.safetensors"), load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert best["trainer"]["epoch"] == 2 and last["trainer"]["epoch"] == 3
    assert states_equal(best["model"], states[1][1]) and states_equal(last["model"], states[2][1])
    lines = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["valid_log_px"] for r in lines] == pytest.approx([s[0] for s in states])


def _needing_two_rows():
    """CFG's objective, as one whose estimate needs two rows (a WAE's unbiased MMD), and the sizes
    of the validation batches it is given."""
    base = build_objective(CFG)
    seen = []

    class Probe(type(base)):
        rows_per_step = 2

        def __call__(self, model, x, beta=1.0):
            if not model.training:
                seen.append(len(x))
            return base(model, x, beta)

    return Probe(), seen


@pytest.mark.parametrize("eval_batch_size, sizes", [(64, [64, 64, 64, 64, 44]), (299, [300]), (1, [2] * 150)])
def test_validation_batches_are_never_smaller_than_the_objective_needs(digits, eval_batch_size, sizes):
    """An objective whose estimate needs two rows (a WAE's unbiased MMD; it scored a lone code's
    MMD as 0, which pulled valid_mmd down) is never given a validation batch of one: the digits' 300
    validation rows in batches of 299 were 299 and 1."""
    probe, seen = _needing_two_rows()
    _probe_trainer(digits, probe, epochs=1, eval_batch_size=eval_batch_size).validate()
    assert seen == sizes


def test_validation_batches_cover_the_rows_once_in_order():
    from dgmkit.training.trainer import validation_batches

    for n in range(0, 40):
        for size in range(1, 9):
            for least in (1, 2, 3):
                batches = validation_batches(n, size, least)
                assert [i for b in batches for i in range(n)[b]] == list(range(n))
                assert all(b.stop - b.start >= least for b in batches) or (len(batches) == 1 and n < least)
                assert all(b.stop - b.start < max(size, least) + least for b in batches)
                # (data-parallel ranks vote between the batches that the rank of fewest rows has: all have them)
                assert len(validation_batches(n + 1, size, least)) >= len(batches)


def test_a_data_parallel_validation_shard_is_never_smaller_than_the_objective_needs(digits):
    """Data-parallel ranks score shards of the validation rows; a rank whose shard held fewer rows than the
    objective's estimate needs (here 1 of the digits' 300 on rank 199 of 200, a WAE needing 2) scored a
    lone code's MMD as 0. Where the shards would be that small, every rank scores all the rows."""
    from dgmkit.distributed import Context

    probe, seen = _needing_two_rows()
    trainer = _probe_trainer(digits, probe, epochs=1, eval_batch_size=100)
    trainer.dist = Context(rank=199, world_size=200)
    trainer.validate()
    assert seen == [100, 100, 100]
    seen.clear()
    trainer.dist = Context(rank=1, world_size=2)
    trainer.validate()
    assert seen == [100, 50]  # (shards of 150 rows: shared)


def test_the_trainer_checks_the_levels_of_every_training_row_not_only_its_probes(digits):
    """The Trainer transformed its first 1024 training rows to check them: a level of 99 in row
    1100 of the digits (levels 0..16) was taken, and met at its batch (a CPU transform's
    refusal mid-epoch; on a GPU, which does not look, Bernoulli's p of 99/16). Every row is
    looked at before the first step."""
    import dataclasses

    model = build_model(CFG, digits.event_shape, digits.num_levels)
    for row in (5, 1100):
        x = digits.train.x.clone()
        x[row, 0, 0, 0] = 99
        bad = dataclasses.replace(digits.train, x=x)
        with pytest.raises(DataError, match=r"integer levels 0\.\.16; got .*99"):
            Trainer(model, build_objective(CFG), bad, make_transform("bernoulli", digits), progress=False)
