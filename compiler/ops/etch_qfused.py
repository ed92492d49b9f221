"""`etch.QFused`: one integer fusion group, i.e. one pass through an output unit.

The integer fusion pass (`passes/fuse_integer.py`) records each group of the integer graph
as one etch.QFused node; backends render the group as it is recorded (the TVM backend as one
kernel, the tensor engine as one accumulate + output-unit configuration) and decide nothing.

A group is an accumulating anchor followed by the output unit's steps, in this order:

    anchor      etch.QGemm | etch.QConv | etch.QSumPool           int32 accumulator `acc`
    requantise  etch.Requantize(acc, m0, shift)                    int8/uint8 `y`  (always)
    table       etch.Table(y, table, *consts)                      256-entry lookup (optional)
    residual    etch.QAdd(y, r) or etch.QAdd(r, y)                 residual add     (optional)

The format is etch.Fused's (compiler/ops/etch_ops.py), so the reference semantics run the
anchor and each step with the member ops' own reference code (one definition of each step,
bit-identical to the unfused chain):
- inputs: the anchor's inputs first (`num_kernel_inputs` of them, "" for an omitted
  optional input), then the steps' other operands (constants m0, shift, table, and the
  residual activation `r`);
- `kernel`: the anchor op; `kernel_attrs`: JSON object, its attributes;
- `epilogue`: JSON list of steps `{"op", "args", "attrs"}`, each arg "y" (the running value)
  or an input index; the steps' attributes are the member ops' own, for example
      [{"op": "etch.Requantize", "args": ["y", 4, 5],
        "attrs": {"axis": 1, "zero_point": -3, "qmin": -128, "qmax": 127, "to": "int8"}},
       {"op": "etch.QAdd", "args": [6, "y"], "attrs": {"a_zero": ..., "m0": ..., ...}}]
  (input 6 is the residual; y is the QAdd's `b` side here).
A Relu/Clip between the steps never appears as a step of its own: the pass merges every
etch.Clamp into the saturation bounds of the step before it (Requantize or QAdd qmin/qmax,
or the table's entries), so each step of the output unit has its clamp built in.

As an output-unit configuration (`QGroup`, decoded by `group`):
- requantise: y = clamp(round_half_away(acc * M0 / 2^shift) + zero_point, qmin, qmax),
  `compiler.reference.requantize`, with M0/shift per tensor (scalars) or per output channel
  (vectors along the anchor's channel axis: QConv/QSumPool axis 1, QGemm the last axis);
- table: y = table[y - lo], lo = -128 for int8 y, 0 for uint8 (the table's dtype is the new
  y's);
- residual: the TFLite integer add of y and r (`etch.QAdd`'s attrs; `y_side` says whether y
  is the add's a (0) or b (1) input); r has the group output's shape.
Preconditions that make a group valid (`check`): an anchor above, the steps in that order,
Requantize first, each at most once, constant m0/shift/table, a per-channel requantisation
along the anchor's channel axis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Value
from compiler.ops import OpDef
from compiler.ops.etch_ops import fused_steps, kernel_attrs, run_fused

Spec = list[tuple[tuple[int, ...], str]]

# anchor op -> its output channel axis (where a per-channel requantisation must run)
ANCHORS: dict[str, int] = {"etch.QConv": 1, "etch.QGemm": -1, "etch.QSumPool": 1}
# the output unit's steps, in their one order
STEPS = ("etch.Requantize", "etch.Table", "etch.QAdd")


@dataclass(frozen=True)
class QStep:
    """One output-unit step: the op, its attributes, and its arguments as value names ("y"
    for the running value)."""

    op: str
    attrs: dict[str, Any]
    args: tuple[str, ...]


@dataclass(frozen=True)
class QGroup:
    """An etch.QFused node decoded: what a backend renders."""

    anchor: str
    anchor_attrs: dict[str, Any]
    anchor_inputs: tuple[str, ...]
    requant: QStep
    table: QStep | None
    residual: QStep | None
    output: str

    @property
    def steps(self) -> list[QStep]:
        return [s for s in (self.requant, self.table, self.residual) if s is not None]

    @property
    def channel_axis(self) -> int:
        return ANCHORS[self.anchor]

    @property
    def y_side(self) -> int:
        """Which input of the residual QAdd is the running value (0: a, 1: b)."""
        assert self.residual is not None
        return self.residual.args.index("y")

    @property
    def residual_value(self) -> str:
        """The residual operand r of the QAdd step."""
        assert self.residual is not None
        return self.residual.args[1 - self.y_side]


def check(attrs: dict[str, Any], n_inputs: int) -> str | None:
    """Why `attrs` (with `n_inputs` inputs) is not a valid etch.QFused group, or None."""
    kernel = attrs.get("kernel", "")
    if kernel not in ANCHORS:
        return f"anchor {kernel!r} is not one of {', '.join(ANCHORS)}"
    k = int(attrs.get("num_kernel_inputs", 0))
    if not 1 <= k <= n_inputs:
        return f"num_kernel_inputs {k} does not fit its {n_inputs} inputs"
    try:
        steps = fused_steps(attrs)
        kernel_attrs(attrs)
    except (TypeError, ValueError) as e:
        return f"its JSON attributes do not parse ({e})"
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        return "its epilogue is not a list of steps"
    order = [s.get("op") for s in steps]
    if not order or order[0] != STEPS[0]:
        return f"the steps {order} do not start with {STEPS[0]}"
    if [op for op in STEPS if op in order] != order:
        return f"the steps {order} are not an ordered subset of {list(STEPS)}"
    for step in steps:
        reason = _args_reason(step, k, n_inputs)
        if reason is not None:
            return reason
    return None


def _args_reason(step: dict[str, Any], k: int, n_inputs: int) -> str | None:
    args = step.get("args", [])
    if not isinstance(args, list) or args.count("y") != 1:
        return f"step {step['op']} must read the running value y exactly once, not {args}"
    wanted = {"etch.Requantize": 3, "etch.QAdd": 2}.get(step["op"], len(args))
    if len(args) != wanted or (step["op"] != "etch.QAdd" and args[0] != "y"):
        return f"step {step['op']}: arguments {args} do not fit the op"
    bad = [a for a in args if a != "y" and not (isinstance(a, int) and k <= a < n_inputs)]
    return f"step {step['op']}: argument(s) {bad} name no step operand" if bad else None


def group(attrs: dict[str, Any], inputs: list[str], output: str) -> QGroup:
    """The group an etch.QFused node records (EtchError when it is malformed)."""
    reason = check(attrs, len(inputs))
    if reason is not None:
        raise EtchError(f"etch.QFused writing %{output}: {reason}")
    k = int(attrs["num_kernel_inputs"])
    steps = {s["op"]: QStep(s["op"], dict(s.get("attrs", {})),
                            tuple("y" if a == "y" else inputs[a] for a in s["args"]))
             for s in fused_steps(attrs)}
    return QGroup(attrs["kernel"], kernel_attrs(attrs), tuple(inputs[:k]),
                  steps["etch.Requantize"], steps.get("etch.Table"), steps.get("etch.QAdd"),
                  output)


def encode(anchor: str, anchor_attrs: dict[str, Any], num_inputs: int,
           steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The attributes of an etch.QFused node (deterministic JSON)."""
    return {"kernel": anchor, "kernel_attrs": _dumps(anchor_attrs),
            "num_kernel_inputs": num_inputs, "epilogue": _dumps(steps)}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_plain)


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


