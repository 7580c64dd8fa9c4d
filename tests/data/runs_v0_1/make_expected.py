"""Write expected.json: reference numbers for the run folders here, computed by dgmkit 0.1.0.

Run it against the OLD code (a checkout of commit d548364), not the working tree:

    git worktree add /tmp/oldrel d548364
    cd /tmp/oldrel && OMP_NUM_THREADS=1 PYTHONPATH=/tmp/oldrel/src \
        /path/to/python /path/to/tests/data/runs_v0_1/make_expected.py

For every run folder: ``run = load_run(dir)`` (best.safetensors), the first 4 test datapoints
transformed as ``dgmkit.cli.common.split_data(run, "test")`` does (fixed held-out noise seed),
and per datapoint, under ``torch.no_grad()`` and ``model.eval()``, in the model's float32:

* exact-likelihood models (flows with uniform dequantization, arms, ppca, loglinear):
  ``run.model.log_prob(x)``;
* latent-variable models (vae, dvae, helmholtz, ae): log p(x|z) at the posterior location,
  ``run.model.likelihood(location(run.model.posterior(x))).log_prob(x)``;
* the variationally dequantized flow: ``run.model.flow.log_prob((x.float() + 0.5) / num_levels)``.

Each entry also holds ``n_params`` (numel summed over the state_dict, buffers included),
``config`` (the old RunConfig dict from config.json) and ``x`` (the 4 inputs used).
"""

import json
import re
from pathlib import Path

import torch

import dgmkit
from dgmkit.cli.common import split_data
from dgmkit.config import load_run
from dgmkit.distributions import location

HERE = Path(__file__).resolve().parent
N = 4


def reference_log_p(run, x: torch.Tensor) -> torch.Tensor:
    cfg, model = run.cfg, run.model
    if cfg.model == "flow" and cfg.dequantization == "variational":
        return model.flow.log_prob((x.float() + 0.5) / model.num_levels)
    if cfg.model in ("flow", "arm", "ppca", "loglinear"):
        return model.log_prob(x)
    return model.likelihood(location(model.posterior(x))).log_prob(x)


def main() -> None:
    assert dgmkit.__version__ == "0.1.0", f"run this against dgmkit 0.1.0, not {dgmkit.__version__} ({dgmkit.__file__})"
    torch.manual_seed(0)
    out = {}
    for d in sorted(p for p in HERE.iterdir() if (p / "config.json").is_file()):
        run = load_run(d)
        model = run.model.eval()
        with torch.no_grad():
            x = split_data(run, "test")[0][:N]
            log_p = reference_log_p(run, x)
        assert log_p.shape == (N,), (d.name, log_p.shape)
        out[d.name] = {
            "log_p": [float(v) for v in log_p.double()],
            "n_params": sum(t.numel() for t in model.state_dict().values()),
            "config": json.loads((d / "config.json").read_text())["config"],
            "x": x.tolist(),
        }
        print(f"{d.name:16s} {out[d.name]['n_params']:6d} params  log_p {[round(v, 4) for v in out[d.name]['log_p']]}")
    text = json.dumps(out, indent=1, sort_keys=True)
    text = re.sub(r"\[[^\[\]{}]*\]", lambda m: re.sub(r"\s+", " ", m.group()).replace("[ ", "[").replace(" ]", "]"), text)
    (HERE / "expected.json").write_text(text + "\n")  # innermost lists on one line each


if __name__ == "__main__":
    main()
