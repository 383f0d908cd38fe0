"""Generator: turns parent(s) + the Navigator's strategy into a child.

Stateless by default (CoLLM-NAS). With ``roles.generator.memory = true`` the Navigator hands it
the latest children and their outcomes, which the ``llm`` policy's prompt shows; the algorithmic
policy's mutations do not use them.
"""

from __future__ import annotations

import random
from typing import Any

from archsmith.agents.base import Agent, register_agent
from archsmith.agents.navigator import SAMPLE
from archsmith.agents.selection import rng_for
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
        """One or (exploring, sometimes) two mutations of the parent, or a random sample."""
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
            "budget": self.ctx.config.budget.model_dump(),
            "feedback": strategy.get("feedback", []),
        }
        step.inputs = {k: v for k, v in variables.items() if k != "space_rules"}
        text = self.ask_llm("mutate", variables, self.read_candidate, step, model=strategy.get("model"))
        step.parsed = text
        step.decision = "child written"
        return {"text": text, "notes": ["generator: wrote a child"]}

    def no_answer(self, state: ChildState, step: StepRecord) -> dict[str, Any]:
        """fallback = "none": no child; the verifier discards it and the run goes on."""
        step.parsed = None
        step.decision = "no usable child"
        return {"text": None, "notes": ["generator: no usable answer"]}
