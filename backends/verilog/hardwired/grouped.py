"""Grouped (accumulate-then-multiply) neurons: the hardwired-neuron way.

A neuron with b-bit weights first sums its inputs per distinct weight value, then
multiplies each sum once by its constant:

    y = sum_v v * S_v,   S_v = sum_{k : W[k] = v} x_k        (zero weights dropped)

Sums for v and -v share one multiply (D_u = S_u - S_-u), and magnitudes with the same odd
part share one too (E_o = sum_t D_{o 2^t} << t), so an int4 neuron needs multiplies by
3, 5 and 7 only (one adder each); the rest is the adder trees of the group sums. With
bit-serial inputs (`plane`: one bit of every input per cycle) each group sum is the
population count of a masked bit-plane, POPCOUNT(plane & mask_v), and the neuron's value
is accumulated over the bits (MSB first) by the layer.

All ranges are exact: group sums are over disjoint inputs, each multiply is c * E for a
constant c.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from backends.verilog.hardwired import cmvm
from backends.verilog.hardwired.netlist import Netlist, Term, term_range
from backends.verilog.hardwired.outunit import const_mul, to_node


def odd_part(u: int) -> tuple[int, int]:
    """u = o * 2^t with o odd: (o, t)."""
    t = (u & -u).bit_length() - 1
    return u >> t, t


def build(net: Netlist, xs: Sequence[int] | None, w: np.ndarray,
          plane: int | None = None) -> list[Term | None]:
    """Add y = W^T x as grouped neurons; `xs` (bit-parallel input nodes) or `plane` (the
    bit-plane IN node: group sums are popcounts). One term per output (None: all-zero)."""
    w = np.asarray(w, dtype=np.int64)
    out = []
    for n in range(w.shape[1]):
        net.mark()  # neurons share nothing: a module split may fall between any two
        out.append(neuron(net, xs, w[:, n], plane))
    return out


def neuron(net: Netlist, xs: Sequence[int] | None, col: np.ndarray,
           plane: int | None) -> Term | None:
    """One neuron: its inputs grouped by weight value."""
    values = sorted({int(v) for v in col if v})
    return combine(net, values, lambda v: _group(net, xs, np.flatnonzero(col == v), plane))


def combine(net: Netlist, values: Sequence[int],
            group: Callable[[int], Term | None]) -> Term | None:
    """sum_v v * group(v): +/- pairs subtracted, magnitudes of one odd part shifted
    together, one constant multiply per odd part."""
    classes: dict[int, list[Term]] = {}
    for u in sorted({abs(v) for v in values}):
        pos = group(u) if u in values else None
        neg = group(-u) if -u in values else None
        d = _difference(net, pos, neg)
        if d is not None:
            o, t = odd_part(u)
            classes.setdefault(o, []).append((d[0], d[1] + t, d[2]))
    products = []
    for o, terms in sorted(classes.items()):
        e = _sum(net, terms)
        if e is None:
            continue
        p = const_mul(net, to_node(net, e), o)
        if p is not None:
            products.append(p)
    return _sum(net, products)


def _difference(net: Netlist, pos: Term | None, neg: Term | None) -> Term | None:
    """pos - neg as a term."""
    if pos is None:
        return None if neg is None else (neg[0], neg[1], -neg[2])
    if neg is None:
        return pos
    return net.add(pos, (neg[0], neg[1], -neg[2]))


def _group(net: Netlist, xs: Sequence[int] | None, ks: np.ndarray,
           plane: int | None) -> Term | None:
    """The sum of inputs `ks`: a popcount of the plane, or an adder tree of xs."""
    if ks.size == 0:
        return None
    if plane is not None:
        mask = 0
        for k in ks.tolist():
            mask |= 1 << k
        m = net.vector_const(mask, net.vec_width[plane])
        return net.popcount(plane, m, int(ks.size)), 0, 1
    items = [((xs[k], 0, 1), net.range(xs[k]), None) for k in ks.tolist()]
    return cmvm.adder_tree(net, items, (0, 0))[0]


def _sum(net: Netlist, terms: list[Term]) -> Term | None:
    """Sum of terms over disjoint inputs (narrowest first)."""
    if not terms:
        return None
    items = [(t, term_range(*net.range(t[0]), t[1], t[2]), None) for t in terms]
    return cmvm.adder_tree(net, items, (0, 0))[0]
