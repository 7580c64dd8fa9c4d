"""Bits-back coding with a VAE: bit-exact round trips, a rate at the negative ELBO, and data
or models it cannot code refused by name."""

import dataclasses
import math
import re

import numpy as np
import pytest
import torch
from tests.test_cli import run
from torch import nn
from torch.distributions import Independent, Laplace, Normal, OneHotCategorical

from dgmkit.cli.main import main
from dgmkit.coding import bitsback, coder_of, decode_bits_back, encode_bits_back, read_container
from dgmkit.coding.bitsback import first_words, negative_elbo, next_batch, seed_words
from dgmkit.conditional import (
    BernoulliHead,
    CategoricalEncoder,
    CategoricalHead,
    Decoder,
    GaussianEncoder,
    GaussianHead,
    LogisticMixtureHead,
)
from dgmkit.config import load_run
from dgmkit.errors import ConfigError, DataError
from dgmkit.models import VAE
from dgmkit.models.autoregressive import GatedPixelCNN
from dgmkit.models.categorical_vae import CategoricalVAE
from dgmkit.nn import MLP
from dgmkit.priors import FlowPrior, MixtureOfGaussiansPrior, StandardNormalPrior, UniformCategoricalPrior, VampPrior
from dgmkit.transforms.architectures import maf

M = 4


def _vae(head=None, prior=None, seed: int = 0, m: int = M, hidden: int = 16) -> VAE:
    torch.manual_seed(seed)
    head = head or BernoulliHead()
    encoder = GaussianEncoder(nn.Sequential(nn.Flatten(), MLP(16, [hidden], 2 * m)), m)
    decoder = Decoder(MLP(m, [hidden], 16 * head.params_per_pixel), head, (1, 4, 4))
    return VAE(encoder, decoder, StandardNormalPrior(m) if prior is None else prior).eval()


def _discrete_vae(v: int = 3, k: int = 4) -> CategoricalVAE:
    torch.manual_seed(0)
    encoder = CategoricalEncoder(nn.Sequential(nn.Flatten(), MLP(16, [16], v * k)), v, k)
    decoder = Decoder(MLP(v * k, [16], 16), BernoulliHead(), (1, 4, 4))
    return CategoricalVAE(encoder, decoder, UniformCategoricalPrior(v, k)).eval()


def _data(model: VAE, n: int) -> torch.Tensor:
    """Images the model fits: its own samples."""
    torch.manual_seed(1)
    x, _ = model.sample(n)
    return x.round().long()


