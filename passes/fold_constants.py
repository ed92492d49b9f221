"""FoldConstants: fold constant per-output-channel scales and biases into linear ops.

Rewrites, for L = Conv | ConvTranspose | Gemm | MatMul with a constant weight W and bias b,
and s, t constants that vary only along L's output-channel axis (or are scalars):
- Mul(L(x, W, b), s) -> L(x, W*s, b*s)   (either operand order); Div(L, s) -> L(x, W/s, b/s);
- Add(L(x, W, b), t) -> L(x, W, b + t)   (either operand order); Sub(L, t) -> L(x, W, b - t);
- Add(MatMul(x, W), t) with x and W 2-D -> Gemm(x, W, t). A MatMul of higher rank has no bias
  input: its Add stays, and FuseEpilogue makes it an epilogue step.
The output-channel axis is 1 for Conv, ConvTranspose and Gemm, and the last axis for a
MatMul whose second operand is a 2-D constant.

Preconditions (each failed one is a `check` reason): L's output has exactly one reader and
is not a graph output; W (for a scale) and b (when present) are float constants without
quantisation parameters; a Gemm's bias C is a constant.
Invariants: graph output names are kept (L takes over the folded node's output); the
function is the same up to float rounding: new weights are computed in float64 and rounded
once to their dtype (`fold_affine`, which FoldBatchNorm shares).
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops import LINEAR
from passes.base import Pass, Rule, apply_rules

# Op -> (which input is the constant, when only one order is allowed).
SCALES = {"Mul": None, "Div": 1}
SHIFTS = {"Add": None, "Sub": 1}


# ---- per-output-channel analysis (shared with FoldBatchNorm) -----------------------------
def channel_axis(graph: Graph, node: Node) -> int | None:
    """The axis of `node`'s output that indexes its output channels (None if it has none)."""
    rank = len(graph.values[node.outputs[0]].shape)
    if node.op in ("Conv", "ConvTranspose", "Gemm"):
        return 1
    if node.op == "MatMul" and len(graph.values[node.inputs[1]].shape) == 2:
        return rank - 1
    return None


def channel_vector(c: np.ndarray, out_shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """`c` as a vector over the `axis` channels of `out_shape`, or None when `c` varies along
    another axis or would broadcast the output to a larger shape."""
    rank = len(out_shape)
    if c.ndim > rank:
        return None
    padded = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for k, d in enumerate(padded) if k != axis):
        return None
    if padded[axis] not in (1, out_shape[axis]):
        return None
    return np.broadcast_to(c.reshape(-1), (out_shape[axis],))


def single_reader_reason(graph: Graph, node: Node) -> str | None:
    """Why `node`'s output cannot be rewritten in place (None: one reader, not an output)."""
    out = node.outputs[0]
    if out in graph.outputs:
        return f"%{out} of {node.name} is a graph output"
    readers = {n.name for n in graph.consumers().get(out, [])}
    if len(readers) != 1:
        return f"%{out} of {node.name} has {len(readers)} readers ({', '.join(sorted(readers))})"
    return None


def affine_reason(graph: Graph, node: Node, scale: bool, shift: bool) -> str | None:
    """Why `fold_affine(graph, node, ...)` cannot run (None when it can)."""
    if channel_axis(graph, node) is None:
        return f"{node.name} ({node.op}) has no output-channel axis (weight is not 2-D)"
    if scale and not _float_const(graph, node.inputs[1]):
        return f"{node.name}: weight %{node.inputs[1]} is not a float constant"
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias and (scale or shift) and not _float_const(graph, bias):
        return f"{node.name}: bias %{bias} is not a float constant"
    if shift and node.op == "MatMul" and not _is_2d_matmul(graph, node):
        return f"{node.name}: a rank-{len(graph.values[node.outputs[0]].shape)} MatMul has " \
               f"no bias input (the Add stays an epilogue step)"
    return single_reader_reason(graph, node)


def _float_const(graph: Graph, name: str) -> bool:
    v = graph.values.get(name)
    return v is not None and v.is_const and v.quant is None and v.data.dtype.kind == "f"


def _is_2d_matmul(graph: Graph, node: Node) -> bool:
    return all(len(graph.values[i].shape) == 2 for i in node.inputs[:2])


# ---- the rewrite (shared with FoldBatchNorm) -----------------------------------------------
def fold_affine(graph: Graph, node: Node, scale: np.ndarray | None,
                shift: np.ndarray | None) -> None:
    """Make linear `node` compute `scale * node(x) + shift` per output channel, in place.

    `scale`/`shift` are vectors over the output channels (float64 for one rounding). A 2-D
    MatMul that gains a bias becomes a Gemm. Requires `affine_reason(...) is None`.
    """
    if scale is not None:
        w = graph.values[node.inputs[1]]
        _set_input(graph, node, 1, _scaled_weight(node, w.data, scale), "w")
    if node.op == "MatMul" and shift is not None:
        node.op, node.attrs = "Gemm", {}
    if node.op != "MatMul":
        bias = _folded_bias(graph, node, scale, shift)
        if bias is not None:
            _set_input(graph, node, 2, bias, "b")


