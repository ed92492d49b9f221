"""Requantisation with constants folded into logic, exact over each channel's reachable range.

The formula is `compiler.reference.requantize`: y = clamp(rha(a * M0 / 2^sh) + zp, qmin, qmax)
(rha: round half away from zero) with M0 in [2^30, 2^31). A hardwired design knows every
channel's exact accumulator range [A0, A1], and over that range many smaller multipliers
give the same y: the real multipliers mu with clamp(rha(a * mu) + zp) == y(a) for every
a in [A0, A1] form an interval around M0 / 2^sh (each constraint is a half-line in mu, and
y is monotone in a, so checking both ends of every output level's plateau suffices). For a
shift s, the integers m with m / 2^s in that interval, if any, include floor or ceil of
M0 * 2^(s - sh); the interval's ends are found by bisection on the same exact check, and
the m with the fewest CSD digits in it is kept: a 31-bit multiplier (~10 adders) becomes
typically 2-4 adders. Every choice is verified against the reference formula at all plateau
ends, so the result is exact, not approximate.

One shift is chosen per layer (the same for every channel, so a folded lane's channels
share the rounding step): the smallest total number of multiplier digits over the shifts
tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compiler.reference import requantize
from passes import hardwired_csd as csd

Q_MAX_SHIFT = 62  # a*m must stay within int64 in the checks below


@dataclass(frozen=True)
class Channel:
    """One channel's requantisation: accumulator range, the reference constants."""

    lo: int
    hi: int
    m0: int
    shift: int
    zp: int
    qmin: int
    qmax: int

    def reference(self, a: np.ndarray) -> np.ndarray:
        return requantize(a, self.m0, self.shift, self.zp, self.qmin, self.qmax)


def _ends(ch: Channel) -> np.ndarray:
    """Both ends of every plateau of the reference over [lo, hi] (a monotone step function)."""
    if ch.hi - ch.lo <= 1 << 16:
        a = np.arange(ch.lo, ch.hi + 1, dtype=np.int64)
        y = ch.reference(a)
        step = np.flatnonzero(np.diff(y))
        return np.unique(np.concatenate([a[[0, -1]], a[step], a[step + 1]]))
    levels = np.unique(ch.reference(np.array([ch.lo, ch.hi], np.int64)))
    lo_y, hi_y = int(levels[0]), int(levels[-1])
    # first a whose y exceeds each level: bisection, vectorised over the levels
    targets = np.arange(lo_y, hi_y, dtype=np.int64)
    left = np.full(targets.size, ch.lo, np.int64)
    right = np.full(targets.size, ch.hi, np.int64)
    while np.any(left < right):
        mid = (left + right) // 2
        above = ch.reference(mid) > targets
        right = np.where(above, mid, right)
        left = np.where(above, left, mid + 1)
    return np.unique(np.concatenate([[ch.lo, ch.hi], left, left - 1]).clip(ch.lo, ch.hi))


def mapped(a: np.ndarray, m: int, s: int, ch: Channel) -> np.ndarray:
    """clamp(rha(a * m / 2^s) + zp): the hardwired form, for the checks."""
    return requantize(a, m, s, ch.zp, ch.qmin, ch.qmax)


def _valid(ends: np.ndarray, want: np.ndarray, m: int, s: int, ch: Channel) -> bool:
    return m >= 0 and bool(np.array_equal(mapped(ends, m, s, ch), want))


def interval(ch: Channel, s: int, ends: np.ndarray, want: np.ndarray) -> tuple[int, int] | None:
    """The integers m valid at shift s, as [lo, hi], or None."""
    centre = ch.m0 * 2.0 ** (s - ch.shift)
    start = next((m for m in (int(np.floor(centre)), int(np.ceil(centre)))
                  if _valid(ends, want, m, s, ch)), None)
    if start is None:
        return None
    return _edge(ends, want, start, s, ch, -1), _edge(ends, want, start, s, ch, 1)


def _edge(ends: np.ndarray, want: np.ndarray, start: int, s: int, ch: Channel,
          direction: int) -> int:
    good, step = start, 1
    while _valid(ends, want, start + direction * step, s, ch) and step < 1 << 40:
        good, step = start + direction * step, step * 2
    bad = start + direction * step
    while abs(bad - good) > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if _valid(ends, want, mid, s, ch) else (good, mid)
    return good


def fewest_digits(lo: int, hi: int) -> int:
    """An integer in [lo, hi] (lo >= 0) with few CSD digits: the candidates are the
    multiples of each power of two nearest the interval's ends."""
    best, best_d = lo, len(csd.terms(lo))
    for t in range(max(hi, 1).bit_length() + 1):
        q = 1 << t
        for c in ((lo + q - 1) // q * q, hi // q * q):
            if lo <= c <= hi:
                d = len(csd.terms(c))
                if d < best_d or (d == best_d and c < best):
                    best, best_d = c, d
    return best


def choose(channels: Sequence[Channel], tries: int = 8) -> tuple[int, list[int]]:
    """(shift, multiplier per channel): one shift for the layer, each channel's multiplier
    with the fewest CSD digits; the reference constants when nothing smaller is exact."""
    prepared = [(c, e, c.reference(e)) for c in channels for e in [_ends(c)]]
    max_sh = max(c.shift for c in channels)
    best: tuple[int, int, list[int]] | None = None
    found = 0
    top = min(max_sh, Q_MAX_SHIFT)
    for s in [*range(top), top]:  # the reference shift is always tried
        if found >= tries and s != top:
            continue
        ms = _at_shift(prepared, s)
        if ms is None:
            continue
        cost = sum(len(csd.terms(m)) for m in ms)
        if best is None or cost < best[0]:
            best = (cost, s, ms)
        found += 1
    if best is None:  # the reference constants themselves, at a common shift
        s = max_sh
        return s, [c.m0 << (s - c.shift) for c in channels]
    return best[1], best[2]


def _at_shift(prepared: list, s: int) -> list[int] | None:
    out = []
    for c, ends, want in prepared:
        if c.m0 == 0:
            out.append(0)
            continue
        iv = interval(c, s, ends, want)
        if iv is None:
            return None
        out.append(fewest_digits(*iv))
    return out
