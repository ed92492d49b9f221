"""The tensor engine's mapping, checked without Verilator: every zoo model planned for
several array shapes and weight widths, its programs and memory images executed by the
engine's functional model (backends/verilog/engine/model.py), must reproduce the integer
reference bit for bit at every segment boundary."""

from __future__ import annotations

import pytest

from tests.backends.engine_helpers import model_mismatches, planned, samples

MODELS = ["digits_mlp", "digits_cnn", "digits_cnn_legacy", "resnet_block", "mobilenet"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("array", [(8, 8), (16, 4), (4, 16)])
def test_zoo_bit_exact_in_the_functional_model(name: str, array: tuple[int, int]) -> None:
    assert model_mismatches(planned(name, 8, array), samples(name, 2)) == []


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "mobilenet"])
def test_low_bit_weights(name: str, bits: int) -> None:
    assert model_mismatches(planned(name, bits, (16, 16)), samples(name, 2)) == []


def test_layers_larger_than_the_accumulator_are_tiled() -> None:
    """An 8-entry accumulator buffer: every multi-tile layer runs in chunks of rows."""
    g = planned("resnet_block", 8, (8, 8), acc_entries=8)
    assert model_mismatches(g, samples("resnet_block", 1)) == []


def test_host_ops_between_segments() -> None:
    """tiny_encoder: LayerNorm, Softmax and attention run on the host between segments;
    the GELU table runs in the output unit."""
    assert model_mismatches(planned("tiny_encoder", 8, (8, 8)), samples("tiny_encoder", 1)) \
        == []
