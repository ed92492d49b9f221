"""GPTQ: quantise a weight matrix column by column, feeding each column's rounding error
back into the columns not yet quantised (Frantar et al., "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers", ICLR 2023, Algorithm 1).

The Hessian of the layer's squared output error is H = 2 X^T X over calibration inputs X
[M, K]. With U the upper Cholesky factor of H^-1, quantising column k with error e updates
the remaining columns by -e * U[k, k+1:] / U[k, k]. Batched over a leading axis G (one
matrix and Hessian per convolution group). Options follow the paper's reference code:
1% dampening of the mean diagonal, lazy updates in blocks of columns (block boundaries are
aligned with the scale groups, so a group's scale is fitted on its current, fully updated
columns), and activation order (columns by decreasing H[k, k]) when every scale spans the
whole row, where it cannot change group membership.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from passes.quantizer import Scheme, codes, fit, to_blocks

BLOCK = 128


def gptq(w: np.ndarray, h: np.ndarray, scheme: Scheme, rg: int, cg: int,
         damp: float = 0.01,
         snap: Callable[[np.ndarray, int], np.ndarray] | None = None,
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPTQ-quantise w [G, N, K] with Hessians h [G, K, K]; `snap` maps each group's
    fitted scales [G, N/rg] (and the group's index along K) to the scales used (the integer
    path's base * multiplier, two-level scales).

    Returns (codes [G, N, K], scales [G, N/rg, K/cg], zeros [G, N/rg, K/cg]).
    """
    g, n, k = w.shape
    w = w.astype(np.float64).copy()
    whole_rows = cg == k
    perm = np.arange(k)
    if whole_rows:
        perm = np.argsort(-np.diagonal(h, axis1=1, axis2=2).sum(axis=0), kind="stable")
    s_all = np.zeros((g, n // rg, k // cg))
    z_all = np.zeros_like(s_all)
    if whole_rows:
        s_all[..., 0], z_all[..., 0] = _fit_rows(w, scheme, rg)
    w, h = w[:, :, perm], h[:, perm][:, :, perm]
    u = _inverse_cholesky(h, w, damp)
    q = np.zeros((g, n, k), np.int64)
    step = cg * max(1, BLOCK // cg) if not whole_rows else BLOCK
    for i1 in range(0, k, step):
        i2 = min(i1 + step, k)
        w1, e1 = w[:, :, i1:i2].copy(), np.zeros((g, n, i2 - i1))
        for i in range(i2 - i1):
            col = i1 + i
            if not whole_rows and col % cg == 0:
                s_all[..., col // cg], z_all[..., col // cg] = _fit_rows(
                    w1[:, :, i:i + cg], scheme, rg)
                if snap is not None:
                    s_all[..., col // cg] = snap(s_all[..., col // cg], col // cg)
            s = np.repeat(s_all[..., col // cg], rg, axis=1)
            z = np.repeat(z_all[..., col // cg], rg, axis=1)
            q[:, :, col] = codes(w1[:, :, i], s, z, scheme)
            err = (w1[:, :, i] - (q[:, :, col] - z) * s) / u[:, col, col][:, None]
            w1[:, :, i:] -= err[:, :, None] * u[:, None, col, i1 + i:i2]
            e1[:, :, i] = err
        w[:, :, i2:] -= e1 @ u[:, i1:i2, i2:]
    inv = np.argsort(perm)
    return q[:, :, inv], s_all, z_all


def _fit_rows(cols: np.ndarray, scheme: Scheme, rg: int) -> tuple[np.ndarray, np.ndarray]:
    """Scales/zeros [G, N/rg] of the column slab cols [G, N, c] (blocks of rg rows)."""
    g, n, c = cols.shape
    s, z = fit(np.concatenate([to_blocks(x, rg, c) for x in cols]), scheme)
    return s.reshape(g, n // rg), z.reshape(g, n // rg)


def _inverse_cholesky(h: np.ndarray, w: np.ndarray, damp: float) -> np.ndarray:
    """Upper Cholesky factors of the dampened H^-1 (dead inputs: H[k, k] = 1, W[:, k] = 0)."""
    h = h.astype(np.float64).copy()
    k = h.shape[-1]
    diag = np.diagonal(h, axis1=1, axis2=2).copy()
    dead = diag == 0
    for gi in range(h.shape[0]):
        h[gi, dead[gi], dead[gi]] = 1.0
        w[gi][:, dead[gi]] = 0.0
    eye = np.eye(k)
    for attempt in range(6):
        lam = damp * (10 ** attempt) * np.maximum(diag.mean(axis=1), 1e-12)
        try:
            hd = h + lam[:, None, None] * eye
            hinv = np.linalg.inv(hd)
            return np.transpose(np.linalg.cholesky(hinv), (0, 2, 1))
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("Hessian is not positive definite even with dampening")
