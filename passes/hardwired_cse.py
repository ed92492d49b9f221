"""Greedy pairwise common-subexpression elimination over signed-digit rows (Hartley's
method for constant matrix-vector products).

A row (one output neuron) is a sum of terms sign * (sym << shift); at first every term is
one CSD digit of one weight, and sym is the input it multiplies. A *pattern* is a pair of
terms up to a common shift and sign:

    P = (A, B, d, s)  means  A + s * (B << d)      (or (A << -d) + s * B when d < 0)

The best pattern over all rows becomes a new symbol T, computed by one adder and shared:
every occurrence of the pair in a row is replaced by one term of T. This repeats until no
pattern occurs twice. Each replacement saves one adder. "Best" is a score (SCORES):
- `count`: the most frequent pattern (Hartley's rule: the fewest adders);
- `overlap`: count times the bits where the pair's operands overlap. A pair whose shift
  leaves few overlapping bits is cheap to add in an output's adder tree anyway (the low
  bits of the less shifted operand pass through), so sharing it saves little area; a
  fully overlapping pair costs a full-width adder each time it is not shared (the weighting
  of da4ml's and Hcub's bit-width-aware costs, measured in bits rather than adders).
Ties go to the pattern whose adder is narrower (then the smaller key, for determinism).
`best` runs every score and keeps the result with the fewest estimated adder bits
(`adder_bits`, which tracks the Yosys cell count), so the choice is made per block of
inputs, per matrix.

Implementation: counts of all term pairs live in a dict keyed by an integer encoding of
(A, B, d, s); a lazy max-heap finds the best count; the rows holding a pattern are found
through a per-symbol row index, and only those rows' pair counts are updated after a
replacement (O(terms in the row) each). The work is O(rows * terms^2) for the first count,
which is why `cmvm` splits wide matrices into blocks of inputs.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from passes import hardwired_csd

Row = dict[tuple[int, int], int]  # (sym, shift) -> sign
SCORES = ("count", "overlap")
PAIR_BUDGET = 3_000_000  # pair counts per CSE block before a matrix is split
SYM_BITS, D_BITS, D_OFF = 24, 8, 128


@dataclass(frozen=True)
class Sym:
    """A shared subexpression: a + sign * (b << d) for d >= 0, (a << -d) + sign * b else."""

    a: int
    b: int
    d: int
    sign: int


def encode(a: int, b: int, d: int, s: int) -> int:
    return ((((a << SYM_BITS) | b) << D_BITS | (d + D_OFF)) << 1) | (s > 0)


def decode(key: int) -> tuple[int, int, int, int]:
    s = 1 if key & 1 else -1
    key >>= 1
    d = (key & ((1 << D_BITS) - 1)) - D_OFF
    key >>= D_BITS
    return key >> SYM_BITS, key & ((1 << SYM_BITS) - 1), d, s


def pair_key(p: tuple[int, int, int], q: tuple[int, int, int]) -> tuple[int, int, int]:
    """(key, base shift, base sign) of two terms (sym, shift, sign), in canonical order."""
    if (q[0], q[1]) < (p[0], p[1]):
        p, q = q, p
    return encode(p[0], q[0], q[1] - p[1], p[2] * q[2]), min(p[1], q[1]), p[2]


@dataclass
class State:
    rows: list[Row]
    bits: list[int]                      # per symbol: a bound on its magnitude in bits
    syms: list[Sym] = field(default_factory=list)
    count: dict[int, int] = field(default_factory=dict)
    heap: list[tuple[int, int, int]] = field(default_factory=list)
    rows_of: list[set[int]] = field(default_factory=list)
    score: str = "count"

    def entry(self, key: int, c: int) -> tuple[int, int, int, int]:
        """The heap entry of pattern `key` seen `c` times: (priority, tie, key, c), the
        smallest popped first (see SCORES); `c` tells a stale entry from a current one."""
        w = self.width(key)
        if self.score == "count":
            return (-c, w, key, c)
        return (-c * self.overlap(key), w, key, c)

    def overlap(self, key: int) -> int:
        """Bits where both operands of pattern `key` can be non-zero (at least 1)."""
        a, b, d, _ = decode(key)
        if d >= 0:
            return max(min(self.bits[a], self.bits[b] + d) - d, 1)
        return max(min(self.bits[a] - d, self.bits[b]) + d, 1)

    def width(self, key: int) -> int:
        a, b, d, _ = decode(key)
        return max(self.bits[a] + max(-d, 0), self.bits[b] + max(d, 0)) + 1

    def pairs(self, row: Row, sym: int, e: int, g: int, delta: int) -> None:
        """Add `delta` to the count of every pair of term (sym, e, g) with the row's terms
        (inlined pair_key: this loop is the algorithm's hot path)."""
        count, heap = self.count, self.heap
        for (s2, e2), g2 in row.items():
            if s2 > sym or (s2 == sym and e2 > e):
                key = (((((sym << SYM_BITS) | s2) << D_BITS) | (e2 - e + D_OFF)) << 1) | (
                    g == g2)
            else:
                key = (((((s2 << SYM_BITS) | sym) << D_BITS) | (e - e2 + D_OFF)) << 1) | (
                    g == g2)
            c = count.get(key, 0) + delta
            if c > 0:
                count[key] = c
                if delta > 0 and c >= 2:
                    heapq.heappush(heap, self.entry(key, c))
            else:
                count.pop(key, None)


def initial_counts(rows: list[Row]) -> dict[int, int]:
    """Counts of every pair key over all rows (vectorised per row with numpy)."""
    keys = []
    for row in rows:
        if len(row) < 2:
            continue
        items = sorted(row.items())
        sym = np.fromiter((k[0] for k, _ in items), np.int64, len(items))
        sh = np.fromiter((k[1] for k, _ in items), np.int64, len(items))
        sg = np.fromiter((g for _, g in items), np.int64, len(items))
        i, j = np.triu_indices(len(items), 1)
        keys.append((((((sym[i] << SYM_BITS) | sym[j]) << D_BITS) | (sh[j] - sh[i] + D_OFF))
                     << 1) | (sg[i] == sg[j]))
    if not keys:
        return {}
    uniq, counts = np.unique(np.concatenate(keys), return_counts=True)
    return dict(zip(uniq.tolist(), counts.tolist(), strict=True))


def digit_rows(w: np.ndarray) -> list[Row]:
    """One row per output of W [K, N]: its CSD digits as {(input, shift): sign}."""
    n_out = w.shape[1]
    idx, sh, sg = hardwired_csd.digits(w)
    rows: list[Row] = [{} for _ in range(n_out)]
    ks, ns = np.divmod(idx, n_out)
    for k, n, e, g in zip(ks.tolist(), ns.tolist(), sh.tolist(), sg.tolist(), strict=True):
        rows[n][(k, e)] = g
    return rows


def symbol_bits(syms: list[Sym], n_inputs: int, input_bits: int) -> list[int]:
    """A bound on every symbol's magnitude in bits (inputs first, then `syms`)."""
    bits = [input_bits] * n_inputs
    for s in syms:
        bits.append(max(bits[s.a] + max(-s.d, 0), bits[s.b] + max(s.d, 0)) + 1)
    return bits


def block_size(w: np.ndarray, budget: int = PAIR_BUDGET) -> int:
    """The number of inputs per CSE block: all of them while the first pair count
    (rows * terms_per_row^2 / 2 per block) fits `budget`, else the largest power of two
    that keeps it within."""
    k, n = w.shape
    density = max(hardwired_csd.count(w) / max(k * n, 1), 1e-9)  # digits per weight
    pairs = lambda b: n * (k / b) * (b * density) ** 2 / 2
    if pairs(k) <= budget:
        return k
    b = 1
    while b * 2 < k and pairs(b * 2) <= budget:
        b *= 2
    return max(b, 4)


def eliminate(rows: list[Row], n_inputs: int, input_bits: int,
              score: str = "count") -> tuple[list[Sym], list[Row]]:
    """Run greedy pairwise CSE with one of SCORES; returns the new symbols (ids n_inputs,
    n_inputs + 1, ...) and the rewritten rows. `rows` is consumed."""
    if score not in SCORES:
        raise ValueError(f"unknown CSE score {score!r}")
    st = State(rows, [input_bits] * n_inputs, rows_of=[set() for _ in range(n_inputs)],
               score=score)
    for r, row in enumerate(rows):
        for s, _ in row:
            st.rows_of[s].add(r)
    st.count = initial_counts(rows)
    st.heap = [st.entry(k, c) for k, c in st.count.items() if c >= 2]
    heapq.heapify(st.heap)
    while st.heap:
        _, _, key, seen = heapq.heappop(st.heap)
        c = st.count.get(key, 0)
        if c != seen:
            if c >= 2:
                heapq.heappush(st.heap, st.entry(key, c))
            continue
        _extract(st, key)
    return st.syms, st.rows


def best(rows: list[Row], n_inputs: int,
         input_bits: int) -> tuple[list[Sym], list[Row], str]:
    """CSE under every score of SCORES; keeps the result with the fewest estimated adder
    bits (`adder_bits`; ties keep the earlier score). Returns (symbols, rows, score)."""
    results = []
    for score in SCORES:
        syms, out = eliminate([dict(r) for r in rows], n_inputs, input_bits, score)
        results.append((adder_bits(syms, out, n_inputs, input_bits), len(results), syms, out,
                        score))
    _, _, syms, out, score = min(results)
    return syms, out, score


def adder_bits(syms: list[Sym], rows: list[Row], n_inputs: int, input_bits: int) -> int:
    """Estimated full-adder bits of a CSE result: each symbol's adder, then each row's
    adder tree (narrowest first, as `cmvm.adder_tree` builds it). An adder costs its
    output bits above the higher of its operands' lowest bits (below, one operand's bits
    pass through): the quantity a synthesised design's cell count follows."""
    bits = symbol_bits(syms, n_inputs, input_bits)
    total = sum(bits[n_inputs + i] - abs(s.d) for i, s in enumerate(syms))
    for row in rows:
        heap = [(bits[sym] + e, e) for (sym, e) in row]
        heapq.heapify(heap)
        while len(heap) > 1:
            m1, l1 = heapq.heappop(heap)
            m2, l2 = heapq.heappop(heap)
            m = max(m1, m2) + 1
            total += m - max(l1, l2)
            heapq.heappush(heap, (m, min(l1, l2)))
    return total


def _extract(st: State, key: int) -> None:
    a, b, d, s = decode(key)
    t = len(st.bits)
    st.syms.append(Sym(a, b, d, s))
    st.bits.append(st.width(key))
    st.rows_of.append(set())
    small, big = sorted((st.rows_of[a], st.rows_of[b]), key=len)
    for r in sorted(small & big if a != b else small):
        _replace_in_row(st, r, a, b, d, s, t)


def _replace_in_row(st: State, r: int, a: int, b: int, d: int, s: int, t: int) -> None:
    row = st.rows[r]
    for (sym, e1) in sorted(k for k in row if k[0] == a):
        g1 = row.get((sym, e1))
        g2 = row.get((b, e1 + d))
        if g1 is None or g2 is None or g1 * g2 != s or (a == b and d == 0):
            continue
        del row[(a, e1)]
        del row[(b, e1 + d)]
        st.pairs(row, a, e1, g1, -1)
        st.pairs(row, b, e1 + d, g2, -1)
        st.pairs({(b, e1 + d): g2}, a, e1, g1, -1)
        for sym_ in {a, b}:
            if not any(k[0] == sym_ for k in row):
                st.rows_of[sym_].discard(r)
        base = min(e1, e1 + d)
        st.pairs(row, t, base, g1, 1)
        row[(t, base)] = g1
        st.rows_of[t].add(r)