def _scaled_weight(node: Node, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """W with output channel c multiplied by s[c] (float64, rounded once to W's dtype)."""
    w64 = w.astype(np.float64)
    if node.op == "Conv":
        out = w64 * s.reshape((-1,) + (1,) * (w.ndim - 1))
    elif node.op == "ConvTranspose":  # W is [Cin, Cout/group, k...]; channel g*Cout/g + j
        g = int(node.attrs.get("group", 1))
        grouped = w64.reshape((g, w.shape[0] // g) + w.shape[1:])
        per = s.reshape((g, 1, w.shape[1]) + (1,) * (w.ndim - 2))
        out = (grouped * per).reshape(w.shape)
    elif node.op == "Gemm" and node.attrs.get("transB", 0):
        out = w64 * s[:, None]
    else:  # Gemm [K, N], MatMul [K, N]
        out = w64 * s[None, :]
    return out.astype(w.dtype)


def _folded_bias(graph: Graph, node: Node, scale: np.ndarray | None,
                 shift: np.ndarray | None) -> np.ndarray | None:
    """The new bias b*scale + shift (Gemm: C*scale + shift/beta), or None if unchanged.

    A Gemm that gets a bias where it had none (or had beta = 0) gets beta = 1 too."""
    name = node.inputs[2] if len(node.inputs) > 2 else ""
    beta = float(node.attrs.get("beta", 1.0)) if node.op == "Gemm" else 1.0
    if not name or beta == 0.0:
        if shift is None:
            return None
        node.attrs.pop("beta", None)
        return shift.astype(graph.values[node.outputs[0]].dtype)
    b = graph.values[name].data
    b64 = b.astype(np.float64)
    if scale is not None:
        b64 = b64 * scale
    if shift is not None:
        b64 = b64 + shift / beta
    return b64.astype(b.dtype)


def _set_input(graph: Graph, node: Node, index: int, data: np.ndarray, tag: str) -> None:
    """Point input `index` of `node` at a new constant (constants are shared: never mutate)."""
    name = graph.add_const(f"{node.name}_{tag}", data).name
    while len(node.inputs) <= index:
        node.inputs.append("")
    node.inputs[index] = name


def absorb(graph: Graph, producer: Node, node: Node) -> None:
    """Remove `node` and make `producer` write `node`'s output (so output names are kept)."""
    old, new = producer.outputs[0], node.outputs[0]
    graph.remove_node(node)
    producer.outputs = [new]
    graph.values.pop(old, None)


# ---- rules -----------------------------------------------------------------------------------
def _linear_and_const(graph: Graph, node: Node, table: dict) -> tuple[Node, np.ndarray] | None:
    """(the linear producer, the constant operand) of a binary `node`, if it has that form."""
    if node.op not in table or len(node.inputs) != 2:
        return None
    prod = graph.producers()
    orders = [(0, 1)] if table[node.op] == 1 else [(0, 1), (1, 0)]
    for lin, const in orders:
        p, c = prod.get(node.inputs[lin]), graph.const(node.inputs[const])
        if p is not None and p.op in LINEAR and c is not None:
            return p, c
    return None


def _vector(graph: Graph, node: Node, table: dict) -> tuple[Node, np.ndarray | None]:
    lin, c = _linear_and_const(graph, node, table)
    axis = channel_axis(graph, lin)
    v = None if axis is None else channel_vector(c, graph.values[node.outputs[0]].shape, axis)
    return lin, v


def _scale_check(graph: Graph, node: Node) -> str | None:
    lin, s = _vector(graph, node, SCALES)
    if s is None:
        return f"{node.name}: constant is not per output channel of {lin.name}"
    if node.op == "Div" and not np.all(s):
        return f"{node.name}: divides by zero"
    return affine_reason(graph, lin, scale=True, shift=False)


def _fold_scale(graph: Graph, node: Node) -> None:
    lin, s = _vector(graph, node, SCALES)
    s64 = s.astype(np.float64)
    fold_affine(graph, lin, 1.0 / s64 if node.op == "Div" else s64, None)
    absorb(graph, lin, node)


def _shift_check(graph: Graph, node: Node) -> str | None:
    lin, t = _vector(graph, node, SHIFTS)
    if t is None:
        return f"{node.name}: constant is not per output channel of {lin.name}"
    return affine_reason(graph, lin, scale=False, shift=True)


def _fold_shift(graph: Graph, node: Node) -> None:
    lin, t = _vector(graph, node, SHIFTS)
    t64 = t.astype(np.float64)
    fold_affine(graph, lin, None, -t64 if node.op == "Sub" else t64)
    absorb(graph, lin, node)


RULES = [
    Rule("fold_scale", lambda g, n: _linear_and_const(g, n, SCALES) is not None,
         _fold_scale, _scale_check),
    Rule("fold_bias", lambda g, n: _linear_and_const(g, n, SHIFTS) is not None,
         _fold_shift, _shift_check),
]


class FoldConstants(Pass):
    """Fold constant per-channel Mul/Div/Add/Sub after a linear op into its weights/bias."""

    name = "fold_constants"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        changed = apply_rules(graph, RULES)
        graph.prune()  # drops the weights the folds replaced
        return graph, changed
