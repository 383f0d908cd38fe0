"""The sandbox task that scores a subnet with the weights it inherits from a supernet.

Run it with ``sandbox.run(SUPERNET_TASK, payload)`` (:mod:`archsmith.tools.evaluators`)
(``evaluator.name = "supernet"``). The subnet is cut out of the checkpoint
(:func:`~archsmith.tools.supernets.extract.extract_subnet`), its BatchNorm statistics are
re-estimated on ``calibration_images`` training images
(:func:`~archsmith.tools.supernets.calibration.recalibrate_batchnorm`), and its top-1 accuracy on
the validation split is the score. Nothing is trained.

Payload keys (besides ``space``, ``space_settings``, ``text``, ``torch_threads`` of every task):

- ``supernet``: ``checkpoint`` (file), ``calibration_images``, ``batch_size``, ``split``
  (``valid`` or ``test``), ``eval_images`` (None: the whole split), ``center_crop``;
- ``data``: a :class:`~archsmith.tools.datasets.DatasetSpec` dict; ``device``: auto, cpu, cuda[:N];
- ``prepared``: the run's prepared images (:mod:`archsmith.tools.supernets.eval_data`), memory-mapped;
  without it the task prepares them from ``data`` itself;
- ``input_size``: the subnet's input size where the arch has none of its own (``ofa_mbv3``'s ``r``
  wins).

Images are resized so that a centre crop of ``center_crop`` of their side is ``resolution``
(OFA's ImageNet protocol with 0.875), then normalised (``supernet.normalization``). The
calibration images are a fixed, seeded sample of the training split, the same for every
candidate, so that scores are comparable.

Returns the ScoreResult fields (``score`` = top-1 in percent, ``report``: ``top1``, ``top5``,
``eval_images``, ``calibration_images``, ``wall_s``) plus ``stage`` (settings, data, checkpoint,
calibrate or evaluate) and ``device``. A supernet is loaded once per process and kept, and so are the
images: an in-process executor that scores many subnets reads them once.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from archsmith.tools.tasks import (
    StageFailure,
    _input_hw,
    at_candidate_resolution,
    failed_result,
    set_threads,
    succeeded,
)

__all__ = ["evaluate_subnet_candidate", "subnet_batches"]

_CACHE: dict[str, tuple[Any, Any]] = {}  # "checkpoint"/"data" -> (key, value): one of each per process


def _cached(kind: str, key: Any, load: Any) -> Any:
    held = _CACHE.get(kind)
    if held is not None and held[0] == key:
        return held[1]
    _CACHE.pop(kind, None)  # free the old one before loading the next
    value = load()
    _CACHE[kind] = (key, value)
    return value


def subnet_batches(images: Any, resolution: int, batch_size: int, mean: Any, std: Any, center_crop: float,
                   device: Any, bgr: bool = False):
    """Float batches of uint8 ``images`` [N, 3, H, W] at ``resolution`` (resize, centre crop,
    channels reversed when ``bgr``, normalised with ``mean``/``std`` on the 0..1 scale), on
    ``device``."""
    import torch
    import torch.nn.functional as F

    resize = max(resolution, int(math.ceil(resolution / center_crop)))
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float().div_(255.0)
        if bgr:
            x = x.flip(1)
        if tuple(x.shape[2:]) != (resize, resize):
            x = F.interpolate(x, size=(resize, resize), mode="bilinear", antialias=True, align_corners=False)
        top = (resize - resolution) // 2
        x = x[:, :, top:top + resolution, top:top + resolution]
        yield (x - mean_t) / std_t


def _settings(payload: dict[str, Any]) -> tuple[dict[str, Any], Any, str]:
    from pydantic import ValidationError

    from archsmith.tools.datasets import DatasetSpec
    from archsmith.tools.train_task import _device, _problems

    supernet = dict(payload.get("supernet") or {})
    if not supernet.get("checkpoint"):
        raise StageFailure("InvalidSettings", "supernet.checkpoint: no checkpoint file given")
    supernet.setdefault("calibration_images", 2000)
    supernet.setdefault("batch_size", 100)
    supernet.setdefault("split", "valid")
    supernet.setdefault("eval_images", None)
    supernet.setdefault("center_crop", 0.875)
    supernet.setdefault("normalization", "data")
    if supernet["split"] not in ("valid", "test"):
        raise StageFailure("InvalidSettings", f"supernet.split: expected valid or test, got {supernet['split']!r}")
    try:
        spec = DatasetSpec.model_validate(dict(payload.get("data") or {"name": "synthetic"}))
    except ValidationError as error:
        raise StageFailure("InvalidSettings", _problems("data", error)) from None
    return supernet, spec, _device(str(payload.get("device", "auto")))


def _load_supernet(space: Any, checkpoint: str) -> Any:
    from archsmith.tools.supernets.extract import load_supernet

    path = Path(checkpoint)
    if not path.is_file():
        raise StageFailure("CheckpointError", f"supernet checkpoint {checkpoint}: no such file")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, repr(getattr(space, "supernet_settings", None)))
    try:
        return _cached("checkpoint", key, lambda: load_supernet(space, path))
    except (RuntimeError, ValueError, KeyError) as error:  # shapes or names that do not fit
        raise StageFailure("CheckpointError", f"supernet checkpoint {checkpoint} does not fit the space's "
                           f"supernet: {str(error)[:600]}") from None


def _eval_images(payload: dict[str, Any], settings: dict[str, Any], spec: Any) -> Any:
    """The run's prepared images (``payload["prepared"]``, memory-mapped), else prepared here."""
    from archsmith.tools.supernets.eval_data import load_eval_images, prepare_eval_images

    if payload.get("prepared"):
        return _cached("data", payload["prepared"], lambda: load_eval_images(payload["prepared"]))
    args = (spec.model_dump(), int(settings["calibration_images"]), settings["split"], settings["eval_images"],
            settings["normalization"])
    return _cached("data", repr(args), lambda: prepare_eval_images(*args))


