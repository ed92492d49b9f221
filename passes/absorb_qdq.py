"""AbsorbQdq: already-quantised ONNX in etch's representation, keeping its parameters.

Rewrites (the importer keeps QuantizeLinear/DequantizeLinear/MatMulNBits unfolded):
- DequantizeLinear(Q, s, z) of constant integer codes (weights) -> etch.Dequant(Q, s, z)
  with s/z at Q's rank (per tensor, per axis, or blocked: group_size = block_size), Q
  annotated with Value.quant. Bit-identical: both compute (float(q) - float(z)) * s.
- com.microsoft.MatMulNBits(A, B, scales, zero_points) with integer zero points and no
  reordering g_idx -> MatMul(A, etch.Dequant(Q [K, N], S, Z; groups of block_size along K))
  (+ Add(bias)). Same dequantised weight, then the float MatMul.
- QLinearConv / QLinearMatMul -> etch.QConv / etch.QGemm (int32) -> etch.Requantize with
  M = s_x s_w / s_y in etch's fixed point (ORT requantises in float: within 1 LSB).
- MatMulInteger with constant per-tensor zero points -> etch.QGemm (the same int32 result).
Activation Q -> DQ pairs are left in place: the float path runs them as they are, and
QuantizeActivations takes their (scale, zero point) as the integer graph's parameters.
Nodes that do not fit a rewrite (int4 blocks that do not divide K, float zero points,
g_idx, per-row activation zero points) are left as they are; the reference runs them.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node, QuantParams, Value
from compiler.ops.common import is_integer
from compiler.ops.quant import unpack_bits
from compiler.reference import quantize_multiplier
from passes.base import Pass, Rule, apply_rules


def _consts(graph: Graph, node: Node, idx: tuple[int, ...]) -> bool:
    return all(k < len(node.inputs) and node.inputs[k] and graph.values[node.inputs[k]].is_const
               for k in idx)


def _opt(graph: Graph, node: Node, k: int) -> np.ndarray | None:
    return graph.values[node.inputs[k]].data if len(node.inputs) > k and node.inputs[k] else None


def _int_container(q: np.ndarray) -> tuple[np.ndarray, int, bool]:
    """Codes in a numpy integer container (int4/uint4/int2/uint2 widened to int8/uint8),
    their bit width and signedness."""
    name = q.dtype.name
    signed = not name.startswith("u")
    if name in ("int4", "uint4", "int2", "uint2"):
        return q.astype(np.int8 if signed else np.uint8), int(name[-1]), signed
    return q, 8 * q.dtype.itemsize, signed


# ---- DequantizeLinear of constant codes -----------------------------------------------------
def _is_weight_dq(graph: Graph, node: Node) -> bool:
    if node.op != "DequantizeLinear" or not _consts(graph, node, (0, 1)):
        return False
    z = _opt(graph, node, 2)
    return is_integer(graph.values[node.inputs[0]].data.dtype) or (
        z is not None and is_integer(z.dtype))


def _dq_check(graph: Graph, node: Node) -> str | None:
    q = graph.values[node.inputs[0]].data
    if not is_integer(q.dtype):
        return f"{node.name}: codes of type {q.dtype.name} are not integers"
    out = graph.values[node.outputs[0]].dtype
    if out != "float32":  # a float16 scale, or output_dtype (opset 23)
        return f"{node.name}: output is {out}; etch.Dequant computes float32"
    block = int(node.attrs.get("block_size", 0))
    axis = int(node.attrs.get("axis", 1)) % max(q.ndim, 1)
    if block and q.shape[axis] % block:
        return f"{node.name}: block size {block} does not divide axis length {q.shape[axis]}"
    return None


def _dq_rewrite(graph: Graph, node: Node) -> None:
    q, bits, signed = _int_container(graph.values[node.inputs[0]].data)
    # The output is float32 (_dq_check): a float16 or float8e8m0 scale widens exactly.
    s = graph.values[node.inputs[1]].data.astype(np.float32)
    z = _opt(graph, node, 2)
    axis = int(node.attrs.get("axis", 1)) % max(q.ndim, 1)
    block = int(node.attrs.get("block_size", 0))
    s_r = _at_rank(s, q.ndim, axis, block)
    z_r = None if z is None else _at_rank(_int_container(z)[0], q.ndim, axis, block)
    qp = QuantParams(s_r, z_r if z_r is not None else np.zeros((), q.dtype), bits, signed,
                     axis if s.size > 1 else None, block or None)
    qname = graph.add_value(Value(graph.fresh(f"{node.inputs[0]}_codes"), q.shape,
                                  q.dtype.name, q, qp)).name
    inputs = [qname, graph.add_const(f"{node.name}_scale", s_r).name]
    if z_r is not None and np.any(z_r):
        inputs.append(graph.add_const(f"{node.name}_zero", z_r).name)
    node.op, node.inputs = "etch.Dequant", inputs
    node.attrs = {"group_axis": axis if block else 0, "group_size": block, "bits": bits,
                  "kind": "int"}


def _at_rank(p: np.ndarray, rank: int, axis: int, block: int) -> np.ndarray:
    """A DequantizeLinear parameter at the codes' rank (blocked parameters already are)."""
    if block or p.ndim == rank and rank > 1:
        return p
    shape = [1] * rank
    if p.size > 1:
        shape[axis] = p.size
    return p.reshape(shape)


