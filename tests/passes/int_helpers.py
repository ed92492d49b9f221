"""Hand-built integer graphs for the integer fusion tests: int8 inputs with seeded data,
constants, and the integer ops with realistic parameters (shapes inferred)."""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.onnx_import import infer_outputs
from compiler.reference import quantize_multiplier

# a TFLite-style integer add (compiler/ops/etch_int.py): two inputs onto one output scale
QADD = {"a_zero": 3, "b_zero": -7, "a_m0": 1388937755, "a_shift": 33, "b_m0": 1073741824,
        "b_shift": 31, "m0": 1623864644, "shift": 49, "left_shift": 20, "zero_point": -10,
        "qmin": -128, "qmax": 127, "to": "int8"}


class IntGraph:
    """A graph under construction; `feeds` holds data for its inputs."""

    def __init__(self, seed: int = 0) -> None:
        self.g, self.feeds = Graph("int"), {}
        self.rng = np.random.default_rng(seed)

    def input(self, name: str, shape: tuple[int, ...], dtype: str = "int8") -> str:
        info = np.iinfo(dtype)
        self.g.add_value(Value(name, shape, dtype))
        self.g.inputs.append(name)
        self.feeds[name] = self.rng.integers(info.min, info.max + 1, shape).astype(dtype)
        return name

    def const(self, name: str, data: np.ndarray) -> str:
        return self.g.add_const(name, np.asarray(data)).name

    def op(self, op: str, inputs: list[str], out: str, **attrs: object) -> str:
        node = Node(op, list(inputs), [out], dict(attrs), f"{op.split('.')[-1]}_{out}")
        [(shape, dtype)] = infer_outputs(node, [self.g.values[i] if i else None
                                                for i in inputs])
        self.g.add_value(Value(out, tuple(shape), dtype))
        self.g.add_node(node)
        return out

    def qconv(self, x: str, oc: int, out: str, k: int = 3, **attrs: object) -> str:
        c = self.g.values[x].shape[1] // int(attrs.get("group", 1))
        w = self.const(f"{out}_w", self.rng.integers(-127, 128, (oc, c, k, k)).astype(np.int8))
        b = self.const(f"{out}_b", self.rng.integers(-3000, 3000, oc).astype(np.int32))
        z = self.const(f"{out}_z", np.int8(-5))
        pads = [k // 2] * 4
        return self.op("etch.QConv", [x, w, b, z], out, kernel_shape=[k, k], pads=pads,
                       **attrs)

    def qgemm(self, a: str, n: int, out: str) -> str:
        k = self.g.values[a].shape[-1]
        w = self.const(f"{out}_w", self.rng.integers(-127, 128, (k, n)).astype(np.int8))
        z = self.const(f"{out}_z", np.int8(4))
        return self.op("etch.QGemm", [a, w, "", z], out)

    def requantize(self, acc: str, out: str, axis: int | None = 1, **bounds: int) -> str:
        """Per-channel along `axis` (None: per tensor) multipliers of about 1e-3."""
        shape = self.g.values[acc].shape
        n = 1 if axis is None else shape[axis]
        m0, shift = quantize_multiplier(self.rng.uniform(2e-4, 2e-3, n))
        if axis is None:
            m0, shift = m0.reshape(()), shift.reshape(())
        attrs = {"zero_point": 2, "qmin": -128, "qmax": 127, "to": "int8", **bounds}
        if axis is not None:
            attrs["axis"] = axis
        return self.op("etch.Requantize", [acc, self.const(f"{out}_m0", m0.astype(np.int32)),
                                           self.const(f"{out}_sh", shift.astype(np.int32))],
                       out, **attrs)

    def table(self, x: str, out: str, dtype: str = "int8") -> str:
        info = np.iinfo(dtype)
        t = self.rng.integers(info.min, info.max + 1, 256).astype(dtype)
        return self.op("etch.Table", [x, self.const(f"{out}_t", t)], out)

    def outputs(self, *names: str) -> Graph:
        self.g.outputs += list(names)
        return self.g
