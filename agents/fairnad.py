"""FairNAD's multi-type mutation (Section 4.3, Algorithm 1), as plans for the Navigator.

Generation 1 mutates the base ``k0`` times, each with a fairly sampled idea. Every later generation
has three stages:

I.   ``k1`` top-k parents, each mutated with a fairly sampled idea;
II.  ``k2`` parents from the Pareto front of (score up, params down, FLOPs down), chosen by NSGA-II's
     non-dominated sorting and crowding distance (pymoo): a parent any of whose costs is below
     ``upscale_below`` x its limit is upscaled (width or depth), any other gets a hyperparameter
     change unrelated to width and depth (kernel size, stride, activation);
III. ``k3`` top-k parents refined iteratively: a chain continues from a stage-III child for ``d``
     steps; the next idea is related to the parent's idea, asked from the LLM (the Navigator's llm
     policy, prompt navigator/iterate.md, one variant when the parent improved on its own parent and
     another when it degraded) or, algorithmically, the idea most like it (improved) or a fresh idea
     of the same main category (degraded).

Pure functions of the history, the config and an explicit ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from archsmith.agents.selection import top_k
from archsmith.graph.config import ArchsmithConfig
from archsmith.graph.state import CandidateRecord, Strategy, valid_records
from archsmith.tools.pareto import fronts

STAGE_INITIAL, STAGE_IDEA, STAGE_PARETO, STAGE_ITERATIVE = "initial", "idea", "pareto", "iterative"
UPSCALE_OPERATORS = ("scale_width", "scale_depth", "scale_width_ratio")
HYPER_OPERATORS = ("kernel_size", "stride", "activation")
UPSCALE_IDEA = "upscale the model: increase its width or its depth while staying within the budget"
HYPER_IDEA = ("tune hyperparameters unrelated to width and depth: kernel sizes, strides or the "
              "activation function")


def nsga2_select(records: Sequence[CandidateRecord], k: int) -> list[CandidateRecord]:
    """``k`` records by NSGA-II survival: non-dominated rank first, then crowding distance."""
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance

    records = sorted(records, key=lambda r: r["id"])
    if k <= 0 or not records:
        return []
    objectives = np.array(
        [[-float(r["score"]), float(r.get("params") or 0), float(r.get("flops") or 0)] for r in records]
    )
    chosen: list[int] = []
    for front in (np.array(f) for f in fronts(objectives)):
        if len(chosen) + len(front) <= k:
            chosen.extend(int(i) for i in front)
            continue
        crowding = calc_crowding_distance(objectives[front])
        order = sorted(range(len(front)), key=lambda i: (-crowding[i], records[front[i]]["id"]))
        chosen.extend(int(front[i]) for i in order[: k - len(chosen)])
        break
    return [records[i] for i in chosen]


def below_budget(record: CandidateRecord, config: ArchsmithConfig) -> bool:
    """Whether any cost is below ``upscale_below`` x its limit (room to upscale)."""
    budget, fraction = config.budget, config.search.fairnad.upscale_below
    checks = []
    if budget.params_m is not None and record.get("params") is not None:
        checks.append(record["params"] < fraction * budget.params_m * 1e6)
    if budget.flops_m is not None and record.get("flops") is not None:
        checks.append(record["flops"] < fraction * budget.flops_m * 1e6)
    return any(checks)


def _plan(parent: CandidateRecord, stage: str, operator: str | None, idea: str, rationale: str) -> Strategy:
    return Strategy(parent_ids=[parent["id"]], parent_texts=[parent["text"]], operator=operator,
                    idea=idea, rationale=rationale, stage=stage)


def chain_step(record: CandidateRecord) -> int:
    """How many stage-III steps led to this record (0 when it is not a stage-III child)."""
    return int(record.get("iteration") or 0) if record.get("stage") == STAGE_ITERATIVE else 0


def improved(record: CandidateRecord, history: dict[str, CandidateRecord]) -> bool:
    parents = [history[p] for p in record.get("parent_ids") or [] if p in history]
    parent_score = max((p["score"] for p in parents if p.get("score") is not None), default=None)
    return parent_score is None or (record.get("score") or 0) > parent_score


def plan_generation(
    history: Sequence[CandidateRecord],
    seeds: dict[str, str],
    config: ArchsmithConfig,
    operators: Sequence[str],
    rng: random.Random,
    remaining: int,
) -> list[Strategy]:
    """The next generation's plans (ideas and their operators are attached by the Navigator)."""
    settings = config.search.fairnad
    valid = valid_records(list(history))
    by_id = {r["id"]: r for r in history}
    if not valid:  # generation 1 (or nothing valid yet): mutate the base k0 times
        bases = [{"id": pid, "text": text, "score": None} for pid, text in seeds.items()]
        plans = [_plan(bases[i % len(bases)], STAGE_INITIAL, None, "", "initial mutation of the base")  # type: ignore[arg-type]
                 for i in range(settings.initial)]
        return plans[:remaining]
    plans = [_plan(parent, STAGE_IDEA, None, "", "stage I: top-k parent with a fairly sampled idea")
             for parent in top_k(valid, settings.idea_parents)]
    for parent in nsga2_select(valid, settings.pareto_parents):
        upscale = below_budget(parent, config)
        choices = [op for op in (UPSCALE_OPERATORS if upscale else HYPER_OPERATORS) if op in operators]
        plans.append(_plan(parent, STAGE_PARETO, rng.choice(choices) if choices else None,
                           UPSCALE_IDEA if upscale else HYPER_IDEA,
                           "stage II: Pareto parent " + ("below budget: upscale" if upscale else "at budget: tune")))
    ranked = sorted(valid, key=lambda r: (-r["score"], r["id"]))
    chains = [r for r in ranked if chain_step(r) < settings.iterative_steps][: settings.iterative_parents]
    for parent in chains:
        plan = _plan(parent, STAGE_ITERATIVE, None, "", "stage III: iterative refinement")
        plan["iteration"] = chain_step(parent) + 1
        plan["parent_improved"] = improved(parent, by_id)
        plan["parent_idea"] = parent.get("idea") or ""
        plan["parent_idea_tag"] = parent.get("idea_tag") or ""
        plans.append(plan)
    return plans[:remaining]

