"""Run folders written by dgmkit 0.1 (tests/data/runs_v0_1, see its README) load into the new
typed config and give the old code's numbers; ``dgm eval`` runs on them; records of unknown
or newer formats are refused with CheckpointError."""

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from dgmkit.cli.common import split_data
from dgmkit.cli.main import main
from dgmkit.config import FORMAT, RunConfig, load_run, migrate_record
from dgmkit.config.migrate import check_record
from dgmkit.data import DataTransform
from dgmkit.distributions import location
from dgmkit.errors import CheckpointError, DataError
from dgmkit.evaluation import evaluate
from dgmkit.families import FAMILIES
from dgmkit.training import save_checkpoint
from run_records import rewrite_records

RUNS = Path(__file__).resolve().parent / "data" / "runs_v0_1"
EXPECTED = json.loads((RUNS / "expected.json").read_text())
VARIANTS = sorted(EXPECTED)

# variant -> (family, settings of the migrated config that the 0.1 command line asked for)
NEW_SINCE_0_1 = {
    "hvae",
    "pixelvae",
    "wae",
    "vqvae",
    "m2",
    "adgm",
    "hybrid",
    "diffusion",
}  # families that dgmkit 0.1 did not have: no run folders to migrate
FAMILY_OF = {
    "vae": ("vae", {"hidden": [16], "latent_dim": 2, "prior": "standard"}),
    "vae-vampprior": ("vae", {"prior": "vampprior", "prior_components": 5}),
    "vae-mog": ("vae", {"prior": "mog", "prior_components": 3}),
    "vae-iaf": ("vae", {"posterior": "iaf", "flow_layers": 1}),
    "vae-flowprior": ("vae", {"prior": "flow", "flow": "maf", "flow_layers": 1}),
    "vae-iwae": ("vae", {"objective": "iwae", "iw_k": 3}),
    "vae-categorical": ("vae", {"likelihood": "categorical", "hidden": [3]}),
    "dvae-gumbel": ("dvae", {"latent_dim": 3, "latent_classes": 4, "objective": "gumbel-softmax"}),
    "dvae-reinforce": ("dvae", {"latent_dim": 3, "latent_classes": 4, "objective": "reinforce"}),
    "ae": ("ae", {"latent_dim": 2, "hidden": [16]}),
    "ppca": ("ppca", {"latent_dim": 2}),
    "loglinear": ("loglinear", {"states": 3}),
    "helmholtz-rws": ("helmholtz", {"objective": "rws", "layers": [16, 4]}),
    "flow-realnvp": ("flow", {"flow": "realnvp", "hidden": [8], "flow_layers": 1, "flow_levels": 1}),
    "flow-maf-moons": ("flow", {"flow": "maf", "hidden": [16, 16], "flow_layers": 2}),
    "flow-vardeq": ("flow", {"dequantization": "variational", "hidden": [8]}),
    "arm-made": ("arm", {"arm": "made", "made_hidden": [16]}),
    "arm-pixelcnn": ("arm", {"arm": "pixelcnn", "channels": 8, "arm_layers": 2}),
    "arm-causal": ("arm", {"arm": "causal-conv", "channels": 8, "arm_layers": 2}),
}


def test_every_fixture_folder_is_covered():
    folders = sorted(p.name for p in RUNS.iterdir() if p.is_dir())
    assert folders == VARIANTS == sorted(FAMILY_OF)
    assert {family for family, _ in FAMILY_OF.values()} == set(FAMILIES) - NEW_SINCE_0_1, (
        "a family without an 0.1 run folder"
    )


def reference_log_p(run, x: torch.Tensor) -> torch.Tensor:
    """The quantity make_expected.py computed with the old code, with the new API."""
    model = run.model
    with torch.no_grad():
        if run.cfg.family == "flow" and run.cfg.model.dequantization == "variational":
            return model.flow.log_prob((x.float() + 0.5) / model.num_levels)
        if model.estimate_kind == "exact":
            return model.log_prob(x)
        return model.likelihood(location(model.posterior(x))).log_prob(x)


