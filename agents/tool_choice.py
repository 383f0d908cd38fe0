"""LLMasTool's "LLM as a tool, not an agent": the Generator picks one of the space's valid edits.

For a space that enumerates its edits (``edit_options`` / ``apply_edit``: the ``tree`` space, and
the ``yolo`` space unless ``space.settings.llm_answer = "yaml"``; see
:func:`~archsmith.tools.spaces.base.offers_edit_choice`), the ``llm`` Generator writes no code. A planner draws the operation and a prompt category by
hierarchical Thompson sampling (:func:`plan`): the operation from Beta-Bernoulli posteriors per
operation (the Navigator's operator is kept when it is one of the space's), then the category from
posteriors per (operation, category) pair, each with epsilon exploration
(``search.bandit_epsilon``); a success is a child that beats its parent
(:mod:`~archsmith.agents.policies.bandit`). The rule tool lists the operation's valid edits; the
model answers with the number of one (``{"choice": n}``, optionally ``"args"`` to set a numeric
argument to another allowed value), is re-asked once after an unusable answer, and when it still
gives none a random option is taken (``chose_by = "rule"``). The trace step records the options,
the choice, who chose and the planner's posteriors. Options whose child someone already proposed
are left out while others remain.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from archsmith.agents.answers import AnswerError, extract_json
from archsmith.agents.base import Agent, NoUsableAnswer
from archsmith.agents.policies.bandit import (
    KeyedPosterior,
    OperatorPosterior,
    draw_key,
    draw_operator,
    keyed_posteriors,
    operator_posteriors,
)
from archsmith.agents.selection import rng_for
from archsmith.graph.state import CandidateRecord, ChildState
from archsmith.graph.trace import StepRecord
from archsmith.tools.spaces.base import offers_edit_choice

# What kind of change the model is asked to favour (shown in choose.md).
CATEGORIES: dict[str, str] = {
    "accuracy": "favour the edit most likely to raise accuracy",
    "efficiency": "favour the edit that saves parameters and compute at the least cost in accuracy",
    "diversity": "favour the edit that takes the network furthest from the usual, well-trodden designs",
}
OPTIONS_SHOWN = 30  # options in one prompt at most (a random subset, in the space's order)
RETRIES = 1  # re-asks after an unusable choice
_ARG = re.compile(r"^(\w+)=(\S+)$")


@dataclass
class Plan:
    """The planner's draw and the posteriors it drew from."""

    operator: str
    category: str
    operator_posteriors: list[OperatorPosterior]
    category_posteriors: list[KeyedPosterior]

    def trace(self) -> dict[str, Any]:
        return {"operator": self.operator, "category": self.category,
                "operator_posteriors": [p.model_dump() for p in self.operator_posteriors],
                "category_posteriors": [p.model_dump() for p in self.category_posteriors]}


def category_posteriors(history: Sequence[CandidateRecord], operator: str,
                        categories: Sequence[str] = tuple(CATEGORIES)) -> list[KeyedPosterior]:
    """Posteriors of each prompt category among the children made with ``operator``."""
    return keyed_posteriors(
        history, lambda r: r.get("prompt_category") if r.get("operator") == operator else None, categories)


def plan(history: Sequence[CandidateRecord], operators: Sequence[str], planned: str | None,
         rng: random.Random, epsilon: float) -> Plan:
    """Hierarchical Thompson sampling: the operation (``planned`` when it is one of ``operators``),
    then the prompt category given the operation."""
    posteriors = operator_posteriors(history, operators)
    operator = planned if planned in operators else draw_operator(posteriors, rng, epsilon)
    categories = category_posteriors(history, operator)
    return Plan(operator, draw_key(categories, rng, epsilon), posteriors, categories)


def _arg_of(edit: Any) -> tuple[str, str] | None:
    """(name, new value) of an edit that sets one argument (``kernel_size=3 -> kernel_size=5``)."""
    before, after = _ARG.match(edit.before), _ARG.match(edit.after)
    return (after.group(1), after.group(2)) if before and after and before.group(1) == after.group(1) else None


def _alternatives(edits: Sequence[Any], index: int) -> dict[str, int]:
    """Value -> option index of the edits that set the same argument at the same place."""
    own = _arg_of(edits[index])
    if own is None:
        return {}
    return {arg[1]: i for i, e in enumerate(edits)
            if (arg := _arg_of(e)) and arg[0] == own[0] and e.path == edits[index].path and e.kind == edits[index].kind}


def describe(edits: Sequence[Any], shown: Sequence[int]) -> list[str]:
    """The numbered options: where in the tree, before -> after (and a free argument's values)."""
    lines = []
    for number, index in enumerate(shown, 1):
        line = f"{number}. {edits[index].human()}"
        values = _alternatives(edits, index)
        if len(values) > 1:
            line += f" [args: {_arg_of(edits[index])[0]} in {'/'.join(values)}]"  # type: ignore[index]
        lines.append(line)
    return lines


