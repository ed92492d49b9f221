"""Calibration data: reading `--calib DATA.npz`, running the float graph over it, and the
statistics the quantisation passes need (activation ranges, layer-input Hessians).

The .npz is keyed by the model's input names, like `etch run --inputs`. Each array is
either one input (the input's own shape), a stack of inputs ([S, *shape]), or inputs
concatenated along the batch axis ([S * batch, *shape[1:]]). Calibration runs the graph in
chunks of samples concatenated along axis 0 when that gives the same result as one sample
at a time (checked on the first two samples: a Reshape that bakes in batch 1 does not),
else one sample at a time.

etch needs calibration data for activation quantisation (`--int`, `--target verilog`) and
for GPTQ: there is no good default for a model etch knows nothing about (the digits models'
training split is what tests and benchmarks pass; see `models.zoo.digits_split`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from compiler import reference
from compiler.errors import EtchError
from compiler.ir import Graph

CHUNK = 64
SAMPLE_CAP = 1 << 20  # elements kept per tensor for percentile ranges


def load(source: str | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of a calibration .npz (or a dict given directly)."""
    if not isinstance(source, str):
        return {k: np.asarray(v) for k, v in source.items()}
    try:
        with np.load(source, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise EtchError(f"--calib {source}: cannot read .npz: {e}") from e


def samples(graph: Graph, data: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The calibration data as a list of single inputs (each keyed by every graph input)."""
    missing = [n for n in graph.inputs if n not in data]
    if missing:
        raise EtchError(f"calibration data lacks input(s) {missing}; it has {sorted(data)}")
    per_input = {n: _split(n, tuple(graph.values[n].shape), graph.values[n].dtype, data[n])
                 for n in graph.inputs}
    counts = {len(v) for v in per_input.values()}
    if len(counts) != 1:
        raise EtchError(f"calibration inputs hold different numbers of samples: "
                        f"{ {k: len(v) for k, v in per_input.items()} }")
    return [{n: per_input[n][i] for n in graph.inputs} for i in range(counts.pop())]


def _split(name: str, shape: tuple[int, ...], dtype: str, arr: np.ndarray) -> list[np.ndarray]:
    arr = np.asarray(arr).astype(dtype, copy=False)
    if arr.shape == shape:
        return [arr]
    if arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
        return list(arr)
    if (arr.ndim == len(shape) and shape and arr.shape[1:] == shape[1:] and shape[0] > 0
            and arr.shape[0] % shape[0] == 0):
        return list(arr.reshape((-1,) + shape))
    raise EtchError(f"calibration input {name!r} has shape {list(arr.shape)}; expected "
                    f"{list(shape)}, [S, {', '.join(map(str, shape))}] or a multiple of "
                    f"{shape[0] if shape else 1} along axis 0")


def batches(graph: Graph, data: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Calibration inputs grouped into the runs `run_all` makes."""
    items = samples(graph, data)
    if len(items) < 2 or not _batchable(graph, items[:2]):
        return items
    return [{n: np.concatenate([s[n] for s in items[i:i + CHUNK]]) for n in graph.inputs}
            for i in range(0, len(items), CHUNK)]


def _batchable(graph: Graph, two: list[dict[str, np.ndarray]]) -> bool:
    merged = {n: np.concatenate([s[n] for s in two]) for n in graph.inputs}
    try:
        with np.errstate(all="ignore"):
            both = reference.run(graph, merged)
    except (EtchError, ValueError, IndexError):
        return False
    one = [reference.run(graph, s) for s in two]
    for o in graph.outputs:
        expect = np.concatenate([r[o] for r in one]) if one[0][o].ndim else None
        if expect is None or both[o].shape != expect.shape:
            return False
        if not np.allclose(both[o], expect, rtol=1e-4, atol=1e-5):
            return False
    return True


def run_all(graph: Graph, runs: list[dict[str, np.ndarray]],
            visit: Callable[[dict[str, np.ndarray]], None]) -> None:
    """Run the graph (reference interpreter) on each batch; `visit` sees every value."""
    for inputs in runs:
        with np.errstate(all="ignore"):
            visit(reference.run(graph, inputs, keep=True))


@dataclass
class RangeStats:
    """Running min/max of named tensors, and a sample of their values for percentiles."""

    names: set[str]
    keep_samples: bool = False
    lo: dict[str, float] = field(default_factory=dict)
    hi: dict[str, float] = field(default_factory=dict)
    kept: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def __call__(self, env: dict[str, np.ndarray]) -> None:
        for n in self.names:
            x = np.asarray(env[n], np.float64)
            if not x.size:
                continue
            self.lo[n] = min(self.lo.get(n, np.inf), float(x.min()))
            self.hi[n] = max(self.hi.get(n, -np.inf), float(x.max()))
            if self.keep_samples:
                self.kept.setdefault(n, []).append(_subsample(x.reshape(-1)))

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
