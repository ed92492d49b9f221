"""Constant matrix-vector products as netlists: y[n] = sum_k x[k] * W[k, n].

Two constructions, both exact:
- `plain`: every weight recoded in CSD, each output the adder tree of its digits (the
  baseline: digits - 1 adders per output, zero weights free);
- `cse`: the same digits with greedy pairwise common-subexpression elimination across the
  whole matrix (`cse.best`: the score of fewest estimated adder bits): partial sums shared
  between output neurons.
Wide matrices are split into blocks of consecutive inputs, eliminated separately (the
first pair count grows with the square of a row's terms), and the block partial sums are
added per output; `block_size` picks the widest block within a work budget.

Ranges are exact. All inputs share one range [lo, hi] (one activation tensor), so the
range of any linear form sum_k c_k x_k is lo * P + hi * M .. hi * P + lo * M, with P and M
the sums of its positive and negative coefficients. Sums of terms over disjoint inputs get
that range by interval arithmetic; where a row's terms share an input (two digits of one
weight in different subexpressions, possibly with opposite signs), the coefficients are
merged per input so that cancellation is accounted for. Adder trees add the two narrowest
partial sums first (Huffman order), which keeps the total adder width low.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from backends.verilog.hardwired.netlist import Netlist, Term, bits_for, term_range
from passes import hardwired_coltree
from passes import hardwired_cse as cse

Form = dict[int, int]  # input index -> coefficient


def form_range(form: Form, lo: int, hi: int) -> tuple[int, int]:
    """Exact range of sum_k c_k x_k for x_k in [lo, hi]."""
    pos = sum(c for c in form.values() if c > 0)
    neg = sum(c for c in form.values() if c < 0)
    return lo * pos + hi * neg, hi * pos + lo * neg


def shifted(form: Form, shift: int, sign: int) -> Form:
    return {k: sign * (c << shift) for k, c in form.items()}


def merged(f: Form, g: Form) -> Form:
    out = dict(f)
    for k, c in g.items():
        v = out.get(k, 0) + c
        if v:
            out[k] = v
        else:
            out.pop(k, None)
    return out


def build(net: Netlist, xs: Sequence[int], w: np.ndarray, method: str = "cse",
          block: int | None = None, group_nodes: int = 0) -> list[Term | None]:
    """Add y = W^T x to `net` (xs: the K input nodes, sharing one range); returns one term
    per output (None for an all-zero column). With `group_nodes`, the block partials are
    summed per output every ~group_nodes nodes and the netlist marked there, so that a
    split into modules cuts where only one value per output crosses."""
    rng = net.range(xs[0])
    parts: list[list[tuple[Term, int, int]]] = [[] for _ in range(w.shape[1])]
    start = len(net)
    for blk in _blocks(net, xs, w, method, block, columns=method == "cse"):
        for j, t in enumerate(_sum_block(net, blk, rng)):
            if t is not None:
                parts[j].append(t)
        if group_nodes and len(net) - start >= group_nodes:
            parts = [_flush(net, p) for p in parts]
            net.mark()
            start = len(net)
    return [_sum_disjoint(net, p) for p in parts]


def _sum_block(net: Netlist, blk: Block,
               rng: tuple[int, int]) -> list[tuple[Term, int, int] | None]:
    """Each output's partial sum over one block, parents first: an output with a parent
    column adds the parent's sum (its linear form keeps the ranges exact)."""
    sums: list[tuple[Term, int, int] | None] = [None] * len(blk.rows)
    for j in blk.order:
        terms, forms = blk.rows[j]
        p = int(blk.parent[j])
        if p >= 0 and sums[p] is not None:
            (node, sh, g), _, _ = sums[p]
            s = int(blk.sign[j])
            terms = [*terms, (node, sh, g * s)]
            forms = [*forms, shifted(blk.column_form(p), 0, s)]
        sums[j] = _sum_row(net, terms, forms, rng)
    return sums


def _flush(net: Netlist, parts: list[tuple[Term, int, int]]) -> list[tuple[Term, int, int]]:
    """One partial from many (disjoint inputs: the interval range is exact)."""
    if len(parts) < 2:
        return parts
    lo, hi = sum(p[1] for p in parts), sum(p[2] for p in parts)
    t = _sum_disjoint(net, parts)
    return [(t, lo, hi)]


def leaf_rows(net: Netlist, xs: Sequence[int], w: np.ndarray, method: str = "cse",
              block: int | None = None) -> list[list[Term]]:
    """Each output's leaf terms (digits or shared symbols, every block), summed by the
    caller (folded lanes: no parent columns, an output is its own leaves)."""
    out: list[list[Term]] = [[] for _ in range(w.shape[1])]
    for blk in _blocks(net, xs, w, method, block, columns=False):
        for j, (terms, _) in enumerate(blk.rows):
            out[j].extend(terms)
    return out


@dataclass
class Block:
    """One block of inputs: per output its leaf terms and their linear forms, the parent
    column tree (`hardwired_coltree`) and the block's weights."""

    rows: list[tuple[list[Term], list[Form]]]
    parent: np.ndarray
    sign: np.ndarray
    order: list[int]
    w: np.ndarray

    def column_form(self, j: int) -> Form:
        return {k: int(v) for k, v in enumerate(self.w[:, j].tolist()) if v}


