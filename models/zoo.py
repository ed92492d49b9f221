"""The model zoo: a registry of ONNX models and a cache directory that builds them on demand.

For each model <name> the cache holds:
  <name>.onnx        the model: opset 17, static shapes (batch 1 unless the name says), weights
                     inside the file; byte-identical from build to build on one machine
  <name>.inputs.npz  a sample input keyed by input name (digits models: the first test image)
  <name>.ort.npz     ONNX Runtime's output for that sample, keyed by output name
  <name>.json        metadata: task, exporter, opset, inputs/outputs, sha256 of the .onnx file,
                     and for trained models the float PyTorch test accuracy

Each file is written to a temporary name and renamed, so an interrupted build leaves no half
file; a model with any file missing is rebuilt. Importing this module does not import torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

import numpy as np

from models import builders, gemv
from models.built import OPSET, BuiltModel
from models.digits import digits_inputs, digits_split

__all__ = [
    "MODELS",
    "ModelSpec",
    "build",
    "cache_file",
    "default_cache_dir",
    "digits_inputs",
    "digits_split",
    "float_accuracy",
    "load_sample",
    "metadata",
    "model_input_name",
    "model_path",
]

SUFFIXES = {"onnx": ".onnx", "inputs": ".inputs.npz", "ort": ".ort.npz", "json": ".json"}
# Export must agree with the source framework to float rounding; a wrong export does not.
EXPORT_RTOL, EXPORT_ATOL = 1e-3, 1e-4


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry.

    name: file stem in the cache. builder: makes the model (slow; imports torch if it needs
    it). large: built only when asked for by name or with include_large. task: "digits" for
    classifiers trained on sklearn digits (accuracy is meaningful), "random" otherwise.
    """

    name: str
    builder: Callable[[], BuiltModel]
    large: bool
    task: str
    description: str


# ImageNet-size architectures (models/imagenet.py): name -> (input size, description).
IMAGENET = {
    "resnet50": (224, "ResNet-50 (bottleneck blocks 3-4-6-3), [1,3,224,224], 25.6M params"),
    "mobilenet_v2": (224, "MobileNetV2 (inverted residuals, ReLU6), [1,3,224,224], 3.5M params"),
    "vgg16": (224, "VGG-16 (13 3x3 convs, 3 FC), [1,3,224,224], 138M params"),
    "densenet121": (224, "DenseNet-121 (growth 32, concat), [1,3,224,224], 8.0M params"),
    "squeezenet1_1": (224, "SqueezeNet 1.1 (fire modules), [1,3,224,224], 1.2M params"),
    "efficientnet_b0": (224, "EfficientNet-B0 (MBConv, SE, SiLU), [1,3,224,224], 5.3M params"),
    "inception_v3": (299, "Inception v3 (A-E blocks, 1x7/7x1), [1,3,299,299], 23.8M params"),
    "shufflenet_v2": (224, "ShuffleNetV2 x1.0 (split/shuffle), [1,3,224,224], 2.3M params"),
    "vit_b16": (224, "ViT-B/16 (12 blocks, d=768), [1,3,224,224], 86.6M params"),
}


def _imagenet_specs() -> Iterable[ModelSpec]:
    for seed, (arch, (size, text)) in enumerate(IMAGENET.items(), start=100):
        yield ModelSpec(arch, partial(builders.build_imagenet, arch, size, seed), large=True,
                        task="random", description=text)


def _gemv_specs() -> Iterable[ModelSpec]:
    for (k, n), batch in ((shape, b) for shape in gemv.SHAPES for b in gemv.BATCHES):
        yield ModelSpec(
            gemv.gemv_name(k, n, batch),
            partial(gemv.build_gemv, k, n, batch),
            large=(k, n) not in gemv.SMALL_SHAPES,
            task="random",
            description=f"[{batch},{k}] @ constant [{k},{n}] float32 MatMul (LLM layer shape)",
        )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "digits_mlp",
            builders.build_digits_mlp,
            False,
            "digits",
            "64-64-32-10 ReLU MLP trained on sklearn digits, [1,64] (dynamo)",
        ),
        ModelSpec(
            "digits_cnn",
            builders.build_digits_cnn,
            False,
            "digits",
            "Conv/BN/pool/depthwise-separable residual CNN on digits, [1,1,8,8] (dynamo)",
        ),
        ModelSpec(
            "digits_cnn_legacy",
            builders.build_digits_cnn_legacy,
            False,
            "digits",
            "the digits CNN, TorchScript exporter, BatchNormalization kept",
        ),
        ModelSpec(
            "resnet_block",
            builders.build_resnet_block,
            False,
            "random",
            "ResNet-ish net with strided projection shortcut, [1,3,32,32]",
        ),
        ModelSpec(
            "mobilenet",
            builders.build_mobilenet,
            False,
            "random",
            "MobileNetV2-style inverted residuals, ReLU6, grouped conv, [1,3,32,32]",
        ),
        ModelSpec(
            "tiny_encoder",
            builders.build_tiny_encoder,
            False,
            "random",
            "2-layer pre-LN transformer encoder, d=64, 4 heads, [1,16,64]",
        ),
        ModelSpec(
            "tiny_decoder",
            builders.build_tiny_decoder,
            False,
            "random",
            "2-block GPT-style causal decoder, d=256, 4 heads, [1,8,256]",
        ),
        *_gemv_specs(),
        *_imagenet_specs(),
    )
}


def default_cache_dir() -> Path:
    """$ETCH_CACHE if set, else <repo>/.cache/models."""
    env = os.environ.get("ETCH_CACHE")
    return Path(env) if env else Path(__file__).resolve().parent.parent / ".cache" / "models"


