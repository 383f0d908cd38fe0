"""Extract a static subnet with inherited weights from a supernet checkpoint.

Two supernet families: once-for-all MobileNetV3 (``ofa_mbv3``) and SPOS ShuffleNetV2
(``spos_shufflenet``). Each is one ``SupernetFamily`` entry in ``FAMILIES``: its settings type,
the names that stand for it, its arch type, how to build the supernet and how to cut a subnet
out of it. A new family is a new entry, not a new branch in the functions below.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from archsmith.tools.supernets.ofa_mbv3 import OFAArch, OFAMbv3Settings, OFAMobileNetV3
from archsmith.tools.supernets.spos_arch import SPOSArch, SPOSSettings
from archsmith.tools.supernets.spos_shufflenet import (
    SPOSShuffleNetV2,
    spos_subnet_with_weights,
    strip_module_prefix,
)

Settings = OFAMbv3Settings | SPOSSettings
SpaceLike = str | Settings | Mapping[str, Any] | Any


@dataclasses.dataclass(frozen=True)
class SupernetFamily:
    """What ``extract_subnet`` needs to know about one kind of supernet."""

    name: str
    settings_type: type
    from_name: Callable[[str], Any]  # the settings a name stands for, None when not this family's
    arch_from_json: Callable[[Any], Any]
    supernet: Callable[[Any], nn.Module]
    head_key: str  # the classifier weight in a checkpoint: its rows are the classes
    extract: Callable[[nn.Module, Any], nn.Module]  # (loaded supernet, arch) -> static subnet


def _ofa_from_name(name: str) -> OFAMbv3Settings | None:
    match = re.fullmatch(r"ofa_mbv3(?:_d234_e346_k357)?(?:_w(\d+(?:\.\d+)?))?", name)
    return None if match is None else OFAMbv3Settings(width_mult=float(match.group(1) or 1.0))


def _ofa_extract(supernet: OFAMobileNetV3, arch: OFAArch) -> nn.Module:
    supernet.set_active_subnet(arch)
    return supernet.get_active_subnet(input_resolution=arch.r)


FAMILIES = (
    SupernetFamily("ofa_mbv3", OFAMbv3Settings, _ofa_from_name, OFAArch.from_json, OFAMobileNetV3,
                   "classifier.linear.weight", _ofa_extract),
    SupernetFamily("spos_shufflenet", SPOSSettings, lambda n: SPOSSettings() if n == "spos_shufflenet" else None,
                   SPOSArch.from_json, SPOSShuffleNetV2, "classifier.0.weight", spos_subnet_with_weights),
)


def _family(settings: Settings) -> SupernetFamily:
    return next(family for family in FAMILIES if isinstance(settings, family.settings_type))


def _from_mapping(space: Mapping[str, Any]) -> Settings:
    """Settings from a mapping of their fields (the first family whose fields cover all keys)."""
    for family in FAMILIES:
        known = {f.name for f in dataclasses.fields(family.settings_type)}
        if set(space) <= known:
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in space.items()}
            return family.settings_type(**values)
    known = {f.name for f in dataclasses.fields(FAMILIES[0].settings_type)}
    unknown = sorted(set(space) - known)
    raise ValueError(f"unknown supernet settings {unknown} (known: {sorted(known)}; or the fields of "
                     f"{', '.join(f.settings_type.__name__ for f in FAMILIES[1:])})")


def supernet_settings(space: SpaceLike) -> Settings:
    """The supernet settings a ``space`` argument stands for.

    ``space`` is one of: an ``OFAMbv3Settings`` or ``SPOSSettings``; a name, ``"ofa_mbv3"``
    (width 1.0), ``"ofa_mbv3_w1.2"``, an official OFA checkpoint name such as
    ``"ofa_mbv3_d234_e346_k357_w1.2"``, or ``"spos_shufflenet"``; a settings mapping
    (``{"width_mult": 1.2, "n_classes": 1000}``: the first family whose fields cover its keys,
    OFA first); or a space object with a ``supernet_settings`` attribute (the ``ofa_mbv3`` and
    ``spos_shufflenet`` search spaces).
    """
    types = tuple(family.settings_type for family in FAMILIES)
    if isinstance(space, types):
        return space
    if isinstance(space, str):
        for family in FAMILIES:
            if (settings := family.from_name(space)) is not None:
                return settings
        raise ValueError(f"unknown supernet {space!r} (expected 'ofa_mbv3', 'ofa_mbv3_w1.2', 'spos_shufflenet', ...)")
    if isinstance(space, Mapping):
        return _from_mapping(space)
    settings = getattr(space, "supernet_settings", None)
    if isinstance(settings, types):
        return settings
    raise TypeError(f"cannot tell the supernet from {type(space).__name__}")


def load_checkpoint(checkpoint: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file (``{"state_dict": ...}`` or a bare state dict), or of a
    mapping already in memory; a DataParallel ``module.`` prefix on every key is removed."""
    data = checkpoint if isinstance(checkpoint, Mapping) else torch.load(
        Path(checkpoint), map_location="cpu", weights_only=True)
    if "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    return strip_module_prefix(data)


