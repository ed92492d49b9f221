"""The hardwired scale study: single int4 layers of growing size through every stage.

Stages, each in its own process so that its time and peak memory are its own (the peak
of the process or of any tool it ran, Verilator and g++ included):
- gen:   weights -> netlist (CSE) -> Verilog files (`design.write`; a layer of more than
         64k weights as column parts, generated in parallel processes);
- lint:  `verilator --lint-only -Wall` (column parts each alone, both cores, the rest
         against port stubs: `verilator_build.lint_split`);
- build: the Verilator simulator (column parts each verilated alone into a cached DPI
         library, both cores; the design's size-chosen options, `Design.build_args`,
         `Design.build_opt`);
- sim:   one batch of inferences streamed through the simulator, its outputs checked
         against the integer matrix product requantised by `compiler.reference` (a
         mismatch fails the stage).
Run as `python -m benchmarks.hardwired_scale STAGE WORKDIR SIZE STYLE` by `study`.
"""

from __future__ import annotations

import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from backends.verilog.hardwired.layer import LayerSpec
from compiler.errors import EtchError
from compiler.reference import requantize

STAGES = ("gen", "lint", "build", "sim")
BATCH = 1000
STYLES = (("csd", False), ("grouped", True))


def weights(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(-8, 8, (n, n))


def _spec(n: int, style: str, serial: bool) -> LayerSpec:
    w = weights(n)
    return LayerSpec(f"scale{n}", w, np.zeros(n, np.int64), np.full(n, 1 << 30, np.int64),
                     np.full(n, 40, np.int64), 0, -128, 127, neuron=style, serial=serial)


def stage(name: str, work: Path, n: int, style: str, serial: bool) -> dict:
    """Run one stage in this process; returns what it measured beyond time and memory."""
    from backends.verilog import HARNESS
    from runtime import verilator_build as vb

    info = json.loads((work / "design.json").read_text()) if name != "gen" else {}
    files = [Path(f) for f in info.get("files", [])]
    if name == "gen":
        from backends.verilog.hardwired import design

        d = design.write([_spec(n, style, serial)], work / "rtl")
        info = {"files": [str(f) for f in d.files], "top": d.top, "hier": d.hierarchical,
                "parts": [[m, str(f)] for m, f in d.parts],
                "stream": [d.in_bytes, d.in_beat, d.out_bytes, d.out_beat],
                "nodes": d.nodes, "steps": d.steps,
                "adders": d.layers[0].cost().adders,
                "lint_args": list(d.lint_args), "build_args": list(d.build_args),
                "build_opt": d.build_opt,
                "verilog_mb": round(sum(f.stat().st_size for f in d.files) / 2**20, 1)}
        (work / "design.json").write_text(json.dumps(info))
        return {"parts": len(d.parts), **{k: info[k] for k in (
            "nodes", "adders", "verilog_mb", "hier", "build_args", "build_opt")}}
    parts = tuple((m, Path(f)) for m, f in info["parts"])
    if name == "lint":
        vb.lint_split(files, info["top"], parts, info["lint_args"],
                      build_extra=info["build_args"], cache=work / "vcache")
        return {"lint_args": info["lint_args"]}
    spec = vb.BuildSpec(tuple(files), info["top"], hierarchical=info["hier"],
                        opt=info["build_opt"], extra=tuple(info["build_args"]), parts=parts)
    exe = vb.build(spec, HARNESS, cache=work / "vcache")
    if name == "build":
        return {}
    x = np.random.default_rng(0).integers(0, 256, (BATCH, n), dtype=np.uint8)
    t = time.perf_counter()
    y, stats = vb.simulate(exe, vb.StreamShape(*info["stream"]), x, max_cycles=BATCH * 64 + 10_000)
    sec = time.perf_counter() - t
    return {"batch": BATCH, "cycles": stats["cycles"], "inferences_per_s": round(BATCH / sec),
            "checked": check(n, style, serial, x, y)}


def check(n: int, style: str, serial: bool, x: np.ndarray, y: np.ndarray) -> int:
    """The number of simulated output codes `y` checked against `reference`; EtchError
    when any differs."""
    want = reference(n, style, serial, x)
    got = y.view(np.int8)
    wrong = int(np.count_nonzero(got != want)) if got.shape == want.shape else got.size
    if wrong:
        raise EtchError(f"scale {n}x{n}: {wrong} of {want.size} simulated outputs differ from "
                        "the integer reference")
    return int(y.size)


def reference(n: int, style: str, serial: bool, x: np.ndarray) -> np.ndarray:
    """The layer's outputs for input codes `x` ([B, n] bytes, int8 codes) by numpy."""
    s = _spec(n, style, serial)
    acc = x.view(np.int8).astype(np.int64) @ s.w + s.bias
    return requantize(acc, s.m0, s.shift, s.zp, s.qmin, s.qmax)


def _child(name: str, work: Path, n: int, style: str, serial: bool) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.hardwired_scale", name, str(work), str(n), style,
           str(int(serial))]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    sec = time.perf_counter() - t
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        return {"seconds": round(sec, 1), "error": tail[:300]}
    return {"seconds": round(sec, 1), **json.loads(r.stdout.strip().splitlines()[-1])}


