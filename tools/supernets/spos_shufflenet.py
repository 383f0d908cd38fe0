"""The SPOS ShuffleNetV2 supernet (``ShuffleNetV2_OneShot`` of megvii-model/SinglePathOneShot).

A 3x3 stride-2 stem to 16 channels, then 20 choice blocks in stages of 4, 4, 8 and 4 (64, 160,
320 and 640 channels; the first block of a stage halves the resolution), a 1x1 conv to 1024
channels, global pooling, dropout and a bias-free linear classifier. Every choice block holds all
four candidate units (see ``spos_arch``); a subnet picks one per block and only that one runs.

``state_dict()`` has exactly the official names and shapes (``features.7.3.branch_main.0.weight``,
``conv_last.0.weight``, ``classifier.0.weight``; all BatchNorms without affine parameters, as in
the official supernet), so the published supernet checkpoint loads with ``strict=True``.

The static subnet (``build_static_subnet``, ``spos_subnet_with_weights``) has the names of the official
evaluation network (``features.<i>.branch_main...``) and affine BatchNorms, as the official
network trained from scratch does; a subnet cut from the supernet gets weight 1 and bias 0 there,
so it computes exactly what the supernet's path computes.

Written from the published architecture; layer order, widths, padding and the channel split are
the official code's. One deliberate difference: the global pool averages over whatever size is
left (the official ``AvgPool2d(7)`` assumes 224-pixel inputs); at 224 the two are the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from archsmith.tools.supernets.spos_arch import (
    CHOICE_KERNELS,
    N_CHOICES,
    XCEPTION,
    BlockSpec,
    SPOSArch,
    SPOSSettings,
)

ArchLike = SPOSArch | Mapping[str, Any] | Sequence[int] | str


def channel_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ShuffleNetV2's shuffle-then-split as the official code does it: even channels pass
    through, odd channels go to the main branch."""
    if x.shape[1] % 4:
        raise ValueError(f"channel split needs a multiple of 4 channels, got {x.shape[1]}")
    return x[:, 0::2], x[:, 1::2]


def _bn(channels: int, affine: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, affine=affine)


