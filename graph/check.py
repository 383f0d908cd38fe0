"""Vet one candidate with the Verifier's checks and the evaluator, outside any run.

``archsmith check "SuperConvK3BNRELU(3,32,2,1)..."`` or ``archsmith check model.py`` (a code
candidate) is how a user vets a base model.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from archsmith.graph.config import ArchsmithConfig, apply_overrides, config_from_dict
from archsmith.graph.context import make_evaluator, needs_sandbox, task_payload
from archsmith.graph.run import open_sandbox
from archsmith.tools.spaces import check_task, get_space


@dataclass
class CheckReport:
    text: str
    ok: bool
    stage: str  # the last stage reached: validate | execute | budget | score
    reason: str = ""
    canonical: str = ""
    params: int | None = None
    macs: int | None = None
    flops: int | None = None
    score: float | None = None
    score_std: float | None = None
    sandbox: str = ""
    traceback: str | None = None
    weight_layers: int | None = None  # weight layers the forward pass ran
    over_budget: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def read_candidate(candidate: str) -> str:
    """A candidate given on the command line: its text, or a path to a file holding it."""
    path = Path(candidate)
    if len(candidate) < 4096 and path.is_file():
        return path.read_text("utf-8").strip() + ("\n" if path.suffix == ".py" else "")
    return candidate.strip()


def detection_check_config(text: str, overrides: list[str] | None = None) -> ArchsmithConfig:
    """The config `archsmith check model.yaml` uses without --config: the yolo space (every
    module of yolov8*), NAS_det, profiled at 640 with the YAML's nc, no budget limit."""
    import yaml

    try:
        nc = (yaml.safe_load(text) or {}).get("nc", 80)
    except (yaml.YAMLError, AttributeError):
        nc = 80  # validation reports what is wrong with the YAML
    data = {
        "name": "check",
        "space": {"name": "yolo", "settings": {"mode": "yolov8*"}},
        "evaluator": {"name": "nas_det"},
        "budget": {"input_size": 640, "num_classes": nc if isinstance(nc, int) and nc > 1 else 80},
    }
    return config_from_dict(apply_overrides(data, overrides or []), "yolo check defaults")


def check_candidate(text: str, config: ArchsmithConfig) -> CheckReport:
    space = get_space(config.space.name, config.space.settings)
    validation = space.validate(text)
    if not validation.ok:
        return CheckReport(text=text, ok=False, stage="validate", reason=validation.summary())
    report = CheckReport(text=text, ok=True, stage="execute", canonical=space.canonical(text))
    with ExitStack() as stack:
        sandbox = open_sandbox(config, stack) if needs_sandbox(config) else None
        evaluator = make_evaluator(config, space, sandbox)
        if sandbox is not None:
            report.sandbox = sandbox.mechanism
            result = sandbox.run(check_task(space), task_payload(config, text), config.sandbox.timeout_s)
            if not result.ok:
                report.ok, report.reason, report.traceback = False, result.short_error(), result.traceback
                return report
            report.params = int(result.value.get("params") or 0)
            report.macs = int(result.value.get("macs") or 0)
            report.flops = int(result.value.get("flops") or 0)
            report.weight_layers = result.value.get("weight_layers")
            depth = space.depth(text)
            depth = report.weight_layers if depth is None else depth
            if depth is not None and depth < config.workflow.min_layers:
                report.ok, report.stage = False, "structure"
                report.reason = f"only {depth} weight layers (< workflow.min_layers = {config.workflow.min_layers})"
                return report
        else:
            report.params, report.flops = evaluator.measure(text)
        report.stage = "budget"
        report.over_budget = config.budget.violations(report.params, report.flops)
        report.stage = "score"
        scored = evaluator.evaluate(text)
        if scored.ok and scored.score is not None:
            report.score, report.score_std, report.metrics = scored.score, scored.std, scored.report
        else:
            report.ok, report.reason, report.traceback = False, f"scoring failed: {scored.short_error()}", scored.traceback
    if report.over_budget:
        report.ok = False
        report.reason = "; ".join(report.over_budget)
    return report
