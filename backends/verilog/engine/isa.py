"""The tensor engine's instruction set: one table, read by the compiler and by the RTL.

The controller (`rtl/te_ctrl.v`) executes a program of fixed-width instructions from a
memory initialised by `$readmemh`, one inference per pass through the program (END jumps
back to 0). Every instruction has `op` and `layer` (the layer its cycles count towards,
for per-layer statistics) in its top bits; the other fields depend on the opcode and are
packed from bit 0 upwards. `te_isa.sv` (rendered from this module by
`backends/verilog/engine/top.py`) is the same table as SystemVerilog localparams, so the
decoder and this encoder cannot disagree.

Opcodes:
- CFG idx wmask v0 v1 v2: write configuration register idx+j to vj for each bit j of
  wmask (32 bits each; a register past the end is ignored). Layer geometry and the output unit's epilogue live in
  these registers (`CSRS`); a program rewrites only those that change.
- PASS: one weight tile through the array: load tile rows wrow..wrow+R-1, stream `count`
  activation vectors from the conv address generator (rows starting at iy0/ix0, address
  row0 + ix), accumulate into the accumulator buffer (bias first when `first`), and on
  `last` send the sums through the output unit to output words dst+m, lane slice dsel.
- POOL: a pooling or elementwise layer through the pool unit (registers P_*).
- IN / OUT: receive / send a tensor on the stream, C-order bytes; the tensor is stored as
  words of B channels: word base + (c / B) * spatial + p, lane c % B. `outer` says the
  channel is the outer index of the C order (NCHW) rather than the inner one ([M, K]).
- SYNC: wait until every unit is idle (a layer boundary: the next layer reads what this
  one wrote). END: the program is done; the next inference starts at instruction 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.errors import EtchError

IW = 192  # instruction width
OP_BITS, LAYER_BITS = 4, 12
OPCODES = {"END": 0, "IN": 1, "OUT": 2, "CFG": 3, "PASS": 4, "POOL": 5, "SYNC": 6}
CSR_BITS = 32


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    signed: bool = False

    def check(self, value: int) -> int:
        """The field's bits for `value`; EtchError when it does not fit."""
        lo = -(1 << (self.width - 1)) if self.signed else 0
        hi = (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1
        if not lo <= value <= hi:
            raise EtchError(f"instruction field {self.name}={value} does not fit its "
                            f"{self.width} bits: the model is too large for the engine's "
                            f"instruction format")
        return value & ((1 << self.width) - 1)

    def get(self, word: int) -> int:
        v = (word >> self.lsb) & ((1 << self.width) - 1)
        return v - (1 << self.width) if self.signed and v >> (self.width - 1) else v


def _layout(spec: list[tuple[str, int, bool]]) -> dict[str, Field]:
    out, lsb = {}, 0
    for name, width, signed in spec:
        out[name] = Field(name, lsb, width, signed)
        lsb += width
    assert lsb <= IW - OP_BITS - LAYER_BITS
    return out


COMMON = {"op": Field("op", IW - OP_BITS, OP_BITS),
          "layer": Field("layer", IW - OP_BITS - LAYER_BITS, LAYER_BITS)}
_TENSOR = [("base", 20, False), ("chans", 16, False), ("spatial", 20, False),
           ("outer", 1, False)]
FIELDS: dict[str, dict[str, Field]] = {
    "PASS": _layout([("first", 1, False), ("last", 1, False), ("wrow", 20, False),
                     ("wbits", 4, False), ("mask", 8, False), ("row0", 24, True),
                     ("iy0", 16, True), ("ix0", 16, True), ("count", 16, False),
                     ("sub", 4, False), ("param", 16, False), ("dst", 20, False),
                     ("dsel", 4, False)]),
    "IN": _layout(_TENSOR),
    "OUT": _layout(_TENSOR),
    "CFG": _layout([("idx", 8, False), ("wmask", 3, False), ("v0", CSR_BITS, True),
                    ("v1", CSR_BITS, True), ("v2", CSR_BITS, True)]),
    "POOL": {}, "SYNC": {}, "END": {},
}

# Configuration registers, in index order (each CSR_BITS wide, signed values allowed).
CSRS = (
    # conv address generator (te_feed) and pool unit geometry
    "SRC_H", "SRC_W", "ROW_STEP", "SX", "SY", "OW", "A_ZERO", "A_SIGNED",
    # output unit: requantise, table, residual QAdd, final clamp
    "REQ_EN", "ZP", "QMIN", "QMAX", "TAB_EN", "TAB_BASE", "TAB_IN_SIGNED", "TAB_OUT_SIGNED",
    "QADD_EN", "RES_DELTA", "RES_SIGNED", "QA_ZERO", "QA_M0", "QA_SHIFT", "QB_ZERO", "QB_M0",
    "QB_SHIFT", "QO_M0", "QO_SHIFT", "QO_ZP", "QO_MIN", "QO_MAX", "CL_LO", "CL_HI",
    # pool unit
    "P_ROW0", "P_SRC_S", "P_CB", "P_KH", "P_KW", "P_DY", "P_DX", "P_PADT", "P_PADL", "P_OH",
    "P_ROW_DY", "P_DST", "P_DST_S", "P_PARAM", "P_MODE",
)
CSR = {name: k for k, name in enumerate(CSRS)}
POOL_SUM, POOL_MAX = 0, 1


def encode(op: str, layer: int = 0, **values: int) -> int:
    """One instruction word; every field of `op` not given is 0."""
    fields = FIELDS[op]
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"{op} has no field(s) {sorted(unknown)}")
    word = COMMON["op"].check(OPCODES[op]) << COMMON["op"].lsb
    word |= COMMON["layer"].check(layer) << COMMON["layer"].lsb
    for name, v in values.items():
        f = fields[name]
        word |= f.check(int(v)) << f.lsb
    return word


def decode(word: int) -> tuple[str, int, dict[str, int]]:
    """(op, layer, fields) of an instruction word."""
    code = COMMON["op"].get(word)
    op = next(k for k, v in OPCODES.items() if v == code)
    return op, COMMON["layer"].get(word), {n: f.get(word) for n, f in FIELDS[op].items()}


def cfg_words(values: dict[str, int], layer: int) -> list[int]:
    """CFG instructions writing `values` (CSR name -> value), up to three registers within
    a window of three consecutive indices per instruction."""
    idx = sorted(CSR[k] for k in values)
    words, k = [], 0
    while k < len(idx):
        first, slots, mask = idx[k], {"v0": 0, "v1": 0, "v2": 0}, 0
        while k < len(idx) and idx[k] < first + 3:
            j = idx[k] - first
            slots[f"v{j}"] = int(values[CSRS[idx[k]]])
            mask |= 1 << j
            k += 1
        words.append(encode("CFG", layer, idx=first, wmask=mask, **slots))
    return words
