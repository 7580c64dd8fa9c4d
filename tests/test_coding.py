"""Lossless compression: bit-exact round trips, a rate at the model's NLL, clean failures."""

import numpy as np
import pytest
import torch
from tests.test_cli import assert_clean_failure, run

from dgmkit.cli.main import main
from dgmkit.coding import decode_images, encode_images
from dgmkit.conditional import BernoulliHead, CategoricalHead
from dgmkit.errors import DataError
from dgmkit.models.autoregressive import CausalConvARM, GatedPixelCNN


@pytest.mark.parametrize("kind", [GatedPixelCNN, CausalConvARM])
def test_round_trip_is_bit_exact_and_the_rate_is_the_nll(kind):
    torch.manual_seed(0)
    model = kind(CategoricalHead(5), (1, 4, 4), channels=8, layers=3, input_scale=0.25).eval()
    x, _ = model.sample(300, generator=torch.Generator().manual_seed(1))  # data the model fits exactly
    x = x.long()
    words = encode_images(model, x, batch_size=128)
    back = decode_images(model, words, len(x), batch_size=128)
    assert torch.equal(back, x)
    with torch.no_grad():
        nll_bits = -model.log_prob(x).double().sum().item() / np.log(2)
    bits = 32 * len(words)
    assert nll_bits <= bits <= 1.01 * nll_bits + 64


@pytest.fixture(scope="module")
def coder_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("coding")
    for name, seed in (("a", "0"), ("b", "1")):
        argv = ["train", "--model", "arm", "--arm", "pixelcnn", "--dataset", "digits-4x4", "--channels", "8"]
        assert main([*argv, "--arm-layers", "3", "--epochs", "1", "--seed", seed, "--quiet", "--out", str(root / name)]) == 0
    from dgmkit.data import load_dataset

    x = load_dataset("digits-4x4").test.x[:, 0].numpy()  # (300, 4, 4) uint8 0/1
    np.save(root / "x.npy", x)
    return root


def test_cli_round_trip_and_clean_failures(coder_runs, capsys, tmp_path):
    r = coder_runs
    code, out, err = run(capsys, "compress", r / "a", r / "x.npy", "--out", tmp_path / "x.dgmz", "--batch-size", "100")
    assert code == 0, err
    assert "bits/dim" in out
    code, out, err = run(capsys, "decompress", tmp_path / "x.dgmz", "--run", r / "a", "--out", tmp_path / "back.npy")
    assert code == 0, err
    a, b = np.load(r / "x.npy"), np.load(tmp_path / "back.npy")
    assert a.dtype == b.dtype and np.array_equal(a, b)
    data = (tmp_path / "x.dgmz").read_bytes()
    bad = {
        "truncated": data[: len(data) // 2],
        "corrupted": data[:100] + bytes([data[100] ^ 1]) + data[101:],
        "not ours": b"PK\x03\x04" + data[4:],
    }
    for what, content in bad.items():
        (tmp_path / "bad.dgmz").write_bytes(content)
        code, _, err = run(capsys, "decompress", tmp_path / "bad.dgmz", "--run", r / "a", "--out", tmp_path / "o.npy")
        assert_clean_failure(
            code, err, {"truncated": "truncated", "corrupted": "corrupted", "not ours": "not a dgmkit"}[what]
        )
        assert not (tmp_path / "o.npy").exists()
    code, _, err = run(capsys, "decompress", tmp_path / "x.dgmz", "--run", r / "b", "--out", tmp_path / "o.npy")
    assert_clean_failure(code, err, "another model")
    assert not (tmp_path / "o.npy").exists()


def test_png_round_trip(coder_runs, capsys, tmp_path):
    from PIL import Image

    x = np.load(coder_runs / "x.npy")[:5].astype(bool)
    paths = []
    for i, img in enumerate(x):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    code, _, err = run(capsys, "compress", coder_runs / "a", *paths, "--out", tmp_path / "p.dgmz")
    assert code == 0, err
    code, out, err = run(capsys, "decompress", tmp_path / "p.dgmz", "--run", coder_runs / "a", "--out", tmp_path / "back")
    assert code == 0, err
    assert f"-> 5 PNG files in {tmp_path / 'back'}" in out
    for i, p in enumerate(paths):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "back" / p.name)) != 0, x[i])
    assert run(capsys, "compress", coder_runs / "a", paths[0], "--out", tmp_path / "one.dgmz")[0] == 0
    code, out, err = run(capsys, "decompress", tmp_path / "one.dgmz", "--run", coder_runs / "a", "--out", tmp_path / "one")
    assert code == 0, err
    assert "decompressed 1 image (" in out and f"-> 1 PNG file in {tmp_path / 'one'}" in out  # (was: "1 PNG files")


