"""``dgm report``: a self-contained HTML page of runs, rendered by a real headless browser."""

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from dgm_cli import dgm as _dgm
from dgm_cli import refused as _refused
from dgmkit.cli.main import main
from dgmkit.cli.report import read_metrics
from dgmkit.errors import DataError
from dgmkit.reporting import NOT_DRAWN, RunPage, render_page


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    vae, diff = root / "vae <b>x</b>", root / "diff"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--epochs",
                "3",
                "--hidden",
                "32",
                "--latent-dim",
                "4",
                "--out",
                str(vae),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["eval", str(vae), "--iw-samples", "10"]) == 0
    args = ["train", "--model", "diffusion", "--dataset", "digits", "--epochs", "2", "--unet-channels", "8", "8"]
    assert main([*args, "--out", str(diff), "--quiet"]) == 0
    return vae, diff


def test_metrics_reader_leaves_out_a_line_being_written_and_refuses_others(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "valid_elbo": -3.0}\n{"epoch": 2, "valid_el')
    assert read_metrics(path) == [{"epoch": 1, "valid_elbo": -3.0}]
    for middle in ("[1, 2]", '{"epoch": 2, "valid_el'):  # not a table; cut short, but not the last line
        path.write_text('{"epoch": 1}\n' + middle + '\n{"epoch": 3}\n')
        with pytest.raises(DataError, match="line 2: not a JSON object"):
            read_metrics(path)
    assert read_metrics(tmp_path / "none.jsonl") == []
    with open(tmp_path / "huge.jsonl", "wb") as f:  # (sparse: no disk used; refused by its size, unread)
        f.truncate((256 << 20) + 1)
    with pytest.raises(DataError, match="huge.jsonl is larger than 256 MiB"):
        read_metrics(tmp_path / "huge.jsonl")


def test_report_is_self_contained_escaped_and_compares_runs(runs, tmp_path, capsys):
    vae, diff = runs
    out = tmp_path / "r.html"
    assert main(["report", str(vae), str(diff), "--out", str(out), "--samples", "4", "--steps", "3"]) == 0
    page = out.read_text()
    assert "Comparison" in page and page.count("<h2 id=") == 2
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page  # a folder name is text, not markup
    sources = re.findall(r'(?:src|href)="([^"]*)"', page) + re.findall(r"(?:src|href)='([^']*)'", page)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources)  # nothing to fetch
    assert page.count("data:image/png;base64,") >= 5  # curves x2, samples x2, reconstructions, latents
    evals = json.loads((vae / "evals.json").read_text())["results"]
    nll = next(iter(evals.values()))["nll"]
    assert f"{nll:.3f}" in page  # the evaluation table holds the run's own number
    # and the notes dgm eval prints under it: what the estimate is, what the data are
    assert "stochastic upper bound that tends to the true NLL as k grows" in page and "data: binarized" in page
    assert main(["report", str(vae), "--out", str(out)]) == 1  # never replaces a file without --force
    assert "exists" in capsys.readouterr().err
    assert main(["report", str(vae), "--out", str(vae / "metrics.jsonl"), "--force"]) == 1  # nor a run's file
    assert main(["report", str(vae), "--out", str(tmp_path / "r.txt")]) == 1


def test_a_run_with_only_an_eval_json_is_reported_as_with_evals_json(runs, tmp_path, capsys):
    """A run evaluated before evals.json existed holds its one eval.json: the page shows it as it
    shows evals.json's; an eval.json that is not dgm eval's is refused by name."""
    vae = tmp_path / "vae"
    shutil.copytree(runs[0], vae)
    assert main(["report", str(vae), "--out", str(tmp_path / "a.html"), "--no-figures"]) == 0
    (vae / "evals.json").unlink()
    assert main(["report", str(vae), "--out", str(tmp_path / "b.html"), "--no-figures"]) == 0
    page = (tmp_path / "a.html").read_text()
    assert json.loads((vae / "eval.json").read_text())["estimate"] in page
    assert (tmp_path / "b.html").read_text() == page
    capsys.readouterr()
    for text in ("{not json", '{"estimate": "exact"}', None):  # not JSON; no split, k or seed; over 64 MiB
        if text is None:
            with open(vae / "eval.json", "wb") as f:  # sparse: refused from its size, never read in
                f.truncate(65 << 20)
        else:
            (vae / "eval.json").write_text(text)
        assert main(["report", str(vae), "--out", str(tmp_path / "c.html"), "--no-figures"]) == 1
        err = capsys.readouterr().err
        said = "eval.json is larger than 64 MiB" if text is None else "eval.json is not an eval.json of dgmkit"
        assert err.startswith("dgm: error: ") and err.count("\n") == 1 and said in err, err
    assert not (tmp_path / "c.html").exists()


