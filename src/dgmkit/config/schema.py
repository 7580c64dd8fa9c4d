"""The run configuration: {data, model (a family's settings, chosen by ``model``), optim, eval}.

A config file (TOML or JSON) holds these keys either flat (``model = "flow"`` and any key of the
sections or of that family) or in tables (``[data]``, ``[optim]``, ``[eval]`` and ``[model]``
with ``name``). Flags given on the command line override it. Every key is type- and
range-checked from its declaration; unknown keys are rejected with the closest name.
"""

import dataclasses
import os
import sys
import typing
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dgmkit._io import is_text_path, parse_json, read_regular
from dgmkit.data.registry import FOLDER_DATASETS, is_data_file
from dgmkit.devices import check_device_name
from dgmkit.errors import ConfigError, did_you_mean
from dgmkit.families import DEFAULT_FAMILY, FAMILIES, FamilyConfig, get_family
from dgmkit.settings import check, choices_of, default_of, from_dict, setting, unknown_keys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "RunConfig",
    "DataConfig",
    "OptimConfig",
    "EvalConfig",
    "SECTIONS",
    "load_config_file",
    "FREE_ON_RESUME",
    "MOVABLE",
    "RELOCATABLE",
    "MAX_IW_SAMPLES",
]


MAX_CONFIG_BYTES = 16 << 20  # a config file (dgmkit's presets are a few kB)
MAX_IW_SAMPLES = 10**9  # memory stays bounded for any k (a running logsumexp); time grows with k
# every seed (the settings', the commands' --seed): PyTorch's CPU generator reads the low 32 bits of a seed, so a
# larger one drew what a smaller one does (--seed 4294967296 the draws of --seed 0)
MAX_SEED = 2**32 - 1


@dataclass
class DataConfig:
    dataset: str = setting(
        "digits", "a named dataset (see docs/data.md) or a .npy, .npz, .mat, .csv or .parquet file (stored by its full path)"
    )
    data_dir: str | None = setting(
        None,
        f"folder of the data files of {', '.join(FOLDER_DATASETS)} (default: $DGMKIT_DATA, else ~/.cache/dgmkit; "
        "refused with another dataset)",
    )
    data_key: str | None = setting(
        None, "the array of a .npz file, or the variable of a .mat file, to use (none: 'x', or the only array)"
    )
    image_shape: list[int] | None = setting(
        None,
        "H W (or C H W): the image shape of a data file whose rows are flat vectors of H*W values",
        min=1,
        max=1 << 16,
    )
    schema: str | None = setting(
        None,
        'a table\'s schema: a JSON file {"columns": {"NAME": "numeric" or "categorical", ...}} (default: inferred)',
    )
    download: bool = setting(
        True, "download missing canonical files where a network exists (of the datasets read from a folder, as --data-dir)"
    )
    binarize: Literal["auto", "dynamic", "none"] = setting(
        "auto", "8-bit data for a bernoulli likelihood: binarize on the fly"
    )
    labels: int | None = setting(
        None,
        "models trained on labels (the semi-supervised families): keep this many training labels, balanced over "
        "the classes and drawn with --labels-seed (default --seed), and hide the rest (default: keep all); a data "
        "file's labels of -1 are hidden already, and the labels kept are drawn from those it shows",
        min=1,
        max=10**9,
    )
    labels_seed: int | None = setting(
        None, "seed of the labelled subset that --labels draws (default: --seed)", min=0, max=MAX_SEED
    )
    codes_of: str | None = setting(
        None,
        "a run folder whose family makes data for other runs: train on those data of its own splits instead of "
        "--dataset (a VQ-VAE: its code grids, for a prior over its codes; a VAE: its latent means, for M1+M2)",
    )
    latent_draws: bool = setting(
        False,
        "with --codes-of a VAE run (M1+M2): train on a fresh draw z ~ q(z|x) of each row at every batch, as Kingma "
        "et al.'s code does, instead of the posterior mean (held-out rows stay at their means)",
    )
    active_latents: bool = setting(
        False,
        "with --codes-of a VAE run: keep only the latent units that the run uses, those whose posterior means vary "
        "over its training split (variance > 0.01, Burda et al.'s active units; Kingma et al.'s code drops the others)",
    )
    missing_rate: float = setting(
        0.0,
        "remove each entry of every split with this probability (missing completely at random; "
        "for --objective miwae and dgm impute)",
        min=0,
        max=0.99,
    )
    missing_seed: int = setting(0, "seed of the entries --missing-rate removes", min=0, max=MAX_SEED)

    @property
    def reads_folder(self) -> bool:
        """Whether the data are read from the data folder (``data_dir``, --data-dir): a dataset of
        FOLDER_DATASETS, or another run's codes (whose own data may be)."""
        return bool(self.codes_of) or self.dataset in FOLDER_DATASETS


