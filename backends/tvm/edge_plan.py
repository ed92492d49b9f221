"""The Relax VM's call sequence, extracted as a plan that `edge_runner.c` replays.

After the VM lowering passes (CallTIRRewrite, StaticPlanBlockMemory, LowerAllocTensor,
LowerRuntimeBuiltin, VMShapeLower) a static-shape Relax `main` is a straight list of
bindings the VM would interpret:

    storage = R.vm.alloc_storage(R.shape([N]), 0, "uint8", "global")  -> `storage S N`
    t = R.vm.alloc_tensor(storage, off, R.shape([...]), dtype, 0)       -> `alloc T S off ...`
    kernel(t0, metadata[...], t1)             (a PrimFunc GlobalVar)  -> `call kernel 3 t0 t1 t2`
    v = R.call_packed("vm.builtin.reshape", t, R.shape([...]))         -> `view V T ...`
    R.vm.kill_object(x), vm.builtin.check_tensor_info / match_shape     -> nothing (static)

Constants become `const` entries whose bytes go to a side file, `main`'s parameters become
`input` entries, its result (a tensor or nested tuple of tensors) `output` entries. A tensor
in the plan is `CODE BITS LANES NDIM D0 D1 ...` (DLPack dtype, then shape).

Anything else (a dynamic shape, another packed function, a call into a Relax function, control
flow) raises `Unsupported` with the reason; the artifact then still runs over RPC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from compiler import __version__

PLAN_VERSION = 1
ALIGN = 64  # constant offsets in the side file; the runner copies to 64-byte aligned memory


class Unsupported(Exception):
    """The lowered module has something the standalone runner cannot replay (message: why)."""


@dataclass(frozen=True)
class TensorEntry:
    tid: int
    shape: tuple[int, ...]
    dtype: str

    def spec(self) -> str:
        dt = tvm.DataType(self.dtype)
        return " ".join(map(str, (dt.type_code, dt.bits, dt.lanes, len(self.shape), *self.shape)))

    def nbytes(self) -> int:
        dt = tvm.DataType(self.dtype)
        return (dt.bits * dt.lanes + 7) // 8 * int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class StorageEntry:
    sid: int
    nbytes: int


@dataclass
class Plan:
    """`lines` (the plan text, one entry a line), `consts` (the side file's bytes), the
    inputs and outputs as {"shape", "dtype"} in order, and `input_offsets`, the byte offset
    of each input in the runner's inputs file (inputs back to back, in order)."""

    lines: list[str] = field(default_factory=list)
    consts: bytearray = field(default_factory=bytearray)
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    input_offsets: list[int] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _static_shape(shape: relax.ShapeExpr, what: str) -> tuple[int, ...]:
    if not isinstance(shape, relax.ShapeExpr) or not all(
            isinstance(v, tvm.tirx.IntImm) for v in shape.values):
        raise Unsupported(f"{what} has a dynamic shape {shape}")
    return tuple(int(v) for v in shape.values)


def _tensor_type(ty: tvm.ir.Type, what: str) -> tuple[tuple[int, ...], str]:
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise Unsupported(f"{what} is not a tensor of known shape ({ty})")
    return _static_shape(ty.shape, what), str(ty.dtype)


def _callee_name(call: relax.Call) -> str:
    op = call.op
    if isinstance(op, relax.ExternFunc):
        return op.global_symbol
    if isinstance(op, tvm.ir.GlobalVar):
        return op.name_hint
    return op.name if isinstance(op, tvm.ir.Op) else str(op)


class _Extractor:
    """Walks `main`'s bindings once, in order, appending plan entries."""

    def __init__(self, mod: tvm.IRModule) -> None:
        self.mod = mod
        self.plan = Plan()
        self.values: dict = {}  # relax Var -> TensorEntry | StorageEntry | list | None
        self.n_tensors = 0
        self.n_storage = 0

    def new_tensor(self, shape: tuple[int, ...], dtype: str) -> TensorEntry:
        self.n_tensors += 1
        return TensorEntry(self.n_tensors - 1, shape, dtype)

    def run(self, main: relax.Function) -> Plan:
        self.plan.lines.append(f"# etch {__version__} edge plan v{PLAN_VERSION}: "
                               f"replayed by backends/tvm/edge_runner.c")
        self.add_inputs(main.params)
        body = main.body
        if not isinstance(body, relax.SeqExpr):
            raise Unsupported(f"main's body is a {type(body).__name__}, not a sequence")
        for block in body.blocks:
            for binding in block.bindings:
                if not isinstance(binding, relax.VarBinding):
                    raise Unsupported(f"{type(binding).__name__} in main")
                self.values[binding.var] = self.value(binding.value)
        for entry in _flatten(self.value(body.body)):
            self.plan.lines.append(f"output {entry.tid}")
            self.plan.outputs.append({"shape": list(entry.shape), "dtype": entry.dtype})
        return self.plan

    def add_inputs(self, params: list[relax.Var]) -> None:
        offset = 0
        for p in params:
            shape, dtype = _tensor_type(p.ty, f"input {p.name}")
            entry = self.new_tensor(shape, dtype)
            self.values[p] = entry
            self.plan.lines.append(f"input {entry.tid} {offset} {entry.spec()}")
            self.plan.inputs.append({"shape": list(shape), "dtype": dtype})
            self.plan.input_offsets.append(offset)
            offset += entry.nbytes()

    def value(self, expr: relax.Expr):
        if isinstance(expr, relax.Var):
            if expr not in self.values:
                raise Unsupported(f"unbound variable {expr.name}")
            return self.values[expr]
        if isinstance(expr, relax.Tuple):
            return [self.value(f) for f in expr.fields]
        if isinstance(expr, relax.TupleGetItem):
            return self.value(expr.tuple_value)[expr.index]
        if isinstance(expr, tvm.ir.GenericConst) and isinstance(expr.value, tvm.runtime.Tensor):
            return self.constant(expr.value.numpy())
        if isinstance(expr, relax.Call):
            return self.call(expr)
        raise Unsupported(f"{type(expr).__name__} in main: {expr}")

    def constant(self, data: np.ndarray) -> TensorEntry:
        entry = self.new_tensor(tuple(data.shape), str(data.dtype))
        consts = self.plan.consts
        consts.extend(b"\0" * (-len(consts) % ALIGN))
        self.plan.lines.append(f"const {entry.tid} {len(consts)} {entry.spec()}")
        consts.extend(np.ascontiguousarray(data).tobytes())
        return entry

    def call(self, call: relax.Call):
        name = _callee_name(call)
        if isinstance(call.op, tvm.ir.GlobalVar):
            return self.kernel(call)
        if name not in BUILTINS:
            raise Unsupported(f"main calls {name}, which the standalone runner does not have")
        return BUILTINS[name](self, call)

    def kernel(self, call: relax.Call) -> None:
        func = self.mod[call.op]
        if not isinstance(func, tvm.tirx.PrimFunc):
            raise Unsupported(f"main calls the Relax function {call.op.name_hint}")
        symbol = str(func.attrs.get("global_symbol", call.op.name_hint))
        args = [self.argument(a, symbol) for a in call.args]
        self.plan.lines.append(f"call {symbol} {len(args)} {' '.join(args)}".rstrip())

    def argument(self, arg: relax.Expr, symbol: str) -> str:
        if isinstance(arg, tvm.tirx.IntImm):
            return f"i{int(arg.value)}"
        entry = self.value(arg)
        if not isinstance(entry, TensorEntry):
            raise Unsupported(f"{symbol} takes a {type(arg).__name__} argument")
        return f"t{entry.tid}"


def _alloc_storage(ex: _Extractor, call: relax.Call) -> StorageEntry:
    (nbytes,) = _static_shape(call.args[0], "storage")
    ex.n_storage += 1
    entry = StorageEntry(ex.n_storage - 1, nbytes)
    ex.plan.lines.append(f"storage {entry.sid} {nbytes}")
    return entry


def _alloc_tensor(ex: _Extractor, call: relax.Call) -> TensorEntry:
    storage, offset, shape, dtype = call.args[:4]
    if not isinstance(offset, tvm.tirx.IntImm):
        raise Unsupported(f"tensor at a dynamic storage offset {offset}")
    entry = ex.new_tensor(_static_shape(shape, "tensor"), str(dtype.value))
    sid = ex.value(storage).sid
    ex.plan.lines.append(f"alloc {entry.tid} {sid} {int(offset.value)} {entry.spec()}")
    return entry


def _reshape(ex: _Extractor, call: relax.Call) -> TensorEntry:
    src = ex.value(call.args[0])
    entry = ex.new_tensor(_static_shape(call.args[1], "reshape"), src.dtype)
    ex.plan.lines.append(f"view {entry.tid} {src.tid} {entry.spec()}")
    return entry


def _nothing(ex: _Extractor, call: relax.Call) -> None:
    return None


# Shape checks are dropped: every shape is static and the runner checks sizes.
BUILTINS: dict[str, Callable[[_Extractor, relax.Call], object]] = {
    "relax.vm.alloc_storage": _alloc_storage,
    "relax.vm.alloc_tensor": _alloc_tensor,
    "vm.builtin.reshape": _reshape,
    "relax.vm.kill_object": _nothing,
    "relax.null_value": _nothing,
    "vm.builtin.check_tensor_info": _nothing,
    "vm.builtin.match_shape": _nothing,
}


def _flatten(value) -> list[TensorEntry]:
    if isinstance(value, TensorEntry):
        return [value]
    if isinstance(value, list):
        return [e for v in value for e in _flatten(v)]
    raise Unsupported(f"main returns a {type(value).__name__}, not tensors")


def extract_plan(lowered: tvm.IRModule, func_name: str = "main") -> Plan:
    """The plan of `lowered[func_name]`, a Relax function after the VM lowering passes.

    Raises `Unsupported` naming the first construct the runner cannot replay.
    """
    return _Extractor(lowered).run(lowered[func_name])
