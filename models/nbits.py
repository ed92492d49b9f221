"""ONNX Runtime's MatMulNBits models: float MatMul weights quantised by ORT's own
`MatMulNBitsQuantizer` (the peer of `--lut`, and the imported-model tests' input).

The quantizer needs `onnx_ir` and rewrites the ModelProto it is given in place, so it gets a
copy. Its progress logging is silenced.
"""

from __future__ import annotations

import copy
import logging

import onnx


def quantize_nbits(model: onnx.ModelProto, bits: int = 4, block_size: int = 32,
                   accuracy_level: int | None = None,
                   symmetric: bool = False) -> onnx.ModelProto:
    """A copy of `model` with every MatMul by a constant weight as com.microsoft.MatMulNBits
    (`bits` 2..8, blocks of `block_size` along K, asymmetric unless `symmetric`)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    log = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        q = MatMulNBitsQuantizer(copy.deepcopy(model), bits=bits, block_size=block_size,
                                 is_symmetric=symmetric, accuracy_level=accuracy_level)
        q.process()
    finally:
        log.setLevel(level)
    return q.model.model


def set_accuracy_level(model: onnx.ModelProto, level: int) -> onnx.ModelProto:
    """A copy of a MatMulNBits model with every node's accuracy_level set to `level`."""
    out = copy.deepcopy(model)
    for node in out.graph.node:
        if node.op_type == "MatMulNBits":
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend(kept + [onnx.helper.make_attribute("accuracy_level", level)])
    return out
