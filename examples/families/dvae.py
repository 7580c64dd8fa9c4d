"""Discrete VAE: 8 categorical latents of 4 classes each, trained with the Gumbel-softmax
relaxation (the temperature annealed towards its minimum; the other estimators are
objective="reinforce" and objective="vimco") and scored by the true discrete ELBO and an
importance-sampled NLL with discrete samples."""

import dgmkit

run = dgmkit.train(
    "runs/families/dvae", dataset="digits", model="dvae", latent_dim=8, latent_classes=4, objective="gumbel-softmax",
    hidden=[64], epochs=3, seed=0,
)  # fmt: skip
run = dgmkit.load("runs/families/dvae")
images, what = dgmkit.sample(run, 8, seed=0)
print(what, tuple(images.shape))
result = dgmkit.evaluate(run, "test", iw_samples=50)
print(f"test ELBO {result.elbo:.2f} nats, NLL {result.nll:.2f} nats (k=50)")
