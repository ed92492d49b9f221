"""The state one graph lowering carries: the BlockBuilder, value -> Relax expression, and the
choices the kernels depend on (pack weights for CPU vector units, vector lanes).

Every kernel goes through `LowerCtx.emit`, which names the PrimFunc `<kind>_<k>_<node>` from a
sanitised node name (`[A-Za-z0-9_]` only: names in an ONNX file are untrusted text) and tags it
with `etch.kind` so the schedule rules know what they are looking at, and with `etch.node` /
`etch.op` (the sanitised node name and its op) so a later failure can say where it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tvm import ir, relax, te, tirx

from backends.tvm.lower import fastmath
from backends.tvm.support import STORAGE, storage
from compiler.errors import EtchError
from compiler.ir import Graph, Node

Shape = tuple[int, ...]


def sanitize(name: str, limit: int = 40) -> str:
    """`name` reduced to [A-Za-z0-9_], at most `limit` characters (may be empty)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)[:limit].strip("_")


def shape_of(expr: relax.Expr) -> Shape:
    """The static shape of a Relax tensor expression."""
    return tuple(int(d) for d in expr.ty.shape.values)


def _stored(data: np.ndarray) -> np.ndarray:
    """A constant in the type TVM holds it in (narrow types widened, exactly)."""
    return data.astype(storage(data.dtype.name)) if data.dtype.name in STORAGE else data


def accumulator(dtype: object) -> str:
    """The type sums of `dtype` values accumulate in: float32 for 16-bit floats (as numpy's
    pairwise sums and ONNX Runtime's CPU kernels do: a float16 running sum loses a digit
    every few adds), else `dtype` itself."""
    dtype = str(dtype)
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def cast(v: tirx.Expr, dtype: object) -> tirx.Expr:
    """`v` as `dtype` (no cast when it already is)."""
    if isinstance(v, te.TensorSlice):
        v = v.asobject()
    return v if str(v.ty.dtype) == str(dtype) else v.astype(str(dtype))


def bload(t: te.Tensor, idx: Sequence[tirx.Expr]) -> tirx.Expr:
    """Read `t` at output position `idx` with numpy (right-aligned) broadcasting."""
    shape = [int(d) for d in t.shape]
    lead = len(idx) - len(shape)
    return t(*[0 if d == 1 else idx[lead + i] for i, d in enumerate(shape)])


def merged_tail(shapes: Sequence[Shape], out: Shape, keep: int = 0) -> list[Shape]:
    """The operands' and the output's shapes with the longest run of trailing axes merged
    into one along which each operand is either whole or broadcast throughout (a gate
    [N, C, 1, 1] of a map [N, C, H, W]: [N, C, 1] and [N, C, H W]), the first `keep` axes
    never merged; operands right-aligned to the output's rank first."""
    full = [(1,) * (len(out) - len(s)) + tuple(s) for s in shapes]
    whole = lambda s, ax: s[ax] == out[ax] and out[ax] != 1
    k = len(out) - 1
    while k > keep and all(whole(s, k - 1) == whole(s, len(out) - 1) or out[k - 1] == 1
                           for s in full):
        k -= 1
    if len(out) - k < 2:
        return [*full, tuple(out)]
    merge = lambda s: s[:k] + (int(np.prod(s[k:], dtype=np.int64)),)
    return [*map(merge, full), merge(tuple(out))]


@dataclass
class Operands:
    """A node's inputs for an elementwise computation: constant scalars become immediates
    (no memory traffic, and `Pow(x, 2)` can see its exponent); other inputs are tensors."""

    slots: list[tuple[str, Any]] = field(default_factory=list)  # ("t", k) | ("imm", e) | ("none",)
    exprs: list[relax.Expr] = field(default_factory=list)

    def load(self, tensors: Sequence[te.Tensor], idx: Sequence[tirx.Expr],
             index_of: Callable[[te.Tensor, Sequence], tirx.Expr] = bload) -> list:
        """The operands' values at output position `idx` (None for missing inputs)."""
        out: list[tirx.Expr | None] = []
        for slot in self.slots:
            if slot[0] == "t":
                out.append(index_of(tensors[slot[1]], idx))
            else:
                out.append(slot[1] if slot[0] == "imm" else None)
        return out


