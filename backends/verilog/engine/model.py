"""A functional model of the tensor engine: the instruction set executed in numpy.

It runs a segment's program on its memory images exactly as the RTL defines each
instruction (not cycle by cycle), so the compiler's mapping (tiles, addresses, epilogue
registers, memory files) can be checked against the integer reference in milliseconds,
and a failing RTL simulation can be compared with it instruction by instruction. The one
requantisation formula is `compiler.reference.requantize`.
"""

from __future__ import annotations

import numpy as np

from backends.verilog.engine import isa
from backends.verilog.engine.memories import Images
from compiler.reference import requantize

I32 = (-(1 << 31), (1 << 31) - 1)


def _ext(b: np.ndarray, signed: bool | int) -> np.ndarray:
    b = np.asarray(b, np.int64) & 0xFF
    return np.where(b >= 128, b - 256, b) if signed else b


def _sext(v: np.ndarray, bits: int) -> np.ndarray:
    v = np.asarray(v, np.int64) & ((1 << bits) - 1)
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v)


class EngineModel:
    """One engine configuration with one segment's memories loaded."""

    def __init__(self, config: dict, images: Images) -> None:
        self.c, self.im = config, images
        self.rows, self.cols, self.lanes = config["rows"], config["cols"], config["lanes"]
        self.act = np.zeros((config["adepth"], self.lanes), np.int64)
        self.acc = np.zeros((config["accd"], self.cols), np.int64)
        self.csr = {name: 0 for name in isa.CSRS}
        self.weights = _sext(images.weights, config["ww"])

    def run(self, data: bytes) -> bytes:
        """One inference: the input bytes of the segment's IN tensors -> output bytes."""
        inp, out, pc = np.frombuffer(data, np.uint8).astype(np.int64), [], 0
        pos = 0
        while True:
            op, _layer, f = isa.decode(self.im.prog[pc])
            pc += 1
            if op == "END":
                return bytes(np.concatenate(out).astype(np.uint8)) if out else b""
            if op == "IN":
                n = f["chans"] * f["spatial"]
                self._store(f, inp[pos:pos + n])
                pos += n
            elif op == "OUT":
                out.append(self._load(f))
            elif op == "CFG":
                for j in range(3):
                    if f["wmask"] >> j & 1 and f["idx"] + j < len(isa.CSRS):
                        self.csr[isa.CSRS[f["idx"] + j]] = f[f"v{j}"]
            elif op == "PASS":
                self._pass(f)
            elif op == "POOL":
                self._pool()

    # ---- stream -------------------------------------------------------------------------
    def _where(self, f: dict) -> tuple[np.ndarray, np.ndarray]:
        c = np.arange(f["chans"])
        p = np.arange(f["spatial"])
        cc, pp = (np.repeat(c, p.size), np.tile(p, c.size)) if f["outer"] else \
            (np.tile(c, p.size), np.repeat(p, c.size))
        return f["base"] + (cc // self.lanes) * f["spatial"] + pp, cc % self.lanes

    def _store(self, f: dict, data: np.ndarray) -> None:
        word, lane = self._where(f)
        self.act[word, lane] = data

    def _load(self, f: dict) -> np.ndarray:
        word, lane = self._where(f)
        return self.act[word, lane]

    # ---- a GEMM pass --------------------------------------------------------------------
    def _pass(self, f: dict) -> None:
        s, r = self.csr, self.rows
        m = np.arange(f["count"])
        oy, ox = m // s["OW"], m % s["OW"]
        iy, ix = f["iy0"] + oy * s["SY"], f["ix0"] + ox * s["SX"]
        addr = f["row0"] + oy * s["ROW_STEP"] + ix
        pad = (iy < 0) | (iy >= s["SRC_H"]) | (ix < 0) | (ix >= s["SRC_W"])
        words = self.act[np.where(pad, 0, addr)]
        x = _ext(words[:, f["sub"] * r:(f["sub"] + 1) * r], s["A_SIGNED"]) - s["A_ZERO"]
        x[pad] = 0
        part = x @ self.weights[f["wrow"]:f["wrow"] + r]
        base = self.im.bias[f["param"]][None, :] if f["first"] else self.acc[:m.size]
        total = base + part
        if f["last"]:
            self._output(total, f["param"], f["dst"] + m, f["dsel"])
        else:
            self.acc[:m.size] = total

    # ---- a pool pass --------------------------------------------------------------------
    def _pool(self) -> None:
        s = self.csr
        nsel = self.lanes // self.cols
        for cb in range(s["P_CB"]):
            for oy in range(s["P_OH"]):
                for ox in range(s["OW"]):
                    v = self._window(cb, oy, ox)
                    dst = s["P_DST"] + cb * s["P_DST_S"] + oy * s["OW"] + ox
                    for j in range(nsel):
                        self._output(v[None, j * self.cols:(j + 1) * self.cols], s["P_PARAM"],
                                     np.array([dst]), j)

    def _window(self, cb: int, oy: int, ox: int) -> np.ndarray:
        s = self.csr
        vals = []
        for ky in range(s["P_KH"]):
            for kx in range(s["P_KW"]):
                iy = oy * s["SY"] - s["P_PADT"] + ky * s["P_DY"]
                ix = ox * s["SX"] - s["P_PADL"] + kx * s["P_DX"]
                if 0 <= iy < s["SRC_H"] and 0 <= ix < s["SRC_W"]:
                    word = s["P_ROW0"] + cb * s["P_SRC_S"] + oy * s["ROW_STEP"] \
                        + ky * s["P_ROW_DY"] + ix
                    vals.append(_ext(self.act[word], s["A_SIGNED"]))
        if s["P_MODE"] == isa.POOL_MAX:
            return np.max(vals, axis=0)
        return np.sum(np.array(vals) - s["A_ZERO"], axis=0)

    # ---- the output unit ----------------------------------------------------------------
    def _output(self, v: np.ndarray, param: int, dst: np.ndarray, dsel: int) -> None:
        s = self.csr
        if s["REQ_EN"]:
            y = requantize(v, self.im.m0[param][None, :], self.im.shift[param][None, :],
                           s["ZP"], s["QMIN"], s["QMAX"])
        else:
            y = np.clip(v, s["QMIN"], s["QMAX"])
        if s["TAB_EN"]:
            idx = (y & 0xFF) ^ (0x80 if s["TAB_IN_SIGNED"] else 0)
            y = _ext(self.im.tables[s["TAB_BASE"] + idx], s["TAB_OUT_SIGNED"])
        lanes = slice(dsel * self.cols, (dsel + 1) * self.cols)
        if s["QADD_EN"]:
            r = _ext(self.act[dst + s["RES_DELTA"], lanes], s["RES_SIGNED"])
            ra = requantize(y - s["QA_ZERO"], s["QA_M0"], s["QA_SHIFT"], 0, *I32)
            rb = requantize(r - s["QB_ZERO"], s["QB_M0"], s["QB_SHIFT"], 0, *I32)
            y = requantize(ra + rb, s["QO_M0"], s["QO_SHIFT"], s["QO_ZP"], s["QO_MIN"],
                           s["QO_MAX"])
        y = np.clip(y, s["CL_LO"], s["CL_HI"])
        self.act[dst, lanes] = y & 0xFF
