"""Typed graph state, in one place (DESIGN.md, convention 1).

Two levels:

* ``SearchState`` is the outer loop: navigator -> children (fan-out) -> archive -> navigator.
* ``ChildState`` is one child's pipeline: generator -> verifier -> debugger/downscaler -> ... ->
  evaluate | discard. Each child runs as its own subgraph invocation, several in parallel.

Records are TypedDicts so that LangGraph's checkpointer stores them as plain data. Candidate
source texts are small here (structure strings) but still written to
``candidates/<id>/`` on disk; large artifacts (logs, tracebacks, prompts) live only on disk and in
the trace table, referenced by candidate id.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Annotated, Literal, TypedDict

from langgraph.channels.delta import DeltaChannel

Phase = Literal["exploration", "refinement"]
Status = Literal["valid", "discarded"]


class Strategy(TypedDict, total=False):
    """The Navigator's plan for one child."""

    candidate_id: str
    parent_ids: list[str]
    parent_texts: list[str]
    operator: str | None  # mutation operator or type; None lets the generator choose
    idea: str  # a design idea in words (drawn from the knowledge store when knowledge.use)
    idea_id: str  # the store's id of that idea
    idea_tag: str  # its attribute-tree path
    prompt_category: str  # the kind of change an LLM choosing a tree edit was asked to favour
    mutation_target: str  # create a new module | modify an existing module | change the network
    phase: Phase
    model: str | None  # which LLM the generator should use in this phase
    rationale: str
    feedback: list[str]  # recent children and outcomes, only when the generator keeps a memory
    # FairNAD's multi-type mutation (search.mutation = "fairnad"):
    stage: str  # initial | idea | pareto | iterative
    iteration: int  # stage III: the step of the refinement chain
    parent_improved: bool  # stage III: the parent scored higher than its own parent
    parent_idea: str
    parent_idea_tag: str
    # The model strategy (search.strategy = "model"): the child it chose and the prediction.
    proposal: str  # the chosen child's canonical text (the algorithmic Generator writes it)
    predicted_score: float
    predicted_std: float


class Verdict(TypedDict, total=False):
    """The Verifier's last outcome for a child."""

    route: Literal["evaluate", "fails_to_run", "over_budget", "discard"]
    stage: str  # validate | structure | execute | budget
    reason: str
    params: int
    macs: int
    flops: int
    error_type: str | None
    traceback: str | None
    checked_text: str  # the text the execution check ran on


class CandidateRecord(TypedDict, total=False):
    """One child's outcome, as archived."""

    id: str
    generation: int
    parent_ids: list[str]
    text: str
    canonical: str
    status: Status
    discard_reason: str | None
    discard_stage: str | None  # the verifier stage (or "score") at which a discarded child failed
    score: float | None
    score_std: float | None
    metrics: dict[str, float]  # reported only (e.g. a table's test accuracy), never searched on
    params: int | None
    macs: int | None
    flops: int | None
    operator: str | None
    idea: str
    idea_id: str | None
    idea_tag: str | None
    prompt_category: str | None  # see Strategy.prompt_category (the tool-choice Generator)
    stage: str | None  # FairNAD's mutation stage, when search.mutation = "fairnad"
    iteration: int | None
    phase: Phase
    generator_policy: str
    debug_repairs: int  # successful repairs by the debugger that led to this child
    downscale_repairs: int
    debug_tries: int  # debugger calls this child used (FairNAD allows 2)
    downscale_tries: int  # downscaler calls this child used (FairNAD allows 4)
    seconds: float
    predicted_score: float | None  # the score model's prediction when the Navigator chose it
    predicted_std: float | None


class ChildState(TypedDict, total=False):
    strategy: Strategy
    generation: int
    text: str | None  # the child's current text (None: the generator produced nothing usable)
    verdict: Verdict | None
    debug_tries: int
    downscale_tries: int
    notes: Annotated[list[str], operator.add]  # what each role did, in order
    repairs: Annotated[list[str], operator.add]  # the role behind each successful repair
    started_at: float
    history: Annotated[list[CandidateRecord], operator.add]  # output: exactly one record


class ChildInput(TypedDict):
    strategy: Strategy
    generation: int


class ChildOutput(TypedDict):
    history: Annotated[list[CandidateRecord], operator.add]


class SearchState(TypedDict, total=False):
    generation: int
    next_candidate: int  # numeric part of the next candidate id
    phase: Phase
    base_id: str | None  # the refinement base (PhaseNAS S_base)
    plans: list[Strategy]  # this generation's children, written by the navigator
    history: History
    memory: list[str]  # the navigator's trajectory memory (bounded)
    elapsed_s: float  # wall-clock time spent, summed over sessions
    stop_reason: str | None


def append_records(
    current: list[CandidateRecord] | None, batches: Sequence[list[CandidateRecord]]
) -> list[CandidateRecord]:
    """Reducer of the archive: concatenation (deterministic and batching-invariant)."""
    merged = list(current or [])
    for batch in batches:
        merged.extend(batch)
    return merged


# The archive grows by a few records per generation; a DeltaChannel checkpoints only those new
# records (plus a periodic snapshot) instead of the whole list at every step, which keeps
# trace.sqlite linear rather than quadratic in the number of candidates.
History = Annotated[list[CandidateRecord], DeltaChannel(append_records, snapshot_frequency=50)]


def candidate_id(number: int) -> str:
    return f"c{number:04d}"


def valid_records(history: list[CandidateRecord]) -> list[CandidateRecord]:
    return [r for r in history if r.get("status") == "valid" and r.get("score") is not None]


def best_record(history: list[CandidateRecord]) -> CandidateRecord | None:
    valid = valid_records(history)
    return max(valid, key=lambda r: r["score"]) if valid else None
