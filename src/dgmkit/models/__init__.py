"""Models: composition of encoders, decoders and priors, behind one contract (``models.base``)."""

from dgmkit.models.adgm import AuxiliaryDGM
from dgmkit.models.autoencoder import Autoencoder
from dgmkit.models.autoregressive import MADEARM, AutoregressiveModel, CausalConvARM, GatedPixelCNN
from dgmkit.models.base import (
    AnyOrderModel,
    CapabilityError,
    ClosedFormFit,
    DecodedModel,
    EMFit,
    EnumeratedELBO,
    ExactLatentVariableModel,
    ExactLikelihoodModel,
    GenerativeModel,
    JointTerms,
    LatentVariableModel,
    ModelELBO,
    TimeSampledBound,
    VariationalModel,
)
from dgmkit.models.categorical_vae import CategoricalVAE
from dgmkit.models.classifier import Classifier
from dgmkit.models.dequantization import LogitNormalDequantizer, VariationallyDequantizedFlow
from dgmkit.models.diffusion import GaussianDiffusion, MaskedDiffusion
from dgmkit.models.flow import FlowModel
from dgmkit.models.helmholtz import HelmholtzMachine
from dgmkit.models.hvae import HierarchicalVAE
from dgmkit.models.hybrid import HybridFlow
from dgmkit.models.loglinear import LogLinearLVM
from dgmkit.models.m2 import M2, SemiSupervisedVAE
from dgmkit.models.noise_schedule import SCHEDULES, DDPMSchedule, LearnedSchedule, LinearSchedule, NoiseSchedule
from dgmkit.models.pixelvae import PixelVAE
from dgmkit.models.ppca import PPCA
from dgmkit.models.terms import Term
from dgmkit.models.vae import VAE
from dgmkit.models.vdvae import DeepTopDownVAE
from dgmkit.models.vqvae import VQVAE, CodeGridPrior
from dgmkit.models.vqvae2 import TwoLevelVQVAE
from dgmkit.models.wae import WassersteinAutoencoder

__all__ = [
    "Term",
    "GenerativeModel",
    "ExactLikelihoodModel",
    "VariationalModel",
    "DecodedModel",
    "LatentVariableModel",
    "ExactLatentVariableModel",
    "ClosedFormFit",
    "EMFit",
    "EnumeratedELBO",
    "ModelELBO",
    "Classifier",
    "JointTerms",
    "CapabilityError",
    "Autoencoder",
    "WassersteinAutoencoder",
    "VAE",
    "CategoricalVAE",
    "HierarchicalVAE",
    "DeepTopDownVAE",
    "PixelVAE",
    "VQVAE",
    "TwoLevelVQVAE",
    "CodeGridPrior",
    "HelmholtzMachine",
    "LogLinearLVM",
    "PPCA",
    "FlowModel",
    "VariationallyDequantizedFlow",
    "LogitNormalDequantizer",
    "AutoregressiveModel",
    "CausalConvARM",
    "GatedPixelCNN",
    "MADEARM",
    "M2",
    "SemiSupervisedVAE",
    "AuxiliaryDGM",
    "HybridFlow",
    "TimeSampledBound",
    "AnyOrderModel",
    "GaussianDiffusion",
    "MaskedDiffusion",
    "NoiseSchedule",
    "LearnedSchedule",
    "LinearSchedule",
    "DDPMSchedule",
    "SCHEDULES",
]
