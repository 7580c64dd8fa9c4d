"""The moving average of the weights (``--ema``): its formula, validation and best.safetensors
with the averaged weights, exact resume, skipped steps, the NaN guard and the flag."""

import json

import pytest
import torch
from torch import nn

from dgmkit.cli.main import main
from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import load_dataset, make_transform
from dgmkit.errors import CheckpointError, ConfigError, TrainingError
from dgmkit.training import EMA, MovingAverage, StepGuard, Trainer, latent_diagnostics, load_checkpoint
from run_records import edit_metadata

CFG = RunConfig.of(dataset="digits", hidden=[16], latent_dim=3, batch_size=128, epochs=2, seed=3, device="cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def make_trainer(digits, run_dir=None, ema=0.9, **kw):
    torch.manual_seed(11)  # the initial weights
    cfg = CFG.replace(**{k: v for k, v in kw.items() if k in CFG.flat()})
    extra = {k: v for k, v in kw.items() if k not in CFG.flat()}
    return Trainer(
        build_model(cfg, digits.event_shape, digits.num_levels),
        build_objective(cfg),
        digits.train,
        make_transform("bernoulli", digits),
        valid=digits.valid,
        epochs=cfg.optim.epochs,
        batch_size=cfg.optim.batch_size,
        lr=cfg.optim.lr,
        seed=cfg.optim.seed,
        device="cpu",
        parts=[
            *([MovingAverage(ema)] if ema else []),
            *([StepGuard(skip_norm=cfg.optim.skip_grad_norm)] if cfg.optim.skip_grad_norm is not None else []),
        ],
        run_dir=run_dir,
        config={"config": cfg.to_dict()},
        progress=False,
        diagnostics=latent_diagnostics,
        **extra,
    )


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Scalar(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([value], dtype=torch.float64))
        self.register_buffer("count", torch.tensor([7.0]))


def test_the_average_follows_the_model_it_is_given_and_its_weights_changed_in_place():
    """The parameters are looked up once a model (not in every step), so what is averaged is
    the model named in the call, with whatever its weights hold now."""
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    ema = EMA(a, decay=0.5)
    start = {k: v.clone() for k, v in ema.weights.items()}
    with torch.no_grad():
        a.weight.fill_(1.0)  # in place, after the average was made
    ema.update(a)  # first update: decay min(0.5, 1/10) = 0.1
    assert torch.allclose(ema.weights["weight"], 0.1 * start["weight"] + 0.9)
    with torch.no_grad():
        b.weight.fill_(-3.0)
        a.weight.fill_(7.0)
    before = ema.weights["weight"].clone()
    ema.update(b)  # another model: its weights, not a's
    d = min(0.5, 2 / 11)
    assert torch.allclose(ema.weights["weight"], d * before + (1 - d) * -3.0)
    ema.update(a, torch.tensor(True))  # back to a, on the device path
    d3 = min(0.5, 3 / 12)
    assert torch.allclose(ema.weights["weight"], d3 * (d * before + (1 - d) * -3.0) + (1 - d3) * 7.0)


def test_the_average_follows_its_recursion_with_the_warm_up():
    model, decay = Scalar(5.0), 0.9
    ema = EMA(model, decay)
    values = [1.0, -2.0, 4.0, 0.5, 3.0, 3.0, -1.0, 2.0, 0.0, 8.0] * 9
    expected = 5.0  # the average starts from the initial weights
    for n, v in enumerate(values):
        with torch.no_grad():
            model.w.fill_(v)
        ema.update(model)
        d = min(decay, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * v
        assert ema.weights["w"].item() == pytest.approx(expected, rel=1e-12)
    assert ema.updates == len(values) and ema.current_decay() == decay  # the warm-up is over after 80
    assert min(decay, 1 / 10) == 0.1  # the first update keeps a tenth of the initial weights


def test_swapped_puts_the_average_in_and_the_raw_weights_back():
    model = Scalar(1.0)
    ema = EMA(model, 0.5)
    with torch.no_grad():
        model.w.fill_(3.0)
    ema.update(model)  # 0.1 * 1 + 0.9 * 3
    with ema.swapped(model) as m:
        assert m.w.item() == pytest.approx(2.8) and m.count.item() == 7.0  # buffers are the model's own
    assert model.w.item() == 3.0
    with pytest.raises(KeyError), ema.swapped(model):
        raise KeyError
    assert model.w.item() == 3.0 and model.w.requires_grad


def test_load_state_dict_refuses_weights_of_another_model():
    ema = EMA(Scalar(1.0), 0.9)
    with pytest.raises(ValueError, match="missing"):
        ema.load_state_dict({"updates": 1, "weights": {"v": torch.zeros(1)}})
    with pytest.raises(ValueError, match="shape"):
        ema.load_state_dict({"updates": 1, "weights": {"w": torch.zeros(2)}})
    with pytest.raises(ValueError, match="update count"):
        ema.load_state_dict({"updates": -1, "weights": {"w": torch.zeros(1)}})
    assert ema.updates == 0 and ema.weights["w"].item() == 1.0


def test_validation_and_diagnostics_use_the_averaged_weights(digits, tmp_path):
    trainer = make_trainer(digits, tmp_path, epochs=1)
    history = trainer.fit()
    raw = params(trainer.model)
    assert not same(raw, trainer.ema.weights)
    torch.manual_seed(0)
    with_ema = trainer.validate()
    assert same(params(trainer.model), raw)  # validation leaves the raw weights in place

    ema, trainer.ema = trainer.ema, None  # the same validation, with the weights put in by hand
    torch.manual_seed(0)
    without = trainer.validate()
    with torch.no_grad():
        for n, p in trainer.model.named_parameters():
            p.copy_(ema.weights[n])
    torch.manual_seed(0)
    by_hand = trainer.validate()
    assert with_ema == by_hand and "valid_active_units" in with_ema and "valid_kl_per_dim" in with_ema
    assert with_ema["valid_elbo"] != without["valid_elbo"]
    assert history[0]["ema"] == 0.9
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert line["ema"] == 0.9


def test_best_holds_the_average_and_checkpoint_the_raw_weights_and_the_average(digits, tmp_path):
    trainer = make_trainer(digits, tmp_path)
    trainer.fit()
    assert trainer.best_epoch == trainer.epoch == 2  # best.safetensors is of the last epoch
    best = load_checkpoint(tmp_path / "best.safetensors")
    assert same({n: best["model"][n] for n in trainer.ema.weights}, trainer.ema.weights)
    assert not best["ema"] and best["optimizer"] is None
    ckpt = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert same({n: ckpt["model"][n] for n in trainer.ema.weights}, params(trainer.model))
    assert same(ckpt["ema"], trainer.ema.weights)
    assert ckpt["trainer"]["ema_updates"] == trainer.ema.updates == trainer.step


def test_resume_ends_with_the_weights_and_average_of_the_uninterrupted_run(digits, tmp_path):
    full = make_trainer(digits, tmp_path / "full", epochs=3)
    full.fit()

    def interrupt(trainer, metrics):
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_trainer(digits, tmp_path / "part", epochs=3, callbacks=[interrupt]).fit()
    resumed = make_trainer(digits, tmp_path / "part", epochs=3)
    resumed.resume()
    assert resumed.ema.updates == resumed.step > 0
    resumed.fit()
    assert same(params(full.model), params(resumed.model))
    assert same(full.ema.weights, resumed.ema.weights) and full.ema.updates == resumed.ema.updates
    lines = lambda p: [json.loads(s) for s in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    drop = lambda m: {k: v for k, v in m.items() if k not in ("time_s", "images_per_s")}  # noqa: E731
    assert [drop(m) for m in lines(tmp_path / "full")] == [drop(m) for m in lines(tmp_path / "part")]
    a, b = (load_checkpoint(tmp_path / d / "best.safetensors")["model"] for d in ("full", "part"))
    assert same(a, b)


def test_resume_refuses_a_checkpoint_without_the_average(digits, tmp_path):
    make_trainer(digits, tmp_path, ema=0.0, epochs=1).fit()
    with pytest.raises(CheckpointError, match="no moving average"):
        make_trainer(digits, tmp_path, epochs=2).resume()


def test_resume_refuses_an_update_count_the_run_could_not_have_made(digits, tmp_path):
    """The average's update count weighs its bias correction: more updates than steps (or one
    that is no count) is a crafted or foreign checkpoint, refused with the file named."""
    make_trainer(digits, tmp_path, epochs=1).fit()
    path = tmp_path / "checkpoint.safetensors"
    counters: dict = {}
    edit_metadata(path, lambda meta: counters.update(json.loads(meta["trainer"])))
    assert counters["ema_updates"] == counters["step"] == 10
    cases = (
        ({"ema_updates": 11}, "counts 11 updates in 10 steps taken"),
        ({"ema_updates": -1}, "not an integer >= 0"),
        ({"ema_updates": "10"}, "'10'"),
        ({"skipped_steps": 3}, "counts 10 updates in 7 steps taken"),  # (a skipped step updates no average)
    )
    for edits, needle in cases:
        edit_metadata(path, lambda meta, e=edits: meta.update(trainer=json.dumps({**counters, **e})))
        resumed = make_trainer(digits, tmp_path, epochs=2)
        with pytest.raises(CheckpointError, match=f"checkpoint.safetensors does not fit.*{needle}"):
            resumed.resume()
        assert resumed.epoch == 0 and resumed.ema.updates == 0


def test_skipped_steps_leave_the_average_as_it_is(digits):
    skipped = make_trainer(digits, epochs=1, skip_grad_norm=1e-9)
    start = {n: w.clone() for n, w in skipped.ema.weights.items()}
    with pytest.raises(TrainingError, match="every one of the epoch's"):  # an epoch of skipped updates stops the run
        skipped.fit()
    assert skipped.skipped_steps == skipped.step > 0 and skipped.ema.updates == 0
    assert same(skipped.ema.weights, start)
    taken = make_trainer(digits, epochs=1, skip_grad_norm=1e9)
    taken.fit()
    assert taken.skipped_steps == 0 and taken.ema.updates == taken.step


def test_a_non_finite_average_stops_the_run(digits, tmp_path):
    def poison(trainer, metrics):
        next(iter(trainer.ema.weights.values())).fill_(float("nan"))

    trainer = make_trainer(digits, tmp_path, callbacks=[poison])
    with pytest.raises(TrainingError, match="moving average of the model's"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "checkpoint.safetensors")["trainer"]["epoch"] == 1


def test_the_setting_and_its_flag(tmp_path, capsys):
    assert RunConfig.of().optim.ema == 0.0 and RunConfig.of(ema=0.999).optim.ema == 0.999
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="ema"):
            RunConfig.of(ema=bad)
    with pytest.raises(ValueError, match="moving average's decay"):
        make_trainer(load_dataset("digits"), ema=1.0)
    out = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--ema", "0.99"]
    assert main([*argv, "--batch-size", "256", "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["optim"]["ema"] == 0.99
    assert load_checkpoint(out / "checkpoint.safetensors")["ema"]