def study(sizes: list[int], say: Callable[[str], None],
          styles: list[str] | None = None, build_upto: int | None = None) -> list[dict]:
    """Every stage of every size, for `styles` ("csd", "grouped/bitserial"; default both);
    layers larger than `build_upto` stop after lint."""
    rows = []
    for style, serial in STYLES:
        if styles is not None and style + ("/bitserial" if serial else "") not in styles:
            continue
        for n in sizes:
            row = {"n": n, "style": style + ("/bitserial" if serial else ""),
                   "nonzero": int(np.count_nonzero(weights(n)))}
            with tempfile.TemporaryDirectory(prefix="etch-scale-") as tmp:
                for s in STAGES:
                    if build_upto is not None and n > build_upto and s in ("build", "sim"):
                        break
                    say(f"scale {row['style']} {n}x{n}: {s}")
                    row[s] = _child(s, Path(tmp), n, style, serial)
                    if "error" in row[s]:
                        break
            row["total_s"] = round(sum(row[s]["seconds"] for s in STAGES if s in row), 1)
            rows.append(row)
            say(f"scale row {json.dumps(row, sort_keys=True)}")  # kept if a later size fails
    return rows


def table(rows: list[dict]) -> str:
    lines = [("scale: single int4 layers, per stage (each its own process): wall s / CPU s "
             "(itself and its tools) / peak MB"),
             (f"{'layer':<20}{'nonzero':>9}{'nodes':>9}{'add/w':>6}{'parts':>6}{'gen':>17}"
              f"{'lint':>17}{'build':>19}{'sim':>17}{'inf/s':>8}{'CPU s':>8}{'CPU us/w':>9}")]
    for r in rows:
        def cell(s: str, r: dict = r, w: int = 17) -> str:
            v = r.get(s)
            if v is None:
                return f"{'-':>{w}}"
            if "error" in v:
                return f"{'failed':>{w}}"
            return f"{v['seconds']:.0f}/{v.get('cpu_s', 0):.0f}/{v['peak_mb']}".rjust(w)
        gen = r.get("gen", {})
        nodes, parts = gen.get("nodes", "-"), gen.get("parts", "-")
        apw = f"{gen['adders'] / max(r['nonzero'], 1):.2f}" if "adders" in gen else "-"
        ips = r.get("sim", {}).get("inferences_per_s", "-")
        cpu = sum(r[s].get("cpu_s", 0) for s in STAGES if s in r)
        lines.append(f"{r['style'] + ' ' + str(r['n']) + 'x' + str(r['n']):<20}"
                     f"{r['nonzero']:>9}{nodes:>9}{apw:>6}{parts:>6}{cell('gen')}{cell('lint')}"
                     f"{cell('build', w=19)}{cell('sim')}{ips:>8}{cpu:>8.0f}"
                     f"{cpu * 1e6 / max(r['nonzero'], 1):>9.1f}")
        for s in STAGES:
            if "error" in r.get(s, {}):
                lines.append(f"    {s} failed: {r[s]['error']}")
    return "\n".join(lines + growth(rows))


def growth(rows: list[dict]) -> list[str]:
    """Per pair of successive sizes of a style: how CPU seconds of each stage grew against
    nonzero weights (a ratio <= the nonzero ratio is linear or better)."""
    lines = []
    for a, b in itertools.pairwise(rows):
        if a["style"] != b["style"]:
            continue
        parts = []
        for s in STAGES:
            ca, cb = (r.get(s, {}).get("cpu_s") for r in (a, b))
            if ca and cb and "error" not in a[s] and "error" not in b[s]:
                parts.append(f"{s} x{cb / ca:.1f}")
        lines.append(f"growth {b['style']} {a['n']} -> {b['n']}: nonzero "
                     f"x{b['nonzero'] / max(a['nonzero'], 1):.1f}, CPU s: "
                     + (", ".join(parts) or "-"))
    return lines


def main(argv: list[str]) -> int:
    name, work, n, style, serial = argv[0], Path(argv[1]), int(argv[2]), argv[3], argv[4] == "1"
    extra = stage(name, work, n, style, serial)
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    print(json.dumps({"peak_mb": round(max(own.ru_maxrss, kids.ru_maxrss) / 1024),
                      "cpu_s": round(cpu, 1), **extra}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
