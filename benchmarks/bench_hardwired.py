"""`etch bench hardwired`: constant matrix-vector products as logic, side by side.

For each integer matrix (the dense-equivalent layers of zoo models quantised to 4 bits,
and seeded random int4/int8 matrices of 64x64 and 128x128), y = W^T x over int8 inputs is
built three ways and measured in one run:
- plain CSD: every weight's CSD digits added per output, no sharing (the baseline);
- etch: CSD with greedy pairwise CSE (`backends/verilog/hardwired/cmvm.py`);
- da4ml 0.6 (`da4ml.cmvm.solve`, hls4ml's distributed-arithmetic optimiser), its Verilog from
  `da4ml.codegen.rtl.verilog`, unmodified; the design comes from da4ml's tracer
  (`da4ml_solve`: `cmvm.solve`'s own two-stage pipeline mis-sizes its stage-1 inputs);
plus etch's grouped (accumulate-then-multiply) neurons, adders only. Each design is
synthesised by the same Yosys flow (`backends.verilog.area.synth_area`, generic cells,
hierarchy kept, every instance counted). da4ml's output is one module instance per adder;
etch's netlists are printed as modules of `--part` (default `PART`) nodes. The granularity
matters to ABC, not only to its time: on rand int4 32x32 the same etch netlist synthesises
to 39,470 cells in 400-node modules (24 s of Yosys CPU), 38,847 in 50-node, 37,078 in
8-node (11 s) and 35,743 in 1-node modules (40 s: per-module overhead); ABC maps a small
adder cluster close to one full adder per bit, a large flat one worse. Goals: fewer cells
than da4ml on most matrices, >= 25% fewer adders than plain CSD.

Then the scale study (`benchmarks/hardwired_scale.py`): generation, lint, Verilator build
and one simulated batch of single int4 layers up to 1024x1024, time and peak memory per
stage, each stage in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from backends.verilog.area import synth_area
from backends.verilog.hardwired import cmvm, grouped, printer
from backends.verilog.hardwired.netlist import K, Netlist
from benchmarks import hardwired_scale
from passes import hardwired_csd

PART = 8
RANDOM = [("rand int4 64x64", 4, 64), ("rand int8 64x64", 8, 64), ("rand int4 128x128", 4, 128),
          ("rand int8 128x128", 8, 128)]
ZOO = ["digits_mlp", "digits_cnn", "resnet_block"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="hardwired: two matrices and layers up to 256x256 only")
    p.add_argument("--no-yosys", action="store_true", help="hardwired: adders only")
    p.add_argument("--no-scale", action="store_true", help="hardwired: skip the scale study")
    p.add_argument("--no-matrices", action="store_true",
                   help="hardwired: skip the matrix comparison (scale study only)")
    p.add_argument("--scale", type=int, nargs="+", default=[64, 256, 512, 1024],
                   help="hardwired: layer sizes of the scale study")
    p.add_argument("--scale-styles", nargs="+", default=["csd", "grouped/bitserial"],
                   choices=["csd", "grouped/bitserial"],
                   help="hardwired: neuron styles of the scale study")
    p.add_argument("--build-upto", type=int, default=None, metavar="N",
                   help="hardwired: scale layers larger than NxN stop after lint")
    p.add_argument("--cells-upto", type=int, default=None, metavar="WEIGHTS",
                   help="hardwired: run Yosys only on matrices of at most this many weights")
    p.add_argument("--part", type=int, default=PART, metavar="NODES",
                   help="hardwired: netlist nodes per printed module for Yosys (matrices)")
    p.add_argument("--no-plain-cells", action="store_true",
                   help="hardwired: synthesise etch and da4ml only (plain CSD: adders)")
    p.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                   help="hardwired: only the matrices whose label contains one of these")


def zoo_matrices(names: list[str] = ZOO) -> list[tuple[str, np.ndarray]]:
    """Integer weight matrices [K, N] of the zoo's dense and ungrouped conv layers at W4."""
    from compiler import driver
    from models import zoo
    from passes.plan_hardwired import effective_weights

    out = []
    for name in names:
        path = zoo.model_path(name)
        with tempfile.TemporaryDirectory() as tmp:
            calib = Path(tmp) / "calib.npz"
            x = np.load(zoo.model_path(name).with_suffix(".inputs.npz"))
            np.savez(calib, **{k: x[k] for k in x.files})
            g = driver.compile(str(path), "ref", bits=4, int=True, calib=str(calib),
                               fuse=False).graph  # anchors, not etch.QFused groups
        for node in g.nodes:
            if node.op == "etch.QGemm" and g.const(node.inputs[1]) is not None:
                out.append((f"{name}/{node.name}", effective_weights(g, node)))
            elif node.op == "etch.QConv" and int(node.attrs.get("group", 1)) == 1:
                w = g.const(node.inputs[1]).astype(np.int64)
                out.append((f"{name}/{node.name}", w.reshape(w.shape[0], -1).T.copy()))
    return out


