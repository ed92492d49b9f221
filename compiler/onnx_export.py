"""IR -> ONNX, so a transformed graph opens in Netron and (its float parts) run in ORT.

Ops named `<domain>.<Name>` become nodes of that domain (`etch` ops in the custom `etch`
domain, version 1). Array attributes become tensor attributes. Every value gets a
value_info with its static shape. Quantisation annotations are written to the value's
doc_string in words (they are for people; the integer ops carry their own parameters).
Attributes etch adds to standard ops (which ONNX's schema does not define) are stored as
JSON in the node's doc_string under `ETCH_ATTRS`, so ORT still accepts the node.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.ir import Graph, Node, Value

ETCH_ATTRS = "etch-attrs:"  # doc-string prefix for etch annotations on standard ops


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


def _schema_attrs(op_type: str, opset: int) -> set[str] | None:
    """The attribute names ONNX defines for a default-domain op (None if unknown)."""
    try:
        return set(onnx.defs.get_schema(op_type, opset, "").attributes)
    except onnx.defs.SchemaError:
        return None


def _node(n: Node, opset: int) -> onnx.NodeProto:
    domain, _, op_type = n.op.rpartition(".")
    attrs = {k: v for k, v in n.attrs.items() if v is not None}
    known = _schema_attrs(op_type, opset) if not domain else None
    # etch's own annotations on standard ops (e.g. placement) would make ORT reject the
    # node: they travel in the doc string instead, and the importer reads them back.
    extra = {k: v for k, v in attrs.items() if known is not None and k not in known}
    node = helper.make_node(op_type, n.inputs, n.outputs, name=n.name, domain=domain,
                            **{k: _attr(v) for k, v in attrs.items() if k not in extra})
    if extra:
        node.doc_string = ETCH_ATTRS + json.dumps(extra, sort_keys=True, default=_jsonable)
    return node


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"cannot store {type(v).__name__} in a doc string")


def _initializers(graph: Graph) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """(Identity nodes, initializers). A graph output that is a constant (everything folded)
    is produced by an Identity from an initializer under a fresh name (one no value of the
    graph has), placed first so that nodes reading the constant still follow its producer.
    A graph output that is a graph input needs nothing: ONNX allows it as it is."""
    nodes, inits, used = [], [], set(graph.values)
    outputs = set(graph.outputs)
    for v in graph.values.values():
        if not v.is_const:
            continue
        name = v.name
        if v.name in outputs:
            name = graph.fresh(f"{v.name}__const", avoid=used)
            used.add(name)
            nodes.append(helper.make_node("Identity", [name], [v.name], name=f"output_{v.name}"))
        inits.append(numpy_helper.from_array(np.asarray(v.data), name))
    return nodes, inits


def export_model(graph: Graph) -> onnx.ModelProto:
    """The graph as an ONNX ModelProto (opset `graph.opset` plus custom domains)."""
    produced = {o for n in graph.nodes for o in n.outputs}
    inner = [graph.values[o] for o in sorted(produced) if o not in graph.outputs]
    const_outs, inits = _initializers(graph)
    nodes = const_outs + [_node(n, graph.opset) for n in graph.nodes]
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
