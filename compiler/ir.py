"""etch's graph IR: one `Graph` of `Node`s over named `Value`s.

A `Value` is a tensor: name, static shape, dtype, optional constant data and optional
`QuantParams`. A `Node` is one op application (ONNX op names, `etch.*` for etch's own ops),
reading and writing values by name. Ordering and analysis go through networkx.

Invariants (checked by `Graph.verify`):
- every node input is a graph input, a constant or the output of exactly one node;
- every value has a static shape (tuple of non-negative ints) and a numpy dtype name;
- `nodes` is kept in a topological order by every mutating helper that can break it
  (call `toposort()` after hand edits).
"""

from __future__ import annotations

import copy
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from compiler.errors import EtchError

Shape = tuple[int, ...]


def code_range(bits: int, kind: str = "int", signed: bool = True) -> tuple[int, int]:
    """(qmin, qmax) of a code set: b-bit two's complement or unsigned; binary {-1,+1} and
    ternary {-1,0,+1} span [-1, 1]."""
    if kind in ("binary", "ternary"):
        return -1, 1
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


@dataclass
class QuantParams:
    """How a value's integers map to reals: x = scale * (q - zero_point).

    scale/zero_point are scalars (per tensor) or arrays along `axis` (per channel). With
    `group_size`, the scale varies along the K axis too (shape [K // group_size, N]).
    `kind` is "int" (b-bit two's complement or unsigned), "binary" ({-1,+1}) or "ternary".
    """

    scale: np.ndarray
    zero_point: np.ndarray
    bits: int = 8
    signed: bool = True
    axis: int | None = None
    group_size: int | None = None
    kind: str = "int"

    @property
    def qmin(self) -> int:
        return code_range(self.bits, self.kind, self.signed)[0]

    @property
    def qmax(self) -> int:
        return code_range(self.bits, self.kind, self.signed)[1]

    def describe(self) -> str:
        per = "tensor" if self.axis is None else f"axis {self.axis}"
        if self.group_size:
            per += f", group {self.group_size}"
        kind = self.kind if self.kind != "int" else f"{'s' if self.signed else 'u'}{self.bits}"
        return f"{kind} per {per}"


@dataclass(eq=False)
class Value:
    """A tensor in the graph. `data` is set for constants (initialisers)."""

    name: str
    shape: Shape
    dtype: str = "float32"
    data: np.ndarray | None = None
    quant: QuantParams | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        dims = "x".join(str(d) for d in self.shape) or "scalar"
        q = f" [{self.quant.describe()}]" if self.quant else ""
        return f"%{self.name}: {self.dtype}[{dims}]{q}"


@dataclass(eq=False)
class Node:
    """One op application. Empty strings in `inputs` mark omitted optional inputs."""

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    @property
    def domain(self) -> str:
        return self.op.rsplit(".", 1)[0] if "." in self.op else ""

    def __str__(self) -> str:
        attrs = ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.attrs.items()))
        ins = ", ".join(f"%{i}" if i else "_" for i in self.inputs)
        outs = ", ".join(f"%{o}" for o in self.outputs)
        return f"{outs} = {self.op}({ins}{'; ' + attrs if attrs else ''})"


