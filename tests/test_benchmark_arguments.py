"""The benchmark scripts' arguments: a count of rounds, steps or images below 1, a missing or
extra run folder, -h, an unknown model or contender, a folder that holds no run: each refused
in words with a usage line or dgmkit's message, never a traceback (a review found a
StatisticsError after 100 s of warm-up, KeyError, IndexError and CheckpointError tracebacks)."""

import argparse
import os
import subprocess
import sys

import pytest
import torch

from benchmark_scripts import BENCHMARKS, load

common = load("_common")
GPU_SPEED = "gpu_speed.py --models tiny-vae --steps 1 --k 0 --no-compile".split()  # (the least it times, if not refused)


def test_a_count_is_a_whole_number_of_at_least_one():
    assert common.count("3") == 3
    for text, needle in [("0", "must be >= 1, got 0"), ("-2", "must be >= 1, got -2"), ("2.5", "'2.5' is not a whole")]:
        with pytest.raises(argparse.ArgumentTypeError, match=needle):
            common.count(text)


def test_the_one_argument_of_a_script(monkeypatch, capsys):
    doc = "What it does.\n\n    python benchmarks/x.py RUN_DIR   # a run\n"
    for argv, default, expected in [(["RUN"], None, "RUN"), ([], "runs/a", "runs/a"), (["RUN"], "runs/a", "RUN")]:
        monkeypatch.setattr(sys, "argv", ["x.py", *argv])
        assert common.the_argument(doc, default) == expected
    for argv in ([], ["a", "b"], ["--steps"]):
        monkeypatch.setattr(sys, "argv", ["x.py", *argv])
        with pytest.raises(SystemExit, match=r"^usage: python benchmarks/x\.py RUN_DIR   # a run$"):
            common.the_argument(doc)
    monkeypatch.setattr(sys, "argv", ["x.py", "--help"])
    with pytest.raises(SystemExit) as e:
        common.the_argument(doc)
    assert e.value.code == 0 and capsys.readouterr().out == doc + "\n"


def test_a_script_without_arguments_refuses_any_and_shows_its_help(monkeypatch, capsys):
    doc = "What it does.\n\n    python benchmarks/x.py\n"
    monkeypatch.setattr(sys, "argv", ["x.py"])
    assert common.no_arguments(doc) is None
    for argv in (["--epochs", "2"], ["runs/a"]):
        monkeypatch.setattr(sys, "argv", ["x.py", *argv])
        with pytest.raises(SystemExit, match=r"^usage: python benchmarks/x\.py  \(no arguments, got "):
            common.no_arguments(doc)
    monkeypatch.setattr(sys, "argv", ["x.py", "-h"])
    with pytest.raises(SystemExit) as e:
        common.no_arguments(doc)
    assert e.value.code == 0 and capsys.readouterr().out == doc + "\n"


def test_a_folder_without_a_run_stops_the_script_in_dgmkits_words(tmp_path):
    with pytest.raises(SystemExit, match=f"^{tmp_path}/none: no run folder at "):
        common.run_of(str(tmp_path / "none"))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train_speed.py", "--rounds", "0"], "argument --rounds: must be >= 1, got 0"),
        (["gpu_speed.py", "--models", "foo"], "--models: foo not among gated-vae"),
        (["gpu_speed.py", "--contenders", "dgmkit,plain"], "--contenders: plain not among plain eager"),
        (["compression.py"], "usage: python benchmarks/compression.py RUN_DIR"),
        (["imputation.py", "--out", "x", "--masks", "0"], "argument --masks: must be >= 1, got 0"),
        # scripts without flags: a flag given is refused, not ignored while the whole benchmark runs
        (["made_reference.py", "--epochs", "2"], "usage: python benchmarks/made_reference.py"),
        (["flow_speed.py", "--steps", "5"], "usage: python benchmarks/flow_speed.py"),
        (["imputation.py", "--out", "x", "--tables", "--no-mnist"], "nothing to run: no --tables and --no-mnist"),
        (["moonshot_curve.py", "/nonexistent/moon"], "/nonexistent/moon: no curve/points.jsonl"),
        (["hvae_speed.py", "--quick", "--synthetic", "--warmup", "-1"], "--warmup must be >= 0 epochs, got -1.0"),
        (["deep_hvae_throughput.py", "--config", "/nonexistent/x.toml"], "cannot read config file /nonexistent/x.toml"),
        (["representations.py", "--out", "x", "--only", "VAE", "nosuch"], "argument --only: invalid choice: 'nosuch'"),
        # each contender failed on it in turn (--precision), or a traceback (--set, --device cuda without one)
        ([*GPU_SPEED, "--precision", "foo"], "tiny-vae: unknown precision 'foo'; choose from auto"),
        ([*GPU_SPEED, "--set", "nosuch=1"], "tiny-vae: binarized-mnist-vae.toml with --set: unknown key(s) 'nosuch'"),
        ([*GPU_SPEED, "--set", "lr=-1"], "tiny-vae: lr must be > 0, got -1"),
        pytest.param(
            [*GPU_SPEED, "--device", "cuda"],
            "--device cuda was asked for, but no CUDA device is available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="refused where no CUDA device is"),
        ),
        # one process against one, printed as "1 processes ... through shared memory ... through gloo"
        (["ddp_scaling.py", "--nproc", "1"], "argument --nproc: data-parallel runs need 2 or more processes, got 1"),
    ],
)
def test_scripts_refuse_bad_arguments_before_any_work(args, needle):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / args[0]), *args[1:]], capture_output=True, text=True, timeout=120
    )
    assert done.returncode in (1, 2) and needle in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("script", ["made_reference.py", "flow_speed.py"])
