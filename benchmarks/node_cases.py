"""ONNX's backend node cases, run through an etch target and through ONNX Runtime.

The cases are `onnx.backend.test.case.node.collect_testcases(None)` of the installed onnx,
kept when every node's op is one etch lists (`compiler.ops.registry()`, plus `Constant`).
Generating them takes ~20 s (onnx computes every expected output), so the first run stores
them under .cache/node_cases, keyed by a hash of onnx's generator sources; later runs read
them back in about a second.
Each case runs as generated: its opset, its graph inputs (an input that decides an output
shape stays an input, which a static-shape compiler must refuse). `run_etch(case, target,
bind=True)` runs it as a user with such a model would: the inputs that decide an output shape
(`shape_deciding_inputs`) bound at compile time to the case's values (`--bind`), the other
inputs fed at run time.

`run_etch(case, target)` and `run_ort(case)` return an `Outcome`: "pass", "wrong" (it ran
and an output differs), "refused" (an `EtchError` at import, compile or run; ORT: ORT raised)
or "error" (a foreign exception escaped etch: always a bug). Outputs are compared the way
ONNX's backend test runner does (`onnx.backend.test.runner.Runner.assert_similar_outputs`):
same dtype and shape, floats with `numpy.testing.assert_allclose` at the case's rtol/atol
(1e-3 / 1e-7 in onnx 1.23; bfloat16 at least two ULPs, 2**-6), everything else exactly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from compiler import onnx_import, ops
from compiler.errors import EtchError

CONSTANT = "Constant"
# Floats that numpy cannot compare directly (ml_dtypes): compared as float32.
_SMALL_FLOATS = re.compile(r"^(bfloat16|float8.*|float4.*)$")


@dataclass
class NodeCase:
    """One ONNX node test case, its data decoded."""

    name: str
    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    rtol: float
    atol: float

    @property
    def ops(self) -> frozenset[str]:
        return frozenset(onnx_import.op_name(n) for n in self.model.graph.node) - {CONSTANT}

    @property
    def opset(self) -> int:
        return max((i.version for i in self.model.opset_import if i.domain in ("", "ai.onnx")),
                   default=0)


@dataclass
class Outcome:
    """How one runtime did on one case: status "pass" | "wrong" | "refused" | "error"; the
    stage it stopped at ("import", "compile", "run", "compare"); one line saying why."""

    status: str
    stage: str = ""
    reason: str = ""
    bound: tuple[str, ...] = ()  # the graph inputs bound at compile time (--bind)

    def to_json(self) -> dict:
        out = {"status": self.status, "stage": self.stage, "reason": self.reason}
        return {**out, "bound": list(self.bound)} if self.bound else out


def _array(x: Any) -> np.ndarray | None:
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    return None if isinstance(x, (list, dict, tuple)) or x is None else np.asarray(x)


def _decode(raw: _Raw) -> NodeCase | None:
    """A NodeCase (its own copy of the model), or None when the case holds sequences or
    optionals (not tensors)."""
    if raw.inputs is None or raw.outputs is None:
        return None
    model = onnx.ModelProto()
    model.CopyFrom(raw.model)
    feeds = {i.name: numpy_helper.to_array(t) for i, t in zip(model.graph.input, raw.inputs)}
    expected = {o.name: numpy_helper.to_array(t)
                for o, t in zip(model.graph.output, raw.outputs)}
    return NodeCase(raw.name, model, feeds, expected, raw.rtol, raw.atol)


def _listed(case: Any) -> bool:
    table = ops.registry()
    return all(onnx_import.op_name(n) in table or onnx_import.op_name(n) == CONSTANT
               for n in case.model.graph.node)


def cache_dir() -> Path:
    """$ETCH_CACHE/node_cases, else <repo>/.cache/node_cases."""
    env = os.environ.get("ETCH_CACHE")
    root = Path(env) if env else Path(__file__).resolve().parent.parent / ".cache"
    return root / "node_cases"


@dataclass
class _Raw:
    """A collected case: its model and data as ONNX protos (None: a sequence/optional)."""

    name: str
    model: onnx.ModelProto
    inputs: list[onnx.TensorProto] | None
    outputs: list[onnx.TensorProto] | None
    rtol: float
    atol: float


def _generators_key() -> str:
    """A content hash of the installed onnx's case generators (and its version)."""
    import onnx.backend.test.case.node as gen

    h = hashlib.sha256(onnx.__version__.encode())
    for path in sorted(Path(gen.__file__).parent.rglob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def _protos(values: list) -> list[onnx.TensorProto] | None:
    out = []
    for v in values:
        a = _array(v)
        if a is None:
            return None
        out.append(numpy_helper.from_array(a))
    return out


def _generate() -> list[_Raw]:
    """Run onnx's case generators (~20 s: they compute every expected output)."""
    with warnings.catch_warnings():  # the case generators overflow casts on purpose
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases

        cases = collect_testcases(None)
    raws = []
    for c in cases:
        inputs, outputs = c.data_sets[0]
        raws.append(_Raw(c.name, c.model, _protos(list(inputs)), _protos(list(outputs)),
                         float(c.rtol), float(c.atol)))
    return raws


def _save(raws: list[_Raw], path: Path) -> None:
    """Write the cases to `path` atomically: an 8-byte header length, a JSON index of each
    case's serialised protos (offset, size), then the protos back to back."""
    blob, index = bytearray(), []

    def put(proto: Any) -> list[int]:
        data = proto.SerializeToString()
        blob.extend(data)
        return [len(blob) - len(data), len(data)]

    for r in raws:
        index.append({"name": r.name, "rtol": r.rtol, "atol": r.atol, "model": put(r.model),
                      "inputs": None if r.inputs is None else [put(t) for t in r.inputs],
                      "outputs": None if r.outputs is None else [put(t) for t in r.outputs]})
    head = json.dumps(index).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(len(head).to_bytes(8, "little") + head + bytes(blob))
    os.replace(tmp, path)


def _load(path: Path) -> list[_Raw]:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    index, blob = json.loads(data[8:8 + size]), memoryview(data)[8 + size:]

    def get(span: list[int], cls: type) -> Any:
        proto = cls()
        proto.ParseFromString(blob[span[0]:span[0] + span[1]])
        return proto

    def tensors(spans: list | None) -> list[onnx.TensorProto] | None:
        return None if spans is None else [get(s, onnx.TensorProto) for s in spans]

    return [_Raw(e["name"], get(e["model"], onnx.ModelProto), tensors(e["inputs"]),
                 tensors(e["outputs"]), e["rtol"], e["atol"]) for e in index]


@functools.cache
def _collected() -> tuple[_Raw, ...]:
    """Every node case of the installed onnx, sorted by name; generated once per onnx and
    then read from .cache/node_cases (keyed by a hash of the generators' source)."""
    path = cache_dir() / f"{_generators_key()}.bin"
    try:
        raws = _load(path)
    except (OSError, ValueError, KeyError):  # absent or unreadable: regenerate
        raws = _generate()
        try:
            _save(raws, path)
        except OSError:  # a read-only place: run without the cache
            pass
    return tuple(sorted(raws, key=lambda r: r.name))


def listed_case_names(tensors_only: bool = False) -> list[str]:
    """Names of the node cases whose ops etch lists, sorted; with `tensors_only`, without
    those whose values are sequences or optionals."""
    return [c.name for c in _collected() if _listed(c)
            and (not tensors_only or (c.inputs is not None and c.outputs is not None))]


@functools.cache
def _by_name() -> dict[str, Any]:
    return {c.name: c for c in _collected()}


def load_case(name: str) -> NodeCase | None:
    """The decoded case `name` (None: its values are sequences or optionals); a fresh copy
    each call, so a caller may change it."""
    return _decode(_by_name()[name])


# ---- comparing ----------------------------------------------------------------------------
def _comparable(got: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arrays numpy can compare: ml_dtypes small floats as float32, small ints as int64,
    raw bytes (ORT hands float8/int4 back as bytes) viewed as the expected type."""
    if got.dtype != want.dtype and got.dtype.itemsize == want.dtype.itemsize \
            and got.dtype.kind in "uV" and want.dtype.kind == "V":
        got = got.view(want.dtype)
    if _SMALL_FLOATS.match(want.dtype.name):
        return got.astype(np.float32), want.astype(np.float32)
    if want.dtype.name.startswith(("int4", "uint4", "int2", "uint2")):
        return got.astype(np.int64), want.astype(np.int64)
    return got, want


def compare(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], rtol: float,
            atol: float) -> str | None:
    """Why `actual` does not match `expected` (ONNX's runner rules), or None when it does."""
    for name, want in expected.items():
        if name not in actual:
            return f"output {name!r} missing"
        got = np.asarray(actual[name])
        if got.shape != want.shape:
            return f"output {name!r}: shape {got.shape} != expected {want.shape}"
        if got.dtype != want.dtype and not (got.dtype.kind in "uV" and want.dtype.kind == "V"
                                            and got.dtype.itemsize == want.dtype.itemsize):
            return f"output {name!r}: dtype {got.dtype} != expected {want.dtype}"
        tol = max(rtol, 2 ** -6) if want.dtype.name == "bfloat16" else rtol  # two ULPs
        reason = _compare_values(name, *_comparable(got, want), tol, atol)
        if reason:
            return reason
    return None


def _compare_values(name: str, got: np.ndarray, want: np.ndarray, tol: float,
                    atol: float) -> str | None:
    if want.dtype.kind in "fc":
        with np.errstate(all="ignore"):
            ok = np.isclose(got, want, rtol=tol, atol=atol, equal_nan=True)
        if ok.all():
            return None
        bad = np.argwhere(~ok)
        i = tuple(int(v) for v in bad[0])
        return (f"output {name!r}: {len(bad)}/{ok.size} values differ (rtol {tol:g}, atol "
                f"{atol:g}); first at {i}: {got[i]!r} vs expected {want[i]!r}")
    if np.array_equal(got, want):
        return None
    bad = np.argwhere(got != want) if got.shape else np.zeros((1, 0), int)
    i = tuple(int(v) for v in bad[0])
    return (f"output {name!r}: {len(bad)}/{max(got.size, 1)} values differ; first at {i}: "
            f"{got[i]!r} vs expected {want[i]!r}")


# ---- running ------------------------------------------------------------------------------
def first_line(e: BaseException) -> str:
    """One line describing `e` (the last line of TVM's multi-line reports)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    text = lines[0] if isinstance(e, EtchError) or len(lines) < 2 else lines[-1]
    return (text if lines else type(e).__name__)[:300]


def run_etch(case: NodeCase, target: str = "cpu", bind: bool = False) -> Outcome:
    """Compile `case.model` for `target`, run it on the case's inputs, compare. With `bind`,
    the inputs that decide an output shape are bound to the case's values at compile time
    and the others fed at run time."""
    import compiler

    names = sorted(shape_deciding_inputs(case.model)) if bind else []
    bound = {n: case.feeds[n] for n in names}
    feeds = {k: v for k, v in case.feeds.items() if k not in bound}
    stage = "import"
    try:
        onnx_import.import_model(case.model, bind=bound)
        stage = "compile"
        artifact = compiler.compile(case.model, target=target, bind=bound)
        stage = "run"
        with np.errstate(all="ignore"):  # some cases divide by zero on purpose
            actual = artifact.run(feeds)
    except EtchError as e:
        return Outcome("refused", stage, first_line(e), tuple(names))
    except Exception as e:  # noqa: BLE001 -- the harness's point: a foreign exception is a finding
        return Outcome("error", stage, f"{type(e).__name__}: {first_line(e)}", tuple(names))
    reason = compare(actual, case.expected, case.rtol, case.atol)
    return Outcome("wrong", "compare", reason, tuple(names)) if reason \
        else Outcome("pass", bound=tuple(names))


def run_ort(case: NodeCase) -> Outcome:
    """ONNX Runtime (CPU, graph optimisations off) on the case as generated."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    stage = "compile"
    try:
        sess = ort.InferenceSession(case.model.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        stage = "run"
        names = [o.name for o in sess.get_outputs()]
        actual = dict(zip(names, sess.run(names, case.feeds)))
    except Exception as e:  # noqa: BLE001 -- ORT raises its own types (and KeyError, ...)
        return Outcome("refused", stage, first_line(e))
    reason = compare(actual, case.expected, case.rtol, case.atol)
    return Outcome("wrong", "compare", reason) if reason else Outcome("pass")


# ---- what etch must refuse ----------------------------------------------------------------
def shape_deciding_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs whose values reach a `shape_inputs` slot of an op (Reshape's shape,
    Resize's scales, a reduction's axes, ...), following producers back through every op but
    Shape/Size (whose outputs depend only on static shapes)."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def inputs_of(name: str) -> list[str]:
        node = producer.get(name)
        if node is None or onnx_import.op_name(node) in onnx_import.SHAPE_OF:
            return []
        return list(node.input)

    seen = onnx_import.upstream(
        [n.input[k] for n in model.graph.node
         for k in getattr(ops.get(onnx_import.op_name(n)), "shape_inputs", ())
         if k < len(n.input)], inputs_of)
    inits = {t.name for t in model.graph.initializer}
    return seen & ({i.name for i in model.graph.input} - inits)
