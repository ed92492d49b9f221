"""Reductions over the trailing dims of a tensor ("rows"), in a vectorisable form.

A float sum (or max) over a row is a dependency chain: one add per element, each waiting on
the last. When the row's last dim is a multiple of a vector width L, `row_reduce` splits it
in two TE stages: `<name>_part[row, l] = reduce_k value(row, k*L + l)` (L independent chains:
one vector accumulator) and `<name>[row] = reduce_l part[row, l]`. L is the target's width,
or a half or a quarter of it where the last dim is too short (a 16x16 global pool on AVX-512:
16 lanes; 8 lanes for an 8-wide row), as long as each chain gets two elements or more. A one-dim
row that is not a multiple (softmax over 197 tokens) may ask for a tail: whole vectors in the
partial sums, the rest in the final stage. The summation order changes; the result agrees to
float rounding. Kernels built this way are
tagged `etch.rows` (the number of row dims), which the CPU schedule rule `RowReduction` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tvm import te, tirx

Shape = tuple[int, ...]
Value = Callable[[Sequence[tirx.Expr], Sequence[tirx.Expr]], tirx.Expr]


def row_reduce(name: str, rows: Shape, inner: Shape, value: Value, reducer: Callable,
               lanes: int, out_shape: Shape | None = None, tail: bool = False,
               tail_value: Value | None = None) -> te.Tensor:
    """reducer over `inner` of value(row index, inner index), shaped `out_shape` (default
    rows + 1s), whose leading len(rows) indices are the row. With `tail`, a one-dim row that
    is not a multiple of the vector width still gets one (`row_width`): the partial sums
    cover the whole vectors and the final stage also reduces the last `last % L` elements,
    read through `tail_value(row, (t,))` (t from 0) where given, else `value`."""
    out_shape = out_shape if out_shape is not None else rows + (1,) * len(inner)
    nrow, last = len(rows), inner[-1]
    width = row_width(inner, lanes) if tail else part_lanes(inner, lanes)
    if width:
        lead = [te.reduce_axis((0, d), f"{name}_r{k}") for k, d in enumerate(inner[:-1])]
        ro = te.reduce_axis((0, last // width), f"{name}_ro")
        part = te.compute(rows + (width,), lambda *i: reducer(
            value(i[:nrow], (*lead, ro * width + i[nrow])), axis=[*lead, ro]),
            name=f"{name}_part")
        rest = last % width
        rl = te.reduce_axis((0, width + rest), f"{name}_rl")

        def final(*i: tirx.Expr) -> tirx.Expr:
            if not rest:
                return reducer(part(*i[:nrow], rl), axis=rl)
            # lanes first, then the elements past the last whole vector (lazily: each branch
            # reads only its own, in bounds)
            t = tirx.max(rl - width, 0)
            rest_v = tail_value(i[:nrow], (t,)) if tail_value else value(i[:nrow],
                                                                         (last - rest + t,))
            return reducer(tirx.if_then_else(rl < width, part(*i[:nrow], tirx.min(rl, width - 1)),
                                             rest_v), axis=rl)

        return te.compute(out_shape, final, name=name)
    rs = [te.reduce_axis((0, d), f"{name}_r{k}") for k, d in enumerate(inner)]
    return te.compute(out_shape, lambda *i: reducer(value(i[:nrow], rs), axis=rs), name=name)


def part_lanes(inner: Shape, lanes: int) -> int:
    """The partial sums' vector width for a row of shape `inner`: the widest of lanes,
    lanes/2, lanes/4 (at least 4) that divides the last dim and leaves every chain two or
    more elements; 0 for none."""
    size = 1
    for d in inner:
        size *= d
    for width in (lanes, lanes // 2, lanes // 4):
        if width >= 4 and inner[-1] % width == 0 and size >= 2 * width:
            return width
    return 0


def row_width(inner: Shape, lanes: int) -> int:
    """The vector width `row_reduce(..., tail=True)` uses for a row of shape `inner`: the
    one of `part_lanes` (dividing the row) and `tail_lanes` (whole vectors and a tail) with
    fewer steps, a vector or a tail element each: a row of 196 (a 14 x 14 global mean) as
    12 vectors of 16 and 4 more, not 49 of 4 (8.3 -> 5.5 us over 480 channels on Zen 4)."""
    part, whole = part_lanes(inner, lanes), tail_lanes(inner, lanes)
    if not (part and whole):
        return part or whole
    steps = lambda w: inner[-1] // w + inner[-1] % w
    return whole if steps(whole) < steps(part) else part


def tail_lanes(inner: Shape, lanes: int) -> int:
    """The vector width for a one-dim row that no width divides: the widest of lanes,
    lanes/2, lanes/4 (at least 4) that leaves every chain two elements or more; 0 for none
    (attention's softmax over 197 tokens: 24 vectors of 8 and 5 more)."""
    if len(inner) != 1:
        return 0
    return next((w for w in (lanes, lanes // 2, lanes // 4) if w >= 4 and inner[0] >= 2 * w), 0)


def flat_rows(ctx, x, shape: Shape, first: int) -> tuple[Shape, object]:
    """`x` (of `shape`) viewed with its dims from `first` on as one (they are contiguous, so
    the view is free): a row of 14 x 14 is one row of 196, which vectors cover, whole and a
    short tail (`row_reduce(..., tail=True)`), where no vector divides a row of 14."""
    if len(shape) - first < 2:
        return shape, x
    size = 1
    for d in shape[first:]:
        size *= d
    flat = (*shape[:first], size)
    return flat, ctx.reshape(x, flat)
