"""xent-numba: per-row categorical (CCE) and binary (BCE) cross-entropy, compiled with Numba.

>>> import xent_numba as xn
>>> xn.cce([[0.1, 0.3, 0.2, 0.4]], [1], log_base=10)  # doctest: +SKIP
array([0.52287875])
"""

from .api import bce, cce, score
from .errors import InvalidInputError

__version__ = "0.1.0"
__all__ = ["cce", "bce", "score", "InvalidInputError", "__version__"]
