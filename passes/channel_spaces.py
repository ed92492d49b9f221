"""Channel spaces: sets of tensors whose channels can be permuted together, exactly.

Permuting the channels of a tensor x by P is invisible to the rest of the graph when the
producers of x write its channels in the order P (permute their output channels: weight
rows and bias) and the consumers read them in that order (permute their input channels:
weight columns). Between the two, channel-wise ops carry the permutation through:
elementwise ops (per-channel constants permuted), depthwise convolutions, pools and means
over other axes, Reshape/Flatten/Squeeze/Unsqueeze that keep the channel axis (or split it
into heads [H, dh], or merge heads back), Transpose, and residual Adds (both operands and
the sum share one space). A MatMul of two activations whose contracted axes both carry
channels (attention's q . k^T) ties the two spaces together: the same permutation on both
sides leaves the product unchanged. A space that reaches a graph input or output, an op
not listed here, or an ambiguous layout is pinned.

`analyse(graph)` returns the spaces (union-find over value names), with the constant edits
each permutation implies and the block size it must respect (head size; channels per group
of a grouped convolution): permutations act within aligned blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops import ELEMENTWISE
from passes.linear_layers import KERNELS

POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                   "ReduceMean", "ReduceMax", "ReduceSum"})
RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


@dataclass(frozen=True)
class Edit:
    """A constant to permute with a space: input `index` of `node`, along `axis` of the
    constant. kind: "producer" / "consumer" (a linear layer's weight N / K axis, or its
    bias), "const" (an elementwise operand or depthwise weight). `groups` > 1: a grouped
    convolution's weight K axis, permuted per group with the within-group permutation."""

    node: Node
    index: int
    axis: int
    kind: str
    groups: int = 1


@dataclass
class Space:
    """One permutable channel space (the union-find root's view)."""

    channels: int
    block: int
    edits: list[Edit] = field(default_factory=list)
    members: list[str] = field(default_factory=list)


class Spaces:
    """Union-find over value names, with each value's channel axes ((c,) or (head, d))."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.parent: dict[str, str] = {}
        self.axes: dict[str, tuple[int, ...]] = {}
        self.blocks: dict[str, int] = {}
        self.produced: set[str] = set()
        self.pinned: set[str] = set()
        self.edits: list[tuple[str, Edit]] = []

    def find(self, v: str) -> str:
        while self.parent.get(v, v) != v:
            v = self.parent[v]
        return v

    def track(self, v: str, axes: tuple[int, ...], produced: bool = False) -> None:
        """Declare v's channel axes; a second, different declaration pins v."""
        if v in self.axes and self.axes[v] != axes:
            self.pinned.add(v)
        self.axes.setdefault(v, axes)
        self.parent.setdefault(v, v)
        if produced:
            self.produced.add(v)

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def block(self, v: str, size: int) -> None:
        self.blocks[v] = math.gcd(self.blocks.get(v, 0), size)

    def channels(self, v: str) -> int:
        shape = self.graph.values[v].shape
        return int(np.prod([shape[a] for a in self.axes[v]]))

    def result(self) -> dict[str, Space]:
        """Root -> Space, for the spaces that can be permuted."""
        groups: dict[str, list[str]] = {}
        for v in self.axes:
            groups.setdefault(self.find(v), []).append(v)
        out = {}
        for root, members in groups.items():
            sizes = {self.channels(v) for v in members}
            bad = self.pinned.intersection(members) or set(members) - self.produced
            if bad or len(sizes) != 1:
                continue
            c = sizes.pop()
            block = math.gcd(c, *(self.blocks.get(v, c) for v in members))
            out[root] = Space(c, block, [e for v, e in self.edits if self.find(v) == root],
                              members)
        return out


def analyse(graph: Graph) -> dict[str, Space]:
    """The permutable channel spaces of `graph` (see the module docstring)."""
    sp = Spaces(graph)
    for node in graph.nodes:
        if not _visit(sp, node):
            sp.pinned.update(i for i in node.inputs + node.outputs if i)
    sp.pinned.update(graph.inputs)
    sp.pinned.update(graph.outputs)
    return sp.result()


