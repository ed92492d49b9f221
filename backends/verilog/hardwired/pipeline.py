"""Pipelining: a register stage every N logic levels (`--pipeline N`), by rebuilding the
netlist with REG chains on the edges that cross stage boundaries.

Each node gets a stage and a level within it, in topological order: a node's level is the
deepest operand level in its stage plus its own depth (`DEPTH`: an adder is one level, a
popcount of m bits log2(m + 1)); when that passes N, the node starts the next stage and
its operands are registered. A HORNER accumulator is itself a register: its operands meet
in one stage, its value is available in the next. N = 0 means no registers beyond those
accumulators. Every output is delayed to the last stage, so all outputs of one step leave
together; the registers of the `reset` ports (the step-valid bit) clear on reset.
Constants are never registered.
"""

from __future__ import annotations

from array import array

from backends.verilog.hardwired.netlist import SEQUENTIAL, K, Netlist

DEPTH = {K.IN: 0, K.CONST: 0, K.EQ: 0, K.ADD: 1, K.MUX: 1, K.ROUND: 1, K.CLAMP: 1,
         K.TABLE: 1, K.REG: 0, K.MAX: 1}


def _depth(net: Netlist, n: int) -> int:
    k = net.kind[n]
    if k == K.POPCOUNT:
        return max(1, (net.hi[n]).bit_length())
    return DEPTH.get(K(k), 1)


def stages(net: Netlist, every: int) -> tuple[array, array]:
    """(stage in which each node computes, stage from which its value is available)."""
    size = len(net)
    stage, avail, level = array("q", [0]) * size, array("q", [0]) * size, array("q", [0]) * size
    for n in range(size):
        k = net.kind[n]
        ops = [o for o in net.operands(n) if net.kind[o] != K.CONST]
        s = max((avail[o] for o in ops), default=0)
        if k in SEQUENTIAL:  # a register: its value is there one stage later
            stage[n], avail[n] = s, s + 1
            continue
        lvl = max((level[o] for o in ops if avail[o] == s and net.kind[o] not in SEQUENTIAL),
                  default=0) + _depth(net, n)
        if every and lvl > every and lvl > _depth(net, n):
            s, lvl = s + 1, _depth(net, n)
        stage[n], avail[n], level[n] = s, s, lvl
    return stage, avail


def insert(net: Netlist, every: int, reset: frozenset[str] = frozenset({"v"})) -> Netlist:
    """A copy of `net` with pipeline registers; outputs aligned to the last stage."""
    stage, avail = stages(net, every)
    last = max((avail[t[0]] for ts in net.out_nodes.values() for t in ts
                if t is not None and net.kind[t[0]] != K.CONST), default=0)
    out = Netlist(net.name, inputs=dict(net.inputs))
    new = array("q", [0]) * len(net)
    delayed: dict[tuple[int, int], int] = {}

    def at(o: int, s: int) -> int:
        """Old node o's value as seen in stage s of the new netlist."""
        if net.kind[o] == K.CONST:
            return new[o]
        d = s - avail[o]
        node = new[o]
        for i in range(1, d + 1):
            key = (o, i)
            if key not in delayed:
                delayed[key] = out.reg(node, rst=_resets(net, o, reset))
            node = delayed[key]
        return node

    for n in range(len(net)):
        new[n] = _clone(net, n, out, lambda o, s=stage[n]: at(o, s))
    out.marks = [new[m] for m in net.marks if m < len(net)]
    for name, terms in net.out_nodes.items():
        p = net.outputs[name]
        out.add_output(name, p.width, [None if t is None else (at(t[0], last), t[1], t[2])
                                       for t in terms], p.signed)
    return out


def _resets(net: Netlist, n: int, reset: frozenset[str]) -> bool:
    return net.kind[n] == K.IN and net.extra[n][0] in reset


def latency(net: Netlist) -> int:
    """Register stages between inputs and outputs of a (pipelined) netlist."""
    _, avail = stages(net, 0)
    return max((avail[t[0]] for ts in net.out_nodes.values() for t in ts
                if t is not None and net.kind[t[0]] != K.CONST), default=0)


def _clone(src: Netlist, n: int, dst: Netlist, op) -> int:
    """Copy node n of `src` into `dst`, its operands mapped by `op`."""
    k = src.kind[n]
    if k == K.CONST:
        if n in src.vec_width:
            return dst.vector_const(src.extra[n][0], src.vec_width[n])
        return dst.const(src.value(n))
    a = op(src.a[n]) if src.a[n] >= 0 else -1
    b = op(src.b[n]) if src.b[n] >= 0 else -1
    ex = src.extra.get(n)
    if k == K.MUX:  # operands first: node ids stay a topological order
        ex = (tuple(None if o is None else (op(o[0]), o[1], o[2]) for o in ex[0]),)
    elif k == K.HORNER:
        ex = (op(ex[0]), op(ex[1]))
    m = dst._new(K(k), src.lo[n], src.hi[n], a, b, src.sa[n], src.sb[n], src.neg[n])
    if ex is not None:
        dst.extra[m] = ex
    if n in src.vec_width:
        dst.vec_width[m] = src.vec_width[n]
    return m
