"""The Python API at the level of the command line: one call trains a run, one loads it back,
and sampling and evaluation work on what was loaded. A run folder written here is the one
``dgm train`` writes (config.json, checkpoints, metrics.jsonl), so every ``dgm`` command reads it,
and ``load`` reads any folder the CLI wrote.

>>> import dgmkit, tempfile
>>> folder = tempfile.TemporaryDirectory()
>>> out = folder.name + "/vae"
>>> run = dgmkit.train(out, dataset="digits", hidden=[16], latent_dim=2, epochs=1)
>>> images, what = dgmkit.sample(run, 4)
>>> images.shape, what
(torch.Size([4, 1, 8, 8]), '4 means of p(x|z), z ~ p(z)')
>>> result = dgmkit.evaluate(dgmkit.load(out), "test", iw_samples=10)
>>> result.estimate, result.n, result.nll > 0
('importance-sampled', 300, True)
>>> folder.cleanup()

Data may also be given as an array (NumPy or torch, (N, D), (N, H, W) or (N, C, H, W)), with
labels, or as a ``torch.utils.data.Dataset`` of images (or of (image, label) pairs): they are
written as ``OUT.data.npz`` beside the run folder, which the run names and pins by digest as any
data file, so that the CLI reads them again.

In a script that torchrun started (``torchrun --nproc-per-node N script.py``), ``train`` joins
the process group of torchrun's environment (where the script has not) and trains data-parallel,
as ``dgm train`` under torchrun does: rank 0 writes the run folder and prints; every rank gets
the trained run back.
"""

import contextlib
import functools
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import torch

from dgmkit import distributed
from dgmkit._io import atomic_write_bytes, is_text_path, remove_empty_folders
from dgmkit.cli.argtypes import MAX_SEED, given_count, keyword
from dgmkit.cli.common import latent_model, say, split_data
from dgmkit.cli.evaluate import REPORTED_ESTIMATES, evaluate_run, format_report
from dgmkit.cli.figures import (
    SampleOptions,
    draw_samples,
    interpolation,
    needs_latents,
    non_finite_draws,
    picked_images,
    picked_pairs,
    reconstructs,
)
from dgmkit.cli.train import train_run
from dgmkit.config import Run, RunConfig, load_run
from dgmkit.config.inputs import attach_input
from dgmkit.config.schema import FREE_ON_RESUME, RELOCATABLE, load_config_file
from dgmkit.devices import half_precision_words
from dgmkit.errors import ConfigError, DataError, DgmError, did_you_mean, shown_value, true_or_false
from dgmkit.evaluation import record_terms
from dgmkit.evaluation.report import estimate_protocol

__all__ = ["train", "load", "sample", "reconstruct", "interpolate", "evaluate", "Evaluation"]


P = ParamSpec("P")
R = TypeVar("R")


