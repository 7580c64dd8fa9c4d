"""``dgm eval``: the model's estimate of log p(x) (of the kind it declares), the ELBO split
where it has one, bits/dim and latent diagnostics."""

import argparse
import contextlib
import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from dgmkit import distributed
from dgmkit._io import atomic_write_json
from dgmkit.cli.argtypes import MAX_SEED, given_count, keyword
from dgmkit.cli.common import (
    ResultsFile,
    add_count_flag,
    add_input_flags,
    add_limit_flag,
    add_run_parser,
    add_seeded_data_flags,
    add_split_flag,
    attach_inputs,
    one_draw_bound,
    own_result,
    partly_trained,
    plural,
    positive_count,
    results_locked,
    run_data,
    say,
    seeded_rows,
    split_data,
    standardized_note,
    trained_so_far,
)
from dgmkit.config import Run, load_run
from dgmkit.config.schema import MAX_IW_SAMPLES
from dgmkit.data.transforms import scores_densities
from dgmkit.errors import ConfigError
from dgmkit.evaluation import evaluate, record_terms
from dgmkit.evaluation.estimates import MAX_ORDERS
from dgmkit.evaluation.order_files import OrderFiles
from dgmkit.evaluation.report import active_units_words, data_notes, data_words, record_problem
from dgmkit.models import AnyOrderModel
from dgmkit.models.terms import format_term
from dgmkit.training.run_writer import results_lock

__all__ = ["add_parser", "run_eval", "format_report", "estimate_samples", "eval_notes", "read_eval_json", "EVALS"]

# what each kind of estimate is called on the NLL row
_NLL_ROW = {
    "exact": lambda r: "NLL (one-draw bound)" if one_draw_bound("exact", r.get("transform", "")) else "NLL (exact)",
    "importance-sampled": lambda r: f"NLL (k={r['iw_samples']})",
    "bound": lambda r: f"NLL bound (k={r['iw_samples']})",
    "time-sampled": lambda r: f"NLL bound ({plural(r['iw_samples'], 'time')} per datapoint)",
    "order-mixture": lambda r: f"NLL (exact, {plural(r['iw_samples'], 'order')})",
}
REPORTED_ESTIMATES = frozenset(_NLL_ROW) | {"reconstruction"}  # the kinds of estimate format_report prints


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_run_parser(sub, "eval", help="evaluate a run: its log-likelihood estimate, ELBO, bits/dim, active units")
    add_split_flag(p)
    add_count_flag(
        p,
        "--iw-samples",
        1,
        MAX_IW_SAMPLES,
        help="importance samples k (default: the run's); memory stays bounded for any k, time grows with it",
    )
    add_count_flag(
        p,
        "--time-samples",
        1,
        MAX_IW_SAMPLES,
        help="diffusion models: times per datapoint the bound is averaged over (default: the run's)",
    )
    add_count_flag(
        p,
        "--orders",
        1,
        MAX_ORDERS,
        help="any-order models (masked diffusion): the exact NLL of the uniform mixture of M orders of the entries, "
        "drawn with --seed (D network passes per order and datapoint), instead of the bound",
    )
    add_limit_flag(p)
    add_seeded_data_flags(p, "seed of the --limit subset and of the estimate's samples (an exact log-likelihood draws none)")
    add_input_flags(p)
    p.set_defaults(func=run_eval)


