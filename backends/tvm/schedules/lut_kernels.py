"""The etch.LutGemm kernels' shared parts, and the portable kernel, built with IRBuilder.

compiler/ops/etch_lut.py defines the computation; every kernel here follows its steps in
the same order, so integer results (int8 tables) are bit-identical to the reference:
- `tables`: per row and table block, the signed tables T (16 float32 lanes: one vector per
  chunk of 4 activations, added in t order from +-x0), their max |T|, and for int8 tables
  Tq = clip(nearbyint(T * (127 / amax)), +-127), ls = amax / 254 and Z = sum of Tq[15];
  for float tables T itself and Z = sum of T[15]. Built at run time, inside the kernel.
  With shared table scales (`table_steps`), per row and super-block: every block's T and
  amax, then L, each block's k_h and its Tq, Z (`_shared_tables`).
- `combine_shared`: a super-block's y + ((f32(I) * d) * L), fenced too.
- `combine`: y = y + ((f32(D) * scale) * ls) with the product fenced
  (`llvm.arithmetic.fence`): TVM lets LLVM contract a * b + c into an FMA, which rounds once
  where the reference rounds twice. `combine_u8`: the same float32 for two-level scales
  with one integer multiply.
- `portable_kernel`: scalar look-ups for any target, parallel over column tiles. The x86
  (`lut_x86.py`) and NEON (`lut_neon.py`) kernels keep the same tables and combine and
  replace the look-up loop with vector table instructions.

`LutSpec` is what a kernel needs (the node's attributes, the row count, whether zero points
are a tensor); it travels on the PrimFunc as the JSON attribute `etch.lut`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from compiler.ops.etch_lut import ENTRIES, G_ACT, TABLE_MAX, Params

Expr = tirx.Expr
KIND = "lut_gemm"
PARALLEL_MIN_WORK = 1 << 18   # weight nibbles looked up; below, one thread (cpu.py's reason)


@dataclass(frozen=True)
class LutSpec:
    """A LutGemm kernel's parameters: node attributes, rows M, zero points as a tensor."""

    attrs: tuple[tuple[str, object], ...]
    m: int
    zero_input: bool

    @classmethod
    def make(cls, attrs: dict, m: int, zero_input: bool) -> LutSpec:
        return cls(tuple(sorted(attrs.items())), m, zero_input)

    @classmethod
    def of(cls, func: tirx.PrimFunc) -> LutSpec:
        d = json.loads(str(func.attrs["etch.lut"]))
        return cls.make(d["attrs"], int(d["m"]), bool(d["zero_input"]))

    def to_json(self) -> str:
        return json.dumps({"attrs": dict(self.attrs), "m": self.m,
                           "zero_input": self.zero_input}, sort_keys=True)

    @property
    def p(self) -> Params:
        return Params.of(dict(self.attrs))

    @property
    def int8(self) -> bool:
        return self.p.table == "int8"

    def shapes(self) -> list[tuple[tuple[int, ...], str]]:
        """The kernel's parameters: x [M, K], w, scale, [zero], out [M, N]."""
        p = self.p
        want = p.input_shapes()
        out = [((self.m, p.k), "float32"), (want["w"], "uint8"), (want["scale"], p.scale_dtype)]
        if self.zero_input:
            out.append((want["zero"], "uint8"))
        if p.two_level:
            out.append((want["super"], "float16"))
        return out + [((self.m, p.n), "float32")]


