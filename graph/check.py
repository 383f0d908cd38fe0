"""Vet one candidate with the Verifier's checks and the evaluator, outside any run.

``archsmith check "SuperConvK3BNRELU(3,32,2,1)..."`` or ``archsmith check model.py`` (a code
candidate) is how a user vets a base model. A CANDIDATE that looks like a path (a separator or a
.py/.yaml/.yml/.txt/.json suffix) must exist; .py reads as code, .yaml as a detection model (its
scale from the file name as ultralytics reads it), .json as a run's result record (``best/result.json``,
``candidates/<id>/result.json``: the candidate it records, in its run's space), anything else by its
content. Without a config the
space's defaults apply and no budget: a limit applies only when the user gives one.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from archsmith.graph.config import ArchsmithConfig, ConfigError, apply_overrides, config_from_dict
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


KNOWN_SUFFIXES = (".py", ".yaml", ".yml", ".txt", ".json")
SUFFIX_SPACES = {".py": "code", ".yaml": "yolo", ".yml": "yolo"}


@dataclass
class CandidateInput:
    """A candidate as the command line gave it: its text, the space it reads as and why."""

    text: str
    space: str  # code | yolo | nb201 | template: what the text is, when no config says otherwise
    why: str  # "the .py suffix", "its content"
    path: Path | None = None


def looks_like_path(candidate: str) -> bool:
    """A separator or a known file suffix (and no line break): meant as a file, not a structure."""
    if "\n" in candidate:
        return False
    return "/" in candidate or os.sep in candidate or candidate.lower().endswith(KNOWN_SUFFIXES)


def detect_space(text: str) -> str:
    """What a candidate text is: a YOLO model YAML, a Python source, an NB201 cell or (else) a
    template structure string."""
    import ast

    import yaml

    stripped = text.strip()
    if "\n" in stripped or stripped.startswith(("import ", "from ", "#", "class ", "def ", '"""')):
        try:
            data = yaml.safe_load(stripped)
        except yaml.YAMLError:
            data = None
        if isinstance(data, dict) and ("backbone" in data or "head" in data):
            return "yolo"
        try:
            ast.parse(stripped)
            return "code"
        except SyntaxError:
            if any(word in stripped for word in ("import ", "class ", "def ")):
                return "code"  # a broken source: the code space's validation says where
    if stripped.startswith("|") and get_space("nb201").validate(stripped).ok:
        return "nb201"
    return "template"


def load_candidate(candidate: str) -> CandidateInput:
    """A candidate given on the command line: a file (read; the space from its suffix, or for .txt
    and other files from its content) or the text itself. A path that does not exist is an error."""
    path = Path(candidate).expanduser()
    if looks_like_path(candidate):
        if path.is_dir():
            raise ConfigError(f"CANDIDATE {candidate}: a directory; give the file (e.g. {path / 'best'}/model.py)")
        if not path.is_file():
            raise ConfigError(f"CANDIDATE {candidate}: no such file")
    elif not (len(candidate) < 4096 and path.is_file()):
        text = candidate.strip()
        return CandidateInput(text, detect_space(text), "its content")
    text = path.read_text("utf-8").strip()
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _recorded_candidate(path, text)
    if suffix in SUFFIX_SPACES:
        space, why = SUFFIX_SPACES[suffix], f"the {suffix} suffix of {path.name}"
    else:
        space, why = detect_space(text), f"the content of {path.name}"
    if space == "code":
        text += "\n"
    if space == "yolo":
        from archsmith.tools.spaces.yolo import guess_model_scale, with_scale_from_name

        named = with_scale_from_name(text, path.name)
        if named != text:
            why += f"; scale {guess_model_scale(path.name)} from its name, as ultralytics reads it"
        text = named
    return CandidateInput(text, space, why, path)


def _recorded_candidate(path: Path, text: str) -> CandidateInput:
    """The candidate a run's result record (``result.json``) holds, in the space of the run it
    belongs to (``config.toml`` of the run directory above it), else the space its text reads as."""
    import json
    import tomllib

    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"CANDIDATE {path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise ConfigError(f"CANDIDATE {path}: a .json candidate is a run's result record (best/result.json) "
                          "with a 'text' field; give the model file itself (.py, .yaml, .txt)")
    candidate = record["text"].strip()
    space, why = detect_space(candidate), f"the candidate {record.get('id', '?')} recorded in {path.name}"
    for run_dir in path.resolve().parents[:3]:
        config = run_dir / "config.toml"
        if config.is_file():
            try:
                space = tomllib.loads(config.read_text("utf-8")).get("space", {}).get("name", space)
            except tomllib.TOMLDecodeError:
                break
            why += f", in the space of its run ({space})"
            break
    return CandidateInput(candidate + ("\n" if space == "code" else ""), space, why, path)


def read_candidate(candidate: str) -> str:
    """A candidate given on the command line: its text, or a path to a file holding it."""
    return load_candidate(candidate).text


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


def check_config(space: str, text: str, overrides: list[str] | None = None) -> ArchsmithConfig:
    """The config `archsmith check` uses without --config: the embedded default's settings for
    ``space`` (the yolo space: :func:`detection_check_config`) with no budget limit; a limit
    applies only when ``overrides`` give one (``budget.params_m=...``)."""
    import tomllib

    from archsmith.graph.config import default_config_text

    if space == "yolo":
        return detection_check_config(text, overrides)
    data = tomllib.loads(default_config_text())
    data["name"] = "check"
    data["space"] = {"name": space}
    for limit in ("params_m", "flops_m"):
        data.setdefault("budget", {}).pop(limit, None)
    return config_from_dict(apply_overrides(data, overrides or []), f"check defaults for the {space} space")


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
        report.over_budget = config.budget.violations(report.params, report.flops)
        report.stage = "score"
        scored = evaluator.evaluate(text)  # scored over budget too: the figure still tells
        if scored.ok and scored.score is not None:
            report.score, report.score_std, report.metrics = scored.score, scored.std, scored.report
        else:
            report.ok, report.reason, report.traceback = False, f"scoring failed: {scored.short_error()}", scored.traceback
    if report.over_budget:  # the Verifier's budget check comes before scoring
        report.ok, report.stage = False, "budget"
        report.reason = "; ".join([*report.over_budget, *([report.reason] if report.reason else [])])
    return report
