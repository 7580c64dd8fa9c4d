"""The auxiliary deep generative models (Maaløe et al. 2016): M2 with an auxiliary latent a in
the inference model, q(a|x) q(y|a,x) q(z|a,x,y); the ADGM keeps M2's p(x) (with p(a|x,y,z)
beside it), the SDGM (``--skip``) makes a a second generative layer, p(a|y,z) p(x|a,y,z). The
defaults are the paper's MNIST networks: a and z of 100 dimensions, two hidden layers of 500
units in every network."""

import dataclasses
import math

from dgmkit.conditional import Decoder, GaussianEncoder
from dgmkit.families.base import DataSpec
from dgmkit.families.m2 import M2Config, _image
from dgmkit.models.adgm import AuxiliaryDGM
from dgmkit.nn import MLP
from dgmkit.settings import setting

__all__ = ["ADGMConfig"]


@dataclasses.dataclass
class ADGMConfig(M2Config):
    name = "adgm"
    summary = "semi-supervised auxiliary deep generative model (Maaløe et al.'s ADGM, or SDGM with --skip)"

    latent_dim: int = setting(100, "dimensions of the continuous latent z", min=1, max=4096)
    hidden: list[int] = setting(
        [500, 500], "hidden layer sizes of every network (input side first; the generative ones reversed)", min=1, max=16384
    )
    aux_dim: int = setting(100, "dimensions of the auxiliary latent a", min=1, max=4096)
    skip: bool = setting(
        False, "the SDGM: a is a generative layer, p(a|y,z) p(x|a,y,z), rather than p(x|y,z) p(a|x,y,z) (the ADGM)"
    )
    class_samples: int = setting(
        100, "draws of a ~ q(a|x) averaged in the classifier q(y|x) = E[q(y|a,x)] when classifying", min=1, max=10**5
    )

    def describe(self) -> str:
        kind = "SDGM" if self.skip else "ADGM"
        return (
            f"an {kind} ({self.hidden} MLPs, {self.aux_dim}-D a, {self.latent_dim}-D z, {self.classes} classes, "
            f"{self.likelihood} likelihood)"
        )

    def model_for(self, data: DataSpec) -> AuxiliaryDGM:
        d, k, m, a = math.prod(data.event_shape), self.classes, self.latent_dim, self.aux_dim
        head = self.head(data.num_levels)
        rev, act = list(reversed(self.hidden)), self.activation
        aux_encoder = GaussianEncoder(MLP(d, self.hidden, 2 * a, act), a)
        classifier = MLP(d + a, self.hidden, k, act)
        encoder = GaussianEncoder(MLP(d + a + k, self.hidden, 2 * m, act), m)
        aux_decoder = GaussianEncoder(MLP(k + m if self.skip else d + k + m, rev, 2 * a, act), a)
        decoder_in = k + m + (a if self.skip else 0)
        decoder = Decoder(MLP(decoder_in, rev, d * head.params_per_pixel, act), head, _image(data.event_shape))
        return AuxiliaryDGM(
            aux_encoder,
            classifier,
            encoder,
            aux_decoder,
            decoder,
            k,
            m,
            a,
            data.event_shape,
            skip=self.skip,
            input_scale=self.input_scale(data.num_levels),
            class_samples=self.class_samples,
        )
