"""Schedule rules per target: `apply(func, target) -> Schedule | None`, tried in order, the
last one a fallback (dlight's protocol, so dlight's own rules mix in freely).

`apply_rules(mod, target)` schedules every PrimFunc of a module with the target's rule list
and marks it `tirx.is_scheduled` (a rule whose schedule primitives fail on a kernel it took
for its own passes it on to the next rule); `rule_names(mod)` says which rule scheduled each
kernel (recorded in the manifest, so a slow kernel can be traced to its schedule).
A kernel whose rule left a block "post" (the steps of an integer group after its
requantisation, `lower.int_epilogue`) gets it computed inside the outermost loop of its
"epilogue" block, its innermost loop vectorised: the rules need not know it is there. A TVM
error while scheduling becomes one EtchError naming the kernel's node and op.
"""

from __future__ import annotations

import tvm
from tvm import ir, tirx
from tvm.s_tir import ScheduleError

from backends.tvm.support import error_line
from compiler.errors import EtchError

RULE_ATTR = "etch.rule"


def rules_for(target: tvm.target.Target) -> list:
    """The rule list of a target kind (llvm -> cpu rules, cuda -> dlight GPU rules)."""
    if target.kind.name == "cuda":
        from backends.tvm.schedules import cuda

        return cuda.rules()
    from backends.tvm.schedules import cpu

    return cpu.rules()


def apply_rules(mod: ir.IRModule, target: tvm.target.Target,
                rules: list | None = None) -> ir.IRModule:
    """`mod` with every unscheduled PrimFunc scheduled by the first rule that applies."""
    rules = rules_for(target) if rules is None else rules
    updated = {}
    with target:
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled"):
                continue
            try:
                scheduled = _schedule(func, target, rules)
            except Exception as e:  # a TVM error in a rule: one line naming the kernel's node
                raise EtchError(f"{describe(func)}: the TVM backend cannot schedule it: "
                                f"{error_line(e)}") from e
            if scheduled is not None:
                updated[gvar] = scheduled
    for gvar, func in updated.items():
        mod[gvar] = func
    return mod


def _attach_post(sch) -> None:
    """Compute block "post" under the outermost loop of block "epilogue" (the region the
    epilogue wrote there is still in cache), its innermost loop vectorised when short."""
    from backends.tvm.schedules.cpu import block

    post, epilogue = block(sch, "post"), block(sch, "epilogue")
    if post is None or epilogue is None:
        return
    loops = sch.get_loops(epilogue)
    try:
        if loops:
            sch.reverse_compute_at(post, loops[0])
        own = sch.get_loops(post)[1 if loops else 0:]  # not the loop it is computed in
        if own and 1 < int(sch.get(own[-1]).extent) <= 64:
            sch.vectorize(own[-1])
    except ScheduleError:  # a layout the primitives refuse: "post" stays a loop of its own
        return


def _schedule(func: tirx.PrimFunc, target: tvm.target.Target, rules: list) -> tirx.PrimFunc | None:
    """`func` scheduled by the first rule that applies (None if none does)."""
    for rule in rules:
        try:
            sch = rule.apply(func, target, False)
        except ScheduleError:  # the rule's pattern did not fit after all: next rule
            continue
        if sch is None:
            continue
        sch = sch[0] if isinstance(sch, list) else sch
        note = getattr(rule, "note", None)  # what a KindRule chose (`cpu.KindRule`)
        _attach_post(sch)
        new = sch.mod["main"].with_attr("tirx.is_scheduled", True)
        if note:
            new = new.with_attr("etch.tile", note)
        # a kernel built by IRBuilder names itself "main" (T.func_name): keep the lowered
        # function's symbol, or none, so that it never clashes with the Relax entry "main"
        # (the edge pipeline's block builder refuses a module with two)
        symbol = func.attrs.get("global_symbol") if func.attrs else None
        new = new.with_attr("global_symbol", symbol) if symbol is not None else \
            new.without_attr("global_symbol")
        return new.with_attr(RULE_ATTR, type(rule).__name__)
    return None


def describe(func: tirx.PrimFunc) -> str:
    """"node NAME (OP)" for a kernel `backends.tvm.lower` emitted, else "a kernel"."""
    attrs = func.attrs or {}
    if "etch.op" not in attrs:
        return "a kernel"
    return f"node {attrs['etch.node'] or '?'} ({attrs['etch.op']})"


def explain_lines(mod: ir.IRModule) -> list[str]:
    """For `etch compile --explain`: each kernel a rule gave a register tile or layout
    (`etch.tile`), by node: the rule, the tile, the dot-product step, a float64
    requantisation and a table held in registers, where recorded."""
    rows = []
    for gvar, func in mod.functions_items():
        attrs = func.attrs if isinstance(func, tirx.PrimFunc) else None
        if not attrs or "etch.tile" not in attrs:
            continue
        parts = [str(attrs.get(RULE_ATTR, "")), str(attrs["etch.tile"])]
        if "etch.step" in attrs:
            parts.append(str(attrs["etch.step"]))
        if "etch.requant" in attrs:
            parts.append(f"{attrs['etch.requant']} requantisation")
        if "etch.table_lookup" in attrs:
            parts.append(f"table in registers ({attrs['etch.table_lookup']})")
        node = str(attrs.get("etch.node", "")) or gvar.name_hint
        rows.append(f"  {node}: {', '.join(parts)}")
    if not rows:
        return []
    head = f"kernel schedules (rule, register tile or layout, dot step), {len(rows)} kernels:"
    return [head, *sorted(rows)]


def rule_names(mod: ir.IRModule) -> dict[str, int]:
    """How many kernels each rule scheduled ("unscheduled" for none)."""
    counts: dict[str, int] = {}
    for _, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            name = str(func.attrs.get(RULE_ATTR, "unscheduled")) if func.attrs else "unscheduled"
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
