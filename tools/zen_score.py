"""Zen-score (Lin et al., Zen-NAS, ICCV 2021), computed as ZeroShotProxy/compute_zen_score.py does.

Per repeat: every Conv2d/Linear weight ~ N(0, 1) (biases 0), BatchNorm weight 1 and bias 0;
inputs x, x2 ~ N(0, 1); ``Delta`` = batch mean of sum |f(x) - f(x + gamma * x2)| over the feature
map before global average pooling; the score is ``log Delta`` plus, over every BatchNorm2d,
``log sqrt(mean(running_var))`` read after both forward passes. The model runs in train mode and
its running statistics are not reset between repeats (momentum 0.1), as in the original.

Random numbers come from a ``torch.Generator`` seeded with ``seed`` (the global RNG is left
alone), drawn in the original's order: per repeat, the weights in ``model.modules()`` order, then
x, then x2. The original draws from the global RNG after ``torch.manual_seed(seed)``; with a
model whose modules come in Zen-NAS's order both draw the same numbers, so the scores agree to
float rounding (benchmarks/zen_reference.py, tests/data/zen_reference.json).

Score the plain form of a template network (``space.build(text, n, plain=True)``), as Zen-NAS
does (``no_reslink=True``).
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from archsmith.tools.results import ScoreResult

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


@dataclass(frozen=True)
class ZenPreset:
    """Named Zen-score settings; pass them on with ``zen_score(model, **preset.kwargs())``."""

    batch_size: int
    repeats: int
    mixup_gamma: float = 1e-2

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


ZEN_SEARCH = ZenPreset(batch_size=64, repeats=1)  # Zen-NAS evolution_search.py
ZEN_STANDALONE = ZenPreset(batch_size=16, repeats=32)  # compute_zen_score.py's command-line defaults


def gaussian_init_(model: nn.Module | Iterable[nn.Module], generator: torch.Generator) -> None:
    """Zen-NAS's ``network_weight_gaussian_init``, drawing from ``generator``; ``model`` may also be
    the modules to initialise (NAS_det initialises the trunk before the detection head only)."""
    import torch
    from torch import nn

    modules = model.modules() if isinstance(model, nn.Module) else model
    with torch.no_grad():
        for module in modules:
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.weight, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def _one_repeat(model: nn.Module, generator: torch.Generator, shape: list[int], gamma: float, device: Any) -> float:
    import torch
    from torch import nn

    gaussian_init_(model, generator)
    x = torch.randn(shape, generator=generator, device=device)
    x2 = torch.randn(shape, generator=generator, device=device)
    mixed = x + gamma * x2
    output = model.forward_pre_gap(x)
    mixed_output = model.forward_pre_gap(mixed)
    delta = torch.mean(torch.sum(torch.abs(output - mixed_output).flatten(1), dim=1))
    log_bn_scaling = 0.0
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            log_bn_scaling += torch.log(torch.sqrt(torch.mean(module.running_var)))
    return float(torch.log(delta) + log_bn_scaling)


def zen_score(
    model: nn.Module,
    *,
    resolution: int = 32,
    batch_size: int = 64,
    repeats: int = 1,
    mixup_gamma: float = 1e-2,
    seed: int = 0,
    device: str = "cpu",
) -> ScoreResult:
    """Zen-score of ``model`` (which must provide ``forward_pre_gap``); mean and std over repeats.

    Overwrites the model's weights and BatchNorm statistics. Never raises for a faulty model: the
    failure comes back as ``ScoreResult(ok=False, error_type=...)``.
    """
    settings = {
        "resolution": resolution,
        "batch_size": batch_size,
        "repeats": repeats,
        "mixup_gamma": mixup_gamma,
        "seed": seed,
        "device": str(device),
    }
    start = time.perf_counter()
    scores: list[float] = []
    try:
        import torch

        torch_device = torch.device(device)
        model = model.to(torch_device)
        model.train()
        generator = torch.Generator(device=torch_device).manual_seed(seed)
        shape = [batch_size, 3, resolution, resolution]
        with torch.no_grad():
            for _ in range(repeats):
                scores.append(_one_repeat(model, generator, shape, mixup_gamma, torch_device))
    except Exception as exc:  # noqa: BLE001 - a faulty candidate is a result
        name = type(exc).__name__
        return ScoreResult(
            ok=False,
            name="zen",
            error_type="MemoryLimit" if name in ("OutOfMemoryError", "MemoryError") else name,
            error_message=str(exc),
            traceback=traceback.format_exc(),
            settings=settings,
            duration_s=time.perf_counter() - start,
        )
    duration = time.perf_counter() - start
    if not scores or not all(math.isfinite(s) for s in scores):
        return ScoreResult(
            ok=False,
            name="zen",
            error_type="NonFinite",
            error_message=f"Zen-score is not finite: {scores}",
            settings=settings,
            duration_s=duration,
        )
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))  # numpy's np.std
    return ScoreResult(
        ok=True, name="zen", score=mean, std=std, repeats=len(scores), settings=settings, duration_s=duration
    )