@dataclass
class OptimConfig:
    epochs: int = setting(50, "passes over the training data", min=1, max=10**6)
    batch_size: int = setting(128, "datapoints per gradient step", min=1, max=10**7)
    lr: float = setting(1e-3, "Adam's learning rate", gt=0, max=10.0)
    lr_schedule: Literal["constant", "cosine", "exponential", "iwae"] = setting(
        "constant",
        "the learning rate over the epochs (iwae: Burda et al.'s stages of 3^i epochs, i = 0..7, at 10^(-i/7) of --lr)",
    )
    lr_decay: float = setting(
        0.99, "exponential schedule: the factor on the learning rate every --lr-decay-every epochs", gt=0, max=1
    )
    lr_decay_every: int = setting(1, "exponential schedule: epochs between the decays", min=1, max=10**6)
    lr_min: float = setting(0.0, "the learning rate never falls below this", min=0, max=10.0)
    weight_decay: float = setting(0.0, "Adam's L2 penalty", min=0, max=1e3)
    mutation_rate: float = setting(
        0.0,
        "replace each pixel of a training batch, with this probability, by a uniformly random level (quantized data; "
        "Ren et al. 2019's background model for dgm ood --background; 0: off)",
        min=0,
        max=1,
    )
    grad_clip: float | None = setting(None, "clip the gradient norm to this value", gt=0, max=1e9)
    skip_grad_norm: float | None = setting(
        None, "skip an update whose gradient norm (before clipping) exceeds this, or is not finite (VDVAE)", gt=0, max=1e12
    )
    skip_grad_factor: float | None = setting(
        None,
        "skip an update whose gradient norm exceeds this many times the median norm of the last 100 updates taken "
        "(a threshold that follows the model's own scale; none skipped before 100 were taken)",
        gt=1,
        max=1e6,
    )
    normalise_gradients: bool = setting(
        False,
        "scale each parameter's gradient to unit norm before every Adam step (the VampPrior reference code's "
        "optimiser, AdamNormGrad; with it --grad-clip would do nothing, and is refused)",
    )
    time_budget: float | None = setting(
        None,
        "seconds of training this command may take: it stops at the end of the step in which they run out, with a "
        "checkpoint that --resume continues bit for bit on the same kind of device and number of CPU threads, "
        "without --compile (data-parallel ranks stop together, at their next vote, about 0.05 s later)",
        gt=0,
        max=1e9,
    )
    train_for: float | None = setting(
        None,
        "seconds the run is to train in all: after the first epoch, --epochs is lowered to as many epochs as fit in "
        "them at its pace (a cosine schedule then ends on time), and the run records that number",
        gt=0,
        max=1e9,
    )
    ema: float = setting(
        0.0,
        "decay of a moving average of the weights (e.g. 0.999; 0: off) that validation and best.safetensors hold",
        min=0,
        max=0.99999,
    )
    patience: int | None = setting(None, "stop after this many epochs without validation improvement", min=1, max=10**6)
    seed: int = setting(0, "seed of the initial weights, the data order and every random draw", min=0, max=MAX_SEED)
    device: str = setting("auto", "where to train: auto (CUDA where present), cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting(
        "auto", "floating point on CUDA (auto: bf16 for the families checked in it, else fp32)"
    )
    compile: bool = setting(
        False,
        "compile the training forward pass with torch.compile (where a model cannot be compiled, training says so "
        "and goes on without it)",
    )
    graph_step: bool = setting(
        False,
        "on CUDA, capture the whole training step (with --compile, its compiled passes) as one CUDA graph after its "
        "first steps and replay it (not with torchrun or fp16; where it cannot be captured, training "
        "says so and goes on without it)",
    )
    channels_last: bool = setting(
        False,
        "convolution weights and image batches in channels-last memory (NHWC), which the fastest GPU and CPU "
        "convolutions read (the same numbers up to rounding; not with torchrun; a model of no convolution is unchanged)",
    )


