"""The rules of QuantizeActivations: each float node becomes integer ops, or stays float.

`Lowering(graph, ranges).build()` walks the float graph in order and writes a new graph.
It keeps, per original value, its integer version (`ints`, an `Act`: name and x = s(q - z))
and/or its float version (`floats`), creating either on demand with QuantizeLinear /
DequantizeLinear. A rule `rule(lw, node) -> bool` emits the integer form of a node and
returns True, or returns False (reason: its inputs are not integer, or the node has a form
the integer ops do not cover) and the node is copied as a float host node.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compiler import ops
from compiler.errors import EtchError
from compiler.ir import Graph, Node, QuantParams, Value
from compiler.ops import ELEMENTWISE
from compiler.reference import quantize_multiplier
from passes.epilogue import absorb_chain, clamp_bounds, relu_or_clip_bounds

MOVES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity",
                   "MaxPool"})
INT_OPS = frozenset({"etch.QConv", "etch.QGemm", "etch.Requantize", "etch.QAdd",
                     "etch.QSumPool", "etch.Table", "etch.Clamp"})
CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


@dataclass(frozen=True)
class Act:
    """An integer activation of the new graph: value name, x = scale * (q - zero)."""

    name: str
    scale: float
    zero: int
    dtype: str = "int8"


def act_params(lo: float, hi: float, dtype: str = "int8") -> tuple[float, int]:
    """(scale, zero point) mapping [lo, hi] (widened to hold 0) onto the dtype's range."""
    info = np.iinfo(dtype)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise EtchError(f"activation range [{lo}, {hi}] is not finite")
    scale = float(np.float32((hi - lo) / (int(info.max) - int(info.min))))
    if not scale > 0:
        scale = 1.0
    zero = int(np.clip(np.rint(info.min - lo / scale), info.min, info.max))
    return scale, zero


