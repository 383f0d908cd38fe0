"""Extract a static subnet with inherited weights from a supernet checkpoint."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from archsmith.tools.supernets.ofa_layers import MobileNetV3
from archsmith.tools.supernets.ofa_mbv3 import OFAArch, OFAMbv3Settings, OFAMobileNetV3

SpaceLike = str | OFAMbv3Settings | Mapping[str, Any] | Any


def supernet_settings(space: SpaceLike) -> OFAMbv3Settings:
    """The supernet settings a ``space`` argument stands for.

    ``space`` is one of: an ``OFAMbv3Settings``; a name, ``"ofa_mbv3"`` (width 1.0),
    ``"ofa_mbv3_w1.2"`` or an official checkpoint name such as ``"ofa_mbv3_d234_e346_k357_w1.2"``;
    a settings mapping (``{"width_mult": 1.2, "n_classes": 1000}``); or a space object with a
    ``supernet_settings`` attribute (the ``ofa_mbv3`` search space).
    """
    if isinstance(space, OFAMbv3Settings):
        return space
    if isinstance(space, str):
        match = re.fullmatch(r"ofa_mbv3(?:_d234_e346_k357)?(?:_w(\d+(?:\.\d+)?))?", space)
        if match is None:
            raise ValueError(f"unknown supernet {space!r} (expected 'ofa_mbv3', 'ofa_mbv3_w1.2', ...)")
        return OFAMbv3Settings(width_mult=float(match.group(1) or 1.0))
    if isinstance(space, Mapping):
        known = {f.name for f in dataclasses.fields(OFAMbv3Settings)}
        unknown = sorted(set(space) - known)
        if unknown:
            raise ValueError(f"unknown supernet settings {unknown} (known: {sorted(known)})")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in space.items()}
        return OFAMbv3Settings(**values)
    settings = getattr(space, "supernet_settings", None)
    if isinstance(settings, OFAMbv3Settings):
        return settings
    raise TypeError(f"cannot tell the supernet from {type(space).__name__}")


def load_checkpoint(checkpoint: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file (``{"state_dict": ...}`` or a bare state dict), or of a
    mapping already in memory."""
    data = checkpoint if isinstance(checkpoint, Mapping) else torch.load(
        Path(checkpoint), map_location="cpu", weights_only=True)
    if "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    return dict(data)


def load_supernet(space: SpaceLike, checkpoint: str | Path | Mapping[str, Any]) -> OFAMobileNetV3:
    """The supernet of ``space`` with the checkpoint loaded strictly, in eval mode.

    The number of classes follows the checkpoint's classifier when it differs from the settings'.
    """
    settings = supernet_settings(space)
    state = load_checkpoint(checkpoint)
    head = state.get("classifier.linear.weight")
    if head is not None and head.shape[0] != settings.n_classes:
        settings = dataclasses.replace(settings, n_classes=int(head.shape[0]))
    supernet = OFAMobileNetV3(settings)
    supernet.load_state_dict(state, strict=True)
    return supernet.eval()


def extract_subnet(
    space: SpaceLike,
    arch_json: Mapping[str, Any] | str | OFAArch,
    checkpoint_path: str | Path | Mapping[str, Any],
) -> MobileNetV3:
    """A static, eval-mode subnet of ``arch_json`` with the weights it inherits from the checkpoint.

    - ``space``: which supernet (see ``supernet_settings``: a name such as ``"ofa_mbv3_w1.2"``,
      an ``OFAMbv3Settings``, a settings mapping, or the ``ofa_mbv3`` space object).
    - ``arch_json``: OFA's arch dict ``{"ks": [20], "e": [20], "d": [5], "r": 224}``, its JSON
      text, or an ``OFAArch``.
    - ``checkpoint_path``: a ``torch.save`` file holding ``{"state_dict": ...}`` or a bare state
      dict (a state dict mapping is accepted too).

    The result equals the official ``get_active_subnet``: kernels cut from the centre through the
    learned transform matrices, the first channels of every elastic layer, SE and BN copied for
    them, the first d blocks of each stage. ``r`` does not touch the weights; it is kept as the
    subnet's ``input_resolution``.
    """
    arch = OFAArch.from_json(arch_json)
    supernet = load_supernet(space, checkpoint_path)
    supernet.set_active_subnet(arch)
    return supernet.get_active_subnet(input_resolution=arch.r).eval()
