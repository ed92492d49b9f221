"""The pass manager and each target's pass list.

Pipelines are plain lists, chosen from the options. `run` names and times every pass, runs
the IR verifier after each, and records node counts for `etch compile --explain`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compiler import onnx_export
from compiler.errors import EtchError
from compiler.ir import Graph
from compiler.options import CompileOptions
from passes.base import Pass

if TYPE_CHECKING:
    from backends.tvm.target import CpuInfo
    from passes.lut_lowering import LutTarget


@dataclass
class PassRecord:
    name: str
    changed: bool
    nodes_before: int
    nodes_after: int
    seconds: float

    def to_json(self) -> dict:
        return {"name": self.name, "changed": self.changed, "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after, "seconds": round(self.seconds, 4)}


def import_passes() -> list[Pass]:
    """The passes every pipeline starts with: they only put what was imported into etch's
    representation (Identity/Dropout bypassed, QDQ/QLinear/MatMulNBits absorbed into etch's
    ops). `etch inspect` reports target support for an op as these leave it."""
    from passes.absorb_qdq import AbsorbQdq
    from passes.cleanup import Cleanup

    return [Cleanup(), AbsorbQdq()]


def passes_for(opts: CompileOptions) -> list[Pass]:
    """The pass list for a target and its options, in order."""
    from passes.flatten_pointwise import FlattenPointwise
    from passes.fold_batchnorm import FoldBatchNorm
    from passes.fold_constants import FoldConstants
    from passes.fuse_epilogue import FuseEpilogue
    from passes.fuse_integer import FuseInteger
    from passes.linear_qadd import LinearQAdd
    from passes.plan_engine import PlanEngine
    from passes.plan_hardwired import PlanHardwired
    from passes.quantize_activations import QuantizeActivations
    from passes.quantize_weights import QuantizeWeights
    from passes.rearrange_channels import RearrangeChannels

    fuse = opts.fuse and opts.target in ("cpu", "cuda", "edge", "ref")
    integer = opts.int or opts.target == "verilog"
    quantise = opts.weight_quantised or integer
    passes = import_passes()
    if fuse or quantise or opts.rearrange:
        passes += [FoldBatchNorm(), FoldConstants()]  # quantise the folded weights
    if fuse and not integer:
        from passes.pool_first import PoolFirst

        passes.append(PoolFirst())  # the 1x1 conv on the pooled positions only
    if opts.rearrange:
        passes.append(RearrangeChannels(opts.group_size, opts.bits or 4,
                                        "n" if opts.per == "ic" else "k"))
    if quantise:
        passes.append(QuantizeWeights(
            bits=opts.bits, ternary=opts.ternary, group_size=opts.group_size,
            method=opts.quant, per=opts.per, calib=opts.calib, lut=opts.lut, integer=integer,
            scale_format=opts.scale_format))
    if integer:  # per-channel tables where the TVM int kernels run them
        passes.append(QuantizeActivations(
            opts.calib, channel_tables=opts.target in ("cpu", "edge", "ref"),
            products=opts.target in ("cpu", "edge", "ref")))
    hardwired = opts.target == "verilog" and opts.engine == "hardwired"
    if integer and (fuse or (opts.target == "verilog" and not hardwired)):
        passes.append(FuseInteger())  # the engine runs groups only; PlanHardwired makes stages
    if integer and opts.target in ("cpu", "edge", "ref"):  # ref mirrors cpu's graph
        passes += [LinearQAdd(), FlattenPointwise()]
    if opts.lut:
        from passes.lut_lowering import LutLowering

        passes.append(LutLowering(opts.lut_table, lut_target(opts), opts.scale_format))
    if fuse:
        passes.append(FuseEpilogue())
    if opts.target == "verilog" and opts.engine in ("systolic", "adder-tree"):
        passes.append(PlanEngine(opts.engine, opts.pe, opts.array))
    if hardwired:
        passes.append(PlanHardwired(opts.neuron, opts.fold, opts.pe == "bitserial",
                                    opts.pipeline, opts.max_cells))
    if opts.target == "cpu" and not integer:
        from backends.tvm.target import cpu_info
        from passes.choose_conv_algorithm import ChooseConvAlgorithm
        from passes.split_batch import SplitBatch
        info = cpu_info(opts)[0]  # the CPU compiled for (detected, or --mcpu's)
        passes += [SplitBatch(_cpu_cache(opts, info), info.threads, _llc_share(opts, info)),
                   ChooseConvAlgorithm(winograd=True, lanes=info.lanes,
                                       cache_bytes=_last_level_cache(opts),
                                       one_vector_gemm=info.half_rate_512)]
        if fuse:
            from passes.fuse_prologue import FusePrologue

            passes.append(FusePrologue())
    return passes


def _cpu_cache(opts: CompileOptions, info: CpuInfo) -> int:
    """The L2 of the cores a cpu model runs on, together: this host's (sysfs) times the
    threads, or for --mcpu (or where sysfs does not say) 1 MiB per core with 512-bit
    vectors (Zen 4, Skylake-SP and later), 512 KiB below."""
    from runtime.host_cpu import l2_cache_bytes

    per_core = l2_cache_bytes() if opts.mcpu is None else None
    if per_core is None:
        per_core = (1 << 20) if info.vector_bits == 512 else 512 << 10
    return per_core * max(1, info.threads)


# The last-level cache a core can count on: an 8-core CCX's share of its 32 MB L3 on AMD
# Zen 4/5 (a VM sees the whole L3 but shares it with the rest of the CCX).
LLC_SHARE_PER_CORE = 4 << 20


def _llc_share(opts: CompileOptions, info: CpuInfo) -> int:
    """The cores' share of the last-level cache a cpu model runs on (`split_batch`'s second
    term): LLC_SHARE_PER_CORE per thread, at most the host's whole LLC (sysfs) when
    compiling for it."""
    share = LLC_SHARE_PER_CORE * max(1, info.threads)
    whole = _last_level_cache(opts)
    return min(share, whole) if whole else share


def _last_level_cache(opts: CompileOptions) -> int | None:
    """This host's last-level cache when compiling for it; None for --mcpu (another
    machine's CPU, whose cache is not known)."""
    from runtime.host_cpu import last_level_cache_bytes

    return last_level_cache_bytes() if opts.mcpu is None else None


