"""The data a run trains on, and the second stage of a VQ-VAE: a prior over its code grids.

    dgm train --model vqvae --dataset binarized-mnist --out runs/vq          # stage 1
    dgm train --model arm --codes-of runs/vq --likelihood categorical --out runs/vq-prior
    dgm eval runs/vq --code-prior runs/vq-prior     # the bound with the learned prior
    dgm sample runs/vq --code-prior runs/vq-prior --out samples.png

``--codes-of RUN`` makes the training data the code grids z_q(x) of RUN's dataset, split as RUN's
data are (each image through RUN's data transform with the fixed held-out seed, then its
nearest codes): images of shape (1, h, w) with K levels, for any model of integer images. The
dataset is named after RUN's run id and a digest of its checkpoint, so the prior stays tied to
those codes: attaching it to another run, or to the same run trained on since, and resuming it
after the VQ-VAE changed, are refused.
"""

import hashlib
from pathlib import Path

import torch

from dgmkit.config.run import Run, load_run
from dgmkit.config.schema import DataConfig
from dgmkit.data import Dataset, Split, load_dataset
from dgmkit.data.missing import remove_completely_at_random
from dgmkit.errors import ConfigError, DataError
from dgmkit.training.trainer import VALID_SEED

__all__ = ["run_dataset", "code_dataset", "attach_code_prior", "check_codes_current"]

_ENCODE_BATCH = 1000


def run_dataset(data: DataConfig, data_dir: str | None = None) -> Dataset:
    """The dataset a run trains on: a named dataset or file, or the code grids of a VQ-VAE run,
    with the entries ``missing_rate`` removes (NaN)."""
    if data.codes_of:
        dataset = code_dataset(data.codes_of, data_dir or data.data_dir)
    else:
        dataset = load_dataset(
            data.dataset,
            data_dir or data.data_dir,
            download=data.download,
            key=data.data_key,
            image_shape=data.image_shape,
            schema=data.schema,
        )
    return remove_completely_at_random(dataset, data.missing_rate, data.missing_seed)


def check_codes_current(dataset: Dataset, record: dict, source: str | Path) -> None:
    """A run trained on a VQ-VAE's codes must see the same codes again: the code dataset's name
    (the VQ-VAE's run id and checkpoint digest) must be the one the run recorded."""
    if dataset.name.startswith("codes:") and dataset.name != record["data"].get("name"):
        raise DataError(
            f"{source} was trained on other codes than the VQ-VAE run now gives (it was trained on since, or "
            "replaced); its numbers would be of different data. Train the prior again with --codes-of"
        )


def _vq_run(path: str | Path) -> Run:
    run = load_run(path)
    if not run.model.produces_codes:
        raise ConfigError(f"{path} is a {run.cfg.family} run; codes come from a VQ-VAE run (--model vqvae)")
    return run


def _name(run: Run) -> str:
    """The code dataset's name: the VQ-VAE run's id and a digest of the checkpoint that made the
    codes, so that a prior is tied to those exact codes (a VQ-VAE trained on afterwards makes others)."""
    digest = hashlib.sha256(run.checkpoint.read_bytes()).hexdigest()[:16]
    return f"codes:{run.record.get('run_id') or run.path.resolve()}:{digest}"


@torch.no_grad()
def code_dataset(vq_dir: str | Path, data_dir: str | None = None) -> Dataset:
    """The code grids (N, 1, h, w) of every split of the VQ-VAE run's dataset, with its labels."""
    vq = _vq_run(vq_dir)
    images = run_dataset(vq.cfg.data, data_dir)
    if list(images.event_shape) != list(vq.record["data"]["event_shape"]):
        raise DataError(f"the data of {vq_dir} now have shape {images.event_shape}, not what the VQ-VAE was trained on")
    k = vq.model.num_codes
    dtype = torch.uint8 if k <= 256 else torch.int32
    splits = {}
    for name in ("train", "valid", "test"):
        s = images.split(name)
        x = vq.transform(s.x, torch.Generator().manual_seed(VALID_SEED))
        codes = torch.cat([vq.model.codes(x[i : i + _ENCODE_BATCH]) for i in range(0, len(x), _ENCODE_BATCH)])
        splits[name] = Split(codes.unsqueeze(1).to(dtype), s.y)
    return Dataset(_name(vq), **splits, num_levels=k)


def attach_code_prior(vq: Run, prior_dir: str | Path) -> Run:
    """Give the VQ-VAE run's model the prior over codes trained in ``prior_dir`` (its p(z) for
    the bound and for sampling); the prior must have been trained on this run's codes."""
    if not vq.model.produces_codes:
        raise ConfigError(f"--code-prior needs a VQ-VAE run; {vq.path} is a {vq.cfg.family} run")
    prior = load_run(prior_dir, device=vq.device)
    if prior.record["data"].get("name") != _name(vq):
        raise ConfigError(
            f"{prior_dir} was not trained on the codes of {vq.path} as it is now (it belongs to another run, or this "
            f"one was trained on since); train one with "
            f"`dgm train --model arm --codes-of {vq.path} --likelihood categorical`"
        )
    want = [1, *vq.model.code_shape]
    if list(prior.record["data"]["event_shape"]) != want or prior.record["data"]["num_levels"] != vq.model.num_codes:
        raise ConfigError(f"{prior_dir} models grids of another shape or alphabet than {vq.path}'s codes")
    if prior.record["data"].get("transform") != "integers":
        raise ConfigError(
            f"{prior_dir} models its codes as {prior.record['data'].get('transform')} data, not as the integers they are; "
            "a code prior needs --likelihood categorical or logistic"
        )
    if prior.model.estimate_kind != "exact" or not prior.model.can_sample:
        raise ConfigError(
            f"{prior_dir} holds a {prior.cfg.family} model: a code prior needs an exact log-likelihood and sampling"
        )
    vq.model.code_prior = prior.model
    return vq
