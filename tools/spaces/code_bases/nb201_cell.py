"""NAS-Bench-201 network (CIFAR macro skeleton) with one cell genotype.

Dong and Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search",
ICLR 2020. Skeleton: a 3x3 conv stem (16 channels) + BN; three stages of N = 5 cells at
16/32/64 channels, separated by residual reduction blocks (a stride-2 basic residual block:
ReLU-conv-BN, ReLU-conv-BN, shortcut 2x2 average pooling + 1x1 conv); then BN-ReLU, global
average pooling and a linear classifier. A cell is a DAG of 4 nodes and 6 edges: node j is the
sum over i < j of op_ij(node i), and the cell outputs node 3. Operations: none, skip_connect,
nor_conv_1x1, nor_conv_3x3 (nor_conv = ReLU-conv-BN) and avg_pool_3x3.

CELL is the best CIFAR-10 cell of the benchmark (a ResNet-like cell of five 3x3 convs and one
skip connection); nor_conv_3x3 uses KERNEL_SIZE.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
WIDTHS = (16, 32, 64)
DEPTHS = (5, 5, 5)
STRIDES = (1, 2, 2)
STEM_WIDTH = 16
KERNEL_SIZE = 3
ACTIVATION = nn.ReLU


def parse_cell(genotype: str) -> list:
    """The edges of a cell string as (target node, source node, operation), targets from 1."""
    edges = []
    for target, node in enumerate(genotype.split("+"), start=1):
        for token in node.strip().strip("|").split("|"):
            op, source = token.split("~")
            edges.append((target, int(source), op))
    return edges


def relu_conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        ACTIVATION(),
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def make_op(name: str, channels: int):
    """One cell edge (stride 1, same channels in and out); None for the 'none' operation."""
    if name == "none":
        return None
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return relu_conv_bn(channels, channels, 1)
    if name == "nor_conv_3x3":
        return relu_conv_bn(channels, channels, KERNEL_SIZE)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 operation {name!r}")


class Cell(nn.Module):
    """A NAS-Bench-201 cell; 'none' edges are left out (they would only add zeros)."""

    def __init__(self, channels: int, genotype: str):
        super().__init__()
        self.out_channels = channels
        edges = parse_cell(genotype)
        self.num_nodes = 1 + max(target for target, _, _ in edges)
        self.edges = []
        self.ops = nn.ModuleList()
        for target, source, name in edges:
            op = make_op(name, channels)
            if op is not None:
                self.edges.append((target, source))
                self.ops.append(op)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for target in range(1, self.num_nodes):
            node = None
            for (edge_target, source), op in zip(self.edges, self.ops):
                if edge_target == target:
                    out = op(nodes[source])
                    node = out if node is None else node + out
            nodes.append(x * 0.0 if node is None else node)
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NAS-Bench-201's ResNetBasicblock: ReLU-conv-BN (stride), ReLU-conv-BN, plus a shortcut of
    average pooling (when strided) and a 1x1 conv. Pooling uses ceil_mode so odd sizes still match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        self.out_channels = out_channels
        self.conv_a = relu_conv_bn(in_channels, out_channels, KERNEL_SIZE, stride)
        self.conv_b = relu_conv_bn(out_channels, out_channels, KERNEL_SIZE)
        pool = nn.AvgPool2d(stride, stride=stride, ceil_mode=True) if stride > 1 else nn.Identity()
        self.shortcut = nn.Sequential(pool, nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class Network(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, STEM_WIDTH, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(STEM_WIDTH),
        )
        blocks = []
        in_channels = STEM_WIDTH
        for width, depth, stride in zip(WIDTHS, DEPTHS, STRIDES):
            if stride != 1 or in_channels != width:
                blocks.append(ResidualReduction(in_channels, width, stride))
                in_channels = width
            for _ in range(depth):
                block = Cell(in_channels, CELL)
                blocks.append(block)
                in_channels = block.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(in_channels), ACTIVATION())
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.blocks(self.stem(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)