def test_bad_inputs_fail_cleanly(coder_runs, capsys, tmp_path):
    np.save(tmp_path / "big.npy", np.full((3, 4, 4), 7, dtype=np.uint8))
    np.save(tmp_path / "shape.npy", np.zeros((3, 5, 5), dtype=np.uint8))
    nan, half = np.zeros((3, 4, 4)), np.zeros((3, 4, 4))
    nan[0, 0, 0], half[1, 2, 3] = np.nan, 0.5
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "half.npy", half)
    np.save(tmp_path / "scalar.npy", np.array(1, dtype=np.uint8))
    np.save(tmp_path / "row.npy", np.zeros(16, dtype=np.uint8))
    for name, needle in (
        ("scalar.npy", "got an array of shape ()"),  # (was: an internal error, len() of a 0-d array)
        ("row.npy", "got an array of shape (16,)"),
        ("big.npy", "integer pixels 0..1; these values run from 7 to 7"),
        ("shape.npy", "shape.npy: rows of 25 values, but the run's data have rows of 16 (shape (1, 4, 4))"),
        ("nan.npy", "1 of these values are NaN or infinite"),  # (was: "these values run from nan to nan")
        ("half.npy", "not all integers (one is 0.5)"),
    ):
        code, _, err = run(capsys, "compress", coder_runs / "a", tmp_path / name, "--out", tmp_path / "o.dgmz")
        assert_clean_failure(code, err, needle)
        assert not (tmp_path / "o.dgmz").exists()


def test_bernoulli_model_codes_binary_images():
    torch.manual_seed(0)
    model = GatedPixelCNN(BernoulliHead(), (1, 3, 3), channels=8, layers=3).eval()
    x = torch.randint(0, 2, (50, 1, 3, 3))
    assert torch.equal(decode_images(model, encode_images(model, x, 20), 50, 20), x)


def _perturbed_arm(arm, likelihood):
    """A small ARM of 8x8 images with 17 levels (2 for bernoulli), its weights perturbed so
    that its conditionals differ from pixel to pixel and from image to image."""
    from dgmkit.config import RunConfig, build_model

    size = {"made_hidden": [48]} if arm == "made" else {"channels": 8, "arm_layers": 2}
    cfg = RunConfig.of(model="arm", arm=arm, likelihood=likelihood, dataset="digits", logistic_components=3, **size)
    levels = 2 if likelihood == "bernoulli" else 17
    model = build_model(cfg, (1, 8, 8), levels).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model, levels


