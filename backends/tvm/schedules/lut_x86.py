"""The x86 look-up step of etch.LutGemm: vpshufb on 32-byte (AVX2) or 64-byte (AVX-512BW)
vectors, for int8 tables (`lut_tile.py` has the loop around it).

Layout (chosen by passes/lut_lowering.py): a code vector holds V / slots columns, the
`slots` planes of each column in adjacent bytes (plane vector q holds planes q * slots ..);
the low nibbles are chunk 2kb, the high nibbles chunk 2kb + 1. Per vector:
    lo = w & 15, hi = w >> 4                         (vpand; vgf2p8affineqb or vpsrlw+vpand)
    la = vpshufb(T[2kb] in every 16-byte lane, lo)  (vbroadcasti32x4 of the chunk's table)
    lb = vpshufb(T[2kb + 1] ..., hi)
    slots 2/4: acc += vpmaddubsw(pw, la) + vpmaddubsw(pw, lb), pw = mu 2^plane per byte (0
               for padding planes): an int16 lane is the weighted sum of a column's pair of
               planes; slots 4 ends with vpmaddwd(acc, 1) (the column's two pairs);
    slots 1:   acc_lo/hi += vpmaddubsw(mu 2^q, unpack{lo,hi}(la, lb)) (vpunpck{l,h}bw):
               la and lb of a column side by side; a shuffle puts the columns back in order.
"""

from __future__ import annotations

from tvm import tirx

from backends.tvm.schedules.lut_kernels import LutSpec, Tables, build, splat
from backends.tvm.schedules.lut_tile import (
    VectorTile,
    fits_int16,
    nibbles,
    table16,
    vector_body,
)

Expr = tirx.Expr
PSHUFB = {32: "llvm.x86.avx2.pshuf.b", 64: "llvm.x86.avx512.pshuf.b.512"}
PMADDUBSW = {32: "llvm.x86.avx2.pmadd.ub.sw", 64: "llvm.x86.avx512.pmaddubs.w.512"}
PMADDWD = {32: "llvm.x86.avx2.pmadd.wd", 64: "llvm.x86.avx512.pmaddw.d.512"}
MAX_ACC = {32: 4, 64: 8}  # of 16 ymm / 32 zmm registers: the rest hold tables and nibbles


def _intrin(name: str, dt: str, *args: Expr) -> Expr:
    return tirx.call_llvm_pure_intrin(dt, name, *args)


def plane_weights(spec: LutSpec, q: int) -> Expr:
    """uint8 x V for plane vector q: mu 2^plane for byte b (plane q * slots + b % slots), 0
    for padding planes."""
    lay, mu, v = spec.p.layout, spec.p.mu, spec.p.layout.vector_bytes
    if lay.slots == 1:
        return splat(mu << q if q < lay.bits else 0, "uint8", v)
    plane = tirx.bitwise_and(tirx.Ramp(0, 1, v), splat(lay.slots - 1, "int32", v)) + \
        splat(q * lay.slots, "int32", v)
    w = tirx.Select(plane < splat(lay.bits, "int32", v),
                    tirx.shift_left(splat(mu, "int32", v), plane), splat(0, "int32", v))
    return w.astype(f"uint8x{v}")


def _unpack(la: Expr, lb: Expr, v: int, high: bool) -> Expr:
    """vpunpck{l,h}bw: per 16-byte lane, bytes i of la and lb side by side (i < 8, or >= 8)."""
    idx = []
    for lane in range(v // 16):
        for i in range(8):
            src = lane * 16 + i + (8 if high else 0)
            idx += [src, v + src]
    return tirx.Shuffle([la, lb], [tirx.const(i, "int32") for i in idx])


def _in_order(lo: Expr, hi: Expr, v: int) -> Expr:
    """The slots-1 accumulators (lane l of lo: columns 16 l + 0..7; of hi: 16 l + 8..15) as
    int16 x V in column order."""
    idx = [(c // 16) * 8 + c % 16 if c % 16 < 8 else v // 2 + (c // 16) * 8 + c % 16 - 8
           for c in range(v)]
    return tirx.Shuffle([lo, hi], [tirx.const(i, "int32") for i in idx])


class X86Tile(VectorTile):
    """vpshufb + vpmaddubsw look-ups (see the module docstring)."""

    def __init__(self, spec: LutSpec, bufs: list, tb: Tables) -> None:
        v = spec.p.layout.vector_bytes
        self.nacc = 2 if spec.p.layout.slots == 1 else 1
        self.acc_lanes = v // 2
        self.max_acc = MAX_ACC[v]
        super().__init__(spec, bufs, tb)

    def plane(self, acc, wv: Expr, at: tuple, row0: Expr) -> None:
        v, q, kbyte = at
        vb, pw = self.v, plane_weights(self.spec, q)
        shuf, madd = PSHUFB[vb], PMADDUBSW[vb]
        i8, i16 = f"int8x{vb}", f"int16x{self.acc_lanes}"
        lo, hi = nibbles(wv, vb)
        for r in range(self.mb):
            base = self.table_at(row0 + r, kbyte)
            la = _intrin(shuf, i8, table16(self.tb.tab, base, vb), lo)
            lb = _intrin(shuf, i8, table16(self.tb.tab, base + 16, vb), hi)
            if self.spec.p.layout.slots > 1:
                self.add(acc, r, v, 0, _intrin(madd, i16, pw, la) + _intrin(madd, i16, pw, lb))
                continue
            for a, high in enumerate((False, True)):
                self.add(acc, r, v, a, _intrin(madd, i16, pw, _unpack(la, lb, vb, high)))

    def widened(self, acc, r: Expr, v: Expr) -> Expr:
        load = lambda a: tirx.BufferLoad(acc, [self.acc_at(r, v, a)])
        slots = self.spec.p.layout.slots
        if slots == 4:
            return _intrin(PMADDWD[self.v], f"int32x{self.v // 4}", load(0),
                           splat(1, "int16", self.acc_lanes))
        if slots == 2:
            return load(0).astype(f"int32x{self.acc_lanes}")
        return _in_order(load(0), load(1), self.v).astype(f"int32x{self.v}")


def applies(spec: LutSpec, features: set[str]) -> bool:
    """Whether this kernel renders `spec` on a CPU with these LLVM features."""
    v = spec.p.layout.vector_bytes
    isa = {"avx512bw"} if v == 64 else {"avx2"} if v == 32 else None
    return isa is not None and isa <= features and spec.int8 and fits_int16(spec)


def x86_kernel(spec: LutSpec) -> tirx.PrimFunc:
    return build(spec, lambda s, bufs, tb: vector_body(s, X86Tile(s, bufs, tb)))
