"""Elastic (dynamic) operators of the once-for-all supernet, and the elastic inverted bottleneck.

Each operator holds the weights of its largest setting and runs a slice of them: the first
``c`` channels, or a kernel cut from the centre of the largest one. Module and parameter names
match the official code (``DynamicConv2d.conv``, ``DynamicBatchNorm2d.bn``, the
``7to5_matrix``/``5to3_matrix`` kernel transforms of ``DynamicSeparableConv2d``), so
``state_dict()`` keys are the official ones. ``ElasticMBConv.active_static`` builds the static
layer of the active setting with copied weights, exactly what the official ``get_active_subnet``
produces.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from archsmith.tools.supernets.ofa_arch import middle_channels, se_mid_channels
from archsmith.tools.supernets.ofa_layers import MBConv, SqueezeExcite, activation, global_avg_pool, same_padding


def centre_crop(kernel_size: int, sub_kernel_size: int) -> tuple[int, int]:
    """Start and end index of the centred ``sub_kernel_size`` window of a ``kernel_size`` kernel."""
    centre, half = kernel_size // 2, sub_kernel_size // 2
    return centre - half, centre + half + 1


class ElasticDepthwiseConv(nn.Module):
    """Depthwise convolution with an elastic kernel size (official ``DynamicSeparableConv2d``).

    A smaller kernel is derived step by step from the largest one: crop the centre of the current
    kernel to the next smaller size, then multiply its flattened taps by the learned
    ``<large>to<small>_matrix`` (initialised to the identity).
    """

    def __init__(self, max_channels: int, kernel_sizes: list[int], stride: int = 1) -> None:
        super().__init__()
        self.kernel_sizes = sorted(set(kernel_sizes))
        self.stride = stride
        kmax = self.kernel_sizes[-1]
        self.conv = nn.Conv2d(max_channels, max_channels, kmax, stride, groups=max_channels, bias=False)
        for small, large in zip(self.kernel_sizes[:-1], self.kernel_sizes[1:]):
            self.register_parameter(f"{large}to{small}_matrix", nn.Parameter(torch.eye(small * small)))
        self.active_kernel_size = kmax

    def active_filter(self, channels: int, kernel_size: int) -> torch.Tensor:
        """The ``[channels, 1, k, k]`` kernel of the first ``channels`` channels at size ``k``."""
        if kernel_size not in self.kernel_sizes:
            raise ValueError(f"kernel size {kernel_size} not in {self.kernel_sizes}")
        weight = self.conv.weight[:channels]
        sizes = self.kernel_sizes
        for large, small in zip(reversed(sizes[1:]), reversed(sizes[:-1])):
            if large <= kernel_size:
                break
            start, end = centre_crop(large, small)
            taps = weight[:, :, start:end, start:end].reshape(-1, small * small)
            taps = F.linear(taps, getattr(self, f"{large}to{small}_matrix"))
            weight = taps.view(weight.size(0), weight.size(1), small, small)
        return weight

    def forward(self, x: torch.Tensor, kernel_size: int | None = None) -> torch.Tensor:
        k = self.active_kernel_size if kernel_size is None else kernel_size
        channels = x.size(1)
        filters = self.active_filter(channels, k).contiguous()
        return F.conv2d(x, filters, None, self.stride, same_padding(k), 1, channels)


class ElasticPointwiseConv(nn.Module):
    """1x1 convolution running the first ``in`` x ``active_out_channel`` weights (``DynamicConv2d``)."""

    def __init__(self, max_in_channels: int, max_out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(max_in_channels, max_out_channels, 1, bias=False)
        self.active_out_channel = max_out_channels

    def active_filter(self, out_channels: int, in_channels: int) -> torch.Tensor:
        return self.conv.weight[:out_channels, :in_channels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        filters = self.active_filter(self.active_out_channel, x.size(1)).contiguous()
        return F.conv2d(x, filters)


class ElasticBatchNorm2d(nn.Module):
    """BatchNorm over the first ``c`` channels of a wider BatchNorm (``DynamicBatchNorm2d``)."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(max_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, c = self.bn, x.size(1)
        if c == bn.num_features:
            return bn(x)
        factor = 0.0
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked += 1
            factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        return F.batch_norm(
            x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
            bn.training or not bn.track_running_stats, factor, bn.eps,
        )


