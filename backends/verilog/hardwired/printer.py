"""The one Verilog printer of hardwired netlists.

Widths: a node's wire holds its exact range (two's complement when the range has negative
values, unsigned otherwise), narrowed to the bits its readers use: an adder computes modulo
2^W, so an operand shifted by s into a W-bit sum only matters in its low W - s bits
(`widths`). Every operand is written as an explicit slice, sign/zero extension and
zero fill to exactly its reader's width, so the output is clean under `verilator -Wall`
and means the same to Verilator and Yosys. Outputs are written in node order: the same
netlist gives the same bytes.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from backends.verilog.hardwired.netlist import K, Netlist, Term, bits_for

INDENT = "    "


def full_width(net: Netlist, n: int) -> int:
    """Bits of node n's exact value (vector nodes: their bit count)."""
    return net.vec_width.get(n) or bits_for(net.lo[n], net.hi[n])


def widths(net: Netlist) -> array:
    """The printed width of every node: its exact width, narrowed to what readers use;
    0 for dead nodes (no reader, not an output)."""
    n_nodes = len(net)
    need = array("q", [0]) * n_nodes
    full = array("q", (full_width(net, n) for n in range(n_nodes)))
    for terms in net.out_nodes.values():
        for t in terms:
            if t is not None:
                need[t[0]] = full[t[0]]
    out = array("q", [0]) * n_nodes
    for n in range(n_nodes - 1, -1, -1):
        if need[n] <= 0:
            continue
        w = out[n] = min(full[n], need[n])
        for o, demand in _demands(net, n, w, full):
            need[o] = max(need[o], demand)
    return out


def _demands(net: Netlist, n: int, w: int, full: array) -> list[tuple[int, int]]:
    k = net.kind[n]
    if k == K.ADD:
        return [(net.a[n], w - net.sa[n]), (net.b[n], w - net.sb[n])]
    if k == K.MUX:
        opts = net.extra[n][0]
        return [(net.a[n], full[net.a[n]])] + [(o[0], w - o[1]) for o in opts if o is not None]
    if k == K.REG:
        return [(net.a[n], w)]
    if k == K.HORNER:
        first, negate = net.extra[n]
        return [(net.a[n], w), (first, 1), (negate, 1)]
    return [(o, full[o]) for o in net.operands(n)]


@dataclass(frozen=True)
class Src:
    """Where an operand's bits are: signal `name`, bits [off, off + w), declared `decl` wide."""

    name: str
    off: int
    w: int
    signed: bool
    decl: int


def _slice(s: Src, n: int, lo: int = 0) -> str:
    a = s.off + lo
    if a == 0 and n == s.decl:
        return s.name
    return f"{s.name}[{a}]" if n == 1 else f"{s.name}[{a + n - 1}:{a}]"


def lit(v: int, w: int) -> str:
    """A `w`-bit literal of v modulo 2^w."""
    return f"{w}'d{v & ((1 << w) - 1)}"


def fit(s: Src, w: int, shift: int = 0) -> str | None:
    """(s << shift) modulo 2^w as an expression exactly w bits wide; None when it is 0."""
    body = w - shift
    if body <= 0:
        return None
    if s.w >= body:
        bits = _slice(s, body)
    else:
        msb = _slice(s, 1, s.w - 1) if s.signed else "1'b0"
        bits = f"{{{{{body - s.w}{{{msb}}}}}, {_slice(s, s.w)}}}"
    return f"{{{bits}, {shift}'d0}}" if shift else bits