def _inputs(run, name: str) -> torch.Tensor:
    x = torch.tensor(EXPECTED[name]["x"])
    return x.long() if run.record["data"]["transform"] == "integers" else x.float()


@pytest.mark.parametrize("name", VARIANTS)
def test_v0_1_run_loads_with_the_old_numbers(name):
    run = load_run(RUNS / name)
    family, settings = FAMILY_OF[name]
    assert run.cfg.family == family
    flat = run.cfg.flat()
    for key, value in settings.items():
        assert flat[key] == value, f"{name}: {key} = {flat[key]!r}, the 0.1 command asked for {value!r}"
    old = EXPECTED[name]["config"]
    if run.cfg.model.fit == "gradient":  # 0.1's optimisation settings carry over
        assert (run.cfg.optim.epochs, run.cfg.optim.batch_size, run.cfg.optim.lr) == (
            old["epochs"],
            old["batch_size"],
            old["lr"],
        )
    assert run.cfg.data.dataset == old["dataset"] and run.cfg.optim.seed == old["seed"]
    assert run.cfg.eval.iw_samples is None  # 0.1 stored its default 5000; the family's default applies now
    assert run.cfg.iw_samples == run.cfg.model.default_iw_samples
    assert run.record["format"] == FORMAT and run.record["migrated_from"] == 1
    assert run.checkpoint.name == "best.safetensors"
    # the model is the one 0.1 trained: same size, same numbers
    assert sum(t.numel() for t in run.model.state_dict().values()) == EXPECTED[name]["n_params"]
    x = _inputs(run, name)
    log_p = reference_log_p(run, x)
    assert log_p.shape == (4,)
    torch.testing.assert_close(log_p.double(), torch.tensor(EXPECTED[name]["log_p"], dtype=torch.float64), rtol=1e-5, atol=0)
    # the stored inputs are the first test points as the run's data transform gives them now
    test_x, _ = split_data(run, "test")
    assert torch.equal(test_x[:4].to(x.dtype), x)


@pytest.mark.parametrize("name", VARIANTS)
def test_migrated_config_round_trips_and_is_stable(name):
    record = json.loads((RUNS / name / "config.json").read_text())
    assert "format" not in record  # written by 0.1
    before = copy.deepcopy(record)
    migrated = migrate_record(record, "config.json")
    assert record == before, "migration must not change its input"
    assert migrated["format"] == FORMAT and migrated["data"] == record["data"]
    cfg = RunConfig.from_dict(migrated["config"], "migrated")
    assert migrate_record(migrated, "again") == migrated  # a current record passes unchanged
    assert RunConfig.from_dict(cfg.to_dict(), "round trip") == cfg
    assert RunConfig.from_dict(cfg.flat(), "flat") == cfg


@pytest.mark.parametrize("name", VARIANTS)
def test_dgm_eval_runs_on_a_v0_1_folder(name, tmp_path, capsys):
    folder = tmp_path / name
    shutil.copytree(RUNS / name, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    run = load_run(folder)
    sampled = run.model.estimate_kind not in ("exact", "reconstruction")  # --iw-samples is refused where k means nothing
    code = main(["eval", str(folder), *(["--iw-samples", "10"] if sampled else [])])
    _, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((folder / "eval.json").read_text())
    x, _ = split_data(run, "test")
    assert report["model"] == run.cfg.family and report["split"] == "test" and report["n"] == len(x)
    kind = run.model.estimate_kind
    assert report["estimate"] == kind
    # the checkpoints and config are left as they were: eval only adds eval.json and evals.json (and its lock)
    added = ("eval.json", "evals.json", ".evals.lock")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name not in added} == before
    num_dims = math.prod(run.record["data"]["event_shape"])
    if kind == "reconstruction":
        assert report["nll"] is None
        assert report["recon"] == pytest.approx(reference_log_p(run, x).double().mean().item(), rel=1e-5)
        return
    assert math.isfinite(report["nll"])
    if run.transform.kind == "continuous":  # a density of continuous data: no bits/dim that would compare
        assert report["bpd"] is None and report["density_of"] == "continuous"
    else:
        assert report["bpd"] == pytest.approx(report["nll"] / (num_dims * math.log(2)))
    again = evaluate(run.model, x, iw_samples=10, log_volume=run.transform.log_volume, seed=0)
    assert report["nll"] == pytest.approx(again.nll, rel=1e-6)
    if kind == "exact":
        with torch.no_grad():
            exact = -run.model.log_prob(x).double().mean().item() + num_dims * run.transform.log_volume
        assert report["nll"] == pytest.approx(exact, rel=1e-5)
    else:  # k = 10 samples, as asked
        assert report["iw_samples"] == 10