# ---- MatMulNBits ----------------------------------------------------------------------------
def _is_nbits(graph: Graph, node: Node) -> bool:
    return node.op == "com.microsoft.MatMulNBits" and _consts(graph, node, (1, 2))


def _nbits_check(graph: Graph, node: Node) -> str | None:
    k, bs = int(node.attrs["K"]), int(node.attrs["block_size"])
    z = _opt(graph, node, 3)
    if k % bs:
        return f"{node.name}: K={k} is not a multiple of block_size={bs}"
    if z is not None and z.dtype != np.uint8:
        return f"{node.name}: float zero points"
    if len(node.inputs) > 4 and node.inputs[4]:
        return f"{node.name}: g_idx reorders K"
    if len(node.inputs) > 5 and node.inputs[5] and not graph.values[node.inputs[5]].is_const:
        return f"{node.name}: bias is computed at run time"
    return None


def _nbits_rewrite(graph: Graph, node: Node) -> None:
    k, n = int(node.attrs["K"]), int(node.attrs["N"])
    bits, bs = int(node.attrs.get("bits", 4)), int(node.attrs["block_size"])
    blocks = k // bs
    q = unpack_bits(graph.values[node.inputs[1]].data.reshape(n, -1), bits)[:, :k]
    s = graph.values[node.inputs[2]].data.reshape(n, blocks).astype(np.float32)
    zp = _opt(graph, node, 3)
    z = np.full((n, blocks), 1 << (bits - 1), np.uint8) if zp is None else \
        unpack_bits(zp.reshape(n, -1), bits)[:, :blocks].astype(np.uint8)
    qp = QuantParams(s.T.copy(), z.T.copy(), bits, False, 1, bs)
    codes = graph.add_value(Value(graph.fresh(f"{node.name}_codes"), (k, n), "uint8",
                                  np.ascontiguousarray(q.T), qp))
    w = graph.add_value(Value(graph.fresh(f"{node.name}_w"), (k, n), "float32"))
    ins = [codes.name, graph.add_const(f"{node.name}_scale", qp.scale).name,
           graph.add_const(f"{node.name}_zero", qp.zero_point).name]
    at = graph.nodes.index(node)
    graph.add_node(Node("etch.Dequant", ins, [w.name], {"group_axis": 0, "group_size": bs,
                                                        "bits": bits, "kind": "int"},
                        f"{node.name}_dequant"), at)
    bias = node.inputs[5] if len(node.inputs) > 5 else ""
    node.op, node.attrs, node.inputs = "MatMul", {}, [node.inputs[0], w.name]
    if bias:
        out = node.outputs[0]
        mid = graph.add_value(Value(graph.fresh(f"{out}_nobias"), graph.values[out].shape,
                                    graph.values[out].dtype))
        node.outputs = [mid.name]
        graph.add_node(Node("Add", [mid.name, bias], [out], {}, f"{node.name}_bias"),
                       graph.nodes.index(node) + 1)


