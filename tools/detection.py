"""Ultralytics glue for the detection space: an offline, quiet ultralytics; building a
``DetectionModel`` from a model YAML; params and FLOPs as ultralytics reports them.

Nothing here imports ultralytics at import time; every function that needs it calls
:func:`prepare_ultralytics` first, which raises :class:`DetectionUnavailable` (naming
``pip install 'archsmith[detection]'``) when it is missing.

Network: ultralytics checks connectivity at import (``ONLINE``) unless ``YOLO_OFFLINE`` is set,
and downloads a font, weights or datasets only when asked for something missing.
:func:`prepare_ultralytics` imports ultralytics with ``YOLO_OFFLINE=1`` and a settings directory of
our own (``YOLO_CONFIG_DIR``; both in ``os.environ`` only while it imports: ultralytics reads them
then) holding the fonts it would otherwise download (``Arial.ttf``,
``Arial.Unicode.ttf``: matplotlib's DejaVuSans, copied) and switches off its telemetry and logger
integrations. Models are built from YAML dicts only, never from ``*.pt`` names.

FLOPs: ultralytics' GFLOPs (``model.info()``, ``utils.torch_utils.get_flops``) are
``2 x thop MACs / 1e9`` with thop's own rules for every layer (BatchNorm, upsampling included).
:func:`profile_detection` counts the same way, so ``ProfileResult.flops`` (= 2 x ``macs``, our
convention) / 1e9 is ultralytics' GFLOPs figure, and ``params`` is ``model.info()``'s count.
(:func:`archsmith.tools.profile.profile_model` by default counts BatchNorm/upsampling as zero:
8.744 GFLOPs for YOLOv8n and 28.603 for YOLOv8s at 640, the 8.7 G / 28.6 G the PhaseNAS paper and
ultralytics' docs quote, against 8.855 / 28.812 here; with ``count_elementwise=True`` it gives
these figures too.)
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archsmith.tools.environ import scoped_environ
from archsmith.tools.results import ProfileResult
from archsmith.tools.sandbox_protocol import classify_exception

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from archsmith.tools.spaces.yolo_yaml import Spec

__all__ = [
    "INSTALL_HINT",
    "DetectionUnavailable",
    "build_detection_model",
    "prepare_ultralytics",
    "profile_detection",
    "ultralytics_dict",
    "ultralytics_figures",
]

INSTALL_HINT = "pip install 'archsmith[detection]'"
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")  # what ultralytics' check_font looks for before downloading
QUIET_SETTINGS = {"sync": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False,
                  "raytune": False, "tensorboard": False, "wandb": False}  # fmt: skip


class DetectionUnavailable(ImportError):
    """Ultralytics is not installed: the detection space cannot build or train models."""


def _font_source() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.origin:
        return None
    font = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return font if font.is_file() else None


def _place_font(directory: Path) -> None:
    source = _font_source()
    for name in FONT_NAMES:
        target = directory / name
        if target.exists() or source is None:
            continue
        try:
            directory.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        except OSError:  # a read-only settings directory: plots are off anyway
            return


def prepare_ultralytics(config_dir: str | Path | None = None) -> Path:
    """Make ultralytics offline and quiet, then import it; returns its settings directory.

    ``config_dir`` (default: ``$YOLO_CONFIG_DIR``, else ``<tempdir>/archsmith-ultralytics``; in the
    sandbox the temporary directory is the task's own) only takes effect if ultralytics has not
    been imported yet in this process. ``YOLO_OFFLINE=1`` and ``YOLO_CONFIG_DIR`` are in
    ``os.environ`` while ultralytics is imported (it reads both then, and only then), not after.
    """
    environment: dict[str, str] = {}
    if "ultralytics" not in sys.modules:
        chosen = Path(config_dir or os.environ.get("YOLO_CONFIG_DIR") or Path(tempfile.gettempdir()) / "archsmith-ultralytics")
        environment = {"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(chosen)}
        _place_font(chosen / "Ultralytics")  # ultralytics' USER_CONFIG_DIR is $YOLO_CONFIG_DIR/Ultralytics
    try:
        with scoped_environ(environment):
            from ultralytics.utils import SETTINGS, USER_CONFIG_DIR
    except ImportError as error:
        raise DetectionUnavailable(
            f"the yolo search space needs ultralytics ({error}); install it with {INSTALL_HINT}"
        ) from None
    _place_font(Path(USER_CONFIG_DIR))
    changes = {k: v for k, v in QUIET_SETTINGS.items() if k in SETTINGS and SETTINGS[k] != v}
    if changes:
        try:
            SETTINGS.update(changes)
        except OSError:  # read-only settings file (sandbox): YOLO_OFFLINE already keeps it offline
            pass
    return Path(USER_CONFIG_DIR)


def _spec(text_or_spec: str | Spec, mode: str) -> Spec:
    from archsmith.tools.spaces.yolo_yaml import check

    if not isinstance(text_or_spec, str):
        return text_or_spec
    spec, _, issues = check(text_or_spec, mode)
    if spec is None:
        raise ValueError("invalid model YAML: " + "; ".join(str(issue) for issue in issues))
    return spec


def ultralytics_dict(spec: Spec, nc: int | None = None) -> dict[str, Any]:
    """The model dict ``DetectionModel`` takes (multiples form; channels already capped)."""
    rows = []
    for index, layer in enumerate(spec.layers):
        source: Any = layer.source
        if isinstance(source, tuple):
            source = [-1 if j == index - 1 else j for j in source]
        elif source == index - 1:
            source = -1
        args = [None if a == "None" else a for a in layer.args]
        rows.append([source, layer.repeats, layer.module, args])
    return {
        "nc": nc if nc is not None else spec.nc,
        "depth_multiple": spec.depth,
        "width_multiple": spec.width,
        "backbone": rows[: spec.backbone],
        "head": rows[spec.backbone :],
    }


def build_detection_model(
    text_or_spec: str | Spec, nc: int | None = None, *, mode: str = "yolov8*", verbose: bool = False
) -> nn.Module:
    """Ultralytics' ``DetectionModel`` for a model YAML (checked in ``mode`` first) or a checked
    spec; ``nc`` overrides the YAML's classes."""
    spec = _spec(text_or_spec, mode)
    prepare_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    classes = nc if nc is not None else spec.nc
    return DetectionModel(ultralytics_dict(spec, classes), ch=3, nc=classes, verbose=verbose)


def _count_macs(model: nn.Module, imgsz: int) -> int:
    import thop
    import torch

    first = next(model.parameters())
    image = torch.zeros(1, 3, imgsz, imgsz, device=first.device, dtype=first.dtype)
    macs, _ = thop.profile(copy.deepcopy(model), inputs=(image,), verbose=False)
    return round(float(macs))


def profile_detection(
    text_or_model: str | nn.Module, imgsz: int = 640, *, nc: int | None = None, mode: str = "yolov8*"
) -> ProfileResult:
    """Params and MACs/FLOPs of a detection model on one ``imgsz`` x ``imgsz`` image, counted as
    ultralytics counts them (``flops / 1e9`` = its GFLOPs; see the module docstring). Never
    raises for a faulty candidate: the failure is in the result."""
    started = time.perf_counter()
    try:
        model = build_detection_model(text_or_model, nc, mode=mode) if isinstance(text_or_model, str) else text_or_model
        params = sum(p.numel() for p in model.parameters())
        macs = _count_macs(model, imgsz)
    except Exception as exc:  # noqa: BLE001 - a faulty candidate is a result
        return ProfileResult(
            ok=False,
            error_type=classify_exception(exc),
            error_message=str(exc) or type(exc).__name__,
            traceback=traceback.format_exc(),
            input_size=imgsz,
            duration_s=time.perf_counter() - started,
        )
    return ProfileResult(
        ok=True, params=params, macs=macs, flops=2 * macs, input_size=imgsz, duration_s=time.perf_counter() - started
    )


def ultralytics_figures(model: nn.Module, imgsz: int = 640) -> dict[str, Any]:
    """What ultralytics itself reports: ``model.info()``'s layers, params, gradients and GFLOPs."""
    prepare_ultralytics()
    from ultralytics.utils.torch_utils import model_info

    layers, params, gradients, gflops = model_info(model, verbose=True, imgsz=imgsz)
    return {"layers": layers, "params": params, "gradients": gradients, "gflops": gflops}
