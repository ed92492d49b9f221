"""Weights beside the library: the large constants of a cpu module become parameters of
`main`, stored in `weights.bin`, instead of constants embedded in `model.so`.

An embedded constant is copied on every step of a build: into the VM executable's
serialised constant pool, into an LLVM module that packs that pool as a byte array, into its
object file, into the linked library, and once more when the library is loaded (vgg16: 553
MB, a third of its float compile). Detached, each constant of at least MIN_BYTES is written
once, raw, at a 64-byte-aligned offset of `weights.bin`; the executor reads the file into one
aligned buffer and lends TVM a view of each weight (DLPack, no copy) after the graph inputs
on every call. Smaller constants (scalars, per-channel scales, tables) stay in the library.

`detach(mod)` rewrites `main` and returns the arrays in parameter order; `write` lays them
out and returns the manifest entry {"file", "tensors": [{offset, shape, dtype}]} that
`runtime.weights` reads back. A constant used twice is one parameter.

`main` marks its graph inputs (Relax's `num_input`), so the VM checks the type and shape
of those on every call but not of the weights after them: the executor checks the weights
once, at load, through `CHECK` (a function of the weight parameters alone, whose body is
those checks). efficientnet_b0 has 84 weights: 168 VM built-in calls a run fewer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm
from tvm import ir, relax

from runtime.weights import CHECK

FILE = "weights.bin"
MIN_BYTES = 4096  # constants this large or larger leave the library
ALIGN = 64        # TVM borrows only 64-byte-aligned memory


def _nbytes(const: ir.GenericConst) -> int:
    """Bytes of a tensor constant (0 for any other constant)."""
    data = const.value
    if not isinstance(data, tvm.runtime.Tensor):
        return 0
    return int(np.prod(data.shape, dtype=np.int64)) * data.dtype.itemsize


@relax.expr_functor.mutator
class _Detach(relax.PyExprMutator):
    """Every constant of MIN_BYTES or more becomes a new Var (one per distinct constant)."""

    def __init__(self, mod: ir.IRModule, min_bytes: int) -> None:
        super().__init__(mod)
        self.min_bytes = min_bytes
        self.vars: dict[ir.GenericConst, relax.Var] = {}

    def visit_generic_const_(self, op: ir.GenericConst) -> relax.Expr:
        if _nbytes(op) < self.min_bytes:
            return op
        if op not in self.vars:
            self.vars[op] = relax.Var(f"weight{len(self.vars)}", op.ty)
        return self.vars[op]


def detach(mod: ir.IRModule, min_bytes: int | None = None) -> tuple[ir.IRModule, list]:
    """`mod` whose `main` takes, after its inputs, one parameter per constant of `min_bytes`
    (default MIN_BYTES) or more; and those constants' data (TVM tensors) in parameter
    order."""
    gvar = mod.get_global_var("main")
    func = mod[gvar]
    mutator = _Detach(mod, MIN_BYTES if min_bytes is None else min_bytes)
    body = mutator.visit_expr(func.body)
    if not mutator.vars:
        return mod, []
    params = list(func.params) + list(mutator.vars.values())
    new = relax.Function(params, body, func.ret_ty, func.is_pure, func.attrs,
                         func.span).with_attr("num_input", len(func.params))
    out = ir.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    out[gvar] = new
    checks = [relax.Var(f"weight{k}", v.ty) for k, v in enumerate(mutator.vars.values())]
    out[CHECK] = relax.Function(checks, relax.Tuple([]), relax.TupleType([]), True)
    return out, [c.value for c in mutator.vars]


def _array(tensor) -> np.ndarray:
    """A CPU tensor's elements as a numpy array (raw bits where numpy lacks the type)."""
    try:
        return np.from_dlpack(tensor)
    except (TypeError, BufferError, RuntimeError):
        return tensor.numpy()


def write(tensors: list, out: Path) -> dict:
    """Write `tensors` to out/weights.bin, each at a 64-byte-aligned offset; the manifest
    entry that describes the file."""
    entries, offset = [], 0
    with open(out / FILE, "wb") as f:
        for t in tensors:
            pad = -offset % ALIGN
            f.write(bytes(pad))
            offset += pad
            data = np.ascontiguousarray(_array(t))
            f.write(memoryview(data.reshape(-1).view(np.uint8)))
            entries.append({"offset": offset, "shape": [int(d) for d in t.shape],
                            "dtype": str(t.dtype)})
            offset += data.nbytes
    return {"file": FILE, "bytes": offset, "tensors": entries}
