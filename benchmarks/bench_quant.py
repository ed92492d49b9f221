"""Quantisation benchmark: accuracy and output error of etch's quantised models.

- digits models: top-1 test accuracy of the integer graph (WbA8: b-bit weights, int8
  activations) at W8A8, W4A8, W3A8, W2A8 and ternary-A8 (per output channel), and with
  groups of 16 input channels (integer group multipliers), round-to-nearest vs GPTQ, with and
  without channel rearrangement (which only matters with groups); weight-only grouped rows
  (float activations); next to float and ONNX Runtime's static QDQ quantisation
  (`quantize_static`, per-channel int8, over the same calibration images).
- tiny encoder/decoder: output SNR (dB) against float per setting (RTN vs GPTQ), on seeded
  N(0, 1) inputs (128 calibration samples, 8 test samples); then the same models with
  outlier input channels injected into the weights that have a permutable K axis: SNR with
  and without rearrangement, and the per-layer quantisation error before/after
  rearrangement (4-bit, groups of 32).
Every etch number comes from `compiler.driver.compile(..., target="ref")` (the real pipeline)
run by the reference interpreter. Result: results/quant.json.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from compiler import driver, reference
from compiler.ir import Graph
from models import accuracy, zoo

DIGITS = ["digits_mlp", "digits_cnn"]
TRANSFORMERS = ["tiny_encoder", "tiny_decoder"]
CALIB_IMAGES = 200
TRANSFORMER_CALIB = 128  # samples of [T, d]: GPTQ needs rows >> K (1024) to beat RTN
INTEGER = [("W8A8", {"bits": 8}), ("W4A8", {"bits": 4}), ("W3A8", {"bits": 3}),
           ("W2A8", {"bits": 2}), ("ternary-A8", {"ternary": True}),
           ("W4A8 g16", {"bits": 4, "group_size": 16}), ("W3A8 g16", {"bits": 3, "group_size": 16}),
           ("W2A8 g16", {"bits": 2, "group_size": 16})]
WEIGHT_ONLY = [("W4 g16", {"bits": 4, "group_size": 16}), ("W3 g16", {"bits": 3, "group_size": 16}),
               ("W2 g16", {"bits": 2, "group_size": 16})]
TRANSFORMER_SETTINGS = [("W8A8", {"bits": 8, "int": True}), ("W4A8", {"bits": 4, "int": True}),
                        ("W4 g32", {"bits": 4, "group_size": 32}),
                        ("W3 g32", {"bits": 3, "group_size": 32}),
                        ("W2 g32", {"bits": 2, "group_size": 32})]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calib-images", type=int, default=CALIB_IMAGES,
                   help="digits training images used for calibration")


def run(args: argparse.Namespace) -> dict:
    names = getattr(args, "models", None) or DIGITS + TRANSFORMERS
    n_calib = getattr(args, "calib_images", CALIB_IMAGES)
    out: dict = {"digits": {}, "transformers": {}, "calib_images": n_calib}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            t0 = time.perf_counter()
            if name in DIGITS:
                out["digits"][name] = _digits(name, Path(tmp), n_calib)
            elif name in TRANSFORMERS:
                out["transformers"][name] = _transformer(name, Path(tmp))
            else:
                continue
            (out["digits"].get(name) or out["transformers"][name])["seconds"] = round(
                time.perf_counter() - t0, 1)
    out["goals"] = _goals(out["digits"])
    return out


# ---- digits -----------------------------------------------------------------------------------
def _digits(name: str, tmp: Path, n_calib: int) -> dict:
    path = zoo.model_path(name)
    x_train = zoo.digits_inputs(name, zoo.digits_split()[0][:n_calib])
    calib = tmp / f"{name}.calib.npz"
    np.savez(calib, input=x_train)
    float_graph = driver.compile(str(path), "ref").graph
    result = {"float": _accuracy(float_graph, name),
              "ort_static_w8a8": round(accuracy.evaluate(accuracy.ort_runner(  # as etch's
                  _ort_static(path, x_train, tmp)), name), 4),
              "settings": []}
    rows = [(label, dict(kw, int=True)) for label, kw in INTEGER] + WEIGHT_ONLY
    for label, kw in rows:
        for method in ("rtn", "gptq"):
            for rearrange in (False, True):
                art = driver.compile(str(path), "ref", calib=str(calib), quant=method,
                                     rearrange=rearrange, **kw)
                result["settings"].append({"setting": label, "method": method,
                                           "rearrange": rearrange,
                                           "accuracy": _accuracy(art.graph, name)})
    return result


def _accuracy(graph: Graph, name: str) -> float:
    return round(accuracy.evaluate(lambda feeds: reference.run(graph, feeds), name), 4)


def _ort_static(path: Path, x: np.ndarray, tmp: Path) -> Path:
    """ORT's static QDQ quantisation (int8 activations, per-channel int8 weights)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({"input": x[i:i + 1]} for i in range(len(x)))

        def get_next(self) -> dict | None:
            return next(self.it, None)

    out = tmp / f"{path.stem}.ort_qdq.onnx"
    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(str(path), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    return out


def _goals(digits: dict) -> dict:
    goals = {}
    for name, r in digits.items():
        goals[name] = {"w4a8_within_1pt_of_float": _best(r, "W4A8") >= r["float"] - 0.01,
                       "w8a8_not_worse_than_ort": _best(r, "W8A8") >= r["ort_static_w8a8"]}
    return goals


def _best(r: dict, label: str) -> float:
    return max(s["accuracy"] for s in r["settings"] if s["setting"] == label)


# ---- transformers ------------------------------------------------------------------------------
def _transformer(name: str, tmp: Path) -> dict:
    import onnx

    from compiler import onnx_export

    path = zoo.model_path(name)
    base = driver.compile(str(path), "ref", fuse=False).graph
    inp = base.inputs[0]
    shape = base.values[inp].shape
    rng = np.random.default_rng(0)
    calib = tmp / f"{name}.calib.npz"
    np.savez(calib, **{inp: rng.normal(size=(TRANSFORMER_CALIB, *shape[1:]))
                       .astype(np.float32)})
    tests = [rng.normal(size=shape).astype(np.float32) for _ in range(8)]
    result = {"settings": _snr_rows(str(path), base, inp, tests, calib, TRANSFORMER_SETTINGS,
                                    (False,))}
    spiked = tmp / f"{name}.outliers.onnx"
    onnx.save(onnx_export.export_model(inject_outliers(base, rng)), str(spiked))
    spiked_graph = driver.compile(str(spiked), "ref", fuse=False).graph
    rows = [("W4 g32", {"bits": 4, "group_size": 32}), ("W3 g32", {"bits": 3, "group_size": 32})]
    result["outliers"] = {"settings": _snr_rows(str(spiked), spiked_graph, inp, tests, calib,
                                                rows, (False, True))}
    art = driver.compile(str(spiked), "ref", bits=4, group_size=32, rearrange=True)
    result["outliers"]["layers"] = _layer_errors(art.graph)
    return result


def _snr_rows(path: str, base: Graph, inp: str, tests: list[np.ndarray], calib: Path,
              rows: list, rearranges: tuple[bool, ...]) -> list:
    want = [reference.run(base, {inp: x}) for x in tests]
    out = []
    for label, kw in rows:
        for method in ("rtn", "gptq"):
            for rearrange in rearranges:
                g = driver.compile(path, "ref", calib=str(calib), quant=method,
                                   rearrange=rearrange, **kw).graph
                got = [reference.run(g, {inp: x}) for x in tests]
                out.append({"setting": label, "method": method, "rearrange": rearrange,
                            "snr_db": round(snr(want, got), 2)})
    return out


def snr(want: list[dict], got: list[dict]) -> float:
    """10 log10(sum y^2 / sum (y - y_hat)^2) over every output of every sample."""
    num = sum(float(np.square(w[k].astype(np.float64)).sum()) for w in want for k in w)
    den = sum(float(np.square(w[k].astype(np.float64) - g[k]).sum()) for w, g in zip(want, got)
              for k in w)
    return float(10 * np.log10(num / max(den, 1e-30)))


def inject_outliers(graph: Graph, rng: np.random.Generator, count: int = 4,
                    factor: float = 16.0) -> Graph:
    """A copy whose consumer weights in permutable channel spaces have `count` input
    channels scaled by `factor` (the outlier channels of LLM weights, in miniature)."""
    from passes.channel_spaces import analyse

    g = graph.copy()
    for space in analyse(g).values():
        for e in space.edits:
            if e.kind != "consumer" or e.index != 1:
                continue
            name = e.node.inputs[1]
            w = g.values[name].data.copy()
            picks = rng.choice(w.shape[e.axis], count, replace=False)
            idx = [slice(None)] * w.ndim
            idx[e.axis] = picks
            w[tuple(idx)] *= factor
            e.node.inputs[1] = g.add_const(f"{name}_outliers", w).name
    g.prune()
    return g


def _layer_errors(graph: Graph) -> list[dict]:
    import json

    rows = []
    for space in json.loads(graph.metadata.get("etch.rearrange", "[]")):
        for layer in space["layers"]:
            before, after = layer["error_before"], layer["error_after"]
            rows.append({"layer": layer["layer"], "error_before": before, "error_after": after,
                         "reduction": round(1 - after / before, 3) if before else 0.0})
    return rows


# ---- the table -----------------------------------------------------------------------------------
def table(result: dict) -> str:
    lines = []
    for name, r in result["digits"].items():
        lines.append(f"{name}: top-1 float {r['float']:.4f}, ORT static W8A8 "
                     f"{r['ort_static_w8a8']:.4f}  ({r['seconds']} s)")
        lines += _grid(r["settings"], "accuracy", "{:.4f}")
    for name, r in result["transformers"].items():
        lines.append(f"{name}: output SNR (dB) vs float  ({r['seconds']} s)")
        lines += _grid(r["settings"], "snr_db", "{:.2f}")
        lines.append(f"{name} with injected outlier channels: SNR (dB)")
        lines += _grid(r["outliers"]["settings"], "snr_db", "{:.2f}")
        lines.append(f"  {'layer':<24}{'err before':>12}{'err after':>12}{'reduction':>11}")
        lines += [f"  {x['layer']:<24}{x['error_before']:>12.5f}{x['error_after']:>12.5f}"
                  f"{x['reduction']:>11.1%}" for x in r["outliers"]["layers"]]
    for name, g in result.get("goals", {}).items():
        lines.append(f"goals {name}: " + ", ".join(f"{k}={v}" for k, v in g.items()))
    return "\n".join(lines)


def _grid(rows: list[dict], key: str, fmt: str) -> list[str]:
    cols = sorted({(r["method"], r["rearrange"]) for r in rows}, key=lambda c: (c[0] != "rtn",
                                                                                  c[1]))
    head = "".join(f"{m + ('+rearr' if re else ''):>14}" for m, re in cols)
    lines = [f"  {'setting':<14}{head}"]
    for label in dict.fromkeys(r["setting"] for r in rows):
        vals = {(r["method"], r["rearrange"]): r[key] for r in rows if r["setting"] == label}
        lines.append(f"  {label:<14}" + "".join(f"{fmt.format(vals[c]):>14}" for c in cols))
    return lines