class Lowering:
    """One rebuild of a float graph into the integer graph."""

    def __init__(self, src: Graph, ranges: dict[str, tuple[float, float]]) -> None:
        self.src, self.ranges = src, ranges
        self.dst = Graph(src.name)
        self.dst.opset, self.dst.metadata = max(src.opset, 13), dict(src.metadata)
        self.dst.inputs = list(src.inputs)
        for v in src.values.values():
            if v.is_const or v.name in src.inputs:
                self.dst.add_value(Value(v.name, v.shape, v.dtype, v.data, v.quant))
        self.ints: dict[str, Act] = {}
        self.raw: set[str] = set()  # other integer values (imported int32 accumulators)
        self.floats: dict[str, str] = {i: i for i in src.inputs}
        self.done: set[int] = set()
        self.producers, self.consumers = src.producers(), src.consumers()
        self.fixed = _given_params(src)
        self.roots = table_roots(src)

    # ---- the walk -----------------------------------------------------------------------
    def build(self) -> Graph:
        for node in self.src.nodes:
            if id(node) in self.done:
                continue
            rule = RULES.get(node.op, _native if node.op in INT_OPS else None)
            if not (rule is not None and rule(self, node)) and not _table(self, node):
                self.host(node)
        for o in self.src.outputs:
            if o not in self.floats:
                self.flt(o)
        self.dst.outputs = list(self.src.outputs)
        self.dst.prune()
        return self.dst

    def host(self, node: Node) -> None:
        """Copy `node` as a float node reading float versions of its inputs."""
        inputs = [self.flt(i) if i else "" for i in node.inputs]
        for o in node.outputs:
            if o:
                v = self.src.values[o]
                self.dst.add_value(Value(o, v.shape, v.dtype, None, v.quant))
                self.floats[o] = o
        self.emit(node.op, inputs, list(node.outputs), dict(node.attrs), "host", node.name)

    # ---- values -------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.dst.values or name in self.src.values:
            i += 1
            name = f"{base}_{i}"
        return name

    def const(self, base: str, data: np.ndarray) -> str:
        name = self.fresh(base)
        arr = np.asarray(data)
        self.dst.add_value(Value(name, tuple(arr.shape), arr.dtype.name, arr))
        return name

    def is_const(self, name: str) -> bool:
        return bool(name) and self.src.values[name].is_const

    def const_data(self, name: str) -> np.ndarray | None:
        """A constant's data, or the value of an etch.Dequant of constants (an imported
        model's dequantised bias), else None."""
        v = self.src.values[name]
        if v.is_const:
            return v.data
        p = self.producers.get(name)
        if p is None or p.op != "etch.Dequant" or not all(self.is_const(i) for i in p.inputs
                                                          if i):
            return None
        args = [self.src.values[i].data if i else None for i in p.inputs]
        return ops.as_list(ops.registry()[p.op].run(p.attrs, *args))[0]

    def params(self, v: str) -> tuple[float, int, str]:
        """(scale, zero, dtype) for original value v: the model's own, else calibration."""
        if v in self.fixed:
            return self.fixed[v]
        if v in self.ranges:
            lo, hi = self.ranges[v]
        elif self.src.values[v].is_const:
            data = self.src.values[v].data
            lo, hi = float(data.min(initial=0)), float(data.max(initial=0))
        else:
            raise EtchError(f"no calibration range for %{v}")
        try:
            return (*act_params(lo, hi), "int8")
        except EtchError as e:
            raise EtchError(f"value %{v}: {e}; it cannot be quantised") from e

    def new_act(self, v: str, scale: float, zero: int, dtype: str = "int8") -> Act:
        """A fresh integer value standing for original value v (the caller writes it)."""
        shape = self.src.values[v].shape
        qp = QuantParams(np.float32(scale), np.asarray(zero, dtype), 8, dtype == "int8")
        name = self.fresh(f"{v}_q")
        self.dst.add_value(Value(name, shape, dtype, None, qp))
        act = Act(name, scale, zero, dtype)
        self.ints[v] = act
        return act

    def act(self, v: str) -> Act:
        """The integer version of v, quantising its float version if needed."""
        if v in self.ints:
            return self.ints[v]
        s, z, dtype = self.params(v)
        src = self.flt(v)
        out = self.new_act(v, s, z, dtype)
        self.emit("QuantizeLinear", [src, *self.qdq_params(s, z, dtype)], [out.name], {},
                  "host", f"{v}_quantize")
        return out

    def flt(self, v: str) -> str:
        """The float version of v, dequantising its integer version if needed."""
        if v in self.floats:
            return self.floats[v]
        if self.src.values[v].is_const:
            return v
        if v not in self.ints:
            raise EtchError(f"internal: %{v} has neither a float nor an integer version")
        a, sv = self.ints[v], self.src.values[v]
        self.dst.add_value(Value(v, sv.shape, "float32"))
        self.emit("DequantizeLinear", [a.name, *self.qdq_params(a.scale, a.zero, a.dtype)],
                  [v], {}, "host", f"{v}_dequantize")
        self.floats[v] = v
        return v

    def qdq_params(self, s: float, z: int, dtype: str) -> list[str]:
        return [self.const("q_scale", np.float32(s)), self.const("q_zero", np.asarray(z, dtype))]

    def emit(self, op: str, inputs: list[str], outputs: list[str], attrs: dict,
             placement: str, name: str = "") -> Node:
        attrs = {**attrs, "placement": placement}
        return self.dst.add_node(Node(op, inputs, outputs, attrs, name))

    def requantize(self, acc: str, sigma: np.ndarray, out_v: str, axis: int | None,
                   bounds: tuple[float, float] = (-np.inf, np.inf)) -> Act:
        """Requantize int32 `acc` (real = sigma * acc) to the scale of original value out_v."""
        s, z, dtype = self.params(out_v)
        m0, shift = quantize_multiplier(np.asarray(sigma, np.float64) / s)
        if np.any(shift < 0) or np.any(m0 <= 0):
            raise EtchError(f"%{out_v}: requantisation multiplier out of range "
                            f"({np.min(sigma / s):.3g}..{np.max(sigma / s):.3g})")
        qmin, qmax = clamp_bounds(bounds, s, z, dtype)
        out = self.new_act(out_v, s, z, dtype)
        scalar = m0.size == 1 or bool(np.all(m0 == m0.flat[0]) and np.all(shift == shift.flat[0]))
        m0, shift = (m0.reshape(-1)[:1].reshape(()), shift.reshape(-1)[:1].reshape(())) \
            if scalar else (m0, shift)
        attrs = {"zero_point": z, "qmin": qmin, "qmax": qmax, "to": dtype,
                 "axis": None if scalar else axis}
        self.emit("etch.Requantize", [acc, self.const(f"{out_v}_m0", m0.astype(np.int32)),
                                      self.const(f"{out_v}_shift", shift.astype(np.int32))],
                  [out.name], {k: v for k, v in attrs.items() if v is not None}, "accel",
                  f"{out_v}_requantize")
        return out

    def accumulator(self, v: str, shape: tuple[int, ...], sigma: np.ndarray,
                    axis: int | None) -> str:
        """A fresh int32 accumulator value with real scale sigma (per channel along axis)."""
        qp = QuantParams(np.asarray(sigma, np.float32), np.zeros((), np.int32), 32, True,
                         axis if np.size(sigma) > 1 else None)
        name = self.fresh(f"{v}_acc")
        self.dst.add_value(Value(name, shape, "int32", None, qp))
        return name


