"""Where a bits-back file's bits go: one encode of a run's whole test set (in stored order) with the
coder's stack measured around each move, against the model's one-draw ELBO terms.

- first words: the stack's words before the first image (``first_words``);
- each latent layer: the bits its take-back removed and its push under the prior added, summed
  over the images, beside the layer's summed KL term (one posterior draw a datapoint, the KL in
  closed form: ``layer_kls``) in bits;
- batch sizes: their pushes (uniform over 0..batch size);
- pixels: the rest of the stack, beside -log2 p(x|z) of the same ELBO draw.

    python benchmarks/bitsback_costs.py RUN_DIR     # a hierarchical VAE's run (top-down layers)
"""

import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import coded_test_split, machine, run_of, the_argument  # noqa: E402

from dgmkit.coding import bitsback, encode_bits_back  # noqa: E402


def main() -> None:
    folder = the_argument(__doc__)
    run = run_of(folder)
    model = run.model.eval()
    if not getattr(model, "has_layers", False):  # (its layers' bits are what the script counts)
        sys.exit(f"{folder} holds {run.cfg.model.describe()}, not a hierarchical VAE (--model hvae) of latent layers")
    x = coded_test_split(folder, run)[1].test.x.long()  # (a model that cannot code them: said in words)
    layers = model.num_layers
    bits: dict = defaultdict(float)
    calls = {"take": 0, "push": 0, "batches": 0}
    stacks: list = []  # the trial stack that sizes the first words, then the real one

    def real(ans) -> bool:
        return len(stacks) == 2 and ans is stacks[1]

    take, prior_push, init, push = bitsback._Grid.take, bitsback._Grid.prior_push, bitsback._Ans.__init__, bitsback._Ans.push

    def counted_take(grid, ans, f, params):  # layers are taken top first
        before = ans.bits()
        index = take(grid, ans, f, params)
        if real(ans):
            bits[layers - 1 - calls["take"] % layers] += ans.bits() - before
            calls["take"] += 1
        return index

    def counted_push(grid, ans, f, index, b):  # and pushed under their priors bottom first
        before = ans.bits()
        prior_push(grid, ans, f, index, b)
        if real(ans):
            bits[calls["push"] % layers] += ans.bits() - before
            calls["push"] += 1

    def counted_init(ans, words):
        init(ans, words)
        stacks.append(ans)
        ans.first = len(words)

    def counted_size_push(ans, symbols, family, *params):
        before = ans.bits()
        push(ans, symbols, family, *params)
        if real(ans) and np.ndim(symbols) == 0:  # a batch's size: the only scalar pushed
            bits["sizes"] += ans.bits() - before
            calls["batches"] += 1

    bitsback._Grid.take, bitsback._Grid.prior_push = counted_take, counted_push
    bitsback._Ans.__init__, bitsback._Ans.push = counted_init, counted_size_push
    words = encode_bits_back(model, x, batch_size=500)
    bitsback._Grid.take, bitsback._Grid.prior_push, bitsback._Ans.__init__, bitsback._Ans.push = (
        take,
        prior_push,
        init,
        push,
    )
    with torch.no_grad():
        torch.manual_seed(0)
        parts = [model.layer_kls(x[i : i + 500]) for i in range(0, len(x), 500)]
    log2 = math.log(2)
    recon = -torch.cat([p[0] for p in parts]).double().sum().item() / log2
    kls = torch.cat([p[1] for p in parts], 1).double().sum(1) / log2
    first = stacks[1].first
    latents = sum(bits[layer] for layer in range(layers))
    pixels = 32 * len(words) - 32 * first - latents - bits["sizes"]
    print(f"# {run.cfg.model.describe()} ({folder}) on {run.cfg.data.dataset} test: {len(x)} images")
    print(f"# {machine()}; the ELBO terms: one posterior draw a datapoint (seed 0), KL in closed form")
    print(f"stack {32 * len(words)} bits in all, {calls['batches']} batches")
    print(
        f"first words   {32 * first:>10} bits  ({first} words, {32 * first / model.latent_dim:.1f} bits a latent dimension)"
    )
    print(f"batch sizes   {bits['sizes']:>10.0f} bits")
    print(f"pixels        {pixels:>10.0f} bits  (-log2 p(x|z): {recon:.0f})")
    print(f"latents       {latents:>10.0f} bits  (KL: {kls.sum().item():.0f})")
    for layer in range(layers):
        coded, kl = bits[layer], kls[layer].item()
        print(f"  layer {layer + 1:>2} ({model.sizes[layer]} dims) {coded:>8.0f} bits  KL {kl:>8.0f}  ({coded / kl:.2f}x)")


if __name__ == "__main__":
    main()
