"""quant ops."""

from __future__ import annotations

from compiler.ops import OpDef

OPS: dict[str, OpDef] = {}