# ---- rules ------------------------------------------------------------------------------------
def _linear(lw: Lowering, node: Node) -> bool:
    attrs = node.attrs
    if node.op == "Gemm" and attrs.get("transA", 0):
        return False
    w = weight_codes(lw, node)
    out_shape = lw.src.values[node.outputs[0]].shape
    axis = 1 if node.op in ("Conv", "Gemm") else len(out_shape) - 1
    if w is None:
        a, b = node.inputs[:2]
        if node.op != "MatMul" or lw.is_const(a) or lw.is_const(b):
            return False
        if a not in lw.ints and b not in lw.ints:
            return False
        xa, xb = lw.act(a), lw.act(b)
        base = np.float64(xa.scale) * xb.scale
        inputs = [xa.name, xb.name, "", lw.const("a_zero", np.asarray(xa.zero, xa.dtype)),
                  lw.const("b_zero", np.asarray(xb.zero, xb.dtype))]
        bias = np.zeros(out_shape[axis])
    else:
        x = lw.act(node.inputs[0])
        base = np.float64(x.scale) * w.scale
        inputs = [x.name, weight_const(lw, node, w.codes, w.scale), "",
                  lw.const("x_zero", np.asarray(x.zero, x.dtype))]
        if w.mult is not None:
            inputs += ["", lw.const(f"{node.inputs[1]}_mult", w.mult.astype(np.int32))]
        bias = initial_bias(lw, node, base, out_shape[axis])
        if bias is None:
            return False
    alpha = float(attrs.get("alpha", 1.0)) if node.op == "Gemm" else 1.0
    if alpha <= 0:
        return False
    chain = absorb_chain(lw.src, node, axis, lw.consumers, np.float64(alpha), base, bias)
    lw.done.update(id(n) for n in chain.nodes)
    sigma = chain.scale * base
    b_int = np.clip(np.rint(chain.bias), -(1 << 31), (1 << 31) - 1).astype(np.int32)
    if np.any(b_int):
        inputs[2] = lw.const(f"{node.name}_bias", np.broadcast_to(b_int, (out_shape[axis],)))
    acc = lw.accumulator(chain.out, out_shape, np.broadcast_to(sigma, np.shape(bias)), axis)
    op = "etch.QConv" if node.op == "Conv" else "etch.QGemm"
    kattrs = {k: v for k, v in attrs.items() if k in CONV_ATTRS} if op == "etch.QConv" else {}
    if w is not None and w.mult is not None:
        kattrs["group_size"] = w.group_size
    lw.emit(op, inputs, [acc], kattrs, "accel", node.name)
    lw.requantize(acc, sigma, chain.out, axis, chain.bounds)
    return True


