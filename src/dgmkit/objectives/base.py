"""The objective interface."""

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar, cast, get_args, get_origin

import torch

from dgmkit.errors import finite_at_least

__all__ = ["Objective", "BoundTerms", "unit_weight", "at_least"]

# the kind of model an estimator takes (an ELBO a latent-variable model, maximum likelihood an exact one)
ModelT = TypeVar("ModelT", contravariant=True)
SettingT = TypeVar("SettingT", int, float)


def unit_weight(beta: float | torch.Tensor) -> bool:
    """Whether the KL weight ``beta`` is known to be 1 (the plain bound, computed as such). A
    weight given as a tensor (the compiled training step's, which must not branch on its value,
    else it is compiled again for every value of a warm-up) never is: the weighted form is
    computed, the same value up to rounding."""
    return not isinstance(beta, torch.Tensor) and beta == 1.0


def at_least(name: str, value: SettingT, low: float) -> SettingT:
    """An estimator's real-valued setting ``value`` (a weight, free bits), refused (ValueError
    naming it) unless it is a finite number of at least ``low`` (NaN never is, nor a bool);
    returns it, for the estimator to keep. Counts: ``errors.whole_at_least``."""
    return cast(SettingT, finite_at_least(name, value, low))


class BoundTerms(NamedTuple):
    """The terms of an objective that is a bound and nothing else: ``bound``, a lower bound on
    log p(x) in nats (of what the objective says: the integer data, the observed entries), and
    ``loss``, its negation."""

    loss: torch.Tensor
    bound: torch.Tensor


def _checking_model(call: Callable[..., Any]) -> Callable[..., Any]:
    """An objective's ``__call__`` that first checks the model's kind (``Objective.check_model``):
    called directly from Python, an ELBO of a flow met "'FlowModel' object has no attribute
    'posterior'", M2's objective of a VAE "has no attribute 'enumerate'". (One isinstance a step.)"""

    @functools.wraps(call)
    def checked(self: "Objective", model: Any, *args: Any, **kwargs: Any) -> Any:
        self.check_model(model)
        return call(self, model, *args, **kwargs)

    checked.checks_model = True  # type: ignore[attr-defined]
    return checked


class Objective(ABC, Generic[ModelT]):
    """An estimator: ``objective(model, x, beta)`` returns a NamedTuple of per-example tensors
    of shape (B,) with at least ``loss`` (what training minimizes) and the field named by
    ``score``: the quantity that training monitors (early stopping, the best checkpoint), in
    nats per datapoint, higher is better. Its name says what it is: ``elbo`` (a bound on
    log p(x)), ``iwae`` (the k-sample bound), ``log_px`` (an exact log-likelihood),
    ``bound`` (another bound on log p(x)), ``recon`` (a reconstruction score, no bound) or
    ``objective`` (a weighted objective that is not a bound, such as beta-TCVAE's).
    ``score_label`` is how people read it.

    ``setup(train_size)`` is called once by the Trainer with the training set's size, and
    ``update(step)`` before every training step with the global step
    count, for schedules such as a relaxation temperature; the step is checkpointed, so a
    resumed run continues the schedule exactly."""

    score: ClassVar[str] = "elbo"
    score_label: ClassVar[str] = "ELBO"
    # takes_labels: called as ``objective(model, x, beta, y=y)`` with integer labels (B,), -1
    # marking unlabelled examples; the Trainer passes them (all of them in validation)
    takes_labels: ClassVar[bool] = False
    handles_missing: ClassVar[bool] = False  # whether x may hold missing entries (NaN)
    # label_terms: terms defined on the labelled examples only (0 where the label is hidden),
    # which the objective's ``labelled`` term marks (1 where the label is kept): validation
    # averages them over the labelled examples, and leaves them out where there are none
    label_terms: ClassVar[tuple[str, ...]] = ()
    # rows_per_step: the fewest datapoints whose terms a step's estimate needs together (a batch's
    # MMD needs two codes): the Trainer refuses a batch, or one process's share of it, of fewer
    rows_per_step: int = 1

    # model_type: the kind of model it takes, X of its base Objective[X] (set for each subclass)
    model_type: ClassVar[type] = object

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            kind = get_args(base)[0] if get_origin(base) is Objective else None
            # (a typing Protocol is a kind isinstance can test only where it is runtime-checkable)
            if isinstance(kind, type) and (
                not getattr(kind, "_is_protocol", False) or getattr(kind, "_is_runtime_protocol", False)
            ):
                cls.model_type = kind
        call = cls.__dict__.get("__call__")
        if call is not None and not getattr(call, "checks_model", False):
            cls.__call__ = _checking_model(call)  # type: ignore[method-assign]

    def check_model(self, model: object) -> None:
        """A TypeError unless ``model`` is of the kind this objective takes (``model_type``): the
        Trainer asks before its first step (a model of another kind met an AttributeError deep in
        the step)."""
        inner = getattr(model, "_orig_mod", model)  # (torch.compile's wrapper: the module it compiled)
        if not isinstance(inner, self.model_type):
            raise TypeError(
                f"{type(self).__name__} trains a {self.model_type.__name__} ({self.model_type.__module__}), and the "
                f"model is a {type(inner).__name__}"
            )

    @abstractmethod
    def __call__(self, model: ModelT, x: torch.Tensor, beta: float = 1.0) -> NamedTuple: ...

    @property
    def label(self) -> str:
        """The score's name for display (an instance may refine it, e.g. with its k)."""
        return self.score_label

    def update(self, step: int) -> None:  # noqa: B027 - a hook, empty by default
        pass

    def setup(self, train_size: int) -> None:  # noqa: B027 - a hook, empty by default
        """Called once by the Trainer with the number of training datapoints (for estimators
        whose minibatches stand for the whole training set)."""

    def setup_labels(self, labelled: int, added: int = 0) -> None:  # noqa: B027 - a hook, empty by default
        """Called by the Trainer (again where a ``LabelledRows`` part adds rows), for objectives
        that take labels, with the number of labelled training datapoints and ``added``, the
        labelled rows drawn into every batch besides the batch's share of the shuffled training
        set (0: batches are uniform draws)."""