@dataclass
class EvalConfig:
    iw_samples: int | None = setting(
        None,
        "importance samples k of dgm eval (not the training bound's K, --iw-k; "
        "default: the family's, 5000 with latents, 0 where exact)",
        min=0,
        max=MAX_IW_SAMPLES,
    )


SECTIONS: dict[str, type] = {"data": DataConfig, "optim": OptimConfig, "eval": EvalConfig}
# optim keys that mean something for families fitted without gradient steps
_NON_GRADIENT_KEYS = ("seed", "device")
OWN_DATA_KEYS = ("dataset", "data_key", "binarize", "image_shape")  # what a run on another run's data (codes_of) leaves out
_FIT_WORDS = {"closed-form": "in closed form", "em": "by EM"}
# what --resume may change: how long to go on and where (precision with the device: a run trained in bf16 on a GPU
# goes on on a CPU only in fp32)
FREE_ON_RESUME = ("epochs", "patience", "device", "precision", "compile", "graph_step", "channels_last", "time_budget")
# where another run is, which may move (a run carried to another machine): its record's data name
# (the other run's id and checkpoint digest) pins what it holds, not its path
MOVABLE = ("codes_of",)
# where the run's own data are read from, which may move too (another machine, another folder):
# the content digest that the run recorded pins the data, not their place or file name
RELOCATABLE = ("dataset", "data_dir")


def _owner(key: str) -> str | None:
    for name, cls in SECTIONS.items():
        if key in {f.name for f in dataclasses.fields(cls)}:
            return name
    return None


