"""The agent graph end to end on the toy space, with algorithmic policies and scripted fake LLMs."""

from __future__ import annotations

import json
import re

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

import archsmith
from archsmith.graph.trace import read_steps


def fake(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(list(answers)))


def block(text: str) -> str:
    return f"Here is the architecture:\n```\n{text}\n```\n"


def steps_of(result, **filters):
    return read_steps(result.run_dir / "trace.sqlite", **filters)


def test_algorithmic_run_writes_everything(toy_config):
    config = toy_config(search={"max_candidates": 6, "children_per_generation": 2}, parallel={"workers": 2})
    seen = []
    result = archsmith.run(config, on_record=seen.append)
    assert result.counts["valid"] == 6
    assert result.counts["generated"] == len(result.history) == len(seen) >= 6
    assert result.stop_reason == "budget of 6 evaluated candidates used"
    assert result.best is not None and result.best["status"] == "valid"
    ids = [r["id"] for r in result.history]
    assert len(set(ids)) == len(ids)
    root = result.run_dir
    assert (root / "config.toml").is_file() and (root / "trace.sqlite").is_file()
    assert len((root / "history.jsonl").read_text().splitlines()) == len(ids)
    assert (root / "best" / "candidate.txt").read_text().strip() == result.best["text"]
    for record in result.history:
        if record["status"] == "valid":
            saved = json.loads((root / "candidates" / record["id"] / "result.json").read_text())
            assert saved["score"] == record["score"]
            assert record["params"] <= 0.02e6
    roles = {step.role for step in steps_of(result)}
    assert {"navigator", "generator", "verifier", "evaluate", "archive"} <= roles


def test_llm_generator_valid_child(toy_config):
    config = toy_config(search={"max_candidates": 1}, roles={"generator": {"policy": "llm"}})
    result = archsmith.run(config, chat_models={"generator": fake(block("C8,C24"))})
    (record,) = result.history
    assert record["status"] == "valid" and record["text"] == "C8,C24"
    (generator_step,) = steps_of(result, role="generator")
    assert generator_step.prompts[0].template == "generator/system"
    assert generator_step.prompts[1].template == "generator/mutate"
    assert "C8,C16" in generator_step.prompts[1].text  # the parent is in the prompt
    assert generator_step.answers == [block("C8,C24")]


def test_generator_is_reasked_when_its_child_equals_the_parent(toy_config):
    config = toy_config(search={"max_candidates": 1}, roles={"generator": {"policy": "llm"}})
    result = archsmith.run(config, chat_models={"generator": fake(block("C8,C16"), block("C8,C40"))})
    (record,) = result.history  # one child: the refused answer cost no child of its own
    assert record["status"] == "valid" and record["text"] == "C8,C40"
    (generator_step,) = steps_of(result, role="generator")
    assert [e["kind"] for e in generator_step.tools["llm_errors"]] == ["rejected"]
    reask = generator_step.prompts[2].text
    assert "identical to its parent" in reask  # the re-ask says why
    # ... and names one concrete edit of the parent that nobody has proposed yet
    assert re.search(r"one change not tried yet, if unsure: (add_layer|widen)\)", reask), reask
    assert generator_step.decision == "child written after 1 structural re-asks"
    assert "fallback" not in generator_step.tools


def test_generator_reask_names_the_candidate_a_duplicate_repeats(toy_config):
    # Two children of the seed in one generation; the second repeats the first.
    config = toy_config(search={"max_candidates": 2, "children_per_generation": 2},
                        roles={"generator": {"policy": "llm"}})
    answers = fake(block("C8,C24"), block("C8,C24"), block("C16,C16"))
    result = archsmith.run(config, chat_models={"generator": answers})
    assert [r["text"] for r in result.history] == ["C8,C24", "C16,C16"]
    second = steps_of(result, role="generator")[1]
    first_id = result.history[0]["id"]
    assert f"duplicate of {first_id}" in second.prompts[2].text


def test_a_child_still_refused_after_the_reasks_goes_to_the_verifier(toy_config):
    config = toy_config(search={"max_candidates": 1, "max_children": 1},
                        roles={"generator": {"policy": "llm", "llm": {"max_retries": 1}}})
    result = archsmith.run(config, chat_models={"generator": fake(block("C8,C16"), block("C8, C16"))})
    (record,) = result.history
    # No algorithmic child stands in: the model's child is discarded as before the re-asks.
    assert record["status"] == "discarded" and record["discard_stage"] == "structure"
    assert record["discard_reason"] == "identical to its parent"
    (generator_step,) = steps_of(result, role="generator")
    assert "fallback" not in generator_step.tools and generator_step.error is None
    assert generator_step.decision == "child written; refused by the structural check 2 times"


