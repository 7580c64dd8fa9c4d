"""Hybrid model (Nalisnick et al. 2019): one Glow flow gives both an exact log p(x) and, with
a linear softmax on its output z, a classifier p(y|x); trained on -(log p(y|x) + lambda/D
log p(x)). Evaluation reports the NLL and the test accuracy of the same model."""

import dgmkit

run = dgmkit.train(
    "runs/families/hybrid", dataset="digits", model="hybrid", flow="glow", hidden=[16], flow_layers=2, epochs=2,
    batch_size=64, seed=0,
)  # fmt: skip
run = dgmkit.load("runs/families/hybrid")
images, what = dgmkit.sample(run, 8, seed=0)
print(what, tuple(images.shape))
result = dgmkit.evaluate(run, "test")
print(f"test accuracy {result.accuracy:.3f}; NLL {result.nll:.2f} nats, {result.bpd:.4f} bits/dim ({result.estimate_label})")
