"""`--tune N`: MetaSchedule where this TVM build can run it, a clear error where it cannot."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm

import compiler
from backends.tvm import lower, schedules, tune, tune_pick
from compiler.errors import EtchError
from models import zoo
from tests.backends import tvm_cases
from tests.golden import assert_close, run_ort


def _tuner_or_skip() -> None:
    try:
        tune.check_tuner()
    except EtchError as e:
        pytest.skip(str(e))


def test_tune_is_refused_clearly_or_works(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ETCH_CACHE", str(tmp_path))
    model, _ = tvm_cases.gelu()
    try:
        tune.check_tuner()
    except EtchError:
        with pytest.raises(EtchError, match="--tune"):
            compiler.compile(model, target="cpu", tune=2)
        return
    assert "tuning/key.txt" in compiler.compile(model, target="cpu", tune=2).manifest["files"]


@pytest.mark.slow
def test_tuned_database_is_cached_and_reused(monkeypatch, tmp_path) -> None:
    _tuner_or_skip()
    monkeypatch.setenv("ETCH_CACHE", str(tmp_path))
    path = zoo.model_path("digits_mlp")
    model = onnx.load(str(path))
    inputs = {"input": np.random.default_rng(0).random((1, 64), dtype=np.float32)}
    art = compiler.compile(path, target="cpu", tune=4)
    assert_close(art.run(inputs), run_ort(model, inputs), rtol=1e-3, atol=1e-4)
    files = art.manifest["files"]
    assert {"tuning/database_workload.json", "tuning/database_tuning_record.json",
            "tuning/key.txt"} <= set(files)
    first = art.manifest["tuning"]
    assert not first["reused"] and first["tuned_kernels"] + first["rule_kept"] >= 1
    assert len(first["kernels"]) == first["tuned_kernels"] + first["rule_kept"]
    assert "tuning/picks.json" in files
    assert art.manifest["schedules"].get("MetaSchedule", 0) == first["tuned_kernels"]

    def no_search(*args: object) -> None:
        raise AssertionError("the cached database should have been reused")

    monkeypatch.setattr(tune, "_search", no_search)
    again = compiler.compile(path, target="cpu", tune=4)
    assert again.manifest["tuning"]["reused"]
    assert again.manifest["tuning"]["key"] == first["key"]
    assert again.manifest["schedules"] == art.manifest["schedules"]
    assert_close(again.run(inputs), run_ort(model, inputs), rtol=1e-3, atol=1e-4)


def _linear_module() -> tuple[tvm.IRModule, tvm.target.Target]:
    model, _ = tvm_cases.linear()
    art = compiler.compile(model, target="ref")
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
    return lower.to_irmodule(art.graph, pack=True, lanes=8), target


def test_rule_schedule_stays_where_it_measures_faster(monkeypatch, tmp_path) -> None:
    """`tune_pick` keeps, per kernel, the faster of the tuned and the rule schedule, stores
    the picks beside the database and reuses them without timing again."""
    mod, target = _linear_module()
    ruled = schedules.apply_rules(tvm.IRModule(dict(mod.functions_items())), target)
    names = sorted(gv.name_hint for gv, f in ruled.functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc) and schedules.RULE_ATTR in f.attrs)
    assert len(names) >= 2
    tuned = tvm.IRModule(dict(mod.functions_items()))
    for name in names:  # stand-in "tuned" kernels: marked, unscheduled
        tuned[tuned.get_global_var(name)] = mod[name].with_attr(schedules.RULE_ATTR,
                                                                "MetaSchedule")
    slow_rule = names[0]

    def fake_seconds(func, _target, _config) -> float:
        rule = str(func.attrs[schedules.RULE_ATTR])
        is_slow_rule = rule != "MetaSchedule" and func.same_as(ruled[slow_rule])
        return 2.0 if is_slow_rule else (1.5 if rule == "MetaSchedule" else 1.0)

    monkeypatch.setattr(tune_pick, "kernel_seconds", fake_seconds)
    got, picks = tune_pick.pick(tuned, ruled, names, target, {}, tmp_path)
    kept = {p["kernel"]: p["kept"] for p in picks}
    assert kept == {n: ("tuned" if n == slow_rule else "rule") for n in names}
    assert str(got[slow_rule].attrs[schedules.RULE_ATTR]) == "MetaSchedule"
    assert all(got[n].same_as(ruled[n]) for n in names if n != slow_rule)
    assert (tmp_path / tune_pick.PICKS).is_file()

    def no_timing(*args: object) -> float:
        raise AssertionError("the stored picks should have been reused")

    monkeypatch.setattr(tune_pick, "kernel_seconds", no_timing)
    _, picks_again = tune_pick.pick(tuned, ruled, names, target, {}, tmp_path)
    assert picks_again == picks


def test_kernel_seconds_times_a_kernel_built_alone() -> None:
    mod, target = _linear_module()
    ruled = schedules.apply_rules(mod, target)
    name = next(gv.name_hint for gv, f in ruled.functions_items()
                if isinstance(f, tvm.tirx.PrimFunc))
    seconds = tune_pick.kernel_seconds(ruled[name], tvm.target.Target("llvm"), {})
    assert 0 < seconds < 1
