"""Training throughput of the two-layer HVAE: dgmkit's Trainer against a plain PyTorch loop.

The model is Tomczak & Welling's (2018) two-level HVAE at the reference code's sizes: posterior
q(z2 | x) q(z1 | x, z2), generative model p(z2) p(z1 | z2) p(x | z1, z2), 40 + 40 latents,
gated dense layers (Dauphin et al. 2017) of 300 units, a Bernoulli likelihood, Adam with lr
5e-4, batches of 100 and a linear KL warm-up. The top prior is a standard normal, or with
``--prior vampprior`` a VampPrior with 500 pseudo-inputs.

- dgmkit: the model, objective and Trainer that ``dgm train --model hvae --posterior top-down
  --encoder gated --latent-sizes 40 40 --hidden 300 300`` builds (``build_model``, the family's
  training objective and its warm-up options, the Trainer with a run folder, so each run's
  time includes the epoch's checkpoint, the finiteness checks and the bookkeeping; no
  validation split is given).
- plain: the same networks, ELBO and Adam loop written out here with torch.nn alone: the KL of
  q(z1 | x, z2) from p(z1 | z2) in closed form given the drawn z2, the top layer's KL in
  closed form for the standard normal and as the one-draw estimate log q(z2|x) - log p(z2) for
  the VampPrior (which has none); the data are converted to float once beforehand.

Both train the same number of steps (one Trainer epoch over ``--steps`` x 100 images; the
default 500 steps are one epoch of the 50k static binarized MNIST training images) on the same
images, with fresh weights each run. After a warm-up the contenders alternate (their order
rotates each round) for several rounds, and the median images/s of each is reported with
``ratio: X`` = dgmkit / plain (target >= 0.95). The Trainer uses Adam's fused kernel, so the
plain loop is also timed with ``fused=True`` and ``ratio (same optimizer)`` isolates what the
framework itself costs; dgmkit's model and objective run in that same plain loop as a fourth
contender, which splits the cost into the model's share and the Trainer's.

Checks: both models have the same parameter count; with dgmkit's initial weights copied into the
plain model, both give the same loss on the same batch with the same noise (printed); and for
every run the loss (-ELBO, beta 1, fixed noise) on a fixed batch of 500 training images must be
finite and lower after training than before.

Data: static binarized MNIST from $DGMKIT_DATA or ../shared/data when present, else synthetic
binary images (noisy copies of 10 random patterns; said in the output).

    python benchmarks/hvae_speed.py [--prior standard|vampprior] [--steps 500] [--rounds 5] [--threads N]
    python benchmarks/hvae_speed.py --quick   # a smoke run: 5 steps, 2 rounds
"""

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count, machine  # noqa: E402

from dgmkit.config import RunConfig, build_model, trainer_options  # noqa: E402
from dgmkit.data import Dataset, Split, load_dataset  # noqa: E402
from dgmkit.training import Trainer  # noqa: E402

