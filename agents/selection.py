"""Pure search policies: parent selection and the PhaseNAS phase controller.

Every function takes the history, settings and an explicit ``random.Random``; none keeps state
(DESIGN.md, convention 7).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from archsmith.graph.config import ArchsmithConfig
from archsmith.graph.state import CandidateRecord, Phase, best_record, valid_records
from archsmith.tools.pareto import non_dominated


def top_k(history: Sequence[CandidateRecord], k: int) -> list[CandidateRecord]:
    """The k best valid candidates by score (PhaseNAS's quality-ordered pool)."""
    ranked = sorted(valid_records(list(history)), key=lambda r: (-r["score"], r["id"]))
    return ranked[:k]


def pareto_front(history: Sequence[CandidateRecord]) -> list[CandidateRecord]:
    """Valid candidates not dominated on (score up, params down, FLOPs down)."""
    valid = valid_records(list(history))
    objectives = [(-float(r["score"]), float(r.get("params") or 0), float(r.get("flops") or 0)) for r in valid]
    front = [valid[i] for i in non_dominated(objectives)]
    return sorted(front, key=lambda r: (-r["score"], r["id"]))


def parent_pool(history: Sequence[CandidateRecord], config: ArchsmithConfig) -> list[CandidateRecord]:
    if config.search.parent_selection == "pareto":
        return pareto_front(history)[: max(config.search.top_k, 1) * 2]
    return top_k(history, config.search.top_k)


def next_phase(
    history: Sequence[CandidateRecord],
    current: Phase,
    config: ArchsmithConfig,
) -> Phase:
    """Exploration until the transition rule fires, then refinement for the rest of the run.

    The rule is PhaseNAS's threshold (any candidate scoring at least ``transition_score``); a run
    without a threshold switches after ``transition_after`` of its candidate budget.
    """
    phases = config.phases
    if not phases.enabled or current == "refinement":
        return current
    best = best_record(list(history))
    if phases.transition_score is not None:
        if best is not None and best["score"] >= phases.transition_score:
            return "refinement"
        return "exploration"
    if best is not None and len(history) >= phases.transition_after * config.search.max_candidates:
        return "refinement"
    return "exploration"


DUPLICATE_PREFIX = "duplicate of"


def exhausted(history: Sequence[CandidateRecord], after: int) -> set[str]:
    """Candidates whose neighbourhood looks used up: ``after`` of their children were duplicates.

    The Generator only settles for a duplicate when it cannot find a new child, so repeated
    duplicates from one parent mean local search around it has little left to try.
    """
    counts: dict[str, int] = {}
    for record in history:
        if (record.get("discard_reason") or "").startswith(DUPLICATE_PREFIX):
            for parent in record.get("parent_ids", []):
                counts[parent] = counts.get(parent, 0) + 1
    return {parent for parent, count in counts.items() if count >= after}


def refinement_base(history: Sequence[CandidateRecord], after: int) -> CandidateRecord | None:
    """The best candidate whose neighbourhood is not used up (PhaseNAS's S_base)."""
    used_up = exhausted(history, after)
    ranked = sorted(valid_records(list(history)), key=lambda r: (-r["score"], r["id"]))
    fresh = [r for r in ranked if r["id"] not in used_up]
    return fresh[0] if fresh else (ranked[0] if ranked else None)


def choose_parent(pool: Sequence[CandidateRecord], rng: random.Random) -> CandidateRecord:
    """Rank-weighted choice: the best of the pool is likeliest, every member possible."""
    weights = [1.0 / (rank + 1) for rank in range(len(pool))]
    return rng.choices(list(pool), weights=weights, k=1)[0]


def rng_for(seed: int, *parts: object) -> random.Random:
    """A generator derived from the run seed and a purpose, so resumed runs draw the same."""
    return random.Random(":".join([str(seed), *map(str, parts)]))
