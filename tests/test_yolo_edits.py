"""The yolo space's rule tool (LLM as a tool): its edit options on YOLOv8n, applying one, and the
``llm`` Generator picking one with a fake chat model; ``llm_answer = "yaml"`` keeps the model
writing the YAML (PhaseNAS's way)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from archsmith.agents.generator import Generator
from archsmith.agents.prompts import PromptLoader
from archsmith.graph.context import ArchiveIndex
from archsmith.graph.trace import StepRecord
from archsmith.tools.spaces import SpaceError, get_space
from archsmith.tools.spaces.base import offers_edit_choice
from archsmith.tools.spaces.yolo import YoloSpace

STAR = YoloSpace({"base": "yolov8n", "mode": "yolov8*"})
SEED = STAR.initial()[0]


@pytest.mark.parametrize("operator", STAR.operators())
def test_edit_options_are_fixed_valid_distinct_children(operator):
    options = STAR.edit_options(SEED, operator)
    fresh = YoloSpace({"base": "yolov8n", "mode": "yolov8*"})  # no kept enumeration, no rng: the same list
    assert options and options == fresh.edit_options(SEED, operator)
    mutations = [STAR.apply_edit(SEED, edit) for edit in options]
    canonicals = {STAR.canonical(m.child) for m in mutations}
    assert len(canonicals) == len(options) and STAR.canonical(SEED) not in canonicals
    assert len({edit.human() for edit in options}) == len(options)
    for edit, mutation in zip(options, mutations):
        assert STAR.validate(mutation.child).ok, edit.human()
        assert edit.operator == mutation.operator == operator and edit.path and edit.before != edit.after
    assert STAR.edit_options(SEED, operator, limit=2) == options[:2]


@pytest.mark.parametrize("seed", range(5))
def test_mutate_gives_one_of_the_options(seed):
    mutation = STAR.mutate(SEED, random.Random(seed))
    children = {STAR.apply_edit(SEED, edit).child for edit in STAR.edit_options(SEED, mutation.operator)}
    assert mutation.child in children


def test_option_texts_name_the_layer_and_the_change():
    width = [edit.human() for edit in STAR.edit_options(SEED, "width")]
    assert "width at backbone layer 0 (Conv): channels=64 -> channels=32" in width
    kernels = [edit.human() for edit in STAR.edit_options(SEED, "reparameterize")]
    assert "reparameterize at backbone layer 9 (SPPF): pooling_kernel=5 -> pooling_kernel=7" in kernels
    psa = STAR.edit_options(SEED, "insert_psa")[0]
    assert psa.path == "backbone layer 5 (Conv)" and psa.after.endswith("+ PSA [512]")
    child = STAR.apply_edit(SEED, psa).child
    assert "PSA" in child and STAR.validate(child).ok


def test_apply_edit_refuses_an_unlisted_edit_and_unknown_operators():
    edit = STAR.edit_options(SEED, "width")[0]
    with pytest.raises(ValueError, match="not a valid edit"):
        STAR.apply_edit(SEED, edit.model_copy(update={"after": "channels=40"}))
    with pytest.raises(ValueError, match="unknown operator"):
        STAR.edit_options(SEED, "swap")
    plus = YoloSpace({"mode": "yolov8+"})
    with pytest.raises(ValueError, match="unknown operator 'insert_psa'"):
        plus.edit_options(plus.initial()[0], "insert_psa")
    with pytest.raises(ValueError, match="invalid model YAML"):
        STAR.edit_options("nc: 2\n", "width")


def test_llm_answer_setting():
    assert STAR.settings.llm_answer == "edit" and offers_edit_choice(STAR)
    assert not offers_edit_choice(YoloSpace({"llm_answer": "yaml"}))
    assert offers_edit_choice(get_space("tree", {}))  # the tree space always offers one
    assert not offers_edit_choice(get_space("nb201", {}))
    with pytest.raises(SpaceError, match="space.settings.llm_answer"):
        get_space("yolo", {"llm_answer": "json"})


def generator(toy_config, space: YoloSpace, answers: list[str]) -> Generator:
    config = toy_config(space={"name": "yolo", "settings": space.settings.model_dump()},
                        budget={"params_m": 3.2, "flops_m": 9000, "input_size": 640, "num_classes": 80},
                        roles={"generator": {"policy": "llm"}})
    ctx = SimpleNamespace(config=config, space=space, archive=ArchiveIndex(), prompts=PromptLoader(),
                          models=SimpleNamespace(get=lambda role, settings, name=None: FakeListChatModel(
                              responses=answers)), servers={})
    return Generator(ctx)


def ask(gen: Generator, operator: str) -> tuple[dict, StepRecord]:
    step = StepRecord(node="generator", role="generator")
    state = {"strategy": {"candidate_id": "c1", "parent_ids": ["p0"], "parent_texts": [SEED],
                          "operator": operator, "phase": "exploration"}}
    return gen.llm(state, step), step


def test_the_llm_generator_picks_a_valid_yolo_child(toy_config):
    update, step = ask(generator(toy_config, STAR, ['{"choice": 2}']), "reorder")
    options = STAR.edit_options(SEED, "reorder")
    assert update["text"] == STAR.apply_edit(SEED, options[1]).child and STAR.validate(update["text"]).ok
    assert update["text"] != SEED and step.tools["chose_by"] == "llm" and step.tools["choice"] == 2
    assert step.tools["options"][1] == "2. " + options[1].human()
    assert "Operation: reorder" in step.prompts[-1].text and "# 4: P3/8, 64 ch" in step.prompts[-1].text


def test_a_free_argument_sets_another_listed_width(toy_config):
    answers = ['{"choice": 1, "args": {"channels": 96}}']
    update, step = ask(generator(toy_config, STAR, answers), "width")
    assert len(step.tools["options"]) <= 30  # the prompt shows a subset of the 54 widths
    chosen = [e for e in STAR.edit_options(SEED, "width") if STAR.apply_edit(SEED, e).child == update["text"]]
    assert step.tools["chose_by"] == "llm" and chosen and chosen[0].after == "channels=96"


def test_the_yaml_setting_keeps_the_model_writing_the_child(toy_config):
    yaml_space = YoloSpace({"base": "yolov8n", "mode": "yolov8*", "llm_answer": "yaml"})
    written = yaml_space.mutate(SEED, random.Random(0), "width").child
    update, step = ask(generator(toy_config, yaml_space, [f"```yaml\n{written}```"]), "width")
    assert "options" not in step.tools and "chose_by" not in step.tools
    assert update["text"] is not None and yaml_space.canonical(update["text"]) == yaml_space.canonical(written)
    assert step.prompts[-1].template == "generator/mutate"
    assert any("Write the complete YAML" in prompt.text for prompt in step.prompts)  # the space's rules
