"""Integration tier: every role's llm policy against a real llama.cpp server on the loopback.

Runs when llama-cpp-python's server is installed and the models are prepared
(``python scripts/local_llm.py prepare``; see the README); skipped otherwise in a plain ``pytest``
run. Asked for with ``pytest -m integration``, a skip fails the session (tests/conftest.py).
Each role completes its step with the real model, answers are parsed or counted as failures, the
run completes, tokens and latency are in the trace; and in every search space (template, nb201,
code, yolo) Qwen2.5-Coder-0.5B makes at least one child that parses and is scored valid: it writes
the child (after at most two repairs by the space's deterministic repair), or in the yolo space
picks one of the space's listed valid edits (``space.settings.llm_answer = "edit"``; a pick made
by the rule after two unusable answers does not count).

``ARCHSMITH_TEST_LLM_THREADS`` sets the server's CPU threads (default 2, for a 2-core machine of its
own). On a machine already busy, 1 is faster: a 2-thread llama.cpp waits on its slowest thread, and
on an oversubscribed CPU it generated 0.33 tokens/s where 1 thread made 4.3.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

import archsmith
from archsmith.agents.servers import ManagedServer
from archsmith.graph.trace import read_steps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import local_llm  # noqa: E402

# pytest's 600 s default is too short here: a test makes up to 4 children on a 2-core CPU, each
# LLM call may take up to timeout_s (240 s), twice with the retry, and the debugger may follow.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]
SMALL, CODER = "smollm2", "qwen-coder"


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python[server] is not installed")
    missing = [alias for alias in (SMALL, CODER) if not local_llm.model_path(alias).is_file()]
    if missing:
        pytest.skip(f"models not prepared ({', '.join(missing)}): python scripts/local_llm.py prepare")
    threads = int(os.environ.get("ARCHSMITH_TEST_LLM_THREADS", "2"))
    spec = local_llm.server_spec([SMALL, CODER], threads=threads)
    with ManagedServer(spec, tmp_path_factory.mktemp("server")) as server:
        yield server


def llm(server, model: str, max_tokens: int = 400, **extra) -> dict:
    return {"base_url": server.base_url, "model": model, "max_tokens": max_tokens, "timeout_s": 240,
            "max_retries": 1, "temperature": 0.2, **extra}


def role_steps(result, role: str):
    return read_steps(result.run_dir / "trace.sqlite", role=role)


def assert_exchanged(steps) -> None:
    """Every llm step got real answers (parsed or counted as failures), with tokens and wait time."""
    assert steps
    for step in steps:
        assert step.answers, step.error
        assert step.tokens.get("output", 0) > 0 and step.tools.get("llm_wait_s", 0) > 0
        assert step.parsed is not None or step.tools.get("llm_errors")


def test_navigator_on_the_small_model(llm_server, toy_config):
    config = toy_config(search={"max_candidates": 2, "children_per_generation": 2},
                        roles={"navigator": {"policy": "llm", "llm": llm(llm_server, SMALL)}})
    result = archsmith.run(config)
    assert result.finished and result.counts["valid"] == 2
    assert_exchanged(role_steps(result, "navigator"))


# Every search space the product offers an LLM: its settings, the budget its seed fits, the
# evaluator (yolo: the detection proxy at a small input), and the generator's answer length (yolo:
# a JSON choice; written as a whole YAML, llm_answer = "yaml", the 0.5B model copied the 50-line
# parent verbatim in 12 of 12 tries, 2026-12-03).
SPACES = {
    "template": ({}, {"params_m": 1.5, "input_size": 16, "num_classes": 10}, {}, 300),
    "nb201": ({}, {"params_m": 1.5, "input_size": 16, "num_classes": 10}, {}, 300),
    "code": ({"bases": ["resnet32"]}, {"params_m": 1.5, "input_size": 16, "num_classes": 10}, {}, 1800),
    "yolo": ({"base": "yolov8n", "mode": "yolov8+", "llm_answer": "edit"},
             {"params_m": 3.1572, "flops_m": 8855.1, "input_size": 640, "num_classes": 80},
             {"name": "nas_det", "nas_det": {"input_size": 64, "batch_size": 2, "repeats": 1}}, 200),
}
CHILDREN_PER_SPACE = 4  # children the real model makes, at most, for one valid one


def valid_llm_children(result) -> list[str]:
    """Ids of the valid children the generator's llm policy made with the coder model (an answer
    parsed into a child, or an edit the model chose; no fallback: roles.generator.fallback =
    "none"; no rule pick after unusable choices)."""
    written = {step.candidate_id: step for step in role_steps(result, "generator")
               if step.parsed is not None and step.tools.get("llm_model") == CODER and "fallback" not in step.tools
               and step.tools.get("chose_by", "llm") == "llm"}
    return [record["id"] for record in result.history if record["status"] == "valid" and record["id"] in written]


@pytest.mark.parametrize("space", list(SPACES))
def test_generator_writes_a_valid_child_in_every_space(llm_server, toy_config, request, space):
    if space == "yolo":
        request.getfixturevalue("ultralytics_env")
    settings, budget, evaluator, max_tokens = SPACES[space]
    config = toy_config(
        space={"name": space, "settings": settings},
        budget=budget,
        evaluator=evaluator,
        search={"max_candidates": 1, "max_children": CHILDREN_PER_SPACE},
        sandbox={"mode": "sandbox", "timeout_s": 60},
        workflow={"max_debug": 2},
        # Greedy decoding (temperature 0): the same answers on every run of the same build, so the
        # test does not pass or fail by chance. A child the model wrote may be repaired by the
        # space's deterministic repair (the algorithmic Debugger: channel chains, argument counts,
        # ...); the model's own repairs are test_debugger_and_downscaler_attempts's.
        roles={"generator": {"policy": "llm", "fallback": "none", "llm": llm(llm_server, CODER, max_tokens,
                                                                              temperature=0.0)},
               "debugger": {"policy": "algorithmic"}},
    )
    result = archsmith.run(config)
    assert result.finished and result.history
    assert_exchanged(role_steps(result, "generator"))
    for record in result.history:  # valid, or discarded with a classified reason
        assert record["status"] == "valid" or record["discard_reason"]
    reasons = [record["discard_reason"] for record in result.history if record["status"] != "valid"]
    assert valid_llm_children(result), f"{space}: no valid child from {CODER} in {len(result.history)}: {reasons}"


def test_debugger_and_downscaler_attempts(llm_server, toy_config):
    config = toy_config(
        budget={"params_m": 0.0005, "input_size": 8, "num_classes": 4},  # everything is over budget
        search={"max_candidates": 1, "max_children": 1},
        workflow={"max_debug": 1, "max_downscale": 1},
        roles={"generator": {"policy": "llm", "fallback": "algorithmic", "llm": llm(llm_server, SMALL, 60)},
               "debugger": {"policy": "llm", "llm": llm(llm_server, CODER, 200)},
               "downscaler": {"policy": "llm", "llm": llm(llm_server, CODER, 200)}},
    )
    result = archsmith.run(config)
    assert result.finished
    attempted = role_steps(result, "debugger") + role_steps(result, "downscaler")
    assert attempted, "neither repair role was reached"
    assert_exchanged(attempted)


def test_phasenas_small_then_large_model(llm_server, toy_config):
    config = toy_config(
        search={"max_candidates": 4, "children_per_generation": 2},
        phases={"enabled": True, "transition_after": 0.5, "exploration_model": SMALL, "refinement_model": CODER},
        roles={"generator": {"policy": "llm", "llm": llm(llm_server, CODER, 120)}},
    )
    result = archsmith.run(config)
    assert result.finished
    used = {(step.phase, step.tools.get("llm_model")) for step in role_steps(result, "generator")}
    assert ("exploration", SMALL) in used and ("refinement", CODER) in used
