"""etch's entry points import TVM without torch (compiler/tvm_import.py), and torch imported
afterwards is the real one."""

import importlib.util
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                reason="torch is not installed: nothing to keep out")

_CHECK = """
import sys
import {entry}
import tvm
from tvm import relax, te
assert "torch" not in sys.modules, "TVM's import pulled in torch"
import torch
assert torch.zeros(3).add(1).sum().item() == 3.0
import numpy as np
from tvm import tirx
a = te.placeholder((4,), name="a")
f = tvm.compile(te.create_prim_func([a, te.compute((4,), lambda i: a[i] * 2)]), target="llvm")
x, y = tvm.runtime.tensor(np.ones(4, "float32")), tvm.runtime.tensor(np.zeros(4, "float32"))
f(x, y)
assert (y.numpy() == 2).all()
"""


def test_tvm_imports_without_torch():
    """Through the CLI's module (every etch module imports `compiler` first, which installs
    the finder: `runtime` and `backends` through `compiler.errors`)."""
    entry = "compiler.cli"
    out = subprocess.run([sys.executable, "-c", _CHECK.format(entry=entry)],
                         check=False, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_torch_imported_first_stays():
    code = "import torch, runtime, tvm, sys; assert sys.modules['torch'] is torch"
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
