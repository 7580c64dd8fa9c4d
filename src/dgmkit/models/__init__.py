"""Models: composition of encoders, decoders and priors."""

from dgmkit.models.base import ExactLikelihoodModel
from dgmkit.models.categorical_vae import CategoricalVAE
from dgmkit.models.helmholtz import HelmholtzMachine
from dgmkit.models.loglinear import LogLinearLVM
from dgmkit.models.ppca import PPCA
from dgmkit.models.vae import VAE

__all__ = ["VAE", "CategoricalVAE", "HelmholtzMachine", "LogLinearLVM", "PPCA", "ExactLikelihoodModel"]