@dataclass(frozen=True)
class Weight:
    """A layer's integer weight: codes in the integer op's layout ([O, C/g, *k] for QConv,
    [K, N] for QGemm), per-output-channel scales, and optional group multipliers in the
    op's layout ([O, C/g/G] / [K/G, N]) with their group size G (in input channels)."""

    codes: np.ndarray
    scale: np.ndarray
    mult: np.ndarray | None = None
    group_size: int = 0


def weight_codes(lw: Lowering, node: Node) -> Weight | None:
    """The integer weight of a layer whose weight is an etch.Dequant of symmetric
    per-channel (or per-tensor) constant codes, possibly with integer group multipliers."""
    p = lw.producers.get(node.inputs[1])
    if p is None or p.op != "etch.Dequant" or not all(lw.is_const(i) for i in p.inputs if i):
        return None
    arg = [lw.src.values[i].data if i else None for i in p.inputs] + [None] * 4
    q, scale, zero, mult = arg[:4]
    gs = int(p.attrs.get("group_size", 0))
    if (zero is not None and np.any(zero)) or (gs and mult is None) or q.ndim < 2:
        return None
    n_first = node.op == "Conv" or (node.op == "Gemm" and node.attrs.get("transB", 0))
    n_axis = 0 if n_first else q.ndim - 1
    if any(d != 1 for k, d in enumerate(scale.shape) if k != n_axis):
        return None
    if node.op == "MatMul" and q.ndim != 2:
        return None
    transpose = node.op == "Gemm" and n_first
    codes = q.T if transpose else q
    if mult is not None:
        mult = np.broadcast_to(mult, mult.shape[:2] + (1,) * (mult.ndim - 2))
        mult = mult.reshape(mult.shape[:2])
        mult = mult.T if transpose else mult
        if gs == 0:  # one group spanning K
            gs = codes.shape[1] if node.op == "Conv" else codes.shape[0]
    return Weight(codes, scale.astype(np.float64).reshape(-1), mult, gs)


def weight_const(lw: Lowering, node: Node, codes: np.ndarray, s_w: np.ndarray) -> str:
    """The integer op's weight codes as a constant annotated with their scales (per output
    channel: axis 0 of a QConv weight, axis 1 of a QGemm [K, N] weight)."""
    name = lw.const(f"{node.inputs[1]}_codes", codes)
    p = lw.producers[node.inputs[1]]
    lw.dst.values[name].quant = QuantParams(
        s_w.astype(np.float32), np.zeros((), codes.dtype), int(p.attrs.get("bits", 8)), True,
        0 if node.op == "Conv" else 1, None, str(p.attrs.get("kind", "int")))
    return name


def initial_bias(lw: Lowering, node: Node, base: np.ndarray, n: int) -> np.ndarray | None:
    """The layer's own bias in accumulator units (None: a bias the integer op cannot take)."""
    name = node.inputs[2] if len(node.inputs) > 2 else ""
    if not name:
        return np.zeros(n)
    c = lw.const_data(name)
    if c is None:
        return None
    c = c.astype(np.float64)
    if c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
        return None
    beta = float(node.attrs.get("beta", 1.0)) if node.op == "Gemm" else 1.0
    alpha = float(node.attrs.get("alpha", 1.0)) if node.op == "Gemm" else 1.0
    return np.broadcast_to(beta * c.reshape(-1) / (alpha * base), (n,)).copy()