def test_structural_reasks_can_be_switched_off(toy_config):
    config = toy_config(search={"max_candidates": 1, "max_children": 1},
                        roles={"generator": {"policy": "llm"}}, workflow={"reask_on_structure": False})
    result = archsmith.run(config, chat_models={"generator": fake(block("C8,C16"))})
    (record,) = result.history
    assert record["discard_reason"] == "identical to its parent"
    (generator_step,) = steps_of(result, role="generator")
    assert len(generator_step.answers) == 1


def test_debugger_repairs_a_child_that_fails_to_run(toy_config):
    config = toy_config(
        search={"max_candidates": 1},
        roles={"generator": {"policy": "llm"}, "debugger": {"policy": "llm"}},
    )
    models = {"generator": fake(block("C8,X")), "debugger": fake(block("C8,C32"))}
    result = archsmith.run(config, chat_models=models)
    (record,) = result.history
    assert record["status"] == "valid" and record["text"] == "C8,C32"
    assert record["debug_repairs"] == 1
    assert result.counts["repaired_by_debugger"] == 1
    verifier_steps = steps_of(result, role="verifier")
    assert verifier_steps[0].decision.startswith("fails_to_run")
    assert "cannot be built" in verifier_steps[0].tools["execute"]["traceback"]
    (debugger_step,) = steps_of(result, role="debugger")
    assert "cannot be built" in debugger_step.prompts[1].text  # the error reached the debugger


def test_debugger_gives_up_after_max_debug(toy_config):
    config = toy_config(
        search={"max_candidates": 1, "max_children": 1},
        workflow={"max_debug": 2},
        roles={"generator": {"policy": "llm"}, "debugger": {"policy": "llm"}},
    )
    models = {"generator": fake(block("C8,X")), "debugger": fake(block("X,C8"), block("C8,X,C16"))}
    result = archsmith.run(config, chat_models=models)
    (record,) = result.history
    assert record["status"] == "discarded"
    assert "after 2 debugger tries" in record["discard_reason"]


def test_downscaler_repairs_an_over_budget_child(toy_config):
    config = toy_config(
        search={"max_candidates": 1},
        roles={"generator": {"policy": "llm"}, "downscaler": {"policy": "llm"}},
    )
    models = {"generator": fake(block("C8,C512")), "downscaler": fake(block("C8,C24"))}
    result = archsmith.run(config, chat_models=models)
    (record,) = result.history
    assert record["status"] == "valid" and record["text"] == "C8,C24"
    assert record["downscale_repairs"] == 1 and result.counts["repaired_by_downscaler"] == 1
    (step,) = steps_of(result, role="downscaler")
    assert "params" in step.prompts[1].text


def test_algorithmic_downscaler_and_debugger(toy_config):
    config = toy_config(search={"max_candidates": 2}, roles={"generator": {"policy": "llm"}})
    models = {"generator": fake(block("C8,C512"), block("C8,X,C16"))}
    result = archsmith.run(config, chat_models=models)
    first, second = result.history
    assert first["status"] == "valid" and first["downscale_repairs"] >= 1
    assert first["params"] <= 0.02e6
    assert second["status"] == "valid" and second["text"] == "C8,C16" and second["debug_repairs"] == 1


def test_truncated_answer_is_a_counted_failure_then_retried(toy_config):
    config = toy_config(search={"max_candidates": 1}, roles={"generator": {"policy": "llm"}})
    models = {"generator": fake("```\nC8,C2", block("C8,C40"))}
    result = archsmith.run(config, chat_models=models)
    (record,) = result.history
    assert record["status"] == "valid" and record["text"] == "C8,C40"
    (step,) = steps_of(result, role="generator")
    assert step.tokens["failures"] == 1
    assert step.prompts[-1].template == "common/retry"
    assert "truncated" in step.prompts[-1].text


def test_garbage_answers_discard_the_child_and_the_run_goes_on(toy_config):
    config = toy_config(
        search={"max_candidates": 1, "max_children": 2},
        roles={"generator": {"policy": "llm", "fallback": "none", "llm": {"max_retries": 1}}},
    )
    models = {"generator": fake("I cannot help", "```\nC8", block("C8,C48"))}
    result = archsmith.run(config, chat_models=models)
    first, second = result.history
    assert first["status"] == "discarded" and first["discard_reason"] == "the generator produced no child"
    assert second["status"] == "valid"


