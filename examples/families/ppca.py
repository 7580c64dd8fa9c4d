"""Probabilistic PCA: x = W z + mu + noise with a Gaussian z, fitted by maximum likelihood in
closed form (no gradient steps, so no optimisation settings), on the dequantized digits. Its
log-likelihood of the dequantized values is exact; the NLL printed is of the integer pixels, by one
draw of the dequantization noise: a bound (the label printed says so)."""

import dgmkit

run = dgmkit.train("runs/families/ppca", dataset="digits", model="ppca", latent_dim=8)
run = dgmkit.load("runs/families/ppca")
images, what = dgmkit.sample(run, 8, seed=0)
print(what, tuple(images.shape))
result = dgmkit.evaluate(run, "test")
print(f"test NLL {result.nll:.2f} nats ({result.estimate_label}), {result.bpd:.4f} bits/dim")
