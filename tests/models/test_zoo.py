"""Tests of the model zoo: builds, the cache, determinism, graphs, digits accuracy."""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models import accuracy, gemv, zoo
from models.digits import digits_inputs, digits_split

DEFAULT = zoo.select(None, include_large=False)
TEST_IMAGES = 450  # 25% of sklearn's 1797 digits


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All default models, built once per session."""
    root = tmp_path_factory.mktemp("zoo")
    zoo.build(cache_dir=root)
    return root


def op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


def load(cache: Path, name: str) -> onnx.ModelProto:
    return onnx.load(zoo.artifact_paths(name, cache)["onnx"])


def test_registry_default_and_large_selection() -> None:
    assert {
        "digits_mlp",
        "digits_cnn",
        "digits_cnn_legacy",
        "resnet_block",
        "mobilenet",
        "tiny_encoder",
        "tiny_decoder",
    } <= set(DEFAULT)
    gemvs = [n for n in zoo.select(None, include_large=True) if n.startswith("gemv_")]
    assert len(gemvs) == 8 and "gemv_k11008_n4096_b8" in gemvs
    assert [n for n in DEFAULT if n.startswith("gemv_")] == [
        "gemv_k1024_n1024_b1",
        "gemv_k1024_n1024_b8",
    ]
    assert zoo.select(["gemv_k4096_n11008_b1"], include_large=False) == ["gemv_k4096_n11008_b1"]
    with pytest.raises(KeyError, match="unknown model"):
        zoo.select(["resnet51"], include_large=False)


def test_importing_the_registry_does_not_import_torch() -> None:
    code = "import sys, models.zoo, models.accuracy; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(zoo.__file__).parents[1])


def test_default_cache_dir_honours_etch_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCH_CACHE", "/some/where")
    assert zoo.default_cache_dir() == Path("/some/where")
    monkeypatch.delenv("ETCH_CACHE")
    assert zoo.default_cache_dir() == Path(zoo.__file__).resolve().parents[1] / ".cache/models"


def test_build_writes_every_file_and_no_temporaries(cache: Path) -> None:
    for name in DEFAULT:
        assert all(p.is_file() for p in zoo.artifact_paths(name, cache).values()), name
    assert not list(cache.glob(".*.tmp"))


@pytest.mark.parametrize("name", DEFAULT)
def test_saved_sample_reproduces_in_onnxruntime(cache: Path, name: str) -> None:
    model = load(cache, name)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in model.graph.initializer)
    inputs, expected = zoo.load_sample(name, cache)
    meta = zoo.metadata(name, cache)
    assert [(t["name"], t["shape"]) for t in meta["inputs"]] == [
        (k, list(v.shape)) for k, v in inputs.items()
    ]
    session = ort.InferenceSession(str(zoo.artifact_paths(name, cache)["onnx"]))
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn_legacy"])
def test_forced_rebuild_is_byte_identical(cache: Path, tmp_path: Path, name: str) -> None:
    again = zoo.build([name], cache_dir=tmp_path, force=True)[name]
    assert again.read_bytes() == zoo.artifact_paths(name, cache)["onnx"].read_bytes()


def test_build_skips_complete_models_and_rebuilds_missing_files(cache: Path) -> None:
    name = "gemv_k1024_n1024_b1"
    paths = zoo.artifact_paths(name, cache)
    messages: list[str] = []
    zoo.build([name], cache_dir=cache, progress=messages.append)
    assert messages == [f"{name} is up to date"]
    paths["ort"].unlink()
    zoo.build([name], cache_dir=cache, progress=messages.append)
    assert messages[-1].startswith(f"built {name}") and paths["ort"].is_file()


def test_cache_helpers(cache: Path) -> None:
    assert zoo.cache_file("digits_cnn", "ort.npz", cache) == cache / "digits_cnn.ort.npz"
    assert zoo.model_input_name("tiny_decoder", cache) == "input"
    assert zoo.float_accuracy("digits_mlp", cache) == zoo.metadata("digits_mlp", cache)["accuracy"]
    with pytest.raises(KeyError):
        zoo.float_accuracy("resnet_block", cache)
    with pytest.raises(KeyError):
        zoo.cache_file("digits_cnn", "txt", cache)


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def fail(f: object) -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        zoo.write_atomic(tmp_path / "x.onnx", fail)
    assert list(tmp_path.iterdir()) == []


def test_exporters_recorded(cache: Path) -> None:
    exporters = {name: zoo.metadata(name, cache)["exporter"] for name in DEFAULT}
    assert exporters["digits_cnn_legacy"] == "torchscript"
    assert [n for n, e in exporters.items() if e == "torchscript"] == ["digits_cnn_legacy"]
    assert (
        exporters["tiny_decoder"] == "dynamo" and exporters["gemv_k1024_n1024_b1"] == "onnx.helper"
    )


def test_cnn_graphs_have_the_promised_structure(cache: Path) -> None:
    legacy = op_counts(load(cache, "digits_cnn_legacy"))
    assert legacy["BatchNormalization"] == 3 and legacy["Add"] == 1
    mobilenet = load(cache, "mobilenet")
    groups = {
        a.i
        for n in mobilenet.graph.node
        if n.op_type == "Conv"
        for a in n.attribute
        if a.name == "group"
    }
    assert {1, 2, 64} <= groups  # pointwise, grouped head, a depthwise conv
    assert op_counts(mobilenet)["Clip"] >= 8 and op_counts(mobilenet)["Add"] == 2
    strides = [
        list(a.ints)
        for n in load(cache, "resnet_block").graph.node
        for a in n.attribute
        if a.name == "strides"
    ]
    assert strides.count([2, 2]) == 2  # the strided 3x3 and its 1x1 projection


@pytest.mark.parametrize("name", ["tiny_encoder", "tiny_decoder"])
def test_transformer_graphs_are_plain_ops(cache: Path, name: str) -> None:
    ops = op_counts(load(cache, name))
    assert ops["LayerNormalization"] == 5 and ops["Softmax"] == 2 and ops["Erf"] == 2
    assert ops["MatMul"] == 16 and ops["Transpose"] >= 6 and ops["Reshape"] >= 6
    assert "Gelu" not in ops  # Gelu is an ONNX op only from opset 20


def test_gemv_model_is_input_times_weight(cache: Path) -> None:
    inputs, outputs = zoo.load_sample("gemv_k1024_n1024_b8", cache)
    weight = gemv.gemv_weight(1024, 1024)
    assert inputs["input"].shape == (8, 1024) and abs(weight.std() - 0.02) < 1e-3
    np.testing.assert_allclose(outputs["output"], inputs["input"] @ weight, rtol=1e-4, atol=1e-4)


def test_digits_split_is_fixed_and_scaled() -> None:
    x_train, _, x_test, y_test = digits_split()
    assert x_train.shape == (1347, 64) and x_test.shape == (TEST_IMAGES, 64)
    assert x_test.dtype == np.float32 and x_test.min() == 0.0 and x_test.max() == 1.0
    assert np.array_equal(np.bincount(y_test), np.bincount(digits_split()[3]))
    assert np.array_equal(x_test, digits_split()[2])
    assert digits_inputs("digits_cnn", x_test[:3]).shape == (3, 1, 8, 8)
    assert digits_inputs("digits_mlp", x_test[:3]).shape == (3, 64)
    with pytest.raises(KeyError):
        digits_inputs("resnet_block", x_test)


def test_digits_float_accuracy(cache: Path) -> None:
    acc = {
        n: zoo.metadata(n, cache)["accuracy"]
        for n in ("digits_mlp", "digits_cnn", "digits_cnn_legacy")
    }
    assert acc["digits_mlp"] >= 0.95 and acc["digits_cnn"] >= 0.93
    assert acc["digits_cnn_legacy"] == acc["digits_cnn"]  # same training, other exporter


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "digits_cnn_legacy"])
def test_ort_accuracy_matches_recorded_float_accuracy(cache: Path, name: str) -> None:
    # ORT and PyTorch round differently; a near-tie may flip one image, never more.
    recorded = zoo.metadata(name, cache)["accuracy"]
    assert accuracy.ort_accuracy(name, cache) == pytest.approx(recorded, abs=1.01 / TEST_IMAGES)


def test_evaluate_pads_a_short_last_batch(cache: Path) -> None:
    single = accuracy.ort_runner(zoo.artifact_paths("digits_mlp", cache)["onnx"])

    def batched(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [single({"input": row[None]})["logits"] for row in feeds["input"]]
        return {"logits": np.concatenate(rows)}

    assert accuracy.evaluate(batched, "digits_mlp", batch=7) == accuracy.evaluate(
        single, "digits_mlp"
    )


def test_evaluate_scores_a_constant_classifier_at_its_class_frequency() -> None:
    def always_three(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"out": np.eye(10, dtype=np.float32)[[3]]}

    expected = np.mean(digits_split()[3] == 3)
    assert accuracy.evaluate(always_three, "digits_mlp") == pytest.approx(expected)


def test_accuracy_table_and_report(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = accuracy.ort_runner(zoo.artifact_paths("digits_cnn", cache)["onnx"])
    rows = accuracy.accuracy_table("digits_cnn", {"etch-stub": runner}, cache_dir=cache)
    assert [r["runner"] for r in rows] == ["float (pytorch)", "onnxruntime", "etch-stub"]
    assert rows[2]["accuracy"] == rows[1]["accuracy"] and rows[0]["delta"] == 0.0
    text = accuracy.report(rows)
    assert "etch-stub" in capsys.readouterr().out and text.splitlines()[0].startswith("model")


@pytest.mark.slow
def test_large_gemv_builds_and_matches_numpy(tmp_path: Path) -> None:
    name = gemv.gemv_name(4096, 4096, 1)
    zoo.build([name], cache_dir=tmp_path)
    inputs, outputs = zoo.load_sample(name, tmp_path)
    expected = inputs["input"] @ gemv.gemv_weight(4096, 4096)
    np.testing.assert_allclose(outputs["output"], expected, rtol=1e-4, atol=1e-4)
