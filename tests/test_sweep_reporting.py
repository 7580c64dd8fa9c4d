"""What a mutation sweep of the report page (reporting/page.py, cli/report.py) found unchecked:
that every text a run folder gives (protocol keys, splits, estimates, terms' labels, notes,
config keys and values, figure captions, the title) is escaped in each place the page shows it;
each number of the evaluation and comparison tables in its unit and precision (counts as
integers, a missing or non-finite number as "–"); which evaluation the comparison takes (the test
split, whole, of the weights now, by kind, then samples, then the last written); the best score,
its epoch and the epochs done; the learning curves' panels, lines and legends, and which metrics
lines they take (bools, epoch 0, "iteration", per-layer lists); that the metrics reader keeps all
the page draws, skips blank lines and counts its line limit exactly; and, on a real run, the
config table without the settings that do not apply, the notes of a metrics.jsonl shorter than
the checkpoint and of an evaluation that names no weights, an upper-case .HTML accepted, a run
folder named twice through a link refused."""

import html
import json
import re
import shutil

import pytest

import dgmkit.reporting.page as page
from dgm_cli import dgm as _dgm
from dgm_cli import refused as _refused
from dgmkit.cli.main import main
from dgmkit.cli.report import read_metrics
from dgmkit.errors import DataError
from dgmkit.reporting import RunPage, metric_keys, render_page


