"""The executor protocol and the input checks every executor shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from compiler.errors import EtchError
from runtime.profile import Profile


class Executor:
    """Runs one artifact. Subclasses implement `_run` on checked, contiguous inputs."""

    def __init__(self, manifest: dict) -> None:
        self.manifest = manifest
        self.input_specs = manifest["inputs"]
        self.output_specs = manifest["outputs"]
        self.bound = [b["name"] for b in manifest.get("bound", [])]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check `inputs` against the manifest, run, return outputs keyed by name."""
        return self._run(check_inputs(self.input_specs, inputs, self.bound))

    def run_batch(self, batch: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Run many inferences (each keyed like `run`'s inputs). Executors that can stream
        them at once (the Verilator one) override this; the default runs them in turn."""
        return [self.run(b) for b in batch]

    def profile(self, inputs: Mapping[str, np.ndarray], runs: int) -> Profile:
        """Per-kernel times of `runs` runs (`runtime.profile`); only cpu artifacts have
        kernels to time, others say so."""
        raise EtchError(f"--profile times the kernels of cpu artifacts; this one runs on "
                        f"{self.manifest.get('device') or self.manifest.get('runtime')}")

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def check_inputs(specs: list[dict], inputs: Mapping[str, np.ndarray],
                 bound: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Inputs as contiguous, native-byte-order arrays in spec order; EtchError naming any
    mismatch. A value for an input bound at compile time (`bound`, --bind) is an error, even
    one equal to the bound value: the artifact has no such input."""
    expected = [s["name"] for s in specs]
    given_bound = sorted(set(inputs) & set(bound))
    if given_bound:
        raise EtchError(f"input(s) {given_bound} were bound to constants at compile time "
                        f"(--bind; see the manifest's \"bound\"); leave them out, or recompile "
                        f"without binding them; the artifact's inputs are {expected}")
    unknown = sorted(set(inputs) - set(expected))
    if unknown:
        raise EtchError(f"unknown input(s) {unknown}; the model's inputs are {expected}")
    out = {}
    for s in specs:
        if s["name"] not in inputs:
            raise EtchError(f"missing input {s['name']!r} "
                            f"({s['dtype']}[{'x'.join(map(str, s['shape']))}])")
        arr = np.asarray(inputs[s["name"]])
        if arr.dtype.name != s["dtype"]:
            raise EtchError(f"input {s['name']!r} has dtype {arr.dtype.name}, "
                            f"expected {s['dtype']}")
        if list(arr.shape) != list(s["shape"]):
            raise EtchError(f"input {s['name']!r} has shape {list(arr.shape)}, "
                            f"expected {s['shape']}")
        # in native byte order: an .npz written on a big-endian machine (or with dtype
        # '>f4') holds the same values in other bytes, and executors hand raw bytes on
        out[s["name"]] = np.ascontiguousarray(arr, arr.dtype.newbyteorder("="))
    return out
