"""Winograd minimal filtering F(m, 3) for 3x3 stride-1 convolutions: the transform
matrices, written once (the TVM lowering and the tests read them from here).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016): an m x m
output tile of a 3x3 correlation is Y = A^T [(G g G^T) * (B^T d B)] A, where d is the
(m + 2) x (m + 2) input tile and `*` is elementwise. Per tile and channel pair that is
(m + 2)^2 multiplies instead of 9 m^2: 2.25x fewer for F(2, 3), 4x fewer for F(4, 3).
The matrices below are the paper's (interpolation points 0, +-1 for F(2, 3); 0, +-1, +-2
for F(4, 3)). The result equals direct convolution up to float rounding; the transforms
grow the rounding error with m (`TOLERANCE`, measured on random data in the tests).

`conv2d(x, w, m, pads)` is the numpy form of the same algorithm (NCHW, groups 1), the
definition the tests hold the kernels to.
"""

from __future__ import annotations

import numpy as np

TILES = (2, 4)
# A transformed input past this (and past twice the transformed weight) is made and used
# chunk by chunk of tile rows on the cpu, the whole kernel fused per chunk
# (backends/tvm/schedules/winograd_cpu.py); the conv pass lets small-channel layers that
# large take Winograd for that reason (passes/choose_conv_algorithm.py).
CHUNK_BYTES = 4 << 20
# max |winograd - direct| <= TOLERANCE[m] * max |direct| in float32 (error grows with the
# input channels; measured up to 512 of them: F(2, 3) 1.6e-6, F(4, 3) 1.3e-5)
TOLERANCE = {2: 1e-5, 4: 5e-5}


def matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A^T [m, m+2], B^T [m+2, m+2], G [m+2, 3]) of F(m, 3), float64."""
    if m == 2:
        at = [[1, 1, 1, 0], [0, 1, -1, -1]]
        bt = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
        g = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]
    elif m == 4:
        at = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
              [0, 1, -1, 8, -8, 1]]
        bt = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
              [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
        g = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
             [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
    else:
        raise ValueError(f"F({m}, 3): etch has F(2, 3) and F(4, 3)")
    return np.array(at, np.float64), np.array(bt, np.float64), np.array(g, np.float64)


def transform_weight(w: np.ndarray, m: int) -> np.ndarray:
    """U = G g G^T per (output, input) channel pair: [OC, C, 3, 3] -> [m+2, m+2, OC, C],
    in w's dtype (computed in float64, rounded once)."""
    _, _, g = matrices(m)
    return np.einsum("ei,kcij,vj->evkc", g, w.astype(np.float64), g).astype(w.dtype)


def tiles(out: int, m: int) -> int:
    """Tiles of m outputs covering `out` outputs (the last one partly outside)."""
    return -(-out // m)


def conv2d(x: np.ndarray, w: np.ndarray, m: int, pads: tuple[int, int, int, int]
           ) -> np.ndarray:
    """3x3 stride-1 convolution by F(m, 3) in float32 (x [N, C, H, W], w [OC, C, 3, 3],
    pads (top, left, bottom, right)) -> [N, OC, OH, OW]."""
    at, bt, _ = matrices(m)
    n, c, h, wd = x.shape
    oh, ow = h + pads[0] + pads[2] - 2, wd + pads[1] + pads[3] - 2
    th, tw = tiles(oh, m), tiles(ow, m)
    xp = np.zeros((n, c, th * m + 2, tw * m + 2), np.float32)
    xp[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + wd] = x
    d = np.stack([np.stack([xp[:, :, i * m:i * m + m + 2, j * m:j * m + m + 2]
                            for j in range(tw)], 2) for i in range(th)], 2)
    v = np.einsum("er,nctsrq,vq->evncts", bt.astype(np.float32), d,
                  bt.astype(np.float32))
    u = transform_weight(w.astype(np.float32), m)
    mm = np.einsum("evkc,evncts->evnkts", u, v)
    y = np.einsum("ie,evnkts,jv->nktisj", at.astype(np.float32), mm, at.astype(np.float32))
    return y.reshape(n, w.shape[0], th * m, tw * m)[:, :, :oh, :ow]
