"""VQ-VAE, two stages: an encoder maps each image to a grid of codebook indices (here 2x2
codes of a 32-entry codebook: downsample=2 halves the 8x8 digits twice) and a decoder
reconstructs it; then a PixelCNN is trained on those code grids (codes_of) as the VQ-VAE's
prior p(z). The bound log p(x|z_q) + log p(z_q) is loose under a uniform code prior and
tighter under the learned one."""

import dgmkit

vq = dgmkit.train(
    "runs/families/vqvae", dataset="digits", model="vqvae", codes=32, code_dim=8, vq_width=16, downsample=2, res_blocks=1,
    epochs=3, seed=0,
)  # fmt: skip
uniform = dgmkit.evaluate(vq, "test")
print(f"uniform code prior: test NLL <= {uniform.nll:.2f} nats (reconstruction {uniform.recon:.2f} nats)")

dgmkit.train(
    "runs/families/vqvae-prior", codes_of="runs/families/vqvae", model="arm", arm="pixelcnn", likelihood="categorical",
    channels=16, arm_layers=3, epochs=3, seed=0,
)  # fmt: skip
vq = dgmkit.load("runs/families/vqvae")
learned = dgmkit.evaluate(vq, "test", code_prior="runs/families/vqvae-prior")
print(f"PixelCNN code prior: test NLL <= {learned.nll:.2f} nats")
images, what = dgmkit.sample(vq, 8, seed=0, code_prior="runs/families/vqvae-prior")
print(what, tuple(images.shape))
