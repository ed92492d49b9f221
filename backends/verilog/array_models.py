"""Numpy models of the tensor engine's compute arrays: the arithmetic each PE kind does.

Every model returns `o = a @ w` exactly (int64) when its preconditions hold, but computes it
the way the hardware does, so a test of the model against `a @ w` checks the decomposition
(Booth digits, bit planes, the negative top plane, skipped planes) and a test of the RTL
against the model checks the RTL:
- `mac`: plain products and sums;
- `booth`: radix-4 Booth digits of the weight, d_j in {-2..2}, w = sum_j d_j 4^j;
- `bitserial`: weight bit planes, w = -2^(b-1) w_(b-1) + sum_(p<b-1) 2^p w_p for b-bit
  two's complement weights, one plane per cycle, planes outside `mask` skipped.
Inputs: a [M, R] activations, w [R, C] weights (signed integers), as any integer dtype.
"""

from __future__ import annotations

import numpy as np


def _i64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.int64)


def mac(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """o = a @ w in int64."""
    return _i64(a) @ _i64(w)


def booth_digits(w: np.ndarray, ww: int) -> np.ndarray:
    """Radix-4 Booth digits of `ww`-bit signed weights: [ceil(ww/2), *w.shape], in -2..2.

    Digit j looks at bits (2j+1, 2j, 2j-1) of the weight sign-extended to 2*ceil(ww/2) bits
    (bit -1 is 0): d_j = -2 b_(2j+1) + b_(2j) + b_(2j-1).
    """
    w = _i64(w)
    nd = (ww + 1) // 2
    bit = [(w >> k) & 1 for k in range(2 * nd)]  # arithmetic shift: sign-extends
    prev = [np.zeros_like(w)] + bit[1::2]
    return np.stack([-2 * bit[2 * j + 1] + bit[2 * j] + prev[j] for j in range(nd)])


def booth(a: np.ndarray, w: np.ndarray, ww: int = 8) -> np.ndarray:
    """o = sum_j 4^j (a @ d_j): one partial product per Booth digit."""
    a = _i64(a)
    digits = booth_digits(w, ww)
    return sum((a @ d) << (2 * j) for j, d in enumerate(digits))


def bit_planes(w: np.ndarray, bits: int) -> np.ndarray:
    """Bit planes 0..bits-1 of the `bits`-bit two's complement form of w: [bits, *w.shape]."""
    w = _i64(w)
    return np.stack([(w >> p) & 1 for p in range(bits)])


def plane_weight(p: int, bits: int) -> int:
    """The value of bit plane p of a `bits`-bit two's complement number (the top is negative)."""
    return -(1 << p) if p == bits - 1 else 1 << p


def planes_used(mask: int | None, bits: int) -> list[int]:
    """The planes a bit-serial PE processes, in order: those of `mask` below `bits`."""
    mask = (1 << bits) - 1 if mask is None else mask
    return [p for p in range(bits) if mask >> p & 1]


def bitserial(a: np.ndarray, w: np.ndarray, bits: int = 8, mask: int | None = None
              ) -> np.ndarray:
    """o = sum over processed planes p of plane_weight(p) * (a @ plane_p).

    Exact (= a @ w) when every w fits `bits` signed bits and `mask` covers every nonzero
    plane; otherwise it is what the hardware computes (weights read modulo 2^bits, skipped
    planes dropped).
    """
    a = _i64(a)
    planes = bit_planes(w, bits)
    out = np.zeros((a.shape[0], planes.shape[-1]), np.int64)
    for p in planes_used(mask, bits):
        out += plane_weight(p, bits) * (a @ planes[p])
    return out


def plane_mask(w: np.ndarray, bits: int) -> int:
    """The nonzero bit planes of a weight tile (`bits`-bit two's complement): bit p set when
    some weight has bit p set. The bit-serial arrays skip the planes not in this mask."""
    planes = bit_planes(w, bits)
    return sum(1 << p for p in range(bits) if planes[p].any())
