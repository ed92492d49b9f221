"""The reference convolution and the layer-input Hessians taken one image at a time: the
same numbers as the whole batch at once, without the batch's patch matrix."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.onnx_import import import_model
from compiler.ops import conv
from compiler.ops.common import int_matmul
from passes.linear_layers import find_layers, hessians


@pytest.mark.parametrize("integer", [False, True])
def test_a_large_batch_is_convolved_image_by_image(monkeypatch: pytest.MonkeyPatch,
                                                   integer: bool) -> None:
    rng = np.random.default_rng(0)
    attrs = {"pads": [1, 1, 1, 1], "strides": [2, 1], "group": 2}
    if integer:
        x = rng.integers(-128, 128, (3, 4, 9, 7)).astype(np.int64)
        w = rng.integers(-128, 128, (6, 2, 3, 3)).astype(np.int64)
        matmul = int_matmul
    else:
        x = rng.standard_normal((3, 4, 9, 7)).astype(np.float32)
        w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
        matmul = np.matmul
    whole = conv.conv_nd(attrs, x, w, matmul)
    calls = []
    gather = conv.gather_windows
    monkeypatch.setattr(conv, "gather_windows", lambda xp, win: calls.append(xp.shape[0])
                        or gather(xp, win))
    monkeypatch.setattr(conv, "IM2COL_ELEMENTS", 64)
    split = conv.conv_nd(attrs, x, w, matmul)
    assert calls == [1, 1, 1]  # one image's patches at a time
    assert split.dtype == whole.dtype and np.array_equal(split, whole)


def test_conv_hessians_are_summed_image_by_image() -> None:
    """X^T X of a convolution's patches over a batch, accumulated per image (six images of
    2304 rows: folded into the sum after the fourth and at the end, each block's product in
    float32, summed in float64), equals exactly those two blocks' products, and the
    float64 product of the whole batch's patch matrix to float32 rounding."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    model = helper.make_model(helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 3, 48, 48])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")]))
    graph = import_model(model)
    [layer] = find_layers(graph)
    visit, result = hessians([layer], graph)
    x = rng.standard_normal((6, 3, 48, 48)).astype(np.float32)
    visit(layer.x, x)
    got = result()[layer.name]
    blocks = [layer.inputs_as_rows(x[a:b], w.shape) for a, b in ((0, 4), (4, 6))]
    assert all(r.dtype == np.float32 for r in blocks)
    exact = sum((r.transpose(0, 2, 1) @ r).astype(np.float64) for r in blocks)
    assert got.dtype == np.float64 and np.array_equal(got, exact)
    rows = layer.inputs_as_rows(x.astype(np.float64), w.shape)
    want = rows.transpose(0, 2, 1) @ rows
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
