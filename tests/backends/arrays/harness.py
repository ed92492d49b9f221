"""Drive compute arrays through the shared stream harness (tests only).

`array_stream.v` wraps up to six arrays of one shape (slots, chosen with -DARRAY<k>=<module>)
in the harness's stream ports, so one Verilator build serves every array kind. A test
program drives one slot: a list of `Tile`s (a weight tile, then its activation vectors),
encoded as input beats; every vector comes back with its result and two cycle stamps
(accepted, o_valid), so a test checks values and the latency/interval formulas at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backends.verilog import HARNESS, arrays
from runtime import verilator_build as vb

HERE = Path(__file__).resolve().parent
WRAPPER = HERE / "array_stream.v"
FIFO = HERE / "tb_fifo.v"
OP_IDLE, OP_WEIGHT, OP_VECTOR = 0, 1, 2
HEADER_BITS = 25                     # op, slot, w_row, w_bits, w_plane_mask (array_stream.v)
STAMP_BITS = 72                      # t_accept, t_out, flags


@dataclass(frozen=True)
class Config:
    """One design: the array kinds in its slots and their shared parameters (PW defaults to
    the full-range bound)."""

    kinds: tuple[tuple[str, str], ...]       # (engine, pe) per slot
    rows: int
    cols: int
    aw: int = 9
    ww: int = 8
    pw: int = 0

    def slot(self, engine: str, pe: str) -> int:
        return self.kinds.index((engine, pe))

    @property
    def psum(self) -> int:
        return self.pw or arrays.psum_width(self.rows, 1 << (self.aw - 1), 1 << (self.ww - 1))

    @property
    def in_beat(self) -> int:
        return (HEADER_BITS + max(self.rows * self.aw, self.cols * self.ww) + 7) // 8

    @property
    def out_beat(self) -> int:
        return (STAMP_BITS + self.cols * self.psum + 7) // 8

    def params(self) -> dict[str, int]:
        return {"ROWS": self.rows, "COLS": self.cols, "AW": self.aw, "WW": self.ww,
                "PW": self.psum}


def build(cfg: Config) -> Path:
    """The simulator of `cfg` (content-hash cached by verilator_build)."""
    kinds = [arrays.get(e, p) for e, p in cfg.kinds]
    sources = dict.fromkeys(f for k in kinds for f in k.sources())  # ordered, unique
    defines = [f"-DARRAY{s}={k.module}" for s, k in enumerate(kinds)]
    gen = [f"-G{k}={v}" for k, v in cfg.params().items()]
    spec = vb.BuildSpec((*sources, FIFO, WRAPPER), "array_stream", opt="-O0",
                        extra=(*defines, *gen))
    return vb.build(spec, HARNESS)


@dataclass
class Tile:
    """A weight tile w [rows, cols] and the vectors a [M, rows] run against it."""

    w: np.ndarray
    a: np.ndarray
    bits: int = 8
    mask: int | None = None                  # None: every plane below `bits`
    gaps: list[int] = field(default_factory=list)  # idle beats before vector k (default 0)

    @property
    def planes(self) -> int:
        return (1 << self.bits) - 1 if self.mask is None else self.mask


@dataclass
class Result:
    o: np.ndarray                            # [M, cols]
    t_accept: np.ndarray                     # [M] cycle of a_valid & a_ready
    t_out: np.ndarray                        # [M] cycle of o_valid
    busy_error: bool                         # busy disagreed with "in flight" on some cycle


def _field(value: int, bits: int) -> int:
    return int(value) & ((1 << bits) - 1)


def _pack(values: np.ndarray, bits: int) -> int:
    return sum(_field(v, bits) << (k * bits) for k, v in enumerate(values))


def encode(cfg: Config, slot: int, tiles: list[Tile]) -> tuple[np.ndarray, int]:
    """Input bytes of a program for `slot` and its number of result beats."""
    beats: list[int] = []
    for t in tiles:
        head = (slot << 2) | (_field(t.bits, 4) << 13) | (_field(t.planes, 8) << 17)
        for r in range(cfg.rows):
            beats.append(OP_WEIGHT | head | (r << 5) | (_pack(t.w[r], cfg.ww) << HEADER_BITS))
        for k, vec in enumerate(t.a):
            beats += [OP_IDLE | (slot << 2)] * (t.gaps[k] if k < len(t.gaps) else 0)
            beats.append(OP_VECTOR | (slot << 2) | (_pack(vec, cfg.aw) << HEADER_BITS))
    raw = b"".join(b.to_bytes(cfg.in_beat, "little") for b in beats)
    return np.frombuffer(raw, np.uint8), sum(len(t.a) for t in tiles)


def decode(cfg: Config, out: np.ndarray, n: int) -> Result:
    """Result beats -> values and stamps."""
    rows = out.reshape(n, cfg.out_beat)
    ints = [int.from_bytes(r.tobytes(), "little") for r in rows]
    pw = cfg.psum
    o = np.zeros((n, cfg.cols), np.int64)
    for k, v in enumerate(ints):
        for c in range(cfg.cols):
            x = (v >> (STAMP_BITS + c * pw)) & ((1 << pw) - 1)
            o[k, c] = x - (1 << pw) if x >> (pw - 1) else x
    t_acc = np.array([v & 0xFFFFFFFF for v in ints], np.int64)
    t_out = np.array([(v >> 32) & 0xFFFFFFFF for v in ints], np.int64)
    return Result(o, t_acc, t_out, any((v >> 64) & 1 for v in ints))


def run(cfg: Config, exe: Path, kind: tuple[str, str], tiles: list[Tile], stall: int = 0,
        seed: int = 1) -> Result:
    """Simulate a program on the array `kind`; `stall` (percent) withholds harness
    handshakes at random."""
    data, n = encode(cfg, cfg.slot(*kind), tiles)
    shape = vb.StreamShape(len(data), cfg.in_beat, n * cfg.out_beat, cfg.out_beat)
    out, _ = vb.simulate(exe, shape, data[None, :], max_cycles=100 * len(data) + 10_000,
                         stall_percent=stall, seed=seed)
    return decode(cfg, out[0], n)


def random_tile(cfg: Config, rng: np.random.Generator, m: int, bits: int = 8,
                gaps: bool = False) -> Tile:
    """Weights of `bits` signed bits (bits <= ww), activations over the full AW range."""
    bits = min(bits, cfg.ww)
    w = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (cfg.rows, cfg.cols))
    a = rng.integers(-(1 << (cfg.aw - 1)), 1 << (cfg.aw - 1), (m, cfg.rows))
    g = list(rng.integers(0, 3, m)) if gaps else []
    return Tile(w, a, bits, None, g)
