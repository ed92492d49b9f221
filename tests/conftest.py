"""Shared fixtures. Puts the repository root on sys.path so tests can `import tests.golden`
(the editable install covers the packages, not `tests/`), and on PYTHONPATH so the CLI runs
that tests spawn (`python -m compiler.cli`, the benchmarks' workers), from any working
directory, import this checkout, not whichever checkout the shared virtualenv's editable
install last pointed at."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [ROOT, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != ROOT)])


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: tests are deterministic."""
    return np.random.default_rng(0)
