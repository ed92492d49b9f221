"""`etch bench`: run benchmark modules, write their JSON to benchmarks/results/, print tables.

Each module in `BENCHMARKS` has `add_arguments(parser)` (optional), `run(args) -> dict` and
`table(result) -> str`; its result goes to results/<name>.json (written atomically), unless
it says it was "skipped" (nothing measured on this machine).
Adding a benchmark is adding one line here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from compiler.errors import EtchError

RESULTS = Path(__file__).resolve().parent / "results"
# result name -> module with run(args) -> dict and table(result) -> str
BENCHMARKS: dict[str, str] = {
    "tvm_cpu": "benchmarks.bench_tvm",
    "quant": "benchmarks.bench_quant",
    "lut": "benchmarks.bench_lut",
    "arrays": "benchmarks.bench_arrays",
    "conformance": "benchmarks.bench_conformance",
    "verilog": "benchmarks.bench_verilog",
    "cnn": "benchmarks.bench_cnn",
    "hardwired": "benchmarks.bench_hardwired",
    "cuda": "benchmarks.bench_cuda",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="etch bench", description="Run etch's benchmarks.")
    p.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of "
                                            f"{', '.join(BENCHMARKS)})")
    p.add_argument("--models", nargs="+", help="zoo models to run (default: each benchmark's)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for every runtime")
    p.add_argument("--seconds", type=float, default=0.3,
                   help="time per latency round (more: steadier numbers)")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where the JSON goes")
    for name, module in BENCHMARKS.items():  # each benchmark's own options, in its group
        add = getattr(importlib.import_module(module), "add_arguments", None)
        if add:
            add(p.add_argument_group(f"{name} benchmark"))
    return p


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(argv or []))
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        raise EtchError(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    for name in args.names or list(BENCHMARKS):
        module = importlib.import_module(BENCHMARKS[name])
        result = module.run(args)
        print(module.table(result))
        if "skipped" in result:  # nothing measured here: the last real result stays
            continue
        path = args.out_dir / f"{name}.json"
        write_json(path, result)
        print(f"wrote {path}")
    return 0
