"""The quantisation passes' reports in words, for `etch compile --explain`.

The passes leave JSON in `graph.metadata` (exported as ONNX metadata_props too):
- "etch.quant.weights" (QuantizeWeights): per layer, scheme, layout, relative error;
- "etch.rearrange" (RearrangeChannels): per permuted channel space, per-group errors;
- "etch.placement" (QuantizeActivations): op counts on the accelerator and on the host;
- "etch.int_groups" (FuseInteger): the output-unit groups by pattern, and the integer
  anchors left alone with the reason;
- "etch.qadd_linear" (LinearQAdd): residual adds with and without a proven int32
  straight-line form;
- "etch.lut" (LutLowering): per layer, the kernel (look-up or dequantising), why, layout.
`explain(metadata)` turns whichever are present into lines of text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from passes import lut_lowering


def explain(metadata: Mapping[str, str]) -> str:
    """A readable summary of the quantisation reports in `metadata` ("" when none)."""
    lines: list[str] = []
    if "etch.quant.weights" in metadata:
        lines += _weights(json.loads(metadata["etch.quant.weights"]))
    if "etch.rearrange" in metadata:
        lines += _rearrange(json.loads(metadata["etch.rearrange"]))
    if "etch.placement" in metadata:
        lines += _placement(json.loads(metadata["etch.placement"]))
    if "etch.int_groups" in metadata:
        lines += _groups(json.loads(metadata["etch.int_groups"]))
    if "etch.qadd_linear" in metadata:
        counts = json.loads(metadata["etch.qadd_linear"])
        lines.append(f"residual adds: {counts['linear']} as one int32 multiply-add line "
                     f"(proven on every input pair), {counts['general']} by the general "
                     f"three-step requantisation")
    lines += lut_lowering.explain(metadata)
    return "\n".join(lines)


def _weights(rows: list[dict]) -> list[str]:
    out = [f"{'weights':<28}{'scheme':>8}{'per':>5}{'block':>10}{'method':>7}{'rel err':>10}"]
    for r in rows:
        block = "x".join(str(b) for b in r["block"])
        out.append(f"{r['layer']:<28}{r['scheme']:>8}{r['per']:>5}{block:>10}{r['method']:>7}"
                   f"{r['error']:>10.5f}")
    return out


def _rearrange(spaces: list[dict]) -> list[str]:
    out = [f"rearranged {len(spaces)} channel space(s)"]
    for s in spaces:
        out.append(f"  {s['channels']} channels (blocks of {s['block']}, objective "
                   f"{s['objective']}): {', '.join(s['touched'])}")
        for ly in s["layers"]:
            before = " ".join(f"{x:.4f}" for x in ly["groups_before"])
            after = " ".join(f"{x:.4f}" for x in ly["groups_after"])
            out.append(f"    {ly['layer']}: error {ly['error_before']:.5f} -> "
                       f"{ly['error_after']:.5f}; groups [{before}] -> [{after}]")
    return out


def _placement(p: dict) -> list[str]:
    def counts(d: dict) -> str:
        return ", ".join(f"{op} x{k}" for op, k in sorted(d.items())) or "none"

    out = [f"accelerator: {counts(p['accel'])}", f"host: {counts(p['host'])}"]
    if p["host_nodes"]:
        out.append(f"host nodes: {', '.join(p['host_nodes'])}")
    return out


def _groups(report: dict) -> list[str]:
    groups = report["groups"]
    out = [f"integer groups (etch.QFused, one output-unit pass each): {sum(groups.values())}"]
    out += [f"  {pattern} x{k}" for pattern, k in sorted(groups.items())]
    out += [f"  not grouped: {name}: {reason}" for name, reason in report["ungrouped"]]
    return out
