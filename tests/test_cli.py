"""The dgm command: every command end to end on the embedded digits, and clean failures."""

import errno
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dgmkit.cli.main import main
from dgmkit.config import load_run

PNG = b"\x89PNG\r\n\x1a\n"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_failure(code, err, *needles):
    assert code == 1, err
    assert err.startswith("dgm: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    code = main(
        [
            "train",
            "--dataset",
            "digits",
            "--epochs",
            "3",
            "--hidden",
            "32",
            "--latent-dim",
            "4",
            "--batch-size",
            "64",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


def test_train_writes_a_self_describing_run(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "checkpoint.safetensors", "best.safetensors", "metrics.jsonl"} <= names
    record = json.loads((trained / "config.json").read_text())
    assert record["format"] == 5 and record["config"]["model"] == {
        **record["config"]["model"],
        "name": "vae",
        "latent_dim": 4,
    }
    assert record["data"]["transform"] == "dynamic-binarize"
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3]
    assert not [p for p in trained.iterdir() if p.name.endswith(".tmp")]  # no temporary files


def test_eval_reports_consistent_numbers(trained, capsys):
    code, out, _ = run(capsys, "eval", trained, "--iw-samples", "200")
    assert code == 0 and "NLL (k=200)" in out
    assert re.search(r"^data +digits, binarized \(one seeded Bernoulli draw of each pixel\)$", out, re.M), out
    r = json.loads((trained / "eval.json").read_text())
    for key in ("elbo", "nll", "bpd", "kl", "recon", "active_units", "iw_samples", "n"):
        assert key in r
    assert r["elbo"] < 0 < r["nll"] and r["bpd"] > 0 and r["n"] == 300 and r["iw_samples"] == 200
    assert r["nll"] <= -r["elbo"] + 0.5  # the importance-sampled bound is tighter than the ELBO
    assert r["bpd"] == pytest.approx(r["nll"] / (64 * np.log(2)))
    assert r["elbo"] == pytest.approx(r["recon"] - r["kl"])


def test_eval_limit_draws_a_recorded_random_subset(trained, capsys):
    run(capsys, "eval", trained, "--iw-samples", "10", "--limit", "50", "--seed", "3")
    a = json.loads((trained / "eval.json").read_text())
    assert a["n"] == 50 and a["subset"]["seed"] == 3 and a["subset"]["of"] == 300
    assert a["subset"]["indices"] != list(range(50))  # not the first 50
    run(capsys, "eval", trained, "--iw-samples", "10", "--limit", "50", "--seed", "3")
    b = json.loads((trained / "eval.json").read_text())
    assert a["subset"] == b["subset"] and a["nll"] == b["nll"]


@pytest.mark.parametrize("command", ["sample", "reconstruct", "interpolate", "latents"])
def test_figure_commands_write_pngs(trained, tmp_path, capsys, command):
    out = tmp_path / f"{command}.png"
    code, text, _ = run(capsys, command, trained, "--out", out)
    assert code == 0 and str(out) in text
    assert out.read_bytes()[:8] == PNG
    if command in ("sample", "interpolate"):  # what the images are: the means of p(x|z), not draws
        assert "means of p(x|z)" in text, text


def test_resume_continues_a_run(tmp_path, capsys):
    out = tmp_path / "r"
    base = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--quiet", "--out", out]
    assert run(capsys, *base, "--epochs", "1")[0] == 0
    code, _, err = run(capsys, *base, "--epochs", "2")
    assert_clean_failure(code, err, "is not empty", "--resume")
    code, text, _ = run(capsys, "train", "--resume", "--epochs", "2", "--quiet", "--out", out)
    assert code == 0 and "resuming" in text
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_run_trained_in_bf16_on_a_gpu_goes_on_on_a_cpu_with_precision_fp32(tmp_path, capsys, monkeypatch):
    """--device may change on --resume and --precision could not: a run trained with
    --precision bf16 on a GPU, resumed with --device cpu, met "mixed precision (bf16) is only
    supported on a CUDA device here", and --precision fp32 "contradicts it": no way on. (The
    bf16 run is made here on the CPU, its autocast let through.)"""
    import dgmkit.training.precision as precision

    allowed = precision.resolve_precision
    monkeypatch.setattr(
        precision,
        "resolve_precision",
        lambda name, device, checked=False: name if name == "bf16" else allowed(name, device, checked),
    )
    out = tmp_path / "r"
    base = ["--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--device", "cpu", "--precision", "bf16"]
    assert run(capsys, "train", *base, "--epochs", "1", "--quiet", "--out", out)[0] == 0
    monkeypatch.setattr(precision, "resolve_precision", allowed)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "2", "--quiet", "--out", out, "--device", "cpu")
    assert_clean_failure(code, err, "mixed precision (bf16) is only supported on a CUDA device here; precision fp32")
    code, _, err = run(capsys, "train", "--resume", "--epochs", "2", "--quiet", "--out", out, "--precision", "fp32")
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["config"]["optim"]["precision"] == "fp32"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "argv, pattern, key, scale",
    [
        (["--objective", "iwae", "--iw-k", "4"], r"valid -ELBO +([\d.]+)", "valid_elbo", -1),  # beside the IWAE bound
        (["--model", "m2", "--labels", "100"], r"valid acc +([\d.]+)%", "valid_accuracy", 100),
    ],
    ids=["elbo-beside-iwae", "m2-accuracy"],
)
def test_the_epoch_line_says_the_elbo_beside_another_bound_and_a_labelled_familys_accuracy(
    tmp_path, capsys, argv, pattern, key, scale
):
    out = tmp_path / "r"
    code, said, err = run(capsys, "train", "--dataset", "digits", *argv, "--hidden", "16", "--latent-dim", "2",
                          "--epochs", "1", "--out", out)  # fmt: skip
    assert code == 0, err
    shown = re.search(pattern, said)
    assert shown, said
    m = json.loads((out / "metrics.jsonl").read_text())
    assert float(shown[1]) == pytest.approx(scale * m[key], abs=0.006)
    if key == "valid_elbo":  # the bound optimised is the tighter one, on the same data
        bound = re.search(r"valid -IWAE-4 bound +([\d.]+)", said)
        assert bound and float(bound[1]) < float(shown[1]), said


