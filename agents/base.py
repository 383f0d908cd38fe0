"""The agent registry and the one node signature every role shares.

A role is a class registered with ``@register_agent("name")``. The graph builder instantiates the
roles named in the workflow config with the run context; an instance is a LangGraph node:
``agent(state) -> update``. Each role implements two policies, ``algorithmic`` (deterministic,
no LLM) and ``llm``; the base class picks one from the config, times the call and writes the
step (inputs, prompts, answers, tool results, decision) to the trace.

When the ``llm`` policy gets no usable answer (:meth:`Agent.ask_llm` raises
:class:`NoUsableAnswer` after its bounded retries), the base class decides what happens, once for
every role: with ``roles.<role>.fallback = "algorithmic"`` (the default) the role's algorithmic
policy runs for that step, which the step's ``tools["fallback"]`` records; with ``"none"`` the
role's :meth:`Agent.no_answer` gives its "nothing" update (generator: no child; repairs: no change).

Every step records the phase it ran in (``StepRecord.phase``), set here whatever path the step
takes: a child role's from its strategy, the navigator's from the phase it plans.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from archsmith.agents.answers import extract_candidate
from archsmith.agents.llm import RetryPolicy, ask, exchange_trace
from archsmith.graph.trace import StepRecord

if TYPE_CHECKING:  # pragma: no cover
    from archsmith.graph.context import RunContext

T = TypeVar("T")
Scope = Literal["search", "child"]

_AGENTS: dict[str, type[Agent]] = {}


class NoUsableAnswer(RuntimeError):
    """The llm policy's model gave no usable answer within its retries (raised by ask_llm)."""

    def __init__(self, role: str, failures: int, kinds: list[str], last_rejected: Any = None) -> None:
        self.role = role
        self.failures = failures
        self.kinds = kinds
        self.last_rejected = last_rejected  # the last answer's value that the role's checks refused
        summary = ", ".join(dict.fromkeys(kinds)) or "no answer"
        super().__init__(f"{role}: no usable LLM answer after {failures} failures ({summary})")


def register_agent(name: str) -> Callable[[type[Agent]], type[Agent]]:
    """Register a role under ``name`` (like timm's ``@register_model``)."""

    def decorator(cls: type[Agent]) -> type[Agent]:
        if name in _AGENTS and _AGENTS[name] is not cls:
            raise ValueError(f"an agent named {name!r} is already registered ({_AGENTS[name]})")
        cls.role = name
        _AGENTS[name] = cls
        return cls

    return decorator


def load_builtin_agents() -> None:
    """Import the built-in role modules (each registers itself)."""
    from archsmith.agents import debugger, downscaler, generator, navigator, verifier  # noqa: F401


def get_agent_class(name: str) -> type[Agent]:
    load_builtin_agents()
    if name not in _AGENTS:
        known = ", ".join(sorted(_AGENTS))
        raise KeyError(f"no agent registered as {name!r}; registered: {known}")
    return _AGENTS[name]


def agent_names() -> list[str]:
    load_builtin_agents()
    return sorted(_AGENTS)


