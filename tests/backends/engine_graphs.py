"""Small integer graphs that exercise corners of the tensor engine the zoo does not:
a full output-unit epilogue (clamp, composed tables, residual add, clamps folded at each
stage), standalone elementwise layers, windowed pools with padding, dilated strided
grouped convolutions on uint8 activations with odd channel counts."""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.reference import quantize_multiplier

RNG = np.random.default_rng(7)


def _graph(name: str, inputs: dict[str, tuple[tuple[int, ...], str]]) -> Graph:
    g = Graph(name)
    for k, (shape, dtype) in inputs.items():
        g.add_value(Value(k, shape, dtype))
    g.inputs = list(inputs)
    return g


def _node(g: Graph, op: str, inputs: list[str], out: str, shape: tuple[int, ...],
          dtype: str, **attrs: object) -> str:
    g.add_value(Value(out, shape, dtype))
    g.add_node(Node(op, inputs, [out], {**attrs, "placement": "accel"}, f"n_{out}"))
    return out


def _const(g: Graph, name: str, data: np.ndarray) -> str:
    return g.add_const(name, np.asarray(data)).name


def _requant(g: Graph, acc: str, out: str, shape: tuple[int, ...], scale: np.ndarray,
             dtype: str = "int8", zp: int = -3, axis: int | None = 1) -> str:
    m0, sh = quantize_multiplier(scale)
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    attrs = {"zero_point": zp, "qmin": lo, "qmax": hi, "to": dtype}
    if np.size(scale) > 1:
        attrs["axis"] = axis
    return _node(g, "etch.Requantize", [acc, _const(g, f"{out}_m0", m0.astype(np.int32)),
                                        _const(g, f"{out}_sh", sh.astype(np.int32))],
                 out, shape, dtype, **attrs)


def _qadd(g: Graph, a: str, b: str, out: str, shape: tuple[int, ...], **over: int) -> str:
    (am, ash), (bm, bsh), (m, sh) = (quantize_multiplier(r) for r in (0.3, 0.45, 1.7e-6))
    attrs = {"a_zero": 5, "b_zero": -20, "a_m0": int(am), "a_shift": int(ash),
             "b_m0": int(bm), "b_shift": int(bsh), "m0": int(m), "shift": int(sh),
             "left_shift": 20, "zero_point": 7, "qmin": -128, "qmax": 127, "to": "int8"}
    return _node(g, "etch.QAdd", [a, b], out, shape, "int8", **{**attrs, **over})


def _table(g: Graph, x: str, out: str, shape: tuple[int, ...], dtype: str, f) -> str:
    lo = -128 if g.values[x].dtype == "int8" else 0
    levels = np.arange(256) + lo
    table = np.clip(f(levels), *((-128, 127) if dtype == "int8" else (0, 255)))
    return _node(g, "etch.Table", [x, _const(g, f"{out}_t", table.astype(dtype))], out,
                 shape, dtype)


def epilogue_chain() -> Graph:
    """QGemm -> Requantize -> Clamp -> Table -> Table -> Clamp -> QAdd -> Clamp."""
    s = (1, 3, 20)
    g = _graph("epilogue", {"x": (s, "int8"), "r": (s, "int8")})
    w = _const(g, "w", RNG.integers(-8, 8, (20, 20)).astype(np.int8))
    acc = _node(g, "etch.QGemm", ["x", w, _const(g, "b", RNG.integers(-900, 900, 20)
                                                  .astype(np.int32)), _const(g, "xz", 4)],
                "acc", s, "int32")
    y = _requant(g, acc, "y", s, RNG.uniform(0.002, 0.01, 20), axis=2)
    y = _node(g, "etch.Clamp", [y], "c1", s, "int8", lo=-100, hi=90)
    y = _table(g, y, "t1", s, "uint8", lambda v: v * 2 + 60)
    y = _table(g, y, "t2", s, "int8", lambda v: 127 - v)
    y = _node(g, "etch.Clamp", [y], "c2", s, "int8", lo=-60, hi=100)
    y = _qadd(g, "r", y, "sum", s)
    g.outputs = [_node(g, "etch.Clamp", [y], "c3", s, "int8", lo=-7, hi=77)]
    return g


def elementwise() -> Graph:
    """Standalone Table, QAdd and Clamp layers on a uint8 NCHW tensor of 12 channels."""
    s = (1, 12, 5, 5)
    g = _graph("elementwise", {"x": (s, "uint8"), "r": (s, "int8")})
    y = _table(g, "x", "t", s, "int8", lambda v: (v - 128) // 2)
    y = _qadd(g, y, "r", "q", s)
    g.outputs = [_node(g, "etch.Clamp", [y], "c", s, "int8", lo=-50, hi=60)]
    return g


def pools() -> Graph:
    """MaxPool 3x3 / 2 with padding and ceil_mode on uint8, then a padded 3x3 QSumPool."""
    s = (1, 10, 9, 9)
    g = _graph("pools", {"x": (s, "uint8")})
    p = _node(g, "MaxPool", ["x"], "mp", (1, 10, 5, 5), "uint8", kernel_shape=[3, 3],
              strides=[2, 2], pads=[1, 1, 0, 0], ceil_mode=1)
    acc = _node(g, "etch.QSumPool", [p, _const(g, "pz", np.uint8(30))], "sp",
                (1, 10, 5, 5), "int32", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                strides=[1, 1])
    g.outputs = [_requant(g, acc, "avg", (1, 10, 5, 5), np.float64(0.11), "uint8", 9)]
    return g


def conv_geometry() -> Graph:
    """A dilated, strided, grouped, asymmetrically padded QConv on uint8 input."""
    s = (1, 6, 11, 10)
    g = _graph("convgeom", {"x": (s, "uint8")})
    w = _const(g, "w", RNG.integers(-2, 2, (10, 3, 3, 2)).astype(np.int8))
    attrs = {"group": 2, "kernel_shape": [3, 2], "strides": [2, 1], "dilations": [2, 3],
             "pads": [2, 0, 1, 3]}
    out = (1, 10, 5, 10)
    acc = _node(g, "etch.QConv", ["x", w, "", _const(g, "xz", np.uint8(100))], "acc", out,
                "int32", **attrs)
    g.outputs = [_requant(g, acc, "y", out, RNG.uniform(0.01, 0.05, 10), "int8", -1)]
    return g


def inputs(g: Graph, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = {}
        for name in g.inputs:
            v = g.values[name]
            lo, hi = (-128, 128) if v.dtype == "int8" else (0, 256)
            x[name] = rng.integers(lo, hi, v.shape).astype(v.dtype)
        out.append(x)
    return out


GRAPHS = {"epilogue": epilogue_chain, "elementwise": elementwise, "pools": pools,
          "convgeom": conv_geometry}
