"""Geometry, weight tiles and exact bounds of tensor-engine layers (for plan_engine).

Every GEMM-like layer is a 2-D convolution over stored tensors: a QConv as it is, a QGemm
[M, K] x [K, N] as a 1x1 convolution over M rows of width 1, a QGemm reading a flattened
[1, C, H, W] tensor as a convolution whose kernel covers the whole H x W input. Its dense
weight W[ky, kx, ci, co] (zero between convolution groups) is cut into tiles of ROWS input
channels x COLS output channels at one kernel position; all-zero tiles are skipped (a
depthwise or grouped convolution keeps only its block-diagonal tiles).

Bounds follow the numerics of docs/ARCHITECTURE.md: a layer's accumulator holds at most
K * max|a - z| * max|w| + max|bias|, where max|a - z| comes from the input's dtype and
zero point and max|w| from the layer's weight codes; widths are the signed widths of these
bounds, never a guess.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops.conv import conv_window, window
from compiler.ops.etch_int import pool_window

# The engine's limits that shape a plan: a PASS counts at most this many activation
# vectors (its instruction field, backends/verilog/engine/isa.py, is 16 bits wide).
MAX_PASS_VECTORS = (1 << 16) - 1


@dataclass(frozen=True)
class Geometry:
    """A convolution over a stored C_in x (H x W) tensor giving C_out x (OH x OW)."""

    h: int
    w: int
    cin: int
    kh: int
    kw: int
    sy: int
    sx: int
    dy: int
    dx: int
    pt: int
    pl: int
    oh: int
    ow: int
    cout: int

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def outputs(self) -> int:
        return self.oh * self.ow


def signed_width(bound: int) -> int:
    """Bits of a signed integer holding every value in [-bound, bound]."""
    return max(1, int(bound)).bit_length() + 1


def code_width(codes: np.ndarray) -> int:
    """Bits of the two's complement integers holding every code."""
    lo, hi = int(codes.min(initial=0)), int(codes.max(initial=0))
    return max((-lo - 1).bit_length() + 1 if lo < 0 else 1, hi.bit_length() + 1, 1)


def act_bound(dtype: str, zero: int) -> int:
    """max |a - zero| over the activation dtype's range."""
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    return max(abs(lo - zero), abs(hi - zero))


def _window_geometry(win, src: tuple[int, ...], cin: int, cout: int) -> Geometry:
    return Geometry(src[2], src[3], cin, win.kernel[0], win.kernel[1], win.strides[0],
                    win.strides[1], win.dilations[0], win.dilations[1], win.begin[0],
                    win.begin[1], win.out[0], win.out[1], cout)


def gemm_geometry(graph: Graph, node: Node, src: tuple[int, ...], flatten: bool) -> Geometry:
    """The convolution a QConv/QGemm is; `src` is the stored tensor's shape (the
    flattened source for a flatten view)."""
    w = graph.values[node.inputs[1]].data
    if node.op == "etch.QConv":
        win = conv_window(node.attrs, src, w.shape)
        if len(win.kernel) != 2:
            raise ValueError("2-D convolutions only")
        return _window_geometry(win, src, src[1], w.shape[0])
    if flatten:
        return Geometry(src[2], src[3], src[1], src[2], src[3], 1, 1, 1, 1, 0, 0, 1, 1,
                        w.shape[1])
    m = int(np.prod(src[:-1], dtype=np.int64)) if len(src) > 1 else 1
    return Geometry(m, 1, w.shape[0], 1, 1, 1, 1, 1, 1, 0, 0, m, 1, w.shape[1])


def pool_geometry(node: Node, src: tuple[int, ...]) -> Geometry:
    """Window geometry of QSumPool / MaxPool over [1, C, H, W]."""
    if node.op == "etch.QSumPool":
        win = pool_window(node.attrs, src)
    else:
        win = window(node.attrs, src[2:], tuple(node.attrs["kernel_shape"]),
                     bool(node.attrs.get("ceil_mode", 0)))
    return _window_geometry(win, src, src[1], src[1])


def copy_geometry(chans: int, spatial: int) -> Geometry:
    """A 1x1 identity window over a stored tensor (elementwise layers)."""
    return Geometry(spatial, 1, chans, 1, 1, 1, 1, 1, 1, 0, 0, spatial, 1, chans)


def dense_weight(codes: np.ndarray, op: str, groups: int, geom: Geometry) -> np.ndarray:
    """W[ky, kx, ci, co] as int64 codes of an etch.QGemm ([K, N]) or etch.QConv weight,
    zero outside each output channel's group."""
    w = codes.astype(np.int64)
    if op == "etch.QGemm":
        return w.reshape(geom.cin, geom.kh, geom.kw, geom.cout).transpose(1, 2, 0, 3)
    per_in, per_out = geom.cin // groups, geom.cout // groups
    dense = np.zeros((geom.kh, geom.kw, geom.cin, geom.cout), np.int64)
    for g in range(groups):
        block = w[g * per_out:(g + 1) * per_out].transpose(2, 3, 1, 0)  # kh kw ci co
        dense[:, :, g * per_in:(g + 1) * per_in, g * per_out:(g + 1) * per_out] = block
    return dense


def tile_of(dense: np.ndarray, ky: int, kx: int, j: int, n: int, rows: int,
            cols: int) -> np.ndarray:
    """The [rows, cols] weight tile at kernel position (ky, kx), input channels
    j*rows.., output channels n*cols.. (zero-padded at the edges)."""
    t = np.zeros((rows, cols), np.int64)
    part = dense[ky, kx, j * rows:(j + 1) * rows, n * cols:(n + 1) * cols]
    t[:part.shape[0], :part.shape[1]] = part
    return t


def plane_mask(tile: np.ndarray, bits: int) -> int:
    """Bit-planes (of `bits`-bit two's complement codes) with a set bit somewhere."""
    u = np.bitwise_and(tile.astype(np.int64), (1 << bits) - 1)
    return int(np.bitwise_or.reduce(u.reshape(-1), initial=0))


def tiles(dense: np.ndarray, rows: int, cols: int, bits: int) -> tuple[list, list]:
    """(k-tiles [[ky, kx, j]], per n-tile [[k index, plane mask]]) of the nonzero tiles;
    an n-tile whose weights are all zero keeps its first tile (for bias and requant)."""
    kh, kw, cin, cout = dense.shape
    ktiles = [[ky, kx, j] for ky in range(kh) for kx in range(kw)
              for j in range(-(-cin // rows))]
    per_n = []
    for n in range(-(-cout // cols)):
        kept = []
        for k, (ky, kx, j) in enumerate(ktiles):
            t = tile_of(dense, ky, kx, j, n, rows, cols)
            if np.any(t):
                kept.append([k, plane_mask(t, bits)])
        per_n.append(kept or [[0, 0]])
    return ktiles, per_n


def layer_bound(k: int, amax: int, wmax: int, bias: np.ndarray | None) -> int:
    """The exact accumulator bound K * max|a - z| * max|w| + max|bias|."""
    b = int(np.abs(bias.astype(np.int64)).max(initial=0)) if bias is not None else 0
    return k * amax * wmax + b