def _flat(inputs: Sequence) -> list[relax.Expr]:
    """The Relax expressions of `emit`'s inputs (nested lists flattened), in order."""
    out: list[relax.Expr] = []
    for x in inputs:
        out += _flat(x) if isinstance(x, (list, tuple)) else [x]
    return out


class LowerCtx:
    """Lowering state for one graph: see the module docstring."""

    def __init__(self, graph: Graph, bb: relax.BlockBuilder, *, pack: bool, lanes: int) -> None:
        self.graph = graph
        self.bb = bb
        self.pack = pack    # lay constant weights out for CPU vector kernels
        self.lanes = lanes  # float32 lanes per vector register
        self.env: dict[str, relax.Expr] = {}
        self.kernels = 0
        self._views: dict[tuple[relax.Expr, Shape], relax.Expr] = {}
        # the image copies of split_batch: (image_of, k) -> the k-th kernel call its first
        # image emitted, with that call's inputs; emits of a node so far
        self._first_image: dict[tuple[str, int], tuple[list[relax.Expr], relax.Call]] = {}
        self._emitted: dict[int, int] = {}

    # ---- values ---------------------------------------------------------------------------
    def shape(self, name: str) -> Shape:
        return tuple(int(d) for d in self.graph.values[name].shape)

    def dtype(self, name: str) -> str:
        """The TVM type value `name` is held in (a narrow type's storage type)."""
        return storage(self.graph.values[name].dtype)

    def elem_type(self, name: str) -> str:
        """Value `name`'s own element type (int4, float8_e4m3fn, ... included)."""
        return self.graph.values[name].dtype

    def const(self, name: str) -> np.ndarray | None:
        return self.graph.const(name) if name else None

    def expr(self, name: str) -> relax.Expr:
        """The Relax expression holding value `name` (constants become relax constants)."""
        if name not in self.env:
            data = self.const(name)
            if data is None:
                raise EtchError(f"internal: value %{name} used before it is computed")
            self.env[name] = self.array(data)
        return self.env[name]

    def array(self, data: np.ndarray) -> relax.Expr:
        """A constant (a graph's, or one the lowering made: packed weights, folded scales),
        with its own dtype and shape: without a dtype relax.const narrows int64 and float64 to
        32 bits, and np.ascontiguousarray would make a 0-d array 1-d."""
        data = np.ascontiguousarray(_stored(data)).reshape(np.shape(data))
        if data.size == 0:  # TVM cannot load a library holding an empty constant
            shape = relax.ShapeExpr([int(d) for d in data.shape])
            return self.bb.emit(relax.op.builtin.alloc_tensor(shape, data.dtype.name, 0))
        return relax.const(data, data.dtype.name)

    def scalars(self, values: Sequence[int]) -> relax.Expr:
        """A node's integer parameters (zero points, multipliers, shifts) as one int64 operand
        rather than immediates: kernels that differ in nothing else are then the same TIR and
        compile once (`dedupe`: vit_b16's twelve blocks, each with its own scales). For
        values that only feed arithmetic, never a loop bound, a layout or a schedule choice;
        the kernel reads element k as `t[k]` (one load, hoisted out of its loops by LLVM)."""
        return self.array(np.asarray(values, np.int64).reshape(-1))

    def operands(self, names: Sequence[str]) -> Operands:
        """Operands for values `names` ("" marks an omitted optional input)."""
        ops = Operands()
        for name in names:
            data = self.const(name)
            if not name:
                ops.slots.append(("none",))
            elif data is not None and data.size == 1:
                data = _stored(data)
                ops.slots.append(("imm", tirx.const(data.reshape(()).item(), data.dtype.name)))
            else:
                ops.slots.append(("t", len(ops.exprs)))
                ops.exprs.append(self.expr(name))
        return ops

    def data_operands(self, arrays: Sequence[np.ndarray]) -> Operands:
        """Operands for constants the lowering computed (folded scales, biases)."""
        ops = Operands()
        for data in arrays:
            if data.size == 1:
                data = _stored(data)
                ops.slots.append(("imm", tirx.const(data.reshape(()).item(), data.dtype.name)))
            else:
                ops.slots.append(("t", len(ops.exprs)))
                ops.exprs.append(self.array(data))
        return ops

    def max_reducer(self, dtype: object, minimum: bool = False) -> Callable:
        """The max (or min) reducer for `dtype`: NaN-propagating for floats on CPU kernels
        (`fastmath.max_reducer`); TIR's built-in one for plain kernels (lanes == 1), since
        dlight's GPU reduction rules match only built-in reducers."""
        if self.lanes == 1:
            return te.min if minimum else te.max
        return (fastmath.min_reducer if minimum else fastmath.max_reducer)(dtype)

    # ---- emission ---------------------------------------------------------------------------
    def emit(self, fn: Callable[..., te.Tensor], inputs: Sequence[relax.Expr], node: Node,
             kind: str, **hints: Any) -> relax.Var:
        """Emit one kernel: `fn(*te_tensors)` builds its TE; `hints` go to PrimFunc attrs."""
        self.kernels += 1
        key = None
        if "image_of" in node.attrs:  # a copy made by split_batch: one image of a layer
            k = self._emitted[id(node)] = self._emitted.get(id(node), -1) + 1
            key = (str(node.attrs["image_of"]), k)
            replayed = self._replay(key, inputs)
            if replayed is not None:
                return replayed
        label = sanitize(node.name)
        name = f"{kind}_{self.kernels}" + (f"_{label}" if label else "")
        attrs = {"etch.kind": kind, "etch.node": label, "etch.op": node.op,
                 **{f"etch.{k}": v for k, v in hints.items()}}
        var = self.bb.emit_te(fn, *inputs, primfunc_name_hint=name, primfunc_attrs=attrs)
        if key is not None and key not in self._first_image:
            self._first_image[key] = (_flat(inputs), self.bb.lookup_binding(var))
        return var

    def _replay(self, key: tuple[str, int], inputs: Sequence) -> relax.Var | None:
        """The kernel the first image of a split layer emitted as its k-th, called on this
        image's inputs (the same shapes, the same constants: the lowering is deterministic),
        so each image's copy costs no TE, TIR or constant of its own; None where there is no
        such call to repeat."""
        if key not in self._first_image:
            return None
        first, call = self._first_image[key]
        mine = _flat(inputs)
        if len(mine) != len(first) or len(call.args) != 2:
            return None
        args = []
        for arg in call.args[1].fields:
            k = next((i for i, e in enumerate(first) if e.same_as(arg)), None)
            if k is None:
                return None
            # a constant the lowering made again for this image: the first image's
            args.append(first[k] if isinstance(mine[k], ir.Constant) else mine[k])
        out = call.ty_args[0]
        out = list(out.fields) if isinstance(out, relax.TupleType) else out
        return self.bb.emit(relax.call_tir(call.args[0], relax.Tuple(args), out))

    def reshape(self, x: relax.Expr, shape: Shape) -> relax.Expr:
        """A view of `x` with another shape (no copy at run time). One per (value, shape):
        a value read by many kernels through the same view (DenseNet's features, each read
        as one row of positions by every later layer's pointwise GEMM) is viewed once, not
        once per reader (each view is a VM instruction at run time)."""
        shape = tuple(int(d) for d in shape)
        if shape_of(x) == shape:
            return x
        if (x, shape) not in self._views:
            self._views[x, shape] = self.bb.emit(relax.op.reshape(x, list(shape)))
        return self._views[x, shape]

    def bind(self, node: Node, *outs: relax.Expr) -> None:
        """Record the expressions computing `node`'s outputs."""
        for name, expr in zip(node.outputs, outs):
            if name:
                self.env[name] = expr
