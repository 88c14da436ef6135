"""The tree passes ``ruff check`` with the project's configuration (``[tool.ruff]`` in
pyproject.toml): the package, the tests, the benchmarks and the root ``cli.py``.

Ruff is pinned in the ``test`` extra (and in .pre-commit-config.yaml), since a new release
adds rules; without ruff installed the test is skipped, saying so."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("xent_numba", "tests", "benchmarks", "cli.py")


def test_ruff_finds_nothing():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' pins it)")
    version = subprocess.run([sys.executable, "-m", "ruff", "--version"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", *PATHS],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, f"{version} found:\n{res.stdout}{res.stderr}"