def random_matrices() -> list[tuple[str, np.ndarray]]:
    out = []
    for label, bits, n in RANDOM:
        lim = 1 << (bits - 1)
        out.append((label, np.random.default_rng(n + bits).integers(-lim, lim, (n, n))))
    return out


def etch_netlist(w: np.ndarray, method: str) -> tuple[Netlist, float, float]:
    """The netlist of one method, its wall and CPU seconds (CPU: comparable under load)."""
    t, c = time.perf_counter(), time.process_time()
    net = Netlist("cmvm")
    net.add_input("x", 8, w.shape[0])
    xs = [net.field("x", k) for k in range(w.shape[0])]
    if method == "grouped":
        outs = grouped.build(net, xs, w)
    else:
        outs = cmvm.build(net, xs, w, method)
    net.add_output("y", 32, outs)
    return net, time.perf_counter() - t, time.process_time() - c


def etch_files(net: Netlist, work: Path, part: int = PART) -> list[Path]:
    texts = printer.render_parts(net, "cmvm", "// bench", net.partition(part))
    files = []
    for name, text in texts.items():
        files.append(work / f"{name}.v")
        files[-1].write_text(text)
    return files


# da4ml 0.6's `cmvm.solve` returns a two-stage pipeline (W = W0 @ W1) whose stage-1 inputs
# are declared with the intervals of stage 0's output operations *before* their output
# shifts and negations (out_shifts, out_negs), while the values passed are after them: its
# fixed-width forms (the Verilog, its own C++ interpreter `predict`) wrap, its float Python
# model does not. Minimal case, W = [[3, -5], [7, 2]], int8 inputs (-128, 127, 1):
# stage 0 emits 3x0 + 7x1 as (v << 2) with v in (-448, 448, 0.25); stage 1 declares its
# input (-448, 448, 0.25), so -1280 (x = [-128, -128]) reads back as -256
# (`tests/unit/test_bench_hardwired.py`). da4ml's tracing front end (the path hls4ml takes:
# `FixedVariableArray` @ W, then `comb_trace`) replays the solution on exact fixed-point
# variables and records one combinational stage with the right widths: the bench uses it.
DA4ML_INPUT_KIF = (1, 7, 0)  # int8: sign, 7 integer bits, no fraction


def da4ml_solve(w: np.ndarray):
    """da4ml's design of x @ W for int8 x: one CombLogic by its tracer (see above)."""
    from da4ml.trace import FixedVariableArray, comb_trace

    k = w.shape[0]
    s, i, f = DA4ML_INPUT_KIF
    inp = FixedVariableArray.from_kif(np.full(k, s), np.full(k, i), np.full(k, f))
    return comb_trace(inp, inp @ np.asarray(w).astype(np.float32))


def da4ml_solve_pipeline(w: np.ndarray, qint: tuple[float, float, float] = (-128.0, 127.0, 1.0)):
    """`da4ml.cmvm.solve` directly (the two-stage pipeline with the interval bug)."""
    from da4ml.cmvm import solve

    return solve(np.asarray(w).astype(np.float32), qintervals=[qint] * w.shape[0])


