"""Absorbing what follows an integer kernel into its bias, multiplier and saturation bounds.

After a linear op whose int32 accumulator acc stands for real = f * base * (acc + bias)
(base = s_x * s_w per output channel), a chain of single-reader nodes is absorbed:
- Add/Sub of a constant t per output channel: bias += +-t / (f * base);
- Mul/Div by a positive constant c per output channel: f *= c (or 1/c);
- one Relu, or Clip with constant bounds: the requantisation's saturation bounds (last).
After an integer Add only the clamp is absorbed. The chain stops at a value that is a graph
output or has several readers (it must exist in the integer graph).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ir import Graph, Node
from passes.fold_constants import channel_vector


@dataclass
class Chain:
    """The absorbed nodes, the value their result stands for, and what they contribute."""

    out: str
    nodes: list[Node]
    scale: np.ndarray | None
    bias: np.ndarray | None
    bounds: tuple[float, float]


def relu_or_clip_bounds(src: Graph, node: Node) -> tuple[float, float] | None:
    """The real clamp interval of a Relu, or of a Clip with constant bounds (else None)."""
    if node.op == "Relu":
        return 0.0, np.inf
    if node.op != "Clip":
        return None
    lims = []
    for k, default in ((1, -np.inf), (2, np.inf)):
        name = node.inputs[k] if len(node.inputs) > k else ""
        if name and not src.values[name].is_const:
            return None
        lims.append(float(src.values[name].data) if name else default)
    return lims[0], lims[1]


def clamp_bounds(bounds: tuple[float, float], scale: float, zero: int,
                 dtype: str) -> tuple[int, int]:
    """Integer saturation bounds for a real clamp interval at (scale, zero), in dtype."""
    info = np.iinfo(dtype)
    lo, hi = bounds
    qlo = int(info.min) if lo == -np.inf else int(np.clip(np.rint(lo / scale) + zero,
                                                          info.min, info.max))
    qhi = int(info.max) if hi == np.inf else int(np.clip(np.rint(hi / scale) + zero,
                                                         info.min, info.max))
    return qlo, max(qlo, qhi)


def absorb_chain(src: Graph, node: Node, axis: int | None, consumers: dict[str, list[Node]],
                 scale: np.ndarray | None, base: np.ndarray | None,
                 bias: np.ndarray | None) -> Chain:
    """Absorb the chain after `node` (see the module docstring); `axis` is the output-channel
    axis of a linear op, None after an Add (then only a clamp is taken)."""
    v, nodes = node.outputs[0], []
    bounds = (-np.inf, np.inf)
    while v not in src.outputs and len(consumers.get(v, [])) == 1:
        r = consumers[v][0]
        clamp = relu_or_clip_bounds(src, r)
        if clamp is not None:
            nodes.append(r)
            return Chain(r.outputs[0], nodes, scale, bias, clamp)
        step = None if axis is None else _affine_step(src, r, v, axis)
        if step is None:
            break
        kind, vec = step
        if kind == "scale":
            scale = scale * vec
        else:
            bias = bias + vec / (scale * base)
        nodes.append(r)
        v = r.outputs[0]
    return Chain(v, nodes, scale, bias, bounds)


def _affine_step(src: Graph, r: Node, v: str, axis: int) -> tuple[str, np.ndarray] | None:
    """("scale", c) or ("shift", t) per output channel for a reader r of v, else None."""
    if r.op not in ("Add", "Sub", "Mul", "Div") or len(r.inputs) != 2:
        return None
    pos = r.inputs.index(v)
    if pos != 0 and r.op in ("Sub", "Div"):
        return None
    other = src.values[r.inputs[1 - pos]]
    shape = src.values[v].shape
    if not other.is_const or src.values[r.outputs[0]].shape != shape:
        return None
    vec = channel_vector(np.asarray(other.data, np.float64), shape, axis)
    if vec is None:
        return None
    if r.op in ("Mul", "Div"):
        if np.any(vec <= 0):
            return None
        return "scale", (vec if r.op == "Mul" else 1.0 / vec)
    return "shift", (vec if r.op == "Add" else -vec)
