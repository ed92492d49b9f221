"""FlattenPointwise: a 1x1 integer convolution over an image runs over the image as one row.

Rewrites (x: [N, C, H, W] with H > 1; w: [O, C/g, 1, 1]; no padding; output [N, O, OH, OW]):
- etch.QConv(x, w, ...) -> Reshape(etch.QConv(Reshape(x, [N, C, 1, H*W]), w, ...), [N, O, H, W])
  at stride 1;
- at stride (sh, sw) != 1 the input is subsampled first and the conv runs at stride 1:
  Reshape(Slice(x, steps [sh, sw] on H, W), [N, C, 1, OH*OW]);
- the same for an etch.QFused anchored on such a QConv; its residual r (the QAdd step's
  operand, [N, O, OH, OW]) is read as Reshape(r, [N, O, 1, OH*OW]).
Why: a pointwise convolution is a matmul over the output positions. As one row, its output
rows are OH*OW long even where the image is narrow, and the output row is the vector axis of
the CPU convolution kernels (backends/tvm/lower/int_conv.py), which used to take this
decision themselves; a strided one (ResNet's downsampling 1x1) reads only every sh-th row
and sw-th column, so the subsampled copy is a quarter of the input.

Preconditions: a verified integer graph (after FuseInteger, so that the Reshape after the
conv does not split a group). Invariants: bit-identical results (each output of a
pointwise conv reads one input position, the Slice keeps exactly the positions a strided
1x1 conv reads, and a Reshape is a view in NCHW order); graph output names kept (the final
Reshape writes the original output); idempotent (the new conv has H = 1 and stride 1). The Reshapes are placed on the accelerator, as other data moves on integers.
"""

from __future__ import annotations

import json

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops.conv import conv_window
from compiler.ops.etch_ops import kernel_attrs
from compiler.ops.etch_qfused import group
from passes.base import Pass


def pointwise_reason(graph: Graph, node: Node) -> str | None:
    """Why `node` is not a pointwise QConv (or QFused anchored on one) over a tall image."""
    attrs = _conv_attrs(node)
    if attrs is None:
        return f"{node.name} ({node.op}) is not an integer convolution"
    x, w = graph.values[node.inputs[0]], graph.values[node.inputs[1]]
    if len(x.shape) != 4 or x.shape[2] == 1:
        return f"{node.name}: the input {list(x.shape)} is not a 2-D image of several rows"
    win = conv_window(attrs, x.shape, w.shape)
    if win.kernel != (1, 1) or any(win.begin + win.end):
        return f"{node.name}: not a 1x1 unpadded convolution"
    return None


def _conv_attrs(node: Node) -> dict | None:
    if node.op == "etch.QConv":
        return node.attrs
    if node.op == "etch.QFused" and node.attrs.get("kernel") == "etch.QConv":
        return group(node.attrs, node.inputs, node.outputs[0]).anchor_attrs
    return None


def _residual_index(node: Node) -> int | None:
    """The input index of the QFused node's residual operand, or None."""
    if node.op != "etch.QFused":
        return None
    g = group(node.attrs, node.inputs, node.outputs[0])
    return None if g.residual is None else node.inputs.index(g.residual_value,
                                                             len(g.anchor_inputs))


def _reshape(graph: Graph, src: str, shape: tuple[int, ...], out: str, at: int) -> None:
    """Insert `out = Reshape(src, shape)` before node position `at` (a view on integers)."""
    like = graph.values[src]
    graph.add_value(Value(out, shape, like.dtype, None, like.quant))
    target = graph.add_const(f"{out}_shape", np.asarray(shape, np.int64)).name
    graph.add_node(Node("Reshape", [src, target], [out], {"placement": "accel"}), at)


def _subsample(graph: Graph, node: Node, strides: tuple[int, int]) -> None:
    """x -> Slice(x, steps = strides on H, W) as the conv's input; the conv at stride 1."""
    src = node.inputs[0]
    like = graph.values[src]
    n, c, h, w = like.shape
    out = graph.fresh(f"{src}_strided")
    shape = (n, c, -(-h // strides[0]), -(-w // strides[1]))
    graph.add_value(Value(out, shape, like.dtype, None, like.quant))
    consts = [graph.add_const(graph.fresh(f"{out}_{k}"), np.asarray(v, np.int64)).name
              for k, v in (("starts", [0, 0]), ("ends", [h, w]), ("axes", [2, 3]),
                           ("steps", list(strides)))]
    graph.add_node(Node("Slice", [src, *consts], [out], {"placement": "accel"}),
                   graph.nodes.index(node))
    node.inputs[0] = out
    _set_conv_attr(node, "strides", [1, 1])


def _set_conv_attr(node: Node, key: str, value) -> None:
    if node.op == "etch.QConv":
        node.attrs[key] = value
        return
    attrs = dict(kernel_attrs(node.attrs))
    attrs[key] = value
    node.attrs["kernel_attrs"] = json.dumps(attrs, sort_keys=True)


def _flatten(graph: Graph, node: Node) -> None:
    x, w = graph.values[node.inputs[0]], graph.values[node.inputs[1]]
    strides = conv_window(_conv_attrs(node), x.shape, w.shape).strides
    if strides != (1, 1):
        _subsample(graph, node, strides)
    n, c, h, w = graph.values[node.inputs[0]].shape
    out = graph.values[node.outputs[0]]
    o = out.shape[1]
    row = graph.fresh(f"{node.inputs[0]}_row")
    _reshape(graph, node.inputs[0], (n, c, 1, h * w), row, graph.nodes.index(node))
    node.inputs[0] = row
    k = _residual_index(node)
    if k is not None:
        res = graph.fresh(f"{node.inputs[k]}_row")
        _reshape(graph, node.inputs[k], (n, o, 1, h * w), res, graph.nodes.index(node))
        node.inputs[k] = res
    flat = graph.fresh(f"{out.name}_row")
    graph.add_value(Value(flat, (n, o, 1, h * w), out.dtype, None, out.quant))
    node.outputs[0] = flat
    _reshape(graph, flat, out.shape, out.name, graph.nodes.index(node) + 1)


class FlattenPointwise(Pass):
    """Run pointwise integer convolutions over the image flattened to one row."""

    name = "flatten_pointwise"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        todo = [n for n in graph.nodes if pointwise_reason(graph, n) is None]
        for node in todo:
            _flatten(graph, node)
        return graph, bool(todo)
