"""The one golden helper: compare etch against ONNX Runtime, or two result dicts.

- `assert_matches_ort(model, inputs)`: run ONNX Runtime on the model and etch's reference
  interpreter on the imported graph; compare every output. `model` is an ONNX ModelProto,
  a path, serialized bytes, or an etch `Graph` (exported to ONNX for ORT; it must hold only
  ops ORT can run). Returns the reference outputs.
- `assert_close(actual, expected, rtol, atol)`: floats to a tolerance, integers and bools
  exactly; same keys, shapes and dtype kinds.
- `assert_bitexact(actual, expected)`: same keys, dtypes, shapes and bytes.

Used by the importer tests, every pass (before vs after) and every backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from compiler import onnx_export, onnx_import, reference
from compiler.ir import Graph
from compiler.ops.common import is_integer

Arrays = Mapping[str, np.ndarray]


def run_ort(model: onnx.ModelProto, inputs: Arrays) -> dict[str, np.ndarray]:
    """Run a ModelProto in ONNX Runtime (CPU, graph optimisations off: plain op semantics)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    feed = {i.name: np.asarray(inputs[i.name]) for i in sess.get_inputs()}
    return dict(zip(names, sess.run(names, feed)))


def _as_proto(model: Any) -> onnx.ModelProto:
    if isinstance(model, Graph):
        return onnx_export.export_model(model)
    if isinstance(model, (str, os.PathLike)):
        return onnx.load(str(model))
    return onnx_import.load_model(model)


def assert_matches_ort(model: Any, inputs: Arrays, rtol: float = 1e-4,
                       atol: float = 1e-5) -> dict[str, np.ndarray]:
    """Assert that etch's reference on `model` matches ONNX Runtime on every output.

    A model with dynamic input dims is imported with the shapes of `inputs`. Integer and
    bool outputs must be equal; floats within `rtol`/`atol`. Returns etch's outputs.
    """
    proto = _as_proto(model)
    if isinstance(model, Graph):
        graph = model
    else:
        inits = {t.name for t in proto.graph.initializer}
        names = {i.name for i in proto.graph.input} - inits
        shapes = {k: tuple(np.shape(v)) for k, v in inputs.items() if k in names}
        graph = onnx_import.import_model(proto, input_shapes=shapes)
    expected = run_ort(proto, inputs)
    actual = reference.run(graph, inputs)
    assert_close(actual, expected, rtol=rtol, atol=atol)
    return actual


def _check_keys(actual: Arrays, expected: Arrays) -> None:
    missing, extra = set(expected) - set(actual), set(actual) - set(expected)
    assert not missing and not extra, f"output names differ: missing {sorted(missing)}, " \
                                      f"unexpected {sorted(extra)}"


def _exact(dtype: np.dtype) -> bool:
    return dtype.kind in "bO" or is_integer(dtype)


def assert_close(actual: Arrays, expected: Arrays, rtol: float = 1e-4,
                 atol: float = 1e-5) -> None:
    """Floats within rtol/atol (NaNs must match), integers (int4 too) and bools exactly."""
    _check_keys(actual, expected)
    for name, want in expected.items():
        got, want = np.asarray(actual[name]), np.asarray(want)
        assert got.shape == want.shape, f"{name}: shape {got.shape} != expected {want.shape}"
        if _exact(want.dtype) or _exact(got.dtype):
            assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != expected {want.dtype}"
            np.testing.assert_array_equal(got.astype(np.int64) if is_integer(got.dtype) else got,
                                          want.astype(np.int64) if is_integer(want.dtype) else want,
                                          err_msg=f"output {name}")
        else:
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                       rtol=rtol, atol=atol, equal_nan=True,
                                       err_msg=f"output {name}")


def assert_bitexact(actual: Arrays, expected: Arrays) -> None:
    """Same names, dtypes, shapes and bytes (integer paths: TVM/Verilog vs reference)."""
    _check_keys(actual, expected)
    for name, want in expected.items():
        got, want = np.asarray(actual[name]), np.asarray(want)
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != expected {want.dtype}"
        assert got.shape == want.shape, f"{name}: shape {got.shape} != expected {want.shape}"
        if got.tobytes() != want.tobytes():
            bad = np.argwhere(np.ascontiguousarray(got).view(np.uint8).reshape(got.shape + (-1,))
                              != np.ascontiguousarray(want).view(np.uint8).reshape(
                                  want.shape + (-1,)))
            first = tuple(int(i) for i in bad[0][:-1]) if len(bad) else ()
            raise AssertionError(f"{name}: not bit-exact; first difference at {first}: "
                                 f"{got[first]!r} != {want[first]!r} "
                                 f"({len({tuple(b[:-1]) for b in bad})} elements differ)")


class RandomInits:
    """Seeded random initializers for hand-built test models: `weight` (scaled by the fan-in)
    and `bias` return the name they add to `tensors`; `rng` also draws the inputs."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.tensors: list[onnx.TensorProto] = []

    def weight(self, name: str, *shape: int) -> str:
        scale = 1 / np.sqrt(np.prod(shape[1:]))
        data = (self.rng.normal(size=shape) * scale).astype(np.float32)
        self.tensors.append(onnx.numpy_helper.from_array(data, name))
        return name

    def bias(self, name: str, n: int) -> str:
        data = self.rng.normal(size=n).astype(np.float32)
        self.tensors.append(onnx.numpy_helper.from_array(data, name))
        return name

    def model(self, name: str, nodes: list, shapes: Mapping[str, list[int]],
              outputs: list[str]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        """The opset-17 model of `nodes` with these initializers, float inputs of `shapes`
        and `outputs`, and random inputs for it (drawn from `rng`, in `shapes`' order)."""
        value = onnx.helper.make_tensor_value_info
        graph = onnx.helper.make_graph(
            nodes, name, [value(k, onnx.TensorProto.FLOAT, s) for k, s in shapes.items()],
            [value(o, onnx.TensorProto.FLOAT, None) for o in outputs], self.tensors)
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        return model, {k: self.rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