def artifact_paths(name: str, cache_dir: Path | None = None) -> dict[str, Path]:
    """Paths of a model's cache files, keyed "onnx", "inputs", "ort", "json"."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return {kind: root / f"{name}{suffix}" for kind, suffix in SUFFIXES.items()}


def select(names: Iterable[str] | None, include_large: bool) -> list[str]:
    """Names to build: the given ones (large or not), else every model that is not large
    (all of them with include_large). Raises KeyError for an unknown name."""
    if names is None:
        return [n for n, spec in MODELS.items() if include_large or not spec.large]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise KeyError(f"unknown model(s) {unknown}; known: {sorted(MODELS)}")
    return list(dict.fromkeys(names))


def build(
    names: list[str] | None = None,
    cache_dir: Path | None = None,
    include_large: bool = False,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Build the selected models (see `select`) into `cache_dir`, skipping complete ones.

    Returns name -> path of the .onnx file. Raises KeyError for an unknown name and
    AssertionError if ONNX Runtime disagrees with the framework the model came from.
    """
    report = progress or (lambda message: None)
    built = {}
    for name in select(names, include_large):
        paths = artifact_paths(name, cache_dir)
        if force or not all(p.exists() for p in paths.values()):
            start = time.perf_counter()
            write_model(MODELS[name], paths)
            report(f"built {name} in {time.perf_counter() - start:.1f} s")
        else:
            report(f"{name} is up to date")
        built[name] = paths["onnx"]
    return built


def model_path(name: str, cache_dir: Path | None = None) -> Path:
    """Path of `name`'s .onnx file, building the model first if any of its files is missing."""
    return build([name], cache_dir)[name]


def load_sample(
    name: str, cache_dir: Path | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(sample inputs, ONNX Runtime outputs) of `name`, building it if needed."""
    model_path(name, cache_dir)
    paths = artifact_paths(name, cache_dir)
    with np.load(paths["inputs"]) as inputs, np.load(paths["ort"]) as outputs:
        return dict(inputs), dict(outputs)


def metadata(name: str, cache_dir: Path | None = None) -> dict:
    """The .json metadata of `name`, building it if needed."""
    model_path(name, cache_dir)
    return json.loads(artifact_paths(name, cache_dir)["json"].read_text())


def cache_file(name: str, suffix: str, cache_dir: Path | None = None) -> Path:
    """Path of `<cache>/<name>.<suffix>` (suffix "onnx", "inputs.npz", "ort.npz" or "json"),
    building the model first if needed. Raises KeyError for another suffix."""
    kinds = {s.lstrip("."): kind for kind, s in SUFFIXES.items()}
    if suffix not in kinds:
        raise KeyError(f"no cache file {suffix!r}; one of {sorted(kinds)}")
    model_path(name, cache_dir)
    return artifact_paths(name, cache_dir)[kinds[suffix]]


def model_input_name(name: str, cache_dir: Path | None = None) -> str:
    """Name of the (first) graph input of `name`, from its metadata."""
    return str(metadata(name, cache_dir)["inputs"][0]["name"])


def float_accuracy(name: str, cache_dir: Path | None = None) -> float:
    """Float PyTorch test accuracy recorded when `name` was trained (digits models only).

    Raises KeyError for a model with no recorded accuracy.
    """
    meta = metadata(name, cache_dir)
    if "accuracy" not in meta:
        raise KeyError(f"{name} is not a trained model (task {meta['task']!r})")
    return float(meta["accuracy"])


def write_model(spec: ModelSpec, paths: dict[str, Path]) -> None:
    """Build `spec`, check it in ONNX Runtime, write its four files (the .json last)."""
    model = spec.builder()
    data = model.model.SerializeToString()
    outputs = run_ort(data, model.inputs)
    if model.expected is not None:
        check_outputs(spec.name, outputs, model.expected)
    paths["onnx"].parent.mkdir(parents=True, exist_ok=True)
    write_atomic(paths["onnx"], lambda f: f.write(data))
    write_atomic(paths["inputs"], lambda f: np.savez(f, **model.inputs))
    write_atomic(paths["ort"], lambda f: np.savez(f, **outputs))
    text = json.dumps(describe(spec, model, data, outputs), indent=2, sort_keys=True) + "\n"
    write_atomic(paths["json"], lambda f: f.write(text.encode()))


def run_ort(data: bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a serialised model once in ONNX Runtime (CPU); outputs keyed by name."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


def check_outputs(name: str, got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Raise AssertionError unless ONNX Runtime's outputs match the source framework's."""
    assert got.keys() == expected.keys(), f"{name}: outputs {list(got)} != {list(expected)}"
    for key, value in expected.items():
        np.testing.assert_allclose(
            got[key],
            value,
            EXPORT_RTOL,
            EXPORT_ATOL,
            err_msg=f"{name}: ONNX Runtime disagrees on {key}",
        )


def describe(
    spec: ModelSpec, model: BuiltModel, data: bytes, outputs: dict[str, np.ndarray]
) -> dict:
    """The JSON-serialisable metadata of a built model."""

    def tensors(arrays: dict[str, np.ndarray]) -> list[dict]:
        return [
            {"name": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()
        ]

    return {
        "name": spec.name,
        "task": spec.task,
        "description": spec.description,
        "large": spec.large,
        "exporter": model.exporter,
        "opset": OPSET,
        "inputs": tensors(model.inputs),
        "outputs": tensors(outputs),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        **model.metadata,
    }


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write `path` via a temporary file in the same directory and os.replace.

    The file is made world-readable (mkstemp creates it 0600) since the cache is shared data.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