@dataclass
class KernelArgs:
    """A kernel's parameter buffers by role (`LutSpec.shapes` order)."""

    x: tirx.Buffer
    w: tirx.Buffer
    scale: tirx.Buffer
    zero: tirx.Buffer | None
    sup: tirx.Buffer | None
    out: tirx.Buffer

    @classmethod
    def of(cls, spec: LutSpec, bufs: list) -> KernelArgs:
        x, w, scale, *rest = bufs
        zero = rest.pop(0) if spec.zero_input else None
        sup = rest.pop(0) if spec.p.two_level else None
        return cls(x, w, scale, zero, sup, rest[0])

    def scale_at(self, spec: LutSpec, t: Expr, g: Expr, idx: Expr) -> Expr:
        """The block scale of tile t, scale row g, columns idx (a column or a Ramp) as
        float32: widened float16, or u8 * d for two-level scales (exact in float32)."""
        s = widen(tirx.BufferLoad(self.scale, [t, g, idx]))
        if self.sup is None:
            return s
        d = widen(tirx.BufferLoad(self.sup, [t, g // spec.p.super_block, idx]))
        return s * d


def _vec(buf: tirx.Buffer, start: Expr, lanes: int) -> Expr:
    return tirx.BufferLoad(buf, [tirx.Ramp(start, 1, lanes)])


def splat(value: float, dtype: str, lanes: int) -> Expr:
    return tirx.Broadcast(tirx.const(value, dtype), lanes)


def dtype(x: Expr) -> str:
    return str(x.ty.dtype)


def lanes_of(x: Expr) -> int:
    d = dtype(x)
    return int(d.split("x")[1]) if "x" in d else 1


def widen(x: Expr) -> Expr:
    """A scale load as float32 (float16 scales widen exactly: vcvtph2ps, fcvtl, __half2float;
    uint8 ones too)."""
    d = dtype(x)
    if d.startswith("float32"):
        return x
    return x.astype("float32" if lanes_of(x) == 1 else f"float32x{lanes_of(x)}")


def fence(x: Expr) -> Expr:
    """x, opaque to LLVM's floating-point contraction (no FMA across it)."""
    return tirx.call_llvm_pure_intrin(dtype(x), "llvm.arithmetic.fence", x)


# ---- tables -----------------------------------------------------------------------------------
@dataclass
class Tables:
    """Per row: tables tab [M * J * 16] (int8 or float32), ls [M * H], Z [M * H]. With
    `paired` (the chunk_slots 4 layout) each group of 8 chunks is stored even chunks first,
    then odd ones: the low nibbles' four tables are 64 adjacent bytes, the high nibbles'
    the next 64 (`stored`)."""

    tab: tirx.Buffer
    ls: tirx.Buffer | None
    zs: tirx.Buffer
    paired: bool = False
    ks: tirx.Buffer | None = None  # shared table scales: each block's k_h [M * H]

    def stored(self, chunk: Expr) -> Expr:
        """Where chunk's table is stored among its row's tables (in chunks)."""
        if not self.paired:
            return chunk
        return chunk // 8 * 8 + chunk % 2 * 4 + chunk % 8 // 2

    def entry(self, row: Expr, chunk: Expr, idx: Expr, chunks: int) -> Expr:
        return tirx.BufferLoad(self.tab, [(row * chunks + self.stored(chunk)) * ENTRIES + idx])


def _x_at(x: tirx.Buffer, row: Expr, k: Expr, k_real: int) -> Expr:
    """x[row, k], 0 past K (the padding of K_p)."""
    return tirx.Select(k < k_real, tirx.BufferLoad(x, [row, tirx.min(k, k_real - 1)]),
                       tirx.const(0.0, "float32"))


def _signed_table(x: tirx.Buffer, row: Expr, chunk: Expr, k: int) -> Expr:
    """T[row, chunk, 0..15] as float32x16: lane i = sum_t (2 bit_t(i) - 1) x[4 chunk + t]."""
    lane = tirx.Ramp(0, 1, ENTRIES)
    acc = None
    for t in range(G_ACT):
        bit = tirx.bitwise_and(tirx.shift_right(lane, splat(t, "int32", ENTRIES)),
                               splat(1, "int32", ENTRIES))
        sign = (bit * splat(2, "int32", ENTRIES) - splat(1, "int32", ENTRIES)).astype(
            f"float32x{ENTRIES}")
        term = tirx.Broadcast(_x_at(x, row, chunk * G_ACT + t, k), ENTRIES) * sign
        acc = term if acc is None else acc + term
    return acc


def _raw_table(x: tirx.Buffer, at: tuple, raw: tirx.Buffer, start: Expr,
               amax: tirx.Buffer) -> None:
    """One chunk's T into raw[start ..] and its |T| into the running max `amax`, which
    reads the stored T back: the expression once (LLVM cannot prove the store leaves x
    alone, so a second use of it built the table twice)."""
    row, chunk, k = at
    T.buffer_store(raw, _signed_table(x, row, chunk, k), [tirx.Ramp(start, 1, ENTRIES)])
    T.buffer_store(amax, tirx.max(_vec(amax, 0, ENTRIES), tirx.abs(_vec(raw, start, ENTRIES))),
                   [tirx.Ramp(0, 1, ENTRIES)])


def tables(spec: LutSpec, x: tirx.Buffer) -> Tables:
    """Build every row's tables (see the module docstring)."""
    p = spec.p
    chunks, blocks, per = p.kp // G_ACT, p.blocks, p.tblock // G_ACT
    dt = "int8" if spec.int8 else "float32"
    tab = T.alloc_buffer((spec.m * chunks * ENTRIES,), dt)
    ls = T.alloc_buffer((spec.m * blocks,), "float32") if spec.int8 else None
    zs = T.alloc_buffer((spec.m * blocks,), "int32" if spec.int8 else "float32")
    loop = T.parallel if spec.m * p.kp >= 1 << 16 and spec.m * blocks > 1 else T.serial
    paired = p.layout.chunk_slots == 4  # a block's chunks are a multiple of 8 (Params.check)
    if p.table_steps:
        return _shared_tables(spec, x, Tables(tab, T.alloc_buffer(
            (spec.m * p.supers,), "float32"), zs, paired,
            T.alloc_buffer((spec.m * blocks,), "int32")))
    with loop(0, spec.m * blocks) as mh:
        row, h = mh // blocks, mh % blocks
        raw = T.alloc_buffer((per * ENTRIES,), "float32")
        amax = T.alloc_buffer((ENTRIES,), "float32")
        T.buffer_store(amax, splat(0.0, "float32", ENTRIES), [tirx.Ramp(0, 1, ENTRIES)])
        with T.serial(0, per) as jj:
            _raw_table(x, (row, h * per + jj, p.k), raw, jj * ENTRIES, amax)
        base = (row * chunks + h * per) * ENTRIES
        if spec.int8:
            _quantise(raw, amax, Tables(tab, ls, zs, paired), (mh, base, per))
        else:
            _keep_float(raw, Tables(tab, ls, zs, paired), (mh, base, per))
    return Tables(tab, ls, zs, paired)


def _hmax(v: Expr) -> Expr:
    """The largest lane of a vector (a power of two lanes), halving in a tree: 4 steps for
    16 lanes where a running scalar max is a chain of 16."""
    n = lanes_of(v)
    while n > 1:
        n //= 2
        v = tirx.max(tirx.Shuffle([v], [tirx.const(i, "int32") for i in range(n)]),
                     tirx.Shuffle([v], [tirx.const(n + i, "int32") for i in range(n)]))
    return v


def _largest(amax: tirx.Buffer, start: Expr, count: int) -> Expr:
    """max of amax[start .. start + count) (non-negative): a vector of ENTRIES in a tree
    (`_hmax`), else a running max in a one-element buffer."""
    if count == ENTRIES:
        return _hmax(_vec(amax, start, ENTRIES))
    best = T.alloc_buffer((1,), "float32")
    T.buffer_store(best, tirx.const(0.0, "float32"), [0])
    with T.serial(0, count) as i:
        T.buffer_store(best, tirx.max(tirx.BufferLoad(best, [0]),
                                      tirx.BufferLoad(amax, [start + i])), [0])
    return tirx.BufferLoad(best, [0])


def f32(value: float) -> Expr:
    return tirx.const(float(value), "float32")


def _shared_tables(spec: LutSpec, x: tirx.Buffer, tb: Tables) -> Tables:
    """int8 tables sharing a scale per super-block (etch_lut.quantise_shared, element for
    element): per row and super-block, every block's raw tables and amax, then L, each
    block's k_h, Tq and Z."""
    p = spec.p
    chunks, blocks, per, period = p.kp // G_ACT, p.blocks, p.tblock // G_ACT, p.period
    sig = p.supers
    loop = T.parallel if spec.m * p.kp >= 1 << 16 and spec.m * sig > 1 else T.serial
    with loop(0, spec.m * sig) as ms:
        row, s = ms // sig, ms % sig
        raw = T.alloc_buffer((period * per * ENTRIES,), "float32")
        amax = T.alloc_buffer((ENTRIES,), "float32")
        bmax = T.alloc_buffer((period,), "float32")  # each block's amax (0 past the last)
        with T.serial(0, period) as hb:
            h = s * period + hb
            T.buffer_store(amax, splat(0.0, "float32", ENTRIES), [tirx.Ramp(0, 1, ENTRIES)])
            with T.If(h < blocks), T.Then(), T.serial(0, per) as jj:
                _raw_table(x, (row, h * per + jj, p.k), raw, (hb * per + jj) * ENTRIES, amax)
            T.buffer_store(bmax, _largest(amax, 0, ENTRIES), [hb])
        top = T.alloc_buffer((1,), "float32")
        T.buffer_store(top, _largest(bmax, 0, period), [0])
        a = tirx.BufferLoad(top, [0])
        zero, steps = f32(0), f32(p.table_steps)
        T.buffer_store(tb.ls, a / f32(2 * TABLE_MAX * p.table_steps), [ms])
        inv_s = tirx.Select(a > zero, f32(TABLE_MAX * p.table_steps) / a, zero)
        with T.serial(0, period) as hb:
            h = s * period + hb
            with T.If(h < blocks), T.Then():
                mine = tirx.BufferLoad(bmax, [hb])
                k = tirx.Select(a > zero, tirx.max(tirx.min(tirx.ceil(steps * mine / a),
                                                            steps), f32(1)), steps)
                kb = T.alloc_buffer((1,), "float32")
                T.buffer_store(kb, k, [0])
                kf = tirx.BufferLoad(kb, [0])
                T.buffer_store(tb.ks, kf.astype("int32"), [row * blocks + h])
                base = (row * chunks + h * per) * ENTRIES
                _quantised(raw, inv_s / kf, tb, (row * blocks + h, base, per, hb * per))
    return tb


def _quantise(raw: tirx.Buffer, amax: tirx.Buffer, t: Tables, at: tuple) -> None:
    """int8 tables of one block: Tq, ls, Z (etch_lut.quantise_tables, element for element)."""
    mh, base, per = at
    a = _largest(amax, 0, ENTRIES)
    zero = tirx.const(0.0, "float32")
    inv = tirx.Select(a > zero, tirx.const(float(TABLE_MAX), "float32") / a, zero)
    T.buffer_store(t.ls, a / tirx.const(float(2 * TABLE_MAX), "float32"), [mh])
    _quantised(raw, inv, t, (mh, base, per, 0))


def _quantised(raw: tirx.Buffer, inv: Expr, t: Tables, at: tuple) -> None:
    """Tq = clip(nearbyint(T * inv), +-127) of one block's `per` tables (from table `first`
    of `raw`) into the row's tables at `base`, and the block's Z into zs[mh]."""
    mh, base, per, first = at
    zsum = T.alloc_buffer((1,), "int32")
    T.buffer_store(zsum, tirx.const(0, "int32"), [0])
    with T.serial(0, per) as jj:
        scaled = tirx.nearbyint(_vec(raw, (first + jj) * ENTRIES, ENTRIES) *
                                tirx.Broadcast(inv, ENTRIES))
        lim = float(TABLE_MAX)
        q = tirx.max(tirx.min(scaled, splat(lim, "float32", ENTRIES)),
                     splat(-lim, "float32", ENTRIES)).astype(f"int8x{ENTRIES}")
        at = base + t.stored(jj) * ENTRIES
        T.buffer_store(t.tab, q, [tirx.Ramp(at, 1, ENTRIES)])
        top = tirx.BufferLoad(t.tab, [at + ENTRIES - 1]).astype("int32")
        T.buffer_store(zsum, tirx.BufferLoad(zsum, [0]) + top, [0])
    T.buffer_store(t.zs, tirx.BufferLoad(zsum, [0]), [mh])


def _keep_float(raw: tirx.Buffer, t: Tables, at: tuple) -> None:
    mh, base, per = at
    zsum = T.alloc_buffer((1,), "float32")
    T.buffer_store(zsum, tirx.const(0.0, "float32"), [0])
    with T.serial(0, per) as jj:
        T.buffer_store(t.tab, _vec(raw, jj * ENTRIES, ENTRIES),
                       [tirx.Ramp(base + t.stored(jj) * ENTRIES, 1, ENTRIES)])
        top = tirx.BufferLoad(raw, [jj * ENTRIES + ENTRIES - 1])
        T.buffer_store(zsum, tirx.BufferLoad(zsum, [0]) + top, [0])
    T.buffer_store(t.zs, tirx.BufferLoad(zsum, [0]), [mh])


# ---- combining a block ------------------------------------------------------------------------
def offset(spec: LutSpec, zero: tirx.Buffer | None, t: Expr, g: Expr, col: Expr,
           lanes: int) -> Expr:
    """c = mu (2^b - 1) - 2 zero as int32 (lanes columns of tile t from column `col`)."""
    p = spec.p
    full = p.mu * ((1 << p.layout.bits) - 1)
    if zero is None:
        return splat(full - 2 * p.zero, "int32", lanes) if lanes > 1 else \
            tirx.const(full - 2 * p.zero, "int32")
    idx = tirx.Ramp(col, 1, lanes) if lanes > 1 else col
    z = tirx.BufferLoad(zero, [t, g, idx]).astype("int32" if lanes == 1 else f"int32x{lanes}")
    two = splat(2, "int32", lanes) if lanes > 1 else tirx.const(2, "int32")
    base = splat(full, "int32", lanes) if lanes > 1 else tirx.const(full, "int32")
    return base - two * z


def combine(spec: LutSpec, acc: Expr, z: Expr, c: Expr | None, s: Expr, ls: Expr | None,
            y: Expr) -> Expr:
    """y + contribution of one block: int8 ((f32(A + c Z) * s) * ls), float (D * s) / 2.
    c None (int8): acc is D already (the tile started its accumulators at c Z)."""
    lanes = lanes_of(acc)
    ft = "float32" if lanes == 1 else f"float32x{lanes}"
    if spec.int8:
        d = acc if c is None else acc + c * (tirx.Broadcast(z, lanes) if lanes > 1 else z)
        return y + fence(d.astype(ft) * s * (tirx.Broadcast(ls, lanes) if lanes > 1 else ls))
    zf = tirx.Broadcast(z, lanes) if lanes > 1 else z
    d = acc + c.astype(ft) * zf
    half = splat(0.5, "float32", lanes) if lanes > 1 else tirx.const(0.5, "float32")
    return y + d * s * half


def combine_u8(acc: Expr, u8: Expr, d: Expr, ls: Expr, y: Expr,
               times: Callable[[Expr, Expr], Expr] | None = None) -> Expr:
    """`combine` for int8 tables and two-level scales, acc = D (int32 lanes) with |D| 255 <
    2^24: y + ((f32(D u8) * f32(d)) * ls). The same float32 as ((f32(D) * s) * ls), s =
    f32(u8) * f32(d): s is exact, so f32(D) * s rounds the exact D u8 d once; D u8 is an
    exact integer in float32, so f32(D u8) * f32(d) rounds the same real once (a zero scale
    gives +0 for -0: y starts at +0 and x + (+-0) is the same for every x of it). One
    integer multiply instead of converting the uint8 scale and multiplying it by d;
    `times(D, u8)` (a kernel's own exact form of it) where given."""
    lanes = lanes_of(acc)
    prod = times(acc, u8) if times is not None else acc * u8.astype(f"int32x{lanes}")
    prod = prod.astype(f"float32x{lanes}")
    return y + fence(prod * d * tirx.Broadcast(ls, lanes))


def combine_shared(i: Expr, d: Expr, ls: Expr, y: Expr) -> Expr:
    """y + ((f32(I) * f32(d)) * L): a super-block's sum of shared-scale blocks
    (etch_lut.combine_shared); d already float32."""
    lanes = lanes_of(i)
    ft = "float32" if lanes == 1 else f"float32x{lanes}"
    return y + fence(i.astype(ft) * d * (tirx.Broadcast(ls, lanes) if lanes > 1 else ls))


# ---- the portable kernel ----------------------------------------------------------------------
def build(spec: LutSpec, body: Callable[[LutSpec, list, Tables], None]) -> tirx.PrimFunc:
    """A PrimFunc with the spec's parameters: tables, then `body(spec, buffers, tables)`."""
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        bufs = [T.arg(f"p{k}", T.buffer(shape, dt)) for k, (shape, dt) in
                enumerate(spec.shapes())]
        body(spec, bufs, tables(spec, bufs[0]))
    func = ib.get()
    return func.with_attr("etch.kind", KIND).with_attr("etch.lut", spec.to_json())


def tile_loop(spec: LutSpec, tiles: int) -> Callable:
    """Parallel over column tiles when the kernel has the work to pay for it."""
    p = spec.p
    work = spec.m * p.kp * p.layout.padded_n(p.n) * p.layout.bits
    return T.parallel if work >= PARALLEL_MIN_WORK and tiles > 1 else T.serial


def portable_body(spec: LutSpec, bufs: list, tb: Tables) -> None:
    """Scalar look-ups: per tile and row, per block, per byte and plane."""
    p, lay = spec.p, spec.p.layout
    bp = KernelArgs.of(spec, bufs)
    w, out = bp.w, bp.out
    tiles, kb_per = lay.padded_n(p.n) // lay.tile_cols, p.tblock // lay.k_per_byte
    tc, cpv, chunks = lay.tile_cols, lay.cols_per_vector, p.kp // G_ACT
    per_col = lay.bytes_per_col
    acc_t = "int32" if spec.int8 else "float32"
    with tile_loop(spec, tiles)(0, tiles) as t, T.serial(0, spec.m) as r:
        y = T.alloc_buffer((tc,), "float32")
        isum = T.alloc_buffer((tc,), "int32") if p.table_steps else None
        with T.serial(0, tc) as c:
            T.buffer_store(y, tirx.const(0.0, "float32"), [c])
            if isum is not None:
                T.buffer_store(isum, tirx.const(0, "int32"), [c])
        with T.serial(0, p.blocks) as h:
            g = h // (p.group // p.tblock)
            acc = T.alloc_buffer((tc,), acc_t)
            with T.serial(0, tc) as c:
                T.buffer_store(acc, tirx.const(0, acc_t), [c])
            with T.grid(kb_per, lay.tile_vectors, lay.plane_vectors, lay.vector_bytes) as (
                    kb, v, q, b):
                kbyte = h * kb_per + kb
                byte = tirx.BufferLoad(w, [t, kbyte, v, q, b]).astype("int32")
                plane = q * lay.slots + b % lay.slots
                chunk = 2 * (kbyte * lay.chunk_slots + b % per_col // lay.slots)
                looked = tb.entry(r, chunk, byte % 16, chunks).astype(acc_t) + \
                    tb.entry(r, chunk + 1, byte // 16, chunks).astype(acc_t)
                weight = tirx.Select(plane < lay.bits, tirx.shift_left(
                    tirx.const(p.mu, "int32"), plane), tirx.const(0, "int32"))
                col = v * cpv + b // per_col
                T.buffer_store(acc, tirx.BufferLoad(acc, [col]) + looked * weight.astype(acc_t),
                               [col])
            if p.table_steps:
                _portable_shared(spec, bp, tb, (acc, y, isum), (t, r, h, g))
            else:
                _portable_combine(spec, bp, tb, (acc, y), (t, r, h, g))
        with T.serial(0, tc) as c, T.If(t * tc + c < p.n), T.Then():
            T.buffer_store(out, tirx.BufferLoad(y, [c]), [r, t * tc + c])


def _portable_combine(spec: LutSpec, bp: KernelArgs, tb: Tables, bufs: tuple,
                      at: tuple) -> None:
    """One block's contribution per column: y + ((f32(D) * scale) * ls)."""
    p = spec.p
    acc, y = bufs
    t, r, h, g = at
    with T.serial(0, p.layout.tile_cols) as c:
        ls = tirx.BufferLoad(tb.ls, [r * p.blocks + h]) if tb.ls is not None else None
        new = combine(spec, tirx.BufferLoad(acc, [c]),
                      tirx.BufferLoad(tb.zs, [r * p.blocks + h]),
                      offset(spec, bp.zero, t, g, c, 1),
                      bp.scale_at(spec, t, g, c),
                      ls,
                      tirx.BufferLoad(y, [c]))
        T.buffer_store(y, new, [c])


def _portable_shared(spec: LutSpec, bp: KernelArgs, tb: Tables, bufs: tuple,
                     at: tuple) -> None:
    """One block of shared table scales: I += D u8 k_h per column; at the super-block's
    last block y += ((f32(I) * d) * L) and I restarts."""
    p = spec.p
    acc, y, isum = bufs
    t, r, h, g = at
    k = tirx.BufferLoad(tb.ks, [r * p.blocks + h])
    sig = p.supers
    with T.serial(0, p.layout.tile_cols) as c:
        d = tirx.BufferLoad(acc, [c]) + offset(spec, bp.zero, t, g, c, 1) * \
            tirx.BufferLoad(tb.zs, [r * p.blocks + h])
        u8 = tirx.BufferLoad(bp.scale, [t, g, c]).astype("int32")
        T.buffer_store(isum, tirx.BufferLoad(isum, [c]) + d * u8 * k, [c])
        last = tirx.Or(h % p.period == p.period - 1, h == p.blocks - 1)
        with T.If(last), T.Then():
            sup = widen(tirx.BufferLoad(bp.sup, [t, h // p.period, c]))
            ls = tirx.BufferLoad(tb.ls, [r * sig + h // p.period])
            T.buffer_store(y, combine_shared(tirx.BufferLoad(isum, [c]), sup, ls,
                                             tirx.BufferLoad(y, [c])), [c])
            T.buffer_store(isum, tirx.const(0, "int32"), [c])


def portable_kernel(spec: LutSpec) -> tirx.PrimFunc:
    return build(spec, portable_body)
