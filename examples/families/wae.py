"""Wasserstein autoencoder (WAE-MMD): a deterministic encoder whose codes are pushed towards
p(z) by an MMD penalty. It has no density over x, but samples through its decoder from p(z);
evaluation reports the reconstruction and the codes' MMD to the prior."""

import dgmkit

run = dgmkit.train(
    "runs/families/wae", dataset="digits", model="wae", latent_dim=4, hidden=[64], mmd_weight=10.0, epochs=3, seed=0
)
run = dgmkit.load("runs/families/wae")
images, what = dgmkit.sample(run, 8, seed=0)
print(what, tuple(images.shape))
result = dgmkit.evaluate(run, "test")
print(result)
