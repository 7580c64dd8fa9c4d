"""What a model family is: a typed settings dataclass that builds, trains and scores its models.

A family module holds one ``FamilyConfig`` subclass (nanoGPT keeps ``GPTConfig`` beside
``GPT``): its fields are the family's settings with their own defaults, types, ranges and help
(``dgmkit.settings.setting``), from which config files and command-line flags are derived; its
methods say how data meets the model (``transform``), how the model is built (``model_for``
the data's ``DataSpec``; callers use ``build``), what
it is trained on (``objective``, with ``fit`` naming the fit path: gradient steps, closed form
or EM) and how many importance samples its evaluation takes by default. ``@register_family``
adds it to the registry; ``config/``, ``cli/`` and ``evaluation/`` never name a family.
"""

import dataclasses
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

import torch

from dgmkit import settings
from dgmkit.data import Dataset, DataTransform
from dgmkit.errors import ConfigError
from dgmkit.models import GenerativeModel
from dgmkit.objectives import Objective
from dgmkit.training.parts import TrainingPart

if TYPE_CHECKING:
    from dgmkit.config.run import Run

__all__ = ["FamilyConfig", "DataSpec", "PartlyRead", "FIT_PATHS"]

FIT_PATHS = ("gradient", "closed-form", "em")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a family builds its model for: the shape of one datapoint, the data's levels (None:
    continuous values), transformed training data for a data-dependent initialisation (where the
    family's ``needs_init_data`` says so) and the run's seed. ``DataSpec.of`` checks them."""

    event_shape: tuple[int, ...]
    num_levels: int | None
    init_data: torch.Tensor | None = dataclasses.field(default=None, compare=False)  # (specs compare by their shape)
    seed: int = 0

    @classmethod
    def of(
        cls, event_shape: Sequence[int], num_levels: int | None, init_data: torch.Tensor | None = None, seed: int = 0
    ) -> "DataSpec":
        try:
            shape = tuple(event_shape)
        except TypeError:
            raise ConfigError(f"a model is built for an event shape (a sequence of sizes), got {event_shape!r}") from None
        if not shape or not all(_is_int(d) and d >= 1 for d in shape):
            raise ConfigError(f"a model is built for events of positive integer sizes, got shape {shape}")
        if num_levels is not None and not (_is_int(num_levels) and num_levels >= 2):
            raise ConfigError(f"the data's levels must be an integer >= 2 (or None: continuous), got {num_levels!r}")
        if init_data is not None and tuple(init_data.shape[1:]) != shape:
            raise ConfigError(f"the initialisation data have events of shape {tuple(init_data.shape[1:])}, not {shape}")
        if not (_is_int(seed) and seed >= 0):
            raise ConfigError(f"the seed must be an integer >= 0, got {seed!r}")
        levels = None if num_levels is None else int(num_levels)
        return cls(tuple(int(d) for d in shape), levels, init_data, int(seed))


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class PartlyRead:
    """A list setting of which a run's choices read only some entries (``FamilyConfig.partly_read_settings``):
    the ``entries`` read (its first, its last, or both ends), what they are to the model (``what``: "the dense
    layer of its conv networks") and ``needs``, the choices that read every entry."""

    entries: Literal["first", "last", "ends"]
    what: str
    needs: str

    def read(self, value: Sequence) -> list:
        """The entries of ``value`` that are read (all of them where it has no others)."""
        if self.entries == "first":
            return list(value[:1])
        if self.entries == "last":
            return list(value[-1:])
        return [value[0], value[-1]] if len(value) > 2 else list(value)

    def words(self, value: Sequence) -> str:
        """ "its first entry (512, ...)": the entries read of ``value``, with what they are."""
        read = self.read(value)
        shown = " and ".join(str(v) for v in read)
        which = {"first": "first entry", "last": "last entry", "ends": "first and last entries"}[self.entries]
        return f"its {which} ({shown}, {self.what})"


@dataclasses.dataclass
class FamilyConfig(ABC):
    """The settings of one model family (subclasses are dataclasses of ``setting`` fields)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    fit: ClassVar[str] = "gradient"
    fits_incomplete: ClassVar[bool] = False  # its fit ("closed-form", "em") takes data with missing entries (NaN)
    renamed: ClassVar[dict[str, str]] = {}  # settings renamed since run format 2: old name -> new name
    uses_labels: ClassVar[bool] = False  # trained on labels (some hidden: the data setting `labels`)
    time_sampled: ClassVar[bool] = False  # scored by a bound averaged over sampled times, not by importance sampling
    point_mass_posterior: ClassVar[bool] = False  # q(z|x) is one code grid: its bound takes no importance samples
    # runs that use other runs (config.inputs): what this family's runs make for others to train
    # on (None: nothing), and the roles in which they take another run when used (role -> what it is)
    derived_data: ClassVar[str | None] = None
    inputs: ClassVar[dict[str, str]] = {}
    # settings of a shared part that this family never reads (a PixelCNN decoder's Gaussian scale):
    # not offered as its flags, and refused where a config gives them another value than the default
    unused_settings: ClassVar[frozenset[str]] = frozenset()

    def validate(self) -> None:  # noqa: B027 - rules between fields, none by default
        """Raise ConfigError where fields contradict each other."""

    def validate_optim(self, optim: object) -> None:  # noqa: B027 - rules against the optim section, none by default
        """Raise ConfigError where an optimisation setting does not fit this family."""

    def check_new_run(self, optim: object) -> None:  # noqa: B027 - none by default
        """Raise ConfigError where an optimisation setting would train this family into something else
        than asked for; checked for a new run only (not on load, so that runs trained before stay readable)."""

    def inert_settings(self) -> dict[str, str]:
        """The settings that these choices leave unread, each with the choice that reads it
        (``"--objective iwae or miwae"``): a new run that gives one a value of its own is refused
        (``RunConfig.check_inert``), not trained as if it had not been given. None by default."""
        return {}

    def data_inert_settings(self, event_shape: tuple[int, ...], num_levels: int | None) -> dict[str, str]:
        """As ``inert_settings``, the settings that the model built for data of ``event_shape`` with
        ``num_levels`` levels (None: continuous values) leaves unread where the data decide it (a flow's
        activation, which the image flow that images get does not read; its logit_alpha, which continuous
        data do not pass through): checked once a new run's data are known. None by default."""
        return {}

    def partly_read_settings(self, event_shape: tuple[int, ...] | None = None) -> dict[str, PartlyRead]:
        """The list settings of which these choices read only some entries (the conv networks' dense
        layer is ``hidden``'s first entry), for data of ``event_shape`` where known (None: what the
        choices alone decide): a new run whose value has entries left unread is refused
        (``RunConfig.check_inert``), as it would train without them. None by default."""
        return {}

    @classmethod
    def has_setting(cls, name: str) -> bool:
        """Whether ``name`` is one of this family's declared settings (a field, and so a flag)."""
        return any(f.name == name for f in dataclasses.fields(cls))

    def scored_likelihood(self) -> str | None:
        """The p(x|.) by which this run's models score each entry (a ``--likelihood`` name such as
        ``"bernoulli"``), or None where they are a density or model the data's own levels in a way
        of their own (a flow, a diffusion model). Read where a data setting depends on it (binarizing
        is for a bernoulli likelihood)."""
        return None

    def settings_from_data(self, dataset: Dataset) -> dict:
        """Settings this family reads off the data a new run trains on (recorded in the run's
        config like any other; none by default)."""
        return {}

    def data_notes(self, dataset: Dataset) -> list[str]:
        """What a new run on ``dataset`` should say of how the family fits them, where that is not
        what its settings alone say (a flow's levels that do not divide the images' sides: a vector
        flow is trained); none by default."""
        return []

    @abstractmethod
    def transform(self, dataset: Dataset, binarize: str = "auto") -> DataTransform:
        """How the stored data become what the model scores."""

    def build(
        self,
        event_shape: Sequence[int],
        num_levels: int | None,
        init_data: torch.Tensor | None = None,
        seed: int = 0,
    ) -> GenerativeModel:
        """The model for data of ``event_shape`` with ``num_levels`` levels (None: continuous).
        ``init_data``: transformed training data, where ``needs_init_data`` says so; ``seed``:
        the run's seed, for what a family draws at build time (an order of the pixels, ...).
        The settings are checked first (a config made in Python has not been through a file's checks;
        NumPy numbers and tuples are taken as ``dgmkit.train``'s keywords take them)."""
        settings.check(self, plain=True)
        self.validate()
        model = self.model_for(DataSpec.of(event_shape, num_levels, init_data, seed))
        self.initialise_weights(model)
        return model

    @abstractmethod
    def model_for(self, data: "DataSpec") -> GenerativeModel:
        """The family's model for ``data`` (checked: see ``DataSpec``)."""

    def initialise_weights(self, model: GenerativeModel) -> None:
        """Re-draw the built model's initial weights where a setting asks for another
        initialisation (from torch's global RNG, which the run's seed seeds); by default the
        layers keep their own."""
        return None

    def training_objective(self) -> Objective:
        """What gradient training minimizes (families fitted otherwise have none)."""
        how = {"closed-form": "model.fit_closed_form(x)", "em": "model.em_step(x), repeated"}.get(self.fit, self.fit)
        raise ConfigError(
            f"the {self.name} family is fitted by {self.fit}, not by a gradient objective: {how} on the transformed "
            "training data, or dgmkit.train (dgm train), which does it"
        )

    @property
    def needs_init_data(self) -> bool:
        return False

    @property
    def default_iw_samples(self) -> int:
        """Importance samples of ``dgm eval`` (0 where the likelihood is exact; for a
        time-sampled bound, the times per datapoint)."""
        return 0

    def training_parts(self) -> list[TrainingPart]:
        """The family's own parts of the Trainer (a KL weight schedule, labelled rows, ...)."""
        return []

    @property
    def iterations(self) -> int | None:
        """EM iterations (families fitted by EM)."""
        return None

    def describe(self) -> str:
        """One line that says what model this is."""
        return self.name

    @classmethod
    def claims_v1(cls, flat: dict) -> bool:
        """Whether a dgmkit 0.1 flat config describes a model of this family."""
        return flat.get("model", "vae") == cls.name

    @classmethod
    def from_v1(cls, flat: dict) -> dict:
        """This family's keys from a dgmkit 0.1 flat config (all keys, defaults included).
        Families that did not exist then keep this default, which takes no key."""
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in cls.rename_keys(flat).items() if k in names}

    @classmethod
    def rename_keys(cls, keys: dict) -> dict:
        """``keys`` with the names this family has since changed (``renamed``: old -> new)."""
        return {cls.renamed.get(k, k): v for k, v in keys.items()}

    @classmethod
    def from_format_3(cls, keys: dict, data: dict) -> dict:
        """A run of format 3 (or earlier): its model ``keys`` as they keep the run what it was
        trained as, where this family has since changed what a default means (``data``: the
        record's data description). Most families changed nothing."""
        return keys

    @classmethod
    def from_format_4(cls, keys: dict, data: dict) -> dict:
        """A run of format 4 (or earlier), as ``from_format_3`` (after it, for runs before format 4):
        where a setting's value meant what another setting, new in format 5, now says, the run keeps
        that meaning (``format_4_meant`` of the family's classes: (setting, value) -> (new setting,
        its value then); a mixed likelihood read a table's categorical columns as indices). The new
        setting's value in the record, a key format 4 never had, is not trusted."""
        for klass in cls.__mro__:
            for (key, value), (new, then) in vars(klass).get("format_4_meant", {}).items():
                if keys.get(key) == value:
                    keys = {**keys, new: then}
        return keys

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def make_derived_data(
        self, model: GenerativeModel, held_out: Callable[[torch.Tensor], torch.Tensor], data: Dataset, name: str
    ) -> Dataset:  # pragma: no cover - only for families that declare derived_data
        """The data named ``derived_data`` that ``model`` makes from every split of its own
        ``data``, each batch of which ``held_out`` turns into what the model scores (its data
        transform with the fixed held-out seed), as a dataset called ``name``."""
        raise NotImplementedError(f"the {self.name} family makes no data for other runs")

    def attach(self, role: str, run: "Run", other: "Run", trained_on_mine: bool) -> None:  # pragma: no cover
        """Give ``run``'s model the run ``other`` in ``role`` (one of ``inputs``), after checking
        that it fits; ``trained_on_mine``: ``other`` was trained on ``run``'s derived data as
        they are now."""
        raise NotImplementedError(f"the {self.name} family takes no other run")
