"""``dgm disentangle`` (MIG and the FactorVAE metric on data with known factors) and ``dgm
traverse`` (a latent-traversal figure): how single code dimensions relate to single factors."""

import argparse
import time

import torch

from dgmkit.cli.argtypes import real
from dgmkit.cli.common import (
    add_count_flag,
    add_output_flags,
    add_run_parser,
    add_seeded_data_flags,
    add_split_flag,
    codes_name,
    decoded_means,
    decoded_name,
    encoded_holes_note,
    figure_split,
    images_only,
    latent_model,
    layers_note,
    own_result_file,
    plural,
    posterior_means,
    run_data,
    say,
    split_data,
    to_display,
    write_own_result,
    write_png,
)
from dgmkit.config import Run, load_run
from dgmkit.data import Dataset
from dgmkit.distributions import location
from dgmkit.errors import ConfigError
from dgmkit.evaluation.disentanglement import ACTIVE_VARIANCE, MIG, factor_vae_score, mutual_information_gap
from dgmkit.evaluation.figures import check_grid, image_grid_png

__all__ = ["add_parsers", "run_disentangle", "run_traverse"]


TRAVERSED_DIMS = 10  # dgm traverse's rows where --dims is not given
MAX_VOTE_IMAGES = 5_000_000  # votes x batch of the FactorVAE metric: 10 million images rendered and encoded, minutes


def _needs_codes(run: Run) -> None:
    if not run.model.has_latents:
        why = {
            "m2": "its z is inferred with the label, q(z|x, y), not from x alone",
            "adgm": "its z is inferred with the label and the auxiliary a, not from x alone",
            "vqvae": "its codes are a grid of codebook indices",
        }.get(run.cfg.family, "it has no latent space")
        raise ConfigError(f"the {run.cfg.family} model has no continuous codes of x to measure ({why})")


def _traverses(run: Run) -> None:
    _needs_codes(run)
    if run.model.discrete_latents:
        raise ConfigError(
            f"the {run.cfg.family} model's latents are discrete: a sweep of a code dimension over its mean +- a few "
            "standard deviations leaves the values they can take (dgm interpolate or dgm sample instead)"
        )
    images_only(run)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_run_parser(sub, "disentangle", help="MIG and the FactorVAE metric of a model's codes on data with known factors")
    add_split_flag(p)
    add_count_flag(p, "--bins", 2, 1000, default=20, help="MIG: equal-width bins per code dimension")
    add_count_flag(
        p,
        "--votes",
        1,
        100_000,
        default=800,
        help="FactorVAE metric: votes to fit, and as many to score (votes x batch <= 5e6)",
    )
    add_count_flag(p, "--batch", 2, 10_000, default=64, help="FactorVAE metric: images per vote")
    add_seeded_data_flags(p)
    p.set_defaults(func=run_disentangle)

    p = add_run_parser(sub, "traverse", help="decode each code dimension swept across its range, the others fixed, to a PNG")
    add_output_flags(p)
    add_split_flag(p)
    add_count_flag(p, "--dims", 1, 4096, help=f"the dimensions of largest spread, at most (default {TRAVERSED_DIMS})")
    add_count_flag(p, "--steps", 2, 50, default=9, help="decoded values per dimension")
    p.add_argument(
        "--range",
        type=real(gt=0, hi=100),
        default=2.5,
        help="the sweep: the mean +- RANGE standard deviations of the dimension's posterior means (codes) over the images",
    )
    add_seeded_data_flags(
        p,
        "which image is traversed, and which 2000 images set the means and spreads (seeded picks; refused where it "
        "picks neither: a code of one dimension over a split of 2000 images or fewer)",
    )
    p.set_defaults(func=run_traverse)


def format_disentanglement(r: dict) -> str:
    lines = [f"{'factor':<12} {'values':>6} {'H (nats)':>9} {'best dim':>8} {'MIG':>7}"]
    for f in r["factors"]:
        varies = f["entropy"] > 0  # (else no dimension tells it anything: its best dimension, 0, is an argmax of zeros)
        gap = f"{f['gap']:>7.3f}" if varies else "      -  (one value in these data: left out of MIG)"
        best = f["best_dim"] if varies else "-"
        lines.append(f"{f['name']:<12} {f['values']:>6} {f['entropy']:>9.3f} {best:>8} {gap}")
    lines.append(f"MIG {r['mig']:.4f}  ({r['mig_estimator']})")
    lines += _binning_bias(r)
    fv = r["factor_vae"]
    if fv is None:
        lines.append("FactorVAE metric: not available (the dataset cannot draw images for chosen factor values)")
    elif fv["active"] == 0:  # (no vote was drawn: the metric's chance level, by its convention)
        k = sum(f["values"] > 1 for f in r["factors"])  # (a factor of one value draws no votes)
        lines.append(
            f"FactorVAE metric {fv['accuracy']:.4f}  (chance, 1/{k}: none of the {r['latent_dim']} code dimensions is "
            f"active, the variance of its {r.get('codes', 'posterior means')} over the {r['split']} split above "
            f"{ACTIVE_VARIANCE}, so no votes were drawn)"
        )
    else:
        drawn = "" if r.get("seed") is None else f" drawn with seed {r['seed']}"  # (an older record: unsaid)
        lines.append(
            f"FactorVAE metric {fv['accuracy']:.4f}  (majority vote, {plural(fv['votes'], 'vote')} of {fv['batch']} "
            f"images to fit and as many to score, rendered for random factor values{drawn}; {fv['active']} active "
            f"dimensions of {r['latent_dim']}; "
            f"fit accuracy {fv['train_accuracy']:.4f})"
        )
    holes = r.get("missing_entries")  # (an older record: unsaid)
    incomplete = (
        f" ({plural(holes, 'missing entry', 'missing entries')} in the split's images, which the encoder sees as 0"
        + ("; the FactorVAE metric's images, drawn whole, have none)" if fv is not None else ")")
        if holes
        else ""
    )
    lines.append(f"data: {r['split']} split, {r['n']} images{incomplete}; codes: {r.get('codes', 'posterior means')}")
    return "\n".join(lines)


