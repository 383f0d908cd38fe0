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
    """A possible child: its text, its canonical form (``key``) and how it was made."""

    text: str
    key: str
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
class ScoreModel:
    """A fitted score model with the features it reads: predictions in the score's own units."""

    model: Any
    features: CandidateFeatures
    centre: float
    scale: float
    trained_on: int

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        mean, std = predict(self.model, self.features.matrix(texts))
        return mean * self.scale + self.centre, std * self.scale


@dataclass
class ModelPlan:
    """The plans of one generation, the model behind them (None in the warm start) and what the
    trace should show of how they were chosen."""

    plans: list[Strategy]
    info: dict[str, Any] = field(default_factory=dict)
    score_model: ScoreModel | None = None


@dataclass
class Generation:
    """What planning one generation reads besides the history: the parents (``pool``: top-k or
    seeds), the run's settings and space, the features, whether a canonical form is ``taken``
    (archived or being built), the operator posteriors, how many children, the generation's
    random stream, and ``wishes[i]``: operators child i should preferably be made by (those that
    realise its idea; empty: none)."""

    pool: Sequence[CandidateRecord]
    config: ArchsmithConfig
    space: SearchSpace
    features: CandidateFeatures
    taken: Callable[[str], bool]
    posteriors: Sequence[OperatorPosterior]
    operators: Sequence[str]
    size: int
    rng: random.Random
    wishes: Sequence[Sequence[str]] = ()

    def admissible(self, proposal: Proposal | None, chosen: dict[str, Proposal]) -> bool:
        """New (not chosen, not taken) and within the budget by its free costs."""
        return (proposal is not None and proposal.key not in chosen and not self.taken(proposal.key)
                and not self.config.budget.violations(*self.features.costs(proposal.text)))


def plan_generation(history: Sequence[CandidateRecord], g: Generation) -> ModelPlan:
    """``g.size`` plans for the next children (the warm start, then the model's choices)."""
    settings = g.config.search
    warm_up = 2 * settings.top_k
    valid = valid_records(list(history))
    if len(valid) < warm_up:
        plan = _warm_start(g, warm_up - len(valid))
        plan.plans = plan.plans[:g.size]
        return plan
    started = time.perf_counter()
    proposals = _proposals(g)
    if not proposals:
        return ModelPlan([], {"model": "no new proposal within the budget"})
    texts = [r["text"] for r in valid]
    scores = np.array([float(r["score"]) for r in valid])
    centre, scale = float(scores.mean()), float(scores.std()) or 1.0
    model = fit_model(g.features.matrix(texts), (scores - centre) / scale, settings.model.trees,
                      g.rng.randrange(2**31))
    score_model = ScoreModel(model, g.features, centre, scale, len(valid))
    mean, std = score_model.predict([p.text for p in proposals])
    plans = []
    for index, weight in choose_batch((mean - centre) / scale, std / scale, g.size, settings.model.exploration,
                                      _preferences(proposals, g.wishes, g.space, g.size)):
        plan = _plan(proposals[index], f"UCB weight {weight:.2f}: predicted {mean[index]:.4g} ± {std[index]:.3g}")
        plan["predicted_score"] = float(mean[index])
        plan["predicted_std"] = float(std[index])
        plans.append(plan)
    info = {"model": {"trained_on": len(valid), "proposals": len(proposals), "trees": settings.model.trees,
                      "evaluations_since_best": stagnation(valid),
                      "seconds": round(time.perf_counter() - started, 4)}}
    return ModelPlan(plans, info, score_model)


def stagnation(valid: Sequence[CandidateRecord]) -> int:
    """Valid candidates evaluated since the best score was first reached (0: the latest is best);
    written to the trace."""
    scores = [float(r["score"]) for r in valid]
    if not scores:
        return 0
    return len(scores) - 1 - scores.index(max(scores))


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


def warm_start_plans(g: Generation, count: int) -> list[Strategy]:
    """The warm start's ``count`` plans alone (the evolution strategy's first children when
    ``search.warm_start = "cost_aware"``)."""
    return _warm_start(g, count).plans if count > 0 else []


