"""Folding (`--fold K`): output neurons time-multiplexed over K phases.

Neuron n = p * L + l runs in lane l during phase p (L = ceil(N / K) lanes), so phase p
produces outputs p*L .. p*L + L - 1, one output beat. A lane is the adder tree of one
neuron whose leaves change with the phase:
- csd: each neuron is a list of leaf terms (CSD digits, or CSE symbols shared by every
  neuron and computed once per step); a lane's leaves are *slots*, each a MUX over the
  phases of one leaf term per phase (a term appearing in several phases' neurons is put in
  one slot, so that the mux collapses when a slot holds the same term in every phase);
- grouped: the group sums become phase-dependent (S_v(p): a popcount of the plane under a
  per-phase mask, or an adder tree of inputs gated per phase), the per-value multiplies are
  shared by all phases.
Ranges through muxes are unions over the phases (safe; exact per phase would need one
adder tree per phase, which is what folding avoids).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backends.verilog.hardwired import cmvm, grouped
from backends.verilog.hardwired.netlist import Netlist, Term, term_range


def phase_of(n: int, lanes: int) -> tuple[int, int]:
    """(phase, lane) of neuron n."""
    return divmod(n, lanes)


def lanes_for(n_out: int, fold: int) -> int:
    return -(-n_out // fold)


def csd_lanes(net: Netlist, phase: int, rows: Sequence[Sequence[Term]],
              fold: int) -> list[Term | None]:
    """One accumulator term per lane from each neuron's leaf terms."""
    n_lanes = lanes_for(len(rows), fold)
    out = []
    for lane in range(n_lanes):
        per_phase = [rows[p * n_lanes + lane] if p * n_lanes + lane < len(rows) else []
                     for p in range(fold)]
        slots = _slots(per_phase)
        terms = [_slot_term(net, phase, s) for s in slots]
        out.append(_sum(net, [t for t in terms if t is not None]))
    return out


def _slots(per_phase: list[Sequence[Term]]) -> list[list[Term | None]]:
    """Leaf terms arranged in slots (one option per phase), equal nodes in one slot."""
    slots: list[list[Term | None]] = []
    by_node: dict[int, list[int]] = {}
    for p, terms in enumerate(per_phase):
        used: set[int] = set()
        free = 0
        for t in sorted(terms):
            j = next((j for j in by_node.get(t[0], []) if j not in used), None)
            if j is None:
                while free < len(slots) and (free in used or slots[free][p] is not None):
                    free += 1
                j = free
                if j == len(slots):
                    slots.append([None] * len(per_phase))
                by_node.setdefault(t[0], []).append(j)
            slots[j][p] = t
            used.add(j)
    return slots


def _slot_term(net: Netlist, phase: int, options: list[Term | None]) -> Term | None:
    if all(o == options[0] for o in options):
        return options[0]
    return net.mux(phase, options), 0, 1


def _sum(net: Netlist, terms: list[Term]) -> Term | None:
    if not terms:
        return None
    items = [(t, term_range(*net.range(t[0]), t[1], t[2]), None) for t in terms]
    return cmvm.adder_tree(net, items, (0, 0))[0]


def grouped_lanes(net: Netlist, phase: int, xs: Sequence[int] | None, w: np.ndarray,
                  fold: int, plane: int | None) -> list[Term | None]:
    """Grouped neurons with per-phase group membership, one accumulator term per lane."""
    n_out = w.shape[1]
    n_lanes = lanes_for(n_out, fold)
    out = []
    for lane in range(n_lanes):
        cols = [w[:, p * n_lanes + lane] if p * n_lanes + lane < n_out
                else np.zeros(w.shape[0], np.int64) for p in range(fold)]
        values = sorted({int(v) for c in cols for v in c if v})

        def group(v: int, cols: list[np.ndarray] = cols) -> Term | None:
            return _phase_group(net, phase, xs, [np.flatnonzero(c == v) for c in cols],
                                plane)

        out.append(grouped.combine(net, values, group))
    return out


def _phase_group(net: Netlist, phase: int, xs: Sequence[int] | None,
                 members: list[np.ndarray], plane: int | None) -> Term | None:
    """S(p) = sum of inputs members[p]: popcount under a phase-selected mask, or a tree of
    inputs each gated to the phases that include it."""
    if all(m.size == 0 for m in members):
        return None
    if plane is not None:
        width = net.vec_width[plane]
        masks = [net.vector_const(sum(1 << int(k) for k in m), width) for m in members]
        sel = net.vector_mux(phase, masks, width)
        return net.popcount(plane, sel, max(int(m.size) for m in members)), 0, 1
    ks = sorted({int(k) for m in members for k in m})
    inside = [set(m.tolist()) for m in members]
    leaves = []
    for k in ks:
        opts = [(xs[k], 0, 1) if k in s else None for s in inside]
        leaves.append(_slot_term(net, phase, opts))
    return _sum(net, leaves)
