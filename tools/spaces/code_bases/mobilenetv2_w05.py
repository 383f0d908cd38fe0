"""MobileNetV2 at width multiplier 0.5, adapted to CIFAR.

Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018. The standard t/c/n/s table with the width multiplier 0.5 already
applied to the constants (channels rounded to multiples of 8, at least 8; the 1280-channel
last conv is kept). CIFAR port: the stem conv has stride 1 and the first two downsampling
stages (24 and 32 channels at full width) have stride 1, so a 32x32 input ends at 8x8.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# Full-width table: t = (1, 6, 6, 6, 6, 6, 6), c = (16, 24, 32, 64, 96, 160, 320),
# n = (1, 2, 3, 4, 3, 3, 1), s = (1, 2, 2, 2, 1, 2, 1) on ImageNet; c x 0.5 below.
WIDTHS = (8, 16, 16, 32, 48, 80, 160)
DEPTHS = (1, 2, 3, 4, 3, 3, 1)
STRIDES = (1, 1, 1, 2, 1, 2, 1)
EXPANSIONS = (1, 6, 6, 6, 6, 6, 6)
STEM_WIDTH = 16
HEAD_WIDTH = 1280
KERNEL_SIZE = 3
ACTIVATION = nn.ReLU6


class InvertedResidual(nn.Module):
    """1x1 expand-BN-act (skipped when expansion is 1), depthwise conv-BN-act, 1x1 project-BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        self.out_channels = out_channels
        hidden = in_channels * expansion
        layers = []
        if expansion != 1:
            layers += [
                nn.Conv2d(in_channels, hidden, 1, bias=False),
                nn.BatchNorm2d(hidden),
                ACTIVATION(),
            ]
        layers += [
            nn.Conv2d(hidden, hidden, KERNEL_SIZE, stride=stride, padding=KERNEL_SIZE // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            ACTIVATION(),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.use_residual:
            out = out + x
        return out


class Network(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, STEM_WIDTH, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(STEM_WIDTH),
            ACTIVATION(),
        )
        blocks = []
        in_channels = STEM_WIDTH
        for width, depth, stride, expansion in zip(WIDTHS, DEPTHS, STRIDES, EXPANSIONS):
            for index in range(depth):
                block = InvertedResidual(in_channels, width, stride if index == 0 else 1, expansion)
                blocks.append(block)
                in_channels = block.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, HEAD_WIDTH, 1, bias=False),
            nn.BatchNorm2d(HEAD_WIDTH),
            ACTIVATION(),
        )
        self.classifier = nn.Linear(HEAD_WIDTH, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)
