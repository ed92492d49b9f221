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

Rewrite (`masked_softmax`, a rule for Add): Add(x, mask) -> Softmax, with x an integer
activation, mask a constant of zeros and large negatives, and the Softmax its only reader
-> etch.QSoftmax(q_x, table, mask != 0). A mask value v is large when v + 255 s_x <
MASK_LIMIT: exp(v + x_i - max) underflows to exactly 0 in float32 for every x_i of the
row, so the masked entries' float contribution is 0, as the op's. (An Add with any other
constant is etch.QAdd: the mask's range would leave the scores no int8 step.)
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Node
from compiler.ops.common import axis_of
from compiler.ops.etch_qnorm import TABLE_SIZE, softmax_bounds
from passes.int_lowering import Act, Lowering

TABLE_BITS = 20
MASK_LIMIT = -110.0  # float32 exp(-104) already rounds to 0
SHIFT_MAX = 32
INT62, INT31 = 1 << 62, 1 << 31


def softmax(lw: Lowering, node: Node) -> bool:
    """The rule: emit etch.QSoftmax for `node`, or return False."""
    return _emit(lw, node, lw.act(node.inputs[0]), None)


def masked_softmax(lw: Lowering, node: Node) -> bool:
    """The rule for Add: Add(x, mask) -> Softmax as one masked etch.QSoftmax, else False."""
    a, b = node.inputs[:2]
    if lw.is_const(a):
        a, b = b, a
    readers = lw.consumers.get(node.outputs[0], [])
    if a not in lw.ints or not lw.is_const(b) or node.outputs[0] in lw.src.outputs:
        return False
    if len(readers) != 1 or readers[0].op != "Softmax":
        return False
    x, mask = lw.ints[a], np.asarray(lw.src.values[b].data, np.float64)
    masked = mask != 0
    if not np.all(mask[masked] + 255.0 * x.scale < MASK_LIMIT):  # NaN: not a mask
        return False
    shape = tuple(lw.src.values[a].shape)
    if mask.ndim > len(shape) or np.broadcast_shapes(mask.shape, shape) != shape:
        return False
    if not _emit(lw, readers[0], x, lw.const(f"{b}_mask", masked.astype(np.uint8))):
        return False
    lw.done.add(id(readers[0]))
    return True


def _emit(lw: Lowering, node: Node, a: Act, mask: str | None) -> bool:
    """etch.QSoftmax of integer activation `a` for Softmax `node` (False if no f fits)."""
    out = node.outputs[0]
    shape = lw.src.values[node.inputs[0]].shape
    axis = axis_of(int(node.attrs.get("axis", -1)), len(shape))
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
    inputs = [a.name, lw.const(f"{out}_exp", table)] + ([mask] if mask else [])
    lw.emit("etch.QSoftmax", inputs, [act.name], attrs, "accel", node.name)
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
