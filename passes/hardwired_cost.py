"""Cost estimates of hardwired layers: adders, adder bits and Yosys generic cells.

Used by `plan_hardwired` to pick a neuron style per layer (`--neuron auto`) and to refuse a
design over `--max-cells` before anything long runs, and by the backend to report what it
built. Counts follow the constructions of `backends/verilog/hardwired`:
- csd: greedy pairwise CSE over each block of inputs (`hardwired_cse`), then one adder tree
  per output over its remaining terms, plus the sum of its block partials;
- grouped: per neuron, an adder tree (or a popcount of the bit-plane) per distinct weight
  value, one subtraction per +/- pair, one constant multiply per odd magnitude part;
- both: the output unit (bias, requantisation multiply, rounding, zero point, clamp), the
  bit-serial accumulator, folding muxes and the layer's stream registers.
Widths are bounded from the exact accumulator range; a generic cell is `CELLS`-weighted
(a full adder is about five 2-input gates after ABC, a flip-flop or a 2:1 mux one cell).
The estimate is meant to rank designs and to check a budget; `etch compile --area` runs
Yosys for the real count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from passes import hardwired_csd as csd
from passes import hardwired_cse as cse

CELLS = {"adder_bit": 5.0, "mux_bit": 1.0, "ff": 1.0, "popcount_bit": 5.0}
EXACT_CSE_WEIGHTS = 300_000  # above this many weights, CSE sharing is estimated, not run
CSE_RATIO_LARGE = 0.55  # adders after CSE / plain CSD adders, measured on large int4 layers
CODE_BITS = 8


@dataclass
class Cost:
    adders: int = 0
    adder_bits: int = 0
    mux_bits: int = 0
    ffs: int = 0
    popcount_bits: int = 0

    def __add__(self, o: Cost) -> Cost:
        return Cost(self.adders + o.adders, self.adder_bits + o.adder_bits,
                    self.mux_bits + o.mux_bits, self.ffs + o.ffs,
                    self.popcount_bits + o.popcount_bits)

    @property
    def cells(self) -> int:
        return round(CELLS["adder_bit"] * self.adder_bits + CELLS["mux_bit"] * self.mux_bits
                     + CELLS["ff"] * self.ffs + CELLS["popcount_bit"] * self.popcount_bits)

    def to_json(self) -> dict:
        return {"adders": self.adders, "adder_bits": self.adder_bits,
                "mux_bits": self.mux_bits, "ffs": self.ffs,
                "popcount_bits": self.popcount_bits, "cells": self.cells}


def bits_of(lo: int, hi: int) -> int:
    if lo >= 0:
        return max(1, int(hi).bit_length())
    return max(1 + (~int(lo)).bit_length(), 1 + int(hi).bit_length() if hi >= 0 else 1)


def acc_bits(w: np.ndarray, in_lo: int, in_hi: int) -> np.ndarray:
    """Per output, bits of the exact range of sum_k x_k w[k, n]."""
    pos = np.where(w > 0, w, 0).sum(axis=0)
    neg = np.where(w < 0, w, 0).sum(axis=0)
    return np.array([bits_of(in_lo * p + in_hi * q, in_hi * p + in_lo * q)
                     for p, q in zip(pos.tolist(), neg.tolist(), strict=True)], np.int64)


def csd_matrix(w: np.ndarray, in_bits: int, widths: np.ndarray, fold: int) -> Cost:
    """CSE adders; final trees folded over `fold` phases (slots muxed)."""
    k, n = w.shape
    plain_terms = _digits_per_row(w)
    if k * n > EXACT_CSE_WEIGHTS:
        sym_adders = 0
        terms = np.maximum(np.round(plain_terms * CSE_RATIO_LARGE), np.minimum(plain_terms, 1))
        sym_bits = 0
        blocks = 1
    else:
        sym_adders, sym_bits, terms, blocks = _cse_counts(w, in_bits, fold == 1)
    tree = np.maximum(terms - 1, 0) + np.where(terms > 0, blocks - 1, 0)
    cost = Cost(adders=int(sym_adders), adder_bits=int(sym_bits))
    tree_adders = int(np.ceil(tree.sum() / fold)) if fold > 1 else int(tree.sum())
    tree_bits = int(np.ceil((tree * widths).sum() / fold))
    cost += Cost(adders=tree_adders, adder_bits=tree_bits)
    if fold > 1:  # each slot of a lane: a fold-to-1 mux of its term's width
        cost += Cost(mux_bits=int((terms * widths).sum() * (fold - 1) / fold))
    return cost


def _digits_per_row(w: np.ndarray) -> np.ndarray:
    idx, _, _ = csd.digits(w)
    return np.bincount(idx % w.shape[1], minlength=w.shape[1]).astype(np.int64)


def _cse_counts(w: np.ndarray, in_bits: int,
                columns: bool) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(symbol adders, their bits, leftover terms per output (a parent column's sum is
    one), blocks with terms per output); `columns`: parent columns (parallel layers)."""
    k, n = w.shape
    block = cse.block_size(w)
    adders = bits = 0
    terms = np.zeros(n, np.int64)
    blocks = np.zeros(n, np.int64)
    fast = cse.quick(w)
    for start in range(0, k, block):
        sub = w[start:start + block]
        pl = cse.plan(sub, in_bits, columns, fast)
        adders += len(pl.syms)
        bits += sum(cse.symbol_bits(pl.syms, sub.shape[0], in_bits)[sub.shape[0]:])
        counts = np.array([len(r) for r in pl.rows], np.int64) + (pl.tree.parent >= 0)
        terms += counts
        blocks += counts > 0
    return adders, bits, terms, np.maximum(blocks, 1)


