"""After `--tune`: keep, per kernel, whichever schedule is faster, MetaSchedule's or etch's rule.

MetaSchedule's search explores generic sketches; etch's rules know the packed layouts and
register tiles, and a short search often finds something slower than the rule (squeezenet1_1
with 64 trials: 8.4 -> 13.3 ms when every tuned kernel replaced its rule). So each kernel the
database covers is built twice as a standalone function, tuned and rule-scheduled, timed on
the same arguments back to back, and the faster one stays. The decision is stored beside the
tuning database (`picks.json`, same content key) so compiling the same model again gives the
same artifact without re-timing, and it is listed in the manifest's `tuning.kernels`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tvm

from backends.tvm import strided_loads

PICKS = "picks.json"


def _args(func: tvm.tirx.PrimFunc, dev: tvm.runtime.Device) -> list:
    """One tensor per buffer parameter: random floats, zeros for integers (index inputs such
    as Gather's stay in range), so both schedules run on identical, safe data."""
    rng = np.random.default_rng(0)
    args = []
    for param in func.params:  # in TVM 0.27 the parameters are the buffers
        buf = param
        shape = [int(d) for d in buf.shape]
        dtype = str(buf.dtype)
        if dtype.startswith("float"):
            data = rng.standard_normal(shape).astype(dtype)
        else:
            data = np.zeros(shape, dtype=dtype if dtype != "bool" else np.bool_)
        args.append(tvm.runtime.tensor(data, dev))
    return args


def kernel_seconds(func: tvm.tirx.PrimFunc, target: tvm.target.Target, config: dict) -> float:
    """The best of five timed repeats (each >= 20 ms of calls) of `func` built on its own."""
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    with tvm.transform.PassContext(opt_level=3, config=config):
        pipeline = strided_loads.PIPELINE if target.kind.name == "llvm" else "default"
        lib = tvm.compile(mod, target=target, tir_pipeline=pipeline).jit()
    dev = tvm.cpu() if target.kind.name == "llvm" else tvm.device(target.kind.name)
    timer = lib.time_evaluator(lib.entry_name, dev, number=1, repeat=5, min_repeat_ms=20)
    return float(min(timer(*_args(func, dev)).results))


def pick(tuned: tvm.IRModule, ruled: tvm.IRModule, names: list[str],
         target: tvm.target.Target, config: dict, db_dir: Path) -> tuple[tvm.IRModule, list]:
    """`tuned` with each kernel in `names` replaced by its rule schedule where that measured
    faster; the per-kernel record. Reuses db_dir/picks.json when present."""
    cached = db_dir / PICKS
    if cached.is_file():
        records = json.loads(cached.read_text())
    else:
        records = [_measure(tuned, ruled, name, target, config) for name in names]
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1) + "\n")
        tmp.replace(cached)
    for rec in records:
        if rec["kept"] == "rule":
            tuned[tuned.get_global_var(rec["kernel"])] = ruled[rec["kernel"]]
    return tuned, records


def _measure(tuned: tvm.IRModule, ruled: tvm.IRModule, name: str,
             target: tvm.target.Target, config: dict) -> dict:
    from backends.tvm.schedules import RULE_ATTR
    from backends.tvm.support import error_line

    rule_func = ruled[name]
    attrs = rule_func.attrs or {}
    if RULE_ATTR not in attrs:  # no rule schedules this kernel: the tuned one stays
        return {"kernel": name, "tuned_us": None, "rule_us": None, "kept": "tuned"}
    try:
        tuned_s = kernel_seconds(tuned[name], target, config)
        rule_s = kernel_seconds(rule_func, target, config)
    except (RuntimeError, ValueError, TypeError, AttributeError, IndexError) as e:
        # TVM's errors are these builtins; a kernel that cannot be timed alone keeps the rule
        return {"kernel": name, "rule": str(attrs[RULE_ATTR]), "tuned_us": None,
                "rule_us": None, "kept": "rule", "why": error_line(e)}
    return {"kernel": name, "rule": str(attrs[RULE_ATTR]), "tuned_us": round(tuned_s * 1e6, 2),
            "rule_us": round(rule_s * 1e6, 2), "kept": "tuned" if tuned_s < rule_s else "rule"}
