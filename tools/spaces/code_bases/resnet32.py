"""ResNet-32 for CIFAR.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (Section 4.2):
a 3x3 stem conv, three stages of BasicBlocks (two 3x3 convs) at 16/32/64 channels and 32/16/8
resolution, global average pooling and a linear classifier; 6n+2 = 32 weight layers for n = 5.
Shortcuts are identities, or 1x1 conv + BN projections (option B) where the shape changes.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = (16, 32, 64)
DEPTHS = (5, 5, 5)
STRIDES = (1, 2, 2)
STEM_WIDTH = 16
KERNEL_SIZE = 3
ACTIVATION = nn.ReLU


class BasicBlock(nn.Module):
    """conv-BN-act-conv-BN plus shortcut, then act."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.out_channels = out_channels
        padding = KERNEL_SIZE // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, KERNEL_SIZE, stride=stride, padding=padding, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = ACTIVATION()
        self.conv2 = nn.Conv2d(out_channels, out_channels, KERNEL_SIZE, stride=1, padding=padding, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = ACTIVATION()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


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
        for width, depth, stride in zip(WIDTHS, DEPTHS, STRIDES):
            for index in range(depth):
                block = BasicBlock(in_channels, width, stride if index == 0 else 1)
                blocks.append(block)
                in_channels = block.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)
