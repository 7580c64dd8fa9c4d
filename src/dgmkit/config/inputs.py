"""Runs that use other runs, declared by their families and pinned here.

Two ways a run uses another, each declared by a family (``FamilyConfig``):

- **data made by another run**: a family whose runs make data for others names it
  (``derived_data``, e.g. a VQ-VAE's ``"codes"``: the code grids of its data; a VAE's
  ``"latents"``: the posterior means of its data) and makes it (``make_derived_data``). A run
  trains on it with ``codes_of = RUN`` (``--codes-of RUN``), for any family that models such
  data (integer codes as integers; continuous latents with a density). The dataset is named
  after the source run's id and a digest of its checkpoint, so the run stays tied to those
  exact data (pinned by that name, not by the content of floats that may differ in their last
  bits elsewhere): using it after the source run was trained on, or replaced, is refused.
- **a model attached from another run when a run is used**: a family names the roles its runs
  take (``inputs``, e.g. a VQ-VAE's ``"code-prior"``: a model of its code grids, the prior of
  its bound and of sampling) and attaches them (``attach``), told whether the other run was
  trained on this run's derived data as they are now. The command line names any of them one
  way, ``--input ROLE=RUN`` (``dgm eval``, ``dgm sample``).

    dgm train --model vqvae --dataset binarized-mnist --out runs/vq          # stage 1
    dgm train --model arm --codes-of runs/vq --likelihood categorical --out runs/vq-prior
    dgm eval runs/vq --input code-prior=runs/vq-prior     # the bound with the learned prior
    dgm sample runs/vq --input code-prior=runs/vq-prior --out samples.png

    dgm train --dataset mnist --latent-dim 50 --out runs/m1                   # M1+M2 (Kingma et al. 2014)
    dgm train --model m2 --codes-of runs/m1 --likelihood gaussian --labels 100 --out runs/m1m2
    dgm eval runs/m1m2                                    # q(y|x)'s test accuracy on M1's test latents

(``--code-prior RUN`` is the same as ``--input code-prior=RUN``.)
"""

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import torch

from dgmkit._io import full_path
from dgmkit.config.run import Run, holds_recorded_data, load_run, recorded_config
from dgmkit.config.schema import DataConfig
from dgmkit.data import Dataset, load_dataset
from dgmkit.data.dataset import SPLITS
from dgmkit.data.missing import remove_completely_at_random
from dgmkit.data.registry import is_data_file
from dgmkit.errors import ConfigError, DataError, DgmError
from dgmkit.families import FAMILIES

__all__ = ["run_dataset", "derived_dataset", "derived_name", "attach_input", "check_derived_current", "recorded_chain"]


MAX_CHAIN = 8  # runs on the data of runs on the data of ... (each holds its model while the next loads)


def run_dataset(
    data: DataConfig,
    data_dir: str | None = None,
    units: object = None,
    _chain: tuple[Path, ...] = (),
    moved_file: str | None = None,
    recorded_dir: str | None = None,
) -> Dataset:
    """The dataset a run trains on: a named dataset or file, or the data another run makes
    (``codes_of``), with the entries ``missing_rate`` removes (NaN). ``units``: the latent units
    that a run on another run's latents recorded keeping (``active_latents``), kept again as
    recorded (from config.json: checked here), rather than chosen again from floats that may
    differ in their last bits elsewhere. ``_chain``: the runs whose data this one's are part of
    (a run that names itself, or a loop or chain of more than ``MAX_CHAIN`` runs, is refused).
    ``moved_file``: the data file at the start of the chain, read from a new path (``--data`` of a
    run on another run's data, where the first run's data file moved). ``data_dir``: a data folder
    given now (refused where the first run's data are read from none); ``recorded_dir``: the one a
    run later in the chain recorded, read before the first run's own (unread where it reads none: an
    older dgmkit recorded it)."""
    if (data.latent_draws or data.active_latents) and not data.codes_of:  # checked here: a preset sets them, a flag the run
        raise ConfigError("latent_draws and active_latents shape the latents of another run: give --codes-of RUN")
    if data.codes_of:
        source = full_path(data.codes_of)
        if not source.is_dir():
            raise DataError(
                f"codes_of: no run folder at {data.codes_of}, the run whose data this run takes (moved? name its new "
                "folder: --data NEW for dgm eval, sample and the other commands, --codes-of NEW with dgm train --resume; "
                "it must be the same run with the same weights)"
            )
        if source in _chain:
            raise ConfigError(f"codes_of: {data.codes_of} is made from its own data (a run on the data of runs that loop)")
        if len(_chain) >= MAX_CHAIN:
            raise ConfigError(f"codes_of: {data.codes_of} is a run on the data of more than {MAX_CHAIN} runs in a chain")
        derived = derived_dataset(data.codes_of, data_dir, (*_chain, source), moved_file, recorded_dir or data.data_dir)
        dataset = _latent_form(derived, data, units)
    else:
        if _chain and data_dir is not None and not data.reads_folder:  # (its own: refused where it was trained)
            raise ConfigError(
                f"--data-dir is of datasets read from a folder; the data of this run are made from those of {_chain[-1]}, "
                f"trained on {data.dataset}, read {'from its path' if is_data_file(data.dataset) else 'from no folder'}"
            )
        dataset = load_dataset(
            _stored_name(data.dataset, _chain, moved_file),
            data_dir or recorded_dir or data.data_dir,
            download=data.download,
            key=data.data_key,
            image_shape=data.image_shape,
            schema=data.schema,
        )
    return remove_completely_at_random(dataset, data.missing_rate, data.missing_seed)


