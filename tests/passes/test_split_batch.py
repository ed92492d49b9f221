"""split_batch: a batch's early layers run image by image where the cost model says the
activations would spill the cache; the split graph computes the batched graph's outputs
exactly (reference) and through the cpu target (against ONNX Runtime); the cut stops at
the first layer that mixes images; `--explain` says where it cut."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

import compiler
from compiler import onnx_import, pipeline, reference
from compiler.options import CompileOptions
from passes.fuse_epilogue import FuseEpilogue
from passes.split_batch import REPORT, SplitBatch, explain
from tests.golden import RandomInits, run_ort


def cnn(batch: int = 4, first: list | None = None):
    """x [B, 3, 24, 24] -> 3x3 conv to 16 + Relu (24x24) -> a channel shuffle (Reshape [B,
    2, 8, 24, 24], Transpose, Reshape back) -> max pool -> two branches (a 1x1 to 8, a 3x3
    to 8) concatenated -> 3x3 stride 2 conv to 64 (a large weight) -> global average pool
    -> Flatten -> Gemm to 10; the activations are large and the weights small up to the
    concat. `first`: nodes put before the first conv, reading x, writing x0."""
    init = RandomInits(3)
    w, b = init.weight, init.bias
    node = helper.make_node
    init.tensors += [numpy_helper.from_array(np.array(s, np.int64), n) for n, s in [
        ("shuffle", [batch, 2, 8, 24, 24]), ("unshuffle", [batch, 16, 24, 24])]]
    nodes = [*(first or [node("Identity", ["x"], ["x0"])]),
             node("Conv", ["x0", w("w1", 16, 3, 3, 3), b("b1", 16)], ["c1"], pads=[1] * 4),
             node("Relu", ["c1"], ["r1"]),
             node("Reshape", ["r1", "shuffle"], ["s5"]),
             node("Transpose", ["s5"], ["t5"], perm=[0, 2, 1, 3, 4]),
             node("Reshape", ["t5", "unshuffle"], ["s4"]),
             node("MaxPool", ["s4"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             node("Conv", ["p1", w("w2", 8, 16, 1, 1)], ["a"]),
             node("Conv", ["p1", w("w3", 8, 16, 3, 3)], ["c"], pads=[1] * 4),
             node("Concat", ["a", "c"], ["cat"], axis=1),
             node("Conv", ["cat", w("w4", 64, 16, 3, 3), b("b4", 64)], ["c4"],
                  strides=[2, 2], pads=[1] * 4),
             node("Relu", ["c4"], ["r4"]),
             node("GlobalAveragePool", ["r4"], ["g"]),
             node("Flatten", ["g"], ["f"]),
             node("Gemm", ["f", w("w5", 10, 64), b("b5", 10)], ["y"], transB=1)]
    return init.model("split_cnn", nodes, {"x": [batch, 3, 24, 24]}, ["y", "r1"])


def _fused(model):
    graph = onnx_import.import_model(model)
    for p in pipeline.passes_for(CompileOptions(target="cpu")):
        graph = p.run(graph)[0]
        if isinstance(p, FuseEpilogue):
            return graph
    raise AssertionError("no fuse_epilogue in the cpu pipeline")


# one image's activations of the first conv: (3 + 16) x 24 x 24 floats = 43.8 KB, of the
# shuffle's steps 73.7 KB; at batch 4, 175 and 295 KB: a 128 KiB cache spills them batched
# and holds one image's
CACHE = 128 << 10
# ... and a 256 KiB one two images' (two threads, each with 128 KiB of its own)
CACHE2 = 256 << 10


def test_split_graph_is_exact_in_the_reference() -> None:
    """Split at batch 4 with a 128 KiB cache: each image's copy of the prefix, a Concat of
    the cut values (the graph output r1 among them), outputs bit-identical to the batched
    graph's."""
    model, inputs = cnn()
    graph = _fused(model)
    split, changed = SplitBatch(CACHE).run(graph)
    assert changed and REPORT in split.metadata
    ops = split.op_counts()
    assert ops["Split"] == 1 and ops["Concat"] >= 2  # r1 and the prefix's last value
    copies = [n for n in split.nodes if n.name.endswith("_image3")]
    assert {"Reshape", "Transpose", "MaxPool"} <= {n.op for n in copies}
    assert len({n.name for n in split.nodes}) == len(split.nodes)
    want = reference.run(graph, inputs)
    got = reference.run(split, inputs)
    for name in graph.outputs:
        assert np.array_equal(got[name], want[name]), name


