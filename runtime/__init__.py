"""Load an artifact directory by its manifest and run it.

`load(path).run({name: array}) -> {name: array}`; one executor per runtime kind named in
the manifest ("reference", "tvm", "verilator"). The manifest must be a JSON object with its
core fields; the files it lists are checked against their sha256 before an executor opens
them (`runtime.files`). Inputs are checked against the manifest.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from compiler.errors import EtchError
from runtime import files
from runtime.executor import Executor

FORMAT_VERSION = 2  # what this etch writes
READS = (1, 2)      # 1: every constant inside the library; 2: cpu weights in weights.bin
EXECUTORS = {"reference": "runtime.reference_executor", "tvm": "runtime.tvm_executor",
             "verilator": "runtime.verilator_executor"}


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of artifact directory `path`; EtchError if it is not one."""
    mpath = Path(path) / "manifest.json"
    if not mpath.is_file():
        raise EtchError(f"{path}: not an etch artifact (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise EtchError(f"{mpath}: unreadable manifest: {e}") from e
    if not isinstance(manifest, dict):
        raise EtchError(f"{mpath}: not an etch manifest (a JSON object)")
    version = manifest.get("format_version")
    if type(version) is not int or version not in READS:
        raise EtchError(f"{path}: artifact format {version} "
                        f"(this etch reads formats {', '.join(map(str, READS))}); "
                        f"recompile it")
    if manifest.get("runtime") not in EXECUTORS:
        raise EtchError(f"{path}: unknown runtime {manifest.get('runtime')!r}")
    for key in ("inputs", "outputs"):
        specs = manifest.get(key)
        if not isinstance(specs, list) or not all(_is_spec(s) for s in specs):
            raise EtchError(f"{mpath}: `{key}` is not a list of name/shape/dtype entries")
    return manifest


def _is_spec(spec: object) -> bool:
    return (isinstance(spec, dict) and isinstance(spec.get("name"), str)
            and isinstance(spec.get("dtype"), str) and isinstance(spec.get("shape"), list)
            and all(isinstance(d, int) and d >= 0 for d in spec["shape"]))


def load(path: str | os.PathLike, *, verified: bool = False, **kwargs) -> Executor:
    """An executor for the artifact at `path` (kwargs go to it, e.g. rpc="host:port"). The
    artifact's files are checked against the manifest's sha256 first, unless `verified`
    (the caller has just computed those digests itself: a compile's own artifact)."""
    manifest = read_manifest(path)
    if not verified:
        files.verify(Path(path), manifest)
    module = importlib.import_module(EXECUTORS[manifest["runtime"]])
    return module.load(Path(path), manifest, **kwargs)


__all__ = ["Executor", "load", "read_manifest"]