def format_report(r: dict) -> str:
    """What ``dgm eval`` prints for an eval.json record: the common numbers, then the terms the
    model added (``record_terms``), each where its level puts it."""
    terms = record_terms(r)
    split_terms = [format_term(t) for t in terms if t.get("level")]  # parts of the ELBO's split
    own_terms = [format_term(t) for t in terms if not t.get("level")]
    rows = [("split", f"{r['split']} ({plural(r['n'], 'datapoint')}{', random subset' if r['subset'] else ''})")]
    words = data_words(r)
    if r.get("dataset") and words:  # what the numbers are of: compare like with like
        rows.append(("data", f"{r['dataset']}, {words}"))
    if r["estimate"] == "reconstruction":
        rows.append(("reconstruction", f"{r['recon']:.3f} nats  (log p(x | z = f(x)))"))
        rows += split_terms
    else:
        if r.get("elbo") is not None:
            # log p(x) itself only where the density is of the data scored: an exact density of dequantized
            # integers gives a one-draw bound on theirs (as the NLL row says), with its spread
            exact = r["estimate"] == "exact" and not one_draw_bound("exact", r.get("transform", ""))
            bpd = "" if r.get("elbo_bpd") is None else f"  ({r['elbo_bpd']:.4f} bits/dim)"
            spread = "" if exact or r.get("elbo_stderr") is None else f" +- {_num(r['elbo_stderr'])}"
            rows.append(("ELBO" + (" = log p(x)" if exact else ""), f"{r['elbo']:.3f}{spread} nats{bpd}"))
            if r.get("recon") is not None:
                rows += [("  reconstruction", f"{r['recon']:.3f} nats"), ("  KL", f"{r['kl']:.3f} nats")]
        rows += split_terms
        rows.append((_NLL_ROW[r["estimate"]](r), f"{r['nll']:.3f} +- {_num(r['nll_stderr'])} nats"))
        if r.get("bpd") is not None:
            rows.append(("bits/dim", f"{r['bpd']:.4f}"))
        else:
            rows.append(("bits/dim", "n/a: continuous data (see below)"))
    rows += own_terms
    if r.get("active_units") is not None:
        rows.append(("active units", f"{active_units_words(r)}  (Cov_x E[z_u|x] > 0.01)"))
    if r.get("kl_per_dim"):
        rows.append(("KL per dimension", _kl_per_dim(r["kl_per_dim"])))
    if r.get("layers"):
        rows.append(("per layer", "KL at a further posterior draw (the layers' KLs add up to the KL above in expectation)"))
    for layer in r.get("layers") or []:
        kl, se = f"KL {layer['kl']:.3f}", layer.get("kl_stderr")
        if se is not None:
            kl += f" +- {_num(se)} nats"
        else:  # a closed form of x alone (a top layer's), which no draw moves; a record from before kl_stderr: unsaid
            kl += " nats (closed form, exact given x)" if "kl_stderr" in layer else " nats"
        rows.append((f"  layer {layer['name']}", f"{kl}, active {layer['active_units']} / {layer['size']}"))
    rows += [("what", line) for line in eval_notes(r)]
    rows.append(("time", f"{r['seconds']:.1f} s"))
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


def _kl_per_dim(kl: list) -> str:
    """The KL of each latent dimension in nats, largest first (a summary for many dimensions)."""
    if not isinstance(kl[0], (int, float)):  # categorical latents: a KL per variable
        kl = [float(sum(v)) if isinstance(v, list) else float(v) for v in kl]
    ordered = sorted(kl, reverse=True)
    if len(ordered) <= 16:
        return " ".join(f"{v:.2f}" for v in ordered) + " nats (largest first)"
    top = " ".join(f"{v:.2f}" for v in ordered[:8])
    return f"{top} ... {ordered[-1]:.2f} nats (largest first; {sum(v > 0.1 for v in ordered)} of {len(kl)} above 0.1)"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


_ESTIMATE_NOTES = {  # what each kind of estimate's numbers are
    "reconstruction": "this model defines no density over x: no ELBO, NLL or bits/dim",
    "bound": "both numbers are lower bounds on log p(x) (as -NLL; estimates of them where drawn at random); the bound "
    "tightens as k grows",
    "importance-sampled": "the NLL estimate is a stochastic upper bound that tends to the true NLL as k grows",
    "exact": "the NLL is exact",
    "order-mixture": "the NLL is exact: -log of the uniform mixture of the orders drawn with the seed, each an "
    "autoregressive model from the same network; -ELBO is the mean of the per-order NLLs, an upper bound on it",
    "time-sampled": "the NLL is an upper bound (-ELBO), estimated without importance sampling: the mean of the "
    "bound's terms at sampled times; more times lower its noise, not the bound",
}


