"""Helpers for the quantisation and rearrangement tests: zoo graphs as the quantisation
passes see them, calibration data, float64 evaluation and ONNX Runtime on QDQ exports."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from compiler import qdq_export, reference
from compiler.ir import Graph
from compiler.onnx_import import import_model
from models import zoo
from passes.cleanup import Cleanup
from passes.fold_batchnorm import FoldBatchNorm
from passes.fold_constants import FoldConstants

CNNS = ["digits_mlp", "digits_cnn", "resnet_block", "mobilenet"]
TRANSFORMERS = ["tiny_encoder", "tiny_decoder"]


def folded(name: str) -> Graph:
    """A zoo model imported and folded: the graph QuantizeWeights sees in the pipeline."""
    g = import_model(str(zoo.model_path(name)))
    for p in (Cleanup(), FoldBatchNorm(), FoldConstants()):
        g, _ = p.run(g)
    return g


def inputs_for(name: str, graph: Graph, n: int, offset: int = 0) -> np.ndarray:
    """n samples for `name`'s one input, [n, *shape[1:]]: digits images (training split
    from `offset` for calibration, test split for offset < 0), else seeded N(0, 1)."""
    shape = graph.values[graph.inputs[0]].shape
    if name.startswith("digits"):
        x_train, _, x_test, _ = zoo.digits_split()
        x = x_test[:n] if offset < 0 else x_train[offset:offset + n]
        return zoo.digits_inputs(name, x)
    rng = np.random.default_rng(100 + offset)
    return rng.normal(size=(n, *shape[1:])).astype(np.float32)


def calib_for(name: str, graph: Graph, n: int = 64) -> dict[str, np.ndarray]:
    return {graph.inputs[0]: inputs_for(name, graph, n)}


def float64(graph: Graph) -> Graph:
    """The graph with every float32 value (constants included) in float64."""
    g = graph.copy()
    for v in g.values.values():
        if v.dtype == "float32":
            v.dtype = "float64"
            if v.data is not None:
                v.data = v.data.astype(np.float64)
    return g


def run_f64(graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reference outputs computed in float64, rounded to float32."""
    out = reference.run(float64(graph), {k: v.astype(np.float64) for k, v in inputs.items()})
    return {k: v.astype(np.float32) for k, v in out.items()}


def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """ORT on CPU with graph optimisations off: plain op semantics."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def int_values(graph: Graph) -> list[str]:
    """The 8-bit integer activations of an integer graph."""
    return [v.name for v in graph.values.values()
            if v.dtype in ("int8", "uint8") and not v.is_const]


def lsb_differences(graph: Graph, samples: np.ndarray) -> np.ndarray:
    """|etch - ORT| in LSBs over every 8-bit activation of the integer graph (outputs
    included: they are DequantizeLinear of one), for each sample run separately."""
    names = int_values(graph)
    sess = ort_session(qdq_export.export_qdq(graph, names))
    inp = graph.inputs[0]
    shape = graph.values[inp].shape
    diffs = []
    for x in samples:
        feed = {inp: x.reshape(shape)}
        ours = reference.run(graph, feed, keep=True)
        theirs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        diffs += [np.abs(ours[v].astype(np.int64) - theirs[v].astype(np.int64)).reshape(-1)
                  for v in names]
    return np.concatenate(diffs)