@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical", "logistic"])
@pytest.mark.parametrize("arm", ["pixelcnn", "causal-conv", "made"])
def test_every_head_and_architecture_codes_at_its_nll(arm, likelihood):
    """The coded length is the model's NLL of the images, within the coder's overhead: a
    rate below the NLL means the coder used other probabilities than the model's (which a
    round trip cannot see, since encoder and decoder make the same mistake)."""
    model, levels = _perturbed_arm(arm, likelihood)
    x = torch.randint(0, levels, (50, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    words = encode_images(model, x, batch_size=20)  # three batches
    assert torch.equal(decode_images(model, words, len(x), batch_size=20), x)
    with torch.no_grad():
        nll_bits = -model.log_prob(x).double().sum().item() / np.log(2)
    bits = 32 * len(words)
    assert nll_bits - 1e-3 * nll_bits <= bits <= nll_bits * 1.002 + 96, (bits / x.numel(), nll_bits / x.numel())


def test_the_file_records_the_coding_device_and_decodes_only_on_that_kind(coder_runs, capsys, tmp_path):
    """Floating point differs between a CPU and a GPU, so the probabilities that drove the coder
    are reproduced only on the kind of device that computed them: the header says which, and
    decoding elsewhere is refused in one line; a file without the field (older) was coded on the CPU."""
    from dgmkit.coding import read_container, write_container

    r = coder_runs
    assert run(capsys, "compress", r / "a", r / "x.npy", "--out", tmp_path / "x.dgmz", "--device", "cpu")[0] == 0
    f = read_container((tmp_path / "x.dgmz").read_bytes(), "x.dgmz")
    assert f.header["device"] == "cpu"
    for name, header in (
        ("gpu.dgmz", {**f.header, "device": "cuda (NVIDIA H100 80GB HBM3)"}),
        ("old.dgmz", {k: v for k, v in f.header.items() if k != "device"}),
    ):
        (tmp_path / name).write_bytes(write_container(header, f.payload))
    for crafted in ("", " cpu", "mps", "CPU", "cpu\u202e", "cuda ()", "cuda (" + "x" * 151 + ")", 3):
        with pytest.raises(DataError, match="'device' must be"):
            write_container({**f.header, "device": crafted}, f.payload)  # the schema decompress applies
    code, _, err = run(capsys, "decompress", tmp_path / "gpu.dgmz", "--run", r / "a", "--out", tmp_path / "o.npy")
    assert_clean_failure(code, err, "decompress with --device cuda")
    assert not (tmp_path / "o.npy").exists()
    code, _, err = run(capsys, "decompress", tmp_path / "old.dgmz", "--run", r / "a", "--out", tmp_path / "o.npy")
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "o.npy"), np.load(r / "x.npy"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_round_trip_and_a_cpu_decode_of_it_refused(coder_runs, capsys, tmp_path):
    r = coder_runs
    assert run(capsys, "compress", r / "a", r / "x.npy", "--out", tmp_path / "x.dgmz", "--device", "cuda")[0] == 0
    code, _, err = run(capsys, "decompress", tmp_path / "x.dgmz", "--run", r / "a", "--out", tmp_path / "o.npy")
    assert_clean_failure(code, err, "decompress with --device cuda")
    args = ["decompress", tmp_path / "x.dgmz", "--run", r / "a", "--out", tmp_path / "o.npy", "--device", "cuda"]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "o.npy"), np.load(r / "x.npy"))


def test_a_float_negative_zero_round_trips_and_1_bit_pngs_need_a_binary_model(coder_runs, capsys, tmp_path):
    """np.round of small negative floats gives -0.0: its file decodes (to 0.0, the same values and
    dtype), where the checksum of the raw bytes refused it as damaged. 1-bit PNG images are refused
    by a model of more than 2 levels before any coding, with what to give instead."""
    from PIL import Image

    x = np.load(coder_runs / "x.npy")[:20].astype(np.float64)
    x[x == 0] = -0.0
    assert np.signbit(x).any()
    np.save(tmp_path / "f.npy", x)
    code, _, err = run(capsys, "compress", coder_runs / "a", tmp_path / "f.npy", "--out", tmp_path / "f.dgmz")
    assert code == 0, err
    code, _, err = run(capsys, "decompress", tmp_path / "f.dgmz", "--run", coder_runs / "a", "--out", tmp_path / "b.npy")
    assert code == 0, err
    back = np.load(tmp_path / "b.npy")
    assert back.dtype == x.dtype and np.array_equal(back, x) and not np.signbit(back).any()

    multi = tmp_path / "arm17"
    argv = ["train", "--model", "arm", "--arm", "pixelcnn", "--dataset", "digits", "--channels", "8", "--arm-layers", "2"]
    assert main([*argv, "--likelihood", "categorical", "--epochs", "1", "--quiet", "--out", str(multi)]) == 0
    paths = []
    for i in range(2):
        Image.fromarray(np.eye(8, dtype=bool)).save(tmp_path / f"b{i}.png")
        paths.append(tmp_path / f"b{i}.png")
    code, _, err = run(capsys, "compress", multi, *paths, "--out", tmp_path / "p.dgmz")
    assert_clean_failure(code, err, "1-bit PNG images are black and white")
    assert "8-bit grey" in err and "header" not in err and not (tmp_path / "p.dgmz").exists()
    np.save(tmp_path / "b.npy", np.stack([np.eye(8, dtype=bool)] * 2))  # booleans alike (True was coded as level 1)
    code, _, err = run(capsys, "compress", multi, tmp_path / "b.npy", "--out", tmp_path / "p.dgmz")
    assert_clean_failure(code, err, "holds booleans, black and white images")
    assert not (tmp_path / "p.dgmz").exists()
    np.save(tmp_path / "b.npy", np.load(coder_runs / "x.npy")[:5].astype(bool))  # for a binary model: coded
    code, _, err = run(capsys, "compress", coder_runs / "a", tmp_path / "b.npy", "--out", tmp_path / "b.dgmz")
    assert code == 0, err


