"""The shared hardware tooling: Verilator lint/build/simulate, the stream harness, the
segment executor, and Yosys area. One small stream design (stream_add.v) exercises them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import runtime
from backends.verilog import HARNESS
from backends.verilog.area import module_name, synth_area
from compiler import onnx_export
from compiler.errors import EtchError
from compiler.ir import Graph, Node, Value
from runtime import files
from runtime import verilator_build as vb

pytestmark = pytest.mark.verilator
HERE = Path(__file__).resolve().parent
DESIGN = HERE / "stream_add.v"
BYTES = 5


@pytest.fixture(scope="module")
def exe() -> Path:
    spec = vb.BuildSpec((DESIGN,), "stream_add", stats=True, extra=(f"-GBYTES={BYTES}",))
    return vb.build(spec, HARNESS)


def test_lint_clean_and_lint_failure(tmp_path: Path) -> None:
    vb.lint([DESIGN], "stream_add")
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input wire a, input wire b, output wire y);\n assign y = a;\n"
                   "endmodule\n")
    with pytest.raises(EtchError, match="lint of bad failed.*UNUSED"):
        vb.lint([bad], "bad")


@pytest.mark.parametrize("stall", [0, 45])
def test_stream_through_harness(exe: Path, stall: int) -> None:
    x = np.random.default_rng(stall).integers(0, 256, (9, 12), dtype=np.uint8)
    y, stats = vb.simulate(exe, vb.StreamShape(12, BYTES, 12, BYTES), x, max_cycles=10_000,
                           stall_percent=stall, seed=7)
    np.testing.assert_array_equal(y, (x.astype(np.int64) + 3) % 256)
    assert stats["n"] == 9 and stats["busy"] > 0
    if not stall:  # 3 beats per inference, one beat per cycle, two pipeline stages
        assert stats["cycles"] == 9 * 3 + 2
        assert stats["latency_max"] == 3 + 2


def test_build_is_cached_by_content(exe: Path, tmp_path: Path) -> None:
    spec = vb.BuildSpec((DESIGN,), "stream_add", stats=True, extra=(f"-GBYTES={BYTES}",))
    assert vb.build(spec, HARNESS) == exe
    changed = tmp_path / "stream_add.v"
    changed.write_text(DESIGN.read_text().replace("K     = 3", "K     = 4"))
    other = vb.BuildSpec((changed,), "stream_add", stats=True, extra=(f"-GBYTES={BYTES}",))
    assert other.key(HARNESS) != spec.key(HARNESS)


def test_stall_past_max_cycles_is_an_error(exe: Path) -> None:
    x = np.zeros((50, 12), np.uint8)
    with pytest.raises(EtchError, match="no progress"):
        vb.simulate(exe, vb.StreamShape(12, BYTES, 12, BYTES), x, max_cycles=20)


def _artifact(tmp_path: Path) -> Path:
    """A verilog-style artifact: Identity on the host, then Add(x, 3) on the design."""
    g = Graph("infra")
    for name in ("x", "h", "y"):
        g.add_value(Value(name, (1, 12), "uint8"))
    g.add_value(Value("k", (), "uint8", np.array(3, np.uint8)))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node(Node("Identity", ["x"], ["h"], name="host_copy"))
    g.add_node(Node("Add", ["h", "k"], ["y"], name="hw_add"))
    out = tmp_path / "art"
    (out / "rtl").mkdir(parents=True)
    (out / "tb").mkdir()
    shutil.copy(DESIGN, out / "rtl" / "stream_add.v")
    shutil.copy(HARNESS, out / "tb" / "stream_harness.cpp")
    onnx_export.save(g, str(out / "graph.onnx"))
    spec = {"name": "seg0", "nodes": ["hw_add"], "top": "stream_add",
            "sources": ["rtl/stream_add.v"], "stats": True, "max_cycles": 100,
            "inputs": [{"name": "h", "shape": [1, 12], "dtype": "uint8"}],
            "outputs": [{"name": "y", "shape": [1, 12], "dtype": "uint8"}],
            "stream": {"in_bytes": 12, "in_beat": BYTES, "out_bytes": 12, "out_beat": BYTES},
            "layers": {"0": "stage0", "1": "stage1"},
            "build": {"args": [f"-GBYTES={BYTES}"]}}
    io = [{"name": "x", "shape": [1, 12], "dtype": "uint8"}]
    manifest = {"format_version": runtime.FORMAT_VERSION, "runtime": "verilator",
                "target": "verilog", "graph": "graph.onnx", "inputs": io,
                "outputs": [{**io[0], "name": "y"}], "segments": [spec],
                "files": files.listed(out)}  # checked on load, as the driver writes them
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_executor_runs_host_and_segments(tmp_path: Path) -> None:
    ex = runtime.load(_artifact(tmp_path))
    rng = np.random.default_rng(1)
    batch = [{"x": rng.integers(0, 256, (1, 12), dtype=np.uint8)} for _ in range(6)]
    outs = ex.run_batch(batch)
    for b, o in zip(batch, outs):
        np.testing.assert_array_equal(o["y"], b["x"] + np.uint8(3))
    assert ex.stats["seg0"]["n"] == 6 and set(ex.stats["seg0"]["layers"]) <= {"stage0", "stage1"}
    np.testing.assert_array_equal(ex.run(batch[0])["y"], batch[0]["x"] + np.uint8(3))


def test_area_counts_cells_luts_and_flops() -> None:
    area = synth_area([DESIGN], "stream_add")
    assert area["ffs"] == 2 * 8 * 5 + 2  # two beat registers and two valid bits
    assert area["cells"] > area["ffs"] and area["luts"] > 0
    assert "stream_add" in area["modules"]


def test_yosys_module_names_are_readable() -> None:
    raw = "$paramod\\pe_mac\\AW=s32'00000000000000000000000000001000\\NEG=s4'1110"
    assert module_name(raw) == "pe_mac(AW=8,NEG=-2)"
    assert module_name("\\top") == "top"
