"""etch's front half: the IR, ONNX import/export, the reference interpreter and the driver.

`compiler.compile(model, target=...)` is the Python entry point (see `compiler.driver`).
"""

from __future__ import annotations

from typing import Any

from compiler import tvm_import

__version__ = "0.1.0"

tvm_import.install()  # TVM, imported lazily by the backends and executors, without torch


def compile(model: Any, target: str = "cpu", **options: Any) -> Any:
    """Compile an ONNX model (path or ModelProto) for `target`; see `compiler.driver.compile`."""
    from compiler import driver

    return driver.compile(model, target=target, **options)
