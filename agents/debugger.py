"""Debugger: repairs a child that fails to validate or run, from the error (bounded tries)."""

from __future__ import annotations

from typing import Any

from archsmith.agents.base import RepairAgent, register_agent
from archsmith.graph.state import ChildState
from archsmith.graph.trace import StepRecord
from archsmith.tools.spaces.base import ParentRepairingSpace


@register_agent("debugger")
class Debugger(RepairAgent):
    tries_key = "debug_tries"
    changed_word = "repaired"
    unchanged_word = "no repair found"

    def _error(self, state: ChildState) -> tuple[str, str]:
        verdict = state.get("verdict") or {}
        return verdict.get("reason", ""), verdict.get("traceback") or ""

    def _accepted(self, state: ChildState, step: StepRecord, fixed: str | None) -> str | None:
        """``fixed`` unless the space rejects the repair (e.g. it deleted the newly added module)."""
        check = getattr(self.ctx.space, "repair_violation", None)
        if fixed is None or check is None:
            return fixed
        parents = state["strategy"].get("parent_texts") or [None]
        violation = check(parents[0], state.get("text") or "", fixed)
        if violation:
            step.tools["rejected_repair"] = violation
            return None
        return fixed

    def algorithmic(self, state: ChildState, step: StepRecord) -> dict[str, Any]:
        reason, traceback = self._error(state)
        text = state.get("text") or ""
        step.inputs = {"text": text, "error": reason}
        fixed = self.ctx.space.repair(text, f"{reason}\n{traceback}")
        parent = (state["strategy"].get("parent_texts") or [None])[0]
        if fixed is None and parent and isinstance(self.ctx.space, ParentRepairingSpace):
            fixed = self.ctx.space.repair_from_parent(text, parent)
            step.tools["repair"] = "from the parent" if fixed else "none found, from the parent neither"
        return self.revised(state, step, self._accepted(state, step, fixed))

    def llm(self, state: ChildState, step: StepRecord) -> dict[str, Any]:
        reason, traceback = self._error(state)
        strategy = state["strategy"]
        variables = {
            "space_rules": self.ctx.space.describe(),
            "text": state.get("text") or "",
            "parent": (strategy.get("parent_texts") or [""])[0],
            "idea": strategy.get("idea", ""),
            "mutation_target": strategy.get("mutation_target", ""),
            "error": reason,
            "traceback": traceback[-3000:],
        }
        step.inputs = {k: v for k, v in variables.items() if k != "space_rules"}
        fixed = self.ask_llm("repair", variables, self.read_candidate, step, model=strategy.get("model"))
        return self.revised(state, step, self._accepted(state, step, fixed))
