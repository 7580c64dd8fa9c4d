# isort: skip_file
"""Model families: one module each, registered by name (see ``families.base``).

Adding a family: write its module (a ``@register_family`` FamilyConfig), its networks and its
tests, and import it below: that line is its registration.
"""

from dgmkit.families.base import FIT_PATHS, FamilyConfig
from dgmkit.families.registry import FAMILIES, get_family, register_family

# the registrations, in the order `dgm train --help` lists the families
from dgmkit.families import vae, hvae, pixelvae, dvae, ae, wae, vqvae, ppca, loglinear, helmholtz  # noqa: F401
from dgmkit.families import flow, arm, diffusion, m2, hybrid  # noqa: F401

DEFAULT_FAMILY = "vae"

__all__ = ["FamilyConfig", "FAMILIES", "FIT_PATHS", "DEFAULT_FAMILY", "get_family", "register_family"]
