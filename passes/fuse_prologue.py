"""FusePrologue: a pointwise convolution reads its input through the copy it makes anyway.

A float 1x1 convolution that `choose_conv_algorithm` sent to the "pointwise" GEMM packs its
input into panels before the multiply-adds (backends/tvm/lower/conv_gemm.py), so whatever
produced that input elementwise per channel, and a channel Concat before it, can run inside
that copy instead of as kernels of their own that write the value out and read it back.
DenseNet is the case: every layer is Conv1x1(Relu(BN(Concat(all earlier features)))), the
BN folded to a per-channel Mul and Add, and the Concat and the BN + Relu were two kernels
over the whole growing feature map, a third of the model's memory traffic.

Rewrites, first Concat(Concat(a, b), c) -> Concat(a, b, c) along channels (`flatten_concats`),
then for a Conv or Conv-anchored etch.Fused F recorded "pointwise" (or "pointwise_channels",
which then becomes "pointwise", in `--explain` too: only that GEMM copies its input; but a
"pointwise_channels" F of 256+ output channels behind a bare Concat keeps its algorithm and
the Concat, `KEEP_CHANNELS_OC`) whose input x has F as its only reader and is not a graph
output:
- x = E(u), E an anchorless etch.Fused whose steps read only u, earlier steps and
  constants that are one value per channel (scalars, [C, 1, 1], [1, C, 1, 1]): E's steps
  become F's `prologue` (its operand indices renumbered to F's inputs);
- u (or x, without E) = Concat(parts, axis=1) of 4-D values, read by nothing else: the
  parts become inputs of F and `concat_inputs` lists them (input 0 and the appended ones);
- a plain Conv becomes an etch.Fused with no epilogue. E and the Concat are removed.
At least one of the two must apply; the attribute `conv_algorithm` and F's name are kept.
The same for a float 2-D AveragePool whose windows lie inside its input (`row_pool`: the
row pool reads its input once per window row, `lower/pool.pool_anchor`): it becomes an
etch.Fused anchored on the pool. DenseNet's transitions once `pool_first` put their pool
before the 1x1 conv: the concat and BN + Relu kernels over the block's features (densenet121,
Zen 5, one thread: 453 us) are gone, the pools reading through them 117 -> 142 us. And for
such a MaxPool behind a bare Concat: squeezenet1_1's fire modules 3 and 5 end in a concat
read by a 3x3 stride-2 max pool (ceil_mode, every window inside): the concat kernels (39 +
16 us) are gone, the pools 61 -> 48 and 22 -> 22 us (Zen 5, one thread, profile).

Preconditions: a verified graph after FuseEpilogue and ChooseConvAlgorithm (cpu, float).
Invariants: bit-identical results (etch.Fused concatenates and runs the prologue steps with
the ops' own reference code, in the same order: compiler/ops/etch_ops.py); graph outputs
unchanged; idempotent (F's input is then read from the parts, which no rule absorbs again
unless they are themselves a new concat or chain, which the first run already took).
"""

from __future__ import annotations

import json

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops.etch_ops import fused_steps, prologue_steps
from passes.base import Pass
from passes.choose_conv_algorithm import ATTR, POINTWISE_WHY
from passes.choose_conv_algorithm import REPORT as ALGORITHMS
from passes.fold_constants import channel_vector

REPORT = "etch.prologues"


def _only_reader(graph: Graph, readers: dict[str, list[Node]], value: str, node: Node) -> bool:
    return value not in graph.outputs and [id(r) for r in readers.get(value, [])] == [id(node)]


def chain_reason(graph: Graph, chain: Node) -> str | None:
    """Why anchorless etch.Fused `chain` cannot run as a prologue, or None."""
    if chain.op != "etch.Fused" or chain.attrs.get("kernel", ""):
        return f"{chain.name} is not an elementwise chain"
    out = graph.values[chain.outputs[0]]
    if graph.values[chain.inputs[0]].shape != out.shape or out.dtype != "float32":
        return f"{chain.name} changes its input's shape or type"
    for step in fused_steps(chain.attrs):
        for a in step["args"]:
            if not isinstance(a, int) or a == 0:  # a running value, or the chain's input
                continue
            data = graph.values[chain.inputs[a]].data
            if data is None or channel_vector(np.asarray(data), out.shape, 1) is None:
                return f"{chain.name}: step {step['op']} reads more than one value per channel"
    return None


