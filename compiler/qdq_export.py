"""The quantised graph as QDQ ONNX: ONNX Runtime's independent check of etch's integers.

Every integer op of the integer graph (`passes.quantize_activations`) becomes the float op
it stands for, between DequantizeLinear of its integer inputs and QuantizeLinear to its
output's parameters; ORT then runs the same quantised model with its own float kernels and
rounding (half to even on the float value, where etch uses a fixed-point multiplier).
- etch.QConv / etch.QGemm (int32 acc, real = sigma * acc) -> Conv / MatMul of the
  dequantised input and weight (the weight as DequantizeLinear of its codes, per channel,
  times the integer group multipliers where it has groups),
  times sigma / (s_x s_w) where epilogue multipliers were absorbed, plus
  DequantizeLinear(bias, sigma);
- etch.Requantize -> Clip to the saturation bounds (when narrower than the type)
  -> QuantizeLinear; etch.QAdd -> Add of the dequantised inputs, Clip, QuantizeLinear;
  etch.QMul likewise with Mul;
- etch.QSumPool -> GlobalAveragePool / AveragePool of the dequantised input;
- etch.Table, etch.ChannelTable -> its recorded float function (the `epilogue` steps)
  between DQ and Q;
- etch.QLayerNorm -> LayerNormalization with the real gamma, beta and epsilon its integer
  constants stand for; etch.QSoftmax -> Softmax (after Add of -1e9 where masked);
- etch.Clamp -> Clip on the integers; etch.Dequant (weight-only path) -> DequantizeLinear
  (per tensor or per axis; blocked for groups when the opset is 21, else the dequantised
  constant);
- every other node is copied (MaxPool, Reshape, Transpose on int8 run in ORT as they are).
Preconditions: the in-memory graph from the quantisation passes (integer values carry
`Value.quant`; accumulators carry sigma). Raises EtchError for an etch op with no QDQ form.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np
import onnx

from compiler import onnx_export, ops
from compiler.errors import EtchError
from compiler.ir import Graph, Node, QuantParams, Value


class _Writer:
    """Builds the QDQ graph: value helpers shared by the op handlers."""

    def __init__(self, src: Graph) -> None:
        self.src = src
        self.out = Graph(src.name)
        self.out.opset = max(src.opset, 13)
        self.out.inputs, self.out.outputs = list(src.inputs), list(src.outputs)
        for v in src.values.values():
            if v.is_const or v.name in src.inputs:
                self.out.add_value(Value(v.name, v.shape, v.dtype, v.data))
        self.real: dict[str, str] = {}  # accumulator -> float value holding sigma * acc
        self.dq_cache: dict[str, str] = {}

    def fresh(self, base: str) -> str:
        return self.out.fresh(base, avoid=self.src.values)

    def const(self, base: str, data: np.ndarray) -> str:
        return self.out.add_const(base, data, avoid=self.src.values).name

    def node(self, op: str, inputs: list[str], attrs: dict | None = None, like: str = "",
             out: str | None = None, dtype: str = "float32") -> str:
        """Add a node with one output (named `out` or fresh), shaped like value `like`."""
        name = out or self.fresh(f"{like or op}_{op.lower()}")
        shape = self.src.values[like].shape if like in self.src.values else ()
        if name not in self.out.values:
            self.out.add_value(Value(name, shape, dtype))
        self.out.add_node(Node(op, inputs, [name], dict(attrs or {})))
        return name

    def qp(self, name: str) -> QuantParams:
        q = self.src.values[name].quant
        if q is None:
            raise EtchError(f"qdq export: integer value %{name} has no quantisation parameters")
        return q

    def dq(self, name: str) -> str:
        """The float (dequantised) version of an integer value or annotated constant."""
        if name not in self.dq_cache:
            q = self.qp(name)
            scale = np.asarray(q.scale, np.float32)
            inputs = [name, self.const(f"{name}_s", scale.reshape(-1) if scale.size > 1
                                       else scale.reshape(()))]
            zero = np.asarray(q.zero_point)
            if np.any(zero) or zero.dtype != np.int8:
                z = zero.astype(self.src.values[name].dtype)
                inputs.append(self.const(f"{name}_z", z.reshape(-1) if scale.size > 1
                                         else z.reshape(())))
            attrs = {"axis": q.axis} if scale.size > 1 else {}
            self.dq_cache[name] = self.node("DequantizeLinear", inputs, attrs, like=name,
                                            out=self.fresh(f"{name}_dq"))
        return self.dq_cache[name]

    def quantize(self, real: str, out: str, qmin: int, qmax: int) -> None:
        """Clip `real` to [qmin, qmax] in real terms (if narrower than the type), then
        QuantizeLinear into integer value `out`."""
        q = self.qp(out)
        s, z = float(np.float32(q.scale)), int(q.zero_point)
        dtype = self.src.values[out].dtype
        info = np.iinfo(dtype)
        if qmin > info.min or qmax < info.max:
            lo = self.const("clip_lo", np.float32((qmin - z) * s))
            hi = self.const("clip_hi", np.float32((qmax - z) * s))
            real = self.node("Clip", [real, lo, hi], like=out, out=self.fresh(f"{out}_clip"))
        self.out.add_value(Value(out, self.src.values[out].shape, dtype))
        self.out.add_node(Node("QuantizeLinear", [real, self.const(f"{out}_s", np.float32(s)),
                                                  self.const(f"{out}_z", np.asarray(z, dtype))],
                               [out]))


# ---- handlers ------------------------------------------------------------------------------
def _linear(w: _Writer, node: Node) -> None:
    acc = node.outputs[0]
    x, wt = node.inputs[0], node.inputs[1]
    xf, wf = w.dq(x), w.dq(wt)
    mult = node.inputs[5] if len(node.inputs) > 5 else ""
    if mult:  # integer group multipliers: the weight is DQ(codes) * mult, repeated per group
        m = np.repeat(w.src.values[mult].data, int(node.attrs["group_size"]),
                      axis=1 if node.op == "etch.QConv" else 0)
        m = m.reshape(m.shape + (1,) * (len(w.src.values[wt].shape) - 2)).astype(np.float32)
        wf = w.node("Mul", [wf, w.const(f"{mult}_f", m)], like=wt)
    if node.op == "etch.QConv":
        y = w.node("Conv", [xf, wf], {k: v for k, v in node.attrs.items()
                                      if k not in ("placement", "group_size")}, like=acc)
    else:
        y = w.node("MatMul", [xf, wf], like=acc)
    sigma = np.asarray(w.qp(acc).scale, np.float64)
    s_x = np.asarray(w.qp(x).scale, np.float64).reshape(-1)
    s_w = np.asarray(w.qp(wt).scale, np.float64).reshape(-1)
    rank = len(w.src.values[acc].shape)
    axis = 1 if node.op == "etch.QConv" else rank - 1
    f = sigma / (s_x * s_w)
    if not np.allclose(f, 1.0, rtol=1e-6, atol=0):
        y = w.node("Mul", [y, w.const(f"{acc}_f", _along(f.astype(np.float32), rank, axis))],
                   like=acc)
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias:
        b = w.src.values[bias].data
        shaped = w.const(f"{bias}_i", _along(b, rank, axis))
        sig = np.broadcast_to(sigma, b.shape).astype(np.float32)
        bf = w.node("DequantizeLinear", [shaped, w.const(f"{bias}_s", sig)], {"axis": 0},
                    like=bias)
        y = w.node("Add", [y, bf], like=acc)
    w.real[acc] = y


def _along(p: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A per-channel vector shaped [C, 1, ...] to broadcast along `axis` of a rank-`rank`
    tensor (axis counted from the front; trailing axes only)."""
    p = np.asarray(p)
    if p.size == 1:
        return p.reshape(())
    return p.reshape((-1,) + (1,) * (rank - 1 - axis))


