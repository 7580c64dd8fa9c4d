"""Train, save, reload, sample and evaluate a VAE in a few lines; `dgm eval runs/quickstart` reads the folder."""

import dgmkit

run = dgmkit.train("runs/quickstart", dataset="digits", hidden=[256, 128], latent_dim=8, epochs=30, seed=0)
run = dgmkit.load("runs/quickstart")  # the folder `dgm train` would have written: config, checkpoints, metrics
images, what = dgmkit.sample(run, 16, seed=0)
print(what, tuple(images.shape))
x, recon = dgmkit.reconstruct(run, 8, seed=0)  # 8 test images and the means of p(x|z) at E[z|x]
rows = dgmkit.interpolate(run, pairs=2, steps=6, seed=0)  # a row: an image, 6 decoded steps, another image
print(f"reconstructions {tuple(recon.shape)}, mean |x - x_hat| {(x - recon).abs().mean():.3f}; paths {tuple(rows.shape)}")
print(dgmkit.evaluate(run, "test", iw_samples=1000))
