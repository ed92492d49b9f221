"""Softmax on an integer activation -> etch.QSoftmax (a QuantizeActivations rule).

Rewrite: Softmax(x, axis) -> etch.QSoftmax(q_x, table) at the output's calibrated (scale
s_y, zero z_y): calibration sees probabilities in [0, hi], hi <= 1, so s_y = hi / 255 and
z_y = -128 (int8), a finer step than a fixed 1/255 whenever no probability reaches 1 (an
attention row rarely does). The op's semantics (compiler/ops/etch_qnorm.py): m = the row's
largest code, e_i = table[q_i - m + 255], Z = sum e (exact), y = round_half_away(e_i mult /
(Z << f)). This rule chooses the constants:

- table[255 + d] = round(2^TABLE_BITS exp(s_x d)) for d in [-255, 0], computed once here
  in float64 (exact integers from then on): exp(s_x (q_i - m)) with 20 bits;
- f (`shift`): the largest f <= SHIFT_MAX with mult = round(2^f / s_y) in int32 and every
  int64 intermediate below 2^62.

Declines (the node stays a float host node) only when no f fits (s_y below 2^-31).
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Node
from compiler.ops.common import axis_of
from compiler.ops.etch_qnorm import TABLE_SIZE, softmax_bounds
from passes.int_lowering import Lowering

TABLE_BITS = 20
SHIFT_MAX = 32
INT62, INT31 = 1 << 62, 1 << 31


def softmax(lw: Lowering, node: Node) -> bool:
    """The rule: emit etch.QSoftmax for `node`, or return False."""
    x, out = node.inputs[0], node.outputs[0]
    shape = lw.src.values[x].shape
    axis = axis_of(int(node.attrs.get("axis", -1)), len(shape))
    a = lw.act(x)
    s_y, z_y, dtype = lw.params(out)
    table = exp_table(a.scale)
    consts = multiplier(table, shape[axis], s_y)
    if consts is None:
        return False
    shift, mult = consts
    info = np.iinfo(dtype)
    attrs = {"axis": axis, "mult": mult, "shift": shift, "zero_point": z_y,
             "qmin": int(info.min), "qmax": int(info.max), "to": dtype}
    act = lw.new_act(out, s_y, z_y, dtype)
    lw.emit("etch.QSoftmax", [a.name, lw.const(f"{out}_exp", table)], [act.name], attrs,
            "accel", node.name)
    return True


def exp_table(s_x: float) -> np.ndarray:
    """round(2^TABLE_BITS exp(s_x d)) for d = -255 .. 0, as int32."""
    d = np.arange(1 - TABLE_SIZE, 1, dtype=np.float64)
    return np.rint(np.exp(float(s_x) * d) * (1 << TABLE_BITS)).astype(np.int32)


def multiplier(table: np.ndarray, n: int, s_y: float) -> tuple[int, int] | None:
    """(shift, mult = round(2^shift / s_y)) with the most shift bits that keep mult in int32
    and the op's int64 intermediates below 2^62; None when none does."""
    for f in range(SHIFT_MAX, -1, -1):
        mult = int(np.rint(2.0 ** f / s_y))
        if 0 < mult < INT31 and softmax_bounds(n, table, mult, f) < INT62:
            return f, mult
    return None
