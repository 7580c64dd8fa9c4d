"""Models: composition of encoders, decoders and priors."""

from dgmkit.models.autoencoder import Autoencoder
from dgmkit.models.base import ExactLatentVariableModel, ExactLikelihoodModel
from dgmkit.models.categorical_vae import CategoricalVAE
from dgmkit.models.dequantization import VariationallyDequantizedFlow
from dgmkit.models.flow import FlowModel
from dgmkit.models.helmholtz import HelmholtzMachine
from dgmkit.models.loglinear import LogLinearLVM
from dgmkit.models.ppca import PPCA
from dgmkit.models.vae import VAE

__all__ = [
    "Autoencoder",
    "VAE",
    "CategoricalVAE",
    "HelmholtzMachine",
    "LogLinearLVM",
    "PPCA",
    "ExactLikelihoodModel",
    "ExactLatentVariableModel",
    "FlowModel",
    "VariationallyDequantizedFlow",
]