def _visit(sp: Spaces, node: Node) -> bool:
    g = sp.graph
    w = g.values.get(node.inputs[1]) if len(node.inputs) > 1 else None
    if node.op in KERNELS and w is not None and w.is_const:
        if node.op == "Conv" and _depthwise(g, node):
            return _depthwise_conv(sp, node)
        return _linear(sp, node)
    if node.op in ELEMENTWISE and len(node.outputs) == 1:
        return _elementwise(sp, node)
    if node.op in POOLS:
        return _pool(sp, node)
    if node.op in RESHAPES:
        return _reshape(sp, node)
    if node.op == "Transpose":
        return _transpose(sp, node)
    if node.op == "MatMul":
        return _attention(sp, node)
    return False


def _depthwise(g: Graph, node: Node) -> bool:
    w = g.values[node.inputs[1]]
    c = g.values[node.inputs[0]].shape[1]
    return int(node.attrs.get("group", 1)) == c == w.shape[0] and w.shape[1] == 1


def _linear(sp: Spaces, node: Node) -> bool:
    g = sp.graph
    x, out = node.inputs[0], node.outputs[0]
    w = g.values[node.inputs[1]]
    rank = len(g.values[out].shape)
    groups = int(node.attrs.get("group", 1)) if node.op == "Conv" else 1
    n_first = node.op == "Conv" or (node.op == "Gemm" and node.attrs.get("transB", 0))
    if node.op == "MatMul" and len(w.shape) != 2 or node.op == "Gemm" and \
            node.attrs.get("transA", 0):
        return False
    n_axis, k_axis = (0, 1) if n_first else (1, 0)
    out_axis = 1 if node.op in ("Conv", "Gemm") else rank - 1
    sp.track(out, (out_axis,), produced=True)
    sp.edits.append((out, Edit(node, 1, n_axis, "producer")))
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias:
        b = g.values[bias]
        if not b.is_const:
            return False
        if b.size > 1:
            sp.edits.append((out, Edit(node, 2, b.data.ndim - 1, "producer")))
    x_axis = 1 if node.op in ("Conv", "Gemm") else len(g.values[x].shape) - 1
    sp.track(x, (x_axis,))
    sp.edits.append((x, Edit(node, 1, k_axis, "consumer", groups)))
    if groups > 1:
        sp.block(x, g.values[x].shape[1] // groups)
        sp.block(out, w.shape[0] // groups)
    return True


def _depthwise_conv(sp: Spaces, node: Node) -> bool:
    x, out = node.inputs[0], node.outputs[0]
    if x not in sp.axes or sp.axes[x] != (1,):
        return False
    sp.track(out, (1,), produced=True)
    sp.union(x, out)
    sp.edits.append((out, Edit(node, 1, 0, "const")))
    if len(node.inputs) > 2 and node.inputs[2]:
        if not sp.graph.values[node.inputs[2]].is_const:
            return False
        sp.edits.append((out, Edit(node, 2, 0, "const")))
    return True


def _elementwise(sp: Spaces, node: Node) -> bool:
    g = sp.graph
    out = node.outputs[0]
    shape = g.values[out].shape
    acts = [i for i in node.inputs if i and not g.values[i].is_const]
    tracked = [i for i in acts if i in sp.axes]
    if not tracked:
        return True  # nothing channel-carrying passes through here
    axes = sp.axes[tracked[0]]
    if len(tracked) != len(acts) or any(sp.axes[i] != axes or g.values[i].shape != shape
                                        for i in acts):
        return False
    sp.track(out, axes, produced=True)
    for i in acts:
        sp.union(i, out)
    for k, name in enumerate(node.inputs):
        if name and g.values[name].is_const and g.values[name].size > 1:
            axis = _const_axis(g.values[name].data.shape, shape, axes)
            if axis is None:
                return False
            sp.edits.append((out, Edit(node, k, axis, "const")))
    return True


def _const_axis(cshape: tuple[int, ...], shape: tuple[int, ...],
                axes: tuple[int, ...]) -> int | None:
    """The axis of a broadcast constant that runs along plain channel axis `axes`, if the
    constant varies along nothing else (None otherwise)."""
    if len(axes) != 1 or len(cshape) > len(shape):
        return None
    off = len(shape) - len(cshape)
    a = axes[0] - off
    if a < 0 or cshape[a] != shape[axes[0]]:
        return None
    return a if all(d == 1 for k, d in enumerate(cshape) if k != a) else None


def _pool(sp: Spaces, node: Node) -> bool:
    g = sp.graph
    x, out = node.inputs[0], node.outputs[0]
    if x not in sp.axes:
        return True
    if len(g.values[x].shape) != len(g.values[out].shape) or any(
            g.values[x].shape[a] != g.values[out].shape[a] for a in sp.axes[x]):
        return False  # keepdims=0, or the channel axis is reduced
    if any(o and sp.graph.consumers().get(o) for o in node.outputs[1:]):
        return False  # MaxPool's indices
    sp.track(out, sp.axes[x], produced=True)
    sp.union(x, out)
    return True


def _reshape(sp: Spaces, node: Node) -> bool:
    g = sp.graph
    x, out = node.inputs[0], node.outputs[0]
    if x not in sp.axes:
        return True
    axes = reshape_axes(g.values[x].shape, g.values[out].shape, sp.axes[x])
    if axes is None:
        return False
    sp.track(out, axes, produced=True)
    sp.union(x, out)
    if len(axes) == 2:
        sp.block(out, g.values[out].shape[axes[1]])
    if len(sp.axes[x]) == 2:
        sp.block(x, g.values[x].shape[sp.axes[x][1]])
    return True


def reshape_axes(src: tuple[int, ...], dst: tuple[int, ...],
                 axes: tuple[int, ...]) -> tuple[int, ...] | None:
    """Where channel axes `axes` of shape src land in shape dst: the same non-unit dims
    around them, a split of one channel axis into (heads, d), or the merge back."""
    if len(axes) == 1:
        c = axes[0]
        nz_s = [k for k, d in enumerate(src) if d != 1]
        nz_d = [k for k, d in enumerate(dst) if d != 1]
        if c in nz_s and [src[k] for k in nz_s] == [dst[k] for k in nz_d]:
            return (nz_d[nz_s.index(c)],)
        if len(dst) == len(src) + 1 and dst[:c] == src[:c] and dst[c + 2:] == src[c + 1:] \
                and dst[c] * dst[c + 1] == src[c] and dst[c] > 1 and dst[c + 1] > 1:
            return (c, c + 1)
        return None
    h, d = axes
    if d == h + 1 and len(dst) == len(src) - 1 and dst[:h] == src[:h] and \
            dst[h] == src[h] * src[d] and dst[h + 1:] == src[d + 1:]:
        return (h,)
    return None


def _transpose(sp: Spaces, node: Node) -> bool:
    x, out = node.inputs[0], node.outputs[0]
    if x not in sp.axes:
        return True
    rank = len(sp.graph.values[x].shape)
    perm = list(node.attrs.get("perm") or reversed(range(rank)))
    sp.track(out, tuple(perm.index(a) for a in sp.axes[x]), produced=True)
    sp.union(x, out)
    return True


def _attention(sp: Spaces, node: Node) -> bool:
    """MatMul of two activations: contracted channel axes tie the spaces of a and b; b's
    channels along its last axis carry on into the output (softmax(..) @ v)."""
    g = sp.graph
    a, b, out = node.inputs[0], node.inputs[1], node.outputs[0]
    ra, rb = len(g.values[a].shape), len(g.values[b].shape)
    ta, tb = sp.axes.get(a), sp.axes.get(b)
    if ta is not None and ta[-1] == ra - 1:
        if tb is None or tb[-1] != rb - 2 or len(ta) != len(tb) or ra != rb or \
                (len(ta) == 2 and ta[0] != tb[0]):
            return False
        sp.union(a, b)
        return True
    if ta is not None or (tb is not None and tb[-1] == rb - 2):
        return False
    if tb is not None:
        if ra != rb or (len(tb) == 2 and tb[0] >= rb - 2):
            return False
        sp.track(out, tb, produced=True)
        sp.union(b, out)
    return True
