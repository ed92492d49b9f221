"""PlanEngine: map the integer graph onto the tensor engine (`--target verilog`).

Decides, and records on the IR, everything the Verilog backend renders:
- placement: which nodes form engine layers (`passes.engine_layers`: GEMM/conv groups with
  their requantise -> clamp/table -> residual QAdd epilogue, pools, elementwise layers,
  free views) and which run on the host (with the reason); a float op placed on the
  accelerator is an error;
- segments: the graph is reordered (topologically, groups kept together) so that each run
  of consecutive engine layers is one segment, simulated in one run; every segment's
  inputs and outputs are int8/uint8 tensors streamed in C order;
- memory: each segment's stored tensors get word addresses in the activation memory
  (first fit over lifetimes; views share their source's words), weight rows, parameter
  words and tables;
- tiling (`passes.engine_layer_plan`): weight tiles, passes and output-row chunks;
- the engine configuration: array, word width, and every datapath width from the exact
  bounds of docs/ARCHITECTURE.md (max over layers), memory depths (max over segments).

Records: node attr `engine` (JSON): the layer plan on each anchor, {"layer": anchor} on the
other nodes of a layer, {"view": "alias" | "flatten", "of": source} on views; graph
metadata `etch.engine` (JSON): {"config", "segments", "host"}.

Preconditions: the integer graph (QuantizeActivations), placements set. Invariants: the
graph's semantics are unchanged (nodes are only reordered and annotated); running it
again gives the same plan.
"""

from __future__ import annotations

import json
import math

import networkx as nx
import numpy as np

from compiler.errors import EtchError
from compiler.ir import Graph, Node
from passes.base import Pass
from passes.engine_layer_plan import Cursor, LayerPlanner, Place
from passes.engine_layers import Finder, Layer, Layout, find_layers
from passes.engine_tiling import signed_width

AW = 9            # a - z of int8/uint8 activations fits 9 signed bits
VALUE_BITS = 10   # output-unit values: int8 or uint8, signed


class PlanEngine(Pass):
    """Plan the tensor engine for the integer graph (see the module docstring)."""

    name = "plan_engine"

    def __init__(self, engine: str = "systolic", pe: str = "mac",
                 array: tuple[int, int] = (8, 8), acc_entries: int = 256) -> None:
        rows, cols = check_array(array)
        self.engine, self.pe, self.rows, self.cols = engine, pe, rows, cols
        self.lanes = max(rows, cols)
        self.acc_entries = acc_entries

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        g = graph.copy()
        found = find_layers(g)
        while True:
            units, segments = _segments(g, found)
            loose = _loose_views(g, found, segments)
            if not loose:
                break
            for name in loose:
                del found.views[name]
                found.host[name] = "a flatten whose readers are not all engine GEMMs of its " \
                                   "segment"
        for u in units:
            if u.view is not None and not any(u in s for s in segments):
                found.host[u.nodes[0].name] = "a view with no engine layer next to it"
        g.nodes = [n for unit in units for n in unit.nodes]
        planner = _Planner(g, found, self)
        plans = [planner.segment(k, seg) for k, seg in enumerate(segments)]
        config = planner.config(plans)
        host = {**found.host, **planner.host}
        g.metadata["etch.engine"] = json.dumps(
            {"config": config, "segments": [p["summary"] for p in plans], "host": host},
            sort_keys=True)
        for p in plans:
            for name, attr in p["attrs"].items():
                _node(g, name).attrs["engine"] = json.dumps(attr, sort_keys=True)
        return g, True


