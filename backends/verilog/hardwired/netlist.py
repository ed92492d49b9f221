"""The hardwired design's netlist: a small graph of integer operations with exact ranges.

Every weight of a hardwired design is a constant folded into this graph, so the graph is
built by Python (`cmvm`, `grouped`, `outunit`, `fold`) and rendered by one printer
(`printer.py`). Nodes are numbered in creation order, which is a topological order; each
node holds its exact value range [lo, hi], from which the printer sizes every wire.

Node kinds (value semantics; `Term` = (node, shift, sign) means sign * (node << shift)):
- IN      a field of an input port: port[lsb +: width], signed or not (a whole bit-plane
          for POPCOUNT);
- CONST   an integer (printed inline as a literal);
- ADD     sign_a * (a << sa) + sign_b * (b << sb), never both signs negative;
- MUX     options[sel] (each option a Term or None for 0), 0 when sel is past the end;
- REG     a, one clock later (when `en`); `rst` registers clear to 0 on reset;
- HORNER  r <= (first ? 0 : 2 r) + (neg ? -d : d): the MSB-first bit-serial accumulator;
- ROUND   round_half_away_from_zero(a / 2^sh) (sh >= 1), as in compiler.reference.requantize;
- CLAMP   min(max(a, lo), hi);
- TABLE   entries[a - base];
- POPCOUNT the number of ones in vec & mask (mask: a CONST or a MUX of CONSTs);
- EQ      1 when a == value, else 0;
- MAX     the larger of a and b (max pooling).
A node whose range is a single value is never created: builders return a CONST instead.
Storage is flat typed arrays (a million-node layer is tens of MB), with the rarer kinds'
parameters in `extra`.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from compiler.errors import EtchError

Term = tuple[int, int, int]  # (node, shift, sign): sign * (node << shift)


class K(IntEnum):
    IN = 0
    CONST = 1
    ADD = 2
    MUX = 3
    REG = 4
    HORNER = 5
    ROUND = 6
    CLAMP = 7
    TABLE = 8
    POPCOUNT = 9
    EQ = 10
    MAX = 11


SEQUENTIAL = frozenset({K.REG, K.HORNER})


def bits_for(lo: int, hi: int) -> int:
    """Bits of the two's complement (lo < 0) or unsigned (lo >= 0) form holding [lo, hi]."""
    if lo >= 0:
        return max(1, hi.bit_length())
    return max(1 + (~lo).bit_length(), 1 + hi.bit_length() if hi >= 0 else 1)


def term_range(lo: int, hi: int, shift: int, sign: int) -> tuple[int, int]:
    """Range of sign * (v << shift) for v in [lo, hi]."""
    a, b = lo << shift, hi << shift
    return (a, b) if sign > 0 else (-b, -a)


@dataclass
class Port:
    """A module port: `count` elements of `width` bits, packed element 0 lowest."""

    name: str
    width: int
    count: int
    signed: bool = True

    @property
    def bits(self) -> int:
        return self.width * self.count


