"""The edge target: a hand-built Relax model cross-compiled for aarch64 and run under qemu.

Both ways an edge artifact runs are checked against numpy: the standalone runner under
qemu-aarch64 (`etch run OUT`), and TVM RPC (`etch run OUT --rpc HOST:PORT`) against
edge_rpc_server started under qemu-aarch64 on 127.0.0.1. The two run the same model.so
kernels in the same order, so their outputs must agree bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax, topi

from backends.tvm import edge, edge_plan
from compiler.errors import EtchError
from runtime import edge_executor
from tests.edge_tools import NEEDS_EDGE
from tests.golden import assert_bitexact, assert_close

pytestmark = NEEDS_EDGE

EM_AARCH64 = 183
INPUTS = {"x": ((1, 3, 8, 8), "float32"), "bias": ((1, 10), "float32")}
OUTPUTS = {"probs": ((1, 10), "float32"), "features": ((1, 4, 8, 8), "float32")}


def _tensor(shape: tuple, dtype: str = "float32") -> relax.TensorType:
    return relax.TensorType(shape, dtype)


def conv_dense_module() -> tvm.IRModule:
    """main(x, bias, w_conv, w_dense) -> (softmax(dense(relu(conv(x))) + bias), relu(conv(x))).

    Relax ops (legalised by TVM) and topi through emit_te (a call_tir already in TIR) mixed.
    """
    bb = relax.BlockBuilder()
    x, bias = relax.Var("x", _tensor((1, 3, 8, 8))), relax.Var("bias", _tensor((1, 10)))
    w_conv = relax.Var("w_conv", _tensor((4, 3, 3, 3)))
    w_dense = relax.Var("w_dense", _tensor((10, 256)))
    with bb.function("main", [x, bias, w_conv, w_dense]):
        with bb.dataflow():
            conv = bb.emit(relax.op.nn.conv2d(x, w_conv, padding=1))
            features = bb.emit_te(topi.nn.relu, conv)
            flat = bb.emit(relax.op.reshape(features, (1, 256)))
            logits = bb.emit_te(topi.nn.dense, flat, w_dense)
            probs = bb.emit(relax.op.nn.softmax(relax.op.add(logits, bias)))
            out = bb.emit_output(relax.Tuple([probs, features]))
        bb.emit_func_output(out)
    return bb.get()


def reference(x: np.ndarray, bias: np.ndarray, w_conv: np.ndarray,
              w_dense: np.ndarray) -> dict[str, np.ndarray]:
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    features = np.maximum(np.einsum("nchwij,ocij->nohw", windows, w_conv), 0)
    logits = features.reshape(1, -1) @ w_dense.T + bias
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"probs": e / e.sum(axis=1, keepdims=True), "features": features}


def _specs(table: dict) -> list[dict]:
    return [{"name": n, "shape": list(s), "dtype": d} for n, (s, d) in table.items()]


@pytest.fixture(scope="module")
def params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"w_conv": rng.standard_normal((4, 3, 3, 3)).astype("float32"),
            "w_dense": (rng.standard_normal((10, 256)) / 16).astype("float32")}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, params) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("edge")
    entries = edge.build_edge(conv_dense_module(), out, params=params)
    manifest = {"format_version": 1, "target": "edge", "inputs": _specs(INPUTS),
                "outputs": _specs(OUTPUTS), **entries}
    return out, manifest


@pytest.fixture(scope="module")
def sample(params) -> tuple[dict, dict]:
    rng = np.random.default_rng(2)
    inputs = {n: rng.standard_normal(s).astype(d) for n, (s, d) in INPUTS.items()}
    return inputs, reference(**inputs, **params)


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2, f"{path} is not a 64-bit ELF"
    return int.from_bytes(header[18:20], "little")


def test_manifest_entries(artifact):
    _, manifest = artifact
    assert manifest["runtime"] == "tvm" and manifest["device"] == "edge"
    assert manifest["library"] == "model.so" and manifest["edge_runner"] == "edge_runner"
    assert manifest["tvm_target"] == {"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                  "mattr": ["+neon"]}


def test_library_and_runner_are_aarch64_elf(artifact):
    path, _ = artifact
    assert _elf_machine(path / "model.so") == EM_AARCH64
    assert _elf_machine(path / "edge_runner") == EM_AARCH64


def test_standalone_runner_under_qemu_matches_numpy(artifact, sample):
    inputs, expected = sample
    executor = edge_executor.load(*artifact)
    assert isinstance(executor, edge_executor.EdgeQemuExecutor)
    assert_close(executor.run(inputs), expected, rtol=1e-5, atol=1e-5)


def test_rpc_to_server_under_qemu_matches_numpy_and_runner(artifact, sample):
    try:
        server = _rpc_server()
    except EtchError as e:
        pytest.skip(f"no aarch64 TVM runtime for the RPC server: {e}")
    inputs, expected = sample
    with _serving(server) as address:
        remote = edge_executor.load(*artifact, rpc=address).run(inputs)
    assert_close(remote, expected, rtol=1e-5, atol=1e-5)
    assert_bitexact(remote, edge_executor.load(*artifact).run(inputs))


def _rpc_server() -> Path:
    from backends.tvm import edge_rpc

    return edge_rpc.build_server()


def _serving(server: Path):
    from backends.tvm import edge_rpc

    return edge_rpc.serve_under_qemu(*edge_executor.find_qemu(), server=server)


def test_without_qemu_says_to_use_rpc(artifact, monkeypatch):
    monkeypatch.setattr(edge_executor, "find_qemu", lambda: None)
    with pytest.raises(EtchError, match=r"--rpc HOST:PORT.*qemu-user"):
        edge_executor.load(*artifact)


def test_without_runner_says_why(artifact):
    path, manifest = artifact
    manifest = {**manifest, "edge_runner": None, "edge_runner_unsupported": "dynamic shape"}
    with pytest.raises(EtchError, match=r"dynamic shape.*--rpc HOST:PORT"):
        edge_executor.load(path, manifest)


def test_unreachable_rpc_server_is_a_user_error(artifact):
    with pytest.raises(EtchError, match="HOST:PORT"):
        edge_executor.load(*artifact, rpc="no-port")
    with pytest.raises(EtchError, match="cannot reach"):
        edge_executor.load(*artifact, rpc="127.0.0.1:1")


def test_dynamic_shape_is_not_planned():
    bb = relax.BlockBuilder()
    n = tvm.tirx.Var("n", "int64")
    x = relax.Var("x", _tensor((n, 4)))
    with bb.function("main", [x]):
        out = bb.emit(relax.op.nn.relu(x))
        bb.emit_func_output(out)
    target = tvm.target.Target(edge.edge_target())
    with pytest.raises(edge_plan.Unsupported, match="dynamic shape"):
        edge_plan.extract_plan(edge.lower(bb.get(), target))


def test_plan_replays_the_vm_call_sequence(artifact):
    path, _ = artifact
    calls = [line.split()[1] for line in (path / "edge_plan.txt").read_text().splitlines()
             if line.startswith("call ")]
    assert len(calls) >= 3 and any("conv2d" in c for c in calls)
    assert any("softmax" in c for c in calls)


def test_scheduled_primfuncs_are_kept_and_others_fused():
    bb = relax.BlockBuilder()
    x = relax.Var("x", _tensor((4, 6)))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit_te(topi.nn.relu, x)
            b = bb.emit_te(topi.exp, a)
            out = bb.emit_output(bb.emit_te(topi.negative, b))
        bb.emit_func_output(out)
    mod = bb.get()
    relu = mod.get_global_var("relu")
    mod[relu] = mod[relu].with_attr("tirx.is_scheduled", True)
    lowered = edge.lower(mod, tvm.target.Target(edge.edge_target()))
    kernels = sorted(g.name_hint for g, f in lowered.functions_items()
                     if isinstance(f, tvm.tirx.PrimFunc))
    assert kernels == ["fused_exp_negative", "relu"]


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "tiny_encoder"])
def test_zoo_model_through_the_cli_path_matches_ort(tmp_path, name):
    """`etch compile --target edge` on a zoo model, run under qemu, matches ONNX Runtime."""
    from compiler import driver
    from models import zoo

    art = driver.compile(str(zoo.model_path(name)), "edge")
    saved = art.save(tmp_path / "art")
    sample = dict(np.load(zoo.cache_file(name, "inputs.npz")))
    expected = dict(np.load(zoo.cache_file(name, "ort.npz")))
    import runtime

    assert runtime.read_manifest(saved)["target"] == "edge"
    assert_close(runtime.load(saved).run(sample), expected, rtol=1e-3, atol=1e-4)
