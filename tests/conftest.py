"""Shared fixtures. Puts the repository root on sys.path so tests can `import tests.golden`
(the editable install covers the packages, not `tests/`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: tests are deterministic."""
    return np.random.default_rng(0)
