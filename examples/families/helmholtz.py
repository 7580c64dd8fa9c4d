"""Helmholtz machine: a sigmoid belief network of binary layers (32 then 16 units) with a
recognition network, trained by reweighted wake-sleep (RWS, K = 5 importance samples; the
other choices are objective="wake-sleep" and objective="vimco"). Scored by the ELBO and an
importance-sampled NLL."""

import dgmkit

run = dgmkit.train(
    "runs/families/helmholtz", dataset="digits", model="helmholtz", layers=[32, 16], objective="rws", iw_k=5,
    lr=3e-3, epochs=3, seed=0,
)  # fmt: skip
run = dgmkit.load("runs/families/helmholtz")
images, what = dgmkit.sample(run, 8, seed=0)
print(what, tuple(images.shape))
result = dgmkit.evaluate(run, "test", iw_samples=50)
print(f"test ELBO {result.elbo:.2f} nats, NLL {result.nll:.2f} nats (k=50)")
