"""What a run report shows, gathered from a run directory: pure functions from files to typed data.

Rendering (HTML, plots) lives in graph/view.py; nothing here draws or writes.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archsmith.graph.paths import RunPaths
from archsmith.graph.state import CandidateRecord
from archsmith.graph.trace import StepRecord, TraceStore
from archsmith.tools.pareto import non_dominated

TOP_BEST = 10


@dataclass(frozen=True)
class RoleModel:
    role: str
    policy: str
    model: str | None  # the LLM when the policy is llm


@dataclass(frozen=True)
class Totals:
    generated: int
    valid: int
    repaired_by_debugger: int
    repaired_by_downscaler: int
    discarded: int
    pass_rate: float | None  # valid / generated
    tokens_in: int
    tokens_out: int
    llm_wait_s: float
    wall_s: float
    steps: int
    stop_reason: str | None


@dataclass(frozen=True)
class StageCounts:
    """Verifier outcomes at one stage (validate, execute, structure, budget, generate)."""

    stage: str
    routes: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.routes.values())

    @property
    def pass_rate(self) -> float:
        return self.routes.get("evaluate", 0) / self.total if self.total else 0.0


@dataclass(frozen=True)
class LineageNode:
    id: str
    generation: int
    score: float | None
    status: str  # valid, discarded, ..., or "seed"
    text: str


@dataclass(frozen=True)
class LineageEdge:
    parent: str
    child: str
    label: str  # the operator
    idea: str


@dataclass(frozen=True)
class CandidateDiff:
    candidate_id: str
    parent_id: str
    lines: list[tuple[str, str]]  # (kind: "add" | "del" | "same" | "hunk", text)


@dataclass(frozen=True)
class LLMRoleStats:
    """One role's dealings with its model over a run: how often it asked, what came back unusable
    (failures by kind, as classified in agents/llm.py: empty, truncated, unparseable, rejected by
    the role's own checks, endpoint errors), how often it fell back to its algorithmic policy."""

    role: str
    steps: int  # steps that asked a model
    answers: int
    failures: dict[str, int]
    fell_back: int
    tokens_in: int
    tokens_out: int
    wait_s: float

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens_out / self.wait_s if self.wait_s else None


def llm_role_stats(steps: list[StepRecord]) -> list[LLMRoleStats]:
    """Per role that asked a model, most waited-on first (the report's and the benchmarks' table)."""
    asked: dict[str, list[StepRecord]] = defaultdict(list)
    for step in steps:
        tools = step.tools or {}
        if tools.get("llm_attempts") or step.answers or tools.get("llm_errors"):
            asked[step.role].append(step)
    stats = []
    for role, role_steps in asked.items():
        failures = Counter(e.get("kind", "?") for s in role_steps for e in (s.tools or {}).get("llm_errors", []))
        stats.append(LLMRoleStats(
            role=role, steps=len(role_steps), answers=sum(len(s.answers) for s in role_steps),
            failures=dict(failures.most_common()),
            fell_back=sum(1 for s in role_steps if (s.tools or {}).get("fallback")),
            tokens_in=sum(int(s.tokens.get("input", 0) or 0) for s in role_steps),
            tokens_out=sum(int(s.tokens.get("output", 0) or 0) for s in role_steps),
            wait_s=round(sum(float((s.tools or {}).get("llm_wait_s") or 0.0) for s in role_steps), 3),
        ))  # fmt: skip
    return sorted(stats, key=lambda row: -row.wait_s)


@dataclass
class RunData:
    run_id: str
    root: Path
    config_toml: str
    sessions: list[dict[str, Any]]
    models: list[RoleModel]
    totals: Totals
    llm_roles: list[LLMRoleStats]
    history: list[CandidateRecord]
    best: list[CandidateRecord]
    steps: list[StepRecord]
    start_time: float
    stages: list[StageCounts]
    role_seconds: dict[str, float]
    lineage_nodes: list[LineageNode]
    lineage_edges: list[LineageEdge]
    diffs: dict[str, CandidateDiff]
    finished_at: dict[str, float] = field(default_factory=dict)  # candidate id -> seconds into the run
    origin: dict[str, Any] | None = None  # origin.json of a fork: which run and step it came from
    forks: list[dict[str, Any]] = field(default_factory=list)  # forks of this run beside it


def load_run(run_dir: str | Path) -> RunData:
    """Everything the report shows, read from a run directory (finished or still running)."""
    paths = RunPaths.existing(run_dir)
    config_toml = paths.config.read_text("utf-8")
    config = tomllib.loads(config_toml)
    history = read_history(paths)
    summary = json.loads(paths.summary.read_text("utf-8")) if paths.summary.is_file() else {}
    steps, sessions = read_trace(paths)
    start = min([s["started_at"] for s in sessions] + [s.started_at for s in steps], default=0.0)
    parents = parent_texts(history, steps)
    edges = lineage_edges(history)
    return RunData(
        run_id=paths.run_id,
        root=paths.root,
        config_toml=config_toml,
        sessions=sessions,
        models=role_models(config),
        totals=totals(history, steps, summary, start),
        llm_roles=llm_role_stats(steps),
        history=history,
        best=best_candidates(history),
        steps=steps,
        start_time=start,
        stages=verifier_stages(steps),
        role_seconds=role_seconds(steps),
        lineage_nodes=lineage_nodes(history, parents),
        lineage_edges=edges,
        diffs=candidate_diffs(history, parents),
        finished_at=candidate_finish_times(steps, start),
        origin=_json_or_none(paths.root / "origin.json"),
        forks=fork_links(paths.root),
    )


def _json_or_none(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text("utf-8")) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def fork_links(root: Path) -> list[dict[str, Any]]:
    """Forks of this run in the same runs directory (their origin.json names this run)."""
    forks = []
    for candidate in sorted(root.parent.glob("*/origin.json")):
        origin = _json_or_none(candidate)
        if origin and Path(origin.get("origin_run", "")).resolve() == root.resolve():
            forks.append({"run_id": candidate.parent.name, "step": origin.get("step"),
                          "overrides": origin.get("overrides") or []})
    return forks


def read_history(paths: RunPaths) -> list[CandidateRecord]:
    if not paths.history.is_file():
        return []
    lines = paths.history.read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def read_trace(paths: RunPaths) -> tuple[list[StepRecord], list[dict[str, Any]]]:
    if not paths.trace_db.is_file():
        return [], []
    store = TraceStore(paths.trace_db)
    try:
        return store.steps(), store.sessions()
    finally:
        store.close()


def role_models(config: dict[str, Any]) -> list[RoleModel]:
    """Policy per role and, for llm roles, the model (phase models noted when set)."""
    phases = config.get("phases") or {}
    phase_models = [m for m in (phases.get("exploration_model"), phases.get("refinement_model")) if m]
    rows = []
    for role, settings in sorted((config.get("roles") or {}).items()):
        policy = settings.get("policy", "algorithmic")
        model = None
        if policy == "llm":
            model = (settings.get("llm") or {}).get("model")
            if phase_models:
                model = f"{model} (phases: {', '.join(phase_models)})"
        rows.append(RoleModel(role=role, policy=policy, model=model))
    return rows


def totals(history: list[CandidateRecord], steps: list[StepRecord], summary: dict[str, Any],
           start: float) -> Totals:
    valid = [r for r in history if r.get("status") == "valid"]
    tokens_in = sum(int(s.tokens.get("input", 0)) for s in steps)
    tokens_out = sum(int(s.tokens.get("output", 0)) for s in steps)
    wait = sum(float(s.tools.get("llm_wait_s", 0.0) or 0.0) for s in steps)
    if summary.get("elapsed_s") is not None:
        wall = float(summary["elapsed_s"])
    else:
        wall = max((s.started_at + s.duration_s for s in steps), default=start) - start
    return Totals(
        generated=len(history),
        valid=len(valid),
        repaired_by_debugger=sum(1 for r in valid if r.get("debug_repairs")),
        repaired_by_downscaler=sum(1 for r in valid if r.get("downscale_repairs")),
        discarded=len(history) - len(valid),
        pass_rate=len(valid) / len(history) if history else None,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        llm_wait_s=round(wait, 3),
        wall_s=wall,
        steps=len(steps),
        stop_reason=summary.get("stop_reason"),
    )


def best_candidates(history: list[CandidateRecord], top: int = TOP_BEST) -> list[CandidateRecord]:
    scored = [r for r in history if r.get("status") == "valid" and r.get("score") is not None]
    return sorted(scored, key=lambda r: r["score"], reverse=True)[:top]


def best_so_far(scores: list[float | None]) -> list[float | None]:
    """The running maximum (None until the first score)."""
    out: list[float | None] = []
    best: float | None = None
    for score in scores:
        if score is not None and (best is None or score > best):
            best = score
        out.append(best)
    return out


def candidate_finish_times(steps: list[StepRecord], start: float) -> dict[str, float]:
    """Seconds from the run's start to the end of each candidate's last step."""
    done: dict[str, float] = {}
    for step in steps:
        if step.candidate_id:
            end = step.started_at + step.duration_s - start
            done[step.candidate_id] = max(done.get(step.candidate_id, 0.0), end)
    return done


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower cost x and higher score y are better), by cost."""
    front = non_dominated([(x, -y) for x, y in points])
    return sorted(front, key=lambda i: points[i][0])


def verifier_stages(steps: list[StepRecord]) -> list[StageCounts]:
    """Verifier routes per stage, in the order the checks run."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for step in steps:
        if step.role != "verifier":
            continue
        parsed = step.parsed if isinstance(step.parsed, dict) else {}
        route = parsed.get("route") or (step.decision or "error").split(" ", 1)[0]
        stage = parsed.get("stage") or "unknown"
        counts[stage][route] += 1
    order = ["generate", "validate", "structure", "execute", "budget"]
    stages = sorted(counts, key=lambda s: (order.index(s) if s in order else len(order), s))
    return [StageCounts(stage=s, routes=dict(counts[s])) for s in stages]


