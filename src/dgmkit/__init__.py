"""dgmkit: likelihood-based deep generative models in PyTorch, with honest numbers.

>>> import dgmkit
>>> dgmkit.__version__
'0.1.0'
"""

__version__ = "0.1.0"
__all__ = ["__version__", "train", "load", "sample", "reconstruct", "interpolate", "evaluate"]


def __getattr__(name: str) -> object:
    """``dgmkit.train``, ``load``, ``sample``, ``reconstruct``, ``interpolate`` and ``evaluate``
    (``dgmkit.api``), imported on first use so that ``import dgmkit`` stays light."""
    if name in ("train", "load", "sample", "reconstruct", "interpolate", "evaluate"):
        from dgmkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'dgmkit' has no attribute {name!r}")
