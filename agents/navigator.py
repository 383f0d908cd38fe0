"""Navigator: reads the history and plans the next generation's children.

It decides, per child, the parents, the mutation operator, an idea and the phase (PhaseNAS:
exploration on a small model, then refinement around the best candidate on a large one), and it
is the only role with a memory across iterations (CoLLM-NAS), switchable in config.
"""

from __future__ import annotations

from typing import Any

from archsmith.agents.answers import AnswerError, complete_items, extract_json
from archsmith.agents.base import Agent, register_agent
from archsmith.agents.fairnad import STAGE_ITERATIVE, STAGE_PARETO, plan_generation
from archsmith.agents.policies import model_plans
from archsmith.agents.policies.bandit import draw_operator, operator_posteriors
from archsmith.agents.policies.model_plans import SAMPLE, CandidateFeatures
from archsmith.agents.selection import (
    choose_parent,
    next_phase,
    parent_pool,
    refinement_base,
    rng_for,
)
from archsmith.graph.state import (
    CandidateRecord,
    Phase,
    SearchState,
    Strategy,
    best_record,
    candidate_id,
)
from archsmith.graph.trace import StepRecord
from archsmith.knowledge.sampling import SampledIdea
from archsmith.tools.spaces import EnumerableSpace, local_operators
from archsmith.tools.spaces.features import closed_form_costs

MEMORY_LINES = 20
SEED_PREFIX = "seed"
WARM_UP_FACTOR = 2  # random samples before mutation, in units of the pool size (top_k)
EXHAUSTED_AFTER = 3  # duplicate children after which a refinement base is considered used up


