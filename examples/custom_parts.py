"""Your own parts in a dgmkit model: a prior and a likelihood head written here, trained and
evaluated like the built-in ones, then saved and loaded back."""

import tempfile

import torch
from torch import nn
from torch.distributions import Independent, Laplace, Normal

from dgmkit.conditional import Decoder, GaussianEncoder, LikelihoodHead
from dgmkit.data import load_dataset, make_transform
from dgmkit.evaluation import evaluate
from dgmkit.models import VAE
from dgmkit.nn import MLP
from dgmkit.objectives import ELBO
from dgmkit.priors import Prior
from dgmkit.training import Trainer, load_checkpoint


class LearnedGaussianPrior(Prior):
    """p(z) = N(mu, diag(sigma^2)) with mu and log sigma learned."""

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)  # a prior says its latent dimensions
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, context=None):
        # Independent(..., 1): the event is the whole latent vector, so log_prob gives one value per z
        return Independent(Normal(self.loc, self.log_scale.exp()), 1)


class LaplaceHead(LikelihoodHead):
    """p(x|z) = prod Laplace(x_d; mu_d, b_d) for data dequantized to [0, 1]: 2 numbers a pixel."""

    params_per_pixel = 2
    discrete = False  # a density (of dequantized data), not probabilities of integers

    def forward(self, params):  # (*batch, C, P, H, W)
        loc, raw = params.unbind(-3)
        return Independent(Laplace(loc, nn.functional.softplus(raw) + 1e-3), 3)  # event (C, H, W)


torch.manual_seed(0)
data = load_dataset("digits")  # embedded 8x8 digits, values 0..16
transform = make_transform("gaussian", data)  # a density likelihood: uniform dequantization to [0, 1]
M = 8
encoder = GaussianEncoder(nn.Sequential(nn.Flatten(), MLP(64, [128], 2 * M)), latent_dim=M)
decoder = Decoder(MLP(M, [128], 64 * LaplaceHead.params_per_pixel), LaplaceHead(), event_shape=(1, 8, 8))
model = VAE(encoder, decoder, LearnedGaussianPrior(M))

with tempfile.TemporaryDirectory() as run_dir:
    # device="cpu": where the copy loaded below is evaluated (auto would train on a GPU where there is one, and
    # the copy on the CPU would draw other samples: another number)
    trainer = Trainer(model, ELBO(1), data.train, transform, valid=data.valid, epochs=30, batch_size=64, seed=0,
                      run_dir=run_dir, device="cpu", progress=False)  # fmt: skip
    history = trainer.fit()
    print(f"epoch {history[-1]['epoch']}: validation ELBO {history[-1]['valid_elbo']:.2f} nats (of the dequantized data)")

    x_test = transform.held_out(data.test.x)  # the fixed noise of validation and dgm eval
    # log_volume: the numbers become nats of the integers 0..16, as dgm eval reports them
    report = evaluate(model, x_test, iw_samples=500, log_volume=transform.log_volume)
    # (two sampled estimates: -ELBO >= NLL holds in expectation)
    print(f"test -ELBO {-report.elbo:.2f}, NLL {report.nll:.2f} nats ({report.estimate_label})")

    # The weights of a model composed by hand: back into the same parts (here, a fresh copy).
    torch.manual_seed(1)
    again = VAE(
        GaussianEncoder(nn.Sequential(nn.Flatten(), MLP(64, [128], 2 * M)), latent_dim=M),
        Decoder(MLP(M, [128], 64 * LaplaceHead.params_per_pixel), LaplaceHead(), event_shape=(1, 8, 8)),
        LearnedGaussianPrior(M),
    )
    # checkpoint.safetensors: the last epoch's weights (best.safetensors: the best validation epoch's)
    again.load_state_dict(load_checkpoint(f"{run_dir}/checkpoint.safetensors")["model"])
    same = evaluate(again, x_test, iw_samples=500, log_volume=transform.log_volume)
    print(f"loaded back: NLL {same.nll:.2f} nats (the same weights and seed: the same number)")
    print(f"learned prior: mean |mu| {model.prior_module.loc.abs().mean():.3f}, "
          f"mean sigma {model.prior_module.log_scale.exp().mean():.3f}")  # fmt: skip
