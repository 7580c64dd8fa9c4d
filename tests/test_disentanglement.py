"""Disentanglement metrics recover known answers: MIG is 1 when each factor has its own code
dimension, ~0 for noise and 0 when two dimensions copy one factor; its mutual information is
the closed form on small discrete cases; the FactorVAE metric is 1 for a code equal to the
factors and near chance for noise."""

import math

import pytest
import torch

from dgmkit.evaluation.disentanglement import factor_vae_score, mutual_information_gap

SIZES = (3, 6, 10, 16, 16)


def grid(sizes=SIZES) -> torch.Tensor:
    g = torch.meshgrid(*(torch.arange(s) for s in sizes), indexing="ij")
    return torch.stack([t.reshape(-1) for t in g], 1)


def test_mig_is_one_when_each_factor_has_its_own_dimension():
    f = grid()
    codes = f.double() * torch.tensor([1.0, -0.3, 2.0, 0.1, 5.0]) + 7  # any scale, any sign
    m = mutual_information_gap(codes, f)
    assert m.mig == pytest.approx(1.0, abs=1e-9)
    assert m.best.tolist() == [0, 1, 2, 3, 4]
    assert torch.allclose(m.entropy, torch.tensor([math.log(s) for s in SIZES], dtype=torch.float64))
    # the full grid: the factors are independent, so no other dimension tells anything
    off = m.mutual_information - torch.diag(torch.diag(m.mutual_information))
    assert off.abs().max() < 1e-9


def test_mig_is_about_zero_for_noise_and_zero_for_a_copied_dimension():
    f = grid()
    noise = torch.randn(len(f), 8, generator=torch.Generator().manual_seed(0))
    assert mutual_information_gap(noise, f).mig < 0.01
    codes = torch.cat([f.double(), f[:, :1].double()], 1)  # factor 0 told twice
    m = mutual_information_gap(codes, f)
    assert m.gaps[0] == pytest.approx(0.0, abs=1e-9)
    assert m.mig == pytest.approx(4 / 5, abs=1e-9)