def role_seconds(steps: list[StepRecord]) -> dict[str, float]:
    seconds: dict[str, float] = defaultdict(float)
    for step in steps:
        seconds[step.role] += step.duration_s
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


def parent_texts(history: list[CandidateRecord], steps: list[StepRecord]) -> dict[str, str]:
    """Text of every candidate and parent seen (seeds appear only in the navigator's strategies)."""
    texts: dict[str, str] = {}
    for step in steps:
        if step.role != "navigator":
            continue
        strategies = step.parsed if isinstance(step.parsed, list) else [step.parsed]
        for strategy in strategies:
            if not isinstance(strategy, dict):
                continue
            for pid, text in zip(strategy.get("parent_ids") or [], strategy.get("parent_texts") or []):
                if isinstance(pid, str) and isinstance(text, str):
                    texts.setdefault(pid, text)
    for record in history:
        if record.get("text"):
            texts[record["id"]] = record["text"]
    return texts


def lineage_edges(history: list[CandidateRecord]) -> list[LineageEdge]:
    return [
        LineageEdge(parent=pid, child=r["id"], label=r.get("operator") or "", idea=r.get("idea") or "")
        for r in history
        for pid in r.get("parent_ids") or []
    ]


def lineage_nodes(history: list[CandidateRecord], texts: dict[str, str]) -> list[LineageNode]:
    """Candidates plus the parents that are not candidates (seeds, generation 0)."""
    known = {r["id"] for r in history}
    seeds = sorted({pid for r in history for pid in r.get("parent_ids") or [] if pid not in known})
    nodes = [LineageNode(id=s, generation=0, score=None, status="seed", text=texts.get(s, "")) for s in seeds]
    for r in history:
        nodes.append(LineageNode(id=r["id"], generation=int(r.get("generation") or 0), score=r.get("score"),
                                 status=r.get("status") or "", text=r.get("text") or ""))
    return nodes