class Printer:
    """Renders one netlist as one Verilog module."""

    def __init__(self, net: Netlist, module: str, header: str) -> None:
        self.net, self.module, self.header = net, module, header
        self.w = widths(net)
        self.decls: list[str] = []
        self.body: list[str] = []
        self.seq: list[str] = []
        self.seq_rst: list[str] = []
        self.funcs: dict[tuple, str] = {}

    # -- operands -------------------------------------------------------------------------
    def src(self, n: int) -> Src:
        net = self.net
        if net.kind[n] == K.IN:
            port, lsb, width, signed = net.extra[n]
            decl = net.inputs[port].bits
            return Src(port, lsb, min(width, self.w[n]), signed, decl)
        return Src(f"n{n}", 0, self.w[n], net.lo[n] < 0 and self.w[n] >= full_width(net, n),
                   self.w[n])

    def term(self, t: Term, w: int) -> tuple[str | None, bool]:
        """(expression of |t| in w bits, negative?) for a term."""
        n, s, g = t
        if self.net.kind[n] == K.CONST:
            v = (self.net.value(n) << s) & ((1 << w) - 1)
            return (lit(v, w) if v else None), g < 0
        return fit(self.src(n), w, s), g < 0

    def expr(self, n: int) -> str:
        """A node's value as an expression of its own width."""
        if n in self.net.vec_width and self.net.kind[n] == K.CONST:
            return f"{self.w[n]}'h{self.net.extra[n][0]:x}"
        if self.net.kind[n] == K.CONST:
            return lit(self.net.value(n), self.w[n])
        return _slice(self.src(n), self.src(n).w)

    # -- nodes --------------------------------------------------------------------------
    def emit(self, n: int) -> None:
        k, w = self.net.kind[n], self.w[n]
        if w == 0 or k in (K.IN, K.CONST):
            return
        getattr(self, f"_{K(k).name.lower()}")(n, w)

    def _wire(self, n: int, w: int, rhs: str) -> None:
        self.decls.append(f"wire [{w - 1}:0] n{n};")
        self.body.append(f"assign n{n} = {rhs};")

    def _add(self, n: int, w: int) -> None:
        net = self.net
        ea, _ = self.term((net.a[n], net.sa[n], 1), w)
        eb, _ = self.term((net.b[n], net.sb[n], 1), w)
        sub = bool(net.neg[n] & 2)
        if ea is None and eb is None:
            rhs = lit(0, w)
        elif eb is None:
            rhs = ea
        elif ea is None:
            rhs = f"{lit(0, w)} - {eb}" if sub else eb
        else:
            rhs = f"{ea} {'-' if sub else '+'} {eb}"
        self._wire(n, w, rhs)

    def _mux(self, n: int, w: int) -> None:
        net = self.net
        sel = self.expr(net.a[n])
        sw = self.w[net.a[n]]
        ex = net.extra[n]
        self.decls.append(f"reg [{w - 1}:0] n{n};")
        lines = ["always @* begin", f"{INDENT}case ({sel})"]
        for v, opt in enumerate(ex[0]):
            if opt is None or v >= (1 << sw):
                continue
            if n in net.vec_width:  # a vector of constants
                rhs = self.expr(opt[0])
            else:
                e, negative = self.term(opt, w)
                rhs = lit(0, w) if e is None else (f"-{e}" if negative else e)
            lines.append(f"{INDENT * 2}{lit(v, sw)}: n{n} = {rhs};")
        lines += [f"{INDENT * 2}default: n{n} = {lit(0, w)};", f"{INDENT}endcase", "end"]
        self.body.extend(lines)

    def _reg(self, n: int, w: int) -> None:
        self.decls.append(f"reg [{w - 1}:0] n{n};")
        rhs = self.term((self.net.a[n], 0, 1), w)[0] or lit(0, w)
        if self.net.neg[n]:
            self.seq_rst.append(f"n{n} <= {rhs};")
        else:
            self.seq.append(f"n{n} <= {rhs};")

    def _horner(self, n: int, w: int) -> None:
        first, negate = self.net.extra[n]
        d = self.term((self.net.a[n], 0, 1), w)[0] or lit(0, w)
        acc = f"{{n{n}[{w - 2}:0], 1'b0}}" if w > 1 else "1'b0"
        start = self._flag(first, lit(0, w), acc)
        step = self._flag(negate, f"-{d}", d)
        self.decls.append(f"reg [{w - 1}:0] n{n};")
        self.seq.append(f"n{n} <= {start} + {step};")

    def _flag(self, f: int, yes: str, no: str) -> str:
        if self.net.kind[f] == K.CONST:
            return yes if self.net.value(f) else no
        return f"({self.expr(f)} ? {yes} : {no})"

    def _round(self, n: int, w: int) -> None:
        net = self.net
        a, sh = net.a[n], net.sa[n]
        s = self.src(a)
        wt = max(s.w, sh) + 2
        rhs = f"{fit(s, wt)} + {lit(1 << (sh - 1), wt)}"
        if net.lo[a] < 0:
            rhs += f" - {{{wt - 1}'d0, {_slice(s, 1, s.w - 1)}}}"
        self.decls += ["/* verilator lint_off UNUSEDSIGNAL */",  # the fraction bits drop out
                       f"wire [{wt - 1}:0] n{n}_r = {rhs};",
                       "/* verilator lint_on UNUSEDSIGNAL */"]
        self._wire(n, w, fit(Src(f"n{n}_r", sh, wt - sh, True, wt), w))

    def _clamp(self, n: int, w: int) -> None:
        net = self.net
        a = net.a[n]
        lo, hi = net.extra[n]
        s = self.src(a)
        wc = max(s.w, bits_for(min(lo, 0), max(hi, 0))) + 1
        self.decls.append(f"wire signed [{wc - 1}:0] n{n}_c = $signed({fit(s, wc)});")
        rhs = fit(s, w)
        if net.hi[a] > hi:
            rhs = f"(n{n}_c > $signed({lit(hi, wc)})) ? {lit(hi, w)} : {rhs}"
        if net.lo[a] < lo:
            rhs = f"(n{n}_c < $signed({lit(lo, wc)})) ? {lit(lo, w)} : {rhs}"
        self._wire(n, w, rhs)

    def _table(self, n: int, w: int) -> None:
        net = self.net
        a = net.a[n]
        entries, base = net.extra[n]
        wi = self.w[a]
        key = (entries, base, net.lo[a], net.hi[a], wi, w)
        name = self.funcs.get(key)
        if name is None:
            name = self.funcs[key] = f"table{len(self.funcs)}"
            self._function(name, key)
        self._wire(n, w, f"{name}({self.expr(a)})")

    def _function(self, name: str, key: tuple) -> None:
        entries, base, lo, hi, wi, w = key
        lines = [f"function automatic [{w - 1}:0] {name}(input [{wi - 1}:0] i);",
                 f"{INDENT}case (i)"]
        for v in range(lo, hi + 1):
            lines.append(f"{INDENT * 2}{lit(v, wi)}: {name} = {lit(entries[v - base], w)};")
        lines += [f"{INDENT * 2}default: {name} = {lit(0, w)};", f"{INDENT}endcase",
                  "endfunction"]
        self.decls.extend(lines)

    def _popcount(self, n: int, w: int) -> None:
        vec, mask = self.expr(self.net.a[n]), self.expr(self.net.b[n])
        self._wire(n, w, f"{w}'($countones({vec} & {mask}))")

    def _eq(self, n: int, w: int) -> None:
        a = self.net.a[n]
        wa = self.w[a]
        self._wire(n, w, f"{self.expr(a)} == {lit(self.net.extra[n][0], wa)}")

    # -- module -------------------------------------------------------------------------
    def outputs(self) -> None:
        for name, port in self.net.outputs.items():
            for i, t in enumerate(self.net.out_nodes[name]):
                lsb = i * port.width
                dst = f"{name}[{lsb + port.width - 1}:{lsb}]" if port.bits > 1 else name
                e, negative = (None, False) if t is None else self.term(t, port.width)
                rhs = lit(0, port.width) if e is None else (f"-{e}" if negative else e)
                self.body.append(f"assign {dst} = {rhs};")

    def ports(self) -> list[str]:
        has_seq = any(k in (K.REG, K.HORNER) and self.w[i] for i, k in enumerate(self.net.kind))
        has_rst = bool(self.seq_rst)
        out = []
        if has_seq:
            out += ["input  wire clk", "input  wire en"]
        if has_rst:
            out.append("input  wire rst")
        used = self._used_inputs()
        for p in self.net.inputs.values():
            decl = f"input  wire [{p.bits - 1}:0] {p.name}"
            if not used[p.name]:  # zero weights leave some input bits unread
                decl = f"/* verilator lint_off UNUSEDSIGNAL */ {decl} /* verilator lint_on " \
                       f"UNUSEDSIGNAL */"
            out.append(decl)
        for p in self.net.outputs.values():
            out.append(f"output wire [{p.bits - 1}:0] {p.name}")
        return out

    def _used_inputs(self) -> dict[str, bool]:
        seen: dict[str, set[int]] = {p: set() for p in self.net.inputs}
        for n, k in enumerate(self.net.kind):
            if k == K.IN and self.w[n]:
                port, lsb, width, _ = self.net.extra[n]
                used = min(width, self.w[n])
                seen[port].update(range(lsb, lsb + used))
        return {p: len(seen[p]) == self.net.inputs[p].bits for p in seen}

    def render(self) -> str:
        for n in range(len(self.net)):
            self.emit(n)
        self.outputs()
        ports = self.ports()
        lines = [self.header.rstrip(), "`default_nettype none", f"module {self.module} ("]
        lines += [f"{INDENT}{p}{',' if i + 1 < len(ports) else ''}" for i, p in enumerate(ports)]
        lines.append(");")
        lines += [INDENT + d for d in self.decls]
        lines += [INDENT + b for b in self.body]
        if self.seq:
            lines += [f"{INDENT}always @(posedge clk) begin", f"{INDENT * 2}if (en) begin"]
            lines += [INDENT * 3 + s for s in self.seq]
            lines += [f"{INDENT * 2}end", f"{INDENT}end"]
        if self.seq_rst:
            lines += [f"{INDENT}always @(posedge clk) begin", f"{INDENT * 2}if (rst) begin"]
            lines += [INDENT * 3 + s.split(" <= ")[0] + " <= 1'b0;" for s in self.seq_rst]
            lines += [f"{INDENT * 2}end else if (en) begin"]
            lines += [INDENT * 3 + s for s in self.seq_rst]
            lines += [f"{INDENT * 2}end", f"{INDENT}end"]
        lines += ["endmodule", "`default_nettype wire", ""]
        return "\n".join(lines)


def render(net: Netlist, module: str, header: str) -> str:
    """The Verilog module `module` computing `net`, after `header` (comment lines)."""
    return Printer(net, module, header).render()