def test_llm_navigator_plans_and_falls_back(toy_config):
    plan = json.dumps({"plans": [{"parent_ids": ["seed0"], "operator": "add_layer", "idea": "go deeper"}]})
    config = toy_config(search={"max_candidates": 2}, roles={"navigator": {"policy": "llm"}})
    models = {"navigator": fake(plan, "nonsense", "still nonsense", "more nonsense")}
    result = archsmith.run(config, chat_models=models)
    assert result.counts["generated"] == 2
    nav = steps_of(result, role="navigator")
    assert nav[0].parsed[0]["operator"] == "add_layer" and nav[0].parsed[0]["idea"] == "go deeper"
    assert nav[1].tools.get("fallback")  # unusable answers: algorithmic plan, run continues


def _navigator_step_using_its_first_answer(toy_config, answer: str, children: int):
    """The first navigator step of a run whose navigator model answers ``answer``, checked to have
    used that answer (no re-ask, no algorithmic fallback)."""
    config = toy_config(search={"max_candidates": children, "children_per_generation": children},
                        roles={"navigator": {"policy": "llm"}})
    result = archsmith.run(config, chat_models={"navigator": fake(answer)})
    nav = steps_of(result, role="navigator")[0]
    assert not nav.tools.get("fallback") and nav.tools["llm_attempts"] == 1
    return nav


def test_llm_navigator_keeps_the_usable_plans_of_a_flawed_answer(toy_config):
    """Small models name discarded children as parents and drop a closing brace: the plans that
    name pool members are used (unknown ids dropped, recorded in the trace), not the whole answer
    thrown away."""
    plans = [
        {"parent_ids": ["seed0", "c9999"], "operator": "add_layer", "idea": "go deeper"},
        {"parent_ids": ["c0042"], "operator": "widen", "idea": "wider"},
    ]
    answer = "```json\n" + json.dumps({"plans": plans})[:-1] + "\n```"  # the last '}' missing
    nav = _navigator_step_using_its_first_answer(toy_config, answer, children=2)
    assert nav.parsed[0]["parent_ids"] == ["seed0"] and nav.parsed[0]["idea"] == "go deeper"
    assert any("c9999" in problem for problem in nav.tools["plan_problems"])
    assert any("plans[1].parent_ids" in problem for problem in nav.tools["plan_problems"])


def test_llm_navigator_uses_the_complete_plans_of_a_cut_off_answer(toy_config):
    """An answer cut off by max_tokens after running on past the plans asked for: its complete
    plans are used, without a re-ask; the trace says the answer was cut off."""
    plan = {"parent_ids": ["seed0"], "operator": "add_layer", "idea": "go deeper"}
    answer = "```json\n" + json.dumps({"plans": [plan] * 3})[:-30]  # cut inside the third plan
    nav = _navigator_step_using_its_first_answer(toy_config, answer, children=2)
    assert [p["idea"] for p in nav.parsed] == ["go deeper", "go deeper"]
    assert any("used the 2 complete plan(s)" in problem for problem in nav.tools["plan_problems"])


def test_llm_navigator_with_a_pool_of_one_uses_it_whatever_ids_the_plan_names(toy_config):
    """Qwen2.5-Coder-0.5B named the best id from its notes (not in a pool of one): with one
    candidate to start from there is nothing to choose, so the plan is used, not re-asked."""
    answer = json.dumps({"plans": [{"parent_ids": ["c0012"], "operator": "widen", "idea": "wider"}]})
    nav = _navigator_step_using_its_first_answer(toy_config, answer, children=1)
    assert nav.parsed[0]["parent_ids"] == ["seed0"] and nav.parsed[0]["idea"] == "wider"
    assert any("used its only candidate seed0" in problem for problem in nav.tools["plan_problems"])


def test_phase_models_are_used_per_phase(toy_config):
    config = toy_config(
        search={"max_candidates": 2},
        phases={"transition_after": 0.5, "exploration_model": "small", "refinement_model": "large"},
        roles={"generator": {"policy": "llm"}},
    )
    models = {"small": fake(block("C8,C24")), "large": fake(block("C8,C32"))}
    result = archsmith.run(config, chat_models=models)
    first, second = result.history
    assert (first["phase"], first["text"]) == ("exploration", "C8,C24")
    assert (second["phase"], second["text"]) == ("refinement", "C8,C32")
    assert [s.tools["llm_model"] for s in steps_of(result, role="generator")] == ["small", "large"]


