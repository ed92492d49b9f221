"""The numpy interpreter of the IR: the golden model every backend is checked against.

`run(graph, inputs)` executes the graph node by node with each op's reference semantics
from `compiler.ops`. Float ops follow ONNX; integer ops (`etch.QGemm`, `etch.Requantize`,
...) follow the numerics contract of docs/ARCHITECTURE.md, whose one written form is
`requantize` below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from compiler import ops
from compiler.errors import EtchError
from compiler.ir import Graph, Node


def quantize_multiplier(real: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a positive real multiplier into (M0, shift) with real ~= M0 * 2^-shift and
    M0 in [2^30, 2^31) (gemmlowp's form); zero maps to (0, 0). Works elementwise."""
    r = np.asarray(real, dtype=np.float64)
    m0 = np.zeros(r.shape, np.int64)
    shift = np.zeros(r.shape, np.int64)
    nz = r > 0
    mant, exp = np.frexp(r[nz])  # r = mant * 2^exp, mant in [0.5, 1)
    q = np.round(mant * (1 << 31)).astype(np.int64)
    carry = q == (1 << 31)
    q[carry] //= 2
    exp = exp + carry
    m0[nz], shift[nz] = q, 31 - exp
    return m0, shift


def requantize(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray, zero_point: np.ndarray,
               qmin: int, qmax: int) -> np.ndarray:
    """The requantisation formula (docs/ARCHITECTURE.md, "Numerics"), written once (TVM and
    Verilog cite it):

        y = clamp(round_half_away(acc * M0 / 2^shift) + zero_point, qmin, qmax)

    `acc` is int32 (held in int64 here), M0 in [2^30, 2^31), shift >= 0 (may exceed 31 for
    small scales). Rounding is half away from zero: add 2^(shift-1) to |acc*M0|, then shift.
    """
    prod = acc.astype(np.int64) * np.asarray(m0, np.int64)
    sh = np.asarray(shift, np.int64)
    half = np.where(sh > 0, np.left_shift(np.int64(1), np.maximum(sh - 1, 0)), 0)
    mag = np.right_shift(np.abs(prod) + half, sh)
    y = np.where(prod < 0, -mag, mag) + np.asarray(zero_point, np.int64)
    return np.clip(y, qmin, qmax)


INT62 = 1 << 62


def isqrt(r: np.ndarray) -> np.ndarray:
    """The exact integer square root floor(sqrt(r)) of int64 values 0 <= r < 2^62, elementwise
    (etch.QLayerNorm's denominator; TVM computes it the same way): s = floor(sqrt(float64(r)))
    is within 1 of the root (float64's relative error ~2^-52 on a root below 2^31), then
    s -= (s^2 > r) and s += ((s + 1)^2 <= r) make it exact."""
    r = np.asarray(r, np.int64)
    if r.size and (r.min() < 0 or r.max() >= INT62):
        raise EtchError(f"isqrt: operand out of range [0, 2^62) ({r.min()}..{r.max()})")
    s = np.floor(np.sqrt(r.astype(np.float64))).astype(np.int64)
    s = s - (s * s > r)
    return s + ((s + 1) * (s + 1) <= r)


def div_round(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """round_half_away(a / b) for int64 a and b > 0, exactly (etch.QLayerNorm's and
    etch.QSoftmax's one division): sign(a) * ((|a| + (b >> 1)) // b). For an odd b no
    quotient is a half, so b >> 1 is exact too. |a| + b/2 must stay below 2^63."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    mag = (np.abs(a) + np.right_shift(b, 1)) // b
    return np.where(a < 0, -mag, mag)


def run_node(node: Node, args: list[np.ndarray | None]) -> list[np.ndarray]:
    """Run one node with its op's reference semantics."""
    opdef = ops.get(node.op)
    if opdef is None:
        raise EtchError(f"node {node.name}: op {node.op} has no reference implementation")
    if opdef.reads_outputs:
        return ops.as_list(opdef.run(node.attrs, *args, read=tuple(map(bool, node.outputs))))
    return ops.as_list(opdef.run(node.attrs, *args))


def run(graph: Graph, inputs: Mapping[str, np.ndarray], *, keep: bool = False,
        visit: Callable[[str, np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """Execute `graph` on `inputs` (keyed by graph input names).

    Returns the graph outputs; with keep=True, every value computed (for debugging). Without
    it, a value is dropped once its last reader has run, so memory holds the live values
    only (vit_b16 calibrated at batch 8 peaked at 4 GB keeping them all). `visit(name,
    value)` sees every graph input and every computed value as it is made, before it can
    be dropped (constants too): calibration's statistics stream through it.
    """
    env: dict[str, np.ndarray] = {k: v.data for k, v in graph.values.items() if v.is_const}
    for name in graph.inputs:
        if name not in inputs:
            raise EtchError(f"missing input {name!r}")
        env[name] = np.asarray(inputs[name])
    if visit is not None:
        for name, value in env.items():
            visit(name, value)
    last = {} if keep else _last_reads(graph)
    for k, node in enumerate(graph.nodes):
        args = [env[i] if i else None for i in node.inputs]
        outs = run_node(node, args)
        del args
        for name, val in zip(node.outputs, outs):
            if name:
                env[name] = val
                if visit is not None:
                    visit(name, val)
        for name in (*node.inputs, *node.outputs):
            if name and last.get(name, len(graph.nodes)) <= k:
                env.pop(name, None)
    if keep:
        return env
    return {o: env[o] for o in graph.outputs}


def _last_reads(graph: Graph) -> dict[str, int]:
    """Computed values that can be dropped: name -> the index of the last node reading it
    (the node making it, if none does). Graph outputs, inputs and constants stay."""
    stay = set(graph.outputs) | set(graph.inputs)
    last: dict[str, int] = {}
    for k, node in enumerate(graph.nodes):
        for name in (*node.inputs, *node.outputs):
            value = graph.values.get(name)
            if name and name not in stay and not (value is not None and value.is_const):
                last[name] = k
    return last
