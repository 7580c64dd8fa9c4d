"""What a mutation sweep of the evaluation (the estimates of log p(x), the report's numbers, the
OOD metrics and the typicality test) and of the training's step guard and batches found
unchecked: each test checks a property against an independent computation (by hand, by
enumeration, with NumPy or PIL, from the recorded times or per-row terms)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from dgmkit._rng import seeded
from dgmkit.data import DataTransform
from dgmkit.evaluation import estimate, evaluate
from dgmkit.evaluation.estimates import draw_orders
from dgmkit.evaluation.metrics import observed_entries
from dgmkit.evaluation.ood import TypicalityTest, fpr_at_tpr, typicality_test
from dgmkit.evaluation.ood_scores import ood_scores, png_code_length
from dgmkit.models import GaussianDiffusion, LinearSchedule, MaskedDiffusion
from dgmkit.training.batches import BatchSource, in_precision
from dgmkit.training.step_guard import GradientGuard
from linear_gaussian import data, make


# ---------------------------------------------------------------------------------- ood.py
def _fpr_by_enumeration(a: np.ndarray, b: np.ndarray, tpr: float) -> float:
    """The share of a at or above the largest threshold that flags at least ``tpr`` of b."""
    t = max(t for t in np.unique(np.r_[a, b]) if (b >= t).mean() >= tpr)
    return float((a >= t).mean())


def test_the_fpr_at_95_tpr_is_at_the_first_threshold_reaching_95_not_94_percent():
    """94 of 100 OOD scores at 10, a threshold that flags no in-distribution input: 94% is not 95%."""
    a = np.r_[np.full(5, 5.0), np.full(5, -1.0)]
    b = np.r_[np.full(94, 10.0), np.full(6, 0.0)]
    for tpr in (0.9, 0.94, 0.95, 1.0):  # 1.0: every OOD input flagged, a valid target
        assert fpr_at_tpr(torch.tensor(a), torch.tensor(b), tpr) == _fpr_by_enumeration(a, b, tpr)
    assert fpr_at_tpr(torch.tensor(a), torch.tensor(b), 0.95) == 0.5
    with pytest.raises(ValueError, match="tpr must be in"):
        fpr_at_tpr(torch.tensor(a), torch.tensor(b), 0.0)


def test_the_typicality_test_refuses_what_it_cannot_fit_or_score():
    t, v = torch.tensor([1.0, 2.0]), torch.tensor([1.5, 2.5])
    for kwargs, problem in (
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"alpha": 0.0}, "need 0 < alpha < 1"),
        ({"alpha": 1.0}, "need 0 < alpha < 1"),
        ({"alpha": float("nan")}, "need 0 < alpha < 1"),
        ({"bootstraps": 0}, "bootstraps must be an integer >= 1"),
    ):
        with pytest.raises(ValueError, match=problem):
            typicality_test(t, v, **kwargs)
    with pytest.raises(ValueError, match="finite training and held-out"):
        typicality_test(t, torch.tensor([]))
    with pytest.raises(ValueError, match="need at least 3 inputs"):  # not an empty statistic
        TypicalityTest(entropy=0.0, epsilon=1.0, batch_size=3, alpha=0.01).statistic(torch.tensor([1.0, 2.0]))


def test_the_bootstrap_draws_every_held_out_value_and_epsilon_interpolates_its_quantile():
    """Held-out NLLs 0 and 1, H = 0: each bootstrap statistic is 0 or 1, half of them 1. The 0.6
    quantile of 10000 is 1 (the last held-out value is drawn too); of two statistics, the 0.7
    quantile interpolates: 0, 1, or 0.7 where the two differ (which among 20 seeds some do)."""
    t, v = torch.tensor([0.0]), torch.tensor([0.0, 1.0])
    assert typicality_test(t, v, alpha=0.4, generator=torch.Generator().manual_seed(0)).epsilon == 1.0
    eps = {round(typicality_test(t, v, alpha=0.3, bootstraps=2, generator=torch.Generator().manual_seed(s)).epsilon, 12)
           for s in range(20)}  # fmt: skip
    assert 0.7 in eps and eps <= {0.0, 0.7, 1.0}


# ---------------------------------------------------------------------------------- ood_scores.py
def test_a_batch_typicality_test_of_m_1_is_not_reported_twice_and_its_epsilon_follows_the_seed():
    g = torch.Generator().manual_seed(0)
    lp_in, lp_ood, train, valid = (-(10 + torch.randn(200, generator=g)) for _ in range(4))
    one = ood_scores(lp_in, lp_ood, num_dims=4, typicality_fit=(train, valid), typicality_batch=1)
    assert set(one.scores) == {"nll", "typicality"} and one.typicality_batch is None
    fit = (train, valid)
    eps = {ood_scores(lp_in, lp_ood, num_dims=4, typicality_fit=fit, typicality_batch=5, seed=s).typicality_batch.epsilon
           for s in (1, 2)}  # fmt: skip
    assert len(eps) == 2  # the bootstrap of batches is drawn from the seed, as the shuffle is


def test_ood_scores_refuse_a_typicality_batch_below_1_by_name():
    """1 is no batch test (the CLI's --typicality-batch 1); 0, -3 and True skipped it silently,
    2.5 was refused as the typicality test's "batch_size"."""
    lp = -(10 + torch.randn(100, generator=torch.Generator().manual_seed(0)))
    for m in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match=f"typicality_batch must be an integer >= 1, got {m}"):
            ood_scores(lp, lp, num_dims=4, typicality_fit=(lp, lp), typicality_batch=m)


