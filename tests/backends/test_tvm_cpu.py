"""The cpu target end to end: ONNX -> compile -> save -> load -> run, against ONNX Runtime.

Op families (tests/backends/tvm_cases.py), hand-built etch.Fused graphs against the numpy
reference, the model zoo, bad inputs, and the artifact's contents.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import compiler
import runtime
from backends.tvm import lower
from backends.tvm.target import VECTOR_FEATURES
from compiler import reference
from compiler.errors import EtchError
from compiler.ir import Graph, Node, Value
from compiler.options import CompileOptions
from runtime import tvm_executor
from tests.backends import tvm_cases
from tests.golden import assert_close, run_ort

RTOL, ATOL = 1e-3, 1e-4


@pytest.mark.parametrize("family", sorted(tvm_cases.FAMILIES))
def test_op_family_matches_ort(family: str, tmp_path) -> None:
    model, inputs = tvm_cases.FAMILIES[family]()
    art = compiler.compile(model, target="cpu")
    saved = art.save(tmp_path / "art")
    assert_close(runtime.load(saved).run(inputs), run_ort(model, inputs), rtol=RTOL, atol=ATOL)


def test_unfused_graph_matches_ort() -> None:
    model, inputs = tvm_cases.conv()
    art = compiler.compile(model, target="cpu", fuse=False)
    assert "etch.Fused" not in art.manifest["op_counts"]
    assert_close(art.run(inputs), run_ort(model, inputs), rtol=RTOL, atol=ATOL)


# ---- etch.Fused, built by hand ----------------------------------------------------------------

def _fused(inputs: list[str], out: str, kernel: str, steps: list, k: int, **kattrs) -> Node:
    return Node("etch.Fused", inputs, [out], {
        "kernel": kernel, "kernel_attrs": json.dumps(kattrs), "num_kernel_inputs": k,
        "epilogue": json.dumps(steps)}, name=f"fused/{out}")


def fused_graph(rng: np.random.Generator) -> tuple[Graph, dict[str, np.ndarray]]:
    """Conv+bias+residual+Relu, Gemm+erf-GELU (y<j> args), MatMul 3-D + residual, a chain,
    ConvTranspose + Tanh."""
    g = Graph("fused")
    feeds = {"x": rng.standard_normal((1, 8, 6, 6)), "r": rng.standard_normal((1, 16, 6, 6)),
             "a": rng.standard_normal((4, 12)), "x3": rng.standard_normal((2, 3, 12)),
             "r3": rng.standard_normal((2, 3, 16))}
    feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
    for name, arr in feeds.items():
        g.add_value(Value(name, arr.shape))
        g.inputs.append(name)
    consts = {"w": (16, 8, 3, 3), "b": (16,), "wg": (12, 10), "bg": (10,), "w3": (12, 16),
              "wt": (8, 4, 3, 3)}
    for name, shape in consts.items():
        g.add_value(Value(name, shape, data=(rng.standard_normal(shape) * 0.3).astype(np.float32)))
    for name, v in {"sqrt2": 2 ** 0.5, "one": 1.0, "half": 0.5}.items():
        g.add_value(Value(name, (), data=np.float32(v)))
    g.nodes = [
        _fused(["x", "w", "b", "r"], "conv_out", "Conv", [
            {"op": "Add", "args": ["y", 3]}, {"op": "Relu", "args": ["y"]}], 3,
            pads=[1, 1, 1, 1]),
        _fused(["a", "wg", "bg", "sqrt2", "one", "half"], "gemm_out", "Gemm", [
            {"op": "Div", "args": ["y", 3]}, {"op": "Erf", "args": ["y"]},
            {"op": "Add", "args": ["y", 4]}, {"op": "Mul", "args": ["y", "y0"]},
            {"op": "Mul", "args": ["y", 5]}], 3),
        _fused(["x3", "w3", "r3"], "mm_out", "MatMul", [{"op": "Sub", "args": [2, "y"]}], 2),
        _fused(["r", "half"], "chain_out", "", [
            {"op": "Mul", "args": ["y", 1]}, {"op": "Sigmoid", "args": ["y"]}], 0),
        _fused(["x", "wt"], "convt_out", "ConvTranspose", [{"op": "Tanh", "args": ["y"]}], 2,
               strides=[2, 2], pads=[1, 1, 0, 0]),
    ]
    shapes = {"conv_out": (1, 16, 6, 6), "gemm_out": (4, 10), "mm_out": (2, 3, 16),
              "chain_out": (1, 16, 6, 6), "convt_out": (1, 4, 12, 12)}
    for name, shape in shapes.items():
        g.add_value(Value(name, shape))
        g.outputs.append(name)
    g.verify()
    return g, feeds


def test_fused_nodes_are_one_kernel_each(rng, tmp_path) -> None:
    graph, feeds = fused_graph(rng)
    from backends import tvm as backend

    entries = backend.build(graph, CompileOptions(target="cpu"), tmp_path)
    io = {"inputs": [{"name": n, "shape": list(graph.values[n].shape), "dtype": "float32"}
                     for n in graph.inputs],
          "outputs": [{"name": n, "shape": list(graph.values[n].shape), "dtype": "float32"}
                      for n in graph.outputs]}
    got = tvm_executor.load(tmp_path, {**entries, **io}).run(feeds)
    assert_close(got, reference.run(graph, feeds), rtol=RTOL, atol=ATOL)
    assert entries["kernels"] == len(graph.nodes)


# ---- the model zoo -------------------------------------------------------------------------

ZOO = ["digits_mlp", "digits_cnn", "digits_cnn_legacy", "resnet_block", "mobilenet",
       "tiny_encoder", "tiny_decoder", "gemv_k1024_n1024_b1", "gemv_k1024_n1024_b8"]
ZOO_LARGE = ["gemv_k4096_n4096_b1", "gemv_k4096_n11008_b8"]


def _zoo_case(name: str, tmp_path) -> None:
    zoo = pytest.importorskip("models.zoo")
    path = zoo.model_path(name)
    inputs, expected = zoo.load_sample(name)
    art = compiler.compile(str(path), target="cpu")
    got = runtime.load(art.save(tmp_path / name)).run(inputs)
    assert_close(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_matches_ort(name: str, tmp_path) -> None:
    _zoo_case(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_LARGE)
def test_large_zoo_model_matches_ort(name: str, tmp_path) -> None:
    _zoo_case(name, tmp_path)


# ---- artifact and errors ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp() -> tuple[compiler.driver.Artifact, onnx.ModelProto, dict]:
    model, inputs = tvm_cases.linear()
    return compiler.compile(model, target="cpu", threads=1), model, inputs


def test_manifest_records_target_features_threads(mlp) -> None:
    art, _, _ = mlp
    m = art.manifest
    assert (m["runtime"], m["device"], m["library"], m["entry"]) == ("tvm", "cpu", "model.so",
                                                                     "main")
    assert m["tvm_target"]["kind"] == "llvm" and m["tvm_target"]["mcpu"] == m["cpu"]
    assert m["threads"] == 1 and "model.so" in m["files"]
    # only the features kernels are chosen by (the host decides which of them)
    assert set(m["cpu_features"]) <= set(VECTOR_FEATURES)
    assert m["vector_bits"] == m["tvm_target"]["vector-width"] == 32 * m["vector_lanes"]
    assert m["vector_bits"] == (512 if "avx512f" in m["cpu_features"] else
                                256 if "avx2" in m["cpu_features"] else 128)


BAD_FEEDS = {
    "missing input": lambda f: {k: v for k, v in f.items() if k != "a"},
    "unknown input": lambda f: {**f, "extra": np.zeros(1, np.float32)},
    "dtype": lambda f: {**f, "a": f["a"].astype(np.float64)},
    "shape": lambda f: {**f, "a": np.zeros((5, 13), np.float32)},
}


@pytest.mark.parametrize("message", sorted(BAD_FEEDS))
def test_bad_inputs_raise_etch_error(mlp, message: str) -> None:
    art, _, inputs = mlp
    with pytest.raises(EtchError, match=message):
        art.run(BAD_FEEDS[message](inputs))


def test_outputs_are_copies(mlp) -> None:
    art, model, inputs = mlp
    first = art.run(inputs)
    first["gemm"][:] = 0
    assert_close(art.run(inputs), run_ort(model, inputs), rtol=RTOL, atol=ATOL)


def test_unsupported_op_names_it(monkeypatch) -> None:
    m = tvm_cases.ModelBuilder("topk")
    x = m.input("x", np.arange(6, dtype=np.float32))
    m.nodes.append(onnx.helper.make_node("TopK", [x, m.const("k", np.array([2], np.int64))],
                                         ["v", "i"], name="topk"))
    m.outputs += ["v"]
    model, _ = m.build()
    monkeypatch.delitem(lower.LOWERINGS, "TopK")  # a backend without the op
    with pytest.raises(EtchError, match="does not build op.s. TopK"):
        compiler.compile(model, target="cpu")


def test_missing_library_raises(mlp, tmp_path) -> None:
    art, _, _ = mlp
    dest = art.save(tmp_path / "art")
    (dest / "model.so").unlink()
    with pytest.raises(EtchError, match="model.so"):
        runtime.load(dest)


def test_threads_apply_at_load(monkeypatch) -> None:
    import os

    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    tvm_executor._apply_threads(2)
    assert os.environ["TVM_NUM_THREADS"] == "2"
    monkeypatch.setenv("TVM_NUM_THREADS", "1")
    tvm_executor._apply_threads(None)  # no --threads: the user's TVM_NUM_THREADS stands
    assert os.environ["TVM_NUM_THREADS"] == "1"
