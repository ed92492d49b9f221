"""`etch bench cnn`'s helpers: the batch-B copy of a batch-1 export, ratios, geomeans and
goals, the table (the timed runs themselves are what `etch bench cnn` is for)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks import bench_cnn, cnn_peers
from tests.golden import run_ort


def _flatten_model(path) -> None:
    """Conv -> Reshape [1, -1] -> Gemm, exported at batch 1 as the zoo's models are."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(size=(5, 4 * 36)).astype(np.float32), "fc")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Reshape", ["c", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], [w, fc, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_batched_model_runs_each_sample_as_batch_one(tmp_path) -> None:
    src, dest = tmp_path / "m.onnx", tmp_path / "m.b3.onnx"
    _flatten_model(src)
    cnn_peers.batched_model(src, 3, dest)
    one = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    x = cnn_peers.batched_inputs({"x": one}, 3)["x"]
    assert x.shape == (3, 3, 8, 8) and not np.array_equal(x[0], x[1])
    got = run_ort(onnx.load(dest), {"x": x})["y"]
    rows = [run_ort(onnx.load(src), {"x": x[i:i + 1]})["y"][0] for i in range(3)]
    np.testing.assert_allclose(got, np.stack(rows), rtol=1e-5)


def _row(model: str, etch: float, ort: float, int_us: float, qdq: float, qop: float) -> dict:
    return bench_cnn._ratios({"model": model, "batch": 1, "threads": 1, "etch_us": etch,
                              "ort_us": ort, "etch_int_us": int_us, "ort_qdq_us": qdq,
                              "ort_qop_us": qop, "etch_compile_s": 10.0})


def test_ratios_pick_the_faster_ort_int8_format_and_goals_use_geomeans() -> None:
    rows = [_row("a", 80, 100, 40, 60, 50), _row("b", 90, 100, 45, 30, 70)]
    assert (rows[0]["ort_int8_format"], rows[1]["ort_int8_format"]) == ("qop", "qdq")
    assert rows[0]["int_vs_ort_int8"] == 0.8 and rows[1]["int_vs_ort_int8"] == 1.5
    s = bench_cnn.summary(rows)
    assert abs(s["all"]["etch_vs_ort"] - np.sqrt(0.8 * 0.9)) < 1e-9
    assert s["goals"]["etch float geomean <= 0.85x ORT"].startswith("met")
    assert s["goals"]["--int >= 1.5x etch float (geomean)"].startswith("met")
    assert s["goals"]["--int faster than ORT int8 (geomean)"].startswith("NOT met")
    result = {"cpu": "test cpu", "mcpu": "x", "isa": ["avx2"], "load_average": [1.0],
              "rows": rows + [{"model": "c", "batch": 8, "threads": 2, "etch_error": "boom"}],
              "summary": s}
    text = bench_cnn.table(result)
    assert "test cpu" in text and "0.05o" in text and "err" in text


def test_ratios_against_ort_without_amx() -> None:
    row = _row("a", 80, 100, 40, 60, 50)
    row = bench_cnn._ratios({**row, "ort_qdq_noamx_us": 90, "ort_qop_noamx_us": 100})
    assert row["ort_int8_noamx_format"] == "qdq" and row["int_vs_ort_int8_noamx"] == round(40 / 90, 3)
    goals = bench_cnn.summary([row])["goals"]
    assert goals["--int faster than ORT int8 on VNNI, AMX denied (geomean)"].startswith("met")


_DENY = """
import ctypes, platform
from benchmarks import cnn_peers
denied = cnn_peers.deny_amx()
libc = ctypes.CDLL(None, use_errno=True)
other = libc.syscall(158, 0x1001, ctypes.byref(ctypes.c_ulong()))  # ARCH_GET_FS: allowed
amx = libc.syscall(158, 0x1023, 18)                                  # ARCH_REQ_XCOMP_PERM
print(platform.machine(), denied, other, amx, ctypes.get_errno())
"""