class ElasticSqueezeExcite(SqueezeExcite):
    """SE on the first ``c`` channels; the hidden width follows ``c`` (``DynamicSE``)."""

    def active_weights(self, channels: int) -> tuple[torch.Tensor, ...]:
        """Reduce weight, reduce bias, expand weight, expand bias for ``channels`` channels."""
        mid = se_mid_channels(channels)
        reduce, expand = self.fc.reduce, self.fc.expand
        return (
            reduce.weight[:mid, :channels], reduce.bias[:mid],
            expand.weight[:channels, :mid], expand.bias[:channels],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rw, rb, ew, eb = self.active_weights(x.size(1))
        y = F.conv2d(global_avg_pool(x), rw.contiguous(), rb)
        y = F.conv2d(self.fc.relu(y), ew.contiguous(), eb)
        return x * self.fc.h_sigmoid(y)


def _copy_bn(target: nn.BatchNorm2d, source: nn.BatchNorm2d) -> None:
    """Copy the first ``target.num_features`` channels of ``source`` (affine and running stats)."""
    c = target.num_features
    with torch.no_grad():
        target.weight.copy_(source.weight[:c])
        target.bias.copy_(source.bias[:c])
        target.running_mean.copy_(source.running_mean[:c])
        target.running_var.copy_(source.running_var[:c])
    target.momentum, target.eps = source.momentum, source.eps


class ElasticMBConv(nn.Module):
    """Inverted bottleneck with elastic kernel size and expand ratio (``DynamicMBConvLayer``).

    Input and output widths are fixed (the OFA MobileNetV3 space has no elastic width); the middle
    width is ``make_divisible(round(in * e), 8)`` and uses the first channels of the expand conv.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_sizes: list[int], expand_ratios: list[float],
        stride: int, act: str, use_se: bool,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.act, self.use_se = stride, act, use_se
        max_mid = middle_channels(in_channels, max(expand_ratios))
        self.inverted_bottleneck = nn.Sequential(OrderedDict([
            ("conv", ElasticPointwiseConv(in_channels, max_mid)),
            ("bn", ElasticBatchNorm2d(max_mid)),
            ("act", activation(act)),
        ]))
        depth: list[tuple[str, nn.Module]] = [
            ("conv", ElasticDepthwiseConv(max_mid, kernel_sizes, stride)),
            ("bn", ElasticBatchNorm2d(max_mid)),
            ("act", activation(act)),
        ]
        if use_se:
            depth.append(("se", ElasticSqueezeExcite(max_mid)))
        self.depth_conv = nn.Sequential(OrderedDict(depth))
        self.point_linear = nn.Sequential(OrderedDict([
            ("conv", ElasticPointwiseConv(max_mid, out_channels)),
            ("bn", ElasticBatchNorm2d(out_channels)),
        ]))
        self.active_kernel_size = max(kernel_sizes)
        self.active_expand_ratio = max(expand_ratios)

    def active_middle_channels(self, in_channels: int | None = None) -> int:
        return middle_channels(self.in_channels if in_channels is None else in_channels, self.active_expand_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inverted_bottleneck.conv.active_out_channel = self.active_middle_channels(x.size(1))
        self.depth_conv.conv.active_kernel_size = self.active_kernel_size
        self.point_linear.conv.active_out_channel = self.out_channels
        return self.point_linear(self.depth_conv(self.inverted_bottleneck(x)))

    def active_static(self) -> MBConv:
        """A static ``MBConv`` of the active setting, holding copies of the active weights."""
        mid, k = self.active_middle_channels(), self.active_kernel_size
        layer = MBConv(self.in_channels, self.out_channels, k, self.stride, mid, self.act, self.use_se)
        layer.to(self.point_linear.conv.conv.weight.device)
        with torch.no_grad():
            layer.inverted_bottleneck.conv.weight.copy_(
                self.inverted_bottleneck.conv.active_filter(mid, self.in_channels))
            _copy_bn(layer.inverted_bottleneck.bn, self.inverted_bottleneck.bn.bn)
            layer.depth_conv.conv.weight.copy_(self.depth_conv.conv.active_filter(mid, k))
            _copy_bn(layer.depth_conv.bn, self.depth_conv.bn.bn)
            if self.use_se:
                se = layer.depth_conv.se.fc
                rw, rb, ew, eb = self.depth_conv.se.active_weights(mid)
                se.reduce.weight.copy_(rw)
                se.reduce.bias.copy_(rb)
                se.expand.weight.copy_(ew)
                se.expand.bias.copy_(eb)
            layer.point_linear.conv.weight.copy_(self.point_linear.conv.active_filter(self.out_channels, mid))
            _copy_bn(layer.point_linear.bn, self.point_linear.bn.bn)
        return layer
