"""Assembly of the cpu/edge kernels for a named instruction set, whatever the host is.

Each ISA is a CPU LLVM knows by name: `avx2` an AVX2-only CPU (AMD Zen 3), `avx512` an
AVX-512 + VNNI CPU (Intel Sapphire Rapids), `neon` an aarch64 core (the edge target). The
kernels are lowered, scheduled and compiled for that CPU exactly as `etch compile --mcpu`
would, and only their assembly is read: nothing runs, so every check runs on any machine.
Exactness is tested elsewhere, on the host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import tvm

from backends.tvm import builder, edge, lower, schedules, strided_loads
from backends.tvm import target as targets
from backends.tvm.schedules import cpu as cpu_rules
from compiler.ir import Graph
from compiler.options import CompileOptions

ISA_CPUS = {"avx2": "znver3", "avx512": "sapphirerapids", "neon": "cortex-a76"}
X86_REGISTERS = ((4, "xmm"), (8, "ymm"), (16, "zmm"))  # float32 lanes -> register class


def target_json(isa: str, **options) -> dict:
    """The TVM target for `isa` (a key of ISA_CPUS, or any x86 CPU name): the cpu target as
    `--mcpu` makes it, or the edge target for aarch64."""
    mcpu = ISA_CPUS.get(isa, isa)
    if isa == "neon":
        return edge.edge_target(mcpu)
    options = {k: v for k, v in options.items() if v is not None}
    opts = CompileOptions(target="cpu", mcpu=mcpu, threads=1, **options)
    return targets.cpu_target(opts)[0]


@dataclass
class Assembly:
    """One compiled module: each kernel's assembly and etch attributes, the rules used."""

    isa: str                     # "neon" or an x86 ISA / CPU name
    lanes: int                   # float32 lanes of the target's vectors
    kernels: dict[str, str]      # PrimFunc name -> the assembly of its body
    attrs: dict[str, dict]       # PrimFunc name -> its etch.* attributes
    rules: dict[str, int]

    def of_kind(self, *kinds: str) -> dict[str, str]:
        """The kernels whose `etch.kind` is one of `kinds`."""
        return {k: a for k, a in self.kernels.items() if self.attrs[k].get("kind") in kinds}

    def packed_fma(self, name: str, tile: int) -> bool:
        """Whether kernel `name` has a float32 FMA on a vector as wide as a tile of `tile`
        columns needs (the target's full width when the tile is at least that wide)."""
        asm = self.kernels[name]
        if self.isa == "neon":
            return re.search(r"fmla\s+v\d+\.4s", asm) is not None
        need = min(tile, self.lanes)
        reg = next(r for lanes, r in X86_REGISTERS if lanes >= need)
        return re.search(rf"vfmadd\w*ps\s+[^\n]*%{reg}", asm) is not None


def compile_graph(graph: Graph, isa: str, **options) -> Assembly:
    """Lower, schedule and compile `graph` for `isa` (as the cpu/edge builders do)."""
    target = tvm.target.Target(target_json(isa, **options))
    lanes = cpu_rules.lanes(target)
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=True, lanes=lanes), target)
    with tvm.transform.PassContext(opt_level=3, config=builder.tir_config(target)):
        ex = tvm.compile(mod, target=target, relax_pipeline=builder.vm_passes(),
                         tir_pipeline="default" if isa == "neon" else strided_loads.PIPELINE)
    source = ex.mod.imports[0].inspect_source("asm")
    parts = {p.split(":", 1)[0]: p for p in re.split(r"\n(?=[A-Za-z_]\w*:\n)", source)}
    kernels, attrs = {}, {}
    for gvar, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            name = gvar.name_hint
            kernels[name] = parts.get(f"{name}_compute_", parts.get(name, ""))
            attrs[name] = {str(k)[len("etch."):]: v for k, v in (func.attrs or {}).items()
                           if str(k).startswith("etch.")}
    return Assembly(isa, lanes, kernels, attrs, schedules.rule_names(mod))
