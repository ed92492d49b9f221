"""Whether this machine can run the edge target's tests: the aarch64 cross compilers and
qemu-aarch64 with an aarch64 sysroot (the Makefile installs them from Debian). One place for
the check and its skip reason, for every test module that builds or runs for edge."""

from __future__ import annotations

import shutil

import pytest

from backends.tvm import edge
from runtime import edge_executor

MISSING = [t for t in (edge.CROSS_CC, edge.CROSS_CXX) if shutil.which(t) is None] + (
    ["qemu-aarch64 with an aarch64 sysroot"] if edge_executor.find_qemu() is None else [])
REASON = (f"the edge target needs {', '.join(MISSING)} (Debian: gcc-aarch64-linux-gnu "
          "g++-aarch64-linux-gnu qemu-user libc6-arm64-cross)")
# a test (or a module's pytestmark) that needs them: marked `edge`, skipped without them
NEEDS_EDGE = [pytest.mark.edge, pytest.mark.skipif(bool(MISSING), reason=REASON)]


def needs_edge(fn):
    """Decorator form of NEEDS_EDGE."""
    for mark in NEEDS_EDGE:
        fn = mark(fn)
    return fn
