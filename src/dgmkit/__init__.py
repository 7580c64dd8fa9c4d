"""dgmkit: likelihood-based deep generative models in PyTorch, with honest numbers.

>>> import dgmkit
>>> dgmkit.__version__
'0.1.0'
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
