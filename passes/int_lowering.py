"""The integer graph under construction: QuantizeActivations' rebuild of a float graph.

`Lowering(graph, ranges, rules, fallback, fixed).build()` walks the float graph in order and
writes a new graph. It keeps, per original value, its integer version (`ints`, an `Act`:
name and x = s(q - z)) and/or its float version (`floats`), creating either on demand with
QuantizeLinear / DequantizeLinear. A rule `rule(lw, node) -> bool` (`passes.int_rules`,
`passes.int_tables`) emits the integer form of a node and returns True, or returns False
(its inputs are not integer, or the node has a form the integer ops do not cover), and the
node is copied as a float host node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from compiler import ops
from compiler.errors import EtchError
from compiler.ir import Graph, Node, QuantParams, Value
from compiler.reference import quantize_multiplier
from passes.epilogue import clamp_bounds

Rule = Callable[["Lowering", Node], bool]


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

    def __init__(self, src: Graph, ranges: dict[str, tuple[float, float]],
                 rules: Mapping[str, Rule], fallback: Rule,
                 fixed: dict[str, tuple[float, int, str]]) -> None:
        self.src, self.ranges, self.rules, self.fallback = src, ranges, rules, fallback
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
        self.fixed = fixed

    # ---- the walk -----------------------------------------------------------------------
    def build(self) -> Graph:
        for node in self.src.nodes:
            if id(node) in self.done:
                continue
            rule = self.rules.get(node.op)
            if not (rule is not None and rule(self, node)) and not self.fallback(self, node):
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
        return self.dst.fresh(base, avoid=self.src.values)

    def const(self, base: str, data: np.ndarray) -> str:
        return self.dst.add_const(base, data, avoid=self.src.values).name

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
            raise EtchError(f"value %{v} needs an activation scale, which the model does not "
                            f"give: pass calibration inputs, --calib DATA.npz keyed like "
                            f"--inputs (a few hundred representative samples)")
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
