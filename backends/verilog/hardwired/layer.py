"""One hardwired layer: a constant matrix, its output unit, folding, bit-serial inputs and
pipelining, as one datapath netlist.

The datapath computes one *step* per clock. Ports (all driven by `rtl/hw_ctrl.v`):
- x   the held input vector (K codes of 8 bits), or with bit-serial inputs one bit-plane
      (bit i of every code, MSB first: K bits);
- v   the step is valid; ph the phase (fold), bt the bit (serial);
- y   the lanes' output codes (8 bits each); v_o, ph_o, bt_o: v, ph, bt delayed with them.
The zero point of the input is folded into the bias (sum_k (x_k - z) w_k = sum_k x_k w_k -
z * sum_k w_k), so inputs enter as raw codes. With bit-serial inputs, the accumulator of a
lane is a HORNER node: r = 2 r + P_b over the bits, the MSB step negated for int8 codes (its
weight is -2^7), and the output unit reads r after the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backends.verilog.hardwired import cmvm, fold, grouped, outunit, pipeline, requant
from backends.verilog.hardwired.netlist import Netlist, Term, term_range
from compiler.errors import EtchError

CODE_BITS = 8
PART_NODES = 25_000  # netlists are split into modules of about this many nodes


@dataclass(frozen=True)
class LayerSpec:
    """What a hardwired layer computes (per output n, over input codes x):
        y[n] = table(clamp(rha((sum_k x[k] w[k, n] + bias[n]) * M0[n] / 2^shift[n]) + zp,
                            qmin, qmax))
    and how (neuron style, fold, bit-serial inputs, pipeline)."""

    name: str
    w: np.ndarray                 # [K, N] integer weights (codes minus weight zero points)
    bias: np.ndarray              # [N] int: bias - x_zero * sum_k w[k, n]
    m0: np.ndarray                # [N] requantisation multipliers
    shift: np.ndarray             # [N] requantisation shifts
    zp: int
    qmin: int
    qmax: int
    in_signed: bool = True        # input codes int8 (else uint8)
    out_signed: bool = True
    table: tuple[int, ...] | None = None   # 256 entries indexed by code - table_base
    table_base: int = -128
    neuron: str = "csd"           # csd | grouped
    fold: int = 1
    serial: bool = False
    pipeline: int = 0
    pool: tuple[tuple[int, ...], ...] | None = None  # max over groups of outputs
    residual: dict | None = None  # etch.QAdd attrs, "y_side", "offset" (input index)
    bypass: tuple[int, ...] = ()  # input indices passed through after the outputs
    source: str = ""              # the IR node(s) it comes from (for file headers)
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def k(self) -> int:
        return int(self.w.shape[0])

    @property
    def n(self) -> int:
        return int(self.w.shape[1])

    @property
    def n_out(self) -> int:
        """Output codes: pooled (or plain) outputs, then the bypassed inputs."""
        return (len(self.pool) if self.pool else self.n) + len(self.bypass)

    @property
    def lanes(self) -> int:
        """Output codes per phase (the output beat)."""
        return fold.lanes_for(self.n_out, self.fold)

    @property
    def neuron_lanes(self) -> int:
        """Neurons computed per phase."""
        return fold.lanes_for(self.n, self.fold)

    @property
    def bits(self) -> int:
        return CODE_BITS if self.serial else 1

    @property
    def steps(self) -> int:
        """Clock cycles per inference."""
        return self.fold * self.bits

    def input_range(self) -> tuple[int, int]:
        return (-128, 127) if self.in_signed else (0, 255)

    def acc_ranges(self) -> np.ndarray:
        """[N, 2] exact range of sum_k x[k] w[k, n] over the input codes."""
        lo, hi = self.input_range()
        pos = np.where(self.w > 0, self.w, 0).sum(axis=0)
        neg = np.where(self.w < 0, self.w, 0).sum(axis=0)
        return np.stack([lo * pos + hi * neg, hi * pos + lo * neg], axis=1)


def check(spec: LayerSpec) -> None:
    if spec.neuron not in ("csd", "grouped"):
        raise EtchError(f"layer {spec.name}: unknown neuron style {spec.neuron!r}")
    if spec.fold < 1 or spec.fold > spec.n:
        raise EtchError(f"layer {spec.name}: --fold {spec.fold} must be 1..{spec.n} (its "
                        f"output neurons)")
    if spec.pipeline < 0:
        raise EtchError(f"--pipeline {spec.pipeline}: must be >= 0")
    if spec.fold > 1 and (spec.pool or spec.residual or spec.bypass):
        raise EtchError(f"layer {spec.name}: pooling, residual adds and bypassed tensors "
                        "need every output at once (fold 1)")


def units(spec: LayerSpec) -> list[outunit.Unit]:
    """Each lane's output-unit constants, phase by phase (exact requantisation constants)."""
    acc = spec.acc_ranges()
    chans = [requant.Channel(int(acc[n, 0] + spec.bias[n]), int(acc[n, 1] + spec.bias[n]),
                             int(spec.m0[n]), int(spec.shift[n]), spec.zp, spec.qmin,
                             spec.qmax) for n in range(spec.n)]
    s, mults = requant.choose(chans)
    out = []
    for lane in range(spec.neuron_lanes):
        ns = [p * spec.neuron_lanes + lane for p in range(spec.fold)]
        out.append(outunit.Unit(
            bias=tuple(int(spec.bias[n]) if n < spec.n else 0 for n in ns),
            mult=tuple(mults[n] if n < spec.n else 0 for n in ns),
            shift=s, zp=spec.zp, qmin=spec.qmin, qmax=spec.qmax, table=spec.table,
            table_base=spec.table_base))
    return out