def test_deny_amx_refuses_only_the_amx_permission_request() -> None:
    """In a fresh process (the filter is irreversible): the AMX request fails with EPERM on
    any x86-64 Linux host, with or without AMX; another arch_prctl still works."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _DENY], capture_output=True, text=True,
                         check=True).stdout.split()
    machine, denied, other, amx, errno = out[0], out[1] == "True", *map(int, out[2:])
    if machine != "x86_64":
        assert not denied
        return
    assert denied and other == 0 and (amx, errno) == (-1, 1)


def test_tune_goal_reads_the_worst_models_speedup() -> None:
    rows = [_row("a", 80, 100, 40, 60, 50), _row("b", 150, 100, 45, 30, 70)]
    rows[1] = bench_cnn._ratios({**rows[1], "etch_tuned_us": 120})
    assert rows[1]["tune_speedup"] == 1.25
    goals = bench_cnn.summary(rows)["goals"]
    assert goals["--tune improves the worst model by 2% or more (b b1 t1)"].startswith(
        "met (1.25)")
    rows[1] = bench_cnn._ratios({**rows[1], "etch_tuned_us": 149.5})  # 1.003x: noise
    goals = bench_cnn.summary(rows)["goals"]
    assert goals["--tune improves the worst model by 2% or more (b b1 t1)"].startswith("NOT")
    assert "etch_tuned" not in cnn_peers.DEFAULT_RUNTIMES


def test_batched_model_repeats_a_class_token_constant(tmp_path) -> None:
    """A ViT export folds the class token into a [1, 1, d] initializer joined by Concat on
    the token axis: re-batching repeats it, so each sample matches its batch-1 run."""
    rng = np.random.default_rng(2)
    cls = numpy_helper.from_array(rng.normal(size=(1, 1, 8)).astype(np.float32), "cls")
    pos = numpy_helper.from_array(rng.normal(size=(1, 5, 8)).astype(np.float32), "pos")
    nodes = [helper.make_node("Concat", ["cls", "x"], ["cat"], axis=1),
             helper.make_node("Add", ["cat", "pos"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 8])], [cls, pos])
    src, dest = tmp_path / "vit.onnx", tmp_path / "vit.b3.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    cnn_peers.batched_model(src, 3, dest)
    x = rng.normal(size=(3, 4, 8)).astype(np.float32)
    got = run_ort(onnx.load(dest), {"x": x})["y"]
    rows = [run_ort(onnx.load(src), {"x": x[i:i + 1]})["y"][0] for i in range(3)]
    np.testing.assert_allclose(got, np.stack(rows), rtol=1e-6)


def test_runtimes_take_turns_and_the_fastest_process_counts(monkeypatch) -> None:
    """Each runtime is timed in `repeats` fresh processes, the runtimes in turn (a slow spell
    of the shared machine falls on both alike), and its fastest process is its latency; a
    failed timing process is skipped, a runtime whose every process failed shows the error."""
    from models import zoo

    monkeypatch.setattr(zoo, "load_sample", lambda name: ({"x": np.zeros((1, 3), np.float32)},
                                                          {}))
    monkeypatch.setattr(zoo, "model_path", lambda name: "unused.onnx")
    calls = []
    times = {"etch": iter([{"us": 150.0}, {"error": "exit 1: spell"}, {"us": 110.0}]),
             "ort": iter([{"us": 120.0}, {"us": 125.0}, {"us": 130.0}]),
             "tvm_fe": iter([{"error": "exit 1: a"}, {"error": "exit 1: b"}])}

    def spawn(argv, timeout, threads=1):
        calls.append((argv[0], argv[1]))
        if argv[0] == "build":
            return {"compile_s": 1.0}
        return next(times[argv[1]])

    monkeypatch.setattr(bench_cnn, "_spawn", spawn)
    [row] = bench_cnn.bench_model("m", 1, [2], ["etch", "ort"], 0.1, 60, repeats=3)
    assert [c for c in calls if c[0] == "time"] == [("time", "etch"), ("time", "ort")] * 3
    assert row["etch_us"] == 110.0 and row["etch_us_runs"] == [150.0, 110.0]
    assert row["ort_us"] == 120.0 and row["ort_us_runs"] == [120.0, 125.0, 130.0]
    assert row["etch_vs_ort"] == round(110 / 120, 3)
    calls.clear()
    [row] = bench_cnn.bench_model("m", 1, [1], ["tvm_fe"], 0.1, 60, repeats=2)
    assert row["tvm_fe_error"] == "exit 1: a" and "tvm_fe_us" not in row


def test_no_timing_process_thread_or_image_count_is_refused() -> None:
    import argparse

    from compiler.errors import EtchError

    with pytest.raises(EtchError, match="--cnn-repeats 0"):
        bench_cnn.run(argparse.Namespace(models=["m"], cnn_repeats=0))
    with pytest.raises(EtchError, match="--cnn-threads 1 0: each must be 1 or more"):
        bench_cnn.run(argparse.Namespace(models=["m"], cnn_threads=[1, 0]))
    with pytest.raises(EtchError, match="--batch -1: each must be 1 or more"):
        bench_cnn.run(argparse.Namespace(models=["m"], batch=[-1]))