def recorded_chain(codes_of: str) -> Iterator[tuple[Path, DataConfig | None]]:
    """The runs whose data a run on another run's data (``codes_of``) is made from, its source first
    and the first run of the chain last, each with the data settings it recorded: from the runs'
    records alone (no weights read). It ends at a loop or past ``MAX_CHAIN`` runs, and with None at
    a run whose record cannot be read (loading the data says what is wrong with either)."""
    chain: tuple[Path, ...] = ()
    source = full_path(codes_of)
    while source not in chain and len(chain) < MAX_CHAIN:
        try:
            data = recorded_config(source).data
        except DgmError:
            yield source, None
            return
        yield source, data
        if not data.codes_of:
            return
        chain, source = (*chain, source), full_path(data.codes_of)


def _stored_name(name: str, chain: tuple[Path, ...], moved_file: str | None) -> str:
    """The dataset ``name`` of the first run of a ``chain`` of runs on other runs' data, read from
    ``moved_file`` where that data file moved (``run_dataset``); a file missing there is named as
    that run's, with the way to name its new path."""
    if moved_file is not None and chain:
        if not is_data_file(name):
            raise ConfigError(
                f"--data names a data file, but {chain[-1]} was trained on the named dataset {name!r}: give --data "
                "the folder of the run whose data this run takes, moved, or --data-dir for the named dataset"
            )
        return moved_file
    if chain and is_data_file(name) and not Path(name).expanduser().is_file():
        raise DataError(
            f"no such data file: {name}, the data of {chain[-1]}, from which this run's data are made; if it "
            "moved, put it back (dgm train reads it there), or, for a run trained on them, name its new path with "
            "--data NEW_FILE of dgm eval, sample and the other commands"
        )
    return name


ACTIVE_VARIANCE = 0.01  # Burda et al.'s active units: Cov_x(E_q[z_m]) above this


def _latent_form(dataset: Dataset, data: DataConfig, units: object = None) -> Dataset:
    """Another run's latents as ``data`` asks: the posterior means alone, or with their spread
    for fresh draws in training (``latent_draws``); all units, or the active ones
    (``active_latents``: those recorded in ``units``, else those whose means vary)."""
    train = dataset.train
    if data.latent_draws and train.x_scale is None:
        raise ConfigError(
            f"latent_draws: the data of {data.codes_of} are points with no spread to draw from (it takes a VAE run "
            "with a Gaussian posterior)"
        )
    splits = {s: dataset.split(s) for s in SPLITS}
    if not data.latent_draws:
        splits = {s: dataclasses.replace(split, x_scale=None) for s, split in splits.items()}
    if data.active_latents:
        if not train.x.is_floating_point() or tuple(train.x.shape[1:3]) != (1, 1):
            raise ConfigError(f"active_latents keeps units of latent vectors; {data.codes_of} makes data of another kind")
        size = train.x.shape[-1]
        if units is None:
            keep = torch.nonzero(train.x.double().var(0).flatten() > ACTIVE_VARIANCE).flatten()  # (M',)
            if not len(keep):
                raise DataError(f"active_latents: no latent unit of {data.codes_of} is active (their means are constant)")
        else:
            listed = units if isinstance(units, list) else []
            indices = bool(listed) and all(type(u) is int and 0 <= u < size for u in listed)  # before set(): hashable
            if not indices or len(set(listed)) != len(listed):
                raise DataError(
                    f"the run's record names the latent units it keeps as {str(units)[:80]}: not distinct unit indices "
                    f"0..{size - 1} of the latents of {data.codes_of} (config.json damaged?)"
                )
            keep = torch.tensor(sorted(listed))
        splits = {
            s: dataclasses.replace(
                split, x=split.x[..., keep], x_scale=None if split.x_scale is None else split.x_scale[..., keep]
            )
            for s, split in splits.items()
        }
        dataset = dataclasses.replace(dataset, units=tuple(keep.tolist()))
    return dataclasses.replace(dataset, train=splits["train"], valid=splits["valid"], test=splits["test"])


