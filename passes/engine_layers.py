"""Which nodes of the integer graph the tensor engine runs, as which engine layers.

`find_layers(graph)` walks the graph in order and maps the nodes placed on the accelerator
to engine layers, each one pass of the engine's datapath:

- gemm: an etch.QFused group (passes/fuse_integer.py decides the groups: anchor ->
  requantise -> [table] -> [residual QAdd], clamps merged) anchored on etch.QConv /
  etch.QGemm with constant weight codes (no weight zero point, no group multipliers);
- pool: an etch.QFused group anchored on etch.QSumPool, or MaxPool on int8/uint8;
- ew: a standalone etch.Clamp, etch.Table or etch.QAdd (a 1x1 copy through the pool unit
  to reach the output unit);
a group is one layer as recorded; a standalone op's layer extends along single readers
that the output unit still has room for, in its fixed order: Clamp (folded into the bounds
of the step before), Table(s) (composed, clamps folded into the table), one QAdd whose
other operand is a stored tensor of the same shape computed before the layer starts. An
accumulating op outside any group runs on the host: the engine has no path for an int32
tensor.

Views (Reshape, Flatten, Squeeze, Unsqueeze, Identity) cost nothing: an `alias` when the
stored layout is the same (see `Layout`), or a `flatten` view read by GEMMs directly (the
GEMM becomes a convolution whose kernel covers the source tensor). Every other accel node
runs on the host, with the reason recorded; a float op placed on the accelerator is an
error (it has no integer form).

"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Graph, Node
from compiler.ops.etch_qfused import QGroup, group
from passes.int_rules import INT_OPS, MOVES

INT8 = ("int8", "uint8")
VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


@dataclass(frozen=True)
class Layout:
    """How a tensor is stored: element (c, p) of C channels x S positions; NCHW tensors
    (rank 4) have the channel outer in C order, others ([..., K]) inner."""

    chans: int
    spatial: int
    outer: bool

    @staticmethod
    def of(shape: tuple[int, ...]) -> Layout:
        if len(shape) == 4:
            return Layout(shape[1], shape[2] * shape[3], True)
        k = shape[-1] if shape else 1
        return Layout(k, int(np.prod(shape[:-1], dtype=np.int64)) if shape else 1, False)

    def same_storage(self, other: Layout) -> bool:
        """Whether both map every C-order index to the same (c, p)."""
        if (self.chans, self.spatial) != (other.chans, other.spatial):
            return False
        return self.outer == other.outer or self.spatial == 1 or self.chans == 1


@dataclass
class Layer:
    """One engine layer: its kind, the IR nodes it covers, what it reads and writes."""

    kind: str                       # gemm | pool | ew
    anchor: Node
    nodes: list[Node]
    src: str                        # the activation read (before views are resolved)
    out: str                        # the stored result
    requant: Node | None = None
    tables: list[Node] = field(default_factory=list)
    qadd: Node | None = None
    residual: str | None = None     # the QAdd's other operand
    clamps: list[tuple[str, int, int]] = field(default_factory=list)  # (stage, lo, hi)


class Finder:
    """One walk over the graph (see the module docstring)."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.consumers = graph.consumers()
        self.layers: list[Layer] = []
        self.views: dict[str, str] = {}          # view node name -> kind (alias | flatten)
        self.host: dict[str, str] = {}           # node name -> why it runs on the host
        self.taken: set[str] = set()
        self.pos = {n.name: k for k, n in enumerate(graph.nodes)}
        self.producers = graph.producers()

    def run(self) -> Finder:
        for node in self.g.nodes:
            if node.name in self.taken or node.attrs.get("placement") != "accel":
                continue
            if node.op not in INT_OPS | MOVES | {"etch.QFused"}:
                raise EtchError(f"node {node.name} ({node.op}) is placed on the accelerator "
                                f"but has no integer form; it can only run on the host")
            why = self._match(node)
            if why is not None:
                self.host[node.name] = why
        return self

    # ---- anchors ------------------------------------------------------------------------
    def _match(self, node: Node) -> str | None:
        if node.op == "etch.QFused":
            return self._group(node, group(node.attrs, node.inputs, node.outputs[0]))
        if node.op in ("etch.QGemm", "etch.QConv", "etch.QSumPool"):
            return "its int32 result is in no integer fusion group (see etch.int_groups)"
        if node.op == "MaxPool":
            return self._maxpool(node)
        if node.op in ("etch.Clamp", "etch.Table", "etch.QAdd"):
            return self._elementwise(node)
        if node.op in VIEWS:
            return self._view(node)
        return f"{node.op} has no tensor-engine mapping"

    def _group(self, node: Node, grp: QGroup) -> str | None:
        """An etch.QFused group as a layer: its anchor and steps as plain nodes."""
        anchor = Node(grp.anchor, list(grp.anchor_inputs), [node.outputs[0]],
                      dict(grp.anchor_attrs), node.name)
        why = self._pool_input(anchor) if grp.anchor == "etch.QSumPool" else \
            self._gemm(anchor)
        if why is not None:
            return why
        if grp.anchor == "etch.QSumPool" and self.g.values[grp.requant.args[1]].size > 1:
            return "a pool requantised per channel (the pool unit has one multiplier)"
        req = Node(grp.requant.op, list(grp.requant.args), [], grp.requant.attrs)
        layer = Layer("pool" if grp.anchor == "etch.QSumPool" else "gemm", anchor, [node],
                      anchor.inputs[0], "", requant=req)
        if grp.table is not None:
            layer.tables.append(Node(grp.table.op, list(grp.table.args), [], grp.table.attrs))
        if grp.residual is not None:
            r = grp.residual_value
            if not self._int8(r) or not self._before(r, node):
                return "its residual is not a stored activation computed before it"
            layer.qadd = Node(grp.residual.op, list(grp.residual.args), [],
                              grp.residual.attrs)
            layer.residual = r
        return self._finish(layer, stage=4)  # the group as recorded, nothing added

    def _pool_input(self, node: Node) -> str | None:
        x = node.inputs[0]
        if not self._int8(x) or len(self.g.values[x].shape) != 4:
            return "pooling runs on 4-D int8/uint8 tensors"
        return None

    def _gemm(self, node: Node) -> str | None:
        x, w = node.inputs[0], node.inputs[1]
        extra = node.inputs[3:]
        if not self._int8(x):
            return "its input is not an int8/uint8 activation"
        if not self.g.values[w].is_const:
            return "both operands are activations (the engine's weights are constants)"
        if any(i and not self.g.values[i].is_const for i in node.inputs[2:]):
            return "a computed bias or zero point"
        if len(extra) > 1 and extra[1] and np.any(self.g.values[extra[1]].data):
            return "weights with a zero point"
        if len(extra) > 2 and extra[2]:
            return "weights with group multipliers (--group-size)"
        shape = self.g.values[x].shape
        if node.op == "etch.QConv" and (len(shape) != 4 or shape[0] != 1):
            return "only 2-D convolutions of one image"
        if node.op == "etch.QGemm" and self.g.values[w].data.ndim != 2:
            return "a batched weight"
        return None

    def _maxpool(self, node: Node) -> str | None:
        x = node.inputs[0]
        why = self._pool_input(node)
        if why is not None:
            return why
        if any(o and self.consumers.get(o) for o in node.outputs[1:]):
            return "its Indices output is used"
        return self._finish(Layer("pool", node, [node], x, ""))

    def _elementwise(self, node: Node) -> str | None:
        x = node.inputs[0]
        if not self._int8(x) or not self._int8(node.outputs[0]):
            return "elementwise ops run on int8/uint8 tensors"
        layer = Layer("ew", node, [node], x, "")
        if node.op == "etch.QAdd":
            other = node.inputs[1]
            if not self._int8(other) or self._shape(other) != self._shape(x) or other == x:
                return "a broadcasting QAdd, or one adding a tensor to itself"
            layer.qadd, layer.residual = node, other
            return self._finish(layer, stage=3)
        if node.op == "etch.Clamp":
            layer.clamps.append(("req", int(node.attrs["lo"]), int(node.attrs["hi"])))
            return self._finish(layer, stage=1)
        layer.tables.append(node)
        return self._finish(layer, stage=2)

    def _view(self, node: Node) -> str | None:
        x, y = node.inputs[0], node.outputs[0]
        if not self._int8(x):
            return "a view of a value that is not an int8/uint8 activation"
        if Layout.of(self._shape(x)).same_storage(Layout.of(self._shape(y))):
            self.views[node.name] = "alias"
            self.taken.add(node.name)
            return None
        readers = self.consumers.get(y, [])
        flat = (len(self._shape(x)) == 4 and self._shape(y) == (1, int(np.prod(self._shape(x))))
                and readers and y not in self.g.outputs
                and all(r.op == "etch.QGemm" and r.inputs[0] == y for r in readers))
        if flat:
            self.views[node.name] = "flatten"
            self.taken.add(node.name)
            return None
        return "a data move that changes the stored layout"

    # ---- the epilogue -------------------------------------------------------------------
    def _finish(self, layer: Layer, stage: int = 1) -> str | None:
        """Extend `layer` along single readers: Clamp/Table/QAdd in the output unit's
        order (stage 1 after the requantiser, 2 after a table, 3 after the QAdd)."""
        v = layer.nodes[-1].outputs[0]
        while v not in self.g.outputs and stage <= 3:
            r = self._sole_reader(v)
            if r is None or r.attrs.get("placement") != "accel" or r.name in self.taken:
                break
            if r.op == "etch.Clamp":
                layer.clamps.append((("req", "table", "qadd")[stage - 1],
                                     int(r.attrs["lo"]), int(r.attrs["hi"])))
            elif r.op == "etch.Table" and stage <= 2:
                layer.tables.append(r)
                stage = 2
            elif r.op == "etch.QAdd" and stage <= 2 and self._qadd_ok(r, v, layer.anchor):
                layer.qadd, stage = r, 3
                layer.residual = r.inputs[1] if r.inputs[0] == v else r.inputs[0]
            else:
                break
            layer.nodes.append(r)
            v = r.outputs[0]
        layer.out = v
        self.taken.update(n.name for n in layer.nodes)
        self.layers.append(layer)
        return None

    def _qadd_ok(self, node: Node, v: str, anchor: Node) -> bool:
        """The other operand is a stored tensor of v's shape, computed before the layer
        starts (else the QAdd belongs to the layer computing the other operand)."""
        other = node.inputs[1] if node.inputs[0] == v else node.inputs[0]
        return (node.inputs[0] != node.inputs[1] and self._int8(other)
                and self._shape(other) == self._shape(v) and self._before(other, anchor))

    def _before(self, v: str, anchor: Node) -> bool:
        p = self.producers.get(v)
        return p is None or self.pos[p.name] < self.pos[anchor.name]

    # ---- helpers ------------------------------------------------------------------------
    def _int8(self, v: str) -> bool:
        return bool(v) and self.g.values[v].dtype in INT8 and not self.g.values[v].is_const

    def _shape(self, v: str) -> tuple[int, ...]:
        return tuple(self.g.values[v].shape)

    def _sole_reader(self, v: str) -> Node | None:
        readers = self.consumers.get(v, [])
        return readers[0] if len(readers) == 1 and v not in self.g.outputs else None



def find_layers(graph: Graph) -> Finder:
    """The engine layers, views and host placements of `graph` (see the module doc)."""
    return Finder(graph).run()