def da4ml_predict(sol, x: np.ndarray) -> np.ndarray:
    """da4ml's own C++ interpreter (fixed widths, like its Verilog), stage after stage."""
    y = np.asarray(x, dtype=np.float64)
    for stage in getattr(sol, "solutions", (sol,)):
        y = stage.predict(y)
    return y


def da4ml_design(w: np.ndarray, work: Path) -> tuple[dict, list[Path]]:
    """da4ml's design (`da4ml_solve`), its unmodified Verilog (`comb_logic_gen` and its
    source modules) under a `datop` wrapper; returns stats and files."""
    import da4ml.codegen.rtl.verilog as dv
    from da4ml.codegen.rtl.verilog import comb_logic_gen
    from da4ml.types import minimal_kif

    t, c = time.perf_counter(), time.process_time()
    sol = da4ml_solve(w)
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    files = [work / "stage0.v"]
    files[0].write_text(comb_logic_gen(sol, "stage0"))
    for f in sorted((Path(dv.__file__).parent / "source").glob("*.v")):
        if "lookup" not in f.name:  # table lookups are unused by a CMVM
            files.append(work / f.name)
            files[-1].write_text(f.read_text())
    in_bits = sum(sum(minimal_kif(q)) for q in sol.inp_qint)
    kifs = [minimal_kif(q) for q in sol.out_qint]
    files.append(work / "datop.v")
    files[-1].write_text(f"module datop(input [{in_bits - 1}:0] x, "
                         f"output [{sum(map(sum, kifs)) - 1}:0] y);\n"
                         "stage0 s0(.model_inp(x), .model_out(y));\nendmodule\n")
    adders = sum(1 for op in sol.ops if op.opcode in (0, 1))
    return {"cost": float(sol.cost), "adders": adders, "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2), "in_bits": in_bits // max(w.shape[0], 1),
            "out_widths": [sum(k) for k in kifs],
            "out_fractional_bits": [int(k[2]) for k in kifs]}, files


def yosys_eval(files: list[Path], top: str, x: np.ndarray, in_bits: int,
               out_widths: list[int]) -> np.ndarray | None:
    """The outputs of a combinational design for input rows `x` (Yosys `eval` after
    `proc; flatten`): port x packs K signed `in_bits` fields (element 0 lowest), port y
    the outputs of `out_widths` bits, signed. None where a bit is undefined (x)."""
    import subprocess

    from backends.verilog.area import yosys_cmd

    work = files[0].parent
    evals = []
    for row in x:
        bits = "".join(format(int(v) & ((1 << in_bits) - 1), f"0{in_bits}b") for v in row[::-1])
        evals.append(f"eval -set x {len(bits)}'b{bits} -show y")
    reads = "; ".join(f"read_verilog -sv {f.name}" for f in files)
    script = f"{reads}; hierarchy -top {top}; proc; flatten; opt_clean; " + "; ".join(evals)
    r = subprocess.run([*yosys_cmd(), "-p", script], cwd=work, capture_output=True, text=True,
                       check=False)
    results = [ln.split("'")[1].rstrip(".") for ln in r.stdout.splitlines()
               if ln.startswith("Eval result: \\y = ")]
    if r.returncode != 0 or len(results) != len(x):
        raise RuntimeError(f"yosys eval failed: {r.stderr[-300:]}")
    out = np.zeros((len(x), len(out_widths)), np.int64)
    for i, bits in enumerate(results):
        if "x" in bits:
            return None
        v = int(bits, 2)
        lsb = 0
        for j, wd in enumerate(out_widths):
            f = (v >> lsb) & ((1 << wd) - 1) if wd else 0
            out[i, j] = f - (1 << wd) if wd and f >> (wd - 1) else f
            lsb += wd
    return out


