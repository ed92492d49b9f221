"""Per-part Verilator builds and lints: big designs as self-contained modules, each
verilated alone.

A design may name *parts* (`BuildSpec.parts`: module name and the file that holds it and
nothing else it needs): modules with no submodules, which the rest of the design
instantiates. Verilator's `--hierarchical` hands every source file to every hier block, so
each block parses the whole design (superlinear in its size); here each part is verilated
alone with `--lib-create` into a DPI library (`lib<module>.a`) and its wrapper
(`<module>.sv`, a module with the same ports that calls the library), and the top build
reads the wrappers instead of the parts' sources and links the libraries. Parts are built
in parallel (one Verilator + g++ per CPU), each cached under
`<cache>/part-<sha256 of its bytes and flags>` like whole builds, so a design whose parts
did not change rebuilds only its top. The libraries leave out Verilator's runtime objects:
the top build links one copy.

Lint splits the same way (`lint_split`): each part alone, then the rest of the design with
a *stub* per part (same ports, outputs 0), which checks every connection's width without
parsing the parts again. Given the build's arguments and cache, a part's lint is its
verilation under `-Wall` (`verilate_part`: the C++ is kept, keyed by content, and the build
only compiles it), so Verilator parses each part once for lint and build together (on a
512x64 int4 part: 18 CPU s for both, was 8.5 for `--lint-only -O0` plus 18 in the build).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from compiler.errors import EtchError

PART_FORMAT = 4  # bump when the part recipe changes
Part = tuple[str, Path]  # (module, file)
# what every Verilator run of etch passes (the same as a whole build)
COMMON = ("-Wno-fatal", "--x-assign", "fast", "--x-initial", "fast", "--noassert")
# a part's C++ as one translation unit: parts build in parallel with each other, so one
# g++ per part loses nothing, and the part's big class header is parsed once instead of
# once per file (1024x32 int4 part at -O0: g++ 14.5 -> 8.8 CPU s; functions stay split
# by the design's `--output-split-cfuncs`). No DFG optimisation: a part is straight-line
# adders already minimised by etch (the same part: verilation 9.9-12.7 -> 7.4-8.3 CPU s,
# g++ unchanged)
PART_ARGS = ("--output-split", "0", "-fno-dfg")


def part_key(module: str, file: Path, opt: str, extra: Sequence[str]) -> str:
    h = hashlib.sha256(json.dumps({"module": module, "opt": opt, "extra": list(extra),
                                   "format": PART_FORMAT}).encode())
    h.update(Path(file).read_bytes())
    return h.hexdigest()[:24]


def verilate_part(module: str, file: Path, root: Path, extra: Sequence[str],
                  verilator: list[str]) -> Path:
    """The part's C++ (`--cc --lib-create` under `-Wall`), once per content key, in
    `<root>/cc-<key>`; EtchError quoting the first warnings when Verilator warns. This is
    the part's lint and the first half of its build in one Verilator run (`lint_split`
    calls it, `build_part` compiles its output): the design is parsed once, not twice."""
    key = part_key(module, file, "cc", extra)
    done = root / f"cc-{key}"
    if (done / f"V{module}.mk").is_file():
        return done
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"cc-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (done / f"V{module}.mk").is_file():
            return done
        tmp = Path(tempfile.mkdtemp(prefix=f".cc-{key}.", dir=root))
        try:
            r = subprocess.run([*verilator, "--cc", "--lib-create", module, "--top-module",
                                module, "--Mdir", str(tmp), "-Wall", *COMMON, *PART_ARGS, *extra,
                                str(Path(file).resolve())],
                               check=False, capture_output=True, text=True)
            msgs = [ln for ln in r.stderr.splitlines() if ln.startswith(("%Warning", "%Error"))]
            if r.returncode != 0 or msgs:
                raise EtchError(f"verilator lint of {module} failed: "
                                + " | ".join(msgs[:5] or r.stderr.splitlines()[-3:]))
            os.replace(tmp, done)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return done


def build_part(module: str, file: Path, root: Path, opt: str, extra: Sequence[str],
               verilator: list[str]) -> tuple[Path, Path]:
    """(wrapper .sv, static library) of one part, built once per content key: g++ on the
    part's C++ (`verilate_part`, reused when the lint made it)."""
    key = part_key(module, file, opt, extra)
    done = root / f"part-{key}"
    sv, lib = done / f"{module}.sv", done / f"lib{module}.a"
    if lib.is_file():
        return sv, lib
    cc = verilate_part(module, file, root, extra, verilator)
    with open(root / f"part-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.is_file():
            return sv, lib
        tmp = Path(tempfile.mkdtemp(prefix=f".part-{key}.", dir=root))
        try:
            obj = tmp / "obj"
            shutil.copytree(cc, obj)
            _run(["make", "-C", str(obj), "-f", f"V{module}.mk", f"lib{module}.a",
                  "VK_GLOBAL_OBJS=", f"OPT_FAST={opt}", "CFG_CXXFLAGS_PCH_I=-include"], module)
            shutil.copy2(obj / f"{module}.sv", tmp / sv.name)
            shutil.copy2(obj / lib.name, tmp / lib.name)
            shutil.rmtree(obj)
            os.replace(tmp, done)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return sv, lib


def _run(cmd: list[str], what: str) -> None:
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if r.returncode != 0:
        text = r.stdout + r.stderr
        errs = [ln for ln in text.splitlines() if "%Error" in ln or "error:" in ln][:5]
        raise EtchError(f"verilator build of part {what} failed: "
                        + " | ".join(errs or text.splitlines()[-3:]))


def build_parts(parts: Sequence[Part], root: Path, opt: str, extra: Sequence[str],
                verilator: list[str], jobs: int,
                progress: Callable[[str], None] | None = None) -> list[tuple[Path, Path]]:
    """Every part's (wrapper, library), `jobs` at a time, in the order of `parts`."""
    done = [0]

    def one(p: Part) -> tuple[Path, Path]:
        out = build_part(p[0], p[1], root, opt, extra, verilator)
        done[0] += 1
        if progress:
            progress(f"verilator parts: {done[0]}/{len(parts)} built")
        return out

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, parts))