def _record(name: str = "vae") -> dict:
    return json.loads((RUNS / name / "config.json").read_text())


def test_a_record_from_a_newer_dgmkit_is_refused():
    record = migrate_record(_record(), "config.json")
    with pytest.raises(CheckpointError, match="newer dgmkit"):
        migrate_record({**record, "format": 99}, "config.json")


@pytest.mark.parametrize("version", [0, "2", 1.5, None, [1], 1.0, float(FORMAT), True])
def test_an_unknown_format_is_refused(version):
    record = migrate_record(_record(), "config.json")
    with pytest.raises(CheckpointError, match="format"):
        migrate_record({**record, "format": version}, "config.json")


@pytest.mark.parametrize("missing", ["config", "data"])
def test_a_record_missing_keys_is_refused(missing):
    for record in (_record(), migrate_record(_record(), "config.json")):
        broken = {k: v for k, v in record.items() if k != missing}
        with pytest.raises(CheckpointError, match="x.json"):
            migrate_record(broken, "x.json")


@pytest.mark.parametrize("record", [None, [], "config", {"config": [], "data": {}}, {"config": {}, "data": None}])
def test_a_record_that_is_not_a_table_is_refused(record):
    with pytest.raises(CheckpointError):
        migrate_record(record, "x.json")


@pytest.mark.parametrize("name, iw_samples", [("vae", 200), ("vae", 4999), ("vae-iwae", 1)])
def test_a_v0_1_run_that_asked_for_other_iw_samples_keeps_them(name, iw_samples):
    """Only 0.1's default (5000, which it stored whatever was asked) gives way to the family's
    default; a number the run asked for stays its evaluation's."""
    record = _record(name)
    record["config"] = {**record["config"], "iw_samples": iw_samples}
    cfg = RunConfig.from_dict(migrate_record(record, "config.json")["config"], "migrated")
    assert cfg.eval.iw_samples == iw_samples and cfg.iw_samples == iw_samples


def test_a_v0_1_config_of_an_unknown_model_is_refused():
    record = _record()
    record["config"] = {**record["config"], "model": "gan"}
    with pytest.raises(CheckpointError, match="gan"):
        migrate_record(record, "config.json")


@pytest.mark.parametrize("edit", [lambda r: r.pop("format"), lambda r: r.update(format=1)])
def test_a_sectioned_record_whose_format_was_edited_to_1_is_refused_as_such(edit):
    """A current record without its "format" key (or with 1) is not read as a 0.1 flat table:
    the error says which tables it holds, not that a model '{'activation': ...' is unknown."""
    record = copy.deepcopy(migrate_record(_record(), "config.json"))
    edit(record)
    with pytest.raises(CheckpointError, match=r"x.json is read as run format 1 .* tables model, data, optim, eval"):
        migrate_record(record, "x.json")


