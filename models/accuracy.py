"""Top-1 accuracy of any runner on the digits test split, and a side-by-side table.

A runner is any callable `run({input_name: array}) -> {output_name: array}`: a compiled etch
artifact's `.run`, an ONNX Runtime session wrapped by `ort_runner`, or a numpy reference.
The digits models are exported with batch 1, so `evaluate` feeds one image at a time;
`evaluate_batch` hands every image to one `run_batch` call (an executor's: the Verilator
executor streams them all through one simulation).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np

from models import zoo
from models.digits import INPUT_NAME, OUTPUT_NAME, digits_inputs, digits_split

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
BatchRunner = Callable[[list[dict[str, np.ndarray]]], list[dict[str, np.ndarray]]]


def logits_of(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The "logits" output, or the only output. Raises KeyError if neither exists."""
    if OUTPUT_NAME in outputs:
        return np.asarray(outputs[OUTPUT_NAME])
    if len(outputs) == 1:
        return np.asarray(next(iter(outputs.values())))
    raise KeyError(f"no {OUTPUT_NAME!r} among outputs {sorted(outputs)}")


def evaluate(run: Runner, model_name: str, batch: int = 1, limit: int | None = None) -> float:
    """Top-1 accuracy of `run` on the digits test split (the first `limit` images if given).

    Images are fed `batch` at a time in `model_name`'s layout under the input name "input";
    a short last batch is padded with zeros (static-shape models) and the padding dropped.
    """
    _, _, x_test, y_test = digits_split()
    x, y = digits_inputs(model_name, x_test[:limit]), y_test[:limit]
    predicted = [predict(run, x[i : i + batch], batch) for i in range(0, len(x), batch)]
    return float(np.mean(np.concatenate(predicted) == y))


def evaluate_batch(run_batch: BatchRunner, model_name: str, limit: int | None = None) -> float:
    """Top-1 accuracy of `run_batch` (e.g. `runtime.load(path).run_batch`) on the digits test
    split, every image a separate batch-1 inference, all in one call."""
    _, _, x_test, y_test = digits_split()
    x, y = digits_inputs(model_name, x_test[:limit]), y_test[:limit]
    outs = run_batch([{INPUT_NAME: x[i:i + 1]} for i in range(len(x))])
    predicted = np.array([logits_of(o).reshape(-1).argmax() for o in outs])
    return float(np.mean(predicted == y))


def predict(run: Runner, x: np.ndarray, batch: int) -> np.ndarray:
    """Argmax class of each of the (at most `batch`) images in `x`."""
    padded = np.zeros((batch, *x.shape[1:]), dtype=np.float32)
    padded[: len(x)] = x
    logits = logits_of(run({INPUT_NAME: padded})).reshape(batch, -1)
    return logits[: len(x)].argmax(axis=1)


def ort_runner(path: Path) -> Runner:
    """A runner for an ONNX file on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(names, feeds)))


def ort_accuracy(model_name: str, cache_dir: Path | None = None) -> float:
    """Accuracy of `model_name` (built if missing) in ONNX Runtime."""
    return evaluate(ort_runner(zoo.model_path(model_name, cache_dir)), model_name)


def accuracy_table(
    model_name: str, runners: dict[str, Runner], cache_dir: Path | None = None
) -> list[dict]:
    """Rows {model, runner, accuracy, delta}: float PyTorch (recorded at build time), ONNX
    Runtime, then each of `runners`; delta is accuracy minus the float accuracy."""
    float_acc = zoo.float_accuracy(model_name, cache_dir)
    results = {"float (pytorch)": float_acc, "onnxruntime": ort_accuracy(model_name, cache_dir)}
    results |= {label: evaluate(run, model_name) for label, run in runners.items()}
    return [
        {"model": model_name, "runner": label, "accuracy": acc, "delta": acc - float_acc}
        for label, acc in results.items()
    ]


def format_table(rows: list[dict]) -> str:
    """Rows of `accuracy_table` as aligned text, accuracies in percent."""
    header = ("model", "runner", "top-1 %", "vs float")
    lines = [
        (r["model"], r["runner"], f"{100 * r['accuracy']:.2f}", f"{100 * r['delta']:+.2f}")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
        for line in [header, *lines]
    )


def report(rows: list[dict], file: TextIO | None = None) -> str:
    """Print the table of `rows` (to stdout unless `file`) and return its text."""
    text = format_table(rows)
    print(text, file=file or sys.stdout)
    return text