def test_mutual_information_matches_the_closed_form():
    # v uniform on 4 values; c = v // 2 tells one bit of the two: I = log 2
    v = torch.arange(4).repeat(250)
    c = torch.stack([(v // 2).double(), torch.zeros(1000, dtype=torch.float64)], 1)
    m = mutual_information_gap(c, v[:, None], bins=2)
    assert float(m.mutual_information[0, 0]) == pytest.approx(math.log(2), abs=1e-12)
    assert float(m.mutual_information[1, 0]) == pytest.approx(0.0, abs=1e-12)
    assert m.mig == pytest.approx(0.5, abs=1e-12)


def test_mig_refuses_bad_input():
    f = grid((2, 3))
    with pytest.raises(ValueError, match="same N"):
        mutual_information_gap(torch.zeros(5, 2), f)
    with pytest.raises(ValueError, match="NaN"):
        mutual_information_gap(torch.full((len(f), 2), float("nan")), f)
    with pytest.raises(ValueError, match="integer"):
        mutual_information_gap(torch.zeros(len(f), 2), f.double())
    with pytest.raises(ValueError, match="at least 2 code"):
        mutual_information_gap(torch.zeros(len(f), 1), f)


def test_factor_vae_metric_is_one_for_the_factors_and_near_chance_for_noise():
    f = grid()

    def identity(images):  # the "images" are the factors themselves, with an inactive dimension
        return torch.cat([images.double(), torch.zeros(len(images), 1, dtype=torch.float64)], 1)

    data_codes = identity(f)
    s = factor_vae_score(identity, lambda x: x, SIZES, data_codes, votes=200, batch=32)
    assert s.accuracy == 1.0 and s.train_accuracy == 1.0
    assert s.assignment.tolist() == [0, 1, 2, 3, 4, -1]
    assert s.active.tolist() == [True] * 5 + [False]

    g = torch.Generator().manual_seed(1)

    def noise(images):
        return torch.randn(len(images), 6, generator=g, dtype=torch.float64)

    s = factor_vae_score(noise, lambda x: x, SIZES, noise(f), votes=300, batch=32)
    assert s.accuracy < 0.45  # chance is 1/5; the classifier has 6 dimensions x 5 factors to fit


def test_factor_vae_metric_with_no_active_dimension_is_chance():
    f = grid((2, 2))
    s = factor_vae_score(lambda x: torch.zeros(len(x), 3), lambda x: x, (2, 2), torch.zeros(len(f), 3), votes=5)
    assert s.accuracy == 0.5 and not s.active.any()


def test_codes_are_cut_into_equal_width_bins_over_their_range():
    from dgmkit.evaluation.disentanglement import _bin

    codes = torch.arange(10.0).double()[:, None]  # range 0..9, 5 bins of width 1.8
    assert _bin(codes, 5)[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_codes_whose_range_overflows_are_binned_as_the_same_codes_scaled_down():
    # finite float64 codes more than 1.8e308 apart: hi - lo was inf, every bin index NaN, and the
    # dimension that determines the factor was said to tell nothing about it (MIG 0, not 1)
    f = torch.tensor([0, 1, 0, 1] * 5)[:, None]
    spread = torch.tensor([-1e308, 1e308, 0.0, 5e307] * 5, dtype=torch.float64)
    c = torch.stack([spread, torch.zeros(20, dtype=torch.float64)], 1)
    big, small = mutual_information_gap(c, f, bins=4), mutual_information_gap(c / 2.0**1000, f, bins=4)
    assert float(big.mutual_information[0, 0]) == pytest.approx(math.log(2), abs=1e-12)
    assert torch.equal(big.mutual_information, small.mutual_information)
    assert big.mig == pytest.approx(1.0, abs=1e-12)


def test_mig_refuses_a_number_of_bins_that_is_not_a_whole_number():
    f = grid((2, 3))
    for bins in (2.5, True, 1):
        with pytest.raises(ValueError, match="bins"):
            mutual_information_gap(torch.randn(len(f), 2), f, bins=bins)


def test_the_factor_vae_score_never_votes_for_an_inactive_dimension():
    """Code 0 is constant (inactive: its within-batch variance is 0 too); codes 1 and 2 are the two
    factors. Each vote's fixed factor has zero variance in its own code: the score is 1."""

    def encode(images):
        f = images.double()
        return torch.stack([torch.zeros(len(f), dtype=torch.float64), f[:, 0], f[:, 1]], 1)

    sizes = (4, 5)
    grid = torch.cartesian_prod(torch.arange(4), torch.arange(5))
    s = factor_vae_score(encode, lambda f: f, sizes, encode(grid), votes=50, batch=16)
    assert s.active.tolist() == [False, True, True] and s.assignment.tolist() == [-1, 0, 1]
    assert s.accuracy == 1.0 and s.train_accuracy == 1.0


def test_the_factor_vae_accuracy_is_measured_on_fresh_votes_not_on_the_fitted_ones():
    """An encoder whose code changes after the classifier's votes: during the first ``votes``
    batches each factor is its own dimension (so each dimension is assigned its factor and the
    training accuracy is 1); afterwards the dimensions are rotated, so every fresh vote lands on a
    dimension assigned to another factor and the accuracy on them is 0. Measured on the votes
    the classifier was fitted on, it would be 1."""
    sizes, votes = (4, 5, 6), 40
    calls = []

    def encode(f):
        calls.append(len(f))
        f = f.double()
        return f if len(calls) <= votes else f.roll(1, dims=1)  # factor k in dimension (k + 1) % 3

    data_codes = torch.cartesian_prod(*(torch.arange(s) for s in sizes)).double()
    s = factor_vae_score(encode, lambda f: f, sizes, data_codes, votes=votes, batch=16)
    assert len(calls) == 2 * votes and set(calls) == {16}  # votes to fit, as many fresh ones to measure
    assert s.assignment.tolist() == [0, 1, 2] and s.train_accuracy == 1.0
    assert s.accuracy == 0.0


def test_a_factor_that_does_not_vary_has_no_gap_and_is_left_out_of_the_mean():
    """A constant factor counted as a gap of 0 (0/0) and lowered the mean."""
    f = grid((3, 4))
    codes = f.double()
    assert mutual_information_gap(codes, f).mig == pytest.approx(1.0, abs=1e-9)
    held = torch.cat([f, torch.zeros(len(f), 1, dtype=f.dtype)], 1)  # a third factor at one value
    m = mutual_information_gap(codes, held)
    assert m.mig == pytest.approx(1.0, abs=1e-9) and m.entropy[2] == 0 and m.gaps[2] == 0
    with pytest.raises(ValueError, match="no factor takes more than one value"):
        mutual_information_gap(codes, torch.zeros_like(f))
    from dgmkit.cli.disentangle import format_disentanglement

    factors = [{"name": n, "values": 3, "entropy": float(m.entropy[k]), "best_dim": 0, "gap": float(m.gaps[k])}
               for k, n in enumerate("abc")]  # fmt: skip
    shown = format_disentanglement({"factors": factors, "mig": m.mig, "mig_estimator": "", "factor_vae": None,
                                    "split": "test", "n": len(f), "latent_dim": 2})  # fmt: skip
    assert shown.splitlines()[3].endswith("-  (one value in these data: left out of MIG)")
    assert shown.splitlines()[1].endswith("1.000")


def test_a_factor_of_one_value_is_shown_with_no_best_dimension():
    """No dimension tells a factor of one value anything (every I(c_j; v) is 0): its best
    dimension, the argmax of zeros, was shown as dimension 0."""
    from dgmkit.cli.disentangle import format_disentanglement

    factors = [{"name": n, "values": 3, "entropy": h, "best_dim": 0, "gap": 1.0 if h else 0.0}
               for n, h in (("a", 1.1), ("c", 0.0))]  # fmt: skip
    shown = format_disentanglement({"factors": factors, "mig": 1.0, "mig_estimator": "", "factor_vae": None,
                                    "split": "test", "n": 9, "latent_dim": 2})  # fmt: skip
    assert shown.splitlines()[1].split()[3] == "0"
    assert shown.splitlines()[2].split()[:5] == ["c", "3", "0.000", "-", "-"]


def test_the_factor_vae_score_refuses_codes_of_a_vote_that_are_not_finite_and_counts_that_are_not_whole():
    """A variance of NaN within a vote's batch was its argmin: a NaN code won every vote it was
    in, and the accuracy came out as a number (0.56 here) with nothing said."""
    data = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def encode(x):
        c = torch.cat([x, torch.zeros(len(x), 1, dtype=torch.float64)], 1)
        c[0, 2] = float("nan")
        return c

    with pytest.raises(ValueError, match="codes of a vote's batch .* hold NaN or inf"):
        factor_vae_score(encode, lambda f: f.double(), [3, 4], data, votes=20, batch=8)
    for name, kw in (("votes", {"votes": True}), ("votes", {"votes": 1.5}), ("batch", {"batch": 2.5})):
        with pytest.raises(ValueError, match=f"{name} must be an integer"):
            factor_vae_score(lambda x: x.double(), lambda f: f.double(), [3, 4], data[:, :2], **kw)


def test_mutual_information_and_mig_equal_scikit_learn_on_the_same_bins():
    """Each I(c_j; v_k) is scikit-learn's plug-in mutual_info_score of the binned column and the
    factor (any factor values, not 0..K-1), H(v_k) SciPy's entropy, and MIG the mean normalised gap."""
    from scipy.stats import entropy
    from sklearn.metrics import mutual_info_score

    from dgmkit.evaluation.disentanglement import _bin

    g = torch.Generator().manual_seed(1)
    for n, m, bins in ((50, 3, 5), (300, 4, 20), (7, 2, 3)):
        codes = torch.randn(n, m, dtype=torch.float64, generator=g)
        codes[:, 1] += 3 * torch.randint(3, (n,), generator=g)  # a column that tells something
        factors = torch.randint(3, (n, 2), generator=g) * 5 + 2
        factors[:, 1] = torch.where(codes[:, 1] > 2, 9, 4)
        r = mutual_information_gap(codes, factors, bins=bins)
        b = _bin(codes, bins).numpy()
        mi = [[mutual_info_score(factors[:, k], b[:, j]) for k in range(2)] for j in range(m)]
        mi = torch.tensor(mi, dtype=torch.float64)
        h = torch.tensor([entropy(factors[:, k].unique(return_counts=True)[1]) for k in range(2)], dtype=torch.float64)
        assert torch.allclose(r.mutual_information, mi, atol=1e-12)
        assert torch.allclose(r.entropy, h, atol=1e-12)
        top = mi.sort(0, descending=True).values
        assert r.mig == pytest.approx(float(((top[0] - top[1]) / h).mean()), abs=1e-12)


def test_a_factor_of_one_value_draws_no_factor_vae_votes():
    """A factor of one value was drawn for a quarter of the votes: fixing it fixed nothing, the
    dimension of least variance was any, and codes equal to the factors scored 0.76, not 1."""
    sizes = (3, 1, 4, 5)
    f = grid(sizes)
    s = factor_vae_score(lambda x: x.double(), lambda x: x, sizes, f.double(), votes=100, batch=16)
    assert s.accuracy == 1.0 and s.train_accuracy == 1.0 and s.assignment.tolist() == [0, -1, 2, 3]
    none = factor_vae_score(lambda x: torch.zeros(len(x), 2), lambda x: x, sizes, torch.zeros(len(f), 2), votes=5)
    assert none.accuracy == pytest.approx(1 / 3)  # chance among the 3 factors that vary
    with pytest.raises(ValueError, match="no factor takes more than one value"):
        factor_vae_score(lambda x: x.double(), lambda x: x, (1, 1), torch.randn(4, 2), votes=5)
    for bad in ((3, 2.5), (3, True), (3, "4"), (0, 3)):  # (2.5 was taken as 2)
        with pytest.raises(ValueError, match="factor [01]'s size must be"):
            factor_vae_score(lambda x: x.double(), lambda x: x, bad, torch.randn(4, 2), votes=5)
    from dgmkit.cli.disentangle import format_disentanglement

    factors = [{"name": n, "values": v, "entropy": 0.0 if v == 1 else 1.0, "best_dim": 0, "gap": 0.0}
               for n, v in zip("abcd", sizes)]  # fmt: skip
    fv = {"accuracy": none.accuracy, "active": 0}
    shown = format_disentanglement({"factors": factors, "mig": 0.0, "mig_estimator": "", "factor_vae": fv,
                                    "split": "test", "n": len(f), "latent_dim": 2})  # fmt: skip
    assert "FactorVAE metric 0.3333  (chance, 1/3:" in shown


def test_mig_refuses_data_without_factors_and_complex_codes_by_name():
    """No factor (K = 0) ended in torch.stack's RuntimeError; complex codes lost their imaginary part."""
    f = grid((2, 3))
    with pytest.raises(ValueError, match="at least one factor"):
        mutual_information_gap(torch.randn(len(f), 2), f[:, :0])
    with pytest.raises(ValueError, match="not complex"):
        mutual_information_gap(torch.randn(len(f), 2, dtype=torch.complex64), f)


def test_the_factor_vae_score_refuses_an_encoder_whose_codes_are_not_as_wide_as_the_data_codes():
    """encode must give (batch, M) for a vote's images, as data_codes are (N, M): a width of 2 for
    M = 3 was broadcasting's raw RuntimeError, and a vector (3,) for 3 images, one value each, was
    divided by the 3 scales and gave every vote to dimension 0, silently."""
    data = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for encode, shape in ((lambda f: f[:, :2].double(), r"\(3, 2\)"), (lambda f: f[:, 0].double(), r"\(3,\)")):
        with pytest.raises(ValueError, match=rf"encode gave codes of shape {shape} for a vote's 3 images"):
            factor_vae_score(encode, lambda f: f, [2, 2, 2], data, votes=4, batch=3)


def test_mig_of_a_factor_of_many_values_with_many_bins_needs_no_dense_joint_table():
    """The joint counts of a code dimension and a factor come from the pairs that occur: a dense
    (M, bins, values) table took 4 * 10**4 * 200000 doubles (64 GB) for a factor that names each
    datapoint, and the numbers are the same (the other tests check them against numpy)."""
    codes = torch.randn(200_000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = mutual_information_gap(codes, torch.arange(200_000)[:, None], bins=10**4)
    h = math.log(200_000)  # every value once: H(v) = log N, and I(c_j; v) = H(c_j), the binned code's entropy
    assert float(r.entropy[0]) == pytest.approx(h, rel=1e-12)
    binned = ((codes - codes.min(0).values) / ((codes.max(0).values - codes.min(0).values) / 10**4)).floor().clamp(0, 9999)
    for j in range(4):
        p = torch.bincount(binned[:, j].long(), minlength=10**4).double() / 200_000
        h_code = float(-(p[p > 0] * p[p > 0].log()).sum())
        assert float(r.mutual_information[j, 0]) == pytest.approx(h_code, rel=1e-9)


def test_the_factor_vae_score_refuses_complex_codes_by_name():
    """Complex data codes, or an encoder's complex codes, lost their imaginary part (a warning) and were scored."""
    data = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="data_codes must be real numbers, not complex"):
        factor_vae_score(lambda f: f.double(), lambda f: f, [2, 2, 2], data.to(torch.complex128), votes=4, batch=3)
    with pytest.raises(ValueError, match="codes of a vote's batch .* must be real numbers, not complex"):
        factor_vae_score(lambda f: f.to(torch.complex128), lambda f: f, [2, 2, 2], data, votes=4, batch=3)
