"""Batch augmentation on the device: random crop with zero padding, horizontal flip, normalisation.

Works on whole uint8 batches [B, C, H, W] with per-sample random offsets and flip masks drawn
from an explicit ``torch.Generator`` on the batch's device: one padded copy and one ``gather``
per batch, no Python loop per image. Padding is with black pixels before normalisation, as
torchvision's ``RandomCrop(size, padding)`` followed by ``Normalize`` does (NAS-Bench-201).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Normalizer", "crop_flip", "default_crop_padding"]


def default_crop_padding(height: int) -> int:
    """NAS-Bench-201's crop padding: 2 for 16x16 inputs (ImageNet16-120), else 4."""
    return 2 if height <= 16 else 4


def crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of ``x`` padded by ``padding`` zeros, and a horizontal flip with p=0.5.

    ``x`` is [B, C, H, W] of any dtype; the result has its shape, dtype and device. The offsets
    are drawn first, then the flip mask, both from ``generator`` (on ``x``'s device).
    """
    import torch
    import torch.nn.functional as F

    if padding == 0 and not flip:
        return x
    batch, channels, height, width = x.shape
    device = x.device
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    padded_width = width + 2 * padding
    top = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator, device=device)
    rows = top + torch.arange(height, device=device)  # [B, H]
    cols = torch.arange(width, device=device).expand(batch, width)  # [B, W]
    if flip:
        mirrored = torch.rand(batch, 1, generator=generator, device=device) < 0.5
        cols = torch.where(mirrored, width - 1 - cols, cols)
    cols = left + cols
    index = (rows[:, :, None] * padded_width + cols[:, None, :]).reshape(batch, 1, height * width)
    flat = padded.reshape(batch, channels, -1)
    return flat.gather(2, index.expand(batch, channels, height * width)).view(batch, channels, height, width)


class Normalizer:
    """uint8 images -> float32 ``(x / 255 - mean) / std`` per channel, on one device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str) -> None:
        import torch

        self.shift = (torch.tensor(mean, dtype=torch.float32, device=device) * 255.0).view(1, -1, 1, 1)
        self.scale = (1.0 / (torch.tensor(std, dtype=torch.float32, device=device) * 255.0)).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor, memory_format: torch.memory_format | None = None) -> torch.Tensor:
        """Float images in ``memory_format`` (channels_last: converted while still uint8)."""
        import torch

        if memory_format is not None:
            x = x.contiguous(memory_format=memory_format)
        return x.to(torch.float32).sub_(self.shift).mul_(self.scale)
