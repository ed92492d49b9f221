"""Compile-time binding of graph inputs (`etch compile --bind VALUES.npz`,
`compiler.compile(..., bind={name: array})`, `etch inspect --bind`).

The importer (`onnx_import._add_inputs`) makes each bound graph input a constant holding its
value (`bound_value`, which checks the value's dtype and shape against the input's), so
whatever the input decides folds at import and the shapes after it become static; the input
leaves the graph's inputs. `record` keeps each bound input's name, shape, dtype and the
sha256 of its values (C order, little-endian bytes) in `graph.metadata["etch.bound"]`;
`records` reads them back for the manifest's `bound`, `describe` prints one for `--explain`
and `etch inspect`. The executors refuse a value for a bound input (`runtime.executor`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from compiler import npz
from compiler.errors import EtchError
from compiler.ir import Graph, Value

METADATA_KEY = "etch.bound"


def values(bind: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """The values to bind graph inputs to: an .npz's arrays (--bind) or the given dict."""
    if bind is None:
        return {}
    if isinstance(bind, (str, os.PathLike)):
        return npz.load(bind, "--bind")
    return {str(k): np.asarray(v) for k, v in bind.items()}


def bound_value(name: str, value: Any, dtype: str, dims: list[int]) -> Value:
    """Graph input `name` (element type `dtype`, dims `dims`, -1 where dynamic) as a constant
    holding `value`; EtchError when the value's dtype or shape is not the input's."""
    arr = np.asarray(value)
    if arr.dtype.name != dtype:
        raise EtchError(f"--bind {name}: value has dtype {arr.dtype.name}, the model's input "
                        f"is {dtype}")
    if arr.ndim != len(dims) or any(d >= 0 and d != a for d, a in zip(dims, arr.shape)):
        want = ", ".join("?" if d < 0 else str(d) for d in dims)
        raise EtchError(f"--bind {name}: value has shape {list(arr.shape)}, the model's input "
                        f"has [{want}]")
    data = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C")  # a private copy
    return Value(name, tuple(int(d) for d in data.shape), data.dtype.name, data)


def _describe_value(name: str, data: np.ndarray) -> dict[str, Any]:
    """The manifest's record of a bound input: name, shape, dtype and the sha256 of its
    values (C order, little-endian bytes)."""
    raw = np.ascontiguousarray(data, data.dtype.newbyteorder("<")).tobytes()
    return {"name": name, "shape": list(data.shape), "dtype": data.dtype.name,
            "sha256": hashlib.sha256(raw).hexdigest()}


def record(graph: Graph, names: list[str]) -> None:
    """Note the bound inputs `names` (constants of `graph`, in model order) in its metadata."""
    graph.metadata[METADATA_KEY] = json.dumps(
        [_describe_value(n, graph.values[n].data) for n in names])


def records(graph: Graph) -> list[dict[str, Any]]:
    """The records (`_describe_value`) of the graph inputs bound at import, in model order."""
    return json.loads(graph.metadata.get(METADATA_KEY, "[]"))


def describe(bound: dict) -> str:
    """One bound input as `explain` and `etch inspect` show it."""
    return (f"{bound['name']}: {bound['dtype']}[{'x'.join(map(str, bound['shape']))}] "
            f"sha256 {bound['sha256'][:16]} (a constant; not an input of the artifact)")
