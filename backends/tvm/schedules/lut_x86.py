"""The x86 look-up step of etch.LutGemm: vpshufb on 32-byte (AVX2) or 64-byte (AVX-512BW)
vectors for int8 tables, vpermps for float tables (`lut_tile.py` has the loop around it).

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
chunk_slots 2 (AVX512-VBMI, the 1- and 3-bit layouts): byte 2c of a plane vector holds
chunks 4kb, 4kb + 1 of column c, byte 2c + 1 chunks 4kb + 2, 4kb + 3 (no unpacking):
    ia = (w & 15) | (0, 32, 0, 32, ..), ib = (w >> 4) | (16, 48, 16, 48, ..)
    la = vpermb(T[4kb .. 4kb + 3], ia), lb = vpermb(T[4kb .. 4kb + 3], ib)
                                         (the four chunks' tables: one 64-byte load)
    acc += vpmaddubsw(mu 2^q, la) + vpmaddubsw(mu 2^q, lb)   (int16 lane = column, in order)
chunk_slots 4 (AVX512-VBMI + VNNI, every bit width with table blocks of 32 rows: one plane
per vector): the 4 bytes of a column's int32 lane hold chunks 8kb + 2j (low nibble) and
8kb + 2j + 1 (high) in byte j; the tables are stored even chunks first (`Tables.stored`), so
    ia = (w & 15) | 16 j, ib = (w >> 4) | 16 j       (j = byte % 4)
    la = vpermb(T[8kb + 0, 2, 4, 6], ia), lb = vpermb(T[8kb + 1, 3, 5, 7], ib)
    acc = vpdpbusd(vpdpbusd(acc, mu 2^q, la), mu 2^q, lb)   (int32 lane = column, in order)
no int16 step and no widening; with two-level scales D u8 is one vpmaddwd (|D| < 2^15), or
for binary weights (no zero term) vpdpbusd's byte weights are the columns' uint8 block
scales (mu folded into d): no per-block multiply at all (1-bit 90.8 -> 84.3 us, load 4-5).
A 64-byte vector is 16 columns x 32 rows of one plane. 4096x4096 GEMV on Zen 4, u8 scales,
one thread, CPU time, interleaved A/B against chunk_slots 2 / the vpshufb layouts (load
3-4): 1-bit 109 -> 92 us, 2-bit 155 -> 134, 3-bit 218 -> 177, 4-bit 256 -> 228; batch 8:
2-bit 1200 -> 900, 4-bit 1850 -> 1520 (load 4.5).
Float tables (layout: one plane per vector): per 16 bytes, the nibbles widened to int32
index vpermps of the chunk's 16 float entries (AVX2: two 8-entry vpermps and a blend), the
two chunks added and weighted by mu 2^q into float32 accumulators of 16 columns.
"""

from __future__ import annotations

from tvm import tirx
from tvm.tirx.script.builder import ir as T

from backends.tvm.schedules.lut_kernels import LutSpec, Tables, build, splat
from backends.tvm.schedules.lut_tile import (
    INT16_MAX,
    VectorTile,
    d_bound,
    fits_int16,
    nibbles,
    table16,
    vector_body,
)
from compiler.ops.etch_lut import ENTRIES

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
        self.one_lane = spec.p.layout.slots < 4  # slots 4: vpmaddwd adds a lane pair
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


PERMB = "llvm.x86.avx512.permvar.qi.512"


def _perm_indices(wv: Expr, v: int) -> tuple[Expr, Expr]:
    """vpermb indices of the low and high nibbles: nibble | 16 (chunk 1 of the pair) | 32
    (odd byte: the second chunk pair)."""
    odd = tirx.bitwise_and(tirx.Ramp(0, 1, v), splat(1, "int32", v))
    sel = (odd * splat(32, "int32", v)).astype(f"uint8x{v}")
    lo = tirx.bitwise_or(tirx.bitwise_and(wv, splat(15, "uint8", v)), sel)
    hi = tirx.bitwise_or(tirx.shift_right(wv, splat(4, "uint8", v)),
                         sel + splat(16, "uint8", v))
    return tirx.reinterpret(f"int8x{v}", lo), tirx.reinterpret(f"int8x{v}", hi)