def _first_words(model, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """The first words that ``encode_bits_back`` starts a stack of x with."""
    _, latents, batch_size = bitsback._check(model, batch_size, len(x))
    with bitsback.one_thread():
        return bitsback._first_words_for(latents, bitsback._Families(batch_size), x[:1], model.latent_dim)


def _round_trip_at_the_elbo(model: VAE, x: torch.Tensor, batch_size: int) -> None:
    """x decodes bit for bit, and what the images cost beyond the stack's first words (their
    latents' bits given back) is the negative ELBO in bits, up to its Monte Carlo error and the
    batch sizes (< 7 bits each)."""
    words = encode_bits_back(model, x, batch_size=batch_size)
    assert torch.equal(decode_bits_back(model, words, len(x), batch_size=batch_size), x)
    net = 32 * (len(words) - len(_first_words(model, x, batch_size)))
    elbo_bits = negative_elbo(model, x).sum().item() / math.log(2)
    assert 0.98 * elbo_bits < net < 1.01 * elbo_bits + 400


@pytest.mark.parametrize(
    "head", [BernoulliHead(), CategoricalHead(5), LogisticMixtureHead(5, components=2)], ids=lambda h: type(h).__name__
)
def test_round_trip_is_bit_exact_and_the_rate_is_the_negative_elbo(head):
    # measured: 0.39, 0.63 and 0.50 bits an image above the -ELBO (a prior 1.5 times too wide on
    # both sides, which round-trips, costs 0.73 more)
    model = _vae(head)
    _round_trip_at_the_elbo(model, _data(model, 600), batch_size=100)


class _ExactPosterior(nn.Module):
    """q(z|x) = p(z|x) of one categorical latent under a decoder of K sharp binary patterns, by
    enumeration: the ELBO is then log p(x) itself."""

    def __init__(self, decoder: Decoder, k: int):
        super().__init__()
        self.decoder, self.k = decoder, k

    def forward(self, x):
        logits = self.decoder.net(torch.eye(self.k))  # (K, 16): each class's pixel logits
        x = x.flatten(1)[:, None, :]
        log_px_z = (x * nn.functional.logsigmoid(logits) + (1 - x) * nn.functional.logsigmoid(-logits)).sum(-1)
        return Independent(OneHotCategorical(logits=log_px_z[:, None, :]), 1)


def test_categorical_latents_are_coded_exactly_at_the_negative_elbo():
    """V categorical latents need no grid: q(z|x) and p(z) are coded as they are, so the rate is
    the discrete ELBO's (a discrete VAE, as Gumbel-softmax or REINFORCE train it). With the exact
    posterior of a decoder of 4 sharp patterns that is -log2 p(x), and a coder that took no bits
    back with it (z drawn under p(z), the wrong pattern 3 times in 4) would pay far more."""
    torch.manual_seed(0)
    patterns = nn.Linear(4, 16, bias=False)
    patterns.weight.data = 6.0 * (2.0 * (torch.rand(16, 4) > 0.5).float() - 1.0)
    decoder = Decoder(patterns, BernoulliHead(), (1, 4, 4))
    exact = CategoricalVAE(_ExactPosterior(decoder, 4), decoder, UniformCategoricalPrior(1, 4)).eval()
    _round_trip_at_the_elbo(exact, _data(exact, 600), batch_size=100)
    model = _discrete_vae()  # and a network encoder of 3 variables
    _round_trip_at_the_elbo(model, _data(model, 600), batch_size=100)


def _mixture_prior(kind: str, seed: int = 0) -> MixtureOfGaussiansPrior | VampPrior:
    """A mixture prior away from N(0, I): components of other means, scales and weights."""
    g = torch.Generator().manual_seed(seed)
    if kind == "vamp":
        return VampPrior(M, (1, 4, 4), components=6, init=torch.rand(6, 1, 4, 4, generator=g))
    prior = MixtureOfGaussiansPrior(M, 5)
    with torch.no_grad():
        prior.means.copy_(torch.randn(5, M, generator=g))
        prior.raw_scales.copy_(0.3 * torch.randn(5, M, generator=g))
        prior.logits.copy_(torch.randn(5, generator=g))
    return prior


@pytest.mark.parametrize("kind", ["mog", "vamp"])
def test_a_mixture_prior_codes_its_component_by_bits_back_at_the_negative_elbo(kind):
    """A mixture-of-Gaussians prior and the VampPrior (the encoder's mixture at its pseudo-
    inputs): z is coded under one component c, taken back from p(c|z), so its cost is
    -log2 p(z) (measured: 0.29 and 0.24 bits an image above the -ELBO of 18.9 and 15.9)."""
    model = _vae(prior=_mixture_prior(kind))
    assert isinstance(bitsback._latents(model.prior()), bitsback._MixtureGrid)
    _round_trip_at_the_elbo(model, _data(model, 600), batch_size=100)


def test_a_mixture_of_one_component_is_coded_as_its_gaussian_and_a_rare_far_one_is_on_the_grid():
    """One component: nothing to choose (the coder cannot code a choice of one). A component of
    weight 3e-4 at 50 scales from the others, on which an image's posterior sits: the grid,
    standardised by the mixture, is widened so that it covers it (a review found it refused as
    "beyond the grid")."""
    one = MixtureOfGaussiansPrior(M, 1)
    model = _vae(prior=one)
    assert type(bitsback._latents(model.prior())) is bitsback._Grid
    _round_trip_at_the_elbo(model, _data(model, 300), batch_size=100)

    far = MixtureOfGaussiansPrior(M, 2)
    with torch.no_grad():
        far.means.copy_(torch.tensor([[0.0] * M, [50.0] * M]))
        far.raw_scales.fill_(math.log(math.expm1(1.0)))
        far.logits.copy_(torch.tensor([0.0, -8.0]))

    class OnTheFarOne(nn.Module):  # q(z|x) = N(50 x_0, 0.5^2): an image with its first pixel lit is there
        def forward(self, x):
            loc = 50.0 * x.flatten(1)[:, :1].float().expand(-1, M)
            return Independent(Normal(loc, torch.full_like(loc, 0.5)), 1)

    model = _vae(prior=far)
    model.encoder = OnTheFarOne()
    x = torch.zeros(5, 1, 4, 4, dtype=torch.long)
    x[0, 0, 0, 0] = x[3, 0, 0, 0] = 1
    words = encode_bits_back(model, x, batch_size=5)
    assert torch.equal(decode_bits_back(model, words, len(x), batch_size=5), x)


def test_the_component_posterior_is_the_mixtures_and_each_bucket_is_coded_under_its_component():
    """p(c|z) at a bucket's centre is the mixture's own responsibility, and a batch of latents
    taken out of a stack under p(z) and put back leaves the stack as it was."""
    prior = _mixture_prior("mog", seed=3)()
    grid = bitsback._MixtureGrid(prior.logits, prior.loc, prior.scale)
    index = np.random.default_rng(0).integers(-600, 600, (7 * M,))
    z = grid.z(index, 7, torch.float64, torch.device("cpu"))
    with torch.no_grad():
        log_joint = torch.log_softmax(prior.logits.double(), -1) + prior.component_log_prob(z)
    expected = torch.softmax(log_joint, -1).numpy()
    assert np.allclose(grid._given_z(index), expected, rtol=1e-5, atol=1e-9)  # (its constants in float32)
    words = np.frombuffer(np.random.default_rng(1).bytes(4 * 1000), dtype=np.uint32).copy()
    words[-1] |= 1
    coder, families = bitsback._Ans(words), bitsback._Families(7)
    taken = grid.prior_pop(coder, families, 7)
    grid.prior_push(coder, families, taken, 7)
    assert np.array_equal(coder.stack.get_compressed(), words)


@pytest.mark.parametrize("m", [1, 2])
def test_a_model_of_few_latents_codes_at_its_negative_elbo(m):
    """Its first image takes back fewer than 32 bits: measured in whole words that was nothing,
    the next batch took all the images, and the stack ran dry (1.52 and 2.59 times the ELBO)."""
    model = _vae(m=m)
    _round_trip_at_the_elbo(model, _data(model, 600), batch_size=500)  # measured: 1.014, 1.016


@pytest.mark.parametrize("prior", [None, "vamp"])
def test_a_file_decodes_whatever_the_number_of_threads(prior):
    """The probabilities are computed on one thread: with the caller's, a batch's last bits
    depended on how many threads shared a matrix product, and a file coded with 2 did not decode
    with 1. A VampPrior's components, which the encoder makes from the pseudo-inputs, too (a
    review found that 9 components differed in their last bits between 1 and 2 threads). The
    caller's number of threads is restored."""
    if prior is None:
        model = _vae(CategoricalHead(5), hidden=256)
    else:
        g = torch.Generator().manual_seed(0)
        vamp = VampPrior(M, (1, 4, 4), components=9, init=torch.rand(9, 1, 4, 4, generator=g))
        model = _vae(CategoricalHead(5), prior=vamp, hidden=256)
    x = _data(model, 300)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        words = encode_bits_back(model, x, batch_size=500)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        assert torch.equal(decode_bits_back(model, words, len(x), batch_size=500), x)
    finally:
        torch.set_num_threads(before)


def test_probabilities_computed_in_chunks_and_every_batch_size_round_trip(monkeypatch):
    model = _vae(CategoricalHead(5))
    x = _data(model, 37)
    monkeypatch.setattr(bitsback, "_PMF_BUDGET", 3 * 16 * 5)  # three images' pixel probabilities at a time
    for batch_size in (1, 2, 7, 37, 1000):
        words = encode_bits_back(model, x, batch_size)
        assert torch.equal(decode_bits_back(model, words, len(x), batch_size), x), batch_size


def test_no_images_leave_the_first_words():
    # pinned: decoding checks that a file ends on these words, so files written before must keep them
    assert seed_words(1).tolist() == [2225970810, 3268572521, 1149388741, 4012255915]
    assert len(seed_words(32)) == 27 and seed_words(32)[-1] % 2 == 1
    assert np.array_equal(first_words(27)[:-1], seed_words(32)[:-1]) and first_words(3)[-1] % 2 == 1
    model = _vae()
    words = encode_bits_back(model, torch.zeros(0, 1, 4, 4, dtype=torch.long))
    assert np.array_equal(words, seed_words(M))
    assert decode_bits_back(model, words, 0).shape == (0, 1, 4, 4)
    assert decode_bits_back(model, first_words(1), 0).shape == (0, 1, 4, 4)  # first words of any number up to M's
    most = len(seed_words(M))  # more words than any file starts with: more than coding 0 images writes
    with pytest.raises(DataError, match=f"holds {most + 1} words, more than .* writes for 0 images .*{most} at most"):
        decode_bits_back(model, first_words(most + 1), 0)
    other = first_words(most).copy()
    other[0] ^= 1
    with pytest.raises(DataError, match="did not end where coding began"):  # as many, but not the first words
        decode_bits_back(model, other, 0)


def test_the_first_words_are_what_the_first_image_takes_back_and_files_of_the_most_decode(monkeypatch):
    """A stack starts with the words that the first image's latents take back (from a trial), an
    eighth more: for a model of 64 latent dimensions under half of the 24 bits a dimension that
    files were given before (``seed_words``), which still decode."""
    model = _vae(m=64, hidden=32)
    x = _data(model, 50)
    first = _first_words(model, x, 500)
    assert 0.3 * len(seed_words(64)) < len(first) < 0.55 * len(seed_words(64))
    started, init = [], bitsback._Ans.__init__

    def spy(self, words):
        started.append(words)
        init(self, words)

    monkeypatch.setattr(bitsback._Ans, "__init__", spy)
    words = encode_bits_back(model, x)
    monkeypatch.undo()
    assert np.array_equal(started[-1], first)  # the real stack, after the trial's
    assert torch.equal(decode_bits_back(model, words, len(x)), x)
    monkeypatch.setattr(bitsback, "_first_words_for", lambda latents, f, x0, latent_dim: seed_words(latent_dim))
    old = encode_bits_back(model, x)
    # the first image takes other bits back from the full seed, so its latents and their cost differ a little
    assert abs((len(old) - len(words)) - (len(seed_words(64)) - len(first))) <= 3
    monkeypatch.undo()
    assert torch.equal(decode_bits_back(model, old, len(x)), x)


def test_the_batches_grow_with_what_the_stack_holds():
    assert next_batch(0, 100.0, 50, 10) == 1  # an empty stack: one image at a time
    assert next_batch(64 + 1250, 100.0, 50, 20) == 10  # 1250 bits pay for 10 images at 125
    assert next_batch(10**9, 100.0, 50, 20) == 20 and next_batch(10**9, 100.0, 3, 20) == 3
    assert next_batch(10**9, 0.0, 50, 20) == 20  # (a batch that took nothing back)


def test_damaged_or_foreign_data_are_refused():
    model = _vae()
    x = _data(model, 200)
    words = encode_bits_back(model, x, 50)
    flipped = words.copy()
    flipped[len(words) // 2] ^= 1 << 7
    other = _vae(seed=5)
    for call, problem in [
        (lambda: decode_bits_back(model, flipped, len(x), 50), "not coded with this model, or .* damaged"),
        (lambda: decode_bits_back(other, words, len(x), 50), "not coded with this model, or .* damaged"),
        (lambda: decode_bits_back(model, words[1:], len(x), 50), "not coded with this model, or .* damaged"),
        (lambda: decode_bits_back(model, words, len(x) + 5, 50), "not coded with this model, or .* damaged"),
        (lambda: decode_bits_back(model, words, len(x) - 5, 50), "not coded with this model, or .* damaged"),
        (lambda: decode_bits_back(model, np.zeros(3, np.uint32), 2), "not an ANS stack of this coder"),
        (lambda: decode_bits_back(model, np.zeros(0, np.uint32), 2), "not an ANS stack of this coder"),
        (lambda: decode_bits_back(model, words, -1), "a non-negative integer, got -1"),
        (lambda: decode_bits_back(model, words.astype(np.float64), len(x), 50), "32-bit words, .* got float64 values"),
        (lambda: decode_bits_back(model, words.astype(np.int64) - 2**32, len(x), 50), r"got integers from -\d+ to -\d+"),
        (lambda: decode_bits_back(model, words.reshape(1, -1), len(x), 50), r"a flat array of 32-bit words, got shape \(1,"),
        (lambda: decode_bits_back(model, words, len(x), 2**24), "not coded with this model, or .* damaged"),
        (lambda: decode_bits_back(model, words, 2**21, 2**24), "batch size must be at most 1048576 images"),
        (lambda: encode_bits_back(model, x, 0), "batch size must be a positive integer, got 0"),
        (lambda: encode_bits_back(model, x + 1), "its likelihood scores 0 or 1 in each entry"),
    ]:
        with pytest.raises(DataError, match=problem):
            call()
    assert torch.equal(decode_bits_back(model, words, len(x), 50), x)
    assert torch.equal(decode_bits_back(model, words.astype(np.int64), len(x), 50), x)  # (integers in range: taken)


def test_words_decoded_with_another_batch_size_than_encodings_are_refused_naming_it():
    """Each batch's size is coded uniformly over 0..batch_size: the decoder of another batch size
    refuses the words, and says that a batch size other than its own may be why (the model and the
    data are right)."""
    model = _vae()
    x = _data(model, 30)
    words = encode_bits_back(model, x, 7)
    assert torch.equal(decode_bits_back(model, words, 30, 7), x)
    for other in (5, 8, 30):
        with pytest.raises(DataError, match=f"or it was coded in batches of another size than {other}\\)$"):
            decode_bits_back(model, words, 30, other)


def test_random_words_decoded_by_a_hierarchical_vae_are_refused_as_data_not_blamed_on_the_weights():
    """Layers decoded from random words can give a lower layer's posterior a mean far outside its
    grid, which coding refuses as unsound weights; when decoding, the data are at fault."""
    model = _hvae("top-down")
    words = encode_bits_back(model, _data(model, 50), 50)
    for seed in range(60):
        noise = np.random.default_rng(seed).integers(1, 2**32, len(words), dtype=np.uint64).astype(np.uint32)
        for n in (10, 100):
            with pytest.raises(DataError, match="not coded with this model, or .* damaged"):
                decode_bits_back(model, noise, n, 50)


def test_models_that_cannot_be_coded_by_bits_back_say_why():
    with pytest.raises(
        ConfigError, match="the prior p\\(z\\) to be a diagonal Gaussian.*a mixture of them.*FlowDistribution"
    ):
        encode_bits_back(_vae(prior=FlowPrior(M, maf(M, [8], 1))), torch.zeros(2, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="probability of discrete pixels"):
        encode_bits_back(_vae(GaussianHead()), torch.zeros(2, 1, 4, 4))

    class LaplaceEncoder(nn.Module):  # a posterior of another family: named, not taken for a coder error
        def forward(self, x):
            return Independent(Laplace(torch.zeros(len(x), M), torch.ones(len(x), M)), 1)

    laplace = _vae()
    laplace.encoder = LaplaceEncoder()
    with pytest.raises(ConfigError, match="the posterior q\\(z\\|x\\) to be a diagonal Gaussian.*Independent of Laplace"):
        encode_bits_back(laplace, torch.zeros(2, 1, 4, 4, dtype=torch.long))
    assert coder_of(_vae()) is not None
    arm = GatedPixelCNN(BernoulliHead(), (1, 4, 4), channels=4, layers=2)
    with pytest.raises(ConfigError, match="a GatedPixelCNN does not declare bits-back coding \\(its coding is 'sequential'"):
        encode_bits_back(arm, torch.zeros(2, 1, 4, 4, dtype=torch.long))
    assert coder_of(_discrete_vae()) is not None  # (its categorical latents are coded exactly)


@pytest.fixture(scope="module")
def vae_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bitsback")
    argv = ["train", "--model", "vae", "--dataset", "digits-4x4", "--latent-dim", "3", "--hidden", "16", "--epochs", "2"]
    assert main([*argv, "--quiet", "--out", str(root / "vae")]) == 0
    assert main([*argv, "--prior", "mog", "--quiet", "--out", str(root / "mog")]) == 0
    assert main([*argv, "--posterior", "iaf", "--quiet", "--out", str(root / "iaf")]) == 0
    discrete = ["train", "--model", "dvae", "--dataset", "digits-4x4", "--latent-dim", "3", "--latent-classes", "4"]
    assert main([*discrete, "--hidden", "16", "--epochs", "2", "--quiet", "--out", str(root / "dvae")]) == 0
    from dgmkit.data import load_dataset

    np.save(root / "x.npy", load_dataset("digits-4x4").test.x[:, 0].numpy())  # (300, 4, 4) uint8 0/1
    return root


def test_cli_codes_a_vae_run_by_bits_back(vae_runs, capsys, tmp_path):
    r = vae_runs
    code, out, err = run(capsys, "compress", r / "vae", r / "x.npy", "--out", tmp_path / "x.dgmz")
    assert code == 0, err
    assert "the model's -ELBO, one draw a datapoint" in out
    header = read_container((tmp_path / "x.dgmz").read_bytes()).header
    assert header["coder"].startswith("constriction ANS coder, bits-back")
    code, out, err = run(capsys, "decompress", tmp_path / "x.dgmz", "--run", r / "vae", "--out", tmp_path / "back.npy")
    assert code == 0, err
    a, b = np.load(r / "x.npy"), np.load(tmp_path / "back.npy")
    assert a.dtype == b.dtype and np.array_equal(a, b)
    code, out, err = run(capsys, "compress", r / "dvae", r / "x.npy", "--out", tmp_path / "d.dgmz")  # categorical z
    assert code == 0, err
    code, out, err = run(capsys, "decompress", tmp_path / "d.dgmz", "--run", r / "dvae", "--out", tmp_path / "d.npy")
    assert code == 0 and np.array_equal(np.load(r / "x.npy"), np.load(tmp_path / "d.npy")), err
    code, out, err = run(capsys, "compress", r / "mog", r / "x.npy", "--out", tmp_path / "m.dgmz")  # a mixture prior
    assert code == 0, err
    code, out, err = run(capsys, "decompress", tmp_path / "m.dgmz", "--run", r / "mog", "--out", tmp_path / "m.npy")
    assert code == 0 and np.array_equal(np.load(r / "x.npy"), np.load(tmp_path / "m.npy")), err
    code, _, err = run(capsys, "compress", r / "iaf", r / "x.npy", "--out", tmp_path / "i.dgmz")
    assert code == 1 and "which cannot be compressed: bits-back coding needs the posterior q(z|x)" in err
    assert "FlowDistribution" in err and not (tmp_path / "i.dgmz").exists()


@pytest.mark.parametrize("run_name", ["vae", "mog", "dvae"])
def test_compress_states_the_bits_of_the_stacks_first_words_in_its_payload(
    vae_runs, capsys, tmp_path, monkeypatch, run_name
):
    """A file pays the stack's first words once, whatever its images: the `compressed` line says
    how many bits of its payload they are, the words that decoding finds left at the end."""
    r = vae_runs
    np.save(tmp_path / "one.npy", np.load(r / "x.npy")[:1])
    left = []
    monkeypatch.setattr(
        bitsback, "_check_ended", lambda words, *a, f=bitsback._check_ended: left.append(len(words)) or f(words, *a)
    )
    for name, n in (("one.npy", 1), ("x.npy", 300)):
        source = tmp_path / name if n == 1 else r / name
        code, out, err = run(capsys, "compress", r / run_name, source, "--out", tmp_path / f"{n}.dgmz")
        assert code == 0, err
        said = re.search(r"payload ([0-9.]+), of which ([0-9.]+) the stack's first words, (\d+) bits once a file\)", out)
        assert said, out
        payload = read_container((tmp_path / f"{n}.dgmz").read_bytes()).payload
        model = load_run(str(r / run_name), device="cpu").model
        decode_bits_back(model, payload, n, min(n, 500))
        assert int(said[3]) == 32 * left[-1] and float(said[2]) == round(32 * left[-1] / (16 * n), 4)
        assert float(said[1]) == round(32 * len(payload) / (16 * n), 4) and 0 < left[-1] < len(payload)


def test_decompress_refuses_a_bits_back_payload_larger_than_its_images_can_fill(vae_runs, capsys, tmp_path, monkeypatch):
    """300 images of 16 pixels with 3 latents take at most 24 bits for each of their 21 values and
    the first words: a payload with words added under it beyond that is refused before decoding, in
    one line, nothing written."""
    from tests.test_safety_coding import assert_fails_and_changes_nothing, rewrite, split_container

    r = vae_runs
    code, _, err = run(capsys, "compress", r / "vae", r / "x.npy", "--out", tmp_path / "x.dgmz")
    assert code == 0, err
    data = (tmp_path / "x.dgmz").read_bytes()
    _, payload = split_container(data)
    most = math.ceil(bitsback.most_bits(3, 300, 16) / 32)
    assert most == 6 + 24 * 300 * 21 // 32  # (6 first words at most for 3 latents)
    steps = []
    monkeypatch.setattr(
        bitsback, "_pixel_probabilities", lambda *a, f=bitsback._pixel_probabilities: steps.append(1) or f(*a)
    )
    (tmp_path / "evil.dgmz").write_bytes(rewrite(data, payload=payload.rjust(4 * (most + 1), b"\x07")))
    argv = ["decompress", tmp_path / "evil.dgmz", "--run", r / "vae", "--out", tmp_path / "o.npy"]
    assert_fails_and_changes_nothing(
        capsys, [tmp_path, r], argv, f"holds {most + 1} words, more than bits-back coding with this model writes for 300 "
    )
    assert not steps


def test_a_narrow_posterior_draws_only_near_its_mean_and_gives_the_bits_back():
    """The coder floors every bucket of a model's range at 2**-24: over the prior's whole range a
    narrow posterior would draw about one latent in a thousand anywhere in it (each costing
    hundreds of bits through p(x|z)); within its window the floor's draws stay near its mean."""
    words = np.frombuffer(np.random.default_rng(0).bytes(4 * 200_000), dtype=np.uint32).copy()
    words[-1] |= 1
    coder = bitsback._Ans(words)
    grid, families = bitsback._Grid(torch.zeros(1), torch.ones(1)), bitsback._Families(1)
    rng = np.random.default_rng(1)
    mean, std = rng.uniform(-3000, 3000, 200_000), np.full(200_000, 5.0)  # in buckets
    index = grid.take(coder, families, (mean, std))
    assert np.abs(index - mean).max() <= 64.5  # 8 scales is 40 buckets: a window of +-64
    assert 0.97 < np.std((index - mean) / std) < 1.03
    grid.give(coder, families, index, (mean, std))
    assert np.array_equal(coder.stack.get_compressed(), words)


def _hvae(posterior: str, prior: str = "standard", sizes: tuple[int, ...] = (3, 2), seed: int = 0, **kw):
    """A hierarchical VAE of 4x4 binary images; ``residual``: the deep top-down VAE, latent layers
    of one channel at 2x2 (``sizes[0]`` of them) and 4x4 (``sizes[1]``)."""
    from dgmkit.families import get_family

    torch.manual_seed(seed)
    if posterior == "residual":
        kw = dict(res_resolutions=[2, 4]) | kw
        kw |= dict(res_layers=list(sizes), res_width=8, res_bottleneck=4, res_latent_channels=1)
    else:
        kw |= dict(latent_sizes=list(sizes))
    cfg = get_family("hvae")(posterior=posterior, prior=prior, hidden=[16], **kw)
    if prior == "vampprior":
        cfg = dataclasses.replace(cfg, prior_components=4)
    return cfg.build((1, 4, 4), 2).eval()


def _patterns(n: int, seed: int = 0) -> torch.Tensor:
    """n 4x4 binary images: eight random patterns, each pixel flipped with probability 0.05."""
    g = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(8, 1, 4, 4, generator=g) < 0.5).long()
    x = patterns[torch.randint(0, 8, (n,), generator=g)]
    return torch.where(torch.rand(x.shape, generator=g) < 0.05, 1 - x, x)


def _fitted(model, steps: int = 100):
    """The model after ``steps`` Adam steps on the ELBO of ``_patterns``: at initialisation the
    residual VAE's posteriors barely depend on x, and chained bits-back coding of latents whose
    posterior is the same for every image pays several percent over the ELBO (a flat VAE too)."""
    x = _patterns(512, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for i in range(steps):
        loss = -model.elbo_terms(x[(64 * i) % 512 :][:64])["elbo"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize(
    "posterior, prior, sizes",
    [
        ("top-down", "standard", (3, 2)),
        ("top-down", "vampprior", (3, 2)),
        ("ladder", "mog", (3, 2, 2)),
        ("bottom-up", "vampprior", (3,)),  # (one layer: q(z_1 | x) is both; it was refused as bottom-up)
        ("residual", "standard", (2, 1)),
        ("residual", "vampprior", (1, 2)),
    ],
)
def test_a_hierarchical_vae_codes_layer_by_layer_at_its_negative_elbo(posterior, prior, sizes):
    """Each layer is taken back top first on the grid of its prior given the layers above, and
    coded under the priors bottom first: the rate is the hierarchical ELBO's (per-layer KL terms
    in closed form), and the round trip is exact, with a mixture at the top too; the deep
    residual VAE (latent layers at 1x1 and 2x2) as well, fitted briefly."""
    if posterior == "residual":
        model = _fitted(_hvae(posterior, prior, sizes, res_resolutions=[1, 2]))
        _round_trip_at_the_elbo(model, _patterns(600), batch_size=100)
    else:
        model = _hvae(posterior, prior, sizes)
        _round_trip_at_the_elbo(model, _data(model, 600), batch_size=100)


def test_hierarchical_models_that_cannot_be_coded_layer_by_layer_say_why():
    x = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match="draws the layers from the top down.*this model's is bottom-up"):
        encode_bits_back(_hvae("bottom-up"), x)
    from dgmkit.families import get_family

    pixel = get_family("pixelvae")(hidden=[16], latent_sizes=[2], pixelcnn_channels=4, pixelcnn_layers=2).build((1, 4, 4), 2)
    with pytest.raises(ConfigError, match="a PixelVAE does not declare bits-back coding"):
        encode_bits_back(pixel, x)
    with pytest.raises(ConfigError, match="the top prior p\\(z_L\\) to be a diagonal Gaussian.*FlowDistribution"):
        encode_bits_back(_hvae("residual", "flow", (1, 1), res_resolutions=[1, 2]), x)
    with pytest.raises(ConfigError, match="probability of discrete pixels"):
        encode_bits_back(_hvae("residual", "standard", (1, 1), res_resolutions=[1, 2], likelihood="gaussian"), x.float())


@pytest.mark.parametrize(
    "posterior, prior, sizes", [("ladder", "mog", (3, 2, 2)), ("top-down", "standard", (2, 2)), ("residual", "mog", (2, 2))]
)
def test_each_layers_grid_is_its_prior_given_the_layers_above_and_its_posterior_the_models(posterior, prior, sizes):
    """The coder's pass, a layer at a time, sees what the model's own posterior pass sees at the
    same latents: each layer's grid is its prior given the layers above (the top layer's the top
    prior's, here a mixture's) and its posterior is q(z_l | x, z_{>l}); without x the priors are
    the same."""
    model = _hvae(posterior, prior, sizes)
    codec = bitsback._codec_of(model)[1]
    x = _data(model, 5)
    seen: dict[str, dict] = {"x": {}, "priors": {}}
    rng = np.random.default_rng(0)

    def choose(record):
        def pick(layer, grid, q):
            record[layer] = (grid, q)
            return rng.integers(-300, 300, len(x) * model.sizes[layer])  # any buckets: z is what follows from them

        return pick

    _, z = codec._walk(x, len(x), choose(seen["x"]))
    rng = np.random.default_rng(0)
    _, z_again = codec._walk(None, len(x), choose(seen["priors"]))
    assert torch.equal(z, z_again)
    draws = {d.index: d for d in model.path(x, given=z)}
    top = model.num_layers - 1
    assert seen["x"][top][0] is codec.top and isinstance(codec.top, bitsback._MixtureGrid) == (prior == "mog")
    for layer in range(model.num_layers):
        (grid, q), (grid_p, q_p) = seen["x"][layer], seen["priors"][layer]
        assert q_p is None
        torch.testing.assert_close(q.mean, draws[layer].q.mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(q.stddev, draws[layer].q.stddev, rtol=1e-5, atol=1e-6)
        if layer < top:
            p = draws[layer].p
            torch.testing.assert_close(grid.loc, p.mean.double(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(grid.scale, p.stddev.double(), rtol=1e-5, atol=1e-6)
            assert torch.equal(grid_p.loc, grid.loc) and torch.equal(grid_p.scale, grid.scale)


def test_a_value_coded_onto_the_stack_adds_at_most_24_bits_and_one_taken_back_none():
    """What ``most_bits`` rests on: the coder's models quantize to 2**-24 (its precision), so a value
    at that floor (a pixel, a latent in the prior's tail, a batch size) adds 24 bits to the stack and
    no value more, and taking values back never adds any. A constriction of another precision would
    break the bound."""
    words = np.frombuffer(np.random.default_rng(0).bytes(4 * 64), dtype=np.uint32).copy()
    words[-1] |= 1
    ans, f = bitsback._Ans(words), bitsback._Families(2**20)
    bits = [ans.bits()]
    sure = np.tile([1.0, 0.0], (1000, 1))
    ans.push(np.ones(1000, np.int32), f.categorical, sure)  # each pixel at the floor
    bits.append(ans.bits())
    ans.push(np.full(1000, bitsback._EDGE, np.int32), f.gauss, np.zeros(1000), np.full(1000, 1 / bitsback.BUCKET))
    bits.append(ans.bits())
    for _ in range(1000):
        ans.push(np.int32(0), f.sizes)  # (about 20 bits: a uniform value of 2**20 + 1)
    bits.append(ans.bits())
    assert bits[1] - bits[0] == 24 * 1000 and 23.9 * 1000 < bits[2] - bits[1] <= 24 * 1000
    assert 19.9 * 1000 < bits[3] - bits[2] <= 24 * 1000
    for _ in range(200):
        before = ans.bits()
        ans.pop(f.gauss, np.zeros(5), np.full(5, 3.0))
        ans.pop(f.categorical, np.full((5, 3), 1 / 3))
        assert ans.bits() <= before


def _sharp(model):
    """``model`` with its p(x|z) 100 times as sharp: noise images then cost up to 24 bits a pixel,
    the coder's most."""
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(100.0)
    return model


@pytest.mark.parametrize(
    "make",
    [
        lambda: _sharp(_vae(CategoricalHead(5))),
        lambda: _vae(prior=_mixture_prior("mog")),  # (a component coded with each image)
        lambda: _discrete_vae(),
        lambda: _hvae("ladder", "mog", (3, 2, 2)),
    ],
    ids=["sharp-categorical", "mog-prior", "discrete", "hvae-mog-top"],
)
def test_the_stack_never_holds_more_than_24_bits_a_coded_value_and_its_first_words(make, monkeypatch):
    """``most_bits``, the bound the decoder checks a payload against before decoding and its stack
    after each batch: at every batch of the encoder the stack holds at most the first words and 24
    bits for each pixel, latent, mixture component and batch size coded so far (noise, batches of
    one and of eight); a sharp model's file reaches over half of it."""
    model = make()
    levels, pixels = model.coding_levels, 16
    x = torch.randint(0, levels, (40, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    seen = []

    def spy(stack_bits, bits_per_image, left, batch_size, f=bitsback.next_batch):
        seen.append((stack_bits, len(x) - left))
        return f(stack_bits, bits_per_image, left, batch_size)

    monkeypatch.setattr(bitsback, "next_batch", spy)
    for batch in (1, 8):
        seen.clear()
        words = encode_bits_back(model, x, batch)
        assert len(seen) >= len(x) // batch
        for bits, coded in seen:
            assert bits <= bitsback.most_bits(model.latent_dim, coded, pixels), (bits, coded)
        assert 32 * len(words) <= bitsback.most_bits(model.latent_dim, len(x), pixels)
        assert torch.equal(decode_bits_back(model, words, len(x), batch), x)  # (the checks pass a real file)
    if levels == 5:
        assert 32 * len(words) > 0.5 * bitsback.most_bits(model.latent_dim, len(x), pixels)


def test_a_payload_larger_than_its_images_can_fill_is_refused_before_decoding_or_within_a_few_images(monkeypatch):
    """A file's images fill at most ``most_bits``: a payload beyond it (another payload's words
    under this one's, say) is refused before any pixel is decoded, naming its size and the most;
    one just within it, once the images left to decode could not have left what the stack still
    holds, long before the end (it decoded every image before failing on the first words)."""
    model = _vae(CategoricalHead(5))
    x = _data(model, 200)
    words = encode_bits_back(model, x, 10)
    most = math.ceil(bitsback.most_bits(model.latent_dim, len(x), 16) / 32)
    steps = []
    decoded = bitsback._pixel_probabilities
    monkeypatch.setattr(bitsback, "_pixel_probabilities", lambda m, z, levels: steps.append(len(z)) or decoded(m, z, levels))
    junk = np.random.default_rng(0).integers(1, 2**32, most, dtype=np.uint64).astype(np.uint32)
    over = np.concatenate([junk[: most + 1 - len(words)], words])  # (the junk at the bottom of the stack)
    with pytest.raises(
        DataError,
        match=f"^the compressed data holds {most + 1} words, more than bits-back .* for 200 "
        f"images of 16 pixels \\({most} at most",
    ):
        decode_bits_back(model, over, len(x), 10)
    assert not steps
    within = over[1:]  # as many words as 200 images can fill
    with pytest.raises(
        DataError, match=r"with (\d+) of its 200 images left to decode, its stack holds \d+ bits, more "
    ) as e:
        decode_bits_back(model, within, len(x), 10)
    assert int(re.search(r"with (\d+) of", str(e.value)).group(1)) >= 180
    assert 0 < sum(steps) <= 20  # refused within the first two batches of 10 images
    assert torch.equal(decode_bits_back(model, words, len(x), 10), x)


def test_many_barely_informative_latents_pay_more_than_the_negative_elbo(capsys, tmp_path):
    """docs/uses/compression.md: a VAE of 256 latents and a categorical likelihood, trained 2 epochs
    on the digits (seed 0), codes the 300 test images at 1.03 to 1.04 times its one-draw -ELBO,
    the payload less the first words (measured 1.042; seeds 1 and 2 gave 1.033 and 1.035)."""
    from dgmkit.data import load_dataset

    np.save(tmp_path / "x.npy", load_dataset("digits").test.x.numpy().astype(np.uint8))
    flags = ["--epochs", "2", "--hidden", "32", "--likelihood", "categorical", "--latent-dim", "256", "--quiet"]
    code, _, err = run(capsys, "train", "--model", "vae", "--dataset", "digits", *flags, "--out", tmp_path / "r")
    assert code == 0, err
    code, out, err = run(capsys, "compress", tmp_path / "r", tmp_path / "x.npy", "--out", tmp_path / "x.dgmz")
    assert code == 0, err
    said = re.search(r"one draw a datapoint: ([0-9.]+) bits/dim; payload ([0-9.]+), of which ([0-9.]+) the stack", out)
    assert said, out
    elbo, payload, first = map(float, said.groups())
    assert 1.03 < (payload - first) / elbo < 1.045, (payload, first, elbo)
