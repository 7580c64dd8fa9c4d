"""Partly labelled data: a data file whose labels are -1 (hidden) where not shown trains a
semi-supervised model on the labels it shows; uses that need every label refuse hidden ones,
and the Trainer refuses training labels that show no example of one of the model's classes."""

import json

import numpy as np
import pytest
import torch

from dgm_cli import dgm, refused
from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import Split, from_array, load_dataset
from dgmkit.data.labels import HIDDEN
from dgmkit.errors import DataError
from dgmkit.evaluation import evaluate
from dgmkit.models.terms import format_term
from dgmkit.training import Trainer

TINY = ("--model", "m2", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--batch-size", "100")


@pytest.fixture
def part_npz(tmp_path):
    """300 rows of the 8x8 digits (17 levels), the labels of about 2/3 of them hidden (-1)."""
    d = load_dataset("digits")
    x, y = d.train.x[:300].numpy(), d.train.y[:300].numpy().copy()
    y[np.random.default_rng(0).random(300) < 2 / 3] = HIDDEN
    path = tmp_path / "part.npz"
    np.savez(path, x=x, y=y)
    return path, y


def _shown_in_train(path):
    return int((from_array(*np.load(path).values(), name=path.name).train.y >= 0).sum())


def test_a_partly_labelled_file_trains_m2_on_the_labels_it_shows(capsys, tmp_path, part_npz):
    """Labels of -1 in a .npz were refused at load ("labels must lie in 0..2147483647, found -1..9")."""
    path, y = part_npz
    shown = _shown_in_train(path)
    assert 50 < shown < 150  # (about 1/3 of the 240 training rows)
    code, out, err = dgm(capsys, "train", *TINY, "--dataset", path, "--binarize", "dynamic", "--out", tmp_path / "r")
    assert code == 0, err
    assert f"shows {shown} labels of its 240 rows; the {240 - shown} rows whose label is hidden (-1)" in out
    assert json.loads((tmp_path / "r" / "config.json").read_text())["labelled"] == shown
    # dgm eval's accuracy is of the test labels the file shows, and says how many it hides
    hidden_test = int((from_array(*np.load(path).values(), name=path.name).test.y < 0).sum())
    assert hidden_test
    code, _, err = dgm(capsys, "eval", tmp_path / "r")
    assert code == 0, err
    terms = json.loads((tmp_path / "r" / "eval.json").read_text())["terms"]
    (accuracy,) = [t for t in terms if t["name"] == "accuracy"]
    assert f"on {30 - hidden_test} labels ({hidden_test} hidden)" in accuracy["note"], accuracy


def test_labels_flag_keeps_labels_among_those_a_file_shows(capsys, tmp_path, part_npz):
    path, _ = part_npz
    shown = _shown_in_train(path)
    code, _, err = dgm(capsys, "train", *TINY, "--dataset", path, "--binarize", "dynamic", "--labels", "20",
                       "--out", tmp_path / "r")  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["labelled"] == 20
    code, out, err = dgm(capsys, "train", *TINY, "--dataset", path, "--binarize", "dynamic", "--labels", "200",
                         "--out", tmp_path / "r2")  # fmt: skip
    refused(code, err, f"--labels 200 is more than the {shown} labels the training split shows (of its 240 rows")
    assert "are kept" not in out  # (the note said "of which --labels 200 are kept" before the refusal)


def test_labels_below_hidden_are_still_refused():
    x = np.zeros((20, 4), np.uint8)
    assert int((from_array(x, np.full(20, -1)).train.y == HIDDEN).sum()) == 16
    with pytest.raises(DataError, match=r"labels must lie in 0..2147483647, found -2..0 \(-1 marks a hidden label\)"):
        from_array(x, np.array([-2] + [0] * 19))


def _m2_and_digits():
    digits = load_dataset("digits")
    cfg = RunConfig.of(model="m2", hidden=[8], latent_dim=2)
    return cfg, build_model(cfg, digits.event_shape, digits.num_levels), digits


def test_a_classifiers_accuracy_is_of_the_labels_shown():
    """A hidden label (-1) was counted as a wrong class: 10 of 20 hidden gave an accuracy of at most 0.5.
    It is the share right of the 10 shown now, and undefined where every label is hidden."""
    cfg, model, digits = _m2_and_digits()
    x = cfg.model.transform(digits).held_out(digits.test.x[:20])
    y = digits.test.y[:20].clone()
    y[:10] = HIDDEN
    right = (model.predict(x[10:]) == y[10:]).double().mean().item()
    model.predict = lambda x, batch_size=1000: digits.test.y[: len(x)].clone()  # (every shown label right)
    (term,) = [t for t in evaluate(model, x, iw_samples=1, y=y).terms if t["name"] == "accuracy"]
    assert (term["value"], term["note"]) == (1.0, "0.00% error on 10 labels (10 hidden)")
    del model.predict
    (term,) = [t for t in evaluate(model, x, iw_samples=1, y=y).terms if t["name"] == "accuracy"]
    assert term["value"] == pytest.approx(right, abs=1e-12)
    (term,) = [t for t in evaluate(model, x, iw_samples=1, y=torch.full((20,), HIDDEN)).terms if t["name"] == "accuracy"]
    assert (term["value"], term["note"]) == (None, "all 20 labels are hidden")
    # printed once as undefined: it read "n/a: n/a: all 20 labels are hidden"
    assert format_term(term) == ("accuracy", "n/a: all 20 labels are hidden")
    with pytest.raises(DataError, match="holds label -3: class indices are 0 or more"):
        evaluate(model, x, iw_samples=1, y=torch.full((20,), -3))
    # a label beyond the model's 10 classes was counted as a wrong prediction: accuracy 0.0, without a word
    with pytest.raises(DataError, match=r"holds labels -1..12, outside the model's classes 0..9 and -1 \(hidden\)"):
        evaluate(model, x, iw_samples=1, y=torch.where(y == HIDDEN, HIDDEN, 12))


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (lambda y: torch.zeros_like(y), "shows no label of classes 1, 2, 3, 4, 5 and 4 more of the model's 10"),
        (lambda y: y % 9, "shows no label of class 9 of the model's 10 classes"),
        (lambda y: torch.full_like(y, HIDDEN), "shows no label \\(every one is hidden, -1\\)"),
    ],
)
def test_trainer_refuses_labels_missing_a_class_of_the_model(labels, words):
    """An M2 of 10 classes trained silently on labels all of class 0 (or all hidden)."""
    cfg, model, digits = _m2_and_digits()
    train = digits.train.subset(torch.arange(100))
    train = Split(train.x, labels(train.y))
    with pytest.raises(DataError, match=words):
        Trainer(model, build_objective(cfg), train, cfg.model.transform(digits), epochs=1, progress=False)


