"""IR graph -> Relax IRModule, one kernel (PrimFunc from TE) per node, built with
`relax.BlockBuilder` (not TVM's ONNX frontend).

`LOWERINGS` maps each op to its lowering function `(ctx, node) -> None`, which binds the
node's outputs in `ctx.env`. `backends.tvm.support.SUPPORTED_OPS` lists the same names
without importing TVM; a test keeps the two equal.

The module's `main` takes the graph inputs in order and returns its outputs (a tuple when
there are several). Weights are Relax constants: they are embedded in the exported library.
A node whose outputs hold no elements gets no kernel (its outputs are empty constants).

Errors: `check_supported` refuses, before any lowering, an op or a value dtype this backend
does not build. Whatever else goes wrong lowering a node (an op's attribute it refuses, or a
TVM or numpy error escaping a lowering) becomes one `EtchError` naming the node and op.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from tvm import ir, relax

from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.conv import lower_conv, lower_conv_transpose
from backends.tvm.lower.epilogue import lower_alias, lower_elementwise
from backends.tvm.lower.fused import lower_fused
from backends.tvm.lower.indexing import (
    lower_arg,
    lower_cumsum,
    lower_gather_elements,
    lower_one_hot,
    lower_topk,
    lower_trilu,
)
from backends.tvm.lower.int_ops import DEQUANT_LOWERINGS, INT_LOWERINGS
from backends.tvm.lower.integer_pow import lower_pow
from backends.tvm.lower.linear import lower_einsum, lower_gemm, lower_matmul
from backends.tvm.lower.lut_gemm import lower_lut_gemm
from backends.tvm.lower.norm import (
    lower_batch_norm,
    lower_instance_norm,
    lower_layer_norm,
    lower_softmax,
)
from backends.tvm.lower.pool import lower_global_pool, lower_lrn, lower_pool
from backends.tvm.lower.qlinear import (
    lower_conv_integer,
    lower_dequantize,
    lower_dynamic_quantize,
    lower_matmul_integer,
    lower_qlinear_conv,
    lower_qlinear_matmul,
    lower_quantize,
)
from backends.tvm.lower.reduce import OPS as REDUCE_OPS
from backends.tvm.lower.reduce import lower_reduce
from backends.tvm.lower.resize import lower_resize
from backends.tvm.lower.scalar import SCALAR
from backends.tvm.lower.tensor import (
    lower_concat,
    lower_depth_to_space,
    lower_dropout,
    lower_expand,
    lower_gather,
    lower_pad,
    lower_slice,
    lower_space_to_depth,
    lower_split,
    lower_tile,
    lower_transpose,
)
from backends.tvm.support import DTYPES, error_line, storage
from compiler.errors import EtchError
from compiler.ir import Graph, Node

Lowering = Callable[[LowerCtx, Node], None]


def lower_cast_like(ctx: LowerCtx, node: Node) -> None:
    """CastLike: a Cast to its second input's type (which is all that input gives)."""
    to = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(ctx.elem_type(node.inputs[1])))
    lower_elementwise(ctx, Node("Cast", node.inputs[:1], node.outputs,
                                {**node.attrs, "to": int(to)}, node.name))


