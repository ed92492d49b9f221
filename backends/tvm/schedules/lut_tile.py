"""The vector look-up loop of etch.LutGemm, shared by the x86 (`lut_x86.py`) and NEON
(`lut_neon.py`) kernels, which supply one plane vector's look-ups and the widening.

Parallel over column tiles; inside, register tiles of mb rows x nvb of the tile's vectors
(as many as the vector registers hold as accumulators beside the temporaries). Per table
block: int16 accumulators, every byte position of the block (`plane` for each
vector and plane vector: one weight load serves every row of the register tile, each row
looking up its own table: the batched form), then `finish_block`: widen to int32, D = A +
c Z, y += fence((f32(D) * scale) * ls). A lane's sum per block is at most
kb_per_block * 127 * `lane_weight` (`fits_int16` checks it), so int16 never saturates.
Where every column sums in one lane and the zero point is uniform (`folds_zero`), the
accumulators start at c Z instead of 0 when that still fits int16 (`zero_term_fits`): no
add after widening. Two-level scales (`int_scale`, where |D| 255 < 2^24): D times the
uint8 scale in int32 (LLVM: vpmaddwd), then times d, which is widened to float32 once per
super-block into a buffer (`widen_super`), not per block: the same float32 (`combine_u8`).
2-bit 4096x4096 GEMV with u8 scales on Zen 4, one thread, CPU time, interleaved A/B (load
6-7): 161.5-163.5 -> 144.7-151.9 us. Shared table scales (the node's `table_steps`,
etch_lut step 5): the blocks of a super-block add D u8 k_h into int32 sums
(`shared_term`: on x86 one vpmullw and one vpdpwssd per 16 columns), and the float steps
run once per super-block (`_shared_body`).

Software prefetch (the node's `prefetch` bytes, chosen by the pass; 0: none): every byte
position also hints the lines of its code slice `prefetch` bytes further along the tile's
code stream (in whole byte positions; past the tile's end that is the next tile's start,
which a serial loop reads next), and every block the block scales, zero points and
super-block scales of the block as far ahead, into L2 (`llvm.prefetch` locality 2:
prefetcht1 on x86, prfm pldl2keep on aarch64). The hardware streamers stop at 4 KiB
pages; a cold GEMV streams its codes from DRAM once, so the hint keeps the next pages'
lines in flight (cold 2-bit 4096x4096 GEMV on Zen 4, CPU time: 40-44% of the streaming
read without it, 64-67% with it; warm runs 0.97-1.02x).
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.tirx.script.builder import ir as T

from backends.tvm.schedules.lut_kernels import (
    KernelArgs,
    LutSpec,
    Tables,
    combine,
    combine_shared,
    combine_u8,
    offset,
    splat,
    tile_loop,
    widen,
)
from compiler.ops.etch_lut import ENTRIES, G_ACT, TABLE_MAX

Expr = tirx.Expr
INT16_MAX = 32767
LINE = 64  # bytes a prefetch brings in (x86 and the aarch64 cores etch targets)


def lane_weight(spec: LutSpec) -> int:
    """The largest sum of plane weights one int16 accumulator lane takes per byte position
    (over the plane vectors; both nibbles and every chunk slot counted)."""
    lay, mu = spec.p.layout, spec.p.mu
    weights = [mu << q if q < lay.bits else 0 for q in range(lay.planes)]
    if lay.slots == 1:
        return 2 * lay.chunk_slots * sum(weights)
    pairs = [[weights[q * lay.slots + i] + weights[q * lay.slots + i + 1]
              for i in range(0, lay.slots, 2)] for q in range(lay.plane_vectors)]
    return 2 * max(sum(col) for col in zip(*pairs))


def fits_int16(spec: LutSpec) -> bool:
    lay = spec.p.layout
    if lay.slots > 1 and lay.chunk_slots > 1:
        return False  # no kernel pairs planes and chunks in one accumulator lane
    return spec.p.tblock // lay.k_per_byte * TABLE_MAX * lane_weight(spec) <= INT16_MAX


def zero_term_fits(spec: LutSpec) -> bool:
    """Whether a uniform zero point's block term c Z can start an int16 accumulator lane:
    |c| times the largest |Z| (tblock / 4 chunks of 127) plus the look-ups' bound stays
    within int16 (so every partial sum is the exact integer)."""
    p, lay = spec.p, spec.p.layout
    if not spec.int8 or spec.zero_input:
        return False
    c = abs(p.mu * ((1 << lay.bits) - 1) - 2 * p.zero)
    looked = p.tblock // lay.k_per_byte * TABLE_MAX * lane_weight(spec)
    return c * (p.tblock // G_ACT) * TABLE_MAX + looked <= INT16_MAX


def d_bound(spec: LutSpec, folds_zero: bool) -> int:
    """The largest |D| of a block (an int16 lane where the zero term is folded in)."""
    p, lay = spec.p, spec.p.layout
    if folds_zero:
        return INT16_MAX
    full = p.mu * ((1 << lay.bits) - 1)
    c = abs(full - 2 * p.zero) if not spec.zero_input else max(abs(full), abs(full - 2 * 255))
    looked = p.tblock // lay.k_per_byte * TABLE_MAX * lane_weight(spec)
    return looked + c * (p.tblock // G_ACT) * TABLE_MAX


def table16(tab: tirx.Buffer, start: Expr, lanes: int = ENTRIES) -> Expr:
    """The 16 int8 entries from `start`, repeated to `lanes` bytes (one per 16-byte lane)."""
    row = tirx.BufferLoad(tab, [tirx.Ramp(start, 1, ENTRIES)])
    if lanes == ENTRIES:
        return row
    return tirx.Shuffle([row] * (lanes // ENTRIES),
                        [tirx.const(i, "int32") for i in range(lanes)])


def _prefetch(flat: tirx.Buffer, start: Expr, nbytes: int) -> None:
    """Hint the lines of nbytes of the flat view `flat` from element `start` into L2
    (read, locality 2), clamped inside the buffer (a prefetch never faults, but LLVM's
    address must stay in the object)."""
    size, item = int(flat.shape[0]), tvm.DataType(str(flat.dtype)).bits // 8
    nbytes = min(nbytes, size * item)
    first = tirx.min(start, tirx.const(size - nbytes // item, "int32"))
    for i in range(max(1, nbytes // LINE)):
        addr = tirx.address_of(tirx.BufferLoad(flat, [first + i * LINE // item]))
        T.evaluate(tirx.call_llvm_intrin("void", "llvm.prefetch", addr, tirx.const(0, "int32"),
                                         tirx.const(2, "int32"), tirx.const(1, "int32")))


def _flat(buf: tirx.Buffer) -> tirx.Buffer:
    """A one-dimensional view of a parameter buffer (for addresses past its tile)."""
    size = 1
    for d in buf.shape:
        size *= int(d)
    return T.decl_buffer((size,), buf.dtype, data=buf.data)


def nibbles(wv: Expr, lanes: int) -> tuple[Expr, Expr]:
    """(low, high) nibbles of uint8 x lanes as int8 x lanes."""
    i8 = f"int8x{lanes}"
    lo = tirx.reinterpret(i8, tirx.bitwise_and(wv, splat(15, "uint8", lanes)))
    hi = tirx.reinterpret(i8, tirx.shift_right(wv, splat(4, "uint8", lanes)))
    return lo, hi


class VectorTile:
    """A register tile. Subclasses set `nacc` (int16 vectors per row and vector),
    `acc_lanes`, `cols` (columns per code vector) and implement `plane` and `widened`."""

    nacc = 1
    acc_lanes = ENTRIES
    acc_dtype = "int16"
    max_acc = 8  # accumulator vectors a register tile may hold
    one_lane = False  # every column's sum in exactly one accumulator lane (`widened` widens)
    times = None  # D times the uint8 scale, where a kernel has its own form (`combine_u8`)
    sup_factor = 1  # what `widen_super` multiplies d by (a kernel's power of two)

    def __init__(self, spec: LutSpec, bufs: list, tb: Tables) -> None:
        self.spec, self.tb = spec, tb
        self.args = KernelArgs.of(spec, bufs)
        self.x, self.w, self.zero, self.out = (self.args.x, self.args.w, self.args.zero,
                                               self.args.out)
        lay = spec.p.layout
        self.v, self.nv = lay.vector_bytes, lay.tile_vectors
        self.cols = lay.cols_per_vector
        self.chunks = spec.p.kp // G_ACT
        self.mb, self.nvb = self.register_tile()
        self.folds_zero = self.one_lane and zero_term_fits(spec)
        # two-level scales: D times the uint8 scale in int32, exact in float32 (`combine_u8`)
        self.int_scale = spec.int8 and spec.p.two_level and \
            d_bound(spec, self.folds_zero) * 255 < 1 << 24
        self.flat = {}
        if spec.p.prefetch:
            self.flat = {name: _flat(buf) for name, buf in (
                ("w", self.w), ("scale", self.args.scale), ("zero", self.zero),
                ("sup", self.args.sup)) if buf is not None}

    def register_tile(self) -> tuple[int, int]:
        """(rows, vectors) of a register tile: the most accumulators that fit, rows first."""
        fits = [(mb * nvb, mb, nvb) for mb in (4, 3, 2, 1) if self.spec.m % mb == 0
                for nvb in range(1, self.nv + 1) if self.nv % nvb == 0
                and mb * nvb * self.nacc <= max(self.max_acc, self.nacc)]
        return max(fits)[1:]

    def acc_at(self, r: Expr, v: Expr, a: int) -> Expr:
        """Accumulator a of row r and vector v (of the register tile)."""
        return tirx.Ramp(((r * self.nvb + v) * self.nacc + a) * self.acc_lanes, 1,
                         self.acc_lanes)

    def add(self, acc: tirx.Buffer, r: Expr, v: Expr, a: int, part: Expr) -> None:
        idx = [self.acc_at(r, v, a)]
        T.buffer_store(acc, tirx.BufferLoad(acc, idx) + part, idx)

    def acc_start(self, row: Expr, h: Expr) -> Expr:
        """An accumulator's value at the start of block h: 0, or the block's zero-point
        term c Z[row, h] where the tile folds it in (`folds_zero`)."""
        if not self.folds_zero:
            return splat(0, self.acc_dtype, self.acc_lanes)
        c = offset(self.spec, None, 0, 0, 0, 1)
        z = tirx.BufferLoad(self.tb.zs, [row * self.spec.p.blocks + h])
        return tirx.Broadcast((c * z).astype(self.acc_dtype), self.acc_lanes)

    def table_at(self, row: Expr, kbyte: Expr) -> Expr:
        """Where the table of chunk 2 kbyte of `row` starts (chunk 2 kbyte + 1 follows)."""
        return (row * self.chunks + 2 * kbyte) * ENTRIES

    def step(self, acc: tirx.Buffer, at: tuple, kbyte: Expr) -> None:
        """Look up byte position kbyte for every vector and row of the register tile at
        (tile t, first row, vector block vb)."""
        t, row0, vb = at
        if self.flat:
            self.prefetch_codes(t, vb, kbyte)
        with T.unroll(0, self.nvb) as v:
            for q in range(self.spec.p.layout.plane_vectors):
                wv = tirx.BufferLoad(self.w, [t, kbyte, vb * self.nvb + v, q,
                                              tirx.Ramp(0, 1, self.v)])
                self.plane(acc, wv, (v, q, kbyte), row0)

    @property
    def ahead(self) -> int:
        """Byte positions the prefetch runs ahead (the node's bytes over a tile's bytes per
        byte position, rounded up)."""
        lay = self.spec.p.layout
        return -(-self.spec.p.prefetch // (self.nv * lay.plane_vectors * self.v))

    def prefetch_codes(self, t: Expr, vb: Expr, kbyte: Expr) -> None:
        """The lines of this register tile's code slice `ahead` byte positions on."""
        lay, kbs = self.spec.p.layout, self.spec.p.kp // self.spec.p.layout.k_per_byte
        per = lay.plane_vectors * self.v
        start = ((t * kbs + kbyte + self.ahead) * self.nv + vb * self.nvb) * per
        _prefetch(self.flat["w"], start, self.nvb * per)

    def prefetch_params(self, t: Expr, vb: Expr, h: Expr) -> None:
        """The block parameters (scale, zero, super-block scale rows) of the block as far
        ahead as the codes, each row once (when the block ahead starts it)."""
        p = self.spec.p
        kb_per, per_group = p.tblock // p.layout.k_per_byte, p.group // p.tblock
        rows = {"scale": (per_group, p.kp // p.group), "zero": (per_group, p.kp // p.group),
                "sup": (per_group * max(p.super_block, 1), p.supers)}
        h_ahead = h + -(-self.ahead // kb_per)
        col0 = vb * self.nvb * self.cols
        for name, (period, count) in rows.items():
            if name not in self.flat:
                continue
            flat, nbytes = self.flat[name], self.nvb * self.cols * \
                tvm.DataType(str(self.flat[name].dtype)).bits // 8
            start = (t * count + h_ahead // period) * p.layout.tile_cols + col0
            if period == 1:
                _prefetch(flat, start, nbytes)
                continue
            with T.If(h_ahead % period == 0), T.Then():
                _prefetch(flat, start, nbytes)

    def plane(self, acc: tirx.Buffer, wv: Expr, at: tuple, row0: Expr) -> None:
        raise NotImplementedError

    def widened(self, acc: tirx.Buffer, r: Expr, v: Expr) -> Expr:
        raise NotImplementedError

    def block_d(self, acc: tirx.Buffer, at: tuple) -> Expr:
        """D = A + c Z of row r and vector v as int32 lanes (the zero term added here unless
        the accumulators started at it: `folds_zero`)."""
        t, g, r, v, col, zat = at
        d = self.widened(acc, r, v)
        if self.folds_zero:
            return d
        return d + offset(self.spec, self.zero, t, g, col, self.cols) * tirx.Broadcast(
            tirx.BufferLoad(self.tb.zs, [zat]), self.cols)

    def _combine_u8(self, acc: tirx.Buffer, y: tirx.Buffer, at: tuple, idx: list) -> Expr:
        """The block's contribution with two-level scales (`int_scale`: `combine_u8`)."""
        t, g, _, _, col, zat = at
        d = self.block_d(acc, at)
        cols = tirx.Ramp(col, 1, self.cols)
        return combine_u8(d, tirx.BufferLoad(self.args.scale, [t, g, cols]),
                          tirx.BufferLoad(self.dsup, [cols]), tirx.BufferLoad(self.tb.ls, [zat]),
                          tirx.BufferLoad(y, idx), self.times)

    def shared_term(self, old: Expr, d: Expr, u8: Expr, k: Expr) -> Expr:
        """I + D u8 k_h in int32 lanes (shared table scales: the pass's bound keeps it)."""
        n = self.cols
        return old + d * (u8.astype(f"int32x{n}") * tirx.Broadcast(k, n))

    def add_shared(self, acc: tirx.Buffer, isum: tirx.Buffer, at: tuple) -> None:
        """A block's D u8 k_h into the register tile's super-block sums."""
        p = self.spec.p
        t, row0, vb, h = at
        g = h // (p.group // p.tblock)
        with T.unroll(0, self.mb) as r, T.unroll(0, self.nvb) as v:
            col = (vb * self.nvb + v) * self.cols
            zat = (row0 + r) * p.blocks + h
            d = self.block_d(acc, (t, g, r, v, col, zat))
            u8 = tirx.BufferLoad(self.args.scale, [t, g, tirx.Ramp(col, 1, self.cols)])
            idx = [tirx.Ramp(r * p.layout.tile_cols + col, 1, self.cols)]
            T.buffer_store(isum, self.shared_term(tirx.BufferLoad(isum, idx), d, u8,
                                                  tirx.BufferLoad(self.tb.ks, [zat])), idx)

    def widen_super(self, t: Expr, vb: Expr, h: Expr) -> None:
        """At the first block of a super-block, its d of the register tile's columns as
        float32 into `dsup` (converted once per super_block blocks, not per block)."""
        p = self.spec.p
        period = p.group // p.tblock * p.super_block
        with T.If(h % period == 0), T.Then(), T.unroll(0, self.nvb) as v:
            cols = tirx.Ramp((vb * self.nvb + v) * self.cols, 1, self.cols)
            d = widen(tirx.BufferLoad(self.args.sup, [t, h // period, cols]))
            if self.sup_factor != 1:  # a power of two: exact
                d = d * splat(float(self.sup_factor), "float32", self.cols)
            T.buffer_store(self.dsup, d, [cols])

    def finish_block(self, acc: tirx.Buffer, y: tirx.Buffer, at: tuple, h: Expr) -> None:
        spec, p = self.spec, self.spec.p
        cols, tc = self.cols, p.layout.tile_cols
        t, row0, vb = at
        g = h // (p.group // p.tblock)
        with T.unroll(0, self.mb) as r, T.unroll(0, self.nvb) as v:
            col = (vb * self.nvb + v) * cols
            at = (row0 + r) * p.blocks + h
            idx = [tirx.Ramp(r * tc + col, 1, cols)]
            if self.int_scale:
                new = self._combine_u8(acc, y, (t, g, r, v, col, at), idx)
            else:
                new = combine(spec, self.widened(acc, r, v), tirx.BufferLoad(self.tb.zs, [at]),
                              None if self.folds_zero else offset(spec, self.zero, t, g, col,
                                                                  cols),
                              self.args.scale_at(spec, t, g, tirx.Ramp(col, 1, cols)),
                              None if self.tb.ls is None else tirx.BufferLoad(self.tb.ls, [at]),
                              tirx.BufferLoad(y, idx))
            T.buffer_store(y, new, idx)


def vector_body(spec: LutSpec, tile: VectorTile) -> None:
    """The look-up loop (see the module docstring)."""
    p, lay, mb = spec.p, spec.p.layout, tile.mb
    tiles, tc = lay.padded_n(p.n) // lay.tile_cols, lay.tile_cols
    acc_len = mb * tile.nvb * tile.nacc * tile.acc_lanes
    with tile_loop(spec, tiles)(0, tiles) as t, T.serial(0, spec.m // mb) as rb:
        row0 = rb * mb
        y = T.alloc_buffer((mb * tc,), "float32")
        if tile.int_scale or p.table_steps:
            tile.dsup = T.alloc_buffer((tc,), "float32")
        with T.serial(0, mb * tc // 8) as i:
            T.buffer_store(y, splat(0.0, "float32", 8), [tirx.Ramp(i * 8, 1, 8)])
        if p.table_steps:
            _shared_body(tile, y, (t, row0), acc_len)
        else:
            _block_body(tile, y, (t, row0), acc_len)
        _store(tile, y, t, row0)


def _block_body(tile: VectorTile, y: tirx.Buffer, at: tuple, acc_len: int) -> None:
    """The look-up loop with a table scale per block: y gains each block."""
    p = tile.spec.p
    t, row0 = at
    with T.serial(0, tile.nv // tile.nvb) as vb, T.serial(0, p.blocks) as h:
        acc = _looked_up(tile, (t, row0, vb), h, acc_len, tile.int_scale)
        tile.finish_block(acc, y, (t, row0, vb), h)


def _looked_up(tile: VectorTile, at: tuple, h: Expr, acc_len: int,
               widen: bool) -> tirx.Buffer:
    """Block h's accumulators of the register tile at (tile, first row, vector block): their
    start, the parameters' prefetch, the super-block's d where `widen`, every byte position."""
    t, row0, vb = at
    kb_per = tile.spec.p.tblock // tile.spec.p.layout.k_per_byte
    acc = T.alloc_buffer((acc_len,), tile.acc_dtype)
    with T.unroll(0, acc_len // tile.acc_lanes) as i:
        T.buffer_store(acc, tile.acc_start(row0 + i // (tile.nvb * tile.nacc), h),
                       [tirx.Ramp(i * tile.acc_lanes, 1, tile.acc_lanes)])
    if tile.flat:
        tile.prefetch_params(t, vb, h)
    if widen:
        tile.widen_super(t, vb, h)
    with T.unroll(0, kb_per) as kb:
        tile.step(acc, at, h * kb_per + kb)
    return acc


def _shared_body(tile: VectorTile, y: tirx.Buffer, at: tuple, acc_len: int) -> None:
    """The look-up loop with shared table scales (etch_lut step 5): per super-block, every
    block's D u8 k_h into int32 sums (`add_shared`), then y + ((f32(I) * d) * L) once."""
    p = tile.spec.p
    t, row0 = at
    tc, cols, period, sig = p.layout.tile_cols, tile.cols, p.period, p.supers
    isum = T.alloc_buffer((tile.mb * tc,), "int32")
    with T.serial(0, tile.nv // tile.nvb) as vb, T.serial(0, sig) as s:
        with T.unroll(0, tile.mb) as r, T.unroll(0, tile.nvb) as v:
            T.buffer_store(isum, splat(0, "int32", cols),
                           [tirx.Ramp(r * tc + (vb * tile.nvb + v) * cols, 1, cols)])
        tile.widen_super(t, vb, s * period)

        def block(h: Expr) -> None:
            acc = _looked_up(tile, (t, row0, vb), h, acc_len, False)
            tile.add_shared(acc, isum, (t, row0, vb, h))

        with T.serial(0, period) as hb:
            if p.blocks % period == 0:
                block(s * period + hb)
            else:  # a last, partial super-block
                with T.If(s * period + hb < p.blocks), T.Then():
                    block(s * period + hb)
        with T.unroll(0, tile.mb) as r, T.unroll(0, tile.nvb) as v:
            col = (vb * tile.nvb + v) * cols
            idx = [tirx.Ramp(r * tc + col, 1, cols)]
            ls = tirx.BufferLoad(tile.tb.ls, [(row0 + r) * sig + s])
            T.buffer_store(y, combine_shared(
                tirx.BufferLoad(isum, idx), tirx.BufferLoad(tile.dsup, [tirx.Ramp(col, 1, cols)]),
                ls, tirx.BufferLoad(y, idx)), idx)


def _store(tile: VectorTile, y: tirx.Buffer, t: Expr, row0: Expr) -> None:
    p = tile.spec.p
    tc = p.layout.tile_cols
    if p.n % tc == 0:
        with T.unroll(0, tile.mb) as r, T.serial(0, tc // 8) as i:
            T.buffer_store(tile.out, tirx.BufferLoad(y, [tirx.Ramp(r * tc + i * 8, 1, 8)]),
                           [row0 + r, tirx.Ramp(t * tc + i * 8, 1, 8)])
        return
    with T.serial(0, tile.mb) as r, T.serial(0, tc) as c, T.If(t * tc + c < p.n), T.Then():
        T.buffer_store(tile.out, tirx.BufferLoad(y, [r * tc + c]), [row0 + r, t * tc + c])
