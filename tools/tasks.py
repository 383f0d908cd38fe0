"""Task functions the sandbox runs on a candidate (payload dict -> JSON-serialisable dict).

Run them with ``sandbox.run("archsmith.tools.tasks:check_candidate", payload)``. Payload keys:

- ``space`` (name), ``space_settings`` (dict), ``text`` (the candidate), ``num_classes``;
- ``input_size`` (int, or [H, W]; default 32; a candidate that fixes its own resolution, such as
  ``ofa_mbv3``'s ``r``, is run at that instead), ``batch_size`` for the check's forward and
  backward (default 2), ``seed`` (default 0), ``in_channels`` (default 3);
- ``torch_threads``: when given, the task sets torch's intra-op threads (in the sandbox, of its
  own child; in-process, of the whole process);
- ``zen``: keyword arguments of :func:`archsmith.tools.zen_score.zen_score` (``batch_size``,
  ``repeats``, ``mixup_gamma``, ``seed``; ``resolution`` defaults to the input height).

Every task returns ``ok``, ``error_type``, ``error_message``, ``traceback`` (the
:class:`~archsmith.tools.results.ToolResult` fields) and ``stage``, the step that failed: build,
forward, backward, profile or zen. Expected failures come back as data, and the sandbox turns a
returned ``ok: False`` into a failed SandboxResult with that error (the value keeps the details);
it classifies anything else (timeouts, crashes, uncaught exceptions) itself.
"""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING, Any

from archsmith.tools.sandbox_protocol import classify_exception

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import torch.nn as nn

__all__ = [
    "StageFailure", "build_candidate", "check_candidate", "evaluate_candidate", "failed_result",
    "forward_counting_weight_layers", "set_threads", "succeeded", "weight_layer_hooks", "zen_score_candidate",
]  # the helpers are shared by the other task modules (train_task, detection_tasks)


class StageFailure(Exception):
    """A classified failure of one stage (not a Python error in the candidate)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def set_threads(payload: dict[str, Any]) -> None:
    threads = payload.get("torch_threads")
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))


def _input_hw(payload: dict[str, Any]) -> tuple[int, int]:
    size = payload.get("input_size", 32)
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def at_candidate_resolution(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with ``input_size`` set to the candidate's own resolution where its space gives
    one (``ofa_mbv3``'s ``r``: such a candidate is checked, profiled and scored at it)."""
    from archsmith.tools.spaces import SpaceError, get_space

    try:
        space = get_space(payload["space"], payload.get("space_settings") or {})
    except (KeyError, SpaceError):
        return payload  # the build reports it
    own = getattr(space, "input_resolution", None)
    size = own(payload["text"]) if own is not None else None
    return payload if size is None else {**payload, "input_size": int(size)}


def build_candidate(payload: dict[str, Any], *, plain: bool = False) -> nn.Module:
    from archsmith.tools.spaces import get_space

    space = get_space(payload["space"], payload.get("space_settings") or {})
    validation = space.validate(payload["text"])
    if not validation.ok:
        raise StageFailure("InvalidStructure", validation.summary())
    return space.build(payload["text"], int(payload["num_classes"]), plain=plain)


def failed_result(stage: str, exc: BaseException, started: float, **fields: Any) -> dict[str, Any]:
    staged = exc if isinstance(exc, StageFailure) else None
    return {
        **fields,
        "ok": False,
        "stage": stage,
        "error_type": staged.error_type if staged else classify_exception(exc),
        "error_message": str(exc) or type(exc).__name__,
        "traceback": None if staged else traceback.format_exc(),
        "duration_s": time.perf_counter() - started,
    }


def weight_layer_hooks(model: nn.Module, used: set[int]) -> list[Any]:
    """Hooks that record which weight layers (a ``weight`` of 2+ dimensions: conv, linear) run."""
    import torch

    def record(module: nn.Module, inputs: object, output: object) -> None:
        used.add(id(module))

    return [
        module.register_forward_hook(record)
        for module in model.modules()
        if not list(module.children())
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and module.weight.dim() >= 2
    ]


def forward_counting_weight_layers(model: nn.Module, x: torch.Tensor) -> tuple[Any, int]:
    """``model(x)`` in train mode, and how many weight layers (conv, linear) the pass used."""
    model.train()
    used: set[int] = set()
    hooks = weight_layer_hooks(model, used)
    try:
        out = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return out, len(used)


def succeeded(started: float, **fields: Any) -> dict[str, Any]:
    """A task's result for a candidate that passed: ``fields`` plus the empty ToolResult errors."""
    return {**fields, "ok": True, "stage": None, "error_type": None, "error_message": None, "traceback": None,
            "duration_s": time.perf_counter() - started}


