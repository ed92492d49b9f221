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
`plan` runs every score on W and on the difference columns of parent trees
(`hardwired_coltree`: an output built as a similar output plus a small difference, the
sharing between output columns that pairs within a row cannot express) and keeps the
result with the fewest estimated adder bits (`adder_bits`, which tracks the Yosys cell
count), so the choice is made per block of inputs, per matrix.

Implementation: the first pair counts come from numpy (`initial_counts`); each row is held
as arrays (`RowArrays`), so the pair keys of a term against a row are computed vectorised
and counted by `Counter.update` (in C; counts are plus - minus); a max-heap of int
priorities finds the best pattern, stale entries re-pushed when popped (old patterns only
lose counts; a new symbol's pairs are pushed once, after its extraction); the rows holding
a pattern come from a per-symbol row index. The first count is O(rows * terms^2), which is
why `cmvm` splits wide matrices into blocks of inputs.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from passes import hardwired_coltree, hardwired_csd

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


PRIO_SHIFT = 72  # heap priority: (-score << PRIO_SHIFT) | (width << 64) | key


@dataclass
class RowArrays:
    """One row's current terms, packed in the first `n` slots of arrays (a dropped term's
    slot takes the last term), their positions, and each symbol's shifts in the row."""

    sym: np.ndarray
    sh: np.ndarray
    sg: np.ndarray
    pos: dict[tuple[int, int], int]
    shifts_of: dict[int, set[int]]
    n: int = 0

    @staticmethod
    def of(row: Row) -> RowArrays:
        cap = len(row) + 1  # each replacement removes two terms and adds one
        ra = RowArrays(np.zeros(cap, np.int64), np.zeros(cap, np.int64),
                       np.zeros(cap, np.int64), {}, {})
        for (sym, e), g in sorted(row.items()):
            ra.put(sym, e, g)
        return ra

    def put(self, sym: int, e: int, g: int) -> None:
        i = self.n
        self.sym[i], self.sh[i], self.sg[i] = sym, e, g
        self.pos[(sym, e)] = i
        self.shifts_of.setdefault(sym, set()).add(e)
        self.n += 1

    def drop(self, sym: int, e: int) -> None:
        i = self.pos.pop((sym, e))
        self.n -= 1
        last = self.n
        if i != last:
            ls, le = int(self.sym[last]), int(self.sh[last])
            self.sym[i], self.sh[i], self.sg[i] = ls, le, self.sg[last]
            self.pos[(ls, le)] = i
        mine = self.shifts_of[sym]
        mine.discard(e)
        if not mine:
            del self.shifts_of[sym]

    def keys(self, sym: int, e: int, g: int) -> np.ndarray:
        """The pair keys of term (sym, e, g) with every current term (see `pair_key`)."""
        n = self.n
        s2, e2 = self.sym[:n], self.sh[:n]
        first = (s2 > sym) | ((s2 == sym) & (e2 > e))
        a = np.where(first, sym, s2)
        b = np.where(first, s2, sym)
        d = np.where(first, e2 - e, e - e2)
        same = self.sg[:n] == g
        return ((((a << SYM_BITS) | b) << D_BITS | (d + D_OFF)) << 1) | same

    def has(self, sym: int) -> bool:
        return sym in self.shifts_of

    def shifts(self, sym: int) -> list[int]:
        return sorted(self.shifts_of.get(sym, ()))

    def row(self) -> Row:
        n = self.n
        return {(int(s), int(e)): int(g) for s, e, g in sorted(zip(
            self.sym[:n].tolist(), self.sh[:n].tolist(), self.sg[:n].tolist(), strict=True))}


@dataclass
class State:
    """The CSE's working state. Pair counts are plus - minus, two Counters updated from
    key lists (`Counter.update` counts in C); the heap holds int priorities, possibly stale
    (an entry is current when its score equals the pattern's current score)."""

    rows: list[RowArrays]
    bits: list[int]                      # per symbol: a bound on its magnitude in bits
    syms: list[Sym] = field(default_factory=list)
    plus: Counter = field(default_factory=Counter)
    minus: Counter = field(default_factory=Counter)
    heap: list[int] = field(default_factory=list)
    rows_of: list[set[int]] = field(default_factory=list)
    score: str = "count"

    def count(self, key: int) -> int:
        return self.plus.get(key, 0) - self.minus.get(key, 0)

    def value(self, key: int, c: int) -> int:
        return c if self.score == "count" else c * self.overlap(key)

    def entry(self, key: int, c: int) -> int:
        """The heap priority of pattern `key` seen `c` times, the smallest popped first:
        the highest score (SCORES), then the narrowest adder, then the smallest key."""
        return (-self.value(key, c) << PRIO_SHIFT) | (self.width(key) << 64) | key

    def overlap(self, key: int) -> int:
        """Bits where both operands of pattern `key` can be non-zero (at least 1)."""
        a, b, d, _ = decode(key)
        if d >= 0:
            return max(min(self.bits[a], self.bits[b] + d) - d, 1)
        return max(min(self.bits[a] - d, self.bits[b]) + d, 1)

    def width(self, key: int) -> int:
        a, b, d, _ = decode(key)
        return max(self.bits[a] + max(-d, 0), self.bits[b] + max(d, 0)) + 1


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
    st = State([RowArrays.of(r) for r in rows], [input_bits] * n_inputs,
               rows_of=[set() for _ in range(n_inputs)], score=score)
    for r, row in enumerate(rows):
        for s, _ in row:
            st.rows_of[s].add(r)
    st.plus = Counter(initial_counts(rows))
    st.heap = _initial_heap(st.plus, input_bits, score)
    heapq.heapify(st.heap)
    mask = (1 << 64) - 1
    while st.heap:
        prio = heapq.heappop(st.heap)
        key = prio & mask
        c = st.count(key)
        if c < 2:
            continue
        if st.value(key, c) != -(prio >> PRIO_SHIFT):
            heapq.heappush(st.heap, st.entry(key, c))
            continue
        _extract(st, key)
    return st.syms, [ra.row() for ra in st.rows]


def adder_bits(syms: list[Sym], rows: list[Row], n_inputs: int, input_bits: int,
               extra: list[list[int]] | None = None) -> int:
    """Estimated full-adder bits of a CSE result: each symbol's adder, then each row's
    adder tree (narrowest first, as `cmvm.adder_tree` builds it). An adder costs its
    output bits above the higher of its operands' lowest bits (below, one operand's bits
    pass through): the quantity a synthesised design's cell count follows. `extra`: per
    row, the bits of further unshifted terms (a parent output, `hardwired_coltree`)."""
    bits = symbol_bits(syms, n_inputs, input_bits)
    total = sum(bits[n_inputs + i] - abs(s.d) for i, s in enumerate(syms))
    for r, row in enumerate(rows):
        heap = [(bits[sym] + e, e) for (sym, e) in row]
        heap += [(b, 0) for b in (extra[r] if extra else [])]
        heapq.heapify(heap)
        while len(heap) > 1:
            m1, l1 = heapq.heappop(heap)
            m2, l2 = heapq.heappop(heap)
            m = max(m1, m2) + 1
            total += m - max(l1, l2)
            heapq.heappush(heap, (m, min(l1, l2)))
    return total


def _initial_heap(counts: Counter, input_bits: int, score: str) -> list[int]:
    """`State.entry` of every pattern seen twice or more, vectorised (every symbol is an
    input of `input_bits` bits here)."""
    pairs = [(k, c) for k, c in counts.items() if c >= 2]
    if not pairs:
        return []
    keys = np.array([k for k, _ in pairs], np.int64)
    c = np.array([c for _, c in pairs], np.int64)
    d = ((keys >> 1) & ((1 << D_BITS) - 1)) - D_OFF
    width = input_bits + np.abs(d) + 1
    value = c if score == "count" else c * np.maximum(input_bits - np.abs(d), 1)
    return sorted(((-v) << PRIO_SHIFT) | (wd << 64) | k for v, wd, k in zip(
        value.tolist(), width.tolist(), keys.tolist(), strict=True))


def _extract(st: State, key: int) -> None:
    """Make pattern `key` a symbol and replace its occurrences; push the new symbol's
    pairs seen twice or more (pairs of other symbols only lose counts: their stale heap
    entries are re-pushed when popped)."""
    a, b, d, s = decode(key)
    t = len(st.bits)
    st.syms.append(Sym(a, b, d, s))
    st.bits.append(st.width(key))
    st.rows_of.append(set())
    small, big = sorted((st.rows_of[a], st.rows_of[b]), key=len)
    added: list[np.ndarray] = []
    for r in sorted(small & big if a != b else small):
        _replace_in_row(st, r, a, b, d, s, t, added)
    if not added:
        return
    keys, times = np.unique(np.concatenate(added), return_counts=True)
    for k in keys[times >= 2].tolist():  # a new symbol's pair is counted here only
        c = st.count(k)
        if c >= 2:
            heapq.heappush(st.heap, st.entry(k, c))


def _replace_in_row(st: State, r: int, a: int, b: int, d: int, s: int, t: int,
                    added: list[np.ndarray]) -> None:
    ra = st.rows[r]
    for e1 in ra.shifts(a):
        i1, i2 = ra.pos.get((a, e1)), ra.pos.get((b, e1 + d))
        if i1 is None or i2 is None or (a == b and d == 0):
            continue
        g1, g2 = int(ra.sg[i1]), int(ra.sg[i2])
        if g1 * g2 != s:
            continue
        ra.drop(a, e1)
        ra.drop(b, e1 + d)
        lost = np.concatenate([ra.keys(a, e1, g1), ra.keys(b, e1 + d, g2)]).tolist()
        lost.append(pair_key((a, e1, g1), (b, e1 + d, g2))[0])
        st.minus.update(lost)
        for sym_ in {a, b}:
            if not ra.has(sym_):
                st.rows_of[sym_].discard(r)
        base = min(e1, e1 + d)
        keys = ra.keys(t, base, g1)
        st.plus.update(keys.tolist())
        added.append(keys)
        ra.put(t, base, g1)
        st.rows_of[t].add(r)


@dataclass
class Plan:
    """A CSE result for W [K, N]: symbols, per-output rows (of the difference columns when
    `tree` shares columns), the column tree, the strategy and its adder-bit estimate."""

    syms: list[Sym]
    rows: list[Row]
    tree: hardwired_coltree.Tree
    strategy: str
    estimate: int

    @property
    def adders(self) -> int:
        """Adders of the design: symbols, each row's tree, each parent add."""
        return len(self.syms) + sum(max(len(r) - 1, 0) for r in self.rows) + sum(
            1 for j, r in enumerate(self.rows) if self.tree.parent[j] >= 0 and r)


def column_bits(w: np.ndarray, input_bits: int) -> np.ndarray:
    """A bound on each output's magnitude in bits (inputs of `input_bits` bits)."""
    mag = np.abs(np.asarray(w, dtype=np.int64)).sum(axis=0)
    return np.array([int(m).bit_length() + input_bits for m in mag.tolist()], np.int64)


SMALL_BLOCK = 4000  # CSD digits up to which a block tries every parent-tree penalty
MAX_DEPTH = 8  # parent chains per output (the zoo's trees are at most 7 deep unbounded)


def strategies(w: np.ndarray, columns: bool,
               quick: bool = False) -> list[tuple[str, hardwired_coltree.Tree]]:
    """The matrices CSE is tried on: W itself and, with `columns`, the difference columns
    of parent trees (penalties 1, 2 and 3; which tree leaves CSE the most to share is not
    known before it runs; chains at most MAX_DEPTH parents deep: each is an adder on the
    output's path); duplicates dropped. Blocks of more than SMALL_BLOCK digits try W and
    the penalty-1 tree only (CSE time; on resnet_block's 288x32 layers W itself wins).
    `quick` (a matrix of more than QUICK_WEIGHTS weights, see `quick`): the penalty-1 tree
    alone (W when it shares no column)."""
    flat = ("flat", hardwired_coltree.flat(w))
    if not columns or w.shape[1] < 2:
        return [flat]
    if quick:
        t = hardwired_coltree.tree(w, MAX_DEPTH, 1)
        return [("tree1", t)] if t.shared else [flat]
    out = [flat]
    small = hardwired_csd.count(w) <= SMALL_BLOCK
    for penalty in (1, 2, 3) if small else (1,):
        t = hardwired_coltree.tree(w, MAX_DEPTH, penalty)
        if t.shared and not any(np.array_equal(t.parent, o.parent) for _, o in out):
            out.append((f"tree{penalty}", t))
    return out


QUICK_WEIGHTS = 16_384  # matrices with more weights run one CSE per block (`quick`)
QUICK_SCORE = "overlap"


def quick(w: np.ndarray) -> bool:
    """Whether a matrix is CSE'd in quick mode: one strategy (`strategies`) and one score
    (QUICK_SCORE) per block instead of every pair, ~4-8x less CSE time. Measured on random
    int4 column parts (512x64, 1024x32): the best of all pairs has 0.3-0.8% fewer
    adder bits per block; every matrix of the hardwired benchmark (zoo layers, random
    64x64 and 128x128) has at most QUICK_WEIGHTS weights and keeps the full search."""
    return int(np.asarray(w).size) > QUICK_WEIGHTS


def plan(w: np.ndarray, input_bits: int, columns: bool = True, fast: bool = False) -> Plan:
    """CSE of W [K, N] under each score (SCORES) on each of `strategies`; keeps the fewest
    estimated adder bits (`adder_bits`, ties: the earlier strategy). `fast` (a block of a
    matrix for which `quick` holds): one strategy, QUICK_SCORE only."""
    w = np.asarray(w, dtype=np.int64)
    col_bits = column_bits(w, input_bits).tolist()
    best_plan: Plan | None = None
    for name, t in strategies(w, columns, fast):
        rows = digit_rows(t.diff)
        extra = [[col_bits[p]] if p >= 0 else [] for p in t.parent.tolist()]
        for score in (QUICK_SCORE,) if fast else SCORES:
            syms, out = eliminate([dict(r) for r in rows], w.shape[0], input_bits, score)
            est = adder_bits(syms, out, w.shape[0], input_bits, extra)
            if best_plan is None or est < best_plan.estimate:
                best_plan = Plan(syms, out, t, f"{name}/{score}", est)
    assert best_plan is not None
    return best_plan