def _concat(graph: Graph, producers: dict[str, Node], readers: dict[str, list[Node]],
            value: str, reader: Node) -> Node | None:
    cat = producers.get(value)
    if cat is None or cat.op != "Concat" or not _only_reader(graph, readers, value, reader):
        return None
    shape = graph.values[value].shape
    axis = int(cat.attrs.get("axis", 0))
    if len(shape) != 4 or axis not in (1, -3) or len(cat.inputs) < 2:
        return None
    return cat


def _renumber(steps: list[dict], index: dict[int, int | str]) -> list[dict]:
    return [{**s, "args": [index[a] if isinstance(a, int) else a for a in s["args"]]}
            for s in steps]


def absorb(graph: Graph, node: Node, producers: dict[str, Node],
           readers: dict[str, list[Node]]) -> tuple[Node, list[Node]] | None:
    """The node that replaces `node` with its prologue, and the nodes it absorbs; None
    where nothing can be absorbed."""
    x = node.inputs[0]
    if len(graph.values[x].shape) != 4 or not _only_reader(graph, readers, x, node):
        return None
    if node.op == "etch.Fused" and (prologue_steps(node.attrs)
                                    or node.attrs.get("concat_inputs")):
        return None
    if node.op == "etch.Fused" and any(a == 0 for s in fused_steps(node.attrs)
                                       for a in s["args"]):
        return None  # the epilogue reads the conv's input itself (a residual of x)
    inputs = list(node.inputs)
    attrs = dict(node.attrs) if node.op == "etch.Fused" else {
        "kernel": node.op, "kernel_attrs": json.dumps(
            {k: v for k, v in node.attrs.items() if k != ATTR}, sort_keys=True,
            default=lambda v: v.item()),
        "num_kernel_inputs": len(node.inputs), "epilogue": "[]",
        **({ATTR: node.attrs[ATTR]} if ATTR in node.attrs else {})}
    absorbed: list[Node] = []
    steps: list[dict] = []
    chain = producers.get(x)
    if chain is not None and chain_reason(graph, chain) is None:
        index: dict[int, int | str] = {0: "y0"}  # the chain's input: the prologue's
        for k, name in enumerate(chain.inputs[1:], 1):
            if name not in inputs:
                inputs.append(name)
            index[k] = inputs.index(name)
        steps = _renumber(fused_steps(chain.attrs), index)
        inputs[0] = chain.inputs[0]
        absorbed.append(chain)
    cat = _concat(graph, producers, readers, inputs[0], absorbed[-1] if absorbed else node)
    if cat is not None:
        parts = [0]
        inputs[0] = cat.inputs[0]
        for name in cat.inputs[1:]:
            parts.append(len(inputs))
            inputs.append(name)  # a part may repeat: each is its own slot
        attrs["concat_inputs"] = json.dumps(parts)
        absorbed.append(cat)
    if not absorbed:
        return None
    if steps:
        attrs["prologue"] = json.dumps(steps, sort_keys=True)
    return Node("etch.Fused", inputs, list(node.outputs), attrs, node.name), absorbed


# The GEMM algorithms of a 1x1 convolution (choose_conv_algorithm). A prologue runs in the
# "pointwise" GEMM's input copy only, so a "pointwise_channels" node that takes one becomes
# "pointwise": measured on squeezenet1_1 (AVX-512 Xeon, one thread), the concat kernel a
# channels' GEMM left behind (+104 us) cost more than its tile saved (-32 us). Except a
# bare Concat before a channels' GEMM of KEEP_CHANNELS_OC output channels or more: the
# concat copies the input once, the tile saves per output channel. squeezenet1_1's
# 512->1000 classifier on 13x13: 1437 us as "pointwise", 1031 + 24 (the concat) as
# "pointwise_channels"; squeezenet1_1 5.23 -> 5.11 ms with one thread. Not with a chain
# (BN, Relu) as well: densenet121's 1024->512 transition on 14x14 825 us as "pointwise",
# 817 + 42 (chain) + 62 (concat) as "pointwise_channels".
POINTWISE = ("pointwise", "pointwise_channels")
KEEP_CHANNELS_OC = 256


