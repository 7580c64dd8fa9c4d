"""The Python API (dgmkit.train / load / sample / evaluate): the same run folders as the CLI."""

import json
import os
import re
import warnings

import numpy as np
import pytest
import torch

import dgmkit
from dgmkit.cli.main import main
from dgmkit.config import RunConfig
from dgmkit.data import load_dataset
from dgmkit.errors import ConfigError, DataError, DgmError, EvaluationError

TINY = dict(hidden=[16], latent_dim=2, epochs=1, batch_size=64)


def test_train_load_sample_evaluate_and_the_cli_reads_the_folder(tmp_path, capsys):
    run = dgmkit.train(tmp_path / "vae", dataset="digits", **TINY)
    again = dgmkit.load(tmp_path / "vae")
    assert again.record["run_id"] == run.record["run_id"]
    for a, b in zip(run.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    x, what = dgmkit.sample(again, 5, seed=3)
    assert x.shape == (5, 1, 8, 8) and "means of p(x|z)" in what
    assert torch.equal(x, dgmkit.sample(again, 5, seed=3)[0])  # seeded
    result = dgmkit.evaluate(again, "test", iw_samples=20, limit=50)
    assert result.n == 50 and result.estimate == "importance-sampled" and result["nll"] == result.nll
    assert -result.elbo >= result.nll - 1e-9  # the ELBO bounds the importance-sampled estimate
    assert result.estimate_label == "importance-sampled, k=20"  # (as dgm eval names it)
    assert "NLL (k=20)" in str(result) and "bits/dim" in str(result)
    with pytest.raises(AttributeError, match="no_such_number"):  # (not a KeyError: hasattr and getattr's default work)
        getattr(result, "no_such_number")  # noqa: B009 (the attribute access is what is tested)
    assert getattr(result, "no_such_number", None) is None and not hasattr(result, "mmd")
    # a dict built by hand, or a part of a record, prints its items (not a KeyError from the report)
    for part, needle in [
        ({}, "without split, n, subset, estimate, seconds, nll, nll_stderr"),
        ({k: result[k] for k in result if k != "nll_stderr"}, "without nll_stderr of"),
        ({**result, "estimate": ["exact"]}, "its estimate ['exact'] not one"),
        ({**result, "estimate": "guessed"}, "its estimate 'guessed' not one"),
    ]:
        assert needle in str(dgmkit.api.Evaluation(part)) and str(dgmkit.api.Evaluation(part)).startswith("Evaluation({")
    assert str(dgmkit.api.Evaluation(result)) == str(result)
    assert not (tmp_path / "vae" / "eval.json").exists()  # the API writes nothing when evaluating
    assert main(["eval", str(tmp_path / "vae"), "--iw-samples", "20", "--limit", "50"]) == 0
    assert f"{result.nll:.3f}" in capsys.readouterr().out  # the CLI's number is the API's
    # what the CLI refuses, the API refuses in its words too (not ignored, not a traceback)
    for kwargs, needle in [
        (dict(temperature=0.5), "^temperature is for flows"),  # (its keyword, not dgm sample's flag)
        (dict(steps=3), "^steps is for diffusion"),
        (dict(naive=True), "^naive is for autoregressive"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            dgmkit.sample(again, 2, **kwargs)
    for n in (0, -1, 2.5, True, 10**12):  # (10**12 asked the allocator for 128 TB)
        with pytest.raises(ConfigError, match=r"number of samples must be an integer in 1\.\.10000"):
            dgmkit.sample(again, n)
    for kwargs, needle in [  # the ranges of the flags (a NaN temperature drew NaN images; a seed of 2**64 overflowed)
        (dict(temperature=float("nan")), "^temperature must be a finite number"),
        (dict(temperature=0), "^temperature must be"),
        (dict(temperature=-1.0), "^temperature must be"),
        (dict(steps=10**12), r"^steps must be an integer in 1\.\.100000"),
        (dict(seed=2**64), "seed must be an integer"),
        (dict(seed=1.5), "seed must be an integer"),
        (dict(seed=None), "seed must be an integer"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            dgmkit.sample(again, 2, **kwargs)
    for kwargs, needle in [  # (True was k = True; time_samples 0 became 1; orders 0 was ignored)
        (dict(iw_samples=True), "iw_samples must be an integer"),
        (dict(iw_samples=-1), "iw_samples must be an integer"),
        (dict(time_samples=0), "time_samples must be an integer"),
        (dict(orders=0), "orders must be an integer"),
        (dict(orders=5000), "orders must be an integer"),
        (dict(seed=-1), "seed must be an integer"),
        (dict(iw_samples=0), "importance sampling: iw_samples must be >= 1"),  # (Python's keywords, not the flags)
        (dict(time_samples=2), "^time_samples is for diffusion models"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            dgmkit.evaluate(again, limit=3, **kwargs)
    assert dgmkit.sample(again, np.int64(2))[0].shape[0] == 2  # a NumPy integer is an integer
    assert dgmkit.evaluate(again, iw_samples=2, limit=np.int64(3)).n == 3
    by_default = dgmkit.evaluate(again, iw_samples=2)  # the test split, all of it, as dgm eval
    assert by_default.split == "test" and by_default.n == len(load_dataset("digits").test)
    for limit in (0, -1, 2.5, True):  # (True passed as the integer 1)
        with pytest.raises(ConfigError, match="limit must be a positive integer"):
            dgmkit.evaluate(again, limit=limit)
    with pytest.raises(ConfigError, match="to score arrays"):
        dgmkit.evaluate(again, data=torch.zeros(3, 1, 8, 8))


def test_a_number_too_long_to_print_is_refused_by_its_size_as_a_config_error():
    """given_count and given_real (the API's checks of the flags' ranges) printed the value: an
    integer of more than 4300 digits made that a ValueError, not the ConfigError."""
    from fractions import Fraction

    from dgmkit.cli.argtypes import MAX_SEED, given_count, given_real

    with pytest.raises(ConfigError, match=f"^seed must be an integer in 0..{MAX_SEED}, got an integer of 5001 digits$"):
        given_count(10**5000, 0, MAX_SEED, "seed")
    with pytest.raises(
        ConfigError, match="^--temperature must be a finite number > 0 and <= 100, got an integer of 5001 digits$"
    ):
        given_real(10**5000, 0, 100, "--temperature")
    with pytest.raises(ConfigError, match="^--temperature must be .*, got a Fraction too large to print$"):
        given_real(Fraction(10**5000), 0, 100, "--temperature")
    with pytest.raises(ConfigError, match=f"^n must be an integer in 1..10, got '{'x' * 36}\\.\\.\\.$"):
        given_count("x" * 1000, 1, 10, "n")


def test_an_array_given_for_a_count_or_a_split_is_refused_in_one_line():
    """reconstruct(run, x) (an array where n, a count, goes) printed the array's repr over several
    lines; evaluate(run, x) (an array where the split's name goes) was a bare ValueError of
    NumPy's ``in``."""
    from dgmkit.cli.argtypes import given_count

    x = np.zeros((2, 5))
    with pytest.raises(ConfigError, match=r"^n must be an integer in 1..10, got a NumPy array of shape \(2, 5\)$"):
        given_count(x, 1, 10, "n")
    with pytest.raises(ConfigError, match=r"got a tensor of shape \(3,\)$"):
        given_count(torch.zeros(3), 1, 10, "n")
    assert given_count(np.int64(3), 1, 10, "n") == 3
    dataset = load_dataset("digits")
    with pytest.raises(DataError, match=r"^unknown split a NumPy array of shape \(2, 5\); choose train, valid or test$"):
        dataset.split(x)
    with pytest.raises(DataError, match=r"^unknown split 'tset'; choose"):
        dataset.split("tset")


def test_train_refuses_an_out_that_is_no_path_or_empty_and_a_resume_that_is_no_bool(tmp_path, monkeypatch):
    """out=None was pathlib's TypeError; out="" trained into the working folder (as ``dgm train
    --out ""`` did before it was refused); resume="no" resumed. load("") read the working folder."""
    monkeypatch.chdir(tmp_path)
    for out, needle in ((None, "got None"), (5, "got 5"), (b"r", "got b'r'"), ("", "out is empty")):
        with pytest.raises(ConfigError, match=needle):
            dgmkit.train(out, **TINY)
    with pytest.raises(ConfigError, match="^resume must be True or False, got 'no'$"):
        dgmkit.train(tmp_path / "r", resume="no", epochs=2)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="path is empty"):
        dgmkit.load("")
    with pytest.raises(ConfigError, match=r"'best' or 'last', got a NumPy array of shape \(2,\)$"):
        dgmkit.load(tmp_path, which=np.zeros(2))


def test_numpy_numbers_and_tuples_are_taken_as_settings_and_arrays_refused_before_the_family_reads_them():
    """np.int64(3) was refused as "the wrong type" where the flags' checks take it; an array given
    for a choice reached the family's own check (NumPy's bare ValueError of ``!=``)."""
    cfg = RunConfig.of(dataset="digits", latent_dim=np.int64(3), lr=np.float32(0.5), hidden=(16, np.int32(8)))
    assert (cfg.model.latent_dim, cfg.optim.lr, cfg.model.hidden) == (3, 0.5, [16, 8])
    assert type(cfg.model.latent_dim) is int and type(cfg.optim.lr) is float and type(cfg.model.hidden[1]) is int
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()  # (plain values: config.json writes them)
    with pytest.raises(ConfigError, match=r"^unknown likelihood a NumPy array of shape \(3,\); choose from"):
        RunConfig.of(dataset="digits", likelihood=np.zeros(3))
    with pytest.raises(ConfigError, match=r"^epochs has the wrong type: a tensor of shape \(2,\) \(expected int\)$"):
        RunConfig.of(dataset="digits", epochs=torch.ones(2))
    with pytest.raises(ConfigError, match=r"^seed must be <= \d+, got an integer of 5001 digits$"):
        RunConfig.of(dataset="digits", seed=10**5000)


def test_a_config_table_with_a_key_that_is_no_string_is_refused_in_words(tmp_path):
    """{1: 2}, flat or in a table, reached RunConfig.of(**values) as a keyword: Python's TypeError."""
    for cfg in ({1: 2}, {"model": {"name": "vae", 1: 2}}, {"model": {None: 2}}):
        with pytest.raises(ConfigError, match=r"^config: its keys are the names of settings \(strings\), got (1|None)$"):
            dgmkit.train(tmp_path / "r", cfg)
    assert list(tmp_path.iterdir()) == []


def test_a_config_file_is_checked_whole_and_named_as_dgm_train_checks_it(tmp_path):
    """dgmkit.train(out, FILE, **keywords) reads FILE "as dgm train --config reads it" (docs/python.md): a
    wrong value there was taken where a keyword overrode it (epochs = "3" with epochs=1 trained), and refused
    without the file's name where none did. Both are refused now, naming the file, as the flag does."""
    path = tmp_path / "c.toml"
    path.write_text('epochs = "3"\nhidden = [8]\nlatent_dim = 2\n')
    for keywords in ({}, {"epochs": 1}):
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: epochs has the wrong type: '3' \(expected int\)$"):
            dgmkit.train(tmp_path / "r", path, **keywords)
    assert not (tmp_path / "r").exists()


def test_a_config_and_keywords_and_resume(tmp_path):
    cfg = {"model": {"name": "vae", "latent_dim": 3, "hidden": [8]}, "data": {"dataset": "digits"}}
    run = dgmkit.train(tmp_path / "r", cfg, epochs=1)
    assert run.cfg.model.latent_dim == 3 and run.cfg.optim.epochs == 1
    run = dgmkit.train(tmp_path / "r", resume=True, epochs=2)
    assert run.cfg.optim.epochs == 2
    assert (tmp_path / "r" / "metrics.jsonl").read_text().count("\n") == 2
    with pytest.raises(ConfigError, match="resume continues the run.*not latent_dim"):
        dgmkit.train(tmp_path / "r", resume=True, latent_dim=5)
    assert dgmkit.load(tmp_path / "r").checkpoint.name == "best.safetensors"
    assert dgmkit.load(tmp_path / "r", which="last").checkpoint.name == "checkpoint.safetensors"
    with pytest.raises(ConfigError, match="'best' or 'last', got 'lats'"):  # not silently the last
        dgmkit.load(tmp_path / "r", which="lats")
    dgmkit.train(tmp_path / "p", dataset="digits", model="ppca", latent_dim=2)
    with pytest.raises(ConfigError, match="nothing to resume"):  # (it named a time_budget the call never gave)
        dgmkit.train(tmp_path / "p", resume=True)
    # a keyword other than its default that the run leaves unread is refused, as dgm train refuses it;
    # one at its default counts as not given, so that a run's whole config repeats it
    with pytest.raises(ConfigError, match="iw_k = 50 is read only with --objective iwae or miwae"):
        dgmkit.train(tmp_path / "k", cfg, iw_k=50)
    assert not (tmp_path / "k").exists()
    again = dgmkit.train(tmp_path / "k", **{**run.cfg.flat(), "seed": 1})  # (every key, its inert ones at defaults)
    assert again.cfg.flat() == {**run.cfg.flat(), "seed": 1}


def test_a_budgeted_run_goes_on_in_chunks_from_python_exactly(tmp_path):
    """time_budget (and compile) may be given on resume, as on the command line; the budget is the
    call's own, and the chunks end where the uninterrupted run ends."""
    whole = dgmkit.train(tmp_path / "whole", dataset="digits", seed=3, **TINY)
    dgmkit.train(tmp_path / "chunks", dataset="digits", seed=3, time_budget=1e-9, **TINY)
    steps = [(tmp_path / "chunks" / "metrics.jsonl").is_file()]
    dgmkit.train(tmp_path / "chunks", resume=True, time_budget=1e-9, compile=False)
    steps.append((tmp_path / "chunks" / "metrics.jsonl").is_file())
    assert steps == [False, False]  # each budget ran out within the first epoch
    run = dgmkit.train(tmp_path / "chunks", resume=True)  # no budget: the earlier one is not carried over
    assert run.cfg.optim.time_budget is None
    for a, b in zip(whole.model.parameters(), run.model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("form", ["numpy", "tensor-pair", "torch-dataset"])
def test_data_from_arrays_or_a_torch_dataset_is_written_beside_the_run_and_pinned(tmp_path, capsys, form):
    rng = np.random.default_rng(0)
    x = (rng.random((80, 4, 4)) > 0.5).astype(np.uint8)
    y = rng.integers(0, 3, 80)
    data = {
        "numpy": x,
        "tensor-pair": (torch.from_numpy(x), torch.from_numpy(y)),
        "torch-dataset": torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
    }[form]
    out = tmp_path / "run"
    run = dgmkit.train(out, data=data, **TINY)
    saved = tmp_path / "run.data.npz"
    assert run.cfg.data.dataset == str(saved) and saved.is_file()
    with np.load(saved) as z:
        assert np.array_equal(z["x"], x) and (form == "numpy") == ("y" not in z.files)
    assert run.record["data"]["num_levels"] == 2 and run.record["data"]["event_shape"] == [1, 4, 4]
    assert main(["eval", str(out), "--iw-samples", "5"]) == 0
    with pytest.raises(DataError, match="holds other data"):
        dgmkit.train(tmp_path / "run", data=x[::-1].copy(), **TINY)
    with pytest.raises(ConfigError, match="not both"):
        dgmkit.train(tmp_path / "other", data=x, dataset="digits", **TINY)


def test_bad_data_is_refused_in_one_line(tmp_path):
    with pytest.raises(DataError, match="an array, a pair"):
        dgmkit.train(tmp_path / "r", data=b"not data", **TINY)
    with pytest.raises(DataError, match=r"data takes arrays; a data file or a named dataset is dataset='t.csv'"):
        dgmkit.train(tmp_path / "r", data="t.csv", **TINY)
    with pytest.raises(DataError, match="empty"):
        dgmkit.train(tmp_path / "r", data=torch.utils.data.TensorDataset(torch.zeros(0, 4)), **TINY)

    class Stream(torch.utils.data.IterableDataset):  # no len(), no indexing
        def __iter__(self):
            return iter([torch.zeros(4, 4)] * 80)

    with pytest.raises(DataError, match="needs len\\(\\) and indexing \\(a map-style dataset\\)"):
        dgmkit.train(tmp_path / "r", data=Stream(), **TINY)
    # what is wrong with the arrays is said of them, not of the file this call wrote them to (and removed)
    x = np.zeros((80, 4, 4), np.uint8)
    with pytest.raises(DataError, match=r"^data \(the arrays given\): 79 labels for 80 images$"):
        dgmkit.train(tmp_path / "r", data=(x, np.zeros(79, np.int64)), **TINY)
    with pytest.raises(DataError, match=r"^data \(the arrays given\): 1 row .*at least 10"):
        dgmkit.train(tmp_path / "r", data=x[:1], **TINY)
    # where the message names the file further in, as a reader's refusal or the missing entries' does
    with pytest.raises(DataError, match=r"^cannot read data \(the arrays given\) \(array 'x'\) as a NumPy array: dtype"):
        dgmkit.train(tmp_path / "r", data=np.ones((20, 4, 4), np.complex64), **TINY)
    with pytest.raises(DataError, match=r"^data \(the arrays given\) has 2 missing entries \(NaN\)") as e:
        dgmkit.train(tmp_path / "r", data=np.where(np.arange(320).reshape(20, 4, 4) < 2, np.nan, 1.0), **TINY)
    assert "data.npz" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.mark.parametrize(
    "items, needle",
    [
        ([torch.zeros(4)] * 5 + [torch.zeros(5)] * 5, "item 5 of the torch Dataset: its image has shape (5,)"),
        ([(torch.zeros(4), 1)] * 5 + [torch.zeros(4)] * 5, "item 5 of the torch Dataset is a Tensor, item 0 an"),
        ([(torch.zeros(4), 1)] * 5 + [(torch.zeros(4),)] * 5, "item 5 of the torch Dataset is an (image,) tuple"),
        ([(torch.zeros(4), torch.zeros(2))] * 10, "its label 'tensor([0., 0.])' is not one number"),
        ([(torch.zeros(4), 1)] * 9 + [(torch.zeros(4), "cat")], "item 9 of the torch Dataset: its label 'cat' is not one"),
        ([None] * 10, "item 0 of the torch Dataset: its image is a NoneType, not an array"),
        ([(torch.zeros(4) + i % 2, 0.5) for i in range(20)], "labels must be whole numbers"),  # (int() read it as 0)
    ],
)
def test_a_torch_dataset_of_unlike_items_is_refused_by_item(tmp_path, items, needle):
    """Items of two shapes, images beside pairs, a label that is no number: once a bare
    RuntimeError of torch.stack or int(), and a label of 0.5 silently read as 0."""
    with pytest.raises(DataError) as e:
        dgmkit.train(tmp_path / "r", data=_Items(items), **TINY)
    assert needle in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_call_leaves_no_data_file_behind_and_keeps_one_it_did_not_write(tmp_path):
    """train(out, data=...) wrote OUT.data.npz before the settings and the folder were checked: a
    refused call left it behind, under a refusal that said "Nothing was changed". Arrays that are
    there already (a run folder moved away, its data kept) are read again and never removed."""
    x = (np.random.default_rng(0).random((80, 4, 4)) > 0.5).astype(np.uint8)
    saved = tmp_path / "run.data.npz"
    with pytest.raises(ConfigError, match="hidden must be >= 1"):
        dgmkit.train(tmp_path / "run", data=x, **{**TINY, "hidden": [0]})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="hidden must be >= 1"):  # nor the folders it made for it
        dgmkit.train(tmp_path / "new" / "sub" / "run", data=x, **{**TINY, "hidden": [0]})
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "run.data.npz").symlink_to(tmp_path / "nowhere.npz")
    with pytest.raises(DataError, match="run.data.npz is a link to nothing"):  # never replaced, then removed
        dgmkit.train(tmp_path / "run", data=x, **TINY)
    (tmp_path / "run.data.npz").unlink()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(DgmError, match="is not empty .*Nothing was changed"):
        dgmkit.train(busy, data=x, **TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["busy"] and [p.name for p in busy.iterdir()] == ["notes.txt"]
    np.savez(saved, x=x)
    kept = saved.read_bytes()
    with pytest.raises(ConfigError, match="hidden must be >= 1"):
        dgmkit.train(tmp_path / "run", data=x, **{**TINY, "hidden": [0]})
    assert saved.read_bytes() == kept
    run = dgmkit.train(tmp_path / "run", data=x, **TINY)
    assert run.cfg.data.dataset == str(saved) and saved.read_bytes() == kept
    # the working folder, empty, as the run folder: its data beside it (they went to ./.data.npz, inside it,
    # and the folder was then refused as not empty, "it holds .data.npz")
    here = tmp_path / "here"
    here.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(here)
        assert dgmkit.train(".", data=x, **TINY).cfg.data.dataset == str(tmp_path / "here.data.npz")
    finally:
        os.chdir(cwd)


def test_a_family_fitted_without_gradients_says_how_to_fit_it_from_python():
    from dgmkit.config import RunConfig, build_objective

    for model, how in (("ppca", "model.fit_closed_form"), ("loglinear", "model.em_step")):
        with pytest.raises(ConfigError, match=how):
            build_objective(RunConfig.of(model=model))


def test_reconstruct_and_interpolate_from_python_as_the_cli_draws_them(tmp_path):
    """dgmkit.reconstruct / interpolate: the images the CLI's figures would show, as tensors in
    the units the model scores: seeded picks of the split, reconstructions at the posterior's
    location, and paths whose ends are the two images' reconstructions."""
    from dgmkit.cli.common import split_data
    from dgmkit.distributions import location

    run = dgmkit.train(tmp_path / "vae", dataset="digits", **TINY)
    x, r = dgmkit.reconstruct(run, 5, seed=2)
    test = split_data(run, "test")[0]
    assert x.shape == r.shape == (5, 1, 8, 8) and all(any(torch.equal(row, t) for t in test) for row in x)
    with torch.no_grad():
        assert torch.equal(r, run.model.reconstruct(x)) and ((0 < r) & (r < 1)).all()  # means of Bernoullis
    assert torch.equal(x, dgmkit.reconstruct(run, 5, seed=2)[0]) and not torch.equal(x, dgmkit.reconstruct(run, 5)[0])
    rows = dgmkit.interpolate(run, pairs=3, steps=4, seed=1)
    assert rows.shape == (3, 6, 1, 8, 8)
    a, b = rows[:, 0], rows[:, -1]
    with torch.no_grad():
        ends = [run.model.likelihood(location(run.model.posterior(v))).mean for v in (a, b)]
    assert torch.allclose(rows[:, 1], ends[0], atol=1e-6) and torch.allclose(rows[:, -2], ends[1], atol=1e-6)
    assert not torch.equal(rows[:, 1], rows[:, 2])  # the path moves
    assert torch.equal(dgmkit.interpolate(run, pairs=np.int64(3), steps=np.int64(4), seed=np.int64(1)), rows)
    assert torch.equal(dgmkit.reconstruct(run, np.int64(5), seed=np.int64(2))[0], x)  # NumPy integers are integers
    assert torch.equal(dgmkit.sample(run, 3, seed=np.int64(4))[0], dgmkit.sample(run, 3, seed=4)[0])
    for call, needle in [
        (lambda: dgmkit.reconstruct(run, 301), "n = 301 is more than the 300 images of the test split"),
        (lambda: dgmkit.reconstruct(run, 0), r"n must be an integer in 1\.\.10000"),
        (lambda: dgmkit.interpolate(run, pairs=151), "^pairs = 151 needs 302 images; the test split has 300"),
        (lambda: dgmkit.interpolate(run, steps=1), r"steps must be an integer in 2\.\.100"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            call()
    flow = dgmkit.train(tmp_path / "flow", dataset="digits", model="flow", flow="realnvp", hidden=[8], epochs=1)
    result = dgmkit.evaluate(flow, "test", limit=20)  # an exact density of dequantized integers: one draw's bound
    assert (result.estimate, result.estimate_label) == ("exact", "one-draw bound") and "one-draw bound" in str(result)
    with pytest.raises(ConfigError, match="the flow model has no latent space q\\(z\\|x\\)"):
        dgmkit.reconstruct(flow)


def test_the_functions_of_a_run_take_its_path_and_refuse_other_things_in_words(tmp_path):
    """sample / evaluate / reconstruct / interpolate given a run folder's path (as `dgm sample
    RUN` is) or a model built by hand failed with "'str' object has no attribute 'model'", a
    mistyped option with a TypeError naming an internal function, load(5) with pathlib's
    TypeError, train(out, "file.toml") with a ValueError from dict(); a model made float64
    (run.model.double()) failed in its first layer on the float32 images of its split."""
    out = tmp_path / "vae"
    run = dgmkit.train(out, dataset="digits", **TINY)
    for path in (out, str(out)):  # a path is loaded, as dgmkit.load loads it
        assert torch.equal(dgmkit.sample(path, 3, seed=1)[0], dgmkit.sample(run, 3, seed=1)[0])
        assert dgmkit.evaluate(path, iw_samples=2, limit=5).nll == dgmkit.evaluate(run, iw_samples=2, limit=5).nll
        assert torch.equal(dgmkit.reconstruct(path, 2)[1], dgmkit.reconstruct(run, 2)[1])
        assert torch.equal(dgmkit.interpolate(path, 1, 2), dgmkit.interpolate(run, 1, 2))
    with pytest.raises(DgmError, match="no run folder at"):
        dgmkit.sample(tmp_path / "nowhere", 2)
    # a checkpoint named in place of its folder: the refusal names the folder (it said "no run folder" alone)
    with pytest.raises(DgmError, match=f"no run folder at {out / 'best.safetensors'} \\(a file: name the run folder"):
        dgmkit.load(out / "best.safetensors")
    for call in (lambda r: dgmkit.sample(r, 2), dgmkit.evaluate, dgmkit.reconstruct, dgmkit.interpolate):
        with pytest.raises(ConfigError, match=r"dgmkit\.\w+ takes a run .*not a VAE model"):
            call(run.model)
        with pytest.raises(ConfigError, match=r"dgmkit\.\w+ takes a run .*not int"):
            call(3)
    # images of one's own where the split's name goes ("unknown split a tensor of shape ...")
    mine = dgmkit.reconstruct(run, 3)[0]
    for call, own in (
        (dgmkit.evaluate, r"dgmkit\.evaluation\.evaluate\(run\.model, x\) scores them"),
        (dgmkit.reconstruct, r"run\.model\.reconstruct\(x\) gives"),
        (dgmkit.interpolate, r"run\.model\.posterior\(x\) gives their codes"),
    ):
        said = r"'s split names one of the run's splits \(train, valid or test\), got a tensor of shape \(3, 1, 8, 8\): "
        with pytest.raises(ConfigError, match=said + f"for data of your own, {own}"):
            call(run, split=mine)
    with pytest.raises(ConfigError, match="dgmkit.sample takes no option 'temprature' \\(did you mean 'temperature'\\?\\)"):
        dgmkit.sample(run, 2, temprature=0.5)
    with pytest.raises(ConfigError, match="unknown key\\(s\\) 'learning_rate' \\(did you mean 'lr'\\?\\)"):
        dgmkit.train(tmp_path / "never", learning_rate=0.01)  # (nearer in spelling to missing_rate)
    with pytest.raises(ConfigError, match="dgmkit.evaluate takes no option 'iw_sample' \\(did you mean 'iw_samples'\\?\\)"):
        dgmkit.evaluate(run, iw_sample=5)
    with pytest.raises(ConfigError, match="takes no option 'keep_orders'"):  # (it writes into the run folder)
        dgmkit.evaluate(run, keep_orders=True)
    for bad in (5, None):
        with pytest.raises(ConfigError, match=f"a run folder is named by a path .*got {type(bad).__name__}"):
            dgmkit.load(bad)
    # a config file by its path, as dgm train --config
    (tmp_path / "c.toml").write_text('[model]\nname = "vae"\nlatent_dim = 3\nhidden = [8]\n[optim]\nepochs = 1\n')
    from_file = dgmkit.train(tmp_path / "from-file", tmp_path / "c.toml", dataset="digits")
    assert from_file.cfg.model.latent_dim == 3 and from_file.cfg.optim.epochs == 1
    with pytest.raises(ConfigError, match="cannot read config file .*missing.toml"):
        dgmkit.train(tmp_path / "r", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="config must be a RunConfig, a table of config keys or the path of a config"):
        dgmkit.train(tmp_path / "r", 5)
    # (x, None): images without labels (a None label array was saved as an object array, then refused as one)
    x = (np.random.default_rng(0).random((80, 4, 4)) > 0.5).astype(np.uint8)
    unlabelled = dgmkit.train(tmp_path / "xs", data=(x, None), **TINY)
    with np.load(tmp_path / "xs.data.npz") as z:
        assert z.files == ["x"]
    assert unlabelled.record["data"]["event_shape"] == [1, 4, 4]
    # a float64 model: the split's float32 images are given to it in its precision
    single = dgmkit.evaluate(run, iw_samples=2, limit=5)
    run.model.double()
    double = dgmkit.evaluate(run, iw_samples=2, limit=5)
    assert double.n == 5 and double.nll == pytest.approx(single.nll, rel=0.05)  # (other draws in float64)
    x, r = dgmkit.reconstruct(run, 2)
    assert x.dtype == torch.float32 and r.dtype == torch.float64  # the data as the split holds them
    assert dgmkit.interpolate(run, 1, 2).shape == (1, 4, 1, 8, 8)
    # a half-precision model draws samples and is refused data in words (its first layer met float32 draws)
    for precision in ("half", "bfloat16"):
        getattr(run.model, precision)()
        assert dgmkit.sample(run, 2, seed=1)[0].shape == (2, 1, 8, 8)
        for call in (dgmkit.evaluate, dgmkit.reconstruct, dgmkit.interpolate):
            with pytest.raises(
                ConfigError, match=rf"^dgmkit\.\w+: the model's parameters are {precision.replace('half', 'float16')}; "
            ):
                call(run)
        with pytest.raises(EvaluationError, match=r"^evaluate\(\): the model's parameters are .*model\.float\(\) makes it"):
            dgmkit.evaluation.evaluate(run.model, torch.zeros(2, 1, 8, 8))


# every family whose model reconstructs, small (and the settings that build another model class: the
# residual stack, the two-level VQ-VAE; a mixed table's VAE), trained briefly: made float64 below
RECONSTRUCTING = {
    "vae": dict(hidden=[8], latent_dim=2, epochs=1),
    "vae-table": dict(hidden=[8], latent_dim=2, likelihood="mixed", objective="miwae", iw_k=2, epochs=1),
    "hvae": dict(hidden=[8], latent_sizes=[2, 2], epochs=1),
    "hvae-residual": dict(posterior="residual", res_resolutions=[2, 4], res_layers=[1, 1], res_width=8, epochs=1),
    "pixelvae": dict(hidden=[8], latent_sizes=[2, 2], pixelcnn_layers=2, pixelcnn_channels=4, cond_channels=1, epochs=1),
    "dvae": dict(hidden=[8], latent_dim=2, latent_classes=3, epochs=1),
    "ae": dict(hidden=[8], latent_dim=2, epochs=1),
    "wae": dict(hidden=[8], latent_dim=2, epochs=1),
    "vqvae": dict(codes=4, code_dim=2, vq_width=4, downsample=1, res_blocks=1, epochs=1),
    "vqvae-2": dict(codes=3, code_dim=2, vq_width=8, downsample=1, res_blocks=1, vq_levels=2, epochs=1),
    "ppca": dict(latent_dim=2),
    "loglinear": dict(states=2, em_iterations=1, dataset="digits-4x4"),
    "helmholtz": dict(layers=[4, 2], epochs=1, dataset="digits-4x4"),
}


def test_every_family_whose_model_reconstructs_is_made_float64_below():
    from dgmkit.families import FAMILIES

    datasets = {name: load_dataset(name) for name in ("digits", "digits-4x4")}
    reconstructing = set()
    for name, cls in FAMILIES.items():
        data = datasets["digits-4x4" if name == "loglinear" else "digits"]  # (it enumerates 2^D images)
        if cls().build(data.event_shape, data.num_levels).reconstructs:
            reconstructing.add(name)
    assert reconstructing == {case.split("-")[0] for case in RECONSTRUCTING}


@pytest.mark.parametrize("case", sorted(RECONSTRUCTING))
def test_reconstruct_and_interpolate_of_a_float64_model_take_the_float32_images_of_its_split(tmp_path, case):
    """The split's images are float32 (the transforms make them so); a model made float64
    (run.model.double()) takes them in its own precision (it casts its inputs), and reconstructs
    and interpolates as the float32 model did, in float64."""
    settings = dict(RECONSTRUCTING[case])
    settings.setdefault("dataset", str(_mixed_table(tmp_path)) if case == "vae-table" else "digits")
    run = dgmkit.train(tmp_path / case, model=case.split("-")[0], **settings)
    x, single = dgmkit.reconstruct(run, 3, seed=1)
    path = dgmkit.interpolate(run, 2, 3, seed=1) if run.model.has_latents else None
    run.model.double()
    again, double = dgmkit.reconstruct(run, 3, seed=1)
    assert x.dtype == torch.float32  # the data as the split holds them (a table's missing entries NaN)
    torch.testing.assert_close(again, x, rtol=0, atol=0, equal_nan=True)
    assert double.dtype == torch.float64 and torch.allclose(double, single.double(), atol=1e-4)
    if path is not None:
        rows = dgmkit.interpolate(run, 2, 3, seed=1)
        assert rows.dtype == torch.float64 and torch.allclose(rows, path.double(), atol=1e-4, equal_nan=True)


def _mixed_table(tmp_path):
    """A CSV of a numeric, a categorical (some entries missing) and a numeric column."""
    rng = np.random.default_rng(0)
    lines = ["size,colour,weight"]
    for i in range(60):
        size = i % 3 + rng.normal(0, 0.1)
        lines.append(f"{size:.4f},{['red', 'green', 'blue'][i % 3] if i % 7 else ''},{2 * size + rng.normal(0, 0.1):.4f}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "t.csv"


def test_sample_and_evaluate_options_are_checked_by_kind_and_numpy_integers_taken(tmp_path):
    """draw="no" drew (a true string); data_dir=3 was ignored; seed=np.int64(2) passed the
    check and then failed in torch's generator ("an integer is required")."""
    run = dgmkit.train(tmp_path / "r", dataset="digits", **TINY)
    for options, needle in (
        (dict(draw="no"), "draw is True or False, got 'no'"),
        (dict(naive=1), "naive is True or False, got 1"),
    ):
        with pytest.raises(ConfigError, match=f"^{re.escape(needle)}$"):
            dgmkit.sample(run, 2, **options)
    with pytest.raises(ConfigError, match="^data_dir names a path, got 3$"):
        dgmkit.evaluate(run, "test", data_dir=3, iw_samples=2)
    # the run's checks of where its data are read from, said with the keywords given (they said --data-dir, --data)
    for call in (lambda **k: dgmkit.evaluate(run, "test", **k), lambda **k: dgmkit.reconstruct(run, 2, **k),
                 lambda **k: dgmkit.interpolate(run, 1, **k)):  # fmt: skip
        with pytest.raises(ConfigError, match="^data_dir is of datasets read from a folder; .* read from no folder$"):
            call(data_dir=str(tmp_path))
        with pytest.raises(ConfigError, match="^data= points at a moved data file, but .* the named dataset 'digits'"):
            call(data=str(tmp_path / "x.npy"))
    by_numpy = dgmkit.evaluate(run, "test", seed=np.int64(2), iw_samples=np.int64(3), limit=np.int64(20))
    by_python = dgmkit.evaluate(run, "test", seed=2, iw_samples=3, limit=20)
    assert by_numpy.nll == by_python.nll and (by_numpy.seed, by_numpy.iw_samples, by_numpy.n) == (2, 3, 20)
    assert json.loads(json.dumps(by_numpy))["seed"] == 2


def test_samples_are_drawn_in_batches_of_one_stream(tmp_path, monkeypatch):
    """dgm sample -n 10000 drew every sample in one call (a PixelCNN's cache or a U-Net step of
    10000 images at once); it now draws SAMPLE_BATCH at a time from one seeded stream."""
    import dgmkit.cli.figures as figures

    run = dgmkit.train(tmp_path / "r", dataset="digits", **TINY)
    monkeypatch.setattr(figures, "SAMPLE_BATCH", 3)
    sizes = []
    sample = run.model.sample

    def counted(n, *args, **kwargs):
        sizes.append(n)
        return sample(n, *args, **kwargs)

    monkeypatch.setattr(run.model, "sample", counted)
    for draw in (False, True):
        sizes.clear()
        seven, what = dgmkit.sample(run, 7, seed=4, draw=draw)
        assert sizes == [3, 3, 1] and seven.shape == (7, 1, 8, 8) and what.startswith("7 ")
        assert bool(((seven == 0) | (seven == 1)).all()) == draw  # Bernoulli draws, or their means
        three, _ = dgmkit.sample(run, 3, seed=4, draw=draw)
        assert torch.equal(seven[:3], three)  # the first batch is the n = 3 draw
        assert not torch.equal(seven[3:6], three)  # the next batch goes on along the stream
    # M2 draws its K = 10 classes in turn within a call: each batch is a whole number of cycles (20 of 25), so
    # that sample i is of class i mod K across batches too (batches of 25 restarted the cycle at 25, 50, ...)
    m2 = dgmkit.train(tmp_path / "m2", model="m2", dataset="digits", labels=20, **TINY)
    assert m2.model.sample_period == 10 and run.model.sample_period == 1
    monkeypatch.setattr(figures, "SAMPLE_BATCH", 25)
    sample = m2.model.sample
    monkeypatch.setattr(m2.model, "sample", counted)
    sizes.clear()
    assert dgmkit.sample(m2, 45, seed=4)[0].shape == (45, 1, 8, 8) and sizes == [20, 20, 5]
    monkeypatch.setattr(figures, "SAMPLE_BATCH", 7)  # a batch below one cycle: one cycle at a time
    sizes.clear()
    dgmkit.sample(m2, 25, seed=4)
    assert sizes == [10, 10, 5]


@pytest.mark.parametrize("package", ["models", "objectives", "priors", "distributions"])
def test_every_part_a_module_of_a_package_offers_is_exported_by_the_package(package):
    """``dgmkit.objectives.HierarchicalELBO``, ``dgmkit.models.VQVAE``: each model, objective,
    prior and distribution class that one of the package's modules lists in ``__all__`` is
    reachable from the package itself, as the docs and docstrings name it."""
    import importlib
    import inspect
    import pkgutil

    from dgmkit.models import GenerativeModel
    from dgmkit.objectives import Objective
    from dgmkit.priors import Prior

    base = {"models": GenerativeModel, "objectives": Objective, "priors": Prior}.get(
        package, torch.distributions.Distribution
    )
    pkg = importlib.import_module(f"dgmkit.{package}")
    offered = {
        name
        for info in pkgutil.iter_modules(pkg.__path__)
        for module in [importlib.import_module(f"dgmkit.{package}.{info.name}")]
        for name in getattr(module, "__all__", [])
        if inspect.isclass(getattr(module, name)) and issubclass(getattr(module, name), base)
    }
    assert len(offered) >= 5
    assert sorted(offered - set(pkg.__all__)) == []
    assert all(getattr(pkg, name) is not None for name in pkg.__all__)


def test_data_of_every_kind_a_user_holds_is_read_as_it_is_meant(tmp_path, monkeypatch):
    """A study of the API found: a tensor that requires grad, a bfloat16 or sparse tensor were raw
    torch errors; a masked array's mask was dropped (its entries trained as their fill values);
    a Dataset item's third value was silently left unread; identical data holding NaN could not
    be used again; a broken OUT.data.npz was numpy's error; "~/run" wrote its data under a folder
    named "~" and trained on a file of the home folder; a config's default dataset beside data=
    was refused; reconstruct and interpolate could not name a moved data file."""
    import shutil

    from dgmkit.api import _as_arrays

    rng = np.random.default_rng(0)
    x = (rng.random((40, 4, 4)) > 0.5).astype(np.float32)
    t = torch.from_numpy(x)
    for given in (t.requires_grad_(), torch.nn.Parameter(t.clone()), t.to(torch.bfloat16), t.to_sparse()):
        assert np.array_equal(_as_arrays(given)[0], x)
    # types NumPy lacks (float8, complex32: torch's "unsupported ScalarType") and quantized tensors
    with warnings.catch_warnings():  # (quantized tensors are deprecated and complex32 experimental; people hold them)
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.quantize_per_tensor(t, 0.5, 0, torch.quint8)
        chalf = t.to(torch.complex32)
    for given in (t.to(torch.float8_e4m3fn), t.to(torch.float8_e5m2), quantized):
        assert np.array_equal(_as_arrays(given)[0], x)
    assert _as_arrays(chalf)[0].dtype == np.complex64  # (refused as complex where it is read)
    with pytest.raises(DataError, match=r"a tensor on the meta device \(of shape \(40, 4, 4\)\) holds no values"):
        _as_arrays((t.to("meta"), None))  # (torch's "Cannot copy out of meta tensor")
    with pytest.raises(
        DataError, match=r"reads y as the labels, one number per image, and this y is an array of shape \(40,"
    ):
        _as_arrays((t, t))  # two arrays of images
    with pytest.raises(DataError, match=r"the labels y are a column of shape \(40, 1\); give them flat, y.ravel\(\)"):
        _as_arrays((t, np.zeros((40, 1))))
    huge = np.uint64(2**63 + 5)  # (was wrapped to a negative label)
    with pytest.raises(DataError, match="item 0 of the torch Dataset: its label 9223372036854775813 is beyond any class"):
        _as_arrays(_Items([(torch.zeros(4), huge)] * 3))
    mask = np.zeros(x.shape, bool)
    mask[0, 0, 0] = True
    got = _as_arrays(np.ma.masked_array(x, mask=mask))[0]
    assert np.isnan(got[0, 0, 0]) and np.isnan(got).sum() == 1 and np.array_equal(got[1:], x[1:])
    items = [(torch.zeros(4), 1, torch.ones(4))] * 10
    with pytest.raises(DataError, match="holds 3 values; dgmkit takes an image or an \\(image, label\\) pair"):
        _as_arrays(_Items(items))
    labels = _as_arrays(_Items([(torch.zeros(4), np.uint64(i % 3)) for i in range(10)]))[1]
    assert labels.tolist() == [i % 3 for i in range(10)]
    # the same data again, NaN and all: used, not "other data"
    holes = np.where(rng.random((60, 4)) < 0.2, np.nan, rng.normal(size=(60, 4))).astype(np.float32)
    miwae = dict(objective="miwae", likelihood="gaussian", hidden=[8], latent_dim=2, epochs=1, iw_k=2)
    dgmkit.train(tmp_path / "m", data=holes, **miwae)
    shutil.rmtree(tmp_path / "m")
    dgmkit.train(tmp_path / "m", data=holes, **miwae)
    (tmp_path / "bad.data.npz").write_text("not an npz")
    with pytest.raises(DataError, match="bad.data.npz exists and is not a data file of arrays"):
        dgmkit.train(tmp_path / "bad", data=x, **TINY)
    assert (tmp_path / "bad.data.npz").read_text() == "not an npz"
    # "~/run": the home folder's run, its data beside it, recorded and read as written
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    run = dgmkit.train("~/r", data=x, **TINY, config=RunConfig.of(epochs=1))
    assert (tmp_path / "home" / "r.data.npz").is_file() and run.cfg.data.dataset == str(tmp_path / "home" / "r.data.npz")
    assert not (tmp_path / "~").exists() and dgmkit.load("~/r").path == tmp_path / "home" / "r"
    (tmp_path / "home" / "r.data.npz").rename(tmp_path / "moved.npz")
    shown, recon = dgmkit.reconstruct("~/r", 4, data=tmp_path / "moved.npz")
    assert shown.shape == recon.shape == (4, 1, 4, 4)
    assert dgmkit.interpolate("~/r", pairs=1, steps=2, data=str(tmp_path / "moved.npz")).shape == (1, 4, 1, 4, 4)
    with pytest.raises(ConfigError, match="quiet must be True or False, got 'no'"):
        dgmkit.train(tmp_path / "q", data=x, quiet="no", **TINY)


def test_integers_beyond_what_float32_holds_are_refused():
    from dgmkit.data import from_array

    big = (np.arange(200, dtype=np.int64) + 2**24 + 1).reshape(20, 10)
    with pytest.raises(DataError, match="beyond 2\\^24, would not all stay distinct"):
        from_array(big)
    assert from_array(big - 2**23).num_levels is None  # (up to 2^24: exact, continuous values)


def test_a_named_dataset_beside_data_and_paths_of_no_home_are_refused_in_words(tmp_path):
    """A config table or file that names the default dataset beside data= is a dataset given (a
    RunConfig's default is not); ~nosuchuser/run was a bare RuntimeError of pathlib; the most
    negative int64 passed the check of integers float32 cannot hold (np.abs overflowed)."""
    from dgmkit.data import from_array

    x = (np.random.default_rng(0).random((40, 4, 4)) > 0.5).astype(np.uint8)
    for config in ({"dataset": "digits"}, {"data": {"dataset": "digits"}}):
        with pytest.raises(ConfigError, match="not both"):
            dgmkit.train(tmp_path / "r", config=config, data=x, **TINY)
    with pytest.raises(ConfigError, match="~nosuchuser-dgmkit names no home folder"):
        dgmkit.train("~nosuchuser-dgmkit/run", data=x, **TINY)
    with pytest.raises(ConfigError, match="names no home folder"):
        dgmkit.load("~nosuchuser-dgmkit/run")
    low = np.array([[np.iinfo(np.int64).min, 0, 1, 2]] * 10)
    with pytest.raises(DataError, match="integers of magnitude up to 9223372036854775808, beyond 2\\^24"):
        from_array(low)


def test_train_within_no_grad_or_inference_mode_trains_and_leaves_the_callers_mode(tmp_path):
    """Within torch.no_grad() (a caller's evaluation block) dgmkit.train failed with torch's
    "element 0 of tensors does not require grad"; it trains with gradients there, and the
    caller's mode is as it was afterwards."""
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            run = dgmkit.train(tmp_path / mode.__name__, dataset="digits", device=torch.device("cpu"), **TINY)
            assert not torch.is_grad_enabled() and run.cfg.optim.device == "cpu"  # (a torch.device, as load takes)
        assert run.trainer is not None and run.trainer["epoch"] == TINY["epochs"]


def test_a_callers_float64_default_dtype_makes_no_float64_run_and_no_mixed_dtypes(tmp_path):
    """Under torch.set_default_dtype(torch.float64) a run was built and saved in float64, and no
    process of the usual default could read it ("tensors of another dtype than the model's");
    dgmkit.interpolate of a float32 run mixed float64 steps with its float32 codes. The calls work
    in float32 whatever the default, and leave the caller's default as it was."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        run = dgmkit.train(tmp_path / "r", dataset="digits", **TINY)
        assert next(run.model.parameters()).dtype == torch.float32
        assert dgmkit.interpolate(run, 1, 3).shape == (1, 5, 1, 8, 8) and torch.get_default_dtype() == torch.float64
        assert torch.isfinite(torch.tensor(dgmkit.evaluate(run, limit=10).nll))
    finally:
        torch.set_default_dtype(before)
    assert next(dgmkit.load(tmp_path / "r").model.parameters()).dtype == torch.float32


def test_evaluate_names_its_keywords_not_the_flags_of_dgm_eval(tmp_path, capsys):
    """dgmkit.evaluate(run, seed=3) of an exact model said "the seed draws a --limit subset", and
    orders=3 of a VAE "--orders: ... is not an any-order model": flags of dgm eval that a Python
    caller never gave. The API names its keywords; dgm eval keeps its flags."""
    ppca = dgmkit.train(tmp_path / "ppca", model="ppca", latent_dim=2)
    with pytest.raises(ConfigError, match=r"^seed 3: the seed draws a limit subset and an estimate's samples; ") as e:
        dgmkit.evaluate(ppca, seed=3)
    assert "--" not in str(e.value)
    vae = dgmkit.train(tmp_path / "vae", dataset="digits", **TINY)
    with pytest.raises(ConfigError, match=r"^orders: a VAE .* is not an any-order model") as e:
        dgmkit.evaluate(vae, orders=3)
    assert "--" not in str(e.value)
    assert main(["eval", str(tmp_path / "vae"), "--orders", "3"]) == 1
    assert "--orders: a VAE" in capsys.readouterr().err


def test_a_temperature_of_any_real_number_type_is_drawn_at_that_temperature(tmp_path):
    """temperature=Fraction(1, 2) passed the check (a real number) and then failed in the flow's
    sample with torch's "unsupported operand type(s)"; it draws what 0.5 draws."""
    from fractions import Fraction

    flow = dgmkit.train(tmp_path / "flow", dataset="digits", model="flow", flow="realnvp", hidden=[8], epochs=1)
    half = dgmkit.sample(flow, 2, seed=1, temperature=0.5)
    for given in (Fraction(1, 2), np.float32(0.5), np.float64(0.5)):
        x, what = dgmkit.sample(flow, 2, seed=1, temperature=given)
        assert torch.equal(x, half[0]) and what == half[1] == "2 samples x ~ p(x) at temperature 0.5"


def test_draws_that_are_not_finite_numbers_are_returned_with_a_warning_that_says_to_lower_the_temperature(
    tmp_path, monkeypatch
):
    """A flow whose inverse overflows drew NaN, which dgmkit.sample returned without a word (dgm
    sample refuses them, saying to draw at a lower --temperature): they come back as drawn, with a
    RuntimeWarning at the caller's line that says how many and names the keyword."""
    from dgmkit.transforms.coupling import AffineCoupling

    glow = dgmkit.train(tmp_path / "glow", dataset="digits", model="flow", flow="glow", hidden=[16], flow_layers=2, epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (finite draws: no warning)
        fine, _ = dgmkit.sample(glow, 4, seed=1)
    real = AffineCoupling._transform

    def overflowing(self, x, params, inverse, where):  # raw log-scales far below what sigmoid(raw + 2) keeps above 0
        return real(self, x, (params[0] - 400.0, params[1]) if inverse else params, inverse, where)

    monkeypatch.setattr(AffineCoupling, "_transform", overflowing)
    with pytest.warns(RuntimeWarning) as caught:
        x, what = dgmkit.sample(glow, 4, seed=1)
    bad = int((~torch.isfinite(x)).sum())
    assert bad and x.shape == fine.shape and what == "4 samples x ~ p(x) at temperature 1"
    (w,) = caught
    assert str(w.message) == (
        f"the flow drew {bad} of {x.numel()} values at temperature 1 that are not finite numbers (its inverse overflowed "
        "on base draws that it maps out of range, as a flow trained little does): draw at a lower temperature "
        "(temperature=0.7, say), or train it longer; they are returned as drawn"
    )
    assert w.filename == __file__


def test_a_refusal_that_names_dgm_s_commands_keeps_their_flags(tmp_path):
    """A run on another run's data whose source folder moved: the refusal says to name the new folder with
    --data of dgm eval, sample and the other commands; said with keywords it named "data= NEW for dgm
    eval", a flag dgm eval does not have. Those of the run's checks alone are said with keywords."""
    from dgmkit.api import _data_keywords
    from dgmkit.config.inputs import run_dataset
    from dgmkit.config.schema import DataConfig

    with pytest.raises(DataError) as e, _data_keywords():
        run_dataset(DataConfig(codes_of=str(tmp_path / "gone")))
    assert "--data NEW for dgm eval, sample and the other commands" in str(e.value) and "data=" not in str(e.value)
    with pytest.raises(ConfigError, match="^data= names a .npy"), _data_keywords():
        raise ConfigError("--data names a .npy, .npz, .mat, .csv or .parquet file, got 'x'")
    with pytest.raises(DataError, match=r"if it moved, data=PATH; its schema: schema=PATH$"), _data_keywords():
        raise DataError("no such data file: x.csv (of r); if it moved, --data PATH; its schema: --schema PATH")


def test_reconstruct_and_interpolate_of_a_table_count_its_rows_as_datapoints_not_images(tmp_path):
    """iris's rows are stored (1, 1, 4): refusals of too many of them counted "images"."""
    run = dgmkit.train(tmp_path / "iris", dataset="iris", likelihood="gaussian", hidden=[8], latent_dim=2, epochs=1)
    x, r = dgmkit.reconstruct(run, 3)
    assert x.shape == r.shape == (3, 1, 1, 4)
    with pytest.raises(ConfigError, match="^n = 1000 is more than the 15 datapoints of the test split$"):
        dgmkit.reconstruct(run, 1000)
    with pytest.raises(ConfigError, match="^pairs = 100 needs 200 datapoints; the test split has 15$"):
        dgmkit.interpolate(run, pairs=100)


def test_a_role_the_family_does_not_declare_is_named_by_the_keyword_given_not_dgm_s_flag(tmp_path):
    run = dgmkit.train(tmp_path / "vae", dataset="digits", **TINY)
    for kwargs, said in [
        (dict(code_prior=tmp_path / "vae"), "code_prior=..."),
        (dict(inputs={"code-prior": tmp_path / "vae"}), "inputs={'code-prior': ...}"),
        (dict(inputs={"prior": run}), "inputs={'prior': ...}"),
    ]:
        with pytest.raises(ConfigError, match=f"^{re.escape(said)}: .* vae family, whose inputs are: none"):
            dgmkit.sample(run, 2, **kwargs)
        with pytest.raises(ConfigError, match=f"^{re.escape(said)}: .* vae family, whose inputs are: none"):
            dgmkit.evaluate(run, limit=2, **kwargs)


def test_a_run_of_a_model_made_float64_from_python_is_loaded_evaluated_and_resumed_in_float64(tmp_path, capsys):
    """A run written by the Trainer with its run record (as docs/python.md has it) of a built-in
    model made float64 (model.double()) was refused by dgmkit.load, dgm eval and dgm train
    --resume: "8 tensors of another dtype than the model's ... not a checkpoint of this model".
    It is read back in float64, its weights as trained, and goes on in float64."""
    from dgmkit.config import build_model, run_record, trainer_options
    from dgmkit.data import make_transform
    from dgmkit.training import Trainer, load_checkpoint

    cfg = RunConfig.of(dataset="digits", hidden=[8], latent_dim=2, epochs=1, device="cpu")
    data = load_dataset("digits")
    transform = make_transform("bernoulli", data)
    model = build_model(cfg, data.event_shape, data.num_levels).double()
    out = tmp_path / "f64"
    options = trainer_options(cfg)
    Trainer(model, cfg.model.training_objective(), data.train, transform, valid=data.valid, run_dir=out,
            config=run_record(cfg, data, transform), progress=False, **options).fit()  # fmt: skip
    run = dgmkit.load(out)
    weights = dict(run.model.state_dict())
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float64}
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert np.isfinite(dgmkit.evaluate(run, limit=20, iw_samples=2).nll)
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--quiet"]) == 0, capsys.readouterr().err
    last = load_checkpoint(out / "checkpoint.safetensors")
    assert last["trainer"]["epoch"] == 2 and {v.dtype for v in last["model"].values()} == {torch.float64}