def test_a_three_channel_image_is_coded_as_an_rgb_png():
    from io import BytesIO

    from PIL import Image

    img = torch.randint(256, (1, 3, 6, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    buf = BytesIO()
    Image.fromarray(img[0].permute(1, 2, 0).contiguous().numpy(), mode="RGB").save(buf, format="PNG", optimize=True)
    assert png_code_length(img)[0] == 8 * len(buf.getvalue())
    buf.seek(0)
    assert Image.open(buf).mode == "RGB"


# ---------------------------------------------------------------------------------- estimates.py
def test_the_estimate_refuses_a_negative_k_and_an_empty_set_of_orders():
    model, marginal = make()
    x = data(marginal, 3)
    with pytest.raises(ValueError, match="k .importance samples. must be an integer >= 0"):
        estimate(model, x, k=-1)
    with pytest.raises(ValueError, match="orders must be"):
        estimate(model, x, orders=torch.zeros(0, 4, dtype=torch.long))


def test_k_0_reports_the_elbo_as_a_bound_of_one_draw():
    model, marginal = make(perturb=0.3)
    x = data(marginal, 10)
    with seeded(0) as g:
        est = estimate(model, x, 0, g)
    assert (est.kind, est.k) == ("bound", 1) and torch.equal(est.log_px, est.terms["elbo"])
    assert evaluate(model, x, iw_samples=0).iw_samples == 1


def _recording_diffusion():
    """A diffusion model whose bound terms are known functions of the time, and which keeps the times it is given."""
    model = GaussianDiffusion(nn.Identity(), LinearSchedule(-13.3, 10.0), (1, 1, 1), 4, 0).double()
    seen = []

    def bound_terms(x, t, train=False):
        seen.append(t.double().clone())
        return {"prior": t.double(), "recon": (t.double() * 2).square(), "diffusion": torch.cos(3 * t.double())}

    model.bound_terms = bound_terms
    return model, seen


def _stratified(t: torch.Tensor) -> bool:
    """Whether times t (k, B) are, for each datapoint, u + m / k mod 1 for m = 0..k-1."""
    gaps = torch.diff(torch.cat([t.sort(0).values, t.sort(0).values[:1] + 1]), dim=0)
    return torch.allclose(gaps, torch.full_like(gaps, 1 / len(t)), atol=1e-9)


@pytest.mark.parametrize("k", [3, 4, 6])
def test_the_times_are_stratified_in_each_half_and_the_time_variance_is_that_of_the_halves(k):
    model, seen = _recording_diffusion()
    x = torch.zeros(5, 1, 1, 1, dtype=torch.long)
    est = estimate(model, x, k=k, generator=torch.Generator().manual_seed(0))
    t = torch.stack(seen)  # (k, B): one call a time
    total = t + (2 * t).square() + torch.cos(3 * t)
    assert torch.allclose(est.log_px, -total.mean(0)) and torch.allclose(est.terms["prior_kl"], t.mean(0))
    if k % 2:  # one stratified set of k, no half to compare
        assert _stratified(t) and "time_var" not in est.terms
    else:
        halves = t.view(2, k // 2, -1)
        assert _stratified(halves[0]) and _stratified(halves[1]) and not torch.allclose(halves[0], halves[1])
        mean_a, mean_b = total.view(2, k // 2, -1).mean(1)
        assert torch.allclose(est.terms["time_var"], (mean_a - mean_b).square() / 4)


class _Linear(nn.Module):
    """One linear map from the one-hot input (B, L + 1, 1, D) to L logits per entry: each order has its own likelihood."""

    def __init__(self, d: int, levels: int):
        super().__init__()
        self.d, self.levels, self.lin = d, levels, nn.Linear(d * (levels + 1), d * levels)

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.lin(h.flatten(1)).view(-1, self.levels, 1, self.d)


def test_an_order_mixture_s_elbo_is_the_mean_of_its_orders_log_likelihoods():
    torch.manual_seed(0)
    model = MaskedDiffusion(_Linear(3, 2), (1, 1, 3), 2).double().eval()
    x = torch.tensor([[0, 1, 1], [1, 0, 0], [1, 1, 1]]).view(3, 1, 1, 3)
    orders = draw_orders(4, 3, torch.Generator().manual_seed(1))
    est = estimate(model, x, orders=orders)
    with torch.no_grad():
        per = model.order_log_likelihood(x, orders)  # (N, M)
    assert per.std(1).min() > 1e-3  # the orders differ
    torch.testing.assert_close(est.terms["elbo"], per.mean(1))
    torch.testing.assert_close(est.log_px, torch.logsumexp(per, 1) - math.log(4))


# ---------------------------------------------------------------------------------- report.py
@torch.no_grad()
def test_the_elbo_and_its_split_of_incomplete_dequantized_data_are_of_each_row_s_observed_entries():
    """Each row's ELBO and reconstruction less the log volume of its own observed entries; their
    mean and (for the ELBO) standard error over the rows are what the report gives."""
    model, marginal = make(perturb=0.3)
    x = data(marginal, 60)
    missing = torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) < 0.4
    missing[..., 0] = False
    x = x.masked_fill(missing, float("nan"))
    log_l = math.log(256)
    report = evaluate(model, x, iw_samples=5, seed=3, log_volume=log_l)
    with seeded(3) as g:
        terms = estimate(model, x, 5, g).terms
    shift = observed_entries(x) * log_l
    assert shift.std() > 0.5  # the rows differ in their observed entries
    elbo, recon = terms["elbo"] - shift, terms["recon"] - shift
    assert report.elbo == pytest.approx(elbo.mean().item(), rel=1e-9)
    assert report.elbo_stderr == pytest.approx(elbo.std().item() / math.sqrt(60), rel=1e-9)
    assert report.recon == pytest.approx(recon.mean().item(), rel=1e-9)
    assert report.kl == pytest.approx(terms["kl"].mean().item(), rel=1e-9)


# ---------------------------------------------------------------------------------- training/step_guard.py, batches.py
def _guarded(guard: GradientGuard, norm: float) -> bool:
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([0.0, norm])
    return bool(guard.take([p]))


@pytest.mark.parametrize("on_device", [False, True])
def test_the_guard_keeps_the_lowest_threshold_of_the_epoch_and_a_checkpoint_keeps_the_window(on_device):
    """Window 1, factor 2: thresholds inf, 2, 1, 1.5 for norms 1, 0.5, 0.75, 0.875 (each taken): the
    lowest is 1, the last 1.5; the window a checkpoint keeps is the last norm taken, on the device too.
    (The host rule kept every norm taken at window 1, [-(window - 1):] being [-0:]: thresholds 2, 1.5,
    1.5, a window no resume would load, and other decisions than on the device.)"""
    guard = GradientGuard(skip_factor=2.0, window=1, on_device=on_device)
    assert [_guarded(guard, n) for n in (1.0, 0.5, 0.75, 0.875)] == [True] * 4
    assert guard.epoch_threshold == 1.0
    assert guard.state() == {"skipped_steps": 0, "recent_grad_norms": [0.875]}


def test_the_guard_names_an_epoch_only_when_every_update_was_skipped_and_resumes_only_real_norms():
    guard = GradientGuard(skip_norm=1.0)
    assert [_guarded(guard, n) for n in (3.0, 0.5, 5.0)] == [False, True, False]
    assert guard.epoch_problem() is None  # one update of three was taken
    with pytest.raises(ValueError, match="recent gradient norms"):
        GradientGuard(skip_factor=2.0, window=3).load_state(0, [1.0, -2.0])  # a norm is >= 0


def test_integer_batches_stay_integers_and_no_labelled_rows_asked_needs_no_labels():
    levels = torch.tensor([[0, 3], [2, 1]])
    kept = in_precision(levels, torch.float64)
    assert kept.dtype == torch.long and torch.equal(kept, levels)
    assert in_precision(levels.float(), torch.float64).dtype == torch.float64
    source = BatchSource(torch.zeros(4, 2), None, DataTransform("continuous", None), torch.Generator().manual_seed(0), 2, 2)
    source.add_labelled(0)  # (no label in the data: nothing is drawn from them)
    source.mutate(0.0)  # (nor a mutation rate of 0 of continuous data: no level is drawn)
    assert source.rows_per_epoch == 4 and len(list(source.epoch())) == 2


# --- training/checkpoint.py: the header's bounds --------------------------------------------------
@pytest.mark.parametrize(
    "header, needle",
    [
        # a length one past what the file holds after its 8-byte prefix (the bound was the file's size)
        (None, "its header claims"),
        # a version of more digits than a format version has (int() of 5000 digits is Python's ValueError)
        ({"__metadata__": {"format": "dgmkit-checkpoint", "version": "9" * 5000}}, "malformed format version"),
        ({"__metadata__": {"format": "dgmkit-checkpoint", "version": "0000001"}}, "malformed format version"),
        # digits of other scripts: str.isdigit takes them, int() refuses a superscript (a ValueError, said as a bug)
        # and reads an Arabic-Indic one as its number
        ({"__metadata__": {"format": "dgmkit-checkpoint", "version": "\u00b2"}}, "malformed format version"),
        ({"__metadata__": {"format": "dgmkit-checkpoint", "version": "\u0662"}}, "malformed format version"),
    ],
)
def test_a_checkpoint_header_out_of_its_bounds_is_refused_by_what_is_wrong(tmp_path, header, needle):
    import json
    import struct

    from dgmkit.errors import CheckpointError
    from dgmkit.training.checkpoint import read_metadata

    if header is None:
        body = json.dumps({"__metadata__": {}}).encode()
        raw = struct.pack("<Q", len(body) + 1) + body
    else:
        body = json.dumps(header).encode()
        raw = struct.pack("<Q", len(body)) + body
    path = tmp_path / "c.safetensors"
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match=needle):
        read_metadata(path)


# ---------------------------------------------------------------------------------- clustering.py
def _accuracy_by_enumeration(assign: np.ndarray, labels: np.ndarray) -> float:
    """The best one-to-one matching of clusters to labels, by trying every injection of the labels into the clusters."""
    import itertools

    clusters, classes = sorted(set(assign.tolist())), sorted(set(labels.tolist()))
    best = 0
    for image in itertools.permutations(clusters, min(len(clusters), len(classes))):
        for chosen in itertools.combinations(classes, len(image)):
            best = max(best, sum(int(((assign == c) & (labels == k)).sum()) for c, k in zip(image, chosen)))
    return best / len(labels)


def test_clustering_accuracy_counts_clusters_of_more_than_127_points():
    """200 points of label 0 in cluster 5, 60 of label 1 split over clusters 5 and 9: the counts of a cell
    past a byte's range must not wrap."""
    from dgmkit.evaluation.clustering import clustering_scores

    assign = np.r_[np.full(200, 5), np.full(30, 5), np.full(30, 9)]
    labels = np.r_[np.zeros(200, int), np.ones(60, int)]
    s = clustering_scores(assign, labels)
    assert s["accuracy"] == _accuracy_by_enumeration(assign, labels) == pytest.approx(230 / 260)
    assert s["accuracy_majority"] == pytest.approx(230 / 260) and s["clusters_used"] == 2 and s["n"] == 260


def test_cluster_assignments_are_those_of_the_whole_set_in_any_batches_and_need_a_mixture():
    from dgmkit.distributions import location
    from dgmkit.evaluation.clustering import cluster_assignments
    from dgmkit.families.vae import VAEConfig
    from dgmkit.models import CapabilityError

    torch.manual_seed(0)
    model = VAEConfig(hidden=[8], latent_dim=2, prior="mog", prior_components=3).build((1, 1, 4), 2).eval()
    x = torch.bernoulli(torch.full((7, 1, 1, 4), 0.5, dtype=torch.float32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model.assign_components(location(model.posterior(x)))
    for batch_size in (1, 3, 7, 100):
        assert torch.equal(cluster_assignments(model, x, batch_size=batch_size), whole)
    plain = VAEConfig(hidden=[8], latent_dim=2).build((1, 1, 4), 2)
    with pytest.raises(CapabilityError, match="prior is a mixture .for example --prior mog"):
        cluster_assignments(plain, x)


def test_cluster_assignments_refuse_points_of_no_finite_density_as_an_evaluation_error():
    """A mixture whose components lie so far out that every density underflows: a DgmError (one dgm: error:
    line of dgm cluster), not the prior's bare ValueError (an internal error, exit code 2)."""
    from dgmkit.errors import EvaluationError
    from dgmkit.evaluation.clustering import cluster_assignments
    from dgmkit.families.vae import VAEConfig

    torch.manual_seed(0)
    model = VAEConfig(hidden=[8], latent_dim=2, prior="mog", prior_components=3).build((1, 1, 4), 2).eval()
    with torch.no_grad():
        model.prior_module.means.fill_(1e20)
    x = torch.bernoulli(torch.full((5, 1, 1, 4), 0.5), generator=torch.Generator().manual_seed(1))
    with pytest.raises(EvaluationError, match=r"^5 of 5 latent points have no finite density .*nothing was written$"):
        cluster_assignments(model, x)


# ---------------------------------------------------------------------------------- imputation.py
def test_missforest_is_the_chained_imputer_with_100_seeded_trees_for_10_rounds():
    import warnings

    from sklearn.ensemble import RandomForestRegressor
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    from dgmkit.evaluation.imputation import baseline_impute

    rng = np.random.default_rng(1)
    x0 = rng.normal(size=8)
    rows = np.stack([x0, x0**2], 1) + 0.1 * rng.normal(size=(8, 2))
    rows[[0, 3], 1] = np.nan
    rows[[1, 4], 0] = np.nan
    forest = RandomForestRegressor(n_estimators=100, random_state=3, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = IterativeImputer(estimator=forest, max_iter=10, random_state=3).fit_transform(rows)
    assert np.allclose(baseline_impute(rows, "missforest", seed=3), want, rtol=0, atol=1e-12)


def test_rmse_refuses_a_mask_of_another_shape_than_the_values():
    """A mask of one flag a row would index whole rows and score the observed entries too."""
    from dgmkit.evaluation.imputation import rmse

    imputed, truth = np.zeros((3, 2)), np.ones((3, 2))
    with pytest.raises(ValueError, match=r"shapes differ: imputed \(3, 2\), truth \(3, 2\), mask \(3,\)"):
        rmse(imputed, truth, np.array([True, False, False]))


def test_batched_imputation_is_the_seeded_imputation_and_keeps_every_row_in_place():
    from dgmkit.evaluation.imputation import impute_batched, resampling_seed
    from dgmkit.families.vae import VAEConfig
    from dgmkit.objectives.miwae import impute

    torch.manual_seed(0)
    model = VAEConfig(hidden=[8], latent_dim=2).build((1, 1, 4), 2).eval()
    x = torch.bernoulli(torch.full((5, 1, 1, 4), 0.5), generator=torch.Generator().manual_seed(2))
    x[torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) < 0.4] = float("nan")
    x[:, 0, 0, 0] = 1.0  # an observed entry a row
    observed = ~torch.isnan(x)
    # one batch, fewer draws than a chunk: the imputation of one generator seeded by seed, the multiple
    # imputations resampled from one of their own
    single, multiple = impute_batched(model, x, k=6, draws=3, seed=4)
    own = torch.Generator().manual_seed(resampling_seed(4))
    want_single, want_multiple = impute(
        model, x, k=6, draws=3, generator=torch.Generator().manual_seed(4), resample_generator=own
    )
    assert torch.equal(single, want_single) and torch.equal(multiple, want_multiple)
    # batches of two: every row in its place, its observed entries kept, its draws in the second dimension
    single, multiple = impute_batched(model, x, k=6, draws=3, seed=4, batch_size=2)
    assert single.shape == x.shape and multiple.shape == (3, *x.shape)
    assert torch.equal(single[observed], x[observed]) and not single.isnan().any()
    for d in range(3):
        assert torch.equal(multiple[d][observed], x[observed]) and not multiple[d].isnan().any()


# ---------------------------------------------------------------------------------- order_files.py
def test_an_order_file_keeps_every_bit_of_its_values_and_refuses_another_count_or_one_nonfinite_value(tmp_path):
    import io
    import zipfile

    from dgmkit.errors import EvaluationError
    from dgmkit.evaluation.order_files import OrderFiles

    store, order = OrderFiles(tmp_path, 3), torch.tensor([1, 0, 2])
    values = torch.tensor([-0.1, -1.0 / 3.0, -(2.0**-40) - 1.0], dtype=torch.float64)  # none a float32
    store.put(0, order, values)
    assert torch.equal(store.get(0, order), values)
    with pytest.raises(ValueError, match=r"expected 3 values for order 1, got shape \(2,\)"):
        store.put(1, order, values[:2])
    assert not (tmp_path / "order-1.npz").exists()
    buf = io.BytesIO()
    np.savez(buf, order=order.numpy().astype(np.int64), values=values.numpy()[:2])
    (tmp_path / "order-2.npz").write_bytes(buf.getvalue())
    with pytest.raises(EvaluationError, match=r"expected values of float64 \(3,\), got float64 \(2,\)"):
        store.get(2, order)
    with zipfile.ZipFile(tmp_path / "order-2.npz") as z:
        assert sorted(z.namelist()) == ["order.npy", "values.npy"]
    np.savez(tmp_path / "order-3.npz", order=order.numpy().astype(np.int64), values=[-1.0, -np.inf, -2.0])  # one of three
    with pytest.raises(EvaluationError, match="order-3.npz: its log-likelihoods are not all finite"):
        store.get(3, order)
    np.savez(tmp_path / "order-4.npz", order=order.numpy().astype(np.int64), values=[-1.0, 500.0, 0.0])  # log p > 0
    with pytest.raises(EvaluationError, match="order-4.npz: 1 of its log-likelihoods exceed 0, which no probability"):
        store.get(4, order)
