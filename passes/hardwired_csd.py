"""Canonical signed digit (CSD) recoding of integer constants.

CSD is the non-adjacent form: v = sum_i d_i 2^i with d_i in {-1, 0, +1} and no two adjacent
non-zero digits. It has the fewest non-zero digits of any signed-digit form (on average n/3
for n-bit constants instead of n/2 for binary), so a constant multiply c*x costs
`nonzero_digits(c) - 1` adders, and a zero weight costs nothing.

`digits(w)` recodes a whole integer array at once (vectorised over its elements, looping
over bit positions only); `terms(v)` is the scalar form the multiplier builders use.
"""

from __future__ import annotations

import numpy as np


def terms(v: int) -> list[tuple[int, int]]:
    """The non-zero CSD digits of integer `v` as (shift, sign) pairs, lowest shift first.

    terms(7) == [(0, -1), (3, 1)] since 7 = 8 - 1; terms(0) == [].
    """
    out: list[tuple[int, int]] = []
    shift = 0
    while v:
        if v & 1:
            d = 2 - (v & 3)  # +1 when v = 1 (mod 4), -1 when v = 3 (mod 4)
            out.append((shift, d))
            v -= d
        v >>= 1
        shift += 1
    return out


def digits(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every non-zero CSD digit of integer array `w` as flat arrays (index, shift, sign).

    `index` is the flat (C-order) index into `w`; digits come ordered by index, then shift.
    Works for any int64-representable values, negative ones included.
    """
    x = np.asarray(w, dtype=np.int64).reshape(-1).copy()
    idx, sh, sg = [], [], []
    shift = 0
    while np.any(x):
        odd = (x & 1).astype(bool)
        d = np.where(odd, 2 - (x & 3), 0)
        nz = np.flatnonzero(d)
        idx.append(nz)
        sh.append(np.full(nz.size, shift, np.int64))
        sg.append(d[nz])
        x = (x - d) >> 1
        shift += 1
    if not idx:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    index, shifts, signs = (np.concatenate(a) for a in (idx, sh, sg))
    order = np.lexsort((shifts, index))
    return index[order], shifts[order], signs[order].astype(np.int64)


def count(w: np.ndarray) -> int:
    """Number of non-zero CSD digits over all elements of `w` (the plain-CSD term count)."""
    return int(digits(w)[0].size)