def _requantize(w: _Writer, node: Node) -> None:
    w.quantize(w.real[node.inputs[0]], node.outputs[0], int(node.attrs["qmin"]),
               int(node.attrs["qmax"]))


def _qadd(w: _Writer, node: Node) -> None:
    y = w.node("Add", [w.dq(node.inputs[0]), w.dq(node.inputs[1])], like=node.outputs[0])
    w.quantize(y, node.outputs[0], int(node.attrs["qmin"]), int(node.attrs["qmax"]))


def _qmul(w: _Writer, node: Node) -> None:
    y = w.node("Mul", [w.dq(node.inputs[0]), w.dq(node.inputs[1])], like=node.outputs[0])
    w.quantize(y, node.outputs[0], int(node.attrs["qmin"]), int(node.attrs["qmax"]))


def _sumpool(w: _Writer, node: Node) -> None:
    xf = w.dq(node.inputs[0])
    if node.attrs.get("global", 0):
        w.real[node.outputs[0]] = w.node("GlobalAveragePool", [xf], like=node.outputs[0])
        return
    attrs = {k: v for k, v in node.attrs.items() if k not in ("placement", "global")}
    attrs["count_include_pad"] = 1
    w.real[node.outputs[0]] = w.node("AveragePool", [xf], attrs, like=node.outputs[0])