def _tables(text: str) -> list[list[list[str]]]:
    """The page's tables: rows of cells (th and td alike, their inner HTML)."""
    return [
        [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
        for table in re.findall(r"<table>(.*?)</table>", text, re.S)
    ]


def _rows(table: list[list[str]]) -> list[dict[str, str]]:
    return [dict(zip(table[0], row)) for row in table[1:]]


def _record(**kw) -> dict:
    r = {"split": "test", "subset": None, "n": 300, "estimate": "importance-sampled", "iw_samples": 10, "nll": 40.0,
         "bpd": 0.9, "transform": "dynamic-binarize", "weights": "w"}  # fmt: skip
    return {**r, **kw}


def _page(name="run", evals=None, metrics=None, **kw) -> RunPage:
    return RunPage(name, "VAE", "digits", kw.pop("config", {}), metrics or [], "elbo", "ELBO", evals or {}, **kw)


# ---------------------------------------------------------------- escaping


def test_every_text_from_a_run_folder_is_escaped_in_each_place_the_page_shows_it():
    """Each place gets its own hostile text; every one shows, escaped, and no markup gets through
    (the escapes of the protocol, split, estimate, terms' labels and values, notes, a config's
    keys and plain sections, the captions and the title were unchecked)."""

    def evil(where: str) -> str:
        return f'<i id="{where}">&\'{where}</i>'

    term = {"name": "t", "label": evil("term-label"), "value": None, "note": evil("term-note"), "level": 0, "digits": 3}
    record = _record(split=evil("split"), estimate=evil("estimate"), terms=[term], table_note=evil("table-note"))
    run = _page(
        evil("name"),
        {evil("protocol"): record},
        [{"epoch": 1, "valid_elbo": -3.0}],
        config={evil("section"): evil("plain"), "model": {evil("key"): evil("value")}},
        notes=[evil("note")],
        eval_notes=[evil("eval-note")],
        marks={evil("protocol"): evil("mark")},
        figures=[(evil("fig-title"), evil("caption"), b"png")],
    )
    run.describe, run.dataset, run.score_label = evil("describe"), evil("dataset"), evil("label")
    other = _page("other", {"p": _record(estimate=evil("compared-estimate"), weights=None)}, weights=None)
    shown = render_page([run, other], title=evil("title"))
    places = ["term-label", "term-note", "split", "estimate", "name", "protocol", "section", "plain", "key", "value",
              "note", "eval-note", "mark", "fig-title", "caption", "describe", "dataset", "label", "compared-estimate",
              "title"]  # fmt: skip
    for where in places:
        assert html.escape(evil(where)) in shown, where
    assert not re.search(r'<i\b|</i>|id="', shown)  # no hostile tag, end tag or attribute got through
    assert shown.count(f"<title>{html.escape(evil('title'))}</title>") == 1
    assert shown.count(f"<h1>{html.escape(evil('title'))}</h1>") == 1
    # the comparison table's cells: the run's name, model, data, best score and estimate, all escaped
    [row] = [r for r in _rows(_tables(shown)[0]) if "name" in r["run"]]
    assert row["run"] == f"<a href='#run-0'>{html.escape(evil('name'))}</a>" and row["data"] == html.escape(evil("dataset"))
    assert row["best validation -score (nats)"].startswith("-" + html.escape(evil("label")))
    assert "<meta charset='utf-8'>" in shown  # (the page holds "–" and "±": its encoding is said)


# ---------------------------------------------------------------- the evaluation table


def test_the_evaluation_table_gives_each_number_in_its_unit_and_precision():
    """Counts as integers (300, not 300.000), NLL and ELBO to 3 decimals, bits/dim to 4, the
    time to 1, the standard error beside its NLL, a missing number or one that is not finite as
    "–" (never None, nan or inf), a term a record lacks as "–"."""
    term = {"name": "mmd", "label": "MMD^2", "value": 0.012345, "unit": "", "note": "", "level": 0, "digits": 5}
    records = {
        "a": _record(nll=41.23456, nll_stderr=0.0987, bpd=0.123456, elbo=-42.5, seconds=12.345, kl=None, terms=[term]),
        "b": _record(nll=float("nan"), bpd=float("inf"), elbo=None),
    }
    [table] = _tables(page._eval_table(records))
    head = table[0]
    assert head[:5] == ["split", "estimate", "datapoints", "NLL (nats)", "± stderr"] and "bits/dim" in head
    a, b = _rows(table)
    assert a["datapoints"] == "300" and a["NLL (nats)"] == "41.235" and a["± stderr"] == "0.099"
    assert a["bits/dim"] == "0.1235" and a["ELBO (nats)"] == "-42.500" and a["time (s)"] == "12.3"
    assert a["KL"] == "–" and a["active units"] == "–" and a["MMD^2"] == "0.01235"
    assert b["NLL (nats)"] == "–" and b["bits/dim"] == "–" and b["ELBO (nats)"] == "–" and b["MMD^2"] == "–"
    assert "None" not in str(table) and "nan" not in str(table) and "inf" not in str(table)
    huge = {"c": _record(nll=1e308, nll_stderr=2.5e15, bpd=1e20, elbo=-1e300, seconds=1.0)}  # (they were 309 digits)
    [table] = _tables(page._eval_table(huge))
    [c] = _rows(table)
    assert c["NLL (nats)"] == "1.000e+308" and c["± stderr"] == "2.500e+15" and c["ELBO (nats)"] == "-1.000e+300"
    assert (
        page._num(10**400) == "1.000e+400"
        and page._num(-(10**15)) == "-1.000e+15"
        and page._num(10**15 - 1) == str(10**15 - 1)
    )


def test_a_huge_count_is_shown_to_its_leading_digits_rounded():
    """A count of 2**62 datapoints (a crafted eval.json: counts are taken below 2**63) was shown
    "4.e+18", its mantissa cut to the column's 0 decimals; 1999999999999999 was cut to 1.999e+15."""
    [table] = _tables(page._eval_table({"c": _record(n=2**62)}))
    [c] = _rows(table)
    assert c["datapoints"] == "4.612e+18"
    assert page._num(1999999999999999) == "2.000e+15" and page._num(-(2**62), 0) == "-4.612e+18"


def test_the_notes_under_the_evaluations_are_said_once_and_fall_back_to_the_data_notes():
    """dgm eval's notes where the command gave them; else each record's data notes (a table's
    note here); a note that two records share, once."""
    alike = {"a": _record(table_note="a table: 4 columns"), "b": _record(table_note="a table: 4 columns", iw_samples=5)}
    own = render_page([_page(evals=alike)])  # (eval_notes empty: the data notes)
    assert own.count("<p class='note'>a table: 4 columns</p>") == 1
    assert own.count("<p class='note'>data: a table&#x27;s rows, numeric columns standardized</p>") == 1
    said = render_page([_page(evals=alike, eval_notes=["what dgm eval says"])])
    assert "<p class='note'>what dgm eval says</p>" in said and "a table: 4 columns" not in said


def test_the_config_table_spans_each_section_over_its_sorted_settings():
    shown = page._config_table({"model": {"latent_dim": 2, "hidden": [8], "beta": 1.0}, "seed": 3})
    assert "<tr><th rowspan='3'>model</th><td>beta</td><td>1.0</td></tr><tr><td>hidden</td><td>[8]</td></tr>" in shown
    assert "<tr><td>latent_dim</td><td>2</td></tr>" in shown and shown.count("rowspan") == 1
    assert "<tr><th>seed</th><td colspan='2'>3</td></tr>" in shown


# ---------------------------------------------------------------- the comparison table


def _comparison(*runs: RunPage) -> list[dict[str, str]]:
    return _rows(_tables(render_page(list(runs)).split("<h2 id=")[0])[0])


def test_the_comparison_gives_the_best_score_at_its_epoch_and_the_epochs_done():
    """The best validation score is the highest (a log-likelihood), less the shift, to 3
    decimals, at its epoch as an integer; the epochs are the last logged (a resumed run's file
    may start late), not the count of lines; a run with no validation score shows "–"."""
    metrics = [{"epoch": 3, "valid_elbo": -50.0}, {"epoch": 4, "valid_elbo": -45.25}, {"epoch": 5, "valid_elbo": -47.0}]
    a = _page("a", metrics=metrics, shift=10.0)
    b = _page("b", metrics=[{"epoch": 1, "train_elbo": -3.0}], step="EM iteration")
    ra, rb = _comparison(a, b)
    assert ra["trained"] == "5 epochs" and ra["best validation -score (nats)"] == "-ELBO 55.250 (epoch 4)"
    assert rb["trained"] == "1 EM iteration" and rb["best validation -score (nats)"] == "–"
    assert ra["test NLL (nats)"] == rb["test NLL (nats)"] == "–" and ra["estimate"] == "–"  # no evaluation of the test split
    c = _page("c", metrics=[{"iteration": 2, "valid_elbo": -1.0}], step="EM iteration")
    assert _comparison(a, c)[1]["best validation -score (nats)"] == "-ELBO 1.000 (EM iteration 2)"
    # a line logged after the last checkpoint (a run stopped before it) is of no weights kept: not the best
    stopped = _page("d", metrics=[*metrics, {"epoch": 6, "valid_elbo": -5.0}], shift=10.0, checkpointed=5)
    assert _comparison(a, stopped)[1]["best validation -score (nats)"] == "-ELBO 55.250 (epoch 4)"


def test_the_comparison_links_each_row_to_its_run_and_a_single_run_has_none():
    shown = render_page([_page("a"), _page("b"), _page("c")])
    links, ids = re.findall(r"<a href='#(run-\d+)'>(\w)</a>", shown), re.findall(r"<h2 id='(run-\d+)'>(\w)</h2>", shown)
    assert links == ids == [("run-0", "a"), ("run-1", "b"), ("run-2", "c")]
    alone = render_page([_page("a")])
    assert "Comparison" not in alone and "<a href" not in alone
    # a run not evaluated yet: the way to evaluate it, not an empty table
    assert "no evaluation yet (<code>dgm eval RUN</code> adds one)" in alone and "NLL (nats)" not in alone


CHOICES = [  # (records in the order written, the run's weights now, the NLL the comparison shows)
    ({"is": _record(nll=41.0, iw_samples=50), "ex": _record(nll=40.0, estimate="exact", iw_samples=0)}, "w", "40.000"),
    ({"bd": _record(nll=42.0, estimate="bound", iw_samples=100), "is": _record(nll=41.0, iw_samples=5)}, "w", "41.000"),
    ({"k50": _record(nll=41.0, iw_samples=50), "k5": _record(nll=43.0, iw_samples=5)}, "w", "41.000"),
    ({"first": _record(nll=41.0), "again": _record(nll=41.5)}, "w", "41.500"),  # alike: the last written
    ({"valid": _record(nll=30.0, split="valid"), "train": _record(nll=31.0, split="train")}, "w", "–"),
    ({"subset": _record(nll=30.0, iw_samples=99, subset={"of": 600, "seed": 0}), "all": _record(nll=41.0)}, "w", "41.000"),
    ({"now": _record(nll=41.0), "old": _record(nll=30.0, iw_samples=99, weights="old")}, "w", "41.000"),
    (
        {"odb": _record(nll=39.0, estimate="exact", iw_samples=0, transform="dequantize"), "is": _record(nll=41.0)},
        "w",
        "41.000",
    ),
]


@pytest.mark.parametrize("records, weights, nll", CHOICES)
def test_the_comparison_takes_the_whole_test_split_of_the_weights_now_by_kind_then_samples(records, weights, nll):
    """An exact number before an importance-sampled one before a bound (a one-draw bound on
    dequantized integers ranks as a bound), within a kind the most samples, then the last
    written; a subset, another split or other weights never."""
    row = _comparison(_page("a", records, weights=weights), _page("b"))[0]
    assert row["test NLL (nats)"] == nll
    if nll != "–":
        [chosen] = [r for r in records.values() if f"{r['nll']:.3f}" == nll]
        assert row["bits/dim"] == f"{chosen['bpd']:.4f}"


# ---------------------------------------------------------------- learning curves


@pytest.fixture
def drawn(monkeypatch):
    """The figures curves_png draws (their PNG bytes faked)."""
    figs = []
    monkeypatch.setattr(page, "figure_png", lambda fig: figs.append(fig) or b"png")
    return figs


def _panels(fig) -> dict[str, list[tuple[str, list, list]]]:
    return {
        ax.get_title(): [(ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()]
        for ax in fig.axes
        if ax.axison
    }


def test_the_curves_draw_every_panel_logged_with_its_lines_and_legend(drawn):
    """Three panels (score, KL per layer, learning rate) on a grid of 2 x 2, the fourth cell
    blank; train and valid with a legend; one line per layer, numbered from 1."""
    metrics = [
        {"epoch": 1, "train_elbo": -5.0, "valid_elbo": -6.0, "valid_layer_kl": [1.0, 2.0], "lr": 1e-3},
        {"epoch": 2, "train_elbo": -4.0, "valid_elbo": -5.5, "valid_layer_kl": [0.5, "x"], "lr": 5e-4},
    ]
    assert page.curves_png(metrics, "ELBO", "elbo", step="EM iteration") == b"png"
    [fig] = drawn
    panels = _panels(fig)
    assert list(panels) == ["score (nats)", "KL per layer (valid, nats)", "learning rate"] and len(fig.axes) == 4
    assert [label for label, *_ in panels["score (nats)"]] == ["train ELBO", "valid ELBO"]
    assert panels["score (nats)"][1][1:] == ([1.0, 2.0], [-6.0, -5.5])
    assert [label for label, *_ in panels["KL per layer (valid, nats)"]] == ["layer 1", "layer 2"]
    layer2 = panels["KL per layer (valid, nats)"][1][2]
    assert layer2[0] == 2.0 and layer2[1] != layer2[1]  # not a number: a gap (NaN), never 0
    assert panels["learning rate"] == [("lr", [1.0, 2.0], [1e-3, 5e-4])]
    legends = {ax.get_title(): ax.get_legend() is not None for ax in fig.axes if ax.axison}
    assert legends == {"score (nats)": True, "KL per layer (valid, nats)": True, "learning rate": False}
    assert {ax.get_xlabel() for ax in fig.axes if ax.axison} == {"EM iteration"}
    # one layer (a VAE's): its series is the KL, not "KL per layer" of one "layer 1"
    for one in ([{"epoch": 1, "valid_layer_kl": [3.0], "valid_kl": 3.0}], [{"epoch": 1, "valid_layer_kl": [3.0]}]):
        drawn.clear()
        page.curves_png(one, "ELBO", "elbo")
        assert _panels(drawn[0]) == {"KL (valid, nats)": [("KL", [1.0], [3.0])]}


def test_the_curves_take_only_numbered_lines_and_numbers(drawn):
    """A flag is not a number nor an epoch; epoch 0 and an EM run's "iteration" are steps; an
    epoch beyond 2**31, a value beyond 1e30 (not 1e30 itself) and an empty or ragged per-layer
    list are left out (the total drawn instead)."""
    metrics = [
        {"iteration": 0, "valid_elbo": -9.0, "valid_kl": 1.0, "valid_layer_kl": []},
        {"epoch": True, "valid_elbo": -8.0},
        {"epoch": 2, "valid_elbo": True, "valid_kl": 2.0, "valid_layer_kl": []},
        {"epoch": 3, "valid_elbo": -1e30},
        {"epoch": 2**31, "valid_elbo": -7.0},
        {"epoch": 4, "valid_elbo": -1.01e30},
        {"valid_elbo": -6.0},
    ]
    page.curves_png(metrics, "ELBO", "elbo")
    panels = _panels(drawn[0])
    assert list(panels) == ["score (nats)", "KL (valid, nats)"]
    assert panels["score (nats)"] == [("valid ELBO", [0.0, 3.0], [-9.0, -1e30])]  # (no train line: none logged)
    assert panels["KL (valid, nats)"] == [("KL", [0.0, 2.0], [1.0, 2.0])]
    many = [{"epoch": 1, "valid_layer_kl": [1.0] * 1024}, {"epoch": 2, "valid_layer_kl": [1.0] * 1024}]
    assert page._layer_series(many, "valid_layer_kl")[1].shape == (2, 1024)
    assert page._layer_series([{"epoch": 1, "valid_layer_kl": [1.0] * 1025}], "valid_layer_kl") is None
    page.curves_png([{"epoch": 1, "valid_layer_kl": [1.0] * 1025, "valid_kl": 3.0}], "ELBO", "elbo")
    assert list(_panels(drawn[1])) == ["KL (valid, nats)"]
    assert page.curves_png([{"epoch": 1, "train_loss": 3.0}], "ELBO", "elbo") is None and len(drawn) == 2


def test_the_metrics_reader_keeps_everything_the_page_draws(tmp_path, drawn):
    """read_metrics(path, metric_keys(score)) draws the same curves as the whole file: the
    train and valid scores, "iteration", the learning rate, the KL and active units in total
    and per layer."""
    lines = [
        {"iteration": i, "train_elbo": -9.0 + i, "valid_elbo": -9.5 + i, "lr": 0.1 / (i + 1), "valid_kl": 1.0 + i,
         "valid_layer_kl": [0.5, 0.5 + i], "valid_active_units": i, "valid_layer_active_units": [1, i], "other": 1}
        for i in range(3)
    ]  # fmt: skip
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in lines))
    for keep in (None, metric_keys("elbo")):
        page.curves_png(read_metrics(path, keep), "ELBO", "elbo")
    assert _panels(drawn[0]) == _panels(drawn[1]) and len(_panels(drawn[0])) == 4


