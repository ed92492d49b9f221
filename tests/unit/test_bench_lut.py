"""`etch bench lut`'s bookkeeping: goals as ratios within one run, and the printed table
(the timing itself runs in `etch bench lut`, never as a test)."""

from __future__ import annotations

import pytest

from benchmarks import bench_lut, lut_goals
from benchmarks.lut_peers import best_us, cold_us, copies


def _row(batch: int, threads: int, scale: float) -> dict:
    etch = {b: {"lut_us": us * scale, "lut_bytes": 4e6, "int8_rel_rms": 0.008,
                "pass_picks": "lut", "reason": "", "lut_cold_us": 2 * us * scale}
            for b, us in (("1", 60.0), ("2", 100.0), ("4", 150.0), ("t", 100.0))}
    etch["2"]["dequant_us"], etch["2"]["dequant_bytes"] = 900.0, 6e6
    ort = {"fp32": {"us": 2000.0, "bytes": 64e6},
           "nbits4_b32_acc4_lut0": {"us": 400.0 * scale, "bytes": 10e6,
                                    "rel_rms_vs_float": 0.005},
           "nbits2_b32_acc4_lut1": {"us": 250.0 * scale, "bytes": 6e6}}
    return {"k": 4096, "n": 4096, "batch": batch, "threads": threads, "etch": etch,
            "ort": ort, "numpy": {"fp32": {"us": 3000.0, "bytes": 64e6}}}


def _result() -> dict:
    rows = [_row(b, t, b * (0.5 if t == 2 else 1.0)) for b in (1, 8, 64) for t in (1, 2)]
    return {"cpu": "test cpu", "mcpu": "x", "machine": "x86_64", "features": ["avx2"],
            "threads": 2, "llc_mb": 32.0, "load_average": [0.1, 0.1, 0.1], "cold_mb": 48.0,
            "group": 32, "threads_run": [1, 2], "rows": rows,
            "stream": {"1": {"gbps": 20.0}, "2": {"gbps": 30.0}}}


def test_goals_are_ratios_of_the_same_run() -> None:
    result = _result()
    goals = {g["goal"]: g for g in lut_goals.goals(result)}
    first = goals["2-bit GEMV, 1 thread: MatMulNBits 4-bit acc4 b32 / etch 2-bit"]
    assert first["value"] == pytest.approx(4.0) and first["met"]
    assert goals["GEMV, 1 thread: etch 1-bit / etch 2-bit"]["value"] == pytest.approx(0.6)
    cold = goals["cold 2-bit GEMV, 1 thread(s): GB/s / streaming GB/s"]
    assert cold["value"] == pytest.approx(4e6 / 200.0 / 1e3 / 20.0, rel=1e-3)
    assert goals["cold 2-bit GEMV: 2 threads vs 1"]["value"] == pytest.approx(2.0)
    assert goals["cold 2-bit GEMV: 2 threads vs 1"]["met"]  # target 1.7
    assert goals["int8 tables: worst relative RMS error vs exact product"]["met"]


def test_table_names_the_machine_and_every_peer() -> None:
    text = bench_lut.table({**_result(), "goals": lut_goals.goals(_result())})
    assert "test cpu" in text and "vector extensions: avx2" in text
    for name in ("etch lut 2", "etch dequant 2", "ORT fp32", "ORT nbits4_b32_acc4_lut0",
                 "numpy fp32", "goals (ratios in this run)"):
        assert name in text


def test_timing_helpers() -> None:
    calls = []
    assert best_us(lambda: calls.append(1), 0.01) >= 0 and len(calls) > 5
    assert cold_us([lambda: None, lambda: None], 0.01) >= 0
    assert copies(10 << 20, 100) == 10 and copies(1, 0) == 2