D, HIDDEN, M1, M2, PSEUDO = 784, 300, 40, 40, 500
BATCH, LR, MIN_SCALE, EVAL_N = 100, 5e-4, 1e-3, 500
LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- the plain model
class Gated(nn.Module):
    """h = (A x + a) * sigmoid(B x + b); A and B are stacked into one linear map."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.lin = nn.Linear(n_in, 2 * n_out)

    def forward(self, x):
        h, g = self.lin(x).chunk(2, dim=-1)
        return h * torch.sigmoid(g)


def gated_mlp(n_in: int, n_out: int) -> nn.Sequential:
    """Two gated layers of HIDDEN units and a linear output."""
    return nn.Sequential(Gated(n_in, HIDDEN), Gated(HIDDEN, HIDDEN), nn.Linear(HIDDEN, n_out))


class TwoInputs(nn.Module):
    """One gated layer per input, a gated layer over both, a linear output: q(z1 | x, z2)
    and p(x | z1, z2) of the reference HVAE."""

    def __init__(self, n_a: int, n_b: int, n_out: int):
        super().__init__()
        self.a, self.b = Gated(n_a, HIDDEN), Gated(n_b, HIDDEN)
        self.joint = Gated(2 * HIDDEN, HIDDEN)
        self.out = nn.Linear(HIDDEN, n_out)

    def forward(self, a, b):
        return self.out(self.joint(torch.cat([self.a(a), self.b(b)], dim=-1)))


def gaussian(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, raw = h.chunk(2, dim=-1)
    return mu, F.softplus(raw) + MIN_SCALE


class PlainHVAE(nn.Module):
    def __init__(self, prior: str):
        super().__init__()
        self.q_z2 = gated_mlp(D, 2 * M2)  # q(z2 | x)
        self.q_z1 = TwoInputs(D, M2, 2 * M1)  # q(z1 | x, z2)
        self.p_z1 = gated_mlp(M2, 2 * M1)  # p(z1 | z2)
        self.p_x = TwoInputs(M1, M2, D)  # p(x | z1, z2): Bernoulli logits
        self.vamp = prior == "vampprior"
        if self.vamp:  # pseudo-inputs, clipped to [0, 1] when used
            self.u = nn.Parameter(0.05 + 0.01 * torch.randn(PSEUDO, D))

    def top_kl(self, mu: torch.Tensor, s: torch.Tensor, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """KL(q(z2 | x) || p(z2)): closed form for N(0, I); the one-draw estimate for the VampPrior."""
        if not self.vamp:
            return (0.5 * (s * s + mu * mu) - torch.log(s) - 0.5).sum(-1)
        log_q = (-0.5 * eps * eps - torch.log(s)).sum(-1) - 0.5 * M2 * LOG_2PI
        mu_k, s_k = gaussian(self.q_z2(F.hardtanh(self.u, 0.0, 1.0)))  # (K, M2): the components
        prec = 1.0 / (s_k * s_k)
        quad = (z * z) @ prec.T - 2 * z @ (mu_k * prec).T + (mu_k * mu_k * prec).sum(-1)  # (B, K)
        log_comp = -torch.log(s_k).sum(-1) - 0.5 * M2 * LOG_2PI - 0.5 * quad
        log_p = torch.logsumexp(log_comp, dim=-1) - math.log(PSEUDO)
        return log_q - log_p

    def loss(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        """-(log p(x | z1, z2) - beta (KL_1 + KL_2)), batch mean, for one posterior draw."""
        mu2, s2 = gaussian(self.q_z2(x))
        eps2 = torch.randn_like(mu2)
        z2 = mu2 + s2 * eps2
        mu1, s1 = gaussian(self.q_z1(x, z2))
        z1 = mu1 + s1 * torch.randn_like(mu1)
        pm1, ps1 = gaussian(self.p_z1(z2))
        logits = self.p_x(z1, z2)
        log_px = (x * logits).sum(-1) - F.softplus(logits).sum(-1)
        kl1 = (torch.log(ps1 / s1) + (s1 * s1 + (mu1 - pm1) ** 2) / (2 * ps1 * ps1) - 0.5).sum(-1)
        kl = kl1 + self.top_kl(mu2, s2, z2, eps2)
        return -(log_px - beta * kl).mean()


# ----------------------------------------------------------------------------- data
def find_data() -> str | None:
    """$DGMKIT_DATA if set, else ../shared/data beside the repository, if it holds binarized_mnist."""
    env = os.environ.get("DGMKIT_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(root) if (root / "binarized_mnist").is_dir() else None


def synthetic(n: int) -> Dataset:
    """Binary 28x28 images: each a copy of one of 10 random patterns with 5% of pixels flipped."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.rand(10, 1, 28, 28, generator=g) < 0.3
    which = torch.randint(0, 10, (n,), generator=g)
    flips = torch.rand(n, 1, 28, 28, generator=g) < 0.05
    x = (patterns[which] ^ flips).to(torch.uint8)
    return Dataset("synthetic-binary", Split(x), Split(x[:100]), Split(x[:100]), 2)


