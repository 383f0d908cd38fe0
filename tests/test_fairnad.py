"""FairNAD's multi-type mutation: NSGA-II parents, the three stages, and runs on the code space."""

from __future__ import annotations

import json
import random

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

import archsmith
from archsmith.agents.fairnad import (
    HYPER_OPERATORS,
    STAGE_IDEA,
    STAGE_ITERATIVE,
    STAGE_PARETO,
    UPSCALE_OPERATORS,
    nsga2_select,
    plan_generation,
)
from archsmith.graph.config import config_from_dict
from archsmith.graph.trace import read_steps


def record(cid, score, params, flops, **extra):
    return {"id": cid, "status": "valid", "score": score, "params": params, "flops": flops,
            "text": f"net {cid}", "parent_ids": ["seed0"], **extra}


def test_nsga2_takes_the_first_front_then_the_least_crowded():
    history = [
        record("a", 10.0, 100, 100),  # front 1 (best score)
        record("b", 5.0, 10, 10),  # front 1 (cheapest)
        record("c", 7.0, 50, 50),  # front 1 (middle: least crowding distance)
        record("d", 4.0, 200, 200),  # dominated by every other one
    ]
    assert {r["id"] for r in nsga2_select(history, 3)} == {"a", "b", "c"}
    assert {r["id"] for r in nsga2_select(history, 2)} == {"a", "b"}  # extremes have infinite distance
    assert nsga2_select(history, 0) == []


def test_stages_and_pareto_operators():
    config = config_from_dict({"budget": {"params_m": 1.0, "flops_m": 100.0},
                               "search": {"mutation": "fairnad",
                                          "fairnad": {"initial": 3, "idea_parents": 2, "pareto_parents": 3,
                                                      "iterative_parents": 2, "iterative_steps": 2}}})
    operators = [*UPSCALE_OPERATORS, *HYPER_OPERATORS, "insert_se"]
    first = plan_generation([], {"seed0": "base"}, config, operators, random.Random(0), 99)
    assert [p["stage"] for p in first] == ["initial"] * 3 and all(p["parent_ids"] == ["seed0"] for p in first)

    history = [
        record("small", 8.0, 200_000, 20e6),  # far under budget: upscale
        record("full", 9.0, 990_000, 99e6),  # at the budget: tune hyperparameters
        record("chain2", 9.5, 900_000, 95e6, stage=STAGE_ITERATIVE, iteration=2),  # chain used up (d = 2)
    ]
    plans = plan_generation(history, {"seed0": "base"}, config, operators, random.Random(0), 99)
    stages = [p["stage"] for p in plans]
    assert stages.count(STAGE_IDEA) == 2 and stages.count(STAGE_PARETO) == 3 and stages.count(STAGE_ITERATIVE) == 2
    pareto = {p["parent_ids"][0]: p["operator"] for p in plans if p["stage"] == STAGE_PARETO}
    assert pareto["small"] in UPSCALE_OPERATORS and pareto["full"] in HYPER_OPERATORS
    iterative = [p for p in plans if p["stage"] == STAGE_ITERATIVE]
    assert [p["parent_ids"][0] for p in iterative] == ["full", "small"]  # chain2 is at its d steps
    assert all(p["iteration"] == 1 for p in iterative)
    assert len(plan_generation(history, {"seed0": "base"}, config, operators, random.Random(0), 4)) == 4


def fairnad_config(toy_config, **extra):
    return toy_config(
        space={"name": "code", "settings": {"bases": ["resnet32"]}},
        budget={"params_m": 1.5, "flops_m": 400.0, "input_size": 16, "num_classes": 10},
        search={"max_candidates": 8, "mutation": "fairnad",
                "fairnad": {"initial": 2, "idea_parents": 2, "pareto_parents": 2, "iterative_parents": 1,
                            "iterative_steps": 2}},
        sandbox={"mode": "inprocess", "timeout_s": 120},
        knowledge={"use": True, "embedding": "hashing"},
        **extra,
    )


def test_offline_fairnad_run_records_its_stages(toy_config):
    result = archsmith.run(fairnad_config(toy_config))
    assert result.counts["valid"] == 8
    stages = [r.get("stage") for r in result.history]
    assert stages[:2] == ["initial", "initial"]
    assert {"idea", "pareto", "iterative"} <= set(stages)
    for r in result.history:
        if r.get("stage") in ("initial", "idea"):
            assert r["idea_id"]  # a fairly sampled idea from the store
        if r.get("stage") == "iterative":
            assert 1 <= r["iteration"] <= 2
    navigator = read_steps(result.run_dir / "trace.sqlite", role="navigator")
    assert navigator[1].inputs["stages"] == {"idea": 2, "pareto": 2, "iterative": 1}


def test_llm_navigator_writes_the_iterative_ideas(toy_config):
    answer = json.dumps({"ideas": [{"text": "Widen the last stage and add a channel gate there."}]})
    config = fairnad_config(toy_config, roles={"navigator": {"policy": "llm"}})
    result = archsmith.run(config, chat_models={"navigator": GenericFakeChatModel(messages=iter([answer] * 10))})
    iterative = [r for r in result.history if r.get("stage") == "iterative"]
    assert iterative and all(r["idea"] == "Widen the last stage and add a channel gate there." for r in iterative)
    steps = [s for s in read_steps(result.run_dir / "trace.sqlite", role="navigator") if s.prompts]
    assert steps and steps[0].prompts[1].template == "navigator/iterate"