def test_help_of_a_script_without_flags_is_its_docstring_not_a_run(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and f"python benchmarks/{script}" in done.stdout
    assert "threads" not in done.stdout  # (what machine() prints when the benchmark starts)


@pytest.mark.parametrize(
    "args, data",
    [
        (["train_speed.py", "--rounds", "1"], "binarized-mnist"),
        (["eval_speed.py", "--n", "1"], "binarized-mnist"),
        (["made_reference.py"], "binarized-mnist"),
        (["flow_speed.py"], "mnist"),
        ("gpu_speed.py --device cpu --models gated-vae --steps 1 --k 0 --no-compile".split(), "gated-vae"),
        (["ddp_ceiling.py", "--models", "vae", "--rounds", "1"], "binarized-mnist"),  # (each worker's traceback)
    ],
)
def test_a_data_folder_without_the_data_is_said_in_words(args, data, tmp_path):
    """$DGMKIT_DATA naming a folder without the files: dgmkit's message, not a DataError traceback."""
    env = {**os.environ, "DGMKIT_DATA": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / args[0]), *args[1:]], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith(f"{data}: missing data file ") or f"\n{data}: missing data file " in done.stderr


def test_diffusion_sampling_labels_a_run_by_its_own_process_not_its_place(tmp_path):
    """A masked run given alone (where the VDM run goes) was timed and printed as "gaussian
    diffusion"; a folder without a run was a CheckpointError traceback, a third run ignored."""
    import dgmkit

    masked = tmp_path / "masked"
    dgmkit.train(masked, dataset="digits", model="diffusion", process="masked", unet_channels=[8], unet_blocks=1,
                 attention=False, epochs=1, seed=0)  # fmt: skip
    script = str(BENCHMARKS / "diffusion_sampling.py")
    for args, needle in [
        ([str(masked), "--n", "1", "--steps", "1"], f"{masked} is a masked diffusion run, given where the gaussian"),
        ([str(tmp_path / "none")], f"{tmp_path / 'none'}: no run folder at "),
        (["a", "b", "c"], "at most two run folders"),
    ]:
        done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode in (1, 2) and needle in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert "images/s" not in done.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--mutation-rate", "2"], "mutation_rate must be <= 1, got 2.0"),
        (["--weight-decay", "-1"], "weight_decay must be >= 0, got -1.0"),
        (["--device", "foo"], "unknown device 'foo'"),
        (["--taken"], "is not a new or empty folder"),
    ],
)
def test_ood_refuses_what_a_later_step_would_refuse_before_the_first_trains(args, needle, tmp_path):
    """benchmarks/ood.py trains the model, then the background model, then scores: a value that
    only the background's training refused (--mutation-rate 2) came after the first model's
    minutes of training."""
    if args == ["--taken"]:
        (tmp_path / "out" / "fashion-background").mkdir(parents=True)
        (tmp_path / "out" / "fashion-background" / "x").write_text("")
        args = []
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "ood.py"), str(tmp_path / "out"), "--epochs", "1", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and needle in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "out" / "fashion").exists() and "# the model:" not in done.stdout


