"""Weight quantisers on a [N, K] matrix (rows = output channels, columns = the reduction).

A `Scheme` says which integers a code may take (b-bit signed or unsigned, binary {-1,+1},
ternary {-1,0,+1}). Scales are shared by rectangular blocks of `rg` rows x `cg` columns
tiling the matrix: per output channel is (1, K), groups of G along K are (1, G), per input
channel (AdaDim) is (N, 1) (or (G, 1): groups of G output channels), per tensor (N, K).
Every function here is pure numpy on float64.

Scale choice (round to nearest): binary takes scale = mean|w| (the L2-optimal scale of
sign(w), XNOR-Net); the others search a clipping ratio r on a grid and keep, per block, the
scale with the least squared error (the `mse` option of GPTQ's quantiser, AWQ's clip search),
which matters at 2-4 bits, where clipping the largest weights wins; at 7-8 bits the rounding
step is so fine that only a light clip can pay, so the grid stops at WIDE_MIN_RATIO (`ratios`:
11 candidates instead of 36, which made the search most of an 8-bit compile's time). With
calibration data,
`rtn_output` searches the same grid for the least *output* error d H d^T per block (H = X^T X
of the layer's input), so a clip is judged by what it does to the layer's outputs on real
inputs rather than to the weights alone (correlated inputs make the two disagree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ir import code_range

RATIOS = np.linspace(1.0, 0.3, 36)
WIDE_BITS = 7         # codes this wide or wider search only the light clips ...
WIDE_MIN_RATIO = 0.8  # ... RATIOS down to this one
HALF_MIN, HALF_MAX = 2.0 ** -14, 65504.0  # float16's normal range
SUPER_BLOCK = 8       # blocks per float16 super-block scale (256 rows of K at group 32)
U8_MAX = 255


@dataclass(frozen=True)
class Scheme:
    """The codes a weight may take: kind "int" (b bits), "binary" or "ternary"."""

    bits: int
    kind: str = "int"
    symmetric: bool = True
    half_scales: bool = False  # scales rounded to float16 values (see the module docstring)

    @property
    def qmin(self) -> int:
        return code_range(self.bits, self.kind, self.symmetric)[0]

    @property
    def qmax(self) -> int:
        return code_range(self.bits, self.kind, self.symmetric)[1]

    @property
    def dtype(self) -> str:
        """The container: int8 for signed codes, uint8 for asymmetric (unsigned) ones."""
        return "int8" if self.symmetric or self.kind != "int" else "uint8"

    def describe(self) -> str:
        if self.kind != "int":
            return self.kind
        return f"{'s' if self.symmetric else 'u'}{self.bits}"


def half_scale(s: np.ndarray) -> np.ndarray:
    """Scales rounded to the nearest float16 value where that is a normal float16 (outside
    that range they are left as they are: float32 storage keeps them)."""
    s = np.asarray(s, np.float64)
    with np.errstate(over="ignore"):
        h = s.astype(np.float16).astype(np.float64)
    ok = (np.abs(s) >= HALF_MIN) & (np.abs(s) <= HALF_MAX) & (h != 0)
    return np.where(ok, h, s)


def _scale_of(s: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Positive scales (1 where the block is all zero), float16 values under half_scales."""
    s = np.where(s > 0, s, 1.0)
    return half_scale(s) if scheme.half_scales else s


def ratios(scheme: Scheme) -> np.ndarray:
    """The clipping ratios searched for `scheme`'s codes (1.0 first: no clip)."""
    if scheme.kind == "int" and scheme.bits >= WIDE_BITS:
        return RATIOS[RATIOS >= WIDE_MIN_RATIO - 1e-9]
    return RATIOS


