"""Verifier: the deterministic checks that route a child.

Order: structure (parses and validates; changed vs parent; deep enough; not a duplicate),
execution (in the sandbox: build, forward, backward, output shape, finite values), budget
(params and FLOPs). Routes: ``fails_to_run`` (invalid or crashing: to the debugger),
``over_budget`` (to the downscaler), ``discard`` (structural failure or out of retries) and
``evaluate``. The checks never involve an LLM, so this role has a single policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from archsmith.agents.base import Agent, register_agent
from archsmith.agents.selection import DUPLICATE_PREFIX
from archsmith.graph.state import ChildState, Verdict
from archsmith.graph.trace import StepRecord
from archsmith.tools.spaces import check_task

if TYPE_CHECKING:  # pragma: no cover
    from archsmith.graph.context import RunContext

IDENTICAL_TO_PARENT = "identical to its parent"


def structure_problem(
    ctx: RunContext, text: str, parent_texts: list[str], owner_of: Callable[[str], str | None]
) -> str | None:
    """The structural check on a valid text, in words (None: it passes): changed vs its parents,
    deep enough where the text tells the depth, not a duplicate.

    ``owner_of`` maps the canonical form to the candidate that already holds it: the Verifier
    claims the form (``archive.claim``), the Generator only looks (``archive.owner``) so that it
    can re-ask its model in the same conversation before the child reaches the Verifier.
    """
    space = ctx.space
    canonical = space.canonical(text)
    if canonical in {space.canonical(p) for p in parent_texts if space.validate(p).ok}:
        return IDENTICAL_TO_PARENT
    depth = space.depth(text)  # None: counted when the candidate runs
    if depth is not None and depth < ctx.config.workflow.min_layers:
        return f"only {depth} layers (< {ctx.config.workflow.min_layers})"
    owner = owner_of(canonical)
    return f"{DUPLICATE_PREFIX} {owner}" if owner is not None else None


@register_agent("verifier")
class Verifier(Agent):
    policies = ("algorithmic",)
    routes = True

    def algorithmic(self, state: ChildState, step: StepRecord) -> dict[str, Any]:
        verdict = self.verify(state, step)
        step.decision = verdict["route"] + (f" ({verdict['reason']})" if verdict.get("reason") else "")
        step.parsed = {k: v for k, v in verdict.items() if k != "traceback"}
        return {"verdict": verdict, "notes": [f"verifier: {step.decision}"]}

    def verify(self, state: ChildState, step: StepRecord) -> Verdict:
        config = self.ctx.config
        workflow = config.workflow
        strategy = state["strategy"]
        text = state.get("text")
        step.inputs = {"text": text}
        if not text:
            return Verdict(route="discard", stage="generate", reason="the generator produced no child")
        space = self.ctx.space

        def fails(stage: str, reason: str, **extra: Any) -> Verdict:
            if state.get("debug_tries", 0) >= workflow.max_debug:
                reason = f"{reason} (still failing after {workflow.max_debug} debugger tries)"
                return Verdict(route="discard", stage=stage, reason=reason, **extra)
            return Verdict(route="fails_to_run", stage=stage, reason=reason, **extra)

        validation = space.validate(text)
        step.tools["validate"] = validation.model_dump()
        if not validation.ok:
            return fails("validate", validation.summary(), error_type="InvalidStructure")

        candidate = strategy["candidate_id"]
        problem = structure_problem(self.ctx, text, strategy.get("parent_texts", []),
                                    lambda canonical: self.ctx.archive.claim(canonical, candidate))
        if problem:
            return Verdict(route="discard", stage="structure", reason=problem)
        depth = space.depth(text)  # None: counted when the candidate runs

        if self.ctx.evaluator.needs_execution:
            previous = state.get("verdict") or {}
            if previous.get("checked_text") == text and previous.get("stage") == "execute":
                # The repair changed nothing: the same text fails the same way, no second run.
                return fails("execute", previous.get("reason", "fails to run"), checked_text=text)
            result = self.ctx.sandbox.run(check_task(self.ctx.space), self.ctx.task_payload(text),
                                          config.sandbox.timeout_s)
            step.tools["execute"] = result.model_dump(exclude={"stdout"})
            if not result.ok:
                return fails(
                    "execute",
                    result.short_error(),
                    error_type=result.error_type,
                    traceback=(result.traceback or "")[-4000:],
                    checked_text=text,
                )
            measured = {k: int(result.value.get(k) or 0) for k in ("params", "macs", "flops")}
            ran = result.value.get("weight_layers")
            if depth is None and ran is not None and ran < workflow.min_layers:
                return Verdict(route="discard", stage="structure",
                               reason=f"only {ran} weight layers run in forward (< {workflow.min_layers})")
        else:  # nothing to execute (a table lookup): figures from the evaluator when it has them
            params, flops = self.ctx.evaluator.measure(text)
            measured = {k: v for k, v in (("params", params), ("flops", flops)) if v is not None}
            step.tools["measure"] = measured
        over = config.budget.violations(measured.get("params"), measured.get("flops"))
        if over:
            reason = "; ".join(over)
            if state.get("downscale_tries", 0) >= workflow.max_downscale:
                reason = f"{reason} (still over after {workflow.max_downscale} downscaler tries)"
                return Verdict(route="discard", stage="budget", reason=reason, **measured)
            return Verdict(route="over_budget", stage="budget", reason=reason, **measured)
        return Verdict(route="evaluate", stage="budget", reason="", **measured)
