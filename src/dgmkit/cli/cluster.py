"""``dgm cluster``: cluster a split with a mixture-prior VAE and score it against the labels."""

import argparse

import torch

from dgmkit._io import atomic_write_bytes, atomic_write_json
from dgmkit.cli.common import (
    add_data_flags,
    add_device_flag,
    add_run_parser,
    add_split_flag,
    encoded_holes_note,
    enough_rows,
    own_result,
    own_result_table,
    plural,
    results_locked,
    run_data,
    say,
    say_partly_trained,
    split_data,
)
from dgmkit.config import load_run
from dgmkit.data.labels import HIDDEN, labels_shown
from dgmkit.errors import ConfigError, DataError
from dgmkit.evaluation.clustering import cluster_assignments, clustering_scores
from dgmkit.evaluation.report import finite_number
from dgmkit.models import LatentVariableModel

__all__ = ["add_parser", "run_cluster"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_run_parser(sub, "cluster", help="assign datapoints to mixture-prior components; accuracy and NMI")
    add_split_flag(p)
    add_data_flags(p)
    add_device_flag(p)
    p.set_defaults(func=run_cluster)


# cluster-assignments.csv's columns: the datapoint's place in the split, its row of the data file
# where the split was drawn from one (empty where not), its label and its component
_HEADER = "index,label,component,file_row"
_HEADERS = (_HEADER, "index,label,component")  # (before 2026-11-29: no file_row)
_SCORES = {"accuracy", "accuracy_majority", "nmi"}  # cluster.json's numbers in [0, 1], beside its counts and split
_COUNTS = {"clusters_used", "n", "components", "hidden_labels"}
_NAMES = {"split", "checkpoint", "weights", "run_id"}  # which data and which weights (records before 2026-11-27: split)


def _result_problem(r: dict) -> str | None:
    """What is wrong with a cluster.json found in a run folder (None: dgm cluster wrote it)."""
    extra = set(r) - _SCORES - _COUNTS - _NAMES
    if extra:
        return f"it holds {sorted(extra)[0]!r}, which dgm cluster never writes"
    for k in _SCORES & set(r):
        if not (finite_number(r[k]) and -1e-9 <= r[k] <= 1 + 1e-9):  # (scikit-learn's NMI of a perfect match: 1 + 2e-16)
            return f"{k} is not a number in [0, 1]"
    for k in _COUNTS & set(r):
        if type(r[k]) is not int or r[k] < 0:
            return f"{k} is not a count"
    for k in _NAMES & set(r):
        if not isinstance(r[k], str) and not (k == "run_id" and r[k] is None):
            return f"{k} is not a string"
    return None


def _shown_labels(y: torch.Tensor, where: str) -> tuple[torch.Tensor, dict]:
    """Which labels ``y`` shows (a partly labelled data file hides some, -1, which are no class: a
    clustering is scored against those shown) and, where some are hidden, cluster.json's count of
    them; refused where every one, or all but one, is hidden (as a split of one row is)."""
    shown = labels_shown(y)
    if not bool(shown.any()):
        raise DataError(f"{where} hides every label ({HIDDEN}): none to score a clustering against")
    if int(shown.sum()) < 2:  # (one datapoint scored: accuracy and NMI 1.0, of any clustering)
        raise DataError(
            f"{where} shows 1 label (the other {plural(len(y) - 1, 'is', 'are')} hidden, {HIDDEN}); a clustering's score "
            "needs at least 2 (of one datapoint, any is perfect)"
        )
    return shown, {"hidden_labels": int((~shown).sum())} if not bool(shown.all()) else {}


def _say_one_class(labels: torch.Tensor) -> None:
    """A note where every label scored is one class: the scores then measure no clustering."""
    classes = labels.unique()
    if len(classes) == 1:
        say(
            f"note: every label scored is {int(classes[0])}, one class: its NMI is 1 where one component is used too "
            "(0 / 0, by scikit-learn's convention) and 0 otherwise, the majority-label accuracy is 1 and the one-to-one "
            "accuracy the largest component's share; none of them measures the clustering"
        )


def run_cluster(args: argparse.Namespace) -> int:
    run = load_run(args.run_dir, device=args.device)
    if not isinstance(run.model, LatentVariableModel) or run.model.num_components is None:
        raise ConfigError(
            f"{args.run_dir} holds a model without a mixture-of-Gaussians prior, whose components are the clusters; "
            "clustering needs one (train "
            + ("with --prior mog" if run.cfg.model.has_setting("prior") else "a VAE with --model vae --prior mog")
            + "; a VampPrior's components are its pseudo-inputs, not clusters)"
        )
    own_result(run.path / "cluster.json", "clusters_used", "cluster again", check=_result_problem)  # a foreign one: refused
    own_result_table(run.path / "cluster-assignments.csv", _HEADERS, "cluster again")
    dataset = run_data(run, args.data_dir, args.data, args.schema)
    x, y = split_data(run, args.split, dataset=dataset)
    enough_rows(x, args.split, 2, "a clustering's score: of one datapoint, any is perfect")
    file_rows = dataset.split(args.split).rows
    if y is None:
        raise DataError(f"{run.cfg.data.dataset} has no labels to score a clustering against")
    y = y.cpu()
    shown, hidden = _shown_labels(y, f"the {args.split} split of {run.cfg.data.dataset}")
    assign = cluster_assignments(run.model, x).cpu()  # scored by NumPy and scikit-learn, on the CPU
    scores = {
        **clustering_scores(assign[shown].numpy(), y[shown].numpy()),
        **hidden,
        "split": args.split,
        "components": run.model.num_components,
        "checkpoint": run.checkpoint.name,  # which weights: a run trained on since makes other clusters
        "weights": run.weights_digest(),
        "run_id": run.record.get("run_id"),
    }
    used = f"{scores['clusters_used']} of {plural(scores['components'], 'component')}"
    scored = f" (the {hidden['hidden_labels']} whose label is hidden are left out)" if hidden else ""
    say(f"{plural(scores['n'], args.split + ' datapoint')} in {used}{scored}{encoded_holes_note(x)}")
    say(f"accuracy (best one-to-one matching)  {scores['accuracy']:.4f}")
    say(f"accuracy (majority label per cluster) {scores['accuracy_majority']:.4f}")
    say(f"NMI                                   {scores['nmi']:.4f}")
    _say_one_class(y[shown])
    say_partly_trained(run)
    within = [""] * len(assign) if file_rows is None else file_rows.tolist()
    rows = [_HEADER] + [f"{i},{int(a)},{int(b)},{r}" for i, (a, b, r) in enumerate(zip(y.cpu().tolist(), assign, within))]
    with results_locked(run.path, "cluster.json"):  # the pair of one call, checked again: another may have written
        own_result(run.path / "cluster.json", "clusters_used", "cluster again", check=_result_problem)
        own_result_table(run.path / "cluster-assignments.csv", _HEADERS, "cluster again")
        atomic_write_json(run.path / "cluster.json", scores)
        atomic_write_bytes(run.path / "cluster-assignments.csv", ("\n".join(rows) + "\n").encode())
    rows_note = "" if file_rows is None else f"; file_row: its row of {run.cfg.data.dataset}, the split a seeded share"
    table = run.path / "cluster-assignments.csv"
    say(f"wrote {run.path / 'cluster.json'} and {table} (each datapoint's component{rows_note})")
    return 0