def _add(lw: Lowering, node: Node) -> bool:
    a, b = node.inputs[:2]
    if a not in lw.ints or b not in lw.ints:
        return False
    chain = absorb_chain(lw.src, node, None, lw.consumers, None, None, None)
    lw.done.update(id(n) for n in chain.nodes)
    xa, xb = lw.ints[a], lw.ints[b]
    s, z, dtype = lw.params(chain.out)
    twice = 2.0 * max(xa.scale, xb.scale)
    (am, ash), (bm, bsh) = (quantize_multiplier(xa.scale / twice),
                            quantize_multiplier(xb.scale / twice))
    m0, shift = quantize_multiplier(twice / ((1 << 20) * s))
    qmin, qmax = clamp_bounds(chain.bounds, s, z, dtype)
    attrs = {"a_zero": xa.zero, "b_zero": xb.zero, "a_m0": int(am), "a_shift": int(ash),
             "b_m0": int(bm), "b_shift": int(bsh), "m0": int(m0), "shift": int(shift),
             "left_shift": 20, "zero_point": z, "qmin": qmin, "qmax": qmax, "to": dtype}
    out = lw.new_act(chain.out, s, z, dtype)
    lw.emit("etch.QAdd", [xa.name, xb.name], [out.name], attrs, "accel", node.name)
    return True


def _clamp(lw: Lowering, node: Node) -> bool:
    x = node.inputs[0]
    if x not in lw.ints:
        return False
    bounds = relu_or_clip_bounds(lw.src, node)
    if bounds is None:
        return False
    a = lw.ints[x]
    lo, hi = clamp_bounds(bounds, a.scale, a.zero, a.dtype)
    out = lw.new_act(node.outputs[0], a.scale, a.zero, a.dtype)
    lw.emit("etch.Clamp", [a.name], [out.name], {"lo": lo, "hi": hi}, "accel", node.name)
    return True


def _move(lw: Lowering, node: Node) -> bool:
    x = node.inputs[0]
    if x not in lw.ints or not all(lw.is_const(i) for i in node.inputs[1:] if i):
        return False
    if any(o and lw.consumers.get(o) or o in lw.src.outputs for o in node.outputs[1:]):
        return False
    a = lw.ints[x]
    out = lw.new_act(node.outputs[0], a.scale, a.zero, a.dtype)
    lw.emit(node.op, [a.name, *node.inputs[1:]], [out.name], dict(node.attrs), "accel",
            node.name)
    return True


def _pool(lw: Lowering, node: Node) -> bool:
    x = node.inputs[0]
    shape = lw.src.values[x].shape
    if x not in lw.ints or len(shape) < 3:
        return False
    attrs = pool_attrs(lw.src, node, shape)
    if attrs is None:
        return False
    count = int(np.prod(shape[2:] if attrs.get("global") else attrs["kernel_shape"]))
    a = lw.ints[x]
    out_shape = lw.src.values[node.outputs[0]].shape
    sigma = np.float64(a.scale) / count
    acc = lw.accumulator(node.outputs[0], out_shape, sigma, None)
    zero = lw.const("x_zero", np.asarray(a.zero, a.dtype))
    lw.emit("etch.QSumPool", [a.name, zero], [acc], attrs, "accel", node.name)
    lw.requantize(acc, sigma, node.outputs[0], None)
    return True


def pool_attrs(src: Graph, node: Node, shape: tuple[int, ...]) -> dict | None:
    """etch.QSumPool attrs for a mean over windows or over all spatial axes (else None)."""
    if node.op == "GlobalAveragePool":
        return {"global": 1}
    if node.op == "ReduceMean":
        axes = node.attrs.get("axes")
        if axes is None and len(node.inputs) > 1 and node.inputs[1]:
            axes = src.values[node.inputs[1]].data
        spatial = tuple(range(2, len(shape)))
        norm = tuple(sorted(int(a) % len(shape) for a in np.asarray(axes).reshape(-1))) \
            if axes is not None else None
        return {"global": 1} if norm == spatial and node.attrs.get("keepdims", 1) else None
    if node.op != "AveragePool" or node.attrs.get("ceil_mode", 0):
        return None
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    if any(node.attrs.get("pads") or []) and not node.attrs.get("count_include_pad", 0):
        return None
    return {k: v for k, v in node.attrs.items()
            if k in ("kernel_shape", "strides", "pads", "dilations")}


