"""Random etch.LutGemm cases for the op, pass and kernel tests: codes, scales, zero points in
a chosen layout, the dequantised weight they stand for, and one-node (or many-node) graphs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops.etch_lut import LutLayout, Params, max_table_steps

# V, slots, Q, chunk slots
LAYOUTS = [(64, 4, 1, 1), (32, 2, 1, 1), (16, 1, 4, 1), (32, 1, 1, 1), (64, 1, 2, 1),
           (64, 1, 1, 2), (64, 1, 3, 2), (32, 2, 1, 2), (64, 1, 1, 4), (64, 1, 2, 4),
           (64, 1, 4, 4)]
KINDS = ["u1", "binary", "u2", "ternary", "u3", "u4", "s4", "s2"]


def bits_of(kind: str) -> int:
    return {"binary": 1, "ternary": 2}.get(kind) or int(kind[1:])


def random_layout(bits: int, rng: np.random.Generator, tblock: int = 8) -> LutLayout:
    fits = [(v, s, q, e) for v, s, q, e in LAYOUTS if s * q >= bits and tblock % (8 * e) == 0]
    v, s, q, e = fits[rng.integers(len(fits))]
    return LutLayout(bits, v, s, q, int(rng.integers(1, 4)), e)


def make_case(kind: str, m: int, k: int, n: int, group: int | None, table: str,
              rng: np.random.Generator, zero_tensor: bool = False,
              layout: LutLayout | Callable[[int], LutLayout] | None = None,
              scale_dtype: str = "float32", super_block: int = 2,
              table_steps: int | None = None) -> dict:
    """A random LutGemm: attrs, inputs, the codes u [K_p, N], scales/zeros [G, N_p] and the
    dequantised weight [K, N] (float64). `group` None: per-channel scales, a random table
    block; else blocks of `group` rows of K with table block = group. `layout`: a layout,
    or one for the table block (a target's choice), else random. `scale_dtype`
    float16: scales stored in two bytes (float16 values); uint8: two-level scales, whose
    int8 tables share a scale per super-block with `table_steps` (-1: the largest the
    bound allows)."""
    bits = bits_of(kind)
    mu = 2 if kind == "binary" else 1
    hi = 3 if kind == "ternary" else 1 << bits
    tblock = 8 * int(rng.integers(1, 5)) if group is None else group
    kp = -(-k // tblock) * tblock
    grp = kp if group is None else group
    layout = layout(tblock) if callable(layout) else layout or random_layout(bits, rng, tblock)
    npad = layout.padded_n(n)
    u = np.zeros((kp, n), np.uint8)
    u[:k] = rng.integers(0, hi, (k, n))
    scale = np.zeros((kp // grp, npad), np.float32)
    sup, stored = None, scale
    if scale_dtype == "uint8":
        stored = np.zeros(scale.shape, np.uint8)
        stored[:, :n] = rng.integers(0, 256, (kp // grp, n))
        sup = np.zeros((-(-(kp // grp) // super_block), npad), np.float16)
        sup[:, :n] = rng.uniform(1e-4, 4e-3, (sup.shape[0], n))
        scale[:] = stored * np.repeat(sup.astype(np.float32), super_block, 0)[:kp // grp]
    else:
        scale[:, :n] = rng.uniform(0.01, 1.0, (kp // grp, n)).astype(scale_dtype)
        stored = scale.astype(scale_dtype)
    base_zero = {"binary": 1, "ternary": 1}.get(kind, 1 << (bits - 1) if kind[0] == "s" else 0)
    zero = np.full((kp // grp, npad), base_zero, np.uint8)
    if zero_tensor:
        zero[:, :n] = rng.integers(0, 1 << bits, (kp // grp, n))
    attrs = {"k": k, "n": n, "mu": mu, "zero": base_zero, "group": grp, "tblock": tblock,
             "table": table, "scale_dtype": scale_dtype, **layout.attrs()}
    if sup is not None:
        attrs["super_block"] = super_block
        if table_steps and table == "int8":
            attrs["table_steps"] = table_steps if table_steps > 0 else \
                max_table_steps(Params.of(attrs), zero_tensor)
    w = np.repeat(scale[:, :n].astype(np.float64), grp, 0) * (
        mu * u.astype(np.float64) - np.repeat(zero[:, :n].astype(np.float64), grp, 0))
    x = rng.standard_normal((m, k)).astype(np.float32)
    inputs = [x, layout.pack(u), layout.tile_params(stored)] + (
        [layout.tile_params(zero)] if zero_tensor else [])
    return {"attrs": attrs, "inputs": inputs, "w": w[:k], "u": u, "layout": layout,
            "scale": scale, "zero": zero if zero_tensor else None,
            "sup": None if sup is None else layout.tile_params(sup)}


def graph_of(cases: list[dict]) -> tuple[Graph, dict[str, np.ndarray]]:
    """A graph with one etch.LutGemm per case (input x<i>, output y<i>), and its feeds."""
    g, feeds = Graph("lut"), {}
    for i, case in enumerate(cases):
        x, w, scale, *zero = case["inputs"]
        g.add_value(Value(f"x{i}", x.shape))
        g.inputs.append(f"x{i}")
        feeds[f"x{i}"] = x
        ins = [f"x{i}"] + [g.add_const(f"{name}{i}", a).name
                           for name, a in zip(("w", "s", "z"), [w, scale, *zero])]
        if case.get("sup") is not None:
            ins += [""] * (4 - len(ins)) + [g.add_const(f"d{i}", case["sup"]).name]
        g.add_value(Value(f"y{i}", (x.shape[0], case["attrs"]["n"])))
        g.add_node(Node("etch.LutGemm", ins, [f"y{i}"], dict(case["attrs"]), f"lut{i}"))
        g.outputs.append(f"y{i}")
    return g, feeds
