import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow; run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data: $DGMKIT_DATA, else ../shared/data beside the repository."""
    path = Path(os.environ.get("DGMKIT_DATA") or SHARED)
    if not (path / "binarized_mnist").is_dir():
        pytest.skip(f"real data not found in {path} (set DGMKIT_DATA)")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _no_figure_left_open():
    """The pyplot figures a test keeps to inspect (a ``figure_png`` monkeypatched to keep them)
    closed after it: left open they pile up in the one process, and the 21st is matplotlib's
    "more than 20 figures" warning, an error where warnings are."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
