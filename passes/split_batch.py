"""SplitBatch: the early layers of a batch run image by image, the rest batched.

A batched CNN's early layers have large activations and small weights: at batch 8 an
image's 28x28x512 feature map (1.6 MB) becomes 12.8 MB, past the per-core L2, so every
such layer reads its input from L3, where one image's would have stayed in L2 from the
layer before. Late layers are the other way round: their weights are large and each image
would read them again. This pass cuts the graph after a prefix of layers chosen by a cost
model, runs the prefix once per image (a copy of it on a slice of the batch) and
concatenates the images' results at the cut; the layers after the cut run on the whole
batch.

Rewrites: graph inputs the prefix reads -> Split(axis 0) into B one-image values; each
batch-dependent prefix node -> B copies on those values (a Reshape's shape constant with
its leading B replaced by 1); every value the prefix writes and the rest of the graph (or a
graph output) reads -> Concat(axis 0) of the images' copies, under the value's own name.
Nodes that depend on constants only (a weight's `etch.Dequant`) are shared, not copied.

The cost model, in bytes read from past the cache (`cache_bytes`: the L2 of the cores
the kernels run on): a layer run batched reads its activations (inputs and outputs, one
image: A) from past the cache once they exceed it at the batch (B*A > cache >= A), so
image by image saves B*A; it reads its weights (W) once batched and B times image by
image, so the copies cost (B-1)*W. The prefix is the one that maximises the sum of
savings less the copies of the cut values (twice their bytes: the Concat reads and
writes them), among the prefixes of layers whose every image is independent of the
others (`per_image_reason`); no cut when nothing is saved. Measured on the Intel Xeon
(2 MiB L2, one thread, batch 8, cuts placed by hand at block boundaries, in one process):
resnet50 527 -> 484 ms cut after the 28x28 stage (490 after the 14x14 stage, 504 with
everything but the classifier per image), inception_v3 823 -> 754 after the 17x17 stage
(778 with everything per image).

A second term counts the last-level cache the same way (`llc_bytes`: the cores' share of
it, `compiler.pipeline._llc_share`): a layer whose image spills L2 but fits that share
while its batch does not reads the batch from DRAM, image by image from L3; a byte read
from DRAM passes both caches and counts twice. Measured on the AMD EPYC (Zen 5) VM (1 MiB
L2, 32 MB L3 shared with the rest of its CCX), one thread, batch 8, whole-model A/B in
alternating rounds: resnet50 (no cut by L2 alone: its 56x56 images are 4-7 MB) 274-287 ->
264-269 ms image by image through 42 layers (into the 14x14 stage), inception_v3 386-403
-> 374-379 (96 layers instead of 33). Whether groups of images run (below) is still
decided by L2 alone: with the second term resnet50's pairs at two threads (44 layers)
measured 136.0-136.6 ms against 131.9-135.0 image by image through the same 44 (132.1-135.0
through L2's 25), so it runs image by image; the other zoo models' cuts are as before at
two threads.

Built for T > 1 threads (`group`), the prefix is copied per T images instead, where T
divides B and the cut is no shorter than image by image's: each kernel of a copy then runs
its T images in parallel, one a thread (the GEMM convolutions' `images` order, the other
kernels' image-major parallel loops), so each core's L2 holds one image (the cost model
above with T images' activations against the T cores' L2), and a small layer's work is
no longer split between threads within an image. Measured on the AMD EPYC (Zen 4) VM,
two threads, batch 8, whole-model A/B against image by image (best of 10-15 alternating
rounds; the host's noise is ~5%): shufflenet_v2 22.8 -> 20.8 ms, squeezenet1_1 39.8 ->
35.4 (34.9 -> 30.7 in another run), mobilenet_v2 35.8 -> 34.2, densenet121 223 -> 212,
efficientnet_b0 57.4 -> 56.2; resnet50 and inception_v3 keep image by image (in pairs
their 1-2 MB images would spill one core's 1 MiB L2: resnet50's pairs cut nothing,
inception_v3's cut 51 layers instead of 96, and were 1-6% slower).

Preconditions: static shapes; every graph input has the same leading dimension B > 1.
Invariants: the outputs are those of the batched graph exactly (each image's ops are the
same ops on its slice); `--explain` prints the cut and the estimate (REPORT).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import numpy as np

from compiler import ops as op_sets
from compiler.ir import Graph, Node, Value
from compiler.ops.etch_ops import fused_steps, kernel_attrs, prologue_steps
from passes.base import Pass

REPORT = "etch.split_batch"
# ops whose every output image is computed from the same image of their batched inputs,
# their other inputs being batch-independent (weights, parameters)
IMAGE_OPS = frozenset({
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool",
    "GlobalMaxPool", "GlobalLpPool", "LRN", "InstanceNormalization", "BatchNormalization",
    "DepthToSpace", "SpaceToDepth",
})
ANCHORS = frozenset({"", "Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass
class Cut:
    """The chosen prefix: `nodes` (batch-dependent, in order), the values cut, the estimate."""

    nodes: list[Node]
    cut: list[str]
    saved: int
    copies: int


class SplitBatch(Pass):
    """`cache_bytes`: the cache a layer's working set should stay in (the L2 of the cores
    that run it, all of them together); `group`: the images a copy of the prefix takes
    (the threads the kernels are built for)."""

    name = "split_batch"

    def __init__(self, cache_bytes: int, group: int = 1, llc_bytes: int | None = None) -> None:
        self.cache_bytes = cache_bytes
        self.group = group  # images per copy of the prefix
        self.llc_bytes = llc_bytes  # the cores' share of the last-level cache (None: no term)

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        batch = _batch(graph)
        if batch is None:
            return graph, False
        graph = graph.copy()
        cut, group = self.choose(graph, batch), 1
        # the groups of images: where, by L2 alone, they cut no fewer layers than image by
        # image does (the last-level term left out of that choice: the pairs it would add,
        # resnet50's at batch 8, measured 2-3% slower than image by image on Zen 5)
        if self.group > 1 and batch % self.group == 0 and batch > self.group:
            by_l2 = self.choose(graph, batch, llc=False)
            grouped = self.choose(graph, batch, self.group, llc=False) if by_l2 else None
            if grouped is not None and len(grouped.nodes) >= len(by_l2.nodes):
                cut, group = grouped, self.group
        if cut is None:
            return graph, False
        _split(graph, cut, batch, group)
        graph.metadata[REPORT] = json.dumps({
            "batch": batch, "group": group, "layers": len(cut.nodes),
            "last": cut.nodes[-1].name, "cut": cut.cut, "saved_mb": round(cut.saved / 1e6, 1),
            "copied_mb": round(cut.copies / 1e6, 1), "cache_kb": self.cache_bytes >> 10,
            # groups of images are chosen by L2 alone: their estimate counts no LLC share
            "llc_kb": (self.llc_bytes or 0) >> 10 if group == 1 else 0})
        return graph, True

    def choose(self, graph: Graph, batch: int, group: int = 1, llc: bool = True
               ) -> Cut | None:
        """The prefix that saves the most, or None."""
        free = batch_free(graph)
        order = [n for n in graph.nodes if not all(o in free for o in n.outputs)]
        prefix: list[Node] = []
        for node in order:
            if per_image_reason(graph, node, batch, free) is not None:
                break
            prefix.append(node)
        if not prefix:
            return None
        # a value written at position p and last read at l (len(order) for a graph output)
        # is cut by every prefix of length p+1..l
        last: dict[str, int] = {}
        for k, node in enumerate(order):
            for i in node.inputs:
                last[i] = k
        for o in graph.outputs:
            last[o] = len(order)
        cut_bytes = np.zeros(len(order) + 2)
        for k, node in enumerate(prefix):
            for o in node.outputs:
                if o in last and last[o] > k:
                    cut_bytes[k + 1] += _bytes(graph.values[o])
                    cut_bytes[last[o] + 1] -= _bytes(graph.values[o])
        cut_bytes = np.cumsum(cut_bytes)
        best, best_k, saved = 0.0, 0, 0.0
        for k, node in enumerate(prefix):
            saved += self.saving(graph, node, batch, free, group, llc)
            score = saved - 2 * cut_bytes[k + 1]
            if score > best:
                best, best_k = score, k + 1
        if best < self.cache_bytes / 2:  # a cut must save half the cache's bytes at least
            return None
        nodes = prefix[:best_k]
        inside = {id(n) for n in nodes}
        readers = graph.consumers()
        cut = [o for n in nodes for o in n.outputs if o in graph.outputs
               or any(id(c) not in inside for c in readers.get(o, []))]
        return Cut(nodes, cut, int(best + 2 * cut_bytes[best_k]), int(2 * cut_bytes[best_k]))

    def saving(self, graph: Graph, node: Node, batch: int, free: set[str],
               group: int = 1, llc: bool = True) -> float:
        """Bytes of traffic past the caches (`llc`: the last-level share too) that running
        `node` per `group` images saves (< 0: costs)."""
        values = [graph.values[v] for v in [*node.inputs, *node.outputs] if v]
        image = sum(_bytes(v) for v in values if v.name not in free) / batch
        weights = sum(_bytes(v) for v in values if v.name in free)
        spilled = 0.0
        for cache in (self.cache_bytes, self.llc_bytes if llc else None):  # L2, the LLC
            if cache is not None and group * image <= cache < batch * image:
                spilled += batch * image
        return spilled - (batch // group - 1) * weights


def _batch(graph: Graph) -> int | None:
    """The batch B > 1 that every graph input leads with, else None."""
    dims = {graph.values[i].shape[0] if graph.values[i].shape else None for i in graph.inputs}
    if len(dims) != 1:
        return None
    (b,) = dims
    return b if b is not None and b > 1 else None


def batch_free(graph: Graph) -> set[str]:
    """Values that do not depend on a graph input: constants and what only they feed."""
    free = {name for name, v in graph.values.items() if v.is_const}
    for node in graph.nodes:
        if all(i in free for i in node.inputs if i):
            free.update(node.outputs)
    return free


def _bytes(value: Value) -> int:
    try:
        return value.size * np.dtype(value.dtype).itemsize
    except TypeError:  # a type numpy does not name (strings): a byte each, for the estimate
        return value.size


def per_image_reason(graph: Graph, node: Node, batch: int, free: set[str]) -> str | None:
    """None when each image of `node`'s outputs depends on the same image of its inputs
    alone (so a copy on one image computes that image), else why not."""
    rank = max(len(graph.values[o].shape) for o in node.outputs)
    for o in node.outputs:
        if not graph.values[o].shape or graph.values[o].shape[0] != batch:
            return f"output {o} does not lead with the batch"
    batched = [k for k, i in enumerate(node.inputs) if i and i not in free]
    for k in batched:
        if graph.values[node.inputs[k]].shape[:1] != (batch,):
            return f"input {node.inputs[k]} does not lead with the batch"
    attrs = node.attrs
    op = node.op
    if op in op_sets.ELEMENTWISE:
        return _broadcast_reason(graph, node, range(len(node.inputs)), rank, free)
    if op in IMAGE_OPS:
        return None if batched == [0] else f"{op} reads a batched value beyond its data input"
    if op == "etch.Fused":
        k = int(attrs.get("num_kernel_inputs", 1)) if attrs.get("kernel") else 0
        return _fused_reason(node, batched) or _broadcast_reason(
            graph, node, range(k, len(node.inputs)), rank, free)
    if op in ("Gemm", "MatMul"):
        if batched != [0] or attrs.get("transA", 0):
            return f"{op} with a batched operand other than its rows"
        return None
    axis = _axis(int(attrs.get("axis", {"Flatten": 1, "Softmax": -1, "LogSoftmax": -1}.get(
        op, 0))), rank)
    if op in ("Concat", "Split", "Softmax", "LogSoftmax", "Flatten"):
        if op == "Concat" and len(batched) != len([i for i in node.inputs if i]):
            return "Concat of a constant"
        if op == "Split" and batched != [0]:
            return "Split with computed sizes"
        return None if axis != 0 else f"{op} along the batch"
    if op == "Transpose":
        perm = [int(p) for p in attrs.get("perm", range(rank - 1, -1, -1))]  # none: reversed
        return None if perm[0] == 0 else "Transpose moves the batch"
    if op == "Reshape":
        shape = graph.const(node.inputs[1])
        if batched != [0] or shape is None or not len(shape) or int(shape[0]) not in (
                batch, 0, -1):  # (its input and output lead with the batch: checked above)
            return "Reshape of the batch"
        return None
    if op == "Slice":
        return _slice_reason(graph, node, batch, rank) if batched == [0] else \
            "Slice with computed bounds"
    if op in op_sets.REDUCTION:
        axes = attrs.get("axes")
        if axes is None and len(node.inputs) > 1 and node.inputs[1]:
            axes = graph.const(node.inputs[1])
        if axes is None or not len(axes):
            return f"{op} over every axis"
        return None if all(_axis(int(a), rank) != 0 for a in axes) and batched == [0] \
            else f"{op} over the batch"
    return f"{op} is not known to keep images apart"


def _slice_reason(graph: Graph, node: Node, batch: int, rank: int) -> str | None:
    """None when a Slice keeps the whole batch (axis 0 not sliced, or from 0 to its end
    with step 1), so one image's copy slices that image the same way."""
    starts, ends, axes, steps = [graph.const(i) if i else None for i in
                                 (node.inputs + ["", "", "", ""])[1:5]]
    if starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3] and
                                          axes is None) or (
            len(node.inputs) > 4 and node.inputs[4] and steps is None):
        return "Slice with computed bounds"
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for a, start, end, step in zip(axes, starts, ends, steps):
        if _axis(int(a), rank) == 0 and (int(start) not in (0, -batch) or int(step) != 1
                                         or int(end) < batch):
            return "Slice of the batch"
    return None


