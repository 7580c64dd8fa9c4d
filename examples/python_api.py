"""The Python API in a few lines: compose a VAE from parts, train it, evaluate it honestly (60 epochs
on the 8x8 digits: a minute or two on a 2-core CPU)."""

import torch
from torch import nn

from dgmkit.conditional import BernoulliHead, Decoder, GaussianEncoder
from dgmkit.data import load_dataset, make_transform
from dgmkit.evaluation import evaluate
from dgmkit.models import VAE
from dgmkit.nn import MLP
from dgmkit.objectives import ELBO
from dgmkit.priors import StandardNormalPrior
from dgmkit.training import KLWarmup, Trainer

torch.manual_seed(0)  # the initial weights: the printed numbers below repeat (at the same torch and thread count)

data = load_dataset("digits")  # embedded 8x8 digits, values 0..16
transform = make_transform("bernoulli", data)  # dynamic binarization, fresh every batch
M = 8
encoder = GaussianEncoder(nn.Sequential(nn.Flatten(), MLP(64, [256, 128], 2 * M)), latent_dim=M)  # q(z|x)
decoder = Decoder(MLP(M, [128, 256], 64), BernoulliHead(), event_shape=(1, 8, 8))  # p(x|z)
model = VAE(encoder, decoder, StandardNormalPrior(M))

x = transform(data.train.x[:4], torch.Generator().manual_seed(0))
q = model.posterior(x)  # a torch Distribution: q.rsample(), q.log_prob(z)
print("q(z|x):", q.batch_shape, q.event_shape, "| p(x|z):", model.likelihood(q.rsample()).event_shape)
print("ELBO terms per example:", ELBO(num_samples=1)(model, x).elbo.shape)

trainer = Trainer(
    model,
    ELBO(1),
    data.train,
    transform,
    valid=data.valid,
    epochs=60,
    batch_size=64,
    parts=[KLWarmup(beta=1.0, epochs=10)],  # training-time features are parts (dgmkit.training.parts)
    seed=0,
    progress=False,
)
history = trainer.fit()
print(f"epoch {history[-1]['epoch']}: validation ELBO {history[-1]['valid_elbo']:.2f} nats")

x_test = transform.held_out(data.test.x)  # the fixed binarization of validation and dgm eval
report = evaluate(model, x_test, iw_samples=5000)
print(
    f"test ELBO {report.elbo:.2f} nats, NLL {report.nll:.2f} nats (k=5000), {report.bpd:.4f} bits/dim, "
    f"{report.active_units}/{M} active units"
)
