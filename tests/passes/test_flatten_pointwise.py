"""FlattenPointwise: a 1x1 integer conv over an image runs over the image as one row, alone
or as a group's anchor (its residual read the same way); bit-exact, idempotent."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import reference
from compiler.ops.etch_qfused import group
from passes.flatten_pointwise import FlattenPointwise, pointwise_reason
from passes.fuse_integer import FuseInteger
from tests.golden import assert_bitexact
from tests.passes.fuse_helpers import check_idempotent, only
from tests.passes.int_helpers import QADD, IntGraph


def flatten(graph):
    out, changed = FlattenPointwise().run(graph)
    out.verify()
    return out, changed


def test_a_pointwise_group_and_its_residual_run_as_one_row() -> None:
    b = IntGraph(1)
    x, r = b.input("x", (2, 8, 3, 5)), b.input("r", (2, 6, 3, 5))
    y = b.requantize(b.qconv(x, 6, "acc", k=1), "y")
    g = b.outputs(b.op("etch.QAdd", [y, r], "out", **QADD))
    fused, _ = FuseInteger().run(g)
    out, changed = flatten(fused)
    assert changed and [n.op for n in out.nodes] == ["Reshape", "Reshape", "etch.QFused",
                                                     "Reshape"]
    node = only(out, "etch.QFused")
    x_row, r_row, y_row = node.inputs[0], node.inputs[-1], node.outputs[0]
    assert out.values[x_row].shape == (2, 8, 1, 15) and out.values[r_row].shape == (2, 6, 1, 15)
    assert out.values[y_row].shape == (2, 6, 1, 15) and out.nodes[-1].outputs == ["out"]
    assert out.values["out"].shape == (2, 6, 3, 5)
    assert all(n.attrs["placement"] == "accel" for n in out.nodes if n.op == "Reshape")
    assert_bitexact(reference.run(out, b.feeds), reference.run(g, b.feeds))
    check_idempotent(out, [FlattenPointwise()])


def test_a_bare_pointwise_conv_is_flattened_too() -> None:
    b = IntGraph(2)
    x = b.input("x", (1, 4, 4, 4))
    g = b.outputs(b.qconv(x, 8, "acc", k=1, group=2))
    out, changed = flatten(g)
    assert changed and [n.op for n in out.nodes] == ["Reshape", "etch.QConv", "Reshape"]
    assert_bitexact(reference.run(out, b.feeds), reference.run(g, b.feeds))


@pytest.mark.parametrize("shape,strides", [((1, 8, 7, 7), [2, 2]), ((2, 4, 6, 9), [2, 3])])
def test_a_strided_pointwise_group_reads_a_subsampled_row(shape: tuple, strides: list) -> None:
    b = IntGraph(5)
    x = b.input("x", shape)
    oh, ow = -(-shape[2] // strides[0]), -(-shape[3] // strides[1])
    r = b.input("r", (shape[0], 6, oh, ow))
    y = b.requantize(b.qconv(x, 6, "acc", k=1, strides=strides), "y")
    g = b.outputs(b.op("etch.QAdd", [y, r], "out", **QADD))
    fused, _ = FuseInteger().run(g)
    out, changed = flatten(fused)
    assert changed and [n.op for n in out.nodes] == ["Slice", "Reshape", "Reshape",
                                                     "etch.QFused", "Reshape"]
    node = only(out, "etch.QFused")
    assert out.values[node.inputs[0]].shape == (shape[0], shape[1], 1, oh * ow)
    assert group(node.attrs, node.inputs, node.outputs[0]).anchor_attrs["strides"] == [1, 1]
    assert_bitexact(reference.run(out, b.feeds), reference.run(g, b.feeds))
    check_idempotent(out, [FlattenPointwise()])


@pytest.mark.parametrize("attrs,shape,words", [
    ({"k": 3}, (1, 4, 4, 4), "1x1"),
    ({"k": 1}, (1, 4, 1, 9), "several rows"),
])
def test_other_convs_are_left_alone(attrs: dict, shape: tuple, words: str) -> None:
    b = IntGraph(3)
    g = b.outputs(b.qconv(b.input("x", shape), 4, "acc", **attrs))
    assert words in pointwise_reason(g, only(g, "etch.QConv"))
    out, changed = flatten(g)
    assert not changed and [n.op for n in out.nodes] == ["etch.QConv"]


def test_padded_pointwise_conv_is_left_alone() -> None:
    b = IntGraph(4)
    x = b.input("x", (1, 4, 4, 4))
    w = b.const("w", np.ones((4, 4, 1, 1), np.int8))
    g = b.outputs(b.op("etch.QConv", [x, w], "acc", kernel_shape=[1, 1], pads=[1, 1, 1, 1]))
    assert "unpadded" in pointwise_reason(g, only(g, "etch.QConv"))