def test_cut_follows_the_cost_model() -> None:
    """No split at batch 1, nor where the batch's activations fit the cache, nor where the
    copies of the weights cost more than the spilled activations save."""
    model, _ = cnn()
    graph = _fused(model)
    assert not SplitBatch(64 << 20).run(graph)[1]  # everything fits 64 MiB
    one, _ = cnn(batch=1)
    assert not SplitBatch(CACHE).run(_fused(one))[1]
    split = SplitBatch(CACHE).run(graph)[0]
    copied = {n.name.rsplit("_image", 1)[0] for n in split.nodes if "_image" in n.name}
    large = [n.name for n in graph.nodes if n.op == "etch.Fused" and
             graph.values[n.outputs[0]].shape[1] == 64]
    assert large and not copied & set(large)


@pytest.mark.parametrize("first", [
    # the batch moved to axis 1 and back: images mix from the first node on
    [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2, 3]),
     helper.make_node("Transpose", ["t"], ["x0"], perm=[1, 0, 2, 3])],
    [helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
     helper.make_node("Sub", ["x", "m"], ["x0"])],
    # a constant with images of its own
    [helper.make_node("Add", ["x", "per_image"], ["x0"])],
], ids=["transpose", "reduce", "constant"])
def test_no_split_where_images_mix(first) -> None:
    """A first node whose images depend on other images (or on a constant's per-image
    slices) ends the prefix before anything could be split."""
    model, _ = cnn(first=first)
    model.graph.initializer.append(
        numpy_helper.from_array(np.ones((4, 3, 24, 24), np.float32), "per_image"))
    split, changed = SplitBatch(CACHE).run(_fused(model))
    assert not changed and not any("_image" in n.name for n in split.nodes)


@pytest.mark.parametrize("threads,cache,how", [
    (1, CACHE, "image by image"),
    # two threads, each with 128 KiB: two images at a time (the kernels' image-a-thread
    # schedule: tests/backends/test_tvm_conv_gemm.py)
    (2, CACHE2, "2 images at a time (one a thread)")])
def test_cpu_target_matches_onnx_runtime(monkeypatch, threads: int, cache: int,
                                         how: str) -> None:
    """Through `etch compile --target cpu` with the cache the pass sees set: split,
    explained, and the outputs match ONNX Runtime's (rtol 1e-4)."""
    monkeypatch.setattr(pipeline, "_cpu_cache", lambda opts, info: cache)
    model, inputs = cnn()
    built = compiler.compile(model, target="cpu", threads=threads)
    text = built.explain()
    assert f"split batch: the batch of 4 runs {how} through" in text
    got = built.run(inputs)
    for name, want in run_ort(model, inputs).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_groups_of_images_one_a_thread() -> None:
    """With a group of 2 (two threads) and a cache that holds two images' activations, the
    prefix is copied once per two images: the Split gives [2, 2], every copy's values lead
    with 2, a Reshape's shape says 2, and the outputs are bit-identical to the batched
    graph's. A batch the group does not divide, or a cache where groups would cut fewer
    layers than single images, is split image by image."""
    model, inputs = cnn()
    graph = _fused(model)
    split, changed = SplitBatch(CACHE2, group=2).run(graph)
    assert changed
    [cut] = [n for n in split.nodes if n.op == "Split"]
    assert split.const(cut.inputs[1]).tolist() == [2, 2]
    copies = [n for n in split.nodes if "image_of" in n.attrs]
    assert {n.attrs["image"] for n in copies} == {0, 1}
    assert all(split.values[o].shape[0] == 2 for n in copies for o in n.outputs)
    shapes = [split.const(n.inputs[1]) for n in copies if n.op == "Reshape"]
    assert shapes and all(int(s[0]) == 2 for s in shapes)
    assert "2 images at a time" in explain(split.metadata)
    want = reference.run(graph, inputs)
    got = reference.run(split, inputs)
    for name in graph.outputs:
        assert np.array_equal(got[name], want[name]), name
    odd, _ = cnn(batch=3)
    split3 = SplitBatch(CACHE, group=2).run(_fused(odd))[0]
    assert "image by image" in explain(split3.metadata)
    assert "image by image" in explain(SplitBatch(CACHE, group=2).run(graph)[0].metadata)


