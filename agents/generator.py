"""Generator: turns parent(s) + the Navigator's strategy into a child.

Stateless by default (CoLLM-NAS). With ``roles.generator.memory = true`` the Navigator hands it
the latest children and their outcomes, which the ``llm`` policy's prompt shows; the algorithmic
policy's mutations do not use them. In a space that enumerates its valid edits (the ``tree``
space; the ``yolo`` space with ``llm_answer = "edit"``), the ``llm`` policy picks one of them
instead of writing code (:mod:`tool_choice`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from archsmith.agents.answers import AnswerRejected, extract_candidates
from archsmith.agents.base import Agent, NoUsableAnswer, register_agent
from archsmith.agents.policies.model_plans import SAMPLE
from archsmith.agents.selection import DUPLICATE_PREFIX, rng_for
from archsmith.agents.tool_choice import choose_edit
from archsmith.agents.verifier import IDENTICAL_TO_PARENT, structure_problem
from archsmith.graph.state import ChildState, Strategy
from archsmith.graph.trace import StepRecord


# Mutations drawn before settling for a child that repeats an earlier one (the verifier then
# discards it as a duplicate, which costs no budget).
NOVELTY_TRIES = 25


@register_agent("generator")
class Generator(Agent):
    def algorithmic(self, state: ChildState, step: StepRecord) -> dict[str, Any]:
        strategy = state["strategy"]
        rng = rng_for(self.ctx.config.seed, "generator", strategy["candidate_id"])
        parent = strategy["parent_texts"][0] if strategy["parent_texts"] else None
        step.inputs = {"parents": strategy["parent_ids"], "operator": strategy.get("operator")}
        for attempt in range(1, NOVELTY_TRIES + 1):
            try:
                text, applied = self._mutate(parent, strategy, rng)
            except ValueError as error:  # no operator applies to this parent
                step.decision = f"no applicable mutation: {error}"
                step.parsed = None
                return {"text": None, "notes": [f"generator: {step.decision}"]}
            if self.ctx.archive.owner(self.ctx.space.canonical(text)) is None:
                break  # a child nobody has proposed yet
        step.tools["attempts"] = attempt
        step.parsed = text
        step.decision = "; ".join(applied)
        return {"text": text, "notes": [f"generator: {'; '.join(applied)}"]}

    def _mutate(self, parent: str | None, strategy: Strategy, rng: random.Random) -> tuple[str, list[str]]:
        """The Navigator's chosen proposal while nobody holds it (the model strategy); else one or
        (exploring, sometimes) two mutations of the parent, or a random sample."""
        proposal = strategy.get("proposal")
        if proposal and self.ctx.archive.owner(self.ctx.space.canonical(proposal)) is None:
            return proposal, [strategy.get("idea") or "the navigator's proposal"]
        if strategy.get("operator") == SAMPLE:
            return self.ctx.space.sample(rng), ["random sample"]  # type: ignore[attr-defined]
        assert parent is not None
        steps = 2 if strategy.get("phase") == "exploration" and rng.random() < 0.3 else 1
        text, applied = parent, []
        for index in range(steps):
            operator = strategy.get("operator") if index == 0 else None
            try:
                mutation = self.ctx.space.mutate(text, rng, operator)
            except ValueError as error:
                if operator is None:
                    raise
                # The planned operator has no site in this parent (e.g. every block already has
                # an SE module): any operator that applies instead.
                mutation = self.ctx.space.mutate(text, rng, None)
                applied.append(f"{operator} does not apply ({error})")
            text = mutation.child
            applied.append(mutation.description)
        return text, applied

    def llm(self, state: ChildState, step: StepRecord) -> dict[str, Any]:
        chosen = choose_edit(self, state, step)  # LLM as a tool: the space lists the edits
        if chosen is not None:
            return chosen
        strategy = state["strategy"]
        variables = {
            "space_rules": self.ctx.space.describe(),
            "parents": strategy["parent_texts"],
            "parent_ids": strategy["parent_ids"],
            "operator": strategy.get("operator"),
            "idea": strategy.get("idea", ""),
            "idea_tag": strategy.get("idea_tag", ""),
            "mutation_target": strategy.get("mutation_target", ""),
            "phase": strategy.get("phase", "exploration"),
            "budget": self.budget_variables(),
            "feedback": strategy.get("feedback", []),
            "count": 1,  # children asked for in this answer (see _several_in_one_answer)
        }
        step.inputs = {k: v for k, v in variables.items() if k != "space_rules"}
        if self.settings.proposals > 1 and self.settings.proposals_in_one_answer:
            return self._several_in_one_answer(variables, step, strategy)
        read = self._read_new_child(strategy) if self.ctx.config.workflow.reask_on_structure else self.read_candidate
        try:
            text = self.ask_llm("mutate", variables, read, step, model=strategy.get("model"))
        except NoUsableAnswer as nothing:
            if nothing.last_rejected is None:
                raise
            # The re-asks are spent and the last well-formed child still fails the structural
            # check: it goes to the Verifier, which discards it (stage "structure"), as it would
            # without re-asks; no algorithmic child stands in for the model's.
            text = nothing.last_rejected
            step.error = None
            step.parsed = text
            step.decision = f"child written; refused by the structural check {_refusals(step)} times"
            return {"text": text, "notes": [f"generator: {step.decision}"]}
        if self.settings.proposals > 1:
            text = self._best_of(text, variables, read, step, strategy)
        step.parsed = text
        refusals = _refusals(step)
        step.decision = "child written" + (f" after {refusals} structural re-asks" if refusals else "")
        return {"text": text, "notes": ["generator: wrote a child"]}

    def _best_of(
        self, first: str, variables: dict[str, Any], read: Callable[[str], str], step: StepRecord,
        strategy: Strategy,
    ) -> str:
        """"The LLM proposes, the model disposes": ``proposals - 1`` more children from the same
        prompt, then the one the Navigator's score model predicts best (the first one when no model
        is fitted yet). Every proposal goes to the trace with its prediction."""
        texts = [first]
        for _ in range(self.settings.proposals - 1):
            try:
                texts.append(self.ask_llm("mutate", variables, read, step, model=strategy.get("model")))
            except NoUsableAnswer:
                step.error = None  # this proposal is lost; the others stand
        return self._choose(texts, step, strategy)

    def _several_in_one_answer(self, variables: dict[str, Any], step: StepRecord, strategy: Strategy) -> dict[str, Any]:
        """CoLLM-NAS's way: one answer with ``proposals`` children, each read and checked on its
        own; the score model keeps the one it predicts best among the new, valid ones."""
        count = self.settings.proposals
        texts = self.ask_llm("mutate", {**variables, "count": count},  # NoUsableAnswer: __call__ falls back
                             lambda answer: extract_candidates(answer, self.ctx.space), step,
                             model=strategy.get("model"))
        step.tools["answer_children"] = len(texts)
        text = self._choose(texts, step, strategy)
        step.parsed = text
        step.decision = f"{len(texts)} children in one answer; kept one"
        return {"text": text, "notes": [f"generator: {len(texts)} children in one answer"]}

    def _choose(self, texts: list[str], step: StepRecord, strategy: Strategy) -> str:
        """Among ``texts``, the new, valid, distinct children (not copies of a parent, not proposed
        before) ranked by the Navigator's score model; the first when no model is fitted yet, the
        first text when none qualifies (the Verifier then says why). Every one goes to the trace."""
        space = self.ctx.space

        def other_owner(canonical: str) -> str | None:
            owner = self.ctx.archive.owner(canonical)
            return owner if owner != strategy["candidate_id"] else None

        valid = {space.canonical(t): t for t in texts if space.validate(t).ok}
        fresh = [t for t in valid.values()
                 if structure_problem(self.ctx, t, strategy["parent_texts"], other_owner) is None]
        distinct = fresh or list(valid.values()) or texts[:1]
        model = self.ctx.score_model
        if model is None or len(distinct) < 2:
            step.tools["proposals"] = [{"text": t, "predicted": None, "chosen": t is distinct[0]} for t in distinct]
            return distinct[0]
        mean, std = model.predict(distinct)
        best = int(mean.argmax())
        step.tools["proposals"] = [{"text": t, "predicted": float(m), "std": float(s), "chosen": i == best}
                                   for i, (t, m, s) in enumerate(zip(distinct, mean, std))]
        return distinct[best]

    def _read_new_child(self, strategy: Strategy) -> Callable[[str], str]:
        """Read the answer's child and put it through the Verifier's structural check at once, so
        that a child identical to its parent or already proposed is re-asked in the same
        conversation (FairNAD: discarded, "and the generation process is repeated with a new
        prompt") instead of costing a whole child. Invalid texts pass: they are the Debugger's."""

        def other_owner(canonical: str) -> str | None:  # a resumed child may have claimed its own form
            owner = self.ctx.archive.owner(canonical)
            return owner if owner != strategy["candidate_id"] else None

        def read(answer: str) -> str:
            text = self.read_candidate(answer)
            if not self.ctx.space.validate(text).ok:
                return text
            problem = structure_problem(self.ctx, text, strategy["parent_texts"], other_owner)
            if problem is None:
                return text
            if problem == IDENTICAL_TO_PARENT:
                advice = "the child is identical to its parent: make the change asked for"
                example = self._edit_example(strategy)
                if example is not None:
                    advice += f" (one change not tried yet, if unsure: {example})"
            elif problem.startswith(DUPLICATE_PREFIX):
                advice = f"the child is a {problem}, an architecture already proposed: write one not tried yet"
            else:
                advice = f"the child has {problem}: write a deeper one"
            raise AnswerRejected(advice, text)

        return read

    def _edit_example(self, strategy: Strategy) -> str | None:
        """A concrete edit of the first parent whose child nobody has proposed yet, for the
        re-ask of a child that copied its parent: small models told only "make the change" copy
        it again, about half of the time on NAS-Bench-201 with Qwen2.5-Coder-0.5B. The model
        still writes the child; None when no edit applies or every one tried is taken."""
        if not strategy["parent_texts"]:
            return None
        parent = strategy["parent_texts"][0]
        rng = rng_for(self.ctx.config.seed, "generator-example", strategy["candidate_id"])
        operator = strategy.get("operator")
        for _ in range(NOVELTY_TRIES):
            try:
                mutation = self.ctx.space.mutate(parent, rng, operator)
            except ValueError:
                if operator is None:
                    return None
                operator = None  # the planned operator has no site here (or is not the space's)
                continue
            if self.ctx.archive.owner(self.ctx.space.canonical(mutation.child)) is None:
                return mutation.description
        return None

    def no_answer(self, state: ChildState, step: StepRecord) -> dict[str, Any]:
        """fallback = "none": no child; the verifier discards it and the run goes on."""
        step.parsed = None
        step.decision = "no usable child"
        return {"text": None, "notes": ["generator: no usable answer"]}


def _refusals(step: StepRecord) -> int:
    """Answers of this step that the structural check refused (failure kind "rejected")."""
    return sum(1 for error in step.tools.get("llm_errors", []) if error.get("kind") == "rejected")
