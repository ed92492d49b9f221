"""IR -> ONNX, so a transformed graph opens in Netron and (its float parts) run in ORT.

Ops named `<domain>.<Name>` become nodes of that domain (`etch` ops in the custom `etch`
domain, version 1). Array attributes become tensor attributes. Every value gets a
value_info with its static shape. Quantisation annotations are written to the value's
doc_string in words (they are for people; the integer ops carry their own parameters).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.ir import Graph, Node, Value


def _elem_type(dtype: str) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _value_info(v: Value) -> onnx.ValueInfoProto:
    info = helper.make_tensor_value_info(v.name, _elem_type(v.dtype), list(v.shape))
    if v.quant is not None:
        info.doc_string = f"etch quant: {v.quant.describe()}"
    return info


def _attr(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return numpy_helper.from_array(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def _node(n: Node) -> onnx.NodeProto:
    domain, _, op_type = n.op.rpartition(".")
    attrs = {k: _attr(v) for k, v in n.attrs.items() if v is not None}
    return helper.make_node(op_type, n.inputs, n.outputs, name=n.name, domain=domain, **attrs)


def export_model(graph: Graph) -> onnx.ModelProto:
    """The graph as an ONNX ModelProto (opset `graph.opset` plus custom domains)."""
    consts = [v for v in graph.values.values() if v.is_const]
    inits = [numpy_helper.from_array(np.asarray(v.data), v.name) for v in consts]
    produced = {o for n in graph.nodes for o in n.outputs}
    inner = [graph.values[o] for o in sorted(produced) if o not in graph.outputs]
    # A graph output that is a constant (everything folded) needs a node to produce it.
    nodes = [_node(n) for n in graph.nodes]
    for o in graph.outputs:
        if o not in produced:
            src = o + "__const" if graph.values[o].is_const else o
            nodes.append(helper.make_node("Identity", [src], [o], name=f"output_{o}"))
            if graph.values[o].is_const:
                inits = [i for i in inits if i.name != o]
                inits.append(numpy_helper.from_array(np.asarray(graph.values[o].data), src))
    g = helper.make_graph(
        nodes, graph.name,
        [_value_info(graph.values[i]) for i in graph.inputs],
        [_value_info(graph.values[o]) for o in graph.outputs],
        initializer=inits, value_info=[_value_info(v) for v in inner])
    domains = sorted({n.op.rpartition(".")[0] for n in graph.nodes} - {""})
    opsets = [helper.make_opsetid("", graph.opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(g, opset_imports=opsets, producer_name="etch")
    model.ir_version = min(model.ir_version, 10)
    for k, v in sorted(graph.metadata.items()):
        model.metadata_props.add(key=k, value=v)
    return model


def save(graph: Graph, path: str) -> None:
    """Write the graph as an ONNX file."""
    onnx.save(export_model(graph), path)
