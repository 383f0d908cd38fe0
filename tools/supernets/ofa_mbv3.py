"""The once-for-all MobileNetV3 elastic supernet (``OFAMobileNetV3`` of mit-han-lab/once-for-all).

Five stages of four elastic inverted bottlenecks after a 3x3 stem and a fixed first block; each
block chooses its kernel size (3/5/7) and expand ratio (3/4/6), each stage its depth (2/3/4, the
first d blocks). ``state_dict()`` has exactly the official names and shapes, so the published
``ofa_mbv3_d234_e346_k357_w1.0``/``w1.2`` checkpoints load with ``strict=True``.

A subnet is OFA's own arch dict (see ``ofa_arch.OFAArch``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from archsmith.tools.supernets.ofa_arch import (
    N_STAGES,
    STAGE_ACTS,
    STAGE_SE,
    STAGE_STRIDES,
    OFAArch,
    OFAMbv3Settings,
    active_blocks,
    middle_channels,
)
from archsmith.tools.supernets.ofa_dynamic import ElasticMBConv
from archsmith.tools.supernets.ofa_layers import (
    MBConv,
    MobileNetV3,
    ResidualBlock,
    classifier_layer,
    conv_layer,
    global_avg_pool,
)


def _stem(settings: OFAMbv3Settings, plain: bool = False) -> tuple[nn.Module, nn.Module]:
    """The first conv (3x3, stride 2, h-swish) and the fixed first block (depthwise 3x3, 1x1, ReLU)."""
    widths = settings.widths()
    first = MBConv(widths[0], widths[1], 3, 1, widths[0], "relu", False, expand=False)
    shortcut = not plain and widths[0] == widths[1]
    return conv_layer(3, widths[0], 3, 2, "h_swish"), ResidualBlock(first, shortcut)


def _head(settings: OFAMbv3Settings) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Final expand (1x1, BN, h-swish), feature mix (1x1 after pooling, h-swish), classifier."""
    widths = settings.widths()
    return (
        conv_layer(widths[-3], widths[-2], 1, 1, "h_swish"),
        conv_layer(widths[-2], widths[-1], 1, 1, "h_swish", use_bn=False),
        classifier_layer(widths[-1], settings.n_classes, settings.dropout_rate),
    )


def build_static_subnet(
    arch: OFAArch | Mapping[str, Any] | str, settings: OFAMbv3Settings | None = None, *, plain: bool = False
) -> MobileNetV3:
    """The static subnet of ``arch`` with fresh (PyTorch default) weights, in train mode.

    Same modules, names and shapes as an extracted subnet. ``plain`` drops the residual links
    (the form Zen-score measures).
    """
    settings = settings or OFAMbv3Settings()
    arch = OFAArch.from_json(arch)
    arch.check(settings)
    widths = settings.widths()
    first_conv, first_block = _stem(settings, plain)
    blocks: list[nn.Module] = [first_block]
    channels = widths[1]
    for stage, block in active_blocks(arch, settings):
        out = widths[2 + stage]
        stride = STAGE_STRIDES[stage] if block % settings.max_depth == 0 else 1
        mid = middle_channels(channels, arch.e[block])
        conv = MBConv(channels, out, arch.ks[block], stride, mid, STAGE_ACTS[stage], STAGE_SE[stage])
        blocks.append(ResidualBlock(conv, not plain and stride == 1 and channels == out))
        channels = out
    return MobileNetV3(first_conv, blocks, *_head(settings), input_resolution=arch.r)


class OFAMobileNetV3(nn.Module):
    """The elastic supernet. ``set_active_subnet`` picks a subnet; ``forward`` runs it;
    ``get_active_subnet`` returns it as a static ``MobileNetV3`` with copied weights."""

    def __init__(self, settings: OFAMbv3Settings | None = None) -> None:
        super().__init__()
        self.settings = s = settings or OFAMbv3Settings()
        widths = s.widths()
        self.first_conv, first_block = _stem(s)
        blocks: list[nn.Module] = [first_block]
        self.block_group_info: list[list[int]] = []
        feature_dim = widths[1]
        for stage in range(N_STAGES):
            width = widths[2 + stage]
            self.block_group_info.append([len(blocks) + i for i in range(s.max_depth)])
            for i in range(s.max_depth):
                stride = STAGE_STRIDES[stage] if i == 0 else 1
                conv = ElasticMBConv(feature_dim, width, list(s.ks_list), list(s.expand_list), stride,
                                     STAGE_ACTS[stage], STAGE_SE[stage])
                blocks.append(ResidualBlock(conv, stride == 1 and feature_dim == width))
                feature_dim = width
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer, self.feature_mix_layer, self.classifier = _head(s)
        self.runtime_depth = [len(group) for group in self.block_group_info]

    def active_block_indices(self) -> list[int]:
        """Indices into ``blocks`` that run: the first block, then the first d of each stage."""
        indices = [0]
        for group, depth in zip(self.block_group_info, self.runtime_depth):
            indices += group[:depth]
        return indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for index in self.active_block_indices():
            x = self.blocks[index](x)
        x = self.final_expand_layer(x)
        x = self.feature_mix_layer(global_avg_pool(x))
        return self.classifier(x.flatten(1))

    def set_active_subnet(self, arch: OFAArch | Mapping[str, Any] | str) -> OFAArch:
        """Make ``arch`` the active subnet (checked against the settings first)."""
        arch = OFAArch.from_json(arch)
        arch.check(self.settings)
        for block, k, e in zip(self.blocks[1:], arch.ks, arch.e):
            block.conv.active_kernel_size = k
            block.conv.active_expand_ratio = e
        self.runtime_depth = [min(len(group), d) for group, d in zip(self.block_group_info, arch.d)]
        return arch

    def set_max_net(self) -> None:
        s = self.settings
        n = s.n_blocks
        self.set_active_subnet(OFAArch((max(s.ks_list),) * n, (max(s.expand_list),) * n, (s.max_depth,) * N_STAGES))

    def get_active_subnet(self, input_resolution: int | None = None) -> MobileNetV3:
        """The active subnet as a static network with copies of its weights (same mode as self)."""
        blocks: list[nn.Module] = [copy.deepcopy(self.blocks[0])]
        for index in self.active_block_indices()[1:]:
            block = self.blocks[index]
            blocks.append(ResidualBlock(block.conv.active_static(), block.shortcut is not None))
        subnet = MobileNetV3(
            copy.deepcopy(self.first_conv), blocks, copy.deepcopy(self.final_expand_layer),
            copy.deepcopy(self.feature_mix_layer), copy.deepcopy(self.classifier), input_resolution,
        )
        return subnet.train(self.training)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load a checkpoint's tensors; the legacy ``.mobile_inverted_conv.`` prefix is renamed."""
        renamed = {key.replace(".mobile_inverted_conv.", ".conv."): value for key, value in state_dict.items()}
        return super().load_state_dict(renamed, strict=strict, assign=assign)
