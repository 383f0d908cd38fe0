"""LLM as a tool (LLMasTool) on the tree space: the rule tool's edit options, the Generator choosing
one with a fake chat model (valid, re-asked once, rule fallback, free argument), the planner's
posteriors, and a short run."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

import archsmith
from archsmith.agents.generator import Generator
from archsmith.agents.prompts import PromptLoader
from archsmith.agents.tool_choice import CATEGORIES, category_posteriors, plan
from archsmith.graph.context import ArchiveIndex
from archsmith.graph.trace import StepRecord
from archsmith.tools.spaces import get_space
from archsmith.tools.spaces.tree_model import read_header

SPACE = get_space("tree", {})
SEED = SPACE.initial()[0]
INSERTED = SPACE.mutate(SEED, random.Random(3), "insert").child  # has an edit for ``repeat``


@pytest.mark.parametrize("operator", SPACE.operators())
def test_edit_options_are_valid_distinct_children(operator):
    options = SPACE.edit_options(INSERTED, operator)
    assert options and options == SPACE.edit_options(INSERTED, operator)  # a fixed order
    children = [SPACE.apply_edit(INSERTED, edit).child for edit in options]
    canonicals = {SPACE.canonical(c) for c in children}
    assert len(canonicals) == len(children) and SPACE.canonical(INSERTED) not in canonicals
    for edit, child in zip(options, children):
        assert SPACE.validate(child).ok and edit.operator == operator
        assert read_header(child)[1] == edit  # the child carries the edit
    assert SPACE.edit_options(INSERTED, operator, limit=2) == options[:2]


def test_apply_edit_builds_and_mutate_picks_an_option(one_torch_thread):
    import torch

    edit = SPACE.edit_options(SEED, "swap")[0]
    net = SPACE.build(SPACE.apply_edit(SEED, edit).child, 10)
    assert tuple(net(torch.randn(1, 3, 32, 32)).shape) == (1, 10)
    mutation = SPACE.mutate(SEED, random.Random(0), "delete")
    assert read_header(mutation.child)[1] in SPACE.edit_options(SEED, "delete")
    with pytest.raises(ValueError, match="not a valid edit"):
        SPACE.apply_edit(SEED, edit.model_copy(update={"path": "stages[9]"}))


def generator(toy_config, answers: list[str]) -> tuple[Generator, list[FakeListChatModel]]:
    config = toy_config(space={"name": "tree"}, roles={"generator": {"policy": "llm"}})
    asked: list[FakeListChatModel] = []

    def get(role, settings, name=None):
        asked.append(FakeListChatModel(responses=answers))
        return asked[-1]

    ctx = SimpleNamespace(config=config, space=SPACE, archive=ArchiveIndex(), prompts=PromptLoader(),
                          models=SimpleNamespace(get=get), servers={})
    return Generator(ctx), asked


def choose(toy_config, answers: list[str], operator: str = "delete") -> tuple[dict, StepRecord]:
    gen, _ = generator(toy_config, answers)
    step = StepRecord(node="generator", role="generator")
    state = {"strategy": {"candidate_id": "c1", "parent_ids": ["p0"], "parent_texts": [SEED],
                          "operator": operator, "phase": "exploration"}}
    return gen.llm(state, step), step


def test_a_valid_choice_is_applied(toy_config):
    update, step = choose(toy_config, ['{"choice": 2}'])
    options = SPACE.edit_options(SEED, "delete")
    assert update["text"] == SPACE.apply_edit(SEED, options[1]).child
    assert step.tools["chose_by"] == "llm" and step.tools["choice"] == 2 and step.tools["llm_attempts"] == 1
    assert step.tools["options"][1].startswith("2. " + options[1].human())
    assert update["strategy"]["operator"] == "delete"
    assert update["strategy"]["prompt_category"] == step.tools["planner"]["category"] in CATEGORIES
    assert {p["operator"] for p in step.tools["planner"]["operator_posteriors"]} == set(SPACE.operators())
    assert "Operation: delete" in step.prompts[-1].text and '{"choice": <number>}' in step.prompts[-1].text


def test_an_invalid_choice_is_reasked_once(toy_config):
    update, step = choose(toy_config, ['{"choice": 99}', '{"choice": 1}'])
    assert step.tools["chose_by"] == "llm" and step.tools["llm_attempts"] == 2
    assert update["text"] == SPACE.apply_edit(SEED, SPACE.edit_options(SEED, "delete")[0]).child
    assert "not an option" in step.tools["llm_errors"][0]["message"]


def test_garbage_twice_and_the_rule_picks(toy_config):
    update, step = choose(toy_config, ["I would delete something.", "no idea"])
    assert step.tools["chose_by"] == "rule" and step.tools["llm_attempts"] == 2 and step.error is None
    assert SPACE.validate(update["text"]).ok and "rule" in step.decision
    assert read_header(update["text"])[1] in SPACE.edit_options(SEED, "delete")


def test_a_free_argument_picks_another_allowed_value(toy_config):
    options = SPACE.edit_options(SEED, "hyperparameter")
    assert options[0].before == "kernel_size=3" and options[0].after == "kernel_size=5"
    update, step = choose(toy_config, ['{"choice": 1, "args": {"kernel_size": 9}}',
                                       '{"choice": 1, "args": {"kernel_size": 7}}'], "hyperparameter")
    assert "[args: kernel_size in 5/7]" in step.tools["options"][0]
    assert read_header(update["text"])[1].after == "kernel_size=7" and step.tools["llm_attempts"] == 2


def test_planner_posteriors_from_history():
    def child(i, operator, category, score):
        return {"id": f"c{i}", "status": "valid", "score": score, "parent_ids": ["p"], "operator": operator,
                "prompt_category": category}

    history = [{"id": "p", "status": "valid", "score": 0.5, "parent_ids": []},
               child(1, "swap", "accuracy", 0.9), child(2, "swap", "accuracy", 0.1),
               child(3, "swap", "efficiency", 0.8), child(4, "insert", "accuracy", 0.2),
               {"id": "c5", "status": "discarded", "discard_stage": "score", "parent_ids": ["p"],
                "operator": "swap", "prompt_category": "diversity"}]
    drawn = plan(history, ["swap", "insert", "delete"], None, random.Random(0), 0.0)
    assert [(p.operator, p.alpha, p.beta) for p in drawn.operator_posteriors] == \
        [("swap", 3, 3), ("insert", 1, 2), ("delete", 1, 1)]
    assert [(p.key, p.alpha, p.beta) for p in category_posteriors(history, "swap")] == \
        [("accuracy", 2, 2), ("efficiency", 2, 1), ("diversity", 1, 2)]
    assert [(p.key, p.alpha, p.beta) for p in category_posteriors(history, "insert")] == \
        [("accuracy", 1, 2), ("efficiency", 1, 1), ("diversity", 1, 1)]
    kept = plan(history, ["swap", "insert"], "insert", random.Random(0), 0.5)
    assert kept.operator == "insert" and kept.category in CATEGORIES
    assert kept.trace()["category_posteriors"][0] == {"key": "accuracy", "alpha": 1, "beta": 2}


def test_short_run_chooses_among_options(toy_config):
    from archsmith.graph.trace import read_steps

    config = toy_config(space={"name": "tree"}, roles={"generator": {"policy": "llm"}},
                        evaluator={"name": "zen", "preset": "custom", "batch_size": 4, "repeats": 1},
                        budget={"params_m": 1.5, "input_size": 32, "num_classes": 10},
                        search={"max_candidates": 4, "children_per_generation": 2})
    result = archsmith.run(config, chat_models={"generator": FakeListChatModel(responses=['{"choice": 1}'])})
    valid = [r for r in result.history if r["status"] == "valid"]
    assert len(valid) >= 3 and all(SPACE.validate(r["text"]).ok for r in valid)
    assert all(r.get("prompt_category") in CATEGORIES for r in result.history if r.get("parent_ids"))
    steps = read_steps(result.run_dir / "trace.sqlite", role="generator")
    assert steps and all(s.tools.get("options") and s.tools.get("chose_by") == "llm" for s in steps)


def test_options_proposed_before_are_left_out(toy_config):
    gen, _ = generator(toy_config, ['{"choice": 1}'])
    options = SPACE.edit_options(SEED, "delete")
    gen.ctx.archive.claim(SPACE.canonical(SPACE.apply_edit(SEED, options[0]).child), "c0")
    step = StepRecord(node="generator", role="generator")
    state = {"strategy": {"candidate_id": "c1", "parent_ids": ["p0"], "parent_texts": [SEED],
                          "operator": "delete", "phase": "exploration"}}
    update = gen.llm(state, step)
    assert step.tools["options_proposed_before"] == 1 and len(step.tools["options"]) == len(options) - 1
    assert read_header(update["text"])[1] == options[1]