def load_supernet(space: SpaceLike, checkpoint: str | Path | Mapping[str, Any]) -> nn.Module:
    """The supernet of ``space`` with the checkpoint loaded strictly, in eval mode.

    The number of classes follows the checkpoint's classifier when it differs from the settings'.
    """
    settings = supernet_settings(space)
    family = _family(settings)
    state = load_checkpoint(checkpoint)
    head = state.get(family.head_key)
    if head is not None and head.shape[0] != settings.n_classes:
        settings = dataclasses.replace(settings, n_classes=int(head.shape[0]))
    supernet = family.supernet(settings)
    supernet.load_state_dict(state, strict=True)
    return supernet.eval()


def extract_subnet(
    space: SpaceLike,
    arch_json: Mapping[str, Any] | str | OFAArch | SPOSArch | list[int],
    checkpoint_path: str | Path | Mapping[str, Any],
) -> nn.Module:
    """A static, eval-mode subnet of ``arch_json`` with the weights it inherits from the checkpoint.

    - ``space``: which supernet (see ``supernet_settings``: a name such as ``"ofa_mbv3_w1.2"`` or
      ``"spos_shufflenet"``, a settings object or mapping, or the search space object).
    - ``arch_json``: for OFA, its arch dict ``{"ks": [20], "e": [20], "d": [5], "r": 224}``; for
      SPOS, ``{"choices": [20 ints]}`` or the bare list; their JSON text, or an ``OFAArch`` /
      ``SPOSArch``.
    - ``checkpoint_path``: a ``torch.save`` file holding ``{"state_dict": ...}`` or a bare state
      dict (a state dict mapping is accepted too; a ``module.`` prefix is removed).

    OFA: the result equals the official ``get_active_subnet``: kernels cut from the centre through
    the learned transform matrices, the first channels of every elastic layer, SE and BN copied
    for them, the first d blocks of each stage. ``r`` does not touch the weights; it is kept as
    the subnet's ``input_resolution``. SPOS: the chosen unit of every choice block, copied with
    its BN statistics (an ``SPOSSubnet``, the official evaluation network's names).
    """
    return subnet_of(load_supernet(space, checkpoint_path), space, arch_json)


def family_of(space: SpaceLike) -> SupernetFamily:
    """The supernet family (OFA, SPOS) a ``space`` argument stands for."""
    return _family(supernet_settings(space))


def subnet_of(supernet: nn.Module, space: SpaceLike, arch_json: Any) -> nn.Module:
    """The static, eval-mode subnet of ``arch_json`` cut out of an already loaded ``supernet``
    (copied weights: scoring many subnets loads the checkpoint once)."""
    family = family_of(space)
    return family.extract(supernet, family.arch_from_json(arch_json)).eval()


def supernet_classes(supernet: nn.Module, space: SpaceLike) -> int:
    """The number of classes of a supernet's classifier."""
    return int(supernet.state_dict()[family_of(space).head_key].shape[0])
