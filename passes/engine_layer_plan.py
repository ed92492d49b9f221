"""One engine layer's plan: geometry, tiles, passes and the output unit's epilogue.

`plan_layer(graph, layer, ...)` turns an `engine_layers.Layer` whose tensors are placed
(`Place`: word address and layout of each stored tensor) into the JSON record plan_engine
writes on the layer's anchor node. Everything a backend needs to render the layer is a
decision recorded here: the convolution geometry, the kept weight tiles (row address in
the weight memory, bit-plane mask) per output-channel tile, the chunks of output rows that
fit the accumulator buffer, the parameter words, the folded clamps and tables, and the
QAdd's operand order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ir import Graph, Node
from passes.engine_layers import Layer
from passes.engine_tiling import (
    MAX_PASS_VECTORS,
    Geometry,
    act_bound,
    code_width,
    copy_geometry,
    dense_weight,
    gemm_geometry,
    layer_bound,
    pool_geometry,
    tiles,
)


@dataclass(frozen=True)
class Place:
    """A stored tensor: value name, first word, channels, positions, C-order kind, dtype."""

    value: str
    base: int
    chans: int
    spatial: int
    outer: bool
    dtype: str

    def to_json(self) -> dict:
        return {"value": self.value, "base": self.base, "chans": self.chans,
                "spatial": self.spatial, "outer": self.outer, "signed": self.dtype == "int8"}


@dataclass
class Cursor:
    """Running allocations of one segment's weight rows, parameter words and tables."""

    wrow: int = 0
    param: int = 0
    tables: int = 0


def _clip(a: int, lo: int, hi: int) -> int:
    return min(max(a, lo), hi)


def fold(bounds: tuple[int, int], clamps: list[tuple[str, int, int]], stage: str
         ) -> tuple[int, int]:
    """clip(clip(v, a, b), c, d) == clip(v, clip(a, c, d), clip(b, c, d)): the stage's
    saturation bounds with its following clamps folded in."""
    a, b = bounds
    for s, c, d in clamps:
        if s == stage:
            a, b = _clip(a, c, d), _clip(b, c, d)
    return a, b


def dtype_range(dtype: str) -> tuple[int, int]:
    return (-128, 127) if dtype == "int8" else (0, 255)


