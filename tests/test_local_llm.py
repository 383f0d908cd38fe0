"""Integration tier: every role's llm policy against a real llama.cpp server on the loopback.

Runs when llama-cpp-python's server is installed and the models are prepared
(``python scripts/local_llm.py prepare``; see the README); skipped otherwise. Structure, not quality:
each role completes its step with the real model, answers are parsed or counted as failures, the
run completes, tokens and latency are in the trace.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import archsmith
from archsmith.agents.servers import ManagedServer
from archsmith.graph.trace import read_steps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import local_llm  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SMALL, CODER = "smollm2", "qwen-coder"


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python[server] is not installed")
    missing = [alias for alias in (SMALL, CODER) if not local_llm.model_path(alias).is_file()]
    if missing:
        pytest.skip(f"models not prepared ({', '.join(missing)}): python scripts/local_llm.py prepare")
    with ManagedServer(local_llm.server_spec([SMALL, CODER]), tmp_path_factory.mktemp("server")) as server:
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


@pytest.mark.parametrize("space", ["template", "nb201", "code"])
def test_generator_in_every_space(llm_server, toy_config, space):
    settings = {"template": {}, "nb201": {}, "code": {"bases": ["resnet32"]}}[space]
    config = toy_config(
        space={"name": space, "settings": settings},
        budget={"params_m": 1.5, "input_size": 16, "num_classes": 10},
        search={"max_candidates": 1, "max_children": 2},
        sandbox={"mode": "sandbox", "timeout_s": 60},
        workflow={"max_debug": 1},
        roles={"generator": {"policy": "llm", "fallback": "none",
                             "llm": llm(llm_server, CODER, 1800 if space == "code" else 300)},
               "debugger": {"policy": "llm", "llm": llm(llm_server, CODER, 1800 if space == "code" else 300)}},
    )
    result = archsmith.run(config)
    assert result.finished and result.history
    assert_exchanged(role_steps(result, "generator"))
    for record in result.history:  # valid, or discarded with a classified reason
        assert record["status"] == "valid" or record["discard_reason"]


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