def test_an_evaluation_of_a_kind_this_dgmkit_has_no_notes_for_is_shown_without_them(runs, tmp_path):
    """(A result written by a newer dgmkit, say): the page shows its numbers, not the notes."""
    vae = tmp_path / "vae"
    shutil.copytree(runs[0], vae)
    (vae / "evals.json").unlink()
    record = json.loads((vae / "eval.json").read_text())
    (vae / "eval.json").write_text(json.dumps({**record, "estimate": "future-kind"}))
    assert main(["report", str(vae), "--out", str(tmp_path / "r.html"), "--no-figures"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "future-kind" in page and f"{record['nll']:.3f}" in page


BAD_FIELDS = [  # (an edit of a record dgm eval wrote, what the refusal names)
    (
        lambda r: {**r, "terms": [{"name": "mmd", "label": "MMD", "value": 10**400}]},
        "terms[0].value is an integer of 401 digits",
    ),
    (
        lambda r: {**r, "accuracy": 10**400},
        "accuracy is an integer of 401 digits",
    ),  # (a term's field in records before terms)
    (lambda r: {**r, "observed_dims": "x"}, "observed_dims is 'x'"),
    (lambda r: {**r, "observed_dims": [1]}, "observed_dims is [1]"),
    (lambda r: {**{k: v for k, v in r.items() if k != "num_dims"}, "estimate": "magic"}, "it has no num_dims"),
    (lambda r: {**r, "n": -5}, "n is -5, not a positive integer"),
    (lambda r: {**r, "nll": -3.0}, "nll is -3.0, below 0: the data are discrete"),
    (lambda r: {**r, "nll": "41.373"}, "nll is '41.373', not a finite number"),
    (lambda r: {**r, "n": 300.6}, "n is 300.6, not a positive integer"),
    (lambda r: {**r, "n": 10**400}, "n is an integer of 401 digits"),
    (lambda r: {**r, "active_units": 1.5}, "active_units is 1.5, not an integer"),
    (lambda r: {**r, "active_units": r["latent_dim"] + 1}, "more than latent_dim"),
    (lambda r: {**r, "iw_samples": 10.0}, "iw_samples is 10.0, not an integer"),
    (lambda r: {**r, "subset": {"of": 5, "seed": 0}}, "subset is"),
    (lambda r: {**r, "point_mass_posterior": 1}, "point_mass_posterior is 1, not true or false"),
    # (a 2 MB split was shown whole on dgm report's page)
    (lambda r: {**r, "split": "t" * 2_000_000}, "not a string of at most 10000 characters"),
]


@pytest.mark.parametrize("edit, said", BAD_FIELDS)
def test_an_evaluation_record_with_a_field_of_another_type_or_range_is_refused_by_name(runs, tmp_path, capsys, edit, said):
    """A crafted evals.json or eval.json (a huge integer, a string or a float for a number or a
    count, a negative count, a field missing) made an internal error (OverflowError, KeyError,
    TypeError) or showed a wrong number (n=-5, '41.373' as a number, 300.6 as 301, k=10.0 with
    no k): it is refused, naming the file, the result and the field; dgm eval reads the records
    through the same check, before any work."""
    vae = tmp_path / "vae"
    shutil.copytree(runs[0], vae)
    evals = json.loads((vae / "evals.json").read_text())["results"]
    [(protocol, record)] = evals.items()
    (vae / "evals.json").write_text(json.dumps({"results": {protocol: edit(record)}}))
    html = tmp_path / "r.html"
    _refused(
        *_dgm(capsys, "report", vae, "--out", html, "--no-figures")[::2], "evals.json is not an evals.json", protocol, said
    )
    _refused(*_dgm(capsys, "eval", vae, "--iw-samples", "2")[::2], "evals.json", protocol, said)
    (vae / "evals.json").unlink()  # a run with only its eval.json: the same check
    (vae / "eval.json").write_text(json.dumps(edit(record)))
    _refused(*_dgm(capsys, "report", vae, "--out", html, "--no-figures")[::2], "eval.json is not an eval.json", said)
    _refused(*_dgm(capsys, "eval", vae, "--iw-samples", "2")[::2], "eval.json is not an eval.json", said)
    assert not html.exists() and json.loads((vae / "eval.json").read_text()) == edit(record)  # nothing written


def test_the_eval_json_of_dgmkit_0_1_is_shown_as_dgm_eval_reads_it(runs, tmp_path):
    """dgm eval takes dgmkit 0.1's eval.json (no estimate; tests/test_migration.py) as its own;
    the page called it 'not an eval.json of dgmkit'. It shows its numbers now, saying what it is."""
    vae = tmp_path / "vae"
    shutil.copytree(runs[0], vae)
    (vae / "evals.json").unlink()
    old = {"elbo": -30.1, "nll": 29.5, "exact": False, "note": "k=10", "split": "test", "checkpoint": "best.safetensors"}
    (vae / "eval.json").write_text(json.dumps(old))
    assert main(["report", str(vae), "--out", str(tmp_path / "r.html"), "--no-figures"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "29.500" in page and "-30.100" in page and "dgmkit 0.1&#x27;s evaluation (k=10)" in page


@pytest.mark.parametrize("name", ["metrics.jsonl", "eval.json", "best.safetensors"])
@pytest.mark.parametrize("kind", ["link to /dev/zero", "FIFO", "folder"])
def test_a_run_file_that_is_not_a_regular_file_is_refused_by_name(runs, tmp_path, capsys, name, kind):
    """metrics.jsonl or eval.json as a link to /dev/zero, a FIFO or a folder was taken as absent
    ('no metrics logged', 'no evaluation yet'), and such a best.safetensors was passed over for
    checkpoint.safetensors (its evaluation then called 'of earlier weights'): each is refused by
    name, as evals.json and config.json are. A link to a regular file (git-annex, DVC) is read."""
    import os

    vae = tmp_path / "vae"
    shutil.copytree(runs[0], vae)
    (vae / "evals.json").unlink()  # (eval.json is read where there is no evals.json)
    (vae / name).rename(tmp_path / name)
    (vae / name).symlink_to(tmp_path / name)  # a link to the file: read as the file
    html = tmp_path / "r.html"
    assert main(["report", str(vae), "--out", str(html), "--no-figures"]) == 0
    before = html.read_text()
    assert "no metrics logged" not in before and "no evaluation yet" not in before and "earlier weights" not in before
    (vae / name).unlink()
    if kind == "FIFO":
        os.mkfifo(vae / name)
    elif kind == "folder":
        (vae / name).mkdir()
    else:
        (vae / name).symlink_to("/dev/zero")
    capsys.readouterr()
    _refused(
        *_dgm(capsys, "report", vae, "--out", tmp_path / "s.html", "--no-figures")[::2], f"{vae / name}", "regular file"
    )
    assert not (tmp_path / "s.html").exists()


def test_another_runs_evaluation_or_metrics_are_not_shown_as_this_runs(runs, tmp_path):
    """An evals.json copied or linked from another run was shown as this run's 'earlier
    weights', even where its record names another model; a metrics.jsonl of another run (3
    epochs, another best) was drawn without a word. Records name their run (run_id) and model:
    another's is marked so; metrics.jsonl that contradicts the checkpoint's counters is noted."""
    vae = tmp_path / "vae"
    shutil.copytree(runs[0], vae)
    [(protocol, record)] = json.loads((vae / "evals.json").read_text())["results"].items()
    own = json.loads((vae / "config.json").read_text())["run_id"]
    assert record["run_id"] == own and record["model"] == "vae"
    no_id = {k: v for k, v in record.items() if k != "run_id"}
    cases = {  # protocol -> (record, what the page says of it)
        "a": ({**record, "run_id": "0" * 32}, f"not this run&#x27;s: an evaluation of the run {'0' * 32}"),
        "b": ({**no_id, "model": "flow"}, "not this run&#x27;s: an evaluation of a flow model"),
        "c": ({**record, "weights": "0" * 16}, "earlier weights than the run&#x27;s now"),
        "d": ({**no_id, "weights": "0" * 16}, "other weights than the run&#x27;s now (the record names no run)"),
        "e": (record, None),
    }
    (vae / "evals.json").write_text(json.dumps({"results": {k: r for k, (r, _) in cases.items()}}))
    lines = [json.loads(line) for line in (vae / "metrics.jsonl").read_text().splitlines()]
    best = max(range(len(lines)), key=lambda i: lines[i]["valid_elbo"])
    recorded = lines[best]["valid_elbo"]
    lines[best]["valid_elbo"] += 1.25
    lines += [{**lines[-1], "epoch": len(lines) + 1}, {**lines[-1], "epoch": len(lines) + 2}]
    (vae / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    assert main(["report", str(vae), "--out", str(tmp_path / "r.html"), "--no-figures"]) == 0
    page = (tmp_path / "r.html").read_text()
    for key, (_, said) in cases.items():
        cell = re.search(f"<td class='note'>{key}( \\(([^<]*)\\))?</td>", page)
        assert cell is not None and cell.group(2) == said, (key, cell and cell.group(0))
    assert f"metrics.jsonl logs epochs up to {len(lines)}, but checkpoint.safetensors was written after epoch " in page
    assert f"metrics.jsonl gives no score of {recorded:.3f} at epoch {best + 1}" in page
    own = (runs[0] / "metrics.jsonl").read_text()
    (vae / "metrics.jsonl").write_text(own)  # the run's own: no such note
    assert main(["report", str(vae), "--out", str(tmp_path / "r.html"), "--no-figures", "--force"]) == 0
    assert "metrics.jsonl logs" not in (tmp_path / "r.html").read_text()
    last = json.loads(own.splitlines()[-1])  # a run stopped after an epoch's line, before its checkpoint
    (vae / "metrics.jsonl").write_text(own + json.dumps({**last, "epoch": last["epoch"] + 1}) + "\n")
    assert main(["report", str(vae), "--out", str(tmp_path / "r.html"), "--no-figures", "--force"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert f"but the run stopped before its checkpoint (checkpoint.safetensors is of epoch {last['epoch']}" in page
    assert "may not be of this run" not in page
    # that line's score, the best of all, is of no weights kept: the comparison's best is the checkpoint's epochs'
    stopped = {**last, "epoch": last["epoch"] + 1, "valid_elbo": 0.0}
    (vae / "metrics.jsonl").write_text(own + json.dumps(stopped) + "\n")
    assert main(["report", str(vae), str(runs[1]), "--out", str(tmp_path / "r.html"), "--no-figures", "--force"]) == 0
    best = max(json.loads(line)["valid_elbo"] for line in own.splitlines())
    assert f"-ELBO {-best:.3f} (epoch " in (tmp_path / "r.html").read_text()


def test_a_checkpoint_safetensors_of_another_run_gives_the_page_no_counters(runs, tmp_path):
    """A run's checkpoint.safetensors replaced by another run's (stopped after epoch 1) made the
    comparison say the run was trained "1 of 3 epochs", its best score that of epoch 1, and blamed
    metrics.jsonl ("the curves may not be of this run"): the counters of a checkpoint of another
    run id are not the run's; the page says whose it is."""
    vae, other = tmp_path / "vae", tmp_path / "other"
    shutil.copytree(runs[0], vae)
    argv = ["train", "--dataset", "digits", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--quiet"]
    assert main([*argv, "--out", str(other)]) == 0
    shutil.copy(other / "checkpoint.safetensors", vae / "checkpoint.safetensors")
    assert main(["report", str(vae), str(runs[1]), "--out", str(tmp_path / "r.html"), "--no-figures"]) == 0
    page = (tmp_path / "r.html").read_text()
    lines = [json.loads(line) for line in (vae / "metrics.jsonl").read_text().splitlines()]
    best = max(range(len(lines)), key=lambda i: lines[i]["valid_elbo"])
    row = re.search(r"<tr><td><a href='#run-0'>.*?</tr>", page).group(0)
    assert "<td class='num'>3 epochs</td>" in row and f"-ELBO {-lines[best]['valid_elbo']:.3f} (epoch {best + 1})" in row
    other_id = json.loads((other / "config.json").read_text())["run_id"]
    assert f"checkpoint.safetensors is of another run (run id {other_id[:12]!r}" in html.unescape(page)
    assert "may not be of this run" not in page


def test_the_page_says_what_dgm_eval_says_of_terms_active_units_and_em_steps(runs, tmp_path, monkeypatch):
    """The page dropped what dgm eval prints: a term's note (a WAE's MMD), "n/a: reason" (shown
    as "-"), the active units of the latent dimensions ("1 / 2", shown as "1"); and it drew an EM
    run's curves against "epoch" where dgm train says "EM iteration"."""
    import html

    import numpy as np
    from matplotlib.text import Text

    import dgmkit.reporting.page as page
    from dgmkit.cli.evaluate import format_report
    from dgmkit.models.terms import format_term

    vae = tmp_path / "vae"
    shutil.copytree(runs[0], vae)
    [(protocol, record)] = json.loads((vae / "evals.json").read_text())["results"].items()
    mmd = {"name": "mmd", "label": "MMD^2", "value": 0.01234, "unit": "", "note": "unbiased, inverse multiquadric",
           "level": 0, "digits": 5}  # fmt: skip
    accuracy = {"name": "accuracy", "label": "accuracy", "value": None, "unit": "", "note": "no labels", "level": 0,
                "digits": 4}  # fmt: skip
    record = {**record, "terms": [mmd, accuracy], "active_units": 1}
    (vae / "evals.json").write_text(json.dumps({"results": {protocol: record}}))
    assert main(["report", str(vae), "--out", str(tmp_path / "r.html"), "--no-figures"]) == 0
    shown, printed = (tmp_path / "r.html").read_text(), format_report(record)
    for said in [format_term(t)[1] for t in (mmd, accuracy)] + [f"1 / {record['latent_dim']}"]:
        assert said in printed and html.escape(said) in shown, said
    assert "0.01234  (unbiased, inverse multiquadric)" in printed and "n/a: no labels" in printed
    patches = (np.random.default_rng(0).random((300, 3, 3)) < 0.4).astype(np.uint8)
    np.save(tmp_path / "patches.npy", patches)
    em = tmp_path / "em"
    argv = ["--model", "loglinear", "--states", "2", "--em-iterations", "2", "--quiet", "--out", str(em)]
    assert main(["train", "--dataset", str(tmp_path / "patches.npy"), *argv]) == 0
    texts: list[str] = []
    png = page.figure_png
    monkeypatch.setattr(page, "figure_png", lambda fig: texts.extend(t.get_text() for t in fig.findobj(Text)) or png(fig))
    assert main(["report", str(em), "--out", str(tmp_path / "em.html"), "--no-figures"]) == 0
    assert "EM iteration" in texts and "epoch" not in texts


def test_invisible_characters_in_names_are_shown_escaped(runs, tmp_path):
    """A run folder or a CSV column named with a right-to-left override or a zero width space
    went raw into the page's headings and cells, where a name can show as another: they are
    shown as their escapes (\\u202e), in the page and in the figures' texts."""
    from dgmkit.evaluation.figures import literal

    vae = tmp_path / "run\u202etxt.exe"
    shutil.copytree(runs[0], vae)
    evals = json.loads((vae / "evals.json").read_text())
    for r in evals["results"].values():
        r["table_note"] = "a table: its numeric columns (a\u200bb) are scored standardized"
    (vae / "evals.json").write_text(json.dumps(evals))
    assert main(["report", str(vae), "--out", str(tmp_path / "r.html"), "--no-figures"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "\u202e" not in page and "\u200b" not in page
    assert "<h2 id='run-0'>" + str(vae).replace("\u202e", "\\u202e") + "</h2>" in page and "(a\\u200bb)" in page
    assert literal("a\u202eb\x85c") == "a\\u202eb\\x85c" and literal("é ü") == "é ü"  # (others as they are)


def test_a_metrics_line_of_nan_or_infinity_is_named_as_such(tmp_path):
    """A last line holding Infinity was left out as 'cut short', a middle line with NaN called
    'not a JSON object': JSON that dgmkit never writes is named."""
    path = tmp_path / "metrics.jsonl"
    for text, line, what in (
        ('{"epoch": 1}\n{"epoch": 2, "valid_elbo": Infinity}', 2, "Infinity"),
        ('{"epoch": 1, "valid_elbo": NaN}\n{"epoch": 2}\n', 1, "NaN"),
        ('{"epoch": 1, "epoch": 2}\n', 1, "the key 'epoch' appears twice"),
    ):
        path.write_text(text)
        with pytest.raises(DataError, match=f"line {line}: {what}"):
            read_metrics(path)


def test_metrics_are_read_in_memory_bounded_by_the_file_and_its_lines(tmp_path, monkeypatch):
    """A 66 MB metrics.jsonl of '{}' lines took 3.6 GB (55 times the file; 14 GB at the size
    cap): the page's keys alone are kept, a line at a time, and a file of more lines than any
    run has epochs is refused."""
    import tracemalloc

    import dgmkit.training.metrics_file as metrics_file
    from dgmkit.reporting import metric_keys

    path = tmp_path / "metrics.jsonl"
    line = {"train_loss": 1.5, "images_per_s": 2.5, "time_s": 0.1, "valid_kl_per_dim": [0.5] * 16}
    path.write_text("".join(json.dumps({"epoch": i, **line, "valid_elbo": -i}) + "\n" for i in range(1, 20001)))
    tracemalloc.start()
    rows = read_metrics(path, metric_keys("elbo"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rows[-1] == {"epoch": 20000, "valid_elbo": -20000} and len(rows) == 20000
    assert peak < 3 * path.stat().st_size, (peak, path.stat().st_size)  # (8 times before)
    path.write_text("{}\n" * 30)
    assert read_metrics(path, {"epoch"}) == [] and len(read_metrics(path)) == 30
    monkeypatch.setattr(metrics_file, "MAX_METRICS_LINES", 29)
    with pytest.raises(DataError, match="holds more than 29 lines, one an epoch, more than any run has epochs"):
        read_metrics(path)


def test_a_metrics_line_longer_than_any_dgmkit_writes_is_refused_before_it_is_parsed(tmp_path):
    """One line of 17 MiB of nested empty lists, under a key the page never reads, took 27 times
    its size to parse (7 GB at the file's 256 MiB cap): a line is at most 16 MiB (an epoch's line
    is a few kB; one of 2 million latent dimensions' KLs, 16 MB), refused by its size unparsed."""
    import tracemalloc

    from dgmkit.cli.report import MAX_METRICS_LINE_BYTES
    from dgmkit.reporting import metric_keys

    assert MAX_METRICS_LINE_BYTES == 16 << 20
    path = tmp_path / "metrics.jsonl"
    lines = '{"epoch": 1, "valid_elbo": -3}\n' + '{"epoch": 2, "x": [' + "[]," * ((17 << 20) // 3) + "[]]}\n"
    path.write_text(lines)
    tracemalloc.start()
    said = r"metrics.jsonl, line 2: [0-9,]+ bytes, more than any line dgmkit writes [(]16 MiB[)]"
    with pytest.raises(DataError, match=said):
        read_metrics(path, metric_keys("elbo"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * path.stat().st_size, peak  # (the bytes read, and the line: not parsed, which took 27 times)


def test_metrics_values_the_page_cannot_draw_are_not_kept(tmp_path):
    """Lines of a key the page reads (a layer's KLs) holding nested lists kept them all: 21 times
    the file. Only numbers, and lists of at most 1024 numbers (a value per layer), are kept."""
    import tracemalloc

    from dgmkit.reporting import metric_keys

    path = tmp_path / "metrics.jsonl"
    junk = "[" + "[]," * 1000 + "[]]"
    line = '{"epoch": %d, "valid_elbo": -%d, "valid_layer_kl": JUNK, "lr": {"a": JUNK}}\n'.replace("JUNK", junk)
    text = "".join(line % (i, i) for i in range(1, 201))
    path.write_text(text + '{"epoch": 201, "valid_layer_kl": [1, 2.5, null], "valid_kl": "x", "lr": 0.1}\n')
    tracemalloc.start()
    rows = read_metrics(path, metric_keys("elbo"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    gone = {"valid_layer_kl": NOT_DRAWN, "lr": NOT_DRAWN}  # (one string for them all: counted, not kept)
    assert rows[0] == {"epoch": 1, "valid_elbo": -1, **gone} and len(rows) == 201
    assert rows[-1] == {"epoch": 201, "valid_layer_kl": [1, 2.5, None], "valid_kl": NOT_DRAWN, "lr": 0.1}
    assert peak < 3 * path.stat().st_size, (peak, path.stat().st_size)
    path.write_text('{"epoch": 1, "valid_layer_kl": ' + json.dumps([0.5] * 1025) + "}\n")
    assert read_metrics(path, metric_keys("elbo")) == [{"epoch": 1, "valid_layer_kl": NOT_DRAWN}]


def test_the_page_says_how_many_logged_values_its_curves_leave_out_and_why(tmp_path):
    """Text, true/false and null (a NaN or inf the trainer logged) in a curve's key, an entry of a
    layer's list, a value beyond any axis and a line of no whole epoch were left out of the curves
    without a word; the page (and dgm report's terminal) now counts them by reason. Keys the
    curves do not read, and a key a line does not log, are not counted."""
    from dgmkit.reporting import curves_left_out, metric_keys

    path = tmp_path / "metrics.jsonl"
    lines = [
        {"epoch": 1, "train_elbo": -90.0, "valid_elbo": "abc", "lr": True, "images_per_s": "fast"},
        {"epoch": 2, "train_elbo": None, "valid_elbo": -80.0, "valid_layer_kl": [1.0, None], "lr": 1e-3},
        {"epoch": 3, "train_elbo": 1e31, "valid_elbo": {"a": 1}, "valid_layer_kl": [1.0, 2.0]},
        {"epoch": "4", "train_elbo": -70.0, "valid_elbo": -69.0},
        {"epoch": 5, "valid_elbo": -60.0},
    ]
    path.write_text("".join(json.dumps(m) + "\n" for m in lines))
    metrics = read_metrics(path, metric_keys("elbo"))
    note = curves_left_out(metrics, "elbo")
    assert note == (
        "the curves leave out 8 logged values of metrics.jsonl (not numbers (text, true or false, lists): 3; "
        "null (NaN or infinite when logged: metrics.jsonl writes them as null): 2; beyond +-1e+30: 1; "
        "in lines with no whole epoch (or iteration) number: 2)"
    )
    shown = render_page([RunPage("run", "VAE", "digits", {}, metrics, "elbo", "ELBO", {})])
    assert "<p class='note'>The curves leave out 8 logged values of metrics.jsonl (not numbers" in shown
    assert curves_left_out(metrics[-1:], "elbo") is None
    assert "leave out" not in render_page([RunPage("run", "VAE", "digits", {}, metrics[-1:], "elbo", "ELBO", {})])


def test_a_run_folder_named_twice_is_refused(runs, tmp_path, capsys):
    vae = runs[0]
    capsys.readouterr()
    assert main(["report", str(vae), str(vae / "."), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err == "dgm: error: a run folder is named twice\n" and not (tmp_path / "r.html").exists()


def test_a_run_whose_data_file_is_gone_is_reported_with_a_note_for_its_data_figures(tmp_path, capsys):
    """Samples need no data; the reconstructions and latent means do: without the file, the
    page says why they are missing instead of failing."""
    import numpy as np

    data = tmp_path / "bits.npy"
    np.save(data, (np.random.default_rng(0).random((60, 8, 8)) < 0.5).astype(np.uint8))
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(data), "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(run)]) == 0
    data.unlink()
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "--samples", "4"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "no reconstruction or latent figures: the test data could not be read" in page and "bits.npy" in page
    said = capsys.readouterr().out  # (and on the terminal, not in the page alone)
    assert f"note: {run}: no reconstruction or latent figures: the test data could not be read" in said
    alts = re.findall(r'<img alt="([^"]*)"', page)
    assert "samples" in alts and not {"reconstructions", "latent means"} & set(alts), alts
    # --data names one run's moved file: a run on a named dataset beside it gets the note, not a failed report
    data.with_name("moved.npy").write_bytes(b"")
    digits = tmp_path / "digits"
    argv = ["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(digits)]) == 0
    args = ["report", str(run), str(digits), "--out", str(tmp_path / "two.html"), "--samples", "4"]
    assert main([*args, "--data", str(data.with_name("moved.npy"))]) == 0
    assert "trained on the named dataset" in (tmp_path / "two.html").read_text()
    assert main([*args, "--steps", "3", "--samples", "0"]) == 1  # (no run samples with steps here either)
    assert "--steps sets how the samples are drawn, and --samples 0 draws none" in capsys.readouterr().err


def test_data_dir_is_read_by_the_runs_whose_data_come_from_a_folder_and_left_to_them(tmp_path, capsys, data_dir):
    """--data-dir is the folder of the runs read from one: a run on the bundled digits beside a
    run on Frey faces lost its reconstruction and latent figures to a note (its data read from no
    folder); with no run read from a folder it is refused, as the other commands refuse it."""
    tiny = ["--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    frey, digits = tmp_path / "frey", tmp_path / "digits"
    frey_flags = ["--dataset", "frey-faces", "--likelihood", "gaussian", "--data-dir", str(data_dir)]
    assert main(["train", *frey_flags, *tiny, "--out", str(frey)]) == 0
    assert main(["train", "--dataset", "digits", *tiny, "--out", str(digits)]) == 0
    out = tmp_path / "r.html"
    two = ["report", str(frey), str(digits), "--samples", "4", "--data-dir", str(data_dir)]
    assert main([*two, "--out", str(out)]) == 0
    assert "could not be read" not in out.read_text() and "note:" not in capsys.readouterr().out
    assert main(["report", str(digits), "--data-dir", str(data_dir), "--out", str(tmp_path / "d.html")]) == 1
    said = f"--data-dir is of datasets read from a folder; {digits} was trained on digits, read from no folder"
    assert said in capsys.readouterr().err and not (tmp_path / "d.html").exists()
    # a run on the latents of the run on digits reads no folder either: its 2-D density figure is drawn beside the
    # Frey run (it was lost to a note, the chain refusing the folder), and alone --data-dir is refused
    flow = tmp_path / "flow"
    assert main(["train", "--model", "flow", "--codes-of", str(digits), "--epochs", "1", "--out", str(flow), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", str(frey), str(flow), "--data-dir", str(data_dir), "--out", str(out), "--force"]) == 0
    page = out.read_text()
    assert "density p(x) on a" in page and "could not be read" not in page and "note:" not in capsys.readouterr().out
    assert main(["report", str(flow), "--data-dir", str(data_dir), "--out", str(tmp_path / "f.html")]) == 1
    assert "no run here was trained on one, nor on the data of runs trained on one" in capsys.readouterr().err


def test_a_file_that_appears_at_out_while_the_page_is_made_is_kept_not_replaced(runs, tmp_path, monkeypatch, capsys):
    """--out is checked before the work (figures can take minutes) and written after it: a file
    made there meanwhile (another dgm report to the same name, a user's file) is kept, and the
    command fails saying so, unless --force was given."""
    import dgmkit.cli.report as report

    vae, _ = runs
    out = tmp_path / "r.html"
    render = report.render_page

    def render_then_someone_writes(*a, **k):
        page = render(*a, **k)
        out.write_text("theirs")
        return page

    monkeypatch.setattr(report, "render_page", render_then_someone_writes)
    capsys.readouterr()
    assert main(["report", str(vae), "--no-figures", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert out.read_text() == "theirs" and "r.html" in err and "--force" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # (no temporary file left)
    assert main(["report", str(vae), "--no-figures", "--out", str(out), "--force"]) == 0  # --force: replaced
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_report_without_figures_reads_no_data(runs, tmp_path, monkeypatch):
    vae, _ = runs
    monkeypatch.setenv("DGMKIT_DATA", str(tmp_path / "nowhere"))
    out = tmp_path / "r.html"
    assert main(["report", str(vae), "--no-figures", "--out", str(out)]) == 0
    assert out.read_text().count("data:image/png;base64,") == 1  # the curves only


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_browser() is None, reason="no Chromium on this machine (.ci/run installs it)")
def test_report_renders_in_a_headless_browser(runs, tmp_path):
    vae, diff = runs
    out = tmp_path / "r.html"
    assert main(["report", str(vae), str(diff), "--out", str(out), "--samples", "4", "--steps", "3"]) == 0
    flags = [
        _browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'p'}",
    ]
    flags += ["--host-resolver-rules=MAP * ~NOTFOUND"]  # no network: the page must not need it
    dom = subprocess.run([*flags, "--enable-logging=stderr", "--dump-dom", out.as_uri()], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr, dom.stderr[-2000:]  # no script error, no warning
    rendered = re.search(r'data-rendered="(\d+)/(\d+)"', dom.stdout)
    assert rendered, "the page's load script did not run"
    ok, total = map(int, rendered.groups())
    assert total >= 5 and ok == total  # every embedded image decoded
    shot = tmp_path / "r.png"
    run = subprocess.run([*flags, "--window-size=1200,2400", f"--screenshot={shot}", out.as_uri()], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0 and shot.stat().st_size > 20_000  # a page with pictures, not a blank one
    from PIL import Image

    pixels = Image.open(shot).convert("L").getextrema()
    assert pixels[0] < 50 and pixels[1] > 200  # text on a light background


def test_tensorboard_logs_the_metrics_of_every_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--epochs", "3", "--hidden", "16", "--latent-dim", "2", "--tensorboard"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/elbo", "valid/elbo", "valid/kl", "lr"} <= set(tags)
    logged = [(e.step, e.value) for e in acc.Scalars("valid/elbo")]
    assert logged == [(m["epoch"], pytest.approx(m["valid_elbo"], rel=1e-6)) for m in lines]


def test_tensorboard_tags_are_the_finite_numbers_of_a_metrics_line_grouped():
    from dgmkit.training.tensorboard import tensorboard_tags

    line = {"epoch": 3, "train_elbo": -3.5, "valid_elbo": -4.0, "lr": 1e-3, "valid_kl": float("nan"), "ema": True,
            "valid_layer_kl": [1.0, float("inf"), 2], "valid_units": [True, False], "name": "x", "steps": 7}  # fmt: skip
    assert tensorboard_tags(line) == {
        "train/elbo": -3.5,
        "valid/elbo": -4.0,
        "lr": 1e-3,
        "valid/layer_kl/1": 1.0,
        "valid/layer_kl/3": 2.0,
        "steps": 7.0,
    }  # (a flag is no number: left out, as a list of flags)


def test_tensorboard_is_off_by_default_and_refused_for_closed_form_fits(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--hidden", "16", "--out", str(out), "--quiet"]) == 0
    assert not (out / "tensorboard").exists()
    assert main(["train", "--model", "ppca", "--dataset", "digits", "--tensorboard", "--out", str(tmp_path / "p")]) == 1
    assert "closed form" in capsys.readouterr().err


@pytest.mark.parametrize("planted", ["link", "file"])
def test_a_link_or_file_planted_at_the_tensorboard_folder_is_refused_before_the_run_goes_on(tmp_path, capsys, planted):
    """The link is not followed, and the file not written to; both are refused before --resume
    trains an epoch (they were refused after it: the run had gone on, its files rewritten, and the
    command failed)."""
    pytest.importorskip("tensorboard")
    import shutil

    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    args = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--tensorboard", "--quiet"]
    assert main([*args, "--epochs", "1", "--out", str(out)]) == 0
    shutil.rmtree(out / "tensorboard")
    elsewhere.mkdir()
    if planted == "link":
        (out / "tensorboard").symlink_to(elsewhere)
    else:
        (out / "tensorboard").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.is_symlink()}
    capsys.readouterr()
    assert main([*args, "--epochs", "2", "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    said = "symbolic link" if planted == "link" else "exists and is not a folder"
    assert err.startswith("dgm: error: ") and said in err and err.count("\n") == 1, err
    assert not list(elsewhere.iterdir())
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.is_symlink()} == before


def test_a_table_run_with_holes_gets_no_pictures_of_its_rows(tmp_path, capsys):
    """Rows of a table (1 x 1 x D, here with half the entries missing) are not images: the page
    shows the curves and the latent means, no samples or reconstructions drawn as pictures (it
    drew NaN rows as images, then refused them as non-finite)."""
    run = tmp_path / "iris"
    argv = ["train", "--dataset", "iris", "--objective", "miwae", "--likelihood", "student-t", "--missing-rate", "0.5"]
    assert main([*argv, "--hidden", "8", "--latent-dim", "2", "--epochs", "2", "--quiet", "--out", str(run)]) == 0
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    alts = re.findall(r'<img alt="([^"]*)"', (tmp_path / "r.html").read_text())
    assert "latent means" in alts and not {"samples", "reconstructions"} & set(alts), alts
    for n in ("4", "16", "0"):  # a number of samples is unread where no run's samples are pictures: refused, not dropped
        code = main(["report", str(run), "--samples", n, "--out", str(tmp_path / f"s{n}.html")])
        assert code == (0 if n == "0" else 1) and (tmp_path / f"s{n}.html").exists() == (n == "0")
    assert "--samples 4: the samples shown are images, and no run here models images" in capsys.readouterr().err


def test_a_vq_vae_page_shows_its_reconstructions_and_says_its_samples_are_of_the_uniform_code_prior(tmp_path, capsys):
    """A VQ-VAE reconstructs but has no one vector per image: the page left out its
    reconstructions, and showed the decoded draws of the uniform code prior as "z ~ p(z)"."""
    run = tmp_path / "vq"
    argv = ["train", "--model", "vqvae", "--dataset", "digits", "--epochs", "1", "--quiet", "--out", str(run)]
    assert main(argv) == 0
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    alts = re.findall(r'<img alt="([^"]*)"', page)
    assert {"samples", "reconstructions"} <= set(alts) and "latent means" not in alts, alts
    assert "z ~ p(z), the uniform code prior" in page
    for command in ("interpolate", "latents"):  # (they said it had no latent space "to reconstruct through")
        code, _, err = _dgm(capsys, command, run, "--out", tmp_path / "x.png")
        _refused(code, err, "no latent space q(z|x) (one vector per input) to interpolate in or plot; it reconstructs")
    prior = tmp_path / "prior"  # a model of its codes: their grids are no pictures (its page drew indices as grey)
    argv = ["train", "--model", "arm", "--codes-of", str(run), "--likelihood", "categorical", "--channels", "8"]
    assert main([*argv, "--arm-layers", "2", "--epochs", "1", "--quiet", "--out", str(prior)]) == 0
    assert main(["report", str(prior), "--out", str(tmp_path / "p.html")]) == 0
    page = (tmp_path / "p.html").read_text()  # the images its code grids stand for, decoded by the VQ-VAE
    assert 'alt="samples"' in page and f"code grids drawn by this run, decoded by {run}" in page
    assert "no samples" not in page and "the uniform code prior" not in page
    latent = tmp_path / "latent"  # a VAE of its codes: its latent means are of code grids, not of "test images"
    argv = ["train", "--codes-of", str(run), "--likelihood", "categorical", "--hidden", "8", "--latent-dim", "2"]
    assert main([*argv, "--epochs", "1", "--quiet", "--out", str(latent)]) == 0
    assert main(["report", str(latent), "--samples", "0", "--out", str(tmp_path / "l.html")]) == 0
    page = (tmp_path / "l.html").read_text()
    assert 'alt="latent means"' in page and re.search(r"posterior means E\[z\|x\] of \d+ random test code grids", page)
    moved = tmp_path / "vq-moved"
    run.rename(moved)  # the VQ-VAE gone from where the prior's record says: said, the page written
    assert main(["report", str(prior), "--out", str(tmp_path / "q.html")]) == 0
    page = (tmp_path / "q.html").read_text()
    assert 'alt="samples"' not in page and "no samples: the run models the codes of" in page
    assert "could not be drawn through its decoder" in page


def test_names_from_the_user_are_escaped_in_text_and_in_attributes(tmp_path):
    """A data file and a run folder whose names hold HTML (<, >, quotes, &): the page shows them
    escaped in the config table, the headings and the images' alt attributes, never as markup."""
    import numpy as np

    evil = 'x<b>"q"&\''
    data = tmp_path / f"{evil}.npy"
    np.save(data, (np.random.default_rng(0).random((60, 16)) > 0.5).astype(np.uint8))
    run = tmp_path / f"run{evil}"
    assert main(["train", "--dataset", str(data), "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet",
                 "--image-shape", "4", "4", "--out", str(run)]) == 0  # fmt: skip
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "x<b>" not in page and '"q"' not in page  # the names never as markup, nor closing an attribute
    assert page.count("x&lt;b&gt;&quot;q&quot;&amp;&#x27;") >= 3  # heading, config table, alt text
    alts = re.findall(r'<img alt="([^"]*)"', page)
    assert any("x&lt;b&gt;&quot;q&quot;&amp;&#x27;" in a for a in alts) and not any("<" in a for a in alts)
    assert re.search(r"<td>[^<]*x&lt;b&gt;&quot;q&quot;&amp;&#x27;\.npy", page)  # the config table's dataset value


def test_the_config_table_leaves_out_settings_that_do_not_apply():
    """A Bernoulli run's page lists no Gaussian, Student's t or logistic settings; a Gaussian
    run's lists its own; the floor shared with the mixed likelihood is always listed."""
    from dgmkit.config import RunConfig
    from dgmkit.settings import unused_keys

    bern = set(unused_keys(RunConfig.of().model))
    assert {"gaussian_variance", "gaussian_scale", "student_min_df", "logistic_components"} <= bern
    assert "gaussian_min_scale" not in bern and "hidden" not in bern and "latent_dim" not in bern
    gauss = set(unused_keys(RunConfig.of(likelihood="gaussian").model))
    assert "gaussian_variance" not in gauss and "student_min_df" in gauss
    mixed = set(unused_keys(RunConfig.of(likelihood="mixed", table_levels=[0, 3]).model))
    assert "table_levels" not in mixed and "gaussian_min_scale" not in mixed
    from dgmkit.cli.report import _used_config

    # and those its choices leave unread (the demo's page listed iw_k, tc_weight, flow, ...)
    shown = set(_used_config(RunConfig.of())["model"])
    assert not {"iw_k", "tc_weight", "prior_components", "flow", "gaussian_min_scale", "gaussian_variance"} & shown
    assert {"hidden", "latent_dim", "likelihood", "prior", "objective", "encoder"} <= shown
    shown = set(_used_config(RunConfig.of(objective="iwae", prior="vampprior"))["model"])
    assert {"iw_k", "prior_components", "pseudo_init"} <= shown and "tc_weight" not in shown
    # of every table, as the page says: a VAE on binarized MNIST listed lr_decay, lr_decay_every and lr_min under
    # the constant schedule, missing_seed without missing_rate, labels_seed without labels, latent_draws ...
    config = _used_config(RunConfig.of(dataset="binarized-mnist"), (1, 28, 28), 2)
    unread = {"lr_decay", "lr_decay_every", "lr_min", "missing_seed", "labels_seed", "latent_draws", "active_latents"}
    assert not unread & (set(config["optim"]) | set(config["data"])), config
    assert {"lr", "lr_schedule", "epochs"} <= set(config["optim"]) and {"dataset", "data_dir"} <= set(config["data"])
    assert set(config["eval"]) == {"iw_samples"}
    config = _used_config(RunConfig.of(lr_schedule="exponential", missing_rate=0.5, objective="miwae"), (1, 8, 8), 17)
    assert {"lr_decay", "lr_decay_every", "missing_seed"} <= set(config["optim"]) | set(config["data"])
    assert "lr_min" in _used_config(RunConfig.of(lr_schedule="cosine"))["optim"]
    # a Glow of the digits: its image flow reads no activation, its exact log-likelihood no iw_samples, and a
    # dataset read from no folder no data_dir
    config = _used_config(RunConfig.of(model="flow", flow="glow", dataset="digits"), (1, 8, 8), 17)
    assert "activation" not in config["model"] and not config["eval"] and "data_dir" not in config["data"], config


@pytest.mark.parametrize(
    "flags",
    [
        ["--samples", "4"], ["--seed", "3"], ["--steps", "5"], ["--data", "x.npy"], ["--data-dir", "d", "--schema", "s"],
        ["--samples", "16"], ["--seed", "0"],
    ],
)  # fmt: skip
def test_flags_of_the_figures_are_refused_beside_no_figures(runs, tmp_path, capsys, flags):
    """They were accepted and ignored: the page was not the one asked for (also at their default
    values, --samples 16 and --seed 0: given, they were taken unread)."""
    out = tmp_path / "r.html"
    assert main(["report", str(runs[0]), "--no-figures", *flags, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--no-figures leaves out the figures, and " + flags[0] in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    if flags[0] == "--data-dir":
        assert "--data-dir, --schema only choose what they show" in err


def test_learning_curves_of_dequantized_data_are_in_nats_of_the_integers(tmp_path, monkeypatch):
    """A flow on integer digits logs log p(y) of the dequantized y; the page's score curves show
    it less D log L, as the epoch line and the comparison table do, not on another scale."""
    import math

    import dgmkit.reporting.page as page

    metrics = [{"epoch": 1, "train_log_px": 10.0, "valid_log_px": 12.0}, {"epoch": 2, "valid_log_px": 13.0}]
    (title, lines), *_ = page._curve_panels(metrics, "log p(x)", "log_px", shift=100.0)
    assert title == "score (nats)" and lines[0][1] == ([1.0], [-90.0]) and lines[1][1] == ([1.0, 2.0], [-88.0, -87.0])
    run = tmp_path / "flow"
    assert main(["train", "--dataset", "digits", "--model", "flow", "--flow", "realnvp", "--flow-layers", "2",
                 "--hidden", "8", "--epochs", "1", "--quiet", "--out", str(run)]) == 0  # fmt: skip
    seen = []
    monkeypatch.setattr(page, "curves_png", lambda *a: seen.append(a) or None)
    assert main(["report", str(run), "--no-figures", "--out", str(tmp_path / "r.html")]) == 0
    assert seen[0][3] == pytest.approx(64 * math.log(17))  # the digits' 17 levels, 8x8 pixels
    # its test NLL is a one-draw bound on the integers' (as dgm eval says), never "exact", in both tables
    import shutil

    assert main(["eval", str(run)]) == 0
    shutil.copytree(run, tmp_path / "again")
    assert main(["report", str(run), str(tmp_path / "again"), "--no-figures", "--out", str(tmp_path / "two.html")]) == 0
    html = (tmp_path / "two.html").read_text()
    assert html.count("<td>one-draw bound") >= 3 and "<td>exact" not in html


def test_a_best_score_not_in_metrics_of_dequantized_data_is_said_in_nats_of_the_integers(tmp_path):
    """A note that metrics.jsonl lacks the checkpoint's best score gave it as logged, log p(y) of
    the dequantized y (+37.7 for a flow on digits), a number shown nowhere: the curves and dgm
    train's line give it less D log L (-143.6). The note says it in the same units."""
    import math

    run = tmp_path / "flow"
    assert main(["train", "--dataset", "digits", "--model", "flow", "--flow", "realnvp", "--flow-layers", "2",
                 "--hidden", "8", "--epochs", "1", "--quiet", "--out", str(run)]) == 0  # fmt: skip
    [line] = [json.loads(text) for text in (run / "metrics.jsonl").read_text().splitlines()]
    logged = line["valid_log_px"]
    (run / "metrics.jsonl").write_text(json.dumps({**line, "valid_log_px": logged + 1.25}) + "\n")
    assert main(["report", str(run), "--no-figures", "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert f"metrics.jsonl gives no score of {logged - 64 * math.log(17):.3f} at epoch 1" in page


@pytest.mark.parametrize("value", [1e308, -1e308, 1e31, 10**400, -(10**400)])
def test_learning_curves_leave_out_values_no_axis_can_hold(value):
    """A metrics line with a finite value near the float range (a diverging run, or a crafted
    file) made matplotlib's tick placement fail (ValueError): such points are left out, as is
    an integer beyond any float (JSON has them; float() of one raises OverflowError)."""
    from dgmkit.reporting.page import curves_png

    metrics = [{"epoch": 1, "train_elbo": -90.0, "lr": 1e-3}, {"epoch": 2, "train_elbo": value, "lr": value}]
    png = curves_png(metrics, "ELBO", "elbo")
    assert png is not None and png.startswith(b"\x89PNG")


def test_learning_curves_step_in_whole_epochs(monkeypatch):
    """A closed-form fit's one epoch was drawn on an axis ticked 0.96, 0.98, ... 1.04."""
    from dgmkit.reporting import page

    ticks = []
    monkeypatch.setattr(page, "figure_png", lambda fig: ticks.append([a.get_xticks() for a in fig.axes]) or b"")
    for epochs in (1, 3):
        page.curves_png(
            [{"epoch": e, "train_log_px": -160.0 + e, "lr": 1e-3} for e in range(1, epochs + 1)], "log", "log_px"
        )
    for axes in ticks:
        assert all(np.array_equal(t, np.round(t)) for t in axes) and len(axes) == 2


def test_the_comparison_says_what_each_number_is_of_and_prefers_an_exact_number_to_a_bound():
    """A review found the page naming only the dataset (binarized digits and their 17 levels in
    one column, alike), "time-sampled k=4" for 4 times, "k=0" after exact numbers, and a bound of
    8 times picked over an exact mixture of 2 orders."""
    from dgmkit.reporting.page import RunPage, render_page

    def rec(estimate, k, nll, transform="integers", **kw):
        return {"split": "test", "subset": None, "n": 300, "estimate": estimate, "iw_samples": k, "nll": nll,
                "transform": transform, **kw}  # fmt: skip

    diffusion = {"a": rec("order-mixture", 2, 149.743), "b": rec("time-sampled", 8, 151.764)}
    vae = {"a": rec("importance-sampled", 50, 31.809, "dynamic-binarize")}
    iris = {"a": rec("exact", 0, 3.332, "continuous", density_of="continuous", table_note="a table: its 4 numeric ...")}
    pages = [
        RunPage(name, "m", "digits" if name != "iris" else "iris", {}, [], "elbo", "ELBO", evals)
        for name, evals in (("diffusion", diffusion), ("vae", vae), ("iris", iris))
    ]
    html = render_page(pages)
    comparison = html.split("<h2 id=")[0]
    assert "149.743" in comparison and "151.764" not in comparison and "exact, 2 orders" in comparison
    assert "digits, integer levels as stored" in comparison and "digits, binarized" in comparison
    assert "importance-sampled, k=50" in comparison and "k=0" not in html and "time-sampled k=" not in html
    assert "iris, a table&#x27;s rows, numeric columns standardized" in comparison
    # incomplete data's numbers are of the observed entries alone (log p(x_o)): not of the data a complete run scores
    holes = {"a": rec("importance-sampled", 50, 25.1, "dynamic-binarize", observed_dims=51.4, num_dims=64)}
    both = render_page([pages[1], RunPage("miwae", "m", "digits", {}, [], "elbo", "ELBO", holes)]).split("<h2 id=")[0]
    assert both.count("digits, binarized") == 2 and both.count("observed entries only") == 1
    assert "bound, 8 times a datapoint" in html and "a table: its 4 numeric ..." in html


@pytest.mark.parametrize("name", ["metrics.jsonl", "best.safetensors"])
def test_a_link_to_nothing_says_so_and_what_to_do(runs, tmp_path, capsys, name):
    """A link whose target is absent (git-annex content not fetched): named as a link to nothing,
    with the way out (best.safetensors: remove it to read checkpoint.safetensors)."""
    vae = tmp_path / "vae"
    shutil.copytree(runs[0], vae)
    (vae / name).unlink()
    (vae / name).symlink_to(tmp_path / "not-fetched")
    capsys.readouterr()
    code, _, err = _dgm(capsys, "report", vae, "--out", tmp_path / "s.html", "--no-figures")
    want = "remove it to read the run's last weights" if name == "best.safetensors" else "or remove the link"
    _refused(code, err, f"{vae / name}, a link to {tmp_path / 'not-fetched'}", "names no file", "fetch its content", want)


def test_a_run_whose_model_gives_values_no_figure_can_show_is_named_among_several(runs, tmp_path, capsys):
    """Finite weights too large for the model's values to be: the report of several runs stopped
    without saying which one; it is refused (as every command refuses such a model) by its name."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from run_records import crafted_checkpoint

    huge = tmp_path / "huge"
    shutil.copytree(runs[0], huge)
    for name in ("best.safetensors", "checkpoint.safetensors"):
        with safe_open(str(huge / name), "pt") as f:
            meta = f.metadata()
        tensors = load_file(str(huge / name))
        for k, v in tensors.items():
            if k.startswith("model/") and v.is_floating_point():
                v.fill_(3e38 if k.endswith("weight") else -3e38)
        (huge / name).write_bytes(crafted_checkpoint(tensors, meta))
    out = tmp_path / "r.html"
    assert main(["report", str(runs[0]), str(huge), "--out", str(out), "--samples", "4"]) == 1
    err = capsys.readouterr().err
    assert f"dgm: error: {huge}: the model gives non-finite" in err and not out.exists()


def test_the_comparison_says_how_each_run_was_trained(runs, tmp_path):
    """The comparison's "epochs" column counted an EM fit's iterations as epochs and showed a
    closed-form fit (PPCA) as 1 epoch: it now says "3 epochs", "2 EM iterations", "in closed form"."""
    import numpy as np

    patches = (np.random.default_rng(0).random((300, 3, 3)) < 0.4).astype(np.uint8)
    np.save(tmp_path / "patches.npy", patches)
    em, ppca = tmp_path / "em", tmp_path / "ppca"
    argv = ["--model", "loglinear", "--states", "2", "--em-iterations", "2", "--quiet", "--out", str(em)]
    assert main(["train", "--dataset", str(tmp_path / "patches.npy"), *argv]) == 0
    assert main(["train", "--model", "ppca", "--dataset", "digits", "--latent-dim", "2", "--quiet", "--out", str(ppca)]) == 0
    out = tmp_path / "r.html"
    assert main(["report", str(runs[0]), str(em), str(ppca), "--out", str(out), "--no-figures"]) == 0
    rows = out.read_text().split("<h2 id=")[0].split("<tr>")
    assert "<th>trained</th>" in rows[1]
    assert [re.findall(r"<td class='num'>([^<]*)</td>", row)[0] for row in rows[2:]] == [
        "3 epochs", "2 EM iterations", "in closed form"
    ]  # fmt: skip


def test_the_comparison_counts_no_epoch_logged_after_the_last_checkpoint():
    """A run stopped after an epoch's metrics line and before its checkpoint was shown as trained
    that epoch ("3 epochs") beside a best score and a test NLL of the checkpoint's 2 epochs; the
    epoch is trained again on --resume, so the comparison counts the epochs the checkpoint holds."""
    from dgmkit.reporting.page import RunPage, render_page

    metrics = [{"epoch": e, "valid_elbo": -40.0 - e} for e in (1, 2)] + [{"epoch": 3, "valid_elbo": -1.0}]
    pages = [RunPage(n, "m", "digits", {}, metrics, "elbo", "ELBO", {}, checkpointed=c) for n, c in (("a", 2), ("b", None))]
    rows = render_page(pages).split("<h2 id=")[0].split("<tr>")[2:]
    assert [re.findall(r"<td class='num'>([^<]*)</td>", row)[:2] for row in rows] == [
        ["2 epochs", "-ELBO 41.000 (epoch 1)"], ["3 epochs", "-ELBO 1.000 (epoch 3)"]
    ]  # fmt: skip
    # a run set 500 epochs and stopped after 1 (a time budget, early stopping): said, as is one that trained all
    for planned, said in ((500, "1 of 500 epochs"), (1, "1 epoch")):
        page = RunPage("c", "m", "digits", {"optim": {"epochs": planned}}, metrics[:1], "elbo", "ELBO", {}, checkpointed=1)
        row = render_page([page, pages[0]]).split("<h2 id=")[0].split("<tr>")[2]
        assert re.findall(r"<td class='num'>([^<]*)</td>", row)[0] == said, row


def test_a_run_whose_metrics_file_is_empty_or_gone_is_not_said_untrained(runs, tmp_path, capsys):
    """A run of 3 epochs whose metrics.jsonl was emptied (or not copied) was shown as trained "0 of 3
    epochs", with no note: its checkpoint's counters say how far it was trained, and a note says the lines are missing."""
    vae = runs[0]
    for name, change in (("empty", lambda p: p.write_text("")), ("gone", lambda p: p.unlink())):
        bare = tmp_path / name
        shutil.copytree(vae, bare)
        change(bare / "metrics.jsonl")
        out = tmp_path / f"{name}.html"
        assert main(["report", str(bare), str(vae), "--out", str(out), "--no-figures"]) == 0
        rows = out.read_text().split("<h2 id=")[0].split("<tr>")[2:]
        assert [re.findall(r"<td class='num'>([^<]*)</td>", row)[0] for row in rows] == ["3 epochs", "3 epochs"]
        assert "metrics.jsonl logs no epoch, but checkpoint.safetensors was written after epoch 3" in capsys.readouterr().out


def test_a_deep_hierarchys_layers_are_told_apart_in_the_curves(monkeypatch):
    """The KL-per-layer panel of 16 layers (the residual HVAE's default) drew them in matplotlib's 10
    colours (layer 11 as layer 1) under a legend of 16 rows that ran over the panel below; now each
    layer has its own colour of a colour map, with a colour bar of the layer numbers, and no legend."""
    from dgmkit.reporting import page

    kept = []
    monkeypatch.setattr(page, "figure_png", lambda fig: kept.append(fig) or b"")
    metrics = [{"epoch": e, "valid_layer_kl": [0.1 * i + e for i in range(16)]} for e in (1, 2)]
    page.curves_png(metrics, "ELBO", "elbo")
    ax = next(a for a in kept[0].axes if a.get_title() == "KL per layer (valid, nats)")
    assert len({tuple(line.get_color()) for line in ax.get_lines()}) == 16 and ax.get_legend() is None
    assert [a.get_ylabel() for a in kept[0].axes].count("layer") == 1  # the colour bar
    few = [{"epoch": e, "valid_layer_kl": [0.1, 0.2, 0.3]} for e in (1, 2)]  # a few layers: a legend still
    page.curves_png(few, "ELBO", "elbo")
    assert [t.get_text() for t in kept[1].axes[0].get_legend().get_texts()] == ["layer 1", "layer 2", "layer 3"]


def test_the_comparison_says_what_a_run_not_yet_evaluated_is_trained_on(runs, tmp_path):
    """A run with no evaluation of its test split was shown beside its best validation score
    with the dataset's name alone ("digits" for binarized pixels, integer levels and a table's
    standardized rows alike); its data are said from its record, in the words its evaluation
    then gives them."""
    iris = tmp_path / "iris"
    argv = ["--dataset", "iris", "--likelihood", "gaussian", "--epochs", "1", "--hidden", "8", "--latent-dim", "2"]
    assert main(["train", *argv, "--quiet", "--out", str(iris)]) == 0
    vae, diff = tmp_path / "vae", tmp_path / "diff"
    shutil.copytree(runs[0], vae)
    shutil.copytree(runs[1], diff)
    for name in ("eval.json", "evals.json"):
        (vae / name).unlink()

    def cells() -> list[str]:
        out = tmp_path / "r.html"
        assert main(["report", str(vae), str(diff), str(iris), "--out", str(out), "--no-figures", "--force"]) == 0
        return [re.findall(r"<td>([^<]*)</td>", row)[1] for row in out.read_text().split("<h2 id=")[0].split("<tr>")[2:]]

    before = cells()
    assert before == [
        "digits, binarized (one seeded Bernoulli draw of each pixel)",
        "digits, integer levels as stored",
        "iris, a table&#x27;s rows, numeric columns standardized",
    ]
    for run, more in ((vae, []), (diff, ["--time-samples", "1"]), (iris, [])):
        assert main(["eval", str(run), *more]) == 0
    assert cells() == before


def test_the_comparison_says_a_run_not_yet_evaluated_on_incomplete_data_scores_its_observed_entries(tmp_path):
    """A run trained on data with missing entries (its own, or --missing-rate's) is scored by
    log p(x_o), of its observed entries: shown by its best validation score alone, its row said
    the data's words, as of complete data. Its record says so (``observed_only``)."""
    x = (np.random.default_rng(0).random((60, 16)) < 0.5).astype(np.float32)
    x[::2, :4] = np.nan
    np.save(tmp_path / "holes.npy", x)
    np.save(tmp_path / "whole.npy", np.nan_to_num(x))
    tiny = ["--objective", "miwae", "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--quiet"]
    runs = {
        "own": ["--dataset", str(tmp_path / "holes.npy")],
        "rate": ["--dataset", str(tmp_path / "whole.npy"), "--missing-rate", "0.2"],
        "whole": ["--dataset", str(tmp_path / "whole.npy")],
    }
    for name, argv in runs.items():
        assert main(["train", *argv, *tiny, "--out", str(tmp_path / name)]) == 0
    records = {name: json.loads((tmp_path / name / "config.json").read_text()) for name in runs}
    assert [r.get("observed_only") for r in records.values()] == [True, True, None]
    out = tmp_path / "r.html"
    assert main(["report", *(str(tmp_path / n) for n in runs), "--out", str(out), "--no-figures"]) == 0
    rows = out.read_text().split("<h2 id=")[0].split("<tr>")[2:]
    cells = [re.findall(r"<td>([^<]*)</td>", row)[1] for row in rows]
    holes = ", observed entries only"
    assert cells == [f"{n}.npy, binary values as stored{w}" for n, w in (("holes", holes), ("whole", holes), ("whole", ""))]
    from dgmkit.config import load_run
    from run_records import edit_metadata, rewrite_records

    def drop(meta: dict) -> None:
        meta["config"] = json.dumps({k: v for k, v in json.loads(meta["config"]).items() if k != "observed_only"})

    edit_metadata(tmp_path / "own" / "best.safetensors", drop)  # (one written before a resume that recorded it)
    assert load_run(tmp_path / "own").record["observed_only"] is True
    rewrite_records(tmp_path / "rate", lambda r: {k: v for k, v in r.items() if k != "observed_only"})  # (before 11-30)
    assert main(["report", *(str(tmp_path / n) for n in runs), "--out", str(out), "--no-figures", "--force"]) == 0
    assert out.read_text().split("<h2 id=")[0].count(", observed entries only</td>") == 2
    for bad in (False, 1, "yes", [True]):  # (a crafted record: true or absent)
        rewrite_records(tmp_path / "own", lambda r, bad=bad: {**r, "observed_only": bad})
        code = main(["report", str(tmp_path / "own"), "--out", str(tmp_path / "bad.html"), "--no-figures"])
        assert code == 1 and not (tmp_path / "bad.html").exists()


def test_the_comparison_gives_a_closed_form_fit_no_epoch_of_its_best_score():
    """A PPCA row said "in closed form" beside "-log p(x) ... (epoch 1)": the one line a
    closed-form fit logs is of no epoch, and its score is given alone."""
    from dgmkit.reporting.page import RunPage, render_page

    metrics = [{"epoch": 1, "train_log_px": -150.0, "valid_log_px": -161.5}]
    pages = [
        RunPage(n, "m", "digits", {}, metrics, "log_px", "log p(x)", {}, fit=f)
        for n, f in (("a", "closed-form"), ("b", "gradient"))
    ]
    rows = render_page(pages).split("<h2 id=")[0].split("<tr>")[2:]
    assert [re.findall(r"<td class='num'>([^<]*)</td>", row)[:2] for row in rows] == [
        ["in closed form", "-log p(x) 161.500"], ["1 epoch", "-log p(x) 161.500 (epoch 1)"]
    ]  # fmt: skip
    # a PPCA fitted by EM to incomplete data: said so (it read "in closed form")
    em = RunPage("c", "m", "iris", {}, [{**metrics[0], "em_iterations": 71}], "log_px", "log p(x)", {}, fit="closed-form")
    assert "<td class='num'>by EM on the observed entries (71 iterations)</td>" in render_page([em, pages[0]])


def test_an_unconverged_em_fit_is_said_unconverged_in_the_comparison(tmp_path, monkeypatch):
    """A PPCA whose EM stopped at max_iter: dgm train says "(3 iterations, unconverged)", and the report's
    comparison said only "(3 iterations)" (it read em_iterations, not em_converged)."""
    import warnings

    from dgmkit.models.ppca import PPCA

    fit = PPCA.fit
    monkeypatch.setattr(PPCA, "fit", lambda x, latent_dim: fit(x, latent_dim, max_iter=3))
    runs, out = [tmp_path / "a", tmp_path / "b"], tmp_path / "r.html"
    argv = ["train", "--model", "ppca", "--dataset", "iris", "--latent-dim", "2", "--missing-rate", "0.2", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert main([*argv, "--out", str(runs[0])]) == 0
    monkeypatch.undo()
    assert main([*argv, "--out", str(runs[1])]) == 0
    assert main(["report", *map(str, runs), "--out", str(out), "--no-figures"]) == 0
    page = out.read_text()  # (the comparison: of two runs or more)
    assert "by EM on the observed entries (3 iterations, unconverged)" in page
    assert re.search(r"by EM on the observed entries \(\d+ iterations\)", page)


def test_the_figures_are_drawn_without_autograd(runs, tmp_path, monkeypatch):
    """The figures' passes record no graph (a helper's definition put between ``_figures`` and its
    ``torch.no_grad()`` once took it off): each network pass would keep its activations."""
    import torch

    import dgmkit.cli.report as report

    seen = []
    split_data = report.split_data
    monkeypatch.setattr(report, "split_data", lambda *a, **k: seen.append(torch.is_grad_enabled()) or split_data(*a, **k))
    assert main(["report", str(runs[0]), "--out", str(tmp_path / "r.html")]) == 0
    assert seen == [False]


def test_a_run_logged_to_tensorboard_and_resumed_without_the_flag_says_its_log_stops(tmp_path, capsys):
    """--tensorboard is a flag of each call, not a setting of the run: a run resumed without it
    logs no more epochs, and says so rather than leaving a log that silently ends."""
    pytest.importorskip("tensorboard")
    out, plain = tmp_path / "run", tmp_path / "plain"
    args = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--quiet"]
    for folder, flags in ((out, ["--tensorboard"]), (plain, [])):
        assert main([*args, *flags, "--epochs", "1", "--out", str(folder)]) == 0
    capsys.readouterr()
    note = "holds the run's TensorBoard log; resumed without --tensorboard, it logs no more epochs"
    assert main([*args, "--epochs", "2", "--out", str(out), "--resume", "--lr", "0.5"]) == 1  # (refused: no note)
    said = capsys.readouterr()
    assert note not in said.out + said.err and "lr" in said.err
    assert main([*args, "--epochs", "2", "--out", str(out), "--resume"]) == 0
    said = capsys.readouterr()
    assert f"note: {out / 'tensorboard'} {note}" in said.out + said.err
    assert main([*args, "--epochs", "3", "--out", str(out), "--resume", "--tensorboard"]) == 0
    assert main([*args, "--epochs", "2", "--out", str(plain), "--resume"]) == 0
    said = capsys.readouterr()
    assert note not in said.out + said.err and "resum" in said.out + said.err


def test_a_tables_note_names_long_columns_shortened_so_its_eval_json_reads_back():
    """The note on a table's standardized columns is kept in eval.json, whose texts hold at most
    MAX_RECORD_TEXT characters: four column names of 5000 characters made a record that dgm eval
    wrote and dgm report then refused."""
    import types

    from dgmkit.cli.common import standardized_note
    from dgmkit.data.table import Column
    from dgmkit.evaluation.report import MAX_RECORD_TEXT

    columns = [Column(f"{i}" + "x" * 5000, "numeric") for i in range(6)]
    note = standardized_note(types.SimpleNamespace(columns=columns))
    assert note is not None and len(note) < 1000 < MAX_RECORD_TEXT
    assert "its 6 numeric columns (0xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..., 1xxx" in note and ", ...)" in note
