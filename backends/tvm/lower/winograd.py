"""Winograd F(m, 3) convolution (3x3, stride 1, groups 1), rendered where the
`choose_conv_algorithm` pass recorded `conv_algorithm = "winograd_f<m>"` on the node.

Four stages in one kernel (compiler/winograd.py has the matrices and the algebra):
- "pad": the zero-padded input, [N, C, TH*m + 2, m, TWp + 1], its columns deinterleaved by
  m (TWp: tiles along a row, rounded up to the vector block);
- "wino_in": V[e*(m+2) + v, c, n*TH + i, j] = (B^T d B)[e, v] of input tile (i, j), written
  out term by term from the matrix's non-zero entries (no multiply by 0 or 1);
- "anchor": M[ev, k, q, j] = sum_c U[ev, k, c] V[ev, c, q, j]: (m+2)^2 independent GEMMs,
  U = G g G^T transformed and packed at compile time to [ev, K/kb, C, kb] like the direct
  convolution's weight, tiles along a row as the vector axis;
- "wino_out": O[k, q, a, v, j] = (A^T M)[a, v] of each tile, tiles as the vector, then
  "epilogue": each output (A^T M A)[a, b] = sum_v O[.., a, v, ..] A[v, b] of its tile, with
  bias/activation/residual, vectorised along the output row: the lanes of a vector read
  each tile's O m times in turn (one short load and a shuffle) times a constant vector of
  A entries. Applying A along the row in the epilogue, not in "wino_out", lets the row be
  written as whole vectors: the epilogue read each output from its tile at stride twp, a
  gather (`vgatherdps`) per vector, ~23% of squeezenet1_1's 16->64 on 55x55.

With `image` tiles (the pass's "winograd_f<m>_image", for rows too short to fill a vector)
the vector axis is every tile of one image instead: q is the image, j = i * TW + j' runs
over its TH x TW tiles, rounded up to the vector block, so a 14x14 output's 4 x 4 tiles of
F(4, 3) are one 16-lane vector and a 71x71 output's 18 x 18 tiles 22 vectors, not 18 rows
of two (32 tiles for 18). The input transform then loops over whole tile rows, as many
as cover the GEMM's padded tiles, and vectorises along a row's TW tiles; the padded input
has enough rows for the padding tiles (they compute zeros and are never read).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.conv import ConvSpec, _padded_input
from backends.tvm.lower.epilogue import Epilogue
from backends.tvm.schedules import tiles
from compiler import winograd
from compiler.errors import EtchError
from compiler.ir import Node

Term = Callable[[int], tirx.Expr]


def tile_size(algorithm: str) -> tuple[int, bool]:
    """(m, image tiles) of a "winograd_f<m>" or "winograd_f<m>_image" algorithm name."""
    match = re.fullmatch(r"winograd_f(\d+)(_image)?", algorithm)
    if match is None or int(match[1]) not in winograd.TILES:
        raise EtchError(f"conv_algorithm {algorithm!r}: etch builds F(2, 3) and F(4, 3), "
                        "row or image tiles")
    return int(match[1]), bool(match[2])


def fits(sp: ConvSpec) -> bool:
    """Whether Winograd F(m, 3) computes this convolution."""
    return (sp.kh, sp.kw, sp.stride, sp.dilation, sp.groups, sp.upsample) == \
        (3, 3, (1, 1), (1, 1), 1, (1, 1))


def _select(index: tirx.Expr, count: int, value: Term) -> tirx.Expr:
    """value(index) for a loop index that the schedule unrolls (the Select chain folds)."""
    out = value(count - 1)
    for k in range(count - 2, -1, -1):
        out = tirx.Select(index == k, value(k), out)
    return out


def _combo(coefs: np.ndarray, term: Term, dtype: str) -> tirx.Expr:
    """sum_r coefs[r] * term(r) over the non-zero coefficients."""
    out = None
    for r, c in enumerate(coefs):
        if c == 0:
            continue
        t = term(r) if c == 1 else -term(r) if c == -1 else tirx.const(float(c), dtype) * term(r)
        out = t if out is None else out + t
    return out if out is not None else tirx.const(0, dtype)


def image_block(oc: int, th: int, tw: int, lanes: int) -> tuple[int, int, int]:
    """(channel block, vector block, padded tiles) of an image-tiled Winograd GEMM whose
    vector runs over an image's th x tw tiles."""
    kb, tb = tiles.conv_tile(oc, th * tw, lanes)
    tb = tiles.padded(tb, min(8, lanes))
    return kb, tb, tiles.padded(th * tw, tb)