def datapath(spec: LayerSpec) -> Netlist:
    """The layer's datapath netlist, pipelined."""
    check(spec)
    net = Netlist(f"{spec.name}_dp")
    phase_bits = max(1, (spec.fold - 1).bit_length())
    bit_bits = max(1, (spec.bits - 1).bit_length())
    net.add_input("x", 1 if spec.serial else CODE_BITS, spec.k,
                  spec.in_signed and not spec.serial)
    net.add_input("v", 1, 1, False)
    net.add_input("ph", phase_bits, 1, False)
    net.add_input("bt", bit_bits, 1, False)
    v, ph, bt = (net.field(p, 0, lo=0, hi=hi) for p, hi in
                 (("v", 1), ("ph", spec.fold - 1), ("bt", spec.bits - 1)))
    codes = None
    if spec.serial and (spec.residual or spec.bypass):  # full codes for the pass-throughs
        net.add_input("xh", CODE_BITS, spec.k, spec.in_signed)
    accs = _accumulators(net, spec, ph)
    if spec.serial:
        accs = _serial(net, spec, accs, bt)
    lanes = [outunit.lane(net, acc, unit, ph) for acc, unit in zip(accs, units(spec),
                                                                    strict=True)]
    if spec.pool or spec.residual or spec.bypass:
        codes = "xh" if spec.serial else "x"
        lanes = _after(net, spec, lanes, codes)
    net.add_output("y", CODE_BITS, lanes, spec.out_signed)
    net.add_output("v_o", 1, [(v, 0, 1)], False)
    net.add_output("ph_o", phase_bits, [(ph, 0, 1)], False)
    net.add_output("bt_o", bit_bits, [(bt, 0, 1)], False)
    return pipeline.insert(net, spec.pipeline)


def _after(net: Netlist, spec: LayerSpec, lanes: list[Term], codes: str) -> list[Term]:
    """Max pooling, the residual add, then the bypassed input codes."""
    ys = [t[0] for t in lanes]
    if spec.pool:
        ys = [_max(net, [ys[i] for i in g]) for g in spec.pool]
    if spec.residual:
        r = spec.residual
        ys = [outunit.qadd(net, y, net.field(codes, r["offset"] + j), r, r["y_side"])
              for j, y in enumerate(ys)]
    ys += [net.field(codes, i) for i in spec.bypass]
    return [(y, 0, 1) for y in ys]


def _max(net: Netlist, nodes: list[int]) -> int:
    """max over nodes, as a balanced tree of MAX nodes."""
    while len(nodes) > 1:
        nodes = [net.maximum(nodes[i], nodes[i + 1]) if i + 1 < len(nodes) else nodes[i]
                 for i in range(0, len(nodes), 2)]
    return nodes[0]


def _accumulators(net: Netlist, spec: LayerSpec, ph: int) -> list[Term | None]:
    """Per lane, sum_k x_k w[k, n(lane, phase)] (per bit-plane when serial)."""
    plane = net.plane("x") if spec.serial and spec.neuron == "grouped" else None
    xs = None
    if plane is None:
        xs = [net.field("x", k, lo=0, hi=1) if spec.serial else net.field("x", k)
              for k in range(spec.k)]
    if spec.neuron == "grouped":
        if spec.fold == 1:
            return grouped.build(net, xs, spec.w, plane)
        return fold.grouped_lanes(net, ph, xs, spec.w, spec.fold, plane)
    if spec.fold == 1:
        return cmvm.build(net, xs, spec.w, "cse", group_nodes=PART_NODES)
    return fold.csd_lanes(net, ph, cmvm.leaf_rows(net, xs, spec.w, "cse"), spec.fold)


def _serial(net: Netlist, spec: LayerSpec, planes: list[Term | None],
            bt: int) -> list[Term | None]:
    """HORNER accumulators over the bit-planes, MSB first."""
    acc = spec.acc_ranges()
    first = net.eq(bt, 0)
    negate = first if spec.in_signed else net.const(0)
    out: list[Term | None] = []
    for lane, t in enumerate(planes):
        if t is None:
            out.append(None)
            continue
        ns = [p * spec.neuron_lanes + lane for p in range(spec.fold)
              if p * spec.neuron_lanes + lane < spec.n]
        lo, hi = int(acc[ns, 0].min()), int(acc[ns, 1].max())
        lo = min(lo, *term_range(*net.range(t[0]), t[1], t[2]))
        hi = max(hi, *term_range(*net.range(t[0]), t[1], t[2]))
        d = outunit.to_node(net, t)
        out.append((net.horner(d, first, negate, lo, hi), 0, 1))
    return out