def _sectioned(values: dict, source: str) -> tuple[object, dict, dict[str, dict]] | None:
    """A config table's parts: None for the flat form (every key in one table), else the family
    name given (None where it is left out; unchecked), the [model] table's other keys and each
    section's table, every key in the table it belongs to (a key's value is checked later)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a table of keys, got {type(values).__name__}")
    if not (isinstance(values.get("model"), dict) or any(isinstance(values.get(n), dict) for n in SECTIONS)):
        stray = [n for n in SECTIONS if n in values]  # (flat keys: a section's name is no key of its own)
        if stray:
            raise ConfigError(f"{source}: [{stray[0]}] must be a table of keys, got {type(values[stray[0]]).__name__}")
        return None
    unknown = [k for k in values if k != "model" and k not in SECTIONS]
    family_keys = {f.name for c in FAMILIES.values() for f in dataclasses.fields(c)}
    placed = [k for k in unknown if _owner(k) is not None or k in family_keys]
    if placed:  # (a known key, outside the table it belongs in)
        k = placed[0]
        raise ConfigError(f"{source}: {k!r} is a key of [{_owner(k) or 'model'}]; beside tables, each key goes in its table")
    if unknown:
        raise ConfigError(f"{source}: {unknown_keys(unknown, ['model', *SECTIONS])}")
    for n in ("model", *SECTIONS):
        if n in values and not isinstance(values[n], dict) and not (n == "model" and isinstance(values[n], str)):
            raise ConfigError(f"{source}: [{n}] must be a table of keys, got {type(values[n]).__name__}")
    raw = values.get("model")
    model = {"name": raw} if isinstance(raw, str) else dict(raw or {})  # `model = "name"` beside tables
    if "name" in model and model["name"] is None:  # (JSON null: not a name left out, which means the default family)
        raise ConfigError(f"{source}: the model must be named by a string, got null (leave name out for {DEFAULT_FAMILY})")
    name = model.pop("name", None)
    placed = [k for k in model if _owner(k) is not None]
    if placed:
        raise ConfigError(f"{source} (model): {placed[0]!r} is a key of [{_owner(placed[0])}], not of the model")
    parts = {n: dict(values.get(n) or {}) for n in SECTIONS}
    for n, part in parts.items():
        known = [f.name for f in dataclasses.fields(SECTIONS[n])]
        unknown = [k for k in part if k not in known]
        if unknown:
            raise ConfigError(f"{source} ({n}): {unknown_keys(unknown, known)}")
    return name, model, parts


@dataclass
class RunConfig:
    """A run: the data, the model family's settings, optimisation and evaluation."""

    model: FamilyConfig = field(default_factory=lambda: FAMILIES[DEFAULT_FAMILY]())
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        for part in (self.model, self.data, self.optim, self.eval):
            check(part)
        for f in dataclasses.fields(self.model):
            if f.name in self.model.unused_settings and getattr(self.model, f.name) != default_of(f):
                raise ConfigError(f"{f.name}: the {self.model.name} model does not use this setting (leave it out)")
        self.model.validate()
        self.model.validate_optim(self.optim)
        if self.eval.iw_samples is not None and self.model.time_sampled:
            raise ConfigError(
                f"iw_samples: the {self.model.name} model is scored without importance sampling; set time_samples"
            )
        try:
            check_device_name(self.optim.device)
        except ConfigError as e:
            raise ConfigError(f"device: {e}") from None
        o = self.optim
        decays = (o.lr_decay, o.lr_decay_every) != (OptimConfig.lr_decay, OptimConfig.lr_decay_every)  # not the defaults
        if o.lr_schedule != "exponential" and decays:
            raise ConfigError("lr_decay and lr_decay_every shape the exponential schedule: add --lr-schedule exponential")
        if o.normalise_gradients and o.grad_clip is not None:
            raise ConfigError(
                "grad_clip would do nothing with normalise_gradients: every gradient is scaled to unit norm after it "
                "(the skip thresholds still apply)"
            )
        if self.data.labels is not None and not self.model.uses_labels:
            names = [name for name, family in FAMILIES.items() if family.uses_labels]
            trained = ", ".join(names[:-1]) + " and " + names[-1]
            raise ConfigError(f"labels: the {self.model.name} model is not trained on labels ({trained} are)")
        if self.data.labels_seed is not None and self.data.labels is None:
            raise ConfigError("labels_seed draws the labelled subset of --labels N; give --labels")
        if self.data.image_shape is not None and len(self.data.image_shape) not in (2, 3):
            raise ConfigError(f"image_shape takes H W or C H W, got {self.data.image_shape}")
        if self.data.codes_of is not None:
            own = {k: getattr(self.data, k) for k in OWN_DATA_KEYS}  # (the run's own data: another run makes them)
            given = [f"{k} = {v!r}" for k, v in own.items() if v != getattr(DataConfig, k)]
            if given:
                raise ConfigError(
                    f"codes_of takes its data from the other run; leave out {', '.join(given)} (dataset, data_key, "
                    "image_shape and binarize name data of the run's own)"
                )
            if self.data.missing_rate:
                raise ConfigError("missing_rate removes entries of stored data, not of the data another run makes")
            if self.data.latent_draws and self.model.fit != "gradient":
                raise ConfigError(
                    f"latent_draws draws afresh for every batch; the {self.model.name} model is fitted "
                    f"{_FIT_WORDS[self.model.fit]}, without batches"
                )

    @property
    def family(self) -> str:
        return self.model.name

    @property
    def iw_samples(self) -> int:
        return self.model.default_iw_samples if self.eval.iw_samples is None else self.eval.iw_samples

    def to_dict(self) -> dict:
        """The sectioned form that config.json stores (for families fitted without gradient
        steps, the optim section holds only the keys that mean something to them)."""
        out = {
            "model": {"name": self.model.name, **self.model.to_dict()},
            **{name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS},
        }
        if self.model.fit != "gradient":
            out["optim"] = {k: v for k, v in out["optim"].items() if k in _NON_GRADIENT_KEYS}
        return out

    def flat(self) -> dict:
        """Every key in one table (the form of flags and flat config files)."""
        d = self.to_dict()
        out = {"model": d["model"].pop("name"), **d["model"]}
        for name in SECTIONS:
            out.update(d[name])
        return out

    def replace(self, **changes) -> "RunConfig":
        """A copy with flat keys changed (``model`` switches the family)."""
        changes = {k: os.fspath(v) if is_text_path(v) else v for k, v in changes.items()}  # (a str key takes a path)
        values = {**self.flat(), **changes} if "model" not in changes else {**self._common(), **changes}
        return RunConfig.from_dict(values, source="replace")

    def resumed(self, changes: dict) -> "RunConfig":
        """The config a resume continues: this run's, with ``changes`` (keys of FREE_ON_RESUME)
        applied; a time budget is the command's that names it, never carried over (a family fitted
        in one go has none: its config takes no such key)."""
        cfg = self.replace(time_budget=None) if self.optim.time_budget is not None else self
        return cfg.replace(**changes) if changes else cfg

    def _common(self) -> dict:
        return {k: v for name in SECTIONS for k, v in dataclasses.asdict(getattr(self, name)).items()}

    @classmethod
    def of(cls, **values) -> "RunConfig":
        """From flat keyword arguments: ``RunConfig.of(model="flow", flow="glow", epochs=3)``; a
        path given as an ``os.PathLike`` (``data_dir=Path(...)``) is taken as its text."""
        text = {k: os.fspath(v) if is_text_path(v) else v for k, v in values.items()}
        return cls.from_dict(text, source="arguments")

    def check_inert(
        self,
        file: str | None = None,
        given: Collection[str] = (),
        file_keys: Collection[str] = (),
        event_shape: Sequence[int] | None = None,
        num_levels: int | None = None,
    ) -> None:
        """A new run's settings that its choices leave unread (``FamilyConfig.inert_settings``;
        binarize other than auto without a bernoulli likelihood; lr_min under the constant schedule, lr_decay and
        lr_decay_every under another than the exponential one; missing_seed without missing_rate; labels_seed without
        labels; latent_draws and active_latents without codes_of; iw_samples where log p(x) is exact or none) refused:
        trained without them, the run would not be the one asked for (``--iw-k 50`` with the elbo objective trains
        the ELBO). So is a
        list setting with entries that its choices leave unread (``FamilyConfig.partly_read_settings``:
        conv networks read hidden's first entry). With ``event_shape``, the shape of the run's data (and
        ``num_levels``, their levels; None: continuous values), also those that the model built for them
        leaves unread (``FamilyConfig.data_inert_settings``: an image flow reads no activation, a flow of
        continuous data no logit_alpha). A value other than the default is refused, and so is a flag of ``given``
        (the command line's keys) at its default, unless it sets back what ``file`` (the config file, whose
        keys are ``file_keys``) gave, the way to override a preset. The message says where the value came from."""
        shape = None if event_shape is None else tuple(event_shape)
        sources = _Sources(file, given, file_keys)
        for key, value, default, needs in self._unread(shape, num_levels):
            said = sources.said(key, value, default)
            if said is not None:
                raise ConfigError(self._unread_words(key, needs, *said[:2]))
        fields = {f.name: f for f in dataclasses.fields(self.model)}
        for key, part in self.model.partly_read_settings(shape).items():
            value = getattr(self.model, key)
            said = sources.said(key, value, default_of(fields[key]))
            if said is None and key in given:  # the default typed over a file's value: partly read all the same
                said = (f"{key} = {value!r}", "", False)
            read = part.read(value)
            if said is None or read == list(value):
                continue
            what, _, in_file = said
            flag = f"--{key.replace('_', '-')} {' '.join(str(v) for v in read)}"
            fix = f"set {key} = {read} in {file} (or give {flag})" if in_file else f"give {flag}"
            raise ConfigError(
                f"{what}: this {self.model.name} run reads only {part.words(value)}, and would train without the "
                f"others: {fix}, or choose {part.needs}"
            )

    def unread_keys(self, event_shape: Sequence[int] | None = None, num_levels: int | None = None) -> set[str]:
        """The keys of every table (model, data, optim, eval) whose settings this run's choices (and
        data of ``event_shape`` with ``num_levels``, where known) leave unread, as ``check_inert``
        finds them: what ``dgm report`` leaves out of a run's configuration."""
        return {key for key, *_ in self._unread(None if event_shape is None else tuple(event_shape), num_levels)}

    def _unread(
        self, shape: tuple[int, ...] | None, num_levels: int | None = None
    ) -> list[tuple[str, object, object, str | None]]:
        """The settings that this run's choices (and data of ``shape`` with ``num_levels``, where known) leave unread:
        (key, value, default, the choices that read it; None: no choice of this family does)."""
        fields = {f.name: f for f in dataclasses.fields(self.model)}
        inert = self.model.inert_settings()
        if shape is not None:
            inert.update(self.model.data_inert_settings(shape, num_levels))
        unread: list[tuple[str, object, object, str | None]] = [
            (key, getattr(self.model, key), default_of(fields[key]), needs) for key, needs in inert.items()
        ]
        if self.model.scored_likelihood() != "bernoulli":  # (the model scores the data's own levels, or a density of them)
            needs = "--likelihood bernoulli" if self.model.has_setting("likelihood") else None
            unread.append(("binarize", self.data.binarize, "auto", needs))
        o, d = self.optim, self.data
        if self.model.fit == "gradient" and o.lr_schedule == "constant" and o.lr_min <= o.lr:  # (above lr: said later)
            unread.append(("lr_min", o.lr_min, 0.0, "--lr-schedule cosine, exponential or iwae"))
        if self.model.fit == "gradient" and o.lr_schedule != "exponential":  # (another value: refused when made)
            exponential = "--lr-schedule exponential"
            unread += [("lr_decay", o.lr_decay, 0.99, exponential), ("lr_decay_every", o.lr_decay_every, 1, exponential)]
        if not d.missing_rate:
            unread.append(("missing_seed", d.missing_seed, 0, "--missing-rate"))
        if not d.reads_folder:  # (a data file is read from its path)
            unread += [(k, getattr(d, k), default, "folder") for k, default in (("data_dir", None), ("download", True))]
        if d.labels is None:  # (with a family not trained on labels, --labels is refused too)
            labels = "--labels" if self.model.uses_labels else "--labels and a model trained on labels"
            unread.append(("labels_seed", d.labels_seed, None, labels))
        if d.codes_of is None:  # (true: refused where the data are made, as a preset may set them for --codes-of)
            unread += [(k, getattr(d, k), False, "--codes-of") for k in ("latent_draws", "active_latents")]
        elif self.model.fit != "gradient":  # (true: refused when made)
            unread.append(("latent_draws", d.latent_draws, False, "gradient training (its batches)"))
        if self.model.default_iw_samples == 0 and not self.model.time_sampled:  # (an exact log-likelihood, or none)
            unread.append(("iw_samples", self.eval.iw_samples, None, None))
        elif self.model.point_mass_posterior:  # (a VQ-VAE: its bound is of one code grid, one draw)
            unread.append(("iw_samples", self.eval.iw_samples, None, "point mass"))
        return unread

    def _unread_words(self, key: str, needs: str | None, what: str, fix: str) -> str:
        """The refusal of an unread setting (``what``: its value and where from; ``fix``: how to leave it out)."""
        if needs is None and key == "iw_samples":
            return (
                f"{what}: the {self.model.name} model's log-likelihood is exact (or it has none), and dgm eval "
                f"samples nothing for it: {fix}"
            )
        if needs == "point mass":
            return (
                f"{what}: the {self.model.name} model's posterior is a point mass (one code grid per datapoint), so "
                f"every importance draw is the same and dgm eval makes one: {fix}"
            )
        if needs == "folder":
            d = self.data
            read = "is read from its path" if is_data_file(d.dataset) else "is read from no folder (bundled or made here)"
            return (
                f"{what}: the dataset {d.dataset} {read}; data_dir and download are of the datasets read from a "
                f"folder ({', '.join(FOLDER_DATASETS)}): {fix}"
            )
        if needs is None:
            return (
                f"{what}: binarizing is for a bernoulli likelihood, and the {self.model.name} model scores the data's "
                f"own levels: {fix}"
            )
        return f"{what} is read only with {needs}, which this {self.model.name} run does not have: {fix}, or choose {needs}"

    @classmethod
    def given_keys(cls, values: dict, source: str = "config") -> dict:
        """The flat keys that a config table (flat or sectioned) sets itself, without the
        defaults of the keys it leaves out; each value is checked by ``from_dict`` on use."""
        tables = _sectioned(values, source)
        if tables is None:
            return dict(values)
        name, model, parts = tables
        out = {} if name is None else {"model": name}
        out.update(model)
        for part in parts.values():
            out.update(part)
        return out

    @classmethod
    def from_file(cls, values: dict, source: object) -> "RunConfig":
        """``from_dict`` of a config file's keys (``values``), every refusal named with the file ``source``."""
        try:
            return cls.from_dict(values, str(source))
        except ConfigError as e:
            raise (e if str(e).startswith(str(source)) else ConfigError(f"{source}: {e}")) from None

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "RunConfig":
        """From flat keys or sections (see the module docstring)."""
        tables = _sectioned(values, source)
        if tables is not None:
            given, model, parts = tables
            name = DEFAULT_FAMILY if given is None else given
        else:
            name = values.get("model", DEFAULT_FAMILY)
            parts = {n: {} for n in SECTIONS}
            model = {}
            family_keys = {f.name for f in dataclasses.fields(get_family(name))}
            for key, value in values.items():
                if key == "model":
                    continue
                owner = _owner(key)
                if owner is not None:
                    parts[owner][key] = value
                elif key in family_keys:
                    model[key] = value
                else:
                    raise ConfigError(f"{source}: {_unknown(key, name)}")
        family = get_family(name)
        if family.fit != "gradient":
            stray = [k for k in parts["optim"] if k not in _NON_GRADIENT_KEYS]
            if stray:
                raise ConfigError(
                    f"{source}: the {name} model is fitted {_FIT_WORDS[family.fit]}, not by gradient steps: "
                    f"{', '.join(stray)} {'has' if len(stray) == 1 else 'have'} no meaning for it"
                )
        try:
            own = from_dict(family, model, f"{source} (model {name})")
        except ConfigError as e:  # a choice that another family's setting of that name offers: say which
            raise ConfigError(f"{e}{_choice_elsewhere(family.name, model)}") from None
        return cls(own, *(from_dict(SECTIONS[n], parts[n], f"{source} ({n})") for n in SECTIONS))