def _dw(channels: int, kernel: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel, stride, kernel // 2, groups=channels, bias=False)


def _pw(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, 1, 0, bias=False)


class ChoiceUnit(nn.Module):
    """One candidate unit of a choice block (official ``Shufflenet`` / ``Shuffle_Xception``).

    ``branch_main`` (layer indices as the official code's): for a ShuffleNetV2 unit, 1x1, BN,
    ReLU, depthwise k x k (the block's stride), BN, 1x1, BN, ReLU; for the Xception unit three
    times [depthwise 3x3, BN, 1x1, BN, ReLU], the first depthwise conv with the stride. At
    stride 2, ``branch_proj`` (depthwise with the unit's kernel, BN, 1x1, BN, ReLU) carries the
    whole input and the two outputs are concatenated; at stride 1 the input is split in two
    halves, one passing through.
    """

    def __init__(self, spec: BlockSpec, choice: int, affine: bool = False) -> None:
        super().__init__()
        if not 0 <= choice < N_CHOICES:
            raise ValueError(f"choice {choice!r} is not one of {list(range(N_CHOICES))}")
        inp, mid, out, stride = spec.inp, spec.mid, spec.main_out, spec.stride
        self.stride, self.choice = stride, choice
        kernel = CHOICE_KERNELS[choice]
        if choice == XCEPTION:
            layers: list[nn.Module] = [_dw(inp, 3, stride), _bn(inp, affine)]
            for cin, cout in ((inp, mid), (mid, mid)):
                layers += [_pw(cin, cout), _bn(cout, affine), nn.ReLU(inplace=True), _dw(cout, 3, 1), _bn(cout, affine)]
            layers += [_pw(mid, out), _bn(out, affine), nn.ReLU(inplace=True)]
        else:
            layers = [
                _pw(inp, mid), _bn(mid, affine), nn.ReLU(inplace=True),
                _dw(mid, kernel, stride), _bn(mid, affine),
                _pw(mid, out), _bn(out, affine), nn.ReLU(inplace=True),
            ]
        self.branch_main = nn.Sequential(*layers)
        if stride == 2:
            self.branch_proj = nn.Sequential(
                _dw(inp, kernel, 2), _bn(inp, affine), _pw(inp, inp), _bn(inp, affine), nn.ReLU(inplace=True),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)
        passing, main = channel_split(x)
        return torch.cat((passing, self.branch_main(main)), 1)


def _stem(settings: SPOSSettings, affine: bool) -> nn.Sequential:
    c = settings.first_channels
    return nn.Sequential(nn.Conv2d(3, c, 3, 2, 1, bias=False), _bn(c, affine), nn.ReLU(inplace=True))


def _last_conv(settings: SPOSSettings, affine: bool) -> nn.Sequential:
    cin, cout = settings.stage_out_channels[-1], settings.last_channels
    return nn.Sequential(_pw(cin, cout), _bn(cout, affine), nn.ReLU(inplace=True))


def _classifier(settings: SPOSSettings) -> nn.Sequential:
    return nn.Sequential(nn.Linear(settings.last_channels, settings.n_classes, bias=False))


class _Head(nn.Module):
    """Shared stem/head plumbing: ``forward_pre_gap`` and the pooled classifier."""

    first_conv: nn.Module
    conv_last: nn.Module
    dropout: nn.Module
    classifier: nn.Module

    def _blocks(self) -> list[nn.Module]:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward_pre_gap(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before global pooling (after ``conv_last``)."""
        x = self.first_conv(x)
        for block in self._blocks():
            x = block(x)
        return self.conv_last(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_pre_gap(x).mean((2, 3))
        return self.classifier(self.dropout(x))


class SPOSSubnet(_Head):
    """A static SPOS network: stem, one unit per choice block (``features``), ``conv_last``,
    pool, dropout, classifier. Names as the official evaluation network's."""

    def __init__(self, arch: SPOSArch, settings: SPOSSettings) -> None:
        super().__init__()
        self.arch, self.settings = arch, settings
        self.first_conv = _stem(settings, affine=True)
        self.features = nn.Sequential(*(ChoiceUnit(spec, c, affine=True)
                                        for spec, c in zip(settings.blocks(), arch.choices)))
        self.conv_last = _last_conv(settings, affine=True)
        self.dropout = nn.Dropout(settings.dropout_rate)
        self.classifier = _classifier(settings)

    def _blocks(self) -> list[nn.Module]:
        return list(self.features)


def build_static_subnet(arch: ArchLike, settings: SPOSSettings | None = None, *, plain: bool = False) -> SPOSSubnet:
    """The static subnet of ``arch`` with fresh (PyTorch default) weights, in train mode.

    ``plain`` is accepted for the search-space interface and changes nothing: the network has no
    residual additions (the half of the channels a stride-1 unit passes through is part of its
    output width, not a skip link that could be dropped).
    """
    del plain
    settings = settings or SPOSSettings()
    arch = SPOSArch.from_json(arch)
    arch.check(settings)
    return SPOSSubnet(arch, settings)


class SPOSShuffleNetV2(_Head):
    """The supernet. ``set_active_subnet`` picks a subnet; ``forward(x)`` runs it (or
    ``forward(x, arch)``, as the official supernet is called); ``get_active_subnet`` returns it
    as a static ``SPOSSubnet`` with copied weights."""

    def __init__(self, settings: SPOSSettings | None = None) -> None:
        super().__init__()
        self.settings = s = settings or SPOSSettings()
        self.first_conv = _stem(s, affine=False)
        self.features = nn.ModuleList(
            nn.ModuleList(ChoiceUnit(spec, choice) for choice in range(N_CHOICES)) for spec in s.blocks()
        )
        self.conv_last = _last_conv(s, affine=False)
        self.dropout = nn.Dropout(s.dropout_rate)
        self.classifier = _classifier(s)
        self.active_arch = SPOSArch((0,) * s.n_blocks)

    def _blocks(self) -> list[nn.Module]:
        return [units[c] for units, c in zip(self.features, self.active_arch.choices)]

    def set_active_subnet(self, arch: ArchLike) -> SPOSArch:
        """Make ``arch`` the active subnet (checked against the settings first)."""
        arch = SPOSArch.from_json(arch)
        arch.check(self.settings)
        self.active_arch = arch
        return arch

    def forward(self, x: torch.Tensor, arch: ArchLike | None = None) -> torch.Tensor:
        if arch is not None:
            self.set_active_subnet(arch)
        return super().forward(x)

    def get_active_subnet(self) -> SPOSSubnet:
        """The active subnet as a static network with copies of its weights (same mode as self)."""
        return spos_subnet_with_weights(self, self.active_arch)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load a checkpoint's tensors; a DataParallel ``module.`` prefix is removed."""
        return super().load_state_dict(strip_module_prefix(state_dict), strict=strict, assign=assign)


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict without the ``module.`` prefix DataParallel adds (when every key has it)."""
    keys = list(state_dict)
    if keys and all(key.startswith("module.") for key in keys):
        return {key[len("module."):]: value for key, value in state_dict.items()}
    return dict(state_dict)


def _copy_into(static: nn.Module, shared: nn.Module) -> None:
    """Copy ``shared``'s convs, linears and BN statistics into ``static`` (same layer layout);
    an affine BN of ``static`` facing a non-affine one gets weight 1 and bias 0."""
    pairs = zip(static.modules(), shared.modules(), strict=True)
    with torch.no_grad():
        for mine, theirs in pairs:
            if type(mine) is not type(theirs):
                raise TypeError(f"layer mismatch: {type(mine).__name__} vs {type(theirs).__name__}")
            if isinstance(mine, nn.Conv2d | nn.Linear):
                mine.weight.copy_(theirs.weight)
            elif isinstance(mine, nn.BatchNorm2d):
                mine.running_mean.copy_(theirs.running_mean)
                mine.running_var.copy_(theirs.running_var)
                mine.num_batches_tracked.copy_(theirs.num_batches_tracked)
                mine.eps, mine.momentum = theirs.eps, theirs.momentum
                if mine.affine:
                    mine.weight.copy_(theirs.weight if theirs.affine else torch.ones_like(mine.weight))
                    mine.bias.copy_(theirs.bias if theirs.affine else torch.zeros_like(mine.bias))


def spos_subnet_with_weights(supernet: SPOSShuffleNetV2, arch: ArchLike) -> SPOSSubnet:
    """The static subnet of ``arch`` with the weights the supernet gives it: each block's chosen
    unit copied (convs and BN statistics), stem, ``conv_last`` and classifier too. Same mode as
    the supernet."""
    arch = SPOSArch.from_json(arch)
    arch.check(supernet.settings)
    subnet = SPOSSubnet(arch, supernet.settings)
    _copy_into(subnet.first_conv, supernet.first_conv)
    for unit, units, choice in zip(subnet.features, supernet.features, arch.choices):
        _copy_into(unit, units[choice])
    _copy_into(subnet.conv_last, supernet.conv_last)
    _copy_into(subnet.classifier, supernet.classifier)
    return subnet.train(supernet.training)


build_spos_subnet = build_static_subnet  # the package-level name (``build_static_subnet`` there is OFA's)
