"""Linear layers with constant weights, seen as [N, K] matrices (shared by the quantisation
and channel-rearrangement passes).

A layer is a Conv, Gemm or MatMul node (or an etch.Fused node anchored on one) whose weight
(input 1) is a float constant. Its matrix view has one row per output channel and one column
per reduction element: Conv W [O, C/g, *k] -> [O, C/g * prod(k)] (column = (c, taps), so the
`taps` = prod(k) columns of one input channel are adjacent); Gemm B [K, N] -> B^T, transB=1
B [N, K] -> B; MatMul B [K, N] -> B^T. A grouped Conv's rows of group j read input channels
j*C/g .. (j+1)*C/g - 1: its matrix is [g, O/g, K] for Hessians and GPTQ.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops.conv import conv_window, gather_windows, pad_input

KERNELS = ("Conv", "Gemm", "MatMul")


@dataclass
class Layer:
    """A linear layer: its node, kernel op and attrs, and the weight's matrix layout."""

    node: Node
    op: str
    attrs: dict
    weight: str

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def x(self) -> str:
        return self.node.inputs[0]

    def w(self, graph: Graph) -> np.ndarray:
        return graph.values[self.weight].data

    @property
    def groups(self) -> int:
        return int(self.attrs.get("group", 1)) if self.op == "Conv" else 1

    def taps(self, shape: tuple[int, ...]) -> int:
        """Matrix columns per input channel (prod(kernel) for Conv, 1 otherwise)."""
        return int(np.prod(shape[2:])) if self.op == "Conv" else 1

    @property
    def n_first(self) -> bool:
        """Whether the weight's axis 0 indexes output channels (Conv, Gemm with transB)."""
        return self.op == "Conv" or (self.op == "Gemm" and bool(self.attrs.get("transB", 0)))

    def n_axis(self, rank: int) -> int:
        return 0 if self.n_first else rank - 1

    def k_axis(self, rank: int) -> int:
        return 1 if self.n_first else 0

    def matrix(self, w: np.ndarray) -> np.ndarray:
        """The weight as [N, K]."""
        return w.reshape(w.shape[0], -1) if self.op == "Conv" else (w if self.n_first else w.T)

    def unmatrix(self, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of `matrix` for a weight of `shape`."""
        return m.reshape(shape) if self.op == "Conv" else (m if self.n_first else m.T)

    def inputs_as_rows(self, x: np.ndarray, w_shape: tuple[int, ...]) -> np.ndarray:
        """The layer's input as [g, M, K] rows that multiply the matrix's rows (im2col for
        Conv; the transposed A of a Gemm with transA)."""
        if self.op == "Conv":
            win = conv_window(self.attrs, x.shape, w_shape)
            cols = gather_windows(pad_input(x, win), win)
            n, g = x.shape[0], self.groups
            cols = cols.reshape(n, g, -1, int(np.prod(win.out)))  # [N, g, K, P]
            return cols.transpose(1, 0, 3, 2).reshape(g, -1, cols.shape[2])
        if self.op == "Gemm" and self.attrs.get("transA", 0):
            x = x.T
        return x.reshape(1, -1, x.shape[-1])


def find_layers(graph: Graph) -> list[Layer]:
    """Every linear layer whose weight is a float32 constant (unquantised), in node order."""
    out = []
    for node in graph.nodes:
        op, attrs = node.op, node.attrs
        if op == "etch.Fused":
            op = attrs.get("kernel", "")
            attrs = json.loads(attrs.get("kernel_attrs", "{}"))
        if op not in KERNELS or len(node.inputs) < 2:
            continue
        v = graph.values.get(node.inputs[1])
        if v is None or not v.is_const or v.quant is not None or v.dtype != "float32":
            continue
        if op == "MatMul" and len(v.shape) != 2 or op == "Conv" and len(v.shape) < 3:
            continue
        out.append(Layer(node, op, attrs, node.inputs[1]))
    return out


def hessians(layers: list[Layer], graph: Graph) -> tuple[Callable, Callable]:
    """(a calibration visitor, a function returning what it saw: layer name -> sum of
    X^T X [g, K, K] over the calibration rows, float64). A layer's input is folded in as it
    is made (`calibrate.run_all` streams values), so no activation outlives its readers;
    its rows are stacked and multiplied in blocks of at least 8192 (one large product per
    value, not one per image). Each block's product is float32 (as GPTQ's own
    implementation accumulates H; relative error ~3e-7 on 9408 rows of 1152), the blocks
    summed in float64: 2.2x faster than float64 products, which were most of a batch-8
    calibration of densenet121 (its 3x3 layers: 270k patch rows of 1152, 0.7 TFLOP)."""
    shapes = {ly.name: graph.values[ly.weight].shape for ly in layers}
    readers: dict[str, list[Layer]] = {}
    for ly in layers:
        readers.setdefault(ly.x, []).append(ly)
    sums: dict[str, np.ndarray] = {}

    def fold(name: str, rows: list[np.ndarray]) -> None:
        x = np.concatenate(rows, axis=1) if len(rows) > 1 else rows[0]
        h = (x.transpose(0, 2, 1) @ x).astype(np.float64)
        sums[name] = sums[name] + h if name in sums else h
        rows.clear()

    def visit(value_name: str, x: np.ndarray) -> None:
        for ly in readers.get(value_name, ()):
            # a convolution's rows one image at a time: its patches (im2col) for a whole
            # batch are large (vgg16's first layers at batch 8: 0.9 GB in float32)
            parts = [x[i:i + 1] for i in range(len(x))] if ly.op == "Conv" else [x]
            rows: list[np.ndarray] = []
            for part in parts:
                rows.append(ly.inputs_as_rows(np.asarray(part, np.float32), shapes[ly.name]))
                if sum(r.shape[1] for r in rows) >= 8192:
                    fold(ly.name, rows)
            if rows:
                fold(ly.name, rows)

    def result() -> dict[str, np.ndarray]:
        return sums

    return visit, result