def _broadcast_reason(graph: Graph, node: Node, operands: range, rank: int,
                      free: set[str]) -> str | None:
    """None when the elementwise `operands` broadcast image by image: the batched ones at
    the output's rank (their batch lines up with the output's), no batch-independent one
    with images of its own (a leading dimension other than 1 at that rank)."""
    for k in operands:
        name = node.inputs[k]
        if not name:
            continue
        shape = graph.values[name].shape
        if name not in free and len(shape) != rank:
            return f"{name} broadcasts across the batch"
        if name in free and len(shape) == rank and shape[0] != 1:
            return f"constant {name} has a batch of its own"
    return None


def _fused_reason(node: Node, batched: list[int]) -> str | None:
    attrs = node.attrs
    kernel = attrs.get("kernel", "")
    if kernel not in ANCHORS:
        return f"a fused {kernel}"
    if kernel in ("Gemm", "MatMul") and kernel_attrs(attrs).get("transA", 0):
        return "a fused Gemm over transposed rows"
    k = int(attrs.get("num_kernel_inputs", 1))
    if kernel and any(1 <= i < k for i in batched) and not attrs.get("concat_inputs"):
        return f"a fused {kernel} with a computed weight"
    steps = [*fused_steps(attrs), *prologue_steps(attrs)]
    if any(s["op"] not in op_sets.ELEMENTWISE for s in steps):
        return "a fused step that is not elementwise"
    return None


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _split(graph: Graph, cut: Cut, batch: int, group: int = 1) -> None:
    """Rewrite `graph` in place: the prefix copied per `group` images, the cut values
    concatenated."""
    inside = {id(n) for n in cut.nodes}
    copies = batch // group
    names: list[dict[str, str]] = [{} for _ in range(copies)]
    new: list[Node] = []
    reads = {i for n in cut.nodes for i in n.inputs if i}
    for x in graph.inputs:
        if x not in reads:
            continue
        sizes = graph.add_const(f"{x}_images", np.full(copies, group, np.int64))
        outs = [_image_value(graph, graph.values[x], b, names[b], group)
                for b in range(copies)]
        new.append(Node("Split", [x, sizes.name], outs, {"axis": 0}, f"split_images_{x}"))
    shapes = {}  # a Reshape's shape for one copy (a leading batch made `group`), shared by all
    for node in cut.nodes:
        if node.op == "Reshape":
            shape = np.array(graph.const(node.inputs[1]), copy=True)
            shape[0] = group if int(shape[0]) == batch else shape[0]
            shapes[id(node)] = graph.add_const(node.inputs[1] + "_image", shape).name
    for b in range(copies):
        for node in cut.nodes:
            inputs = [names[b].get(i, i) for i in node.inputs]
            if id(node) in shapes:
                inputs[1] = shapes[id(node)]
            outputs = [_image_value(graph, graph.values[o], b, names[b], group)
                       for o in node.outputs]
            attrs = {**copy.deepcopy(node.attrs), "image_of": node.name, "image": b}
            new.append(Node(node.op, inputs, outputs, attrs, f"{node.name}_image{b}"))
    for o in cut.cut:
        new.append(Node("Concat", [names[b][o] for b in range(copies)], [o], {"axis": 0},
                        f"concat_images_{o}"))
    first = min(k for k, n in enumerate(graph.nodes) if id(n) in inside)
    kept = [n for n in graph.nodes if id(n) not in inside]
    graph.nodes = kept[:first] + new + kept[first:]
    graph.toposort()
    graph.prune()


def _image_value(graph: Graph, value: Value, b: int, names: dict[str, str],
                 group: int = 1) -> str:
    """A `group`-image copy of batched `value` for copy `b`, recorded in `names`."""
    name = graph.fresh(f"{value.name}_image{b}")
    graph.add_value(Value(name, (group, *value.shape[1:]), value.dtype, None, value.quant))
    names[value.name] = name
    return name


def explain(reports: dict[str, str]) -> str:
    """The cut for `etch compile --explain` ("" when the graph was not split)."""
    if REPORT not in reports:
        return ""
    r = json.loads(reports[REPORT])
    group = r.get("group", 1)
    how = "image by image" if group == 1 else f"{group} images at a time (one a thread)"
    llc = f" and the {r['llc_kb']} KiB share of the last-level cache" if r.get("llc_kb") else ""
    return (f"split batch: the batch of {r['batch']} runs {how} through "
            f"{r['layers']} layers (to {r['last']}), batched after; cut at "
            f"{', '.join(r['cut'])} (estimated {r['saved_mb']} MB less read past the "
            f"{r['cache_kb']} KiB cache{llc}, {r['copied_mb']} MB copied at the cut)")
