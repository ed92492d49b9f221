"""Compile each distinct kernel once: PrimFuncs that are the same TIR apart from the labels
`LowerCtx.emit` gives them (the node's name and op) become one, and every call goes to it.

A network repeats layer shapes (ResNet-50's 53 convolutions have 23 distinct kernels once
requantisation constants agree): weights and per-channel parameters are kernel arguments,
so two layers with the same shapes, strides and epilogue constants are one function. LLVM's
time grows with the code it is given, so this shortens a compile without changing what any
call computes. Kernels are compared by TVM's structural hash and equality (content, not
names), before scheduling, so each distinct kernel is scheduled and compiled once.
"""

from __future__ import annotations

import tvm_ffi
from tvm import ir, relax, tirx

LABELS = ("etch.node", "etch.op")  # what may differ between calls of one kernel


def _content(func: tirx.PrimFunc) -> tirx.PrimFunc:
    for key in LABELS:
        if func.attrs is not None and key in func.attrs:
            func = func.without_attr(key)
    return func


def duplicates(mod: ir.IRModule) -> dict[ir.GlobalVar, ir.GlobalVar]:
    """Each PrimFunc that repeats an earlier one (by content), mapped to that one."""
    seen: dict[int, list[tuple[ir.GlobalVar, tirx.PrimFunc]]] = {}
    same: dict[ir.GlobalVar, ir.GlobalVar] = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        body = _content(func)
        bucket = seen.setdefault(tvm_ffi.structural_hash(body), [])
        first = next((g for g, f in bucket if tvm_ffi.structural_equal(f, body)), None)
        if first is None:
            bucket.append((gvar, body))
        else:
            same[gvar] = first
    return same


@relax.expr_functor.mutator
class _Redirect(relax.PyExprMutator):
    """Calls of a duplicate kernel go to its first copy."""

    def __init__(self, mod: ir.IRModule, same: dict[ir.GlobalVar, ir.GlobalVar]) -> None:
        super().__init__(mod)
        self.same = same

    def visit_global_var_(self, op: ir.GlobalVar) -> relax.Expr:
        return self.same.get(op, op)


def dedupe(mod: ir.IRModule) -> tuple[ir.IRModule, int]:
    """`mod` with each distinct kernel once; and how many copies were removed."""
    same = duplicates(mod)
    if not same:
        return mod, 0
    redirect = _Redirect(mod, same)
    out = ir.IRModule()
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            out[gvar] = redirect.visit_expr(func)
        elif gvar not in same:
            out[gvar] = func
    return out.with_attrs(mod.attrs) if mod.attrs else out, len(same)


__all__ = ["dedupe", "duplicates"]
