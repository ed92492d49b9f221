"""Transformers' `--int` graph is integer end to end (passes/int_layernorm.py,
passes/int_softmax.py, the constant-operand QAdd/Concat and Gather of passes/int_rules.py):
LayerNorm -> etch.QLayerNorm, Softmax -> etch.QSoftmax (masked after a causal mask Add),
residual and position-embedding Adds -> etch.QAdd, a class token's Concat and the token
Gather on int8; only the input's QuantizeLinear and the output's DequantizeLinear run in
float. The cpu build equals the reference bit for bit; what the rules decline stays a
float host node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.driver import Artifact
from models import zoo
from tests.backends.engine_helpers import calib_path
from tests.e2e.test_cli import etch
from tests.edge_tools import needs_edge
from tests.golden import assert_bitexact, run_ort

HOST_IO = {"QuantizeLinear": 1, "DequantizeLinear": 1}
FLOAT_OPS = {"LayerNormalization", "Softmax", "Add", "Concat", "Gather"}


def _placements(art: Artifact) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {"accel": {}, "host": {}}
    for n in art.graph.nodes:
        where = out[n.attrs.get("placement", "host")]
        where[n.op] = where.get(n.op, 0) + 1
    return out


def _opts(name: str) -> dict:
    return {"bits": 8, "int": True, "calib": str(calib_path(name))}


def test_explain_names_the_integer_row_ops(tmp_path: Path) -> None:
    r = etch("compile", zoo.model_path("tiny_encoder"), "--target", "ref", "--bits", "8",
             "--int", "--calib", calib_path("tiny_encoder"), "-o", tmp_path / "a", "--explain")
    assert r.returncode == 0, r.stderr
    lines = {ln.split(":")[0]: ln for ln in r.stdout.splitlines() if ":" in ln}
    assert "etch.QLayerNorm x5" in lines["accelerator"]
    assert "etch.QSoftmax x2" in lines["accelerator"] and "etch.QAdd x4" in lines["accelerator"]
    assert lines["host"] == "host: DequantizeLinear x1, QuantizeLinear x1"


def test_tiny_encoder_int_is_integer_and_bit_exact_on_cpu() -> None:
    opts = _opts("tiny_encoder")
    ref = compiler.compile(str(zoo.model_path("tiny_encoder")), target="ref", **opts)
    assert _placements(ref)["host"] == HOST_IO
    cpu = compiler.compile(str(zoo.model_path("tiny_encoder")), target="cpu", **opts)
    rng = np.random.default_rng(0)
    for scale in (1.0, 2.0):
        x = {"input": (scale * rng.standard_normal((1, 16, 64))).astype(np.float32)}
        assert_bitexact(cpu.run(x), ref.run(x))


def test_tiny_decoder_masks_its_softmax() -> None:
    """The causal mask Add folds into etch.QSoftmax as a mask; no float op is left."""
    ref = compiler.compile(str(zoo.model_path("tiny_decoder")), target="ref",
                           **_opts("tiny_decoder"))
    assert _placements(ref)["host"] == HOST_IO
    softmax = [n for n in ref.graph.nodes if n.op == "etch.QSoftmax"]
    assert len(softmax) == 2 and all(len(n.inputs) == 3 for n in softmax)
    mask = ref.graph.values[softmax[0].inputs[2]].data
    assert mask.tolist() == np.triu(np.ones((8, 8), np.uint8), 1).tolist()


@pytest.mark.slow
def test_tiny_decoder_int_is_bit_exact_on_cpu() -> None:
    opts = _opts("tiny_decoder")
    ref = compiler.compile(str(zoo.model_path("tiny_decoder")), target="ref", **opts)
    cpu = compiler.compile(str(zoo.model_path("tiny_decoder")), target="cpu", **opts)
    x = {"input": np.random.default_rng(1).standard_normal((1, 8, 256)).astype(np.float32)}
    assert_bitexact(cpu.run(x), ref.run(x))


# ---- a ViT-shaped toy: patches, class token, position embedding, token select -------------
def _vit_like(mean_read: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    consts = {"w": rng.normal(0, 0.3, (8, 3, 4, 4)), "b": rng.normal(0, 0.1, 8),
              "shape": np.array([1, 8, 4]), "cls": rng.normal(0, 1, (1, 1, 8)),
              "pos": rng.normal(0, 0.5, (1, 5, 8)), "gamma": rng.normal(1, 0.2, 8),
              "beta": rng.normal(0, 0.2, 8), "idx": np.array(0), "head": rng.normal(0, 1, (3, 8)),
              "hb": rng.normal(0, 0.1, 3)}
    inits = [numpy_helper.from_array(v.astype(np.int64 if k in ("shape", "idx") else
                                              np.float32), k) for k, v in consts.items()]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["p"], kernel_shape=[4, 4],
                              strides=[4, 4]),
             helper.make_node("Reshape", ["p", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Concat", ["cls", "t"], ["c"], axis=1),
             helper.make_node("Add", ["c", "pos"], ["e"]),
             helper.make_node("LayerNormalization", ["e", "gamma", "beta"],
                              ["n", "mean"] if mean_read else ["n"], axis=-1),
             helper.make_node("Gather", ["n", "idx"], ["g"], axis=1),
             helper.make_node("Gemm", ["g", "head", "hb"], ["y"], transB=1)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if mean_read:
        outputs.append(helper.make_tensor_value_info("mean", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "vit_like", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def toy_calib(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    x = np.random.default_rng(2).standard_normal((32, 3, 8, 8)).astype(np.float32)
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, x=x)
    return str(path), x


def test_vit_like_graph_runs_on_the_integers(toy_calib) -> None:
    path, x = toy_calib
    opts = {"bits": 8, "int": True, "calib": path}
    ref = compiler.compile(_vit_like(), target="ref", **opts)
    places = _placements(ref)
    assert places["host"] == HOST_IO
    assert {"Concat", "Gather", "etch.QAdd", "etch.QLayerNorm"} <= set(places["accel"])
    cpu = compiler.compile(_vit_like(), target="cpu", **opts)
    got = [ref.run({"x": x[i:i + 1]})["y"] for i in range(8)]
    for i in range(2):
        assert_bitexact(cpu.run({"x": x[i:i + 1]}), ref.run({"x": x[i:i + 1]}))
    want = [run_ort(_vit_like(), {"x": x[i:i + 1]})["y"] for i in range(8)]
    err = np.abs(np.concatenate(got) - np.concatenate(want)).max()
    assert err < 0.05 * np.abs(np.concatenate(want)).max()


def test_a_layer_norm_whose_mean_is_read_stays_on_the_host(toy_calib) -> None:
    path, _ = toy_calib
    ref = compiler.compile(_vit_like(mean_read=True), target="ref", bits=8, int=True,
                           calib=path)
    places = _placements(ref)
    assert places["host"].get("LayerNormalization") == 1
    assert "etch.QLayerNorm" not in places["accel"]


def _scores_softmax(mask: np.ndarray) -> onnx.ModelProto:
    """x @ w -> + mask -> Softmax."""
    w = np.random.default_rng(3).normal(0, 0.5, (4, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"]),
             helper.make_node("Add", ["s", "mask"], ["m"]),
             helper.make_node("Softmax", ["m"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "masked", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w"),
                                             numpy_helper.from_array(mask, "mask")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("value,masked", [(-1e9, True), (-np.inf, True), (-1.0, False)])
def test_only_a_mask_that_zeroes_its_entries_becomes_a_softmax_mask(
        tmp_path: Path, value: float, masked: bool) -> None:
    """-1e9 / -inf: exp underflows to exactly 0 in float32, the op's masked e_i; -1 shifts
    the scores (an ordinary constant Add: etch.QAdd, then an unmasked etch.QSoftmax)."""
    mask = np.triu(np.full((4, 4), value, np.float32), 1)
    x = np.random.default_rng(4).standard_normal((16, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    opts = {"bits": 8, "int": True, "calib": str(tmp_path / "c.npz")}
    model = _scores_softmax(mask)
    ref = compiler.compile(model, target="ref", **opts)
    [node] = [n for n in ref.graph.nodes if n.op == "etch.QSoftmax"]
    assert (len(node.inputs) == 3) == masked
    assert ("etch.QAdd" in _placements(ref)["accel"]) != masked
    got, want = ref.run({"x": x[:1]})["y"], run_ort(model, {"x": x[:1]})["y"]
    assert np.abs(got - want).max() < 0.03
    if masked:
        assert np.all(got[0][np.triu_indices(4, 1)] == 0)
    cpu = compiler.compile(model, target="cpu", **opts)
    assert_bitexact(cpu.run({"x": x[1:2]}), ref.run({"x": x[1:2]}))


@pytest.mark.slow
@needs_edge
def test_tiny_encoder_int_on_edge_is_bit_exact() -> None:
    """The row kernels cross-compiled for aarch64 (NEON) and run under qemu: the same bits
    (float64 sqrt and division are IEEE on every ISA; the corrections make them exact)."""
    opts = _opts("tiny_encoder")
    dev = compiler.compile(str(zoo.model_path("tiny_encoder")), target="edge", **opts)
    ref = compiler.compile(str(zoo.model_path("tiny_encoder")), target="ref", **opts)
    assert dev.manifest["op_counts"]["etch.QLayerNorm"] == 5
    x = {"input": np.random.default_rng(3).standard_normal((1, 16, 64)).astype(np.float32)}
    assert_bitexact(dev.run(x), ref.run(x))
