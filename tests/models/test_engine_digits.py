"""The digits models on the tensor engine, every configuration, the whole test split: the
simulated outputs equal the integer reference bit for bit, so the simulated accuracy is
the reference's. Slow: one Verilator build per configuration (cached by content)."""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from compiler import reference
from models import accuracy, zoo
from tests.backends.engine_helpers import verilog

pytestmark = [pytest.mark.slow, pytest.mark.verilator]


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("pe", ["mac", "booth", "bitserial"])
@pytest.mark.parametrize("engine", ["systolic", "adder-tree"])
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_whole_split_bit_exact(name: str, engine: str, pe: str, bits: int) -> None:
    art = verilog(name, bits, engine, pe)
    ex = runtime.load(art.path)
    x = zoo.digits_inputs(name, zoo.digits_split()[2])
    batch = [{"input": x[i:i + 1]} for i in range(len(x))]
    outs = ex.run_batch(batch)
    for b, o in zip(batch, outs):
        np.testing.assert_array_equal(o["logits"], reference.run(ex.graph, b)["logits"])
    ref = accuracy.evaluate(lambda f: reference.run(ex.graph, f), name)
    assert accuracy.evaluate_batch(ex.run_batch, name) == ref