@dataclass(frozen=True)
class _Sources:
    """Where a new run's settings came from (``RunConfig.check_inert``): the config file, the keys
    that the command line gave, and those that the file gave."""

    file: str | None
    given: Collection[str]
    file_keys: Collection[str]

    def said(self, key: str, value: object, default: object) -> tuple[str, str, bool] | None:
        """The value as said ("hidden = [8, 4] (from FILE)"), how to leave it out, and whether the
        config file gave it; None where it is the default, not given on the command line."""
        given, file = self.given, self.file
        if value == default and not (key in given and key not in self.file_keys):
            return None
        what, fix = f"{key} = {value!r}", "leave it out"
        from_file = file is not None and (key in self.file_keys if self.file_keys else key not in given)
        if from_file:  # set by the file: the flag of its default overrides it
            what = what if key in given else f"{what} (from {file})"
            fix = ("leave it out and " if key in given else "") + f"remove it from {file}"
            if default is None or (isinstance(default, (int, float, str)) and not isinstance(default, bool)):
                fix += f" (or give --{key.replace('_', '-')} {'none' if default is None else default}, its default)"
        return what, fix, from_file and key not in given


def _choice_elsewhere(family: str, model: dict) -> str:
    """ " (objective miwae is offered by the vae model: --model vae)" for a value of ``model`` that the
    family's setting does not offer and other families' setting of that name does; else ""."""
    own = typing.get_type_hints(get_family(family))
    for key, value in model.items():
        if key not in own or not isinstance(value, str) or value in (choices_of(own[key]) or (value,)):
            continue
        others = [n for n, c in FAMILIES.items() if value in (choices_of(typing.get_type_hints(c).get(key)) or ())]
        if others:
            names = others[0] if len(others) == 1 else ", ".join(others[:-1]) + " and " + others[-1]
            return f" ({key} {value} is offered by the {names} model{'s' if len(others) > 1 else ''}: --model {others[0]})"
    return ""


