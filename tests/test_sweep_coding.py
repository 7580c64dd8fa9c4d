"""What a mutation sweep of lossless compression (coding/container.py, bitsback.py, arm_coder.py)
found unchecked: the limits a header's fields may reach, exactly (and that write_container, which
wrote files beyond the reader's size limits, now refuses them), the fingerprint's parts, which
characters a header's text may hold, the file's layout byte by byte, a bits-back file pinned (its
latent grid is part of the format), the latents and priors bits-back coding refuses by name, and
the bits that the stacks, batches and payload bound count."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from tests.test_safety_coding import base_header, raw_container
from torch import nn
from torch.distributions import Distribution, Independent, Normal, OneHotCategorical

from dgmkit.coding import CODERS, bitsback, decode_bits_back, decode_images, encode_bits_back, encode_images
from dgmkit.coding.arm_coder import pmf_rows, sequential_nll
from dgmkit.coding.bitsback import check_bits_back, next_batch, seed_words
from dgmkit.coding.container import (
    MAGIC,
    MAX_BATCH_PIXELS,
    MAX_DECODED_BYTES,
    MAX_FILE_BYTES,
    MAX_HEADER_BYTES,
    check_against_model,
    check_coding_device,
    check_header,
    content_digest,
    model_fingerprint,
    read_container,
    write_container,
)
from dgmkit.conditional import BernoulliHead, CategoricalEncoder, CategoricalHead, Decoder, GaussianEncoder
from dgmkit.distributions import DiagonalGaussianMixture
from dgmkit.errors import ConfigError, DataError
from dgmkit.models import VAE
from dgmkit.models.autoregressive import GatedPixelCNN
from dgmkit.models.categorical_vae import CategoricalVAE
from dgmkit.nn import MLP
from dgmkit.priors import MixtureOfGaussiansPrior, StandardNormalPrior, UniformCategoricalPrior
from dgmkit.priors.base import Prior

M = 4


def _read(header: dict, payload: bytes = b"") -> dict:
    return read_container(raw_container(json.dumps(header).encode(), payload), "f.dgmz").header


# -- container.py: limits ----------------------------------------------------------------------


def test_the_largest_file_a_header_may_declare_fits_the_file_size_a_reader_accepts():
    """The most pixels a header declares (MAX_DECODED_BYTES // 8, int64 while decoding), at 32 bits
    a pixel (the range coder writes at most 24), and the largest header fit in a file that
    read_container accepts (container.py's design; write_container refuses what goes beyond)."""
    largest = (MAX_DECODED_BYTES // 8) * 4 + MAX_HEADER_BYTES + 4 + 6 + 8 + 32
    assert largest <= MAX_FILE_BYTES


def test_a_header_of_ten_thousand_long_png_names_is_read():
    """A folder of 10,000 PNG files of 200-character names makes a 2 MB header: one a reader takes."""
    names = [f"{i:05d}{'x' * 191}.png" for i in range(10_000)]
    header = base_header("png") | {"shape": [len(names), 4, 4], "names": names}
    head = json.dumps(header).encode()
    assert len(head) > 2_000_000
    assert read_container(raw_container(head)).header["names"] == names


def test_images_of_65536_levels_are_the_most_a_header_declares():
    """16-bit images (uint16 arrays, 65536 levels) are codable; one level more is refused."""
    assert _read(base_header() | {"levels": 65536, "dtype": "<u2"})["levels"] == 65536
    with pytest.raises(DataError, match=r"'levels' must be an integer in 2\.\.65536, got 65537"):
        _read(base_header() | {"levels": 65537, "dtype": "<u2"})


@pytest.mark.parametrize("key, limit", [("dgmkit_version", 100), ("coder", 1000)])
def test_a_text_field_of_exactly_its_limit_is_read_and_one_character_more_is_refused(key, limit):
    assert _read(base_header() | {key: "v" * limit})[key] == "v" * limit
    with pytest.raises(DataError, match=f"{key!r} must be a text of at most {limit} printable characters"):
        _read(base_header() | {key: "v" * (limit + 1)})


@pytest.mark.parametrize("char", ["\x7f", "\x85", "\x9b"])
def test_del_and_c1_control_characters_in_a_header_text_are_refused(char):
    """DEL and the C1 controls (\\x9b is a terminal's one-byte escape sequence introducer) are no
    printable text, in the model's description as in the coder's name."""
    header = base_header()
    header["model"] = {"kind": f"a{char}31mred", "dataset": "digits-4x4"}
    with pytest.raises(DataError, match="'kind' must be a text of at most 1000 printable characters"):
        _read(header)
    with pytest.raises(DataError, match="'coder' must be a text"):
        _read(base_header() | {"coder": f"range coder{char}"})


def test_an_unknown_header_key_is_refused_by_name():
    with pytest.raises(DataError, match="f.dgmz has a bad header: unknown key\\(s\\) 'extra'"):
        _read(base_header() | {"extra": 1})
    with pytest.raises(DataError, match="unknown key"):
        write_container(base_header() | {"comment": "hi"}, np.zeros(2, np.uint32))


@pytest.mark.parametrize(
    "payload, what",
    [
        (np.array([-1, 5]), r"integers from -1 to 5"),
        (np.array([2**32, 5]), r"integers from 5 to 4294967296"),  # (cast: 0, another word)
        (np.array([1.5, 2.0]), r"float64 values"),
        (np.zeros((2, 2), np.uint32), r"a flat array of 32-bit words, got shape \(2, 2\)"),
    ],
)
def test_write_container_refuses_words_it_would_wrap_or_truncate(payload, what):
    """The payload is the coders' words: -1, 2**32 or 1.5 cast to uint32 would be written as other
    words (decoded to other images), refused by name as the decoders refuse them."""
    with pytest.raises(DataError, match=what):
        write_container(base_header(), payload)
    words = np.array([1, 2**32 - 1], dtype=np.int64)  # integers that are words are taken, whatever their type
    assert read_container(write_container(base_header(), words)).payload.tolist() == [1, 2**32 - 1]
    with pytest.raises(DataError, match="^the container to write has a bad header: unknown key"):  # (was "the header to
        write_container(base_header() | {"extra": 1}, words)  # write has a bad header")


def test_a_device_name_with_an_invisible_format_character_is_refused():
    """A GPU's name is shown to whoever decompresses: no right-to-left override or zero width in it."""
    assert _read(base_header() | {"device": "cuda (NVIDIA H100 80GB HBM3)"})["device"] == "cuda (NVIDIA H100 80GB HBM3)"
    for bad in ("cuda (NVIDIA\u202eH100)", "cuda (NVIDIA\u200bH100)"):
        with pytest.raises(DataError, match="'device' must be a text of at most 200 printable characters"):
            _read(base_header() | {"device": bad})


def test_the_decoded_pixels_are_bounded_as_int64_whatever_the_files_dtype():
    """Decoding holds the pixels as int64 before casting to the file's dtype: one byte pixels
    count 8 bytes against MAX_DECODED_BYTES."""
    most = MAX_DECODED_BYTES // 8 // 16
    assert _read(base_header() | {"shape": [most, 4, 4], "dtype": "|u1"})["shape"][0] == most
    with pytest.raises(DataError, match=f"declares {most + 1} images of 16 pixels: more than this dgmkit decodes"):
        _read(base_header() | {"shape": [most + 1, 4, 4], "dtype": "|u1"})


def test_a_batch_size_above_the_number_of_images_counts_only_the_images():
    """dgm compress's default batch of 500 over 10 large images codes 10 images at once, not 500."""
    header = base_header() | {"shape": [10, 128, 128], "batch_size": 500}
    assert _read(header)["batch_size"] == 500


def test_a_batch_of_exactly_the_most_pixels_coded_at_once_is_read():
    header = base_header() | {"shape": [8, MAX_BATCH_PIXELS], "batch_size": 1}
    assert _read(header)["batch_size"] == 1
    with pytest.raises(DataError, match=f"'batch_size' 2 codes {2 * MAX_BATCH_PIXELS} pixels at once"):
        _read(header | {"batch_size": 2})


def test_1_bit_png_images_declare_two_levels():
    header = base_header("png")
    assert _read(header)["png_mode"] == "1"
    with pytest.raises(DataError, match="PNG images of mode 1 need .* and 2 levels"):
        _read(header | {"levels": 4})
    assert _read(header | {"png_mode": "L", "dtype": "|u1", "levels": 4})["levels"] == 4


def test_png_names_ending_in_upper_case_png_are_read():
    """Cameras and other systems write IMG_0001.PNG: the extension is matched without case."""
    header = base_header("png") | {"names": ["A.PNG", "b.Png", "c.png"]}
    assert _read(header)["names"] == ["A.PNG", "b.Png", "c.png"]


def test_a_png_file_declares_the_models_height_and_width_not_only_its_pixel_count():
    """PNG images are written back as H x W pictures: 2 x 8 ones are not a 4 x 4 model's, though
    an array of 16 values a row (an .npy source) is."""
    png = base_header("png") | {"shape": [3, 2, 8]}
    with pytest.raises(DataError, match=r"holds images of shape \(2, 8\); the model codes images of 4x4 pixels"):
        check_against_model(png, (1, 4, 4), 2)
    check_against_model(base_header("png"), (1, 4, 4), 2)
    check_against_model(base_header() | {"shape": [3, 16]}, (1, 4, 4), 2)


def test_a_file_coded_on_a_gpu_decodes_on_a_gpu_of_any_name_and_not_on_the_cpu():
    header = base_header() | {"device": "cuda (NVIDIA H100 80GB HBM3)"}
    check_coding_device(header, torch.device("cuda"))  # (the kind of device, not the model of GPU)
    with pytest.raises(DataError, match=r"compressed with the model on cuda \(NVIDIA H100 80GB HBM3\); .* --device cuda"):
        check_coding_device(header, torch.device("cpu"))
    check_coding_device(base_header(), torch.device("cpu"))  # (older files: the CPU)


# -- container.py: the file's layout ----------------------------------------------------------


def _file(payload_words: int = 3) -> bytes:
    return write_container(base_header(), np.arange(payload_words, dtype=np.uint32))


def test_the_same_header_in_any_key_order_writes_the_same_bytes():
    """A file is reproducible: its bytes depend on the header's content, not on the order its
    dict was built in."""
    header = base_header()
    assert write_container(dict(reversed(header.items())), np.arange(3, dtype=np.uint32)) == _file()


def test_a_file_of_exactly_the_size_limit_is_read_and_one_byte_more_is_refused(monkeypatch):
    import dgmkit.coding.container as container

    data = _file()
    monkeypatch.setattr(container, "MAX_FILE_BYTES", len(data))
    assert read_container(data).payload.tolist() == [0, 1, 2]
    monkeypatch.setattr(container, "MAX_FILE_BYTES", len(data) - 1)
    with pytest.raises(DataError, match=f"has {len(data)} bytes, more than a compressed file of this dgmkit holds"):
        read_container(data)


def test_a_header_of_exactly_the_size_limit_is_read_and_one_byte_more_is_refused(monkeypatch):
    import dgmkit.coding.container as container

    data = _file()
    head = len(json.dumps(base_header(), sort_keys=True))
    monkeypatch.setattr(container, "MAX_HEADER_BYTES", head)
    assert read_container(data).header == base_header()
    monkeypatch.setattr(container, "MAX_HEADER_BYTES", head - 1)
    with pytest.raises(DataError, match=f"has a header of {head} bytes, more than {head - 1}"):
        read_container(data)


def test_write_container_refuses_a_file_that_read_container_would_refuse(monkeypatch):
    """A payload or header beyond what a reader takes (a bits-back file of a poor model can cost
    more than 32 bits a pixel) is refused when writing, not written as a file no dgmkit reads."""
    import dgmkit.coding.container as container

    data = _file()
    monkeypatch.setattr(container, "MAX_FILE_BYTES", len(data))
    assert read_container(_file()).payload.tolist() == [0, 1, 2]  # (exactly the limit: written and read)
    with pytest.raises(DataError, match="would have .* a payload of 16 bytes, more than this dgmkit reads"):
        _file(4)
    monkeypatch.undo()
    head = len(json.dumps(base_header(), sort_keys=True))
    monkeypatch.setattr(container, "MAX_HEADER_BYTES", head - 1)
    with pytest.raises(DataError, match=f"a header of {head} bytes"):
        _file()


def _resealed(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def test_a_file_cut_inside_its_payload_length_is_refused_as_truncated():
    data = _file()
    head = len(json.dumps(base_header(), sort_keys=True))
    for cut in range(0, 8):  # the header, then 0..7 of the 8 bytes of the payload's length
        with pytest.raises(DataError, match="truncated"):
            read_container(_resealed(data[: 10 + head + cut]))


def test_bytes_between_the_payload_and_the_checksum_are_refused_not_read_as_payload():
    body = _file()[:-32]
    for extra in (b"\x00" * 4, b"\x01\x00\x00\x00" * 3):
        with pytest.raises(DataError, match="truncated or has trailing bytes"):
            read_container(_resealed(body + extra))


def test_the_payload_read_is_the_readers_own_writable_uint32_array():
    payload = read_container(_file()).payload
    assert payload.dtype == np.uint32 and payload.flags.writeable and payload.flags.owndata
    payload[0] = 7  # (a caller may change it: it is no view of the file's bytes)


def test_the_content_digest_of_a_strided_view_is_that_of_its_copy():
    x = np.arange(24, dtype=np.int16).reshape(4, 6)
    for view in (x[:, ::2], x[::2], x.T, x[::-1]):
        assert content_digest(view) == content_digest(view.copy())


# -- container.py: the model's fingerprint ----------------------------------------------------


class _Named(nn.Module):
    def __init__(self, name: str, value: torch.Tensor):
        super().__init__()
        self.register_buffer(name, value)


class _OtherLinear(nn.Linear):
    pass


def test_the_fingerprint_tells_apart_models_that_differ_only_in_their_class_or_a_tensors_name():
    torch.manual_seed(0)
    a = nn.Linear(3, 2)
    b = _OtherLinear(3, 2)
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) != model_fingerprint(b)  # the same tensors under another class
    t = torch.arange(6.0)
    assert model_fingerprint(_Named("mean", t)) != model_fingerprint(_Named("scale", t))
    assert model_fingerprint(_Named("mean", t)) != model_fingerprint(_Named("mean", t.view(2, 3)))
    assert model_fingerprint(_Named("mean", t)) == model_fingerprint(_Named("mean", t.clone()))
    check_header(base_header() | {"model_fingerprint": model_fingerprint(a)})


# -- bitsback.py -------------------------------------------------------------------------------


class _Raw(nn.Module):
    """A scale map that passes the encoder's numbers through: posteriors of exact scales."""

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return raw


def _exact_vae(means: list[float], scales: list[float], prior: nn.Module | None = None) -> VAE:
    """A VAE whose every number the coder reads is exact on any machine: q(z|x) = N(means,
    scales^2) whatever x (an encoder of zero weights), p(x|z) = Bernoulli(1/2) for every pixel
    (a decoder of zero weights)."""
    m = len(means)
    encoder, decoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 2 * m)), nn.Linear(m, 16)
    with torch.no_grad():
        for layer in (encoder[1], decoder):
            layer.weight.zero_()
            layer.bias.zero_()
        encoder[1].bias.copy_(torch.tensor([*means, *scales]))
    posterior = GaussianEncoder(encoder, m, scale_map=_Raw())
    return VAE(posterior, Decoder(decoder, BernoulliHead(), (1, 4, 4)), prior or StandardNormalPrior(m)).eval()


def _images(n: int) -> torch.Tensor:
    return torch.tensor([[(i * 7 + j * 3) % 5 < 2 for j in range(16)] for i in range(n)]).long().view(n, 1, 4, 4)


# 10 images coded in batches of 3 by dgmkit at d3dbe53 with the model of
# test_a_file_written_by_this_version_decodes_bit_for_bit (constriction 0.4)
_PINNED = [
    2225970810, 189953385, 671835139, 4236278162, 2566903059, 2776104661, 4059095289, 3436645203,
    2769648181, 1617310353, 432551282, 2128016180, 3725396711, 2880041860, 1456912333, 1,
]  # fmt: skip


def test_a_file_written_by_this_version_decodes_bit_for_bit():
    """The latent grid is part of the file format: buckets of 2^-8 prior scales over +-32 of them,
    posterior windows of 8 scales (at least 16 buckets, at most 2^12), batch sizes uniform over
    0..batch size. A file pinned here (a model of exact numbers: a narrow, a wide and a very wide
    posterior) decodes to its images, so a change of any of them cannot go unnoticed."""
    model = _exact_vae([0.5, -0.25, 1.0, 0.0], [0.25, 4.0, 2**-9, 1.0])
    words = np.array(_PINNED, np.uint32)
    assert torch.equal(decode_bits_back(model, words, 10, 3), _images(10))
    assert torch.equal(decode_bits_back(model, encode_bits_back(model, _images(10), 3), 10, 3), _images(10))
    # which images' pixels are coded together (a batch's chunks of at most _PMF_BUDGET probabilities) is
    # part of the format too, but a pinned file would need over 2^17 of these images to show it
    assert bitsback._PMF_BUDGET == 2**22


def test_a_batch_leaves_the_coders_64_bit_state_on_the_stack():
    """The bits a batch may take back are those above the 64 of the coder's state."""
    assert next_batch(64 + 4 * 125 - 1, 100.0, 50, 20) == 3
    assert next_batch(64 + 4 * 125, 100.0, 50, 20) == 4


def test_the_first_words_are_an_eighth_more_than_the_first_image_takes_back_and_64_bits():
    """As the module says: from a trial stack of seed_words, the first image's latents take back
    ``need`` bits; the stack starts with ceil((1.125 need + 64) / 32) + 1 words (32 wide
    latents: enough bits that the eighth is words more)."""
    model = _exact_vae([0.0] * 32, [30.0] * 32)
    x = _images(1)
    _, latents, _ = bitsback._check(model, 1, 1)
    with bitsback.one_thread():
        f = bitsback._Families(1)
        trial = bitsback._Ans(seed_words(32))
        before = trial.bits()
        latents.take(trial, f, x)
        need = before - trial.bits()
        first = bitsback._first_words_for(latents, f, x, 32)
    assert need > 200
    assert len(first) == math.ceil((1.125 * need + 64) / 32) + 1 < len(seed_words(32))


class _Fixed(Prior):
    def __init__(self, latent_dim: int, d: Distribution):
        super().__init__(latent_dim)
        self.d = d

    def forward(self, context: None = None) -> Distribution:
        return self.d


def test_priors_over_more_than_the_latent_vector_are_refused_by_name():
    """A Gaussian over (M, 2) values a latent, or categoricals over a grid (M, V, K), is not the
    diagonal Gaussian over the latent vector (or V categoricals) that the grid codes."""
    for d, name in (
        (Independent(Normal(torch.zeros(M, 2), torch.ones(M, 2)), 2), "Independent of Normal"),
        (Independent(OneHotCategorical(torch.full((M, 3, 4), 0.25)), 2), "Independent of OneHotCategorical"),
    ):
        model = _exact_vae([0.0] * M, [1.0] * M, prior=_Fixed(M, d))
        with pytest.raises(ConfigError, match=f"the prior p\\(z\\) to be a diagonal Gaussian.*this model's is a {name}"):
            check_bits_back(model)


def test_a_posterior_with_non_finite_or_zero_scales_is_named():
    with pytest.raises(DataError, match=r"q\(z\|x\) has non-finite parameters"):
        encode_bits_back(_exact_vae([0.0, float("nan")], [1.0, 1.0]), _images(2))
    with pytest.raises(DataError, match=r"q\(z\|x\) has a scale that is not positive"):
        encode_bits_back(_exact_vae([0.0, 0.0], [1.0, 0.0]), _images(2))


def test_latents_drawn_at_the_edge_of_a_posteriors_window_are_given_back():
    """A posterior 100 times as wide as the prior is nearly uniform over its window of 2^12
    buckets either side: among 12,800 draws some fall on the window's last bucket, which must
    still be given back when decoding."""
    edges = []
    take = bitsback._Grid.take

    def spy(self, ans, f, params):
        index = take(self, ans, f, params)
        edges.append(int((np.abs(index - np.rint(params[0])) == bitsback._MAX_WINDOW).sum()))
        return index

    model = _exact_vae([0.0] * 64, [100.0] * 64)
    x = _images(200)
    bitsback._Grid.take = spy
    try:
        words = encode_bits_back(model, x, 50)
    finally:
        bitsback._Grid.take = take
    assert sum(edges) > 0
    assert torch.equal(decode_bits_back(model, words, len(x), 50), x)


def test_categorical_posteriors_of_another_shape_than_the_prior_are_refused():
    torch.manual_seed(0)
    encoder = CategoricalEncoder(nn.Sequential(nn.Flatten(), MLP(16, [16], 15)), 3, 5)  # q: 3 variables of 5 classes
    decoder = Decoder(MLP(12, [16], 16), BernoulliHead(), (1, 4, 4))
    model = CategoricalVAE(encoder, decoder, UniformCategoricalPrior(3, 4)).eval()  # p: 3 of 4
    with pytest.raises(ConfigError, match=r"the posterior q\(z\|x\) to be .*Independent of _?OneHotCategorical"):
        check_bits_back(model)


def _mixture(loc: list[float], scale: list[float], logits: list[float]) -> DiagonalGaussianMixture:
    t = torch.tensor
    return DiagonalGaussianMixture(t(logits), t(loc)[:, None].expand(-1, M), t(scale)[:, None].expand(-1, M))


def test_a_mixtures_grid_reaches_every_components_mean_and_8_of_its_scales_within_half_its_range():
    """A rare wide component (weight 1e-3, 50 times the other's scale) widens the grid: its mean
    +- 8 of its scales lies within RANGE / 2 of the grid's scales of the mixture's mean, and a
    posterior 10 of its scales out is coded."""
    prior = _mixture([0.0, 0.0], [1.0, 50.0], [0.0, math.log(1e-3)])
    grid = bitsback._latents(prior)
    reach = (prior.loc - grid.loc).abs() + 8 * prior.scale.double()
    assert (reach <= bitsback.RANGE / 2 * grid.scale + 1e-9).all()
    model = _exact_vae([500.0] * M, [1.0] * M, prior=_Fixed(M, prior))
    x = _images(3)
    assert torch.equal(decode_bits_back(model, encode_bits_back(model, x, 3), 3, 3), x)


def test_a_mixture_component_of_zero_scale_is_named():
    model = _exact_vae([0.0] * M, [1.0] * M, prior=_Fixed(M, _mixture([0.0, 1.0], [1.0, 0.0], [0.0, 0.0])))
    with pytest.raises(DataError, match=r"p\(z\) has a component of a scale that is not positive"):
        encode_bits_back(model, _images(2))


def test_a_mixtures_components_coded_in_several_chunks_round_trip(monkeypatch):
    """p(c|z) computed a few images at a time (_PMF_BUDGET): decoding gives c's bits back in the
    reverse order of the chunks that took them."""
    torch.manual_seed(0)
    prior = MixtureOfGaussiansPrior(M, 3)
    model = _exact_vae([0.5, -1.0, 0.25, 2.0], [0.5, 1.0, 0.25, 0.75], prior=prior)
    monkeypatch.setattr(bitsback, "_PMF_BUDGET", 2 * 3 * M)  # two images' p(c|z) at a time
    x = _images(9)
    assert torch.equal(decode_bits_back(model, encode_bits_back(model, x, 9), 9, 9), x)


def test_a_posterior_mean_of_exactly_range_prior_scales_is_coded_and_one_beyond_is_refused_by_its_image():
    """An image whose latent mean lies beyond the grid's +-32 prior scales (one unlike those the
    model was trained on can have one, its weights sound) is named by its place among the images
    given, with what happened and what to do; the refusal asked "are the weights sound?"."""
    x = _images(2)
    model = _exact_vae([float(bitsback.RANGE), 0.0], [1.0, 1.0])
    assert torch.equal(decode_bits_back(model, encode_bits_back(model, x, 2), 2, 2), x)
    beyond = r"q\(z\|x\) puts one of its latents' means 32 prior scales from the prior's mean, beyond the \+-32 prior "
    with pytest.raises(DataError, match=rf"^image 0 \(counting from 0\) cannot be coded by bits back .*: {beyond}"):
        encode_bits_back(_exact_vae([bitsback.RANGE + 0.01, 0.0], [1.0, 1.0]), x)
    # a mean that follows the image: 40 prior scales where its first pixel is on, 0 where it is off
    outlier = _exact_vae([0.0, 0.0], [1.0, 1.0])
    with torch.no_grad():
        outlier.encoder.net[1].weight[0, 0] = 40.0
    images = _images(10)
    on = images.flatten(1)[:, 0] == 1
    x = torch.cat([images[~on], images[on][:1]])  # 6 images of the pixel off (coded in batches of 3), then one on
    with pytest.raises(DataError, match=r"^image 6 \(counting from 0\) cannot be coded by bits back") as refused:
        encode_bits_back(outlier, x, 3)
    message = str(refused.value)
    assert "means 40 prior scales from" in message and "weights" not in message
    assert message.endswith("leave it out of the images to compress, or compress it with another model")
    assert len(encode_bits_back(outlier, x[:6], 3)) > 0  # (the others are coded)


def test_a_batch_of_exactly_the_most_images_is_allowed():
    model = _exact_vae([0.0] * M, [1.0] * M)
    most = bitsback._MAX_BATCH
    assert bitsback._check(model, most, most)[2] == most
    with pytest.raises(DataError, match=f"the coding batch size must be at most {most} images, got {most + 1}"):
        bitsback._check(model, most + 1, most + 1)


def test_the_batches_are_sized_by_the_bits_an_image_takes_back(monkeypatch):
    """next_batch is given the bits the last batch took back an image (at most 24 a latent
    dimension), not the batch's total."""
    seen = []

    def spy(stack_bits, bits_per_image, left, batch_size, f=bitsback.next_batch):
        seen.append(bits_per_image)
        return f(stack_bits, bits_per_image, left, batch_size)

    monkeypatch.setattr(bitsback, "next_batch", spy)
    model = _exact_vae([0.0] * M, [0.5] * M)
    x = _images(300)
    words = encode_bits_back(model, x, 100)
    assert len(seen) > 3 and max(seen) <= bitsback._PRECISION_BITS * M
    assert torch.equal(decode_bits_back(model, words, len(x), 100), x)


def test_words_whose_stack_did_not_start_with_the_first_words_are_refused(monkeypatch):
    """Data coded on a stack that started empty decodes to images, but not back to the first
    words every file starts with: refused, as data not coded by this coder."""
    model = _exact_vae([0.0] * M, [0.5] * M)
    monkeypatch.setattr(bitsback, "_first_words_for", lambda *args: np.zeros(0, np.uint32))
    words = encode_bits_back(model, _images(3), 3)
    monkeypatch.undo()
    with pytest.raises(DataError, match="decoding did not end where coding began"):
        decode_bits_back(model, words, 3, 3)


# -- arm_coder.py ------------------------------------------------------------------------------


def _arm(levels: int = 5) -> GatedPixelCNN:
    torch.manual_seed(0)
    return GatedPixelCNN(CategoricalHead(levels), (1, 3, 3), channels=4, layers=2).eval()


def test_the_coding_probabilities_are_computed_on_one_thread_whatever_the_callers(monkeypatch):
    import dgmkit.coding.arm_coder as arm_coder

    threads = []

    def spy(*args, f=arm_coder._probabilities):
        threads.append(torch.get_num_threads())
        return f(*args)

    monkeypatch.setattr(arm_coder, "_probabilities", spy)
    model, x = _arm(), torch.randint(0, 5, (4, 1, 3, 3), generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        words = encode_images(model, x, 2)
        assert torch.equal(decode_images(model, words, 4, 2), x)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert threads and set(threads) == {1}


def test_probabilities_of_another_shape_than_the_batchs_pixel_values_are_an_internal_error():
    model = _arm()
    model.run_cached = lambda n, choose, device=None: choose(0, torch.zeros(n, 6))  # 6 values, not 5
    with pytest.raises(DataError, match=r"internal: the model gave probabilities of shape \(2, 6\) at pixel step 0"):
        encode_images(model, torch.zeros(2, 1, 3, 3, dtype=torch.long), 2)


def test_the_coders_probabilities_are_float64_rows_that_sum_to_one():
    log_pmf = torch.log_softmax(torch.randn(7, 5, generator=torch.Generator().manual_seed(0)), -1)  # float32
    p = pmf_rows(log_pmf.T.contiguous().T, 5, "here")  # (a transposed view)
    assert p.dtype == np.float64 and p.flags.c_contiguous and p.shape == (7, 5)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(p, log_pmf.double().exp().numpy() / log_pmf.double().exp().sum(1, keepdim=True).numpy())


def test_unnormalised_rows_are_normalised_and_a_row_of_zero_probability_is_refused():
    masses = torch.tensor([[0.0, math.log(3.0)], [5.0, 5.0]], dtype=torch.float64)  # 1:3 and 1:1, not summing to 1
    np.testing.assert_allclose(pmf_rows(masses, 2, "here"), [[0.25, 0.75], [0.5, 0.5]], rtol=1e-12)
    nothing = torch.tensor([[0.0, 0.0], [float("-inf"), float("-inf")]])
    with pytest.raises(DataError, match="the model gives non-finite or zero probabilities at pixel step 3"):
        pmf_rows(nothing, 2, "at pixel step 3")


def test_a_decoded_value_counts_at_most_what_the_coders_floor_made_it_cost():
    """The coder gives every value at least 2^-24 of its range and rounds the rest to multiples of
    it: a value of probability p cost at least -log2(p + 2^-23) bits, 23 for one the model gives none."""
    from dgmkit.coding.arm_coder import _information_bits

    probs = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    assert _information_bits(probs[:1], np.array([0])) == pytest.approx(23.0, abs=1e-9)
    expected = 23.0 - math.log2(0.5 + 2**-23) - math.log2(1 + 2**-23)
    assert _information_bits(probs, np.array([0, 1, 0])) == pytest.approx(expected)


def test_the_reference_nll_is_float64_nats_of_each_image():
    model = _arm()
    x = torch.randint(0, 5, (3, 1, 3, 3), generator=torch.Generator().manual_seed(0))
    nll = sequential_nll(model, x)
    assert nll.dtype == torch.float64 and nll.shape == (3,)
    with torch.no_grad():
        assert torch.allclose(nll, -model.log_prob(x).double())


def test_the_coders_names_are_pinned_since_files_record_them_and_decoding_refuses_another():
    """A file's header names its coder and decompression refuses a file of another: the names
    change only with the format, and the bits-back one states the latent grid it codes on."""
    assert CODERS["sequential"].name == "constriction range coder, categorical models (perfect=False)"
    name = CODERS["bits-back"].name
    assert name == (
        "constriction ANS coder, bits-back (BB-ANS), latent buckets of 2^-8 prior scales, posterior windows of 8 scales"
    )
    assert f"buckets of 2^{round(math.log2(bitsback.BUCKET))} prior scales" in name


def test_a_changed_length_field_is_refused_as_corrupted_not_as_a_truncation_of_other_sizes():
    """A flipped bit of the header's length was "truncated: its header says 553 header bytes, the
    file has 595 bytes": the checksum is looked at before any size the file states."""
    data = bytearray(_file())
    for at in (len(MAGIC) + 2, len(MAGIC) + 3, len(data) - 40):  # the header's length, then the payload
        changed = bytearray(data)
        changed[at] ^= 1
        with pytest.raises(DataError, match="is truncated or corrupted: its checksum does not match its content"):
            read_container(bytes(changed))
    read_container(bytes(data))
    with pytest.raises(DataError, match=r"has 1 byte after its end: its first \d+ bytes end with their own matching"):
        read_container(bytes(data) + b"\n")  # (an editor's newline, or two files joined: the file itself is whole)
    changed = bytearray(data)
    changed[len(MAGIC)] ^= 1  # the format version
    with pytest.raises(DataError, match=r"has format version 0 \(or is corrupted: its checksum does not match\)"):
        read_container(bytes(changed))
