"""The spread of a masked diffusion's bound estimate for single images: the per-time form
(training's) against the count form (dgm eval's, continuous time), over repeats.

    dgm train --model diffusion --process masked --diffusion-steps 0 --dataset digits \\
        --unet-channels 16 32 --no-attention --epochs 8 --out runs/masked-digits
    python benchmarks/masked_estimator_variance.py runs/masked-digits

Images: 5 test images drawn at random with seed 0; 64 repeats of k stratified times each.
"""

import torch
from _common import masked_diffusion_run, the_argument

from dgmkit.cli.common import split_data


def main(run_dir: str) -> None:
    run = masked_diffusion_run(run_dir)  # (another run: said in words, not an AttributeError)
    model = run.model.eval()
    x, _ = split_data(run, "test")
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:5]]
    torch.manual_seed(0)
    reps = 64
    with torch.no_grad():
        for i in range(len(x)):
            for k in (4, 64):
                xb = x[i : i + 1].expand(reps * k, *x.shape[1:])
                u = torch.remainder(torch.rand(reps).repeat_interleave(k) + torch.arange(k).repeat(reps) / k, 1.0)
                counts = model.bound_terms(xb, u)["diffusion"].double().view(reps, k).mean(1)
                times = model.bound_terms(xb, u, train=True)["diffusion"].double().view(reps, k).mean(1)
                print(
                    f"image {i} k={k:2d}: count form sd {counts.std():.2f} nats (mean {counts.mean():.2f}) | "
                    f"per-time form sd {times.std():.2f} (mean {times.mean():.2f})"
                )


if __name__ == "__main__":
    main(the_argument(__doc__, "runs/masked-digits"))
