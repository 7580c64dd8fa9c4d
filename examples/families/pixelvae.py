"""PixelVAE: a VAE whose decoder is autoregressive, a gated PixelCNN over the pixels whose every
layer sees a map s(z) made from the latent. log p(x|z) is exact in one pass, so the ELBO and the
importance-sampled NLL are computed as for any VAE; samples are drawn pixel by pixel. Two latent
layers (--latent-sizes 8 4) make it Tomczak & Welling's PixelHVAE."""

import dgmkit

run = dgmkit.train(
    "runs/families/pixelvae",
    dataset="digits",
    model="pixelvae",
    latent_sizes=[8],
    hidden=[64],
    pixelcnn_layers=3,
    pixelcnn_channels=16,
    warmup=2,
    epochs=2,
    seed=0,
)
run = dgmkit.load("runs/families/pixelvae")
images, what = dgmkit.sample(run, 8, seed=0)
print(what, tuple(images.shape))
result = dgmkit.evaluate(run, "test", iw_samples=10)
# (after two epochs the PixelCNN may model the digits without the latents: few or no active units,
# posterior collapse, which a longer KL warm-up and free bits counter: docs/families/pixelvae.md)
print(
    f"test ELBO {result.elbo:.2f} nats, NLL {result.nll:.2f} nats (k=10), "
    f"{result.active_units} / {result.latent_dim} active units"
)
