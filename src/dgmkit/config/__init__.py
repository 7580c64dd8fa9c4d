"""The edge: the typed run configuration, run folders and the migration of old ones."""

from dgmkit.config.migrate import FORMAT, migrate_record
from dgmkit.config.run import Run, build_model, build_objective, load_run, run_record, trainer_options
from dgmkit.config.schema import SECTIONS, DataConfig, EvalConfig, OptimConfig, RunConfig, load_config_file

__all__ = [
    "RunConfig",
    "DataConfig",
    "OptimConfig",
    "EvalConfig",
    "SECTIONS",
    "load_config_file",
    "build_model",
    "build_objective",
    "trainer_options",
    "Run",
    "load_run",
    "run_record",
    "migrate_record",
    "FORMAT",
]
