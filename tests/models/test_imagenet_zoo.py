"""The ImageNet-size zoo models: registered as large, the published architectures' layer
shapes (parameter counts), and each exported model run by the reference interpreter against
ONNX Runtime. Building them takes minutes and ~1.2 GB, so all but the registry are slow."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import onnx_import, reference
from models import zoo

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
