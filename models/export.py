"""PyTorch -> ONNX export at opset 17, normalised so that two builds give identical bytes.

Two exporters, because users have files from both:
- `export_dynamo`: `torch.onnx.export(dynamo=True)`. Its ATen->ONNX library starts at
  opset 18 and its own down-conversion runs before graph optimisation, when Reduce* axes are
  still computed by nodes, and fails. So we export at 18, let it optimise (constant folding,
  BatchNormalization fused into the preceding Conv), then down-convert with ONNX's converter.
- `export_torchscript`: the legacy tracer (`dynamo=False`) with `TrainingMode.PRESERVE` on an
  eval-mode module, which keeps BatchNormalization nodes instead of folding them into Conv.

`normalise` strips what varies or leaks from a build (stack traces with file paths, FX node
dumps, doc strings); the result is checked with the full ONNX checker.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence

import onnx
import torch
from onnx import version_converter

from models.built import OPSET

_DYNAMO_OPSET = 18


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the exporters' progress warnings (torchvision missing, deprecations)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_dynamo(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> onnx.ModelProto:
    """Export an eval-mode module with the dynamo exporter; static shapes, opset 17."""
    with quiet_export():
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            opset_version=_DYNAMO_OPSET,
            input_names=list(input_names),
            output_names=list(output_names),
            external_data=False,
            optimize=True,
            verbose=False,
        )
    model = version_converter.convert_version(program.model_proto, OPSET)
    drop_reduce_noop_attr(model)
    return normalise(model)


def export_torchscript(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> onnx.ModelProto:
    """Export an eval-mode module with the legacy TorchScript exporter, keeping BN nodes."""
    buffer = io.BytesIO()
    with quiet_export():
        torch.onnx.export(
            module,
            example,
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=list(input_names),
            output_names=list(output_names),
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=True,
        )
    return normalise(onnx.load_from_string(buffer.getvalue()))


def drop_reduce_noop_attr(model: onnx.ModelProto) -> None:
    """Remove `noop_with_empty_axes` (new in opset 18) left on Reduce* by down-conversion.

    ONNX's 18->17 adapter moves `axes` from input to attribute but keeps this attribute,
    which opset 17 does not define. Only its default (0) can be dropped without a change in
    meaning; any other value raises ValueError.
    """
    for node in model.graph.node:
        if not node.op_type.startswith("Reduce"):
            continue
        kept = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
        dropped = [a for a in node.attribute if a.name == "noop_with_empty_axes"]
        if any(a.i != 0 for a in dropped):
            raise ValueError(f"{node.name}: noop_with_empty_axes=1 has no opset-17 form")
        del node.attribute[:]
        node.attribute.extend(kept)


def normalise(model: onnx.ModelProto) -> onnx.ModelProto:
    """Clear doc strings and metadata everywhere, then run the full checker. Returns `model`.

    Raises onnx.checker.ValidationError if the model is not valid opset-17 ONNX.
    """
    model.doc_string = ""
    del model.metadata_props[:]
    graph = model.graph
    graph.doc_string = ""
    del graph.metadata_props[:]
    for item in [*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        item.doc_string = ""
        del item.metadata_props[:]
    onnx.checker.check_model(model, full_check=True)
    return model