def _short(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"array{list(v.shape)}" if v.size > 8 else str(v.tolist())
    if isinstance(v, (list, tuple)) and len(v) > 8:
        return f"[{len(v)} items]"
    return repr(v)


class Graph:
    """A dataflow graph: values by name, nodes in topological order, inputs and outputs."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.values: dict[str, Value] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.opset: int = 21
        self.metadata: dict[str, str] = {}

    # ---- construction -------------------------------------------------------------------
    def add_value(self, value: Value) -> Value:
        """Add or replace a value by name."""
        self.values[value.name] = value
        return value

    def add_const(self, name: str, data: np.ndarray, avoid: Container[str] = ()) -> Value:
        """Add a constant with a fresh name derived from `name` (see `fresh`)."""
        arr = np.asarray(data)
        return self.add_value(Value(self.fresh(name, avoid), tuple(arr.shape), arr.dtype.name,
                                    arr))

    def add_node(self, node: Node, index: int | None = None) -> Node:
        """Insert a node (at the end, or before position `index`); names it if unnamed."""
        if not node.name:
            node.name = self.fresh_node_name(node.op.rsplit(".", 1)[-1])
        self.nodes.insert(len(self.nodes) if index is None else index, node)
        return node

    def remove_node(self, node: Node) -> None:
        self.nodes.remove(node)

    def fresh(self, base: str, avoid: Container[str] = ()) -> str:
        """A value name used neither here nor in `avoid` (e.g. the graph being rewritten
        into this one): `base`, else `base_1`, `base_2`, ..."""
        name, i = base, 0
        while name in self.values or name in avoid:
            i += 1
            name = f"{base}_{i}"
        return name

    def fresh_node_name(self, base: str) -> str:
        used = {n.name for n in self.nodes}
        i = len(self.nodes)
        while f"{base}_{i}" in used:
            i += 1
        return f"{base}_{i}"

    # ---- queries --------------------------------------------------------------------------
    def producers(self) -> dict[str, Node]:
        """Value name -> the node that writes it."""
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        """Value name -> the nodes that read it (in node order)."""
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def const(self, name: str) -> np.ndarray | None:
        """The constant data of value `name`, or None if it is not a constant."""
        v = self.values.get(name)
        return None if v is None else v.data

    def nx_graph(self) -> nx.DiGraph:
        """Node-level dependency graph (node objects as vertices, value names on edges)."""
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        prod = self.producers()
        for n in self.nodes:
            for i in n.inputs:
                if i in prod:
                    g.add_edge(prod[i], n, value=i)
        return g

    def toposort(self) -> None:
        """Reorder `nodes` topologically, stable with respect to the current order."""
        order = {n: k for k, n in enumerate(self.nodes)}
        try:
            self.nodes = list(nx.lexicographical_topological_sort(self.nx_graph(), key=order.get))
        except nx.NetworkXUnfeasible as e:
            raise EtchError(f"graph {self.name!r} has a cycle") from e

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def param_count(self) -> int:
        return sum(v.size for v in self.values.values() if v.is_const)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    # ---- rewriting ------------------------------------------------------------------------
    def replace_uses(self, old: str, new: str) -> None:
        """Make every reader of `old` (and the graph outputs) read `new` instead."""
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]

    def prune(self) -> int:
        """Drop nodes whose outputs nobody uses and values nobody references; returns the
        number of nodes removed."""
        live = set(self.outputs)
        kept: list[Node] = []
        for n in reversed(self.nodes):
            if any(o in live for o in n.outputs):
                kept.append(n)
                live.update(i for i in n.inputs if i)
        removed = len(self.nodes) - len(kept)
        self.nodes = kept[::-1]
        used = live | set(self.inputs) | {o for n in self.nodes for o in n.outputs}
        self.values = {k: v for k, v in self.values.items() if k in used}
        return removed

    def copy(self) -> Graph:
        """A deep copy (constant arrays are shared: passes must not mutate them in place)."""
        g = Graph(self.name)
        g.values = {k: Value(v.name, v.shape, v.dtype, v.data, copy.deepcopy(v.quant))
                    for k, v in self.values.items()}
        g.nodes = [Node(n.op, list(n.inputs), list(n.outputs), copy.deepcopy(n.attrs), n.name)
                   for n in self.nodes]
        g.inputs, g.outputs = list(self.inputs), list(self.outputs)
        g.opset, g.metadata = self.opset, dict(self.metadata)
        return g

    # ---- checking -------------------------------------------------------------------------
    def verify(self) -> None:
        """Check the structural invariants; raise EtchError naming the first violation."""
        defined = set(self.inputs) | {k for k, v in self.values.items() if v.is_const}
        for n in self.nodes:
            for i in n.inputs:
                if i and i not in defined:
                    raise EtchError(f"node {n.name} ({n.op}) reads %{i} before it is defined")
            for o in n.outputs:
                if o in defined:
                    raise EtchError(f"value %{o} is written twice (node {n.name})")
                if o not in self.values:
                    raise EtchError(f"node {n.name} writes %{o}, which has no Value")
                defined.add(o)
        for name in list(self.inputs) + list(self.outputs):
            if name not in self.values:
                raise EtchError(f"graph input/output %{name} has no Value")
        for o in self.outputs:
            if o not in defined:
                raise EtchError(f"graph output %{o} is never computed")
        for v in self.values.values():
            if any((not isinstance(d, (int, np.integer))) or d < 0 for d in v.shape):
                raise EtchError(f"value %{v.name} has a non-static shape {v.shape}")

    # ---- text form ------------------------------------------------------------------------
    def __str__(self) -> str:
        lines = [f"graph {self.name} (opset {self.opset}) {{"]
        lines += [f"  input  {self.values[i]}" for i in self.inputs]
        consts = [v for v in self.values.values() if v.is_const]
        if consts:
            lines.append(f"  # {len(consts)} constants, {self.param_count()} elements")
        for n in self.nodes:
            outs = ", ".join(str(self.values[o]) for o in n.outputs if o in self.values)
            lines.append(f"  {n}    # {n.name} -> {outs}")
        lines += [f"  output {self.values[o]}" for o in self.outputs if o in self.values]
        lines.append("}")
        return "\n".join(lines)