def test_paper_curves_says_the_k_and_split_of_each_evaluation(tmp_path):
    """Its table's header said "test NLL (k=5000)" whatever k `dgm eval` was given, and quoted a
    validation split's eval.json as the test numbers."""
    import json

    for row, ev in [("standard", {"split": "test", "iw_samples": 100, "n": 10000}), ("vampprior", {"split": "valid"})]:
        run = tmp_path / "runs" / f"paper-{row}"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "valid_elbo": -100.0, "time_s": 10.0}) + "\n")
        (run / "eval.json").write_text(json.dumps({**ev, "elbo": -95.0, "nll": 90.0, "nll_stderr": 0.5}))
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "paper_curves.py"), "--runs", str(tmp_path / "runs"), "--out",
         str(tmp_path / "curves.png")], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "k=5000" not in done.stdout and "| 95.00 | 90.00 +- 0.50 (k=100) |" in done.stdout
    vamp = next(line for line in done.stdout.splitlines() if line.startswith("| vampprior |"))
    assert "90.00" not in vamp and "valid split" in vamp


def test_semisupervised_table_refuses_a_validation_evaluation_as_its_test_error(tmp_path):
    import json

    run = tmp_path / "m2-100"
    run.mkdir()
    (run / "eval.json").write_text(json.dumps({"split": "valid", "nll": 90.0, "iw_samples": 100, "accuracy": 0.9}))
    (run / "config.json").write_text(json.dumps({"config": {"data": {"labels": 100}}}))
    (run / "metrics.jsonl").write_text("{}\n")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "semisupervised.py"), str(run)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "its eval.json is of the valid split" in done.stderr, done.stdout + done.stderr


def test_semisupervised_digits_says_a_taken_run_folder_in_words(tmp_path):
    (tmp_path / "m2-s0").mkdir()
    (tmp_path / "m2-s0" / "notes.txt").write_text("mine")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "semisupervised_digits.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{tmp_path / 'm2-s0'} is not empty" in done.stderr and f"give another folder than {tmp_path}" in done.stderr
    assert (tmp_path / "m2-s0" / "notes.txt").read_text() == "mine"


def test_semisupervised_digits_says_another_folder_only_where_the_folder_is_taken(tmp_path, monkeypatch):
    """Every refusal or failure of a training was told "give another folder than OUT", a new folder's too."""
    from dgmkit.errors import DgmError

    script = load("semisupervised_digits")

    def failed(folder, **settings):
        raise DgmError("the loss is NaN at epoch 3")

    monkeypatch.setattr(script.dgmkit, "train", failed)
    with pytest.raises(SystemExit) as e:
        script.main(str(tmp_path / "new"))
    assert str(e.value) == "the loss is NaN at epoch 3"


