"""Sharing between the output columns of a constant matrix: y_j = y_p + s * (x . D_j).

Where two columns of W [K, N] are alike, output j is cheaper as a parent output y_p
(another column, already built) plus the product with the difference column
D_j = W_j - s W_p (s = +-1) than from scratch, when D_j has fewer CSD digits than W_j:
the difference's digits and one adder for the parent replace W_j's digits. This is the
sharing that pairwise CSE over the inputs of one row cannot find (it is the first stage of
da4ml's decomposition, found here independently as a spanning tree).

`tree` picks the parents as a minimum spanning tree rooted at the zero column: an edge
root -> j costs W_j's digits, an edge p -> j the digits of D_j plus one (the adder that
adds y_p), so the tree minimises digits plus parent adders over all parent choices
(Prim's algorithm, vectorised over the inputs and candidate columns). `max_depth` bounds
the chains of parents (each is one more adder on the output's critical path). The
difference columns then go to the pairwise CSE like any other matrix.

Invariants: parents come before their children in `order`; W_j == D_j + s_j W_{p_j}
exactly for every j with a parent (p_j = -1: D_j == W_j).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tree:
    """Per output column: its parent (-1: none) and sign, the build order, D [K, N]."""

    parent: np.ndarray
    sign: np.ndarray
    order: list[int]
    diff: np.ndarray

    @property
    def shared(self) -> int:
        return int(np.count_nonzero(self.parent >= 0))


def naf_weight(v: np.ndarray) -> np.ndarray:
    """Non-zero CSD digits of every element of integer array `v` (elementwise): the
    popcount of (h xor (a + h)) for a = |v|, h = a >> 1 (the non-adjacent form's digits
    are where a + h and h differ, above bit 0)."""
    a = np.abs(np.asarray(v, dtype=np.int64))
    h = a >> 1
    return np.bitwise_count(h ^ (a + h)).astype(np.int64)


def flat(w: np.ndarray) -> Tree:
    """No sharing: every column its own root."""
    n = w.shape[1]
    return Tree(np.full(n, -1, np.int64), np.ones(n, np.int64), list(range(n)),
                np.asarray(w, dtype=np.int64))


def tree(w: np.ndarray, max_depth: int = 0, penalty: int = 1) -> Tree:
    """The parent tree of W's columns (see the module docstring); `max_depth` 0: no bound;
    `penalty`: the cost of a parent edge beyond its digits (1: the parent's adder). Ties
    go to the lower column index (deterministic)."""
    w = np.asarray(w, dtype=np.int64)
    n = w.shape[1]
    cost = naf_weight(w).sum(axis=0)  # best known attachment cost per column (root)
    parent = np.full(n, -1, np.int64)
    sign = np.ones(n, np.int64)
    depth = np.zeros(n, np.int64)
    done = np.zeros(n, bool)
    order: list[int] = []
    for _ in range(n):
        cand = np.where(done, np.iinfo(np.int64).max, cost)
        i = int(np.argmin(cand))
        done[i] = True
        order.append(i)
        if parent[i] >= 0:
            depth[i] = depth[parent[i]] + 1
        if max_depth and depth[i] >= max_depth:
            continue
        rest = np.flatnonzero(~done)
        if rest.size == 0:
            break
        col = w[:, i:i + 1]
        minus = naf_weight(w[:, rest] - col).sum(axis=0) + penalty
        plus = naf_weight(w[:, rest] + col).sum(axis=0) + penalty
        edge = np.minimum(minus, plus)
        better = edge < cost[rest]
        j = rest[better]
        cost[j] = edge[better]
        parent[j] = i
        sign[j] = np.where(minus[better] <= plus[better], 1, -1)
    diff = w.copy()
    for j in np.flatnonzero(parent >= 0):
        diff[:, j] = w[:, j] - sign[j] * w[:, parent[j]]
    return Tree(parent, sign, order, diff)