def load(quick: bool, force_synthetic: bool = False) -> tuple[Dataset, str]:
    root = None if force_synthetic else find_data()
    if root is not None:
        ds = load_dataset("binarized-mnist", root, download=False)
        return ds, f"static binarized MNIST ({len(ds.train)} training images, {root})"
    ds = synthetic(1000 if quick else 50000)
    why = "--synthetic" if force_synthetic else "no binarized_mnist in $DGMKIT_DATA or ../shared/data"
    return ds, f"SYNTHETIC binary images ({len(ds.train)} training images; {why})"


# ----------------------------------------------------------------------------- the contenders
def reference_config(prior: str, warmup: float, seed: int) -> RunConfig:
    return RunConfig.of(
        model="hvae",
        dataset="binarized-mnist",
        likelihood="bernoulli",
        posterior="top-down",
        encoder="gated",
        latent_sizes=[M1, M2],
        hidden=[HIDDEN, HIDDEN],
        decoder_input="all",
        prior=prior,
        prior_components=PSEUDO,
        pseudo_init="random",
        lr=LR,
        batch_size=BATCH,
        warmup=warmup,
        epochs=1,
        seed=seed,
        device="cpu",
    )


@torch.no_grad()
def fixed_noise_loss(fn, x: torch.Tensor) -> float:
    """fn(x) (a loss) with the same posterior noise every time."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        return float(fn(x))


def dgmkit_parts(dataset: Dataset, train: Split, args, seed: int):
    """The config, model, objective and data transform that `dgm train` builds, and a function
    that gives the loss (-ELBO, beta 1, fixed noise) on a fixed batch of training images."""
    cfg = reference_config(args.prior, args.warmup, seed)
    transform = cfg.model.transform(dataset, cfg.data.binarize)
    model = build_model(cfg, dataset.event_shape, dataset.num_levels)
    objective = cfg.model.training_objective()
    x_eval = transform(train.x[:EVAL_N])

    def eval_loss() -> float:
        model.eval()
        return fixed_noise_loss(lambda x: objective(model, x, 1.0).loss.mean(), x_eval)

    return cfg, model, objective, transform, eval_loss


def run_dgmkit(dataset: Dataset, train: Split, steps: int, args, seed: int) -> tuple[float, float, float]:
    """One Trainer epoch of ``steps`` steps. Returns (images/s, loss before, loss after)."""
    cfg, model, objective, transform, eval_loss = dgmkit_parts(dataset, train, args, seed)
    before = eval_loss()
    with tempfile.TemporaryDirectory() as run_dir:
        # the Trainer as `dgm train` builds it, every setting from the config (epochs = 1)
        trainer = Trainer(
            model,
            objective,
            Split(train.x[: steps * BATCH]),
            transform,
            run_dir=run_dir,
            progress=False,
            **trainer_options(cfg),
        )
        assert trainer.steps_per_epoch == steps
        t0 = time.perf_counter()
        trainer.fit()
        rate = steps * BATCH / (time.perf_counter() - t0)
    return rate, before, eval_loss()


def run_model_loop(dataset: Dataset, train: Split, steps: int, args, seed: int) -> tuple[float, float, float]:
    """dgmkit's model and objective in the plain loop below (no Trainer): with ``plain+fused
    Adam`` it separates what the model costs from what the Trainer costs."""
    _, model, objective, transform, eval_loss = dgmkit_parts(dataset, train, args, seed)
    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    n = steps * BATCH
    data = transform(train.x[:n])  # converted once, as the plain loop's data
    ramp = args.warmup * steps
    model.train()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    perm = torch.randperm(n)
    for i in range(steps):
        beta = min(1.0, (i + 1) / ramp) if ramp > 0 else 1.0
        step_loss = objective(model, data[perm[i * BATCH : (i + 1) * BATCH]], beta).loss.mean()
        opt.zero_grad(set_to_none=True)
        step_loss.backward()
        opt.step()
    rate = n / (time.perf_counter() - t0)
    return rate, before, eval_loss()


def run_plain(x: torch.Tensor, steps: int, args, seed: int, fused: bool) -> tuple[float, float, float]:
    """The plain loop over the first ``steps`` x BATCH images of x (float, flattened)."""
    torch.manual_seed(seed)
    model = PlainHVAE(args.prior)
    opt = torch.optim.Adam(model.parameters(), lr=LR, **({"fused": True} if fused else {}))
    n = steps * BATCH
    data = x[:n]
    ramp = args.warmup * steps  # the warm-up's length in steps, an epoch being `steps` steps as for the Trainer
    before = fixed_noise_loss(lambda b: model.loss(b, 1.0), x[:EVAL_N])
    t0 = time.perf_counter()
    perm = torch.randperm(n)
    for i in range(steps):
        beta = min(1.0, (i + 1) / ramp) if ramp > 0 else 1.0
        loss = model.loss(data[perm[i * BATCH : (i + 1) * BATCH]], beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    rate = n / (time.perf_counter() - t0)
    return rate, before, fixed_noise_loss(lambda b: model.loss(b, 1.0), x[:EVAL_N])


# dgmkit's parameter names -> the plain model's (prefixes; GatedDense's ``linear`` is ``lin`` here)
NAMES = {
    "q_nets.1.": "q_z2.",
    "q_nets.0.branches.0.": "q_z1.a.",
    "q_nets.0.branches.1.": "q_z1.b.",
    "q_nets.0.": "q_z1.",
    "layer_priors.0.net.": "p_z1.",
    "decoder.net.branches.0.": "p_x.a.",
    "decoder.net.branches.1.": "p_x.b.",
    "decoder.net.": "p_x.",
    "top_prior.pseudo_inputs": "u",
}


@torch.no_grad()
def same_function_check(dataset: Dataset, x: torch.Tensor, prior: str, beta: float = 0.3) -> tuple[float, float]:
    """The plain model with dgmkit's initial weights copied in, on the same batch with the same
    posterior noise: both losses must agree, so both loops train the same model and objective."""
    cfg = reference_config(prior, 0.0, 0)
    ours = build_model(cfg, dataset.event_shape, dataset.num_levels)
    plain = PlainHVAE(prior)
    own = dict(plain.named_parameters())
    for name, p in ours.named_parameters():
        prefix = next(k for k in NAMES if name.startswith(k))
        target = own.pop((NAMES[prefix] + name[len(prefix) :]).replace(".linear.", ".lin."))
        target.copy_(p.reshape(target.shape))
    assert not own, f"plain parameters without a dgmkit counterpart: {sorted(own)}"
    objective = cfg.model.training_objective()
    x = x[:EVAL_N]
    a = fixed_noise_loss(lambda b: objective(ours, b.reshape(-1, *dataset.event_shape), beta).loss.mean(), x)
    b = fixed_noise_loss(lambda b: plain.loss(b, beta), x)
    if not abs(a - b) <= 1e-4 * abs(a):
        raise SystemExit(f"with the same weights and noise the losses differ: dgmkit {a:.5f}, plain {b:.5f}")
    return a, b


def check_learning(name: str, before: float, after: float) -> None:
    if not (math.isfinite(before) and math.isfinite(after)):
        raise SystemExit(f"{name}: the loss is not finite ({before} before training, {after} after)")
    if not after < before:
        raise SystemExit(f"{name}: the loss did not decrease ({before:.3f} before training, {after:.3f} after)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", choices=["standard", "vampprior"], default="standard", help="the top prior p(z2)")
    ap.add_argument("--steps", type=count, default=500, help="training steps (of batch 100) per timed run")
    ap.add_argument("--rounds", type=count, default=5, help="timed rounds; each runs every contender once")
    ap.add_argument("--warmup", type=float, default=100.0, help="KL warm-up length in epochs (the paper: 100)")
    ap.add_argument("--threads", type=count, default=None, help="torch threads for both (default: torch's)")
    ap.add_argument("--no-fused", action="store_true", help="skip the plain loop with fused Adam")
    ap.add_argument("--synthetic", action="store_true", help="synthetic binary images even where the real data are")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 5 steps, 2 rounds (its ratio means nothing)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.rounds = 5, 2
    if args.steps < 1 or args.rounds < 1:
        ap.error("--steps and --rounds must be >= 1")
    if not args.warmup >= 0:  # (dgmkit's config refuses it too, in a traceback)
        ap.error(f"--warmup must be >= 0 epochs, got {args.warmup}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    dataset, what = load(args.quick, args.synthetic)
    n = args.steps * BATCH
    idx = torch.arange(max(n, EVAL_N)) % len(dataset.train)  # the same images for both (cycled if too few)
    train = Split(dataset.train.x[idx])
    x_plain = train.x.float().flatten(1)  # the plain loop converts its data once

    ours = build_model(reference_config(args.prior, args.warmup, 0), dataset.event_shape, dataset.num_levels)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_plain = sum(p.numel() for p in PlainHVAE(args.prior).parameters())
    assert n_ours == n_plain, f"parameter counts differ: dgmkit {n_ours}, plain {n_plain}"
    print(f"# HVAE 784-gated{HIDDEN}x2, latents {M1}+{M2}, {args.prior} top prior: {n_ours} parameters in both")
    print(f"# machine: {machine()}")
    print(f"# data: {what}")
    print(
        f"# {args.steps} steps of batch {BATCH} per run, {args.rounds} rounds, Adam lr {LR:g}, "
        f"KL warm-up over {args.warmup:g} epochs of {args.steps} steps"
    )

    contenders = {
        "plain": lambda seed, steps: run_plain(x_plain, steps, args, seed, fused=False),
        "dgmkit": lambda seed, steps: run_dgmkit(dataset, train, steps, args, seed),
    }
    if not args.no_fused:
        contenders["plain+fused Adam"] = lambda seed, steps: run_plain(x_plain, steps, args, seed, fused=True)
        contenders["dgmkit model, plain loop"] = lambda seed, steps: run_model_loop(dataset, train, steps, args, seed)
    names = list(contenders)

    a, b = same_function_check(dataset, x_plain, args.prior)
    print(f"# same weights, batch and noise (beta 0.3): loss dgmkit {a:.4f}, plain {b:.4f}")
    print("warm-up ...", flush=True)
    for name in names:
        _, before, after = contenders[name](0, max(2, min(20, args.steps)))
        check_learning(f"{name} (warm-up)", before, after)

    rates: dict[str, list[float]] = {k: [] for k in names}
    losses: dict[str, tuple[float, float]] = {}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate, so that no contender always goes first
        for name in order:
            rate, before, after = contenders[name](r + 1, args.steps)
            check_learning(f"{name} (round {r + 1})", before, after)
            rates[name].append(rate)
            losses[name] = (before, after)
        print(f"round {r + 1}: " + "   ".join(f"{k} {rates[k][-1]:7.0f}" for k in names) + " images/s", flush=True)

    med = {k: statistics.median(v) for k, v in rates.items()}
    print("loss on a fixed batch (-ELBO, beta 1, fixed noise), last round, before -> after training:")
    for k in names:
        print(f"  {k:25s} {losses[k][0]:9.3f} -> {losses[k][1]:9.3f}")
    print(f"plain PyTorch loop:            {med['plain']:.0f} images/s (median of {args.rounds})")
    if "plain+fused Adam" in med:
        print(f"plain loop with fused Adam:    {med['plain+fused Adam']:.0f} images/s")
    print(f"dgmkit Trainer (fused Adam):   {med['dgmkit']:.0f} images/s")
    if "plain+fused Adam" in med:
        print(f"dgmkit model in the plain loop (fused Adam): {med['dgmkit model, plain loop']:.0f} images/s")
        print(f"ratio (same optimizer): {med['dgmkit'] / med['plain+fused Adam']:.3f}")
        print(
            f"  of which the model: {med['dgmkit model, plain loop'] / med['plain+fused Adam']:.3f}, "
            f"the Trainer: {med['dgmkit'] / med['dgmkit model, plain loop']:.3f}"
        )
    print(f"ratio: {med['dgmkit'] / med['plain']:.3f}   (target >= 0.95)")
    if args.steps < 100:
        print(f"(only {args.steps} steps per run: the Trainer's per-run checkpoint dominates, so the ratio means nothing)")


if __name__ == "__main__":
    main()
