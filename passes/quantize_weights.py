"""QuantizeWeights: float weights of Conv/Gemm/MatMul become b-bit codes and an etch.Dequant.

Rewrite, for each linear layer with a float32 constant weight W (`linear_layers`; etch.Fused
anchors included):
    L(x, W, ...) -> L(x, etch.Dequant(Q, S, Z), ...)
Q is an int8 (symmetric, binary, ternary) or uint8 (asymmetric) constant holding the codes,
annotated with `Value.quant`; S/Z hold one scale/zero per block (see `passes.quantizer`).
The float op still runs everywhere; backends may inline the dequantisation into the kernel.

Options: bits 1..8 (1 = binary {-1,+1}, scale mean|w|), ternary {-1,0,+1}; symmetric or
asymmetric; scales rounded to float16 values before the codes are computed except on the
integer path (its scales are integer multiples of a per-channel base), so a kernel may
store them in two bytes exactly (`quantizer.half_scale`; etch.LutGemm does); `per` =
"oc" (per output channel, or groups of `group_size` input channels along K), "ic" (per
input channel, AdaDim; `group_size` then groups output channels) or "auto" (AdaDim's
choice: per layer, whichever of oc/ic has the smaller error; output error tr(dW H dW^T)
with calibration data, weight error without); `method` = "rtn" or "gptq"
(needs calibration inputs: the Hessian of each layer's input is collected by running the
float graph with `reference.run(..., keep=True)`). Round to nearest with calibration data
chooses each per-output-channel block's clipping ratio for the least output error d H d^T
(`quantizer.rtn_output`) where the layer's N K^2 search fits OUTPUT_SEARCH_COST, and for
the least weight error otherwise (and without data). A layer whose K is not above the group
size is one group. For the integer path (`integer`), groups along K have scales
base[n] * mult[n, g] with integer multipliers (as large as keeps the int32 accumulator
safe, at most 255): etch.Dequant then takes the per-channel base and a fourth input, the
multipliers, which become etch.QConv/etch.QGemm's `w_mult`. `scale_format` "u8"
(`--scale-format u8`, weight-only groups along K): two-level scales, each block's an integer
1..255 times a float16 per row and super-block (`quantizer.two_level`), the codes chosen
against them (RTN requantises, GPTQ snaps each group's scale as it goes); etch.Dequant still
holds the float products, which etch.LutGemm stores as uint8 + float16.

Refused, with an EtchError naming the layer:
- `--lut` with bits 5..8: LUT bit-serial kernels exist for 1-4-bit (and ternary) weights;
  the weight-only cpu/cuda/edge path (dequantise, then the float kernel) takes any of 1..8;
- `integer` (--int, verilog) with per-input-channel scales (they vary along K and cannot be
  factored out of an integer dot product) or asymmetric weights (docs/ARCHITECTURE.md: integer
  weights are symmetric);
- a group size that does not divide a layer's K (in input channels);
- GPTQ without calibration data.
Report: `graph.metadata["etch.quant.weights"]` (JSON), one entry per layer with its
scheme, layout and relative error (and both candidates' errors under per=auto).
Invariant: every quantised layer computes with dequantised weights; the rest is unchanged.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Graph, Node, QuantParams, Value
from passes import calibrate
from passes.base import Pass
from passes.gptq import gptq
from passes.linear_layers import Layer, find_layers, hessians
from passes.quantizer import (
    RATIOS,
    Scheme,
    dequantize,
    group_mult_max,
    output_error,
    requantise,
    rtn,
    rtn_output,
    snap_scales,
    snap_two_level,
    super_scales,
    weight_error,
)

LUT_BITS = frozenset({1, 2, 3, 4})
OUTPUT_SEARCH_COST = 4e10  # N K^2 x grid size: RTN's output-error clip search (~1 s)
GPTQ_HEADROOM = 1.25  # two-level scales under GPTQ: its updated weights may need larger scales
Calib = str | Mapping[str, np.ndarray] | None


@dataclass(frozen=True)
class Plan:
    """A scale layout: blocks of rg rows x cg columns of the [N, K] matrix."""

    per: str
    rg: int
    cg: int


@dataclass
class Quantised:
    q: np.ndarray   # codes [N, K]
    s: np.ndarray   # scales [N/rg, K/cg]
    z: np.ndarray   # zeros [N/rg, K/cg]
    plan: Plan
    error: float
    candidates: dict[str, float] = field(default_factory=dict)
    mult: np.ndarray | None = None  # integer group multipliers: s = base [N, 1] * mult
    two_level: bool = False         # s = u8 * a float16 per row and super-block


def scheme_of(bits: int | None, ternary: bool, symmetric: bool,
              half_scales: bool = False) -> Scheme:
    """The code set for the options (bits None means 8); `half_scales`: float16-valued
    scales (`quantizer.half_scale`)."""
    if ternary:
        return Scheme(2, "ternary", half_scales=half_scales)
    bits = 8 if bits is None else bits
    if bits == 1:
        return Scheme(1, "binary", half_scales=half_scales)
    return Scheme(bits, "int", symmetric, half_scales)


class QuantizeWeights(Pass):
    """Quantise constant weights of linear layers (weight-only representation)."""

    name = "quantize_weights"

    def __init__(self, bits: int | None = 8, ternary: bool = False,
                 group_size: int | None = None, method: str = "rtn", per: str = "oc",
                 calib: Calib = None, symmetric: bool = True, lut: bool = False,
                 integer: bool = False, damp: float = 0.01, scale_format: str = "fp16") -> None:
        self.scheme = scheme_of(bits, ternary, symmetric, half_scales=not integer)
        self.scale_format = scale_format
        self.group_size, self.method, self.per = group_size, method, per
        self.calib, self.lut, self.integer, self.damp = calib, lut, integer, damp

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        layers = find_layers(graph)
        if not layers:
            return graph, False
        self._check_options(layers[0])
        hs = self._hessians(graph, layers)
        report, done = [], {}
        for ly in layers:
            if ly.weight not in done:
                result = self._quantise(graph, ly, hs.get(ly.name))
                done[ly.weight] = _rewrite(graph, ly, result, self.scheme)
                report.append(self._entry(graph, ly, result))
            ly.node.inputs[1] = done[ly.weight]
        graph.toposort()
        graph.prune()
        graph.metadata["etch.quant.weights"] = json.dumps(report)
        return graph, True

    # ---- checks -------------------------------------------------------------------------
    def _check_options(self, first: Layer) -> None:
        s = self.scheme
        if self.lut and s.kind == "int" and s.bits not in LUT_BITS:
            raise EtchError(f"layer {first.name}: --lut has LUT GEMM kernels for 1-4-bit and "
                            f"ternary weights, not {s.bits}-bit (drop --lut for the "
                            f"weight-only path, which takes 1-8 bits)")
        if self.method == "gptq" and self.calib is None:
            raise EtchError(f"layer {first.name}: --quant gptq needs calibration data "
                            f"(--calib DATA.npz)")
        if not self.integer:
            return
        if self.per == "ic":
            raise EtchError(f"layer {first.name}: per-input-channel (AdaDim) scales vary along "
                            f"K and cannot be factored out of an integer dot product; use "
                            f"--per oc with --int/verilog")
        if not s.symmetric:
            raise EtchError(f"layer {first.name}: the integer path takes symmetric weights")

    def _plans(self, ly: Layer, n: int, k: int, taps: int) -> list[Plan]:
        per = ["oc", "ic"] if self.per == "auto" and not self.integer else [self.per]
        if self.per == "auto" and self.integer:
            per = ["oc"]
        return [self._plan(ly, p, n, k, taps) for p in per]

    def _plan(self, ly: Layer, per: str, n: int, k: int, taps: int) -> Plan:
        gs = self.group_size
        if per == "oc":
            channels = k // taps
            if gs is None or gs >= channels:
                return Plan("oc", 1, k)
            if channels % gs:
                raise EtchError(f"layer {ly.name}: --group-size {gs} does not divide its K of "
                                f"{channels} input channels")
            return Plan("oc", 1, gs * taps)
        rows = n // ly.groups
        if gs is None or gs >= rows:
            return Plan("ic", rows, taps)
        if rows % gs:
            raise EtchError(f"layer {ly.name}: --group-size {gs} does not divide its "
                            f"{rows} output channels (per-input-channel groups)")
        return Plan("ic", gs, taps)

    # ---- quantisation -------------------------------------------------------------------
    def _hessians(self, graph: Graph, layers: list[Layer]) -> dict[str, np.ndarray]:
        """Layer-input Hessians from the calibration data: every layer's for GPTQ and
        per=auto; for round to nearest, those whose output-error clip search is affordable."""
        if self.calib is None:
            return {}
        if self.method == "rtn" and self.per != "auto":
            layers = [ly for ly in layers if self._output_search(graph, ly)]
        if not layers:
            return {}
        visit, result = hessians(layers, graph)
        runs = calibrate.batches(graph, calibrate.load(self.calib))
        calibrate.run_all(graph, runs, visit)
        return result()

    def _output_search(self, graph: Graph, ly: Layer) -> bool:
        """Whether RTN searches this layer's clip for output error: binary codes have one
        scale (mean|w|), and the Hessian and the search must fit OUTPUT_SEARCH_COST."""
        if self.scheme.kind == "binary":
            return False
        n, k = ly.matrix(ly.w(graph)).shape
        return n * k * k * len(RATIOS) <= OUTPUT_SEARCH_COST

    def _quantise(self, graph: Graph, ly: Layer, h: np.ndarray | None) -> Quantised:
        w = ly.w(graph)
        m32 = ly.matrix(w)
        n, k = m32.shape
        # the float64 matrix, made once, only for the paths that need it whole
        m64 = functools.cache(lambda: m32.astype(np.float64))

        results = []
        for plan in self._plans(ly, n, k, ly.taps(w.shape)):
            if self.integer and plan.cg < k:
                results.append(self._integer_groups(m64(), plan, h, ly.groups))
                continue
            if self._two_level(plan, k):
                results.append(self._two_level_groups(m64(), plan, h, ly.groups))
                continue
            # round to nearest without a Hessian (`rtn`, `weight_error`) works on chunks of
            # the float32 matrix in float64: the same numbers without a float64 copy of a
            # large layer (vgg16's 25088 x 4096: 820 MB of fresh pages, 4 s on the VM of
            # the README's tables)
            plain = self.method == "rtn" and h is None
            m = m32 if plain else m64()
            q, s, z = self._codes(m, plan, h, ly.groups)
            err = _error(m, q, s, z, plan, h, ly.groups)
            results.append(Quantised(q, s, z, plan, err))
        best = min(results, key=lambda r: r.error)
        best.candidates = {r.plan.per: r.error for r in results}
        return best

    def _codes(self, m: np.ndarray, plan: Plan, h: np.ndarray | None, groups: int,
               snap: Callable | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.method == "rtn":
            if h is not None and plan.rg == 1 and self.scheme.kind != "binary":
                return rtn_output(m, h, self.scheme, plan.cg)
            return rtn(m, self.scheme, plan.rg, plan.cg)
        n, k = m.shape
        q, s, z = gptq(m.reshape(groups, n // groups, k), h, self.scheme, plan.rg, plan.cg,
                       self.damp, snap)
        return q.reshape(n, k), s.reshape(-1, s.shape[-1]), z.reshape(-1, z.shape[-1])

    def _integer_groups(self, m: np.ndarray, plan: Plan, h: np.ndarray | None,
                        groups: int) -> Quantised:
        """Groups along K for the integer path: each group scale is base[n] * mult[n, g]
        with integer multipliers (`quantizer.group_mult_max`), fitted, then snapped."""
        k = m.shape[1]
        m_max = group_mult_max(k, self.scheme)
        base = rtn(m, self.scheme, plan.rg, plan.cg)[1].max(axis=1, keepdims=True) / m_max
        snap = (lambda s, _: base.reshape(s.shape) * snap_scales(s, base.reshape(s.shape),
                                                                 m_max))
        q, s, z = self._codes(m, plan, h, groups, snap)
        mult = snap_scales(s, base, m_max)
        s = base * mult
        if self.method == "rtn":
            q = requantise(m, s, z, self.scheme, plan.rg, plan.cg)
        err = _error(m, q, s, z, plan, h, groups)
        return Quantised(q, base, z[:, :1], plan, err, mult=mult)

    def _two_level(self, plan: Plan, k: int) -> bool:
        return self.scale_format == "u8" and not self.integer and plan.per == "oc" and \
            plan.cg < k

    def _two_level_groups(self, m: np.ndarray, plan: Plan, h: np.ndarray | None,
                          groups: int) -> Quantised:
        """Two-level block scales: d per row and super-block from the fitted scales (RTN's,
        or for GPTQ a round-to-nearest fit), each block's scale snapped to d * u8, the
        codes chosen against the snapped scales."""
        if self.method == "rtn":
            _, s, z = self._codes(m, plan, h, groups)
            d = super_scales(s)
            s = snap_two_level(s, d)
            q = requantise(m, s, z, self.scheme, plan.rg, plan.cg)
        else:
            d = super_scales(rtn(m, self.scheme, plan.rg, plan.cg)[1] * GPTQ_HEADROOM)
            q, s, z = self._codes(m, plan, h, groups, lambda b, j: snap_two_level(
                b.reshape(-1, 1), d, j).reshape(b.shape))
        err = _error(m, q, s, z, plan, h, groups)
        return Quantised(q, s, z, plan, err, two_level=True)

    def _entry(self, graph: Graph, ly: Layer, r: Quantised) -> dict:
        return {"layer": ly.name, "op": ly.op, "weight": list(graph.values[ly.weight].shape),
                "scheme": self.scheme.describe(), "per": r.plan.per,
                "scales": "u8 x fp16" if r.two_level else "fp16" if not self.integer
                else "base x mult" if r.mult is not None else "fp32",
                "block": [r.plan.rg, r.plan.cg], "method": self.method,
                "error": round(r.error, 6),
                "candidates": {k: round(v, 6) for k, v in r.candidates.items()}}


def _error(m: np.ndarray, q: np.ndarray, s: np.ndarray, z: np.ndarray, plan: Plan,
           h: np.ndarray | None, groups: int) -> float:
    if h is None:
        return weight_error(m, q, s, z, plan.rg, plan.cg)
    m_hat = dequantize(q, s, z, plan.rg, plan.cg)
    n, k = m.shape
    return output_error(m.reshape(groups, n // groups, k), m_hat.reshape(groups, n // groups, k),
                        h)


# ---- the IR rewrite -----------------------------------------------------------------------
def param_layout(ly: Layer, shape: tuple[int, ...], p: np.ndarray, plan: Plan,
                 taps: int) -> tuple[np.ndarray, int, int]:
    """Block parameters p [N/rg, K/cg] in the weight's layout for etch.Dequant: (array of
    the weight's rank, group_axis, group_size)."""
    rank = len(shape)
    n_ax, k_ax = ly.n_axis(rank), ly.k_axis(rank)
    kc = plan.cg // taps  # input channels per block
    target = [1] * rank
    target[n_ax], target[k_ax] = p.shape
    arr = (p if n_ax < k_ax else p.T).reshape(target)
    if plan.rg > 1 and p.shape[0] > 1:
        return arr, n_ax, plan.rg
    if kc > 1 and p.shape[1] > 1:
        return arr, k_ax, kc
    return arr, 0, 0