def _unknown(key: str, family: str) -> str:
    known = [f.name for f in dataclasses.fields(get_family(family))]
    known += [f.name for c in SECTIONS.values() for f in dataclasses.fields(c)]
    others = [n for n, c in FAMILIES.items() if key in {f.name for f in dataclasses.fields(c)}]
    if others:
        names = others[0] if len(others) == 1 else ", ".join(others[:-1]) + " and " + others[-1]
        return f"{key!r} is a key of the {names} model{'s' if len(others) > 1 else ''}, not of {family}"
    return unknown_keys([key], known)


PRESETS = Path(__file__).resolve().parents[1] / "presets"  # the presets dgmkit ships (configs/ in its source)


def preset_names() -> list[str]:
    """The names of the presets dgmkit ships: ``--config NAME`` reads ``NAME.toml`` among them."""
    return sorted(p.stem for p in PRESETS.glob("*.toml"))


def load_config_file(path: str | Path) -> dict:
    """Read a TOML or JSON config file into a dict of keys (checked by RunConfig.from_dict); a bare
    name that is no file here is one of dgmkit's presets (``preset_names``), read from the package."""
    name = str(path)
    bare = name and os.sep not in name and "/" not in name and not Path(name).suffix
    if bare and not Path(name).is_file() and name in preset_names():  # (a folder of that name: a run named so)
        path = PRESETS / f"{name}.toml"
    elif bare and not Path(name).exists():
        close = did_you_mean(name, preset_names()).strip()
        raise ConfigError(
            f"cannot read config file {name}: no such file, nor a preset of that name "
            + (close or f"(the presets: {', '.join(preset_names())})")
        )
    path = Path(path)
    try:
        raw = read_regular(path, MAX_CONFIG_BYTES)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB")
        text = raw.decode("utf-8-sig")  # (a byte-order mark, as some editors write one: not part of the text)
    except (OSError, UnicodeDecodeError) as e:
        bare_toml = str(path) == path.name and path.suffix.lower() == ".toml"
        preset = bare_toml and not path.exists() and path.stem in preset_names()
        hint = f" (dgmkit's preset of that name is --config {path.stem})" if preset else ""
        raise ConfigError(f"cannot read config file {path}: {getattr(e, 'strerror', None) or e}{hint}") from None
    is_json = path.suffix.lower() == ".json"  # (C.JSON too, as the data files' suffixes are read)
    try:
        values = parse_json(text) if is_json else tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None
    except (ValueError, tomllib.TOMLDecodeError) as e:
        why = "it holds an integer of more than 4300 digits" if "int_max_str_digits" in str(e) else e  # (Python's advice)
        which = "" if is_json or path.suffix.lower() == ".toml" else " (a config file is TOML, or JSON named *.json)"
        raise ConfigError(f"config file {path} is not valid {'JSON' if is_json else 'TOML'}{which}: {why}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a table of keys")
    if {"run_id", "config", "data"} <= set(values):  # a run's config.json: its keys are one level down
        raise ConfigError(
            f"{path} is a run's record (config.json of a run folder), not a config file: its settings are its "
            "'config' table; a new run with them is `dgmkit.train(out, **dgmkit.load(RUN).cfg.flat())`, or "
            "`dgm train --resume --out RUN` goes on with that run"
        )
    return values
