"""The edge: the typed run configuration, run folders and the migration of old ones.

The package exports the schema's public names (``config.schema.__all__``) and those below."""

from dgmkit.config import schema
from dgmkit.config.migrate import FORMAT, migrate_record
from dgmkit.config.run import Run, build_model, build_objective, load_run, run_record, trainer_options
from dgmkit.config.schema import *  # noqa: F403 - the schema's public names, its __all__

__all__ = [
    *schema.__all__,
    "build_model",
    "build_objective",
    "trainer_options",
    "Run",
    "load_run",
    "run_record",
    "migrate_record",
    "FORMAT",
]
