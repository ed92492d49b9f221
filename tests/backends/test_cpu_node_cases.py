"""ONNX's backend node cases through the cpu target: `compiler.compile(model, target="cpu")
.run(inputs)`, compared with each case's expected outputs as ONNX's runner compares them
(benchmarks/node_cases.py; rtol 1e-3, atol 1e-7 in onnx 1.23).

Every case whose ops etch lists must pass, unless etch must refuse it; then it must be
refused with an EtchError that says why (`expected_refusal`):
- its opset is outside the importer's range (or below 9 with an op changed since);
- a graph input decides an output shape (a static-shape compiler cannot take the case as
  generated): the refusal must name `--bind`, and the case must then pass with those inputs
  bound to the case's values at compile time (`compile(..., bind=...)`), the other inputs fed
  at run time, unless another reason below applies (reductions over no elements fold at
  import, as a value with no elements is known from its shape);
- Resize with antialias (etch has none), or tf_crop_and_resize with a roi fed at run time
  (the roi decides no shape, so the bound run leaves it an input; the TVM backend builds
  Resize from constant roi/scales/sizes);
- an element type the TVM backend does not build (backends/tvm/support.py DTYPES);
- a reason listed in REFUSED (training mode, which is random).
A case whose expected output etch's reference does not follow (tests/unit/
test_onnx_node_cases.py EXPECTED_DIFFERS: align_corners with a fractional output width) is
compared with ONNX Runtime's outputs instead.
Never a foreign exception, never a wrong answer. The default run takes SAMPLE (one case per
op plus the cases issue 12 named, and one bound case per op of the shape-deciding cases);
`slow` runs them all. Cases holding sequences (not tensors) are not collected: etch graphs
hold tensors only.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from backends.tvm.support import DTYPES
from benchmarks import node_cases
from compiler import onnx_import
from tests.golden import run_ort
from tests.unit.test_onnx_node_cases import EXPECTED_DIFFERS

_TRAINING = "training mode"
# Case name -> why etch refuses it (a regex its EtchError must match).
REFUSED: dict[str, str] = {
    **{name: _TRAINING for name in (
        "test_training_dropout", "test_training_dropout_default",
        "test_training_dropout_default_mask", "test_training_dropout_mask",
        "test_training_dropout_zero_ratio", "test_training_dropout_zero_ratio_mask",
        "test_batchnorm_epsilon_training_mode", "test_batchnorm_example_training_mode")},
}
OPSET = r"model uses ONNX opset \d+"
SHAPE = r"decides the output shape but is computed at run time; .*--bind"
DTYPE = r"does not build element type \S+"

# Cases issue 12 named as failing on cpu; each must pass from now on.
REGRESSIONS = (
    "test_pow_types_int32_int32", "test_pow_types_int64_float32", "test_rotary_embedding_expanded",
    "test_qlinearmatmul_2D_uint8_float32", "test_qlinearconv", "test_layer_normalization_2d_axis0",
    "test_maxpool_3d_default", "test_averagepool_3d_default", "test_basic_conv_with_padding",
    "test_convtranspose_pads", "test_gemm_beta", "test_size", "test_training_dropout_mask",
)


def _elem_types(model: onnx.ModelProto) -> set[str]:
    """numpy names of the element types a model's values have (ONNX shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)
             if v.type.HasField("tensor_type")}
    types |= {t.data_type for t in g.initializer}
    names = set()
    for t in types - {0}:
        try:
            names.add(onnx.helper.tensor_dtype_to_np_dtype(t).name)
        except (KeyError, ValueError):
            names.add(f"onnx type {t}")
    return names


def _in_range(opset: int) -> bool:
    return onnx_import.OLDEST_OPSET <= opset <= onnx_import.max_opset()


def expected_refusal(case: node_cases.NodeCase, bound: bool = False) -> str | None:
    """The regex etch's EtchError must match for `case` (run with its shape-deciding inputs
    bound when `bound`), or None when it must pass. A case outside the importer's nominal
    opset range may also be refused for its opset."""
    if case.name in REFUSED:
        return REFUSED[case.name]
    if node_cases.shape_deciding_inputs(case.model) and not bound:
        return SHAPE if _in_range(case.opset) else f"{SHAPE}|{OPSET}"
    if "antialias" in case.name:
        return r"Resize mode \S+ with antialias=1 is not supported"
    if _runtime_roi(case):
        return r"Resize roi computed at run time is not built"
    if _elem_types(case.model) - DTYPES:
        return DTYPE if _in_range(case.opset) else f"{DTYPE}|{OPSET}"
    return None if _in_range(case.opset) else OPSET


