"""LayerNormalization on an integer activation -> etch.QLayerNorm (a QuantizeActivations rule).

Rewrite: LayerNormalization(x, gamma, beta) with constant gamma/beta, whose Mean and
InvStdDev outputs nobody reads -> etch.QLayerNorm(q_x, gain, bias) at the output's
calibrated (scale s_y, zero z_y). The op's semantics (compiler/ops/etch_qnorm.py): exact
row sums S, SS of the codes, D = isqrt((n SS - S^2) << 2k + eps), one division rounding
half away from zero per element. This rule chooses the constants:

- k (`sqrt_bits`): D carries k fraction bits; the largest k <= SQRT_BITS_MAX with the
  radicand's bound below 2^53 (where float64 holds it exactly);
- eps = round(n^2 4^k epsilon / s_x^2): epsilon in the radicand's units;
- f (`shift`): the largest f <= SHIFT_MAX with gain = round(gamma 2^(k+f) / s_y) and
  bias = round(beta 2^f / s_y) in int32 and every int64 intermediate below 2^62.

Declines (the node stays a float host node) when gamma/beta are not constants, Mean or
InvStdDev are read, or no f fits (a gamma / s_y beyond 2^31).
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Node
from compiler.ops.common import axis_of
from compiler.ops.etch_qnorm import layer_norm_bounds
from passes.int_lowering import Lowering

SQRT_BITS_MAX = 16
SHIFT_MAX = 32
RADICAND_LIMIT = 1 << 53
INT62, INT31 = 1 << 62, 1 << 31


def layer_norm(lw: Lowering, node: Node) -> bool:
    """The rule: emit etch.QLayerNorm for `node`, or return False."""
    x, out = node.inputs[0], node.outputs[0]
    if any(o and (lw.consumers.get(o) or o in lw.src.outputs) for o in node.outputs[1:]):
        return False
    shape = lw.src.values[x].shape
    axis = axis_of(int(node.attrs.get("axis", -1)), len(shape))
    inner = shape[axis:]
    gamma = lw.const_data(node.inputs[1])
    beta = lw.const_data(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] \
        else np.zeros(())
    if gamma is None or beta is None:
        return False
    a = lw.act(x)
    s_y, z_y, dtype = lw.params(out)
    n = int(np.prod(inner))
    k, eps = sqrt_bits(n, float(node.attrs.get("epsilon", 1e-5)), a.scale)
    consts = integer_params(np.broadcast_to(gamma, inner), np.broadcast_to(beta, inner), s_y,
                            n, k, eps)
    if consts is None:
        return False
    shift, gain, bias = consts
    info = np.iinfo(dtype)
    attrs = {"axis": axis, "sqrt_bits": k, "eps": eps, "shift": shift, "zero_point": z_y,
             "qmin": int(info.min), "qmax": int(info.max), "to": dtype}
    act = lw.new_act(out, s_y, z_y, dtype)
    lw.emit("etch.QLayerNorm", [a.name, lw.const(f"{out}_gain", gain),
                                lw.const(f"{out}_bias", bias)], [act.name], attrs, "accel",
            node.name)
    return True


def sqrt_bits(n: int, epsilon: float, s_x: float) -> tuple[int, int]:
    """(k, eps): the most fraction bits of D whose radicand stays below 2^53, and epsilon
    as an integer in the radicand's units (n^2 4^k epsilon / s_x^2, rounded)."""
    v_max = (n * n * 255 * 255) // 4
    for k in range(SQRT_BITS_MAX, -1, -1):
        eps = int(np.rint(float(n) * n * 4.0 ** k * max(epsilon, 0.0) / (s_x * s_x)))
        if (v_max << (2 * k)) + eps < RADICAND_LIMIT:
            return k, eps
    return 0, int(np.rint(float(n) * n * max(epsilon, 0.0) / (s_x * s_x)))


def integer_params(gamma: np.ndarray, beta: np.ndarray, s_y: float, n: int, k: int,
                   eps: int) -> tuple[int, np.ndarray, np.ndarray] | None:
    """(shift, gain, bias) with the most shift bits that keep gain and bias in int32 and
    the op's int64 intermediates below 2^62; None when no shift does."""
    g64, b64 = np.asarray(gamma, np.float64), np.asarray(beta, np.float64)
    for f in range(SHIFT_MAX, -1, -1):
        gain = np.rint(g64 * 2.0 ** (k + f) / s_y)
        bias = np.rint(b64 * 2.0 ** f / s_y)
        if np.abs(gain).max(initial=0) >= INT31 or np.abs(bias).max(initial=0) >= INT31:
            continue
        gain, bias = gain.astype(np.int32), bias.astype(np.int32)
        if max(layer_norm_bounds(n, k, eps, gain, bias, f)) < INT62:
            return f, gain, bias
    return None