def eval_notes(r: dict) -> list[str]:
    """The notes ``dgm eval`` prints under an evaluation record's numbers: what the estimate is,
    what the data are, what to know of the weights."""
    out = [_ESTIMATE_NOTES[r["estimate"]]]
    if one_draw_bound(r["estimate"], r.get("transform", "")):  # exact of y = (k + u) / L, not of k
        out = [
            f"exact for the uniformly dequantized data; for the {r['num_dims']}-D integer data a stochastic upper bound on "
            "the NLL (Jensen over the noise u), one draw of u per datapoint"
        ]
    elbo, nll = r.get("elbo"), r.get("nll")
    if r["estimate"] == "importance-sampled" and elbo is not None and nll is not None and elbo > -nll:
        out.append(  # (a lucky draw: a reader took it for a bound broken)
            f"the ELBO lies {elbo + nll:.3f} nats above -NLL: the noise of the random draws (in expectation, "
            "ELBO <= -NLL of k samples <= log p(x); the importance-sampled NLL is the tighter number)"
        )
    if r.get("order_files"):
        out.append(f"each order's log-likelihoods are kept in the run's {r['order_files']}: a stopped evaluation goes on")
    if r["estimate"] == "time-sampled":
        out.append(f"times: {r.get('variance_reduction')}; the standard error is over datapoints and times together")
        if r.get("time_stderr") is not None:
            part = f"of it, the time sampling alone: +- {r['time_stderr']:.3f} nats (from the two halves' difference"
            whole = r.get("nll_stderr") if r.get("nll_stderr") is not None else r.get("elbo_stderr")
            if whole is not None and r["time_stderr"] > whole:  # (two noisy estimates from few datapoints)
                part += f"; more than the whole, +- {whole:.3f}: at n = {r['n']} both are too noisy to split"
            elif whole is None:  # (one datapoint: no spread over datapoints, the whole's error n/a above)
                part += f"; the whole's needs two datapoints or more, n = {r['n']}"
            out.append(part + ")")
    if r.get("point_mass_posterior"):  # every draw is the same, k changes nothing
        out = [
            "a lower bound on log p(x) (as -NLL): log p(x|z_q(x)) + log p(z_q(x)); the posterior is a point mass, "
            "so more draws (k) change nothing"
        ]
        prior = _inputs(r).get("code-prior")
        out.append(f"the bound's prior over code grids: {'the model in ' + prior if prior else 'uniform over the codes'}")
    if r.get("discrete_latents") and r["estimate"] == "importance-sampled":  # (trained through a relaxation, maybe)
        out.append(
            "the latents are discrete: these numbers score draws of discrete codes of q(z|x) under the discrete "
            "prior, not of a relaxation of them (such as the one gumbel-softmax trains through)"
        )
    stopped = partly_trained(r.get("trained"))
    if stopped:
        out.append(stopped)
    return out + data_notes(r)


def _inputs(r: dict) -> dict[str, str]:
    """The runs an evaluation used, role -> path (records before --input held a code prior alone)."""
    inputs = r.get("inputs")
    if isinstance(inputs, dict):
        return {str(k): str(v) for k, v in inputs.items()}
    return {"code-prior": str(r["code_prior"])} if isinstance(r.get("code_prior"), str) else {}


def protocol_key(r: dict) -> str:
    """What makes two evaluations comparable: the weights, split, subset, k, seed and code prior."""
    if "estimate" not in r:  # dgmkit 0.1's eval.json: its protocol was not recorded
        return f"{r['split']} | dgmkit 0.1's evaluation ({r.get('note') or 'no protocol recorded'})"
    subset = "all" if not r.get("subset") else f"random {r['n']} of {r['subset']['of']} (seed {r['subset']['seed']})"
    key = f"{r['split']} | {subset} | {r['estimate']} k={r['iw_samples']} | seed {r.get('seed', 0)}"
    if _drawn_by_ranks(r):  # each rank draws its own stream: another draw of the same estimate
        key += f" | {r['processes']} processes"
    weights = r.get("input_weights") or {}  # (records before 2026-11-27 hold the paths alone)
    for role, path in sorted(_inputs(r).items()):  # another run in a role, or other weights of it: another protocol
        key += f" | {role.replace('-', ' ')} {path}" + (f" (weights {weights[role]})" if role in weights else "")
    return key + f" | weights {r.get('weights', '?')}"


