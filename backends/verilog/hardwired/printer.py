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

import re
from array import array
from collections.abc import Iterable, Sequence
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
    """(s << shift) modulo 2^w as an expression exactly w bits wide; None when it is 0.
    Sign and zero extension are size casts (`W'($signed(a))`, `W'(a)`): one extend
    operation to Verilator (a replicated sign bit, `{{k{a[m]}}, a}`, is a concatenation
    that its C++ spells out bit by bit)."""
    body = w - shift
    if body <= 0:
        return None
    if s.w >= body:
        bits = _slice(s, body)
    elif s.signed:
        bits = f"{body}'($signed({_slice(s, s.w)}))"
    else:
        bits = f"{body}'({_slice(s, s.w)})"
    return f"{{{bits}, {shift}'d0}}" if shift else bits


def neg(e: str) -> str:
    """-e; the operand parenthesised unless it is a name, slice or concatenation (a size
    cast `9'(a)` after a minus would read as the literal -9)."""
    return f"-{e}" if re.fullmatch(r"[A-Za-z_]\w*(\[[\d:]+\])?|\{.*\}", e) else f"-({e})"


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
                rhs = lit(0, w) if e is None else (neg(e) if negative else e)
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
        step = self._flag(negate, neg(d), d)
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

    def _max(self, n: int, w: int) -> None:
        sa, sb = self.src(self.net.a[n]), self.src(self.net.b[n])
        wc = max(sa.w, sb.w) + 1
        self.decls.append(f"wire signed [{wc - 1}:0] n{n}_a = $signed({fit(sa, wc)});")
        self.decls.append(f"wire signed [{wc - 1}:0] n{n}_b = $signed({fit(sb, wc)});")
        self._wire(n, w, f"(n{n}_a > n{n}_b) ? {fit(sa, w)} : {fit(sb, w)}")

    def _eq(self, n: int, w: int) -> None:
        a = self.net.a[n]
        wa = self.w[a]
        self._wire(n, w, f"{self.expr(a)} == {lit(self.net.extra[n][0], wa)}")

    # -- module -------------------------------------------------------------------------
    def outputs(self) -> list[str]:
        out = []
        for name, port in self.net.outputs.items():
            for i, t in enumerate(self.net.out_nodes[name]):
                lsb = i * port.width
                dst = f"{name}[{lsb + port.width - 1}:{lsb}]" if port.bits > 1 else name
                e, negative = (None, False) if t is None else self.term(t, port.width)
                rhs = lit(0, port.width) if e is None else (neg(e) if negative else e)
                out.append(f"assign {dst} = {rhs};")
        return out

    def control_ports(self, nodes: Iterable[int]) -> list[str]:
        seq = [n for n in nodes if self.net.kind[n] in (K.REG, K.HORNER) and self.w[n]]
        out = ["input  wire clk", "input  wire en"] if seq else []
        if any(self.net.kind[n] == K.REG and self.net.neg[n] for n in seq):
            out.append("input  wire rst")
        return out

    def input_ports(self, nodes: Iterable[int]) -> list[str]:
        """The input ports the nodes read; those not read in full marked for lint."""
        seen: dict[str, set[int]] = {}
        reads = {o for n in nodes if self.w[n] for o in self.net.operands(n)}
        if self.net.out_nodes and nodes == range(len(self.net)):
            reads |= {t[0] for ts in self.net.out_nodes.values() for t in ts if t is not None}
        for n in sorted(reads):
            if self.net.kind[n] == K.IN and self.w[n]:
                port, lsb, width, _ = self.net.extra[n]
                seen.setdefault(port, set()).update(range(lsb, lsb + min(width, self.w[n])))
        out = []
        for p in self.net.inputs.values():
            if p.name not in seen:
                continue
            decl = f"input  wire [{p.bits - 1}:0] {p.name}"
            # zero weights leave some input bits unread; a part of a split datapath may be
            # handed a control input (v, ph, bt) that only a folded-away node referred to
            if len(seen[p.name]) != p.bits or p.name in CONTROL_INPUTS:
                decl = _lint_off(decl)
            out.append(decl)
        return out

    def emit_all(self, nodes: Iterable[int]) -> None:
        for n in nodes:
            self.emit(n)

    def text(self, module: str, ports: list[str], hier: bool = False) -> str:
        lines = [self.header.rstrip(), "`default_nettype none", f"module {module} ("]
        lines += [f"{INDENT}{p}{',' if i + 1 < len(ports) else ''}" for i, p in enumerate(ports)]
        lines.append(");")
        if hier:
            lines.append(f"{INDENT}/*verilator hier_block*/")
        lines += [INDENT + d for d in self.decls]
        lines += [INDENT + b for b in self.body]
        lines += self._always(self.seq, None) + self._always(self.seq_rst, "rst")
        lines += ["endmodule", "`default_nettype wire", ""]
        return "\n".join(lines)

    @staticmethod
    def _always(stmts: list[str], rst: str | None) -> list[str]:
        if not stmts:
            return []
        lines = [f"{INDENT}always @(posedge clk) begin"]
        if rst:
            lines += [f"{INDENT * 2}if ({rst}) begin"]
            lines += [INDENT * 3 + s.split(" <= ")[0] + " <= 1'b0;" for s in stmts]
            lines += [f"{INDENT * 2}end else if (en) begin"]
        else:
            lines += [f"{INDENT * 2}if (en) begin"]
        lines += [INDENT * 3 + s for s in stmts]
        return lines + [f"{INDENT * 2}end", f"{INDENT}end"]


