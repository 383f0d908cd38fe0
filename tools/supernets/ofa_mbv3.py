"""The once-for-all MobileNetV3 elastic supernet (``OFAMobileNetV3`` of mit-han-lab/once-for-all).

Five stages of four elastic inverted bottlenecks after a 3x3 stem and a fixed first block; each
block chooses its kernel size (3/5/7) and expand ratio (3/4/6), each stage its depth (2/3/4, the
first d blocks). ``state_dict()`` has exactly the official names and shapes, so the published
``ofa_mbv3_d234_e346_k357_w1.0``/``w1.2`` checkpoints load with ``strict=True``.

A subnet is OFA's own arch dict, ``{"ks": [20 ints], "e": [20 ints], "d": [5 ints], "r": int}``;
``OFAArch`` is its typed form.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from archsmith.tools.supernets.ofa_dynamic import ElasticMBConv
from archsmith.tools.supernets.ofa_layers import (
    MBConv,
    MobileNetV3,
    ResidualBlock,
    classifier_layer,
    conv_layer,
    global_avg_pool,
    make_divisible,
)

BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)  # stem, first block, 5 stages, expand, mix
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_ACTS = ("relu", "relu", "h_swish", "h_swish", "h_swish")
STAGE_SE = (False, True, False, True, True)
N_STAGES = 5


@dataclass(frozen=True)
class OFAMbv3Settings:
    """Construction settings of the supernet (the published ones are the defaults, width 1.0 or 1.2)."""

    width_mult: float = 1.0
    n_classes: int = 1000
    ks_list: tuple[int, ...] = (3, 5, 7)
    expand_list: tuple[int, ...] = (3, 4, 6)
    depth_list: tuple[int, ...] = (2, 3, 4)
    dropout_rate: float = 0.1

    @property
    def max_depth(self) -> int:
        return max(self.depth_list)

    @property
    def n_blocks(self) -> int:
        """Elastic blocks in all (``5 * max depth``; the fixed first block is not counted)."""
        return N_STAGES * self.max_depth

    def widths(self) -> list[int]:
        """Channel widths: stem, first block, the 5 stages, final expand, feature mix."""
        return [make_divisible(w * self.width_mult) for w in BASE_WIDTHS]

    @property
    def checkpoint_name(self) -> str:
        d, e, k = ("".join(str(v) for v in sorted(x)) for x in (self.depth_list, self.expand_list, self.ks_list))
        return f"ofa_mbv3_d{d}_e{e}_k{k}_w{self.width_mult}"


@dataclass(frozen=True)
class OFAArch:
    """One subnet: per-block kernel sizes and expand ratios, per-stage depths, input resolution."""

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int = 224

    @classmethod
    def from_json(cls, arch: Mapping[str, Any] | str | OFAArch) -> OFAArch:
        """From the arch dict (or its JSON text). Shapes are checked by ``check``, not here."""
        if isinstance(arch, OFAArch):
            return arch
        data = json.loads(arch) if isinstance(arch, str) else dict(arch)
        missing = [key for key in ("ks", "e", "d") if key not in data]
        if missing:
            raise ValueError(f"arch is missing {', '.join(missing)} (expected keys ks, e, d, r)")
        return cls(tuple(data["ks"]), tuple(data["e"]), tuple(data["d"]), int(data.get("r", 224)))

    def to_json(self) -> dict[str, Any]:
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r}

    def check(self, settings: OFAMbv3Settings) -> None:
        """Raise ``ValueError`` naming the field and position of the first bad entry."""
        lengths = {"ks": settings.n_blocks, "e": settings.n_blocks, "d": N_STAGES}
        allowed = {"ks": settings.ks_list, "e": settings.expand_list, "d": settings.depth_list}
        for name, length in lengths.items():
            values = getattr(self, name)
            if len(values) != length:
                raise ValueError(f"arch field {name!r} has {len(values)} entries, expected {length}")
            for i, value in enumerate(values):
                if value not in allowed[name]:
                    raise ValueError(f"arch field {name!r}[{i}] = {value!r} is not one of {list(allowed[name])}")


class OFAMobileNetV3(nn.Module):
    """The elastic supernet. ``set_active_subnet`` picks a subnet; ``forward`` runs it;
    ``get_active_subnet`` returns it as a static ``MobileNetV3`` with copied weights."""

    def __init__(self, settings: OFAMbv3Settings | None = None) -> None:
        super().__init__()
        self.settings = s = settings or OFAMbv3Settings()
        widths = s.widths()
        self.first_conv = conv_layer(3, widths[0], 3, 2, "h_swish")
        first = MBConv(widths[0], widths[1], 3, 1, widths[0], "relu", False, expand=False)
        blocks: list[nn.Module] = [ResidualBlock(first, widths[0] == widths[1])]
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
        self.final_expand_layer = conv_layer(feature_dim, widths[-2], 1, 1, "h_swish")
        self.feature_mix_layer = conv_layer(widths[-2], widths[-1], 1, 1, "h_swish", use_bn=False)
        self.classifier = classifier_layer(widths[-1], s.n_classes, s.dropout_rate)
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
