"""QuantizeActivations: the float graph (weights already quantised) -> the integer graph.

Every activation a node reads or writes in integer form is int8 (uint8 where an imported
model says so), per tensor: x = s (q - z), with (s, z) from calibration ranges (min/max, or
a two-sided percentile) covering 0, or from the model's own QuantizeLinear parameters.
The graph is rebuilt node by node (`passes.int_lowering`; the rules are in
`passes.int_rules` and `passes.int_tables`):

- Conv/Gemm/MatMul with symmetric per-channel (or per-tensor) weight codes from
  etch.Dequant -> etch.QConv / etch.QGemm (int32, bias folded in at scale s_x s_w)
  -> etch.Requantize; a following chain of per-channel bias Add/Sub, positive Mul/Div and
  one Relu/Clip is absorbed (the bias into the int32 bias, the scales into the multiplier,
  the clamp into the saturation bounds). MatMul of two activations (attention) -> QGemm.
- Add of two integer activations -> etch.QAdd (+ a following Relu/Clip as its bounds); with
  `products` (cpu, edge, ref: the TVM targets build it) Mul of two -> etch.QMul (a
  squeeze-and-excitation gate).
- Relu/Clip of an integer activation -> etch.Clamp (same scale).
- MaxPool and data movement (Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity,
  Gather with constant indices) run on the integers unchanged; so does Concat, whose
  inputs and output calibration gives one shared range (`int_rules.concat_groups`: TFLite's rule for concatenation), so that
  the branches' kernels requantise straight to the concatenated tensor's parameters; GlobalAveragePool, ReduceMean over the spatial axes and
  AveragePool without padding -> etch.QSumPool -> etch.Requantize (1/count in the multiplier).
- any region of elementwise float ops with one integer input and scalar constants (Sigmoid,
  Tanh, the Erf GELU, x * 0.5, ...) -> etch.Table, 256 entries built at compile time by
  running the region's own reference ops on the 256 input levels; with `channel_tables`
  (cpu, edge, ref) also one with per-channel constants (a BatchNorm + ReLU after a Concat,
  as in DenseNet) -> etch.ChannelTable, 256 entries per channel.
- LayerNormalization with constant scale/bias -> etch.QLayerNorm, Softmax -> etch.QSoftmax
  (`passes.int_layernorm`, `passes.int_softmax`: exact integer row ops); an Add of an
  integer activation and a causal mask constant read only by a Softmax -> one masked
  etch.QSoftmax; an Add of an integer activation and another finite constant (a position
  embedding) -> etch.QAdd with the constant's int8 codes; Concat of integer activations
  and constants (a class token, quantised to the output's parameters) on the integers.
- everything else (an Add with a float operand, ...) runs in float on the host, reading
  DequantizeLinear of integer inputs; an integer consumer of a float value reads
  QuantizeLinear of it. Graph inputs are quantised, outputs dequantised,
  keeping their names.

Each node gets attrs["placement"] = "accel" (integer) or "host" (float and Q/DQ), and
graph.metadata["etch.placement"] summarises them (JSON). Integer values carry Value.quant;
int32 accumulators carry their real scale (per channel), which `compiler.qdq_export` uses.

Preconditions: weights quantised by QuantizeWeights (integer=True) or imported QDQ weights;
calibration inputs (`calib`, a path or dict) for every activation whose scale the model
does not give (etch has no default data for an arbitrary model: EtchError naming the first
such value). Not fused yet (etch.Fused nodes run on the host).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Graph
from passes import calibrate
from passes.base import Pass
from passes.int_layernorm import layer_norm
from passes.int_lowering import Lowering, Rule, act_params
from passes.int_rules import PRODUCT, RULES, concat_groups, given_params
from passes.int_softmax import masked_softmax, softmax
from passes.int_tables import TableRule

Calib = str | Mapping[str, np.ndarray] | None


class QuantizeActivations(Pass):
    """Build the integer graph (int8 activations, integer kernels, host fallbacks)."""

    name = "quantize_activations"

    def __init__(self, calib: Calib, method: str = "minmax", percentile: float = 99.99,
                 channel_tables: bool = False, products: bool = False) -> None:
        if method not in ("minmax", "percentile"):
            raise EtchError(f"activation calibration {method!r}: choose minmax or percentile")
        self.calib, self.method, self.percentile = calib, method, percentile
        self.channel_tables = channel_tables  # etch.ChannelTable (`int_tables`): TVM targets
        self.products = products  # etch.QMul: TVM targets

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        # Without calibration data, every activation must take its scale from the model
        # (an imported QDQ model): `Lowering.params` says which one does not.
        ranges = self._ranges(graph) if self.calib is not None else {}
        rules = {**RULES, "LayerNormalization": layer_norm, "Softmax": softmax,
                 "Add": first_of(masked_softmax, RULES["Add"]),
                 **({"Mul": PRODUCT} if self.products else {})}
        lowered = Lowering(graph, ranges, rules, TableRule(graph, self.channel_tables),
                           given_params(graph)).build()
        lowered.metadata["etch.placement"] = json.dumps(summary(lowered))
        return lowered, True

    def _ranges(self, graph: Graph) -> dict[str, tuple[float, float]]:
        names = {o for n in graph.nodes for o in n.outputs if o} | set(graph.inputs)
        names = {n for n in names if np.dtype(graph.values[n].dtype).kind == "f"}
        stats = calibrate.RangeStats(names, keep_samples=self.method == "percentile")
        calibrate.run_all(graph, calibrate.batches(graph, calibrate.load(self.calib)), stats)
        pct = self.percentile if self.method == "percentile" else None
        ranges = {n: stats.range(n, pct) for n in names if n in stats.lo}
        for group in concat_groups(graph):  # one range: Concat runs on the integers
            known = [ranges[v] for v in group if v in ranges]
            if len(known) == len(group):
                united = (min(lo for lo, _ in known), max(hi for _, hi in known))
                ranges.update(dict.fromkeys(group, united))
        return ranges


def first_of(*rules: Rule) -> Rule:
    """A rule trying `rules` in order (the first that applies emits)."""
    return lambda lw, node: any(rule(lw, node) for rule in rules)


def summary(graph: Graph) -> dict:
    """Op counts per placement and the host nodes by name."""
    out: dict = {"accel": {}, "host": {}, "host_nodes": []}
    for n in graph.nodes:
        where = n.attrs.get("placement", "host")
        out[where][n.op] = out[where].get(n.op, 0) + 1
        if where == "host" and n.op not in ("QuantizeLinear", "DequantizeLinear"):
            out["host_nodes"].append(n.name)
    return out


__all__ = ["QuantizeActivations", "act_params", "summary"]
