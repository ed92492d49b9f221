"""`etch demo` / `make demo`: the whole path on the zoo's digits model.

Builds the model (cached), compiles it for every configuration in `CONFIGS`, runs each
artifact on the digits test split and prints one table: configuration, passes applied, max
error vs ONNX Runtime, top-1 accuracy, latency, artifact size. A configuration whose target
cannot be built or run on this machine gets a row saying why instead of numbers.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import EtchError


@dataclass(frozen=True)
class Config:
    label: str
    target: str
    options: dict[str, Any] = field(default_factory=dict)
    runs_here: Callable[[], str | None] = lambda: None  # None, or why it cannot run here
    note: str = ""


def _no_gpu() -> str | None:
    try:
        import tvm

        return None if tvm.cuda(0).exist else "built only: no CUDA device here"
    except Exception as e:  # noqa: BLE001 -- a missing driver shows up as many kinds of error
        return f"built only: {type(e).__name__}"


def _no_qemu() -> str | None:
    return None if shutil.which("qemu-aarch64") else "built only: qemu-aarch64 not installed"


CONFIGS = [
    Config("ref (numpy, float)", "ref"),
    Config("cpu (TVM llvm, float)", "cpu"),
    Config("cuda (TVM, float)", "cuda", runs_here=_no_gpu),
    Config("edge (aarch64, qemu)", "edge", runs_here=_no_qemu,
           note="latency is qemu-user emulation plus a process start, not a board"),
    Config("ref W8A8 int", "ref", {"bits": 8, "int": True, "calib": "@digits"}),
    Config("ref W4A8 int", "ref", {"bits": 4, "int": True, "calib": "@digits"}),
    Config("cpu W4 weight-only", "cpu", {"bits": 4, "group_size": 16}),
    Config("cpu W8A8 --int", "cpu", {"bits": 8, "int": True, "calib": "@digits"}),
    Config("verilog W8A8 engine", "verilog", {"bits": 8, "calib": "@digits"},
           note="simulated (Verilator): latency is one simulator run per call; "
                "`etch sim` prints cycles"),
]


@dataclass
class Row:
    label: str
    passes: str = ""
    max_err: float | None = None
    accuracy: float | None = None
    latency_ms: float | None = None
    size_kb: float | None = None
    note: str = ""


def _calib_file(model: str, tmp: Path) -> str:
    from models import zoo

    x_train, _, _, _ = zoo.digits_split()
    name = zoo.model_input_name(model)
    path = tmp / "calib.npz"
    np.savez(path, **{name: zoo.digits_inputs(model, x_train[:64])})
    return str(path)


def _evaluate(cfg: Config, model: str, path: Path, tmp: Path) -> Row:
    from compiler import driver
    from models import accuracy, zoo

    options = dict(cfg.options)
    if options.get("calib") == "@digits":
        options["calib"] = _calib_file(model, tmp)
    row = Row(cfg.label, note=cfg.note)
    art = driver.compile(str(path), cfg.target, **options)
    saved = art.save(tmp / cfg.label.split()[0])
    row.passes = ",".join(p["name"] for p in art.manifest["passes"] if p["changed"]) or "-"
    row.size_kb = sum(f.stat().st_size for f in saved.rglob("*") if f.is_file()) / 1024
    why = cfg.runs_here()
    if why:
        row.note = why
        return row
    sample = dict(np.load(zoo.cache_file(model, "inputs.npz")))
    expected = dict(np.load(zoo.cache_file(model, "ort.npz")))
    got = art.run(sample)
    row.max_err = max(float(np.max(np.abs(got[k] - expected[k]))) for k in expected)
    row.accuracy = accuracy.evaluate(art.run, model)
    t0, n = time.perf_counter(), 50
    for _ in range(n):
        art.run(sample)
    row.latency_ms = (time.perf_counter() - t0) / n * 1e3
    return row


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def render(rows: list[Row], model: str, float_acc: float, ort_acc: float) -> str:
    lines = [(f"etch demo: {model}  (float PyTorch accuracy {float_acc:.4f}, "
              f"ONNX Runtime {ort_acc:.4f})"),
             (f"{'configuration':<24}{'max|err| vs ORT':>16}{'top-1':>8}{'latency ms':>12}"
              f"{'size KB':>10}  passes / note")]
    for r in rows:
        lines.append(f"{r.label:<24}{_fmt(r.max_err, '.2e'):>16}{_fmt(r.accuracy, '.4f'):>8}"
                     f"{_fmt(r.latency_ms, '.3f'):>12}{_fmt(r.size_kb, '.1f'):>10}  "
                     f"{r.passes}{'  ' + r.note if r.note else ''}")
    return "\n".join(lines)


def main(model: str = "digits_mlp") -> int:
    from models import accuracy, zoo

    if model not in zoo.MODELS or zoo.MODELS[model].task != "digits":
        raise EtchError(f"the demo runs a digits model; choose one of "
                        f"{[n for n, m in zoo.MODELS.items() if m.task == 'digits']}")
    print(f"building {model} ...", flush=True)
    path = zoo.model_path(model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="etch-demo-") as tmp:
        for cfg in CONFIGS:
            print(f"  {cfg.label} ...", flush=True)
            try:
                rows.append(_evaluate(cfg, model, path, Path(tmp)))
            except EtchError as e:
                rows.append(Row(cfg.label, note=f"not available: {e}"))
            except Exception as e:  # noqa: BLE001 -- one backend's bug must not hide the rest
                rows.append(Row(cfg.label, note=f"FAILED: {type(e).__name__}: {e}"[:160]))
    print(render(rows, model, zoo.float_accuracy(model), accuracy.ort_accuracy(model)))
    return 0