def test_a_model_that_generates_in_another_pixel_order_round_trips_at_its_nll():
    """MADE with a random pixel order: the coder must code each step's pixel (order[t]), not the t-th."""
    from dgmkit.models.autoregressive import MADEARM

    torch.manual_seed(0)
    model = MADEARM(CategoricalHead(5), (1, 4, 4), hidden=[32], random_order=True, seed=3).eval()
    assert not torch.equal(model.order(), torch.arange(16))
    x, _ = model.sample(200, generator=torch.Generator().manual_seed(1))
    x = x.long()
    words = encode_images(model, x, batch_size=64)
    assert torch.equal(decode_images(model, words, len(x), batch_size=64), x)
    with torch.no_grad():
        nll_bits = -model.log_prob(x).double().sum().item() / np.log(2)
    assert nll_bits <= 32 * len(words) <= 1.01 * nll_bits + 64


def test_compress_prints_the_files_own_size_and_bits_per_dim(coder_runs, capsys, tmp_path):
    """The printed rate is 8 x the file's bytes over the images' pixels (the suite only looked for
    the words "bits/dim": bytes/dim, 8 times too small, passed)."""
    import re

    out_file, r = tmp_path / "x.dgmz", coder_runs
    code, out, err = run(capsys, "compress", r / "a", r / "x.npy", "--out", out_file, "--batch-size", "100")
    assert code == 0, err
    said = re.search(r"to (\d+) bytes: ([0-9.]+) bits/dim", out)
    assert said is not None, out
    size = out_file.stat().st_size
    assert int(said.group(1)) == size
    assert float(said.group(2)) == pytest.approx(8 * size / (300 * 16), abs=5e-5)


def test_an_image_outside_the_models_levels_is_named():
    """A value outside the levels, NaN or not an integer: the error names the first image that
    holds one (its index in a .npy array, its file among PNGs), not only the range of all."""
    from dgmkit.cli.compress import _to_model_input

    x = np.zeros((5, 4, 4), dtype=np.int16)
    x[3, 2, 1], x[4, 0, 0] = 17, -1
    with pytest.raises(DataError, match=r"run from -1 to 17: image 3 \(counting from 0\) holds 17, outside"):
        _to_model_input(x, (1, 4, 4), 17)
    names = [f"d{i}.png" for i in range(5)]
    with pytest.raises(DataError, match="d3.png holds 17, outside"):
        _to_model_input(x, (1, 4, 4), 17, names)
    f = np.zeros((5, 4, 4))
    f[2, 3, 3] = np.nan
    with pytest.raises(DataError, match=r"1 of these values are NaN or infinite, the first in image 2 \("):
        _to_model_input(f, (1, 4, 4), 17)
    f[2, 3, 3], f[1, 0, 0] = 0.5, 1.5
    with pytest.raises(DataError, match=r"not all integers \(one is 1.5\), the first in image 1 \("):
        _to_model_input(f, (1, 4, 4), 17)
    assert torch.equal(_to_model_input(np.ones((2, 4, 4), dtype=np.uint8), (1, 4, 4), 2), torch.ones(2, 1, 4, 4).long())
