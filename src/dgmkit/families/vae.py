"""The VAE family: Gaussian latents, an amortized q(z|x), pluggable priors and posteriors,
trained by the ELBO (with beta, KL warm-up and free bits) or the IWAE bound."""

import dataclasses
from collections.abc import Callable
from typing import ClassVar, Literal, cast

import torch

from dgmkit.conditional import ConditionalDistribution, GaussianEncoder, IAFEncoder
from dgmkit.data import Dataset, Split
from dgmkit.distributions import location
from dgmkit.errors import ConfigError
from dgmkit.families.base import DataSpec, FamilyConfig, PartlyRead
from dgmkit.families.parts import ImportanceSampledEval, VAESettings, encoder_net
from dgmkit.models import VAE, GenerativeModel
from dgmkit.nn.scale import ScaleKind, scale_map
from dgmkit.objectives import ELBO, IWAE, BetaTCVAE, Objective
from dgmkit.objectives.miwae import MIWAE
from dgmkit.settings import setting
from dgmkit.transforms import iaf

__all__ = ["VAEConfig"]

_FLOWS = "--posterior iaf or --prior flow"  # the flows whose networks read hidden and activation as an MLP does


@dataclasses.dataclass
class VAEConfig(VAESettings, ImportanceSampledEval, FamilyConfig):
    name = "vae"
    summary = "variational autoencoder: Gaussian latents, ELBO or IWAE"
    # the first stage of Kingma et al.'s M1+M2: other runs train on its latents (--codes-of)
    derived_data: ClassVar[str | None] = "latents"

    latent_dim: int = setting(32, "latent dimensions M", min=1, max=4096)
    posterior: Literal["gaussian", "iaf"] = setting("gaussian", "q(z|x): diagonal Gaussian, or followed by IAF layers")
    latent_scale: ScaleKind = setting(
        "softplus",
        "how q(z|x)'s standard deviations (an IAF posterior's base) come from the encoder: softplus(raw) + 0.0001, "
        "or clipped-log-variance, raw as log sigma^2 clipped to [-6, 2] (the VampPrior reference code's)",
    )
    objective: Literal["elbo", "iwae", "tcvae", "miwae"] = setting(
        "elbo",
        "the training objective (tcvae: the ELBO with its KL split and weighted, beta-TCVAE; miwae: the "
        "importance-weighted bound of the observed entries, NaN marking missing ones)",
    )
    samples: int = setting(1, "elbo: posterior samples per datapoint", min=1, max=5000)
    iw_k: int = setting(
        5,
        "iwae, miwae: importance samples K per datapoint in the training bound (dgm eval's k is --iw-samples)",
        min=1,
        max=5000,
    )
    free_bits: float = setting(0.0, "elbo: floor (nats) on each latent dimension's batch-mean KL", min=0, max=1e3)
    tc_weight: float = setting(6.0, "tcvae: weight of the total correlation (beta of beta-TCVAE)", min=0, max=1e6)
    mi_weight: float = setting(1.0, "tcvae: weight of the index-code mutual information (alpha)", min=0, max=1e6)
    dim_kl_weight: float = setting(1.0, "tcvae: weight of the dimension-wise KL (gamma)", min=0, max=1e6)
    tc_estimator: Literal["mss", "mws"] = setting(
        "mss", "tcvae: estimator of q(z) from a batch: minibatch stratified sampling or the batch mixture"
    )

    @classmethod
    def claims_v1(cls, flat: dict) -> bool:
        return flat.get("model", "vae") == "vae" and flat.get("latent", "gaussian") == "gaussian"

    def validate(self) -> None:
        if self.objective == "tcvae" and (self.prior != "standard" or self.posterior != "gaussian"):
            raise ConfigError(
                "objective tcvae needs the standard prior (its dimension-wise KL needs a factorized p(z)) "
                "and the gaussian posterior"
            )
        if self.prior == "vampprior" and self.posterior == "iaf":
            raise ConfigError(
                "the VampPrior is the mixture of q(z|u_k) at its pseudo-inputs, which needs a Gaussian q(z|x); "
                "an IAF posterior's density at any z would need its sequential inverse (use posterior gaussian)"
            )
        if self.free_bits and (self.objective != "elbo" or self.prior != "standard" or self.posterior != "gaussian"):
            raise ConfigError("free_bits needs the elbo objective, the standard prior and the gaussian posterior")

    def inert_settings(self) -> dict[str, str]:
        inert = {**super().inert_settings(), **self.prior_inert_settings()}
        if self.posterior == "iaf":  # (its layers: flow_layers)
            inert.pop("flow_layers", None)
        if self.objective != "elbo":
            inert["samples"] = "--objective elbo"
        if self.objective != "elbo" or self.prior != "standard" or self.posterior != "gaussian":  # (validate: another value)
            inert["free_bits"] = "--objective elbo with the standard prior and the gaussian posterior"
        elif self.beta == 0:  # (the floor is on the KL term, which beta 0 weighs by 0)
            inert["free_bits"] = "--beta above 0"
        if self.objective not in ("iwae", "miwae"):
            inert["iw_k"] = "--objective iwae or miwae"
        if self.objective == "miwae":  # (its bound weighs no KL term: beta and its warm-up go unread)
            inert.update(dict.fromkeys(("beta", "warmup"), "--objective elbo, iwae or tcvae"))
        if self.objective != "tcvae":
            inert.update(dict.fromkeys(("tc_weight", "mi_weight", "dim_kl_weight", "tc_estimator"), "--objective tcvae"))
        return inert

    def activation_needs(self) -> str | None:
        needs = super().activation_needs()  # (an IAF posterior's and a flow prior's networks read it too)
        return None if needs is None or self.posterior == "iaf" or self.prior == "flow" else f"{needs}, {_FLOWS}"

    def hidden_read(self) -> PartlyRead | None:
        part = super().hidden_read()  # (an IAF posterior's and a flow prior's networks read every entry)
        if part is None or self.posterior == "iaf" or self.prior == "flow":
            return None
        return dataclasses.replace(part, needs=f"{part.needs}, {_FLOWS}")

    def describe(self) -> str:
        return (
            f"a VAE ({self.hidden} {self.encoder.upper() if self.encoder == 'mlp' else self.encoder} networks, "
            f"{self.latent_dim}-D latent, {self.prior} prior, {self.likelihood.capitalize()} likelihood)"
        )

    def training_objective(self) -> Objective:
        if self.objective == "iwae":
            return IWAE(k=self.iw_k)
        if self.objective == "miwae":
            return MIWAE(k=self.iw_k)
        if self.objective == "tcvae":
            return BetaTCVAE(self.mi_weight, self.tc_weight, self.dim_kl_weight, self.tc_estimator)
        return ELBO(num_samples=self.samples, free_bits=self.free_bits)

    def model_for(self, data: DataSpec) -> VAE:
        self.check_networks(data.event_shape)
        m = self.latent_dim
        decoder = self.build_decoder(data.event_shape, m, self.head(data.num_levels))
        encoder: ConditionalDistribution
        sigma = scale_map(self.latent_scale, min_scale=1e-4)
        if self.posterior == "iaf":
            c = self.hidden[-1]  # the context h(x) of the IAF layers
            flow = iaf(m, self.hidden, self.flow_layers, context_features=c, act=self.activation)
            encoder = IAFEncoder(encoder_net(self, data.event_shape, 2 * m + c), m, c, flow, scale_map=sigma)
        else:
            encoder = GaussianEncoder(encoder_net(self, data.event_shape, 2 * m), m, scale_map=sigma)
        scale = self.input_scale(data.num_levels)
        prior = self.build_prior(m, self.hidden, self.activation, scale, data)
        return VAE(encoder, decoder, prior, scale, fill_missing=not self.one_hot_columns())

    @torch.no_grad()
    def make_derived_data(
        self, model: GenerativeModel, held_out: Callable[[torch.Tensor], torch.Tensor], data: Dataset, name: str
    ) -> Dataset:
        """Each image's representative point of q(z|x) (the posterior mean; an IAF posterior's
        code at eps = 0) as continuous vectors (N, 1, 1, M), of every split (each image as the
        run's model sees held-out data, ``held_out``), with the labels; for a Gaussian posterior
        also its standard deviations (``Split.x_scale``), from which a run may draw."""
        vae = cast(VAE, model)  # what build() makes
        gaussian = self.posterior == "gaussian"
        splits = {}
        for split in ("train", "valid", "test"):
            s = data.split(split)
            qs = [vae.posterior(b) for b in held_out(s.x).split(1000)]
            z = torch.cat([location(q) for q in qs])  # (N, M)
            scale = torch.cat([q.stddev for q in qs]).float()[:, None, None, :] if gaussian else None
            splits[split] = Split(z.float()[:, None, None, :], s.y, x_scale=scale)
        return Dataset(name, splits["train"], splits["valid"], splits["test"], num_levels=None)