def _warm_start(g: Generation, count: int) -> ModelPlan:
    enumerable = isinstance(g.space, EnumerableSpace)
    settings = g.config.search.model
    wanted = count * (settings.warm_start_pool if enumerable else settings.proposals_per_child)
    proposals: dict[str, Proposal] = {}
    for _ in range(2 * wanted):  # repeats and over-budget draws are skipped
        if len(proposals) >= wanted:
            break
        proposal = _sample(g.space, g.rng) if enumerable else _mutation(g.pool, g.space, None, g.rng)
        if g.admissible(proposal, proposals):
            proposals[proposal.key] = proposal
    for proposal in _wished(g.pool, g.space, g.wishes, settings.proposals_per_child, g.rng):
        if g.admissible(proposal, proposals):
            proposals[proposal.key] = proposal
    candidates = list(proposals.values())
    if g.config.search.warm_start == "random":
        chosen = list(range(min(count, len(candidates))))
        how = "warm start: random"
    else:
        texts = [p.text for p in candidates]
        costs = cost_matrix([g.features.costs(t) for t in texts]) if texts else None
        rows = np.array([g.features.structure(t) for t in texts], dtype=float) if texts else np.zeros((0, 0))
        first = warm_start(rows, costs, count, g.rng)
        order = first + [i for i in range(len(candidates)) if i not in first]  # for children with wishes
        chosen = _in_order(order, count, _masks(candidates, g.wishes))
        how = "warm start: most capable within the budget, spread" if costs is not None else "warm start: spread"
    plans = [_plan(candidates[i], how) for i in chosen]
    return ModelPlan(plans, {"warm_start": {"pool": len(candidates), "chosen": len(plans), "rule": how}})


def _wished(
    pool: Sequence[CandidateRecord], space: SearchSpace, wishes: Sequence[Sequence[str]], per_child: int,
    rng: random.Random,
) -> list[Proposal]:
    """Mutations by the operators each child should preferably be made by, ``per_child`` each."""
    found = []
    for wish in wishes:
        for _ in range(per_child if wish else 0):
            proposal = _mutation(pool, space, rng.choice(list(wish)), rng)
            if proposal is not None and proposal.operator in wish:
                found.append(proposal)
    return found


def _preferences(
    proposals: Sequence[Proposal], wishes: Sequence[Sequence[str]], space: SearchSpace, size: int
) -> list[np.ndarray | None]:
    """Per child, the proposals it should be chosen from: those of its wished operators when it has
    wishes; else the children alternate between a smallest change of a pool member (a local
    search around the best that the model's optimism cannot starve) and a larger jump (a bigger
    mutation or a fresh sample: what gets a search out of a basin whose neighbours are used up)."""
    local = set(local_operators(space))
    nearby = np.array([p.parent is not None and p.operator in local for p in proposals])
    masks = _masks(proposals, wishes)
    masks += [None] * (size - len(masks))
    return [mask if mask is not None else (nearby if child % 2 == 0 else ~nearby) for child, mask in enumerate(masks)]


def _masks(proposals: Sequence[Proposal], wishes: Sequence[Sequence[str]]) -> list[np.ndarray | None]:
    """Per child, which proposals are made by one of its wished operators (None: no wish)."""
    return [np.array([p.operator in wish for p in proposals]) if wish else None for wish in wishes]


def _in_order(order: Sequence[int], count: int, masks: Sequence[np.ndarray | None]) -> list[int]:
    """``count`` distinct indices from ``order``: child i takes the first left that its mask
    allows (the first left when none does)."""
    chosen: list[int] = []
    for child in range(min(count, len(order))):
        mask = masks[child] if child < len(masks) else None
        left = [i for i in order if i not in chosen]
        fitting = [i for i in left if mask is None or mask[i]]
        chosen.append((fitting or left)[0])
    return chosen


def _sample(space: EnumerableSpace, rng: random.Random) -> Proposal:
    text = space.canonical(space.sample(rng))
    return Proposal(text, text, None, SAMPLE, "a fresh sample")


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
    return Proposal(mutation.child, space.canonical(mutation.child), parent, mutation.operator, mutation.description)


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
                text = space.canonical(space.decode(changed))
                found.append(Proposal(text, text, parent, operator, description))
    return found


def _proposals(g: Generation) -> list[Proposal]:
    settings = g.config.search

    def mutation(parent: CandidateRecord) -> Proposal | None:
        operator = (draw_operator(g.posteriors, g.rng, settings.bandit_epsilon) if settings.operator_bandit
                    else g.rng.choice(list(g.operators)))
        return _mutation(g.pool, g.space, operator, g.rng, parent=parent)

    found: list[Proposal | None] = []
    if isinstance(g.space, EnumerableSpace):  # proposals are cheap: neighbourhoods, mutations, samples
        for parent in g.pool:
            found.extend(_neighbours(parent, g.space))
            found.extend(mutation(parent) for _ in range(settings.model.mutations_per_parent))
        found.extend(_sample(g.space, g.rng) for _ in range(settings.model.random_proposals))
    else:  # a mutation may parse and rewrite a whole file: a few per child, round the pool
        members = list(g.pool)
        found.extend(mutation(members[i % len(members)]) for i in range(g.size * settings.model.proposals_per_child))
    found.extend(_wished(g.pool, g.space, g.wishes, settings.model.proposals_per_child, g.rng))
    unique: dict[str, Proposal] = {}
    for proposal in found:
        if g.admissible(proposal, unique):
            unique[proposal.key] = proposal
    return list(unique.values())
