"""The driver: ONNX -> IR -> passes -> backend -> artifact directory.

`compile(model, target, **options)` returns an `Artifact`: a directory (held in a temporary
location until saved) with `manifest.json` and the backend's files, plus `.run(inputs)` and
`.save(path)`. Saving is atomic (`compiler.artifact_dir`): the files are written under a
temporary name beside the destination and renamed into place, so a failed or interrupted
compile never leaves half an artifact, and only an existing artifact is ever replaced.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from compiler import __version__, artifact_dir, binding, onnx_import, pipeline
from compiler.errors import EtchError
from compiler.ir import Graph
from compiler.options import CompileOptions
from passes import choose_conv_algorithm, fuse_prologue, pool_first, quant_report, split_batch
from passes.base import explain_declined
from runtime import FORMAT_VERSION
from runtime import files as artifact_files

# target -> backend module; each has build(graph, opts, out_dir) -> dict of manifest entries,
# and may have check(opts), run before the passes, for options only it can judge.
BACKENDS = {"cpu": "backends.tvm", "cuda": "backends.tvm", "edge": "backends.tvm",
            "verilog": "backends.verilog", "ref": "backends.reference"}


class Artifact:
    """A compiled model: a directory with a manifest; runnable and savable."""

    def __init__(self, path: Path, manifest: dict, graph: Graph | None = None,
                 owned: bool = False) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.graph = graph  # the graph the backend built (None when loaded from disk)
        self._executor: Any = None
        self._owned = owned
        if owned:
            weakref.finalize(self, shutil.rmtree, str(self.path), True)

    @property
    def target(self) -> str:
        return self.manifest["target"]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the artifact on inputs keyed by the model's input names."""
        if self._executor is None:
            import runtime

            # a compile's own artifact: the manifest's digests were computed from these very
            # files moments ago, in a private temporary directory; hashing again is waste
            self._executor = runtime.load(self.path, verified=self._owned)
        return self._executor.run(inputs)

    def save(self, dest: str | os.PathLike) -> Path:
        """Copy the artifact to `dest` atomically, replacing only an existing artifact there
        (see `compiler.artifact_dir`)."""
        return artifact_dir.save(self.path, Path(dest))

    def explain(self) -> str:
        return explain(self.manifest)


def compile(model: Any, target: str = "cpu", *, progress: Callable[[str], None] | None = None,
            **options: Any) -> Artifact:
    """Compile `model` (path, bytes or ModelProto) for `target`.

    Options are `CompileOptions` fields (bits=4, lut=True, int=True, ...). Raises EtchError on
    bad input or unsupported settings.
    """
    unknown = set(options) - set(CompileOptions.__dataclass_fields__)
    if unknown:
        raise EtchError(f"unknown compile option(s): {', '.join(sorted(unknown))}")
    opts = CompileOptions(target=target, **options)
    opts.validate()
    if importlib.util.find_spec(BACKENDS[target]) is None:
        raise EtchError(f"the {target} target is not built yet in this version of etch")
    t0 = time.perf_counter()
    say = progress or (lambda s: None)
    say("import")
    graph = onnx_import.import_model(model, opts.input_shapes, binding.values(opts.bind))
    backend = importlib.import_module(BACKENDS[target])
    if hasattr(backend, "check"):  # options only the backend can judge (--mcpu)
        backend.check(opts)
    inputs_meta = _io_meta(graph, graph.inputs)
    graph, records = pipeline.run(graph, opts, log=say)
    say(f"build {target}")
    out = Path(tempfile.mkdtemp(prefix="etch-artifact-"))
    try:
        takes_progress = "progress" in inspect.signature(backend.build).parameters
        entries = backend.build(graph, opts, out, **({"progress": say} if takes_progress
                                                     else {}))
        manifest = _manifest(graph, opts, records, inputs_meta, entries, out,
                             time.perf_counter() - t0)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return Artifact(out, manifest, graph, owned=True)


def _io_meta(graph: Graph, names: list[str]) -> list[dict]:
    return [{"name": n, "shape": list(graph.values[n].shape), "dtype": graph.values[n].dtype}
            for n in names]


def _manifest(graph: Graph, opts: CompileOptions, records: list, inputs_meta: list[dict],
              entries: dict, out: Path, seconds: float) -> dict:
    files = artifact_files.listed(out)
    core = {
        "format_version": FORMAT_VERSION,
        "etch_version": __version__,
        "target": opts.target,
        "model": graph.name,
        "inputs": inputs_meta,
        "bound": binding.records(graph),
        "outputs": _io_meta(graph, graph.outputs),
        "passes": [r.to_json() for r in records],
        "options": opts.to_json(),
        "quantization": _quant_summary(graph),
        "op_counts": graph.op_counts(),
        "compile_seconds": round(seconds, 3),
        "reports": {k: v for k, v in graph.metadata.items() if k != binding.METADATA_KEY},
        "files": files,
    }
    clash = sorted(set(core) & set(entries))
    if clash:
        raise RuntimeError(f"backend manifest entries {clash} would overwrite core fields")
    return {**core, **entries}


def _quant_summary(graph: Graph) -> dict:
    summary: dict[str, int] = {}
    for v in graph.values.values():
        if v.quant is not None:
            key = v.quant.describe()
            summary[key] = summary.get(key, 0) + 1
    return summary


def explain(manifest: dict) -> str:
    """The pass list with node counts and times, as `etch compile --explain` prints it."""
    lines = [f"{'pass':<28}{'changed':>8}{'nodes':>14}{'ms':>9}"]
    for r in manifest["passes"]:
        nodes = f"{r['nodes_before']} -> {r['nodes_after']}"
        lines.append(f"{r['name']:<28}{'yes' if r['changed'] else 'no':>8}{nodes:>14}"
                     f"{r['seconds'] * 1e3:>9.1f}")
    counts = ", ".join(f"{op} x{k}" for op, k in sorted(manifest["op_counts"].items()))
    lines.append(f"ops built: {counts}")
    lines += [f"bound input {binding.describe(b)}" for b in manifest.get("bound", [])]
    reports = manifest.get("reports", {})
    extra = [r for r in (quant_report.explain(reports), split_batch.explain(reports),
                         choose_conv_algorithm.explain(reports),
                         fuse_prologue.explain(reports), pool_first.explain(reports),
                         explain_declined(reports)) if r]
    # a backend may describe what it built in its own lines (manifest "explain")
    return "\n".join(lines + extra + manifest.get("explain", []))