def grouped_matrix(w: np.ndarray, in_bits: int, widths: np.ndarray, fold: int,
                   serial: bool) -> Cost:
    """Group sums (adder trees or popcounts), +/- pairs, odd-part multiplies, final adds."""
    cost = Cost()
    for j in range(w.shape[1]):
        col = w[:, j]
        vals, sizes = np.unique(col[col != 0], return_counts=True)
        wb = int(widths[j])
        mags = sorted({abs(int(v)) for v in vals})
        odd = {m >> ((m & -m).bit_length() - 1) for m in mags}
        pairs = sum(1 for m in mags if m in vals and -m in vals)
        extra = pairs + (len(mags) - len(odd)) + sum(max(len(csd.terms(o)) - 1, 0)
                                                     for o in odd) + max(len(odd) - 1, 0)
        if serial:
            cost += Cost(popcount_bits=int(sizes.sum()), adders=extra, adder_bits=extra * wb)
        else:
            group_adders = int((sizes - 1).sum())
            group_bits = int(sum((s - 1) * (in_bits + int(s).bit_length()) for s in sizes))
            cost += Cost(adders=group_adders + extra, adder_bits=group_bits + extra * wb)
    if fold > 1:  # per lane each value's group covers every input of any phase, gated
        cost = Cost(cost.adders, cost.adder_bits * 2 // fold, cost.adder_bits // 2,
                    cost.ffs, cost.popcount_bits * 2 // fold)
    return cost


def output_units(lanes: int, width: int, mult_digits: int, table: bool) -> Cost:
    """Bias add, multiply by a few-digit constant, round, zero point, clamp, table."""
    per_adders = 3 + mult_digits
    per_bits = width * 3 + mult_digits * (width + 20)
    cost = Cost(adders=lanes * per_adders, adder_bits=lanes * per_bits,
                mux_bits=lanes * (2 * 8 + (64 if table else 0)))
    return cost


def layer_cost(w: np.ndarray, neuron: str, fold: int, serial: bool, in_signed: bool,
               table: bool = False, pipeline: int = 0) -> Cost:
    """The estimated cost of one hardwired layer (datapath, output units, stream regs)."""
    k, n = w.shape
    in_lo, in_hi = (-128, 127) if in_signed else (0, 255)
    widths = acc_bits(w, in_lo, in_hi)
    in_bits = 1 if serial else CODE_BITS
    step_widths = acc_bits(w, 0, 1) if serial else widths
    if neuron == "grouped":
        cost = grouped_matrix(w, in_bits, step_widths, fold, serial)
    else:
        cost = csd_matrix(w, in_bits, step_widths, fold)
    lanes = -(-n // fold)
    wmax = int(widths.max()) if widths.size else 1
    if serial:  # one HORNER accumulator per lane
        cost += Cost(adders=lanes, adder_bits=lanes * wmax, ffs=lanes * wmax)
    cost += output_units(lanes, wmax, 4, table)
    stream = k * CODE_BITS * (2 if serial else 1) + n * CODE_BITS + 16
    cost += Cost(ffs=stream)
    if pipeline:
        cost += Cost(ffs=int(cost.adder_bits / max(pipeline, 1) / 4))
    return cost