def _drawn_by_ranks(r: dict) -> bool:
    """Whether the ranks of a data-parallel evaluation drew its numbers each from a stream of its
    own: not where nothing is drawn (an exact likelihood, a mixture of orders, a point-mass
    posterior's bound: the numbers of one process), nor where the datapoints were fewer than the
    ranks (each rank estimated them all, from one process's stream)."""
    processes = r.get("processes") or 1
    draws = r["estimate"] not in ("exact", "order-mixture") and not r.get("point_mass_posterior")
    return draws and processes > 1 and r["n"] >= processes


# the run's evaluations by protocol; each result checked as it is read (dgm eval, dgm report)
EVALS = ResultsFile("evals.json", "estimate", "evaluate again", protocol_key, check=record_problem)


def read_eval_json(run_dir: Path) -> dict | None:
    """The run's eval.json (None where there is none): ``dgm eval``'s latest record, or dgmkit
    0.1's (an NLL, null for a model with no density, an ELBO and its k; no estimate kind). Anything
    else is refused by name: a file that is not regular, over 64 MiB (a subset's indices of a
    million-row split are 17 MB) or not such a record, or a record that ``record_problem`` finds a
    field of in the wrong type or range."""
    return own_result(run_dir / "eval.json", "nll", "evaluate again", 64 << 20, record_problem)


def estimate_samples(
    run: Run,
    iw_samples: int | None = None,
    time_samples: int | None = None,
    iw_flag: str = "--iw-samples",
    time_flag: str = "--time-samples",
) -> int:
    """The k of a run's estimate of log p(x): importance samples, or for a model scored by its
    bound over sampled times the times (the run's own setting, ``cfg.iw_samples``, where none is
    given), and 0 where the likelihood is exact. A count that means nothing for the estimate the
    run's family declares is refused, naming the flag that gave it."""
    kind, name = run.model.estimate_kind, run.cfg.model.describe()
    if time_samples is not None and kind != "time-sampled":
        raise ConfigError(f"{time_flag} is for diffusion models; {name} has no time to sample")
    if iw_samples is not None and kind == "time-sampled":
        raise ConfigError(
            f"{iw_flag}: {name} is scored by its bound over sampled times, without importance sampling; use {time_flag}"
        )
    if iw_samples is not None and kind in ("exact", "reconstruction"):
        what = "an exact log-likelihood" if kind == "exact" else "no density (a reconstruction score)"
        raise ConfigError(f"{iw_flag}: {name} has {what}; there is nothing to sample")
    if iw_samples is not None and run.model.point_mass_posterior:
        raise ConfigError(
            f"{iw_flag}: the posterior of {name} is a point mass (one code grid per datapoint): every draw is the same "
            "and more draws change nothing: leave it out"
        )
    if kind == "exact":
        return 0
    if run.model.point_mass_posterior:  # its one code grid: the bound, whatever the run's own iw_samples
        return 1
    k = iw_samples if iw_samples is not None else time_samples if time_samples is not None else run.cfg.iw_samples
    if kind in ("importance-sampled", "bound") and k < 1:
        given = f"{iw_flag} must be >= 1" if iw_samples is not None else f"the run's iw_samples is {k}: give {iw_flag} >= 1"
        raise ConfigError(f"{name} estimates log p(x) by importance sampling: {given} (k = 1 is the ELBO)")
    return k


