"""The TVM backend's op table, its import-light support list, and name sanitising."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import onnx

import compiler
from backends.tvm import lower, support
from backends.tvm.lower.context import sanitize
from tests.backends.tvm_cases import ModelBuilder
from tests.golden import assert_close, run_ort


def test_support_list_is_the_lowering_table() -> None:
    assert support.SUPPORTED_OPS == frozenset(lower.LOWERINGS)


def test_support_imports_no_tvm() -> None:
    code = "import sys, backends.tvm.support; sys.exit('tvm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_every_supported_op_has_a_reference() -> None:
    from compiler import ops

    assert not {op for op in support.SUPPORTED_OPS if ops.get(op) is None}


def test_sanitize_keeps_identifier_characters_only() -> None:
    assert sanitize('x"; import os; os.system("rm -rf /") #') == "x___import_os__os_system__rm__rf"
    assert re.fullmatch(r"[A-Za-z0-9_]*", sanitize("\u00e9\u00e8/../\n\t" * 10))


def test_hostile_names_compile_and_stay_out_of_symbols() -> None:
    hostile = 'relu"); __import__("os").system("echo pwned"); ("'
    m = ModelBuilder("names")
    x = m.input("in put/0", np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4))
    m.nodes.append(onnx.helper.make_node("Relu", [x], ["out\n1"], name=hostile))
    m.outputs.append("out\n1")
    model, inputs = m.build()
    art = compiler.compile(model, target="cpu")
    assert_close(art.run(inputs), run_ort(model, inputs))
    mod = lower.to_irmodule(art.graph, pack=True, lanes=8)
    names = [gv.name_hint for gv, _ in mod.functions_items()]
    assert len(names) == 2 and all(re.fullmatch(r"[A-Za-z0-9_]+", n) for n in names), names
    assert all(p.name.startswith("input") for p in mod["main"].params)
