"""The tensor engine's RTL in Verilator: module testbenches against their numpy models,
lint of generated tops across configurations, and whole models bit-exact against the
integer reference with the simulated cycles equal to the compiler's estimate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import compiler
import runtime
from backends.verilog import HARNESS
from backends.verilog.engine import top
from compiler import reference
from compiler.options import CompileOptions
from models import zoo
from runtime import verilator_build as vb
from tests.backends import engine_graphs
from tests.backends.engine_helpers import (
    assert_bit_exact_and_as_estimated,
    engine_meta,
    graph_artifact,
    planned,
    samples,
    shared_config,
    verilog,
    with_config,
    write_artifact,
)

pytestmark = pytest.mark.verilator
RTL = top.RTL
TB = Path(__file__).resolve().parent / "rtl"
# zoo models simulated on one shared engine configuration in the default run
SHARED = ["digits_cnn", "resnet_block", "mobilenet"]


def _le_bytes(values: list[tuple[int, int]]) -> np.ndarray:
    """Fields (value, bits) packed from bit 0 into little-endian bytes."""
    word, pos = 0, 0
    for v, bits in values:
        word |= (int(v) & ((1 << bits) - 1)) << pos
        pos += bits
    return np.frombuffer(word.to_bytes(-(-pos // 8), "little"), np.uint8)


def _signed(u: np.ndarray, bits: int) -> np.ndarray:
    u = u.astype(np.int64) & ((1 << bits) - 1)
    return np.where(u >> (bits - 1), u - (1 << bits), u)


def test_requantiser_matches_the_reference_formula() -> None:
    exe = vb.build(vb.BuildSpec((RTL / "te_requant.v", TB / "tb_requant.v"), "tb_requant"),
                   HARNESS)
    rng = np.random.default_rng(3)
    n = 4000
    x = rng.integers(-(1 << 27), 1 << 27, n)
    x[:200] = rng.integers(-300, 300, 200)
    m0 = rng.integers(1 << 30, 1 << 31, n)
    m0[:50] = 0
    sh = rng.integers(0, 64, n)
    zp = rng.integers(-128, 256, n)
    lo = rng.integers(-200, 100, n)
    hi = lo + rng.integers(0, 300, n)
    rows = np.stack([np.concatenate([_le_bytes([(a, 40), (b, 32), (c, 8), (d, 16), (e, 16),
                                                (f, 16)])]) for a, b, c, d, e, f in
                     zip(x, m0, sh, zp, lo, hi)])
    out, _ = vb.simulate(exe, vb.StreamShape(16, 16, 6, 6), rows, max_cycles=20 * n)
    y_main = _signed(out[:, 0].astype(np.int64) | (out[:, 1].astype(np.int64) << 8), 16)
    y_side = out[:, 2:6].copy().view("<i4").reshape(-1)
    np.testing.assert_array_equal(y_main, reference.requantize(x, m0, sh, zp, lo, hi))
    side = reference.requantize(_signed(x, 11), m0, sh, 0, -(1 << 31), (1 << 31) - 1)
    np.testing.assert_array_equal(y_side, side)


def test_reference_array_matches_matmul() -> None:
    exe = vb.build(vb.BuildSpec((RTL / "te_array_ref.v", TB / "tb_array.v"), "tb_array"),
                   HARNESS)
    rng = np.random.default_rng(4)
    n, rows, cols = 300, 4, 3
    w = rng.integers(-16, 16, (n, rows, cols))
    a = rng.integers(-255, 256, (n, rows))
    beats = np.stack([_le_bytes([(v, 5) for v in wi.reshape(-1)] + [(v, 9) for v in ai]
                                + [(0, 8)]) for wi, ai in zip(w, a)])
    out, _ = vb.simulate(exe, vb.StreamShape(13, 13, 7, 7), beats, max_cycles=50 * n)
    words = [int.from_bytes(bytes(r), "little") for r in out]
    got = np.array([[_signed(np.array([wd >> (16 * c)]), 16)[0] for c in range(cols)]
                    for wd in words])
    np.testing.assert_array_equal(got, np.einsum("nr,nrc->nc", a, w))


@pytest.mark.parametrize("shape,ntab,qadd", [((8, 8), 0, 0), ((4, 16), 2, 1),
                                             ((16, 4), 1, 0), ((1, 1), 0, 1)])
def test_generated_tops_are_lint_clean(tmp_path: Path, shape: tuple[int, int], ntab: int,
                                       qadd: int) -> None:
    rows, cols = shape
    cfg = {"rows": rows, "cols": cols, "lanes": max(rows, cols), "aw": 9, "ww": 4, "pw": 15,
           "accw": 22, "bw": 12, "sw": 6, "adepth": 100, "wdepth": 33, "idepth": 9,
           "pdepth": 3, "accd": 5, "ntab": ntab, "qadd": qadd, "gw": 16, "xa": 24,
           "array_module": "te_array_ref", "array_params": ""}
    files = top.write_rtl(tmp_path, cfg, [RTL / "te_array_ref.v"])
    vb.lint([tmp_path / f for f in files], top.TOP)


def test_digits_mlp_bit_exact_and_cycles_as_estimated() -> None:
    """At its own configuration (the build the CLI tests share)."""
    assert_bit_exact_and_as_estimated(verilog("digits_mlp").path, samples("digits_mlp", 12))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SHARED planned for one 8x8 systolic/mac configuration (the largest depths and widths
    of theirs): three models, one Verilator build."""
    graphs = {name: planned(name) for name in SHARED}
    config = shared_config(list(graphs.values()))
    root = tmp_path_factory.mktemp("shared")
    opts = CompileOptions(target="verilog", array=(8, 8))
    return {name: write_artifact(with_config(g, config), root / name, opts)
            for name, g in graphs.items()}


