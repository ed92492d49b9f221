"""The weights of an etch.Dequant as etch.LutGemm takes them: unsigned b-bit codes u [K, N],
mu, per-block zero points and scales (compiler/ops/etch_lut.py has the formula).

etch.Dequant computes W = scale * (q - zero) with q in its own code set (docs/ARCHITECTURE.md, Numerics): signed
b-bit two's complement (QuantizeWeights, DequantizeLinear int4), unsigned (MatMulNBits,
uint4), binary {-1,+1} or ternary {-1,0,+1}. Each maps exactly onto W = scale * (mu * u -
zero') with u in [0, 2^b): signed codes are offset by 2^(b-1) (zero' = zero + 2^(b-1)),
binary is u = (q + 1) / 2 with mu = 2 and zero' = 1, ternary u = q + 1 with zero' = zero + 1.
`lut_weight` returns that form, or the reason the layer cannot take it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops.etch_int import expand_param

MAX_BITS = 4


@dataclass
class LutWeight:
    """A [K, N] weight as unsigned codes: W[k, n] = scale[k // group, n] * (mu * u[k, n] -
    zero[k // group, n])."""

    u: np.ndarray       # [K, N] uint8
    bits: int
    mu: int
    zero: np.ndarray    # [K / group, N] int64
    scale: np.ndarray   # [K / group, N] float32
    group: int
    kind: str

    @property
    def k(self) -> int:
        return self.u.shape[0]

    @property
    def n(self) -> int:
        return self.u.shape[1]

    def dequantised(self) -> np.ndarray:
        """W [K, N] in float64 (for tests and error reports)."""
        s = np.repeat(self.scale.astype(np.float64), self.group, axis=0)
        z = np.repeat(self.zero, self.group, axis=0)
        return s * (self.mu * self.u.astype(np.float64) - z)


def _inputs(graph: Graph, dq: Node) -> list[np.ndarray | None]:
    names = list(dq.inputs) + [""] * (4 - len(dq.inputs))
    return [graph.const(n) if n else None for n in names[:4]]


def _as_kn(p: np.ndarray, k_axis: int) -> np.ndarray:
    """A weight-shaped array (its rank, K along k_axis and N along the other of the first
    two axes; Conv's trailing 1x1 dropped) as [K, N]."""
    m = p.reshape(p.shape[:2]) if p.ndim > 2 else p
    return m if k_axis == 0 else m.T


def _group(scale: np.ndarray, size: int, axis: int, k_axis: int, k: int) -> int | str:
    """K per scale row: K for one row, the Dequant's group size along K, else a reason."""
    if scale.ndim < 2 or scale.shape[k_axis] == 1:
        return k
    if size and axis == k_axis:
        return size
    return "per-input-channel scales vary along K weight by weight (AdaDim): no block of " \
           "K shares a scale"


def _codes(q: np.ndarray, kind: str, bits: int) -> tuple[np.ndarray, int, int, int] | str:
    """(u, bits, mu, offset) with W = s * (mu * u - (zero + offset)), or a reason."""
    qi = q.astype(np.int64)
    if kind == "binary":
        if not np.isin(qi, (-1, 1)).all():
            return "binary codes outside {-1, +1}"
        return ((qi + 1) // 2).astype(np.uint8), 1, 2, 1
    if kind == "ternary":
        if not np.isin(qi, (-1, 0, 1)).all():
            return "ternary codes outside {-1, 0, +1}"
        return (qi + 1).astype(np.uint8), 2, 1, 1
    if bits > MAX_BITS:
        return f"{bits}-bit codes: the look-up kernels take 1-4 bits"
    offset = 1 << (bits - 1) if q.dtype.kind == "i" else 0
    u = qi + offset
    if u.size and (u.min() < 0 or u.max() >= 1 << bits):
        return f"codes outside the {bits}-bit range"
    return u.astype(np.uint8), bits, 1, offset


def lut_weight(graph: Graph, dq: Node, k_axis: int) -> LutWeight | str:
    """The etch.Dequant `dq` (a 2-D weight, or a Conv weight [O, C, 1, ...]) in LutGemm's
    form, with K along `k_axis` of its first two axes; or the reason it has none."""
    q, scale, zero, mult = _inputs(graph, dq)
    if q is None or scale is None or (len(dq.inputs) > 2 and dq.inputs[2] and zero is None):
        return "the weight's codes or parameters are computed at run time"
    if mult is not None:
        return "integer group multipliers belong to the integer path"
    if q.ndim < 2 or any(d != 1 for d in q.shape[2:]):
        return f"a weight of shape {list(q.shape)} is not a matrix"
    k = q.shape[k_axis]
    size, axis = int(dq.attrs.get("group_size", 0)), int(dq.attrs.get("group_axis", 0))
    group = _group(scale, size, axis, k_axis, k)
    if isinstance(group, str):
        return group
    if zero is not None and zero.dtype.kind not in "iu":
        return "float zero points"
    codes = _codes(q, str(dq.attrs.get("kind", "int")), int(dq.attrs.get("bits", 8)))
    if isinstance(codes, str):
        return codes
    u, bits, mu, offset = codes
    full = np.broadcast_to(expand_param(scale, axis, size), q.shape)
    s = _as_kn(np.ascontiguousarray(full), k_axis)[::group].astype(np.float32)
    if zero is None:
        z = np.zeros(s.shape, np.int64)
    else:
        zf = np.broadcast_to(expand_param(zero, axis, size), q.shape)
        z = _as_kn(np.ascontiguousarray(zf), k_axis)[::group].astype(np.int64)
    return LutWeight(np.ascontiguousarray(_as_kn(u, k_axis)), bits, mu, z + offset, s, group,
                     str(dq.attrs.get("kind", "int")))
