"""ONNX -> IR.

Steps: load (external data included), fix input dims from `input_shapes`, make the graph
inputs named in `bind` constants holding the given values (compile-time binding, `--bind`,
see `compiler.binding`: they leave the graph's inputs, and everything they decide folds),
then walk the
nodes: each is renamed into etch's op namespace, upgraded to its canonical (opset 21) form
by its op's `upgrade` hook (attributes and element types added by later opsets are read as
ONNX defines them), and folded to a constant when its inputs are constants (or when only
input *shapes* matter, as for Shape/Size). Output shapes come from the op's shape rule in
`compiler.ops` (ONNX's shape inference is not run: etch's rules also cover its own and
other domains' ops, see the fixed input dims, and check every operand against the others,
e.g. a Gemm's K against its weight), so every value ends up static or the import fails
naming the node that made it dynamic or whose operands disagree.

Errors (all `EtchError`, one line): unreadable file, unsupported op (names every such op
and node, and what is supported), dynamic input dimension without an override, a shape that
stays dynamic (a value that decides an output shape computed at run time names the graph
inputs it comes from and `--bind`), an opset outside 1..the installed onnx's newest
(`max_opset()`), an op whose version at an opset below 9 differs from its version at 9 (etch
reads ops as defined from opset 9; older models are read where their ops are unchanged since,
e.g. And-7 or Not-1), an op whose version at the model's opset is newer than etch implements
(`ops.REVIEWED_OPSET`), a bound value naming no graph input or with another dtype or shape.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from compiler import binding, ops, reference
from compiler.errors import EtchError
from compiler.ir import Graph, Node, Value

# Ops are read as defined from this opset on; a model declaring an older opset (down to
# OLDEST_OPSET) is read when each of its ops is the same version there as at MIN_OPSET.
MIN_OPSET = 9
OLDEST_OPSET = 1
# Older nodes are upgraded to this opset's form; an imported graph declares at least it.
CANONICAL_OPSET = 21
# Outputs depend only on input shapes, which are static: always foldable.
SHAPE_OF = frozenset({"Shape", "Size"})
# Never folded even with constant inputs: they carry the quantisation the user gave.
KEEP = frozenset({"DequantizeLinear", "QuantizeLinear", "com.microsoft.MatMulNBits"})
FOLD_LIMIT = 1 << 24  # elements; larger constant results stay as nodes


def load_model(model: str | os.PathLike | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Read a ModelProto from a path, bytes or a ModelProto (copied), external data included."""
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        return proto
    try:
        if isinstance(model, bytes):
            return onnx.load_from_string(model)
        path = Path(model)
        if not path.is_file():
            raise EtchError(f"{path}: no such model file")
        return onnx.load(str(path), load_external_data=True)
    except EtchError:
        raise
    except Exception as e:  # protobuf and onnx raise many types for a bad file
        raise EtchError(f"cannot read ONNX model {str(model)[:200]}: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse `NAME=1x3x224x224` (the --input-shape syntax)."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x")) if dims else ()
    except ValueError:
        shape = (-1,)
    if not sep or not name or any(d <= 0 for d in shape):
        raise EtchError(f"bad --input-shape {text!r}: expected NAME=D1xD2x... with positive dims")
    return name, shape


def import_model(model: Any, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                 bind: Mapping[str, np.ndarray] | None = None) -> Graph:
    """ONNX model (path, bytes or ModelProto) -> a verified IR Graph with static shapes.

    `bind` maps graph input names to values: those inputs become constants (see `bound`)."""
    proto = load_model(model)
    _check_names(proto)
    opset = _default_opset(proto)
    graph = Graph(_graph_name(proto))
    graph.opset = opset
    inits = {t.name for t in proto.graph.initializer}
    _add_initializers(graph, proto)
    _add_inputs(graph, proto, inits, dict(input_shapes or {}), dict(bind or {}))
    _check_supported(proto)
    _check_old_versions(proto, opset)
    _check_versions(proto, opset)
    _name_omitted_outputs(proto.graph)
    for i, node_proto in enumerate(proto.graph.node):
        _import_node(graph, node_proto, i, opset)
    # Every node is now in its opset-21 form (the upgrade hooks); a newer model keeps its
    # opset, since its nodes may use attributes or element types added since.
    graph.opset = max(opset, CANONICAL_OPSET)
    graph.metadata["etch.source_opset"] = str(opset)
    graph.outputs = [o.name for o in proto.graph.output]
    for o in graph.outputs:
        if o not in graph.values:
            raise EtchError(f"graph output {o!r} is not produced by any node")
    graph.prune()
    graph.verify()
    return graph


def _check_names(proto: onnx.ModelProto) -> None:
    """Refuse names that are not valid UTF-8 (protobuf hands those back as bytes)."""
    g = proto.graph
    texts = [g.name] + [v.name for v in (*g.input, *g.output, *g.initializer)]
    for n in g.node:
        texts += [n.name, n.op_type, n.domain, *n.input, *n.output]
    texts += [imp.domain for imp in proto.opset_import]
    if any(not isinstance(t, str) for t in texts):
        raise EtchError("model has a name that is not valid UTF-8 (corrupt file?)")


def _graph_name(proto: onnx.ModelProto) -> str:
    return proto.graph.name or "model"


def max_opset() -> int:
    """The newest ONNX opset etch reads: the installed onnx's newest."""
    return int(onnx.defs.onnx_opset_version())


def _default_opset(proto: onnx.ModelProto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            if not OLDEST_OPSET <= imp.version <= max_opset():
                raise EtchError(f"model uses ONNX opset {imp.version}; etch reads opsets "
                                f"{OLDEST_OPSET} to {max_opset()} (the installed onnx's "
                                f"newest)")
            return int(imp.version)
    raise EtchError("model has no default-domain opset import")


def _op_version(op_type: str, opset: int) -> int:
    """The version of default-domain op `op_type` in force at `opset` (0 if ONNX has none)."""
    try:
        return int(onnx.defs.get_schema(op_type, opset, "").since_version)
    except onnx.defs.SchemaError:
        return 0


def _check_old_versions(proto: onnx.ModelProto, opset: int) -> None:
    """Below MIN_OPSET, refuse ops whose version there is not the one in force at MIN_OPSET:
    the upgrade hooks start from MIN_OPSET's forms (an op unchanged since, e.g. And-7 or
    Not-1, is read exactly as in an opset-9 model)."""
    if opset >= MIN_OPSET:
        return
    older = sorted({f"{n.op_type}-{v or 'undefined'}" for n in proto.graph.node
                    if n.domain in ("", "ai.onnx") and n.op_type != "Constant"
                    and (v := _op_version(n.op_type, opset)) != _op_version(n.op_type,
                                                                             MIN_OPSET)})
    if older:
        raise EtchError(f"model uses ONNX opset {opset}: etch reads ops as defined from opset "
                        f"{MIN_OPSET} on, and {', '.join(older)} changed since (convert the "
                        f"model with onnx.version_converter to opset {MIN_OPSET} or newer)")


def _check_versions(proto: onnx.ModelProto, opset: int) -> None:
    """Refuse ops whose version at `opset` came after the opsets whose changes etch's op
    semantics implement: ONNX may have changed what they compute."""
    if opset <= ops.REVIEWED_OPSET:
        return
    newer = sorted({f"{n.op_type}-{v}" for n in proto.graph.node if n.domain in ("", "ai.onnx")
                    and (v := _op_version(n.op_type, opset)) > ops.REVIEWED_OPSET})
    if newer:
        raise EtchError(f"model uses ONNX opset {opset}: etch implements ops as defined up to "
                        f"opset {ops.REVIEWED_OPSET}, not {', '.join(newer)}")


def _add_initializers(graph: Graph, proto: onnx.ModelProto) -> None:
    for t in proto.graph.initializer:
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:
            raise EtchError(f"initializer {t.name!r} cannot be read: {_first_line(e)}") from e
        graph.add_value(Value(t.name, tuple(int(d) for d in arr.shape), arr.dtype.name, arr))


def _add_inputs(graph: Graph, proto: onnx.ModelProto, inits: set[str],
                overrides: dict[str, tuple[int, ...]], bind: dict[str, np.ndarray]) -> None:
    names = [i.name for i in proto.graph.input if i.name not in inits]
    for what, given in (("--input-shape", overrides), ("--bind", bind)):
        unknown = set(given) - set(names)
        if unknown:
            raise EtchError(f"{what} names unknown input(s) {sorted(unknown)}; "
                            f"the model's inputs are {names}")
    both = sorted(set(overrides) & set(bind))
    if both:
        raise EtchError(f"input(s) {both} are given both --input-shape and --bind; a bound "
                        f"input takes its shape from its value")
    for inp in proto.graph.input:
        if inp.name in inits:
            continue
        ttype = inp.type.tensor_type
        if not inp.type.HasField("tensor_type"):
            raise EtchError(f"input {inp.name!r} is not a tensor")
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name
        except KeyError as e:
            raise EtchError(f"input {inp.name!r} has unknown element type "
                            f"{ttype.elem_type}") from e
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
        if inp.name in bind:
            graph.add_value(binding.bound_value(inp.name, bind[inp.name], dtype, dims))
            continue
        shape = overrides.get(inp.name, tuple(dims))
        if inp.name in overrides and len(shape) != len(dims):
            raise EtchError(f"--input-shape {inp.name}: model input has rank {len(dims)}, "
                            f"got {len(shape)} dims")
        if inp.name not in overrides:
            bad = [d.dim_param or "?" for d in ttype.shape.dim if not d.HasField("dim_value")]
            if bad or any(d < 0 for d in dims):
                example = "x".join("1" if d <= 0 else str(d) for d in dims)
                raise EtchError(f"input {inp.name!r} has dynamic dimension(s) {bad}; fix them "
                                f"with --input-shape {inp.name}={example}")
        graph.add_value(Value(inp.name, tuple(int(d) for d in shape), dtype))
        graph.inputs.append(inp.name)
    if bind:
        binding.record(graph, [n for n in names if n in bind])


def op_name(node: onnx.NodeProto) -> str:
    """The IR op name of an ONNX node: `Conv`, `com.microsoft.MatMulNBits`, `etch.LutGemm`."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _check_supported(proto: onnx.ModelProto) -> None:
    table = ops.registry()
    missing: dict[str, list[str]] = {}
    for i, n in enumerate(proto.graph.node):
        name = op_name(n)
        if name != "Constant" and name not in table:
            missing.setdefault(name, []).append(n.name or f"#{i}")
    if missing:
        what = "; ".join(f"{op} (node {', '.join(nodes[:3])}{', ...' if len(nodes) > 3 else ''})"
                         for op, nodes in sorted(missing.items()))
        raise EtchError(f"unsupported op(s): {what}. Supported: {', '.join(sorted(table))}")


def attr_value(a: onnx.AttributeProto) -> Any:
    """An ONNX attribute as a plain Python/numpy value (strings decoded)."""
    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        raise EtchError(f"attribute {a.name!r} holds a subgraph; control flow is not supported")
    v = onnx.helper.get_attribute_value(a)
    if v is None:
        raise EtchError(f"attribute {a.name!r} has no value")
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, list):
        return [x.decode("utf-8", errors="replace") if isinstance(x, bytes) else x for x in v]
    return v


def _name_omitted_outputs(g: onnx.GraphProto) -> None:
    """ONNX marks an optional output a node does not produce with the name "" (RNN's
    `["", "Y_h"]`, Dropout's `["y", ""]`). Trailing ones are dropped, as if never listed;
    one before a produced output gets a name no other value of the model has, so the op
    still sees its outputs by position. Mutates the proto (`load_model` returns a copy)."""
    used = {t.name for t in g.initializer} | {v.name for v in g.input}
    used |= {o for n in g.node for o in (*n.input, *n.output)}
    for i, n in enumerate(g.node):
        outs = list(n.output)
        while outs and not outs[-1]:
            outs.pop()
        for k, o in enumerate(outs):
            if not o:
                base, j = f"{n.name or n.op_type + '_' + str(i)}_unused{k}", 0
                while f"{base}_{j}" in used:
                    j += 1
                outs[k] = f"{base}_{j}"
                used.add(outs[k])
        if outs != list(n.output):
            del n.output[:]
            n.output.extend(outs)


def _import_node(graph: Graph, proto: onnx.NodeProto, index: int, opset: int) -> None:
    """Import one node; any failure (a malformed node or attribute) is an EtchError naming
    the node."""
    name = proto.name or f"{proto.op_type}_{index}"
    try:
        _import_node_checked(graph, proto, name, opset)
    except EtchError:
        raise
    except Exception as e:  # a malformed model trips many exception types in op code
        raise EtchError(f"node {name} ({proto.op_type}) cannot be imported: "
                        f"{_first_line(e)}") from e


def _etch_attrs(proto: onnx.NodeProto) -> dict[str, Any]:
    """etch annotations that `onnx_export` stored in a standard node's doc string."""
    from compiler.onnx_export import ETCH_ATTRS

    if not proto.doc_string.startswith(ETCH_ATTRS):
        return {}
    try:
        extra = json.loads(proto.doc_string[len(ETCH_ATTRS):])
    except ValueError as e:
        raise EtchError(f"node {proto.name}: malformed etch attributes in doc_string") from e
    if not isinstance(extra, dict):
        raise EtchError(f"node {proto.name}: malformed etch attributes in doc_string")
    return extra


def _import_node_checked(graph: Graph, proto: onnx.NodeProto, name: str, opset: int) -> None:
    attrs = {a.name: attr_value(a) for a in proto.attribute}
    attrs.update(_etch_attrs(proto))
    if op_name(proto) == "Constant":
        _import_constant(graph, proto.output[0], attrs, name)
        return
    for i in proto.input:
        if i and i not in graph.values:
            raise EtchError(f"node {name} ({proto.op_type}) reads undefined value {i!r}")
    node = Node(op_name(proto), list(proto.input), list(proto.output), attrs, name)
    opdef = ops.get(node.op)
    assert opdef is not None  # _check_supported ran first
    start = len(graph.nodes)
    graph.add_node(node)
    if opdef.upgrade is not None:
        opdef.upgrade(node, opset, graph)
    # An upgrade may have inserted helper nodes before `node`: settle each in order.
    for n in list(graph.nodes[start:]):
        _settle(graph, n)


def _import_constant(graph: Graph, out: str, attrs: dict, name: str) -> None:
    if "value" in attrs:
        arr = np.asarray(attrs["value"])
    elif len(attrs) == 1:
        key, val = next(iter(attrs.items()))
        dtype = {"value_float": np.float32, "value_floats": np.float32,
                 "value_int": np.int64, "value_ints": np.int64}.get(key)
        if dtype is None:
            raise EtchError(f"Constant {name}: attribute {key!r} is not supported")
        arr = np.asarray(val, dtype=dtype)
    else:
        raise EtchError(f"Constant {name} has no value")
    graph.add_value(Value(out, tuple(arr.shape), arr.dtype.name, arr))


def _settle(graph: Graph, node: Node) -> None:
    """Fold `node` to constants if possible, else give its outputs static shapes."""
    values = [graph.values[i] if i else None for i in node.inputs]
    # a value with no elements is known from its shape alone, as a constant is
    foldable = node.op in SHAPE_OF or all(v is None or v.is_const or v.size == 0
                                          for v in values)
    if foldable and node.op not in KEEP:
        outs = _evaluate(node, values, zeros_ok=node.op in SHAPE_OF)
        if all(o.size <= FOLD_LIMIT for o in outs):
            graph.remove_node(node)
            for name, arr in zip(node.outputs, outs):
                if name:
                    graph.add_value(Value(name, tuple(arr.shape), arr.dtype.name, arr))
            return
    for name, (shape, dtype) in zip(node.outputs, infer_outputs(node, values, graph)):
        if name:
            graph.add_value(Value(name, tuple(shape), dtype))


def _evaluate(node: Node, values: list[Value | None], zeros_ok: bool) -> list[np.ndarray]:
    args = []
    for v in values:
        if v is None:
            args.append(None)
        elif v.is_const:
            args.append(v.data)
        else:
            args.append(np.zeros(v.shape, v.dtype) if zeros_ok or v.size == 0 else None)
    try:
        with np.errstate(all="ignore"):  # zero-filled stand-ins may divide by zero
            return reference.run_node(node, args)
    except EtchError as e:  # an op's own check (operand shapes): say which node
        raise _at(node, e) from e
    except Exception as e:
        raise EtchError(f"node {node.name} ({node.op}) cannot be evaluated: "
                        f"{_first_line(e)}") from e


def _at(node: Node, e: EtchError) -> EtchError:
    """`e` prefixed with the node it happened at (and its op, unless the message names it)."""
    op = "" if str(e).startswith(node.op) else f" ({node.op})"
    return EtchError(f"node {node.name}{op}: {e}")


def _how_to_fix(graph: Graph | None, name: str) -> str:
    """What makes value `name` a constant: binding the graph inputs it is computed from."""
    sources = sorted(_graph_inputs_under(graph, name)) if graph is not None else []
    if not sources:
        return "fix input dims with --input-shape"
    return (f"bind graph input(s) {sources} to values at compile time with --bind FILE.npz "
            f"(or compile(..., bind={{name: array}}))")


def _graph_inputs_under(graph: Graph, name: str) -> set[str]:
    """The graph inputs value `name` is computed from."""
    producers = graph.producers()

    def inputs_of(v: str) -> list[str]:
        node = producers.get(v)
        return [] if node is None or node.op in SHAPE_OF else list(node.inputs)

    return upstream([name], inputs_of) & set(graph.inputs)


def upstream(start: list[str], inputs_of: Callable[[str], list[str]]) -> set[str]:
    """Every value `start` is computed from, `start` included: `inputs_of(v)` gives the
    inputs of v's producer to follow (none at a source or past Shape/Size, whose outputs
    depend only on static shapes); empty names are omitted optional inputs."""
    todo, seen = list(start), set()
    while todo:
        v = todo.pop()
        if v and v not in seen:
            seen.add(v)
            todo.extend(inputs_of(v))
    return seen


def infer_outputs(node: Node, values: list[Value | None],
                  graph: Graph | None = None) -> list[tuple[tuple[int, ...], str]]:
    """Output (shape, dtype) of `node`: the op's shape rule, else a run on zero inputs."""
    opdef = ops.get(node.op)
    assert opdef is not None
    if opdef.infer is not None:
        try:
            return opdef.infer(node.attrs, *values)
        except EtchError as e:  # the shape rule's operand checks
            raise _at(node, e) from e
    for k in opdef.shape_inputs:
        v = values[k] if k < len(values) else None
        if v is not None and not v.is_const:
            raise EtchError(f"node {node.name} ({node.op}): input {node.inputs[k]!r} decides "
                            f"the output shape but is computed at run time; etch needs static "
                            f"shapes: {_how_to_fix(graph, node.inputs[k])}")
    outs = _evaluate(node, values, zeros_ok=True)
    return [(tuple(int(d) for d in o.shape), o.dtype.name) for o in outs]
