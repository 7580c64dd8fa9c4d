"""M2 against the ADGM and the SDGM on the embedded 8x8 digits with 50 labels (5 per class):
test error of q(y|x) on all 300 test digits, over three labelled subsets (--labels-seed 0, 1, 2)
with the weights' seed fixed at 0. A CPU-sized look at what the auxiliary latent does, with the
same networks for all three (one hidden layer of 256 units, 8-D z, 8-D a; 100 epochs, batches of
64 plus 32 labelled rows, alpha = 0.1 N; the ADGM's classifier averages 100 draws of a).

    python benchmarks/semisupervised_digits.py runs/ss-digits   # one thread, about 10 min
"""

import statistics
import sys
import time
from pathlib import Path

import torch
from _common import the_argument

import dgmkit
from dgmkit.errors import DgmError

COMMON = dict(dataset="digits", labels=50, hidden=[256], latent_dim=8, labelled_batch=32, batch_size=64, epochs=100, seed=0)
MODELS = {"m2": dict(model="m2"), "adgm": dict(model="adgm", aux_dim=8), "sdgm": dict(model="adgm", aux_dim=8, skip=True)}


def main(out: str) -> None:
    torch.set_num_threads(1)
    rows = {}
    for name, settings in MODELS.items():
        errors, nlls, seconds = [], [], []
        for labels_seed in (0, 1, 2):
            folder = Path(out) / f"{name}-s{labels_seed}"
            t0 = time.perf_counter()
            taken = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
            try:  # (a run folder of an earlier call there: dgmkit's words, not a traceback)
                run = dgmkit.train(folder, **COMMON, **settings, labels_seed=labels_seed)
            except DgmError as e:  # (another refusal, a training that failed: not the folder's doing)
                sys.exit(f"{e}; give another folder than {out}" if taken else str(e))
            seconds.append(time.perf_counter() - t0)
            result = dgmkit.evaluate(run, "test", iw_samples=200)
            errors.append(100 * (1 - result.accuracy))
            nlls.append(result.nll)
            print(f"{name} labels-seed {labels_seed}: {errors[-1]:.2f}% test error, NLL (k=200) {nlls[-1]:.2f} nats, "
                  f"{seconds[-1]:.0f} s training", flush=True)  # fmt: skip
        rows[name] = (errors, nlls, seconds)
    print("\nmodel | test error, mean +- sd over 3 labelled subsets | NLL (k=200) | training s per run")
    for name, (errors, nlls, seconds) in rows.items():
        print(
            f"{name} | {statistics.mean(errors):.2f}% +- {statistics.stdev(errors):.2f} | "
            f"{statistics.mean(nlls):.2f} +- {statistics.stdev(nlls):.2f} | {statistics.mean(seconds):.0f}"
        )


if __name__ == "__main__":
    main(the_argument(__doc__, "runs/ss-digits"))
