"""The tool nodes (not agents): evaluate and discard end a child; archive ends a generation."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from archsmith.graph.context import RunContext
from archsmith.graph.paths import RunPaths, write_atomic, write_json
from archsmith.graph.state import CandidateRecord, ChildState, SearchState, best_record
from archsmith.graph.trace import StepRecord

CANDIDATE_FILE = "candidate.txt"
BEST_STEM = "model"  # best/model.py, best/model.yaml


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _base_record(ctx: RunContext, state: ChildState) -> CandidateRecord:
    strategy = state["strategy"]
    text = state.get("text") or ""
    repairs = state.get("repairs", [])
    workflow = ctx.config.workflow
    return CandidateRecord(
        id=strategy["candidate_id"],
        generation=state.get("generation", 0),
        parent_ids=list(strategy.get("parent_ids", [])),
        text=text,
        canonical=ctx.space.canonical(text) if text and ctx.space.validate(text).ok else "",
        operator=strategy.get("operator"),
        idea=strategy.get("idea", ""),
        idea_id=strategy.get("idea_id"),
        idea_tag=strategy.get("idea_tag"),
        prompt_category=strategy.get("prompt_category"),
        stage=strategy.get("stage"),
        iteration=strategy.get("iteration"),
        phase=strategy.get("phase", "exploration"),
        generator_policy=ctx.config.role("generator").policy,
        debug_repairs=repairs.count(workflow.on_fails_to_run),
        debug_tries=state.get("debug_tries", 0),
        downscale_tries=state.get("downscale_tries", 0),
        downscale_repairs=repairs.count(workflow.on_over_budget),
        seconds=round(time.time() - state.get("started_at", time.time()), 3),
        predicted_score=strategy.get("predicted_score"),
        predicted_std=strategy.get("predicted_std"),
    )


def _save_candidate(ctx: RunContext, record: CandidateRecord, extra: dict[str, Any]) -> None:
    folder = ctx.paths.candidate(record["id"])
    write_atomic(folder / CANDIDATE_FILE, record["text"] + "\n")
    write_json(folder / "result.json", {**record, **extra, "text_sha256": _text_hash(record["text"])})


def _cached_score(ctx: RunContext, record: CandidateRecord) -> dict[str, Any] | None:
    """The outcome of scoring the same text in an earlier session of this run (never twice).

    A failed scoring counts too (``scored``): it is an outcome, not work left undone.
    """
    path = ctx.paths.candidate(record["id"]) / "result.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if saved.get("text_sha256") == _text_hash(record["text"]) and (
        saved.get("score") is not None or saved.get("scored")
    ):
        return saved
    return None


def make_start(ctx: RunContext):
    def start(state: ChildState) -> dict[str, Any]:
        return {"started_at": time.time(), "debug_tries": 0, "downscale_tries": 0, "verdict": None}

    return start


def make_evaluate(ctx: RunContext):
    def evaluate(state: ChildState) -> dict[str, Any]:
        record = _base_record(ctx, state)
        verdict = state.get("verdict") or {}
        record.update(params=verdict.get("params"), macs=verdict.get("macs"), flops=verdict.get("flops"))
        step = StepRecord(node="evaluate", role="evaluate", generation=record["generation"],
                          candidate_id=record["id"], inputs={"text": record["text"]},
                          policy=ctx.evaluator.name, phase=record["phase"])
        started = time.perf_counter()
        cached = _cached_score(ctx, record)
        details: dict[str, Any] = {}
        if cached is not None:
            details = cached.get("evaluation") or {}
            record.update(status=cached.get("status", "valid"), score=cached.get("score"),
                          score_std=cached.get("score_std"), metrics=cached.get("metrics") or {},
                          discard_reason=cached.get("discard_reason"), discard_stage=cached.get("discard_stage"))
            step.decision = "reused the score saved by an earlier session"
        else:
            result = ctx.evaluator.evaluate(record["text"])
            details = result.details
            step.tools["score"] = result.model_dump(exclude={"stdout"})
            if result.ok and result.score is not None:
                record.update(status="valid", score=float(result.score), score_std=result.std,
                              metrics=dict(result.report))
            else:
                record.update(status="discarded", score=None, discard_stage="score",
                              discard_reason=f"scoring failed: {result.short_error()}")
            step.decision = record["status"]
        record.setdefault("discard_reason", None)
        step.parsed = {"score": record.get("score"), "std": record.get("score_std")}
        step.duration_s = time.perf_counter() - started
        # The score is saved before the trace tells of it: a kill between the two leaves a score
        # that the next session reuses, never a recorded score that it must compute again.
        _save_candidate(ctx, record, {"verdict": verdict, "scored": True, "evaluation": details})
        ctx.trace.record(step)
        return {"history": [record]}

    return evaluate


def make_discard(ctx: RunContext):
    def discard(state: ChildState) -> dict[str, Any]:
        record = _base_record(ctx, state)
        verdict = state.get("verdict") or {}
        record.update(status="discarded", score=None, discard_reason=verdict.get("reason") or "discarded",
                      discard_stage=verdict.get("stage") or "generate",
                      params=verdict.get("params"), macs=verdict.get("macs"), flops=verdict.get("flops"))
        ctx.trace.record(StepRecord(node="discard", role="discard", generation=record["generation"],
                                    candidate_id=record["id"], decision=record["discard_reason"],
                                    phase=record["phase"]))
        if record["text"]:
            _save_candidate(ctx, record, {"verdict": verdict, "notes": state.get("notes", [])})
        return {"history": [record]}

    return discard


SYSTEMATIC_FAILURE_COUNT = 8  # this many scorings, none valid, one and the same error: stop the run


def systematic_scoring_failure(history: list[CandidateRecord], count: int = SYSTEMATIC_FAILURE_COUNT) -> str | None:
    """A stop reason when scoring itself is broken (a GPU the sandbox cannot open, a missing data
    set), not the candidates: the first ``count`` scorings all failed with the same error."""
    scored = [r for r in history if r.get("status") == "valid" or r.get("discard_stage") == "score"]
    if len(scored) < count or any(r.get("status") == "valid" for r in scored):
        return None
    reasons = {r.get("discard_reason") for r in scored}
    if len(reasons) != 1:
        return None
    return (f"stopped: all {len(scored)} candidates scored so far failed with the same error, so the "
            f"evaluator or its environment is at fault, not the candidates ({reasons.pop()})")


def space_file_suffix(space: object) -> str:
    """The file suffix of a space's candidates (``file_suffix``: ".py", ".yaml"; default ".txt")."""
    return str(getattr(space, "file_suffix", ".txt"))