def _qfused(attrs: dict, *inputs: np.ndarray | None) -> np.ndarray:
    reason = check(attrs, len(inputs))
    if reason is not None:
        raise EtchError(f"etch.QFused: {reason}")
    return run_fused(attrs, *inputs)


def _infer(attrs: dict, *values: Value | None) -> Spec:
    """The anchor's output shape; the dtype of the last step's output."""
    reason = check(attrs, len(values))
    if reason is not None:
        raise EtchError(f"etch.QFused: {reason}")
    from compiler import ops

    kernel, k = attrs["kernel"], int(attrs["num_kernel_inputs"])
    infer = ops.registry()[kernel].infer
    if infer is not None:
        shape = infer(kernel_attrs(attrs), *values[:k])[0][0]
    else:  # etch.QGemm: ONNX MatMul broadcasting of the leading axes
        a, w = values[0].shape, values[1].shape
        shape = tuple(np.broadcast_shapes(a[:-2], w[:-2])) + (a[-2], w[-1])
    last = fused_steps(attrs)[-1]
    dtype = values[last["args"][1]].dtype if last["op"] == "etch.Table" else \
        last.get("attrs", {}).get("to", "int8")
    return [(tuple(int(d) for d in shape), dtype)]


OPS: dict[str, OpDef] = {
    "etch.QFused": OpDef("etch.QFused", _qfused, infer=_infer),
}
