"""The integer forms of float ops, one rule per op family, for `passes.int_lowering`.

Each rule `rule(lw, node) -> bool` emits the node's integer form into `lw` and returns True,
or returns False and leaves the node to the host (see QuantizeActivations' docstring for
what each rule covers). `given_params` reads an imported model's own activation scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler import ops
from compiler.ir import Graph, Node, QuantParams, Value
from compiler.reference import quantize_multiplier
from passes.epilogue import absorb_chain, clamp_bounds, relu_or_clip_bounds
from passes.int_lowering import Act, Lowering, Rule, act_params

MOVES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity",
                   "MaxPool", "Gather"})
INT_OPS = frozenset({"etch.QConv", "etch.QGemm", "etch.Requantize", "etch.QAdd",
                     "etch.QSumPool", "etch.Table", "etch.ChannelTable", "etch.Clamp",
                     "etch.QLayerNorm", "etch.QSoftmax"})
CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


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
    """Add of two integer activations, or of one and a finite constant (quantised at compile
    time with its own range: a position embedding) -> etch.QAdd."""
    a, b = node.inputs[:2]
    if lw.is_const(a):
        a, b = b, a
    if a not in lw.ints:
        return False
    xb = lw.ints[b] if b in lw.ints else const_act(lw, b)
    if xb is None:
        return False
    chain = absorb_chain(lw.src, node, None, lw.consumers, None, None, None)
    lw.done.update(id(n) for n in chain.nodes)
    xa = lw.ints[a]
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


def _mul(lw: Lowering, node: Node) -> bool:
    """Mul of two integer activations (a squeeze-and-excitation gate times its feature map)
    -> etch.QMul: one requantisation of the exact product, instead of dequantising both,
    multiplying in float and quantising again (three passes over the map on the host)."""
    a, b = node.inputs[:2]
    if a not in lw.ints or b not in lw.ints:
        return False
    chain = absorb_chain(lw.src, node, None, lw.consumers, None, None, None)
    xa, xb = lw.ints[a], lw.ints[b]
    s, z, dtype = lw.params(chain.out)
    m0, shift = quantize_multiplier(xa.scale * xb.scale / s)
    if not 0 <= int(shift) <= 62:  # a multiplier the requantisation cannot hold
        return False
    lw.done.update(id(n) for n in chain.nodes)
    qmin, qmax = clamp_bounds(chain.bounds, s, z, dtype)
    attrs = {"a_zero": xa.zero, "b_zero": xb.zero, "m0": int(m0), "shift": int(shift),
             "zero_point": z, "qmin": qmin, "qmax": qmax, "to": dtype}
    out = lw.new_act(chain.out, s, z, dtype)
    lw.emit("etch.QMul", [xa.name, xb.name], [out.name], attrs, "accel", node.name)
    return True


PRODUCT: Rule = _mul  # Mul's rule where the target builds etch.QMul (`QuantizeActivations`)


def const_act(lw: Lowering, name: str) -> Act | None:
    """A finite float constant as int8 codes over its own range (None if it is not one)."""
    data = lw.const_data(name) if name else None
    if data is None or data.dtype.kind != "f" or not data.size or not np.all(np.isfinite(data)):
        return None
    s, z = act_params(float(data.min()), float(data.max()))
    codes = lw.const(f"{name}_codes", quantize_const(data, s, z, "int8"))
    lw.dst.values[codes].quant = QuantParams(np.float32(s), np.asarray(z, np.int8), 8, True)
    return Act(codes, s, z)


def quantize_const(data: np.ndarray, s: float, z: int, dtype: str) -> np.ndarray:
    """QuantizeLinear of a constant at compile time (the host op's own semantics)."""
    run = ops.registry()["QuantizeLinear"].run
    return np.asarray(run({}, data.astype(np.float32), np.float32(s), np.asarray(z, dtype)))


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


def _concat(lw: Lowering, node: Node) -> bool:
    """Concat of integer activations that share the output's parameters (calibration gives
    them one range, `concat_groups`) and of constants (quantised to those parameters at
    compile time: a class token) -> Concat on the integers."""
    if not any(i in lw.ints for i in node.inputs):
        return False
    if not all(i in lw.ints or lw.is_const(i) for i in node.inputs):
        return False
    s, z, dtype = lw.params(node.outputs[0])
    acts = [lw.ints[i] for i in node.inputs if i in lw.ints]
    if any((a.scale, a.zero, a.dtype) != (s, z, dtype) for a in acts):
        return False
    if any(lw.src.values[i].dtype != "float32" for i in node.inputs if lw.is_const(i)):
        return False
    names = [lw.ints[i].name if i in lw.ints else
             lw.const(f"{i}_codes", quantize_const(lw.src.values[i].data, s, z, dtype))
             for i in node.inputs]
    out = lw.new_act(node.outputs[0], s, z, dtype)
    lw.emit("Concat", names, [out.name], dict(node.attrs), "accel", node.name)
    return True


def concat_groups(src: Graph) -> list[set[str]]:
    """Values that must share one activation range for Concat to run on the integers: each
    Concat's activation inputs (its constants are quantised to that range) and output,
    joined through the data movement (MaxPool, Reshape, ...) that keeps its input's
    parameters (networkx connected components)."""
    import networkx as nx

    g = nx.Graph()
    for node in src.nodes:
        inputs = [i for i in node.inputs if i and not src.values[i].is_const]
        if node.op == "Concat" and inputs:
            g.add_edges_from((node.outputs[0], i) for i in inputs)
    for node in src.nodes:
        x = node.inputs[0] if node.inputs else ""
        if node.op in MOVES and (x in g or node.outputs[0] in g):
            g.add_edge(x, node.outputs[0])
    return [set(c) for c in nx.connected_components(g)]


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


def given_params(src: Graph) -> dict[str, tuple[float, int, str]]:
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


RULES: dict[str, Rule] = {
    "Conv": _linear, "Gemm": _linear, "MatMul": _linear,
    "Add": _add, "Relu": _clamp, "Clip": _clamp,
    **{op: _move for op in MOVES},
    "GlobalAveragePool": _pool, "ReduceMean": _pool, "AveragePool": _pool, "Concat": _concat,
    "QuantizeLinear": _quantize_linear, "DequantizeLinear": _dequantize_linear,
    **{op: _native for op in INT_OPS},
}