def computes_product(files: list[Path], top: str, w: np.ndarray, out_widths: list[int],
                     vectors: int = 6, in_bits: int = 8,
                     out_frac: list[int] | None = None) -> bool:
    """Whether the design's outputs equal x @ W on random and extreme int8 vectors (input
    fields of `in_bits` bits, sign-extended; output j read as its bits / 2^out_frac[j],
    da4ml's fixed-point outputs)."""
    rng = np.random.default_rng(0)
    k = w.shape[0]
    x = np.concatenate([rng.integers(-128, 128, (vectors, k)), np.full((1, k), -128),
                        np.full((1, k), 127)])
    got = yosys_eval(files, top, x, in_bits, out_widths)
    if got is None:
        return False
    if out_frac is not None:
        got = got.astype(object) * np.array([2 ** -f if f <= 0 else 0 for f in out_frac],
                                            dtype=object)
        if any(f > 0 for f in out_frac):
            return False  # an integer product has no fractional bits
    return bool(np.array_equal(np.asarray(got, dtype=np.int64), x @ w))


def measure(label: str, w: np.ndarray, yosys: bool, say, part: int = PART,
            plain_cells: bool = True) -> dict:
    """Adders (and cells) of plain CSD, etch CSE, grouped and da4ml for one matrix; with
    Yosys, also whether etch's and da4ml's Verilog compute x @ W (`computes_product`)."""
    row = {"matrix": label, "k": int(w.shape[0]), "n": int(w.shape[1]),
           "nonzero": int(np.count_nonzero(w)), "digits": hardwired_csd.count(w)}
    nets = {}
    for method in ("plain", "cse", "grouped"):
        net, sec, cpu = etch_netlist(w, method)
        nets[method] = net
        row[method] = {"adders": net.count(K.ADD), "seconds": round(sec, 2),
                       "cpu_seconds": round(cpu, 2)}
    with tempfile.TemporaryDirectory(prefix="etch-bench-hw-") as tmp:
        say(f"{label}: da4ml")
        row["da4ml"], files = da4ml_design(w, Path(tmp))
        if not yosys:
            row["da4ml"].pop("out_widths")
        if yosys:
            say(f"{label}: yosys da4ml")
            t = time.perf_counter()
            row["da4ml"]["cells"] = synth_area(files, "datop", luts=False)["cells"]
            row["da4ml"]["yosys_seconds"] = round(time.perf_counter() - t, 1)
            row["da4ml"]["exact"] = computes_product(
                files, "datop", w, row["da4ml"].pop("out_widths"),
                in_bits=row["da4ml"]["in_bits"], out_frac=row["da4ml"]["out_fractional_bits"])
            for method in ("plain", "cse") if plain_cells else ("cse",):
                say(f"{label}: yosys {method}")
                work = Path(tmp) / method
                work.mkdir()
                t = time.perf_counter()
                efiles = etch_files(nets[method], work, part)
                row[method]["cells"] = synth_area(efiles, "cmvm", luts=False)["cells"]
                row[method]["yosys_seconds"] = round(time.perf_counter() - t, 1)
                row[method]["exact"] = computes_product(efiles, "cmvm", w,
                                                        [32] * w.shape[1])
    return row


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load": os.getloadavg()[0], "python": platform.python_version()}


def run(args: argparse.Namespace) -> dict:
    say = print
    if args.no_matrices:
        mats = []
    elif args.quick:
        mats = zoo_matrices()[:1] + random_matrices()[:1]
    else:
        mats = zoo_matrices() + random_matrices()
    if args.only:
        mats = [(label, w) for label, w in mats if any(o in label for o in args.only)]
    limit = args.cells_upto
    rows = []
    for label, w in mats:
        rows.append(measure(label, w, not args.no_yosys and (limit is None or w.size <= limit),
                            say, args.part, not args.no_plain_cells))
        say(f"matrix row {json.dumps(rows[-1], sort_keys=True)}")  # kept if a later one fails
    result = {"machine": machine(), "part_nodes": args.part, "matrices": rows}
    if not args.no_scale:
        sizes = [s for s in args.scale if s <= 256] if args.quick else args.scale
        result["scale"] = hardwired_scale.study(sizes, say, args.scale_styles,
                                                args.build_upto)
    out = getattr(args, "out_dir", None)
    previous = out / "hardwired.json" if out is not None else None
    if previous is not None and previous.is_file():
        result = merge(result, json.loads(previous.read_text()), args.no_matrices,
                       args.only)
    return result