def _rewrite(graph: Graph, ly: Layer, r: Quantised, scheme: Scheme) -> str:
    """Add Q, S, Z and the etch.Dequant node before the layer; returns the Dequant output."""
    wv = graph.values[ly.weight]
    taps = ly.taps(wv.shape)
    k = r.q.shape[1]
    if r.mult is None:
        s_arr, axis, size = param_layout(ly, wv.shape, r.s, r.plan, taps)
        z_arr, _, _ = param_layout(ly, wv.shape, r.z, r.plan, taps)
    else:  # per-channel base scale; the group structure is in the integer multipliers
        s_arr, _, _ = param_layout(ly, wv.shape, r.s, Plan("oc", 1, k), taps)
        z_arr = np.zeros((1,) * len(wv.shape))
        m_arr, axis, size = param_layout(ly, wv.shape, r.mult, r.plan, taps)
    signed = scheme.dtype == "int8"
    qp = QuantParams(s_arr.astype(np.float32), z_arr.astype(scheme.dtype), scheme.bits, signed,
                     ly.n_axis(len(wv.shape)) if r.plan.per == "oc" else ly.k_axis(len(wv.shape)),
                     size or None, scheme.kind)
    q = ly.unmatrix(r.q, wv.shape).astype(scheme.dtype)
    qv = graph.add_value(Value(graph.fresh(f"{ly.weight}_q"), wv.shape, scheme.dtype, q, qp))
    inputs = [qv.name, graph.add_const(f"{ly.weight}_scale", qp.scale).name]
    if np.any(z_arr):
        inputs.append(graph.add_const(f"{ly.weight}_zero", qp.zero_point).name)
    if r.mult is not None:
        inputs += ["", graph.add_const(f"{ly.weight}_mult", m_arr.astype(np.int32)).name]
    out = graph.add_value(Value(graph.fresh(f"{ly.weight}_dq"), wv.shape, "float32"))
    attrs = {"group_axis": axis, "group_size": size, "bits": scheme.bits, "kind": scheme.kind}
    index = graph.nodes.index(ly.node)
    graph.add_node(Node("etch.Dequant", inputs, [out.name], attrs, f"{ly.name}_dequant"), index)
    return out.name
