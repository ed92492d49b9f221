"""Neural-network ops: Gemm, MatMul, normalisation, Softmax, LRN, Dropout.

Convolutions live in `conv`, pooling in `pool`. Arithmetic stays in the input dtype as in
ONNX Runtime (float32 BLAS for float32 MatMul/Gemm). Upgrades to the opset-21 form:
- Softmax/LogSoftmax opset < 13 (coerce to 2-D at `axis`, default 1) become
  Reshape(2-D) -> Softmax(axis=-1) -> Reshape(original shape);
- Dropout opset < 12 `ratio` attribute becomes an input;
- BatchNormalization drops the legacy `spatial`/`is_test`/`momentum` attributes and refuses
  training mode (etch compiles inference graphs).
"""

from __future__ import annotations

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Graph, Node, Value
from compiler.ops import OpDef
from compiler.ops.common import (
    attr_to_input,
    axis_of,
    check_broadcasts_to,
    check_channel_param,
    np_dtype,
)

Array = np.ndarray
Spec = list[tuple[tuple[int, ...], str]]


# ---- MatMul / Gemm ------------------------------------------------------------------------
def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """numpy/ONNX MatMul output shape (1-D operands promoted then squeezed)."""
    aa = (1,) + a if len(a) == 1 else a
    bb = b + (1,) if len(b) == 1 else b
    if len(aa) < 2 or len(bb) < 2 or aa[-1] != bb[-2]:
        raise EtchError(f"MatMul shapes {list(a)} and {list(b)} do not agree")
    out = tuple(np.broadcast_shapes(aa[:-2], bb[:-2])) + (aa[-2], bb[-1])
    if len(b) == 1:
        out = out[:-1]
    if len(a) == 1:
        out = out[:-2] + out[-1:] if len(b) > 1 else out[:-1]
    return tuple(int(d) for d in out)


def _matmul(attrs: dict, a: Array, b: Array) -> Array:
    if a.ndim > 2 and b.ndim == 2:  # one BLAS call instead of numpy's per-row loop
        return np.matmul(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[-1])
    return np.matmul(a, b)


def _infer_matmul(attrs: dict, a: Value, b: Value) -> Spec:
    return [(matmul_shape(a.shape, b.shape), a.dtype)]


def _gemm(attrs: dict, a: Array, b: Array, c: Array | None = None) -> Array:
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    y = a @ b
    if attrs.get("alpha", 1.0) != 1.0:
        y = y * attrs["alpha"]
    if c is not None and attrs.get("beta", 1.0) != 0.0:
        y = y + (c if attrs.get("beta", 1.0) == 1.0 else attrs["beta"] * c)
    return y.astype(a.dtype, copy=False)


def _infer_gemm(attrs: dict, a: Value, b: Value, c: Value | None = None) -> Spec:
    """(M, N); EtchError unless A and B are 2-D with equal inner dims and C broadcasts to
    (M, N) one way (ONNX's unidirectional broadcasting)."""
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise EtchError(f"Gemm takes 2-D A and B, got {list(a.shape)} and {list(b.shape)}")
    m, k = a.shape[::-1] if attrs.get("transA", 0) else a.shape
    kb, n = b.shape[::-1] if attrs.get("transB", 0) else b.shape
    if k != kb:
        raise EtchError(f"Gemm: A {list(a.shape)} has K = {k} but B {list(b.shape)} "
                        f"(transB={attrs.get('transB', 0)}) has K = {kb}")
    if c is not None:
        check_broadcasts_to("Gemm bias C", c.shape, (m, n))
    return [((m, n), a.dtype)]



# ---- normalisation ------------------------------------------------------------------------
def _per_channel(p: Array, ndim: int) -> Array:
    """A [C] (or legacy [C, D1, ...]) parameter shaped to broadcast over [N, C, ...]."""
    if p.ndim == 1:
        return p.reshape((1, -1) + (1,) * (ndim - 2))
    return p.reshape((1,) + p.shape)


def _check_channels(op: str, x: Array, **params: Array) -> None:
    """EtchError unless each parameter is [C] (or BatchNormalization's legacy [C, D1, ...]),
    C = x.shape[1]: numpy would broadcast a [1] silently, where ONNX Runtime refuses."""
    if x.ndim < 2:
        raise EtchError(f"{op} takes [N, C, ...] input, got {list(x.shape)}")
    for name, p in params.items():
        if p.shape != x.shape[1:]:
            check_channel_param(f"{op} {name}", p.shape, x.shape[1])


def _batch_norm(attrs: dict, x: Array, scale: Array, bias: Array, mean: Array,
                var: Array) -> Array:
    _check_channels("BatchNormalization", x, scale=scale, bias=bias, mean=mean, var=var)
    # ONNX Runtime folds to y = x * s + (b - mean * s), s = scale / sqrt(var + eps).
    s = scale / np.sqrt(var + np.asarray(attrs.get("epsilon", 1e-5), var.dtype))
    b = bias - mean * s
    return (x * _per_channel(s, x.ndim) + _per_channel(b, x.ndim)).astype(x.dtype)


