"""Score a Dask DataFrame: ``xent_numba.dask.score`` (the public name of ``engine.dask.score``)."""

from .engine.dask import score

__all__ = ["score"]