def _table(w: _Writer, node: Node) -> None:
    out = node.outputs[0]
    ys = [w.dq(node.inputs[0])]
    for step in json.loads(node.attrs["epilogue"]):
        args = [_step_arg(a, ys, node) for a in step["args"]]
        ys.append(w.node(step["op"], args, step.get("attrs", {}), like=out))
    w.quantize(ys[-1], out, -(1 << 31), (1 << 31) - 1)


def _step_arg(a: int | str, ys: list[str], node: Node) -> str:
    if a == "y":
        return ys[-1]
    if isinstance(a, str):
        return ys[int(a[1:])]
    return node.inputs[1 + a]  # arg k >= 1 is the Table's input k + 1 (after the table)


def _layer_norm(w: _Writer, node: Node) -> None:
    """The real function: gamma = gain s_y / 2^(k+f), beta = bias s_y / 2^f, epsilon =
    eps s_x^2 / (n^2 4^k) (compiler/ops/etch_qnorm.py)."""
    x, out, at = node.inputs[0], node.outputs[0], node.attrs
    s_x, s_y = float(np.float32(w.qp(x).scale)), float(np.float32(w.qp(out).scale))
    k, f, axis = int(at["sqrt_bits"]), int(at["shift"]), int(at.get("axis", -1))
    n = int(np.prod(w.src.values[x].shape[axis:]))
    gain, bias = (w.src.values[i].data.astype(np.float64) for i in node.inputs[1:3])
    params = [w.const(f"{out}_gamma", (gain * s_y / 2.0 ** (k + f)).astype(np.float32)),
              w.const(f"{out}_beta", (bias * s_y / 2.0 ** f).astype(np.float32))]
    eps = float(at["eps"]) * s_x * s_x / (n * n * 4.0 ** k)
    y = w.node("LayerNormalization", [w.dq(x), *params], {"axis": axis, "epsilon": eps},
               like=out)
    w.quantize(y, out, int(at["qmin"]), int(at["qmax"]))