# ---------------------------------------------------------------- the metrics reader


def test_the_metrics_reader_skips_blank_lines_and_counts_its_limit_exactly(tmp_path, monkeypatch):
    import dgmkit.training.metrics_file as metrics_file

    path = tmp_path / "metrics.jsonl"
    path.write_text('\n{"epoch": 1}\n  \n\n{"epoch": 2}\n\n')
    assert read_metrics(path) == [{"epoch": 1}, {"epoch": 2}]
    monkeypatch.setattr(metrics_file, "MAX_METRICS_LINES", 2)
    assert len(read_metrics(path)) == 2  # 2 lines (and blank ones): within the limit
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')
    with pytest.raises(DataError, match="holds more than 2 lines"):
        read_metrics(path)


# ---------------------------------------------------------------- dgm report on a run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A VAE of 1 epoch on the digits, evaluated."""
    out = tmp_path_factory.mktemp("sweep-report") / "vae"
    argv = ["train", "--dataset", "digits", "--epochs", "2", "--hidden", "8", "--latent-dim", "2", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    assert main(["eval", str(out), "--iw-samples", "2"]) == 0
    return out


def test_the_page_lists_only_the_settings_that_apply_and_says_what_it_wrote(run, tmp_path, capsys):
    """A Bernoulli VAE's config table holds its own settings, not a Gaussian's; the command says
    the page's size in KiB."""
    out = tmp_path / "r.html"
    code, said, _ = _dgm(capsys, "report", run, "--no-figures", "--out", out)
    assert code == 0
    shown = out.read_text()
    assert "<td>latent_dim</td>" in shown and "gaussian_variance" not in shown and "student_min_df" not in shown
    assert f"({out.stat().st_size / 1024:.0f} KiB, self-contained)" in said
    assert "<title>dgmkit report</title>" in shown


def test_an_upper_case_suffix_is_an_html_file_and_a_run_named_twice_through_a_link_is_refused(run, tmp_path, capsys):
    for name in ("R.HTML", "r.htm"):
        assert _dgm(capsys, "report", run, "--no-figures", "--out", tmp_path / name)[0] == 0
    (tmp_path / "again").symlink_to(run)
    code, _, err = _dgm(capsys, "report", run, tmp_path / "again", "--no-figures", "--out", tmp_path / "two.html")
    _refused(code, err, "a run folder is named twice")
    assert not (tmp_path / "two.html").exists()
    # an .html name that is a link to a run's file is that file: refused even with --force
    before = (run / "metrics.jsonl").read_bytes()
    (tmp_path / "link.html").symlink_to(run / "metrics.jsonl")
    code, _, err = _dgm(capsys, "report", run, "--no-figures", "--force", "--out", tmp_path / "link.html")
    _refused(code, err, f"--out {tmp_path / 'link.html'} is a file of the run")
    assert (tmp_path / "link.html").is_symlink() and (run / "metrics.jsonl").read_bytes() == before


def test_the_notes_of_a_short_metrics_file_and_of_an_evaluation_that_names_no_weights(run, tmp_path):
    """A metrics.jsonl cut short (fewer epochs than the checkpoint's) is noted as not of this
    run; an evaluation of this run that names no weights says so (not "earlier weights")."""
    vae = tmp_path / "vae"
    shutil.copytree(run, vae)
    first = (vae / "metrics.jsonl").read_text().splitlines()[0]
    (vae / "metrics.jsonl").write_text(first + "\n")
    evals = json.loads((vae / "evals.json").read_text())
    [(protocol, record)] = evals["results"].items()
    unnamed = {k: v for k, v in record.items() if k != "weights"}
    (vae / "evals.json").write_text(json.dumps({"results": {protocol: unnamed}}))
    assert main(["report", str(vae), "--no-figures", "--out", str(tmp_path / "r.html")]) == 0
    shown = (tmp_path / "r.html").read_text()
    assert "metrics.jsonl logs epochs up to 1, but checkpoint.safetensors was written after epoch 2" in shown
    assert f"<td class='note'>{html.escape(protocol)} (of weights it does not name)</td>" in shown


def test_the_notes_under_the_evaluations_are_those_of_every_record_each_once():
    """dgm eval's notes of each record, a note that two records share once; a record too old to
    hold what they need (dgmkit 0.1's: no estimate) or of a kind this dgmkit has none for adds
    none, and the others' notes stay."""
    from dgmkit.cli.report import _notes_of

    sampled = _record(num_dims=64)
    bound = _record(estimate="bound", num_dims=64)
    notes = _notes_of({"a": sampled, "b": bound, "c": {**sampled, "iw_samples": 5}, "old": {"split": "test", "nll": 3.0},
                       "new": _record(estimate="future-kind"), "d": sampled})  # fmt: skip
    assert notes == [
        "the NLL estimate is a stochastic upper bound that tends to the true NLL as k grows",
        "both numbers are lower bounds on log p(x) (as -NLL; estimates of them where drawn at random); the bound "
        "tightens as k grows",
    ]


@pytest.mark.parametrize(
    "counters, lines, said",
    [
        (None, [{"epoch": 7, "valid_elbo": -1.0}], []),  # a checkpoint with no counters: nothing to contradict
        ({"epoch": 2, "best_valid": None, "best_epoch": 2}, [{"epoch": 2, "valid_elbo": -1.0}], []),  # no best score
        ({"epoch": 2, "best_valid": float("nan"), "best_epoch": 2}, [{"epoch": 2, "valid_elbo": -1.0}], []),
        ({"epoch": 2, "best_valid": -1.0, "best_epoch": 2}, [{"epoch": 1}, {"epoch": 2}], []),  # no score to compare
        ({"epoch": 2, "best_valid": -1.0, "best_epoch": 2}, [{"epoch": 2, "train_elbo": -1.0 + 1e-12}], []),
        (
            {"epoch": 2, "best_valid": -1.0, "best_epoch": 2},
            [{"epoch": 2, "valid_elbo": -1.5}],
            ["gives no score of -1.000"],
        ),
        (  # an epoch no run logs (a 401-digit number was said), or not a number, is no line of the run
            {"epoch": 2, "best_valid": -1.0, "best_epoch": 2},
            [{"epoch": 2, "valid_elbo": -1.0}, {"epoch": 10**400}, {"epoch": 2**31}, {"epoch": True}, {"epoch": 3.0}],
            [],
        ),
    ],
)
def test_the_metrics_are_checked_against_the_checkpoints_counters_only_where_both_have_them(run, counters, lines, said):
    import dgmkit.cli.report as report
    from dgmkit.config import load_run

    notes = report._metrics_notes(load_run(run), lines, counters)
    assert len(notes) == len(said) and all(s in n for s, n in zip(said, notes)), notes


def test_the_figures_are_of_test_images_drawn_with_the_seed(run, tmp_path):
    """The reconstructions are of random test images, another set for another --seed (not the
    split's first 8 whatever the seed); the latent means are of the whole test split up to 1000."""
    n = next(iter(json.loads((run / "evals.json").read_text())["results"].values()))["n"]
    shown = {}
    for seed in (0, 1):
        out = tmp_path / f"s{seed}.html"
        assert main(["report", str(run), "--samples", "0", "--seed", str(seed), "--out", str(out)]) == 0
        text = out.read_text()
        assert f"posterior means E[z|x] of {n} random test images" in text
        shown[seed] = re.search(r'<img alt="reconstructions" src="([^"]+)"', text).group(1)
    assert n < 1000 and shown[0] != shown[1]


def test_the_comparison_skips_an_evaluation_the_page_marks_as_another_runs():
    """A record of the same weights' digest that names another model (a file copied from another
    run, or crafted) was marked so in the run's table, and still gave the comparison its NLL."""
    records = {"theirs": _record(nll=1e300, iw_samples=9999), "own": _record(nll=41.0)}
    marks = {"theirs": "not this run's: an evaluation of a flow model", "own": ""}
    row = _comparison(_page("a", records, weights="w", marks=marks), _page("b"))[0]
    assert row["test NLL (nats)"] == "41.000"
