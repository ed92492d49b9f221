"""Big hardwired layers as column parts: the split, its files, per-part lint and builds.

The thresholds are lowered so that small layers split (a real split starts at 64k
weights); the parts' outputs must equal the whole layer's, in the netlist model and in
Verilator (per-part DPI libraries against one ordinary build)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.verilog import HARNESS
from backends.verilog.hardwired import columns, design
from backends.verilog.hardwired.evaluate import evaluate
from backends.verilog.hardwired.layer import datapath
from compiler.errors import EtchError
from runtime import verilator_build as vb
from runtime import verilator_parts as vp
from tests.backends.test_hardwired_rtl import make_spec, reference, stream


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columns, "SPLIT_WEIGHTS", 200)
    monkeypatch.setattr(columns, "PART_WEIGHTS", 24 * 5)  # 24 inputs: 5 columns a part


def spec(**kw):
    return make_spec(np.random.default_rng(5), "big/fc", 24, 13, 4, True, False, **kw)


def test_parts_compute_the_layer(small_parts: None) -> None:
    """The columns of every part, side by side, are the layer (netlist model)."""
    s = spec()
    ranges = columns.column_ranges(s)
    assert [(r.start, r.stop) for r in ranges] == [(0, 5), (5, 10), (10, 13)]
    x = np.random.default_rng(0).integers(-128, 128, (40, s.k))
    got = []
    for r in ranges:
        ins = {"x": x, "v": np.ones((40, 1), np.int64), "ph": np.zeros((40, 1), np.int64),
               "bt": np.zeros((40, 1), np.int64)}
        got.append(evaluate(datapath(columns.column_spec(s, r)), ins)["y"])
    np.testing.assert_array_equal(np.concatenate(got, axis=1), reference([s], x))


def test_what_splits(small_parts: None) -> None:
    assert columns.column_ranges(spec()) is not None
    assert columns.column_ranges(spec(fold=2)) is None
    assert columns.column_ranges(make_spec(np.random.default_rng(1), "s", 8, 8, 4, True,
                                           False)) is None


def test_split_design_files(small_parts: None, tmp_path: Path) -> None:
    """One file per part holding only that module; the datapath instantiates them; the
    same bytes from a second run."""
    d = design.write([spec()], tmp_path / "a")
    assert [m for m, _ in d.parts] == [f"hw_big_fc_dp_p{i}" for i in range(3)]
    for module, f in d.parts:
        text = f.read_text()
        assert f.name == f"{module}.v" and text.count("\nmodule ") == 1
        assert text.startswith("// etch ")
    dp = (tmp_path / "a" / "hw_big_fc_dp.v").read_text()
    assert "u_p2 (.x(x), .y(y[103:80]))" in dp and ".v_o(v_o)" in dp
    assert d.nodes == sum(b.nodes for b in d.layers) > 0
    assert d.layers[0].cost().adders > 0
    again = design.write([spec()], tmp_path / "b")
    for f, g in zip(d.files, again.files, strict=True):
        assert f.read_bytes() == g.read_bytes(), f.name


def test_stub_has_the_ports(small_parts: None, tmp_path: Path) -> None:
    d = design.write([spec()], tmp_path)
    module, f = d.parts[0]
    stub = vp.stub_text(f, module)
    assert "input  wire [191:0] x" in stub and "output wire [39:0] y" in stub
    assert "assign v_o = '0;" in stub and "n1" not in stub
    with pytest.raises(EtchError, match="no ANSI module header"):
        vp.stub_text(f, "other")


@pytest.mark.verilator
def test_lint_split_clean_and_catches_a_part(small_parts: None, tmp_path: Path) -> None:
    d = design.write([spec()], tmp_path)
    vb.lint_split(d.files, d.top, d.parts, d.lint_args)
    _module, f = d.parts[1]
    text = f.read_text()
    body = text.index(");\n") + 3
    f.write_text(text[:body] + "    wire [2:0] etch_unread = 4'd9;\n" + text[body:])
    with pytest.raises(EtchError, match="WIDTH|UNUSED"):
        vb.lint_split(d.files, d.top, d.parts, d.lint_args)


@pytest.mark.verilator
def test_lint_split_checks_the_connections(small_parts: None, tmp_path: Path) -> None:
    """A part whose port no longer matches the datapath's connection fails the lint of
    the rest (the stub carries the part's ports)."""
    d = design.write([spec()], tmp_path)
    _module, f = d.parts[2]
    f.write_text(f.read_text().replace("output wire [23:0] y", "output wire [22:0] y"))
    with pytest.raises(EtchError, match="lint"):
        vb.lint_split(d.files, d.top, d.parts, d.lint_args)


@pytest.mark.verilator
def test_lint_by_verilation_feeds_the_build(small_parts: None, tmp_path: Path) -> None:
    """With the build's arguments, a part's lint is its verilation under -Wall, kept in
    the cache: the part's build then only compiles it (a failing Verilator command is not
    run again); a warning in a part fails the lint with the part's name."""
    d = design.write([spec()], tmp_path / "rtl")
    cache = tmp_path / "cache"
    vb.lint_split(d.files, d.top, d.parts, d.lint_args, build_extra=d.build_args, cache=cache)
    assert len(list(cache.glob("cc-*/V*_p?.mk"))) == len(d.parts)
    module, f = d.parts[0]
    sv, lib = vp.build_part(module, f, cache, "-O0", d.build_args, ["false"])
    assert lib.is_file() and sv.is_file()
    module, f = d.parts[1]
    text = f.read_text()
    body = text.index(");\n") + 3
    f.write_text(text[:body] + "    wire [2:0] etch_unread = 4'd9;\n" + text[body:])
    with pytest.raises(EtchError, match=f"lint of {module} failed.*(WIDTH|UNUSED)"):
        vb.lint_split(d.files, d.top, d.parts, d.lint_args, build_extra=d.build_args,
                      cache=cache)


def test_part_recipe_is_one_translation_unit(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A part is verilated under -Wall into one C++ file (`--output-split 0`: one g++ per
    part, its class header parsed once), the design's own arguments after it (function
    splitting); the recipe is in the cache key."""
    import sys

    log = tmp_path / "argv.txt"
    code = f"import sys; open({str(log)!r}, 'w').write(' '.join(sys.argv[1:]))"
    fake = [sys.executable, "-c", code]
    f = tmp_path / "m.v"
    f.write_text("module m; endmodule\n")
    vp.verilate_part("m", f, tmp_path / "c", ("--output-split-cfuncs", "500"), fake)
    argv = log.read_text()
    assert "-Wall" in argv and "--lib-create m" in argv
    assert argv.index("--output-split 0") < argv.index("--output-split-cfuncs 500")
    assert "-fno-dfg" in argv
    key = vp.part_key("m", f, "cc", ())
    monkeypatch.setattr(vp, "PART_FORMAT", vp.PART_FORMAT + 1)
    assert vp.part_key("m", f, "cc", ()) != key


def test_manifest_carries_the_parts(small_parts: None, tmp_path: Path) -> None:
    from backends.verilog import hardwired

    d = design.write([spec()], tmp_path / "rtl")
    entry = hardwired._segment_entry({"name": "seg0", "nodes": ["n"], "input": {},
                                      "output": {}}, d, tmp_path)
    assert entry["build"]["parts"][0] == ["hw_big_fc_dp_p0", "rtl/hw_big_fc_dp_p0.v"]
    bs = hardwired._build_spec(entry, tmp_path)
    assert bs.parts == tuple(d.parts)
    assert not any(Path(p).name.startswith("hw_big_fc_dp_p") for p in bs.whole_sources())


@pytest.mark.verilator
@pytest.mark.slow
def test_part_builds_simulate_like_one_build(small_parts: None, tmp_path: Path) -> None:
    """Per-part DPI libraries against one ordinary build of the same files: the same
    outputs bit for bit, both the integer reference; a second build reuses every part."""
    s = spec()
    d = design.write([s], tmp_path)
    x = np.random.default_rng(2).integers(-128, 128, (60, s.k))
    outs = []
    cache = tmp_path / "cache"
    for parts in ((), tuple(d.parts)):
        exe = vb.build(vb.BuildSpec(tuple(d.files), d.top, extra=d.build_args, parts=parts),
                       HARNESS, cache=cache)
        y, _ = vb.simulate(exe, stream(d), x.astype(np.int8).view(np.uint8), max_cycles=5_000)
        outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[1].view(np.int8), reference([s], x))
    assert len(list(cache.glob("part-*/lib*.a"))) == 3