@dataclass
class Netlist:
    """Nodes in topological (creation) order, input and output ports, output elements."""

    name: str
    kind: array = field(default_factory=lambda: array("b"))
    a: array = field(default_factory=lambda: array("q"))
    b: array = field(default_factory=lambda: array("q"))
    sa: array = field(default_factory=lambda: array("b"))
    sb: array = field(default_factory=lambda: array("b"))
    neg: array = field(default_factory=lambda: array("b"))  # bit 0: a negated, bit 1: b
    lo: array = field(default_factory=lambda: array("q"))
    hi: array = field(default_factory=lambda: array("q"))
    extra: dict[int, tuple] = field(default_factory=dict)
    vec_width: dict[int, int] = field(default_factory=dict)  # bit-vector nodes: their bits
    inputs: dict[str, Port] = field(default_factory=dict)
    outputs: dict[str, Port] = field(default_factory=dict)
    out_nodes: dict[str, list[Term | None]] = field(default_factory=dict)
    marks: list[int] = field(default_factory=list)  # where a module split may start
    _consts: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.kind)

    # -- construction -------------------------------------------------------------------
    def _new(self, kind: K, lo: int, hi: int, a: int = -1, b: int = -1, sa: int = 0,
             sb: int = 0, neg: int = 0) -> int:
        if lo > hi:
            raise EtchError(f"internal: netlist {self.name}: empty range [{lo}, {hi}]")
        self.kind.append(kind)
        self.a.append(a)
        self.b.append(b)
        self.sa.append(sa)
        self.sb.append(sb)
        self.neg.append(neg)
        self.lo.append(lo)
        self.hi.append(hi)
        return len(self.kind) - 1

    def range(self, n: int) -> tuple[int, int]:
        return self.lo[n], self.hi[n]

    def is_const(self, n: int) -> bool:
        return self.kind[n] == K.CONST

    def value(self, n: int) -> int:
        """The value of a CONST node."""
        return self.lo[n]

    def const(self, v: int) -> int:
        """The CONST node of value v (one per value)."""
        n = self._consts.get(v)
        if n is None:
            n = self._consts[v] = self._new(K.CONST, v, v)
        return n

    def add_input(self, name: str, width: int, count: int, signed: bool = True) -> Port:
        if name in self.inputs or name in self.outputs:
            raise EtchError(f"internal: netlist {self.name}: port {name} defined twice")
        self.inputs[name] = Port(name, width, count, signed)
        return self.inputs[name]

    def field(self, port: str, index: int, width: int | None = None, signed: bool | None = None,
              lo: int | None = None, hi: int | None = None) -> int:
        """IN node: element `index` of input `port` (or `width` bits from index*width)."""
        p = self.inputs[port]
        w = p.width if width is None else width
        s = p.signed if signed is None else signed
        dlo, dhi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if s else (0, (1 << w) - 1)
        lo, hi = dlo if lo is None else lo, dhi if hi is None else hi
        n = self._new(K.IN, lo, hi)
        self.extra[n] = (port, index * p.width, w, s)
        return n

    def add(self, t1: Term, t2: Term, lo: int | None = None, hi: int | None = None) -> Term:
        """The sum of two terms as a term (node, shift, sign) of a new ADD node.

        The common shift is taken out and the signs arranged so that the node never
        negates both operands. `lo`/`hi` give the exact range of the *sum* when the caller
        knows better than interval arithmetic (operands sharing inputs with opposite signs).
        """
        (a, s1, g1), (b, s2, g2) = t1, t2
        m = min(s1, s2)
        sign = -1 if g1 < 0 and g2 < 0 else 1
        g1, g2 = g1 * sign, g2 * sign
        if g1 < 0:  # keep a positive: b - a
            a, s1, g1, b, s2, g2 = b, s2, g2, a, s1, g1
        r1 = term_range(self.lo[a], self.hi[a], s1 - m, g1)
        r2 = term_range(self.lo[b], self.hi[b], s2 - m, g2)
        nlo, nhi = r1[0] + r2[0], r1[1] + r2[1]
        if lo is not None:  # exact range of sign * (sum >> m) from the caller's sum range
            elo, ehi = (lo >> m, hi >> m) if sign > 0 else (-(hi >> m), -(lo >> m))
            nlo, nhi = max(nlo, elo), min(nhi, ehi)
        if nlo == nhi:
            return self.const(nlo), m, sign
        n = self._new(K.ADD, nlo, nhi, a, b, s1 - m, s2 - m, 2 if g2 < 0 else 0)
        return n, m, sign

    def mux(self, sel: int, options: Sequence[Term | None], width_hint: int = 0) -> int:
        """MUX node: options[sel]; `None` options (and sel past the end) give 0."""
        rs = [term_range(self.lo[n], self.hi[n], s, g) for n, s, g in
              (o for o in options if o is not None)]
        zero = any(o is None for o in options) or len(options) < (self.hi[sel] + 1)
        lo = min([r[0] for r in rs] + ([0] if zero else []))
        hi = max([r[1] for r in rs] + ([0] if zero else []))
        if lo == hi:
            return self.const(lo)
        n = self._new(K.MUX, lo, hi, a=sel)
        self.extra[n] = (tuple(options),)
        return n

    def reg(self, a: int, rst: bool = False) -> int:
        if self.kind[a] == K.CONST:
            return a
        n = self._new(K.REG, self.lo[a], self.hi[a], a=a, neg=int(rst))
        if a in self.vec_width:
            self.vec_width[n] = self.vec_width[a]
        return n

    def horner(self, d: int, first: int, negate: int, lo: int, hi: int) -> int:
        """The bit-serial accumulator; [lo, hi] is the exact range of the full sum."""
        n = self._new(K.HORNER, lo, hi, a=d)
        self.extra[n] = (first, negate)
        return n

    def round_shift(self, a: int, sh: int) -> int:
        """round_half_away_from_zero(a / 2^sh), sh >= 0."""
        if sh <= 0:
            return a
        lo, hi = round_half_away(self.lo[a], sh), round_half_away(self.hi[a], sh)
        if lo == hi:
            return self.const(lo)
        n = self._new(K.ROUND, lo, hi, a=a, sa=sh)
        return n

    def clamp(self, a: int, lo: int, hi: int) -> int:
        alo, ahi = self.range(a)
        nlo, nhi = min(max(alo, lo), hi), max(min(ahi, hi), lo)
        if nlo == nhi:
            return self.const(nlo)
        if alo >= lo and ahi <= hi:
            return a
        n = self._new(K.CLAMP, nlo, nhi, a=a)
        self.extra[n] = (lo, hi)
        return n

    def table(self, a: int, entries: Sequence[int], base: int) -> int:
        """entries[a - base] over a's reachable values."""
        alo, ahi = self.range(a)
        if alo < base or ahi - base >= len(entries):
            raise EtchError(f"internal: table of {len(entries)} entries from {base} indexed by "
                            f"[{alo}, {ahi}]")
        seen = [int(entries[v - base]) for v in range(alo, ahi + 1)]
        if min(seen) == max(seen):
            return self.const(seen[0])
        n = self._new(K.TABLE, min(seen), max(seen), a=a)
        self.extra[n] = (tuple(int(e) for e in entries), base)
        return n

    def popcount(self, vec: int, mask: int, ones: int) -> int:
        """popcount(vec & mask); `ones` is the most set bits any mask value has."""
        if ones == 0:
            return self.const(0)
        return self._new(K.POPCOUNT, 0, ones, a=vec, b=mask)

    def maximum(self, a: int, b: int) -> int:
        """MAX node: max(a, b)."""
        (alo, ahi), (blo, bhi) = self.range(a), self.range(b)
        if alo >= bhi:
            return a
        if blo >= ahi:
            return b
        return self._new(K.MAX, max(alo, blo), max(ahi, bhi), a=a, b=b)

    def eq(self, a: int, value: int) -> int:
        lo, hi = self.range(a)
        if not lo <= value <= hi:
            return self.const(0)
        if lo == hi:
            return self.const(1)
        n = self._new(K.EQ, 0, 1, a=a)
        self.extra[n] = (value,)
        return n

    def plane(self, port: str) -> int:
        """IN node: the whole of input `port` as a bit vector (a bit-plane for POPCOUNT)."""
        n = self._new(K.IN, 0, 0)
        self.extra[n] = (port, 0, self.inputs[port].bits, False)
        self.vec_width[n] = self.inputs[port].bits
        return n

    def vector_const(self, bits: int, width: int) -> int:
        """A CONST node holding a bit vector (POPCOUNT masks); not deduplicated by value."""
        n = self._new(K.CONST, 0, 0)
        self.extra[n] = (bits,)
        self.vec_width[n] = width
        return n

    def vector_mux(self, sel: int, options: Sequence[int], width: int) -> int:
        """A MUX of vector CONSTs (per-phase POPCOUNT masks)."""
        n = self._new(K.MUX, 0, 0, a=sel)
        self.extra[n] = (tuple((o, 0, 1) for o in options),)
        self.vec_width[n] = width
        return n

    def add_output(self, name: str, width: int, elems: Sequence[Term | None],
                   signed: bool = True) -> None:
        """Output port `name`: one element per term (None: 0), each `width` bits."""
        if name in self.inputs or name in self.outputs:
            raise EtchError(f"internal: netlist {self.name}: port {name} defined twice")
        self.outputs[name] = Port(name, width, len(elems), signed)
        self.out_nodes[name] = list(elems)

    # -- queries ------------------------------------------------------------------------
    def operands(self, n: int) -> list[int]:
        """Every node `n` reads (data, select, flags, masks)."""
        k = self.kind[n]
        if k in (K.IN, K.CONST):
            return []
        if k in (K.ADD, K.POPCOUNT, K.MAX):
            return [self.a[n], self.b[n]]
        if k == K.MUX:
            return [self.a[n]] + [o[0] for o in self.extra[n][0] if o is not None]
        if k == K.HORNER:
            return [self.a[n], *self.extra[n]]
        return [self.a[n]]

    def mark(self) -> None:
        """Note that the nodes from here on may go to another module (`partition`)."""
        if not self.marks or self.marks[-1] != len(self):
            self.marks.append(len(self))

    def partition(self, size: int) -> list[range]:
        """Contiguous node ranges of about `size` nodes, cut at marks where there are any
        (fewer values cross the cuts there)."""
        cuts = self.marks or list(range(size, len(self), size))
        ranges, start = [], 0
        for c in [*cuts, len(self)]:
            if c - start >= size or c == len(self):
                if c > start:
                    ranges.append(range(start, c))
                start = c
        return ranges

    def count(self, kind: K) -> int:
        return sum(1 for k in self.kind if k == kind)


def round_half_away(v: int, sh: int) -> int:
    """round(v / 2^sh) with ties away from zero (sh >= 1): compiler.reference.requantize's
    rounding, for one exact integer."""
    half = 1 << (sh - 1)
    return (v + half) >> sh if v >= 0 else -((-v + half) >> sh)
