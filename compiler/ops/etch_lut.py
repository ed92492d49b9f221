"""`etch.LutGemm`: low-bit weights times float activations by table look-up (T-MAC, ELUTQ).

    y[..., n] = sum_k x[..., k] * W[k, n],   W[k, n] = scale[g, n] * (mu * u[k, n] - zero[g, n])

with g = k // group and u the b-bit unsigned code (b in 1..4). Binary {-1,+1} is u in {0,1}
with mu = 2, zero = 1; ternary {-1,0,+1} is u in {0,1,2}, zero = 1; signed b-bit codes are
offset by 2^(b-1) (zero = 2^(b-1)). The reference below *is* the look-up algorithm, not a
dequantise and multiply. With s_p = 2 bit_p(u) - 1 in {-1,+1},
    2 (mu u - zero) = mu sum_p 2^p s_p + c,   c = mu (2^b - 1) - 2 zero,
so every bit-plane multiplies the activations by signs only:

1. Activations in groups of G_ACT = 4 (chunk j = rows 4j..4j+3 of K, K zero-padded to
   K_p): one table per row and chunk, T[m, j, i] = sum_t (2 bit_t(i) - 1) x[m, 4j + t]
   (t = 0..3 in order, float32; T-MAC's signed "mirror" table, T[15 - i] = -T[i], whose
   quantisation error is about half that of a table of subset sums), built at run time and
   shared by every column and every bit-plane. T[m, j, 15] is the chunk's sum.
2. Table mode "int8" (the default; T-MAC's table quantisation): per row and table block h
   of `tblock` rows of K, amax = max |T|, Tq = clip(rint(T * (127 / amax)), -127, 127)
   (0 where amax = 0) and ls = amax / 254 (half the step: the 1/2 of the identity above),
   all in float32, round half to even. Mode "float" keeps T (and ls = 1/2).
3. The codes are stored as bit-planes: the nibble of plane p for chunk j and column n holds
   bit p of u[4j + t, n] at bit t. A[m, h, n] = mu * sum_p 2^p sum_{j in h} T[m, j,
   nib_p[j, n]] and Z[m, h] = sum_{j in h} T[m, j, 15]: plane p weighted by 2^p.
4. Per block, the scale and zero point are applied once: D = A + c[g, n] * Z, and
   int8: y = 0; for h in order: y = y + ((f32(D) * scale[g, n]) * ls[m, h])  (each
         operation rounded to float32, never fused: D is an exact integer, so a kernel that
         proves its integer sums cannot overflow matches this bit for bit);
   float: y = sum_h D * scale[g, n] / 2 in float64, rounded to float32 once.
5. Shared table scales (attribute `table_steps` K in 2..128; int8 tables and two-level
   scales only, chosen by the pass where its bound keeps the sums in int32): the tables
   of a super-block (the `super_block` scale groups of one float16 d) share one scale
   L = f32(amax_s / f32(254 K)), amax_s the largest amax of its table blocks; block h
   takes k_h = clip(ceil(f32(f32(K) * amax_h) / amax_s), 1, K) of its steps (K for an
   all-zero super-block) and is quantised with f32(f32(127 K / amax_s) / k_h) (Tq as in
   step 2: its step is within 1 + 1/k_h of its own). Then, exactly in integers,
       I = sum_{h in s} D_h * u8[g(h), n] * k_h
   and per super-block in order y = y + ((f32(I) * f32(d[s, n])) * L_s), each operation
   rounded to float32 (f32(I) to nearest even). A kernel spends per block and column one
   integer multiply-add (the block's float steps move to the super-block), which the
   pass bounds: super_block * group / tblock blocks of |D| 255 K stay below 2^31 and
   255 K below 2^15 (`max_table_steps`).

The codes arrive in the layout `LutLayout` records (chosen by passes/lut_lowering.py for the
kernel's access pattern): w[t, kb, v, q, b] (uint8) holds, for column tile t (tile_cols
columns), byte position kb, vector v of the tile and plane vector q, byte b of a
`vector_bytes` vector. With e = chunk_slots (1, 2 or 4) and r = b % (slots * e): column
t * tile_cols + v * (vector_bytes / (slots * e)) + b // (slots * e), plane q * slots +
r % slots, chunks 2 c and 2 c + 1 in the low and high nibble, c = kb * e + r // slots.
"slots" 2 or 4 put the planes of one column in adjacent bytes (one x86 look-up serves every
plane, vpmaddubsw weighs them); slots 1 with plane_vectors = bits puts one plane per vector
(NEON tbl + widening adds). chunk_slots 2 puts two chunk pairs of one column in adjacent
bytes (a byte position covers 16 rows of K: with AVX512-VBMI's 64-entry vpermb one look-up
reads four chunks' tables and vpmaddubsw adds a column's pair in place, no unpacking: the
1- and 3-bit layouts); chunk_slots 4 puts four (a byte position covers 32 rows: the low
nibbles' four chunk tables are one vpermb table and the high nibbles' another, and
vpdpbusd adds a column's four bytes into its int32 lane). Planes past `bits` and columns past N are zero nibbles / zero
scales.

Inputs: x float32 [..., K]; w uint8 [N_p / tile_cols, K_p / 8, tile_vectors,
plane_vectors, vector_bytes]; scale (`scale_dtype`: float32, or float16 where the pass found
every scale exactly representable in it, so widening it to float32 is exact and the
formula above is unchanged; fewer bytes to stream; or uint8: two-level scales, below) and
zero (optional, else attribute `zero`) uint8 [N_p / tile_cols, K_p / group, tile_cols] (per
column tile, so a kernel streams a tile's codes and parameters from two contiguous ranges).
Two-level scales (scale_dtype "uint8", the k-quant way: `--scale-format u8`): scale holds
an integer u8[g, n] per block and input 5, `super` float16 [N_p / tile_cols, ceil(G /
super_block), tile_cols], one float16 d per column and super-block of `super_block` blocks;
the block's scale is scale[g, n] = f32(u8[g, n]) * f32(d[g // super_block, n]), exact in
float32 (8 x 11 significant bits < 24), so the formula above is unchanged and every kernel
forms the same float32 value. Attributes: k, n, bits, mu, zero, group, tblock, table
("int8" | "float"), scale_dtype ("float32" | "float16" | "uint8"), super_block (uint8
scales), vector_bytes, slots, plane_vectors, tile_vectors, prefetch (bytes: how far ahead
in its stream a kernel hints the codes and block parameters into L2; 0 = no hint; chosen
by the pass per target, no effect on the result), table_steps (step 5; 0: per-block
table scales). Output float32 [..., N].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Value
from compiler.ops import OpDef

G_ACT = 4           # activations per table: 16 entries
ENTRIES = 1 << G_ACT
TABLE_MAX = 127     # int8 tables span [-127, 127]
TABLE_MODES = ("int8", "float")
SCALE_DTYPES = ("float32", "float16", "uint8")
MAX_PREFETCH = 1 << 16  # bytes ahead: beyond, a hint would land after L2 evicted it
MAX_TABLE_STEPS = 128  # 255 K below 2^15: a kernel's int16 multiplies (vpmaddwd) hold it
Spec = list[tuple[tuple[int, ...], str]]


@dataclass(frozen=True)
class LutLayout:
    """Where each weight nibble lives in the packed code array (see the module docstring)."""

    bits: int
    vector_bytes: int = 32
    slots: int = 2
    plane_vectors: int = 1
    tile_vectors: int = 1
    chunk_slots: int = 1

    @classmethod
    def of(cls, attrs: dict) -> LutLayout:
        return cls(*(int(attrs[k]) for k in ("bits", "vector_bytes", "slots", "plane_vectors",
                                             "tile_vectors")), int(attrs.get("chunk_slots", 1)))

    def attrs(self) -> dict[str, int]:
        return {"bits": self.bits, "vector_bytes": self.vector_bytes, "slots": self.slots,
                "plane_vectors": self.plane_vectors, "tile_vectors": self.tile_vectors,
                "chunk_slots": self.chunk_slots}

    @property
    def bytes_per_col(self) -> int:
        """Adjacent bytes of one column in a vector: its plane slots times its chunk slots."""
        return self.slots * self.chunk_slots

    @property
    def k_per_byte(self) -> int:
        """Rows of K a byte position covers (two nibbles of 4 per chunk slot)."""
        return 8 * self.chunk_slots

    @property
    def cols_per_vector(self) -> int:
        return self.vector_bytes // self.bytes_per_col

    @property
    def tile_cols(self) -> int:
        return self.tile_vectors * self.cols_per_vector

    @property
    def planes(self) -> int:
        """Planes stored (bits, rounded up to what the slots hold)."""
        return self.slots * self.plane_vectors

    def padded_n(self, n: int) -> int:
        return -(-n // self.tile_cols) * self.tile_cols

    def shape(self, kp: int, n: int) -> tuple[int, ...]:
        return (self.padded_n(n) // self.tile_cols, kp // self.k_per_byte, self.tile_vectors,
                self.plane_vectors, self.vector_bytes)

    def check(self) -> None:
        """EtchError unless the layout is one the kernels know (values from a model file)."""
        ok = (1 <= self.bits <= 4 and self.vector_bytes in (16, 32, 64, 128)
              and self.slots in (1, 2, 4) and 1 <= self.plane_vectors <= 4
              and 1 <= self.tile_vectors <= 64 and self.planes >= self.bits
              and self.planes <= 4 and self.chunk_slots in (1, 2, 4)
              and self.bytes_per_col <= self.vector_bytes // 4)
        if not ok:
            raise EtchError(f"etch.LutGemm: layout {self.attrs()} is not a valid LUT layout")

    def pack(self, u: np.ndarray) -> np.ndarray:
        """Codes u [K_p, N] (0 <= u < 2^bits, K_p a multiple of k_per_byte) -> the packed
        array."""
        kp, n = u.shape
        npad = self.padded_n(n)
        full = np.zeros((kp, npad), np.uint8)
        full[:, :n] = u
        planes = np.arange(self.planes)
        bit = (full[None] >> planes[:, None, None]) & 1                  # [P, K_p, N_p]
        nib = (bit.reshape(self.planes, kp // 4, 4, npad)
               << np.arange(4)[None, None, :, None]).sum(axis=2)        # [P, K_p/4, N_p]
        byte = (nib[:, 0::2] | (nib[:, 1::2] << 4)).astype(np.uint8)     # [P, K_p/8, N_p]
        e, kb = self.chunk_slots, kp // self.k_per_byte
        v = byte.reshape(self.plane_vectors, self.slots, kb, e, npad // self.tile_cols,
                         self.tile_vectors, self.cols_per_vector)
        # -> [t, kb, v, q, col-in-vector, chunk slot, plane slot]
        return np.ascontiguousarray(v.transpose(4, 2, 5, 0, 6, 3, 1)).reshape(
            self.shape(kp, n))

    def tile_params(self, a: np.ndarray) -> np.ndarray:
        """Block parameters [G, N_p] -> [N_p / tile_cols, G, tile_cols]."""
        g, npad = a.shape
        return np.ascontiguousarray(a.reshape(g, npad // self.tile_cols, self.tile_cols)
                                    .transpose(1, 0, 2))

    def untile_params(self, a: np.ndarray) -> np.ndarray:
        """Inverse of `tile_params`."""
        return a.transpose(1, 0, 2).reshape(a.shape[1], -1)

    def nibbles(self, w: np.ndarray) -> np.ndarray:
        """The packed array -> plane nibbles [planes, K_p / 4, N_p] (inverse of `pack`)."""
        tiles, kb = w.shape[:2]
        k8 = kb * self.chunk_slots
        v = w.reshape(tiles, kb, self.tile_vectors, self.plane_vectors, self.cols_per_vector,
                      self.chunk_slots, self.slots).transpose(3, 6, 1, 5, 0, 2, 4)
        byte = v.reshape(self.planes, k8, tiles * self.tile_cols)      # [q s, kb e, t v c]
        nib = np.empty((self.planes, 2 * k8, byte.shape[-1]), np.uint8)
        nib[:, 0::2], nib[:, 1::2] = byte & 15, byte >> 4
        return nib


# ---- the algorithm --------------------------------------------------------------------------
def build_tables(x: np.ndarray) -> np.ndarray:
    """x [M, K_p] float32 -> T [M, K_p / 4, 16] float32: T[m, j, i] = sum_t (2 bit_t(i) - 1)
    x[4j+t], added in t order from 0 (the kernels add in the same order)."""
    m, kp = x.shape
    chunks = x.reshape(m, kp // 4, 4).astype(np.float32)
    t = np.zeros((m, kp // 4, ENTRIES), np.float32)
    for i in range(ENTRIES):
        acc = np.zeros((m, kp // 4), np.float32)
        for bit in range(G_ACT):
            acc = acc + chunks[:, :, bit] if i >> bit & 1 else acc - chunks[:, :, bit]
        t[:, :, i] = acc
    return t


def quantise_tables(t: np.ndarray, tblock: int) -> tuple[np.ndarray, np.ndarray]:
    """T [M, J, 16] -> (Tq int8 [M, J, 16], ls float32 [M, J / (tblock / 4)]): T-MAC's table
    quantisation per row and block of tblock / 4 tables (ls is half the step)."""
    m, j, _ = t.shape
    per = tblock // G_ACT
    amax = np.abs(t).reshape(m, j // per, per * ENTRIES).max(axis=2)
    ls = (amax / np.float32(2 * TABLE_MAX)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(TABLE_MAX) / amax, np.float32(0)).astype(np.float32)
    scaled = t * np.repeat(inv, per, axis=1)[:, :, None]
    tq = np.clip(np.rint(scaled), -TABLE_MAX, TABLE_MAX).astype(np.int8)
    return tq, ls


def quantise_shared(t: np.ndarray, tblock: int, period: int, steps: int) -> tuple:
    """T [M, J, 16] -> (Tq int8 [M, J, 16], L float32 [M, sigma], k int64 [M, H]): step 5's
    table quantisation, the blocks of a super-block (`period` table blocks) sharing one
    scale L, block h quantised with k_h of its K steps."""
    m, j, _ = t.shape
    per = tblock // G_ACT
    h_count = j // per
    sig = -(-h_count // period)
    amax = np.abs(t).reshape(m, h_count, per * ENTRIES).max(axis=2)
    padded = np.zeros((m, sig * period), np.float32)
    padded[:, :h_count] = amax
    amax_s = padded.reshape(m, sig, period).max(axis=2)
    top = np.repeat(amax_s, period, axis=1)[:, :h_count]
    big = np.float32(steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(top > 0, np.ceil((big * amax).astype(np.float32) / top), big)
        k = np.clip(ratio, 1, steps).astype(np.int64)
        inv_s = np.where(amax_s > 0, np.float32(TABLE_MAX * steps) / amax_s, np.float32(0))
    inv = np.repeat(inv_s.astype(np.float32), period, axis=1)[:, :h_count] / \
        k.astype(np.float32)
    scaled = t * np.repeat(inv.astype(np.float32), per, axis=1)[:, :, None]
    tq = np.clip(np.rint(scaled), -TABLE_MAX, TABLE_MAX).astype(np.int8)
    ls = (amax_s / np.float32(2 * TABLE_MAX * steps)).astype(np.float32)
    return tq, ls, k


def combine_shared(d: np.ndarray, u8: np.ndarray, sup: np.ndarray, ls: np.ndarray,
                   k: np.ndarray, p: Params) -> np.ndarray:
    """Step 5: I per super-block in integers, then y = y + ((f32(I) * f32(d)) * L)."""
    m, h_count, npad = d.shape
    per_group, period = p.group // p.tblock, p.period
    u8_rows = np.repeat(u8.astype(np.int64), per_group, axis=0)[:h_count]   # [H, N_p]
    terms = d * u8_rows[None] * k[:, :, None]
    y = np.zeros((m, npad), np.float32)
    for sig in range(-(-h_count // period)):
        i = terms[:, sig * period:(sig + 1) * period].sum(axis=1)
        y = y + (i.astype(np.float32) * sup[sig].astype(np.float32)) * ls[:, sig:sig + 1]
    return y


def max_table_steps(p: Params, zero_input: bool) -> int:
    """The largest K (MAX_TABLE_STEPS at most; 0: below 2) whose super-block sums stay in
    int32: |D| of a block is at most tblock / 4 tables of 127 times mu (2^b - 1) plus |c|."""
    full = p.mu * ((1 << p.layout.bits) - 1)
    c = max(abs(full), abs(full - 2 * 255)) if zero_input else abs(full - 2 * p.zero)
    d_max = p.tblock // G_ACT * TABLE_MAX * (full + c)
    steps = min(MAX_TABLE_STEPS, ((1 << 31) - 1) // (p.period * d_max * 255))
    return steps if steps >= 2 else 0


def block_sums(t: np.ndarray, nib: np.ndarray, tblock: int, mu: int, dtype: Any) -> tuple:
    """(A [M, H, N_p], Z [M, H]) of step 3 over the planes of `nib` [bits, J, N_p] (stored
    padding planes take no part), summed in `dtype` (int64 for int8 tables)."""
    m, j, _ = t.shape
    per = tblock // G_ACT
    rows = np.arange(j)[:, None]
    a = np.zeros((m, j // per, nib.shape[-1]), dtype)
    for p in range(nib.shape[0]):
        looked = t[:, rows, nib[p]].astype(dtype)                      # [M, J, N_p]
        a += looked.reshape(m, j // per, per, -1).sum(axis=2) * (mu << p)
    z = t[:, :, ENTRIES - 1].astype(dtype).reshape(m, j // per, per).sum(axis=2)
    return a, z


def combine(d: np.ndarray, scale: np.ndarray, ls: np.ndarray, group: int,
            tblock: int) -> np.ndarray:
    """y = sum over blocks h in order of (f32(D) * scale[g(h)]) * ls[h], float32 steps."""
    m, h_count, npad = d.shape
    y = np.zeros((m, npad), np.float32)
    for h in range(h_count):
        s = scale[h * tblock // group].astype(np.float32)
        y = y + (d[:, h].astype(np.float32) * s) * ls[:, h:h + 1]
    return y


def two_level_scale(u8: np.ndarray, d: np.ndarray, super_block: int) -> np.ndarray:
    """Block scales [G, N] = f32(u8 [G, N]) * f32(d [ceil(G / super_block), N]): exact."""
    rows = np.repeat(d.astype(np.float32), super_block, axis=0)[:u8.shape[0]]
    return u8.astype(np.float32) * rows


def lut_gemm(attrs: dict, x: np.ndarray, w: np.ndarray, scale: np.ndarray,
             zero: np.ndarray | None = None, sup: np.ndarray | None = None) -> np.ndarray:
    """The reference: see the module docstring."""
    p = Params.of(attrs)
    lead = x.shape[:-1]
    xm = np.zeros((int(np.prod(lead, dtype=np.int64)), p.kp), np.float32)
    xm[:, :p.k] = x.reshape(-1, p.k)
    nib, bits = p.layout.nibbles(w), p.layout.bits
    scale = p.layout.untile_params(scale)
    u8 = scale
    if p.two_level:
        if sup is None:
            raise EtchError("etch.LutGemm: uint8 scales need their float16 super-block scales")
        sup = p.layout.untile_params(sup)
        scale = two_level_scale(scale, sup, p.super_block)
    zero = None if zero is None else p.layout.untile_params(zero)
    t = build_tables(xm)
    c = np.repeat(p.offsets(zero, scale.shape), p.group // p.tblock, axis=0)  # [H, N_p]
    if p.table_steps:
        tq, ls, k = quantise_shared(t, p.tblock, p.period, p.table_steps)
        a, zs = block_sums(tq, nib[:bits], p.tblock, p.mu, np.int64)
        y = combine_shared(a + c[None] * zs[:, :, None], u8, sup, ls, k, p)
    elif p.table == "int8":
        tq, ls = quantise_tables(t, p.tblock)
        a, zs = block_sums(tq, nib[:bits], p.tblock, p.mu, np.int64)
        y = combine(a + c[None] * zs[:, :, None], scale, ls, p.group, p.tblock)
    else:
        a, zs = block_sums(t, nib[:bits], p.tblock, p.mu, np.float64)
        d = a + c[None] * zs[:, :, None]
        s_rows = np.repeat(scale.astype(np.float64), p.group // p.tblock, axis=0)
        y = (d * s_rows[None] / 2).sum(axis=1).astype(np.float32)
    return y[:, :p.n].reshape(lead + (p.n,))


@dataclass(frozen=True)
class Params:
    """A LutGemm node's attributes, checked."""

    k: int
    n: int
    mu: int
    zero: int
    group: int
    tblock: int
    table: str
    layout: LutLayout
    scale_dtype: str = "float32"
    super_block: int = 0
    prefetch: int = 0
    table_steps: int = 0

    @classmethod
    def of(cls, attrs: dict) -> Params:
        try:
            p = cls(int(attrs["k"]), int(attrs["n"]), int(attrs.get("mu", 1)),
                    int(attrs.get("zero", 0)), int(attrs["group"]), int(attrs["tblock"]),
                    str(attrs.get("table", "int8")), LutLayout.of(attrs),
                    str(attrs.get("scale_dtype", "float32")), int(attrs.get("super_block", 0)),
                    int(attrs.get("prefetch", 0)), int(attrs.get("table_steps", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise EtchError(f"etch.LutGemm: missing or malformed attribute ({e})") from None
        p.check()
        return p

    @property
    def kp(self) -> int:
        """K padded to whole table blocks."""
        return -(-self.k // self.tblock) * self.tblock

    @property
    def blocks(self) -> int:
        return self.kp // self.tblock

    @property
    def two_level(self) -> bool:
        """uint8 block scales times float16 super-block scales."""
        return self.scale_dtype == "uint8"

    @property
    def period(self) -> int:
        """Table blocks per super-block (two-level scales)."""
        return self.group // self.tblock * self.super_block

    @property
    def supers(self) -> int:
        """Super-block scales per column (two-level scales)."""
        return -(-(self.kp // self.group) // self.super_block) if self.two_level else 0

    def check(self) -> None:
        self.layout.check()
        if self.tblock % self.layout.k_per_byte:
            raise EtchError(f"etch.LutGemm: table block {self.tblock} is not a multiple of "
                            f"the layout's {self.layout.k_per_byte} rows per byte position")
        if self.k <= 0 or self.n <= 0 or self.mu not in (1, 2) or not 0 <= self.zero <= 255:
            raise EtchError(f"etch.LutGemm: bad k/n/mu/zero ({self.k}, {self.n}, {self.mu}, "
                            f"{self.zero})")
        if self.tblock % 8 or self.tblock <= 0 or self.group % self.tblock or \
                self.kp % self.group:
            raise EtchError(f"etch.LutGemm: table block {self.tblock} must be a positive "
                            f"multiple of 8 dividing the group {self.group}, which divides "
                            f"K_p = {self.kp}")
        if self.table not in TABLE_MODES:
            raise EtchError(f"etch.LutGemm: table mode {self.table!r}; choose int8 or float")
        if self.scale_dtype not in SCALE_DTYPES:
            raise EtchError(f"etch.LutGemm: scale_dtype {self.scale_dtype!r}; choose float32, "
                            f"float16 or uint8")
        if not 0 <= self.prefetch <= MAX_PREFETCH:
            raise EtchError(f"etch.LutGemm: prefetch distance {self.prefetch} bytes; 0 to "
                            f"{MAX_PREFETCH}")
        if self.table_steps and not (2 <= self.table_steps <= MAX_TABLE_STEPS and
                                     self.two_level and self.table == "int8"):
            raise EtchError(f"etch.LutGemm: table_steps {self.table_steps} needs int8 tables "
                            f"and uint8 scales, and 2-{MAX_TABLE_STEPS}")
        if self.two_level and not 1 <= self.super_block <= 256:
            raise EtchError(f"etch.LutGemm: uint8 scales need a super_block of 1-256 blocks, "
                            f"not {self.super_block}")

    def offsets(self, zero: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
        """c = mu (2^b - 1) - 2 zero per scale row and column (int64)."""
        z = np.full(shape, self.zero, np.int64) if zero is None else zero.astype(np.int64)
        return self.mu * ((1 << self.layout.bits) - 1) - 2 * z

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        lay = self.layout
        params = (lay.padded_n(self.n) // lay.tile_cols, self.kp // self.group, lay.tile_cols)
        sup = (params[0], self.supers, params[2])
        return {"w": lay.shape(self.kp, self.n), "scale": params, "zero": params, "super": sup}


def _infer(attrs: dict, x: Value, w: Value, scale: Value, zero: Value | None = None,
           sup: Value | None = None) -> Spec:
    p = Params.of(attrs)
    want = p.input_shapes()
    got = {"w": w, "scale": scale, "zero": zero, "super": sup}
    if p.two_level != (sup is not None) or (sup is not None and sup.dtype != "float16"):
        raise EtchError("etch.LutGemm: uint8 scales take float16 super-block scales (input 5),"
                        " other scales none")
    if not x.shape or x.shape[-1] != p.k:
        raise EtchError(f"etch.LutGemm: input of shape {x.shape} has no last axis of {p.k}")
    for name, v in got.items():
        if v is not None and tuple(v.shape) != want[name]:
            raise EtchError(f"etch.LutGemm: {name} has shape {v.shape}, the layout needs "
                            f"{want[name]}")
    if scale.dtype != p.scale_dtype:
        raise EtchError(f"etch.LutGemm: scale is {scale.dtype}, the node records "
                        f"{p.scale_dtype}")
    return [(tuple(x.shape[:-1]) + (p.n,), "float32")]


OPS: dict[str, OpDef] = {
    "etch.LutGemm": OpDef("etch.LutGemm", lut_gemm, infer=_infer),
}
