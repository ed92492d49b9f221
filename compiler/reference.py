"""The numpy interpreter of the IR: the golden model every backend is checked against.

`run(graph, inputs)` executes the graph node by node with each op's reference semantics
from `compiler.ops`. Float ops follow ONNX; integer ops (`etch.QGemm`, `etch.Requantize`,
...) follow the numerics contract of docs/ARCHITECTURE.md, whose one written form is
`requantize` below.
"""

from __future__ import annotations

from collections.abc import Mapping

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


def run_node(node: Node, args: list[np.ndarray | None]) -> list[np.ndarray]:
    """Run one node with its op's reference semantics."""
    opdef = ops.get(node.op)
    if opdef is None:
        raise EtchError(f"node {node.name}: op {node.op} has no reference implementation")
    return ops.as_list(opdef.run(node.attrs, *args))


def run(graph: Graph, inputs: Mapping[str, np.ndarray], *,
        keep: bool = False) -> dict[str, np.ndarray]:
    """Execute `graph` on `inputs` (keyed by graph input names).

    Returns the graph outputs; with keep=True, every value computed (for debugging and for
    calibration, which needs intermediate activations).
    """
    env: dict[str, np.ndarray] = {k: v.data for k, v in graph.values.items() if v.is_const}
    for name in graph.inputs:
        if name not in inputs:
            raise EtchError(f"missing input {name!r}")
        env[name] = np.asarray(inputs[name])
    for node in graph.nodes:
        args = [env[i] if i else None for i in node.inputs]
        outs = run_node(node, args)
        for name, val in zip(node.outputs, outs):
            env[name] = val
    if keep:
        return env
    return {o: env[o] for o in graph.outputs}