@register_agent("navigator")
class Navigator(Agent):
    scope = "search"
    needs_fallback = True  # every generation needs a plan: an unusable answer -> algorithmic plans

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.features = CandidateFeatures(ctx.space, self._free_costs)

    def _free_costs(self, text: str) -> tuple[int | None, int | None]:
        """(params, FLOPs) without evaluating: the evaluator's measure (a table's cost columns),
        else the space's closed forms."""
        params, flops = self.ctx.evaluator.measure(text)
        if params is None or flops is None:
            closed = closed_form_costs(self.ctx.space, text, self.ctx.config.budget.num_classes)
            params, flops = params if params is not None else closed[0], flops if flops is not None else closed[1]
        return params, flops

    def _operator_choice(self, state: SearchState, operators: list[str], step: StepRecord):
        """The bandit's posteriors over ``operators`` (written to the trace) and a chooser."""
        search = self.ctx.config.search
        posteriors = operator_posteriors(state.get("history", []), operators)
        if search.operator_bandit:
            step.tools["operator_posteriors"] = [p.model_dump() for p in posteriors]
            return posteriors, lambda rng: draw_operator(posteriors, rng, search.bandit_epsilon)
        return posteriors, lambda rng: rng.choice(operators)

    # -- shared ---------------------------------------------------------------------------

    def _plan_size(self, state: SearchState, wanted: int | None = None) -> int:
        """Children for this generation: never more than the budget still allows."""
        search = self.ctx.config.search
        history = state.get("history", [])
        evaluated = sum(1 for r in history if r.get("status") == "valid")
        remaining = min(search.max_candidates - evaluated, search.children_cap() - len(history))
        return max(0, min(search.children_per_generation if wanted is None else wanted, remaining))

    def _parents(self, state: SearchState) -> dict[str, str]:
        """Candidates a plan may name as parents: the pool, or the seeds before any is valid."""
        pool = parent_pool(state.get("history", []), self.ctx.config)
        if pool:
            return {r["id"]: r["text"] for r in pool}
        return {f"{SEED_PREFIX}{i}": text for i, text in enumerate(self.ctx.space.initial())}

    def _phase(self, state: SearchState) -> tuple[Phase, str | None]:
        history = state.get("history", [])
        phase = next_phase(history, state.get("phase", "exploration"), self.ctx.config)
        base = refinement_base(history, EXHAUSTED_AFTER) if phase == "refinement" else None
        return phase, base["id"] if base else None

    def _draw_ideas(self, state: SearchState, count: int, base: str | None) -> list[SampledIdea | None]:
        """One idea per child from the knowledge store (None when the run uses no store).

        Exploration draws fairly over the tree (knowledge.sampling); refinement draws among the
        ideas most like the base candidate's idea (FairNAD's iterative mutation), when it had one.
        A separate random stream, so that using ideas leaves the rest of the plan unchanged.
        """
        sampler = self.ctx.ideas
        if sampler is None or count == 0:
            return [None] * count
        rng = rng_for(self.ctx.config.seed, "ideas", state.get("generation", 0))
        similar = []
        wanted = self.ctx.config.knowledge.similar_in_refinement
        record = next((r for r in state.get("history", []) if r["id"] == base), None) if base else None
        if record and record.get("idea_id") and wanted and self.ctx.idea_store is not None:
            similar = self.ctx.idea_store.search(record.get("idea", ""), wanted, target=self.ctx.config.knowledge.target)
        return [sampler.draw_from(similar, rng) if similar else sampler.draw(rng) for _ in range(count)]

    def _phase_model(self, phase: Phase) -> str | None:
        phases = self.ctx.config.phases
        return phases.exploration_model if phase == "exploration" else phases.refinement_model

    def _finish(
        self, state: SearchState, plans: list[Strategy], phase: Phase, base: str | None, step: StepRecord
    ) -> dict[str, Any]:
        generation = state.get("generation", 0) + 1
        first = state.get("next_candidate", 1)
        feedback = _feedback(state.get("history", [])) if self.ctx.config.role("generator").memory else []
        for offset, plan in enumerate(plans):
            plan["candidate_id"] = candidate_id(first + offset)
            plan["phase"] = phase
            plan.setdefault("model", self._phase_model(phase))
            if feedback:
                plan["feedback"] = feedback
        step.generation = generation
        step.decision = f"{phase}: {len(plans)} children" + (f", base {base}" if base else "")
        step.parsed = plans
        memory = list(state.get("memory", []))
        if self.settings.memory is not False:
            memory.append(_memory_line(state.get("history", []), generation, phase))
            memory = memory[-MEMORY_LINES:]
        return {
            "generation": generation,
            "next_candidate": first + len(plans),
            "phase": phase,
            "base_id": base,
            "plans": plans,
            "memory": memory,
        }

    # -- algorithmic -----------------------------------------------------------------------

    def algorithmic(self, state: SearchState, step: StepRecord) -> dict[str, Any]:
        phase, base = self._phase(state)
        if self.ctx.config.search.mutation == "fairnad":
            plans = self._fairnad_plans(state)
            step.inputs = {"stages": _stage_counts(plans), "pool": list(self._parents(state))}
            return self._finish(state, plans, phase, base, step)
        step.inputs = {"phase": phase, "base": base, "pool": list(self._parents(state)),
                       "strategy": self.ctx.config.search.strategy}
        if self.ctx.config.search.strategy == "model":
            plans = self._model_plans(state, phase, base, step)
            if not plans and self._plan_size(state):  # no new proposal: plain mutations (which may fail)
                step.tools["model_fallback"] = "no proposal: the evolution strategy plans this generation"
                plans = self._algorithmic_plans(state, phase, base, step)
        else:
            plans = self._algorithmic_plans(state, phase, base, step)
        return self._finish(state, plans, phase, base, step)

    def _pool(self, state: SearchState) -> list[CandidateRecord]:
        """The parents as records (seeds, before any candidate is valid, with score 0)."""
        records = {r["id"]: r for r in state.get("history", [])}
        return [records.get(pid) or {"id": pid, "text": text, "score": 0.0} for pid, text in self._parents(state).items()]

    def _generation(self, pool: list[CandidateRecord], posteriors: Any, operators: list[str], size: int,
                    rng: Any, wishes: list[list[str]] | None = None) -> model_plans.Generation:
        """The inputs of model_plans for this run (duplicates: the archive's canonical forms)."""
        return model_plans.Generation(pool, self.ctx.config, self.ctx.space, self.features,
                                      lambda key: self.ctx.archive.owner(key) is not None,
                                      posteriors, operators, size, rng, wishes or [])

    def _model_plans(self, state: SearchState, phase: Phase, base: str | None, step: StepRecord) -> list[Strategy]:
        """The surrogate-guided strategy (agents.policies.model_plans); the refinement base, when
        there is one, joins the pool of parents. Every operator stays available in refinement: the
        model judges the proposals, and single changes alone leave a search stuck in one basin."""
        history = state.get("history", [])
        pool = self._pool(state)
        if base and base not in {r["id"] for r in pool}:
            pool.insert(0, next(r for r in history if r["id"] == base))
        operators = self.ctx.space.operators()
        posteriors, _ = self._operator_choice(state, operators, step)
        size = self._plan_size(state)
        ideas = self._draw_ideas(state, size, base)
        realise = getattr(self.ctx.space, "operators_for_idea", None)
        wishes = [[op for op in realise(d.stored.idea.tag) if op in operators] if d and realise else []
                  for d in ideas]
        plan = model_plans.plan_generation(history, self._generation(
            pool, posteriors, operators, size, rng_for(self.ctx.config.seed, "model", state.get("generation", 0)), wishes))
        for child, (drawn, wish) in enumerate(zip(ideas, wishes)):
            if drawn is not None and child < len(plan.plans):
                _attach(plan.plans[child], drawn)  # the idea is the LLM Generator's; its transform, when one realises it
                if wish and plan.plans[child]["operator"] in wish:
                    plan.plans[child]["rationale"] += f"; {plan.plans[child]['operator']} realises the idea's category"
        step.tools.update(plan.info)
        if plan.score_model is not None:
            self.ctx.score_model = plan.score_model
        return plan.plans

    def _model_suggestions(
        self, state: SearchState, phase: Phase, base: str | None, step: StepRecord
    ) -> list[dict[str, Any]]:
        """For the llm policy's prompt: the children the score model would choose (parent, change,
        predicted score), when search.strategy = "model" and the warm start is over."""
        if self.ctx.config.search.strategy != "model":
            return []
        return [{"parent_id": (plan["parent_ids"] or ["(a fresh sample)"])[0], "change": plan.get("idea", ""),
                 "predicted": round(plan["predicted_score"], 4), "std": round(plan.get("predicted_std", 0.0), 4)}
                for plan in self._model_plans(state, phase, base, step) if "predicted_score" in plan]

    def _algorithmic_plans(
        self, state: SearchState, phase: Phase, base: str | None, step: StepRecord
    ) -> list[Strategy]:
        rng = rng_for(self.ctx.config.seed, "navigator", state.get("generation", 0))
        history = {r["id"]: r for r in state.get("history", [])}
        pool = self._pool(state)
        operators = self.ctx.space.operators()
        _, choose_operator = self._operator_choice(state, local_operators(self.ctx.space) if base else operators, step)
        # Enumerable spaces get a warm-up of random samples before mutation takes over (like an
        # evolutionary search's initial population); other spaces start from their seeds.
        evaluated = sum(1 for r in history.values() if r.get("status") == "valid")
        sampling = isinstance(self.ctx.space, EnumerableSpace) and not base
        size = self._plan_size(state)
        warm: list[Strategy] = []
        if sampling and self.ctx.config.search.warm_start == "cost_aware":
            slots = max(0, min(size, WARM_UP_FACTOR * self.ctx.config.search.top_k - evaluated))
            warm = model_plans.warm_start_plans(self._generation(
                pool, [], operators, slots, rng_for(self.ctx.config.seed, "warm-start", state.get("generation", 0))), slots)
        ideas = self._draw_ideas(state, size, base)
        idea_rng = rng_for(self.ctx.config.seed, "idea-operators", state.get("generation", 0))
        realise = getattr(self.ctx.space, "operators_for_idea", None)
        plans: list[Strategy] = []
        for index, drawn in zip(range(size), ideas):
            if sampling and evaluated + index < WARM_UP_FACTOR * self.ctx.config.search.top_k:
                if warm:  # search.warm_start = "cost_aware": the model strategy's warm-start choices
                    plans.append(warm.pop(0))
                    continue
                plans.append(Strategy(parent_ids=[], parent_texts=[], operator=SAMPLE,
                                      idea="a random candidate", rationale="warm up the pool"))
                continue
            parent = history[base] if base else choose_parent(pool, rng)
            operator = choose_operator(rng)
            plan = Strategy(
                parent_ids=[parent["id"]],
                parent_texts=[parent["text"]],
                operator=operator,
                idea=f"apply {operator} to {parent['id']}",
                rationale="refine the best candidate" if base else "explore around the pool",
            )
            if drawn is not None:
                _attach(plan, drawn)
                # The space's transforms that realise this kind of idea, if it has any: then the
                # child applies the idea's category; otherwise the idea is only recorded.
                fitting = [op for op in (realise(drawn.stored.idea.tag) if realise else []) if op in operators]
                if fitting:
                    plan["operator"] = idea_rng.choice(fitting)
                    plan["rationale"] = f"{plan['operator']} realises the idea's category"
                else:
                    plan["rationale"] += "; the idea is recorded (no transform realises it without an LLM)"
            plans.append(plan)
        return plans

    # -- FairNAD's multi-type mutation ------------------------------------------------------

    def _fairnad_plans(self, state: SearchState, iterative_ideas: list[str] | None = None) -> list[Strategy]:
        """Stages I-III (agents.fairnad) with ideas attached: fair draws for the initial and stage-I
        plans; for stage III ``iterative_ideas`` (from the LLM) or related ideas from the store."""
        config = self.ctx.config
        generation = state.get("generation", 0)
        settings = config.search.fairnad
        wanted = (settings.initial if not state.get("history") else
                  settings.idea_parents + settings.pareto_parents + settings.iterative_parents)
        rng = rng_for(config.seed, "fairnad", generation)
        seeds = {f"{SEED_PREFIX}{i}": text for i, text in enumerate(self.ctx.space.initial())}
        plans = plan_generation(state.get("history", []), seeds, config, self.ctx.space.operators(), rng,
                                self._plan_size(state, wanted))
        idea_rng = rng_for(config.seed, "fairnad-ideas", generation)
        realise = getattr(self.ctx.space, "operators_for_idea", None)
        operators = self.ctx.space.operators()
        iterative = list(iterative_ideas or [])
        for plan in plans:
            stage = plan.get("stage")
            if stage == STAGE_ITERATIVE and iterative:
                plan["idea"] = iterative.pop(0)
                continue
            if stage == STAGE_PARETO or self.ctx.ideas is None:
                continue
            drawn = self._related_idea(plan, idea_rng) if stage == STAGE_ITERATIVE else self.ctx.ideas.draw(idea_rng)
            _attach(plan, drawn)
            fitting = [op for op in (realise(drawn.stored.idea.tag) if realise else []) if op in operators]
            plan["operator"] = idea_rng.choice(fitting) if fitting else None
        return plans

    def _related_idea(self, plan: Strategy, rng: Any) -> SampledIdea:
        """Stage III without an LLM: the stored idea most like the parent's (it improved), or a
        fresh idea of the same main category (it degraded)."""
        assert self.ctx.ideas is not None
        text, tag = plan.get("parent_idea", ""), plan.get("parent_idea_tag", "")
        store = self.ctx.idea_store
        if not text or store is None:
            return self.ctx.ideas.draw(rng)
        if plan.get("parent_improved"):
            similar = [s for s in store.search(text, 4) if s.idea.text != text]
            return self.ctx.ideas.draw_from(similar, rng)
        main = tag.split(" > ")[2] if tag.count(" > ") == 3 else None
        same = [s for s in store.ideas(main_category=main) if s.idea.text != text] if main else []
        return self.ctx.ideas.draw_from(same, rng)

    def _fairnad_llm(self, state: SearchState, step: StepRecord, phase: Phase, base: str | None) -> dict[str, Any]:
        """FairNAD with an LLM: the stage-III ideas come from navigator/iterate.md."""
        plans = self._fairnad_plans(state)
        chains = [p for p in plans if p.get("stage") == STAGE_ITERATIVE]
        step.inputs = {"stages": _stage_counts(plans)}
        if chains:
            history = {r["id"]: r for r in state.get("history", [])}
            items = [{"parent_id": p["parent_ids"][0], "idea": p.get("parent_idea", ""),
                      "tag": p.get("parent_idea_tag", ""), "improved": p.get("parent_improved", False),
                      "score": history[p["parent_ids"][0]].get("score")} for p in chains]
            variables = {"items": items, "count": len(items), "space_rules": self.ctx.space.describe(),
                         "tree": self.ctx.idea_store.tree.render("performance") if self.ctx.idea_store else ""}
            step.inputs["items"] = items

            def parse(answer: str) -> list[str]:
                ideas = extract_json(answer).get("ideas")
                if not isinstance(ideas, list) or len(ideas) < len(items):
                    raise AnswerError(f'expected {{"ideas": [...]}} with {len(items)} ideas, one per parent')
                texts = [str(i.get("text") if isinstance(i, dict) else i).strip() for i in ideas[: len(items)]]
                if not all(texts):
                    raise AnswerError("every idea needs a non-empty text")
                return [" ".join(t.split()[:60]) for t in texts]

            ideas = self.ask_llm("iterate", variables, parse, step, model=self._phase_model(phase))
            plans = self._fairnad_plans(state, iterative_ideas=ideas)
        return self._finish(state, plans, phase, base, step)

    # -- llm -------------------------------------------------------------------------------

    def llm(self, state: SearchState, step: StepRecord) -> dict[str, Any]:
        phase, base = self._phase(state)
        if self.ctx.config.search.mutation == "fairnad":
            return self._fairnad_llm(state, step, phase, base)
        parents = self._parents(state)
        size = self._plan_size(state)
        if size == 0:
            return self._finish(state, [], phase, base, step)
        history = state.get("history", [])
        drawn = self._draw_ideas(state, size, base)
        variables = {
            "ideas": [
                {"text": d.stored.idea.text, "tag": d.stored.idea.tag.path(), "target": d.mutation_target}
                for d in drawn if d is not None
            ],
            "phase": phase,
            "base_id": base,
            "count": size,
            "space_rules": self.ctx.space.describe(),
            "operators": self.ctx.space.operators(),
            "budget": self.budget_variables(),
            "pool": [
                {"id": pid, "text": text, **_metrics(history, pid)} for pid, text in parents.items()
            ],
            # Reasons only: given their ids, small models name discarded children as parents
            # (42 of 59 navigator steps of an nb201 run with Qwen2.5-Coder-0.5B failed so).
            "recent_failures": [
                str(r.get("discard_reason")) for r in history[-8:] if r.get("status") == "discarded"
            ],
            "memory": state.get("memory", []) if self.settings.memory is not False else [],
            "model_suggestions": self._model_suggestions(state, phase, base, step),
        }
        step.inputs = {k: v for k, v in variables.items() if k != "space_rules"}
        operators = set(self.ctx.space.operators())

        def parse(answer: str) -> list[Strategy]:
            problems: list[str] = []
            try:
                items = extract_json(answer).get("plans")
            except AnswerError as error:
                # Cut off (often after running on past the plans asked for): use the plans it completed.
                items = [item for item in complete_items(answer, "plans") if isinstance(item, dict)]
                if not items:
                    raise
                problems.append(f"{error}; used the {len(items)} complete plan(s) before that point")
            if not isinstance(items, list) or not items:
                raise AnswerError('expected {"plans": [...]} with at least one plan')
            plans = []
            for index, item in enumerate(items):
                if len(plans) == size:
                    break
                if not isinstance(item, dict):
                    problems.append(f"plans[{index}] is not an object")
                    continue
                ids = item.get("parent_ids") or []
                ids = [ids] if isinstance(ids, str) else [pid for pid in ids if isinstance(pid, str)]
                unknown = [pid for pid in ids if pid not in parents]
                ids = [pid for pid in ids if pid in parents]
                if not ids and len(parents) == 1:  # one candidate to start from: the choice is forced
                    ids = list(parents)
                    problems.append(f"plans[{index}].parent_ids {item.get('parent_ids')!r}: not in the pool; "
                                    f"used its only candidate {ids[0]}")
                    unknown = []
                if not ids:
                    problems.append(
                        f"plans[{index}].parent_ids must name candidates from the pool "
                        f"({', '.join(parents)}); got {item.get('parent_ids')!r}"
                    )
                    continue
                if unknown:  # a usable plan that also names discarded children: keep what it can use
                    problems.append(f"plans[{index}]: dropped parent ids not in the pool: {unknown}")
                operator = item.get("operator")
                plans.append(
                    Strategy(
                        parent_ids=list(ids),
                        parent_texts=[parents[pid] for pid in ids],
                        operator=operator if operator in operators else None,
                        idea=str(item.get("idea") or "")[:500],
                        rationale=str(item.get("rationale") or "")[:500],
                    )
                )
            if not plans:
                raise AnswerError("; ".join(problems) or "no usable plan")
            if problems:  # the plans kept are used; the trace says what was left out
                step.tools["plan_problems"] = problems
            return plans

        # No usable answer raises NoUsableAnswer; Agent.__call__ then plans algorithmically.
        plans = self.ask_llm("plan", variables, parse, step, model=self._phase_model(phase))
        while len(plans) < size:  # the model planned fewer children than asked
            plans.append(dict(plans[len(plans) % max(len(plans), 1)]))  # type: ignore[arg-type]
        for plan, idea in zip(plans, drawn):
            if idea is not None:  # child i applies sampled idea i (the model chose parents and operator)
                _attach(plan, idea)
        return self._finish(state, plans, phase, base, step)


