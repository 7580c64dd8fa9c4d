"""What a mutation sweep of ``dgm eval``'s printing (cli/evaluate.py's format_report and
eval_notes) found unchecked: the NLL row's name for an exact and a bound estimate, the ELBO called
log p(x) only where the estimate is exact, a missing standard error shown as n/a (not as 0),
bits/dim read from its own field, the time-sampling share of a diffusion model's standard error,
what an autoencoder's reconstruction score is, the data row only where the record says what the
data are, the random-subset words only for a subset, and the time in tenths of a second."""

import re

from dgmkit.cli.evaluate import format_report

BASE = {"split": "test", "n": 2, "subset": None, "elbo": -3.0, "recon": -2.0, "kl": 1.0, "nll": 3.0,
        "nll_stderr": 0.125, "bpd": 0.6, "iw_samples": 10, "seconds": 0.14}  # fmt: skip


def _row(text: str, name: str) -> str:
    """The value printed on the row called ``name`` (the rows are aligned: name, spaces, value)."""
    found = re.search(rf"^{re.escape(name)} +(.*)$", text, re.M)
    assert found, (name, text)
    return found.group(1)


def test_the_nll_row_names_the_kind_of_estimate():
    assert _row(format_report({**BASE, "estimate": "exact"}), "NLL (exact)") == "3.000 +- 0.125 nats"
    assert _row(format_report({**BASE, "estimate": "bound"}), "NLL bound (k=10)") == "3.000 +- 0.125 nats"
    assert "NLL (k=10)" not in format_report({**BASE, "estimate": "bound"})


def test_the_elbo_is_called_log_p_x_only_where_the_estimate_is_exact():
    """An order mixture's ELBO is the mean of the per-order NLLs, an upper bound: not log p(x)."""
    assert "\nELBO = log p(x)  " in format_report({**BASE, "estimate": "exact"})
    mixture = format_report({**BASE, "estimate": "order-mixture"})
    assert "= log p(x)" not in mixture and re.search(r"^ELBO +-3\.000 nats", mixture, re.M)


def test_an_exact_density_of_dequantized_integers_gives_an_elbo_that_is_a_one_draw_bound_not_log_p_x():
    """PPCA or a flow on uniformly dequantized data: the NLL row says "one-draw bound", and the ELBO
    row (the same number) must not call it log p(x); it shows its spread as any bound does."""
    r = {**BASE, "estimate": "exact", "transform": "dequantize", "num_dims": 64, "elbo_stderr": 0.125}
    text = format_report(r)
    assert _row(text, "NLL (one-draw bound)") == "3.000 +- 0.125 nats"
    assert "= log p(x)" not in text and _row(text, "ELBO").startswith("-3.000 +- 0.125 nats")
    assert "\nELBO = log p(x)  " in format_report({**r, "transform": "continuous"})


def test_a_missing_standard_error_is_shown_as_unknown_not_as_zero():
    assert _row(format_report({**BASE, "estimate": "exact", "nll_stderr": None}), "NLL (exact)") == "3.000 +- n/a nats"


def test_bits_per_dim_are_read_from_their_own_field():
    """A record with bits/dim for the NLL but none for the ELBO still prints them (not continuous data)."""
    text = format_report({**BASE, "estimate": "importance-sampled", "elbo_bpd": None})
    assert _row(text, "bits/dim") == "0.6000" and "continuous data" not in text


def test_a_diffusion_models_time_sampling_error_is_its_own_number():
    r = {**BASE, "estimate": "time-sampled", "iw_samples": 2, "variance_reduction": "stratified", "time_stderr": 0.0625}
    text = format_report(r)
    assert "of it, the time sampling alone: +- 0.062 nats (from the two halves' difference)" in text
    assert "time sampling alone" not in format_report({**r, "time_stderr": None})
    # from few datapoints the part can come out above the whole: said, not left to puzzle over
    few = format_report({**r, "n": 3, "nll_stderr": 0.05, "time_stderr": 0.08})
    assert "+- 0.080 nats (from the two halves' difference; more than the whole, +- 0.050: at n = 3 both are" in few
    assert "more than the whole" not in format_report({**r, "n": 3, "nll_stderr": 0.08, "time_stderr": 0.05})
    # of one datapoint the whole has no standard error ("n/a"): the part's is said as all there is
    one = format_report({**r, "n": 1, "nll_stderr": None, "elbo_stderr": None, "time_stderr": 0.08})
    assert _row(one, "NLL bound (2 times per datapoint)") == "3.000 +- n/a nats", one
    assert "(from the two halves' difference; the whole's needs two datapoints or more, n = 1)" in one


def test_a_reconstruction_score_says_what_it_is():
    r = {"split": "test", "n": 2, "subset": None, "estimate": "reconstruction", "recon": -5.0, "seconds": 0.1}
    assert _row(format_report(r), "reconstruction") == "-5.000 nats  (log p(x | z = f(x)))"


def test_the_data_and_subset_words_appear_only_where_the_record_has_them():
    r = {**BASE, "estimate": "exact", "dataset": "digits"}
    plain = format_report(r)  # no transform recorded: nothing to say of the data
    assert not re.search(r"^data ", plain, re.M) and _row(plain, "split") == "test (2 datapoints)"
    subset = format_report({**r, "subset": {"seed": 0, "of": 10, "indices": [1, 4]}})
    assert _row(subset, "split") == "test (2 datapoints, random subset)"


def test_the_time_is_printed_in_tenths_of_a_second():
    assert _row(format_report({**BASE, "estimate": "exact"}), "time") == "0.1 s"
