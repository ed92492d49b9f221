"""`etch bench lut`'s bookkeeping: goals as ratios within one run, and the printed table
(the timing itself runs in `etch bench lut`, never as a test)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_lut, lut_goals, lut_models
from benchmarks.lut_peers import best_times, best_us, cold_times, copies


def _row(batch: int, threads: int, scale: float) -> dict:
    etch = {b: {"lut_us": us * scale, "lut_bytes": 4e6, "int8_rel_rms": 0.008,
                "pass_picks": "lut", "reason": "", "lut_cold_us": 2 * us * scale,
                "lut_cpu_us": us * scale / 2, "lut_cold_cpu_us": 1.5 * us * scale}
            for b, us in (("1", 60.0), ("2", 100.0), ("4", 150.0), ("t", 100.0))}
    etch["2"]["dequant_us"], etch["2"]["dequant_bytes"] = 900.0, 6e6
    etch["2"]["dequant_cpu_us"] = 850.0
    etch["2"]["weight_rel_rms"] = 0.37
    etch["2"]["fp16_scales"] = {"lut_us": 110.0 * scale, "lut_cpu_us": 60.0 * scale,
                                "lut_bytes": 4.4e6, "weight_rel_rms": 0.37}
    ort = {"fp32": {"us": 2000.0, "bytes": 64e6},
           "nbits4_b32_acc4_lut0": {"us": 400.0 * scale, "bytes": 10e6, "cpu_us": 100.0,
                                    "rel_rms_vs_float": 0.005},
           "nbits2_b32_acc4_lut1": {"us": 250.0 * scale, "bytes": 6e6}}
    return {"k": 4096, "n": 4096, "batch": batch, "threads": threads, "etch": etch,
            "ort": ort, "numpy": {"fp32": {"us": 3000.0, "bytes": 64e6}}}


def _result() -> dict:
    rows = [_row(b, t, b * (0.5 if t == 2 else 1.0)) for b in (1, 8, 64) for t in (1, 2)]
    return {"cpu": "test cpu", "mcpu": "x", "machine": "x86_64", "features": ["avx2"],
            "threads": 2, "llc_mb": 32.0, "load_average": [0.1, 0.1, 0.1], "cold_mb": 48.0,
            "group": 32, "threads_run": [1, 2], "rows": rows,
            "stream": {"1": {"gbps": 20.0, "cpu_gbps": 25.0, "warm_cpu_gbps": 100.0,
                             "spin_us": 10.0},
                       "2": {"gbps": 30.0, "spin_us": 10.0}},
            "models": {"tiny_decoder": {"1": _model(1.0), "2": _model(0.5)}}}


def _model(scale: float) -> dict:
    return {"ort fp32": {"us": 900.0 * scale, "cpu_us": 800.0 * scale},
            "etch 2b lut": {"us": 300.0 * scale, "cpu_us": 250.0 * scale, "snr_db": 20.5},
            "ORT MatMulNBits 2b b32 acc4": {"us": 700.0 * scale, "cpu_us": 600.0 * scale,
                                            "snr_db": 19.0}}


def test_goals_are_ratios_of_the_same_run() -> None:
    result = _result()
    goals = {g["goal"]: g for g in lut_goals.goals(result)}
    first = goals["2-bit GEMV, 1 thread: MatMulNBits 4-bit acc4 b32 / etch 2-bit"]
    assert first["value"] == pytest.approx(4.0) and first["met"]
    assert goals["GEMV, 1 thread: etch 1-bit / etch 2-bit"]["value"] == pytest.approx(0.6)
    cold = goals["cold 2-bit GEMV, 1 thread(s): GB/s / streaming GB/s"]
    assert cold["value"] == pytest.approx(4e6 / 200.0 / 1e3 / 20.0, rel=1e-3)
    cold_cpu = goals["cold 2-bit GEMV, 1 thread(s): GB/s / streaming GB/s (CPU time)"]
    assert cold_cpu["value"] == pytest.approx(4e6 / 150.0 / 1e3 / 25.0, rel=1e-3)
    result["rows"][0]["etch"]["2"].update(cold_stream_gbps=40.0, cold_stream_cpu_gbps=50.0)
    near = {g["goal"]: g["value"] for g in lut_goals.goals(result)}  # the stream beside it
    assert near[cold["goal"]] == pytest.approx(4e6 / 200.0 / 1e3 / 40.0, rel=1e-3)
    assert near[cold_cpu["goal"]] == pytest.approx(4e6 / 150.0 / 1e3 / 50.0, rel=1e-3)
    assert "cold 2-bit GEMV, 2 thread(s): GB/s / streaming GB/s (CPU time)" not in goals
    batch = "batch 8, 4-bit, 1 thread: etch (pass's path) / MatMulNBits acc4 b32"
    assert goals[batch]["value"] == pytest.approx(1200.0 / 3200.0)
    assert goals[batch + " (CPU time)"]["value"] == pytest.approx(600.0 / 100.0)
    assert goals["cold 2-bit GEMV: 2 threads vs 1"]["value"] == pytest.approx(2.0)
    assert goals["cold 2-bit GEMV: 2 threads vs 1"]["met"]  # target 1.7
    assert goals["int8 tables: worst relative RMS error vs exact product"]["met"]
    cpu = goals["2-bit GEMV, 1 thread: MatMulNBits 4-bit acc4 b32 / etch 2-bit (CPU time)"]
    assert cpu["value"] == pytest.approx(100.0 / 50.0) and cpu["met"] is False


def test_context_says_what_bounds_the_goals() -> None:
    ctx = {c["text"]: c["value"] for c in lut_goals.context(_result())}
    warm = "warm 2-bit GEMV, 1 thread, CPU time: GB/s / hot-loop stream GB/s of the same bytes"
    assert ctx[warm] == pytest.approx(4e6 / 50.0 / 1e3 / 100.0, rel=1e-3)
    assert ctx["compute-bound kernel: 2 threads vs 1 (the parallelism this process got)"] == 1.0
    assert ctx["streaming read: 2 threads vs 1"] == pytest.approx(1.5)
    assert ctx["warm 2-bit GEMV: 2 threads vs 1"] == pytest.approx(2.0)
    assert ctx["warm 2-bit GEMV, 1 thread, CPU time: fp16 scales / the run's scales"] == \
        pytest.approx(60.0 / 50.0)


def test_table_names_the_machine_and_every_peer() -> None:
    text = bench_lut.table({**_result(), "goals": lut_goals.goals(_result())})
    assert "test cpu" in text and "vector extensions: avx2" in text
    for name in ("etch lut 2", "etch dequant 2", "ORT fp32", "ORT nbits4_b32_acc4_lut0",
                 "numpy fp32", "goals (ratios in this run)", "context (this run)",
                 "tiny_decoder, whole model", "ORT MatMulNBits 2b b32 acc4",
                 "etch lut 2, fp16 scales", "werr 0.3700"):
        assert name in text
    assert "CPU 850.0 us" in next(ln for ln in text.splitlines() if "etch dequant 2" in ln)
    line = next(ln for ln in text.splitlines() if "etch 2b lut" in ln)
    assert line.split()[-5:] == ["300.0", "250.0", "150.0", "125.0", "20.5"]


def test_model_table_survives_a_failed_job() -> None:
    lines = lut_models.model_lines("m", {"1": {"error": "exit 1: boom"}, "2": _model(1.0)})
    assert any("boom" in ln for ln in lines) and any("etch 2b lut" in ln for ln in lines)
    assert lut_models.snr_db(np.ones(4), np.ones(4)) > 200


def test_timing_helpers() -> None:
    calls = []
    assert best_us(lambda: calls.append(1), 0.01) >= 0 and len(calls) > 5
    wall, cpu = best_times(lambda: sum(range(20000)), 0.01)
    assert wall > 0 and cpu >= 0
    assert min(cold_times([lambda: None, lambda: None], 0.01)) >= 0
    assert copies(10 << 20, 100) == 10 and copies(1, 0) == 2