LOWERINGS: dict[str, Lowering] = {
    **{op: lower_elementwise for op in SCALAR if op not in ("Identity", "Dropout")},
    "Pow": lower_pow, "CastLike": lower_cast_like,
    "Identity": lower_alias, "Reshape": lower_alias, "Flatten": lower_alias,
    "Squeeze": lower_alias, "Unsqueeze": lower_alias, "Dropout": lower_dropout,
    "Conv": lower_conv, "ConvTranspose": lower_conv_transpose,
    "Gemm": lower_gemm, "MatMul": lower_matmul,
    "MaxPool": lower_pool, "AveragePool": lower_pool, "LpPool": lower_pool,
    "ArgMax": lower_arg, "ArgMin": lower_arg, "GatherElements": lower_gather_elements,
    "Trilu": lower_trilu, "CumSum": lower_cumsum, "OneHot": lower_one_hot, "TopK": lower_topk,
    "GlobalAveragePool": lower_global_pool, "GlobalMaxPool": lower_global_pool, "LRN": lower_lrn,
    "BatchNormalization": lower_batch_norm, "LayerNormalization": lower_layer_norm,
    "Softmax": lower_softmax, "LogSoftmax": lower_softmax,
    **{op: lower_reduce for op in REDUCE_OPS},
    "InstanceNormalization": lower_instance_norm,
    "Transpose": lower_transpose, "Concat": lower_concat, "Split": lower_split,
    "Slice": lower_slice, "Gather": lower_gather, "Expand": lower_expand, "Tile": lower_tile,
    "Pad": lower_pad, "DepthToSpace": lower_depth_to_space, "SpaceToDepth": lower_space_to_depth,
    "Resize": lower_resize,
    "Einsum": lower_einsum,
    "etch.Fused": lower_fused,
    **INT_LOWERINGS,
    "QuantizeLinear": lower_quantize, "DequantizeLinear": lower_dequantize,  # any parameters
    "DynamicQuantizeLinear": lower_dynamic_quantize, "MatMulInteger": lower_matmul_integer,
    "ConvInteger": lower_conv_integer, "QLinearMatMul": lower_qlinear_matmul,
    "QLinearConv": lower_qlinear_conv,
    **DEQUANT_LOWERINGS,  # etch.Dequant; Conv/Gemm/MatMul/etch.Fused with a Dequant weight
    "etch.LutGemm": lower_lut_gemm,
}


def check_supported(graph: Graph) -> None:
    """EtchError naming every op of `graph` this backend cannot build, or the first value
    whose element type it cannot build (support.DTYPES)."""
    missing = sorted({n.op for n in graph.nodes if n.op not in LOWERINGS})
    if missing:
        raise EtchError(f"the TVM backend does not build op(s) {', '.join(missing)}")
    for node in graph.nodes:
        for name in (*node.inputs, *node.outputs):
            dtype = graph.values[name].dtype if name else "float32"
            if dtype not in DTYPES:
                raise EtchError(f"the TVM backend does not build element type {dtype} (value "
                                f"%{name} of node {node.name}, {node.op}); it builds "
                                f"{', '.join(sorted(DTYPES))}")


def lower_node(ctx: LowerCtx, node: Node) -> None:
    """Lower one node; any failure is an EtchError naming the node and op."""
    if all(not o or ctx.graph.values[o].size == 0 for o in node.outputs):
        ctx.bind(node, *(ctx.array(np.zeros(ctx.shape(o), ctx.dtype(o))) if o else None
                         for o in node.outputs))
        return
    try:
        LOWERINGS[node.op](ctx, node)
    except EtchError as e:
        if str(e).startswith("node "):
            raise
        raise EtchError(f"node {node.name} ({node.op}): {e}") from e
    except Exception as e:  # a TVM or numpy error escaping a lowering: name where it was
        raise EtchError(f"node {node.name} ({node.op}): the TVM backend cannot build it: "
                        f"{error_line(e)}") from e


def to_irmodule(graph: Graph, *, pack: bool, lanes: int) -> ir.IRModule:
    """The Relax module computing `graph`. `pack` lays weights out for CPU vector kernels;
    `lanes` is the float32 vector width (1: plain reductions, the form dlight's GPU rules
    recognise)."""
    check_supported(graph)
    bb = relax.BlockBuilder()
    params = [relax.Var(f"input{k}", relax.TensorType(graph.values[name].shape,
                                                            storage(graph.values[name].dtype)))
              for k, name in enumerate(graph.inputs)]
    with bb.function("main", params):
        ctx = LowerCtx(graph, bb, pack=pack, lanes=lanes)
        ctx.env.update(zip(graph.inputs, params))
        with bb.dataflow():
            for node in graph.nodes:
                lower_node(ctx, node)
            outs = [bb.emit_output(ctx.expr(name)) for name in graph.outputs]
        bb.emit_func_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
    return bb.get()
