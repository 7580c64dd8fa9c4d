"""The edge: typed run configuration, model building and run folders."""

from dgmkit.config.build import build_model, build_objective
from dgmkit.config.run import Run, load_run
from dgmkit.config.schema import CHOICES, RunConfig, load_config_file

__all__ = ["RunConfig", "load_config_file", "CHOICES", "build_model", "build_objective", "Run", "load_run"]