def evaluate_subnet_candidate(payload: dict[str, Any]) -> dict[str, Any]:
    """Extract the subnet, recalibrate its BatchNorm, return its top-1 accuracy as the score."""
    started = time.perf_counter()
    set_threads(payload)
    fields: dict[str, Any] = {"name": "supernet", "score": None, "std": 0.0, "repeats": 1, "settings": {},
                              "report": {}, "device": None, "warnings": []}
    stage = "settings"
    try:
        import torch

        from archsmith.tools.spaces import get_space
        from archsmith.tools.supernets.calibration import recalibrate_batchnorm
        from archsmith.tools.supernets.extract import subnet_of, supernet_classes

        supernet_settings, spec, device = _settings(payload)
        fields["device"] = device
        space = get_space(payload["space"], payload.get("space_settings") or {})
        validation = space.validate(payload["text"])
        if not validation.ok:
            raise StageFailure("InvalidStructure", validation.summary())
        resolution = _input_hw(at_candidate_resolution({**payload, "input_size": payload.get("input_size", 224)}))[0]
        fields["settings"] = {**supernet_settings, "data": spec.model_dump(), "resolution": resolution}
        stage = "data"
        data = _eval_images(payload, supernet_settings, spec)
        stage = "checkpoint"
        supernet = _load_supernet(space, supernet_settings["checkpoint"])
        classes = supernet_classes(supernet, space)
        if classes != data.num_classes:
            raise StageFailure("CheckpointError", f"the checkpoint's classifier has {classes} outputs; the "
                               f"{data.name} data set has {data.num_classes} classes")
        subnet = subnet_of(supernet, space, space.canonical(payload["text"])).to(device).eval()
        stage = "calibrate"
        batch = int(supernet_settings["batch_size"])
        crop = float(supernet_settings["center_crop"])
        seen = recalibrate_batchnorm(subnet, subnet_batches(data.calibration_x, resolution, batch, data.mean,
                                                            data.std, crop, device, data.bgr))
        if seen < int(supernet_settings["calibration_images"]):
            fields["warnings"].append(f"BatchNorm recalibrated on {seen} images (the training split has no more)")
        stage = "evaluate"
        x, y = data.eval_x, data.eval_y
        top1 = top5 = 0
        with torch.no_grad():
            for images, start in zip(subnet_batches(x, resolution, batch, data.mean, data.std, crop, device, data.bgr),
                                     range(0, len(y), batch)):
                labels = y[start:start + batch].to(device)
                ranked = subnet(images).topk(min(5, classes), dim=1).indices
                top1 += int((ranked[:, 0] == labels).sum())
                top5 += int((ranked == labels[:, None]).any(dim=1).sum())
    except Exception as exc:  # noqa: BLE001 - a faulty candidate or setting is a result
        from archsmith.tools.train_task import _classified

        return failed_result(stage, _classified(exc), started, **fields)
    wall = time.perf_counter() - started
    return succeeded(started, **{
        **fields,
        "score": 100.0 * top1 / len(y),
        "report": {"top1": 100.0 * top1 / len(y), "top5": 100.0 * top5 / len(y), "eval_images": float(len(y)),
                   "calibration_images": float(seen), "wall_s": wall},
    })
