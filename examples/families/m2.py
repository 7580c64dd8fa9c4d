"""M2 (Kingma et al. 2014), semi-supervised: the label y is a latent variable, observed for
50 of the 1197 training digits (5 per class) and summed out for the rest. One model gives a
classifier q(y|x), a density (the unlabelled bound U(x)) and class-conditional samples."""

import dgmkit

run = dgmkit.train(
    "runs/families/m2", dataset="digits", model="m2", labels=50, hidden=[64], latent_dim=4, labelled_batch=16,
    batch_size=64, epochs=3, seed=0,
)  # fmt: skip
run = dgmkit.load("runs/families/m2")
images, what = dgmkit.sample(run, 8, seed=0)
print(what, tuple(images.shape))
result = dgmkit.evaluate(run, "test", iw_samples=20)
print(f"test accuracy {result.accuracy:.3f} from 50 labels; NLL {result.nll:.2f} nats (k=20)")