def run_file_suffix(paths: RunPaths) -> str:
    """The candidate file suffix of a run's space, from its saved config (".txt" when unknown)."""
    from archsmith.graph.config import ConfigError, load_config
    from archsmith.tools.spaces import get_space

    try:
        config = load_config(paths.config)
        return space_file_suffix(get_space(config.space.name, config.space.settings))
    except (ConfigError, ValueError, OSError):
        return ".txt"


def best_file(paths: RunPaths, suffix: str) -> Path:
    """best/model.py, best/model.yaml: the winner under its real extension (best/candidate.txt for
    the spaces whose candidates are plain text)."""
    return paths.best / (CANDIDATE_FILE if suffix == ".txt" else f"{BEST_STEM}{suffix}")


def write_archive_files(
    paths: RunPaths, history: list[CandidateRecord], suffix: str | None = None
) -> CandidateRecord | None:
    """history.jsonl and best/ for ``history``; returns the best record.

    best/ holds candidate.txt (always, for compatibility), the winner under its space's file
    suffix (``suffix``; read from the run's config when None: best/model.py for the code space,
    best/model.yaml for yolo) and result.json."""
    write_atomic(paths.history, "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
    best = best_record(history)
    if best is not None:
        write_atomic(paths.best / CANDIDATE_FILE, best["text"] + "\n")
        real = best_file(paths, run_file_suffix(paths) if suffix is None else suffix)
        if real.name != CANDIDATE_FILE:
            write_atomic(real, best["text"].rstrip("\n") + "\n")
        write_json(paths.best / "result.json", best)
    return best


def make_archive(ctx: RunContext):
    """Fan-in of a generation: files, best/, the clock and the stop rules."""

    def archive(state: SearchState) -> dict[str, Any]:
        history = state.get("history", [])
        generation = state.get("generation", 0)
        new = [r for r in history if r.get("generation") == generation]
        # Announced before history.jsonl lists them: a resume announces the records that
        # history.jsonl lacks (graph/run.py), so none is lost and, after a kill, none told twice.
        if ctx.on_record is not None:
            for record in new:
                ctx.on_record(record)
        best = write_archive_files(ctx.paths, history, space_file_suffix(ctx.space))
        ctx.archive.reset(history)
        elapsed = state.get("elapsed_s", 0.0) + (time.time() - ctx.generation_started)
        ctx.generation_started = time.time()
        search = ctx.config.search
        stop = None
        if search.target_score is not None and best is not None and best["score"] >= search.target_score:
            stop = f"target score {search.target_score} reached by {best['id']}"
        elif sum(1 for r in history if r.get("status") == "valid") >= search.max_candidates:
            stop = f"budget of {search.max_candidates} evaluated candidates used"
        elif (broken := systematic_scoring_failure(history)) is not None:
            stop = broken
        elif len(history) >= search.children_cap():
            stop = f"cap of {search.children_cap()} children reached (too many discarded)"
        elif search.time_limit_s is not None and elapsed >= search.time_limit_s:
            stop = f"time limit of {search.time_limit_s:.0f} s reached"
        ctx.trace.record(StepRecord(node="archive", role="archive", generation=generation,
                                    decision=stop or "continue", phase=state.get("phase"),
                                    parsed={"best": best["id"] if best else None, "archived": [r["id"] for r in new]}))
        return {"elapsed_s": elapsed, "stop_reason": stop, "plans": []}

    return archive