def test_explain_line() -> None:
    model, _ = cnn()
    split = SplitBatch(CACHE).run(_fused(model))[0]
    line = explain(split.metadata)
    assert line.startswith("split batch: the batch of 4 runs image by image through ")
    assert "128 KiB cache" in line and explain({}) == ""


@pytest.mark.parametrize("starts, ends, axes, steps, keeps", [
    ([0], [8], [1], None, True),  # channels 0-7 of each image
    ([0, 0], [4, 8], None, None, True),  # axes 0 and 1: the whole batch of 4, channels 0-7
    ([0, 0], [2, 8], None, None, False),  # images 0-1 only
    ([0], [2**62], [-4], None, True),  # axis -4 is the batch: from 0 to the end
    ([3], [-5], [0], [-1], False),  # the batch reversed: four images, in another order
])
def test_slices_that_keep_the_batch(starts, ends, axes, steps, keeps) -> None:
    """A Slice is copied per image only where it keeps the whole batch in order."""
    from compiler.ir import Graph, Node, Value
    from passes.split_batch import batch_free, per_image_reason

    graph = Graph()
    graph.add_value(Value("x", (4, 16, 6, 6)))
    graph.inputs = ["x"]
    names = [graph.add_const(n, np.array(v, np.int64)).name if v is not None else ""
             for n, v in (("starts", starts), ("ends", ends), ("axes", axes),
                          ("steps", steps))]
    out = (2 if ends[0] == 2 else 4, 8 if len(starts) == 2 or axes == [1] else 16, 6, 6)
    graph.add_value(Value("y", out))
    node = graph.add_node(Node("Slice", ["x", *names], ["y"]))
    reason = per_image_reason(graph, node, 4, batch_free(graph))
    assert (reason is None) == keeps, reason


def test_image_copies_share_kernels_and_constants() -> None:
    """The TVM lowering emits each split layer's kernels once, for its first image, and
    calls them for the others with that image's constants (no TE, TIR or weight copy per
    image): the module holds as many kernels, and as many constant bytes, as with one
    image's copy."""
    from tvm import ir, relax, tirx

    from backends.tvm import lower

    model, _ = cnn()
    split = SplitBatch(CACHE).run(_fused(model))[0]

    def contents(graph):
        mod = lower.to_irmodule(graph, pack=True, lanes=16)
        labels = [str(f.attrs["etch.node"]) for _, f in mod.functions_items()
                  if isinstance(f, tirx.PrimFunc)]
        consts: dict[int, int] = {}
        relax.analysis.post_order_visit(mod["main"], lambda e: consts.setdefault(
            e.__hash__(), e.data.numpy().nbytes) if isinstance(e, ir.Constant) and hasattr(
            e, "data") else None)
        return labels, sum(consts.values())

    labels, nbytes = contents(split)
    assert any(name.endswith("_image0") for name in labels)
    assert not any(name.endswith(("_image1", "_image2", "_image3")) for name in labels)
    batched_labels, batched_bytes = contents(_fused(model))
    layers = sorted(n.removesuffix("_image0") for n in labels if "_images_" not in n)
    assert layers == sorted(batched_labels) and nbytes <= batched_bytes + 64  # the Split