def parse_choice(edits: Sequence[Any], shown: Sequence[int]) -> Callable[[str], int]:
    """A parser of ``{"choice": n}`` (``"args"`` optional) giving the chosen edit's index in
    ``edits``; AnswerError for anything else, so that the model is re-asked."""

    def parse(answer: str) -> int:
        data = extract_json(answer)
        choice = data.get("choice")
        if isinstance(choice, str) and choice.strip().isdigit():
            choice = int(choice)
        if isinstance(choice, bool) or not isinstance(choice, int):
            raise AnswerError('answer with JSON {"choice": <number>}, the number of one listed option')
        if not 1 <= choice <= len(shown):
            raise AnswerError(f"choice {choice} is not an option: pick a number from 1 to {len(shown)}")
        index = shown[choice - 1]
        args = data.get("args") or {}
        if not isinstance(args, dict):
            raise AnswerError('"args" must be an object such as {"kernel_size": 5}')
        if args:
            own, values = _arg_of(edits[index]), _alternatives(edits, index)
            if own is None or len(values) < 2 or set(args) != {own[0]}:
                raise AnswerError(f"option {choice} takes no argument "
                                  + (f"but {own[0]}" if own and len(values) > 1 else "") + f"; got {sorted(args)}")
            value = str(args[own[0]])
            if value not in values:
                raise AnswerError(f"{own[0]} = {value} is not allowed for option {choice}: "
                                  f"one of {'/'.join(values)}")
            index = values[value]
        return index

    return parse


def choose_edit(agent: Agent, state: ChildState, step: StepRecord) -> dict[str, Any] | None:
    """The Generator's update from a chosen edit; None when the space offers no edit choice or the
    plan has no parent (the Generator then writes the child itself)."""
    space = agent.ctx.space
    strategy = state["strategy"]
    if not offers_edit_choice(space) or not strategy.get("parent_texts"):
        return None
    config = agent.ctx.config
    rng = rng_for(config.seed, "tool-choice", strategy["candidate_id"])
    parent = strategy["parent_texts"][0]
    operators = list(space.operators())
    epsilon = config.search.bandit_epsilon if config.search.operator_bandit else 1.0
    history = agent.ctx.archive.history()
    drawn = plan(history, operators, strategy.get("operator"), rng, epsilon)
    step.tools["planner"] = drawn.trace()
    operator, edits = drawn.operator, []
    for name in [drawn.operator] + rng.sample([o for o in operators if o != drawn.operator], len(operators) - 1):
        try:
            edits = space.edit_options(parent, name)
        except ValueError:
            edits = []
        if edits:
            operator = name
            break
    if operator != drawn.operator:
        step.tools["planner"]["replaced"] = f"{drawn.operator} has no edit on this parent; {operator} instead"
    strategy = {**strategy, "operator": operator, "prompt_category": drawn.category}
    step.inputs = {"parents": strategy["parent_ids"], "operator": operator, "category": drawn.category}
    if not edits:
        step.decision = "no edit applies to this parent"
        return {"text": None, "strategy": strategy, "notes": [f"generator: {step.decision}"]}
    children = [space.apply_edit(parent, edit).child for edit in edits]  # cheap: the enumeration is kept
    fresh = [i for i, child in enumerate(children) if agent.ctx.archive.owner(space.canonical(child)) is None]
    shown = fresh or list(range(len(edits)))  # children proposed before are left out while others remain
    step.tools["options_proposed_before"] = len(edits) - len(fresh)
    if len(shown) > OPTIONS_SHOWN:
        shown = sorted(rng.sample(shown, OPTIONS_SHOWN))
    lines = describe(edits, shown)
    step.tools["options"] = lines
    summary = getattr(space, "summary", None)
    variables = {
        "space_rules": space.describe(), "parent_id": (strategy["parent_ids"] or ["?"])[0],
        "parent_summary": summary(parent) if summary else parent, "phase": strategy.get("phase", "exploration"),
        "operation": operator, "category": drawn.category, "category_hint": CATEGORIES[drawn.category],
        "idea": strategy.get("idea", ""), "budget": agent.budget_variables(), "options": lines,
        "free_args": any("[args:" in line for line in lines),
    }
    try:
        index = agent.ask_llm("choose", variables, parse_choice(edits, shown), step,
                              model=strategy.get("model"), max_retries=RETRIES)
        chose_by = "llm"
    except NoUsableAnswer:
        step.error = None
        index, chose_by = rng.choice(shown), "rule"
    mutation = space.apply_edit(parent, edits[index])
    if agent.ctx.archive.owner(space.canonical(mutation.child)) is not None:
        step.tools["proposed_before"] = True  # a free argument's value, or every option was taken
    step.tools["choice"] = shown.index(index) + 1 if index in shown else edits[index].human()
    step.tools["chose_by"] = chose_by
    step.parsed = mutation.child
    step.decision = (f"{'the model' if chose_by == 'llm' else 'no usable choice from the model; the rule'} "
                     f"chose {mutation.description}")
    return {"text": mutation.child, "strategy": strategy, "notes": [f"generator: {step.decision}"]}
