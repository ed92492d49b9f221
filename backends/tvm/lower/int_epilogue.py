"""The epilogue of an integer kernel: the output unit of an etch.QFused group in TIR.

compiler/ops/etch_qfused.py is the meaning. An integer anchor kernel (`int_gemm`,
`int_conv`, `int_pool`) renders either a bare anchor (the int32 accumulator is stored) or a
whole group recorded by the integer fusion pass:

    acc -> + bias -> requantise -> [table] -> [residual QAdd] -> store

each step the reference's formula (`int_eltwise.requantize`, `int_eltwise.qadd`, a table
gather). The TE kernels end in `IntEpilogue.compute`; the x86 kernels of
`schedules/int_kernels.py` rebuild the same expression from the PrimFunc's parameters and
`etch.*` attributes (`kernel_hints`): bias, m0, shift as buffers along the channels, then
the post-requantisation steps' tensors (a [256] table, a residual shaped like the output),
described by the JSON attribute "etch.post" (`post_steps`, read back by `apply_post`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx, Operands, bload
from backends.tvm.lower.fastmath import dtype_of
from backends.tvm.lower.int_eltwise import qadd, requantize
from compiler.errors import EtchError
from compiler.ir import Node
from compiler.ops.etch_int import INT32_MAX, along
from compiler.ops.etch_qfused import QGroup

Expr = tirx.Expr
Load = Callable[[int, list], Expr]


@dataclass(frozen=True)
class IntOut:
    """What an integer kernel renders: the node (it names the kernel), the group whose
    output unit the epilogue applies (None: store the int32 accumulator), the value written."""

    node: Node
    group: QGroup | None
    value: str


@dataclass
class IntEpilogue:
    """acc -> acc + bias -> the group's steps. `operands`: bias, m0, shift, each broadcast
    to the kernel output's rank; `post_exprs`: the tensors of the steps after the
    requantisation (`post`, see `post_steps`)."""

    dtype: str
    operands: Operands = field(default_factory=Operands)
    requant: dict | None = None  # zero_point, qmin, qmax
    has_bias: bool = False
    multipliers: tuple = ()  # the requantisation's (m0, shift) arrays
    numbers: list[int] | None = None  # with `channels`: the last operand (`epilogue_numbers`)
    post: list[dict] = field(default_factory=list)
    post_exprs: list[relax.Expr] = field(default_factory=list)
    residual_dtype: str = ""  # the residual's int8/uint8 type, where the group has one

    @property
    def exprs(self) -> list:
        return self.operands.exprs + self.post_exprs

    def compute(self, shape: tuple[int, ...], acc: Callable[..., Expr],
                tensors: Sequence[te.Tensor]) -> te.Tensor:
        """The epilogue's stages over the output `shape`; acc(*i) is the accumulator at i and
        `tensors` are the placeholders of `exprs`. Block "epilogue" adds the bias and
        requantises; the steps after the requantisation, if any, are a second block "post"
        reading the requantised int32 value (the add's formula reads its input several
        times: one load, not the whole epilogue, and `schedules.apply_rules` computes it
        inside the epilogue's loop)."""
        n = len(self.operands.exprs)
        stage = "int32" if self.post else self.dtype
        zp = self._number(tensors)(0) if self.numbers is not None else None
        y = te.compute(shape, lambda *i: self.value(acc(*i), list(i), tensors[:n], zp).astype(
            stage), name="epilogue")
        if not self.post:
            return y
        post, steps, number = tensors[n:], self.kernel_post(), self._number(tensors)
        return te.compute(shape, lambda *i: apply_post(
            steps, y(*i).astype("int64"), list(i), lambda j, ix: post[j](*ix),
            lambda k: number(1 + k)).astype(self.dtype), name="post")

    def _number(self, tensors: Sequence[te.Tensor]) -> Callable[[int], Expr]:
        """number(k): the k-th of the epilogue's numbers (its last operand)."""
        return lambda k: tensors[-1][k]

    def kernel_post(self) -> list[dict]:
        """The steps as the kernel records them (attribute "etch.post"): a residual add whose
        numbers are an operand keeps only its form (`step_form`)."""
        return [step_form(s) if self.numbers is not None and s["op"] == "qadd" else s
                for s in self.post]

    def value(self, acc: Expr, idx: list, tensors: Sequence[te.Tensor],
              zp: Expr | None = None) -> Expr:
        """acc + bias, requantised when there is a group (the bias/m0/shift operands at
        output position idx; the zero point `zp` where it is an operand)."""
        vals = self.operands.load(tensors, idx, bload)
        y = add_bias(acc, vals.pop(0)) if self.has_bias else acc
        if self.requant is None:
            return y
        r = self.requant
        return requantize(y, vals[0], vals[1], r["zero_point"] if zp is None else zp,
                          r["qmin"], r["qmax"])


def add_bias(acc: Expr, bias: Expr) -> Expr:
    """acc + bias: in int32 when the bias is int32 (acc and the sum, the true accumulator,
    both fit int32, so the add cannot overflow), else in int64."""
    if dtype_of(bias) == "int32" and dtype_of(acc) == "int32":
        return acc + bias
    return acc.astype("int64") + bias.astype("int64")


def post_steps(g: QGroup) -> list[dict]:
    """The steps after the requantisation, as plain data: {"op": "table", "lo": -128 | 0}
    (the table's input offset) and {"op": "qadd", "side": 0 | 1, **QAdd attrs}."""
    steps = []
    if g.table is not None:
        steps.append({"op": "table", "lo": -128 if g.requant.attrs.get("to", "int8") == "int8"
                      else 0})
    if g.residual is not None:
        keep = ("a_zero", "b_zero", "a_m0", "a_shift", "b_m0", "b_shift", "m0", "shift",
                "left_shift", "zero_point", "qmin", "qmax")
        steps.append({"op": "qadd", "side": g.y_side,
                      **{k: int(g.residual.attrs[k]) for k in keep if k in g.residual.attrs}})
        if "linear" in g.residual.attrs:  # LinearQAdd's proven form
            steps[-1]["linear"] = [int(v) for v in g.residual.attrs["linear"]]
    return steps


def epilogue_numbers(requant: dict, post: list[dict]) -> list[int]:
    """The numbers of a group's output unit that its kernel reads from one int64 operand
    (`LowerCtx.scalars`), not as immediates: the output zero point, then the residual
    add's (`step_numbers`). The kernels bind them once, before their loops (a number read
    where it is used was reloaded per vector: resnet50's residual 1x1 layers 10-40%
    slower)."""
    adds = [step_numbers(s) for s in post if s["op"] == "qadd"]
    return [int(requant["zero_point"])] + [v for nums in adds for v in nums]


QADD_NUMBERS = ("a_zero", "b_zero", "a_m0", "a_shift", "b_m0", "b_shift", "m0", "shift",
                "zero_point")  # a residual add's numbers, then its `linear` form's four


def step_numbers(step: dict) -> list[int]:
    """A residual add's numbers in the order its operand holds them."""
    return [int(step[k]) for k in QADD_NUMBERS if k in step] + \
        [int(v) for v in step.get("linear", [])]


def step_form(step: dict) -> dict:
    """A residual add without its numbers: which of them its operand holds ("operand"), its
    side, left shift and output range (the kernel's structure)."""
    form = {k: v for k, v in step.items() if k not in QADD_NUMBERS and k != "linear"}
    form["operand"] = [k for k in QADD_NUMBERS if k in step] + \
        (["linear"] if "linear" in step else [])
    return form


def form_size(step: dict) -> int:
    """How many numbers the operand of a step's form holds (0: the step carries its own)."""
    return sum(4 if key == "linear" else 1 for key in step.get("operand", []))


def with_numbers(step: dict, read: Callable[[int], Expr]) -> dict:
    """`step` with the numbers its form names read from its operand (read(k): the k-th, an
    int64 Expr); a step that carries its numbers is returned as it is."""
    if "operand" not in step:
        return step
    out, k = dict(step), 0
    for key in step["operand"]:
        if key == "linear":
            out[key], k = [read(k + i) for i in range(4)], k + 4
        else:
            out[key], k = read(k), k + 1
    return out


def apply_post(post: list[dict], y: Expr, at: Sequence[Expr], load: Load,
               number: Callable[[int], Expr] | None = None) -> Expr:
    """The post-requantisation steps on the requantised value y (int64) at output position
    `at`; load(j, index) reads the j-th step's tensor (table or residual), number(k) the
    k-th number of a residual add whose numbers are an operand (`step_form`)."""
    for j, step in enumerate(post):
        if step["op"] == "table":
            y = load(j, [y.astype("int32") - tirx.const(step["lo"], "int32")]).astype("int64")
            continue
        r = load(j, list(at))
        step = with_numbers(step, lambda k: number(k).astype("int64"))
        y = qadd(y, r, step) if step["side"] == 0 else qadd(r, y, step)
    return y


def int_epilogue(ctx: LowerCtx, dst: IntOut, bias: np.ndarray | None, rank: int,
                 kernel_axis: int, kshape: tuple[int, ...], channels: int = 0) -> IntEpilogue:
    """The epilogue of an integer kernel whose output has shape `kshape` (rank `rank`) with
    the output channels along `kernel_axis`: its bias (int64 numbers, per channel) and the
    steps of `dst.group`. With `channels`, bias/m0/shift are tensors of that many channels
    (the x86 kernels of `schedules/int_kernels.py` read them as [.., C, ..] buffers) and the
    group's other numbers one operand (`epilogue_numbers`): two layers that differ only in
    these numbers are then one kernel (`dedupe`), as layers that differ only in their
    weights already were."""
    arrays = []
    if bias is not None:
        b = np.asarray(bias, np.int64)
        arrays.append(along(b if np.abs(b).max(initial=0) > INT32_MAX else b.astype(np.int32),
                            rank, kernel_axis))
    epi = IntEpilogue(ctx.dtype(dst.value), has_bias=bias is not None)
    g = dst.group
    if g is not None:
        params = [np.asarray(_const(ctx, dst.node, name)) for name in g.requant.args[1:3]]
        _check_axis(dst, g, params, len(ctx.shape(dst.value)))
        arrays += [along(p, rank, kernel_axis) for p in params]
        epi.multipliers = tuple(params)
        epi.requant = {k: int(g.requant.attrs.get(k, 0)) for k in ("zero_point", "qmin", "qmax")}
        if channels:  # M0 2^-shift in float64, for the x86 kernels' `f64_exact` form
            arrays.append(along(float_multipliers(*params), rank, kernel_axis))
        epi.post = post_steps(g)
        epi.post_exprs = _post_exprs(ctx, dst, g, kshape)
        if channels:
            epi.numbers = epilogue_numbers(epi.requant, epi.post)
            epi.post_exprs.append(ctx.scalars(epi.numbers))
        epi.residual_dtype = ctx.dtype(g.residual_value) if g.residual is not None else ""
    epi.operands = _operands(ctx, [np.asarray(a) for a in arrays], rank, kernel_axis, channels)
    return epi


def _check_axis(dst: IntOut, g: QGroup, params: list[np.ndarray], rank: int) -> None:
    """EtchError unless a per-channel requantisation runs along the anchor's output channels
    (the output unit holds one M0/shift per output channel)."""
    axis = g.requant.attrs.get("axis")
    if any(p.size > 1 for p in params) and (axis is None or
                                            int(axis) % rank != g.channel_axis % rank):
        raise EtchError(f"node {dst.node.name}: the group requantises along axis {axis}, not "
                        f"its output channels")


def _const(ctx: LowerCtx, node: Node, name: str) -> np.ndarray:
    data = ctx.const(name)
    if data is None:
        raise EtchError(f"node {node.name}: etch.QFused operand %{name} must be a constant")
    return data


def _post_exprs(ctx: LowerCtx, dst: IntOut, g: QGroup, kshape: tuple[int, ...]) -> list:
    """The table ([256]) and the residual (viewed with the kernel output's shape)."""
    exprs = []
    if g.table is not None:
        table = _const(ctx, dst.node, g.table.args[1])
        if table.shape != (256,):
            raise EtchError(f"node {dst.node.name}: the table has shape {table.shape}")
        exprs.append(ctx.array(table))
    if g.residual is not None:
        exprs.append(ctx.reshape(ctx.expr(g.residual_value), kshape))
    return exprs


def _operands(ctx: LowerCtx, arrays: list[np.ndarray], rank: int, axis: int,
              channels: int) -> Operands:
    """Constant operands: immediates where scalar, unless `channels` asks for tensors of
    `channels` entries along `axis`."""
    if not channels:
        return ctx.data_operands(arrays)
    shape = [1] * rank
    shape[axis] = channels
    ops = Operands()
    for a in arrays:
        ops.slots.append(("t", len(ops.exprs)))
        ops.exprs.append(ctx.array(np.ascontiguousarray(np.broadcast_to(a, shape))))
    return ops


def kernel_hints(epi: IntEpilogue, acc_bound: np.ndarray) -> dict:
    """PrimFunc attributes that describe the epilogue to the x86 kernel builders. `req_vec`:
    every requantised magnitude stays below 2^24 for accumulators within `acc_bound` (per
    channel), so the kernels may narrow it to int32 lanes (`int_kernels.requantize_avx2`);
    `post`: the steps after the requantisation (JSON, `post_steps`; a residual add's numbers
    are the epilogue's operand, `epilogue_numbers`, not a hint)."""
    r = epi.requant or {}
    hints = {"req": int(epi.requant is not None), "qmin": r.get("qmin", 0),
             "qmax": r.get("qmax", 0), "req_vec": 0,
             "post": json.dumps(epi.kernel_post(), sort_keys=True)}
    if epi.requant is not None and epi.numbers is not None:  # `channels`: the float operand
        hints["req_mf"] = 1
    if epi.requant is not None and max(abs(r["qmin"]), abs(r["qmax"])) < 1 << 16:
        m0, shift = (np.broadcast_to(np.asarray(p, np.int64).reshape(-1), acc_bound.shape)
                     for p in epi.multipliers)
        mags = [(int(t) * int(m) + (1 << int(sh) >> 1)) >> int(sh)
                for t, m, sh in zip(acc_bound, m0, shift)]
        hints["req_vec"] = int(max(mags, default=0) < 1 << 24 and int(shift.min()) >= 0)
        hints["req_f64"] = int(hints["req_vec"] and "req_mf" in hints and all(
            f64_exact(int(t), int(m), int(sh), int(r["zero_point"]))
            for t, m, sh in zip(acc_bound, m0, shift)))
        hints["post_vec"] = int(hints["req_vec"] and _post_vector_ok(epi))
    return hints


def float_multipliers(m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """M0 2^-shift per channel in float64, exactly (M0 < 2^31; a shift of 0..1000 keeps the
    power of two normal; any other shift gives 0, never used: `f64_exact` refuses it)."""
    m0, shift = np.broadcast_arrays(np.asarray(m0, np.int64), np.asarray(shift, np.int64))
    ok = (shift >= 0) & (shift <= F64_MAX_SHIFT)
    return np.where(ok, np.ldexp(m0.astype(np.float64), -np.where(ok, shift, 0)), 0.0)


F64_MAX_SHIFT = 1000
F64_MAX_WINDOW = 1 << 12  # residues checked per channel at most (else: not proven)


def f64_exact(bound: int, m0: int, shift: int, zero_point: int) -> bool:
    """Whether the float64 requantisation y = clamp(rne(float64(t) * float64(M0 2^-shift))
    + zero_point) (`schedules.int_intrin.requantize_f64`: a vcvtdq2pd, a vmulpd and a
    vcvtpd2dq rounding to nearest, even) equals the reference's round_half_away(t M0 /
    2^shift) + zero_point for every accumulator |t| <= `bound`, proven in integers.

    t and M = M0 2^-shift are exact doubles and fl(t M) = fl(t M0) 2^-shift, off by at most
    half an ulp: below 2^(L-54) in units of 2^-shift, where L is the bit length of
    bound M0. With x = t M0 / 2^shift, rne(fl(t M)) is the integer nearest to x, which is
    round_half_away(x), unless x is a tie or fl moved it across a half-integer: unless
    x + 1/2 lies within 2^(L-54) ulps of an integer, i.e. unless t M0 = 2^(shift-1) + j
    (mod 2^shift) for some |j| <= W = floor(2^(L-54)) (only j = 0 for L < 54). For each
    such residue, t M0 = c (mod 2^shift) has its solutions t = t0 + k 2^(shift - v) (v:
    M0's factors of 2), at most a few in [-bound, bound] since 2^(shift - v) is ~2^10-2^30
    times larger; none may be. Also |x| + 1 + |zero point| < 2^31 (the int32 conversion
    and the add), and 0 < shift <= F64_MAX_SHIFT (shift 0 also where the product is exact).
    Refused (False), not guessed, where more than F64_MAX_WINDOW residues would need a look."""
    if m0 == 0 or bound == 0:
        return 0 <= shift <= F64_MAX_SHIFT
    if not (0 <= shift <= F64_MAX_SHIFT and 0 < m0 < 1 << 31):
        return False
    if (bound * m0 >> shift) + 1 + abs(zero_point) >= 1 << 31:
        return False
    length = (bound * m0).bit_length()
    if shift == 0:
        return length <= 53
    window = 1 << (length - 54) if length >= 54 else 0
    if 2 * window + 1 > F64_MAX_WINDOW:
        return False
    v = min((m0 & -m0).bit_length() - 1, shift)
    mod = 1 << (shift - v)
    inverse = pow(m0 >> v, -1, mod) if mod > 1 else 0
    half = 1 << (shift - 1)
    for j in range(-window, window + 1):
        c = (half + j) % (1 << shift)
        if c % (1 << v):
            continue  # t M0 is a multiple of 2^v: no solution
        t0 = (c >> v) * inverse % mod
        if (t0 + bound) % mod <= 2 * bound:  # a solution t in [-bound, bound]
            return False
    return True


def _post_vector_ok(epi: IntEpilogue) -> bool:
    """Whether the steps after the requantisation are one residual add whose int32-lane form
    (`schedules.int_intrin.qadd_vector`) is exact for every input: y in the requantisation's
    [qmin, qmax], the residual anywhere in its type (always, where LinearQAdd proved a
    straight-line form on that domain)."""
    if len(epi.post) != 1 or epi.post[0]["op"] != "qadd" or \
            epi.residual_dtype not in ("int8", "uint8"):
        return False
    step = epi.post[0]
    if "linear" in step:  # proven on every input pair, every term inside int32
        return True
    r = epi.requant or {}
    lo = -128 if epi.residual_dtype == "int8" else 0
    ranges = [(int(r["qmin"]), int(r["qmax"])), (lo, lo + 255)]
    if step["side"] == 1:
        ranges.reverse()
    return qadd_lanes_exact(step, *ranges)


def _magnitude(t: int, m0: int, shift: int) -> int:
    """(|t| M0 + 2^(shift-1)) >> shift, the requantisation's magnitude, in Python integers."""
    return (abs(t) * m0 + ((1 << shift) >> 1)) >> shift


def qadd_lanes_exact(step: dict, a_range: tuple[int, int], b_range: tuple[int, int]) -> bool:
    """Whether etch.QAdd with attrs `step`, for a in a_range and b in b_range, is computed
    exactly by int32 lanes: each side ((x - z) << L) * M0 >> s as (x - z) * M0 >> (s - L)
    (the same rational, the same rounding) with 0 <= s - L <= 62 and a magnitude below 2^31
    (so the reference's int32 clamp never acts); the two sides' sum inside int32; the output
    requantisation's magnitude plus |zero point| below 2^31 (no lane overflows)."""
    left = int(step.get("left_shift", 20))
    sums = []
    for p, (lo, hi) in (("a", a_range), ("b", b_range)):
        m0, sh = int(step[f"{p}_m0"]), int(step[f"{p}_shift"]) - left
        if not (0 <= sh <= 62 and 0 <= m0 < 1 << 31):
            return False
        z = int(step[f"{p}_zero"])
        far = max(abs(lo - z), abs(hi - z))
        if _magnitude(far, m0, sh) >= 1 << 31:
            return False
        sums.append(_magnitude(far, m0, sh))
    m0, sh, zp = int(step["m0"]), int(step["shift"]), int(step.get("zero_point", 0))
    total = sum(sums)
    return total < 1 << 31 and 0 <= sh <= 62 and 0 <= m0 < 1 << 31 and \
        _magnitude(total, m0, sh) + abs(zp) < 1 << 31
