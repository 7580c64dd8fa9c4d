"""Autoregressive model: a gated PixelCNN factorizes p(x) pixel by pixel, each pixel's 17
levels a categorical given the pixels above and to its left, so log p(x) is exact. Sampling
draws the pixels in order (with a cache of the convolutions)."""

import dgmkit

run = dgmkit.train(
    "runs/families/arm", dataset="digits", model="arm", arm="pixelcnn", likelihood="categorical", channels=16,
    arm_layers=3, epochs=2, seed=0,
)  # fmt: skip
run = dgmkit.load("runs/families/arm")
images, what = dgmkit.sample(run, 8, seed=0)
print(what, tuple(images.shape))
result = dgmkit.evaluate(run, "test")
print(f"test NLL {result.nll:.2f} nats, {result.bpd:.4f} bits/dim ({result.estimate})")