def check_array(array: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of --array; EtchError unless both are powers of two up to 64."""
    rows, cols = array
    if rows < 1 or cols < 1 or rows & (rows - 1) or cols & (cols - 1):
        raise EtchError(f"--array {rows}x{cols}: rows and columns must be powers of two")
    if rows > 64 or cols > 64:
        raise EtchError(f"--array {rows}x{cols}: at most 64x64")
    return rows, cols


class _Unit:
    """A vertex of the contracted graph: one layer, one view, or one host node."""

    def __init__(self, nodes: list[Node], layer: Layer | None, view: str | None) -> None:
        self.nodes, self.layer, self.view = nodes, layer, view

    @property
    def hw(self) -> bool:
        return self.layer is not None or self.view is not None


def _segments(g: Graph, found: Finder) -> tuple[list[_Unit], list[list[_Unit]]]:
    """Units in a topological order that keeps each layer's nodes together, and the runs
    of consecutive engine units that contain a layer (the segments)."""
    by_node: dict[str, _Unit] = {}
    units = [_Unit(layer.nodes, layer, None) for layer in found.layers]
    for u in units:
        by_node.update((n.name, u) for n in u.nodes)
    for n in g.nodes:
        if n.name not in by_node:
            u = _Unit([n], None, found.views.get(n.name))
            by_node[n.name] = u
            units.append(u)
    pos = {n.name: k for k, n in enumerate(g.nodes)}
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(units)))
    index = {id(u): k for k, u in enumerate(units)}
    prod = g.producers()
    for k, u in enumerate(units):
        for n in u.nodes:
            for i in n.inputs:
                if i in prod and by_node[prod[i].name] is not u:
                    dag.add_edge(index[id(by_node[prod[i].name])], k)
    key = {k: min(pos[n.name] for n in u.nodes) for k, u in enumerate(units)}
    order = [units[k] for k in nx.lexicographical_topological_sort(dag, key=key.get)]
    runs: list[list[_Unit]] = []
    for u in order:
        if u.hw and runs and runs[-1][-1].hw:
            runs[-1].append(u)
        else:
            runs.append([u])
    return order, [r for r in runs if any(u.layer is not None for u in r)]


def _loose_views(g: Graph, found: Finder, segments: list[list[_Unit]]) -> list[str]:
    """Flatten views some reader of which is not an engine GEMM of the same segment."""
    consumers = g.consumers()
    loose = []
    for seg in segments:
        anchors = {u.layer.anchor.name for u in seg if u.layer is not None
                   and u.layer.kind == "gemm"}
        for u in seg:
            if u.view == "flatten" and any(r.name not in anchors
                                           for r in consumers.get(u.nodes[0].outputs[0], [])):
                loose.append(u.nodes[0].name)
    return loose


class _Planner:
    """Places tensors and plans the layers of each segment; collects the config."""

    def __init__(self, g: Graph, found: Finder, opts: PlanEngine) -> None:
        self.g, self.found, self.o = g, found, opts
        self.host: dict[str, str] = {}
        self.ident = 0

    def segment(self, k: int, units: list[_Unit]) -> dict:
        nodes = [n for u in units for n in u.nodes]
        names = {n.name for n in nodes}
        produced = {o for n in nodes for o in n.outputs}
        consumers = self.g.consumers()
        inputs = sorted({i for n in nodes for i in n.inputs if i and i not in produced
                         and not self.g.values[i].is_const},
                        key=lambda v: _first_use(nodes, v))
        outputs = [o for n in nodes for o in n.outputs if o and (
            o in self.g.outputs or any(r.name not in names for r in consumers.get(o, [])))]
        root = self._roots(units)
        places = self._allocate(units, inputs, outputs, root)
        cursor = Cursor()
        lp = LayerPlanner(self.g, self.o.rows, self.o.cols, self.o.lanes, self.o.acc_entries,
                          cursor)
        attrs: dict[str, dict] = {}
        layers = []
        for u in units:
            if u.view is not None:
                src = u.nodes[0].inputs[0]
                attrs[u.nodes[0].name] = {"view": u.view, "of": root[src], "segment": k}
                continue
            self.ident += 1
            layer = u.layer
            flat = layer.kind == "gemm" and self._flatten_src(layer.src, units)
            res = places[root[layer.residual]] if layer.residual else None
            rec = lp.plan(layer, places[root[layer.src]], places[root[layer.out]], res, flat,
                          self.ident)
            rec["segment"] = k
            layers.append(rec)
            attrs[layer.anchor.name] = rec
            attrs.update((n.name, {"layer": layer.anchor.name, "segment": k})
                         for n in layer.nodes[1:])
        io = {"inputs": [self._io(places[root[v]], v) for v in inputs],
              "outputs": [self._io(places[root[v]], v) for v in outputs]}
        summary = {"name": f"seg{k}", "nodes": [n.name for n in nodes], **io,
                   "layers": [r["name"] for r in layers],
                   "words": max((p.base + _words(p, self.o.lanes) for p in places.values()),
                                default=1),
                   "weight_rows": cursor.wrow, "params": cursor.param,
                   "tables": cursor.tables}
        return {"summary": summary, "attrs": attrs, "layers": layers}

    # ---- tensors ------------------------------------------------------------------------
    def _roots(self, units: list[_Unit]) -> dict[str, str]:
        """value -> the stored value it is (views resolved)."""
        root: dict[str, str] = {}
        for u in units:
            if u.view is not None:
                n = u.nodes[0]
                root[n.outputs[0]] = root.get(n.inputs[0], n.inputs[0])
        return _Roots(root)

    def _flatten_src(self, src: str, units: list[_Unit]) -> bool:
        return any(u.view == "flatten" and u.nodes[0].outputs[0] == src for u in units)

    def _allocate(self, units: list[_Unit], inputs: list[str], outputs: list[str],
                  root: dict[str, str]) -> dict[str, Place]:
        """First-fit word addresses over the lifetimes (in layer steps) of stored values."""
        layers = [u.layer for u in units if u.layer is not None]
        last = len(layers) + 1
        life: dict[str, list[int]] = {root[v]: [0, 0] for v in inputs}
        for step, layer in enumerate(layers, start=1):
            life.setdefault(root[layer.out], [step, step])
            for v in (layer.src, layer.residual):
                if v:
                    life[root[v]][1] = max(life[root[v]][1], step)
        for v in outputs:
            life[root[v]][1] = last
        places: dict[str, Place] = {}
        for v in sorted(life, key=lambda x: (life[x][0], x)):
            size = _words_of(self.g.values[v].shape, self.o.lanes)
            base = _first_fit(size, life[v], [(p, life[p.value]) for p in places.values()],
                              self.o.lanes)
            lay = Layout.of(tuple(self.g.values[v].shape))
            places[v] = Place(v, base, lay.chans, lay.spatial, lay.outer, self.g.values[v].dtype)
        return places

    def _io(self, place: Place, value: str) -> dict:
        v = self.g.values[value]
        lay = Layout.of(tuple(v.shape))
        return {"name": value, "shape": list(v.shape), "dtype": v.dtype, "base": place.base,
                "chans": lay.chans, "spatial": lay.spatial, "outer": lay.outer}

    # ---- the configuration ----------------------------------------------------------------
    def config(self, plans: list[dict]) -> dict:
        layers = [r for p in plans for r in p["layers"]]
        gemms = [r for r in layers if r["kind"] == "gemm"]
        rows, cols = self.o.rows, self.o.cols
        ww = max((r["bits"] for r in gemms), default=1)
        amax = max((r["amax"] for r in gemms), default=255)
        wmax = max((r["wmax"] for r in gemms), default=1)
        pw = signed_width(rows * amax * max(wmax, 1))
        bw = signed_width(max((r["bias_max"] for r in gemms), default=0))
        accw = max([signed_width(r["bound"]) for r in layers] + [pw + 1, bw + 1,
                                                                VALUE_BITS + 1])
        shifts = [0] + [_max_shift(self.g, r["epilogue"]) for r in layers]
        acc_need = [r["geom"]["oh"] * r["geom"]["ow"] for r in gemms
                    if max(len(p) for p in r["passes"]) > 1]
        accd = min(max(acc_need, default=1), self.o.acc_entries)
        accd = max([accd] + [r["geom"]["ow"] for r in gemms if len(r["chunks"]) > 1])
        seg = [p["summary"] for p in plans]
        return {"engine": self.o.engine, "pe": self.o.pe, "rows": rows, "cols": cols,
                "lanes": self.o.lanes, "aw": AW, "ww": ww, "pw": pw, "accw": accw, "bw": bw,
                "sw": max(1, max(shifts).bit_length()), "accd": accd,
                "adepth": max([s["words"] for s in seg] + [1]),
                "wdepth": max([s["weight_rows"] for s in seg] + [1]),
                "pdepth": max([s["params"] for s in seg] + [1]),
                "ntab": max([s["tables"] for s in seg] + [0]),
                "qadd": int(any(r["epilogue"]["qadd"] for r in layers))}


class _Roots(dict):
    """A value's stored root: itself unless a view maps it."""

    def __missing__(self, key: str) -> str:
        return key


def _max_shift(g: Graph, epi: dict) -> int:
    shifts = []
    if epi["requant"]:
        shifts.append(int(np.max(g.values[epi["requant"]["shift"]].data)))
    if epi["qadd"]:
        q = epi["qadd"]
        for s in (q["y_shift"], q["r_shift"]):
            if s <= q["left_shift"]:
                raise EtchError(f"QAdd shift {s} <= left_shift {q['left_shift']}: the "
                                f"engine's residual add needs a smaller input scale ratio")
            shifts.append(s - q["left_shift"])
        shifts.append(q["shift"])
    return max(shifts, default=0)


def _first_use(nodes: list[Node], v: str) -> int:
    return next(k for k, n in enumerate(nodes) if v in n.inputs)


def _words_of(shape: tuple[int, ...], lanes: int) -> int:
    lay = Layout.of(tuple(shape))
    return math.ceil(lay.chans / lanes) * lay.spatial


def _words(p: Place, lanes: int) -> int:
    return math.ceil(p.chans / lanes) * p.spatial


def _first_fit(size: int, life: list[int], placed: list[tuple[Place, list[int]]],
               lanes: int) -> int:
    """The lowest word address where `size` words overlap no tensor alive at once."""
    busy = sorted((p.base, p.base + _words(p, lanes)) for p, span in placed
                  if span[0] <= life[1] and life[0] <= span[1])
    base = 0
    for lo, hi in busy:
        if base + size <= lo:
            break
        base = max(base, hi)
    return base


def _node(g: Graph, name: str) -> Node:
    return next(n for n in g.nodes if n.name == name)
