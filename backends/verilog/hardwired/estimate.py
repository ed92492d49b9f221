"""What a generated netlist costs: adders, adder bits, mux bits, flip-flops, popcount bits,
and the generic-cell estimate (`passes.hardwired_cost.CELLS`), from the printed widths."""

from __future__ import annotations

from backends.verilog.hardwired.netlist import K, Netlist
from backends.verilog.hardwired.printer import widths
from passes.hardwired_cost import Cost

ADDER_LIKE = (K.ADD, K.ROUND, K.HORNER)


def netlist_cost(net: Netlist) -> Cost:
    """Cost of the live nodes of `net` as printed."""
    w = widths(net)
    c = Cost()
    for n, k in enumerate(net.kind):
        if not w[n]:
            continue
        if k in ADDER_LIKE:
            c.adders += 1
            c.adder_bits += w[n]
        if k == K.MAX:
            c.adder_bits += w[n] + 1
            c.mux_bits += w[n]
        if k == K.CLAMP:
            c.adder_bits += 2 * w[net.a[n]]
            c.mux_bits += 2 * w[n]
        if k == K.MUX:
            opts = sum(1 for o in net.extra[n][0] if o is not None)
            c.mux_bits += max(opts - 1, 0) * w[n]
        if k in (K.REG, K.HORNER):
            c.ffs += w[n]
        if k == K.POPCOUNT:
            c.popcount_bits += net.hi[n]
        if k == K.TABLE:
            c.mux_bits += 4 * len(range(net.lo[net.a[n]], net.hi[net.a[n]] + 1)) // 8
    return c


def adders_per_weight(net: Netlist, nonzero: int) -> float:
    """Adders (and adder-like nodes) per nonzero weight."""
    return netlist_cost(net).adders / max(nonzero, 1)
