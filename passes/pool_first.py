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

The same commutation the other way where that is the cheaper side (`conv_before_pool`):
a pool that keeps every position (a 3x3 stride-1 "same" average, Inception's pool branches)
before a 1x1 convolution that reduces the channels moves after it, so the pool averages the
conv's fewer channels: Conv1x1(AvgPool(x), W, b) -> Add(AvgPool(Conv1x1(x, W)), b). The
bias is added after the pool, so padded windows (counted or not) average the conv's
unbiased outputs, whose padding is zero as the input's was: the same map exactly. Where
the pool drops positions the first rule's direction is the cheaper one, so this one does
not look at such pools. inception_v3: its nine pool branches' pools then average 32-192
channels instead of 192-2048.

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


def _pointwise_reason(graph: Graph, conv: Node) -> str | None:
    """Why `conv` is not a per-position linear map (a 1x1 stride-1 unpadded Conv with a
    constant weight), or None."""
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
    return None


def _check(graph: Graph, pool: Node) -> str | None:
    conv = _conv(graph, pool)
    reason = _pointwise_reason(graph, conv)
    if reason is not None:
        return reason
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
    _report(graph, {"conv": conv.name, "pool": pool.name,
                    "positions": [int(np.prod(xv.shape[2:])), int(np.prod(outv.shape[2:]))]})


def _report(graph: Graph, row: dict) -> None:
    """Add one move to the pass's `--explain` report."""
    rows = json.loads(graph.metadata.get(REPORT, "[]"))
    rows.append(row)
    graph.metadata[REPORT] = json.dumps(rows)


def _pool(graph: Graph, conv: Node) -> Node | None:
    """The AveragePool that writes `conv`'s input and keeps every position, or None."""
    if conv.op != "Conv":
        return None
    pool = graph.producers().get(conv.inputs[0])
    if pool is None or pool.op != "AveragePool":
        return None
    xs, ys = graph.values[pool.inputs[0]].shape, graph.values[pool.outputs[0]].shape
    return pool if tuple(xs[2:]) == tuple(ys[2:]) else None


def _check_after(graph: Graph, conv: Node) -> str | None:
    pool = _pool(graph, conv)
    reason = _pointwise_reason(graph, conv)
    if reason is not None:
        return reason
    if len(conv.inputs) > 2 and graph.const(conv.inputs[2]) is None:
        return f"{conv.name}: its bias is not a constant"
    if single_reader_reason(graph, pool) is not None:
        return f"{pool.name}: its output is read by more than {conv.name}"
    channels, oc = graph.values[pool.inputs[0]].shape[1], graph.const(conv.inputs[1]).shape[0]
    if oc >= channels:
        return f"{conv.name}: does not reduce the channels ({channels} -> {oc})"
    return None


def _rewrite_after(graph: Graph, conv: Node) -> None:
    pool = _pool(graph, conv)
    x, pooled, out = pool.inputs[0], pool.outputs[0], conv.outputs[0]
    xv, outv = graph.values[x], graph.values[out]
    bias = graph.const(conv.inputs[2]) if len(conv.inputs) > 2 else None
    mapped = graph.add_value(Value(graph.fresh(f"{out}_unpooled"),
                                   (xv.shape[0], outv.shape[1], *xv.shape[2:]), outv.dtype))
    graph.values.pop(pooled)
    conv.inputs = [x, conv.inputs[1]]
    conv.outputs = [mapped.name]
    pool.inputs = [mapped.name, *pool.inputs[1:]]
    graph.remove_node(pool)
    graph.add_node(pool, graph.nodes.index(conv) + 1)
    if bias is None:
        pool.outputs = [out]
    else:
        avg = graph.add_value(Value(graph.fresh(f"{out}_pooled"), outv.shape, outv.dtype))
        pool.outputs = [avg.name]
        b = graph.add_const(f"{conv.name}_bias", np.asarray(bias).reshape(
            1, -1, *([1] * (len(outv.shape) - 2))))
        graph.add_node(Node("Add", [avg.name, b.name], [out], name=f"{conv.name}_bias"),
                       graph.nodes.index(pool) + 1)
    _report(graph, {"conv": conv.name, "pool": pool.name, "after": True,
                    "channels": [int(xv.shape[1]), int(outv.shape[1])]})


RULES = [Rule("pool_before_pointwise",
              lambda g, n: n.op in ("AveragePool", "GlobalAveragePool") and
              _conv(g, n) is not None, _rewrite, _check),
         Rule("conv_before_pool", lambda g, n: _pool(g, n) is not None, _rewrite_after,
              _check_after)]


class PoolFirst(Pass):
    """Average pooling on the cheaper side of the 1x1 convolution it meets (float graphs)."""

    name = "pool_first"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        return graph, apply_rules(graph, RULES)


def explain(reports: dict[str, str]) -> str:
    """The moved pools for `etch compile --explain` ("" when none)."""
    if REPORT not in reports:
        return ""
    rows = json.loads(reports[REPORT])
    before = [r for r in rows if not r.get("after")]
    after = [r for r in rows if r.get("after")]
    lines = [f"average pools moved before their 1x1 conv: {len(before)}"] if before else []
    lines += [f"  {r['pool']:<24} before {r['conv']}: the conv on {r['positions'][1]} "
              f"positions, not {r['positions'][0]}" for r in before]
    lines += [f"average pools moved after their 1x1 conv: {len(after)}"] if after else []
    lines += [f"  {r['pool']:<24} after {r['conv']}: the pool on {r['channels'][1]} "
              f"channels, not {r['channels'][0]}" for r in after]
    return "\n".join(lines)