def merge(result: dict, previous: dict, no_matrices: bool, only: list[str] | None = None) -> dict:
    """`result` over the results file it replaces: a run without the matrix part keeps the
    previous matrices, an `--only` run replaces just the matrices it measured (by label), a
    run without the scale study keeps the previous scale rows, and scale rows not measured
    again (layer size and style) are kept, so that runs of a few sizes at a time build up the
    whole scale table."""
    merged = dict(result)
    if (no_matrices or only) and previous.get("matrices"):
        for key in ("matrices", "matrices_da4ml_traced", "matrices_note", "part_nodes"):
            if key in previous:
                merged[key] = previous[key]
        if only:
            new = {r["matrix"]: r for r in result["matrices"]}
            rows = [new.pop(r["matrix"], r) for r in previous["matrices"]]
            merged["matrices"] = rows + list(new.values())
            merged["part_nodes"] = result["part_nodes"]
    if "scale" not in result and previous.get("scale"):
        merged["scale"] = previous["scale"]
    elif "scale" in result and previous.get("scale"):
        done = {(r["n"], r["style"]) for r in result["scale"]}
        kept = [r for r in previous["scale"] if (r["n"], r["style"]) not in done]
        merged["scale"] = sorted(kept + result["scale"], key=lambda r: (r["style"], r["n"]))
    return merged


def _cell(row: dict, key: str) -> str:
    v = row[key].get("cells")
    return f"{v:>10,}" if v is not None else f"{'-':>10}"


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"etch bench hardwired  ({m['cpu']}, {m['cores']} cores, load {m['load']:.1f})",
             (f"{'matrix':<34}{'KxN':>9}{'digits':>8}{'plain':>8}{'etch':>8}{'da4ml':>8}"
             f"{'grouped':>8}{'save%':>7}{'plain cells':>12}{'etch cells':>11}"
             f"{'da4ml cells':>12}{'etch/da4ml':>11}")]
    wins = synthesised = wrong = 0
    saves = []
    for r in result["matrices"]:
        save = 100 * (1 - r["cse"]["adders"] / max(r["plain"]["adders"], 1))
        saves.append(save)
        ec, dc = r["cse"].get("cells"), r["da4ml"].get("cells")
        bad = "*" if r["da4ml"].get("exact") is False else ""
        bad += "!" if r["cse"].get("exact") is False else ""
        ratio = f"{f'{ec / dc:.2f}{bad}':>11}" if ec and dc else f"{'-':>11}"
        wins += bool(ec and dc and ec < dc)
        synthesised += bool(ec and dc)
        wrong += bool(bad)
        lines.append(f"{r['matrix'][:33]:<34}{r['k']:>4}x{r['n']:<4}{r['digits']:>8}"
                     f"{r['plain']['adders']:>8}{r['cse']['adders']:>8}"
                     f"{r['da4ml']['adders']:>8}{r['grouped']['adders']:>8}{save:>7.1f}"
                     f"{_cell(r, 'plain'):>12}{_cell(r, 'cse'):>11}{_cell(r, 'da4ml'):>12}"
                     f"{ratio}")
    lines.append(f"etch has fewer cells than da4ml on {wins} of {synthesised} synthesised "
                 f"matrices; {wrong} marked where a design's Verilog failed the x @ W check "
                 f"(Yosys eval; * da4ml, ! etch); etch printed as "
                 f"{result.get('part_nodes', PART)}-node modules; "
                 f"etch uses {min(saves, default=0):.1f}-{max(saves, default=0):.1f}% fewer "
                 f"adders than plain CSD (etch = CSD + greedy pairwise CSE, plain = CSD "
                 f"digits - 1 per output)")
    if "scale" in result:
        lines.append(hardwired_scale.table(result["scale"]))
    return "\n".join(lines)