class FusePrologue(Pass):
    """Run per-channel elementwise producers and channel concats inside the input copy of
    pointwise GEMM convolutions (module docstring)."""

    name = "fuse_prologue"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        changed = flatten_concats(graph)
        rows, switched = [], []
        for node in list(graph.nodes):
            pool = row_pool(graph, node)
            if not pool and (node.attrs.get(ATTR) not in POINTWISE or (
                    node.op == "etch.Fused" and node.attrs.get("kernel") != "Conv")):
                continue
            found = absorb(graph, node, graph.producers(), graph.consumers())
            if found is None:
                continue
            new, absorbed = found
            if node.op == "MaxPool" and "prologue" in new.attrs:
                continue  # a concat only (`row_pool`)
            if not pool and new.attrs[ATTR] != "pointwise":  # only that GEMM reads one
                if _keeps_channels(graph, node, absorbed):
                    continue
                new.attrs[ATTR] = "pointwise"
                switched.append(new.name)
            graph.add_node(new, graph.nodes.index(node))
            graph.remove_node(node)
            for old in absorbed:
                graph.remove_node(old)
                graph.values.pop(old.outputs[0], None)
            rows.append({"node": new.name, "absorbed": [n.name for n in absorbed]})
            changed = True
        if rows:
            graph.metadata[REPORT] = json.dumps(rows)
        if switched and ALGORITHMS in graph.metadata:
            algorithms = json.loads(graph.metadata[ALGORITHMS])
            for row in algorithms:
                if row["node"] in switched:
                    row["algorithm"] = "pointwise"
                    row["why"] = (f"{POINTWISE_WHY}, reading its input through a prologue "
                                  "(the channels' GEMM reads none)")
            graph.metadata[ALGORITHMS] = json.dumps(algorithms)
        return graph, changed


def row_pool(graph: Graph, node: Node) -> bool:
    """Whether `node` is a float 2-D AveragePool or MaxPool whose windows all lie inside its
    input (no padding; a ceil_mode that adds no window past the input): the row pool
    (`lower/pool._row_pool`), which reads its input through a prologue as the pointwise
    GEMM's copy does. A MaxPool takes a concat only, no chain of steps: its NaN-keeping max
    reads each value three times, and a prologue's value is bound once a read (a Let each),
    so the steps would run three times."""
    if node.op not in ("AveragePool", "MaxPool") or len(node.outputs) != 1:
        return False
    x = graph.values[node.inputs[0]]
    if len(x.shape) != 4 or x.dtype != "float32":
        return False
    if any(node.attrs.get("pads") or [0]) or \
            node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return False
    # ceil_mode only changes the output size: whether every window still lies inside
    out = graph.values[node.outputs[0]].shape
    kernel = node.attrs["kernel_shape"]
    strides = node.attrs.get("strides") or [1] * len(kernel)
    dilations = node.attrs.get("dilations") or [1] * len(kernel)
    return all((o - 1) * s + (k - 1) * d + 1 <= size for o, s, k, d, size in
               zip(out[2:], strides, kernel, dilations, x.shape[2:]))


def _keeps_channels(graph: Graph, node: Node, absorbed: list[Node]) -> bool:
    """Whether a "pointwise_channels" node keeps its tile and leaves `absorbed` as they are:
    a bare Concat (no elementwise chain) before KEEP_CHANNELS_OC output channels or more."""
    return graph.values[node.outputs[0]].shape[1] >= KEEP_CHANNELS_OC and \
        all(n.op == "Concat" for n in absorbed)


def _channel_concat(graph: Graph, node: Node) -> bool:
    return node.op == "Concat" and len(graph.values[node.outputs[0]].shape) == 4 and \
        int(node.attrs.get("axis", 0)) in (1, -3)


def flatten_concats(graph: Graph) -> bool:
    """Concat(Concat(a, b), c) -> Concat(a, b, c) along channels (DenseNet's exported form
    grows its features one concat at a time, each also read by a layer), so each concat is
    read only by its layer; concats no longer read are removed. Whether anything changed."""
    producers = graph.producers()
    changed = False
    for node in graph.nodes:
        if not _channel_concat(graph, node):
            continue
        flat: list[str] = []
        for name in node.inputs:
            inner = producers.get(name)
            if inner is not None and _channel_concat(graph, inner) and inner is not node:
                flat.extend(inner.inputs)  # already flat: nodes are in topological order
                changed = True
            else:
                flat.append(name)
        node.inputs = flat
    readers = graph.consumers()
    for node in list(graph.nodes):
        if _channel_concat(graph, node) and node.outputs[0] not in graph.outputs and \
                not readers.get(node.outputs[0]):
            graph.remove_node(node)
            graph.values.pop(node.outputs[0], None)
    return changed


def explain(reports: dict[str, str]) -> str:
    """The fused prologues for `etch compile --explain` ("" when none)."""
    if REPORT not in reports:
        return ""
    rows = json.loads(reports[REPORT])
    return "\n".join([f"prologues (pointwise convs, row pools): {len(rows)}"] + [
        f"  {r['node']:<32} reads through {', '.join(r['absorbed'])}" for r in rows])
