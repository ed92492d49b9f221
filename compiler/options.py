"""Compile options: one dataclass shared by the CLI, the driver, the passes and backends.

The CLI flags (docs/ARCHITECTURE.md, "Command line") map one to one onto these fields;
`validate` rejects values and combinations no target can honour, with one clear line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from compiler.errors import EtchError

TARGETS = ("cpu", "cuda", "edge", "verilog", "ref")


@dataclass
class CompileOptions:
    target: str = "cpu"
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # graph inputs made constants at import: an .npz path (--bind) or {name: array}
    bind: str | os.PathLike | Mapping[str, Any] | None = None
    bits: int | None = None          # weight bits; None = keep float weights
    ternary: bool = False
    group_size: int | None = None
    quant: str = "rtn"               # rtn | gptq
    per: str = "oc"                  # oc | ic | auto
    calib: str | Mapping[str, Any] | None = None  # a calibration .npz (or its arrays)
    int: bool = False                # cpu/edge: run the integer graph (W{B}A8)
    lut: bool = False                # LUT bit-serial GEMM for quantised weights
    lut_table: str = "int8"          # int8 | float: the LUT kernels' activation tables
    scale_format: str = "fp16"       # fp16 | u8: weight-only block scales (u8: two-level)
    rearrange: bool = False          # channel rearrangement before quantisation
    engine: str = "systolic"         # systolic | adder-tree | hardwired
    pe: str = "mac"                  # mac | booth | bitserial
    array: tuple[int, int] = (8, 8)
    max_cells: int | None = None     # verilog: refuse a design estimated above this
    neuron: str = "auto"             # hardwired: csd | grouped | auto
    pipeline: int = 0                # hardwired: a register stage every N adder levels
    fold: int = 1                    # hardwired: output neurons time-multiplexed, K phases
    area: bool = False
    tune: int = 0                    # MetaSchedule trials; 0 = rule-based schedules only
    fuse: bool = True
    threads: int | None = None
    mcpu: str | None = None          # override the detected CPU (cpu/edge)
    vector_bits: int | None = None   # cpu/edge vector width; None = the target's (512 on AVX-512)
    dump_dir: str | None = None
    print_after: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.target not in TARGETS:
            raise EtchError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.ternary and self.bits not in (None, 2):
            raise EtchError("--ternary is a 2-level-plus-zero code; do not combine with --bits")
        if self.bits is not None and not 1 <= self.bits <= 8:
            raise EtchError(f"--bits {self.bits}: weights take 1 to 8 bits")
        if self.group_size is not None and self.group_size <= 0:
            raise EtchError(f"--group-size {self.group_size}: must be positive")
        if self.quant not in ("rtn", "gptq"):
            raise EtchError(f"--quant {self.quant!r}: choose rtn or gptq")
        if self.per not in ("oc", "ic", "auto"):
            raise EtchError(f"--per {self.per!r}: choose oc, ic or auto")
        if self.quant == "gptq" and not self.calib:
            raise EtchError("--quant gptq needs calibration data: pass --calib DATA.npz")
        if self.int and self.target not in ("cpu", "edge", "ref", "verilog"):
            raise EtchError(f"--int runs the integer graph on cpu/edge; not on {self.target}")
        self._validate_lut()
        if self.max_cells is not None and self.max_cells <= 0:
            raise EtchError(f"--max-cells {self.max_cells}: must be positive")
        widths = {"cpu": (128, 256, 512), "edge": (128,)}.get(self.target, ())
        if self.vector_bits is not None and self.vector_bits not in widths:
            raise EtchError(f"--vector-bits {self.vector_bits}: the {self.target} target takes "
                            + (" or ".join(map(str, widths)) if widths else "no vector width"))
        self._validate_hardwired()
        if self.tune < 0:
            raise EtchError("--tune takes a number of trials >= 0")
        if self.threads is not None and self.threads < 1:
            raise EtchError(f"--threads {self.threads}: must be at least 1")
        if self.bind is not None and not isinstance(self.bind, (str, os.PathLike, Mapping)):
            raise EtchError("bind takes an .npz path or a dict of input name -> array")
        if len(self.array) != 2 or min(self.array) < 1:
            raise EtchError(f"--array {'x'.join(map(str, self.array))}: rows and columns must "
                            f"be at least 1 (e.g. 8x8)")

    def _validate_scale_format(self) -> None:
        if self.scale_format not in ("fp16", "u8"):
            raise EtchError(f"--scale-format {self.scale_format!r}: choose fp16 or u8")
        if self.scale_format == "fp16":
            return
        if not self.weight_quantised or self.int or self.target == "verilog":
            raise EtchError("--scale-format u8 sets the weight-only path's block scales: use "
                            "it with --bits/--ternary, without --int or --target verilog")
        if self.group_size is None:
            raise EtchError("--scale-format u8 splits block scales along K: add --group-size "
                            "(per-channel scales have one block per row)")

    def _validate_lut(self) -> None:
        self._validate_scale_format()
        if self.lut_table not in ("int8", "float"):
            raise EtchError(f"--lut-table {self.lut_table!r}: choose int8 or float")
        if not self.lut:
            if self.lut_table != "int8":
                raise EtchError("--lut-table applies to --lut; add --lut")
            return
        if self.int:
            raise EtchError("--lut runs float activations against low-bit weights; it does "
                            "not combine with --int (the integer graph)")
        if self.target == "verilog":
            raise EtchError("--lut builds cpu/edge/cuda kernels (and runs on ref); not verilog")

    def _validate_hardwired(self) -> None:
        if self.neuron not in ("csd", "grouped", "auto"):
            raise EtchError(f"--neuron {self.neuron!r}: choose csd, grouped or auto")
        if self.pipeline < 0:
            raise EtchError(f"--pipeline {self.pipeline}: must be >= 0 (0: no registers)")
        if self.fold < 1:
            raise EtchError(f"--fold {self.fold}: must be >= 1 (1: fully parallel)")
        hardwired = self.target == "verilog" and self.engine == "hardwired"
        if not hardwired and (self.neuron != "auto" or self.pipeline or self.fold != 1):
            raise EtchError("--neuron, --pipeline and --fold shape hardwired designs: use "
                            "them with --target verilog --engine hardwired")
        if hardwired and self.pe == "booth":
            raise EtchError("--pe booth: a hardwired design has no multipliers; use --pe mac "
                            "(bit-parallel inputs) or --pe bitserial (bit-serial inputs)")

    @property
    def weight_quantised(self) -> bool:
        return self.bits is not None or self.ternary

    def to_json(self) -> dict[str, Any]:
        """The options as JSON values (for the manifest). Calibration arrays passed in memory
        (the Python API takes a dict) are recorded by their shapes."""
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
        for key in ("calib", "bind"):
            given = getattr(self, key)
            if isinstance(given, os.PathLike):
                out[key] = os.fspath(given)
            elif given is not None and not isinstance(given, str):
                out[key] = {k: f"array{list(getattr(v, 'shape', ()))}"
                            for k, v in given.items()}
        return out