class Interrupt(Exception):
    pass


def test_resume_after_interruption_loses_nothing(toy_config):
    config = toy_config(search={"max_candidates": 8, "children_per_generation": 2})
    archived = []

    def stop_after_two(record):
        archived.append(record["id"])
        if len(archived) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        archsmith.run(config, on_record=stop_after_two)
    (run_dir,) = (config_dir for config_dir in (config.runs_dir and __import__("pathlib").Path(config.runs_dir)).iterdir())
    result = archsmith.resume(run_dir)
    assert result.counts["valid"] == 8
    assert len({r["id"] for r in result.history}) == len(result.history)
    assert result.sessions == 2
    # nothing evaluated twice: one fresh score per valid candidate over both sessions
    fresh = [s for s in steps_of(result, role="evaluate") if "score" in s.tools]
    assert len(fresh) == len({s.candidate_id for s in fresh}) == result.counts["valid"]
    # a finished run resumes to the same result without doing anything
    again = archsmith.resume(run_dir)
    assert again.counts == result.counts and again.best == result.best


def test_target_score_stops_the_run(toy_config):
    config = toy_config(search={"max_candidates": 20, "target_score": -1e9})
    result = archsmith.run(config)
    assert result.counts["generated"] == 1
    assert result.stop_reason.startswith("target score")


def test_time_limit_stops_the_run(toy_config):
    config = toy_config(search={"max_candidates": 50, "time_limit_s": 0.001})
    result = archsmith.run(config)
    assert result.counts["generated"] == 1
    assert result.stop_reason.startswith("time limit")


def test_time_limit_counts_the_navigators_own_time(toy_config, monkeypatch):
    """An LLM Navigator can take half of a generation: its time counts toward time_limit_s."""
    import time

    from archsmith.agents.navigator import Navigator

    planned = Navigator.algorithmic

    def slow_plan(self, state, step):
        time.sleep(1.0)
        return planned(self, state, step)

    monkeypatch.setattr(Navigator, "algorithmic", slow_plan)
    config = toy_config(search={"max_candidates": 50, "time_limit_s": 0.9})
    result = archsmith.run(config)
    assert result.counts["generated"] == 1
    assert result.stop_reason.startswith("time limit")


def test_generator_memory_feeds_back_outcomes(toy_config):
    config = toy_config(
        search={"max_candidates": 2},
        roles={"generator": {"policy": "llm", "memory": True}},
    )
    result = archsmith.run(config, chat_models={"generator": fake(block("C8,X,C7"), block("C8,C56"))})
    second = steps_of(result, role="generator")[-1]
    assert "Your latest children" in second.prompts[1].text
    assert "C8,C8 -> score" in second.prompts[1].text  # the first child, as repaired, and its score
    assert result.history[1]["status"] == "valid"


def test_scoring_that_fails_the_same_way_every_time_stops_the_run(toy_config, tmp_path):
    """A broken evaluator (here a data directory that does not exist) is not the candidates' fault:
    the run stops after the first SYSTEMATIC_FAILURE_COUNT scorings instead of discarding 10x the budget."""
    from archsmith.graph.nodes import SYSTEMATIC_FAILURE_COUNT

    missing = tmp_path / "no-cifar"
    config = toy_config(
        search={"max_candidates": 30, "children_per_generation": 2},
        evaluator={"name": "train", "train": {"preset": "smoke", "device": "cpu",
                                              "data": {"name": "cifar10", "path": str(missing)}}},
    )  # fmt: skip
    result = archsmith.run(config)
    assert result.counts["valid"] == 0
    assert SYSTEMATIC_FAILURE_COUNT <= result.counts["generated"] < SYSTEMATIC_FAILURE_COUNT + 2
    assert result.stop_reason.startswith(f"stopped: all {result.counts['generated']} candidates scored so far")
    assert str(missing) in result.stop_reason and "DataError" in result.stop_reason


def test_different_scoring_errors_do_not_stop_the_run():
    from archsmith.graph.nodes import systematic_scoring_failure

    failed = [{"status": "discarded", "discard_stage": "score", "discard_reason": f"scoring failed: E{i % 2}"}
              for i in range(10)]  # fmt: skip
    assert systematic_scoring_failure(failed) is None
    same = [dict(r, discard_reason="scoring failed: E") for r in failed]
    assert systematic_scoring_failure(same).startswith("stopped: all 10 candidates")
    assert systematic_scoring_failure(same + [{"status": "valid"}]) is None
    assert systematic_scoring_failure(same[:7]) is None
