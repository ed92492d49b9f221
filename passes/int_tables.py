"""Tables: a region of float elementwise ops with one integer input becomes etch.Table.

A value is a "region" value when it is an elementwise function of one activation (its
root) through float elementwise ops with scalar constants and no broadcasting (Sigmoid,
Tanh, the Erf GELU, x * 0.5, ...). `TableRule(graph)` is QuantizeActivations' fallback rule:
an exit of a region whose root is an integer becomes etch.Table, built at compile time by
running the region's own reference ops on the 256 input levels; inner values need no table.

With `channels` (the TVM targets), constants may also hold one value per channel of one
axis (a BatchNorm's scale and shift, a PReLU's slopes): such a region becomes
etch.ChannelTable, one 256-entry table per channel, built the same way on every channel's
constants. It replaces DequantizeLinear -> float ops -> QuantizeLinear on the host (three
passes over the tensor, two of them float) by one byte look-up, and computes the same
function: each table entry is the region's own reference ops on that input level.
"""

from __future__ import annotations

import json

import numpy as np

from compiler import ops
from compiler.ir import Graph, Node
from compiler.ops import ELEMENTWISE
from passes.int_lowering import Act, Lowering


def table_roots(src: Graph, channels: bool = False) -> tuple[dict[str, str],
                                                             dict[str, int | None]]:
    """Value -> the one activation it is an elementwise function of (through float
    elementwise ops with scalar constants, or with `channels` constants of one value per
    channel of one axis, and no broadcasting of the activation), for values that are one;
    and value -> that channel axis (None: scalar constants only)."""
    roots: dict[str, str] = {}
    axes: dict[str, int | None] = {}
    for node in src.nodes:
        if node.op not in ELEMENTWISE or len(node.outputs) != 1:
            continue
        out = src.values[node.outputs[0]]
        acts = [i for i in node.inputs if i and not src.values[i].is_const]
        consts = [i for i in node.inputs if i and src.values[i].is_const]
        if out.dtype != "float32" or not acts:
            continue
        own = {channel_axis(src.values[c].shape, out.shape) for c in consts
               if src.values[c].size != 1}
        rs = {roots.get(a, a) for a in acts}
        region = own | ({axes.get(a) for a in acts} - {None})
        if -1 in own or len(region) > 1 or (region and not channels):
            continue
        if len(rs) == 1 and src.values[next(iter(rs))].shape == out.shape:
            roots[out.name] = rs.pop()
            axes[out.name] = region.pop() if region else None
    return roots, axes


def channel_axis(shape: tuple[int, ...], out: tuple[int, ...]) -> int:
    """The axis of `out` along which a constant of `shape` holds one value per channel
    (every other dim 1, right-aligned as broadcasting reads it), or -1."""
    if len(shape) > len(out):
        return -1
    dims = (1,) * (len(out) - len(shape)) + tuple(shape)
    big = [d for d, n in enumerate(dims) if n != 1]
    return big[0] if len(big) == 1 and dims[big[0]] == out[big[0]] else -1


class TableRule:
    """The fallback rule: region exits with an integer root become etch.Table (or, with
    per-channel constants, etch.ChannelTable)."""

    def __init__(self, graph: Graph, channels: bool = False) -> None:
        self.roots, self.axes = table_roots(graph, channels)
        # scalar-constant regions, for a region whose per-channel start was absorbed by
        # another rule (a bias Add folded into its Gemm's requantisation): the values
        # after it are a region of their own, rooted at the absorbing rule's integer
        self.scalar = table_roots(graph)[0] if channels else self.roots

    def __call__(self, lw: Lowering, node: Node) -> bool:
        out = node.outputs[0] if node.outputs else ""
        roots, axis = self.roots, self.axes.get(out)
        if roots.get(out) not in lw.ints:
            roots, axis = self.scalar, None
        root = roots.get(out)
        if root is None or root not in lw.ints:
            return False
        readers = lw.consumers.get(out, [])
        if out not in lw.src.outputs and all(roots.get(r.outputs[0]) == root
                                             for r in readers):
            return True  # an inner value of the region: the exits' tables include it
        _emit_table(lw, root, out, node.name, roots, axis)
        return True


def _emit_table(lw: Lowering, root: str, out: str, name: str, roots: dict[str, str],
                axis: int | None) -> None:
    steps, consts = region_steps(lw.src, root, out, roots)
    x = lw.ints[root]
    s, z, dtype = lw.params(out)
    data = [lw.src.values[c].data for c in consts]
    attrs = {"epilogue": json.dumps(steps, default=_json_default)}
    if axis is None:
        op, table = "etch.Table", build_table(steps, data, x, s, z, dtype)
    else:
        shape = lw.src.values[out].shape
        op, table = "etch.ChannelTable", build_table(steps, data, x, s, z, dtype,
                                                     (axis, shape))
        attrs["axis"] = axis
    act = lw.new_act(out, s, z, dtype)
    lw.emit(op, [x.name, lw.const(f"{out}_table", table), *consts], [act.name], attrs,
            "accel", name)


def region_steps(src: Graph, root: str, out: str,
                 roots: dict[str, str]) -> tuple[list[dict], list[str]]:
    """etch.Fused epilogue steps computing `out` from `root` (arg 0) and the constants
    (args 1..), and the constants' names."""
    producers = src.producers()
    needed, stack = set(), [out]
    while stack:
        v = stack.pop()
        if v == root or v in needed or roots.get(v) != root:
            continue
        needed.add(v)
        stack.extend(i for i in producers[v].inputs if i)
    index, consts, steps = {root: "y0"}, [], []
    for node in src.nodes:
        if node.outputs[0] not in needed:
            continue
        args = []
        for i in node.inputs:
            if i in index:
                args.append(index[i])
            else:
                if i not in consts:
                    consts.append(i)
                args.append(1 + consts.index(i))
        steps.append({"op": node.op, "args": args, "attrs": dict(node.attrs)})
        index[node.outputs[0]] = f"y{len(steps)}"
    return steps, consts


def build_table(steps: list[dict], consts: list[np.ndarray], x: Act, s: float, z: int,
                dtype: str, channels: tuple[int, tuple[int, ...]] | None = None
                ) -> np.ndarray:
    """The 256 outputs: QuantizeLinear(f(DequantizeLinear(level))) for every input level,
    with f the region's own float reference ops (the QDQ form of the same function).
    channels = (axis, output shape): [C, 256], the levels run through f with every
    channel's constants (a leading axis of levels, the channel axis C wide)."""
    info = np.iinfo(x.dtype)
    levels = np.arange(int(info.min), int(info.max) + 1).astype(x.dtype)
    reg = ops.registry()
    real = reg["DequantizeLinear"].run({}, levels, np.float32(x.scale), np.asarray(x.zero, x.dtype))
    if channels is not None:
        axis, shape = channels
        grid = [1] * (len(shape) + 1)
        grid[0], grid[1 + axis] = 256, shape[axis]
        real = np.broadcast_to(real.reshape([256] + [1] * len(shape)), grid).copy()
    attrs = {"kernel": "", "epilogue": json.dumps(steps, default=_json_default)}
    with np.errstate(all="ignore"):
        y = np.asarray(reg["etch.Fused"].run(attrs, real, *consts), np.float32)
    y = y.reshape(-1) if channels is None else np.ascontiguousarray(y.reshape(256, -1).T)
    return reg["QuantizeLinear"].run({}, y, np.float32(s), np.asarray(z, dtype)).astype(dtype)


def _json_default(v: object) -> object:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")
