"""A bandit over mutation operators (LLMasTool's diversity-guided planner).

Each operator has a Beta-Bernoulli posterior: a success is a child that scores higher than its
(first) parent, a failure one that does not (a child discarded at scoring counts as a failure;
children discarded before scoring say nothing of the operator's value and are ignored). The
posterior is recomputed from the history every time, so a resumed run draws the same and no
state needs saving; the Navigator writes it to the trace. :func:`keyed_posteriors` counts the
same wins and losses under any key of a record (the tool-choice planner's (operator, prompt
category) pairs).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel

from archsmith.graph.state import CandidateRecord


class OperatorPosterior(BaseModel):
    """Beta(alpha, beta) over the chance that the operator improves on its parent."""

    operator: str
    alpha: float
    beta: float


P = TypeVar("P", bound="OperatorPosterior | KeyedPosterior")


class KeyedPosterior(BaseModel):
    """Beta(alpha, beta) over the chance that a child made with ``key`` improves on its parent."""

    key: str
    alpha: float
    beta: float


def keyed_posteriors(
    history: Sequence[CandidateRecord], key: Callable[[CandidateRecord], str | None], keys: Sequence[str],
    prior: float = 1.0,
) -> list[KeyedPosterior]:
    """The posterior of each of ``keys`` under a Beta(prior, prior) prior, a record counting for
    ``key(record)`` (None: for none)."""
    scores = {r["id"]: r.get("score") for r in history if r.get("status") == "valid"}
    wins = {k: 0 for k in keys}
    losses = {k: 0 for k in keys}
    for record in history:
        name, parents = key(record), record.get("parent_ids") or []
        if name not in wins or not parents or scores.get(parents[0]) is None:
            continue
        if record.get("status") == "valid" and record.get("score") is not None:
            if record["score"] > scores[parents[0]]:
                wins[name] += 1
            else:
                losses[name] += 1
        elif record.get("discard_stage") == "score":
            losses[name] += 1
    return [KeyedPosterior(key=k, alpha=prior + wins[k], beta=prior + losses[k]) for k in keys]


def operator_posteriors(
    history: Sequence[CandidateRecord], operators: Sequence[str], prior: float = 1.0
) -> list[OperatorPosterior]:
    """The posterior of each operator in ``operators`` under a Beta(prior, prior) prior."""
    return [OperatorPosterior(operator=p.key, alpha=p.alpha, beta=p.beta)
            for p in keyed_posteriors(history, lambda r: r.get("operator"), operators, prior)]


def draw_key(posteriors: Sequence[KeyedPosterior], rng: random.Random, epsilon: float) -> str:
    """:func:`draw_operator` for keyed posteriors."""
    return _draw(posteriors, rng, epsilon).key


def draw_operator(posteriors: Sequence[OperatorPosterior], rng: random.Random, epsilon: float) -> str:
    """Thompson sampling with epsilon exploration: with probability ``epsilon`` any operator,
    else the one whose posterior draw is highest."""
    return _draw(posteriors, rng, epsilon).operator


def _draw(posteriors: Sequence[P], rng: random.Random, epsilon: float) -> P:
    if not posteriors:
        raise ValueError("no operators to choose from")
    if rng.random() < epsilon:
        return rng.choice(list(posteriors))
    return max(posteriors, key=lambda p: rng.betavariate(p.alpha, p.beta))
