"""etch's own float ops. `etch.Fused`: a kernel with an elementwise epilogue.

`etch.Fused` is how the fusion pass records a fusion group on the IR (backends render it as
one kernel; they do not decide fusion themselves). Attributes:
- `kernel`: the anchor op ("Conv", "Gemm", "MatMul", "ConvTranspose"; "AveragePool" or
  "MaxPool" with a prologue and no epilogue) or "" for a pure elementwise chain whose
  first step reads input 0;
- `kernel_attrs`: JSON object, the anchor's attributes;
- `num_kernel_inputs`: how many leading inputs the anchor takes;
- `epilogue`: JSON list of steps applied in order to the running value `y`, each
  `{"op": NAME, "args": [...], "attrs": {...}}`, where each arg is the string "y" (the
  running value) or an input index k of the fused node: `Relu` is `args: ["y"]`,
  `x - y` is `{"op": "Sub", "args": [3, "y"]}`, `Clip` is `args: ["y", 4, 5]`. An arg
  may also be "y<j>", the running value after j steps ("y0" is the kernel output, or input
  0 when `kernel` is ""; at step j, "y<j>" is "y"): epilogues that read a value twice, as
  the Erf GELU `y1 * 0.5 * (1 + erf(y1 / sqrt 2))` does, are lists of steps too.
- `concat_inputs` (optional, JSON list of input indices, the first 0): the anchor's input
  0 is these inputs concatenated along axis 1 (a Concat absorbed by `fuse_prologue`);
- `prologue` (optional): steps in the epilogue's format applied to the anchor's input 0
  (after the concatenation) before the anchor runs: "y" is the running input value, "y0"
  the input itself, integers index the fused node's inputs.
The reference semantics run the concatenation, each prologue step, the anchor and each
epilogue step with the ops' own reference code, so a fused node is bit-identical to the
chain it replaces.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from compiler.ops import OpDef


def fused_steps(attrs: dict) -> list[dict[str, Any]]:
    """The epilogue steps of an etch.Fused node, decoded."""
    return json.loads(attrs.get("epilogue", "[]"))


def kernel_attrs(attrs: dict) -> dict[str, Any]:
    return json.loads(attrs.get("kernel_attrs", "{}"))


def prologue_steps(attrs: dict) -> list[dict[str, Any]]:
    """The prologue steps of an etch.Fused node, decoded ([] when it has none)."""
    return json.loads(attrs.get("prologue", "[]"))


def concat_inputs(attrs: dict) -> list[int]:
    """The input indices whose channel concatenation is the anchor's input 0 ([0])."""
    return json.loads(attrs.get("concat_inputs", "[0]"))


def _steps(steps: list[dict[str, Any]], y: np.ndarray, inputs: tuple) -> np.ndarray:
    from compiler import ops

    ys = [y]  # ys[j]: the running value after j steps
    for step in steps:
        args = [_arg(a, ys, inputs) for a in step["args"]]
        ys.append(ops.as_list(ops.registry()[step["op"]].run(step.get("attrs", {}), *args))[0])
    return ys[-1]


def run_fused(attrs: dict, *inputs: np.ndarray) -> np.ndarray:
    """The reference semantics of a fusion group (etch.Fused, etch.QFused): the anchor, then
    each step, each with its own op's reference code."""
    from compiler import ops

    k = int(attrs.get("num_kernel_inputs", 1))
    kernel = attrs.get("kernel", "")
    first = inputs[0]
    parts = concat_inputs(attrs)
    if parts != [0]:
        first = ops.registry()["Concat"].run({"axis": 1}, *[inputs[i] for i in parts])
    first = _steps(prologue_steps(attrs), first, inputs)
    if kernel:
        y = ops.as_list(ops.registry()[kernel].run(kernel_attrs(attrs), first,
                                                   *inputs[1:k]))[0]
    else:
        y = first
    return _steps(fused_steps(attrs), y, inputs)


def _arg(arg: int | str, ys: list[np.ndarray], inputs: tuple[np.ndarray, ...]) -> np.ndarray:
    """One step argument: "y" (the running value), "y<j>" (the value after j steps) or an
    input index."""
    if arg == "y":
        return ys[-1]
    if isinstance(arg, str):
        return ys[int(arg[1:])]
    return inputs[arg]


OPS: dict[str, OpDef] = {
    "etch.Fused": OpDef("etch.Fused", run_fused),
}
