"""PlanHardwired: map the integer graph onto hardwired-weight layers (`--engine hardwired`).

Decides, and records on the IR, what the hardwired backend renders:
- layers: an `etch.QGemm` with constant 2-D weights and one activation row, then its
  `etch.Requantize` (constant multipliers, per tensor or per output channel), then any
  `etch.Clamp` and `etch.Table` that are the only readers of the value before them; every
  member placed on the accelerator. Anything else runs on the host, with the reason;
- segments: maximal chains of layers in which each layer's output is read only by the
  next layer's activation input (and is not a graph output); each is one design, one
  simulation;
- per layer: the neuron style (`csd` or `grouped`; `auto` takes the one with fewer
  estimated cells, `passes.hardwired_cost`), the fold (at most the layer's neurons),
  bit-serial inputs (`--pe bitserial`) and the pipeline depth;
- the cell estimate of the design; over `--max-cells` it is an error that names the
  estimate, before anything long runs.

Records: node attr `hardwired` (JSON): the layer plan on each anchor ({"segment", "index",
"neuron", "fold", "serial", "pipeline", "members", "estimate"}), {"layer": anchor} on the
other members; graph metadata `etch.hardwired` (JSON): {"segments": [{"name", "layers",
"nodes", "input", "output"}], "host": {node: reason}, "cells": total}.

Preconditions: the integer graph (QuantizeActivations), placements set. Invariants: the
graph's semantics are unchanged (nodes are only annotated); running it again gives the same
plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Graph, Node
from passes.base import Pass
from passes.hardwired_cost import Cost, layer_cost

STYLES = ("csd", "grouped")
CODES = ("int8", "uint8")


@dataclass
class Layer:
    anchor: Node
    members: list[Node]
    input: str
    output: str
    weights: np.ndarray
    plan: dict = field(default_factory=dict)


def effective_weights(graph: Graph, anchor: Node) -> np.ndarray:
    """The integer multipliers W[k, n] = w[k, n] - w_zero[n] of a QGemm."""
    w = graph.const(anchor.inputs[1]).astype(np.int64)
    wz = graph.const(anchor.inputs[4]) if len(anchor.inputs) > 4 and anchor.inputs[4] else None
    return w if wz is None else w - np.asarray(wz, np.int64).reshape(1, -1)


class PlanHardwired(Pass):
    """Plan hardwired layers and segments (see the module docstring)."""

    name = "plan_hardwired"

    def __init__(self, neuron: str = "auto", fold: int = 1, serial: bool = False,
                 pipeline: int = 0, max_cells: int | None = None) -> None:
        self.neuron, self.fold, self.serial = neuron, fold, serial
        self.pipeline, self.max_cells = pipeline, max_cells

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        g = graph.copy()
        host: dict[str, str] = {}
        layers = find_layers(g, host)
        segments = chain(g, layers)
        total = Cost()
        for k, seg in enumerate(segments):
            for i, lay in enumerate(seg):
                total += self._decide(lay, f"seg{k}", i)
        if self.max_cells is not None and total.cells > self.max_cells:
            per = ", ".join(f"{lay.anchor.name} {lay.plan['estimate']['cells']:,}"
                            for seg in segments for lay in seg)
            raise EtchError(f"the hardwired design is estimated at {total.cells:,} cells "
                            f"({per}), over --max-cells {self.max_cells:,}; fold it (--fold "
                            f"K), take inputs bit-serially (--pe bitserial) or use fewer "
                            f"weight bits")
        meta = {"segments": [_segment(g, f"seg{k}", seg) for k, seg in enumerate(segments)],
                "host": host, "cells": total.cells}
        for node in g.nodes:
            if node.attrs.get("placement") == "accel" and not any(
                    node in lay.members for seg in segments for lay in seg):
                host.setdefault(node.name, "not part of a hardwired layer")
        g.metadata["etch.hardwired"] = json.dumps(meta, sort_keys=True)
        return g, bool(segments)

    def _decide(self, lay: Layer, segment: str, index: int) -> Cost:
        fold = min(self.fold, lay.weights.shape[1])
        in_signed = lay.plan["in_dtype"] == "int8"
        table = any(m.op == "etch.Table" for m in lay.members)
        styles = STYLES if self.neuron == "auto" else (self.neuron,)
        costs = {s: layer_cost(lay.weights, s, fold, self.serial, in_signed, table,
                               self.pipeline) for s in styles}
        style = min(styles, key=lambda s: (costs[s].cells, STYLES.index(s)))
        lay.plan.update({"segment": segment, "index": index, "neuron": style, "fold": fold,
                         "serial": self.serial, "pipeline": self.pipeline,
                         "members": [m.name for m in lay.members],
                         "estimate": costs[style].to_json(),
                         "alternatives": {s: c.cells for s, c in costs.items()}})
        lay.anchor.attrs["hardwired"] = json.dumps(lay.plan, sort_keys=True)
        for m in lay.members[1:]:
            m.attrs["hardwired"] = json.dumps({"layer": lay.anchor.name})
        return costs[style]


def find_layers(graph: Graph, host: dict[str, str]) -> list[Layer]:
    """Every QGemm that forms a hardwired layer; the others get a host reason."""
    readers = graph.consumers()
    layers = []
    for node in graph.nodes:
        if node.op != "etch.QGemm" or node.attrs.get("placement") != "accel":
            continue
        reason = _anchor_reason(graph, node, readers)
        if reason:
            host[node.name] = reason
            continue
        members = _grow(graph, node, readers)
        a = node.inputs[0]
        lay = Layer(node, members, a, members[-1].outputs[0], effective_weights(graph, node))
        lay.plan["in_dtype"] = graph.values[a].dtype
        layers.append(lay)
    return layers


def _anchor_reason(graph: Graph, node: Node, readers: dict[str, list[Node]]) -> str | None:
    """Why a QGemm cannot be a hardwired layer, or None."""
    w = graph.const(node.inputs[1])
    if w is None or w.ndim != 2:
        return "weights are not a constant matrix"
    a = graph.values[node.inputs[0]]
    if a.dtype not in CODES or int(np.prod(a.shape[:-1])) != 1:
        return f"activation {a.dtype}{list(a.shape)} is not one int8/uint8 row"
    if len(node.inputs) > 5 and node.inputs[5]:
        return "group multipliers (w_mult) are not hardwired"
    for i in (2, 3, 4):
        if len(node.inputs) > i and node.inputs[i] and graph.const(node.inputs[i]) is None:
            return "bias or zero points are not constants"
    nxt = readers.get(node.outputs[0], [])
    if len(nxt) != 1 or nxt[0].op != "etch.Requantize" or node.outputs[0] in graph.outputs:
        return "the accumulator is not read by exactly one Requantize"
    rq = nxt[0]
    if any(graph.const(i) is None for i in rq.inputs[1:3]):
        return "requantisation constants are not constants"
    if rq.attrs.get("to", "int8") not in CODES:
        return "requantises to a type other than int8/uint8"
    return None


def _grow(graph: Graph, anchor: Node, readers: dict[str, list[Node]]) -> list[Node]:
    """The anchor, its Requantize, then Clamp/Table readers while the chain is single."""
    members = [anchor, readers[anchor.outputs[0]][0]]
    while True:
        y = members[-1].outputs[0]
        nxt = readers.get(y, [])
        if y in graph.outputs or len(nxt) != 1 or nxt[0].attrs.get("placement") != "accel":
            return members
        n = nxt[0]
        if n.op == "etch.Clamp" or (n.op == "etch.Table" and graph.const(n.inputs[1])
                                    is not None):
            members.append(n)
        else:
            return members


def chain(graph: Graph, layers: list[Layer]) -> list[list[Layer]]:
    """Layers grouped into segments: runs in which each output feeds only the next."""
    readers = graph.consumers()
    by_input = {lay.input: lay for lay in layers}
    segments: list[list[Layer]] = []
    taken: set[str] = set()
    for lay in layers:
        if lay.anchor.name in taken:
            continue
        seg = [lay]
        taken.add(lay.anchor.name)
        while True:
            out = seg[-1].output
            nxt = by_input.get(out)
            if nxt is None or out in graph.outputs or len(readers.get(out, [])) != 1:
                break
            seg.append(nxt)
            taken.add(nxt.anchor.name)
        segments.append(seg)
    return segments


def _segment(graph: Graph, name: str, seg: list[Layer]) -> dict:
    def io(v: str) -> dict:
        val = graph.values[v]
        return {"name": v, "shape": list(val.shape), "dtype": val.dtype}

    return {"name": name, "layers": [lay.anchor.name for lay in seg],
            "nodes": [m.name for lay in seg for m in lay.members],
            "input": io(seg[0].input), "output": io(seg[-1].output)}
