"""NAS_det (PhaseNAS, section 2.5): Zen-score's idea on the multi-scale features a detector's head reads.

Per repeat, with numbers drawn from a ``torch.Generator`` seeded with ``seed`` (the global RNG is
left alone), in this order: Zen-NAS's Gaussian initialisation of every Conv2d/Linear weight in
the backbone and neck (N(0, 1), biases 0; BatchNorm weight 1, bias 0), then x1 and x2 ~ N(0, 1)
of shape [B, 3, S, S]. With x_mix = x1 + gamma * x2 the model runs in train mode (BatchNorm
normalises with batch statistics) on x1 and on x_mix, and the feature maps f^(l) entering the
Detect layer (P3, P4, P5) are captured by a hook; the head itself is skipped.

- Delta = sum over the scales l of mean over the batch of sum over (C, H, W) of |f1 - f_mix|:
  the paper's L1 norm (Eq. 3) per image, i.e. Zen-score's convention (its batch mean of a
  per-image sum); the batch size only shifts every score by the same log B otherwise.
- BN = sum over the BatchNorm2d layers of the backbone and neck of log(sqrt(mean over channels of
  running_var) + eps), read after both passes (Zen-score's reduction, the paper's eps).
- score = log(Delta + eps) + BN; the result is the mean over ``repeats`` (used for ranking) and
  the population standard deviation (Eq. 6).

Unlike Zen-NAS's script, the BatchNorm running statistics are reset at the start of every repeat,
so repeats are independent draws and the score does not depend on what the model ran before.
The layers keep ultralytics' BatchNorm settings (momentum 0.03, eps 1e-3).
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from archsmith.tools.results import ScoreResult
from archsmith.tools.zen_score import gaussian_init_

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ["NAS_DET_CPU_SEARCH", "NAS_DET_PAPER", "NasDetPreset", "detect_inputs", "nas_det_score"]

EPS = 1e-8


@dataclass(frozen=True)
class NasDetPreset:
    """Named NAS_det settings; pass them on with ``nas_det_score(model, **preset.kwargs())``."""

    input_size: int
    batch_size: int
    repeats: int
    gamma: float = 1e-2

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


NAS_DET_CPU_SEARCH = NasDetPreset(input_size=256, batch_size=4, repeats=2)  # a few s per YOLOv8n on 1 CPU core
NAS_DET_PAPER = NasDetPreset(input_size=640, batch_size=16, repeats=8)  # detector resolution, for a GPU


class _FeaturesCaptured(Exception):
    """Raised by the hook on the detection layer: the features are in, skip the head."""


def detect_layer(model: nn.Module) -> nn.Module:
    """The layer that turns the feature pyramid into predictions (ultralytics: ``model.model[-1]``)."""
    layers = getattr(model, "model", None)
    if layers is not None and len(layers) and "Detect" in type(layers[-1]).__name__:
        return layers[-1]
    raise ValueError(f"{type(model).__name__} has no Detect layer (model.model[-1]) whose inputs to score")


def _trunk_modules(model: nn.Module, head: nn.Module) -> list[nn.Module]:
    """Modules of the backbone and neck: everything except the head's own submodules."""
    inside_head = {id(m) for m in head.modules()}
    return [m for m in model.modules() if id(m) not in inside_head]


def detect_inputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The feature maps the Detect layer receives for ``x`` (the head does not run)."""
    head = detect_layer(model)
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        features = inputs[0]
        captured.extend(features if isinstance(features, (list, tuple)) else [features])
        raise _FeaturesCaptured

    handle = head.register_forward_pre_hook(hook)
    try:
        model(x)
    except _FeaturesCaptured:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the forward pass did not reach the Detect layer")
    return captured


def _init_trunk(modules: list[nn.Module], generator: torch.Generator) -> None:
    """Zen's Gaussian init of the trunk, with fresh BN statistics: repeats are independent."""
    from torch import nn

    gaussian_init_(modules, generator)
    for module in modules:
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()


def _one_repeat(
    model: nn.Module, trunk: list[nn.Module], generator: torch.Generator, shape: list[int], gamma: float, device: Any
) -> tuple[float, float]:
    import torch
    from torch import nn

    _init_trunk(trunk, generator)
    x1 = torch.randn(shape, generator=generator, device=device)
    x2 = torch.randn(shape, generator=generator, device=device)
    f1 = detect_inputs(model, x1)
    f_mix = detect_inputs(model, x1 + gamma * x2)
    delta = sum(torch.sum(torch.abs(a - b).flatten(1), dim=1).mean() for a, b in zip(f1, f_mix, strict=True))
    bn = 0.0
    for module in trunk:
        if isinstance(module, nn.BatchNorm2d) and module.running_var is not None:
            bn += float(torch.log(torch.sqrt(torch.mean(module.running_var)) + EPS))
    return float(torch.log(delta + EPS)), bn


def nas_det_score(
    model: nn.Module,
    *,
    input_size: int = NAS_DET_CPU_SEARCH.input_size,
    batch_size: int = NAS_DET_CPU_SEARCH.batch_size,
    gamma: float = 1e-2,
    repeats: int = NAS_DET_CPU_SEARCH.repeats,
    seed: int = 0,
    device: str = "cpu",
) -> ScoreResult:
    """NAS_det of a detection model with a Detect layer at ``model.model[-1]`` (ultralytics).

    Overwrites the model's backbone/neck weights and BatchNorm statistics. Never raises for a
    faulty model: the failure comes back as ``ScoreResult(ok=False, error_type=...)``.
    ``report`` holds the mean of the two terms (``log_delta``, ``bn``).
    """
    settings = {"input_size": input_size, "batch_size": batch_size, "gamma": gamma, "repeats": repeats,
                "seed": seed, "device": str(device)}  # fmt: skip
    start = time.perf_counter()
    parts: list[tuple[float, float]] = []
    try:
        import torch

        torch_device = torch.device(device)
        model = model.to(torch_device)
        model.train()
        trunk = _trunk_modules(model, detect_layer(model))
        generator = torch.Generator(device=torch_device).manual_seed(seed)
        shape = [batch_size, 3, input_size, input_size]
        with torch.no_grad():
            for _ in range(repeats):
                parts.append(_one_repeat(model, trunk, generator, shape, gamma, torch_device))
    except Exception as exc:  # noqa: BLE001 - a faulty candidate is a result
        name = type(exc).__name__
        return ScoreResult(
            ok=False,
            name="nas_det",
            error_type="MemoryLimit" if name in ("OutOfMemoryError", "MemoryError") else name,
            error_message=str(exc) or name,
            traceback=traceback.format_exc(),
            settings=settings,
            duration_s=time.perf_counter() - start,
        )
    duration = time.perf_counter() - start
    scores = [log_delta + bn for log_delta, bn in parts]
    if not scores or not all(math.isfinite(s) for s in scores):
        return ScoreResult(ok=False, name="nas_det", error_type="NonFinite",
                           error_message=f"NAS_det is not finite: {scores}", settings=settings, duration_s=duration)
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    report = {"log_delta": sum(p[0] for p in parts) / len(parts), "bn": sum(p[1] for p in parts) / len(parts)}
    return ScoreResult(ok=True, name="nas_det", score=mean, std=std, repeats=len(scores), settings=settings,
                       report=report, duration_s=duration)
