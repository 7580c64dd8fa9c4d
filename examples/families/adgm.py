"""The auxiliary deep generative model (Maaløe et al. 2016), semi-supervised as M2 is, with an
auxiliary latent a ~ q(a|x) that the classifier q(y|a,x) and q(z|a,x,y) both read. ``skip=True``
gives the SDGM, where a is a second generative layer. 50 of the 1197 training digits keep their
labels (5 per class)."""

import dgmkit

run = dgmkit.train(
    "runs/families/adgm", dataset="digits", model="adgm", labels=50, hidden=[64, 64], latent_dim=4, aux_dim=4,
    labelled_batch=16, batch_size=64, epochs=3, seed=0,
)  # fmt: skip
run = dgmkit.load("runs/families/adgm")
images, what = dgmkit.sample(run, 8, seed=0)
print(what, tuple(images.shape))
result = dgmkit.evaluate(run, "test", iw_samples=20)
print(f"test accuracy {result.accuracy:.3f} from 50 labels; NLL {result.nll:.2f} nats (k=20)")
