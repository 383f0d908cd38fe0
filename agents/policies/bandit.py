"""A bandit over mutation operators (LLMasTool's diversity-guided planner).

Each operator has a Beta-Bernoulli posterior: a success is a child that scores higher than its
(first) parent, a failure one that does not (a child discarded at scoring counts as a failure;
children discarded before scoring say nothing of the operator's value and are ignored). The
posterior is recomputed from the history every time, so a resumed run draws the same and no
state needs saving; the Navigator writes it to the trace.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import BaseModel

from archsmith.graph.state import CandidateRecord


class OperatorPosterior(BaseModel):
    """Beta(alpha, beta) over the chance that the operator improves on its parent."""

    operator: str
    alpha: float
    beta: float


def operator_posteriors(
    history: Sequence[CandidateRecord], operators: Sequence[str], prior: float = 1.0
) -> list[OperatorPosterior]:
    """The posterior of each operator in ``operators`` under a Beta(prior, prior) prior."""
    scores = {r["id"]: r.get("score") for r in history if r.get("status") == "valid"}
    wins = {op: 0 for op in operators}
    losses = {op: 0 for op in operators}
    for record in history:
        operator, parents = record.get("operator"), record.get("parent_ids") or []
        if operator not in wins or not parents or scores.get(parents[0]) is None:
            continue
        if record.get("status") == "valid" and record.get("score") is not None:
            if record["score"] > scores[parents[0]]:
                wins[operator] += 1
            else:
                losses[operator] += 1
        elif record.get("discard_stage") == "score":
            losses[operator] += 1
    return [OperatorPosterior(operator=op, alpha=prior + wins[op], beta=prior + losses[op]) for op in operators]


def draw_operator(posteriors: Sequence[OperatorPosterior], rng: random.Random, epsilon: float) -> str:
    """Thompson sampling with epsilon exploration: with probability ``epsilon`` any operator,
    else the one whose posterior draw is highest."""
    if not posteriors:
        raise ValueError("no operators to choose from")
    if rng.random() < epsilon:
        return rng.choice(list(posteriors)).operator
    return max(posteriors, key=lambda p: rng.betavariate(p.alpha, p.beta)).operator
