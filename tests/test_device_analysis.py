"""--device on the commands that analyse a trained model: diagnose, cluster, impute, ood and report.

Each command takes --device auto|cpu|cuda; on this CPU-only machine --device cpu gives exactly
what the default (auto) gives, and --device cuda is refused in one line where there is no CUDA."""

import json

import numpy as np
import pytest
import torch

from dgm_cli import dgm as _dgm
from dgmkit.cli.main import main

COMMANDS = ["diagnose", "cluster", "impute", "ood", "report"]
_TINY = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A VAE with a mixture prior (diagnose, cluster, ood, report), a MIWAE run on incomplete
    digits (impute; the background of ood) and OOD noise of the digits' 17 levels."""
    root = tmp_path_factory.mktemp("device")
    mog = ["train", *_TINY, "--prior", "mog", "--prior-components", "4", "--out", root / "mog"]
    assert main([str(a) for a in mog]) == 0
    miwae = ["train", *_TINY, "--objective", "miwae", "--missing-rate", "0.25", "--out", root / "miwae"]
    assert main([str(a) for a in miwae]) == 0
    np.save(root / "noise.npy", np.random.default_rng(0).integers(0, 17, size=(200, 8, 8)))
    return root


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_the_device_flag(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--device" in out and "auto" in out


def _argv(command, runs, out, device):
    """The command on the tiny runs, writing to the folder ``out``, with ``--device`` (None: the default)."""
    flag = [] if device is None else ["--device", device]
    if command == "diagnose":
        return ["diagnose", runs / "mog", "--out", out / "d.png", "-n", "100", "--holes", "50", *flag]
    if command == "cluster":
        return ["cluster", runs / "mog", *flag]
    if command == "impute":
        # (no --draws: a bernoulli model of binarized digits draws binary pixels, and refuses them)
        return ["impute", runs / "miwae", "--out", out / "i.npz", "--k", "20", "--limit", "40",
                "--baselines", "mean", "--figure", out / "f.png", *flag]  # fmt: skip
    if command == "ood":
        return ["ood", runs / "mog", "--ood", runs / "noise.npy", "--background", runs / "miwae", "--iw-samples", "5",
                "--limit", "40", "--fit-limit", "60", "--typicality-batch", "5", "--json", out / "o.json",
                "--out", out / "o.png", *flag]  # fmt: skip
    return ["report", runs / "mog", "--out", out / "r.html", "--samples", "4", *flag]


def _result(command, runs, out):
    """What the command left: its files (JSON without the timing, arrays, PNG and HTML bytes)."""
    if command == "diagnose":
        d = json.loads((runs / "mog" / "diagnose.json").read_text())
        d.pop("seconds")
        return d, (out / "d.png").read_bytes()
    if command == "cluster":
        return json.loads((runs / "mog" / "cluster.json").read_text())
    if command == "impute":
        z = np.load(out / "i.npz")
        arrays = {k: z[k] for k in z.files}
        return json.loads((runs / "miwae" / "impute.json").read_text()), arrays, (out / "f.png").read_bytes()
    if command == "ood":
        r = json.loads((out / "o.json").read_text())
        r.pop("seconds")
        return r, (out / "o.png").read_bytes()
    return (out / "r.html").read_bytes()


def _same(a, b):
    if isinstance(a, dict) and a and all(isinstance(v, np.ndarray) for v in a.values()):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
    elif isinstance(a, tuple):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _same(u, v)
    else:
        assert a == b


@pytest.mark.parametrize("command", COMMANDS)
def test_device_cpu_gives_what_the_default_gives(command, runs, tmp_path, capsys):
    results = []
    for device in (None, "cpu"):
        out = tmp_path / (device or "default")
        out.mkdir()
        code, text, err = _dgm(capsys, *_argv(command, runs, out, device))
        assert code == 0, err
        results.append(_result(command, runs, out))
    _same(*results)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.parametrize("command", COMMANDS)
def test_device_cuda_without_cuda_is_refused_in_one_line(command, runs, tmp_path, capsys):
    code, out, err = _dgm(capsys, *_argv(command, runs, tmp_path, "cuda"))
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("dgm: error: ") and "no CUDA device" in err, err
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())  # refused before anything was written
