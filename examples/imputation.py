"""Missing data from Python: remove half of a table's entries, train a VAE by the MIWAE bound on
what is left, impute the missing entries of the training rows by importance sampling (the in-sample
protocol of Mattei & Frellsen 2019: the rows the model saw, their missing entries never), and
compare with the column means."""

import torch

from dgmkit.config import RunConfig, build_model, build_objective, trainer_options
from dgmkit.data import load_dataset, remove_completely_at_random
from dgmkit.evaluation.imputation import baseline_impute, impute_batched, rmse
from dgmkit.training import Trainer

torch.manual_seed(0)
complete = load_dataset("breast-cancer")  # scikit-learn's bundled table, standardized: (569, 30)
data = remove_completely_at_random(complete, rate=0.5, seed=0)  # NaN marks a missing entry
cfg = RunConfig.of(
    model="vae", objective="miwae", iw_k=20, latent_dim=10, hidden=[128, 128], likelihood="gaussian",
    gaussian_variance="predicted", epochs=60, batch_size=64, device="cpu",  # where x below is
)  # fmt: skip
model = build_model(cfg, data.event_shape, data.num_levels)
transform = cfg.model.transform(data)
Trainer(model, build_objective(cfg), data.train, transform, valid=data.valid, **trainer_options(cfg)).fit()

x, truth = data.train.x, complete.train.x
missing = torch.isnan(x)
filled, _ = impute_batched(model, x, k=1000, seed=0)  # E[x_m | x_o] by self-normalized importance sampling
means = baseline_impute(x.reshape(len(x), -1).numpy(), "mean")
print(f"RMSE on the {int(missing.sum())} missing entries of the training rows: MIWAE {rmse(filled, truth, missing):.3f}, "
      f"column means {rmse(means, truth.reshape(len(x), -1), missing.reshape(len(x), -1)):.3f}")  # fmt: skip
