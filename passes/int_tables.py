"""Tables: a region of float elementwise ops with one integer input becomes etch.Table.

A value is a "region" value when it is an elementwise function of one activation (its
root) through float elementwise ops with scalar constants and no broadcasting (Sigmoid,
Tanh, the Erf GELU, x * 0.5, ...). `TableRule(graph)` is QuantizeActivations' fallback rule:
an exit of a region whose root is an integer becomes etch.Table, built at compile time by
running the region's own reference ops on the 256 input levels; inner values need no table.
"""

from __future__ import annotations

import json

import numpy as np

from compiler import ops
from compiler.ir import Graph, Node
from compiler.ops import ELEMENTWISE
from passes.int_lowering import Act, Lowering


def table_roots(src: Graph) -> dict[str, str]:
    """Value -> the one activation it is an elementwise function of (through float
    elementwise ops with scalar constants and no broadcasting), for values that are one."""
    roots: dict[str, str] = {}
    for node in src.nodes:
        if node.op not in ELEMENTWISE or len(node.outputs) != 1:
            continue
        out = src.values[node.outputs[0]]
        acts = [i for i in node.inputs if i and not src.values[i].is_const]
        consts = [i for i in node.inputs if i and src.values[i].is_const]
        if out.dtype != "float32" or any(src.values[c].size != 1 for c in consts):
            continue
        rs = {roots.get(a, a) for a in acts}
        if len(rs) == 1 and src.values[next(iter(rs))].shape == out.shape:
            roots[out.name] = rs.pop()
    return roots


class TableRule:
    """The fallback rule: region exits with an integer root become etch.Table."""

    def __init__(self, graph: Graph) -> None:
        self.roots = table_roots(graph)

    def __call__(self, lw: Lowering, node: Node) -> bool:
        out = node.outputs[0] if node.outputs else ""
        root = self.roots.get(out)
        if root is None or root not in lw.ints:
            return False
        readers = lw.consumers.get(out, [])
        if out not in lw.src.outputs and all(self.roots.get(r.outputs[0]) == root
                                             for r in readers):
            return True  # an inner value of the region: the exits' tables include it
        _emit_table(lw, root, out, node.name, self.roots)
        return True


def _emit_table(lw: Lowering, root: str, out: str, name: str, roots: dict[str, str]) -> None:
    steps, consts = region_steps(lw.src, root, out, roots)
    x = lw.ints[root]
    s, z, dtype = lw.params(out)
    table = build_table(steps, [lw.src.values[c].data for c in consts], x, s, z, dtype)
    act = lw.new_act(out, s, z, dtype)
    lw.emit("etch.Table", [x.name, lw.const(f"{out}_table", table), *consts], [act.name],
            {"epilogue": json.dumps(steps, default=_json_default)}, "accel", name)


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
                dtype: str) -> np.ndarray:
    """The 256 outputs: QuantizeLinear(f(DequantizeLinear(level))) for every input level,
    with f the region's own float reference ops (the QDQ form of the same function)."""
    info = np.iinfo(x.dtype)
    levels = np.arange(int(info.min), int(info.max) + 1).astype(x.dtype)
    reg = ops.registry()
    real = reg["DequantizeLinear"].run({}, levels, np.float32(x.scale), np.asarray(x.zero, x.dtype))
    attrs = {"kernel": "", "epilogue": json.dumps(steps, default=_json_default)}
    with np.errstate(all="ignore"):
        y = np.asarray(reg["etch.Fused"].run(attrs, real, *consts), np.float32).reshape(-1)
    return reg["QuantizeLinear"].run({}, y, np.float32(s), np.asarray(z, dtype)).astype(dtype)


def _json_default(v: object) -> object:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")