def winograd_conv2d(ctx: LowerCtx, node: Node, x: relax.Expr, w: np.ndarray, sp: ConvSpec,
                    epi: Epilogue, m: int, image: bool = False) -> relax.Expr:
    """Emit the F(m, 3) convolution of x [N, C, H, W] with constant w, then the epilogue;
    `image`: the vector axis is an image's tiles, not a row's (module docstring)."""
    if not fits(sp):
        raise EtchError(f"node {node.name}: Winograd needs a 3x3 stride-1 dense convolution")
    a = m + 2
    at, bt, _ = winograd.matrices(m)
    th, tw = winograd.tiles(sp.oh, m), winograd.tiles(sp.ow, m)
    if image:
        kb, tb, twp = image_block(sp.oc, th, tw, ctx.lanes)
        rows, per_image, cols = -(-twp // tw), 1, tw
        vt = rows * tw  # the transform's tiles: whole tile rows, at least the GEMM's twp
    else:
        kb, tb = tiles.conv_tile(sp.oc, tw, ctx.lanes)
        tb = tiles.padded(tb, min(8, ctx.lanes))  # whole vectors (an odd-sized one splits)
        twp = tiles.padded(tw, tb)
        rows, per_image, cols = th, th, twp
        vt = twp
    u = winograd.transform_weight(w, m).reshape(a * a, sp.oc // kb, kb, sp.c)
    weight = ctx.array(np.ascontiguousarray(u.transpose(0, 1, 3, 2)))
    dt = str(w.dtype)

    def compute(xt: te.Tensor, ut: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        # columns deinterleaved by m: tile j's column s is pad[.., s % m, j + s // m], so a
        # vector of tiles reads contiguous inputs
        pad = _padded_input(xt, sp, rows * m + 2, (cols + 1) * m, m)

        def tile_in(ev, c, q, t):
            if image:
                n, i, j = q, t // tw, t % tw
            else:
                n, i, j = q // th, q % th, t

            def row(r: int) -> tirx.Expr:
                return _select(ev % a, a, lambda v: _combo(
                    bt[v], lambda s: pad[n, c, i * m + r, s % m, j + s // m], dt))
            return _select(ev // a, a, lambda e: _combo(bt[e], row, dt))

        vin = te.compute((a * a, sp.c, sp.n * per_image, vt), tile_in, name="wino_in")
        rc = te.reduce_axis((0, sp.c), "rc")
        mm = te.compute((a * a, sp.oc, sp.n * per_image, twp), lambda ev, k, q, j: te.sum(
            vin[ev, rc, q, j] * ut[ev, k // kb, rc, k % kb], axis=rc), name="anchor")

        def tile_rows(k, q, i, v, j):  # (A^T M)[i, v] of each tile
            return _select(i, m, lambda ii: _combo(at[ii], lambda e: mm[e * a + v, k, q, j],
                                                   dt))

        out = te.compute((sp.oc, sp.n * per_image, m, a, twp), tile_rows, name="wino_out")

        def output(n, k, h, x_):
            # (A^T M A)[h % m, x % m] of the tile holding (h, x): along an output row each
            # tile's value is read m times in turn (the x // m lanes of a vector: one short
            # load and a shuffle, `strided_loads._repeating`), times the column's A entry
            if image:
                q, j = n, h // m * tw + x_ // m
            else:
                q, j = n * th + h // m, x_ // m
            return _combo(np.ones(a), lambda v: _select(
                x_ % m, m, lambda b: tirx.const(float(at[b][v]), dt)) * out[k, q, h % m, v, j],
                dt)

        return te.compute(
            (sp.n, sp.oc, sp.oh, sp.ow),
            lambda n, k, h, x_: epi.apply(output(n, k, h, x_), (n, k, h, x_), extra),
            name="epilogue")

    return ctx.emit(compute, [x, weight, *epi.exprs], node, "winograd_conv2d", kb=kb, vw=tb,
                    m=m, image_cols=tw if image else 0)
