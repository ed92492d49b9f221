"""CPU schedule rules for the integer kernels of `backends.tvm.lower.int_gemm`/`int_conv`.

- QDense ("qdense": [M, K] u8 x packed [N/NL, K/4, NL, 4] s8): a register tile of mb rows
  x nv vectors of NL int32 accumulators; the k loop outside the tile; the NL x 4 step
  tensorized with an x86 dot-product intrinsic (`int_intrin`: vpdpbusd, or vpmaddubsw +
  vpmaddwd); the requantising epilogue moved into the tile loop.
- QConv ("qconv2d": channels-last u8 input, weights [OC/NL, KH, KW, C/4, NL, 4]): a tile
  of xb output columns x nv vectors of output channels; the taps and channel quads outside
  the tile; same intrinsic; the padding/relayout block runs first, in parallel.
A kernel whose CPU has no x86 int8 dot product is left to the generic rules (it still runs,
exactly, as plain loops). Both rules run before `cpu.py`'s own (see `cpu.rules`).
"""

from __future__ import annotations

from tvm import s_tir
from tvm.target import Target, codegen

from backends.tvm.schedules import int_intrin
from backends.tvm.schedules.cpu import KindRule, block, extent, maybe_parallel, work

# int32 accumulator vectors per register tile: AVX2 has 16 ymm registers and the "split"
# intrinsic needs ~6 temporaries; AVX-512 has 32.
MAX_ACC = {8: 8, 16: 16}


def _intrinsic(func, target: Target) -> str | None:
    nl = int(func.attrs["etch.nl"])
    features = set(codegen.llvm_get_cpu_features(target))
    kind = int_intrin.choose(features, nl, bool(int(func.attrs["etch.pair_safe"])))
    return None if kind is None else int_intrin.intrinsic(kind, nl)


def _vectors(total: int, other: int, nl: int) -> int:
    """Accumulator vectors along the channel axis: the most (<= 4) dividing `total`
    with `other` rows/columns still fitting the register budget."""
    for nv in (4, 3, 2, 1):
        if total % nv == 0 and nv * other <= MAX_ACC[nl]:
            return nv
    return 1


def _finish(sch: s_tir.Schedule, anchor, reduce_first, tile_loops, lane_loop,
            intrin: str) -> None:
    """Split off the init (vectorised), tensorize the NL x 4 step, unroll the tile."""
    init = sch.decompose_reduction(anchor, reduce_first)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(lane_loop, intrin)
    for loop in tile_loops:
        sch.unroll(loop)


class QDense(KindRule):
    """[M, K] x [K, N] integer kernel with a tensor intrinsic: tile mb x (nv * NL)."""

    kinds = ("qdense",)

    def schedule(self, sch, func, target):
        intrin = _intrinsic(func, target)
        if intrin is None:
            return False
        nl = int(func.attrs["etch.nl"])
        anchor = sch.get_sblock("anchor")
        m, nb, ni, ko, ki = sch.get_loops(anchor)
        total = work(sch, [m, nb, ni, ko, ki])
        mb = next(b for b in (4, 3, 2, 1) if extent(sch, m) % b == 0)
        nv = _vectors(extent(sch, nb), mb, nl)
        mo, mi = sch.split(m, [None, mb])
        no, nvi = sch.split(nb, [None, nv])
        sch.reorder(no, mo, ko, mi, nvi, ni, ki)
        outer = sch.fuse(no, mo)
        maybe_parallel(sch, outer, total)
        sch.reverse_compute_at(sch.get_sblock("epilogue"), outer)
        _finish(sch, anchor, ko, [mi, nvi], ni, intrin)
        _schedule_pack(sch, "pack")
        return True


class QConv(KindRule):
    """Direct conv with a tensor intrinsic: tile xb columns x (nv * NL) channels."""

    kinds = ("qconv2d",)

    def schedule(self, sch, func, target):
        intrin = _intrinsic(func, target)
        if intrin is None:
            return False
        nl, xb = int(func.attrs["etch.nl"]), int(func.attrs["etch.xb"])
        anchor = sch.get_sblock("anchor")
        n, y, x, ob, ni, ry, rx, rco, rci = sch.get_loops(anchor)
        total = work(sch, [n, y, x, ob, ni, ry, rx, rco, rci])
        nv = _vectors(extent(sch, ob), xb, nl)
        xo, xi = sch.split(x, [None, xb])
        obo, obi = sch.split(ob, [None, nv])
        sch.reorder(n, obo, y, xo, ry, rx, rco, xi, obi, ni, rci)
        outer = sch.fuse(n, obo, y)
        maybe_parallel(sch, outer, total)
        sch.reverse_compute_at(sch.get_sblock("epilogue"), xo)
        _finish(sch, anchor, ry, [xi, obi], ni, intrin)
        _schedule_pack(sch, "pad")
        return True


def _schedule_pack(sch: s_tir.Schedule, name: str) -> None:
    """The activation relayout block (u8 domain, padded): parallel rows, inner loop
    vectorised where it is long enough to pay."""
    blk = block(sch, name)
    if blk is None:
        return
    loops = sch.get_loops(blk)
    outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    maybe_parallel(sch, outer, work(sch, loops), 1 << 15)
    inner = sch.get_loops(blk)[-1]
    if extent(sch, inner) >= 16 and extent(sch, inner) % 16 == 0:
        sch.vectorize(sch.split(inner, [None, 16])[1])


def rules() -> list:
    return [QDense(), QConv()]