BIAS_SHARE = 0.1  # of a factor's entropy: the plug-in MI's upward bias said beyond it


def _binning_bias(r: dict) -> list[str]:
    """A note where the plug-in MI of a code dimension is biased upward by a noticeable share of a
    factor's entropy: about (bins - 1)(values - 1) / 2N nats (Miller-Madow), which grows until each
    bin holds a few images and every dimension seems to tell every factor, the gaps shrinking to 0."""
    bins = r.get("bins")
    if bins is None:  # (an older record: unsaid)
        return []
    worst = max(
        (((bins - 1) * (f["values"] - 1) / (2 * r["n"]), f) for f in r["factors"] if f["entropy"] > 0),
        key=lambda t: t[0] / t[1]["entropy"],
        default=None,
    )
    if worst is None or worst[0] <= BIAS_SHARE * worst[1]["entropy"]:
        return []
    bias, f = worst
    return [
        f"note: {r['n']} images in {bins} bins per dimension: each dimension's plug-in I(z_j; {f['name']}) is biased "
        f"upward by about {bias:.3f} nats (of its entropy {f['entropy']:.3f}), which shrinks the gaps toward 0: fewer "
        "--bins or more images"
    ]


def _factor_vae(run: Run, dataset: Dataset, codes: torch.Tensor, args: argparse.Namespace) -> dict:
    """The FactorVAE metric of the run's codes, on images the dataset renders for chosen factor
    values (seeded by --seed), as disentangle.json records it."""
    g = torch.Generator().manual_seed(args.seed)
    assert dataset.render is not None  # the caller's check

    def encode(images: torch.Tensor) -> torch.Tensor:  # rendered on the CPU, encoded where the model is
        batch = run.transform.held_out(images)
        return posterior_means(run, batch.to(run.device)).cpu()

    s = factor_vae_score(encode, dataset.render, dataset.factor_sizes, codes, args.votes, args.batch, g)
    active = int(s.active.sum())  # (none: the chance level, no vote drawn, no classifier fitted)
    return {
        "accuracy": s.accuracy,
        "train_accuracy": s.train_accuracy if active else None,
        "assignment": s.assignment.tolist(),
        "active": active,
        "votes": s.votes if active else 0,
        "batch": s.batch,
    }


def _factor_rows(mig: MIG, dataset: Dataset) -> list[dict]:
    """Each known factor's MIG numbers, as disentangle.json records them."""
    return [
        {
            "name": name,
            "values": size,
            "entropy": float(mig.entropy[k]),
            "best_dim": int(mig.best[k]),
            "gap": float(mig.gaps[k]),
        }
        for k, (name, size) in enumerate(zip(dataset.factor_names, dataset.factor_sizes))
    ]