class X86PermTile(VectorTile):
    """chunk_slots 2: vpermb over four chunks' tables (see the module docstring)."""

    def __init__(self, spec: LutSpec, bufs: list, tb: Tables) -> None:
        v = spec.p.layout.vector_bytes
        self.nacc, self.acc_lanes, self.max_acc = 1, v // 2, MAX_ACC[v]
        self.one_lane = True
        super().__init__(spec, bufs, tb)

    def table_at(self, row: Expr, kbyte: Expr) -> Expr:
        """Where the tables of chunks 4 kbyte .. 4 kbyte + 3 of `row` start."""
        return (row * self.chunks + 4 * kbyte) * ENTRIES

    def plane(self, acc, wv: Expr, at: tuple, row0: Expr) -> None:
        v, q, kbyte = at
        vb, pw = self.v, plane_weights(self.spec, q)
        ia, ib = _perm_indices(wv, vb)
        i8, i16 = f"int8x{vb}", f"int16x{self.acc_lanes}"
        for r in range(self.mb):
            tab = tirx.BufferLoad(self.tb.tab, [tirx.Ramp(self.table_at(row0 + r, kbyte), 1,
                                                           vb)])
            la, lb = _intrin(PERMB, i8, tab, ia), _intrin(PERMB, i8, tab, ib)
            self.add(acc, r, v, 0, _intrin(PMADDUBSW[vb], i16, pw, la) +
                     _intrin(PMADDUBSW[vb], i16, pw, lb))

    def widened(self, acc, r: Expr, v: Expr) -> Expr:
        return tirx.BufferLoad(acc, [self.acc_at(r, v, 0)]).astype(f"int32x{self.acc_lanes}")


VPDPBUSD = "llvm.x86.avx512.vpdpbusd.512"
VPDPWSSD = "llvm.x86.avx512.vpdpwssd.512"


