"""Calibration data: reading `--calib DATA.npz`, running the float graph over it, and the
statistics the quantisation passes need (activation ranges, layer-input Hessians).

The .npz is keyed by the model's input names, like `etch run --inputs`. A calibration
*sample* is one row along axis 0 (one item of a batch), so the calibration set's size does
not depend on the batch the model is deployed at: each input's array is [R, *shape[1:]]
(R rows: one input, a stack of them, or inputs concatenated along the batch axis) or
[S, *shape] (a stack of whole inputs, S * shape[0] rows). Every input must hold the same R.

`batches` groups the rows into the runs `run_all` makes. When the graph treats rows as
independent samples (checked once: a run of one row, or two for a model at batch 1, must
give what the deployed batch gives for those rows; a Reshape that bakes the batch in does
not), runs hold up to CHUNK rows each, whatever the deployed batch. Data of exactly one
deployed batch is one run either way, so it skips the check (three reference runs). Otherwise the rows of
one input are not independent samples, and runs are whole deployed inputs: R must then be
a multiple of the batch (inputs without a batch axis, rank 0, are whole samples too).

Values must be finite: NaN or Inf in the data is refused (a NaN would poison every range
it reaches). etch needs calibration data for activation quantisation (`--int`, `--target
verilog`) unless the model carries its own activation scales (an imported QDQ model), and
for GPTQ: there is no good default for a model etch knows nothing about (the digits models'
training split is what tests and benchmarks pass; see `models.zoo.digits_split`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from compiler import npz, reference
from compiler.errors import EtchError
from compiler.ir import Graph

CHUNK = 64  # rows per calibration run when rows are independent samples
SAMPLE_CAP = 1 << 20  # elements kept per tensor for percentile ranges
Inputs = dict[str, np.ndarray]


def load(source: str | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of a calibration .npz (or a dict given directly)."""
    if not isinstance(source, str):
        return {k: np.asarray(v) for k, v in source.items()}
    return npz.load(source, "--calib")


def batches(graph: Graph, data: Mapping[str, np.ndarray]) -> list[Inputs]:
    """The calibration data as the runs `run_all` makes (see the module docstring)."""
    arrays = _checked(graph, data)
    rows = _rows(graph, arrays)
    if rows is None:
        return _whole_samples(graph, arrays)
    count = len(next(iter(rows.values())))
    if count == _batch(graph):  # one run of the deployed batch either way: no probe needed
        return [rows]
    if _rows_independent(graph, rows):
        step = CHUNK
    else:
        step = _batch(graph)
        if count % step:
            raise EtchError(f"calibration data holds {count} rows, not a multiple of the "
                            f"model's batch {step}; this model's rows along axis 0 are not "
                            f"independent samples (its outputs change with the batch), so "
                            f"calibration needs whole [{step}, ...] inputs")
    return [{n: r[i:i + step] for n, r in rows.items()} for i in range(0, count, step)]


def _checked(graph: Graph, data: Mapping[str, np.ndarray]) -> Inputs:
    """The graph inputs' arrays, cast to their dtypes; EtchError if one is missing or a
    float one holds NaN or Inf."""
    missing = [n for n in graph.inputs if n not in data]
    if missing:
        raise EtchError(f"calibration data lacks input(s) {missing}; it has {sorted(data)}")
    out = {}
    for n in graph.inputs:  # checked after the cast: a float64 1e39 is a float32 Inf
        arr = out[n] = np.asarray(data[n]).astype(graph.values[n].dtype, copy=False)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
            raise EtchError(f"calibration input {n!r} holds {bad[0]} NaN and {bad[1]} Inf "
                            f"values; calibration data must be finite")
    return out


def _rows(graph: Graph, arrays: Inputs) -> Inputs | None:
    """Each input as [R, *shape[1:]] rows, or None when some input has no batch axis, the
    inputs disagree on their batch, or they hold different numbers of rows."""
    shapes = {n: tuple(graph.values[n].shape) for n in graph.inputs}
    if any(not s for s in shapes.values()) or len({s[0] for s in shapes.values()}) != 1:
        return None
    rows = {}
    for n, arr in arrays.items():
        shape = shapes[n]
        if arr.shape[1:] == shape[1:] and arr.ndim == len(shape):
            rows[n] = arr
        elif arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
            rows[n] = arr.reshape((-1,) + shape[1:])
        else:
            raise _shape_error(n, shape, arr)
    return rows if len({len(r) for r in rows.values()}) == 1 else None


def _batch(graph: Graph) -> int:
    return int(graph.values[graph.inputs[0]].shape[0])


