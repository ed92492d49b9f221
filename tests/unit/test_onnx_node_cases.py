"""ONNX's own node test cases through etch's importer and reference interpreter.

Every case of `onnx.backend.test.case.node.collect_testcases(None)` whose nodes are all
etch ops is imported and run; its outputs must match the case's expected outputs and, where
ONNX Runtime can run the case, ORT's outputs too (floats to rtol 1e-4 / atol 1e-5, wider
only for 16-bit floats; integers and bools exactly).

Two preparations make a case fit etch's contract:
- an input that feeds a `shape_inputs` slot of its op (Reshape's shape, Slice's starts,
  axes inputs, ...) becomes an initializer, since etch needs static shapes;
- cases are generated at each op's newest opset, up to the installed onnx's newest (28 with
  onnx 1.23), and etch imports them at that opset; only a case of an op unchanged since
  opset 1 or 7 is relabelled to 9, the oldest opset etch reads. ORT runs the case as
  generated, else relabelled to opset 21 where it lacks the newest kernel (QuantizeLinear-28,
  Cast-25, ...), else, when it lacks the element type too, only the expected output is
  compared.
Cases that cannot be supported are listed in EXCLUDED with the reason for each; where ONNX's
expected output and ORT disagree, EXPECTED_DIFFERS / ORT_DIFFERS say which one etch follows.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from benchmarks import node_cases
from compiler import onnx_import, ops, reference
from tests.golden import assert_close, run_ort

with warnings.catch_warnings():  # the case generators overflow casts on purpose
    warnings.simplefilter("ignore")
    from onnx.backend.test.case.node import collect_testcases

    ALL_CASES = collect_testcases(None)

# Case name -> why etch does not run it. Keep it short; every entry needs a reason.
_TRAINING = "training mode (random Dropout, batch statistics): etch compiles inference"
EXCLUDED: dict[str, str] = {
    "test_training_dropout": _TRAINING,
    "test_training_dropout_default": _TRAINING,
    "test_training_dropout_default_mask": _TRAINING,
    "test_training_dropout_mask": _TRAINING,
    "test_batchnorm_epsilon_training_mode": _TRAINING,
    "test_batchnorm_example_training_mode": _TRAINING,
    "test_identity_opt": "optional/sequence-typed values: etch graphs hold tensors only",
    "test_identity_sequence": "optional/sequence-typed values: etch graphs hold tensors only",
    **{f"test_resize_downsample_{k}_antialias": "Resize antialias filters are not implemented"
       for k in ("scales_cubic", "sizes_cubic", "scales_linear", "sizes_linear")},
}

# Case name -> why the case's expected output is not compared (ONNX Runtime's is).
_ALIGN = ("align_corners with a fractional output width: the expected output divides by "
          "in * scale - 1; the spec's length_resized and ORT use the integer output length")
EXPECTED_DIFFERS: dict[str, str] = {
    "test_resize_downsample_scales_linear_align_corners": _ALIGN,
    "test_resize_downsample_scales_cubic_align_corners": _ALIGN,
}

# Case name -> why ONNX Runtime's result is not compared (the case's expected output is).
ORT_DIFFERS: dict[str, str] = {
    "test_reduce_max_empty_set_bool": "ORT refuses ReduceMax over an empty bool set",
}

# Case name -> (rtol, why) for a case whose expected output is printed with few digits
# (ORT is still compared at 1e-4).
LOOSE_EXPECTED: dict[str, tuple[float, str]] = {
    "test_averagepool_2d_ceil_last_window_starts_on_pad": (1e-3, "expected rounded to 4 digits"),
}


def _ops_of(case: Any) -> set[str]:
    return {onnx_import.op_name(n) for n in case.model.graph.node}


def _supported(case: Any) -> bool:
    table = ops.registry()
    return all(op in table or op == "Constant" for op in _ops_of(case))


CASES = sorted((c for c in ALL_CASES if _supported(c)), key=lambda c: c.name)


def _array(x: Any) -> np.ndarray:
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    if isinstance(x, list):
        pytest.fail("sequence-typed value; add the case to EXCLUDED")
    return np.asarray(x)


def _freeze_shape_inputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Turn graph inputs that decide an op's output shape into initializers (in place)."""
    frozen = node_cases.shape_deciding_inputs(model) & set(feeds)
    for name in sorted(frozen):
        model.graph.initializer.append(numpy_helper.from_array(feeds.pop(name), name))
    kept = [i for i in model.graph.input if i.name not in frozen]
    del model.graph.input[:]
    model.graph.input.extend(kept)


