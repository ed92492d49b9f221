"""Builders for the PyTorch models of the zoo: build (and train) a network, export it to ONNX.

Each public `build_*` function takes no arguments and returns a `BuiltModel`. torch is
imported inside the functions so that the registry can be imported without it. Every builder
runs under `deterministic_torch`: one thread, deterministic algorithms, a fixed seed and a
forked RNG, so that two builds give identical weights and hence identical ONNX bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from models.built import BuiltModel
from models.digits import INPUT_NAME, OUTPUT_NAME, digits_inputs, digits_split

if TYPE_CHECKING:
    from types import ModuleType

    import torch


@dataclass(frozen=True)
class TrainConfig:
    """Adam with a one-cycle learning-rate schedule (stable across seeds at few epochs)."""

    epochs: int
    batch: int
    max_lr: float


MLP_TRAINING = TrainConfig(epochs=20, batch=64, max_lr=1e-2)
CNN_TRAINING = TrainConfig(epochs=15, batch=128, max_lr=2e-2)


@contextlib.contextmanager
def deterministic_torch(seed: int) -> Iterator[None]:
    """Run the body single-threaded, with deterministic algorithms and torch seeded with `seed`.

    The global RNG state, thread count and determinism flag are restored afterwards.
    """
    import torch

    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)


def export(
    module: torch.nn.Module,
    inputs: dict[str, np.ndarray],
    output: str,
    exporter: str,
    metadata: dict[str, float] | None = None,
) -> BuiltModel:
    """Export eval-mode `module` with `exporter` ("dynamo" or "torchscript") for `inputs`."""
    import torch

    from models import export as onnx_export

    export_fn = {
        "dynamo": onnx_export.export_dynamo,
        "torchscript": onnx_export.export_torchscript,
    }[exporter]
    example = tuple(torch.from_numpy(v) for v in inputs.values())
    with torch.no_grad():
        expected = {output: module(*example).numpy()}
    model = export_fn(module, example, list(inputs), [output])
    return BuiltModel(model, inputs, expected, exporter, dict(metadata or {}))


# --- digits: trained classifiers -------------------------------------------------------------


def train_classifier(
    module: torch.nn.Module, x: np.ndarray, y: np.ndarray, config: TrainConfig
) -> None:
    """Train `module` in place: cross-entropy, shuffled minibatches from a fixed seed."""
    import torch

    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.max_lr)
    steps = config.epochs * -(-len(xs) // config.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.max_lr, total_steps=steps)
    order = torch.Generator().manual_seed(0)
    module.train()
    for _ in range(config.epochs):
        for idx in torch.randperm(len(xs), generator=order).split(config.batch):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(xs[idx]), ys[idx]).backward()
            optimizer.step()
            schedule.step()
    module.eval()


def float_accuracy(module: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of eval-mode `module` on (x, y), in float32 PyTorch."""
    import torch

    with torch.no_grad():
        predicted = module(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float(np.mean(predicted == y))


def build_digits(
    name: str,
    make: Callable[[ModuleType], torch.nn.Module],
    config: TrainConfig,
    exporter: str,
    seed: int,
) -> BuiltModel:
    """Train `make(nets)` on the digits split, record its test accuracy, export it.

    The sample input is the first test image in `name`'s layout.
    """
    from models import nets

    x_train, y_train, x_test, y_test = digits_split()
    with deterministic_torch(seed):
        module = make(nets)
        train_classifier(module, digits_inputs(name, x_train), y_train, config)
        accuracy = float_accuracy(module, digits_inputs(name, x_test), y_test)
        sample = {INPUT_NAME: digits_inputs(name, x_test[:1])}
        return export(module, sample, OUTPUT_NAME, exporter, {"accuracy": accuracy})


def build_digits_mlp() -> BuiltModel:
    """64-64-32-10 MLP on digits, dynamo exporter."""
    return build_digits("digits_mlp", lambda nets: nets.DigitsMLP(), MLP_TRAINING, "dynamo", seed=1)


def build_digits_cnn() -> BuiltModel:
    """Small CNN on digits, dynamo exporter (BatchNormalization comes out fused into Conv)."""
    return build_digits("digits_cnn", lambda nets: nets.DigitsCNN(), CNN_TRAINING, "dynamo", seed=2)


def build_digits_cnn_legacy() -> BuiltModel:
    """The same CNN, trained identically, exported by the legacy TorchScript exporter (BN kept)."""
    return build_digits(
        "digits_cnn_legacy", lambda nets: nets.DigitsCNN(), CNN_TRAINING, "torchscript", seed=2
    )


# --- random-weight networks ------------------------------------------------------------------


def build_random(
    make: Callable[[ModuleType], torch.nn.Module], shape: tuple[int, ...], output: str, seed: int
) -> BuiltModel:
    """Seeded random-weight `make(nets)`, exported by dynamo, with a seeded N(0, 1) sample."""
    import torch

    from models import nets

    with deterministic_torch(seed):
        module = make(nets).eval()
        sample = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).numpy()
        return export(module, {INPUT_NAME: sample}, output, "dynamo")


def build_resnet_block() -> BuiltModel:
    """ResNet-ish net at [1, 3, 32, 32] with random BN statistics."""
    return build_random(
        lambda nets: nets.randomize_(nets.ResNetSmall()), (1, 3, 32, 32), OUTPUT_NAME, seed=3
    )


def build_mobilenet() -> BuiltModel:
    """MobileNetV2-style net at [1, 3, 32, 32] with random BN statistics."""
    return build_random(
        lambda nets: nets.randomize_(nets.MobileNetSmall()), (1, 3, 32, 32), OUTPUT_NAME, seed=4
    )


def build_tiny_encoder() -> BuiltModel:
    """2-layer pre-LN encoder, d=64, 4 heads, ff=256, input [1, 16, 64]."""
    return build_random(
        lambda nets: nets.randomize_(nets.Transformer(2, 64, 4, 256, causal_len=None)),
        (1, 16, 64),
        "output",
        seed=5,
    )


def build_tiny_decoder() -> BuiltModel:
    """2-block GPT-style causal decoder, d=256, 4 heads, ff=1024, N(0, 0.02) weights, [1, 8, 256]."""
    return build_random(
        lambda nets: nets.randomize_(nets.Transformer(2, 256, 4, 1024, causal_len=8), std=0.02),
        (1, 8, 256),
        "output",
        seed=6,
    )


# --- ImageNet-size networks (random weights; large: built when asked for) -------------------


def build_imagenet(arch: str, size: int, seed: int) -> BuiltModel:
    """`models.imagenet.<arch>()` with random BN statistics at [1, 3, size, size]."""
    from models import imagenet

    return build_random(
        lambda nets: nets.randomize_(getattr(imagenet, arch)()), (1, 3, size, size), OUTPUT_NAME,
        seed=seed,
    )
