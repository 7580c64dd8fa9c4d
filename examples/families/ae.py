"""Deterministic autoencoder: z = f(x), trained by the reconstruction log-likelihood
log p(x | z = f(x)). It defines no density over x and has no prior, so there is no NLL to
report and nothing to sample; the script shows the reconstruction score and the refusal."""

import dgmkit
from dgmkit.errors import ConfigError

run = dgmkit.train("runs/families/ae", dataset="digits", model="ae", latent_dim=8, hidden=[64], epochs=3, seed=0)
run = dgmkit.load("runs/families/ae")
try:
    dgmkit.sample(run, 8)
except ConfigError as e:
    print("sample:", e)
result = dgmkit.evaluate(run, "test")
print(f"test reconstruction log p(x|f(x)) {result.recon:.2f} nats, {result.active_units} active units")