def _in_float32(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` with torch's default dtype float32 during the call (the caller's back afterwards):
    dgmkit builds, saves and reads float32 models whatever a caller's
    ``torch.set_default_dtype(torch.float64)`` says (one run so built was float64, and no other
    process could read it; tensors made inside a call mixed float64 with the model's float32)."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        before = torch.get_default_dtype()
        if before == torch.float32:  # (the setting is the process's: changed only where it must be)
            return fn(*args, **kwargs)
        torch.set_default_dtype(torch.float32)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_default_dtype(before)

    return call


_REPORT_KEYS = ("split", "n", "subset", "estimate", "seconds")  # what dgm eval's report reads


class Evaluation(dict):
    """What ``dgm eval`` writes to eval.json, as a dict whose keys are also attributes
    (``result.nll``, ``result.elbo``: nats per datapoint, means over the ``n`` datapoints scored,
    ``result.nll_stderr`` the standard error of that mean; ``result.bpd``: bits per dimension), as
    are the values of the terms the model added (``result.accuracy`` of a classifier,
    ``result.mmd`` of a WAE); ``print`` shows it as ``dgm eval`` does."""

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        for term in record_terms(self):
            if term["name"] == name:
                return term["value"]
        raise AttributeError(name)

    def __str__(self) -> str:
        needed = _REPORT_KEYS if self.get("estimate") == "reconstruction" else _REPORT_KEYS + ("nll", "nll_stderr")
        lacking = [key for key in needed if key not in self]
        # built by hand, or a part of a record: its items
        if lacking or not isinstance(self["estimate"], str) or self["estimate"] not in REPORTED_ESTIMATES:
            what = f"without {', '.join(lacking)}" if lacking else f"its estimate {self['estimate']!r} not one"
            return f"Evaluation({dict.__repr__(self)}), {what} of a dgm eval record"
        return format_report(self)

    @property
    def estimate_label(self) -> str:
        """What ``nll`` is, as ``dgm eval`` names it: "exact", "importance-sampled, k=5000", "one-draw
        bound" (an exact density of uniformly dequantized integers: ``estimate`` stays "exact")."""
        return estimate_protocol(self)


# tensor types without a NumPy type of their own
_NUMPY_LACKS = {torch.bfloat16, torch.complex32} | {
    t for name in dir(torch) if name.startswith("float8_") and isinstance(t := getattr(torch, name), torch.dtype)
}


def _array(a: object) -> np.ndarray:
    """An array of ``a``: a tensor's values (one that requires grad, sparse, quantized, on a GPU, of
    a type NumPy lacks: bfloat16 and float8 as float32, complex32 as complex64); a NumPy masked
    array with its masked entries missing (NaN), as dgmkit marks them."""
    if torch.is_tensor(a):
        if a.is_meta:
            raise DataError(f"a tensor on the meta device (of shape {tuple(a.shape)}) holds no values to train or score on")
        t = a.detach()
        t = t.to_dense() if t.layout != torch.strided else t
        t = t.dequantize() if t.is_quantized else t
        if t.dtype in _NUMPY_LACKS:
            t = t.to(torch.complex64 if t.is_complex() else torch.float32)
        return t.cpu().numpy()
    if isinstance(a, np.ma.MaskedArray):
        return np.ma.filled(a.astype(np.float64), np.nan) if np.ma.is_masked(a) else np.asarray(a.data)
    return np.asarray(a)


def _as_arrays(data: object) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (and labels) from an array, a pair (x, y) or a torch Dataset."""
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
        if y is None:  # (x, None): images without labels
            return _as_arrays(x)
        x, y = _array(x), _array(y)
        if y.ndim == 2 and y.shape[1] == 1 and len(y) == len(x):
            raise DataError(f"data=(x, y): the labels y are a column of shape {y.shape}; give them flat, y.ravel()")
        if y.ndim > 1:
            raise DataError(
                f"data=(x, y) reads y as the labels, one number per image, and this y is an array of shape {y.shape}; "
                "two arrays of images go in as one (concatenated)"
            )
        return x, y
    if torch.is_tensor(data) or isinstance(data, np.ndarray):
        return _array(data), None
    if isinstance(data, torch.utils.data.Dataset):
        try:
            items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]  # no len(): TypeError, caught
        except TypeError:
            raise DataError("a torch Dataset for dgmkit needs len() and indexing (a map-style dataset)") from None
        return _dataset_arrays(items)
    if isinstance(data, (str, os.PathLike)):
        raise DataError(
            f"data takes arrays; a data file or a named dataset is dataset={str(data)!r} (as dgm train --dataset)"
        )
    raise DataError(f"data must be an array, a pair (x, y) or a torch Dataset, not {type(data).__name__}")


def _dataset_arrays(items: list) -> tuple[np.ndarray, np.ndarray | None]:
    """The images (and labels) of a torch Dataset's items: all images (or all (image, label)
    pairs), the images of one shape, each label one number (checked as an array's labels are)."""
    if not items:
        raise DataError("the torch Dataset is empty")
    pairs = isinstance(items[0], (tuple, list)) and len(items[0]) > 0
    labelled = pairs and len(items[0]) > 1
    if pairs and len(items[0]) > 2:  # (an image, a label and a mask, say: no part of an item is left unread)
        raise DataError(
            f"item 0 of the torch Dataset holds {len(items[0])} values; dgmkit takes an image or an (image, label) pair"
        )
    xs, ys = [], []
    for i, item in enumerate(items):
        if (isinstance(item, (tuple, list)) and len(item) > 0) != pairs or (pairs and (len(item) > 1) != labelled):
            raise DataError(f"item {i} of the torch Dataset is {_item_kind(item)}, item 0 {_item_kind(items[0])}")
        x = item[0] if pairs else item
        try:
            xs.append(torch.as_tensor(_array(x)))  # (a dataset of GPU tensors too)
        except (TypeError, ValueError, RuntimeError):
            raise DataError(f"item {i} of the torch Dataset: its image is a {type(x).__name__}, not an array") from None
        if xs[-1].shape != xs[0].shape:
            raise DataError(
                f"item {i} of the torch Dataset: its image has shape {tuple(xs[-1].shape)}, item 0's {tuple(xs[0].shape)}"
            )
        if labelled:
            try:
                label = _array(item[1])
            except (TypeError, ValueError, RuntimeError):
                label = None
            if label is None or label.size != 1 or label.dtype.kind not in "biuf":
                raise DataError(f"item {i} of the torch Dataset: its label {str(item[1])[:40]!r} is not one number")
            # (not int(): a label of 0.5 is refused later as no whole number, not read as 0; a uint64 is not wrapped)
            ys.append(label.item())
            if isinstance(ys[-1], int) and not -(2**63) <= ys[-1] < 2**63:
                raise DataError(f"item {i} of the torch Dataset: its label {ys[-1]} is beyond any class index")
    return torch.stack(xs).numpy(), np.asarray(ys) if labelled else None


def _item_kind(item: object) -> str:
    if isinstance(item, (tuple, list)) and item:
        return "an (image, label) pair" if len(item) > 1 else "an (image,) tuple"
    return f"a {type(item).__name__}"


def _data_file(out: Path, data: object) -> tuple[Path, bool]:
    """Write the arrays as OUT.data.npz (x, and y where given): its path, and whether this call
    wrote it. An existing file is kept only if it holds the same arrays (never overwritten)."""
    import io

    x, y = _as_arrays(data)
    buf = io.BytesIO()
    arrays: dict[str, Any] = {"x": x} if y is None else {"x": x, "y": y}
    np.savez(buf, **arrays)
    named = out.resolve() if out.name in ("", "..") else out  # ("." has no name: its file was ./.data.npz, inside it)
    path = named.parent / f"{named.name}.data.npz"
    if path.is_symlink() and not path.exists():
        raise DataError(f"{path} is a link to nothing; move it away or train into another folder")
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as old:
                same = set(old.files) == ({"x"} if y is None else {"x", "y"}) and _same(old["x"], x)
                same = same and (y is None or _same(old["y"], y))
        except (OSError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as e:
            raise DataError(
                f"{path} exists and is not a data file of arrays ({type(e).__name__}); move it away or train into "
                "another folder"
            ) from None
        if not same:
            raise DataError(f"{path} exists and holds other data; move it away or train into another folder")
        return path, False
    atomic_write_bytes(path, buf.getvalue())  # (with the folders it needs)
    return path, True


_DEFAULT_DATASET = RunConfig.of().data.dataset


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """The same arrays, missing entries (NaN) in the same places counting as equal."""
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc" and b.dtype.kind in "fc"))


@_in_float32
def train(
    out: str | os.PathLike,
    config: RunConfig | Mapping | str | os.PathLike | None = None,
    *,
    data: object = None,
    resume: bool = False,
    quiet: bool = True,
    **settings: Any,
) -> Run:
    """Train a model into the run folder ``out`` (new or empty; ``resume``: continue the run
    there) and return it loaded (its best weights). The run is ``config`` (a ``RunConfig`` or a
    table of its keys, flat or in sections, as a config file) with ``settings`` on top: the
    flags of ``dgm train`` as keywords (``dataset="mnist"``, ``hidden=[512, 256]``, ...).
    ``data``: arrays or a torch Dataset instead of a named dataset; under torchrun, data-parallel
    (module docstring)."""
    out = _run_folder(out, resume)
    quiet = _quiet(quiet)
    if isinstance(settings.get("device"), torch.device):  # (as load takes one: "cpu", "cuda", "cuda:1")
        settings["device"] = str(settings["device"])
    if resume:
        free = (*FREE_ON_RESUME, *RELOCATABLE)  # (the data's place: the same data, checked by their digest)
        if config is not None or data is not None or set(settings) - set(free):
            raise ConfigError(
                f"resume continues the run as it was configured: give only {', '.join(free)}, "
                f"not {', '.join(sorted(set(settings) - set(free))) or 'config or data'}"
            )
        return _resumed(out, settings, quiet)
    values = {**_config_keys(config), **settings}
    had_run, written = (out / "config.json").exists(), None
    made = [p for p in out.parents if not p.exists()]  # folders this call creates (deepest first)
    if data is not None:
        # (a RunConfig's dataset at its default is not given: config=RunConfig.of(...) beside data=)
        named = "dataset" in settings or (not isinstance(config, RunConfig) and "dataset" in values)
        if named or values.get("dataset", _DEFAULT_DATASET) != _DEFAULT_DATASET:
            raise ConfigError("give either data (arrays) or a dataset by name, not both")
        path, wrote = _data_file(out, data)
        values["dataset"], written = str(path), path if wrote else None
    try:
        # (a keyword at its default counts as not given, so that **cfg.flat() repeats a run; a value
        # other than the default that the run leaves unread is refused by train_run, as dgm train does)
        train_run(RunConfig.of(**values), out, quiet=quiet, resume_line=not quiet)
    except BaseException as e:
        # a refused call (a bad setting, a folder not empty) leaves no data file behind; one that its run names stays
        if written is not None and (had_run or not (out / "config.json").exists()):
            written.unlink(missing_ok=True)
        remove_empty_folders(made)  # (only those left empty)
        if data is not None and isinstance(e, DataError):
            raise _of_arrays(e, values["dataset"]) from None
        raise
    return load(out)


def _of_arrays(e: DataError, path: str) -> DataError:
    """A refusal of the data file that ``train`` wrote the caller's arrays to, said of the arrays
    given: the file, gone by the time the caller reads the message, is named nowhere in it (by its
    path or its name, wherever in the message); another error as it is."""
    text = str(e).replace(path, "data (the arrays given)").replace(Path(path).name, "data (the arrays given)")
    return e if text == str(e) else DataError(text)


def _quiet(quiet: object) -> bool:
    """``train``'s ``quiet``, checked; true on every rank but the first under torchrun (which this
    call joins: it is made first, always)."""
    checked = true_or_false("quiet", quiet, ConfigError)
    main = distributed.init_from_environment().is_main  # (never skipped: the call joins the group here)
    return checked or not main


def _resumed(out: Path, settings: dict, quiet: bool) -> Run:
    """``train(out, resume=True, **settings)``: the run in ``out`` continued with the settings a
    resume may change, and loaded."""
    from dgmkit.config.run import own_record
    from dgmkit.training.run_writer import RunFolder

    folder = RunFolder(out, fresh=False)
    restart = folder.starts_again("resume=True", main=distributed.current().is_main)
    stored = RunConfig.from_dict(own_record(out)["config"], str(out))
    if restart:
        if not quiet:  # stopped before its first checkpoint: started again from its beginning, as dgm train --resume does
            say(folder.restart_line())
        train_run(stored.resumed(settings), out, quiet=quiet, restart=True)
    else:
        train_run(stored.resumed(settings), out, resume=True, quiet=quiet, resume_line=not quiet)
    return load(out)


def _path_text(path: object) -> str | None:
    """A path given as str or os.PathLike, as text (None stays None); another type is refused."""
    if path is None:
        return None
    if not is_text_path(path):
        raise ConfigError(f"a path (str or os.PathLike) was expected, got {shown_value(path)}")
    return os.fspath(path)


def _run_folder(out: object, resume: object) -> Path:
    """``train``'s run folder, refused unless it is a path that is not empty (``Path(None)`` is
    pathlib's TypeError, ``Path("")`` the working folder), and its ``resume`` a bool (``"no"`` is
    true)."""
    if not is_text_path(out):
        raise ConfigError(f"out, the run folder, is named by a path (str or os.PathLike), got {shown_value(out)}")
    if not os.fspath(out):
        raise ConfigError("out is empty: name the run folder to write")
    true_or_false("resume", resume, ConfigError)
    if "\0" in os.fspath(out):
        raise ConfigError("out, the run folder, holds a NUL character, which no file name can")
    # "~/run" is the home folder's, as a data file's path in a config (its data file beside it: the same)
    return _expanded(Path(out))


def _expanded(path: Path) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; one that names no home folder is refused."""
    try:
        return path.expanduser()
    except RuntimeError:
        raise ConfigError(f"{path}: {path.parts[0]} names no home folder") from None


def _config_keys(config: object) -> dict:
    """The keys that ``train``'s ``config`` sets: a RunConfig's, a table's or a config file's."""
    if isinstance(config, RunConfig):
        return config.flat()
    if isinstance(config, (str, os.PathLike)):  # a config file, as dgm train --config FILE: checked whole, named
        table = load_config_file(Path(config))
        RunConfig.from_file(table, config)  # (a wrong value that a keyword overrides too, as the flag's does)
        return RunConfig.given_keys(table, str(config))
    if config is None or isinstance(config, Mapping):
        keys = RunConfig.given_keys(dict(config or {}))
        stray = [k for k in keys if not isinstance(k, str)]  # (of its tables too: keywords of RunConfig.of, a TypeError)
        if stray:
            raise ConfigError(f"config: its keys are the names of settings (strings), got {shown_value(stray[0])}")
        return keys
    raise ConfigError(
        f"config must be a RunConfig, a table of config keys or the path of a config file, not {type(config).__name__}"
    )


def _the_run(run: object, call: str) -> Run:
    """The run that ``call`` (sample, evaluate, ...) works on: a loaded run, or a run folder's
    path, loaded as ``load`` loads it (on the CPU). Anything else, a model built by hand among
    them, is refused in words: these functions read the run's record (its data, its transform).
    A model made half precision (``run.model.half()``) draws samples and is given no data
    (``half_precision_words``)."""
    if isinstance(run, Run):
        if call != "sample" and (problem := half_precision_words(run.model)):
            raise ConfigError(f"dgmkit.{call}: {problem}")
        return run
    if isinstance(run, (str, os.PathLike)):
        return load(run)
    if isinstance(run, torch.nn.Module):
        raise ConfigError(
            f"dgmkit.{call} takes a run (dgmkit.load(FOLDER), dgmkit.train(...) or a run folder's path), not a "
            f"{type(run).__name__} model: a model without its run record has no data or transform to go by; call its "
            "methods (model.sample(n): a pair, the samples and what to show for them; model.reconstruct(x)) or "
            "dgmkit.evaluation.evaluate(model, x) instead"
        )
    raise ConfigError(
        f"dgmkit.{call} takes a run (dgmkit.load(FOLDER), dgmkit.train(...) or a run folder's path), "
        f"not {type(run).__name__}"
    )


def _split_named(split: object, call: str, own: str) -> None:
    """Refuses a ``split`` that is data rather than the name of one of the run's splits (a tensor of
    one's own, given as ``dgmkit.evaluate(run, x)``), saying what takes such data: ``own``."""
    if isinstance(split, (torch.Tensor, np.ndarray, list, tuple)):
        raise ConfigError(
            f"dgmkit.{call}'s split names one of the run's splits (train, valid or test), got {shown_value(split)}: "
            f"for data of your own, {own} (x as the run's transform gives data: run.transform.held_out(x) of raw ones)"
        )


def _known_options(options: Mapping[str, Any], known: tuple[str, ...], call: str) -> None:
    """Refuses a keyword that ``call`` does not take, in words (not a TypeError from inside)."""
    for name in options:
        if name not in known:
            raise ConfigError(
                f"dgmkit.{call} takes no option {name!r}{did_you_mean(name, known)}; its options are {', '.join(known)}"
            )


_DATA_FLAGS = re.compile(r"--(?:data-dir|data|schema)(?![\w-])")  # where the run's data are read from
_DATA_VALUE = re.compile(r"--(data|schema) ([A-Z][A-Z_]*)\b")  # a flag with its value's placeholder
_DGM_COMMAND = re.compile(r"\bdgm [a-z]")  # a refusal that says which dgm command takes a flag


@contextlib.contextmanager
def _data_keywords() -> Iterator[None]:
    """A refusal of where the run's data are read from (the run's own checks, shared with dgm's
    commands) said with the keywords a Python caller gave, ``data_dir`` and ``data=`` (not "data
    points at ..."), not as the flags ``--data-dir`` and ``--data``. A refusal that names the dgm
    commands whose flags it gives ("--data NEW for dgm eval, sample and the other commands") is
    left as it is: said with keywords, it named a dgm eval keyword that is no flag of it."""
    try:
        yield
    except DgmError as e:
        if _DGM_COMMAND.search(str(e)):
            raise
        said = _DATA_VALUE.sub(r"\1=\2", str(e))  # ("--data PATH": data=PATH, not "data= PATH")
        said = _DATA_FLAGS.sub(lambda m: "data=" if m.group(0) == "--data" else keyword(m.group(0)), said)
        if said == str(e):
            raise
        raise type(e)(said) from None


SAMPLE_OPTIONS = SampleOptions._fields
EVAL_OPTIONS = ("iw_samples", "time_samples", "orders", "limit", "seed", "data_dir", "data")  # (it writes nothing)


@_in_float32
def load(path: str | os.PathLike, device: str | torch.device = "cpu", which: str = "best") -> Run:
    """A run folder (written by ``train`` or ``dgm train``) with its model on ``device``: the
    CPU by default, where the caller's tensors are (``device="auto"``: CUDA where present, and
    then tensors given to the model belong on ``run.device``); ``which``: the weights of the
    best validation epoch (``"best"``, or the last where a run kept no best) or of the last
    epoch (``"last"``, as ``dgm impute --weights last``)."""
    if is_text_path(path) and os.fspath(path):
        path = _expanded(Path(path))  # ("~/run": as train writes it; other values: refused by load_run)
    return load_run(path, which=which, device=device)


def _attach(
    run: Run, inputs: "Mapping[str, Run | str | os.PathLike[str]] | None", code_prior: "Run | str | os.PathLike[str] | None"
) -> dict[str, Run]:
    """The runs given in roles the run's family declares (``dgm --input ROLE=RUN``), attached:
    role -> that run."""
    if inputs is not None and not isinstance(inputs, Mapping):
        raise ConfigError(f"inputs maps roles to runs ({{'code-prior': RUN_DIR}}), got {shown_value(inputs)}")
    named = {**(inputs or {}), **({} if code_prior is None else {"code-prior": code_prior})}  # (code_prior: short)
    paths = {}
    for role, other in named.items():  # a loaded run, or a run folder's path
        if not isinstance(role, str) or not (isinstance(other, Run) or is_text_path(other)):
            raise ConfigError(
                f"inputs: the role {shown_value(role)} takes a run or a run folder's path, got {shown_value(other)}"
            )
        paths[role] = other if isinstance(other, Run) else os.fspath(other)
    attached = {}
    for role, path in paths.items():
        try:
            attached[role] = attach_input(run, role, path)
        except ConfigError as e:  # (said as dgm's flag "--input ROLE=...": named as the keyword given)
            given = "code_prior=..." if role == "code-prior" and code_prior is not None else f"inputs={{{role!r}: ...}}"
            raise ConfigError(re.sub(rf"^--input {re.escape(role)}=\.\.\.", given, str(e))) from None
    return attached


@_in_float32
def sample(
    run: Run | str | os.PathLike,
    n: int,
    seed: int = 0,
    inputs: "Mapping[str, Run | str | os.PathLike[str]] | None" = None,
    code_prior: "Run | str | os.PathLike[str] | None" = None,
    **options: Any,
) -> tuple[torch.Tensor, str]:
    """n samples of the run's model (n, *event), seeded, in the units the model scores
    (``run.transform``: 0/1 or probabilities for binary data, levels for integer data, values
    near [0, 1] for dequantized data: a flow's draws may pass its ends a little, by its logit's
    margin), and what they are in words (the means of p(x|z) for a latent variable model);
    ``options``: ``temperature``, ``naive``, ``steps`` or ``draw`` as ``dgm sample``; ``inputs``:
    other runs in roles the family declares (``{"code-prior": RUN}``: a VQ-VAE draws its code
    grids from that run; ``code_prior=RUN`` is short for it; a loaded run or a run folder's
    path), attached to ``run``: they stay attached, and every later result of it names them.
    ``run``: a loaded run, or a run folder's path (loaded as ``load`` does, for this call).
    Draws that are not finite numbers (NaN or inf: a flow trained little whose inverse overflows)
    are returned as drawn, with a RuntimeWarning that says how many and, of a flow, to draw at a
    lower temperature (``dgm sample`` refuses them)."""
    run = _the_run(run, "sample")
    _known_options(options, SAMPLE_OPTIONS, "sample")
    seed = given_count(seed, 0, MAX_SEED, "seed")
    _attach(run, inputs, code_prior)
    x, what = draw_samples(run, n, seed, SampleOptions(**options), keywords=True)
    _warn_non_finite(x, run, options.get("temperature"))
    return x.cpu(), what.rstrip(",")


def _warn_non_finite(x: torch.Tensor, run: Run, temperature: float | None) -> None:
    """A RuntimeWarning, at ``sample``'s caller, where the draws ``x`` are not all finite numbers
    (``non_finite_draws``'s words, with the keyword that lowers a flow's temperature)."""
    words = non_finite_draws(x, run, temperature, lower="a lower temperature (temperature=0.7, say)")
    if words:  # (sample -> _in_float32's wrapper -> the caller)
        warnings.warn(f"{words}; they are returned as drawn", RuntimeWarning, stacklevel=4)


@_in_float32
@torch.no_grad()
def reconstruct(
    run: Run | str | os.PathLike,
    n: int = 16,
    split: str = "test",
    seed: int = 0,
    data_dir: str | None = None,
    data: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dgm reconstruct`` without the picture: n images of the run's ``split`` drawn at random
    with ``seed``, and their reconstructions as ``dgm reconstruct`` shows them (the model's
    ``reconstruct``: for a VAE the mean of p(x|z) at the posterior's location, E[z|x] where it
    has one; a PixelVAE decodes greedily), each (n, *event) on the CPU in the units the model
    scores (as ``sample``'s). ``data_dir``: where the run's data are read from, if not where it
    recorded (a dataset read from a folder; refused for another); ``data``: a run trained on a
    data file, that file moved (as ``dgm reconstruct --data``).
    The images keep the missing entries of data that have them as NaN (``dgm reconstruct`` draws them
    mid-grey); the reconstructions have none. ``run``: a loaded run, or a run folder's path."""
    run = _the_run(run, "reconstruct")
    _split_named(split, "reconstruct", "run.model.reconstruct(x) gives their reconstructions")
    seed = given_count(seed, 0, MAX_SEED, "seed")
    n = given_count(n, 1, 10_000, "n")
    reconstructs(run)
    with _data_keywords():
        x = split_data(run, split, _path_text(data_dir), _path_text(data))[0]
    x = picked_images(x, n, seed, split, flag="n =")
    return x.cpu(), latent_model(run).reconstruct(x).cpu()


@_in_float32
@torch.no_grad()
def interpolate(
    run: Run | str | os.PathLike,
    pairs: int = 4,
    steps: int = 8,
    split: str = "test",
    seed: int = 0,
    data_dir: str | None = None,
    data: str | None = None,
) -> torch.Tensor:
    """``dgm interpolate`` without the picture: (pairs, steps + 2, *event) on the CPU, each row an
    image of the run's ``split``, the means of p(x|z) (a PixelVAE's greedy decodes) at ``steps``
    evenly spaced points on the line from its posterior location to that of a second image (both
    ends included), and the second image; the images drawn at random with ``seed``, everything in
    the units the model scores. ``data_dir``, ``data``: as for ``reconstruct``; the two images keep
    their missing entries as NaN, as there. ``run``: a loaded run, or a run folder's path."""
    run = _the_run(run, "interpolate")
    own = "run.model.posterior(x) gives their codes and run.model.likelihood(z) decodes a point between two"
    _split_named(split, "interpolate", own)
    seed = given_count(seed, 0, MAX_SEED, "seed")
    pairs = given_count(pairs, 1, 1000, "pairs")
    steps = given_count(steps, 2, 100, "steps")
    needs_latents(run)
    with _data_keywords():
        x = split_data(run, split, _path_text(data_dir), _path_text(data))[0]
    a, b = picked_pairs(x, pairs, seed, split, flag="pairs =")
    path = interpolation(run, a, b, steps)
    return torch.cat([a[:, None].to(path.dtype), path, b[:, None].to(path.dtype)], 1).cpu()


@_in_float32
def evaluate(
    run: Run | str | os.PathLike,
    split: str = "test",
    inputs: "Mapping[str, Run | str | os.PathLike[str]] | None" = None,
    code_prior: "Run | str | os.PathLike[str] | None" = None,
    **options: Any,
) -> Evaluation:
    """``dgm eval`` of a loaded run, without writing anything; returns an ``Evaluation`` (what
    eval.json holds: ``nll`` and ``elbo`` in nats per datapoint, ``bpd`` in bits per dimension).
    Options: ``iw_samples``, ``time_samples``,
    ``orders``, ``limit`` (a seeded random subset), ``seed`` (of that subset and of an estimate's
    samples: refused where nothing is drawn), ``data_dir`` or ``data`` as keywords;
    ``inputs``/``code_prior`` as for ``sample`` (``dgm eval --input``). ``run``: a loaded run, or a
    run folder's path."""
    run = _the_run(run, "evaluate")
    _split_named(split, "evaluate", "dgmkit.evaluation.evaluate(run.model, x) scores them")
    _known_options(options, EVAL_OPTIONS, "evaluate")
    _attach(run, inputs, code_prior)  # (with those attached by earlier calls: the model scores with all of them)
    with _data_keywords():
        return Evaluation(evaluate_run(run, split, inputs=run.inputs, keywords=True, **options))