def test_the_shared_models_exercise_the_output_unit_and_block_tiles() -> None:
    """resnet_block adds its residual in the output unit; mobilenet's depthwise and grouped
    convolutions keep only their block-diagonal tiles."""
    _, res = engine_meta(planned("resnet_block"))
    assert any(r["kind"] == "gemm" and r["epilogue"]["qadd"] for r in res.values())
    _, mob = engine_meta(planned("mobilenet"))
    grouped = [r for r in mob.values() if r.get("groups", 1) > 1]
    assert grouped and any(sum(map(len, r["passes"])) < len(r["passes"]) * len(r["ktiles"])
                           for r in grouped)


@pytest.mark.parametrize("name", SHARED)
def test_zoo_models_bit_exact_and_cycles_as_estimated(shared: dict[str, Path],
                                                      name: str) -> None:
    assert_bit_exact_and_as_estimated(shared[name], samples(name, 12 if "digits" in name
                                                            else 3))


@pytest.mark.slow
@pytest.mark.parametrize("pe", ["mac", "booth", "bitserial"])
@pytest.mark.parametrize("engine", ["systolic", "adder-tree"])
@pytest.mark.parametrize("name", ["resnet_block", "mobilenet"])
def test_residual_and_grouped_models_on_every_array(name: str, engine: str, pe: str) -> None:
    """Each at its own configuration, every array and PE kind (one build each)."""
    assert_bit_exact_and_as_estimated(verilog(name, 8, engine, pe).path, samples(name, 3))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(engine_graphs.GRAPHS))
def test_small_graphs_in_rtl(tmp_path: Path, name: str) -> None:
    g = engine_graphs.GRAPHS[name]()
    ex = runtime.load(graph_artifact(g, tmp_path / "art"))
    batch = engine_graphs.inputs(g, 5)
    for x, got in zip(batch, ex.run_batch(batch)):
        want = reference.run(g, x)
        assert all(np.array_equal(got[k], want[k]) for k in want), name
    est = json.loads((tmp_path / "art" / "manifest.json").read_text())["engine"]
    assert ex.stats["seg0"]["cycles"] == pytest.approx(5 * est["cycles_estimate"][0]["total"],
                                                       abs=2)


@pytest.mark.slow
def test_area_json_and_the_cell_estimate(tmp_path: Path) -> None:
    """--area: Yosys cells per module, LUTs and the memories' bits; no latches; the
    estimate that --max-cells checks is within 30% of Yosys."""
    from tests.backends.engine_helpers import calib_path

    art = compiler.compile(str(zoo.model_path("digits_mlp")), "verilog",
                           calib=str(calib_path("digits_mlp")), area=True)
    area = json.loads((art.path / "area.json").read_text())
    assert area["cells"] > 0 and area["luts"] > 0 and area["memory_bits"]["weights"] > 0
    assert not any("LATCH" in t.upper() for t in area["cells_by_type"])
    # area.module_name: `name(P=v)`, or `name$<sha1[:8]>` where Yosys hashed long parameters
    bases = {m.split("(")[0].split("$")[0] for m in area["modules"]}
    assert {"te_outunit", "te_requant", "te_ctrl"} <= bases
    est = art.manifest["engine"]["cells_estimate"]["total"]
    assert 0.7 < est / area["cells"] < 1.3