# -- lint ------------------------------------------------------------------------------
PORT = re.compile(r"^\s*(input|output)\s+(?:wire|reg|logic)?\s*(\[[^\]]+\])?\s*(\w+)")


def stub_text(file: Path, module: str) -> str:
    """A module with `module`'s ports (ANSI declarations, one a line, as etch prints them)
    whose outputs are 0 and whose inputs are unread: the part as the rest of the design
    sees it."""
    text = re.sub(r"/\*.*?\*/", "", Path(file).read_text())
    m = re.search(rf"\bmodule\s+{re.escape(module)}\s*\((.*?)\);", text, re.DOTALL)
    if not m:
        raise EtchError(f"part {module}: no ANSI module header in {Path(file).name}")
    ins, outs = [], []
    for line in m.group(1).split(","):
        p = PORT.match(line.strip())
        if p:
            (ins if p.group(1) == "input" else outs).append((p.group(2) or "", p.group(3)))
    decls = [f"    input  wire {r} {n}" for r, n in ins]
    decls += [f"    output wire {r} {n}" for r, n in outs]
    body = [f"    assign {n} = '0;" for _, n in outs]
    return "\n".join(["`default_nettype none", "/* verilator lint_off UNUSEDSIGNAL */",
                      f"module {module} (", ",\n".join(decls), ");", *body, "endmodule",
                      "/* verilator lint_on UNUSEDSIGNAL */", "`default_nettype wire", ""])


def lint_split(files: Sequence[Path], top: str, parts: Sequence[Part],
               lint: Callable[[Sequence[Path], str, Sequence[str]], None],
               extra: Sequence[str] = (), jobs: int = 1,
               lint_part: Callable[[Part], object] | None = None) -> None:
    """Lint each part alone (`jobs` at a time; `lint_part`, e.g. `verilate_part` with the
    build's arguments, else `lint` with `extra`), then the other files with a stub per
    part."""
    one = lint_part or (lambda p: lint([p[1]], p[0], extra))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, parts))
    part_files = {Path(f).resolve() for _, f in parts}
    rest = [f for f in files if Path(f).resolve() not in part_files]
    with tempfile.TemporaryDirectory(prefix="etch-lint-") as tmp:
        stubs = []
        for module, f in parts:
            stubs.append(Path(tmp) / f"{module}.v")
            stubs[-1].write_text(stub_text(f, module))
        lint([*rest, *stubs], top, extra)
