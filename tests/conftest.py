"""Shared pytest set-up.

The GPU kernels run in the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) unless the run
selects the ``gpu`` marker (``pytest -m gpu`` on a GPU machine). The variable must be set
before anything imports ``numba.cuda``, hence here. The simulator does not make a GPU
"usable" for the library (``backend.cuda_usable()`` stays False, so ``device="auto"`` and
``device="cuda"`` behave as on a machine without a GPU); tests/test_gpu.py opts in.
"""

from __future__ import annotations

import os

from tests.s3server import s3  # noqa: F401  (the fixture, for every test module)


def _real_gpu_run(config) -> bool:
    expr = (config.getoption("markexpr", "") or "").replace(" ", "")
    return "gpu" in expr and "notgpu" not in expr


def pytest_configure(config):
    if not _real_gpu_run(config):
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
