"""--device for the figure and latent-space commands (sample, reconstruct, interpolate, latents,
density, disentangle, traverse): each takes it, computes on the CPU exactly as with the default
device on a machine without CUDA, and refuses a CUDA device where there is none in one line."""

import json

import pytest
import torch

from dgmkit.cli.main import main

PNG = b"\x89PNG\r\n\x1a\n"
COMMANDS = ["sample", "reconstruct", "interpolate", "latents", "density", "disentangle", "traverse"]


def _train(path, *argv):
    assert main(["train", *argv, "--epochs", "1", "--out", str(path), "--quiet"]) == 0
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs: a VAE on the embedded digits, a 2-D flow on two moons, a VAE on the sprites."""
    root = tmp_path_factory.mktemp("device_runs")
    return {
        "digits": _train(root / "digits", "--dataset", "digits", "--hidden", "32", "--latent-dim", "2"),
        "moons": _train(
            root / "moons",
            *("--model", "flow", "--flow", "realnvp", "--dataset", "two-moons"),
            *("--hidden", "16", "--flow-layers", "2", "--batch-size", "64"),
        ),
        "sprites": _train(
            root / "sprites", "--dataset", "sprites", "--hidden", "16", "--latent-dim", "3", "--batch-size", "512"
        ),
    }


# each command's arguments after the run folder (kept small), and the run it needs
ARGS = {
    "sample": ("digits", ["-n", "9"]),
    "reconstruct": ("digits", ["-n", "6"]),
    "interpolate": ("digits", ["--pairs", "2", "--steps", "4"]),
    "latents": ("digits", ["--limit", "300"]),
    "density": ("moons", ["--grid", "30", "-n", "50"]),
    "disentangle": ("sprites", ["--votes", "5", "--batch", "4"]),
    "traverse": ("sprites", ["--dims", "2", "--steps", "3"]),
}


def _output(command, runs, tmp_path, name, *device):
    """What the command leaves behind: the PNG's bytes, or disentangle.json without its timing."""
    which, extra = ARGS[command]
    run_dir = runs[which]
    out = [] if command == "disentangle" else ["--out", str(tmp_path / f"{name}.png")]
    assert main([command, str(run_dir), *out, *extra, *device]) == 0
    if command == "disentangle":
        result = json.loads((run_dir / "disentangle.json").read_text())
        result.pop("seconds")
        return json.dumps(result, sort_keys=True).encode()
    data = (tmp_path / f"{name}.png").read_bytes()
    assert data.startswith(PNG)
    return data


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_the_device_flag(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "--device" in text and "auto" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="the default device (auto) is CUDA here")
@pytest.mark.parametrize("command", COMMANDS)
def test_cpu_gives_the_same_output_as_the_default_device(command, runs, tmp_path, capsys):
    default = _output(command, runs, tmp_path, "default")
    cpu = _output(command, runs, tmp_path, "cpu", "--device", "cpu")
    capsys.readouterr()
    assert cpu == default


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto is CUDA here")
def test_auto_spelled_out_is_the_default(runs, tmp_path, capsys):
    assert _output("sample", runs, tmp_path, "auto", "--device", "auto") == _output("sample", runs, tmp_path, "default")
    capsys.readouterr()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.parametrize("command", COMMANDS)
def test_cuda_without_a_cuda_device_is_refused_in_one_line(command, runs, tmp_path, capsys):
    which, extra = ARGS[command]
    out = tmp_path / "never.png"
    argv = [command, str(runs[which]), *([] if command == "disentangle" else ["--out", str(out)]), *extra]
    assert main([*argv, "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dgm: error: ") and err.count("\n") == 1 and "no CUDA device" in err, err
    assert not out.exists()


def test_an_unknown_device_is_refused_in_one_line(runs, tmp_path, capsys):
    assert main(["sample", str(runs["digits"]), "--out", str(tmp_path / "s.png"), "--device", "tpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dgm: error: ") and err.count("\n") == 1 and "unknown device" in err, err