class LayerPlanner:
    """Plans layers of one segment in order (see the module docstring)."""

    def __init__(self, graph: Graph, rows: int, cols: int, lanes: int, acc_entries: int,
                 cursor: Cursor) -> None:
        self.g, self.rows, self.cols, self.lanes = graph, rows, cols, lanes
        self.acc_entries, self.cur = acc_entries, cursor

    def plan(self, layer: Layer, src: Place, dst: Place, res: Place | None, flatten: bool,
             ident: int) -> dict:
        rec = {"id": ident, "kind": layer.kind, "name": layer.anchor.name,
               "nodes": [n.name for n in layer.nodes], "src": src.to_json(),
               "dst": dst.to_json(), "res": res.to_json() if res else None}
        # a flattened GEMM input is read as its stored source; any other view has the
        # same storage as the value the layer reads, whose shape gives the geometry
        src_shape = tuple(self.g.values[src.value if flatten else layer.src].shape)
        if layer.kind == "gemm":
            rec.update(self._gemm(layer.anchor, src_shape, flatten))
        elif layer.kind == "pool":
            rec.update(self._pool(layer.anchor, src_shape))
        else:
            rec.update({"geom": copy_geometry(src.chans, src.spatial).to_json(), "mode": "max",
                        "a_zero": 0, "bound": 0})
        rec["epilogue"] = self._epilogue(layer, src, res)
        rec["param"] = self._params(layer, rec)
        return rec

    # ---- kinds ----------------------------------------------------------------------------
    def _gemm(self, node: Node, src_shape: tuple[int, ...], flatten: bool) -> dict:
        geom = gemm_geometry(self.g, node, src_shape, flatten)
        groups = int(node.attrs.get("group", 1))
        dense = dense_weight(self.g.values[node.inputs[1]].data, node.op, groups, geom)
        bits = code_width(dense)
        ktiles, per_n = tiles(dense, self.rows, self.cols, bits)
        passes = []
        for kept in per_n:
            passes.append([[k, self.cur.wrow + i * self.rows, mask]
                           for i, (k, mask) in enumerate(kept)])
            self.cur.wrow += len(kept) * self.rows
        zero = self._zero(node, 3)
        amax = act_bound(self.g.values[node.inputs[0]].dtype, zero)
        wmax = int(np.abs(dense).max(initial=0))
        bias = self._const(node.inputs[2]) if len(node.inputs) > 2 else None
        k = geom.kh * geom.kw * geom.cin // groups
        return {"geom": geom.to_json(), "a_zero": zero, "bits": bits, "ktiles": ktiles,
                "macs": geom.outputs * k * geom.cout,
                "passes": passes, "chunks": self._chunks(geom, per_n), "amax": amax,
                "wmax": wmax, "bound": layer_bound(k, amax, wmax, bias),
                "bias": node.inputs[2] if bias is not None else None,
                "bias_max": int(np.abs(bias).max(initial=0)) if bias is not None else 0,
                "weight": node.inputs[1], "flatten": flatten, "op": node.op,
                "groups": groups}

    def _chunks(self, geom: Geometry, per_n: list) -> list[list[int]]:
        """Output rows per pass: all of them when one tile covers the reduction, else as
        many as the accumulator buffer holds (a layer larger than the buffer is tiled);
        never more vectors than a pass can count."""
        limit = MAX_PASS_VECTORS if max(len(p) for p in per_n) == 1 else self.acc_entries
        step = max(1, min(limit, MAX_PASS_VECTORS) // geom.ow)
        return [[y, min(step, geom.oh - y)] for y in range(0, geom.oh, step)]

    def _pool(self, node: Node, src_shape: tuple[int, ...]) -> dict:
        geom = pool_geometry(node, src_shape)
        if node.op == "MaxPool":
            return {"geom": geom.to_json(), "mode": "max", "a_zero": 0, "bound": 0}
        zero = self._zero(node, 1)
        amax = act_bound(self.g.values[node.inputs[0]].dtype, zero)
        return {"geom": geom.to_json(), "mode": "sum", "a_zero": zero,
                "bound": geom.kh * geom.kw * amax}

    # ---- the output unit --------------------------------------------------------------------
    def _epilogue(self, layer: Layer, src: Place, res: Place | None) -> dict:
        epi: dict = {"requant": None, "bypass": None, "table": None, "qadd": None}
        if layer.requant is not None:
            a = layer.requant.attrs
            lo, hi = fold((int(a["qmin"]), int(a["qmax"])), layer.clamps, "req")
            epi["requant"] = {"m0": layer.requant.inputs[1], "shift": layer.requant.inputs[2],
                              "zp": int(a.get("zero_point", 0)), "qmin": lo, "qmax": hi}
            value_dtype = a.get("to", "int8")
        else:
            value_dtype = src.dtype
            epi["bypass"] = list(fold(dtype_range(src.dtype), layer.clamps, "req"))
        if layer.tables:
            epi["table"] = {"values": [t.inputs[1] for t in layer.tables],
                            "in_signed": value_dtype == "int8",
                            "clamp": list(fold((-128, 255), layer.clamps, "table")),
                            "index": self.cur.tables}
            self.cur.tables += 1
            value_dtype = self.g.values[layer.tables[-1].inputs[1]].dtype
        epi["out_signed"] = value_dtype == "int8"
        if layer.qadd is not None:
            epi["qadd"] = self._qadd(layer, value_dtype)
        return epi

    def _qadd(self, layer: Layer, value_dtype: str) -> dict:
        q = layer.qadd.attrs
        fused_first = layer.qadd.inputs[1] == layer.residual
        mine, other = ("a", "b") if fused_first else ("b", "a")
        lo, hi = fold((int(q["qmin"]), int(q["qmax"])), layer.clamps, "qadd")
        ls = int(q.get("left_shift", 20))
        return {"y_zero": int(q[f"{mine}_zero"]), "y_m0": int(q[f"{mine}_m0"]),
                "y_shift": int(q[f"{mine}_shift"]), "r_zero": int(q[f"{other}_zero"]),
                "r_m0": int(q[f"{other}_m0"]), "r_shift": int(q[f"{other}_shift"]),
                "left_shift": ls, "m0": int(q["m0"]), "shift": int(q["shift"]),
                "zp": int(q.get("zero_point", 0)), "qmin": lo, "qmax": hi,
                "r_signed": self.g.values[layer.residual].dtype == "int8",
                "y_signed": value_dtype == "int8"}

    def _params(self, layer: Layer, rec: dict) -> int:
        """First parameter word: one per output-channel tile of a GEMM, one for a
        requantised pool, none for the rest."""
        first = self.cur.param
        if layer.kind == "gemm":
            self.cur.param += len(rec["passes"])
        elif layer.requant is not None:
            self.cur.param += 1
        return first

    # ---- helpers ------------------------------------------------------------------------
    def _const(self, name: str) -> np.ndarray | None:
        return self.g.values[name].data if name else None

    def _zero(self, node: Node, k: int) -> int:
        if len(node.inputs) > k and node.inputs[k]:
            return int(np.asarray(self.g.values[node.inputs[k]].data).reshape(-1)[0])
        return 0