@torch.no_grad()
def run_disentangle(args: argparse.Namespace) -> int:
    if args.votes * args.batch > MAX_VOTE_IMAGES:
        raise ConfigError(
            f"--votes {args.votes} x --batch {args.batch} renders {2 * args.votes * args.batch:,} images (votes to fit "
            f"and as many to score); at most {2 * MAX_VOTE_IMAGES:,}: fewer votes or smaller batches"
        )
    run = load_run(args.run_dir, device=args.device)
    _needs_codes(run)
    kept = own_result_file(run.path / "disentangle.json", "mig_estimator", "run dgm disentangle again")
    dataset = run_data(run, args.data_dir, args.data, args.schema)
    if not dataset.factor_names:
        raise ConfigError(
            f"{dataset.name} has no known generative factors; disentanglement needs one that has (e.g. sprites)"
        )
    t0 = time.perf_counter()
    x, _ = split_data(run, args.split, dataset=dataset)
    factors = dataset.split(args.split).factors
    assert factors is not None  # data that name factors hold them in every split
    codes = posterior_means(run, x).cpu()  # the metrics count on the CPU, where the factors are
    if codes.shape[1] < 2:
        raise ConfigError("MIG compares code dimensions: the model needs at least 2")
    mig = mutual_information_gap(codes, factors, bins=args.bins)
    fv = None if dataset.render is None else _factor_vae(run, dataset, codes, args)
    result = {
        "mig": mig.mig,
        "mig_estimator": mig.estimator,
        "bins": args.bins,
        "factors": _factor_rows(mig, dataset),
        "mutual_information": mig.mutual_information.tolist(),
        "factor_vae": fv,
        "latent_dim": codes.shape[1],
        "codes": codes_name(run, x),
        "split": args.split,
        "n": len(x),
        "missing_entries": int(torch.isnan(x).sum()) if x.is_floating_point() else 0,  # (incomplete data: encoded as 0)
        "seed": args.seed,
        "checkpoint": run.checkpoint.name,
        "seconds": time.perf_counter() - t0,
    }
    say(format_disentanglement(result))
    write_own_result(kept, "mig_estimator", "run dgm disentangle again", result)
    say(f"wrote {kept}")
    return 0


SPREAD_ROWS = 2000  # dgm traverse: the most images (drawn at random) whose codes set each dimension's spread


@torch.no_grad()
def run_traverse(args: argparse.Namespace) -> int:
    out, run, x, _ = figure_split(args, _traverses, at_least=2)
    g = torch.Generator().manual_seed(args.seed)
    sample = x[torch.randperm(len(x), generator=g)[: min(len(x), SPREAD_ROWS)].to(x.device)]
    codes = posterior_means(run, sample)  # the spread of each dimension over the data
    read = latent_model(run).decoded_dims  # (a hierarchical VAE's decoder may see z_1 alone)
    one = (codes.shape[1] if read is None else read) == 1  # one dimension decoded: swept whole, no image's code kept
    if one and len(sample) == len(x) and args.seed != 0:  # (the seed would pick nothing shown)
        what = "a code of one dimension is" if codes.shape[1] == 1 else "the one dimension p(x|z) reads is"
        raise ConfigError(
            f"--seed picks the traversed image and the images that set the spreads; {what} swept "
            f"whole (no image's code is kept) and all {len(x)} {args.split} images set its spread: leave out --seed"
        )
    mean, std = codes.mean(0), codes.std(0)
    order = (std if read is None else std[:read]).argsort(descending=True)[: args.dims or TRAVERSED_DIMS]
    base = codes[0]  # the traversed image's code
    t = torch.linspace(-args.range, args.range, args.steps, device=codes.device)
    z = base.repeat(len(order), args.steps, 1)  # (dims, steps, M)
    for row, d in enumerate(order.tolist()):
        z[row, :, d] = mean[d] + t * std[d]
    shape = location(latent_model(run).posterior(sample[:1])).shape[1:]
    check_grid(len(order) * args.steps, tuple(x.shape[1:]), args.steps)  # (before the decoding)
    decoded = decoded_means(run, z.reshape(-1, *shape))
    path = write_png(out, image_grid_png(to_display(decoded, run), nrow=args.steps))
    line = _traversal_words(args, run, order.tolist(), (len(sample), len(x)), one, codes_name(run, sample[:1]))
    say(f"{line}{encoded_holes_note(sample)}, to {path}{_unread_note(read, codes.shape[1])}{layers_note(run)}")
    return 0


def _traversal_words(
    args: argparse.Namespace, run: Run, dims: list[int], rows: tuple[int, int], one: bool, name: str
) -> str:
    """What ``dgm traverse`` drew, in words: the dimensions swept (by the spread of the codes, ``name``, over
    ``rows`` = (the images that set it, the split's)), over what, and where the others are held."""
    taken, total = rows
    spread = "the data" if taken == total else f"a random {taken} of the {total} {args.split} images"
    spread += f", seed {args.seed}" if taken < total and one else ""  # (else said with the code)
    held = (  # (one dimension decoded has no others: no image's code is left in the picture)
        f"the others at one random {args.split} image's code (seed {args.seed}), " if not one else ""
    )
    asked = args.dims is not None and len(dims) < args.dims  # (the default's "at most" unsaid)
    every = f", every one p(x|z) reads: --dims {args.dims} asked for more" if asked else ""
    return (
        f"wrote a traversal of {plural(len(dims), 'code dimension')}{every} (rows, by spread over {spread}: "
        f"{', '.join(str(d) for d in dims)}), each swept over the mean +- {args.range:g} standard deviations of its "
        f"{name} there, in {args.steps} steps, {held}each decoded to the {decoded_name(run)}"
    )


def _unread_note(read: int | None, dims: int) -> str:
    """Where p(x|z) reads only the first ``read`` of a code's ``dims`` dimensions, that it does."""
    if read is None or read == dims:
        return ""
    return f" (p(x|z) reads only the first {read} of the {dims} code dimensions: only they are swept)"
