"""The Navigator's ``model`` strategy: which children to try, chosen from many proposals.

Each generation:

1. Warm start (fewer valid candidates than the warm-up size): a pool of proposals (fresh samples
   of an enumerable space, else mutations of the seeds) filtered by the budget, from which
   :func:`~archsmith.agents.policies.surrogate.warm_start` takes the most capable, spread out.
   With ``search.warm_start = "random"`` the first children are the pool's first proposals.
2. Otherwise: a score model is fitted on the valid candidates' free features; proposals are every
   single-position change of the pool's members (enumerable spaces), ``mutations_per_parent``
   mutations of each member with operators from the bandit, and ``random_proposals`` fresh
   samples; proposals already archived or over the budget are dropped; the children are chosen by
   upper confidence bounds (:func:`~archsmith.agents.policies.surrogate.choose_batch`).

Nothing is stored between generations: the model is refitted from the history (resume needs no
saved state) and every draw comes from ``rng`` (a seed fixes the run).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from archsmith.agents.policies.bandit import OperatorPosterior, draw_operator
from archsmith.agents.policies.surrogate import choose_batch, cost_matrix, fit_model, predict, warm_start
from archsmith.graph.config import ArchsmithConfig
from archsmith.graph.state import CandidateRecord, Strategy, valid_records
from archsmith.tools.spaces import EnumerableSpace, SearchSpace, local_operators
from archsmith.tools.spaces.features import structure_features

SAMPLE = "sample"  # the operator of a plan whose child is a fresh sample, not a mutation
Costs = tuple[int | None, int | None]


@dataclass
class Proposal:
    """A possible child: its canonical text and how it was made."""

    text: str
    parent: CandidateRecord | None
    operator: str
    description: str


class CandidateFeatures:
    """Free features of candidates (structure + costs), memoised by canonical text.

    ``costs`` gives (params, FLOPs) without evaluating: the evaluator's ``measure`` (a table's
    cost columns) or the space's closed forms. Costs join the features only when every row of a
    matrix has them, so evaluated and proposed candidates are described alike.
    """

    def __init__(self, space: SearchSpace, costs: Callable[[str], Costs]) -> None:
        self.space = space
        self._costs = costs
        self._structure: dict[str, list[float]] = {}
        self._cost_cache: dict[str, Costs] = {}

    def costs(self, text: str) -> Costs:
        if text not in self._cost_cache:
            self._cost_cache[text] = self._costs(text)
        return self._cost_cache[text]

    def structure(self, text: str) -> list[float]:
        if text not in self._structure:
            self._structure[text] = structure_features(self.space, text)
        return self._structure[text]

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.array([self.structure(t) for t in texts], dtype=float)
        costs = cost_matrix([self.costs(t) for t in texts])
        return np.hstack([rows, costs]) if costs is not None else rows


@dataclass
class ModelPlan:
    """The plans of one generation and what the trace should show of how they were chosen."""

    plans: list[Strategy]
    info: dict[str, Any] = field(default_factory=dict)


def plan_generation(
    history: Sequence[CandidateRecord],
    pool: Sequence[CandidateRecord],
    config: ArchsmithConfig,
    space: SearchSpace,
    features: CandidateFeatures,
    taken: Callable[[str], bool],
    posteriors: Sequence[OperatorPosterior],
    operators: Sequence[str],
    size: int,
    rng: random.Random,
) -> ModelPlan:
    """``size`` plans for the next children; ``pool`` are the parents (top-k or seeds)."""
    settings = config.search
    warm_up = 2 * settings.top_k
    valid = valid_records(list(history))
    if len(valid) < warm_up:
        plan = _warm_start(valid, pool, config, space, features, taken, warm_up - len(valid), rng)
        plan.plans = plan.plans[:size]
        return plan
    started = time.perf_counter()
    proposals = _proposals(pool, config, space, features, taken, posteriors, operators, rng)
    if not proposals:
        return ModelPlan([], {"model": "no new proposal within the budget"})
    texts = [r["canonical"] or space.canonical(r["text"]) for r in valid]
    scores = np.array([float(r["score"]) for r in valid])
    centre, scale = float(scores.mean()), float(scores.std()) or 1.0
    model = fit_model(features.matrix(texts), (scores - centre) / scale, settings.model.trees, rng.randrange(2**31))
    mean, std = predict(model, features.matrix([p.text for p in proposals]))
    plans = []
    for index, weight in choose_batch(mean, std, size, settings.model.exploration):
        proposal = proposals[index]
        plan = _plan(proposal, f"UCB weight {weight:.2f}: predicted {mean[index] * scale + centre:.4g} "
                               f"± {std[index] * scale:.3g}")
        plan["predicted_score"] = float(mean[index] * scale + centre)
        plan["predicted_std"] = float(std[index] * scale)
        plans.append(plan)
    info = {"model": {"trained_on": len(valid), "proposals": len(proposals), "trees": settings.model.trees,
                      "seconds": round(time.perf_counter() - started, 4)}}
    return ModelPlan(plans, info)


def _plan(proposal: Proposal, rationale: str) -> Strategy:
    parent = proposal.parent
    return Strategy(
        parent_ids=[parent["id"]] if parent else [],
        parent_texts=[parent["text"]] if parent else [],
        operator=proposal.operator,
        idea=proposal.description,
        rationale=rationale,
        proposal=proposal.text,
    )


def _within_budget(config: ArchsmithConfig, features: CandidateFeatures, text: str) -> bool:
    return not config.budget.violations(*features.costs(text))


def _warm_start(
    valid: list[CandidateRecord],
    pool: Sequence[CandidateRecord],
    config: ArchsmithConfig,
    space: SearchSpace,
    features: CandidateFeatures,
    taken: Callable[[str], bool],
    count: int,
    rng: random.Random,
) -> ModelPlan:
    wanted = count * config.search.model.warm_start_pool
    proposals: dict[str, Proposal] = {}
    for _ in range(4 * wanted):  # repeats and over-budget draws are skipped
        if len(proposals) >= wanted:
            break
        proposal = _sample(space, rng) if isinstance(space, EnumerableSpace) else _mutation(pool, space, None, rng)
        if proposal is None or proposal.text in proposals or taken(proposal.text):
            continue
        if _within_budget(config, features, proposal.text):
            proposals[proposal.text] = proposal
    candidates = list(proposals.values())
    if config.search.warm_start == "random":
        chosen = list(range(min(count, len(candidates))))
        how = "warm start: random"
    else:
        texts = [p.text for p in candidates]
        costs = cost_matrix([features.costs(t) for t in texts]) if texts else None
        rows = np.array([features.structure(t) for t in texts], dtype=float) if texts else np.zeros((0, 0))
        chosen = warm_start(rows, costs, count, rng)
        how = "warm start: most capable within the budget, spread" if costs is not None else "warm start: spread"
    plans = [_plan(candidates[i], how) for i in chosen]
    return ModelPlan(plans, {"warm_start": {"pool": len(candidates), "chosen": len(plans), "rule": how}})


def _sample(space: EnumerableSpace, rng: random.Random) -> Proposal:
    return Proposal(space.canonical(space.sample(rng)), None, SAMPLE, "a fresh sample")


def _mutation(
    pool: Sequence[CandidateRecord], space: SearchSpace, operator: str | None, rng: random.Random,
    parent: CandidateRecord | None = None,
) -> Proposal | None:
    parent = parent or (rng.choice(list(pool)) if pool else None)
    if parent is None:
        return None
    try:
        mutation = space.mutate(parent["text"], rng, operator)
    except ValueError:
        try:  # the operator has no site in this parent
            mutation = space.mutate(parent["text"], rng, None)
        except ValueError:
            return None
    if not space.validate(mutation.child).ok:
        return None
    return Proposal(space.canonical(mutation.child), parent, mutation.operator, mutation.description)


def _neighbours(parent: CandidateRecord, space: EnumerableSpace) -> list[Proposal]:
    """Every candidate one position away from ``parent`` (named by the space's smallest operator,
    which makes such a change)."""
    operator = local_operators(space)[0]
    indices = space.encode(parent["text"])
    found = []
    for position, options in enumerate(space.choices()):
        for option in range(len(options)):
            if option != indices[position]:
                changed = list(indices)
                changed[position] = option
                description = f"position {position}: {options[indices[position]]} -> {options[option]}"
                found.append(Proposal(space.canonical(space.decode(changed)), parent, operator, description))
    return found


def _proposals(
    pool: Sequence[CandidateRecord],
    config: ArchsmithConfig,
    space: SearchSpace,
    features: CandidateFeatures,
    taken: Callable[[str], bool],
    posteriors: Sequence[OperatorPosterior],
    operators: Sequence[str],
    rng: random.Random,
) -> list[Proposal]:
    settings = config.search
    found: list[Proposal] = []
    for parent in pool:
        if isinstance(space, EnumerableSpace):
            found.extend(_neighbours(parent, space))
        for _ in range(settings.model.mutations_per_parent):
            operator = (draw_operator(posteriors, rng, settings.bandit_epsilon) if settings.operator_bandit
                        else rng.choice(list(operators)))
            proposal = _mutation(pool, space, operator, rng, parent=parent)
            if proposal is not None:
                found.append(proposal)
    if isinstance(space, EnumerableSpace):
        found.extend(_sample(space, rng) for _ in range(settings.model.random_proposals))
    unique: dict[str, Proposal] = {}
    for proposal in found:
        if proposal.text not in unique and not taken(proposal.text) and _within_budget(config, features, proposal.text):
            unique[proposal.text] = proposal
    return list(unique.values())
