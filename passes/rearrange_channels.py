"""RearrangeChannels: permute channels so that outlier channels share quantisation groups.

For each permutable channel space (`passes.channel_spaces`): score every channel, sort the
channels by decreasing score within each aligned block (head size, conv group), and apply
the permutation to every constant the space touches: the producers' weight rows and biases,
the consumers' weight columns (the K axis that groups of `group_size` run along), and the
per-channel constants and depthwise weights in between. Nothing is permuted at run time.

Score: the consumers' column magnitude max_n |W[n, c]| / max |W| (the K-axis outliers that
inflate a group's scale, objective "k", for per-output-channel groups along K); for
per-input-channel layouts (groups of output channels, objective "n"), or a space with no
consumer (attention's q/k: key channels, permuted with the query channels so q . k is
unchanged), the producers' row magnitude max_k |W[c, k]| / max |W|.

Report: `graph.metadata["etch.rearrange"]` (JSON): per permuted space its channel count,
block and the layers touched; per scored layer, the round-to-nearest quantisation error of
each group (squared error / ||W||^2, so the groups add up to the layer's relative error)
with `bits` and `group_size`, before and after.
Invariant: the float function is unchanged: every output equals the original up to the
order of float additions inside the consumers' dot products (bit-identical when evaluated
in float64 and rounded to float32).
"""

from __future__ import annotations

import json

import numpy as np

from compiler.ir import Graph
from passes.base import Pass
from passes.channel_spaces import Edit, Space, analyse
from passes.linear_layers import Layer
from passes.quantizer import Scheme, dequantize, rtn


class RearrangeChannels(Pass):
    """Group outlier channels by permuting channel spaces (exact, compile time only)."""

    name = "rearrange_channels"

    def __init__(self, group_size: int | None = None, bits: int = 4,
                 objective: str = "k") -> None:
        self.group_size = group_size or 32
        self.scheme = Scheme(bits if bits and bits > 1 else 4)
        self.objective = objective

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        spaces = analyse(graph)
        report = []
        for space in spaces.values():
            entry = self._permute(graph, space)
            if entry is not None:
                report.append(entry)
        graph.prune()
        graph.metadata["etch.rearrange"] = json.dumps(report)
        return graph, bool(report)

    def _permute(self, graph: Graph, space: Space) -> dict | None:
        kind = "k" if self.objective == "k" and _has(space, "consumer") else "n"
        scored = [e for e in space.edits if e.kind == ("consumer" if kind == "k" else
                                                         "producer") and e.index == 1]
        if not scored:
            return None
        score = np.max([_scores(graph, e, space.channels) for e in scored], axis=0)
        perm = _block_sort(score, space.block)
        if np.array_equal(perm, np.arange(space.channels)):
            return None
        before = [self._errors(graph, e) for e in scored]
        for e in space.edits:
            _apply(graph, e, perm, space.block)
        after = [self._errors(graph, e) for e in scored]
        layers = [{"layer": e.node.name, "groups_before": b[1], "groups_after": a[1],
                   "error_before": b[0], "error_after": a[0]}
                  for e, b, a in zip(scored, before, after)]
        return {"channels": space.channels, "block": space.block, "objective": kind,
                "touched": sorted({e.node.name for e in space.edits}), "layers": layers}

    def _errors(self, graph: Graph, e: Edit) -> tuple[float, list[float]]:
        """(relative error, per-group errors) of RTN at `bits` with groups of group_size
        along the scored axis (K for consumers, output channels for producers)."""
        w = graph.values[e.node.inputs[1]].data
        ly = Layer(e.node, e.node.op, e.node.attrs, e.node.inputs[1])
        m = ly.matrix(w).astype(np.float64)
        taps = ly.taps(w.shape)
        n, k = m.shape
        if e.kind == "consumer":
            g = min(self.group_size, k // taps)
            if (k // taps) % g:
                return float("nan"), []
            rg, cg = 1, g * taps
        else:
            g = min(self.group_size, n)
            if n % g:
                return float("nan"), []
            rg, cg = g, taps
        q, s, z = rtn(m, self.scheme, rg, cg)
        d2 = np.square(dequantize(q, s, z, rg, cg) - m)
        total = max(float(np.square(m).sum()), 1e-30)
        per = d2.reshape(n // rg, rg, k // cg, cg).sum(axis=(1, 3))
        per = per.sum(axis=0) if e.kind == "consumer" else per.sum(axis=1)
        return round(float(d2.sum()) / total, 6), [round(float(x) / total, 6) for x in per]


def _has(space: Space, kind: str) -> bool:
    return any(e.kind == kind and e.index == 1 for e in space.edits)


def _scores(graph: Graph, e: Edit, channels: int) -> np.ndarray:
    """Per-channel magnitude of a weight along the edit's axis, normalised by its max."""
    w = np.abs(graph.values[e.node.inputs[e.index]].data.astype(np.float64))
    if e.groups > 1:  # grouped conv: channel j*C/g + c is column c of group j's rows
        o = w.shape[0] // e.groups
        per = [np.moveaxis(w[j * o:(j + 1) * o], 1, 0).reshape(w.shape[1], -1).max(axis=1)
               for j in range(e.groups)]
        s = np.concatenate(per)
    else:
        s = np.moveaxis(w, e.axis, 0).reshape(w.shape[e.axis], -1).max(axis=1)
    assert s.size == channels
    return s / max(float(s.max()), 1e-30)


def _block_sort(score: np.ndarray, block: int) -> np.ndarray:
    """The permutation sorting channels by decreasing score within each aligned block."""
    perm = np.arange(score.size)
    for b in range(0, score.size, block):
        perm[b:b + block] = b + np.argsort(-score[b:b + block], kind="stable")
    return perm


def _apply(graph: Graph, e: Edit, perm: np.ndarray, block: int) -> None:
    """Permute constant input `e.index` of `e.node` along `e.axis` (a new constant)."""
    name = e.node.inputs[e.index]
    data = graph.values[name].data
    if e.groups > 1:
        o, c = data.shape[0] // e.groups, data.shape[1]
        parts = [np.take(data[j * o:(j + 1) * o], perm[j * c:(j + 1) * c] - j * c, axis=1)
                 for j in range(e.groups)]
        new = np.concatenate(parts, axis=0)
    else:
        new = np.take(data, perm, axis=e.axis)
    e.node.inputs[e.index] = graph.add_const(f"{name}_perm", new).name
