"""Downscaler: shrinks a child that is over the params/FLOPs budget (bounded tries)."""

from __future__ import annotations

from typing import Any

from archsmith.agents.base import RepairAgent, register_agent
from archsmith.agents.selection import rng_for
from archsmith.graph.state import ChildState
from archsmith.graph.trace import StepRecord

# Aim a little under the limit so that one shrink usually suffices.
HEADROOM = 0.9
# FairNAD's feedback loop: far over budget (any cost above FAR_OVER x its limit) a child whose
# parent it extends keeps its new module in one place only; otherwise one of the predefined
# shrinking strategies, drawn uniformly per try.
FAR_OVER = 1.5
SINGLE_USE = ("restrict the newly added module to a single use (one place in the network) instead "
              "of repeating it, and keep everything else")
STRATEGIES = (
    "reduce depth: fewer blocks or layers per stage",
    "reduce width: fewer channels in every stage, keeping their ratios",
    "reduce width of the widest stages only",
)


@register_agent("downscaler")
class Downscaler(RepairAgent):
    tries_key = "downscale_tries"
    changed_word = "shrunk"
    unchanged_word = "could not shrink"

    def _ratio(self, state: ChildState) -> float:
        """How much smaller the child must get: the tightest of the params/FLOPs ratios."""
        verdict = state.get("verdict") or {}
        budget = self.ctx.config.budget
        ratios = [1.0]
        if budget.params_m is not None and verdict.get("params"):
            ratios.append(budget.params_m * 1e6 / verdict["params"])
        if budget.flops_m is not None and verdict.get("flops"):
            ratios.append(budget.flops_m * 1e6 / verdict["flops"])
        return max(0.05, min(ratios) * HEADROOM)

    def _strategy(self, state: ChildState) -> str:
        tries = state.get("downscale_tries", 0)
        strategy = state["strategy"]
        has_parent = bool(strategy.get("parent_texts"))
        if has_parent and 1.0 / max(self._ratio(state) / HEADROOM, 1e-9) > FAR_OVER:
            return SINGLE_USE
        rng = rng_for(self.ctx.config.seed, "downscaler-strategy", strategy["candidate_id"], tries)
        return rng.choice(STRATEGIES)

    def algorithmic(self, state: ChildState, step: StepRecord) -> dict[str, Any]:
        text = state.get("text") or ""
        factor = self._ratio(state)
        tries = state.get("downscale_tries", 0)
        rng = rng_for(self.ctx.config.seed, "downscaler", state["strategy"]["candidate_id"], tries)
        step.inputs = {"text": text, "factor": round(factor, 4), "verdict": state.get("verdict")}
        try:
            mutation = self.ctx.space.shrink(text, factor, rng)
        except ValueError as error:  # nothing left to shrink
            step.tools["shrink"] = {"error": str(error)}
            return self.revised(state, step, None)
        step.tools["shrink"] = {"operator": mutation.operator, "description": mutation.description}
        return self.revised(state, step, mutation.child)

    def llm(self, state: ChildState, step: StepRecord) -> dict[str, Any]:
        verdict = state.get("verdict") or {}
        variables = {
            "space_rules": self.ctx.space.describe(),
            "text": state.get("text") or "",
            "params": verdict.get("params"),
            "flops": verdict.get("flops"),
            "over": verdict.get("reason", ""),
            "factor": round(self._ratio(state), 3),
            "strategy": self._strategy(state),
            "budget": self.budget_variables(),
        }
        step.inputs = {k: v for k, v in variables.items() if k != "space_rules"}
        model = state["strategy"].get("model")
        smaller = self.ask_llm("shrink", variables, self.read_candidate, step, model=model)
        return self.revised(state, step, smaller)
