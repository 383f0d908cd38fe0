"""Static layers of the once-for-all MobileNetV3 family, and the static network they form.

These are the layers an extracted subnet is made of. Their module names follow the official
once-for-all code (mit-han-lab/once-for-all, ``ofa.utils.layers`` and
``ofa.imagenet_classification.networks.MobileNetV3``), so a static subnet's ``state_dict()`` has
the official names too (``blocks.3.conv.depth_conv.conv.weight``, ``classifier.linear.weight``).
Written from the published architecture; the arithmetic (channel rounding, SE widths, hard
activations, same padding) is the official code's.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from archsmith.tools.supernets.ofa_arch import se_mid_channels


def same_padding(kernel_size: int) -> int:
    """Padding that keeps the spatial size at stride 1 (odd kernels only)."""
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {kernel_size}")
    return kernel_size // 2


class HSwish(nn.Module):
    """Hard swish: ``x * relu6(x + 3) / 6``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0) / 6.0


class HSigmoid(nn.Module):
    """Hard sigmoid: ``relu6(x + 3) / 6``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


def activation(name: str) -> nn.Module:
    """``relu`` or ``h_swish`` (the two the MobileNetV3 stages use)."""
    if name == "relu":
        return nn.ReLU()
    if name == "h_swish":
        return HSwish()
    raise ValueError(f"unknown activation {name!r} (expected 'relu' or 'h_swish')")


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean over height and width, keeping the dimensions (as the official code pools)."""
    return x.mean(3, keepdim=True).mean(2, keepdim=True)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: pool, 1x1 reduce (bias), ReLU, 1x1 expand (bias), hard sigmoid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        mid = se_mid_channels(channels)
        self.fc = nn.Sequential(
            OrderedDict(
                [
                    ("reduce", nn.Conv2d(channels, mid, 1, 1, 0, bias=True)),
                    ("relu", nn.ReLU()),
                    ("expand", nn.Conv2d(mid, channels, 1, 1, 0, bias=True)),
                    ("h_sigmoid", HSigmoid()),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(global_avg_pool(x))


def conv_layer(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    stride: int = 1,
    act: str = "h_swish",
    use_bn: bool = True,
) -> nn.Sequential:
    """Convolution (no bias), optional BatchNorm, activation: ``conv``, ``bn``, ``act``."""
    layers: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, same_padding(kernel_size), bias=False))
    ]
    if use_bn:
        layers.append(("bn", nn.BatchNorm2d(out_channels)))
    layers.append(("act", activation(act)))
    return nn.Sequential(OrderedDict(layers))


def classifier_layer(in_features: int, n_classes: int, dropout_rate: float) -> nn.Sequential:
    """Dropout then a linear layer: ``dropout``, ``linear``."""
    layers: list[tuple[str, nn.Module]] = []
    if dropout_rate > 0:
        layers.append(("dropout", nn.Dropout(dropout_rate)))
    layers.append(("linear", nn.Linear(in_features, n_classes)))
    return nn.Sequential(OrderedDict(layers))


class MBConv(nn.Module):
    """Static inverted bottleneck: 1x1 expand (absent when ``mid == in`` at ratio 1), depthwise k x k
    (with SE when ``use_se``), 1x1 linear projection. No residual here (see ``ResidualBlock``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        mid_channels: int,
        act: str,
        use_se: bool,
        expand: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.mid_channels = kernel_size, stride, mid_channels
        self.act, self.use_se = act, use_se
        self.inverted_bottleneck = conv_layer(in_channels, mid_channels, 1, 1, act) if expand else None
        depth = [
            ("conv", nn.Conv2d(mid_channels, mid_channels, kernel_size, stride, same_padding(kernel_size),
                               groups=mid_channels, bias=False)),
            ("bn", nn.BatchNorm2d(mid_channels)),
            ("act", activation(act)),
        ]
        if use_se:
            depth.append(("se", SqueezeExcite(mid_channels)))
        self.depth_conv = nn.Sequential(OrderedDict(depth))
        self.point_linear = nn.Sequential(
            OrderedDict(
                [
                    ("conv", nn.Conv2d(mid_channels, out_channels, 1, 1, 0, bias=False)),
                    ("bn", nn.BatchNorm2d(out_channels)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


class ResidualBlock(nn.Module):
    """``conv(x) + x`` when ``shortcut`` (stride 1, same width), else ``conv(x)``."""

    def __init__(self, conv: nn.Module, shortcut: bool) -> None:
        super().__init__()
        self.conv = conv
        self.shortcut = nn.Identity() if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return self.conv(x)
        return self.conv(x) + self.shortcut(x)


class MobileNetV3(nn.Module):
    """The static network: first conv, blocks, final expand, pool, feature mix, classifier.

    ``input_resolution`` is the image size the network was chosen for (it does not change any
    weight: the network is fully convolutional up to the global pool).
    """

    def __init__(
        self,
        first_conv: nn.Module,
        blocks: list[nn.Module],
        final_expand_layer: nn.Module,
        feature_mix_layer: nn.Module,
        classifier: nn.Module,
        input_resolution: int | None = None,
    ) -> None:
        super().__init__()
        self.first_conv = first_conv
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = final_expand_layer
        self.feature_mix_layer = feature_mix_layer
        self.classifier = classifier
        self.input_resolution = input_resolution

    def forward_pre_gap(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before global pooling (after the final expand layer)."""
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        return self.final_expand_layer(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.feature_mix_layer(global_avg_pool(self.forward_pre_gap(x)))
        return self.classifier(x.flatten(1))


def count_params(module: nn.Module) -> int:
    """Number of parameters (weights, biases, BN affine; not buffers)."""
    return sum(p.numel() for p in module.parameters())
