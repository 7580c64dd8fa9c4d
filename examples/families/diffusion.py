"""Diffusion model: masked (absorbing-state) diffusion on the 17-level digits. Pixels are
masked as time runs forward; a small U-Net learns to predict the masked pixels, and its
bound on -log p(x) is evaluated at sampled times (more times make the estimate less noisy,
not tighter). Samples unmask the pixels in a few ancestral steps. One epoch only: a demo,
not a model."""

import dgmkit

run = dgmkit.train(
    "runs/families/diffusion", dataset="digits", model="diffusion", process="masked", unet_channels=[16, 32],
    unet_blocks=1, epochs=1, seed=0,
)  # fmt: skip
run = dgmkit.load("runs/families/diffusion")
images, what = dgmkit.sample(run, 8, seed=0, steps=16)
print(what, tuple(images.shape))
result = dgmkit.evaluate(run, "test", time_samples=2)
print(f"test NLL <= {result.nll:.2f} +- {result.nll_stderr:.2f} nats, {result.bpd:.4f} bits/dim ({result.estimate})")