def _rows_independent(graph: Graph, rows: Inputs) -> bool:
    """Whether a run of k rows (k != the deployed batch B) gives, row for row, what a run at
    B gives: one row against row 0 of a batch, or two rows against two runs of one."""
    b = _batch(graph)
    k = 1 if b > 1 else 2
    static = [_take(rows, i * b, b) for i in range(-(-k // b))]
    try:
        with np.errstate(all="ignore"):
            probe = reference.run(graph, _take(rows, 0, k))
            want = [reference.run(graph, s) for s in static]
    except (EtchError, ValueError, IndexError):
        return False
    for o in graph.outputs:
        expect = np.concatenate([w[o] for w in want])[:k] if want[0][o].ndim else None
        if expect is None or probe[o].shape != expect.shape:
            return False
        if not np.allclose(probe[o], expect, rtol=1e-4, atol=1e-5, equal_nan=True):
            return False
    return True


def _take(rows: Inputs, start: int, count: int) -> Inputs:
    """`count` rows from `start`, cycling through the data when it holds fewer."""
    return {n: np.take(r, np.arange(start, start + count) % len(r), axis=0)
            for n, r in rows.items()}


def _whole_samples(graph: Graph, arrays: Inputs) -> list[Inputs]:
    """One run per whole input (inputs without a batch axis, or with different batches)."""
    per_input = {n: _split(n, tuple(graph.values[n].shape), a) for n, a in arrays.items()}
    counts = {len(v) for v in per_input.values()}
    if len(counts) != 1:
        raise EtchError(f"calibration inputs hold different numbers of samples: "
                        f"{ {k: len(v) for k, v in per_input.items()} }")
    return [{n: per_input[n][i] for n in graph.inputs} for i in range(counts.pop())]


def _split(name: str, shape: tuple[int, ...], arr: np.ndarray) -> list[np.ndarray]:
    if arr.shape == shape:
        return [arr]
    if arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
        return list(arr)
    if (arr.ndim == len(shape) and shape and arr.shape[1:] == shape[1:] and shape[0] > 0
            and arr.shape[0] % shape[0] == 0):
        return list(arr.reshape((-1,) + shape))
    raise _shape_error(name, shape, arr)


def _shape_error(name: str, shape: tuple[int, ...], arr: np.ndarray) -> EtchError:
    forms = (f"[{', '.join(['R', *map(str, shape[1:])])}] (R samples) or "
             f"[S, {', '.join(map(str, shape))}]") if shape else "[] or [S] (S samples)"
    return EtchError(f"calibration input {name!r} has shape {list(arr.shape)}; expected "
                     f"{forms}")


def run_all(graph: Graph, runs: list[dict[str, np.ndarray]],
            visit: Callable[[str, np.ndarray], None]) -> None:
    """Run the graph (reference interpreter) on each batch; `visit(name, value)` sees every
    input and computed value as it is made (`reference.run`), so only the live values of one
    run are held at a time."""
    for inputs in runs:
        with np.errstate(all="ignore"):
            reference.run(graph, inputs, visit=visit)


@dataclass
class RangeStats:
    """Running min/max of named tensors, and a sample of their values for percentiles."""

    names: set[str]
    keep_samples: bool = False
    lo: dict[str, float] = field(default_factory=dict)
    hi: dict[str, float] = field(default_factory=dict)
    kept: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def __call__(self, name: str, value: np.ndarray) -> None:
        """Fold one value into the statistics (a `run_all` visitor); min and max in the
        value's own type (exact), samples in float64."""
        if name not in self.names:
            return
        x = np.asarray(value)
        if not x.size:
            return
        self.lo[name] = min(self.lo.get(name, np.inf), float(x.min()))
        self.hi[name] = max(self.hi.get(name, -np.inf), float(x.max()))
        if self.keep_samples:
            self.kept.setdefault(name, []).append(
                np.asarray(_subsample(x.reshape(-1)), np.float64))

    def range(self, name: str, percentile: float | None = None) -> tuple[float, float]:
        """(lo, hi) of a tensor: min/max, or the given two-sided percentile (e.g. 99.99)."""
        if percentile is None or name not in self.kept:
            return self.lo[name], self.hi[name]
        x = np.concatenate(self.kept[name])
        return (float(np.percentile(x, 100.0 - percentile)), float(np.percentile(x, percentile)))


def _subsample(x: np.ndarray) -> np.ndarray:
    if x.size <= SAMPLE_CAP // 16:
        return x
    return x[:: -(-x.size // (SAMPLE_CAP // 16))]
