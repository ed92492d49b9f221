"""Optional MetaSchedule tuning (`--tune N`): N measured trials over the model's kernels.

The database is cached by content: the key hashes the lowered module's text (kernel TIR and
the call graph; weight values do not change which schedule is fastest), the target and N,
so compiling the same model again for the same CPU reuses it without measuring. The cache
lives in $ETCH_CACHE/tune/<key> (default .cache/tune/<key>); a copy goes into the artifact
(`tuning/`), so an artifact records the schedules it was built from. Kernels the search did
not cover keep etch's rule-based schedules.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
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


# MetaSchedule stores each workload with tvm.ir.save_json; in some TVM builds (seen with
# apache-tvm 0.27.0.post1 from PyPI) serialising any TIR expression segfaults, which would
# take the whole compile down. Probe it in a child process first.
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


def _search(mod: tvm.IRModule, target: tvm.target.Target, trials: int, dest: Path) -> None:
    """Run MetaSchedule into a fresh directory, then move it to `dest` atomically."""
    check_tuner()
    from tvm.s_tir import meta_schedule as ms

    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tune-", dir=dest.parent))
    try:
        ms.relax_integration.tune_relax(mod, {}, target, str(work), max_trials_global=trials,
                                        num_trials_per_iter=min(64, max(1, trials)), seed=0,
                                        cost_model=_cost_model())
        if not dest.exists():
            os.replace(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def tune(mod: tvm.IRModule, target: tvm.target.Target, trials: int, out: Path) -> tvm.IRModule:
    """`mod` (unscheduled kernels) with the tuned schedules applied where the search found
    one; the database is cached and copied to out/tuning."""
    key = content_key(mod, target, trials)
    db_dir = cache_root() / key
    if not all((db_dir / f).is_file() for f in DB_FILES):
        _search(mod, target, trials, db_dir)
    (out / "tuning").mkdir(exist_ok=True)
    for f in DB_FILES:
        shutil.copy2(db_dir / f, out / "tuning" / f)
    (out / "tuning" / "key.txt").write_text(key + "\n")
    with target, tvm.transform.PassContext(opt_level=3):
        return relax.transform.MetaScheduleApplyDatabase(work_dir=str(db_dir))(mod)