def drawing_nothing(run: Run) -> str | None:
    """Why the run's evaluation draws nothing at random, in words (None where it draws: the
    model's ``estimate_draws``), so that a seed given for it alone is refused: an exact
    log-likelihood, a bound over a point-mass posterior's one code grid, a deterministic
    autoencoder's reconstruction score."""
    model, name = run.model, run.cfg.model.describe()
    if model.estimate_draws is not None:
        return None
    if model.estimate_kind == "exact":
        return f"the log-likelihood of {name} is exact"
    if model.point_mass_posterior:
        return f"the bound of {name} is of each datapoint's one code grid (its posterior is a point mass)"
    return f"the {model.estimate_kind} score of {name} is deterministic"


def evaluate_run(
    run: Run,
    split: str = "test",
    iw_samples: int | None = None,
    time_samples: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    data: str | None = None,
    inputs: Mapping[str, Run] | None = None,
    orders: int | None = None,
    keep_orders: bool = False,
    schema: str | None = None,
    keywords: bool = False,
) -> dict:
    """What ``dgm eval`` computes for a loaded run (its eval.json record): the estimate the run's
    family declares, with ``iw_samples`` (or ``time_samples``; default: the run's), on ``split``
    or a seeded random ``limit`` of it; ``orders``: an any-order model's exact mixture of that
    many orders instead, each order kept in the run folder as it is done where ``keep_orders``
    (``dgm eval``'s; otherwise nothing is written). The counts are checked as the flags check them;
    ``keywords``: a refusal names the settings as a Python caller's keywords (``iw_samples``), not
    as ``dgm eval``'s flags (``--iw-samples``)."""
    named = keyword if keywords else str
    iw_samples, time_samples, limit, seed, orders = _check_counts(run, iw_samples, time_samples, limit, seed, orders, named)
    k = estimate_samples(run, iw_samples, time_samples, named("--iw-samples"), named("--time-samples"))
    weights = run.weights_digest()  # which weights these numbers are of
    dataset = run_data(run, data_dir, data, schema)
    x, y = split_data(run, split, dataset=dataset)
    still = drawing_nothing(run)
    if seed and orders is None and still and seeded_rows(len(x), limit, seed) is None:
        raise ConfigError(  # (its numbers those of seed 0, recorded as another protocol)
            f"seed {seed}: the seed draws a {named('--limit')} subset and an estimate's samples; {still} and all "
            f"{len(x)} datapoints of the {split} split are scored: nothing is drawn, leave out the seed"
        )
    x, y, subset = _seeded_subset(x, y, limit, seed)
    store = None
    if orders is not None and keep_orders and distributed.current().world_size == 1:  # each order's values kept as done
        store = _order_files(run, weights, seed, x)
    report = evaluate(
        run.model,
        x,
        iw_samples=k,
        log_volume=run.transform.log_volume,
        seed=seed,
        continuous=scores_densities(run.transform.kind, run.cfg.model),
        y=y,
        orders=orders or 0,
        order_store=store,
    )
    return {
        **report.to_dict(),
        "trained": trained_so_far(run),
        # what the model declares that the numbers' notes depend on
        "point_mass_posterior": run.model.point_mass_posterior,
        "discrete_latents": run.model.discrete_latents,
        "table_note": standardized_note(dataset),  # what a table's numbers are of
        "split": split,
        "subset": subset,
        "checkpoint": run.checkpoint.name,
        "model": run.cfg.family,
        "run_id": run.record.get("run_id"),  # whose evaluation it is (a copied evals.json is another run's)
        "dataset": run.record["data"]["name"],
        "transform": run.transform.kind,
        # the runs attached in roles its family declares (--input), and which of their weights
        "inputs": {role: str(other.path) for role, other in (inputs or {}).items()},
        "input_weights": {role: other.weights_digest() for role, other in (inputs or {}).items()},
        "seed": seed,
        "weights": weights,
        "processes": distributed.current().world_size,
        "order_files": None if store is None else store.folder.relative_to(run.path).as_posix(),  # in the run folder
    }


