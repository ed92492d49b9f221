"""The output unit of a hardwired neuron as netlist nodes: bias, requantise, clamp, table.

    a = acc + bias                      (zero point of the input folded into bias)
    y = clamp(rha(a * m / 2^s) + zp, qmin, qmax)     m, s from `requant.choose` (exact)
    y = table[y - lo]                   (optional: a one-input nonlinearity on int8)

Constants are folded into logic: the bias is an adder with a constant, the multiply a
shift-add tree of m's CSD digits. In a folded lane the constants differ per phase, so the
bias and each multiplier digit become a MUX over the phases (`lane(..., phase=sel)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backends.verilog.hardwired import requant
from backends.verilog.hardwired.netlist import Netlist, Term, term_range
from passes import hardwired_csd as csd


@dataclass(frozen=True)
class Unit:
    """One lane's output-unit constants (one entry per phase; one phase when unfolded)."""

    bias: tuple[int, ...]
    mult: tuple[int, ...]
    shift: int
    zp: int
    qmin: int
    qmax: int
    table: tuple[int, ...] | None = None
    table_base: int = 0


def to_node(net: Netlist, t: Term) -> int:
    """A node holding the value of term t (an ADD with zero when shifted or negated)."""
    n, s, g = t
    if s == 0 and g > 0:
        return n
    if net.is_const(n):
        return net.const(g * (net.value(n) << s))
    node, s2, g2 = net.add((net.const(0), 0, 1), t)
    assert s2 == 0 and g2 == 1
    return node


def const_mul(net: Netlist, a: int, m: int) -> Term | None:
    """m * a as a term: m's CSD digits added as shifted copies of a (exact ranges:
    every partial sum is c * a for the partial constant c)."""
    digits = csd.terms(m)
    if not digits:
        return None
    lo, hi = net.range(a)
    e0, g0 = digits[0]
    acc: Term = (a, e0, g0)
    c = g0 << e0
    for e, g in digits[1:]:
        c += g << e
        r = sorted((c * lo, c * hi))
        acc = net.add(acc, (a, e, g), r[0], r[1])
    return acc


def _sum(net: Netlist, terms: list[Term]) -> Term | None:
    acc = terms[0] if terms else None
    for t in terms[1:]:
        acc = net.add(acc, t)
    return acc


def lane(net: Netlist, acc: Term | None, unit: Unit, phase: int | None = None) -> Term:
    """The lane's int8/uint8 output code as a term, from its accumulator term."""
    a = _biased(net, acc, unit.bias, phase)
    if len(unit.mult) == 1:
        prod = const_mul(net, a, unit.mult[0])
    else:
        prod = _muxed_mul(net, a, unit.mult, phase)
    if prod is None:
        p = net.const(0)
    else:
        p = to_node(net, prod)
    r = net.round_shift(p, unit.shift)
    y = to_node(net, net.add((r, 0, 1), (net.const(unit.zp), 0, 1)))
    y = net.clamp(y, unit.qmin, unit.qmax)
    if unit.table is not None:
        y = net.table(y, unit.table, unit.table_base)
    return y, 0, 1


def _biased(net: Netlist, acc: Term | None, bias: Sequence[int], phase: int | None) -> int:
    if len(bias) == 1:
        b = net.const(bias[0])
    else:
        b = net.mux(phase, [(net.const(v), 0, 1) for v in bias])
    if acc is None:
        return b
    if net.is_const(b) and net.value(b) == 0:
        return to_node(net, acc)
    return to_node(net, net.add(acc, (b, 0, 1)))


def _muxed_mul(net: Netlist, a: int, mults: Sequence[int], phase: int) -> Term | None:
    """sum_j MUX_phase(digit j of m_phase) * a: the multiplier's digits chosen per phase."""
    per = [csd.terms(m) for m in mults]
    depth = max((len(p) for p in per), default=0)
    terms: list[Term] = []
    for j in range(depth):
        opts = [(a, p[j][0], p[j][1]) if j < len(p) else None for p in per]
        if all(o == opts[0] for o in opts):
            terms.append(opts[0])
            continue
        m = net.mux(phase, opts)
        terms.append((m, 0, 1))
    return _sum(net, terms) if terms else None


def check_range(net: Netlist, t: Term, lo: int, hi: int) -> bool:
    """Whether term t's range lies within [lo, hi] (outputs fit their codes)."""
    r = term_range(*net.range(t[0]), t[1], t[2])
    return lo <= r[0] and r[1] <= hi


INT32 = (-(1 << 31), (1 << 31) - 1)


def rescale(net: Netlist, x: int, m0: int, shift: int, zp: int, qmin: int, qmax: int) -> int:
    """clamp(rha(x * m0 / 2^shift) + zp, qmin, qmax) with the fewest-digit exact constants
    over x's range (`requant.choose`); shift <= 0 is an exact integer scale."""
    lo, hi = net.range(x)
    if shift <= 0:
        p = const_mul(net, x, m0 << -shift)
        y = net.const(0) if p is None else to_node(net, p)
    else:
        s, (m,) = requant.choose([requant.Channel(lo, hi, m0, shift, 0, *INT32)])
        p = const_mul(net, x, m)
        y = net.round_shift(net.const(0) if p is None else to_node(net, p), s)
    if zp:
        y = to_node(net, net.add((y, 0, 1), (net.const(zp), 0, 1)))
    return net.clamp(y, qmin, qmax)


def qadd(net: Netlist, y: int, r: int, attrs: dict, y_side: int) -> int:
    """etch.QAdd (TFLite's integer add) of the lane's code y and the residual code r:
        ra = requantize((a - a_zero) << L, a_m0, a_shift, 0, INT32)  (same for b)
        out = requantize(ra + rb, m0, shift, zero_point, qmin, qmax)
    where (a, b) = (y, r) or (r, y); (x << L) * m / 2^s == x * m / 2^(s - L) exactly."""
    left = int(attrs.get("left_shift", 20))
    sides = {"a": y if y_side == 0 else r, "b": r if y_side == 0 else y}
    parts = []
    for p, v in sides.items():
        x = to_node(net, net.add((v, 0, 1), (net.const(-int(attrs[f"{p}_zero"])), 0, 1)))
        parts.append(rescale(net, x, int(attrs[f"{p}_m0"]), int(attrs[f"{p}_shift"]) - left,
                             0, *INT32))
    total = to_node(net, net.add((parts[0], 0, 1), (parts[1], 0, 1)))
    return rescale(net, total, int(attrs["m0"]), int(attrs["shift"]),
                   int(attrs.get("zero_point", 0)), int(attrs["qmin"]), int(attrs["qmax"]))
