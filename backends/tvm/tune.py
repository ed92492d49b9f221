"""Optional MetaSchedule tuning (`--tune N`): N measured trials over the model's kernels.

The database is cached by content: the key hashes the lowered module's text (kernel TIR and
the call graph; weight values do not change which schedule is fastest), the target and N,
so compiling the same model again for the same CPU reuses it without measuring. The cache
lives in $ETCH_CACHE/tune/<key> (default .cache/tune/<key>); a copy goes into the artifact
(`tuning/`), so an artifact records the schedules it was built from. Kernels the search did
not cover keep etch's rule-based schedules, and so do those whose rule schedule measured
faster than the search's best (`tune_pick`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from contextlib import contextmanager
from pathlib import Path

import tvm
from tvm import relax

from compiler import __version__
from compiler.errors import EtchError

DB_FILES = ("database_workload.json", "database_tuning_record.json")


def cache_root() -> Path:
    env = os.environ.get("ETCH_CACHE")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / ".cache"
    return root / "tune"


def content_key(mod: tvm.IRModule, target: tvm.target.Target, trials: int) -> str:
    """sha256 of what decides the tuned schedules (not the weight values)."""
    h = hashlib.sha256()
    for part in (mod.script(show_meta=False), json.dumps(str(target)), str(trials),
                 tvm.__version__, __version__):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _cost_model() -> str:
    """XGBoost's cost model when xgboost is installed, else random search."""
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return "random"
    return "xgb"


# MetaSchedule stores each workload with tvm.ir.save_json; with apache-tvm 0.27.0.post1 and
# apache-tvm-ffi 0.1.15.x, serialising any TIR expression segfaults in ToJSONGraph, which would
# take the whole compile down (pyproject pins apache-tvm-ffi 0.1.14.post1, which works). Probe
# it in a child process first, as a guard for environments with another tvm-ffi.
_PROBE = "import tvm; tvm.ir.save_json(tvm.tirx.IntImm('int32', 1))"


def check_tuner() -> None:
    """EtchError unless MetaSchedule can run here (psutil present, TIR serialisable)."""
    try:
        import psutil  # noqa: F401  (MetaSchedule's local runner needs it)
    except ImportError:
        raise EtchError("--tune needs the psutil package (pip install psutil)") from None
    probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=120,
                           check=False)
    if probe.returncode != 0:
        raise EtchError(f"--tune: MetaSchedule cannot run with this TVM build "
                        f"({tvm.__version__}: tvm.ir.save_json crashes on TIR, exit status "
                        f"{probe.returncode}); compile without --tune (rule-based schedules)")


def _lean_build(mod: tvm.IRModule, target: tvm.target.Target, _params: object) -> object:
    """MetaSchedule's default_build without its `import tvm.s_tir.tensor_intrin`, which parses
    every vendor's intrinsics in TVMScript (about a minute on a small machine) in each fresh
    builder process, so the default 30 s build timeout fails every candidate."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


@contextmanager
def _cpu_intrinsics_only(target: tvm.target.Target):
    """For llvm targets, register only the x86/arm intrinsics the cpu search can use instead of
    all of `tvm.s_tir.tensor_intrin` (the cuda, rocm and hexagon ones take about a minute to
    parse); the package stays importable in full afterwards."""
    name = "tvm.s_tir.tensor_intrin"
    if target.kind.name != "llvm" or name in sys.modules:
        yield
        return
    from tvm import s_tir

    real_dir = Path(s_tir.__file__).parent / "tensor_intrin"
    stub = types.ModuleType(name)
    stub.__path__ = [str(real_dir)]
    sys.modules[name] = stub
    try:
        import tvm.s_tir.tensor_intrin.x86  # noqa: F401
        yield
    finally:
        if sys.modules.get(name) is stub:
            del sys.modules[name]
        if getattr(s_tir, "tensor_intrin", None) is stub:
            delattr(s_tir, "tensor_intrin")


@contextmanager
def _ms_logging(work: Path):
    """MetaSchedule's logger setup lists its logger's handlers by name and fails on an unnamed
    one (pytest's capture handlers); detach those while it runs, and close the log files it
    opened in `work` afterwards."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    unnamed = [h for h in logger.handlers if h.get_name() is None]
    for h in unnamed:
        logger.removeHandler(h)
    try:
        yield
    finally:
        for name in [logger.name] + [n for n in logging.root.manager.loggerDict
                                     if n.startswith("tvm.s_tir.meta_schedule.logging.task_")]:
            lg = logging.getLogger(name)
            for h in list(lg.handlers):
                if isinstance(h, logging.FileHandler) and str(work) in h.baseFilename:
                    lg.removeHandler(h)
                    h.close()
        for h in unnamed:
            logger.addHandler(h)


def _search(mod: tvm.IRModule, target: tvm.target.Target, trials: int, dest: Path) -> None:
    """Run MetaSchedule into a fresh directory, then move it to `dest` atomically."""
    check_tuner()
    from tvm.s_tir import meta_schedule as ms

    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tune-", dir=dest.parent))
    # A closure, so cloudpickle sends it to the builder processes by value.
    def build(m, t, p):
        return _lean_build(m, t, p)

    try:
        with _cpu_intrinsics_only(target), _ms_logging(work):
            ms.relax_integration.tune_relax(
                mod, {}, target, str(work), max_trials_global=trials,
                num_trials_per_iter=min(64, max(1, trials)), seed=0, cost_model=_cost_model(),
                builder=ms.builder.LocalBuilder(f_build=build, timeout_sec=120))
        if not dest.exists():
            os.replace(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def tune(mod: tvm.IRModule, target: tvm.target.Target, trials: int, out: Path,
         config: dict | None = None) -> tuple[tvm.IRModule, dict]:
    """`mod` (unscheduled kernels) with the tuned schedules applied where the search found
    one and it measured faster than etch's rule schedule (`tune_pick`), and the manifest's
    `tuning` entry; the database and the picks are cached and copied to out/tuning."""
    from backends.tvm import tune_pick
    from backends.tvm.schedules import RULE_ATTR, apply_rules

    key = content_key(mod, target, trials)
    db_dir = cache_root() / key
    reused = all((db_dir / f).is_file() for f in DB_FILES)
    t0 = time.perf_counter()
    if not reused:
        _search(mod, target, trials, db_dir)
    search_s = time.perf_counter() - t0
    with target, tvm.transform.PassContext(opt_level=3):
        tuned = relax.transform.MetaScheduleApplyDatabase(work_dir=str(db_dir))(mod)
    names = []
    for gvar, func in tuned.functions_items():
        if (isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None
                and func.attrs.get("tirx.is_scheduled") and RULE_ATTR not in func.attrs):
            tuned[gvar] = func.with_attr(RULE_ATTR, "MetaSchedule")
            names.append(gvar.name_hint)
    # etch's rule schedule of just the kernels the search covered, to time against them
    ruled = apply_rules(tvm.IRModule({mod.get_global_var(n): mod[n] for n in names}), target)
    tuned, picks = tune_pick.pick(tuned, ruled, sorted(names), target, config or {}, db_dir)
    (out / "tuning").mkdir(exist_ok=True)
    for f in (*DB_FILES, tune_pick.PICKS):
        shutil.copy2(db_dir / f, out / "tuning" / f)
    (out / "tuning" / "key.txt").write_text(key + "\n")
    kept = sum(1 for p in picks if p["kept"] == "tuned")
    info = {"key": key, "trials": trials, "reused": reused, "tuned_kernels": kept,
            "rule_kept": len(picks) - kept, "search_seconds": round(search_s, 3),
            "kernels": picks}
    return tuned, info