def test_config_file_and_flag_override(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset = "digits"\nlatent_dim = 3\nhidden = [8]\nepochs = 1\n')
    out = tmp_path / "r"
    assert run(capsys, "train", "--config", cfg, "--latent-dim", "2", "--quiet", "--out", out)[0] == 0
    record = json.loads((out / "config.json").read_text())["config"]
    assert record["model"]["latent_dim"] == 2 and record["model"]["hidden"] == [8]


def bad_inputs(tmp_path):
    np.save(tmp_path / "u8.npy", np.random.default_rng(0).integers(0, 256, (40, 8, 8)).astype(np.uint8))
    np.save(tmp_path / "flat.npy", np.zeros(7))
    (tmp_path / "unknown.toml").write_text("latnet_dim = 3\n")
    (tmp_path / "broken.toml").write_text("latent_dim = \n")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    save_file({"w": torch.zeros(1)}, str(foreign / "checkpoint.safetensors"))
    empty = tmp_path / "empty"
    empty.mkdir()
    np.save(tmp_path / "rgb.npy", np.random.default_rng(0).integers(0, 4, (40, 3, 8, 8)).astype(np.uint8))
    (tmp_path / "t.csv").write_text("a,b\n" + "".join(f"{i / 10},{'xyz'[i % 3]}\n" for i in range(30)))
    out = str(tmp_path / "o")
    digits = ["train", "--dataset", "digits", "--out", out]
    return [
        # settings that do not fit the data, each refused by name before a run folder is made
        ([*digits, "--likelihood", "mixed"], ["digits is not a table", "the mixed likelihood needs columns"]),
        (
            ["train", "--dataset", tmp_path / "t.csv", "--likelihood", "mixed", "--table-levels", "0", "2", "--out", out],
            ["t.csv's columns have [0, 3] categories", "built for [0, 2]"],
        ),
        (
            ["train", "--dataset", tmp_path / "t.csv", "--likelihood", "gaussian", "--table-levels", "0", "3", "--out", out],
            ["table_levels applies to the mixed likelihood only"],
        ),
        ([*digits, "--encoder", "conv", "--conv-channels", "8"], ["conv_channels takes the channels of the 2 conv stages"]),
        (
            [*digits, "--prior", "vampprior", "--pseudo-init", "data", "--prior-components", "5000"],
            ["pseudo_init = data needs at least 5000 training images, got 1197"],
        ),
        ([*digits, "--model", "diffusion", "--binarize", "dynamic"], ["binarizing is for a bernoulli likelihood"]),
        (
            [*digits, "--model", "helmholtz", "--binarize", "none"],
            ["or choose a family of another likelihood (the helmholtz model's is bernoulli)"],
        ),
        ([*digits, "--model", "diffusion", "--gamma-min", "5", "--gamma-max", "4"], ["gamma_min (5.0) must be below"]),
        (
            [*digits, "--model", "vqvae", "--vq-levels", "2", "--downsample", "3"],
            ["two levels need a bottom grid with even sides", "gives 1x1"],
        ),
        (
            ["train", "--dataset", tmp_path / "rgb.npy", "--model", "arm", "--likelihood", "categorical", "--out", out],
            ["single-channel images, got shape (3, 8, 8)"],
        ),
        (["train", "--dataset", "nope", "--out", out], ["unknown dataset 'nope'"]),
        (["train", "--likelihood", "poisson", "--out", out], ["unknown likelihood 'poisson'"]),
        (
            ["train", "--dataset", "binarized-mnist", "--data-dir", empty, "--no-download", "--out", out],
            ["binarized_mnist_train.amat", str(empty)],
        ),
        (["train", "--dataset", tmp_path / "flat.npy", "--out", out], ["expected images shaped"]),
        (["train", "--dataset", tmp_path / "u8.npy", "--out", out], ["non-binary data", "bernoulli"]),
        (["train", "--dataset", tmp_path / "missing.npy", "--out", out], ["no such data file"]),
        (["train", "--dataset", "~no_such_user_of_dgm/x.npy", "--out", out], ["no such data file: ~no_such_user_of_dgm"]),
        (["train", "--config", tmp_path / "unknown.toml", "--out", out], ["latnet_dim", "did you mean 'latent_dim'"]),
        (["train", "--config", tmp_path / "broken.toml", "--out", out], ["not valid TOML"]),
        (["train", "--latent-dim", "0", "--out", out], ["latent_dim must be >= 1"]),
        (["train", "--resume", "--out", empty], ["nothing to resume"]),
        (["eval", corrupt], ["not a readable checkpoint"]),
        (["eval", foreign], ["not a dgmkit checkpoint"]),
        (["eval", tmp_path / "nowhere"], ["no run folder"]),
        (["eval", empty], ["holds no checkpoint"]),
        (["sample", foreign, "--out", tmp_path / "s.png"], ["not a dgmkit checkpoint"]),
    ]


def test_bad_input_fails_cleanly(tmp_path, capsys):
    for argv, needles in bad_inputs(tmp_path):
        code, _, err = run(capsys, *argv)
        assert_clean_failure(code, err, *needles)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_bad_output_paths_fail_cleanly(trained, tmp_path, capsys):
    code, _, err = run(capsys, "sample", trained, "--out", tmp_path / "x.jpg")
    assert_clean_failure(code, err, ".png")
    code, _, err = run(capsys, "sample", trained, "-n", "0", "--out", tmp_path / "x.png")
    assert_clean_failure(code, err, "-n must be in 1..")


def test_a_temperature_given_to_a_model_without_one_is_refused_at_1_too(trained, tmp_path, capsys):
    """--temperature 1 (its default) was ignored by a VAE without a word, where 0.5 was refused."""
    for given in ("1", "1.0", "0.5"):
        code, _, err = run(capsys, "sample", trained, "--temperature", given, "--out", tmp_path / "t.png")
        assert_clean_failure(code, err, "--temperature is for flows")
    assert not (tmp_path / "t.png").exists()


def test_data_flags_that_a_picture_or_an_array_of_samples_does_not_read_are_refused(trained, tmp_path, capsys):
    """dgm sample --out F.png (or .npy) --data/--schema/--data-dir: drawn without the data, the
    flags were ignored without a word (a table's rows, --out F.csv, read its columns)."""
    for flags, out in [(["--data", "x.npy"], "s.png"), (["--schema", "s.json"], "s.png"), (["--data-dir", "d"], "s.npy")]:
        code, _, err = run(capsys, "sample", trained, *flags, "--out", tmp_path / out)
        assert_clean_failure(code, err, f"{flags[0]}: dgm sample reads a run's data only for a table's columns")
        assert not (tmp_path / out).exists()


def test_full_disk_fails_cleanly_and_leaves_nothing(trained, tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = run(capsys, "sample", trained, "--out", tmp_path / "s.png")
    assert_clean_failure(code, err, "no space left")
    assert list(tmp_path.iterdir()) == []


def test_the_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "dgmkit.cli.main", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("dgmkit ")
    bad = subprocess.run([sys.executable, "-m", "dgmkit.cli.main", "eval"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("dgm: error: ") and bad.stderr.count("\n") == 1


def test_ppca_fits_in_closed_form_and_evaluates_exactly(tmp_path, capsys):
    out = tmp_path / "ppca"
    code, text, _ = run(
        capsys,
        "train",
        "--dataset",
        "digits",
        "--model",
        "ppca",
        "--latent-dim",
        "5",
        "--out",
        out,
    )
    assert code == 0 and "closed form" in text
    code, text, _ = run(capsys, "eval", out)
    assert code == 0 and "NLL (one-draw bound)" in text
    r = json.loads((out / "eval.json").read_text())
    assert r["estimate"] == "exact" and r["iw_samples"] == 0 and r["nll"] > 0
    assert r["elbo"] == pytest.approx(-r["nll"])  # the exact posterior makes the bound tight
    for command in ("sample", "reconstruct", "interpolate", "latents"):
        assert run(capsys, command, out, "--out", tmp_path / f"{command}.png")[0] == 0
    code, _, err = run(capsys, "train", "--dataset", "digits", "--model", "ppca", "--lr", "0.1", "--out", tmp_path / "x")
    assert_clean_failure(code, err, "fitted in closed form", "lr has no meaning")
    # nothing to resume (it said "replace: ... time_budget has no meaning for it", a key the user never gave)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run(capsys, "train", "--resume", "--out", out)
    assert_clean_failure(code, err, "nothing to resume: the ppca model is fitted in one go")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_cluster_names_each_datapoints_row_of_the_data_file(tmp_path, capsys):
    """cluster-assignments.csv's index is the place in the split, which a data file's split draws
    from its rows in a seeded order: file_row is the row of the file (a review matched index 0 of
    iris's test split to iris row 0; it was row 60)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    x = (rng.random((200, 4, 4)) < (0.2 + 0.3 * y[:, None, None])).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "r"
    argv = ["train", "--dataset", tmp_path / "d.npz", "--prior", "mog", "--prior-components", "3", "--hidden", "8"]
    assert run(capsys, *argv, "--latent-dim", "2", "--epochs", "1", "--quiet", "--out", out)[0] == 0
    code, text, _ = run(capsys, "cluster", out)
    assert code == 0 and "file_row: its row of" in text
    lines = (out / "cluster-assignments.csv").read_text().splitlines()
    table = np.array([list(map(int, r.split(","))) for r in lines[1:]])
    assert lines[0] == "index,label,component,file_row" and len(table) == 20
    assert table[:, 0].tolist() == list(range(20)) and table[:, 3].tolist() != list(range(20))  # (a seeded share)
    assert np.array_equal(table[:, 1], y[table[:, 3]])  # each label is that of its file row
    assert sorted(table[:, 3]) == sorted(set(table[:, 3])) and table[:, 3].max() < 200
    # a test split of one datapoint: no score of a clustering (accuracy and NMI came out 1.0), refused by name
    np.savez(tmp_path / "d12.npz", x=x[:12], y=y[:12])
    argv[2], out = tmp_path / "d12.npz", tmp_path / "r12"
    assert run(capsys, *argv, "--latent-dim", "2", "--epochs", "1", "--quiet", "--out", out)[0] == 0
    code, _, err = run(capsys, "cluster", out)
    assert code == 1 and "the test split holds 1 row; this needs at least 2" in err and not (out / "cluster.json").exists()


def test_cluster_with_a_mixture_prior(tmp_path, capsys, trained):
    out = tmp_path / "mog"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--prior",
        "mog",
        "--prior-components",
        "10",
        "--hidden",
        "64",
        "--latent-dim",
        "4",
        "--epochs",
        "3",
        "--quiet",
        "--out",
        out,
    ]
    assert run(capsys, *argv)[0] == 0
    code, text, _ = run(capsys, "cluster", out)
    assert code == 0 and "NMI" in text
    scores = json.loads((out / "cluster.json").read_text())
    assert 0.1 <= scores["accuracy"] <= 1 and 0 <= scores["nmi"] <= 1 and scores["n"] == 300
    assert scores["weights"] == load_run(out).weights_digest() and scores["checkpoint"] == "best.safetensors"
    rows = (out / "cluster-assignments.csv").read_text().splitlines()  # each datapoint's component
    assert rows[0] == "index,label,component,file_row" and len(rows) == 301
    assert all(r.endswith(",") for r in rows[1:])  # (the digits' splits are fixed: no file row)
    parts = [tuple(map(int, r.split(",")[:3])) for r in rows[1:]]
    assert [p[0] for p in parts] == list(range(300)) and all(0 <= p[2] < 10 for p in parts)
    assert len({p[2] for p in parts}) == scores["clusters_used"]
    assert run(capsys, "cluster", out)[0] == 0  # its own files are replaced; files of the same names of others are not
    (out / "cluster-assignments.csv").write_text("index,label,component\n0,1,2\n")  # as dgmkit wrote it before file_row
    assert run(capsys, "cluster", out)[0] == 0 and (out / "cluster-assignments.csv").read_text().startswith(
        "index,label,component,file_row\n"
    )
    mine_too = (
        ("cluster.json", '{"clusters_used": 3, "precious": true}'),  # the marker alone does not make it dgmkit's
        ("cluster-assignments.csv", "index,label,components_note,precious\n1,2,3,4\n"),  # nor the header's start
    )
    for name, mine in (("cluster.json", '{"mine": 1}'), ("cluster-assignments.csv", "my,notes\n"), *mine_too):
        kept = (out / name).read_bytes()
        (out / name).write_text(mine)
        code, _, err = run(capsys, "cluster", out)
        assert_clean_failure(code, err, f"{name} of dgmkit", "move it away")
        assert (out / name).read_text() == mine
        (out / name).write_bytes(kept)
    # two calls at once: each writes its pair (cluster.json, the assignments) under the results' lock
    import threading
    import time

    from dgmkit import _lock

    before = {n: (out / n).stat().st_mtime_ns for n in ("cluster.json", "cluster-assignments.csv")}
    test_rows = (out / "cluster-assignments.csv").read_text()
    held = _lock.acquire(out / ".cluster.lock", wait=True)
    codes: list[int] = []
    other = threading.Thread(target=lambda: codes.append(main(["cluster", str(out), "--split", "valid"])))
    other.start()
    time.sleep(4)  # (the clustering takes well under a second; then it waits)
    assert other.is_alive() and {n: (out / n).stat().st_mtime_ns for n in before} == before
    held.release()
    other.join(60)
    assert codes == [0] and json.loads((out / "cluster.json").read_text())["split"] == "valid"
    assert (out / "cluster-assignments.csv").read_text() != test_rows  # the valid split's rows, with the valid json
    code, _, err = run(capsys, "cluster", trained)
    assert_clean_failure(code, err, "--prior mog")


@pytest.mark.parametrize("objective", ["gumbel-softmax", "reinforce", "vimco"])
def test_categorical_latents_train_and_evaluate(tmp_path, capsys, objective):
    out = tmp_path / objective
    argv = [
        "train",
        "--dataset",
        "digits",
        "--model",
        "dvae",
        "--latent-dim",
        "4",
        "--latent-classes",
        "3",
        "--objective",
        objective,
        "--hidden",
        "32",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        out,
    ]
    assert run(capsys, *argv)[0] == 0
    assert run(capsys, "eval", out, "--iw-samples", "50")[0] == 0
    r = json.loads((out / "eval.json").read_text())
    assert r["elbo"] < 0 < r["nll"] and r["latent_dim"] == 4
    assert 0 <= r["kl"] <= 4 * np.log(3) + 1e-6  # KL to the uniform prior is at most V log K
    for command in ("sample", "interpolate", "latents"):
        assert run(capsys, command, out, "--out", tmp_path / f"{command}.png")[0] == 0
    # diagnose counts the 4 variables, as its active units and KL per dimension do (it said 12 dims: their classes)
    assert run(capsys, "diagnose", out, "--out", tmp_path / "d.png")[0] == 0
    layer = json.loads((out / "diagnose.json").read_text())["layers"][0]
    assert layer["size"] == len(layer["kl_per_dim"]) == len(layer["mean_variance"]) == 4 >= layer["active_units"]
    code, _, err = run(capsys, "traverse", out, "--out", tmp_path / "t.png")  # one-hot codes have no range to sweep
    assert_clean_failure(code, err, "latents are discrete")
    code, _, err = run(capsys, "train", "--dataset", "digits", "--objective", objective, "--out", tmp_path / "bad")
    assert_clean_failure(code, err, "unknown objective", "elbo, iwae")


def _interpolations_end_at_the_reconstructions(out):
    """The ends of an interpolation are the decoded codes of the two images that their
    reconstructions decode (a state of discrete latents: the Helmholtz machine's units on above
    1/2, the log-linear model's most probable state); they were the decoded probabilities."""
    import dgmkit

    x, recon = dgmkit.reconstruct(out, 4, seed=0)
    rows = dgmkit.interpolate(out, pairs=4, steps=3, seed=0)  # (the same seed: the same first images)
    assert torch.equal(rows[:, 0], x) and torch.allclose(rows[:, 1], recon, atol=1e-6)


@pytest.mark.parametrize("objective", ["wake-sleep", "rws"])
def test_helmholtz_machine_trains_and_evaluates(tmp_path, capsys, objective):
    out = tmp_path / objective
    argv = [
        "train",
        "--dataset",
        "digits",
        "--model",
        "helmholtz",
        "--objective",
        objective,
        "--layers",
        "16",
        "8",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        out,
    ]
    assert run(capsys, *argv)[0] == 0
    assert run(capsys, "eval", out, "--iw-samples", "50")[0] == 0
    r = json.loads((out / "eval.json").read_text())
    assert r["elbo"] < 0 < r["nll"] and r["latent_dim"] == 24 and r["nll"] <= -r["elbo"] + 0.5
    assert run(capsys, "sample", out, "--out", tmp_path / "s.png")[0] == 0
    _interpolations_end_at_the_reconstructions(out)
    code, _, err = run(capsys, "train", "--dataset", "digits", "--objective", objective, "--out", tmp_path / "bad")
    assert_clean_failure(code, err, "unknown objective", "elbo, iwae")


def test_loglinear_model_trains_by_em_and_evaluates_exactly(tmp_path, capsys):
    rng = np.random.default_rng(0)
    patches = (rng.random((300, 3, 3)) < np.linspace(0.1, 0.9, 9).reshape(3, 3)).astype(np.uint8)
    np.save(tmp_path / "patches.npy", patches)
    out = tmp_path / "ll"
    argv = [
        "train",
        "--dataset",
        tmp_path / "patches.npy",
        "--model",
        "loglinear",
        "--states",
        "3",
        "--em-iterations",
        "4",
        "--out",
        out,
    ]
    code, text, _ = run(capsys, *argv)
    assert code == 0 and sum(line.startswith("EM iteration") for line in text.splitlines()) == 4
    train = [json.loads(s)["train_log_px"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(b >= a - 1e-5 for a, b in zip(train, train[1:]))
    assert run(capsys, "eval", out)[0] == 0
    r = json.loads((out / "eval.json").read_text())
    assert r["estimate"] == "exact" and 0 < r["nll"] < 9 * np.log(2)
    _interpolations_end_at_the_reconstructions(out)
    code, _, err = run(capsys, "train", "--dataset", "digits", "--model", "loglinear", "--out", tmp_path / "x")
    assert_clean_failure(code, err, "needs binary data", "digits-4x4")
    big = (rng.random((300, 5, 5)) < 0.5).astype(np.uint8)
    np.save(tmp_path / "big.npy", big)
    code, _, err = run(capsys, "train", "--dataset", tmp_path / "big.npy", "--model", "loglinear", "--out", tmp_path / "y")
    assert_clean_failure(code, err, "too large")


def test_autoencoder_baseline_reports_no_density(tmp_path, capsys):
    out = tmp_path / "ae"
    code, text, _ = run(
        capsys,
        "train",
        "--dataset",
        "digits",
        "--model",
        "ae",
        "--latent-dim",
        "4",
        "--hidden",
        "32",
        "--epochs",
        "2",
        "--out",
        out,
    )
    assert code == 0 and "ELBO" not in text and "best validation log p(x|f(x))" in text
    code, text, _ = run(capsys, "eval", out)
    assert code == 0 and "NLL (" not in text and "no ELBO, NLL or bits/dim" in text
    r = json.loads((out / "eval.json").read_text())
    assert r["elbo"] is None and r["nll"] is None and r["bpd"] is None and r["recon"] < 0
    for command in ("reconstruct", "interpolate", "latents"):
        code, text, _ = run(capsys, command, out, "--out", tmp_path / f"{command}.png")
        assert code == 0
    # its codes: not "posterior means", nor "codes, codes"
    assert "a scatter of 300 codes z = f(x) of test datapoints (PCA of " in text
    assert "-D codes (" in text and "-D means" not in text  # (no means: z = f(x))
    code, _, err = run(capsys, "sample", out, "--out", tmp_path / "s.png")
    assert_clean_failure(code, err, "no prior")
    code, _, err = run(capsys, "sample", out, "--out", tmp_path / "s.npy")  # (was refused for its binarized data)
    assert_clean_failure(code, err, "no prior")
    assert "binarized" not in err


def test_beta_vae_weights_the_kl(tmp_path, capsys):
    out = tmp_path / "beta"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--beta",
        "4",
        "--latent-dim",
        "4",
        "--hidden",
        "32",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        out,
    ]
    assert run(capsys, *argv)[0] == 0
    m = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert m[-1]["beta"] == 4.0
    assert m[-1]["train_loss"] > -m[-1]["train_elbo"]  # beta > 1 adds (beta - 1) KL to the loss


def test_demo_runs_end_to_end(tmp_path, capsys):
    """The README's main job (a short version): train, evaluate and every figure."""
    code, out, err = run(capsys, "demo", "--out", tmp_path / "demo", "--epochs", "2", "--quiet")
    assert code == 0, err
    assert "NLL (k=5000)" in out  # the demo evaluates with k = 5000 (DEMO_IW_SAMPLES)
    for name in ("samples", "reconstructions", "interpolations", "latents"):
        assert (tmp_path / "demo" / f"{name}.png").read_bytes().startswith(PNG)


COMPUTING = [
    "train", "eval", "ood", "diagnose", "disentangle", "traverse", "sample", "reconstruct", "interpolate", "latents",
    "density", "impute", "cluster", "compress", "decompress", "report", "score", "demo",
]  # fmt: skip


@pytest.mark.parametrize("command", COMPUTING)
def test_every_command_that_computes_takes_a_device(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--device" in out and "cuda" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no CUDA device")
def test_demo_takes_its_device_to_training(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "1", "--device", "cuda", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("dgm: error:") == 1 and "no CUDA device" in err
    assert not (tmp_path / "demo" / "checkpoint.safetensors").exists()  # refused by training, not after it


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no CUDA device")
def test_eval_on_cuda_without_one_is_refused_in_one_line(trained, capsys):
    assert main(["eval", str(trained), "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err.count("dgm: error:") == 1 and "no CUDA device" in err


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--model", "vea"], ["unknown model 'vea'", "(did you mean 'vae'?)"]),
        (["--dataset", "digitz"], ["unknown dataset 'digitz'", "(did you mean 'digits'?)"]),
        (["--hidden", "256,128"], ["got '256,128'", "separated by spaces: 256 128"]),
        (["--hidden", "64, 64,"], ["separated by spaces: 64 64)"]),
    ],
)
def test_a_mistyped_name_or_list_gets_the_closest_name_or_the_form(tmp_path, capsys, argv, needles):
    code, _, err = run(capsys, "train", *argv, "--out", tmp_path / "r")
    assert code != 0 and err.startswith("dgm: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    assert not (tmp_path / "r").exists()


def test_a_cluster_json_of_a_perfect_match_is_dgmkits_own():
    """scikit-learn gives some perfect clusterings an NMI of 1 + 2e-16: dgm cluster's own file
    was then refused as foreign on the next run."""
    from dgmkit.cli.cluster import _result_problem

    mine = {"accuracy": 1.0, "accuracy_majority": 1.0, "nmi": 1.0000000000000002, "clusters_used": 7, "n": 14}
    assert _result_problem({**mine, "split": "test", "components": 10}) is None
    assert "nmi" in _result_problem({**mine, "nmi": 1.01, "split": "test"})
    assert "precious" in _result_problem({**mine, "precious": True, "split": "test"})


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--dataset", "digits", "--model", "m2", "--lables", "50"], "did you mean --labels? (see dgm train"),
        (["train", "--dataset", "digits", "--epoch", "3"], "--epoch 3; did you mean --epochs? (see dgm train --help)"),
        (["eval", "somewhere", "--iw-sample=5"], "--iw-sample=5; did you mean --iw-samples? (see dgm eval --help)"),
        (["eval", "somewhere", "--zzz"], "unrecognized arguments: --zzz (see dgm eval --help)"),
        (["--verbos", "eval", "somewhere"], "--verbos; did you mean --verbose? (see dgm --help)"),  # dgm's own flag
        # the names other libraries give: spelt nearer to another flag (--missing-rate, --lr-min)
        (["train", "--learning-rate", "0.01"], "--learning-rate 0.01; did you mean --lr? (see dgm train"),
        (["train", "--z-dim", "3"], "--z-dim 3; did you mean --latent-dim? (see dgm train"),
        (["train", "--model", "diffusion", "--scheduler", "cosine"], "did you mean --schedule? (see dgm train"),  # (its own)
    ],
    ids=["misspelt", "a-prefix", "with-equals", "unlike-any", "before-the-command", "learning-rate", "z-dim", "near-own"],
)
def test_a_flag_no_parser_takes_is_refused_by_its_command_with_the_nearest_flag(tmp_path, capsys, argv, needle):
    """A misspelt flag names the command's help and the flag it is closest to; a prefix of a flag
    is not taken for it (argparse's abbreviations would train --epoch 3 as --epochs 3)."""
    out = ["--out", tmp_path / "r"] if "train" in argv else []
    code, _, err = run(capsys, *argv, *out)
    assert code == 1 and err.startswith("dgm: error: unrecognized arguments: ") and needle in err, err
    assert not (tmp_path / "r").exists()


def test_a_training_interrupted_after_its_last_epoch_says_it_ended_or_what_resume_writes(tmp_path, capsys, monkeypatch):
    import shutil

    from dgmkit.training import Trainer

    out = tmp_path / "r"
    flags = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--quiet", "--out", out]
    assert run(capsys, "train", *flags, "--epochs", "1")[0] == 0
    saved = {p.name: p.read_bytes() for p in out.iterdir()}
    import dgmkit.cli.train as train_command

    def interrupted(*args, **kwargs):  # (as the folder was left: before the resume writes anything)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "train_run", interrupted)
    code, _, err = run(capsys, "train", "--resume", "--quiet", "--out", out)  # every epoch trained, every file written
    ended = "the run had ended after epoch 1, its files written: evaluate with: dgm eval"
    assert code == 130 and err == f"dgm: interrupted; {ended} {out}\n"
    (out / "best.safetensors").unlink()  # stopped between the last epoch's checkpoint and its best.safetensors
    code, _, err = run(capsys, "train", "--resume", "--quiet", "--out", out)
    assert code == 130 and err == (
        "dgm: interrupted; the run's last checkpoint (after epoch 1, its last) is kept: best.safetensors is written "
        f"again by: dgm train --resume --out {out}\n"
    )
    monkeypatch.undo()
    assert run(capsys, "train", "--resume", "--quiet", "--out", out)[0] == 0  # which it is
    from safetensors.torch import load, load_file

    rewritten, before = load_file(out / "best.safetensors"), load(saved["best.safetensors"])
    assert rewritten.keys() == before.keys() and all(torch.equal(rewritten[k], before[k]) for k in before)
    shutil.rmtree(out)
    assert run(capsys, "train", *flags, "--epochs", "1")[0] == 0  # a larger --epochs goes on: said as before
    monkeypatch.setattr(Trainer, "fit", interrupted)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "2", "--quiet", "--out", out)
    assert code == 130 and err.endswith(f"(after epoch 1) is kept: go on with: dgm train --resume --out {out}\n")
    monkeypatch.undo()
    real = train_command.train_run

    def paced(cfg, out, **kwargs):  # --train-for lowered the run's epochs (config.json's) below --epochs, then Ctrl-C
        real(cfg.resumed({"epochs": 1}), out, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "train_run", paced)
    code, _, err = run(capsys, "train", *flags[:-1], tmp_path / "paced", "--epochs", "3", "--train-for", "600")
    assert code == 130 and err == f"dgm: interrupted; {ended} {tmp_path / 'paced'}\n"


def test_a_training_interrupted_by_ctrl_c_says_what_it_keeps_and_how_to_go_on(tmp_path, capsys, monkeypatch):
    from dgmkit.training import Trainer

    out = tmp_path / "r"
    flags = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--quiet", "--out", out]
    assert run(capsys, "train", *flags, "--epochs", "1")[0] == 0

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", out)
    assert code == 130 and err == (
        f"dgm: interrupted; the run's last checkpoint (after epoch 1) is kept: go on with: dgm train --resume --out {out}\n"
    )
    code, _, err = run(capsys, "train", *flags[:-1], tmp_path / "fresh", "--epochs", "3")  # before a first checkpoint
    assert code == 130 and err == "dgm: interrupted\n" and not (tmp_path / "fresh").exists()
    import dgmkit.cli.train as train_command

    fit_em = train_command.fit_em

    def em_interrupted(*args, **kwargs):  # after its iterations' checkpoints: an EM fit is not resumed
        fit_em(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "fit_em", em_interrupted)
    em = tmp_path / "em"
    code, _, err = run(capsys, "train", "--dataset", "digits-4x4", "--model", "loglinear", "--em-iterations", "2",
                       "--quiet", "--out", em)  # fmt: skip
    assert code == 130 and err == "dgm: interrupted\n" and (em / "checkpoint.safetensors").is_file()
