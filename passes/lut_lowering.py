"""LutLowering: weight-quantised linear layers become etch.LutGemm (`--lut`).

Rewrites, for a layer whose weight is a constant etch.Dequant of 1-4-bit, binary or ternary
codes with one scale per block of K (QuantizeWeights' output, DequantizeLinear int4 and
MatMulNBits after AbsorbQdq):
- MatMul(x [..., K], Dequant(...) [K, N]) -> etch.LutGemm(x, w, scale[, zero]);
- Gemm(x, B, C; transA=0) -> Add(etch.LutGemm(x, w, alpha * scale, ...), beta * C) (transB:
  B is [N, K]);
- Conv(x, W [O, C, 1, 1], b; group 1, unit strides, no padding) -> Transpose(channels last)
  -> etch.LutGemm -> Transpose back (-> Add(b)); M = batch x pixels rows.
The pass chooses, per layer, and records on the node (the backend renders, it does not
decide): the code layout for the target's look-up instruction (`LutTarget`: vpshufb on
64- or 32-byte vectors with the planes of a column in adjacent bytes, NEON tbl on 16-byte
vectors one plane per vector, CUDA one plane per 32-byte row), the column tile, the table
block (the largest multiple of 8 up to 64 that divides the scale block: T-MAC's table
quantisation group), the table mode (`table`: int8 or float) and the scales' storage
(`scale_dtype`: float16 when every scale, times Gemm's alpha, is exactly a float16 value --
QuantizeWeights rounds its scales so -- else float32, e.g. an imported MatMulNBits' arbitrary
float scales: half the scale bytes the kernel streams, the same product); with
`scale_format` "u8" (`--scale-format u8`: QuantizeWeights made two-level scales), uint8
block scales times one float16 per column and super-block of SUPER_BLOCK blocks
(`scale_dtype` uint8, `super_block`), where every scale factors so exactly
(`two_level_storage`; else the float16/float32 storage above, the report says why): 2.25
instead of 2.5 bits per 2-bit weight at group 32.

Where a look-up kernel loses or cannot run, the layer keeps its etch.Dequant and the
dequantising kernel runs it; the report says why: more rows than the target's row limit
(`ISAS`: where the look-up kernel was not measured ahead past some batch; on x86 both
kernels' times grow linearly with the rows and the look-up kernel was ahead at every batch
measured, so there is none), 5-8-bit codes, scales that vary along K weight by weight
(AdaDim), a scale block that is not a multiple of 8, a Gemm with transA, a Conv other than
a plain 1x1 (no im2col form of the look-up kernel).

Report: `graph.metadata["etch.lut"]` (JSON), one entry per layer with its kernel, reason,
layout, table mode, rows, K, N and bits; `explain` renders it for `etch compile --explain`.
Preconditions: weights quantised (QuantizeWeights/AbsorbQdq ran). Invariants: every
rewritten layer computes the LUT algorithm of the same codes, scales and zero points
(equal to the dequantised product to float rounding with float tables); idempotent (a
rewritten layer no longer reads an etch.Dequant).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Graph, Node, Value
from compiler.ops.etch_lut import LutLayout, Params, max_table_steps
from passes.base import Pass
from passes.lut_codes import LutWeight, lut_weight
from passes.quantizer import SUPER_BLOCK, U8_MAX

MAX_TBLOCK = 64
# isa -> (vector bytes, rows up to which the look-up kernel is chosen over the dequantising
# one; None: every batch). x86: the look-up kernel's register tile takes up to 4 rows and
# its time grows about linearly with the rows (faster past ~2048 rows, where the rows'
# tables outgrow the caches), as the dequantising kernel's does. 4096x4096, one thread, CPU
# time, Zen 4, interleaved, load 6-8: AVX-512 2.7-2.8x (2-bit) and 1.95-2.1x (4-bit) ahead
# at 256-2048 rows, 2.2x / 1.9x at 4096; AVX2 (built for znver3) 2.3-2.6x (2-bit) and
# 1.3-1.65x (4-bit) ahead at 64-2048 rows. No crossover measured: no row limit.
# Elsewhere (not measured): 16. avx512vbmi: AVX-512BW with VBMI's vpermb (64-entry tables:
# the 1- and 3-bit layouts); avx512vnni: VBMI and VNNI's vpdpbusd (Ice Lake, Zen 4: the 1-
# and 3-bit layouts add a column's four chunk-pair bytes in one int32 lane; 2- and 4-bit
# too). Its layouts against the VBMI ones, 4096x4096, one thread, CPU time, Zen 4, load
# 4-5: 0.73-0.87x the time at batch 1, 8 and 256 (the row limit measured for those holds).
ISAS = {"avx512vnni": (64, None), "avx512vbmi": (64, None), "avx512": (64, None),
        "avx2": (32, None), "neon": (16, 16), "cuda": (32, 16), "generic": (16, 16)}
# isa -> the most rows the look-up kernel was measured ahead at, where it has no row limit
MEASURED_ROWS = {"avx512vnni": 4096, "avx512vbmi": 4096, "avx512": 4096, "avx2": 2048}
INSTRUCTION = {"avx512vnni": "vpshufb zmm", "avx512vbmi": "vpshufb zmm",
               "avx512": "vpshufb zmm", "avx2": "vpshufb ymm", "neon": "tbl v.16b",
               "cuda": "shared-memory tables", "generic": "portable loops"}
X86 = ("avx512vnni", "avx512vbmi", "avx512", "avx2")
VBMI = ("avx512vnni", "avx512vbmi")
DOT_BITS = (1, 2, 3, 4)
# isa -> bytes ahead the kernel prefetches its codes and block parameters into L2. A GEMV
# streams its weights once and the hardware streamers stop at each 4 KiB page; 8 KiB ahead
# (two pages) took the cold 2-bit 4096x4096 GEMV from 40-44% to 64-67% of the streaming
# read on CPU time (AVX-512 Zen 4, 34 GB/s stream, load 3-4). CUDA stages tables, not
# codes; the portable loops take no hint.
PREFETCH = {"avx512vnni": 8192, "avx512vbmi": 8192, "avx512": 8192, "avx2": 8192, "neon": 8192}
# The vpermb + vpdpbusd layouts (chunk_slots 4): 16 KiB ahead. Cold 4096x4096 GEMV on Zen 4
# (u8 scales, one thread, CPU time, interleaved pairs, median), each variant's cold copies
# allocated once (load 6-7.5): 2-bit 236-260 -> 200-228 us, 4-bit 553 -> 476, 1-bit 146 ->
# 125; with the copies reallocated every pair (load 5), within the noise: 2-bit 263 -> 262,
# 4-bit 502 -> 475 (where the buffers land moves a cold run by 20-30%). Warm unchanged.
DOT_PREFETCH = 16384
# Cold, the multi-plane vpdpbusd layouts stay slower than the VBMI ones (`vpshufb` for 2 and
# 4 bits, `vpermb` for 3); warm they are faster. 4096x4096 GEMV, Zen 4, one thread, u8
# scales, CPU time, quiet (load 0.5-1), cold copies reallocated every interleaved pair,
# median of 5 (us, VBMI vs vpdpbusd): cold 2-bit 234 vs 254, 3-bit 301 vs 323, 4-bit 355 vs
# 401; warm 160 vs 136, 218 vs 178, 247 vs 218 (an earlier A/B at load 5: cold 203 vs 262,
# 424 vs 475). A one-row GEMV (decode) streams its weights once per call: a model's
# weights do not stay in cache between tokens, so there the pass takes the VBMI layouts for
# every bit width with more than one plane (STREAMED); batches (rows > 1) reuse each table
# and weight across rows and keep the vpdpbusd layouts (0.73-0.8x the time at 8 and 256
# rows); 1-bit's one-plane vpdpbusd layout is faster both ways. A model whose look-up
# weights (codes and scales, all layers) take at most RESIDENT_SHARE of the last-level cache
# (`LutTarget.cache_bytes`: the host's, when compiling for it) keeps them cached between
# calls, so its one-row layers are warm and keep the vpdpbusd layouts too. --explain says
# which.
STREAMED = (2, 3, 4)
# That cold trade is AMD Zen 4's. On Intel's AVX-512 VNNI cores the vpdpbusd layouts are
# faster cold too: 4096x4096 GEMV on the Intel Xeon (LLVM `rocketlake`, 2 MiB L2 per core),
# one thread, u8 scales, CPU time, cold copies cycling through 720 MB, interleaved, median
# (us, vpdpbusd vs VBMI): 2-bit 421 vs 471 (80% vs 69% of the 14.5 GB/s streaming read;
# 412-420 with 8-32 KiB prefetch distances; the VBMI layout 491-514 with 1-8 KiB, t0 or t1
# hints, 879 with non-temporal ones), 3-bit 592 vs 652, 4-bit 754 vs 728 (a near tie; warm
# the vpdpbusd layouts are the faster). So a one-row GEMV streams into the VBMI layouts
# only on the cores where they were measured faster cold (`LutTarget.cold_vbmi`, from the
# LLVM CPU name).
COLD_VBMI_CORES = ("znver",)
INTEL_COLD = ("on this core the vpdpbusd layout measured faster cold too (Intel Xeon, "
              "4096x4096: 2-bit 421 vs 471 us, 3-bit 592 vs 652 for the VBMI ones; 4-bit "
              "754 vs 728)")
RESIDENT_SHARE = 0.5  # the rest of the cache: activations, tables, other weights
COLD_TRADE = ("cold (weights from DRAM) the vpshufb layout measured faster on Zen 4: "
              "2-bit 234 vs 254 us, 4-bit 355 vs 401; warm this one is 0.85x its time")
STREAM_NOTE = ("one row streams its weights (decode): the layout measured faster cold on "
               "Zen 4 (2-bit 234 vs 254 us, 3-bit 301 vs 323, 4-bit 355 vs 401 for the "
               "vpdpbusd one, which takes 0.8-0.9x the time warm and at batches)")
WARM_TRADE = ("warm: the vpdpbusd layout measured 0.82-0.88x the vpshufb one's time on Zen "
              "4 (2-bit 136 vs 160 us, 3-bit 178 vs 218, 4-bit 218 vs 247)")


def _cold_note(layout: LutLayout, streamed: bool, rows: int, weights: str,
               cold_vbmi: bool) -> dict:
    """The report's note on the measured cold/warm trade of the layout chosen; `weights`
    says whether the model's look-up weights fit the cache (LutTarget.residence);
    `cold_vbmi` whether the core streams the VBMI layouts faster (LutTarget.cold_vbmi)."""
    if layout.chunk_slots == 4 and layout.planes > 1:
        if rows == 1 and not cold_vbmi:
            return {"cold_note": f"one row, {weights}: {INTEL_COLD}; {WARM_TRADE}"}
        if rows == 1:
            return {"cold_note": f"one row, but {weights}: {WARM_TRADE}"}
        return {"cold_note": COLD_TRADE}
    return {"cold_note": f"{STREAM_NOTE}; {weights}"} if streamed else {}


@dataclass(frozen=True)
class LutTarget:
    """What the layout is chosen for: the look-up instruction set and the row threshold."""

    isa: str = "generic"
    max_rows: int | None = None
    cache_bytes: int | None = None  # the last-level cache of the CPU (None: not known)
    cold_vbmi: bool = True  # the VBMI layouts stream faster than the vpdpbusd ones (Zen 4)

    @property
    def vector_bytes(self) -> int:
        return ISAS[self.isa][0]

    def prefetch(self, layout: LutLayout, resident: bool = False) -> int:
        """Bytes the kernel of `layout` prefetches ahead (0: none). None for the vpdpbusd
        layouts of a model `resident` in the cache: warm, their hints cost more than they
        bring. 4096x4096 GEMV, u8 scales and shared table scales, one thread, CPU time,
        in-process A/B: on Zen 4 (the kernel alone, quiet) 2-bit 102.8 -> 100.4 and 102.1 ->
        100.0 us, 4-bit 182.0 -> 178.8, 1-bit 62.0 -> 62.7 (a tie: its hints stayed on
        until Zen 5); on Zen 5 (interleaved, median of 3-4) 1-bit one row 44.4 -> 33.7, 8
        rows 224.6 -> 191.5. Not resident, they keep them (Zen 5, 1-bit cold: one row 98.2
        with vs 95.7 without, 8 rows 241 vs 325)."""
        ahead = PREFETCH.get(self.isa, 0)
        if not ahead or layout.chunk_slots != 4:
            return ahead
        return 0 if resident else DOT_PREFETCH

    @property
    def rows(self) -> int | None:
        """Rows up to which the look-up kernel is chosen (None: every batch)."""
        return ISAS[self.isa][1] if self.max_rows is None else self.max_rows

    def streams(self, bits: int, rows: int | None, table: str = "int8",
                tblock: int = 32, resident: bool = False) -> bool:
        """Whether a layer of `rows` rows (None: not known) takes the VBMI layouts in place
        of the multi-plane vpdpbusd ones (int8 tables in blocks of 32 rows on a VNNI CPU): a
        one-row GEMV, which streams its weights (STREAMED), unless the model's look-up
        weights are `resident` in the cache (`resides`), on a core where the VBMI layouts
        stream faster (`cold_vbmi`)."""
        return self.isa == "avx512vnni" and self.cold_vbmi and table == "int8" and \
            tblock % 32 == 0 and rows == 1 and bits in STREAMED and not resident

    def resides(self, weight_bytes: int) -> bool:
        """Whether look-up weights of `weight_bytes` in all stay in the last-level cache
        between calls (at most RESIDENT_SHARE of it; never when the cache is not known)."""
        return self.cache_bytes is not None and weight_bytes <= RESIDENT_SHARE * self.cache_bytes

    def residence(self, weight_bytes: int) -> str:
        """The report's words for `resides`."""
        mib = f"the model's look-up weights ({weight_bytes / 2**20:.1f} MiB)"
        if self.cache_bytes is None:
            return f"{mib} against a last-level cache not known (cross-compiled)"
        cache = f"{RESIDENT_SHARE:.0%} of the {self.cache_bytes / 2**20:.0f} MiB last-level cache"
        return f"{mib} {'fit in' if self.resides(weight_bytes) else 'exceed'} {cache}"

    def layout(self, bits: int, n: int, table: str = "int8", tblock: int = 8,
               rows: int | None = None, resident: bool = False) -> LutLayout:
        """x86 int8 tables: the planes of a column in adjacent bytes where they pair up (2
        bits: 2 slots, 4 bits: 4; vpmaddubsw weighs a pair), one plane per vector for 1 and
        3 bits (no padding plane to stream) -- with VBMI and table blocks of 16 rows, two
        chunk pairs of a column in adjacent bytes (chunk_slots 2: vpermb reads four chunks'
        tables, no unpacking) -- and with VNNI and table blocks of 32 rows, four (chunk_slots
        4: a vpermb per nibble reads four chunks' tables, vpdpbusd adds the column's four
        bytes into its int32 lane: no int16 step, no widening; 1-bit tiles of up to 8
        vectors, the 128 columns of the other layouts, multi-plane ones of 4), except where
        `streams` (a one-row GEMV of 2-4 bits whose model is not `resident` in the cache:
        the VBMI layouts); elsewhere, and for float
        tables (vpermps looks up 16 columns of one plane), one plane per vector; tiles of
        up to 4 vectors, fewer for narrow N."""
        v, chunk_slots = self.vector_bytes, 1
        if self.isa in X86 and table == "int8":
            slots, planes = {1: (1, 1), 2: (2, 1), 3: (1, 3), 4: (4, 1)}[bits]
            dot = self.isa == "avx512vnni" and tblock % 32 == 0 and \
                not self.streams(bits, rows, table, tblock, resident)
            if dot and bits in DOT_BITS:
                slots, planes = 1, bits
            if self.isa in VBMI and slots == 1 and tblock % 16 == 0:
                chunk_slots = 4 if dot else 2
        else:
            slots, planes = 1, bits
        per = v // (slots * chunk_slots)
        # chunk_slots 4: 8 vectors (128 columns) for one plane, 4 for more: cold 2-/4-bit
        # GEMV 4096x4096 on Zen 4 (CPU time, load 5-6) 264 -> 247 / 492 -> 472 us, warm the
        # same; 2 vectors would be colder-faster still (209 / 455) but 8% slower warm
        most = 1 if self.isa == "cuda" else 4 if chunk_slots != 4 or planes > 1 else 8
        nv = max(1, min(most, -(-n // per)))
        return LutLayout(bits, v, slots, planes, nv, chunk_slots)


MIN_TABLE_STEPS = 16  # shared table scales keep each block's step within 1 + 1/16 of its own


def table_block(group: int, k: int) -> int:
    """The table-quantisation block: the largest multiple of 8, at most 64, dividing the
    scale block (per-channel scales: up to 64, K padded to it)."""
    if group >= k:
        return min(MAX_TBLOCK, -(-k // 8) * 8)
    return max(b for b in range(8, MAX_TBLOCK + 1, 8) if group % b == 0)


# ---- matching -----------------------------------------------------------------------------
@dataclass
class Site:
    """A layer the pass looks at: node, activation, the Dequant and the weight's K axis."""

    node: Node
    x: str
    dq: Node
    k_axis: int
    rows: int


def _dequant(graph: Graph, prod: dict[str, Node], name: str) -> Node | None:
    node = prod.get(name)
    return node if node is not None and node.op == "etch.Dequant" else None


def find_sites(graph: Graph) -> list[Site]:
    """Every MatMul/Gemm/Conv whose weight (input 1) an etch.Dequant computes."""
    prod, out = graph.producers(), []
    for node in graph.nodes:
        if node.op not in ("MatMul", "Gemm", "Conv") or len(node.inputs) < 2:
            continue
        dq = _dequant(graph, prod, node.inputs[1])
        if dq is None:
            continue
        xs = graph.values[node.inputs[0]].shape
        if node.op == "Conv":
            rows, k_axis = int(np.prod(xs)) // max(xs[1], 1) if len(xs) > 1 else 0, 1
        else:
            rows = int(np.prod(xs[:-1])) if len(xs) > 1 else 1
            k_axis = 1 if node.op == "Gemm" and node.attrs.get("transB", 0) else 0
        out.append(Site(node, node.inputs[0], dq, k_axis, rows))
    return out


def _shape_reason(graph: Graph, site: Site) -> str | None:
    node, a = site.node, site.node.attrs
    if node.op == "Gemm" and a.get("transA", 0):
        return "Gemm with transA"
    if node.op == "Gemm" and len(node.inputs) > 2 and node.inputs[2] and \
            float(a.get("beta", 1.0)) != 1.0 and graph.const(node.inputs[2]) is None:
        return "Gemm with beta != 1 and a computed C"
    if node.op == "MatMul" and len(graph.values[node.inputs[1]].shape) != 2:
        return "MatMul by a weight that is not 2-D"
    if node.op == "Conv":
        w = graph.values[node.inputs[1]].shape
        plain = all(d == 1 for d in w[2:]) and int(a.get("group", 1)) == 1 and \
            all(int(s) == 1 for s in a.get("strides", [1])) and \
            not any(int(p) for p in a.get("pads", [0])) and a.get("auto_pad", "NOTSET") in (
                "NOTSET", "VALID")
        if not plain:
            return "a Conv other than a plain 1x1 (no im2col form of the look-up kernel)"
    return None


# ---- the pass -----------------------------------------------------------------------------
class LutLowering(Pass):
    """Quantised MatMul/Gemm/1x1 Conv -> etch.LutGemm where a look-up kernel wins."""

    name = "lut_lowering"

    def __init__(self, table: str = "int8", target: LutTarget | None = None,
                 scale_format: str = "fp16") -> None:
        self.table = table
        self.target = target or LutTarget()
        self.scale_format = scale_format

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        packed: dict[tuple[str, int], list[str]] = {}
        report = []
        sites = find_sites(graph)
        if not sites and "etch.LutGemm" not in graph.op_counts():
            raise EtchError("--lut: no layer of this model has quantised weights (add --bits "
                            "B, or compile a model with MatMulNBits / int4 weights)")
        decided = [(site, *self._decide(graph, site)) for site in sites]
        weights = {site.dq.outputs[0]: _packed_bytes(lw) for site, _, lw in decided if lw}
        total = sum(weights.values())
        for site, entry, lw in decided:
            if lw is not None:
                entry.update(self._rewrite(graph, site, lw, packed, total))
            report.append(entry)
        if not report:
            return graph, False
        graph.toposort()
        graph.prune()
        graph.metadata["etch.lut"] = json.dumps(report)
        return graph, any(e["kernel"] == "lut" for e in report)

    def _decide(self, graph: Graph, site: Site) -> tuple[dict, LutWeight | None]:
        entry = {"layer": site.node.name, "op": site.node.op, "rows": site.rows,
                 "kernel": "dequant", "table": self.table, "isa": self.target.isa}
        reason = _shape_reason(graph, site)
        lw, limit = None, self.target.rows
        if reason is None:
            got = lut_weight(graph, site.dq, site.k_axis)
            reason, lw = (got, None) if isinstance(got, str) else (None, got)
        if lw is not None:
            entry.update({"k": lw.k, "n": lw.n, "bits": lw.bits, "group": lw.group})
            if lw.group < lw.k and lw.group % 8:
                reason = f"scale block of {lw.group} is not a multiple of 8"
            elif limit is not None and site.rows > limit:
                reason = f"{site.rows} rows > {limit} ({self.target.isa}): past " \
                         f"the batch where the look-up kernel was measured to win"
        entry["reason"] = reason or (f"{site.rows} rows <= {limit}" if limit is not None else
                                     f"{site.rows} rows: no row limit on {self.target.isa} "
                                     f"(the look-up kernel measured ahead of the dequantising "
                                     f"one at every batch tried, up to "
                                     f"{MEASURED_ROWS[self.target.isa]} rows)")
        return entry, (lw if reason is None else None)

    def _rewrite(self, graph: Graph, site: Site, lw: LutWeight,
                 packed: dict[tuple[str, int], list[str]], weight_bytes: int) -> dict:
        """Rewrite the layer into etch.LutGemm (`weight_bytes`: the model's look-up weights,
        for the cold/warm layout choice); returns its report fields."""
        node = site.node
        alpha = float(node.attrs.get("alpha", 1.0)) if node.op == "Gemm" else 1.0
        key = (site.dq.outputs[0], hash(alpha))
        tblock = table_block(lw.group, lw.k)
        resident = self.target.resides(weight_bytes)
        layout = self.target.layout(lw.bits, lw.n, self.table, tblock, site.rows, resident)
        group = lw.group if lw.group < lw.k else -(-lw.k // tblock) * tblock
        attrs = {"k": lw.k, "n": lw.n, "mu": lw.mu, "group": group, "tblock": tblock,
                 "table": self.table, "scale_dtype": scale_storage(lw.scale, alpha),
                 "prefetch": self.target.prefetch(layout, resident), **layout.attrs()}
        two, note = self._two_level(lw, alpha)
        if two is not None:
            attrs.update(scale_dtype="uint8", super_block=SUPER_BLOCK)
        if key not in packed:
            packed[key] = _constants(graph, lw, layout, attrs, alpha, site.dq.outputs[0], two)
        consts = packed[key]
        if len(consts) < 3 or not consts[2]:  # uniform zero point: an attribute
            attrs["zero"] = int(lw.zero.reshape(-1)[0])
        shared = self._shared_tables(attrs, layout, "zero" not in attrs)
        Params.of(attrs)  # the layout the pass made must be one the op accepts
        if node.op == "Conv":
            _rewrite_conv(graph, node, consts, attrs)
        else:
            _rewrite_linear(graph, node, consts, attrs)
        instruction = {2: "vpermb zmm", 4: "vpermb + vpdpbusd zmm"}.get(
            layout.chunk_slots, INSTRUCTION[self.target.isa])
        scales = f"uint8 x float16/{SUPER_BLOCK}" if two is not None else attrs["scale_dtype"]
        return {"kernel": "lut", "layout": describe(layout), "tblock": tblock,
                "scales": scales, "instruction": instruction,
                "prefetch": attrs["prefetch"], **note, **shared,
                **_cold_note(layout, self.target.streams(lw.bits, site.rows, self.table,
                                                         tblock, resident),
                             site.rows, self.target.residence(weight_bytes),
                             self.target.cold_vbmi)}

    def _shared_tables(self, attrs: dict, layout: LutLayout, zero_input: bool) -> dict:
        """Shared table scales (etch_lut step 5: `table_steps`) for int8 tables with
        two-level scales on the vpermb + vpdpbusd layouts, where the integer bound leaves
        at least MIN_TABLE_STEPS steps: a block's float steps (convert, two multiplies, an
        add per 16 columns) become a vpmullw and a vpdpwssd, the float ones move to the
        super-block. 2-bit 4096x4096 GEMV on Zen 4, u8 scales, one thread, CPU time: 128-145
        -> 118-132 us in an interleaved A/B (loaded host); `etch bench lut` 123.9 -> 108.9 us
        (quiet, separate runs). Returns the report's field."""
        if attrs.get("scale_dtype") != "uint8" or self.table != "int8" or \
                layout.chunk_slots != 4:
            return {}
        steps = max_table_steps(Params.of(attrs), zero_input)
        if steps < MIN_TABLE_STEPS:
            return {}
        attrs["table_steps"] = steps
        return {"table_steps": steps}

    def _two_level(self, lw: LutWeight, alpha: float) -> tuple[tuple | None, dict]:
        """(u8, d) storage of the layer's scales under scale_format u8, or None and the
        report's note saying why not."""
        if self.scale_format != "u8":
            return None, {}
        if lw.group >= lw.k:
            return None, {"scales_note": "one scale per column: nothing to split"}
        two = two_level_storage(_scaled(lw.scale, alpha))
        if two is None:
            return None, {"scales_note": "scales are not u8 x float16 products (not made by "
                                         "--scale-format u8)"}
        return two, {}


def _packed_bytes(lw: LutWeight) -> int:
    """About the bytes a layer's look-up weights take: its codes at `bits` per weight and
    one 2-byte scale per block (what the kernel streams per call, within a few percent)."""
    blocks = -(-lw.k // lw.group) if lw.group < lw.k else 1
    return lw.k * lw.n * lw.bits // 8 + blocks * lw.n * 2


def describe(layout: LutLayout) -> str:
    form = f"{layout.slots} planes/column" if layout.slots > 1 else \
        f"{layout.plane_vectors} plane vectors" if layout.plane_vectors > 1 else "1 plane"
    if layout.chunk_slots > 1:
        form += f", {layout.chunk_slots} chunk pairs/column"
    return f"{layout.vector_bytes}B x{layout.tile_vectors}, {form}, {layout.tile_cols} cols"


def scale_storage(scale: np.ndarray, alpha: float = 1.0) -> str:
    """float16 when every scale (times alpha, as float32) is exactly a float16 value."""
    s = _scaled(scale, alpha)
    with np.errstate(over="ignore"):
        half = s.astype(np.float16)
    exact = np.isfinite(half).all() and np.array_equal(half.astype(np.float32), s)
    return "float16" if exact else "float32"


def _scaled(scale: np.ndarray, alpha: float) -> np.ndarray:
    return scale * np.float32(alpha) if alpha != 1.0 else scale.astype(np.float32)


def two_level_storage(s: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Scales s [G, N] float32 as (u8 [G, N], d float16 [ceil(G / SUPER_BLOCK), N]) with
    f32(u8) * f32(d[g // SUPER_BLOCK]) == s exactly, or None. Per super-block and column,
    d = max s / q for the largest q <= 255 that makes d a float16 value and every scale an
    exact integer multiple of it (QuantizeWeights' two-level scales: q = 255)."""
    g, n = s.shape
    sup = -(-g // SUPER_BLOCK)
    pad = np.zeros((sup * SUPER_BLOCK, n), np.float32)
    pad[:g] = s
    blocks = pad.reshape(sup, SUPER_BLOCK, n)
    top = blocks.max(axis=1)                                          # [S, N]
    u8 = np.zeros(blocks.shape, np.uint8)
    d = np.zeros(top.shape, np.float16)
    todo = top != 0
    if np.any(pad < 0) or not np.all(np.isfinite(pad)):
        return None
    for q in range(U8_MAX, 0, -1):
        if not todo.any():
            break
        sj, cj = np.nonzero(todo)
        got = _factor(blocks[sj, :, cj], top[sj, cj] / np.float32(q))
        if got is not None:
            ok, u, dh = got
            u8[sj[ok], :, cj[ok]], d[sj[ok], cj[ok]] = u[ok], dh[ok]
            todo[sj[ok], cj[ok]] = False
    if todo.any():
        return None
    return u8.reshape(-1, n)[:g], d


def _factor(b: np.ndarray, d: np.ndarray) -> tuple | None:
    """Which rows of b [P, S] are exact integer multiples (0..255) of the float16-valued
    float32 d [P]: (ok [P], u8 [P, S], d float16 [P])."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        dh = d.astype(np.float16)
        u = np.rint(b / d[:, None])
    u = np.where(np.isfinite(u), u, -1)
    ok = (dh.astype(np.float32) == d) & np.all((u >= 0) & (u <= U8_MAX), axis=1)
    ok &= np.all(u.astype(np.float32) * d[:, None] == b, axis=1)
    return (ok, np.clip(u, 0, U8_MAX).astype(np.uint8), dh) if ok.any() else None


def _constants(graph: Graph, lw: LutWeight, layout: LutLayout, attrs: dict, alpha: float,
               base: str, two: tuple | None = None) -> list[str]:
    """Packed codes, scales (two-level: uint8 and the float16 super-block scales, last) and
    (when not uniform) zero points, padded to the layout."""
    p = Params.of({**attrs, "zero": 0})
    u = np.zeros((p.kp, lw.n), np.uint8)
    u[:lw.k] = lw.u
    rows = p.kp // p.group
    npad = layout.padded_n(lw.n)
    scale = np.zeros((rows, npad), attrs["scale_dtype"])
    scale[:lw.scale.shape[0], :lw.n] = _scaled(lw.scale, alpha) if two is None else two[0]
    names = [graph.add_const(f"{base}_lut", layout.pack(u)).name,
             graph.add_const(f"{base}_lut_scale", layout.tile_params(scale)).name]
    zero_name = ""
    if np.any(lw.zero != lw.zero.reshape(-1)[0]):
        zero = np.zeros((rows, npad), np.uint8)
        zero[:, :lw.n] = lw.zero
        zero_name = graph.add_const(f"{base}_lut_zero", layout.tile_params(zero)).name
        names.append(zero_name)
    if two is not None:
        d = np.zeros((p.supers, npad), np.float16)
        d[:two[1].shape[0], :lw.n] = two[1]
        names += [""] * (not zero_name) + [
            graph.add_const(f"{base}_lut_super", layout.tile_params(d)).name]
    return names


def _rewrite_linear(graph: Graph, node: Node, consts: list[str], attrs: dict) -> None:
    """MatMul -> LutGemm in place; Gemm -> LutGemm + Add(beta * C)."""
    c = node.inputs[2] if node.op == "Gemm" and len(node.inputs) > 2 else ""
    beta = float(node.attrs.get("beta", 1.0))
    node.op, node.attrs, node.inputs = "etch.LutGemm", attrs, [node.inputs[0], *consts]
    if not c:
        return
    cdata = graph.const(c)
    if cdata is not None and beta != 1.0:
        c = graph.add_const(f"{c}_beta", (cdata * np.float32(beta)).astype(cdata.dtype)).name
    _add_after(graph, node, c)


def _add_after(graph: Graph, node: Node, operand: str) -> None:
    out = node.outputs[0]
    v = graph.values[out]
    mid = graph.add_value(Value(graph.fresh(f"{out}_lut"), v.shape, v.dtype))
    node.outputs = [mid.name]
    graph.add_node(Node("Add", [mid.name, operand], [out], {}, f"{node.name}_bias"),
                   graph.nodes.index(node) + 1)


def _rewrite_conv(graph: Graph, node: Node, consts: list[str], attrs: dict) -> None:
    """1x1 Conv -> Transpose(channels last), LutGemm, Transpose back, + bias."""
    x, out = node.inputs[0], node.outputs[0]
    xs, os_ = graph.values[x].shape, graph.values[out].shape
    rank = len(xs)
    last = (0, *range(2, rank), 1)
    first = (0, rank - 1, *range(1, rank - 1))
    xt = graph.add_value(Value(graph.fresh(f"{x}_nhwc"), tuple(xs[i] for i in last)))
    yt = graph.add_value(Value(graph.fresh(f"{out}_nhwc"), tuple(os_[i] for i in last)))
    at = graph.nodes.index(node)
    graph.add_node(Node("Transpose", [x], [xt.name], {"perm": list(last)},
                        f"{node.name}_to_last"), at)
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    node.op, node.attrs, node.inputs = "etch.LutGemm", attrs, [xt.name, *consts]
    node.outputs = [yt.name]
    back = Node("Transpose", [yt.name], [out], {"perm": list(first)}, f"{node.name}_to_first")
    graph.add_node(back, graph.nodes.index(node) + 1)
    if bias:
        b = graph.add_const(f"{bias}_chw", graph.const(bias).reshape((-1,) + (1,) * (rank - 2)))
        _add_after(graph, back, b.name)


# ---- the report -----------------------------------------------------------------------------
def explain(metadata: Mapping[str, str]) -> list[str]:
    """`etch compile --explain` lines for the pass's report (none when it did not run)."""
    if "etch.lut" not in metadata:
        return []
    rows = json.loads(metadata["etch.lut"])
    out = [f"{'LUT GEMM':<28}{'kernel':>8}{'rows':>6}{'bits':>5}  {'table':<6}layout / reason"]
    for r in rows:
        bits = str(r.get("bits", "-"))
        note = f" ({r['scales_note']})" if "scales_note" in r else ""
        ahead = f", prefetch {r['prefetch'] // 1024} KiB ahead" if r.get("prefetch") else ""
        what = f"{r['layout']}, tblock {r['tblock']}, {r.get('scales', 'float32')} " \
            f"scales{note}, {r['instruction']}{ahead}" + \
            (f", tables scaled per super-block in {r['table_steps']} steps"
             if "table_steps" in r else "") + \
            (f"; {r['cold_note']}" if "cold_note" in r else "") \
            if r["kernel"] == "lut" else r["reason"]
        table = r["table"] if r["kernel"] == "lut" else "-"
        out.append(f"{r['layer']:<28}{r['kernel']:>8}{r['rows']:>6}{bits:>5}  {table:<6}{what}")
    return out
