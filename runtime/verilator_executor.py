"""Runs `verilog` artifacts: host nodes by the numpy reference, hardware segments by
Verilator simulation of the artifact's RTL.

The manifest names the integer graph (`graph`, ONNX) and its `segments`: each a convex set
of graph nodes that one design runs, with the design's sources, top module, stream shape
and the tensors that cross the stream:

    {"name": "seg0", "nodes": [...], "top": "etch_top", "sources": ["rtl/etch_top.v", ...],
     "inputs": [{"name", "shape", "dtype"}], "outputs": [...],
     "stream": {"in_bytes", "in_beat", "out_bytes", "out_beat"},
     "max_cycles": C, "stats": true, "layers": {"0": "label", ...},
     "plusargs": ["+name=relative/path", ...],
     "build": {"hierarchical": false, "opt": "-O1", "args": [...],
               "parts": [["module", "rtl/module.v"], ...]}}

`plusargs` are passed to the simulation (paths relative to the artifact: the simulator runs
there), so segments that share RTL share one simulator build and differ only in the
memory files they load. Every node not in a segment runs on the host. A batch of inferences streams through one
simulation per segment (`run_batch`), never one Python call per clock; `stats` holds the
cycles of the last run per segment (total, per inference, per layer). The simulator is
built on first use and cached by content hash (`runtime.verilator_build`), so artifacts
with the same RTL share one build. Tensors cross the stream as their bytes in C order,
little-endian, concatenated in the order the manifest lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from compiler import onnx_import, reference
from compiler.errors import EtchError
from compiler.ir import Graph, Node
from runtime import verilator_build as vb
from runtime.executor import Executor, check_inputs

Env = dict[str, np.ndarray]


class Segment:
    """One simulated design: which nodes it replaces and how its tensors are streamed."""

    def __init__(self, root: Path, spec: dict) -> None:
        self.root = root
        self.spec = spec
        self.name = spec["name"]
        self.nodes = set(spec["nodes"])
        self.inputs, self.outputs = spec["inputs"], spec["outputs"]
        s = spec["stream"]
        self.stream = vb.StreamShape(s["in_bytes"], s["in_beat"], s["out_bytes"], s["out_beat"])
        self._exe: Path | None = None

    def build_spec(self, trace: bool) -> vb.BuildSpec:
        b = self.spec.get("build", {})
        return vb.BuildSpec(tuple(self.root / f for f in self.spec["sources"]), self.spec["top"],
                            stats=bool(self.spec.get("stats")), trace=trace,
                            hierarchical=bool(b.get("hierarchical")), opt=b.get("opt", "-O1"),
                            extra=tuple(b.get("args", ())),
                            parts=tuple((m, self.root / f) for m, f in b.get("parts", ())))

    def executable(self, trace: bool, progress: Callable[[str], None] | None) -> Path:
        if self._exe is None:
            harness = self.root / self.spec.get("harness", "tb/stream_harness.cpp")
            self._exe = vb.build(self.build_spec(trace), harness, progress)
        return self._exe

    def pack(self, env: Env) -> np.ndarray:
        parts = [np.ascontiguousarray(env[t["name"]], dtype=np.dtype(t["dtype"]).newbyteorder("<"))
                 .reshape(-1).view(np.uint8) for t in self.inputs]
        row = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
        if row.size != self.stream.in_bytes:
            raise EtchError(f"segment {self.name}: {row.size} input bytes, the design takes "
                            f"{self.stream.in_bytes}")
        return row

    def unpack(self, row: np.ndarray) -> Env:
        out, off = {}, 0
        for t in self.outputs:
            dt = np.dtype(t["dtype"]).newbyteorder("<")
            n = int(np.prod(t["shape"], dtype=np.int64)) * dt.itemsize
            out[t["name"]] = row[off:off + n].copy().view(dt).astype(t["dtype"]).reshape(
                t["shape"])
            off += n
        return out


class VerilatorExecutor(Executor):
    def __init__(self, path: Path, manifest: dict, vcd: str | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        super().__init__(manifest)
        self.path = Path(path)
        self.graph: Graph = onnx_import.import_model(self.path / manifest["graph"])
        self.segments = [Segment(self.path, s) for s in manifest.get("segments", [])]
        self.vcd = vcd
        self.progress = progress
        self.stats: dict[str, dict] = {}
        owner = {n: seg for seg in self.segments for n in seg.nodes}
        self._plan = self._schedule(owner)

    def _schedule(self, owner: dict[str, Segment]) -> list[Node | Segment]:
        """Graph order with each segment's nodes replaced by the segment, once."""
        plan: list[Node | Segment] = []
        seen: set[str] = set()
        known = {n.name for n in self.graph.nodes}
        for seg in self.segments:
            missing = seg.nodes - known
            if missing:
                raise EtchError(f"segment {seg.name} names nodes not in the graph: "
                                f"{sorted(missing)[:3]}")
        for node in self.graph.nodes:
            seg = owner.get(node.name)
            if seg is None:
                plan.append(node)
            elif seg.name not in seen:
                seen.add(seg.name)
                plan.append(seg)
        return plan

    def build(self) -> None:
        """Build (or find in the cache) every segment's simulator now."""
        for seg in self.segments:
            seg.executable(self.vcd is not None, self.progress)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._run_envs([inputs])[0]

    def run_batch(self, batch: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Run many inferences, streaming them through one simulation per segment."""
        return self._run_envs([check_inputs(self.input_specs, b, self.bound) for b in batch])

    def _run_envs(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        consts = {k: v.data for k, v in self.graph.values.items() if v.is_const}
        envs: list[Env] = [{**consts, **b} for b in batch]
        for step in self._plan:
            if isinstance(step, Segment):
                self._simulate(step, envs)
                continue
            for env in envs:
                outs = reference.run_node(step, [env[i] if i else None for i in step.inputs])
                env.update(zip(step.outputs, outs))
        return [{o: env[o] for o in self.graph.outputs} for env in envs]

    def _simulate(self, seg: Segment, envs: list[Env]) -> None:
        for t in seg.inputs:
            if any(t["name"] not in env for env in envs):
                raise EtchError(f"segment {seg.name} reads %{t['name']} before it is computed")
        rows = np.stack([seg.pack(env) for env in envs])
        exe = seg.executable(self.vcd is not None, self.progress)
        max_cycles = int(seg.spec.get("max_cycles", 1 << 24)) * len(envs) + 1000
        out, stats = vb.simulate(exe, seg.stream, rows, max_cycles=max_cycles, vcd=self.vcd,
                                 cwd=seg.root, plusargs=seg.spec.get("plusargs", ()))
        labels = seg.spec.get("layers", {})
        stats["layers"] = {labels.get(k, k): v for k, v in stats.get("layers", {}).items()}
        self.stats[seg.name] = stats
        for env, row in zip(envs, out):
            env.update(seg.unpack(row))


def load(path: Path, manifest: dict, vcd: str | None = None, **kwargs) -> VerilatorExecutor:
    if kwargs.get("rpc"):
        raise EtchError("--rpc runs TVM artifacts on a remote device; verilog artifacts are "
                        "simulated here (etch sim)")
    return VerilatorExecutor(path, manifest, vcd=vcd, progress=kwargs.get("progress"))