def _blocks(net: Netlist, xs: Sequence[int], w: np.ndarray, method: str,
            block: int | None, columns: bool) -> Iterator[Block]:
    """Per block of inputs: each output's leaf terms and their linear forms."""
    w = np.asarray(w, dtype=np.int64)
    k_in = w.shape[0]
    block = k_in if method == "plain" else (block or cse.block_size(w))
    rng = net.range(xs[0])
    fast = cse.quick(w)
    for start in range(0, k_in, block):
        yield _block(net, list(xs[start:start + block]), w[start:start + block], method, rng,
                     columns, fast)


def _block(net: Netlist, xs: list[int], w: np.ndarray, method: str,
           rng: tuple[int, int], columns: bool, fast: bool = False) -> Block:
    """One block: digits -> (CSE, parent columns) -> per-output leaf terms and forms."""
    if method == "cse":
        pl = cse.plan(w, bits_for(*rng), columns, fast)
        syms, rows, tree = pl.syms, pl.rows, pl.tree
    else:
        syms, rows, tree = [], cse.digit_rows(w), hardwired_coltree.flat(w)
    nodes, forms = _symbols(net, xs, syms, rng)
    out = []
    for row in rows:
        items = sorted(row.items())
        out.append(([(nodes[s][0], e, g * nodes[s][2]) for (s, e), g in items],
                    [shifted(forms[s], e, g) for (s, e), g in items]))
    return Block(out, tree.parent, tree.sign, tree.order, w)


def _symbols(net: Netlist, xs: list[int], syms: list[cse.Sym],
             rng: tuple[int, int]) -> tuple[list[Term], list[Form]]:
    """Netlist terms (node, 0, +-1) and linear forms of the inputs and every CSE symbol."""
    nodes: list[Term] = [(x, 0, 1) for x in xs]
    forms: list[Form] = [{k: 1} for k in range(len(xs))]
    for s in syms:
        (na, _, ga), (nb, _, gb) = nodes[s.a], nodes[s.b]
        if s.d >= 0:
            t1, t2 = (na, 0, ga), (nb, s.d, s.sign * gb)
            f = merged(forms[s.a], shifted(forms[s.b], s.d, s.sign))
        else:
            t1, t2 = (na, -s.d, ga), (nb, 0, s.sign * gb)
            f = merged(shifted(forms[s.a], -s.d, 1), shifted(forms[s.b], 0, s.sign))
        lo, hi = form_range(f, *rng)
        node, shift, sign = add(net, t1, t2, lo, hi)
        assert shift == 0, "a CSE symbol is a + s * (b << d) with d >= 0"
        nodes.append((node, 0, sign))
        forms.append(f)
    return nodes, forms


def add(net: Netlist, t1: Term, t2: Term, lo: int, hi: int) -> Term:
    """t1 + t2 as a term; a difference whose subtrahend is the less shifted operand is
    built negated (q - (p << d) instead of (p << d) - q, the sign carried by the term), so
    that the low d bits of every adder pass through from one operand instead of needing a
    borrow chain."""
    p, q = (t1, t2) if t1[2] > 0 else (t2, t1)
    if p[2] != q[2] and q[1] < p[1]:
        n, m, g = net.add((p[0], p[1], -1), (q[0], q[1], 1), -hi, -lo)
        return n, m, -g
    return net.add(t1, t2, lo, hi)


def _sum_row(net: Netlist, terms: list[Term], forms: list[Form],
             rng: tuple[int, int]) -> tuple[Term, int, int] | None:
    """The adder tree of one row's terms; returns (term, lo, hi) of the sum."""
    if not terms:
        return None
    support = sum(len(f) for f in forms)
    disjoint = support == len(set().union(*forms))
    items = []
    for t, f in zip(terms, forms, strict=True):
        r = term_range(*net.range(t[0]), t[1], t[2])
        items.append((t, r, None if disjoint else f))
    t, (lo, hi) = adder_tree(net, items, rng)
    return t, lo, hi


def _sum_disjoint(net: Netlist, parts: list[tuple[Term, int, int]]) -> Term | None:
    """Sum block partials (over disjoint inputs: interval ranges are exact)."""
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0][0]
    items = [(t, (lo, hi), None) for t, lo, hi in parts]
    return adder_tree(net, items, (0, 0))[0]


def adder_tree(net: Netlist, items: list, rng: tuple[int, int]) -> tuple[Term, tuple[int, int]]:
    """Add the two narrowest items until one is left. An item is (term, range, form or
    None); forms, when given, make each partial sum's range exact under cancellation."""
    heap = [(bits_for(*r), i, t, r, f) for i, (t, r, f) in enumerate(items)]
    heapq.heapify(heap)
    order = len(heap)
    while len(heap) > 1:
        _, _, t1, r1, f1 = heapq.heappop(heap)
        _, _, t2, r2, f2 = heapq.heappop(heap)
        if f1 is not None:
            f = merged(f1, f2)
            lo, hi = form_range(f, *rng)
        else:
            f, (lo, hi) = None, (r1[0] + r2[0], r1[1] + r2[1])
        t = add(net, t1, t2, lo, hi)
        heapq.heappush(heap, (bits_for(lo, hi), order, t, (lo, hi), f))
        order += 1
    _, _, t, r, _ = heap[0]
    return t, r
