"""Exact evaluation of a netlist on a batch of inputs: the functional model of the design.

Every node is computed in exact integer arithmetic (numpy int64, vectorised over the batch)
and checked against its recorded range, so a wrong range (hence a wrong wire width) is
caught here before any simulation. Registers pass values through (the model is untimed);
HORNER accumulators are timed and belong to the simulation. Bit-vector nodes (bit-planes,
POPCOUNT masks) are boolean arrays [batch, bits].
"""

from __future__ import annotations

import numpy as np

from backends.verilog.hardwired.netlist import K, Netlist, Term, round_half_away
from compiler.errors import EtchError


def evaluate(net: Netlist, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs {port: int64 [batch, count]} for inputs {port: int [batch, count]}."""
    batch = next(iter(inputs.values())).shape[0] if inputs else 1
    vals: list[np.ndarray | None] = [None] * len(net)
    for n in range(len(net)):
        v = _node(net, n, vals, inputs, batch)
        if n not in net.vec_width and (v.min() < net.lo[n] or v.max() > net.hi[n]):
            raise EtchError(f"internal: netlist {net.name}: node {n} ({K(net.kind[n]).name}) "
                            f"reaches [{v.min()}, {v.max()}] outside [{net.lo[n]}, {net.hi[n]}]")
        vals[n] = v
    out = {}
    for name, terms in net.out_nodes.items():
        cols = [np.zeros(batch, np.int64) if t is None else _term(vals, t) for t in terms]
        out[name] = np.stack(cols, axis=1) if cols else np.zeros((batch, 0), np.int64)
    return out


def _term(vals: list, t: Term) -> np.ndarray:
    n, s, g = t
    return g * (vals[n] << s)


def _bits(value: int, width: int, batch: int) -> np.ndarray:
    row = np.array([(value >> i) & 1 for i in range(width)], dtype=bool)
    return np.broadcast_to(row, (batch, width))


def _node(net: Netlist, n: int, vals: list, inputs: dict, batch: int) -> np.ndarray:
    k = net.kind[n]
    if k == K.IN:
        port, lsb, _width, _ = net.extra[n]
        x = np.asarray(inputs[port], dtype=np.int64)
        if n in net.vec_width:
            return (x & 1).astype(bool)
        return x[:, lsb // net.inputs[port].width]
    if k == K.CONST:
        if n in net.vec_width:
            return _bits(net.extra[n][0], net.vec_width[n], batch)
        return np.full(batch, net.value(n), np.int64)
    if k == K.ADD:
        sa = -1 if net.neg[n] & 1 else 1
        sb = -1 if net.neg[n] & 2 else 1
        return _term(vals, (net.a[n], net.sa[n], sa)) + _term(vals, (net.b[n], net.sb[n], sb))
    if k == K.MUX:
        return _mux(net, n, vals, batch)
    if k == K.REG:
        return vals[net.a[n]]
    if k == K.ROUND:
        return np.vectorize(lambda v: round_half_away(int(v), net.sa[n]), otypes=[np.int64])(
            vals[net.a[n]])
    if k == K.CLAMP:
        lo, hi = net.extra[n]
        return np.clip(vals[net.a[n]], lo, hi)
    if k == K.TABLE:
        entries, base = net.extra[n]
        return np.asarray(entries, np.int64)[vals[net.a[n]] - base]
    if k == K.POPCOUNT:
        return (vals[net.a[n]] & vals[net.b[n]]).sum(axis=1).astype(np.int64)
    if k == K.MAX:
        return np.maximum(vals[net.a[n]], vals[net.b[n]])
    if k == K.EQ:
        return (vals[net.a[n]] == net.extra[n][0]).astype(np.int64)
    raise EtchError(f"internal: netlist {net.name}: node {n} ({K(k).name}) is timed; "
                    "simulate the design instead")


def _mux(net: Netlist, n: int, vals: list, batch: int) -> np.ndarray:
    sel = vals[net.a[n]]
    opts = net.extra[n][0]
    vec = n in net.vec_width
    out = np.zeros((batch, net.vec_width[n]), bool) if vec else np.zeros(batch, np.int64)
    for v, opt in enumerate(opts):
        if opt is None:
            continue
        pick = sel == v
        out[pick] = (vals[opt[0]] if vec else _term(vals, opt))[pick]
    return out