def _upgrade_batch_norm(node: Node, opset: int, graph: Graph) -> None:
    for legacy in ("spatial", "is_test", "momentum", "consumed_inputs"):
        node.attrs.pop(legacy, None)
    if node.attrs.pop("training_mode", 0) or any(node.outputs[1:]):
        raise EtchError(f"node {node.name} (BatchNormalization) is in training mode; etch "
                        f"compiles inference graphs (export the model in eval mode)")


def _instance_norm(attrs: dict, x: Array, scale: Array, bias: Array) -> Array:
    _check_channels("InstanceNormalization", x, scale=scale, bias=bias)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    eps = np.asarray(attrs.get("epsilon", 1e-5), x.dtype)
    y = (x - mean) / np.sqrt(var + eps)
    return (y * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)).astype(x.dtype)


def _layer_norm(attrs: dict, x: Array, scale: Array,
                bias: Array | None = None) -> tuple[Array, Array, Array]:
    """Y, Mean, InvStdDev over axes [axis, rank); statistics in the stash type (float32)."""
    axis = axis_of(attrs.get("axis", -1), x.ndim)
    check_broadcasts_to("LayerNormalization scale", scale.shape, x.shape[axis:])
    if bias is not None:
        check_broadcasts_to("LayerNormalization bias", bias.shape, x.shape[axis:])
    axes = tuple(range(axis, x.ndim))
    xs = x.astype(np_dtype(attrs.get("stash_type", 1)))
    mean = xs.mean(axis=axes, keepdims=True)
    d = xs - mean
    var = np.square(d).mean(axis=axes, keepdims=True)
    inv = 1 / np.sqrt(var + np.asarray(attrs.get("epsilon", 1e-5), xs.dtype))
    y = (d * inv).astype(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype), mean, inv


# ---- softmax ------------------------------------------------------------------------------
def _softmax(attrs: dict, x: Array) -> Array:
    axis = attrs.get("axis", -1)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)


def _log_softmax(attrs: dict, x: Array) -> Array:
    axis = attrs.get("axis", -1)
    d = x - x.max(axis=axis, keepdims=True)
    return (d - np.log(np.exp(d).sum(axis=axis, keepdims=True))).astype(x.dtype)


def _upgrade_softmax(node: Node, opset: int, graph: Graph) -> None:
    """Opset < 13 Softmax/LogSoftmax coerce the input to 2-D [prod(:axis), prod(axis:)]."""
    if opset >= 13:
        return
    shape = graph.values[node.inputs[0]].shape
    axis = axis_of(node.attrs.get("axis", 1), len(shape))
    node.attrs["axis"] = -1
    if axis >= len(shape) - 1:
        return  # the 2-D view normalises the last axis already
    flat = (int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64)))
    shape2d = graph.add_const(f"{node.name}__shape2d", np.array(flat, np.int64))
    shape_nd = graph.add_const(f"{node.name}__shape", np.array(shape, np.int64))
    x2d, y2d = graph.fresh(f"{node.name}__in2d"), graph.fresh(f"{node.name}__out2d")
    at = graph.nodes.index(node)
    graph.add_node(Node("Reshape", [node.inputs[0], shape2d.name], [x2d]), at)
    graph.add_node(Node("Reshape", [y2d, shape_nd.name], [node.outputs[0]]), at + 2)
    node.inputs[0], node.outputs = x2d, [y2d]


# ---- misc ---------------------------------------------------------------------------------
def _lrn(attrs: dict, x: Array) -> Array:
    size = int(attrs["size"])
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.pad(np.square(x), [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    total = sum(sq[:, i:i + x.shape[1]] for i in range(size))
    alpha, beta, bias = attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    return (x / (bias + alpha / size * total) ** beta).astype(x.dtype)


def _dropout(attrs: dict, x: Array, ratio: Array | None = None,
             training_mode: Array | None = None) -> tuple[Array, Array]:
    """Inference: identity, and a mask that keeps everything."""
    rate = 0.5 if ratio is None else float(np.asarray(ratio))
    if training_mode is not None and bool(np.asarray(training_mode)) and rate > 0:
        raise EtchError("Dropout with training_mode=True is random; etch compiles inference")
    return x, np.ones(x.shape, bool)


def _upgrade_dropout(node: Node, opset: int, graph: Graph) -> None:
    node.attrs.pop("is_test", None)
    if opset < 12:
        attr_to_input(node, graph, "ratio", 1, np.float32)


OPS: dict[str, OpDef] = {
    "MatMul": OpDef("MatMul", _matmul, infer=_infer_matmul),
    "Gemm": OpDef("Gemm", _gemm, infer=_infer_gemm),
    "BatchNormalization": OpDef("BatchNormalization", _batch_norm, upgrade=_upgrade_batch_norm),
    "InstanceNormalization": OpDef("InstanceNormalization", _instance_norm),
    "LayerNormalization": OpDef("LayerNormalization", _layer_norm),
    "Softmax": OpDef("Softmax", _softmax, upgrade=_upgrade_softmax),
    "LogSoftmax": OpDef("LogSoftmax", _log_softmax, upgrade=_upgrade_softmax),
    "LRN": OpDef("LRN", _lrn),
    "Dropout": OpDef("Dropout", _dropout, upgrade=_upgrade_dropout),
}
