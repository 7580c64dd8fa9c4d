"""Hierarchical VAE: two stochastic layers z_1 (8-D, next to x) and z_2 (4-D, on top), a
top-down posterior q(z_2|x) q(z_1|z_2, x) and one closed-form KL term per layer in the ELBO.
The script trains it briefly, samples x from the top layer down, and estimates the NLL by
importance sampling over both layers."""

import dgmkit

run = dgmkit.train("runs/families/hvae", dataset="digits", model="hvae", latent_sizes=[8, 4], hidden=[64], epochs=3, seed=0)
run = dgmkit.load("runs/families/hvae")
images, what = dgmkit.sample(run, 8, seed=0)
print(what, tuple(images.shape))
result = dgmkit.evaluate(run, "test", iw_samples=50)
print(
    f"test ELBO {result.elbo:.2f} nats, NLL {result.nll:.2f} nats (k=50), "
    f"{result.active_units} / {result.latent_dim} active units"
)