# ---- QLinearConv / QLinearMatMul / MatMulInteger ------------------------------------------
def _is_qlinear(graph: Graph, node: Node) -> bool:
    if node.op == "QLinearConv":
        return _consts(graph, node, (1, 2, 3, 4, 5, 6, 7))
    if node.op == "QLinearMatMul":
        return _consts(graph, node, (1, 2, 4, 5, 6, 7))
    return False


def _qlinear_check(graph: Graph, node: Node) -> str | None:
    a_scale = graph.values[node.inputs[1]].data
    a_zero = graph.values[node.inputs[2]].data
    if a_scale.size != 1 or a_zero.size != 1:
        return f"{node.name}: per-row input quantisation"
    return None


def _qlinear_rewrite(graph: Graph, node: Node) -> None:
    conv = node.op == "QLinearConv"
    x, xs, xz, w, ws, wz, ys, yz = node.inputs[:8]
    out = node.outputs[0]
    out_v = graph.values[out]
    sx, sw, sy = (graph.values[i].data.astype(np.float64) for i in (xs, ws, ys))
    sigma = sx.reshape(()) * sw.reshape(-1)
    axis = 1 if conv else len(out_v.shape) - 1
    acc_qp = QuantParams(sigma.astype(np.float32), np.zeros((), np.int32), 32, True,
                         axis if sigma.size > 1 else None)
    acc = graph.add_value(Value(graph.fresh(f"{out}_acc"), out_v.shape, "int32", None, acc_qp))
    bias = node.inputs[8] if conv and len(node.inputs) > 8 else ""
    at = graph.nodes.index(node)
    graph.add_node(Node("etch.QConv" if conv else "etch.QGemm", [x, w, bias, xz, wz], [acc.name],
                        {k: v for k, v in node.attrs.items()} if conv else {},
                        f"{node.name}_acc"), at)
    m0, shift = quantize_multiplier(sigma / float(sy.reshape(())))
    zero = graph.values[yz].data
    info = np.iinfo(zero.dtype)
    scalar = m0.size == 1
    attrs = {"zero_point": int(zero.reshape(())), "qmin": int(info.min), "qmax": int(info.max),
             "to": zero.dtype.name, **({} if scalar else {"axis": axis})}
    out_v.quant = QuantParams(np.float32(sy.reshape(())), zero.reshape(()), 8,
                              zero.dtype == np.int8)
    node.op, node.attrs = "etch.Requantize", attrs
    node.inputs = [acc.name, graph.add_const(f"{out}_m0", m0.astype(np.int32)).name,
                   graph.add_const(f"{out}_shift", shift.astype(np.int32)).name]


def _is_matmul_integer(graph: Graph, node: Node) -> bool:
    return node.op == "MatMulInteger"


def _matmul_integer_check(graph: Graph, node: Node) -> str | None:
    for k in (2, 3):
        name = node.inputs[k] if len(node.inputs) > k else ""
        if name and not graph.values[name].is_const:
            return f"{node.name}: computed zero point {name!r}"
    az = _opt(graph, node, 2)
    if az is not None and az.size != 1:
        return f"{node.name}: per-row zero point of A"
    return None


def _matmul_integer_rewrite(graph: Graph, node: Node) -> None:
    a, b = node.inputs[:2]
    az = node.inputs[2] if len(node.inputs) > 2 else ""
    bz = node.inputs[3] if len(node.inputs) > 3 else ""
    node.op, node.inputs, node.attrs = "etch.QGemm", [a, b, "", az, bz], {}


RULES = [
    Rule("weight_dequantize", _is_weight_dq, _dq_rewrite, _dq_check),
    Rule("matmul_nbits", _is_nbits, _nbits_rewrite, _nbits_check),
    Rule("qlinear", _is_qlinear, _qlinear_rewrite, _qlinear_check),
    Rule("matmul_integer", _is_matmul_integer, _matmul_integer_rewrite, _matmul_integer_check),
]


class AbsorbQdq(Pass):
    """Already-quantised ONNX ops -> etch's quantised representation (parameters kept)."""

    name = "absorb_qdq"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        changed = apply_rules(graph, RULES)
        graph.prune()
        return graph, changed