def split_blocks(text: str) -> list[str]:
    """Lines to diff: a structure string per block (after each ')'), else per cell or token."""
    if "\n" in text:
        return text.splitlines()
    for separator in (")", "+", ","):
        if separator in text:
            return [part for part in re.split(rf"(?<={re.escape(separator)})", text) if part]
    return [text]


def text_diff(old: str, new: str) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for line in difflib.unified_diff(split_blocks(old), split_blocks(new), lineterm="", n=2):
        if line.startswith(("---", "+++")):
            continue
        kind = {"@": "hunk", "+": "add", "-": "del"}.get(line[:1], "same")
        lines.append((kind, line))
    return lines


def candidate_diffs(history: list[CandidateRecord], texts: dict[str, str]) -> dict[str, CandidateDiff]:
    """Parent -> child diff for each candidate with a known parent (the first parent)."""
    diffs = {}
    for record in history:
        parents = record.get("parent_ids") or []
        if not parents or not record.get("text") or parents[0] not in texts:
            continue
        diffs[record["id"]] = CandidateDiff(
            candidate_id=record["id"], parent_id=parents[0],
            lines=text_diff(texts[parents[0]], record["text"]),
        )
    return diffs


def step_summary(step: StepRecord) -> dict[str, Any]:
    """The headline tool results of a step: sandbox outcome, traceback, params, FLOPs, score."""
    tools = step.tools or {}
    out: dict[str, Any] = {}
    execute = tools.get("execute")
    if isinstance(execute, dict):
        out["sandbox"] = "ok" if execute.get("ok") else (execute.get("error_type") or "failed")
        if execute.get("timed_out"):
            out["sandbox"] = "timed out"
        if execute.get("traceback"):
            out["traceback"] = execute["traceback"]
        value = execute.get("value") or {}
        for key in ("params", "flops"):
            if value.get(key) is not None:
                out[key] = value[key]
    measure = tools.get("measure")
    if isinstance(measure, dict):
        out.update({k: v for k, v in measure.items() if k in ("params", "flops") and v is not None})
    score = tools.get("score")
    if isinstance(score, dict):
        if score.get("score") is not None:
            out["score"] = score["score"]
        if score.get("traceback"):
            out["traceback"] = score["traceback"]
    return out