def _quantize_linear(lw: Lowering, node: Node) -> bool:
    v, out = node.inputs[0], node.outputs[0]
    if out not in lw.fixed:
        return False
    s, z, dtype = lw.fixed[out]
    if v in lw.ints and (lw.ints[v].scale, lw.ints[v].zero, lw.ints[v].dtype) == (s, z, dtype):
        lw.ints[out] = lw.ints[v]
        return True
    act = lw.new_act(out, s, z, dtype)
    lw.emit("QuantizeLinear", [lw.flt(v), *node.inputs[1:]], [act.name], dict(node.attrs),
            "host", node.name)
    return True


def _dequantize_linear(lw: Lowering, node: Node) -> bool:
    u, out = node.inputs[0], node.outputs[0]
    if u not in lw.ints or out not in lw.fixed or lw.fixed[out] != lw.fixed.get(u):
        return False
    lw.ints[out] = lw.ints[u]
    return True


def _native(lw: Lowering, node: Node) -> bool:
    """An integer op already in the graph (imported): kept, reading integer versions."""
    inputs = []
    for i in node.inputs:
        if not i or lw.is_const(i) or i in lw.raw:
            inputs.append(i)
        elif i in lw.ints:
            inputs.append(lw.ints[i].name)
        else:
            return False
    outs = []
    for o in node.outputs:
        v = lw.src.values[o]
        if v.dtype in ("int8", "uint8") and v.quant is not None:
            act = lw.new_act(o, float(np.asarray(v.quant.scale).reshape(-1)[0]),
                             int(np.asarray(v.quant.zero_point).reshape(-1)[0]), v.dtype)
            outs.append(act.name)
        else:
            lw.dst.add_value(Value(o, v.shape, v.dtype, None, v.quant))
            lw.raw.add(o)
            outs.append(o)
    lw.emit(node.op, inputs, outs, dict(node.attrs), "accel", node.name)
    return True


# ---- tables ---------------------------------------------------------------------------------
def table_roots(src: Graph) -> dict[str, str]:
    """Value -> the one activation it is an elementwise function of (through float
    elementwise ops with scalar constants and no broadcasting), for values that are one."""
    roots: dict[str, str] = {}
    for node in src.nodes:
        if node.op not in ELEMENTWISE or len(node.outputs) != 1:
            continue
        out = src.values[node.outputs[0]]
        acts = [i for i in node.inputs if i and not src.values[i].is_const]
        consts = [i for i in node.inputs if i and src.values[i].is_const]
        if out.dtype != "float32" or any(src.values[c].size != 1 for c in consts):
            continue
        rs = {roots.get(a, a) for a in acts}
        if len(rs) == 1 and src.values[next(iter(rs))].shape == out.shape:
            roots[out.name] = rs.pop()
    return roots


def _table(lw: Lowering, node: Node) -> bool:
    out = node.outputs[0] if node.outputs else ""
    root = lw.roots.get(out)
    if root is None or root not in lw.ints:
        return False
    readers = lw.consumers.get(out, [])
    if out not in lw.src.outputs and all(lw.roots.get(r.outputs[0]) == root for r in readers):
        return True  # an inner value of the region: the exits' tables include it
    steps, consts = region_steps(lw.src, root, out, lw.roots)
    x = lw.ints[root]
    s, z, dtype = lw.params(out)
    table = build_table(steps, [lw.src.values[c].data for c in consts], x, s, z, dtype)
    act = lw.new_act(out, s, z, dtype)
    lw.emit("etch.Table", [x.name, lw.const(f"{out}_table", table), *consts], [act.name],
            {"epilogue": json.dumps(steps, default=_json_default)}, "accel", node.name)
    return True