def derived_name(run: Run) -> str:
    """The name of the data ``run`` makes for other runs: what they are, the run's id and a
    digest of the checkpoint that made them (a run trained on afterwards makes other data)."""
    return f"{run.cfg.model.derived_data}:{run.record.get('run_id') or run.path.resolve()}:{run.weights_digest()}"


def derived_dataset(
    source_dir: str | Path,
    data_dir: str | None = None,
    _chain: tuple[Path, ...] = (),
    moved_file: str | None = None,
    recorded_dir: str | None = None,
) -> Dataset:
    """The data the run in ``source_dir`` makes for other runs, from every split of its own data
    (``data_dir``, ``_chain``, ``moved_file``, ``recorded_dir``: as ``run_dataset``'s)."""
    source = load_run(source_dir, device="cpu")  # the same data on every machine, whatever device reads them
    family = source.cfg.model
    if family.derived_data is None:
        makers = ", ".join(f"{name} ({cls.derived_data})" for name, cls in FAMILIES.items() if cls.derived_data)
        raise ConfigError(
            f"{source_dir} is a run of the {source.cfg.family} family, which makes no data for other runs "
            f"(--codes-of takes a run of a family that does: {makers})"
        )
    chain = _chain or (full_path(source_dir),)
    images = run_dataset(source.cfg.data, data_dir, source.record["data"].get("units"), chain, moved_file, recorded_dir)
    if list(images.event_shape) != list(source.record["data"]["event_shape"]):
        raise DataError(f"the data of {source_dir} now have shape {images.event_shape}, not what its model was trained on")
    check_derived_current(images, source.cfg.data, source.record, source_dir)  # a link in a chain, pinned as the last
    if not holds_recorded_data(images, source.record["data"].get("sha256")):
        moved = moved_file is not None and is_data_file(source.cfg.data.dataset) and not source.cfg.data.codes_of
        where = moved_file if moved else source.cfg.data.dataset
        raise DataError(
            f"{where} now holds other data than {source_dir} was trained on (content SHA-256 "
            f"{images.fingerprint()[:16]}...): the data that run makes would be of other images. Point it back at its "
            "original data"
        )

    def held_out(x: torch.Tensor) -> torch.Tensor:  # as evaluation sees data: the fixed held-out noise
        return source.transform.held_out(x)

    return family.make_derived_data(source.model, held_out, images, derived_name(source))


def check_derived_current(dataset: Dataset, data: DataConfig, record: dict, source: str | Path) -> None:
    """A run trained on another run's data must see the same data again: their name (the
    source run's id and checkpoint digest) must be the one the run recorded."""
    if data.codes_of and dataset.name != record["data"].get("name"):
        raise DataError(
            f"{source} was trained on other data than the run {data.codes_of} now makes (that run was trained on since, "
            "its weights were replaced, or its best.safetensors is gone); the numbers would be of different data. Train "
            "it again with --codes-of"
        )


def attach_input(run: Run, role: str, path: "str | Path | Run") -> Run:
    """Give ``run`` the run in ``path`` (or that loaded run itself, with its weights, on the
    model's device) in the role its family declares (``--input ROLE=PATH``); returns that run
    (whose ``weights_digest`` says which weights were attached)."""
    family = run.cfg.model
    if role not in family.inputs:
        takes = "; ".join(f"{r}: {what}" for r, what in family.inputs.items()) or "none"
        raise ConfigError(
            f"--input {role}=...: {run.path} is a run of the {run.cfg.family} family, whose inputs are: {takes}"
        )
    other = path if isinstance(path, Run) else load_run(path, device=run.device)
    if other.device != run.device:
        raise ConfigError(f"the run {other.path} is on {other.device}, {run.path} on {run.device}: load them on one device")
    trained_on_mine = family.derived_data is not None and other.record["data"].get("name") == derived_name(run)
    family.attach(role, run, other, trained_on_mine)
    run.inputs[role] = other
    return other