def check_case(name: str, bound: bool = False) -> None:
    """`name` passes or is refused as `expected_refusal` says; with `bound`, run with its
    shape-deciding inputs bound at compile time."""
    case = node_cases.load_case(name)
    assert case is not None
    if name in EXPECTED_DIFFERS:  # compared with ONNX Runtime's outputs instead
        case.expected = run_ort(case.model, case.feeds)
    outcome = node_cases.run_etch(case, "cpu", bind=bound)
    why = expected_refusal(case, bound)
    if outcome.status == "pass" and (why is None or OPSET in why):
        return  # an out-of-range opset the importer already reads may pass
    detail = f"{outcome.status} at {outcome.stage}: {outcome.reason}"
    if why is None:
        pytest.fail(f"expected a pass; {detail}")
    assert outcome.status == "refused" and re.search(why, outcome.reason), \
        f"expected an EtchError matching {why!r}; {detail}"


def _sample() -> list[str]:
    """One case per listed op (the first, by name, of the plain cases that should pass on a
    cheap look: opset in range, no shape-deciding input, plain types at the graph's edges),
    plus REGRESSIONS."""
    covered: set[str] = set()
    picked = list(REGRESSIONS)
    for name in node_cases.listed_case_names(tensors_only=True):
        case = node_cases.load_case(name)
        if "expanded" in name or not _in_range(case.opset):
            continue
        new = case.ops - covered
        edges = {a.dtype.name for a in (*case.feeds.values(), *case.expected.values())}
        if new and edges <= DTYPES and name not in REFUSED and \
                not node_cases.shape_deciding_inputs(case.model):
            covered |= new
            picked.append(name)
    return sorted(set(picked))


def _runtime_roi(case: node_cases.NodeCase) -> bool:
    """A Resize whose roi is a graph input that decides no shape (left unbound)."""
    inputs = {i.name for i in case.model.graph.input}
    free = inputs - node_cases.shape_deciding_inputs(case.model)
    return any(n.op_type == "Resize" and len(n.input) > 1 and n.input[1] in free
               for n in case.model.graph.node)


def _bound_sample() -> list[str]:
    """One case per op among the cases with a shape-deciding input, for the bound run (of the
    reductions, which share one shape rule, ReduceSum's)."""
    covered = {op for n in BOUND for op in node_cases.load_case(n).ops
               if op.startswith("Reduce") and op != "ReduceSum"}
    picked = []
    for name in BOUND:
        case = node_cases.load_case(name)
        new = case.ops - covered
        if new and "expanded" not in name and expected_refusal(case, bound=True) is None:
            covered |= new
            picked.append(name)
    return picked


SAMPLE = _sample()
ALL = node_cases.listed_case_names(tensors_only=True)
BOUND = [n for n in ALL if node_cases.shape_deciding_inputs(node_cases.load_case(n).model)]
BOUND_SAMPLE = _bound_sample()


@pytest.mark.parametrize("name", SAMPLE)
def test_node_case_sample(name: str) -> None:
    check_case(name)


@pytest.mark.parametrize("name", BOUND_SAMPLE)
def test_node_case_sample_with_bind(name: str) -> None:
    check_case(name)  # refused as generated, naming --bind
    check_case(name, bound=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_node_case(name: str) -> None:
    check_case(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", BOUND)
def test_node_case_with_bind(name: str) -> None:
    check_case(name, bound=True)


def test_sample_covers_the_ops_issue_12_named() -> None:
    ops = set().union(*(node_cases.load_case(n).ops for n in SAMPLE))
    for op in ("Pow", "QLinearMatMul", "QLinearConv", "LayerNormalization", "MaxPool",
               "AveragePool", "Conv", "ConvTranspose", "Gemm", "Dropout"):
        assert op in ops, op
    assert len(SAMPLE) >= 60


def test_comparison_follows_onnx_runner() -> None:
    """rtol/atol as the case says, dtypes and shapes exact, NaN equal to NaN."""
    want = {"y": np.array([1.0, np.nan, 1e-8], np.float32)}
    assert node_cases.compare({"y": np.array([1.0005, np.nan, 0.0], np.float32)}, want,
                              1e-3, 1e-7) is None
    assert "differ" in node_cases.compare({"y": np.array([1.002, np.nan, 0], np.float32)},
                                          want, 1e-3, 1e-7)
    assert "dtype" in node_cases.compare({"y": want["y"].astype(np.float64)}, want, 1e-3, 1e-7)
    assert "shape" in node_cases.compare({"y": want["y"][:2]}, want, 1e-3, 1e-7)
    bf16 = np.dtype("bfloat16")  # ml_dtypes: two ULPs (2**-6) as ONNX's runner allows
    half = {"b": np.array([0.5625], bf16)}
    assert node_cases.compare({"b": np.array([0.55859375], bf16)}, half, 1e-3, 1e-7) is None
    assert node_cases.compare({"b": np.array([0.5], bf16)}, half, 1e-3, 1e-7)
    ints = {"i": np.array([1, 2], np.int64)}
    assert "differ" in node_cases.compare({"i": np.array([1, 3], np.int64)}, ints, 1e-3, 1e-7)
