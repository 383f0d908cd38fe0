"""The images a supernet evaluation needs, prepared once per run.

Scoring a subnet needs only ``calibration_images`` training images (BatchNorm recalibration) and
the split it is scored on. Loading the whole data set in every sandboxed task would decode all of
ImageNet's 1.28 M training images for each candidate; instead the run prepares these images once,
in the main process, as one tensor file in the run directory, and every task memory-maps it.

For an ImageFolder data set only the chosen training files are decoded (a fixed, seeded sample);
the other data sets are small and loaded whole. ``normalization`` says how the images become the
network's input: ``data`` (the data set's own per-channel mean and std), ``imagenet``
(torchvision's ImageNet mean and std, which the published OFA supernets were trained with) or
``bgr255`` (BGR channels with values 0-255 and no normalisation: SPOS's official pipeline).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EvalImages", "load_eval_images", "prepare_eval_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("data", "imagenet", "bgr255")


@dataclass(frozen=True)
class EvalImages:
    """uint8 images [N, 3, H, W]: the calibration set, the scored split with its labels; how to
    normalise them (``mean``/``std`` on the 0..1 scale, ``bgr``: reverse the channels first)."""

    name: str
    calibration_x: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bgr: bool = False


def _norm(normalization: str, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[tuple, tuple, bool]:
    if normalization == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD, False
    if normalization == "bgr255":
        return (0.0, 0.0, 0.0), (1 / 255.0,) * 3, True  # (x/255 - 0) / (1/255) = x: values 0-255
    if normalization != "data":
        raise ValueError(f"normalization: expected one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    return mean, std, False


def prepare_eval_images(data: dict[str, Any], calibration_images: int, split: str, eval_images: int | None,
                        normalization: str = "data") -> EvalImages:
    """The calibration and scored images of ``data`` (a DatasetSpec dict); DataError when it
    cannot be read or has no such split."""
    from archsmith.tools.datasets import (
        DataError,
        DatasetSpec,
        _channel_stats,
        folder_classes,
        folder_files,
        load_dataset,
        read_images,
        stack_images,
    )

    spec = DatasetSpec.model_validate(data)
    folder_split = {"valid": "val", "test": "test"}[split]
    root = Path(spec.path or "")
    if spec.name == "imagefolder" and (root / folder_split).is_dir():
        classes = folder_classes(root)
        train = folder_files(root / "train", classes)
        chosen = sorted(random.Random(spec.seed).sample(range(len(train)), min(calibration_images, len(train))))
        calibration_x, _ = stack_images(*read_images([train[i] for i in chosen], spec.input_size), root / "train")
        scored = folder_files(root / folder_split, classes)
        if eval_images is not None:  # a seeded sample of the split, every class alike
            scored = [scored[i] for i in sorted(random.Random(spec.seed).sample(range(len(scored)),
                                                                                min(eval_images, len(scored))))]
        eval_x, eval_y = stack_images(*read_images(scored, spec.input_size), root / folder_split)
        if len(chosen) and eval_x.shape[1:] != calibration_x.shape[1:]:
            raise DataError(f"ImageFolder {root}: {folder_split}/ images differ in size from train/; "
                            "set data.input_size")
        mean, std = _channel_stats(calibration_x) if len(chosen) else ((0.5,) * 3, (0.25,) * 3)
        name, num_classes = "imagefolder", len(classes)
    else:
        loaded = load_dataset(spec)
        order = torch.randperm(len(loaded.train_y), generator=torch.Generator().manual_seed(int(spec.seed)))
        calibration_x = loaded.train_x[order[:calibration_images].sort().values]
        eval_x, eval_y = getattr(loaded, f"{split}_x"), getattr(loaded, f"{split}_y")
        if eval_images is not None:
            eval_x, eval_y = eval_x[:eval_images], eval_y[:eval_images]
        mean, std, name, num_classes = loaded.mean, loaded.std, loaded.name, loaded.num_classes
    if len(eval_y) == 0:
        raise DataError(f"the {name} data set has no {split} images")
    mean, std, bgr = _norm(normalization, tuple(mean), tuple(std))
    return EvalImages(name, calibration_x.contiguous(), eval_x.contiguous(), eval_y.contiguous(), num_classes,
                      tuple(mean), tuple(std), bgr)


def cache_key(data: dict[str, Any], calibration_images: int, split: str, eval_images: int | None,
              normalization: str) -> str:
    """A short digest of what the prepared images depend on (their file name in the run)."""
    text = json.dumps([data, calibration_images, split, eval_images, normalization], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def save_eval_images(images: EvalImages, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"name": images.name, "calibration_x": images.calibration_x, "eval_x": images.eval_x,
                "eval_y": images.eval_y, "num_classes": images.num_classes, "mean": list(images.mean),
                "std": list(images.std), "bgr": images.bgr}, tmp)
    os.replace(tmp, path)


def load_eval_images(path: str | Path) -> EvalImages:
    """Prepared images, memory-mapped (a task reads only the pages it uses)."""
    data = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    return EvalImages(data["name"], data["calibration_x"], data["eval_x"], data["eval_y"], int(data["num_classes"]),
                      tuple(data["mean"]), tuple(data["std"]), bool(data["bgr"]))
