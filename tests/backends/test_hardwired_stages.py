"""Hardwired stages beyond dense layers: convolutions, max pooling, residual adds and mean
pooling (`passes/hardwired_stages.py`, `plan_hardwired`, `from_ir`).

A small CNN shaped like the zoo's digits_cnn (conv, relu, maxpool, conv, relu, conv, add,
relu, mean, reshape, gemm) is planned as one segment; each stage's datapath netlist is
evaluated exactly in numpy and chained, and must equal the integer reference at every stage
output, at 4-bit and ternary weights (8 and 2-bit in the slow run). One configuration is also simulated in
Verilator through `etch compile`/`etch sim`'s executor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
import runtime
from backends.verilog.hardwired.evaluate import evaluate
from backends.verilog.hardwired.from_ir import layer_spec
from backends.verilog.hardwired.layer import datapath
from compiler import onnx_import, pipeline, reference
from compiler.ir import Graph
from compiler.options import CompileOptions
from tests.golden import assert_bitexact

C = 4  # channels


def tiny_cnn(path: Path) -> None:
    rng = np.random.default_rng(0)
    consts = {"w1": rng.normal(size=(C, 1, 3, 3)), "b1": rng.normal(size=C) * .1,
              "w2": rng.normal(size=(C, C, 3, 3)) / 3, "b2": rng.normal(size=C) * .1,
              "w3": rng.normal(size=(C, C, 3, 3)) / 3, "b3": rng.normal(size=C) * .1,
              "wf": rng.normal(size=(5, C)), "bf": rng.normal(size=5) * .1}

    def n(op: str, ins: list[str], out: str, **attrs: object) -> onnx.NodeProto:
        return helper.make_node(op, ins, [out], name=f"{op}_{out}", **attrs)

    pad = {"pads": [1, 1, 1, 1]}
    nodes = [n("Conv", ["input", "w1", "b1"], "c1", **pad), n("Relu", ["c1"], "r1"),
             n("MaxPool", ["r1"], "p1", kernel_shape=[2, 2], strides=[2, 2]),
             n("Conv", ["p1", "w2", "b2"], "c2", **pad), n("Relu", ["c2"], "r2"),
             n("Conv", ["r2", "w3", "b3"], "c3", **pad), n("Add", ["c3", "p1"], "s"),
             n("Relu", ["s"], "r3"), n("ReduceMean", ["r3"], "m", axes=[2, 3], keepdims=1),
             n("Reshape", ["m", "shape"], "f"),
             n("Gemm", ["f", "wf", "bf"], "logits", transB=1)]
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()]
    inits.append(numpy_helper.from_array(np.array([1, C], np.int64), "shape"))
    g = helper.make_graph(
        nodes, "tiny_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                          [1, 1, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    d = tmp_path_factory.mktemp("tiny_cnn")
    tiny_cnn(d / "tiny_cnn.onnx")
    rng = np.random.default_rng(1)
    np.savez(d / "calib.npz", input=rng.normal(size=(32, 1, 6, 6)).astype(np.float32))
    return d / "tiny_cnn.onnx", d / "calib.npz", rng.normal(size=(40, 1, 6, 6)).astype(
        np.float32)


def planned(model: Path, calib: Path, **q: object) -> Graph:
    opts = CompileOptions(target="verilog", engine="hardwired", calib=str(calib), **q)
    opts.validate()
    graph, _ = pipeline.run(onnx_import.import_model(str(model)), opts)
    return graph


QUANT = {"8": {"bits": 8}, "4": {"bits": 4}, "2": {"bits": 2}, "t": {"ternary": True}}


@pytest.mark.parametrize("bits", [pytest.param("8", marks=pytest.mark.slow), "4",
                                  pytest.param("2", marks=pytest.mark.slow), "t"])
def test_cnn_stages_evaluate_bit_exact(model: tuple, bits: str) -> None:
    path, calib, xs = model
    g = planned(path, calib, **QUANT[bits])
    plan = json.loads(g.metadata["etch.hardwired"])
    assert len(plan["segments"]) == 1 and plan["host"] == {}
    nodes = {n.name: n for n in g.nodes}
    ops = [nodes[a].op for a in plan["segments"][0]["layers"]]
    assert ops == ["etch.QConv"] * 3 + ["etch.QSumPool", "etch.QGemm"]
    evaluate_segment(g, xs)


@pytest.mark.verilator
def test_cnn_simulated_bit_exact(model: tuple) -> None:
    path, calib, xs = model
    q = {"bits": 4, "calib": str(calib)}
    hw = compiler.compile(str(path), "verilog", engine="hardwired", **q)
    ref = compiler.compile(str(path), "ref", int=True, **q)

    def outs(art: compiler.driver.Artifact) -> dict[str, np.ndarray]:
        ex = runtime.load(art.path)
        runs = ex.run_batch([{"input": xs[i:i + 1]} for i in range(len(xs))])
        return {"logits": np.concatenate([o["logits"] for o in runs])}

    assert_bitexact(outs(hw), outs(ref))
    seg = hw.manifest["hardwired"]["segments"][0]
    assert seg["cycles_per_inference"] == 1 and len(seg["layers"]) == 5


def evaluate_segment(g: Graph, xs: np.ndarray) -> None:
    """Chain every stage's datapath netlist in numpy over the samples `xs` and compare each
    stage's output with the integer reference."""
    plan = json.loads(g.metadata["etch.hardwired"])
    nodes = {n.name: n for n in g.nodes}
    for seg in plan["segments"]:
        envs = [reference.run(g, {g.inputs[0]: xs[i:i + 1]}, keep=True) for i in range(len(xs))]
        x = np.stack([e[seg["input"]["name"]].reshape(-1) for e in envs]).astype(np.int64)
        ones, zeros = np.ones((len(xs), 1), np.int64), np.zeros((len(xs), 1), np.int64)
        for a in seg["layers"]:
            spec = layer_spec(g, nodes[a])
            y = evaluate(datapath(spec), {"x": x, "v": ones, "ph": zeros, "bt": zeros})["y"]
            want = np.stack([e[json.loads(nodes[a].attrs["hardwired"])["output"]].reshape(-1)
                             for e in envs])
            np.testing.assert_array_equal(y[:, :want.shape[1]], want.astype(np.int64),
                                          err_msg=a)
            x = y[:, :spec.n_out]


@pytest.mark.slow
@pytest.mark.parametrize("bits", ["4", "t"])
def test_digits_cnn_stages_evaluate_bit_exact_whole_split(bits: str,
                                                          tmp_path: Path) -> None:
    """The zoo's digits CNN as one hardwired segment (conv, maxpool, conv, conv + residual,
    mean, gemm), every stage's netlist exact on the whole digits test split."""
    from models import zoo

    x_train, _, x_test, _ = zoo.digits_split()
    np.savez(tmp_path / "calib.npz", input=zoo.digits_inputs("digits_cnn", x_train[:64]))
    g = planned(zoo.model_path("digits_cnn"), tmp_path / "calib.npz", **QUANT[bits])
    plan = json.loads(g.metadata["etch.hardwired"])
    assert len(plan["segments"]) == 1 and len(plan["segments"][0]["layers"]) == 5
    evaluate_segment(g, zoo.digits_inputs("digits_cnn", x_test))
