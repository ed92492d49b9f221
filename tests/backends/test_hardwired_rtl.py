"""Hardwired layers in Verilator: generated Verilog is lint-clean and simulates bit-exactly
against numpy, in every mode (CSD with CSE / grouped, bit-parallel / bit-serial, folded,
pipelined), under random stalls of both stream sides, with the cycle counts the design
states. One chained design covers the modes of the default run (one Verilator build)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.verilog import HARNESS
from backends.verilog.hardwired import design
from backends.verilog.hardwired import layer as layer_mod
from backends.verilog.hardwired.layer import LayerSpec
from compiler.reference import requantize
from runtime import verilator_build as vb

pytestmark = pytest.mark.verilator


def make_spec(rng: np.random.Generator, name: str, k: int, n: int, bits: int,
              in_signed: bool, relu: bool, **kw) -> LayerSpec:
    lim = 1 << (bits - 1)
    w = rng.integers(-lim, lim, (k, n)) if bits > 1 else rng.integers(-1, 2, (k, n))
    w[rng.random((k, n)) < 0.2] = 0
    zp = -128 if relu else int(rng.integers(-10, 10))
    scale = 1 << int(np.ceil(np.log2(max(1, np.abs(w).sum(axis=0).max() * 128 / 100))))
    shift = 31 + int(np.log2(scale))  # M0 / 2^shift ~ 1 / scale: outputs use the code range
    return LayerSpec(name, w, rng.integers(-200, 200, n), rng.integers(1 << 30, 1 << 31, n),
                     np.full(n, shift), zp, zp if relu else -128, 127, in_signed=in_signed,
                     **kw)


def reference(specs: list[LayerSpec], x: np.ndarray) -> np.ndarray:
    for s in specs:
        acc = x.astype(np.int64) @ s.w + s.bias
        y = np.stack([requantize(acc[:, j], s.m0[j], s.shift[j], s.zp, s.qmin, s.qmax)
                      for j in range(s.n)], axis=1)
        if s.table is not None:
            y = np.asarray(s.table)[y - s.table_base]
        x = y
    return x


def chain(rng: np.random.Generator) -> list[LayerSpec]:
    """Four layers, four modes: CSE pipelined; grouped bit-serial folded; CSD folded
    pipelined with a table; grouped bit-parallel on ternary weights."""
    table = tuple(int(v) for v in np.clip(np.arange(-128, 128) // 2 + 7, -128, 127))
    return [
        make_spec(rng, "l0/cse", 20, 12, 4, True, True, pipeline=2),
        make_spec(rng, "l1 grouped", 12, 9, 4, True, False, neuron="grouped", serial=True,
                  fold=3),
        make_spec(rng, "l2", 9, 7, 8, True, False, fold=2, pipeline=1, table=table),
        make_spec(rng, "l3", 7, 5, 1, True, False, neuron="grouped"),
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[design.Design, Path, list]:
    specs = chain(np.random.default_rng(3))
    d = design.write(specs, tmp_path_factory.mktemp("hw_chain"))
    exe = vb.build(vb.BuildSpec(tuple(d.files), d.top, extra=d.build_args), HARNESS)
    return d, exe, specs


def stream(d: design.Design) -> vb.StreamShape:
    return vb.StreamShape(d.in_bytes, d.in_beat, d.out_bytes, d.out_beat)


def test_lint_clean_and_names_sanitised(built: tuple) -> None:
    d, _, _ = built
    vb.lint(d.files, d.top)
    vb.lint(d.files, d.top, d.lint_args)
    names = [f.name for f in d.files]
    assert "hw_l0_cse.v" in names and "hw_l1_grouped_dp.v" in names
    for f in d.files:
        head = f.read_text().splitlines()[0]
        assert f.name == "hw_ctrl.v" or head.startswith("// etch ")


@pytest.mark.parametrize("stall", [0, 35])
def test_chain_is_bit_exact(built: tuple, stall: int) -> None:
    d, exe, specs = built
    x = np.random.default_rng(stall).integers(-128, 128, (60, specs[0].k))
    y, stats = vb.simulate(exe, stream(d), x.astype(np.int8).view(np.uint8),
                           max_cycles=200_000, stall_percent=stall, seed=5)
    np.testing.assert_array_equal(y.view(np.int8), reference(specs, x))
    if not stall:  # the slowest layer (24 steps) sets the rate once the pipeline is full
        assert d.steps == 24
        assert stats["cycles"] == 59 * d.steps + d.latency


def test_generation_is_byte_identical(tmp_path: Path) -> None:
    a = design.write(chain(np.random.default_rng(3)), tmp_path / "a")
    b = design.write(chain(np.random.default_rng(3)), tmp_path / "b")
    for fa, fb in zip(a.files, b.files, strict=True):
        assert fa.read_bytes() == fb.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("neuron", ["csd", "grouped"])
@pytest.mark.parametrize("fold,serial,pipe", [(1, False, 0), (1, True, 1), (4, False, 2),
                                              (3, True, 0)])
def test_single_layer_modes(neuron: str, fold: int, serial: bool, pipe: int,
                            tmp_path: Path) -> None:
    rng = np.random.default_rng(fold * 10 + serial)
    specs = [make_spec(rng, "fc", 24, 10, 4, False, True, neuron=neuron, fold=fold,
                       serial=serial, pipeline=pipe)]
    d = design.write(specs, tmp_path)
    vb.lint(d.files, d.top)
    exe = vb.build(vb.BuildSpec(tuple(d.files), d.top), HARNESS)
    x = rng.integers(0, 256, (40, 24))
    y, stats = vb.simulate(exe, stream(d), x.astype(np.uint8), max_cycles=100_000)
    np.testing.assert_array_equal(y.view(np.int8), reference(specs, x))
    assert stats["cycles"] == 39 * d.steps + d.latency
    assert stats["latency_max"] == d.latency


def partitioned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, neuron: str,
                serial: bool) -> tuple[design.Design, list[LayerSpec]]:
    """A layer split into hier_block modules (small parts, to split a small layer)."""
    monkeypatch.setattr(design, "PART_NODES", 300)
    monkeypatch.setattr(layer_mod, "PART_NODES", 300)
    rng = np.random.default_rng(7)
    specs = [make_spec(rng, "big", 48, 24, 4, True, False, neuron=neuron, serial=serial,
                       pipeline=2)]
    d = design.write(specs, tmp_path)
    text = next(f for f in d.files if f.name.endswith("_dp.v")).read_text()
    assert d.hierarchical and text.count("/*verilator hier_block*/") >= 2
    return d, specs


@pytest.mark.parametrize("neuron,serial", [("csd", False), ("grouped", True)])
def test_partitioned_datapath_lints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   neuron: str, serial: bool) -> None:
    d, _ = partitioned(tmp_path, monkeypatch, neuron, serial)
    vb.lint(d.files, d.top)


@pytest.mark.slow
def test_partitioned_datapath_simulates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, specs = partitioned(tmp_path, monkeypatch, "csd", False)
    exe = vb.build(vb.BuildSpec(tuple(d.files), d.top, hierarchical=True), HARNESS)
    x = np.random.default_rng(1).integers(-128, 128, (30, specs[0].k))
    y, _ = vb.simulate(exe, stream(d), x.astype(np.int8).view(np.uint8), max_cycles=10_000)
    np.testing.assert_array_equal(y.view(np.int8), reference(specs, x))


def test_extensions_are_size_casts_and_negations_parenthesised(tmp_path: Path) -> None:
    """Sign and zero extension print as size casts (`W'($signed(a))`, `W'(a)`, no
    replicated sign bits), a negated cast is parenthesised; the module is clean under
    `verilator -Wall` and Yosys evaluates it to x @ W (signed and unsigned operands,
    shifted and negated terms)."""
    from backends.verilog.hardwired import printer
    from backends.verilog.hardwired.netlist import Netlist
    from benchmarks import bench_hardwired as bh

    net = Netlist("t")
    net.add_input("x", 8, 3)
    x = [net.field("x", k) for k in range(3)]
    u = net.field("x", 2, signed=False)           # x2's code read as unsigned
    s = net.add((x[0], 0, 1), (x[1], 2, -1))      # x0 - 4 x1, 11 bits
    t = net.add((s[0], 0, 1), (u, 1, 1))          # + 2 u, unsigned operand zero-extended
    net.add_output("y", 32, [(x[0], 1, -1), (t[0], 0, -1), (u, 0, 1)])
    text = printer.render(net, "cmvm", "// t")
    assert "{{" not in text  # no replicated sign bits
    assert "-{31'($signed(x[7:0])), 1'd0}" in text
    assert f"assign y[63:32] = -(32'($signed(n{t[0]})));" in text
    assert f"assign n{t[0]} = 12'($signed(n{s[0]})) + {{11'(x[23:16]), 1'd0}};" in text
    assert "assign y[95:64] = 32'(x[23:16]);" in text
    (tmp_path / "cmvm.v").write_text(text)
    vb.lint([tmp_path / "cmvm.v"], "cmvm")
    xs = np.array([[-128, 127, -1], [5, -7, 100], [127, -128, -128]])
    unsigned = xs[:, 2] & 0xFF
    want = np.stack([-2 * xs[:, 0], 4 * xs[:, 1] - xs[:, 0] - 2 * unsigned, unsigned], axis=1)
    got = bh.yosys_eval([tmp_path / "cmvm.v"], "cmvm", xs, 8, [32] * 3)
    np.testing.assert_array_equal(got, want)