@pytest.mark.parametrize(
    "config, version",
    [
        ({"model": "arm", "hidden": []}, 1),
        ({"model": "arm", "hidden": 5}, 1),
        ({"model": "helmholtz", "hidden": 5}, 1),
        ({"model": {"name": ["vae"]}}, 2),
        ({"model": {"name": {"a": 1}}}, 3),
    ],
)
def test_a_crafted_old_record_is_refused_by_name(config, version):
    """Old formats' records are migrated by each family's own code: keys of the wrong type or
    length there are a CheckpointError naming the file, not a TypeError or IndexError."""
    record = {"format": version, "config": config, "data": _record()["data"]}
    try:
        check_record(migrate_record(record, "x.json"), "x.json")
    except CheckpointError as e:
        assert "x.json" in str(e)
    else:
        raise AssertionError("accepted")


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("run_id", "a" * 31, "run_id 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' is not a run id of dgmkit"),
        ("run_id", 7, "run_id '7' is not a run id"),
        ("run_id", "\u00e9" * 32, "is not a run id"),  # alphanumeric, not ASCII
        ("event_shape", [0, 8, 8], "event_shape [0, 8, 8] is not a list of 1 to 4 positive sizes"),
        ("event_shape", [True, 8, 8], "event_shape [True, 8, 8] is not a list"),  # JSON true is no size
        ("event_shape", [1, 1, 1, 1, 1], "is not a list of 1 to 4"),
        ("event_shape", "1x8x8", "is not a list of 1 to 4"),
        ("event_shape", [1] * 100_000, "event_shape [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, ... is not a list"),  # (cut)
        ("num_levels", "x" * 100_000, "num_levels 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... is not an integer"),
        ("transform", None, "the data transform is missing"),
        ("sha256", "ab" * 16, "the data's sha256 'abab"),
        ("sha256", "AB" * 32, "is not a SHA-256 digest"),  # (hexdigest writes lower case)
    ],
)
def test_a_record_describing_its_data_or_run_id_wrongly_is_refused_by_name(key, value, needle):
    record = migrate_record(_record(), "config.json")
    ok = {**record, "run_id": "0123456789abcdef" * 2, "data": {**record["data"], "sha256": "0f" * 32}}
    check_record(ok, "x.json")
    where = ok if key == "run_id" else ok["data"]
    where[key] = value
    if value is None:
        del where[key]
    with pytest.raises(CheckpointError, match="^x.json: ") as e:
        check_record(ok, "x.json")
    assert needle in str(e.value) and len(str(e.value)) < 300


def test_a_record_of_an_unknown_format_or_transform_is_refused_in_a_short_line():
    """A crafted record's format or data transform of 100000 characters was echoed whole."""
    with pytest.raises(CheckpointError, match=r"^x.json has an unknown run format 'x{36}\.\.\.$"):
        migrate_record({**_record(), "format": "x" * 100_000}, "x.json")
    with pytest.raises(DataError, match=r"^unknown data transform 'x{36}\.\.\.; choose from"):
        DataTransform("x" * 100_000, None)
    # (a format of 4300 digits, as JSON may hold, was printed whole as the newer dgmkit's)
    newer = r"^x.json was written by a newer dgmkit [(]run format an integer of 4300 digits[)]; upgrade dgmkit$"
    with pytest.raises(CheckpointError, match=newer):
        migrate_record({**_record(), "format": 10**4299}, "x.json")


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda r: {**r, "format": 99}, "newer dgmkit"),
        (lambda r: {k: v for k, v in r.items() if k != "data"}, "no dgmkit run record"),
        (lambda r: {**r, "config": {**r["config"], "hidden": "wide"}}, "rejects"),
        (
            lambda r: {**r, "data": {**r["data"], "event_shape": [1, 8]}},
            "does not describe a model this dgmkit can build: a Decoder.s event_shape",
        ),
        (lambda r: {**r, "data": {**r["data"], "num_levels": 1}}, "num_levels"),
    ],
    ids=["newer", "no-data", "bad-config", "wrong-shape", "bad-levels"],
)
def test_load_run_refuses_a_bad_record_with_a_checkpoint_error(edit, needle, tmp_path):
    folder = tmp_path / "vae"
    shutil.copytree(RUNS / "vae", folder)
    rewrite_records(folder, edit)
    with pytest.raises(CheckpointError, match=needle):
        load_run(folder)


