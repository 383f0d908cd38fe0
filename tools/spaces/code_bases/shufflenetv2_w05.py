"""ShuffleNetV2 0.5x, adapted to CIFAR.

Ma, Zhang, Zheng, Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design", ECCV 2018. Stage widths 48/96/192 with 4/8/4 units and a 1024-channel last conv
(the 0.5x configuration). CIFAR port: the stem is a 3x3 conv with stride 1 and there is no
max pooling, so a 32x32 input ends at 4x4.

A unit's output has 2 * ceil(width / 2) channels (the two branches have equal width), so any
stage width works: odd widths are rounded up to the next even number inside the code.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = (48, 96, 192)
DEPTHS = (4, 8, 4)
STRIDES = (2, 2, 2)
STEM_WIDTH = 24
HEAD_WIDTH = 1024
KERNEL_SIZE = 3
ACTIVATION = nn.ReLU


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit.

    Basic form (stride 1 and in == out channels): split the channels in two halves, transform one
    half (1x1 conv-BN-act, depthwise conv-BN, 1x1 conv-BN-act), concatenate, shuffle.
    Downsampling form (otherwise): both branches see the whole input; branch 1 is depthwise
    conv-BN then 1x1 conv-BN-act, branch 2 as above; concatenate, shuffle.
    """

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        branch = (width + 1) // 2
        self.out_channels = 2 * branch
        self.split = stride == 1 and in_channels == self.out_channels
        padding = KERNEL_SIZE // 2
        branch_in = branch if self.split else in_channels
        if self.split:
            self.branch1 = nn.Identity()
        else:
            self.branch1 = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, KERNEL_SIZE, stride=stride, padding=padding,
                          groups=in_channels, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, branch, 1, bias=False),
                nn.BatchNorm2d(branch),
                ACTIVATION(),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(branch_in, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            ACTIVATION(),
            nn.Conv2d(branch, branch, KERNEL_SIZE, stride=stride, padding=padding, groups=branch, bias=False),
            nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            ACTIVATION(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split:
            half = x.shape[1] // 2
            out = torch.cat((self.branch1(x[:, :half]), self.branch2(x[:, half:])), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        # Channel shuffle with 2 groups: interleave the two branches' channels.
        b, c, h, w = out.shape
        out = out.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
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
        for width, depth, stride in zip(WIDTHS, DEPTHS, STRIDES):
            for index in range(depth):
                block = ShuffleUnit(in_channels, width, stride if index == 0 else 1)
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