class Agent:
    """Base class of every role. Subclasses implement ``algorithmic`` and, usually, ``llm``.

    Both take the node's state and the step being recorded, and return the state update.
    """

    role: ClassVar[str] = ""
    scope: ClassVar[Scope] = "child"
    policies: ClassVar[tuple[str, ...]] = ("algorithmic", "llm")
    # A routing role writes ``verdict.route``; the last role of the pipeline must route.
    routes: ClassVar[bool] = False
    # A role that cannot do "nothing" (the navigator must plan) rejects fallback = "none".
    needs_fallback: ClassVar[bool] = False

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.settings = ctx.config.role(self.role)
        if self.settings.policy not in self.policies:
            raise ValueError(
                f"roles.{self.role}.policy = {self.settings.policy!r}: this role offers "
                f"{', '.join(self.policies)}"
            )
        if self.needs_fallback and self.policy == "llm" and self.settings.fallback == "none":
            raise ValueError(
                f"roles.{self.role}.fallback = 'none': the {self.role} cannot skip a step, so an "
                "unusable LLM answer always falls back to its algorithmic policy; use 'algorithmic'"
            )

    @property
    def policy(self) -> str:
        return self.settings.policy

    @property
    def falls_back(self) -> bool:
        """Whether an llm step with no usable answer runs the algorithmic policy instead."""
        has_algorithmic = type(self).algorithmic is not Agent.algorithmic and "algorithmic" in self.policies
        return self.settings.fallback == "algorithmic" and has_algorithmic

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        strategy = state.get("strategy") or {}
        step = StepRecord(
            node=self.role,
            role=self.role,
            policy=self.policy,
            generation=state.get("generation"),
            candidate_id=strategy.get("candidate_id"),
            phase=strategy.get("phase") if self.scope == "child" else state.get("phase"),
        )
        started = time.perf_counter()
        try:
            if self.policy == "llm":
                try:
                    update = self.llm(state, step)
                except NoUsableAnswer as nothing:
                    update = self._without_answer(state, step, nothing)
            else:
                update = self.algorithmic(state, step)
            if self.scope == "search" and isinstance(update, dict) and update.get("phase"):
                step.phase = update["phase"]  # the phase this step planned for
        except Exception as error:
            step.error = f"{type(error).__name__}: {error}"
            raise
        finally:
            step.duration_s = time.perf_counter() - started
            self.ctx.trace.record(step)
        return update

    def _without_answer(self, state: dict[str, Any], step: StepRecord, nothing: NoUsableAnswer) -> dict[str, Any]:
        if not self.falls_back:
            step.tools["fallback"] = "none"
            return self.no_answer(state, step)
        step.tools["fallback"] = f"algorithmic after {nothing.failures} failures"
        asked = dict(step.inputs)  # what the model was given stays beside the algorithmic policy's inputs
        update = self.algorithmic(state, step)
        step.inputs = {**asked, **step.inputs}
        step.decision = f"{step.decision or ''} [algorithmic fallback]".strip()
        return update

    def algorithmic(self, state: dict[str, Any], step: StepRecord) -> dict[str, Any]:
        raise NotImplementedError(f"{self.role} has no algorithmic policy")

    def no_answer(self, state: dict[str, Any], step: StepRecord) -> dict[str, Any]:
        """The update of an llm step that got no usable answer and does not fall back."""
        step.decision = "no usable answer"
        return {"notes": [f"{self.role}: no usable answer"]} if self.scope == "child" else {}

    def llm(self, state: dict[str, Any], step: StepRecord) -> dict[str, Any]:
        raise NotImplementedError(f"{self.role} has no llm policy")

    # -- shared LLM plumbing -------------------------------------------------------------

    def budget_variables(self) -> dict[str, Any]:
        """The budget as prompts show it: the config's fields, plus ``at``, where it is measured
        (the configured input size, or each candidate's own resolution where the space fixes one)."""
        budget = self.ctx.config.budget
        own = hasattr(self.ctx.space, "input_resolution")
        at = "each architecture's own input resolution r" if own else f"{budget.input_size}x{budget.input_size} input"
        return {**budget.model_dump(), "at": at}

    def read_candidate(self, answer: str) -> str:
        """The candidate in an answer, read the way this run's search space reads its texts."""
        return extract_candidate(answer, self.ctx.space)

    def ask_llm(
        self,
        purpose: str,
        variables: dict[str, Any],
        parse: Callable[[str], T],
        step: StepRecord,
        model: str | None = None,
        max_retries: int | None = None,
    ) -> T | None:
        """Render <role>/system.md and <role>/<purpose>.md, ask the role's model, parse.
        ``max_retries``: re-asks for this call only (the role's ``llm.max_retries`` otherwise).

        Records prompts, answers, tokens and each classified failure on ``step``; raises
        :class:`NoUsableAnswer` when no attempt gave a usable answer (``__call__`` then falls
        back or calls :meth:`no_answer`).
        """
        settings = self.settings.llm
        name = model or settings.model
        prompts = self.ctx.prompts
        system = prompts.render(self.role, "system", **variables)
        user = prompts.render(self.role, purpose, **variables)
        chat_model = self.ctx.models.get(self.role, settings, name)
        result, exchange = ask(
            chat_model,
            model_name=name,
            system=system,
            user=user,
            parse=parse,
            prompts=prompts,
            policy=RetryPolicy.from_settings(settings),
            max_retries=max_retries,
            server=self.ctx.servers.get(self.role),
        )
        traced = exchange_trace(exchange)
        step.prompts.extend(traced["prompts"])
        step.answers.extend(traced["answers"])
        for key, value in traced["tokens"].items():
            step.tokens[key] = step.tokens.get(key, 0) + value
        step.tools["llm_model"] = name
        step.tools["llm_attempts"] = step.tools.get("llm_attempts", 0) + traced["attempts"]
        step.tools["llm_wait_s"] = round(step.tools.get("llm_wait_s", 0.0) + traced["wait_s"], 3)
        if traced["backoff_s"]:
            step.tools["llm_backoff_s"] = round(step.tools.get("llm_backoff_s", 0.0) + traced["backoff_s"], 3)
        if traced["errors"]:
            step.tools.setdefault("llm_errors", []).extend(traced["errors"])
        if traced["server_crashes"]:
            step.tools.setdefault("llm_server_crashes", []).extend(traced["server_crashes"])
        if result is None:
            step.error = f"no usable LLM answer after {exchange.failures} failures"
            if exchange.crashes:
                step.error += f"; {exchange.crashes[-1].headline}"
            elif "server_down" in exchange.kinds():
                step.error += "; its managed server is down (max_restarts used up), not asked"
            raise NoUsableAnswer(self.role, exchange.failures, exchange.kinds(), exchange.last_rejected)
        return result


class RepairAgent(Agent):
    """A role that revises the child's text and counts its tries (debugger, downscaler).

    Subclasses name the counter and the words that go into the trace; ``revised`` builds the
    update from the new text (None or unchanged: the repair found nothing).
    """

    tries_key: ClassVar[str] = ""
    changed_word: ClassVar[str] = "revised"
    unchanged_word: ClassVar[str] = "no change found"

    def no_answer(self, state: dict[str, Any], step: StepRecord) -> dict[str, Any]:
        return self.revised(state, step, None)

    def revised(self, state: dict[str, Any], step: StepRecord, new_text: str | None) -> dict[str, Any]:
        text = state.get("text") or ""
        changed = bool(new_text) and new_text != text
        step.parsed = new_text
        step.decision = self.changed_word if changed else self.unchanged_word
        return {
            "text": new_text if changed else text,
            self.tries_key: state.get(self.tries_key, 0) + 1,
            "notes": [f"{self.role}: {step.decision}"],
            "repairs": [self.role] if changed else [],
        }
