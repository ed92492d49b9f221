"""cpu artifacts keep their large constants in weights.bin (format 2), not in model.so; an
artifact of format 1 (every constant inside the library) still loads and runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
import runtime
from backends.tvm import weights
from compiler.errors import EtchError
from runtime import files
from tests.golden import run_ort

N, K = 256, 64  # the Gemm's weight: 64 KiB of float32, well over weights.MIN_BYTES


def _model():
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((N, K)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "b")]
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


INPUTS = {"x": np.random.default_rng(4).standard_normal((2, K)).astype(np.float32)}


@pytest.fixture(scope="module")
def artifact() -> compiler.driver.Artifact:
    return compiler.compile(_model(), target="cpu", threads=1)


def test_large_constants_live_in_weights_bin(artifact) -> None:
    m = artifact.manifest
    assert m["format_version"] == runtime.FORMAT_VERSION == 2
    entry = m["weights"]
    assert entry["file"] == "weights.bin" and entry["file"] in m["files"]
    assert (artifact.path / "weights.bin").stat().st_size == entry["bytes"]
    assert all(t["offset"] % 64 == 0 for t in entry["tensors"])
    sizes = [int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize
             for t in entry["tensors"]]
    assert min(sizes) >= weights.MIN_BYTES and sum(sizes) >= N * K * 4  # the packed weight
    assert (artifact.path / "model.so").stat().st_size < N * K * 4  # not in the library
    np.testing.assert_allclose(artifact.run(INPUTS)["y"], run_ort(_model(), INPUTS)["y"],
                               rtol=1e-5, atol=1e-5)


def test_outputs_equal_the_embedded_build_bit_for_bit(artifact, monkeypatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setattr(weights, "MIN_BYTES", 1 << 62)  # every constant in the library
    embedded = compiler.compile(_model(), target="cpu", threads=1)
    assert "weights" not in embedded.manifest
    np.testing.assert_array_equal(embedded.run(INPUTS)["y"], artifact.run(INPUTS)["y"])
    # saved and loaded again (sha256 checked, weights.bin read into its aligned buffer)
    again = runtime.load(artifact.save(tmp_path / "a")).run(INPUTS)["y"]
    np.testing.assert_array_equal(again, artifact.run(INPUTS)["y"])


def test_format_1_artifact_still_loads(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(weights, "MIN_BYTES", 1 << 62)  # what format 1 wrote: no weights.bin
    saved = compiler.compile(_model(), target="cpu", threads=1).save(tmp_path / "old")
    manifest = json.loads((saved / "manifest.json").read_text())
    (saved / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    np.testing.assert_allclose(runtime.load(saved).run(INPUTS)["y"],
                               run_ort(_model(), INPUTS)["y"], rtol=1e-5, atol=1e-5)
    (saved / "manifest.json").write_text(json.dumps({**manifest, "format_version": 3}))
    with pytest.raises(EtchError, match="format 3 .this etch reads formats 1, 2."):
        runtime.load(saved)


def _entry_edits(entry: dict) -> dict[str, object]:
    first = entry["tensors"][0]
    return {
        "not a table": [entry],
        "unaligned offset": {**entry, "tensors": [{**first, "offset": first["offset"] + 4}]},
        "past the end": {**entry, "tensors": [{**first, "shape": [entry["bytes"]]}]},
        "unknown dtype": {**entry, "tensors": [{**first, "dtype": "float99"}]},
        "wrong size": {**entry, "bytes": entry["bytes"] + 64},
        "unlisted file": {**entry, "file": "other.bin"},
    }


@pytest.mark.parametrize("edit", sorted(_entry_edits({"tensors": [{"offset": 0}],
                                                      "bytes": 0})))
def test_a_weights_entry_that_does_not_describe_its_file_is_refused(artifact, tmp_path: Path,
                                                                     edit: str) -> None:
    saved = artifact.save(tmp_path / "a")
    manifest = runtime.read_manifest(saved)
    bad = {**manifest, "weights": _entry_edits(manifest["weights"])[edit]}
    (saved / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(EtchError, match="weights"):
        runtime.load(saved)


def test_corrupted_weights_are_caught_by_their_sha256(artifact, tmp_path: Path) -> None:
    saved = artifact.save(tmp_path / "a")
    data = bytearray((saved / "weights.bin").read_bytes())
    data[100] ^= 0x40
    (saved / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(EtchError, match="weights.bin does not match the sha256"):
        files.verify(saved, runtime.read_manifest(saved))


def test_main_checks_its_inputs_each_call_and_the_weights_once_at_load(artifact,
                                                                       tmp_path: Path) -> None:
    """`main` marks its graph inputs (`num_input`): the VM checks those on every call, not
    the weights after them; the library's `check_weights` checks the weights when the
    artifact loads, so a weights entry whose shape or dtype is not the library's (same
    bytes, layout valid) is one EtchError there, before any kernel reads it."""
    prof = runtime.load(artifact.path).profile(INPUTS, 3)
    checks = {k.name: k.calls for k in prof.kernels if k.name.startswith("vm.builtin.")}
    assert checks.get("vm.builtin.check_tensor_info") == 1  # x, not the weights
    assert len(artifact.manifest["weights"]["tensors"]) >= 1
    saved = artifact.save(tmp_path / "a")
    manifest = runtime.read_manifest(saved)
    first = manifest["weights"]["tensors"][0]
    for edit in ({"shape": [int(np.prod(first["shape"]))]},
                 {"dtype": "int32" if first["dtype"] == "float32" else "float32"}):
        bad = {**manifest["weights"], "tensors": [{**first, **edit},
                                                  *manifest["weights"]["tensors"][1:]]}
        (saved / "manifest.json").write_text(json.dumps({**manifest, "weights": bad}))
        with pytest.raises(EtchError, match="weights.bin does not fit the library"):
            runtime.load(saved)