def lut_target(opts: CompileOptions) -> LutTarget:
    """The look-up instruction set the LUT layouts are chosen for: the cpu target's vector
    extensions (detected or --mcpu), NEON on edge, CUDA; portable loops for ref. Compiling
    for this host (no --mcpu), its last-level cache too (the one-row layout choice), and
    from the CPU's name whether it streams the VBMI layouts faster (AMD Zen)."""
    from passes.lut_lowering import COLD_VBMI_CORES, LutTarget

    if opts.target == "cpu":
        from backends.tvm.target import cpu_info

        info = cpu_info(opts)[0]  # its vector width too: --vector-bits 256 gets 256-bit LUTs
        features = set(info.features)
        wide = "avx512bw" in features and info.vector_bits == 512
        vbmi = wide and "avx512vbmi" in features
        vnni = vbmi and "avx512vnni" in features
        isa = "avx512vnni" if vnni else "avx512vbmi" if vbmi else "avx512" if wide \
            else "avx2" if "avx2" in features else "neon" if "neon" in features else "generic"
        return LutTarget(isa, cache_bytes=_last_level_cache(opts),
                         cold_vbmi=info.mcpu.startswith(COLD_VBMI_CORES))
    return LutTarget({"edge": "neon", "cuda": "cuda"}.get(opts.target, "generic"))


def run(graph: Graph, opts: CompileOptions, pass_list: list[Pass] | None = None,
        log: callable | None = None) -> tuple[Graph, list[PassRecord]]:
    """Run the pipeline; verify after each pass; dump/print as the options ask."""
    records: list[PassRecord] = []
    pass_list = passes_for(opts) if pass_list is None else pass_list
    labels = [p.label for p in pass_list]
    unknown = [name for name in opts.print_after if name not in labels]
    if unknown:
        raise EtchError(f"--print-after {', '.join(unknown)}: not a pass of this compile; it "
                        f"runs {', '.join(labels)}")
    _dump(graph, opts, 0, "import")
    for k, p in enumerate(pass_list, start=1):
        before = len(graph.nodes)
        t0 = time.perf_counter()
        graph, changed = p.run(graph)
        try:
            graph.verify()
        except EtchError as e:
            raise EtchError(f"internal: IR invalid after pass {p.label}: {e}") from e
        records.append(PassRecord(p.label, changed, before, len(graph.nodes),
                                  time.perf_counter() - t0))
        if log is not None:
            log(p.label)
        _dump(graph, opts, k, p.label)
        if p.label in opts.print_after:
            print(f"# after {p.label}\n{graph}")
    return graph, records


def _dump(graph: Graph, opts: CompileOptions, k: int, label: str) -> None:
    if not opts.dump_dir:
        return
    path = Path(opts.dump_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        onnx_export.save(graph, str(path / f"{k:02d}_{label}.onnx"))
    except OSError as e:
        raise EtchError(f"--dump-dir {opts.dump_dir}: cannot write: {e.strerror or e}") from e