def test_a_v0_1_checkpoint_re_saved_by_this_dgmkit_loads_identically(tmp_path):
    """Migrated once, saved in the current format: the same model and config come back."""
    run = load_run(RUNS / "vae-mog")
    folder = tmp_path / "resaved"
    folder.mkdir()
    record = {k: v for k, v in run.record.items() if k != "migrated_from"}
    save_checkpoint(folder / "best.safetensors", run.model, record)
    again = load_run(folder)
    assert again.cfg == run.cfg and "migrated_from" not in again.record
    x = _inputs(run, "vae-mog")
    torch.testing.assert_close(reference_log_p(again, x), reference_log_p(run, x), rtol=0, atol=0)


def test_dgm_eval_replaces_the_eval_json_that_dgmkit_0_1_wrote(tmp_path, capsys):
    """dgmkit 0.1's eval.json had no 'estimate' (elbo, nll, exact, note, split, checkpoint): it is
    dgmkit's own, replaced by a new evaluation, not refused as a foreign file."""
    folder = tmp_path / "vae"
    shutil.copytree(RUNS / "vae", folder)
    old = {"elbo": -30.1, "nll": 29.5, "exact": False, "note": "k=10", "split": "test", "checkpoint": "best.safetensors"}
    (folder / "eval.json").write_text(json.dumps(old))
    assert main(["eval", str(folder), "--iw-samples", "5"]) == 0, capsys.readouterr().err
    assert json.loads((folder / "eval.json").read_text())["estimate"] == "importance-sampled"


def test_a_table_is_pinned_by_its_columns_too_and_a_run_pinned_by_its_values_alone_still_reads(tmp_path, capsys):
    """A table's digest was of its standardized values alone, the same for a column shifted as a
    whole: such a file passed as the run's data. The columns' standardization is pinned now; a run
    recorded the older way still evaluates and resumes, keeping its digest."""
    import numpy as np

    from dgmkit.cli.common import run_data

    rows = np.random.default_rng(0).normal(size=(60, 3))
    for name, shift in (("t.csv", 0.0), ("shifted.csv", 1.0)):
        lines = "".join(f"{r[0] + shift:.4f},{r[1]:.4f},{r[2]:.4f}\n" for r in rows)
        (tmp_path / name).write_text("a,b,c\n" + lines)
    run = tmp_path / "run"
    train = ["train", "--dataset", tmp_path / "t.csv", "--model", "ppca", "--latent-dim", "1", "--quiet", "--out", run]
    assert main([str(a) for a in train]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--data", str(tmp_path / "shifted.csv")]) == 1
    assert "shifted.csv now holds other data than" in capsys.readouterr().err
    dataset = run_data(load_run(run))
    values_alone = dataset.content_digest(columns=False)
    assert values_alone != dataset.fingerprint()
    rewrite_records(run, lambda r: {**r, "data": {**r["data"], "sha256": values_alone}})
    assert main(["eval", str(run)]) == 0
    vae = tmp_path / "vae"
    train = ["train", "--dataset", tmp_path / "t.csv", "--likelihood", "gaussian", "--hidden", "4", "--latent-dim", "1",
             "--epochs", "1", "--quiet", "--out", vae]  # fmt: skip
    assert main([str(a) for a in train]) == 0
    rewrite_records(vae, lambda r: {**r, "data": {**r["data"], "sha256": values_alone}})
    assert main(["train", "--resume", "--epochs", "2", "--quiet", "--out", str(vae)]) == 0
    assert json.loads((vae / "config.json").read_text())["data"]["sha256"] == values_alone


def test_dgm_eval_and_report_take_the_eval_json_that_dgmkit_0_1_wrote_for_an_autoencoder(tmp_path, capsys):
    """dgmkit 0.1 wrote "nll": null for a model with no density: the check of records refused it
    as 'not an eval.json of dgmkit' (dgm eval took it before)."""
    folder = tmp_path / "ae"
    shutil.copytree(RUNS / "ae", folder)
    old = {
        "active_units": 0,
        "bpd": None,
        "checkpoint": "best.safetensors",
        "dataset": "digits",
        "elbo": None,
        "elbo_bpd": None,
        "exact": False,
        "iw_samples": 0,
        "kl": None,
        "kl_per_dim": None,
        "latent_dim": 2,
        "n": 300,
        "nll": None,
        "nll_stderr": None,
        "note": "an autoencoder defines no density over x",
        "num_dims": 64,
        "recon": -44.27,
        "seconds": 0.003,
        "split": "test",
        "subset": None,
        "transform": "dynamic-binarize",
    }  # fmt: skip  (as dgmkit 0.1, commit d548364, wrote it for this run)
    (folder / "eval.json").write_text(json.dumps(old))
    assert main(["report", str(folder), "--no-figures", "--out", str(tmp_path / "r.html")]) == 0, capsys.readouterr().err
    assert main(["eval", str(folder)]) == 0, capsys.readouterr().err
    assert json.loads((folder / "eval.json").read_text())["estimate"] == "reconstruction"


def test_the_report_of_the_v0_1_runs_notes_no_contradiction_with_their_checkpoints(tmp_path, capsys):
    """dgmkit 0.1 tracked the ELBO as every family's best score: the report took the metrics of 11
    of these runs for another run's, comparing the checkpoint's best with today's score key."""
    folders = [str(RUNS / name) for name in VARIANTS]
    assert main(["report", *folders, "--no-figures", "--out", str(tmp_path / "r.html")]) == 0, capsys.readouterr().err
    assert "may not be of this run" not in (tmp_path / "r.html").read_text()


def test_a_bundled_dataset_that_no_longer_holds_the_recorded_data_is_not_sent_to_a_data_folder(tmp_path, capsys):
    """The digits are read from no folder: where they differ from what the run recorded (another
    version of dgmkit or scikit-learn made them), the refusal said "(in DATA_DIR)" and "Point
    --data-dir at the original files", which no flag of theirs reads."""
    run = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(run)]) == 0
    rewrite_records(run, lambda r: {**r, "data": {**r["data"], "sha256": "0f" * 32}})
    capsys.readouterr()
    assert main(["eval", str(run)]) == 1
    err = capsys.readouterr().err
    assert f"digits now holds other data than {run} was trained on" in err and "--data-dir" not in err, err
    assert "read from no folder: another version of dgmkit (or of scikit-learn, for its datasets) made it" in err


