"""VAE with a learned prior: Gaussian latents z, a Bernoulli decoder p(x|z), and a VampPrior
(Tomczak & Welling 2018), the prior as a mixture of the posteriors of learned pseudo-inputs.
Trained by the ELBO; evaluated with k = 1 (the ELBO) and k = 100 (the IWAE bound, tighter)."""

import dgmkit

run = dgmkit.train(
    "runs/families/vae", dataset="digits", hidden=[64], latent_dim=4, prior="vampprior", prior_components=10,
    epochs=5, seed=0,
)  # fmt: skip
run = dgmkit.load("runs/families/vae")
images, what = dgmkit.sample(run, 8, seed=0)
print(what, tuple(images.shape))
for k in (1, 100):
    result = dgmkit.evaluate(run, "test", iw_samples=k)
    print(f"k = {k:3d}: test NLL <= {result.nll:.2f} nats ({result.bpd:.4f} bits/dim)")