def _tiny_mog(capsys, tmp_path, path):
    """A 1-epoch VAE with a 3-component mixture prior trained on the data file ``path``: a run to cluster."""
    run = tmp_path / "mog"
    argv = ("--model", "vae", "--prior", "mog", "--prior-components", "3", "--hidden", "8", "--latent-dim", "2")
    code, _, err = dgm(
        capsys, "train", *argv, "--epochs", "1", "--dataset", path, "--binarize", "dynamic", "--out", run, "--quiet"
    )
    assert code == 0, err
    return run


def test_a_clustering_is_scored_against_the_labels_shown(capsys, tmp_path, part_npz):
    """dgm cluster scored a hidden label (-1) as a class of its own."""
    path, _ = part_npz
    run = _tiny_mog(capsys, tmp_path, path)
    test_y = from_array(*np.load(path).values(), name=path.name).test.y
    hidden = int((test_y < 0).sum())
    code, out, err = dgm(capsys, "cluster", run)
    assert code == 0, err
    scores = json.loads((run / "cluster.json").read_text())
    assert (scores["n"], scores["hidden_labels"]) == (30 - hidden, hidden), scores
    assert f"{30 - hidden} test datapoints in " in out and f"(the {hidden} whose label is hidden are left out)" in out
    rows = (run / "cluster-assignments.csv").read_text().splitlines()[1:]
    assert sum(r.split(",")[1] == "-1" for r in rows) == hidden
    # its latent plot draws the hidden labels as crosses (it refused them: "whole numbers >= 0")
    code, _, err = dgm(capsys, "latents", run, "--out", tmp_path / "latents.png")
    assert code == 0 and (tmp_path / "latents.png").read_bytes().startswith(b"\x89PNG"), err


def test_a_clustering_scored_against_one_class_says_its_scores_measure_nothing(capsys, tmp_path):
    """Where every label shown is one class, dgm cluster printed accuracy 1.0000 and NMI 1.0000 (0 / 0) as
    though the clustering were perfect; a note now says that none of its scores measures the clustering."""
    d = load_dataset("digits")
    x = d.train.x[:300].numpy()
    y = np.where(np.random.default_rng(0).random(300) < 1 / 2, 3, HIDDEN)  # (a VAE's training reads no label)
    path = tmp_path / "one.npz"
    np.savez(path, x=x, y=y)
    run = _tiny_mog(capsys, tmp_path, path)
    code, out, err = dgm(capsys, "cluster", run)
    assert code == 0, err
    assert "every label scored is 3, one class" in out and "none of them measures the clustering" in out
    scores = json.loads((run / "cluster.json").read_text())
    assert scores["accuracy_majority"] == 1.0 and scores["nmi"] == (1.0 if scores["clusters_used"] == 1 else 0.0)


def test_a_clustering_of_one_shown_label_is_refused_as_a_split_of_one_row_is(capsys, tmp_path, part_npz):
    """A test split whose labels are all hidden but one scored that one datapoint: accuracy and NMI 1.0."""
    path, y = part_npz
    x = np.load(path)["x"]
    test_rows = from_array(x, y, name=path.name).test.rows
    y = np.full_like(y, HIDDEN)
    y[int(test_rows[0])] = 3
    np.savez(path, x=x, y=y)
    run = _tiny_mog(capsys, tmp_path, path)
    code, _, err = dgm(capsys, "cluster", run)
    assert code == 1 and "shows 1 label (the other 29 are hidden, -1)" in err and "needs at least 2" in err, err
    assert not (run / "cluster.json").exists()