def _stage_counts(plans: list[Strategy]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for plan in plans:
        counts[plan.get("stage", "")] = counts.get(plan.get("stage", ""), 0) + 1
    return counts


def _attach(plan: Strategy, drawn: SampledIdea) -> None:
    idea = drawn.stored.idea
    plan["idea"] = idea.text
    plan["idea_id"] = drawn.stored.id
    plan["idea_tag"] = idea.tag.path()
    plan["mutation_target"] = drawn.mutation_target


def _metrics(history: list[CandidateRecord], record_id: str) -> dict[str, Any]:
    for record in history:
        if record["id"] == record_id:
            return {"score": record.get("score"), "params": record.get("params"), "flops": record.get("flops")}
    return {"score": None, "params": None, "flops": None}


FEEDBACK_RECORDS = 6


def _feedback(history: list[CandidateRecord]) -> list[str]:
    """The latest children and how they fared, for a Generator that keeps a memory."""
    lines = []
    for record in history[-FEEDBACK_RECORDS:]:
        if record.get("status") == "valid":
            outcome = f"score {record['score']:.3f}, params {record.get('params')}"
        else:
            outcome = f"discarded: {record.get('discard_reason')}"
        lines.append(f"{record.get('text') or '(no child)'} -> {outcome}")
    return lines


def _memory_line(history: list[CandidateRecord], generation: int, phase: Phase) -> str:
    best = best_record(history)
    valid = sum(1 for r in history if r.get("status") == "valid")
    if best is None:
        return f"generation {generation} ({phase}): no valid candidate yet, {len(history)} tried"
    return (
        f"generation {generation} ({phase}): best {best['id']} score {best['score']:.3f} "
        f"params {best.get('params')}; {valid}/{len(history)} valid so far"
    )
