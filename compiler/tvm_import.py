"""TVM without torch. Where torch is installed (the zoo's `models` extra), `import tvm`
imports it too: `tvm_ffi` on its own import (to register conversions for torch tensors) and
`tvm.relax.base_py_module`; both take an ImportError as "no torch". etch hands TVM numpy
arrays and TVM tensors only, and torch was most of TVM's import: `etch run` of the digits
CNN 3.8 -> 1.9 s wall on the 2-vCPU Xeon (the test suite running beside it), `import tvm`
3.5 -> 1.6-2.1 s.

`install()` (called by `compiler/__init__.py`, which every etch module imports before TVM:
`runtime` and `backends` import `compiler.errors`) puts a finder on `sys.meta_path` that
refuses torch while, and only while, `tvm` or `tvm_ffi` is executing its first import. A
torch imported before (the process has paid for it already) or after (a user's, a test's) is
the real one, and tvm_ffi still takes its tensors through the DLPack protocol.
"""

from __future__ import annotations

import importlib.abc
import sys

TVM = ("tvm", "tvm_ffi")  # whose first import may not import torch


class _TorchOutsideTvm(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        """Refuse torch during TVM's import; any other import goes on to the next finder."""
        if name == "torch" and any(map(_initialising, TVM)):
            raise ModuleNotFoundError("etch imports TVM without torch", name=name)


def _initialising(name: str) -> bool:
    """Whether module `name` is in the middle of its first import (Python marks its spec
    `_initializing` from the start of its execution to the end)."""
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def install() -> None:
    """Put the finder first on `sys.meta_path`, once per process."""
    if not any(isinstance(f, _TorchOutsideTvm) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchOutsideTvm())


__all__ = ["install"]
