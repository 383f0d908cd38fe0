"""Training a weight-sharing supernet, for users without a published one.

Two sampling rules (``SupernetTrainingConfig.sampling``):

- ``sandwich`` (BigNAS / OFA's later recipe): every step trains the largest subnet on the labels,
  then the smallest and ``random_subnets`` random ones; with ``distill`` these learn the largest
  subnet's softened predictions (in-place distillation), so no separate teacher is needed. The
  gradients of all of them are summed before one optimiser step.
- ``uniform`` (SPOS): one subnet drawn uniformly per step, trained on the labels.

The checkpoint is the official format, ``{"state_dict": ...}``, so it loads wherever a published
supernet does; beside it, under ``"archsmith"``, what a resume needs: the space and its settings,
the epochs done, the optimiser and schedule, the random state and the per-epoch history. It is
written atomically after every ``checkpoint_every`` epochs and at the end; a later call with the
same checkpoint path goes on from the last epoch saved.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from archsmith.tools.supernets.ofa_arch import N_STAGES, OFAArch, OFAMbv3Settings
from archsmith.tools.training_augment import Normalizer, crop_flip, default_crop_padding

__all__ = ["CheckpointMismatch", "EpochStats", "SupernetTrainingResult", "train_supernet"]

FORMAT_VERSION = 1


class CheckpointMismatch(ValueError):
    """An existing checkpoint that this training cannot continue (another space, settings, or not ours)."""


@dataclass
class EpochStats:
    """One epoch: the mean loss and training accuracy of the subnet trained on the labels (the
    largest one under the sandwich rule, the sampled one under uniform sampling)."""

    epoch: int
    loss: float
    train_acc: float
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return {"epoch": self.epoch, "loss": self.loss, "train_acc": self.train_acc, "seconds": self.seconds}


@dataclass
class SupernetTrainingResult:
    checkpoint: Path
    epochs_done: int
    resumed_from: int
    history: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0


def extreme_archs(settings: OFAMbv3Settings, resolution: int) -> tuple[OFAArch, OFAArch]:
    """The largest and the smallest subnet of an OFA supernet."""
    n = settings.n_blocks
    largest = OFAArch((max(settings.ks_list),) * n, (max(settings.expand_list),) * n,
                      (max(settings.depth_list),) * N_STAGES, resolution)
    smallest = OFAArch((min(settings.ks_list),) * n, (min(settings.expand_list),) * n,
                       (min(settings.depth_list),) * N_STAGES, resolution)
    return largest, smallest


def _soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _save(path: Path, supernet: nn.Module, meta: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"state_dict": supernet.state_dict(), "archsmith": meta}, tmp)
    os.replace(tmp, path)


def _train_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, resolution: int,
                   normalise: Normalizer, generator: torch.Generator, device: torch.device):
    """One epoch of shuffled batches: resized to ``resolution``, randomly cropped (NAS-Bench-201's
    padding) and flipped, normalised. The last partial batch is dropped."""
    order = torch.randperm(len(labels), generator=generator)
    stop = max(len(order) - batch_size + 1, 1)
    for start in range(0, stop, batch_size):
        index = order[start:start + batch_size]
        x = images[index]  # augmented on the CPU (the generator's device), then moved
        if tuple(x.shape[2:]) != (resolution, resolution):
            x = F.interpolate(x.float(), size=(resolution, resolution), mode="bilinear", antialias=True,
                              align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
        x = crop_flip(x, default_crop_padding(resolution), True, generator)
        yield normalise(x.to(device)), labels[index].to(device)


def train_supernet(
    space: Any,
    data: Any,
    checkpoint: str | Path,
    settings: Any,
    *,
    device: str = "cpu",
    on_step: Callable[[int, int, float], None] | None = None,
    restart: bool = False,
) -> SupernetTrainingResult:
    """Train the supernet of ``space`` (an ``ofa_mbv3`` or ``spos_shufflenet`` space) on ``data`` (an ``ImageData``) and
    save it to ``checkpoint``; resumes from an earlier checkpoint of the same training there
    unless ``restart``.

    ``settings``: a :class:`~archsmith.graph.config_scoring.SupernetTrainingConfig` (or anything
    with its fields). ``on_step(step, total_steps, loss)`` is called after every optimiser step
    (progress bars). Raises :class:`CheckpointMismatch` when ``checkpoint`` holds something else.
    """
    from archsmith.tools.supernets.extract import family_of

    started = time.perf_counter()
    path = Path(checkpoint)
    family = family_of(space)
    net_settings = dataclasses.replace(space.supernet_settings, n_classes=data.num_classes)
    if settings.sampling == "sandwich" and not isinstance(net_settings, OFAMbv3Settings):
        raise CheckpointMismatch(f"sampling = 'sandwich' needs a largest and a smallest subnet; the {space.name} "
                                 "space has none: use sampling = 'uniform' (SPOS's rule)")
    resolutions = getattr(space.settings, "resolutions", None) or [getattr(space.settings, "input_size", 224)]
    resolution = int(settings.resolution or max(resolutions))
    identity = {"space": space.name, "space_settings": space.settings.model_dump(), "n_classes": data.num_classes,
                "sampling": settings.sampling, "resolution": resolution}
    torch.manual_seed(settings.seed)
    supernet = family.supernet(net_settings).to(device)
    decay, no_decay = [], []
    for name, parameter in supernet.named_parameters():
        (no_decay if parameter.dim() <= 1 or name.endswith("_matrix") else decay).append(parameter)
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": settings.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=settings.lr, momentum=0.9, nesterov=True)
    images, labels = data.train_x, data.train_y
    if settings.train_images is not None:
        images, labels = images[:settings.train_images], labels[:settings.train_images]
    batch_size = min(settings.batch_size, len(labels))
    steps_per_epoch = max(1, len(labels) // batch_size)
    total_steps = settings.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    rng, generator = random.Random(settings.seed), torch.Generator().manual_seed(settings.seed)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if path.exists() and not restart:
        start_epoch, history = _resume(path, identity, supernet, optimizer, schedule, rng, generator)
    if settings.sampling == "sandwich":
        largest, smallest = extreme_archs(net_settings, resolution)

    def random_arch() -> Any:
        return family.arch_from_json(space.sample(rng))
    dev = torch.device(device)
    normalise = Normalizer(data.mean, data.std, dev)
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, settings.epochs):
        epoch_started, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
        supernet.train()
        for x, y in _train_batches(images, labels, batch_size, resolution, normalise, generator, dev):
            optimizer.zero_grad(set_to_none=True)
            if settings.sampling == "uniform":
                supernet.set_active_subnet(random_arch())
                logits = supernet(x)
                loss = F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing)
                loss.backward()
            else:
                supernet.set_active_subnet(largest)
                logits = supernet(x)
                loss = F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing)
                loss.backward()
                soft = F.softmax(logits.detach(), dim=1)
                others = [smallest] + [random_arch() for _ in range(settings.random_subnets)]
                for arch in others:
                    supernet.set_active_subnet(arch)
                    out = supernet(x)
                    other_loss = (_soft_cross_entropy(out, soft) if settings.distill
                                  else F.cross_entropy(out, y, label_smoothing=settings.label_smoothing))
                    other_loss.backward()
            nn.utils.clip_grad_norm_(supernet.parameters(), 5.0)
            optimizer.step()
            schedule.step()
            step += 1
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"the training loss became {loss.item()} at epoch {epoch + 1}, step {step}; "
                                         "lower lr")
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if on_step is not None:
                on_step(step, total_steps, loss.item())
        stats = EpochStats(epoch + 1, loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1),
                           time.perf_counter() - epoch_started)
        history.append(stats.as_dict())
        if (epoch + 1) % settings.checkpoint_every == 0 or epoch + 1 == settings.epochs:
            _save(path, supernet, {
                "version": FORMAT_VERSION, **identity, "epochs_done": epoch + 1, "epochs": settings.epochs,
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "python_rng": rng.getstate(), "torch_rng": generator.get_state(),
                "torch_global_rng": torch.get_rng_state(), "history": history,  # dropout draws from it
            })
    return SupernetTrainingResult(path, settings.epochs if start_epoch < settings.epochs else start_epoch,
                                  start_epoch, history, time.perf_counter() - started)


def _resume(path: Path, identity: dict[str, Any], supernet: nn.Module, optimizer: Any, schedule: Any,
            rng: random.Random, generator: torch.Generator) -> tuple[int, list[dict[str, float]]]:
    """Load the state of an earlier run of this training; (epochs done, history)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is named as such
        raise CheckpointMismatch(f"{path}: cannot read it as a checkpoint ({error}); --restart overwrites it") from None
    meta = data.get("archsmith") if isinstance(data, dict) else None
    if not isinstance(meta, dict):
        raise CheckpointMismatch(f"{path} holds a supernet this command did not train (no training state); "
                                 "choose another checkpoint path, or --restart to overwrite it")
    differs = [key for key, value in identity.items() if meta.get(key) != value]
    if differs:
        details = ", ".join(f"{key}: {meta.get(key)!r} there, {identity[key]!r} now" for key in differs)
        raise CheckpointMismatch(f"{path} was trained with other settings ({details}); --restart overwrites it")
    supernet.load_state_dict(data["state_dict"], strict=True)
    optimizer.load_state_dict(meta["optimizer"])
    schedule.load_state_dict(meta["schedule"])
    rng.setstate(_as_rng_state(meta["python_rng"]))
    generator.set_state(meta["torch_rng"])
    torch.set_rng_state(meta["torch_global_rng"])
    return int(meta["epochs_done"]), list(meta.get("history") or [])


def _as_rng_state(state: Any) -> tuple:
    version, internal, gauss = state
    return version, tuple(internal), gauss
