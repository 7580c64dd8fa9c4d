# isort: skip_file
"""Model families: one module each, registered by name (see ``families.base``).

Adding a family: write its module (a FamilyConfig dataclass), its networks and its tests, and
import it and name its class below: that is its registration.
"""

from dgmkit.families.base import FIT_PATHS, DataSpec, FamilyConfig
from dgmkit.families.registry import FAMILIES, get_family, register_family

from dgmkit.families import vae, hvae, pixelvae, dvae, ae, wae, vqvae, ppca, loglinear, helmholtz
from dgmkit.families import flow, arm, diffusion, m2, adgm, hybrid

# the registrations, in the order `dgm train --help` lists the families
for _family in (
    vae.VAEConfig,
    hvae.HVAEConfig,
    pixelvae.PixelVAEConfig,
    dvae.DiscreteVAEConfig,
    ae.AutoencoderConfig,
    wae.WAEConfig,
    vqvae.VQVAEConfig,
    ppca.PPCAConfig,
    loglinear.LogLinearConfig,
    helmholtz.HelmholtzConfig,
    flow.FlowConfig,
    arm.ARMConfig,
    diffusion.DiffusionConfig,
    m2.M2Config,
    adgm.ADGMConfig,
    hybrid.HybridConfig,
):
    register_family(_family)
del _family

DEFAULT_FAMILY = "vae"

__all__ = ["FamilyConfig", "DataSpec", "FAMILIES", "FIT_PATHS", "DEFAULT_FAMILY", "get_family", "register_family"]