def _opset(model: onnx.ModelProto) -> int:
    return next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))


def _relabel(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The case declaring default-domain opset `opset` instead of its own."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for imp in out.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = opset
    return out


def _for_etch(model: onnx.ModelProto) -> onnx.ModelProto:
    """The case at its own opset, or at 9 for the ops whose newest version predates opset 9
    (And, Or, Xor, Not, ...: unchanged since)."""
    return _relabel(model, max(_opset(model), onnx_import.MIN_OPSET))


def _tolerance(dtype: np.dtype) -> tuple[float, float]:
    """rtol/atol for float outputs: 1e-4/1e-5, looser for float16 and the 8-bit floats."""
    if dtype.name == "float16":
        return 1e-3, 1e-3
    if dtype.itemsize <= 2 and dtype.kind in "fV":  # bfloat16, float8, float4
        return 1e-2, 1e-2
    return 1e-4, 1e-5


def _compare(actual: dict, expected: dict, rtol: float | None = None) -> None:
    for name, want in expected.items():
        got = actual[name]
        if want.dtype == np.uint8 and got.dtype.kind == "V" and got.dtype.itemsize == 1:
            got = got.view(np.uint8)  # ORT hands float8/int4 back as raw bytes
        tol = _tolerance(want.dtype)
        assert_close({name: got}, {name: want}, rtol=rtol or tol[0], atol=tol[1])


# ORT errors that mean "ORT cannot run this case" (a missing kernel or dtype), not a bug.
_ORT_CANNOT = ("NOT_IMPLEMENTED", "not implemented", "INVALID_GRAPH", "Type Error",
               "No corresponding Numpy type", "can't be converted to MLDataType",
               "is not supported")


def _run_ort(model: onnx.ModelProto, feeds: dict) -> dict | None:
    """ORT's outputs for the case as generated, else at opset 21 (ORT may lack the newest
    opset's kernel; the ops here compute the same there), else None when ORT cannot run it
    at all (an element type it lacks)."""
    for candidate in (model, _relabel(model, onnx_import.CANONICAL_OPSET)):
        try:
            return run_ort(candidate, feeds)
        except Exception as e:  # classified below: a missing kernel/dtype, or a bug
            if not any(m in str(e) for m in _ORT_CANNOT):
                raise
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case: Any) -> None:
    if case.name in EXCLUDED:
        pytest.skip(EXCLUDED[case.name])
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, outputs = case.data_sets[0]
    names = [i.name for i in model.graph.input]
    feeds = {n: _array(x) for n, x in zip(names, inputs)}
    expected = {o.name: _array(x) for o, x in zip(model.graph.output, outputs)}
    _freeze_shape_inputs(model, feeds)

    graph = onnx_import.import_model(_for_etch(model))
    with np.errstate(all="ignore"):
        actual = reference.run(graph, feeds)
    if case.name not in EXPECTED_DIFFERS:
        _compare(actual, expected, LOOSE_EXPECTED.get(case.name, (None,))[0])
    ort_out = None if case.name in ORT_DIFFERS else _run_ort(model, feeds)
    if ort_out is not None:
        _compare(actual, ort_out)
    else:
        assert case.name not in EXPECTED_DIFFERS, "nothing left to compare with"


def test_case_counts() -> None:
    """The filter keeps the op families this suite is meant to cover."""
    covered = set().union(*(_ops_of(c) for c in CASES))
    for op in ("Conv", "ConvTranspose", "MaxPool", "Softmax", "QLinearConv", "Slice", "Pad",
               "Cast", "QuantizeLinear", "DequantizeLinear"):
        assert op in covered
    assert len(CASES) > 500
    # The newer opsets are exercised, not relabelled away: 615 cases at opsets 22..28 with
    # onnx 1.23.
    assert sum(_opset(c.model) > onnx_import.CANONICAL_OPSET for c in CASES) > 500
