"""The ImageNet-size zoo models: registered as large, the published architectures' layer
shapes (parameter counts), and each exported model run by the reference interpreter against
ONNX Runtime, compiled for the host CPU against ONNX Runtime (float) and against the integer
reference (`--int`, bit for bit). Building them takes minutes and ~1.2 GB, so all but the
registry are slow."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import onnx_import, reference
from models import zoo
from tests.golden import assert_bitexact, assert_close

# torchvision's parameter counts for the same architectures (1000 classes).
PUBLISHED_PARAMS = {
    "resnet50": 25_557_032, "mobilenet_v2": 3_504_872, "vgg16": 138_357_544,
    "densenet121": 7_978_856, "squeezenet1_1": 1_235_496, "efficientnet_b0": 5_288_548,
    "inception_v3": 23_834_568, "shufflenet_v2": 2_278_604, "vit_b16": 86_567_656,
}


def test_imagenet_models_are_large_and_registered() -> None:
    assert set(zoo.IMAGENET) == set(PUBLISHED_PARAMS)
    assert all(zoo.MODELS[n].large for n in zoo.IMAGENET)
    assert not set(zoo.IMAGENET) & set(zoo.select(None, include_large=False))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_architecture_has_the_published_parameter_count(name: str) -> None:
    from models import imagenet

    module = getattr(imagenet, name)()
    assert sum(p.numel() for p in module.parameters()) == PUBLISHED_PARAMS[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_reference_matches_onnx_runtime(name: str) -> None:
    graph = onnx_import.import_model(str(zoo.model_path(name)))
    inputs, expected = zoo.load_sample(name)
    got = reference.run(graph, inputs)
    for key, want in expected.items():
        np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_cpu_matches_onnx_runtime(name: str) -> None:
    """Every ImageNet-size model compiles for the host CPU and matches ORT (rtol 1e-3)."""
    import compiler

    inputs, expected = zoo.load_sample(name)
    art = compiler.compile(str(zoo.model_path(name)), target="cpu")
    scale = max(float(np.abs(v).max()) for v in expected.values())
    assert_close(art.run(inputs), expected, rtol=1e-3, atol=1e-4 * scale)


PAIRS = "2 images at a time (one a thread)"


@pytest.mark.slow
@pytest.mark.parametrize("name,threads,how", [
    ("squeezenet1_1", 1, "image by image"), ("shufflenet_v2", 2, PAIRS),
    # in pairs, inception_v3's 35x35 images would spill a core's L2: fewer layers cut
    ("inception_v3", 2, "image by image")])
def test_batch_split_image_by_image_matches_onnx_runtime(name: str, threads: int, how: str,
                                                          tmp_path) -> None:
    """At batch 4 the first layers run image by image (`split_batch`, said in --explain:
    squeezenet1_1's fire modules, shufflenet_v2's channel shuffles and slices,
    inception_v3's branches and concats), two images at a time when built for two threads
    where that cuts as many layers; the outputs match ORT's on four different images (rtol
    1e-3)."""
    import onnxruntime as ort

    import compiler
    from benchmarks.cnn_peers import batched_model

    path = tmp_path / "b4.onnx"
    batched_model(zoo.model_path(name), 4, path)
    sample = zoo.load_sample(name)[0]
    rng = np.random.default_rng(4)
    inputs = {k: np.concatenate([v, *(v[:, :, ::-1] + rng.normal(0, 0.1, v.shape).astype(
        v.dtype) for _ in range(3))]).astype(v.dtype) for k, v in sample.items()}
    art = compiler.compile(str(path), target="cpu", threads=threads)
    assert f"split batch: the batch of 4 runs {how} through" in art.explain()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
    scale = max(float(np.abs(v).max()) for v in expected.values())
    assert_close(art.run(inputs), expected, rtol=1e-3, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def int_pair(tmp_path_factory: pytest.TempPathFactory):
    """name -> (cpu, ref) `--int` W8A8 artifacts calibrated on the sample, and inputs: the
    sample and a perturbed copy (built once per module: vit_b16's take minutes)."""
    import compiler

    built: dict[str, tuple] = {}

    def get(name: str) -> tuple:
        if name not in built:
            inputs = zoo.load_sample(name)[0]
            calib = tmp_path_factory.mktemp(name) / "calib.npz"
            np.savez(calib, **inputs)
            opts = {"bits": 8, "int": True, "calib": str(calib)}
            cpu = compiler.compile(str(zoo.model_path(name)), target="cpu", **opts)
            ref = compiler.compile(str(zoo.model_path(name)), target="ref", **opts)
            assert cpu.manifest["op_counts"].get("etch.QFused", 0) > 0
            rng = np.random.default_rng(1)
            noisy = {k: (v + rng.normal(0, 0.2, v.shape) * v.std()).astype(v.dtype)
                     for k, v in inputs.items()}
            built[name] = cpu, ref, [inputs, noisy]
        return built[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_cpu_int8_matches_the_integer_reference(name: str, int_pair) -> None:
    """`--int` W8A8 on the host CPU is bit-identical to the integer reference (vit_b16's
    LayerNorm, Softmax, residual adds and position embedding included: integer ops)."""
    cpu, ref, samples = int_pair(name)
    for x in samples:
        assert_bitexact(cpu.run(x), ref.run(x))


@pytest.mark.slow
def test_vit_int8_graph_is_integer_and_close_to_float(int_pair) -> None:
    """vit_b16 `--int` is integer from the input's QuantizeLinear to the logits'
    DequantizeLinear. Its logits against float ORT on the sample, measured: max error 0.35
    of 1.96, correlation 0.984, the same top-1 (top-5 overlap 3/5); the float-host graph
    before it had 0.081 and 0.99932. The loss is the int8 residual stream (12 blocks of
    per-tensor QAdd, LayerNorm reading int8): known, not yet fixed (int16 residuals)."""
    cpu, ref, samples = int_pair("vit_b16")
    counts = cpu.manifest["op_counts"]
    assert counts.get("etch.QLayerNorm") == 25 and counts.get("etch.QSoftmax") == 12
    host = [n.op for n in ref.graph.nodes if n.attrs.get("placement") != "accel"]
    assert sorted(host) == ["DequantizeLinear", "QuantizeLinear"]
    (key, ort_logits), = zoo.load_sample("vit_b16")[1].items()
    got = cpu.run(samples[0])[key]
    print(f"vit_b16 --int vs ORT: max abs {np.abs(got - ort_logits).max():.4f}, corr "
          f"{np.corrcoef(got.ravel(), ort_logits.ravel())[0, 1]:.5f}, top-1 "
          f"{int(got.argmax())} vs {int(ort_logits.argmax())}")
    assert np.abs(got - ort_logits).max() <= 0.2 * np.abs(ort_logits).max()
    assert np.corrcoef(got.ravel(), ort_logits.ravel())[0, 1] > 0.98
    assert got.argmax() == ort_logits.argmax()