def _order_files(run: Run, weights: str, seed: int, x: torch.Tensor) -> OrderFiles:
    """Where ``dgm eval --orders`` keeps each order's values: ``orders/KEY`` in the run folder, the
    key a hash of what they depend on (the weights, the seed, the data). Written there only, never
    through a link elsewhere (as every other run file is replaced, not followed)."""
    key = hashlib.sha256(f"{weights}|{seed}|{tuple(x.shape)}|".encode() + x.cpu().numpy().tobytes()).hexdigest()
    folder = run.path / "orders" / key[:16]
    for part in (folder.parent, folder):
        if part.is_symlink():
            raise ConfigError(
                f"{part} is a symbolic link: the orders' values are kept only inside the run folder; remove the link"
            )
    return OrderFiles(folder, len(x), report=say)


def _check_counts(
    run: Run,
    iw_samples: int | None,
    time_samples: int | None,
    limit: int | None,
    seed: int,
    orders: int | None,
    named: Callable[[str], str] = str,
) -> tuple[int | None, int | None, int | None, int, int | None]:
    """The counts of ``evaluate_run``, checked as the flags check them, and --orders against the
    run (``named``: a flag as a refusal names it); returned as Python integers (a NumPy integer
    given from Python, as ``np.int64(2)``, is one; torch's generators take no other)."""
    iw_samples, time_samples, orders = (
        None if value is None else given_count(value, lo, hi, what)
        for value, lo, hi, what in (
            (iw_samples, 0, MAX_IW_SAMPLES, "iw_samples"),
            (time_samples, 1, MAX_IW_SAMPLES, "time_samples"),
            (orders, 1, MAX_ORDERS, "orders"),
        )
    )
    seed = given_count(seed, 0, MAX_SEED, "seed")
    if orders is not None:
        if not isinstance(run.model, AnyOrderModel):
            raise ConfigError(
                f"{named('--orders')}: {run.cfg.model.describe()} is not an any-order model (e.g. masked diffusion)"
            )
        if iw_samples is not None or time_samples is not None:
            raise ConfigError(
                f"{named('--orders')} scores the exact mixture of orders: it takes no {named('--iw-samples')} or "
                f"{named('--time-samples')}"
            )
    if limit is not None and not positive_count(limit):
        raise ConfigError(f"limit must be a positive integer (a seeded random subset of the split), got {limit!r}")
    return iw_samples, time_samples, None if limit is None else int(limit), seed, orders


def _seeded_subset(
    x: torch.Tensor, y: torch.Tensor | None, limit: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor | None, dict | None]:
    """``limit`` datapoints drawn at random with ``seed`` (in their order in the split), and the
    record of which (None: all of them)."""
    idx = seeded_rows(len(x), limit, seed)
    if idx is None:
        return x, y, None
    return x[idx], None if y is None else y[idx], {"seed": seed, "of": len(x), "indices": idx.tolist()}


def run_eval(args: argparse.Namespace) -> int:
    run = load_run(args.run_dir, device=args.device)
    inputs = attach_inputs(run, args)
    # before any work: a foreign evals.json or eval.json is refused, and so is a results lock there that cannot be
    # taken (a planted link); one not there yet is made with the results, not by a command that may still fail
    lock = run.path / results_lock(EVALS.name)
    with results_locked(run.path, EVALS.name) if os.path.lexists(lock) else contextlib.nullcontext():
        EVALS.kept(run.path)
        read_eval_json(run.path)
    result = evaluate_run(
        run, args.split, args.iw_samples, args.time_samples, args.limit, args.seed, args.data_dir, args.data,
        inputs=inputs, orders=args.orders, keep_orders=True, schema=args.schema,
    )  # fmt: skip
    if not distributed.current().is_main:  # under torchrun every rank evaluated its share; rank 0 writes
        return 0
    say(format_report(result))
    count = EVALS.keep(run.path, result, also=lambda: atomic_write_json(run.path / "eval.json", result))  # (one pair)
    say(f"wrote {run.path / 'eval.json'} (this result) and {run.path / 'evals.json'} (results by protocol: {count})")
    return 0
