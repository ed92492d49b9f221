"""PoolFirst: average pooling moves before the 1x1 convolution that feeds it.

A 1x1 convolution with stride 1 and no padding is the same linear map (plus bias) at every
position, and average pooling without padding averages positions, so the two commute:
AvgPool(Conv1x1(x)) = Conv1x1(AvgPool(x)), and the convolution then runs on the pooled
positions only. DenseNet's transition layers are the case (BN, ReLU, 1x1 conv halving the
channels, 2x2 average pool): each spent a quarter of its multiply-adds on positions the pool
then averaged away, 3 x 205 MFLOP of densenet121's 5.7 GFLOP.

Rewrites AveragePool(y) or GlobalAveragePool(y), y = Conv(x, W[, b]) ->
Conv(AveragePool(x), W[, b]) (same attributes; the Conv now writes the pool's output).

Preconditions (else the rule declines, with the reason in `--explain`): the Conv's weight
is a constant of kernel 1x1 (every spatial dim), its strides and dilations are 1 and it has
no padding; y is read by the pool alone and is not a graph output; the pool does not count
padding (count_include_pad would average zeros that the bias does not see), and it has
fewer output positions than input positions (else nothing is saved). Groups, channel
counts, padded windows that count what they cover and ceil_mode windows are all fine: the
map is per position and the average is over the same positions.
Invariants: graph outputs keep their names and shapes; the node names are kept; results
differ from the graph before by float rounding only (the sums are taken in another order).
"""

from __future__ import annotations

import json

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops.conv import conv_window, window
from passes.base import Pass, Rule, apply_rules
from passes.fold_constants import single_reader_reason

REPORT = "etch.pools_first"


def _conv(graph: Graph, pool: Node) -> Node | None:
    producer = graph.producers().get(pool.inputs[0])
    return producer if producer is not None and producer.op == "Conv" else None


def _check(graph: Graph, pool: Node) -> str | None:
    conv = _conv(graph, pool)
    w = graph.const(conv.inputs[1])
    if w is None:
        return f"{conv.name}: its weight is not a constant"
    if any(k != 1 for k in w.shape[2:]):
        return f"{conv.name}: kernel {list(w.shape[2:])} is not 1x1"
    win = conv_window(conv.attrs, graph.values[conv.inputs[0]].shape, w.shape)
    if any(s != 1 for s in win.strides + win.dilations):
        return f"{conv.name}: strided or dilated"
    if any(win.begin + win.end):
        return f"{conv.name}: padded (its border outputs are the bias alone)"
    if single_reader_reason(graph, conv) is not None:  # the pool reads it: the only one?
        return f"{conv.name}: its output is read by more than {pool.name}"
    shape, pooled = graph.values[conv.outputs[0]].shape, graph.values[pool.outputs[0]].shape
    if pool.op == "AveragePool" and pool.attrs.get("count_include_pad", 0):
        w_ = window(pool.attrs, shape[2:], tuple(pool.attrs["kernel_shape"]),
                    bool(pool.attrs.get("ceil_mode", 0)))
        if any(w_.begin + w_.end):
            return f"{pool.name}: counts its padding (the bias would be averaged with zeros)"
    if np.prod(pooled[2:]) >= np.prod(shape[2:]):
        return f"{pool.name}: keeps every position (nothing to save)"
    return None


def _rewrite(graph: Graph, pool: Node) -> None:
    conv = _conv(graph, pool)
    x, y, out = conv.inputs[0], conv.outputs[0], pool.outputs[0]
    xv, outv = graph.values[x], graph.values[out]
    pooled = graph.add_value(Value(graph.fresh(f"{x}_pooled"),
                                   (*xv.shape[:2], *outv.shape[2:]), xv.dtype))
    pool.inputs = [x, *pool.inputs[1:]]
    pool.outputs = [pooled.name]
    conv.inputs = [pooled.name, *conv.inputs[1:]]
    conv.outputs = [out]
    graph.values.pop(y)
    graph.remove_node(pool)
    graph.add_node(pool, graph.nodes.index(conv))
    rows = json.loads(graph.metadata.get(REPORT, "[]"))
    rows.append({"conv": conv.name, "pool": pool.name,
                 "positions": [int(np.prod(xv.shape[2:])), int(np.prod(outv.shape[2:]))]})
    graph.metadata[REPORT] = json.dumps(rows)


RULES = [Rule("pool_before_pointwise",
              lambda g, n: n.op in ("AveragePool", "GlobalAveragePool") and
              _conv(g, n) is not None, _rewrite, _check)]


class PoolFirst(Pass):
    """Average pooling before the 1x1 convolution it followed (float graphs)."""

    name = "pool_first"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        return graph, apply_rules(graph, RULES)


def explain(reports: dict[str, str]) -> str:
    """The moved pools for `etch compile --explain` ("" when none)."""
    if REPORT not in reports:
        return ""
    rows = json.loads(reports[REPORT])
    return "\n".join([f"average pools moved before their 1x1 conv: {len(rows)}"] + [
        f"  {r['pool']:<24} before {r['conv']}: the conv on {r['positions'][1]} positions, "
        f"not {r['positions'][0]}" for r in rows])