def _forward(model: nn.Module, payload: dict[str, Any], fields: dict[str, Any]) -> torch.Tensor:
    """Forward a random batch in train mode; checks the output's shape and values.

    Also counts the weight layers the forward pass used (``fields["weight_layers"]``), for the
    structural check of spaces whose depth cannot be read from the text.
    """
    import torch

    batch = int(payload.get("batch_size", 2))
    num_classes = int(payload["num_classes"])
    height, width = _input_hw(payload)
    generator = torch.Generator().manual_seed(int(payload.get("seed", 0)))
    x = torch.randn(batch, int(payload.get("in_channels", 3)), height, width, generator=generator)
    out, fields["weight_layers"] = forward_counting_weight_layers(model, x)
    if not isinstance(out, torch.Tensor):
        raise StageFailure("OutputShape", f"forward returned {type(out).__name__}, not a tensor")
    fields["output_shape"] = list(out.shape)
    if tuple(out.shape) != (batch, num_classes):
        raise StageFailure("OutputShape", f"output shape {tuple(out.shape)}, expected {(batch, num_classes)}")
    if not bool(torch.isfinite(out).all()):
        raise StageFailure("NonFinite", "the output contains NaN or infinite values")
    return out


def _backward(model: nn.Module, out: torch.Tensor, payload: dict[str, Any]) -> None:
    """Backpropagate a cross-entropy loss; some parameter must get a finite gradient."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(int(payload.get("seed", 0)) + 1)
    target = torch.randint(0, out.shape[1], (out.shape[0],), generator=generator)
    F.cross_entropy(out.float(), target).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    if grads and all(g is None for g in grads):
        raise StageFailure("NoGradient", "no parameter received a gradient from the loss")
    if not all(bool(torch.isfinite(g).all()) for g in grads if g is not None):
        raise StageFailure("NonFinite", "gradients contain NaN or infinite values")


def check_candidate(payload: dict[str, Any]) -> dict[str, Any]:
    """Build, forward, backward, then params/MACs/FLOPs at ``input_size`` with batch 1."""
    from archsmith.tools.profile import profile_model

    started = time.perf_counter()
    set_threads(payload)
    payload = at_candidate_resolution(payload)
    fields: dict[str, Any] = {"params": 0, "macs": 0, "flops": 0, "output_shape": None, "weight_layers": None}
    fields["input_size"] = list(_input_hw(payload))
    stage = "build"
    try:
        import torch

        torch.manual_seed(int(payload.get("seed", 0)))
        model = build_candidate(payload)
        stage = "forward"
        out = _forward(model, payload, fields)
        stage = "backward"
        _backward(model, out, payload)
        stage = "profile"
        model.zero_grad(set_to_none=True)
        profile = profile_model(model, _input_hw(payload), int(payload.get("in_channels", 3)))
    except Exception as exc:  # noqa: BLE001 - a faulty candidate is a result
        return failed_result(stage, exc, started, **fields)
    fields.update(params=profile.params, macs=profile.macs, flops=profile.flops)
    if not profile.ok:
        return {
            **fields,
            "ok": False,
            "stage": "profile",
            "error_type": profile.error_type,
            "error_message": profile.error_message,
            "traceback": profile.traceback,
            "duration_s": time.perf_counter() - started,
        }
    return succeeded(started, **fields)


def zen_score_candidate(payload: dict[str, Any]) -> dict[str, Any]:
    """Zen-score of the plain form of the candidate (a ScoreResult as a dict, plus ``stage``)."""
    from archsmith.tools.zen_score import zen_score

    started = time.perf_counter()
    set_threads(payload)
    payload = at_candidate_resolution(payload)
    settings = {"resolution": _input_hw(payload)[0], **(payload.get("zen") or {})}
    stage = "build"
    try:
        model = build_candidate(payload, plain=True)
        stage = "zen"
        result = zen_score(model, **settings).model_dump()  # an unknown setting is a TypeError here
    except Exception as exc:  # noqa: BLE001 - a faulty candidate is a result
        return failed_result(stage, exc, started, name="zen", score=None, settings=settings)
    result["stage"] = None if result["ok"] else "zen"
    return result


def evaluate_candidate(payload: dict[str, Any]) -> dict[str, Any]:
    """:func:`check_candidate` then, if it passed, :func:`zen_score_candidate`, in one process.

    Returns the ToolResult fields of the first failure (or ok), plus ``check`` and ``zen``
    (None when the check failed).
    """
    check = check_candidate(payload)
    zen = zen_score_candidate(payload) if check["ok"] else None
    failed = check if not check["ok"] else zen if zen is not None and not zen["ok"] else None
    keys = ("error_type", "error_message", "traceback", "stage")
    return {
        "ok": failed is None,
        **{key: (failed or {}).get(key) for key in keys},
        "check": check,
        "zen": zen,
    }