def test_a_v0_1_run_resumes_as_dgmkit_0_1_trained_on_and_its_older_best_checkpoint_still_loads(tmp_path, capsys):
    """A dgmkit 0.1 run has no run id: `dgm train --resume` made it a new one, then refused it as
    "the data and flags belongs to another run (run id '1444...', while config.json says 'None')". It goes
    on without one now, its third epoch that of `dgm train --epochs 3` of dgmkit 0.1 (d548364) to the last
    bit of the training loss; and its best.safetensors from before the resume, kept where validation does not
    improve (put back here), has no data digest, which config.json records now: it loads and evaluates."""
    folder = tmp_path / "vae"
    shutil.copytree(RUNS / "vae", folder)
    assert main(["train", "--resume", "--out", str(folder), "--epochs", "3", "--quiet"]) == 0, capsys.readouterr().err
    record = json.loads((folder / "config.json").read_text())
    assert record["format"] == FORMAT and record["run_id"] is None and len(record["data"]["sha256"]) == 64
    third = json.loads((folder / "metrics.jsonl").read_text().splitlines()[2])
    assert (third["epoch"], third["train_loss"]) == (3, 44.64345107560568)  # dgmkit 0.1's own 3 epochs: 44.64345107560568
    shutil.copyfile(RUNS / "vae" / "best.safetensors", folder / "best.safetensors")
    assert main(["eval", str(folder), "--iw-samples", "2"]) == 0, capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(folder), "--epochs", "4", "--quiet"]) == 0, capsys.readouterr().err
