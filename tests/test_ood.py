"""Out-of-distribution metrics equal scikit-learn's on fixed and random inputs (ties included),
and the typicality test's entropy and threshold are right on Gaussian data of known entropy."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from dgmkit.evaluation.ood import auprc, auroc, detection_metrics, fpr_at_tpr, typicality_test


def _sklearn(a, b):
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    s = np.r_[a, b]
    fpr, tpr, _ = roc_curve(y, s)
    return roc_auc_score(y, s), average_precision_score(y, s), fpr[np.argmax(tpr >= 0.95 - 1e-12)]


scores = st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=30)  # small integers: many ties


@settings(max_examples=200, deadline=None)
@given(scores, scores)
def test_metrics_equal_scikit_learn(a, b):
    ours = detection_metrics(torch.tensor(a), torch.tensor(b))
    roc, ap, fpr = _sklearn(a, b)
    assert ours["auroc"] == pytest.approx(roc, abs=1e-12)
    assert ours["auprc"] == pytest.approx(ap, abs=1e-12)
    assert ours["fpr_at_95_tpr"] == pytest.approx(fpr, abs=1e-12)


def test_known_values_and_bad_input():
    assert auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 0.0
    assert auroc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5
    assert auprc(torch.tensor([0.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert fpr_at_tpr(torch.tensor([0.0, 5.0]), torch.tensor([1.0, 2.0])) == 0.5
    with pytest.raises(ValueError, match="NaN"):
        auroc(torch.tensor([float("nan")]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="at least one"):
        auroc(torch.tensor([]), torch.tensor([1.0]))


def test_typicality_test_on_gaussian_data_of_known_entropy():
    d, m, alpha = 10, 25, 0.05
    g = torch.Generator().manual_seed(0)

    def nll(n):  # the negative log-density of N(0, I_d) draws under N(0, I_d) itself
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        return 0.5 * d * math.log(2 * math.pi) + 0.5 * x.square().sum(1)

    test = typicality_test(nll(20000), nll(20000), batch_size=m, alpha=alpha, bootstraps=20000, generator=g)
    entropy = 0.5 * d * math.log(2 * math.pi * math.e)
    assert test.entropy == pytest.approx(entropy, abs=3 * math.sqrt(d / 2 / 20000))
    # the batch mean of the NLL has standard deviation sqrt(d / 2 / M); the threshold is its two-sided quantile
    assert test.epsilon == pytest.approx(1.959964 * math.sqrt(d / 2 / m), rel=0.08)
    false_alarms = test.flags(nll(m * 4000)).double().mean().item()
    assert false_alarms == pytest.approx(alpha, abs=0.015)
    # a shifted distribution is flagged nearly always
    shifted = 0.5 * d * math.log(2 * math.pi) + 0.5 * (1.5 * torch.randn(m * 200, d, generator=g)).square().sum(1)
    assert test.flags(shifted).double().mean() > 0.99
