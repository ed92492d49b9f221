"""PyTorch definitions of the zoo's networks.

This module imports torch at import time; only the builders in `models.builders` import it,
and they do so lazily, so `import models.zoo` stays cheap.

Networks:
- `DigitsMLP`: 64-64-32-10 ReLU MLP for sklearn's 8x8 digits.
- `DigitsCNN`: Conv/BN/ReLU stem, max pool, a depthwise-separable residual block, GAP, Linear.
- `ResNetSmall`: stem, a strided block with a 1x1 strided projection shortcut, an identity block.
- `MobileNetSmall`: MobileNetV2-style inverted residuals (ReLU6), a grouped 3x3 conv head.
- `Transformer`: pre-LN blocks with attention written as explicit MatMul/Softmax (encoder, or
  GPT-style decoder with an additive causal mask).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """Multilayer perceptron for flattened 8x8 digits: [N, 64] -> logits [N, 10]."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv2d (no bias, 'same' padding for odd k) followed by BatchNorm2d."""
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout))


class DigitsCNN(nn.Module):
    """Small CNN for [N, 1, 8, 8] digits with a depthwise-separable residual block."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(conv_bn(1, c, 3), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.depthwise = nn.Sequential(conv_bn(c, c, 3, groups=c), nn.ReLU())
        self.pointwise = conv_bn(c, c, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        x = torch.relu(x + self.pointwise(self.depthwise(x)))
        return self.head(torch.flatten(self.gap(x), 1))


class BasicBlock(nn.Module):
    """ResNet basic block; a strided block gets a 1x1 strided conv+BN projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), nn.ReLU(), conv_bn(cout, cout, 3))
        needs_projection = stride != 1 or cin != cout
        self.shortcut = conv_bn(cin, cout, 1, stride) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNetSmall(nn.Module):
    """ResNet-ish classifier for [N, 3, 32, 32]: stem, strided block, identity block, GAP, FC."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3), nn.ReLU())
        self.blocks = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32, 1))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(self.gap(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise (stride 1 or 2), 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            conv_bn(cin, hidden, 1),
            nn.ReLU6(),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.ReLU6(),
            conv_bn(hidden, cout, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetSmall(nn.Module):
    """MobileNetV2-style classifier for [N, 3, 32, 32] with a grouped (groups=2) 3x3 head conv."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1, 4),
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),
            InvertedResidual(24, 32, 2, 4),
        )
        self.head = nn.Sequential(conv_bn(32, 64, 3, groups=2), nn.ReLU6())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


class SelfAttention(nn.Module):
    """Multi-head self-attention from Linear layers, MatMul and Softmax (no fused kernels).

    With `causal_len` set, an additive mask (0 on and below the diagonal, -1e9 above) is a
    constant buffer; a finite value keeps integer-range analyses away from infinities.
    """

    def __init__(self, d: int, heads: int, causal_len: int | None = None) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        mask = None
        if causal_len is not None:
            mask = torch.triu(torch.full((causal_len, causal_len), -1e9), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, H, T, D/H]."""
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            self.split_heads(self.q(x)),
            self.split_heads(self.k(x)),
            self.split_heads(self.v(x)),
        )
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        if self.mask is not None:
            scores = scores + self.mask
        y = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class PreLNBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x)) with exact GELU."""

    def __init__(self, d: int, heads: int, ff: int, causal_len: int | None) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = SelfAttention(d, heads, causal_len)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Stack of pre-LN blocks and a final LayerNorm over [B, T, d] float embeddings."""

    def __init__(self, layers: int, d: int, heads: int, ff: int, causal_len: int | None) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(PreLNBlock(d, heads, ff, causal_len) for _ in range(layers)))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_f(self.blocks(x))


def randomize_(module: nn.Module, std: float | None = None) -> nn.Module:
    """Give every BatchNorm/LayerNorm non-trivial statistics and affine terms, in place.

    With `std`, Linear weights and biases are redrawn from N(0, std) (GPT-2's 0.02). Uses the
    global torch RNG, so seed it first. Returns the module.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, nn.Linear) and std is not None:
                m.weight.normal_(0.0, std)
                m.bias.normal_(0.0, std)
    return module