def to_blocks(m: np.ndarray, rg: int, cg: int) -> np.ndarray:
    """[N, K] -> [N/rg * K/cg, rg * cg]: one row per scale block (row-major over blocks)."""
    n, k = m.shape
    return m.reshape(n // rg, rg, k // cg, cg).transpose(0, 2, 1, 3).reshape(-1, rg * cg)


def from_blocks(b: np.ndarray, n: int, k: int, rg: int, cg: int) -> np.ndarray:
    """Inverse of `to_blocks`."""
    return b.reshape(n // rg, k // cg, rg, cg).transpose(0, 2, 1, 3).reshape(n, k)


CODES_CHUNK = 1 << 20  # elements of a per-row `codes` rounded at once (8 MB of float64)
CODE_DTYPE = np.int16  # `codes`' result: every scheme's codes (at most 8 bits) fit


def codes(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Round-to-nearest codes of x for a given scale/zero (broadcast against x), as int16
    (every scheme's codes fit; callers widen or narrow them). A large [R, E] x with per-row
    [R, 1] parameters is rounded CODES_CHUNK elements' worth of rows at a time into the
    result: the same numbers, with a float64 temporary that stays in cache instead of one
    the size of x (a 25088 x 4096 layer: 820 MB, whose fresh pages cost more than the
    arithmetic; int16 codes 205 MB where int64 took 820)."""
    if scheme.kind == "binary":
        return np.where(x >= 0, 1, -1).astype(CODE_DTYPE)
    rows = max(1, CODES_CHUNK // max(x.shape[-1], 1)) if x.ndim == 2 else 0
    if rows and len(x) > rows and all(np.ndim(a) == 2 and np.shape(a)[0] == len(x)
                                      for a in (scale, zero)):
        out = np.empty(x.shape, CODE_DTYPE)
        for i in range(0, len(x), rows):
            out[i:i + rows] = _round(x[i:i + rows], scale[i:i + rows], zero[i:i + rows],
                                     scheme)
        return out
    return _round(x, scale, zero, scheme).astype(CODE_DTYPE)


def _round(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, scheme: Scheme) -> np.ndarray:
    """clip(rint(x / scale) + zero) as float64, in one buffer (not four temporaries); an
    all-zero `zero` (symmetric codes) is not added (adding 0.0 changes no code)."""
    q = np.divide(x, scale)
    np.rint(q, out=q)
    if np.any(zero):
        q += zero
    np.clip(q, scheme.qmin, scheme.qmax, out=q)
    return q


FIT_CHUNK = 1 << 16  # elements of `blocks` searched at once: the temporaries stay in cache


def fit(blocks: np.ndarray, scheme: Scheme, search: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (scale, zero) of `blocks` [B, E] (float32 or float64: searched in float64,
    a chunk at a time): float64 scales > 0, integer zeros. Rows are
    independent, so a large `blocks` is searched FIT_CHUNK elements' worth of rows at a time
    (the same numbers: each row's error is its own sum): every ratio of the search passes
    over a chunk while it is in cache, not over the whole matrix from memory (vgg16's
    25088 x 4096 layer: ~9 passes of 820 MB per ratio)."""
    if scheme.kind == "binary":
        return (_scale_of(np.abs(np.asarray(blocks, np.float64)).mean(axis=1), scheme),
                np.zeros(len(blocks)))
    rows = max(1, FIT_CHUNK // max(blocks.shape[1], 1))
    if len(blocks) <= rows:
        return _fit_rows(np.asarray(blocks, np.float64), scheme, search)
    parts = [_fit_rows(np.asarray(blocks[i:i + rows], np.float64), scheme, search)
             for i in range(0, len(blocks), rows)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _fit_rows(blocks: np.ndarray, scheme: Scheme, search: bool) -> tuple[np.ndarray, np.ndarray]:
    bounds = _bounds(blocks, scheme)
    best_s, best_z = _scaled_candidate(bounds, 1.0, scheme)
    if not search:
        return best_s, best_z
    best_e = _error(blocks, best_s, best_z, scheme)
    for r in ratios(scheme)[1:]:
        s, z = _scaled_candidate(bounds, r, scheme)
        e = _error(blocks, s, z, scheme)
        better = e < best_e
        best_s, best_z, best_e = (np.where(better, s, best_s), np.where(better, z, best_z),
                                  np.minimum(e, best_e))
    return best_s, best_z


def _candidate(blocks: np.ndarray, r: float, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (scale, zero) of `blocks` clipped at `r` times their range."""
    return _scaled_candidate(_bounds(blocks, scheme), r, scheme)


def _bounds(blocks: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, ...]:
    """The per-row range a candidate scales: (max |b|,) for symmetric codes, else (min(b, 0),
    max(b, 0)); found once for every ratio of a search."""
    if scheme.symmetric or scheme.kind != "int":
        return (np.abs(blocks).max(axis=1),)
    return np.minimum(blocks.min(axis=1), 0), np.maximum(blocks.max(axis=1), 0)


def _scaled_candidate(bounds: tuple[np.ndarray, ...], r: float,
                      scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    if len(bounds) == 1:
        amax = bounds[0] * r
        return _scale_of(amax / scheme.qmax, scheme), np.zeros(len(amax))
    lo, hi = bounds[0] * r, bounds[1] * r
    scale = _scale_of((hi - lo) / (scheme.qmax - scheme.qmin), scheme)
    return scale, np.clip(np.rint(-lo / scale), scheme.qmin, scheme.qmax)


def _error(blocks: np.ndarray, s: np.ndarray, z: np.ndarray, scheme: Scheme) -> np.ndarray:
    d = _deltas(blocks, s, z, scheme)
    return np.square(d, out=d).sum(axis=1)


def _deltas(b: np.ndarray, s: np.ndarray, z: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Dequantisation error (q - z) s - b of b [P, E] for per-row s, z [P]: `codes`' values
    kept in float64 (the same numbers, without int64 round trips), computed in place."""
    if scheme.kind == "binary":
        q = codes(b, s[:, None], z[:, None], scheme).astype(np.float64)
    else:
        q = _round(b, s[:, None], z[:, None], scheme)
    if np.any(z):
        q -= z[:, None]
    q *= s[:, None]
    q -= b
    return q


def rtn(m: np.ndarray, scheme: Scheme, rg: int, cg: int,
        search: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round to nearest: (codes [N, K], scales [N/rg, K/cg], zeros [N/rg, K/cg]). `m` may be
    float32: `fit` and `codes` compute in float64 a chunk at a time (the same numbers as
    for a float64 copy of m, without the copy)."""
    n, k = m.shape
    blocks = to_blocks(m, rg, cg)
    s, z = fit(blocks, scheme, search)
    q = codes(blocks, s[:, None], z[:, None], scheme)
    shape = (n // rg, k // cg)
    return from_blocks(q, n, k, rg, cg), s.reshape(shape), z.reshape(shape)


def rtn_output(m: np.ndarray, h: np.ndarray, scheme: Scheme,
               cg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round to nearest per output channel (blocks of `cg` columns along K) with each block's
    clipping ratio chosen on the `ratios` grid for the least output error d H_b d^T, H_b the
    block's diagonal block of the layer-input Hessian h [g, K, K] (one per convolution
    group of N/g rows; terms between blocks are left out). (codes, scales [N, K/cg], zeros.)"""
    k, g = m.shape[1], h.shape[0]
    out = [_block_output_fit(m[:, j:j + cg], h[:, j:j + cg, j:j + cg], scheme, g)
           for j in range(0, k, cg)]
    s, z = np.stack([o[0] for o in out], axis=1), np.stack([o[1] for o in out], axis=1)
    return requantise(m, s, z, scheme, 1, cg), s, z


OUTPUT_CHUNK = 1 << 22  # elements of the stacked deltas multiplied by H at once (32 MB)


def _block_output_fit(b: np.ndarray, h: np.ndarray, scheme: Scheme,
                      g: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (scale, zero) of b [N, E] with the least d H d^T (h [g, E, E]): the first
    ratio of the grid with the least error. The deltas of several ratios are stacked and
    multiplied by H as one product ([R N/g, E] x [E, E] per group, up to OUTPUT_CHUNK
    elements): one large product instead of one per ratio (11 at 8 bits, 36 below), which
    BLAS runs several times faster per flop on short layers (32 x 1152: 0.38 -> 0.07 s).
    The product is float32 (the deltas and H rounded to it, each error summed in float64):
    it only ranks the ratios, four times faster than in float64 (768 x 768 layers: 0.40 ->
    0.10 s, the same picks; vit_b16's `--int` weight quantisation 18.5 -> 14.1 s)."""
    grid = ratios(scheme)
    n, e = b.shape
    step = max(1, OUTPUT_CHUNK // max(b.size, 1))
    best: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    bounds, h = _bounds(b, scheme), h.astype(np.float32)
    for i in range(0, len(grid), step):
        cands = [_scaled_candidate(bounds, r, scheme) for r in grid[i:i + step]]
        d = np.stack([_deltas(b, s, z, scheme).astype(np.float32) for s, z in cands])
        dg = d.reshape(len(cands), g, n // g, e).transpose(1, 0, 2, 3).reshape(g, -1, e)
        errs = np.einsum("gpk,gpk->gp", dg @ h, dg,
                         dtype=np.float64).reshape(g, len(cands), n // g)
        errs = errs.transpose(1, 0, 2).reshape(len(cands), n)
        for (s, z), err in zip(cands, errs):
            if best is None:
                best = (s, z, err)
                continue
            better = err < best[2]
            best = (np.where(better, s, best[0]), np.where(better, z, best[1]),
                    np.minimum(err, best[2]))
    assert best is not None
    return best[0], best[1]


def dequantize(q: np.ndarray, s: np.ndarray, z: np.ndarray, rg: int, cg: int) -> np.ndarray:
    """Codes and block scales back to a float64 [N, K] matrix: (q - z) * s, the block
    parameters broadcast over their rg x cg blocks (no full-size copies of them)."""
    n, k = q.shape
    blocks = (n // rg, rg, k // cg, cg)
    out = q.reshape(blocks).astype(np.float64)
    out -= z.reshape(n // rg, 1, k // cg, 1)
    out *= s.reshape(n // rg, 1, k // cg, 1)
    return out.reshape(n, k)


def weight_error(w: np.ndarray, q: np.ndarray, s: np.ndarray, z: np.ndarray, rg: int,
                 cg: int) -> float:
    """`output_error(w, dequantize(q, s, z, rg, cg), None)` a few rows at a time (whole
    blocks of rg rows): no full-size dequantised copy or difference of a large layer."""
    n, k = w.shape
    rows = max(rg, CODES_CHUNK // max(k, 1) // rg * rg)
    num = den = 0.0
    for i in range(0, n, rows):
        wi = np.asarray(w[i:i + rows], np.float64)  # w may be float32: sums in float64
        d = dequantize(q[i:i + rows], s[i // rg:(i + rows) // rg], z[i // rg:(i + rows) // rg],
                       rg, cg)
        d -= wi
        num += float(np.einsum("ij,ij->", d, d))
        den += float(np.einsum("ij,ij->", wi, wi))
    return num / max(den, 1e-30)


def output_error(w: np.ndarray, w_hat: np.ndarray, h: np.ndarray | None) -> float:
    """Relative error of a quantised matrix: ||dW||^2 / ||W||^2, or with a Hessian H of the
    layer input (X^T X), the output error tr(dW H dW^T) / tr(W H W^T); with H [g, K, K]
    the matrices are [g, N/g, K] (one Hessian per convolution group)."""
    d = w_hat - w
    if h is None:
        return float((d * d).sum() / max((w * w).sum(), 1e-30))
    h32 = h.astype(np.float32)
    return _quadratic(d, h32) / max(_quadratic(w, h32), 1e-30)


def _quadratic(a: np.ndarray, h: np.ndarray) -> float:
    """sum over g, n of a[g, n] h[g] a[g, n]^T: the product in float32 (as the clip search
    ranks its errors, `_block_output_fit`; four times faster), summed in float64."""
    a = a.astype(np.float32)
    return float(np.einsum("gnk,gnk->", a @ h, a, dtype=np.float64))


def group_mult_max(k: int, scheme: Scheme) -> int:
    """The largest integer group multiplier that keeps an integer dot product over K inputs
    (|a - z| <= 255, |q| <= 2^(b-1)) inside 2^30, at most 255 (8-bit multipliers)."""
    qabs = max(abs(scheme.qmin), abs(scheme.qmax))
    return int(max(1, min(255, (1 << 30) // (k * 255 * qabs))))


def snap_scales(s: np.ndarray, base: np.ndarray, m_max: int) -> np.ndarray:
    """Integer multipliers (1..m_max) of block scales s [R, B] over per-row bases [R, 1]:
    the integer path's groups are s[r, b] ~= base[r] * mult[r, b]."""
    return np.clip(np.rint(s / base), 1, m_max)


def requantise(m: np.ndarray, s: np.ndarray, z: np.ndarray, scheme: Scheme, rg: int,
               cg: int) -> np.ndarray:
    """Round-to-nearest codes of m [N, K] for given block scales/zeros [N/rg, K/cg]."""
    n, k = m.shape
    blocks = to_blocks(m, rg, cg)
    q = codes(blocks, s.reshape(-1)[:, None], z.reshape(-1)[:, None], scheme)
    return from_blocks(q, n, k, rg, cg)


def super_scales(s: np.ndarray, super_block: int = SUPER_BLOCK) -> np.ndarray:
    """Block scales s [R, B] (> 0) -> float16-valued d [R, ceil(B / super_block)] (float64):
    each super-block's largest scale / 255, rounded up to a float16 value (so no block's
    integer exceeds 255), at least float16's smallest subnormal."""
    r, b = s.shape
    pad = np.zeros((r, -(-b // super_block) * super_block))
    pad[:, :b] = s
    top = pad.reshape(r, -1, super_block).max(axis=2) / U8_MAX
    with np.errstate(over="ignore"):
        h = top.astype(np.float16)
        h = np.where(h.astype(np.float64) < top, np.nextafter(h, np.float16(np.inf)), h)
    return np.maximum(h, np.float16(2.0 ** -24)).astype(np.float64)


def snap_two_level(s: np.ndarray, d: np.ndarray, first: int = 0,
                   super_block: int = SUPER_BLOCK) -> np.ndarray:
    """Block scales s [R, B'] (blocks first.. of the row) -> d * clip(rint(s / d), 1, 255),
    d [R, supers] the rows' super-block scales (`super_scales`)."""
    cols = (first + np.arange(s.shape[1])) // super_block
    dd = d[:, cols]
    return dd * np.clip(np.rint(s / dd), 1, U8_MAX)


def two_level(s: np.ndarray, super_block: int = SUPER_BLOCK) -> np.ndarray:
    """Block scales s [R, B] as two-level scales (see the module docstring), float64."""
    return snap_two_level(s, super_scales(s, super_block), 0, super_block)
