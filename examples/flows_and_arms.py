"""Flows, autoregressive models and compression from Python (docs/python.md shows its output). It
trains three models for 10 to 20 epochs: a few minutes on a 2-core CPU."""

import torch

from dgmkit.coding import decode_images, encode_images
from dgmkit.conditional import CategoricalHead
from dgmkit.data import DataTransform, load_dataset
from dgmkit.evaluation import evaluate
from dgmkit.models import FlowModel
from dgmkit.models.autoregressive import GatedPixelCNN
from dgmkit.objectives import MaximumLikelihood
from dgmkit.training import Trainer
from dgmkit.transforms import Compose, Logit, maf, realnvp_multiscale

torch.manual_seed(0)  # the initial weights: the printed numbers below repeat (at the same torch and thread count)

# A MAF on two moons: bijections compose; the model's log_prob is exact.
moons = load_dataset("two-moons")
flow = FlowModel(maf(2, [64, 64], layers=5), event_shape=(1, 1, 2), flatten=True)
Trainer(
    flow,
    MaximumLikelihood(),
    moons.train,
    DataTransform("continuous", None),
    valid=moons.valid,
    epochs=10,
    batch_size=256,
    seed=0,
    device="cpu",  # where the tensors below are (the default, auto, would take a GPU where there is one)
    progress=False,
).fit()
print(f"MAF, two moons: test log p(x) = {flow.log_prob(moons.test.x).mean().item():.3f} nats")

# A multi-scale RealNVP on the 8x8 digits (17 levels), dequantized: its exact density of one draw of
# the noise bounds the integers' log-likelihood (in expectation), which estimate_label says.
digits = load_dataset("digits")
deq = DataTransform("dequantize", 17)
image_flow = FlowModel(Compose([Logit(0.05), realnvp_multiscale((1, 8, 8), hidden=32, layers=3)]), (1, 8, 8))
Trainer(
    image_flow, MaximumLikelihood(), digits.train, deq, valid=digits.valid, epochs=20, batch_size=64, seed=0,
    device="cpu", progress=False,
).fit()  # fmt: skip
# held_out: the test set dequantized with the fixed noise of validation and dgm eval
report = evaluate(image_flow, deq.held_out(digits.test.x), log_volume=deq.log_volume)
print(
    f"RealNVP, digits: test NLL {report.nll:.2f} nats, {report.bpd:.4f} bits/dim (of the 17-level integers; "
    f"{report.estimate_label})"
)

# A gated PixelCNN with a 17-way categorical head, then lossless compression of the test set.
ints = DataTransform("integers", 17)
arm = GatedPixelCNN(CategoricalHead(17), (1, 8, 8), channels=32, layers=5, input_scale=1 / 16)
Trainer(
    arm, MaximumLikelihood(), digits.train, ints, valid=digits.valid, epochs=20, batch_size=64, seed=0,
    device="cpu", progress=False,
).fit()  # fmt: skip
x = digits.test.x.long()
with torch.no_grad():
    nll_bits = -arm.log_prob(x).sum().item() / torch.log(torch.tensor(2.0)).item()
words = encode_images(arm, x)
assert torch.equal(decode_images(arm, words, len(x)), x)
print(
    f"PixelCNN, digits: NLL {nll_bits / x.numel():.4f} bits/dim, coded at {32 * len(words) / x.numel():.4f} bits/dim,"
    " decoded exactly"
)