def test_gpu_speed_says_how_many_images_its_nll_was_timed_on(data_dir):
    """--eval-images above the test split's 10000 scored the 10000 and printed the number asked for."""
    args = "--device cpu --models tiny-vae --contenders dgmkit --steps 1 --no-compile --k 1 --eval-images 20000".split()
    env = {**os.environ, "DGMKIT_DATA": str(data_dir), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_speed.py"), *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "IS-NLL k=1 on 10000 test images" in done.stdout and "20000" not in done.stdout, done.stdout


@pytest.mark.parametrize(
    "epochs, said", [(1, "of the one epoch, its warm-up included"), (3, "the median of the epochs after")]
)
def test_ddp_scaling_says_which_epochs_its_speeds_are_of(epochs, said, monkeypatch, capsys):
    """Its images/s are the median of the epochs after the first; with --epochs 1 they were the
    first epoch's, warm-up included, printed as the others."""
    script = load("ddp_scaling")
    monkeypatch.setattr(script, "_run", lambda *a, **k: {"images_per_s": 100.0, "score": "-1.00", "name": "valid_elbo"})
    monkeypatch.setattr(sys, "argv", ["ddp_scaling.py", "--epochs", str(epochs), "--models", "vae"])
    script.main()
    header = capsys.readouterr().out.splitlines()[0]
    assert f"{epochs} epochs each; images/s: {said}" in header, header


def _script(name: str, *args: object) -> subprocess.CompletedProcess:
    """benchmarks/NAME run with ARGS, its output captured (a refusal is made before any work: 2 minutes at most)."""
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *map(str, args)], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A VAE run of the digits, binarized on the fly: a run that the scripts for other models are given."""
    import dgmkit

    run = tmp_path_factory.mktemp("runs") / "vae"
    dgmkit.train(run, dataset="digits", hidden=[8], latent_dim=2, epochs=1, seed=0)
    return run


@pytest.mark.parametrize(
    "script, said",
    [
        ("arm_sampling.py", "not an autoregressive model (a --model arm run)"),  # ('VAE' object has no attribute 'num_dims')
        ("bitsback_costs.py", "not a hierarchical VAE (--model hvae)"),  # (... no attribute 'num_layers')
        ("masked_estimator_variance.py", "not a masked diffusion model"),  # (... no attribute 'bound_terms')
        ("any_order_digits.py", "not a masked diffusion model"),  # (... no attribute 'num_levels')
    ],
)
def test_a_script_for_another_model_refuses_a_vae_s_run_in_words(vae_run, script, said):
    """A VAE's run given to a script for another kind of model was an AttributeError traceback."""
    done = _script(script, vae_run)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{vae_run} holds a VAE (" in done.stderr and said in done.stderr


def test_diffusion_sampling_names_a_run_of_another_model_once(vae_run):
    """It said "... is a a VAE (...)": the model's own description already begins with its article."""
    done = _script("diffusion_sampling.py", vae_run)
    assert done.returncode == 1 and f"{vae_run} is a VAE (" in done.stderr, done.stderr[-2000:]
    assert "a a " not in done.stderr and "given where the gaussian diffusion run goes" in done.stderr


def test_compression_refuses_a_run_binarized_on_the_fly_in_words(vae_run):
    """A run that codes black and white images was given the data set's 17-level test images: a
    DataError traceback after the model was loaded."""
    done = _script("compression.py", vae_run)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{vae_run}'s model codes pixels of 2 levels and the test images of digits have 17" in done.stderr


def test_deep_hvae_throughput_refuses_a_preset_of_another_model_in_words(tmp_path):
    """A VAE's preset was an AttributeError traceback ('VAE' object has no attribute 'num_layers')."""
    preset = tmp_path / "vae.toml"
    preset.write_text('model = "vae"\ndataset = "digits"\nhidden = [8]\nbatch_size = 16\n')
    args = ["--config", str(preset), "--steps", "1", "--rounds", "1", "--k", "1", "--eval-n", "1"]
    done = _script("deep_hvae_throughput.py", *args)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{preset} builds a VAE (" in done.stderr and 'not a hierarchical VAE (model = "hvae")' in done.stderr


def test_deep_hvae_throughput_says_the_steps_a_round_took(tmp_path):
    """--steps beyond the training split's batches were printed as the steps of each round."""
    preset = tmp_path / "hvae.toml"
    preset.write_text('model = "hvae"\ndataset = "digits"\nhidden = [8]\nbatch_size = 600\n')  # (1197 images: 2 steps)
    args = ["--config", str(preset), "--steps", "5", "--rounds", "1", "--k", "1", "--eval-n", "1"]
    # a data folder, even one without files: the preset's digits, not the random images used without one
    env = {**os.environ, "DGMKIT_DATA": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "deep_hvae_throughput.py"), *args], capture_output=True, text=True, timeout=300,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "median of 1 rounds of 2 steps)" in done.stdout and "of 5 steps" not in done.stdout, done.stdout
    assert "# --steps 5: the training split holds 1197 images; a round trains on them all" in done.stdout


def test_paper_curves_without_a_run_writes_no_figure(tmp_path):
    """Where --runs held no paper-* run (a fresh clone's default "runs" is absent) it wrote an empty plot over the
    figure at --out (docs/paper-curves.png, a tracked file); it now says so and writes nothing."""
    out = tmp_path / "curves.png"
    out.write_bytes(b"the figure of earlier runs")
    for runs in (tmp_path / "absent", tmp_path):
        done = subprocess.run(
            [sys.executable, str(BENCHMARKS / "paper_curves.py"), "--runs", str(runs), "--out", str(out)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 1 and f"no paper-* run in {runs}" in done.stderr, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and out.read_bytes() == b"the figure of earlier runs"