def region_steps(src: Graph, root: str, out: str,
                 roots: dict[str, str]) -> tuple[list[dict], list[str]]:
    """etch.Fused epilogue steps computing `out` from `root` (arg 0) and the constants
    (args 1..), and the constants' names."""
    producers = src.producers()
    needed, stack = set(), [out]
    while stack:
        v = stack.pop()
        if v == root or v in needed or roots.get(v) != root:
            continue
        needed.add(v)
        stack.extend(i for i in producers[v].inputs if i)
    index, consts, steps = {root: "y0"}, [], []
    for node in src.nodes:
        if node.outputs[0] not in needed:
            continue
        args = []
        for i in node.inputs:
            if i in index:
                args.append(index[i])
            else:
                if i not in consts:
                    consts.append(i)
                args.append(1 + consts.index(i))
        steps.append({"op": node.op, "args": args, "attrs": dict(node.attrs)})
        index[node.outputs[0]] = f"y{len(steps)}"
    return steps, consts


def build_table(steps: list[dict], consts: list[np.ndarray], x: Act, s: float, z: int,
                dtype: str) -> np.ndarray:
    """The 256 outputs: QuantizeLinear(f(DequantizeLinear(level))) for every input level,
    with f the region's own float reference ops (the QDQ form of the same function)."""
    info = np.iinfo(x.dtype)
    levels = np.arange(int(info.min), int(info.max) + 1).astype(x.dtype)
    reg = ops.registry()
    real = reg["DequantizeLinear"].run({}, levels, np.float32(x.scale), np.asarray(x.zero, x.dtype))
    attrs = {"kernel": "", "epilogue": json.dumps(steps, default=_json_default)}
    with np.errstate(all="ignore"):
        y = np.asarray(reg["etch.Fused"].run(attrs, real, *consts), np.float32).reshape(-1)
    return reg["QuantizeLinear"].run({}, y, np.float32(s), np.asarray(z, dtype)).astype(dtype)


def _json_default(v: object) -> object:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


def _given_params(src: Graph) -> dict[str, tuple[float, int, str]]:
    """(scale, zero, dtype) that the model's own per-tensor QuantizeLinear nodes fix, for
    their input and output values (and the outputs of DequantizeLinear reading those)."""
    out: dict[str, tuple[float, int, str]] = {}
    for node in src.nodes:
        if node.op not in ("QuantizeLinear", "DequantizeLinear") or len(node.inputs) < 2:
            continue
        s = src.values[node.inputs[1]]
        z = src.values[node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] else None
        if not s.is_const or s.size != 1 or (z is not None and (not z.is_const or z.size != 1)):
            continue
        dtype = z.dtype if z is not None else "uint8"
        p = (float(s.data.reshape(())), int(z.data.reshape(())) if z is not None else 0, dtype)
        if node.op == "QuantizeLinear":
            out[node.inputs[0]] = out[node.outputs[0]] = p
        elif not src.values[node.inputs[0]].is_const:
            out[node.outputs[0]] = out[node.inputs[0]] = p
    for node in reversed(src.nodes):  # data movement keeps scales: Reshape(mean) -> Q
        if node.op in MOVES and node.outputs[0] in out and node.inputs[0] not in out:
            out[node.inputs[0]] = out[node.outputs[0]]
    return out


RULES: dict[str, Callable[[Lowering, Node], bool]] = {
    "Conv": _linear, "Gemm": _linear, "MatMul": _linear,
    "Add": _add, "Relu": _clamp, "Clip": _clamp,
    **{op: _move for op in MOVES},
    "GlobalAveragePool": _pool, "ReduceMean": _pool, "AveragePool": _pool,
    "QuantizeLinear": _quantize_linear, "DequantizeLinear": _dequantize_linear,
}
