"""PlanHardwired: map the integer graph onto hardwired-weight stages (`--engine hardwired`).

Decides, and records on the IR, what the hardwired backend renders:
- stages (`passes/hardwired_stages.py`): a linear anchor (QGemm, QConv, QSumPool: a
  constant matrix over one activation) with its Requantize, Clamp/Table, MaxPool and
  residual QAdd; anything else runs on the host, with the reason;
- segments: runs of stages, each reading the previous stage's output; a tensor that a
  later stage needs (a residual) travels along as a *bypass*: each stage's input vector is
  its main input followed by the tensors later stages still need, its output vector its
  own output followed by the same. A segment reads one tensor from the host and writes one;
- per stage: the neuron style (`csd` or `grouped`; `auto` takes the one with fewer
  estimated cells, `passes.hardwired_cost`), the fold (at most the stage's outputs; 1 for
  stages that pool, add a residual or carry a bypass), bit-serial inputs (`--pe
  bitserial`) and the pipeline depth;
- the cell estimate of the design; over `--max-cells` it is an error that names the
  estimate, before anything long runs.

Records: node attr `hardwired` (JSON): the stage plan on each anchor ({"segment", "index",
"neuron", "fold", "serial", "pipeline", "members", "input", "output", "layout",
"bypass", "residual", "estimate"}), {"layer": anchor} on the other members; graph metadata
`etch.hardwired` (JSON): {"segments": [{"name", "layers", "nodes", "input", "output"}],
"host": {node: reason}, "cells": total}.

Preconditions: the integer graph (QuantizeActivations), placements set. Invariants: the
graph's semantics are unchanged (nodes are only annotated); running it again gives the same
plan.
"""

from __future__ import annotations

import json

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Graph, Node
from passes.base import Pass
from passes.hardwired_cost import Cost, layer_cost
from passes.hardwired_stages import Stage, linear_map, stages

STYLES = ("csd", "grouped")


def effective_weights(graph: Graph, anchor: Node) -> np.ndarray:
    """The integer multipliers W[k, n] of a stage's anchor (x - x_zero) -> acc."""
    return linear_map(graph, anchor)


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
        segments = chain(g, stages(g, host), host)
        total = Cost()
        for k, seg in enumerate(segments):
            for i, st in enumerate(seg):
                total += self._decide(st, f"seg{k}", i)
        if self.max_cells is not None and total.cells > self.max_cells:
            per = ", ".join(f"{st.anchor.name} {st.plan['estimate']['cells']:,}"
                            for seg in segments for st in seg)
            raise EtchError(f"the hardwired design is estimated at {total.cells:,} cells "
                            f"({per}), over --max-cells {self.max_cells:,}; fold it (--fold "
                            f"K), take inputs bit-serially (--pe bitserial) or use fewer "
                            f"weight bits")
        taken = {m.name for seg in segments for st in seg for m in st.members}
        for node in g.nodes:
            if node.attrs.get("placement") == "accel" and node.name not in taken:
                host.setdefault(node.name, "not part of a hardwired stage")
        meta = {"segments": [_segment(g, f"seg{k}", seg) for k, seg in enumerate(segments)],
                "host": host, "cells": total.cells}
        g.metadata["etch.hardwired"] = json.dumps(meta, sort_keys=True)
        return g, bool(segments)

    def _decide(self, st: Stage, segment: str, index: int) -> Cost:
        w = st.matrix
        extras = bool(st.plan["bypass"]) or st.residual is not None or any(
            m.op == "MaxPool" for m in st.steps)
        fold = 1 if extras else min(self.fold, w.shape[1])
        in_signed = st.plan["in_dtype"] == "int8"
        table = any(m.op == "etch.Table" for m in st.steps)
        styles = STYLES if self.neuron == "auto" else (self.neuron,)
        costs = {s: layer_cost(w, s, fold, self.serial, in_signed, table, self.pipeline)
                 for s in styles}
        style = min(styles, key=lambda s: (costs[s].cells, STYLES.index(s)))
        st.plan.update({"segment": segment, "index": index, "neuron": style, "fold": fold,
                        "serial": self.serial, "pipeline": self.pipeline,
                        "members": [m.name for m in st.members], "input": st.input,
                        "output": st.output, "residual": st.residual,
                        "estimate": costs[style].to_json(),
                        "alternatives": {s: c.cells for s, c in costs.items()}})
        st.anchor.attrs["hardwired"] = json.dumps(st.plan, sort_keys=True)
        for m in st.members:
            if m is not st.anchor:
                m.attrs["hardwired"] = json.dumps({"layer": st.anchor.name})
        return costs[style]


def chain(graph: Graph, found: list[Stage], host: dict[str, str]) -> list[list[Stage]]:
    """Stages grouped into segments, with each stage's input layout and bypass: a stage
    joins the segment of the stage before it when it reads that stage's output and its
    residual (if any) is already in the segment. A segment whose inner value is read
    outside it is cut after that value's producer. A stage whose residual is in no segment
    it can join runs on the host (a segment reads one tensor)."""
    for st in found:
        st.plan["in_dtype"] = graph.values[st.input].dtype
    out = [s for seg in _greedy(graph, found, host) for s in _split(graph, seg, host)]
    for seg in out:
        _layouts(graph, seg)
    return out


def _greedy(graph: Graph, found: list[Stage], host: dict[str, str]) -> list[list[Stage]]:
    segments: list[list[Stage]] = []
    for st in found:
        seg = segments[-1] if segments else None
        if seg and st.input == seg[-1].output and seg[-1].output not in graph.outputs \
                and st.residual in (None, *_values(seg)):
            seg.append(st)
        elif st.residual in (None, st.input):
            segments.append([st])
        else:
            host[st.anchor.name] = "its residual comes from outside its segment"
    return segments


def _values(seg: list[Stage]) -> list[str]:
    return [seg[0].input, *(s.output for s in seg)]


def _split(graph: Graph, seg: list[Stage], host: dict[str, str]) -> list[list[Stage]]:
    readers = graph.consumers()
    members = {m.name for st in seg for m in st.members}
    for i, st in enumerate(seg[:-1]):
        if st.output in graph.outputs or any(
                n.name not in members for n in readers.get(st.output, [])):
            rest = _greedy(graph, seg[i + 1:], host)
            return [seg[:i + 1], *(s for r in rest for s in _split(graph, r, host))]
    return [seg]


def _layouts(graph: Graph, seg: list[Stage]) -> None:
    """Each stage's input vector: [main input, then the tensors made before it that it or a
    later stage still needs]; its bypass: the tensors made up to it that later stages need."""
    for i, st in enumerate(seg):
        made = _values(seg[:i]) if i else [seg[0].input]
        later = [s.residual for s in seg[i:] if s.residual is not None]
        carried = [t for t in dict.fromkeys(later) if t != st.input and t in made]
        st.plan["layout"] = [[t, int(np.prod(graph.values[t].shape))]
                             for t in [st.input, *carried]]
        nxt_needs = [s.residual for s in seg[i + 1:] if s.residual is not None]
        st.plan["bypass"] = [t for t in dict.fromkeys(nxt_needs)
                             if t != st.output and t in made]


def _segment(graph: Graph, name: str, seg: list[Stage]) -> dict:
    def io(v: str) -> dict:
        val = graph.values[v]
        return {"name": v, "shape": list(val.shape), "dtype": val.dtype}

    return {"name": name, "layers": [st.anchor.name for st in seg],
            "nodes": [m.name for st in seg for m in st.members],
            "input": io(seg[0].input), "output": io(seg[-1].output)}