@pytest.mark.parametrize("perm, keeps", [([0, 2, 1, 3], True), ([1, 0, 2, 3], False),
                                         (None, False)])
def test_transposes_that_keep_the_batch(perm, keeps) -> None:
    """A Transpose is copied per image only where the batch stays first (no perm: the axes
    reversed, the batch last)."""
    from compiler.ir import Graph, Node, Value
    from passes.split_batch import batch_free, per_image_reason

    graph = Graph()
    graph.add_value(Value("x", (4, 4, 4, 4)))
    graph.add_value(Value("y", (4, 4, 4, 4)))
    graph.inputs = ["x"]
    node = graph.add_node(Node("Transpose", ["x"], ["y"], {} if perm is None else
                               {"perm": perm}))
    assert (per_image_reason(graph, node, 4, batch_free(graph)) is None) == keeps


def test_values_numpy_cannot_size_do_not_stop_the_pass() -> None:
    """A string value (numpy has no fixed-size type for it) is estimated a byte per element
    instead of raising: the pass declines such a graph quietly."""
    from compiler.ir import Graph, Node, Value

    graph = Graph()
    graph.add_value(Value("s", (4, 3), "string"))
    graph.add_value(Value("t", (4, 3), "string"))
    graph.inputs, graph.outputs = ["s"], ["t"]
    graph.add_node(Node("Identity", ["s"], ["t"]))
    assert SplitBatch(16).run(graph)[1] is False


def test_images_that_fit_the_last_level_cache_share_are_cut_too() -> None:
    """An image that spills L2 (here 32 KiB) but fits the cores' share of the last-level
    cache (here 128 KiB), while the batch's does not, is cut by the second term alone
    (resnet50 at batch 8 on Zen 5: 56x56 images of 4-7 MB, 1 MiB L2, 4 MiB of L3 a core);
    the report names both caches; without the share nothing is cut."""
    model, _ = cnn()
    graph = _fused(model)
    assert not SplitBatch(32 << 10).run(graph)[1]
    split, changed = SplitBatch(32 << 10, llc_bytes=CACHE).run(graph)
    assert changed
    assert "the 128 KiB share of the last-level cache" in explain(split.metadata)
    assert "last-level" not in explain(SplitBatch(CACHE).run(graph)[0].metadata)


def test_the_pipeline_counts_a_share_of_the_last_level_cache() -> None:
    """The cpu pipeline's share: 4 MiB a thread, at most the host's whole LLC."""
    from backends.tvm.target import cpu_info
    from runtime.host_cpu import last_level_cache_bytes

    for threads in (1, 2):
        opts = CompileOptions(target="cpu", threads=threads)
        share = pipeline._llc_share(opts, cpu_info(opts)[0])
        whole = last_level_cache_bytes()
        assert share == min(4 * threads << 20, whole or 1 << 40)
        named = CompileOptions(target="cpu", threads=threads, mcpu="znver4")
        assert pipeline._llc_share(named, cpu_info(named)[0]) == 4 * threads << 20
    [split] = [p for p in pipeline.passes_for(CompileOptions(target="cpu", threads=2))
               if isinstance(p, SplitBatch)]
    assert split.llc_bytes == pipeline._llc_share(
        CompileOptions(target="cpu", threads=2),
        cpu_info(CompileOptions(target="cpu", threads=2))[0])


def test_groups_of_images_are_chosen_by_l2_alone() -> None:
    """Built for two threads, the copies take two images each only where L2 alone cuts
    that way: a cut the last-level term adds runs image by image (resnet50's pairs at batch
    8 were 2-3% slower than image by image on Zen 5)."""
    model, _ = cnn()
    graph = _fused(model)
    split = SplitBatch(32 << 10, group=2, llc_bytes=CACHE2).run(graph)[0]
    assert "image by image" in explain(split.metadata)
    paired = SplitBatch(CACHE2, group=2, llc_bytes=CACHE2 << 4).run(graph)[0]
    assert "2 images at a time" in explain(paired.metadata)
    assert "last-level" not in explain(paired.metadata)  # its estimate is L2's alone