def _softmax(w: _Writer, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    xf = w.dq(x)
    if len(node.inputs) > 2 and node.inputs[2]:
        mask = w.src.values[node.inputs[2]].data
        xf = w.node("Add", [xf, w.const(f"{out}_mask", np.where(mask != 0, -1e9, 0).astype(
            np.float32))], like=out)
    y = w.node("Softmax", [xf], {"axis": int(node.attrs.get("axis", -1))}, like=out)
    w.quantize(y, out, int(node.attrs["qmin"]), int(node.attrs["qmax"]))


def _clamp(w: _Writer, node: Node) -> None:
    dtype = w.src.values[node.inputs[0]].dtype
    lo = w.const("clamp_lo", np.asarray(node.attrs["lo"], dtype))
    hi = w.const("clamp_hi", np.asarray(node.attrs["hi"], dtype))
    w.node("Clip", [node.inputs[0], lo, hi], like=node.outputs[0], out=node.outputs[0],
           dtype=dtype)


def _dequant(w: _Writer, node: Node) -> None:
    """Weight-only etch.Dequant -> DequantizeLinear (or the dequantised constant)."""
    q, scale = (w.src.values[i].data for i in node.inputs[:2])
    zero = w.src.values[node.inputs[2]].data if len(node.inputs) > 2 and node.inputs[2] else None
    out, gs = node.outputs[0], int(node.attrs.get("group_size", 0))
    varying = [k for k, d in enumerate(scale.shape) if d != 1]
    if gs or len(varying) > 1 or (len(node.inputs) > 3 and node.inputs[3]):
        data = ops.registry()["etch.Dequant"].run(node.attrs, *[w.src.values[i].data
                                                                 for i in node.inputs if i])
        w.node("Identity", [w.const(f"{out}_w", data)], like=out, out=out)
        return
    axis = varying[0] if varying else None
    flat = (lambda a: a.reshape(-1)) if axis is not None else (lambda a: a.reshape(()))
    inputs = [node.inputs[0], w.const(f"{out}_s", flat(scale.astype(np.float32)))]
    if zero is not None:
        inputs.append(w.const(f"{out}_z", flat(zero.astype(q.dtype))))
    w.node("DequantizeLinear", inputs, {"axis": axis} if axis is not None else {}, like=out,
           out=out)


def _copy(w: _Writer, node: Node) -> None:
    if node.domain:
        raise EtchError(f"qdq export: node {node.name} ({node.op}) has no QDQ form")
    for o in node.outputs:
        if o and o not in w.out.values:
            v = w.src.values[o]
            w.out.add_value(Value(o, v.shape, v.dtype))
    attrs = {k: v for k, v in node.attrs.items() if k != "placement"}
    w.out.add_node(Node(node.op, list(node.inputs), list(node.outputs), attrs, node.name))


HANDLERS: dict[str, Callable[[_Writer, Node], None]] = {
    "etch.QConv": _linear, "etch.QGemm": _linear, "etch.Requantize": _requantize,
    "etch.QAdd": _qadd, "etch.QMul": _qmul, "etch.QSumPool": _sumpool, "etch.Table": _table,
    "etch.ChannelTable": _table,
    "etch.Clamp": _clamp, "etch.Dequant": _dequant, "etch.QLayerNorm": _layer_norm,
    "etch.QSoftmax": _softmax,
}


def to_qdq(graph: Graph, extra_outputs: Sequence[str] = ()) -> Graph:
    """The QDQ form of a quantised graph, as an IR graph of standard ONNX ops;
    `extra_outputs` names values of `graph` (integer activations, say) to expose too."""
    w = _Writer(graph)
    for node in graph.nodes:
        HANDLERS.get(node.op, _copy)(w, node)
    missing = [v for v in extra_outputs if v not in w.out.values]
    if missing:
        raise EtchError(f"qdq export: no value(s) {missing} to expose")
    w.out.outputs += [v for v in extra_outputs if v not in w.out.outputs]
    w.out.prune()
    w.out.verify()
    return w.out


def export_qdq(graph: Graph, extra_outputs: Sequence[str] = ()) -> onnx.ModelProto:
    """The QDQ ONNX model of a quantised graph (runs in ONNX Runtime)."""
    return onnx_export.export_model(to_qdq(graph, extra_outputs))


def save(graph: Graph, path: str) -> None:
    onnx.save(export_qdq(graph), path)
