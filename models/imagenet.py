"""ImageNet-size networks, written here (no torchvision: its PyPI wheels do not load beside
the pinned torch), with the layer shapes of the published architectures and random weights.

Imports torch at import time; `models.builders` imports this module lazily.

- `resnet50`: bottleneck ResNet, blocks (3, 4, 6, 3), stride on the 3x3 conv (v1.5).
- `mobilenet_v2`: inverted residuals with ReLU6, width 1.0.
- `vgg16`: 13 3x3 convs in five stages and a 3-layer classifier (no batch norm).
- `densenet121`: growth 32, blocks (6, 12, 24, 16), bottleneck 4x, compression 0.5.
- `squeezenet1_1`: fire modules, the final 1x1 conv classifier and global average pool.
- `efficientnet_b0`: MBConv blocks with squeeze-excitation and SiLU.
- `inception_v3`: the 299x299 network with InceptionA-E blocks (no auxiliary head).
- `shufflenet_v2`: x1.0, stages (4, 8, 4), channel split and shuffle.
- `vit_b16`: ViT-B/16: 16x16 patches, 12 pre-LN blocks, d=768, 12 heads, class token.
"""

from __future__ import annotations

import torch
from torch import nn

from models.nets import PreLNBlock


def cbr(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type = nn.ReLU,
        pad: int | tuple[int, int] | None = None) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + activation (None for a linear layer)."""
    padding = (k // 2 if isinstance(k, int) else (k[0] // 2, k[1] // 2)) if pad is None else pad
    layers = [nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Classifier(nn.Sequential):
    """Global average pool, flatten, Linear."""

    def __init__(self, cin: int, classes: int = 1000) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(cin, classes))


# --- ResNet-50 ------------------------------------------------------------------------------

class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(cbr(cin, width, 1), cbr(width, width, 3, stride),
                                  cbr(width, cout, 1, act=None))
        self.short = (cbr(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout
                      else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


def resnet50() -> nn.Module:
    layers: list[nn.Module] = [cbr(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            layers.append(Bottleneck(cin, width, stride if b == 0 else 1))
            cin = width * 4
    return nn.Sequential(*layers, Classifier(cin))


# --- MobileNetV2 ----------------------------------------------------------------------------

class InvRes(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        pre = [cbr(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        self.body = nn.Sequential(*pre, cbr(hidden, hidden, 3, stride, hidden, nn.ReLU6),
                                  cbr(hidden, cout, 1, act=None))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def mobilenet_v2() -> nn.Module:
    layers: list[nn.Module] = [cbr(3, 32, 3, 2, act=nn.ReLU6)]
    cin = 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            layers.append(InvRes(cin, c, s if i == 0 else 1, t))
            cin = c
    return nn.Sequential(*layers, cbr(cin, 1280, 1, act=nn.ReLU6), nn.Dropout(0.2),
                         Classifier(1280))


# --- VGG-16 ---------------------------------------------------------------------------------

def vgg16() -> nn.Module:
    layers: list[nn.Module] = []
    cin = 3
    for stage, (cout, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        for _ in range(convs):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
            cin = cout
        layers.append(nn.MaxPool2d(2))
        del stage
    return nn.Sequential(*layers, nn.Flatten(1), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(),
                         nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(),
                         nn.Linear(4096, 1000))


# --- DenseNet-121 ---------------------------------------------------------------------------

def bnrc(cin: int, cout: int, k: int) -> nn.Sequential:
    """Pre-activation BN + ReLU + Conv (DenseNet's order)."""
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(),
                         nn.Conv2d(cin, cout, k, padding=k // 2, bias=False))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(bnrc(cin, 4 * growth, 1), bnrc(4 * growth, growth, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


def densenet121(growth: int = 32) -> nn.Module:
    layers: list[nn.Module] = [cbr(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    c = 64
    for i, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            layers.append(DenseLayer(c, growth))
            c += growth
        if i < 3:
            layers += [bnrc(c, c // 2, 1), nn.AvgPool2d(2)]
            c //= 2
    return nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU(), Classifier(c))


# --- SqueezeNet 1.1 -------------------------------------------------------------------------

class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], 1)


def squeezenet1_1() -> nn.Module:
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, 2), nn.ReLU(), pool(), Fire(64, 16, 64), Fire(128, 16, 64), pool(),
        Fire(128, 32, 128), Fire(256, 32, 128), pool(), Fire(256, 48, 192), Fire(384, 48, 192),
        Fire(384, 64, 256), Fire(512, 64, 256), nn.Dropout(0.5), nn.Conv2d(512, 1000, 1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


# --- EfficientNet-B0 ------------------------------------------------------------------------

class SqueezeExcite(nn.Module):
    def __init__(self, c: int, reduced: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, reduced, 1), nn.SiLU(),
                                nn.Conv2d(reduced, c, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        pre = [cbr(cin, hidden, 1, act=nn.SiLU)] if expand != 1 else []
        self.body = nn.Sequential(*pre, cbr(hidden, hidden, k, stride, hidden, nn.SiLU),
                                  SqueezeExcite(hidden, max(1, cin // 4)),
                                  cbr(hidden, cout, 1, act=None))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def efficientnet_b0() -> nn.Module:
    layers: list[nn.Module] = [cbr(3, 32, 3, 2, act=nn.SiLU)]
    cin = 32
    for t, c, n, s, k in ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
                          (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)):
        for i in range(n):
            layers.append(MBConv(cin, c, k, s if i == 0 else 1, t))
            cin = c
    return nn.Sequential(*layers, cbr(cin, 1280, 1, act=nn.SiLU), nn.Dropout(0.2),
                         Classifier(1280))


# --- Inception v3 ---------------------------------------------------------------------------

class Branches(nn.Module):
    """Runs each branch on the input and concatenates along channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


def _seq(*convs: tuple) -> nn.Sequential:
    """A chain of cbr(cin, cout, k, stride, pad=...) from (cin, cout, k[, stride[, pad]])."""
    return nn.Sequential(*(cbr(c[0], c[1], c[2], *(c[3:4] or (1,)),
                               pad=c[4] if len(c) > 4 else None) for c in convs))


def _pool_proj(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=True), cbr(cin, cout, 1))


def inception_a(cin: int, pool: int) -> Branches:
    return Branches(cbr(cin, 64, 1), _seq((cin, 48, 1), (48, 64, 5)),
                    _seq((cin, 64, 1), (64, 96, 3), (96, 96, 3)), _pool_proj(cin, pool))


def inception_b(cin: int) -> Branches:
    return Branches(cbr(cin, 384, 3, 2, pad=0),
                    _seq((cin, 64, 1), (64, 96, 3), (96, 96, 3, 2, 0)), nn.MaxPool2d(3, 2))


def inception_c(cin: int, c7: int) -> Branches:
    return Branches(
        cbr(cin, 192, 1),
        _seq((cin, c7, 1), (c7, c7, (1, 7)), (c7, 192, (7, 1))),
        _seq((cin, c7, 1), (c7, c7, (7, 1)), (c7, c7, (1, 7)), (c7, c7, (7, 1)),
             (c7, 192, (1, 7))),
        _pool_proj(cin, 192))


def inception_d(cin: int) -> Branches:
    return Branches(_seq((cin, 192, 1), (192, 320, 3, 2, 0)),
                    _seq((cin, 192, 1), (192, 192, (1, 7)), (192, 192, (7, 1)),
                         (192, 192, 3, 2, 0)),
                    nn.MaxPool2d(3, 2))


def inception_e(cin: int) -> Branches:
    def split(c: int) -> Branches:
        return Branches(cbr(c, 384, (1, 3)), cbr(c, 384, (3, 1)))

    return Branches(cbr(cin, 320, 1), nn.Sequential(cbr(cin, 384, 1), split(384)),
                    nn.Sequential(cbr(cin, 448, 1), cbr(448, 384, 3), split(384)),
                    _pool_proj(cin, 192))


def inception_v3() -> nn.Module:
    return nn.Sequential(
        cbr(3, 32, 3, 2, pad=0), cbr(32, 32, 3, pad=0), cbr(32, 64, 3), nn.MaxPool2d(3, 2),
        cbr(64, 80, 1), cbr(80, 192, 3, pad=0), nn.MaxPool2d(3, 2),
        inception_a(192, 32), inception_a(256, 64), inception_a(288, 64), inception_b(288),
        inception_c(768, 128), inception_c(768, 160), inception_c(768, 160),
        inception_c(768, 192), inception_d(768), inception_e(1280), inception_e(2048),
        nn.Dropout(0.5), Classifier(2048))


# --- ShuffleNetV2 x1.0 ----------------------------------------------------------------------

def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        side = cin if stride == 2 else half
        self.main = nn.Sequential(cbr(side, half, 1), cbr(half, half, 3, stride, half, None),
                                  cbr(half, half, 1))
        self.short = (nn.Sequential(cbr(cin, cin, 3, 2, cin, None), cbr(cin, half, 1))
                      if stride == 2 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.short is None:
            half = x.shape[1] // 2  # slices, not chunk: opset-18 Split has no opset-17 form
            y = torch.cat([x[:, :half], self.main(x[:, half:])], 1)
        else:
            y = torch.cat([self.short(x), self.main(x)], 1)
        return channel_shuffle(y)


def shufflenet_v2() -> nn.Module:
    layers: list[nn.Module] = [cbr(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 24
    for cout, n in ((116, 4), (232, 8), (464, 4)):
        for i in range(n):
            layers.append(ShuffleUnit(cin, cout, 2 if i == 0 else 1))
            cin = cout
    return nn.Sequential(*layers, cbr(cin, 1024, 1), Classifier(1024))


# --- ViT-B/16 -------------------------------------------------------------------------------

class ViT(nn.Module):
    """Patch embedding (a 16x16 stride-16 conv), class token, learned positions, pre-LN
    blocks (explicit MatMul/Softmax attention), final LayerNorm, head on the class token."""

    def __init__(self, image: int = 224, patch: int = 16, d: int = 768, layers: int = 12,
                 heads: int = 12, ff: int = 3072, classes: int = 1000) -> None:
        super().__init__()
        tokens = (image // patch) ** 2 + 1
        self.embed = nn.Conv2d(3, d, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, tokens, d) * 0.02)
        self.blocks = nn.Sequential(*(PreLNBlock(d, heads, ff, None) for _ in range(layers)))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.ln(self.blocks(x))[:, 0])


def vit_b16() -> nn.Module:
    return ViT()
