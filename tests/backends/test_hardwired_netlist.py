"""The hardwired generator without simulation: CSD, CSE, grouped neurons, exact
requantisation constants, folding and pipelining, checked by the netlist's exact evaluator
(which also checks every node's recorded range) against numpy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.verilog.hardwired import cmvm, grouped, pipeline, printer, requant
from backends.verilog.hardwired.evaluate import evaluate
from backends.verilog.hardwired.layer import LayerSpec, datapath
from backends.verilog.hardwired.netlist import K, Netlist, bits_for
from backends.verilog.hardwired.outunit import Unit, lane
from compiler.reference import requantize
from passes import hardwired_coltree as coltree
from passes import hardwired_csd as csd
from passes import hardwired_cse as cse

CODES = {"int8": (-128, 127), "uint8": (0, 255)}


def weights(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    """Random integer weights of a kind: int8/int4/int2 codes or ternary, some zero."""
    lo, hi = {"int8": (-128, 127), "int4": (-8, 7), "int2": (-2, 1), "ternary": (-1, 1)}[kind]
    w = rng.integers(lo, hi + 1, shape)
    w[rng.random(shape) < 0.15] = 0
    return w


def matrix_net(w: np.ndarray, dtype: str = "int8") -> tuple[Netlist, list[int]]:
    net = Netlist("t")
    net.add_input("x", 8, w.shape[0], dtype == "int8")
    return net, [net.field("x", k) for k in range(w.shape[0])]


@given(st.integers(-(1 << 40), 1 << 40))
def test_csd_terms_reconstruct_and_are_non_adjacent(v: int) -> None:
    ts = csd.terms(v)
    assert sum(g << s for s, g in ts) == v
    shifts = [s for s, _ in ts]
    assert all(b - a >= 2 for a, b in itertools.pairwise(shifts))


def test_csd_digits_vectorised_match_scalar(rng: np.random.Generator) -> None:
    w = rng.integers(-300, 300, (7, 9))
    idx, sh, sg = csd.digits(w)
    rebuilt = np.zeros(w.size, np.int64)
    np.add.at(rebuilt, idx, sg << sh)
    np.testing.assert_array_equal(rebuilt.reshape(w.shape), w)
    assert idx.size == sum(len(csd.terms(int(v))) for v in w.ravel())


@pytest.mark.parametrize("kind", ["int8", "int4", "int2", "ternary"])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("method", ["plain", "cse"])
def test_cmvm_is_exact(kind: str, dtype: str, method: str, rng: np.random.Generator) -> None:
    w = weights(rng, (24, 13), kind)
    w[:, 3] = 0  # an all-zero neuron costs nothing
    net, xs = matrix_net(w, dtype)
    outs = cmvm.build(net, xs, w, method)
    assert outs[3] is None
    net.add_output("y", 32, outs)
    x = rng.integers(*CODES[dtype], (64, 24), endpoint=True)
    np.testing.assert_array_equal(evaluate(net, {"x": x})["y"], x @ w)


def test_cse_saves_a_quarter_of_plain_csd_adders(rng: np.random.Generator) -> None:
    w = weights(rng, (32, 32), "int4")
    counts = {}
    for method in ("plain", "cse"):
        net, xs = matrix_net(w)
        cmvm.build(net, xs, w, method)
        counts[method] = net.count(K.ADD)
    assert counts["plain"] == csd.count(w) - np.count_nonzero(np.abs(w).sum(axis=0))
    assert counts["cse"] <= 0.75 * counts["plain"]


@settings(deadline=None, max_examples=50)  # a netlist build per example: no wall-clock limit
@given(st.integers(1, 24), st.integers(1, 12), st.sampled_from(["int8", "int4", "ternary"]),
       st.sampled_from(["int8", "uint8"]), st.integers(0, 2**32 - 1))
def test_cse_is_exact_on_random_matrices(k: int, n: int, kind: str, dtype: str,
                                         seed: int) -> None:
    """Property: for any shape, weight kind and input range, the CSE netlist's value (and
    every node's recorded range, checked by `evaluate`) equals the matrix product."""
    rng = np.random.default_rng(seed)
    w = weights(rng, (k, n), kind)
    net, xs = matrix_net(w, dtype)
    net.add_output("y", 32, cmvm.build(net, xs, w, "cse", block=max(k // 2, 1)))
    lo, hi = CODES[dtype]
    x = np.concatenate([rng.integers(lo, hi, (16, k), endpoint=True),
                        np.full((1, k), lo), np.full((1, k), hi)])
    np.testing.assert_array_equal(evaluate(net, {"x": x})["y"], x @ w)


def test_no_adder_subtracts_its_less_shifted_operand(rng: np.random.Generator) -> None:
    """(p << d) - q needs a borrow chain through its low d bits; cmvm builds q - (p << d)
    and carries the sign instead, so that the low bits of every adder pass through."""
    w = weights(rng, (32, 16), "int8")
    net, xs = matrix_net(w)
    net.add_output("y", 32, cmvm.build(net, xs, w, "cse"))
    subs = [n for n in range(len(net)) if net.kind[n] == K.ADD and net.neg[n] & 2]
    assert subs and all(net.sb[n] >= net.sa[n] for n in subs)
    x = rng.integers(-128, 128, (16, 32))
    np.testing.assert_array_equal(evaluate(net, {"x": x})["y"], x @ w)


def test_blocked_cse_is_exact(rng: np.random.Generator) -> None:
    w = weights(rng, (40, 12), "int4")
    net, xs = matrix_net(w)
    net.add_output("y", 32, cmvm.build(net, xs, w, "cse", block=8))
    x = rng.integers(-128, 128, (32, 40))
    np.testing.assert_array_equal(evaluate(net, {"x": x})["y"], x @ w)


def test_block_size_keeps_small_matrices_whole() -> None:
    assert cse.block_size(np.ones((64, 64), np.int64)) == 64
    big = cse.block_size(np.full((1024, 1024), 7, np.int64))
    assert 4 <= big < 1024 and big & (big - 1) == 0


def test_exact_ranges_under_cancellation() -> None:
    """x - (x << 3) = -7x: interval arithmetic would give a wider range; forms are exact."""
    w = np.array([[7, -7], [1, 0]])
    net, xs = matrix_net(w, "uint8")
    net.add_output("y", 32, cmvm.build(net, xs, w, "cse"))
    (n0, s0, g0), _ = net.out_nodes["y"]
    lo, hi = sorted(g0 * (v << s0) for v in net.range(n0))
    assert (lo, hi) == (0, 7 * 255 + 255)


def test_cse_symbols_are_shared() -> None:
    rows = [{(0, 0): 1, (1, 2): 1}, {(0, 0): 1, (1, 2): 1, (2, 0): -1},
            {(0, 1): -1, (1, 3): -1}]
    syms, out = cse.eliminate(rows, 3, 8)
    assert syms == [cse.Sym(0, 1, 2, 1)]
    assert out[0] == {(3, 0): 1} and out[2] == {(3, 1): -1}


@pytest.mark.parametrize("score", cse.SCORES)
def test_every_cse_score_is_exact_and_estimated(score: str, rng: np.random.Generator) -> None:
    """Each score's result reconstructs W exactly, and `best` keeps the one of fewest
    estimated adder bits."""
    w = weights(rng, (24, 16), "int8")
    syms, rows = cse.eliminate(cse.digit_rows(w), 24, 8, score)
    vals = [np.eye(24, dtype=object)[k] for k in range(24)]
    for s in syms:
        a, b = (vals[s.a], vals[s.b] * (1 << s.d)) if s.d >= 0 else (
            vals[s.a] * (1 << -s.d), vals[s.b])
        vals.append(a + s.sign * b)
    rebuilt = np.array([sum((g * (vals[sym] * (1 << e)) for (sym, e), g in row.items()),
                            np.zeros(24, dtype=object)) for row in rows]).T
    np.testing.assert_array_equal(rebuilt.astype(np.int64), w)
    ests = {sc: cse.adder_bits(*cse.eliminate(cse.digit_rows(w), 24, 8, sc), 24, 8)
            for sc in cse.SCORES}
    pl = cse.plan(w, 8, columns=False)
    chosen = pl.strategy.split("/")[1]
    assert ests[chosen] == min(ests.values()) == pl.estimate


def test_plan_keeps_the_lowest_estimate_of_its_strategies(rng: np.random.Generator) -> None:
    w = weights(rng, (16, 12), "int4")
    w[:, 5] = w[:, 2] - 2 * (w[:, 2] % 2)  # near-duplicate columns: parent trees pay off
    pl = cse.plan(w, 8)
    ests = []
    for name, t in cse.strategies(w, True):
        bits = cse.column_bits(w, 8).tolist()
        extra = [[bits[p]] if p >= 0 else [] for p in t.parent.tolist()]
        for sc in cse.SCORES:
            ests.append(cse.adder_bits(*cse.eliminate(cse.digit_rows(t.diff), 16, 8, sc), 16,
                                       8, extra))
    assert pl.estimate == min(ests)
    assert len(cse.strategies(w, True)) > 1 and len(cse.strategies(w, False)) == 1


@given(st.integers(-(1 << 40), 1 << 40))
def test_naf_weight_counts_csd_digits(v: int) -> None:
    assert int(coltree.naf_weight(np.array([v]))[0]) == len(csd.terms(v))


@pytest.mark.parametrize("penalty", [1, 2, 3])
def test_column_tree_reconstructs_w(penalty: int, rng: np.random.Generator) -> None:
    """W_j == D_j + s_j W_p for every parent; parents come first; the tree never has more
    digits plus parent edges than W's digits (it may always keep every column a root)."""
    w = weights(rng, (20, 24), "int4")
    w[:, 7], w[:, 9], w[:, 11] = w[:, 1], -w[:, 1], w[:, 1] + 1
    t = coltree.tree(w, penalty=penalty)
    seen: set[int] = set()
    for j in t.order:
        p = int(t.parent[j])
        assert p < 0 or p in seen
        seen.add(j)
        rebuilt = t.diff[:, j] + (t.sign[j] * w[:, p] if p >= 0 else 0)
        np.testing.assert_array_equal(rebuilt, w[:, j])
    if csd.count(w[:, 1]) > penalty:  # copies of column 1 cost their parent edge only
        assert sum(not t.diff[:, j].any() for j in (1, 7, 9)) >= 2
    assert csd.count(t.diff) + penalty * t.shared <= csd.count(w)


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 16), st.integers(2, 12), st.sampled_from(["int8", "int4", "ternary"]),
       st.sampled_from(["int8", "uint8"]), st.integers(0, 2**32 - 1))
def test_column_sharing_is_exact(k: int, n: int, kind: str, dtype: str, seed: int) -> None:
    """Property: with similar columns (the parent tree in use), the netlist equals the
    product and every node's recorded range holds (checked by `evaluate`)."""
    rng = np.random.default_rng(seed)
    base = weights(rng, (k, 2), kind)
    w = base[:, rng.integers(0, 2, n)] * rng.choice([-1, 1], n)
    w += (rng.random((k, n)) < 0.2) * rng.integers(-2, 3, (k, n))
    net, xs = matrix_net(w, dtype)
    net.add_output("y", 32, cmvm.build(net, xs, w, "cse"))
    lo, hi = CODES[dtype]
    x = np.concatenate([rng.integers(lo, hi, (16, k), endpoint=True),
                        np.full((1, k), lo), np.full((1, k), hi)])
    np.testing.assert_array_equal(evaluate(net, {"x": x})["y"], x @ w)


@pytest.mark.parametrize("kind", ["int4", "ternary"])
def test_grouped_parallel_and_bitplanes(kind: str, rng: np.random.Generator) -> None:
    w = weights(rng, (20, 6), kind)
    net, xs = matrix_net(w)
    net.add_output("y", 32, grouped.build(net, xs, w))
    x = rng.integers(-128, 128, (40, 20))
    np.testing.assert_array_equal(evaluate(net, {"x": x})["y"], x @ w)
    bits = Netlist("b")
    bits.add_input("x", 1, 20, False)
    bits.add_output("y", 32, grouped.build(bits, None, w, bits.plane("x")))
    plane = rng.integers(0, 2, (40, 20))
    np.testing.assert_array_equal(evaluate(bits, {"x": plane})["y"], plane @ w)
    assert bits.count(K.POPCOUNT) <= np.count_nonzero(np.diff(np.sort(w, 0), axis=0)) + 6


def channel(rng: np.random.Generator, relu: bool) -> requant.Channel:
    lo = int(rng.integers(-40000, 0))
    hi = int(rng.integers(1, 40000))
    m0 = int(rng.integers(1 << 30, 1 << 31))
    zp = -128 if relu else int(rng.integers(-20, 20))
    return requant.Channel(lo, hi, m0, int(rng.integers(36, 44)), zp, zp if relu else -128,
                           127)


@pytest.mark.parametrize("relu", [False, True])
def test_requant_constants_are_exact_over_the_range(relu: bool,
                                                    rng: np.random.Generator) -> None:
    chans = [channel(rng, relu) for _ in range(6)]
    s, ms = requant.choose(chans)
    for c, m in zip(chans, ms):
        a = np.arange(c.lo, c.hi + 1, dtype=np.int64)
        np.testing.assert_array_equal(requant.mapped(a, m, s, c), c.reference(a))
    # never more adders than the reference constants, usually fewer
    assert sum(len(csd.terms(m)) for m in ms) <= sum(len(csd.terms(c.m0)) for c in chans)


def test_output_unit_lane_matches_reference(rng: np.random.Generator) -> None:
    net = Netlist("u")
    net.add_input("a", 20, 1)
    a = net.field("a", 0, lo=-30000, hi=30000)
    c = requant.Channel(-30000 + 77, 30000 + 77, 1518500250, 40, 5, -128, 127)
    s, (m,) = requant.choose([c])
    table = tuple(int(v) for v in np.clip(np.arange(-128, 128) // 3, -128, 127))
    unit = Unit((77,), (m,), s, 5, -128, 127, table, -128)
    net.add_output("y", 8, [lane(net, (a, 0, 1), unit)])
    acc = np.arange(-30000, 30001, 7, dtype=np.int64)
    want = np.asarray(table)[requantize(acc + 77, c.m0, c.shift, 5, -128, 127) + 128]
    np.testing.assert_array_equal(evaluate(net, {"a": acc[:, None]})["y"][:, 0], want)


def test_bits_for() -> None:
    assert [bits_for(0, 1), bits_for(0, 255), bits_for(-128, 127), bits_for(-1, 0)] == \
        [1, 8, 8, 1]
    assert bits_for(-129, 0) == 9 and bits_for(-3, 4) == 4


def spec(rng: np.random.Generator, **kw) -> LayerSpec:
    w = weights(rng, (12, 7), "int4")
    return LayerSpec("fc", w, rng.integers(-300, 300, 7), rng.integers(1 << 30, 1 << 31, 7),
                     rng.integers(38, 42, 7), -3, -128, 127, **kw)


@pytest.mark.parametrize("every", [1, 2, 3])
def test_pipeline_registers_every_n_levels(every: int, rng: np.random.Generator) -> None:
    net = datapath(spec(rng, pipeline=every))
    flat = datapath(spec(np.random.default_rng(0), pipeline=0))
    assert pipeline.latency(net) >= pipeline.latency(flat)
    levels = {}
    for n in range(len(net)):  # logic levels between registers stay within `every`
        ops = [o for o in net.operands(n) if net.kind[o] not in (K.CONST, K.REG, K.IN)]
        lvl = max((levels[o] for o in ops), default=0) + pipeline._depth(net, n)
        levels[n] = 0 if net.kind[n] == K.REG else lvl
        if net.kind[n] == K.ADD:
            assert levels[n] <= every


@pytest.mark.parametrize("fold", [2, 3])
@pytest.mark.parametrize("neuron", ["csd", "grouped"])
def test_folded_datapath_is_exact_per_phase(fold: int, neuron: str,
                                            rng: np.random.Generator) -> None:
    sp = spec(rng, neuron=neuron, fold=fold)
    net = datapath(sp)
    x = rng.integers(-128, 128, (30, sp.k))
    acc = x @ sp.w + sp.bias
    want = np.stack([requantize(acc[:, n], sp.m0[n], sp.shift[n], -3, -128, 127)
                     for n in range(sp.n)], axis=1)
    for p in range(fold):
        ins = {"x": x, "v": np.ones((30, 1), np.int64), "ph": np.full((30, 1), p),
               "bt": np.zeros((30, 1), np.int64)}
        y = evaluate(net, ins)["y"]
        for lane_ in range(sp.lanes):
            n = p * sp.lanes + lane_
            if n < sp.n:
                np.testing.assert_array_equal(y[:, lane_], want[:, n])


def test_printer_is_deterministic_and_sized(rng: np.random.Generator) -> None:
    sp = spec(rng, pipeline=2)
    a = printer.render(datapath(sp), "m", "// h")
    b = printer.render(datapath(sp), "m", "// h")
    assert a == b and a.startswith("// h\n`default_nettype none\nmodule m (")
    w = printer.widths(datapath(sp))
    assert max(w) <= 32  # acc 12 * 128 * 8 + bias fits 15 bits; products of small m


def test_quick_cse_above_quick_weights(monkeypatch: pytest.MonkeyPatch,
                                       rng: np.random.Generator) -> None:
    """A matrix of more than QUICK_WEIGHTS weights runs one strategy and one score per
    block, still exact; the benchmark's 128x128 matrices keep the full search."""
    assert not cse.quick(np.zeros((128, 128))) and cse.quick(np.zeros((512, 64)))
    w = weights(rng, (16, 12), "int4")
    w[:, 5] = w[:, 2] - 2 * (w[:, 2] % 2)
    assert [n for n, _ in cse.strategies(w, True, quick=True)] == ["tree1"]
    assert cse.plan(w, 8, fast=True).strategy == f"tree1/{cse.QUICK_SCORE}"
    assert len(cse.strategies(w, True)) > 1
    seen = []
    monkeypatch.setattr(cse, "QUICK_WEIGHTS", 100)
    real = cse.plan
    monkeypatch.setattr(cse, "plan", lambda *a: seen.append(a[-1]) or real(*a))
    net, xs = matrix_net(w)
    net.add_output("y", 32, cmvm.build(net, xs, w, "cse", block=8))
    assert seen == [True, True]
    x = rng.integers(-128, 128, (50, 16))
    np.testing.assert_array_equal(evaluate(net, {"x": x})["y"], x @ w)
