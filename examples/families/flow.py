"""Normalizing flows: an invertible map to a Gaussian gives an exact log p(x). A RealNVP
(affine couplings) learns the 2-D two-moons density, and a multi-scale RealNVP the uniformly
dequantized 8x8 digits, whose NLL is then of the integer pixels (bits/dim included)."""

import dgmkit

moons = dgmkit.train(
    "runs/families/flow-moons", dataset="two-moons", model="flow", flow="realnvp", hidden=[32, 32], flow_layers=4,
    batch_size=500, epochs=3, seed=0,
)  # fmt: skip
points, what = dgmkit.sample(moons, 500, seed=0)
print(what, tuple(points.shape))
print(f"two moons: test NLL {dgmkit.evaluate(moons, 'test').nll:.3f} nats per point (exact)")

digits = dgmkit.train(
    "runs/families/flow-digits", dataset="digits", model="flow", flow="realnvp", hidden=[16], flow_layers=2, epochs=2,
    seed=0,
)  # fmt: skip
digits = dgmkit.load("runs/families/flow-digits")
images, what = dgmkit.sample(digits, 8, seed=0, temperature=0.8)
print(what, tuple(images.shape))
result = dgmkit.evaluate(digits, "test")
print(f"digits: test NLL {result.nll:.2f} nats, {result.bpd:.4f} bits/dim ({result.estimate_label})")
