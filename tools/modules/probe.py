"""The sandbox task that builds one mined module and runs a forward pass on a small input.

``sandbox.run("archsmith.tools.modules.probe:probe_module", payload)``. Payload: ``module``
(import path), ``class_name``, ``python_path`` (directories put first on ``sys.path`` here, in the
sandbox's child, never in the caller), ``torch_threads``, and optional ``kwargs`` (constructor
arguments to use instead of the conventional ones).

Construction: defaults, and for each required argument a conventional value by name
(:data:`CONVENTIONAL`; also ``norm_layer`` -> BatchNorm2d, ``activation_layer`` -> ReLU, names
with ``dropout`` or ending in ``_prob`` -> 0.0); another required argument ends the probe with
``needs_args``. A class whose ``__init__`` only takes ``*args, **kwargs`` is given the arguments
of the first base that names them.

The forward pass runs in eval mode without gradients on an image-like ``[2, 16, 8, 8]`` input,
else a vector ``[2, 16]``, a sequence ``[2, 4, 16]``, a channels-first 1-D ``[2, 16, 8]``, a 3-D
``[2, 16, 4, 8, 8]`` and an RGB ``[2, 3, 32, 32]`` (whole networks), the first that works; a
``forward`` with several required arguments (attention's query, key, value) gets the same tensor
for each.

Returns ``status`` (ok, needs_args, import_failed, build_failed, forward_failed) with ``stage``,
``error_type`` and ``error_message`` on failure; on success ``input_shape``, ``output_shape``,
``channels_in``, ``channels_out``, ``stride`` (input height // output height for image-like
inputs; below 1 when upsampling), ``spatial_in``/``spatial_out``, ``keeps_spatial``, ``params``
and the ``kwargs`` used. A failed probe returns ``ok: False`` (the
sandbox's convention); the value keeps the details.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
import traceback
from typing import Any

from archsmith.tools.sandbox_protocol import classify_exception

__all__ = ["CONVENTIONAL", "INPUT_SHAPES", "conventional_kwargs", "probe_module"]

_WIDTH = 16
CONVENTIONAL: dict[str, Any] = {
    **dict.fromkeys(
        ("in_channels", "in_features", "num_features", "channels", "inplanes", "planes", "dim", "embed_dim",
         "hidden_dim", "out_channels", "out_features", "num_channels", "d_model", "hidden_size", "input_size",
         "normalized_shape", "in_chs", "out_chs", "in_planes", "out_planes", "width", "inp", "oup"),
        _WIDTH,
    ),
    "kernel_size": 3,
    "stride": 1,
    "padding": 1,
    "groups": 1,
    "output_size": 4,
    "upscale_factor": 2,
    "downscale_factor": 2,
    "num_classes": 10,
    "num_heads": 4,
    "nhead": 4,
    "num_groups": 4,
    "p": 0.0,
    "dropout": 0.0,
}
# image-like, vector, sequence (batch, tokens, features); then channels-first 1-D and 3-D inputs,
INPUT_SHAPES: tuple[tuple[int, ...], ...] = (
    (2, _WIDTH, 8, 8), (2, _WIDTH), (2, 4, _WIDTH), (2, _WIDTH, 8), (2, _WIDTH, 4, 8, 8), (2, 3, 32, 32),
)  # the last: whole networks that take RGB images


def _conventional(name: str) -> tuple[bool, Any]:
    """(known, value) for a required argument called ``name``."""
    if name in CONVENTIONAL:
        return True, CONVENTIONAL[name]
    if name in ("norm_layer", "activation_layer"):
        import torch.nn as nn

        return True, nn.BatchNorm2d if name == "norm_layer" else nn.ReLU
    if "dropout" in name or name.endswith("_prob"):  # attention_dropout, stochastic_depth_prob
        return True, 0.0
    return False, None


def _explicit_signature(cls: type) -> inspect.Signature | None:
    """The signature of ``cls``, or of the first base whose ``__init__`` names its arguments when
    ``cls`` only passes ``*args, **kwargs`` on (torchvision's Quantizable* wrappers)."""
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    try:
        first = inspect.signature(cls)
    except (TypeError, ValueError):
        return None
    if not first.parameters or any(p.kind not in variadic for p in first.parameters.values()):
        return first
    for base in cls.__mro__[1:]:
        init = base.__dict__.get("__init__")
        if init is None or base is object:
            continue
        try:
            params = list(inspect.signature(init).parameters.values())[1:]
        except (TypeError, ValueError):
            continue
        if any(p.kind not in variadic for p in params):
            return inspect.Signature(params)
    return first


def conventional_kwargs(cls: type) -> tuple[dict[str, Any], list[str]]:
    """(keyword arguments for the required parameters we know, names of those we do not)."""
    signature = _explicit_signature(cls)
    if signature is None:
        return {}, []
    kwargs: dict[str, Any] = {}
    missing: list[str] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.default is not param.empty:
            continue
        known, value = _conventional(param.name)
        if known:
            kwargs[param.name] = value
        else:
            missing.append(param.name)
    return kwargs, missing


def _failed(status: str, stage: str, exc: BaseException | None, started: float, message: str | None = None,
            **fields: Any) -> dict[str, Any]:
    return {
        **fields,
        "ok": False,
        "status": status,
        "stage": stage,
        "error_type": classify_exception(exc) if exc is not None else "NeedsArguments",
        "error_message": message if message is not None else f"{type(exc).__name__}: {exc}"[:500],
        "traceback": traceback.format_exc(limit=-3)[-2000:] if exc is not None else None,
        "duration_s": round(time.perf_counter() - started, 4),
    }


def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        for item in value.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _shape_fields(shape: tuple[int, ...], out: Any, out_kind: str) -> dict[str, Any]:
    out_shape = list(out.shape)
    fields: dict[str, Any] = {
        "input_shape": list(shape),
        "output_shape": out_shape,
        "output_kind": out_kind,
        "channels_in": shape[1],
        "channels_out": out_shape[1] if len(out_shape) >= 2 else None,
        "stride": None,
        "keeps_spatial": None,
    }
    if len(shape) == 4 and len(out_shape) == 4:
        fields["keeps_spatial"] = out_shape[2:] == list(shape[2:])
        fields["spatial_in"], fields["spatial_out"] = list(shape[2:]), out_shape[2:]
        if 0 < out_shape[2] <= shape[2]:
            fields["stride"] = shape[2] // out_shape[2]  # 8 -> 6 (3x3, no padding): 1; 8 -> 3 or 4: 2
        elif out_shape[2]:
            fields["stride"] = round(shape[2] / out_shape[2], 3)  # upsampling: 0.5 for 2x
    return fields


def probe_module(payload: dict[str, Any]) -> dict[str, Any]:
    """Build ``payload["module"].payload["class_name"]`` and run one forward pass (see module doc)."""
    started = time.perf_counter()
    saved_path = list(sys.path)
    sys.path[:0] = [p for p in payload.get("python_path") or () if p not in sys.path]
    try:
        return _probe(payload, started)
    finally:
        sys.path[:] = saved_path  # matters only in-process; a sandbox child ends here anyway


def _probe(payload: dict[str, Any], started: float) -> dict[str, Any]:
    try:
        import torch

        if payload.get("torch_threads") is not None:
            torch.set_num_threads(int(payload["torch_threads"]))
        cls = getattr(importlib.import_module(payload["module"]), payload["class_name"])
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a module that does not import is a result
        return _failed("import_failed", "import", exc, started)
    given = payload.get("kwargs")
    kwargs, missing = (dict(given), []) if given is not None else conventional_kwargs(cls)
    if missing:
        return _failed("needs_args", "arguments", None, started, f"needs arguments: {', '.join(missing)}",
                       missing=missing, kwargs=_jsonable(kwargs))
    try:
        torch.manual_seed(0)
        model = cls(**kwargs)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"built a {type(model).__name__}, not an nn.Module")
        model.eval()
    except Exception as exc:  # noqa: BLE001
        return _failed("build_failed", "build", exc, started, kwargs=_jsonable(kwargs))
    attempts: list[dict[str, Any]] = []
    inputs = _tensor_arguments(model)
    for shape in INPUT_SHAPES:
        try:
            with torch.no_grad():
                x = torch.randn(*shape)
                out = model(*[x] * inputs)  # attention (query, key, value): the same tensor
            tensor = _first_tensor(out)
            if tensor is None:
                raise TypeError(f"forward returned {type(out).__name__} without a tensor")
        except Exception as exc:  # noqa: BLE001
            attempts.append({"input_shape": list(shape), "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        kind = "tensor" if isinstance(out, torch.Tensor) else type(out).__name__
        params = _params(model)
        return {**_shape_fields(shape, tensor, kind), "ok": True, "status": "ok", "stage": None,
                "error_type": None, "error_message": None, "traceback": None, "params": params,
                "kwargs": _jsonable(kwargs), "attempts": attempts,
                "duration_s": round(time.perf_counter() - started, 4)}
    params = _params(model)
    last = attempts[0]["error"] if attempts else "no input tried"  # the image-like input's error
    return {"ok": False, "status": "forward_failed", "stage": "forward", "error_type": last.split(":")[0],
            "error_message": last, "traceback": None, "params": params, "kwargs": _jsonable(kwargs),
            "attempts": attempts, "duration_s": round(time.perf_counter() - started, 4)}


def _tensor_arguments(model: Any) -> int:
    """How many positional arguments ``forward`` requires (at least 1)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return max(1, sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty))


def _params(model: Any) -> int | None:
    """Parameter count (None while a lazy module's parameters are uninitialised)."""
    try:
        return int(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001 - UninitializedParameter
        return None


def _jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v) for k, v in kwargs.items()}
