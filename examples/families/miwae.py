"""MIWAE (Mattei & Frellsen 2019): a VAE trained on incomplete data. Half the entries of a
30-column table are removed at random (missing_rate); the encoder reads them as 0 and the
K-sample importance-weighted bound scores only the observed entries, log p(x_o). The trained
model then imputes E[x_m | x_o] by self-normalized importance sampling, compared here with
the column means on the test rows (dgm impute does the same from the command line)."""

import torch

import dgmkit
from dgmkit.data import load_dataset, remove_completely_at_random
from dgmkit.evaluation.imputation import baseline_impute, impute_batched, rmse

run = dgmkit.train(
    "runs/families/miwae", dataset="breast-cancer", model="vae", objective="miwae", iw_k=10, missing_rate=0.5,
    likelihood="gaussian", gaussian_variance="predicted", hidden=[64], latent_dim=4, batch_size=64, epochs=20, seed=0,
)  # fmt: skip
run = dgmkit.load("runs/families/miwae")
result = dgmkit.evaluate(run, "test", iw_samples=100)
print(f"test log p(x_o) of the observed entries >= {-result.nll:.2f} nats (importance-sampled, k=100: a stochastic bound)")

complete = load_dataset("breast-cancer")  # the same rows and removal as the run (missing_seed 0)
x = remove_completely_at_random(complete, rate=0.5, seed=0).test.x
truth, missing = complete.test.x, torch.isnan(x)
filled, _ = impute_batched(run.model, x, k=1000, seed=0)
means = baseline_impute(x.reshape(len(x), -1).numpy(), "mean")
print(
    f"RMSE on {int(missing.sum())} missing test entries: MIWAE {rmse(filled, truth, missing):.3f}, "
    f"column means {rmse(means, truth.reshape(len(x), -1), missing.reshape(len(x), -1)):.3f}"
)