class X86DotTile(VectorTile):
    """chunk_slots 4: vpermb per nibble over four chunks' tables, vpdpbusd into int32 lanes
    (see the module docstring)."""

    acc_dtype = "int32"

    def __init__(self, spec: LutSpec, bufs: list, tb: Tables) -> None:
        v = spec.p.layout.vector_bytes
        self.nacc, self.acc_lanes, self.max_acc = 1, v // 4, MAX_ACC[v]
        self.one_lane = True
        super().__init__(spec, bufs, tb)
        # |D| < 2^15 (the int16 bound of the folded zero term, or of D itself): vpmaddwd
        # multiplies the low halves of D's int32 lanes (the high halves are their sign) by
        # the uint8 scales widened to int32 (high halves 0), exactly
        if (self.folds_zero or d_bound(spec, False) <= INT16_MAX) and self.int_scale:
            self.times = self._madd
        # binary weights (one plane, mu a power of two, no zero term: c = 0) with two-level
        # scales: vpdpbusd weighs each column's bytes by its uint8 block scale instead of
        # mu, so the accumulator is X = u8 A and D u8 = mu X; d is stored times mu. f32(mu
        # X) d == f32(X) (mu d) exactly (mu a power of two), so `combine_u8` is unchanged
        # and the per-block vpmovzxbd + vpmaddwd become one byte shuffle of 16 scales.
        p = spec.p
        c = p.mu * ((1 << p.layout.bits) - 1) - 2 * p.zero
        self.scaled_bytes = self.int_scale and p.layout.bits == 1 and \
            p.layout.plane_vectors == 1 and not spec.zero_input and c == 0 and \
            p.mu & (p.mu - 1) == 0
        if self.scaled_bytes:
            self.times, self.sup_factor = (lambda d, u8: d), p.mu
        self.block_at = None

    def step(self, acc, at: tuple, kbyte: Expr) -> None:
        self.block_at = at  # (tile, first row, vector block): where `plane` finds the scales
        super().step(acc, at, kbyte)

    def byte_weights(self, q: int, v: Expr, kbyte: Expr) -> Expr:
        """vpdpbusd's uint8 weights of plane vector q: mu 2^q, or (`scaled_bytes`) each
        column's uint8 block scale in its four bytes."""
        if not self.scaled_bytes:
            return plane_weights(self.spec, q)
        p, (t, _, vb) = self.spec.p, self.block_at
        g = kbyte // (p.group // p.layout.k_per_byte)
        cols = tirx.Ramp((vb * self.nvb + v) * self.cols, 1, self.cols)
        u8 = tirx.BufferLoad(self.args.scale, [t, g, cols])
        return tirx.Shuffle([u8] * 4, [tirx.const(i // 4, "int32") for i in range(self.v)])

    def shared_term(self, old: Expr, d: Expr, u8: Expr, k: Expr) -> Expr:
        """I + D u8 k_h: binary weights with scaled bytes hold X = D u8 / mu already (d is
        stored times mu); where |D| < 2^15, vpdpwssd multiplies D's low halves by u8 k_h
        (< 2^15: a vpmullw of the widened scales, their high halves 0) and adds."""
        n = self.acc_lanes
        if self.scaled_bytes:
            return old + d * tirx.Broadcast(k, n)
        if not (self.folds_zero or d_bound(self.spec, False) <= INT16_MAX):
            return super().shared_term(old, d, u8, k)
        i16 = f"int16x{2 * n}"
        u8k = tirx.reinterpret(i16, u8.astype(f"int32x{n}")) * tirx.Broadcast(
            k.astype("int16"), 2 * n)
        return _intrin(VPDPWSSD, f"int32x{n}", old, tirx.reinterpret(i16, d), u8k)

    def _madd(self, d: Expr, u8: Expr) -> Expr:
        n = self.acc_lanes
        return _intrin(PMADDWD[self.v], f"int32x{n}", tirx.reinterpret(f"int16x{2 * n}", d),
                       tirx.reinterpret(f"int16x{2 * n}", u8.astype(f"int32x{n}")))

    def table_at(self, row: Expr, kbyte: Expr) -> Expr:
        """Where the low nibbles' tables of chunks 8 kbyte .. 8 kbyte + 7 of `row` start
        (chunks 8 kbyte + 0, 2, 4, 6; the high nibbles' 1, 3, 5, 7 follow: `Tables.stored`)."""
        return (row * self.chunks + 8 * kbyte) * ENTRIES

    def plane(self, acc, wv: Expr, at: tuple, row0: Expr) -> None:
        v, q, kbyte = at
        vb, pw = self.v, self.byte_weights(q, v, kbyte)
        sel = tirx.bitwise_and(tirx.Ramp(0, 1, vb), splat(3, "int32", vb)) * splat(
            ENTRIES, "int32", vb)
        sel = sel.astype(f"uint8x{vb}")  # byte slot j of a column: its chunk pair's tables
        ia = tirx.bitwise_or(tirx.bitwise_and(wv, splat(15, "uint8", vb)), sel)
        # the high nibbles by a 16-bit shift (vpsrlw + vpternlog: LLVM's byte shift is a
        # vgf2p8affineqb, on the multiply pipes vpdpbusd needs; 2-4% on Zen 4)
        w16 = tirx.reinterpret(f"uint16x{vb // 2}", wv)
        sh = tirx.reinterpret(f"uint8x{vb}", tirx.shift_right(w16, splat(4, "uint16", vb // 2)))
        ib = tirx.bitwise_or(tirx.bitwise_and(sh, splat(15, "uint8", vb)), sel)
        i8 = f"int8x{vb}"
        ia, ib = tirx.reinterpret(i8, ia), tirx.reinterpret(i8, ib)
        for r in range(self.mb):
            base = self.table_at(row0 + r, kbyte)
            ta = tirx.BufferLoad(self.tb.tab, [tirx.Ramp(base, 1, vb)])
            tb = tirx.BufferLoad(self.tb.tab, [tirx.Ramp(base + 4 * ENTRIES, 1, vb)])
            la, lb = _intrin(PERMB, i8, ta, ia), _intrin(PERMB, i8, tb, ib)
            idx = [self.acc_at(r, v, 0)]
            old = tirx.BufferLoad(acc, idx)
            new = _intrin(VPDPBUSD, f"int32x{self.acc_lanes}",
                          _intrin(VPDPBUSD, f"int32x{self.acc_lanes}", old, pw, la), pw, lb)
            T.buffer_store(acc, new, idx)

    def widened(self, acc, r: Expr, v: Expr) -> Expr:
        return tirx.BufferLoad(acc, [self.acc_at(r, v, 0)])


PERMPS = {64: "llvm.x86.avx512.permvar.sf.512", 32: "llvm.x86.avx2.permps"}


def _lookup_f32(table: Expr, idx: Expr, v: int) -> Expr:
    """table[idx] for 16 float32 entries and 16 int32 indices: one vpermps on AVX-512; on
    AVX2 two 8-entry vpermps per half and a blend on bit 3 of the index."""
    if v == 64:
        return _intrin(PERMPS[64], "float32x16", table, idx)
    halves = []
    for h in range(2):
        sub = tirx.Shuffle([idx], [tirx.const(8 * h + i, "int32") for i in range(8)])
        lo, hi = (tirx.Shuffle([table], [tirx.const(8 * part + i, "int32") for i in range(8)])
                  for part in (0, 1))
        pick = tirx.bitwise_and(sub, splat(8, "int32", 8)) == splat(0, "int32", 8)
        halves.append(tirx.Select(pick, _intrin(PERMPS[32], "float32x8", lo, sub),
                                  _intrin(PERMPS[32], "float32x8", hi, sub)))
    return tirx.Shuffle(halves, [tirx.const(i, "int32") for i in range(16)])


class X86FloatTile(VectorTile):
    """Float tables: vpermps look-ups, 16 columns (one plane) per float32 accumulator."""

    acc_dtype = "float32"
    acc_lanes = ENTRIES

    def __init__(self, spec: LutSpec, bufs: list, tb: Tables) -> None:
        self.nacc = spec.p.layout.vector_bytes // ENTRIES
        self.max_acc = 8 if spec.p.layout.vector_bytes == 64 else 4
        super().__init__(spec, bufs, tb)

    def plane(self, acc, wv: Expr, at: tuple, row0: Expr) -> None:
        v, q, kbyte = at
        weight = splat(float(self.spec.p.mu << q), "float32", ENTRIES)
        for g in range(self.nacc):
            part = tirx.Shuffle([wv], [tirx.const(g * ENTRIES + i, "int32")
                                       for i in range(ENTRIES)])
            lo = tirx.bitwise_and(part, splat(15, "uint8", ENTRIES)).astype("int32x16")
            hi = tirx.shift_right(part, splat(4, "uint8", ENTRIES)).astype("int32x16")
            for r in range(self.mb):
                base = self.table_at(row0 + r, kbyte)
                ta = tirx.BufferLoad(self.tb.tab, [tirx.Ramp(base, 1, ENTRIES)])
                tb = tirx.BufferLoad(self.tb.tab, [tirx.Ramp(base + ENTRIES, 1, ENTRIES)])
                looked = _lookup_f32(ta, lo, self.v) + _lookup_f32(tb, hi, self.v)
                self.add(acc, r, v, g, looked * weight)

    def widened(self, acc, r: Expr, v: Expr) -> Expr:
        parts = [tirx.BufferLoad(acc, [self.acc_at(r, v, g)]) for g in range(self.nacc)]
        return tirx.Shuffle(parts, [tirx.const(i, "int32") for i in range(self.v)])


def applies(spec: LutSpec, features: set[str]) -> bool:
    """Whether a kernel here renders `spec` on a CPU with these LLVM features: int8 tables
    with vpshufb (AVX-512BW for 64-byte vectors, AVX2 for 32), or with vpermb (AVX512-VBMI)
    for chunk_slots 2; float tables with vpermps (AVX-512F / AVX2) where the layout holds
    one plane per vector."""
    lay = spec.p.layout
    if lay.chunk_slots == 4:
        return spec.int8 and lay.vector_bytes == 64 and lay.slots == 1 and \
            {"avx512bw", "avx512vbmi", "avx512vnni"} <= features
    if lay.chunk_slots == 2:
        return spec.int8 and lay.vector_bytes == 64 and lay.slots == 1 and \
            {"avx512bw", "avx512vbmi"} <= features and fits_int16(spec)
    if spec.int8:
        isa = {"avx512bw"} if lay.vector_bytes == 64 else {"avx2"}
        return lay.vector_bytes in (32, 64) and isa <= features and fits_int16(spec)
    isa = {"avx512f"} if lay.vector_bytes == 64 else {"avx2"}
    return lay.vector_bytes in (32, 64) and lay.slots == 1 and isa <= features


def x86_kernel(spec: LutSpec) -> tirx.PrimFunc:
    tile = X86FloatTile if not spec.int8 else {2: X86PermTile, 4: X86DotTile}.get(
        spec.p.layout.chunk_slots, X86Tile)
    return build(spec, lambda s, bufs, tb: vector_body(s, tile(s, bufs, tb)))
