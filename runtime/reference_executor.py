"""Runs `ref` artifacts: the saved graph through the numpy reference interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler import onnx_import, reference
from runtime.executor import Executor


class ReferenceExecutor(Executor):
    def __init__(self, path: Path, manifest: dict) -> None:
        super().__init__(manifest)
        self.graph = onnx_import.import_model(path / manifest["graph"])

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return reference.run(self.graph, inputs)


def load(path: Path, manifest: dict, **kwargs) -> ReferenceExecutor:
    return ReferenceExecutor(path, manifest)
