"""The semi-supervised VAE family (Kingma et al. 2014's M2): a class y and a continuous z as
latents, y observed for the labelled examples (``--labels N``) and summed out exactly for the
others; q(y|x) is the classifier, scored by ``dgm eval``'s accuracy."""

import dataclasses
import math
from typing import ClassVar, cast

from dgmkit.conditional import Decoder, GaussianEncoder
from dgmkit.families.base import DataSpec, FamilyConfig
from dgmkit.families.parts import Activation, LabelledBatches, LikelihoodSettings
from dgmkit.models.m2 import M2, SemiSupervisedVAE
from dgmkit.nn import MLP
from dgmkit.objectives import Objective
from dgmkit.objectives.semisupervised import M2Objective
from dgmkit.settings import setting

__all__ = ["M2Config"]


@dataclasses.dataclass
class M2Config(LabelledBatches, LikelihoodSettings, FamilyConfig):
    name = "m2"
    summary = "semi-supervised VAE (Kingma et al.'s M2): labels where kept, summed out elsewhere"
    unused_settings: ClassVar[frozenset[str]] = frozenset({"table_input"})  # (labels: no table reaches its networks)

    classes: int = setting(10, "classes K of the labels (0..K-1)", min=2, max=1000)
    latent_dim: int = setting(50, "dimensions of the continuous latent z", min=1, max=4096)
    hidden: list[int] = setting(
        [500], "hidden layer sizes of q(y|x), q(z|x,y) and p(x|y,z) (input side first)", min=1, max=16384
    )
    activation: Activation = setting("relu", "the networks' activation")
    alpha: float = setting(
        0.1,
        "weight of the classification term E_labelled[log q(y|x)], as a fraction a of the training set's size N "
        "(Kingma et al.'s alpha = a N, with a = 0.1; each of the N_l labelled examples carries a N / N_l)",
        min=0,
        max=1e6,
    )
    labelled_batch: int = setting(
        100,
        "labelled rows added to every batch (drawn from the kept labels; 0: none, batches are uniform draws)",
        min=0,
        max=10**6,
    )
    samples: int = setting(
        1, "draws of the continuous latents per datapoint that the training bound averages", min=1, max=1000
    )

    @property
    def default_iw_samples(self) -> int:
        return 1000  # each draw holds one z per class: K decoder passes

    def describe(self) -> str:
        return (
            f"an M2 model ({self.hidden} MLPs, {self.latent_dim}-D z, {self.classes} classes, {self.likelihood} likelihood)"
        )

    def training_objective(self) -> Objective:
        return M2Objective(self.alpha, num_samples=self.samples)

    def model_for(self, data: DataSpec) -> SemiSupervisedVAE:
        d, k, m = math.prod(data.event_shape), self.classes, self.latent_dim
        head = self.head(data.num_levels)
        rev = list(reversed(self.hidden))
        classifier = MLP(d, self.hidden, k, self.activation)
        encoder = GaussianEncoder(MLP(d + k, self.hidden, 2 * m, self.activation), m)
        decoder = Decoder(MLP(m + k, rev, d * head.params_per_pixel, self.activation), head, _image(data.event_shape))
        return M2(classifier, encoder, decoder, k, m, data.event_shape, self.input_scale(data.num_levels))


def _image(event_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) for the decoder: vectors of D values are (1, 1, D) images."""
    return cast("tuple[int, int, int]", tuple(event_shape)) if len(event_shape) == 3 else (1, 1, math.prod(event_shape))