CONTROL_INPUTS = frozenset({"v", "ph", "bt"})


def _lint_off(decl: str) -> str:
    return f"/* verilator lint_off UNUSEDSIGNAL */ {decl} /* verilator lint_on UNUSEDSIGNAL */"


def render(net: Netlist, module: str, header: str) -> str:
    """The Verilog module `module` computing `net`, after `header` (comment lines)."""
    p = Printer(net, module, header)
    everything = range(len(net))
    p.emit_all(everything)
    p.body += p.outputs()
    ports = p.control_ports(everything) + p.input_ports(everything)
    ports += [f"output wire [{q.bits - 1}:0] {q.name}" for q in net.outputs.values()]
    return p.text(module, ports)


def render_parts(net: Netlist, module: str, header: str, parts: Sequence[range],
                 hier: bool = False) -> dict[str, str]:
    """`net` as one module per part (contiguous node ranges; Verilator hier_blocks with
    `hier`) plus `module` wiring them: values read across parts become ports."""
    w = widths(net)
    parts = [r for r in parts if any(w[n] and net.kind[n] not in (K.IN, K.CONST) for n in r)]
    part_of = array("q", [0]) * len(net)
    for k, r in enumerate(parts):
        for n in r:
            part_of[n] = k
    exports: set[int] = set()
    imports: list[set[int]] = [set() for _ in parts]
    for k, r in enumerate(parts):
        for n in r:
            if not w[n]:
                continue
            for o in net.operands(n):
                if net.kind[o] not in (K.IN, K.CONST) and part_of[o] != k:
                    exports.add(o)
                    imports[part_of[n]].add(o)
    for terms in net.out_nodes.values():
        exports.update(t[0] for t in terms if t is not None and net.kind[t[0]] not in
                       (K.IN, K.CONST))
    texts, wrapper = {}, Printer(net, module, header)
    wrapper.w = w
    instances = []
    for k, r in enumerate(parts):
        name = f"{module}_p{k}"
        p = Printer(net, name, header)
        p.w = w
        p.emit_all(r)
        mine = sorted(e for e in exports if part_of[e] == k and w[e])
        p.decls = [d for d in p.decls if _declared(d) not in mine]
        ports = p.control_ports(r) + p.input_ports(r)
        ports += [_lint_off(f"input  wire [{w[i] - 1}:0] n{i}") for i in sorted(imports[k])]
        ports += [f"output {_kind(net, e)} [{w[e] - 1}:0] n{e}" for e in mine]
        texts[name] = p.text(name, ports, hier=hier)
        conns = [re.sub(r"/\*.*?\*/", "", q).split()[-1] for q in ports]
        instances.append(f"{name} u_p{k} ({', '.join(f'.{c}({c})' for c in conns)});")
    everything = range(len(net))
    wrapper.decls = [f"wire [{w[e] - 1}:0] n{e};" for e in sorted(exports) if w[e]]
    wrapper.body = instances + wrapper.outputs()
    ports = wrapper.control_ports(everything) + wrapper.input_ports(everything)
    ports += [f"output wire [{q.bits - 1}:0] {q.name}" for q in net.outputs.values()]
    texts[module] = wrapper.text(module, ports)
    return texts


def one_file(texts: dict[str, str], first: str) -> str:
    """Modules in one file: `first` (named like the file), then the rest, whose names
    cannot match the file's (lint pragma)."""
    rest = [t for name, t in texts.items() if name != first]
    if not rest:
        return texts[first]
    return "\n".join([texts[first], "/* verilator lint_off DECLFILENAME */", *rest,
                      "/* verilator lint_on DECLFILENAME */", ""])


def _declared(decl: str) -> int | None:
    """The node a `wire/reg [..] nX;` declaration declares, else None."""
    parts = decl.rstrip(";").split()
    if len(parts) == 3 and parts[0] in ("wire", "reg") and parts[2][1:].isdigit():
        return int(parts[2][1:])
    return None


def _kind(net: Netlist, n: int) -> str:
    return "reg " if net.kind[n] in (K.REG, K.HORNER, K.MUX) else "wire"
