"""A run never dies because an LLM call failed.

Every role's ``llm`` policy talks through langchain-openai to a scripted OpenAI-compatible server
on 127.0.0.1 (tests/fake_openai_server.py) that injects one fault class at a time: connection
refused, timeouts, HTTP 429 and 5xx, dropped connections, empty, malformed and truncated
answers, garbage. The run completes, each failure is in the trace with its kind, endpoint
retries happen with backoff (the server counts the requests and their spacing), and the role's
algorithmic policy takes over when configured to.
"""

from __future__ import annotations

import random
import time

import pytest
from fake_openai_server import (
    Behaviour,
    FakeOpenAIServer,
    closed_port,
    drop,
    empty,
    garbage,
    hang,
    malformed,
    ok,
    status,
    truncated,
)

pytest.importorskip("langchain_openai")

import archsmith  # noqa: E402
from archsmith.agents.llm import RetryPolicy, classify_error, retry_after_s  # noqa: E402
from archsmith.graph.trace import read_steps  # noqa: E402

KEY_ENV = "ARCHSMITH_FAKE_LLM_KEY"
TIMEOUT_S = 0.3
BACKOFF_S = 0.02
BACKOFF_MAX_S = 0.1
ENDPOINT_RETRIES = 2
ANSWER_RETRIES = 1


def block(text: str) -> str:
    return f"Here is the child:\n```\n{text}\n```\n"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """The API key from the environment (as configured), and no proxy between us and 127.0.0.1."""
    monkeypatch.setenv(KEY_ENV, "sk-fake-test-key")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server():
    with FakeOpenAIServer() as fake:
        yield fake


def llm_role(base_url: str, fallback: str = "algorithmic", **llm) -> dict:
    settings = {
        "base_url": base_url,
        "model": "fake-model",
        "api_key_env": KEY_ENV,
        "max_tokens": 256,
        "timeout_s": TIMEOUT_S,
        "backoff_s": BACKOFF_S,
        "backoff_max_s": BACKOFF_MAX_S,
        "max_endpoint_retries": ENDPOINT_RETRIES,
        "max_retries": ANSWER_RETRIES,
        **llm,
    }
    return {"policy": "llm", "fallback": fallback, "llm": settings}


def steps_of(result, **filters):
    return read_steps(result.run_dir / "trace.sqlite", **filters)


def kinds(step) -> list[str]:
    return [error["kind"] for error in step.tools.get("llm_errors", [])]


# ----------------------------------------------------------------------------- the matrix

ENDPOINT_FAULTS = [
    pytest.param(status(429), "rate_limited", id="429"),
    pytest.param(status(500), "server_error", id="500"),
    pytest.param(status(502), "server_error", id="502"),
    pytest.param(status(503), "server_error", id="503"),
    pytest.param(hang(3.0), "timeout", id="timeout"),
    pytest.param(drop(), "connection", id="dropped"),
    pytest.param(malformed(), "malformed", id="malformed-body"),
]
ANSWER_FAULTS = [
    pytest.param(empty(), "empty", id="empty"),
    pytest.param(truncated(), "truncated", id="truncated"),
    pytest.param(garbage(), "unparseable", id="garbage"),
]


@pytest.mark.parametrize(("fault", "kind"), ENDPOINT_FAULTS)
def test_endpoint_fault_is_retried_with_backoff_then_falls_back(toy_config, server, fault: Behaviour, kind):
    server.script(default=fault)
    config = toy_config(search={"max_candidates": 1}, roles={"generator": llm_role(server.url)})
    result = archsmith.run(config)
    (record,) = result.history
    assert record["status"] == "valid"  # the algorithmic generator wrote the child
    (step,) = steps_of(result, role="generator")
    attempts = ENDPOINT_RETRIES + 1
    assert kinds(step) == [kind] * attempts
    assert len(server.chat_requests()) == attempts
    assert step.tools["llm_attempts"] == attempts
    assert step.tools["fallback"] == f"algorithmic after {attempts} failures"
    assert step.decision.endswith("[algorithmic fallback]") and step.parsed == record["text"]
    errors = step.tools["llm_errors"]
    assert [e["attempt"] for e in errors] == list(range(1, attempts + 1))
    assert all(e["wait_s"] > 0 for e in errors[:-1]) and errors[-1]["wait_s"] == 0
    assert "gave up after" in errors[-1]["message"]
    sent = [r.at for r in server.chat_requests()]
    for gap, error in zip((b - a for a, b in zip(sent, sent[1:])), errors):
        assert gap >= error["wait_s"]  # the client really waited before retrying


def test_connection_refused_falls_back(toy_config):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    config = toy_config(search={"max_candidates": 1}, roles={"generator": llm_role(url)})
    result = archsmith.run(config)
    assert result.history[0]["status"] == "valid"
    (step,) = steps_of(result, role="generator")
    assert kinds(step) == ["connection"] * (ENDPOINT_RETRIES + 1)
    assert "refused" in step.tools["llm_errors"][0]["message"].lower()
    assert step.tools["fallback"].startswith("algorithmic")


@pytest.mark.parametrize(("fault", "kind"), ANSWER_FAULTS)
def test_unusable_answer_is_reasked_then_falls_back(toy_config, server, fault: Behaviour, kind):
    server.script(default=fault)
    config = toy_config(search={"max_candidates": 1}, roles={"generator": llm_role(server.url)})
    result = archsmith.run(config)
    assert result.history[0]["status"] == "valid"
    (step,) = steps_of(result, role="generator")
    attempts = ANSWER_RETRIES + 1
    assert kinds(step) == [kind] * attempts
    assert len(server.chat_requests()) == attempts
    assert all(e["wait_s"] == 0 for e in step.tools["llm_errors"])  # the model answered: no backoff
    assert step.prompts[-1].template == "common/retry"
    retry = server.chat_requests()[-1].body["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert step.tools["fallback"] == f"algorithmic after {attempts} failures"


def test_recovers_after_transient_faults_and_honours_retry_after(toy_config, server):
    server.script(status(503), status(429, retry_after=0.25), drop(), ok(block("C8,C24")))
    config = toy_config(
        search={"max_candidates": 1},
        roles={"generator": llm_role(server.url, max_endpoint_retries=3, backoff_max_s=0.5)},
    )
    result = archsmith.run(config)
    (record,) = result.history
    assert record["status"] == "valid" and record["text"] == "C8,C24"  # the LLM's child
    (step,) = steps_of(result, role="generator")
    assert kinds(step) == ["server_error", "rate_limited", "connection"]
    assert "fallback" not in step.tools and step.error is None
    retry_after = step.tools["llm_errors"][1]
    assert retry_after["wait_s"] >= 0.25 and "Retry-After 0.25 s honoured" in retry_after["message"]
    sent = [r.at for r in server.chat_requests()]
    assert len(sent) == 4 and sent[2] - sent[1] >= 0.25


def test_backoff_grows_exponentially_and_is_capped():
    policy = RetryPolicy(backoff_s=1.0, backoff_max_s=5.0)
    rng = random.Random(0)
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (8, 5.0)]:
        waits = [policy.backoff(failures, rng) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered


def test_long_retry_after_ends_the_retries(toy_config, server):
    server.script(default=status(429, retry_after=30))
    config = toy_config(search={"max_candidates": 1}, roles={"generator": llm_role(server.url)})
    started = time.perf_counter()
    result = archsmith.run(config)
    assert time.perf_counter() - started < 10
    (step,) = steps_of(result, role="generator")
    assert len(server.chat_requests()) == 1
    assert kinds(step) == ["rate_limited"] and "not retrying" in step.tools["llm_errors"][0]["message"]
    assert result.history[0]["status"] == "valid"


def test_per_call_timeout_is_enforced_on_any_chat_model(toy_config):
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    class Stuck(GenericFakeChatModel):
        def _generate(self, *args, **kwargs):
            time.sleep(2.0)
            return super()._generate(*args, **kwargs)

    config = toy_config(
        search={"max_candidates": 1},
        roles={"generator": llm_role("http://127.0.0.1:9/v1", max_endpoint_retries=0)},
    )
    started = time.perf_counter()
    result = archsmith.run(config, chat_models={"generator": Stuck(messages=iter([block("C8,C24")]))})
    assert time.perf_counter() - started < 1.8
    (step,) = steps_of(result, role="generator")
    assert kinds(step) == ["timeout"] and "timeout_s = 0.3" in step.tools["llm_errors"][0]["message"]
    assert result.history[0]["status"] == "valid"


# ----------------------------------------------------------------------------- fallback = none


def test_no_fallback_generator_discards_the_child(toy_config, server):
    server.script(status(502), status(502), status(502), ok(block("C8,C40")))
    config = toy_config(
        search={"max_candidates": 1, "max_children": 2},
        roles={"generator": llm_role(server.url, fallback="none")},
    )
    result = archsmith.run(config)
    first, second = result.history
    assert first["status"] == "discarded" and first["discard_reason"] == "the generator produced no child"
    assert second["status"] == "valid" and second["text"] == "C8,C40"
    failed, succeeded = steps_of(result, role="generator")
    assert failed.tools["fallback"] == "none" and failed.decision == "no usable child"
    assert failed.error.startswith("no usable LLM answer after 3 failures")
    assert "fallback" not in succeeded.tools


def test_debugger_falls_back_to_algorithmic_repair(toy_config, server):
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    server.script(default=hang(3.0))
    config = toy_config(
        search={"max_candidates": 1},
        roles={"generator": {"policy": "llm"}, "debugger": llm_role(server.url, max_endpoint_retries=1)},
    )
    generator = GenericFakeChatModel(messages=iter([block("C8,X,C32")]))
    result = archsmith.run(config, chat_models={"generator": generator})
    (record,) = result.history
    assert record["status"] == "valid" and record["text"] == "C8,C32" and record["debug_repairs"] == 1
    (step,) = steps_of(result, role="debugger")
    assert kinds(step) == ["timeout", "timeout"]
    assert step.tools["fallback"] == "algorithmic after 2 failures" and step.decision.startswith("repaired")


def test_debugger_without_fallback_changes_nothing(toy_config, server):
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    server.script(default=garbage())
    config = toy_config(
        search={"max_candidates": 1, "max_children": 1},
        workflow={"max_debug": 1},
        roles={"generator": {"policy": "llm"}, "debugger": llm_role(server.url, fallback="none")},
    )
    generator = GenericFakeChatModel(messages=iter([block("C8,X,C16")]))
    result = archsmith.run(config, chat_models={"generator": generator})
    (record,) = result.history
    assert record["status"] == "discarded" and "debugger" in record["discard_reason"]
    (step,) = steps_of(result, role="debugger")
    assert step.decision == "no repair found" and step.tools["fallback"] == "none"


def test_downscaler_falls_back_to_algorithmic_shrink(toy_config, server):
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    server.script(default=status(500))
    config = toy_config(
        search={"max_candidates": 1},
        roles={"generator": {"policy": "llm"}, "downscaler": llm_role(server.url)},
    )
    generator = GenericFakeChatModel(messages=iter([block("C8,C512")]))
    result = archsmith.run(config, chat_models={"generator": generator})
    (record,) = result.history
    assert record["status"] == "valid" and record["downscale_repairs"] >= 1 and record["params"] <= 0.02e6
    step = steps_of(result, role="downscaler")[0]
    assert set(kinds(step)) == {"server_error"} and step.tools["fallback"].startswith("algorithmic")
    assert step.tools["shrink"]["operator"] == "shrink"  # the algorithmic policy's trace


def test_navigator_falls_back_to_algorithmic_plans(toy_config, server):
    server.script(default=truncated('{"plans": [{"parent_ids": ["seed0"], "oper'))
    config = toy_config(search={"max_candidates": 2}, roles={"navigator": llm_role(server.url)})
    result = archsmith.run(config)
    assert result.counts["valid"] == 2
    for step in steps_of(result, role="navigator"):
        assert set(kinds(step)) == {"truncated"}
        assert step.tools["fallback"] == f"algorithmic after {ANSWER_RETRIES + 1} failures"
        assert step.parsed and step.decision.endswith("[algorithmic fallback]")


def test_navigator_rejects_fallback_none(toy_config, server):
    config = toy_config(roles={"navigator": llm_role(server.url, fallback="none")})
    with pytest.raises(ValueError, match="roles.navigator.fallback = 'none'"):
        archsmith.run(config)


def test_every_role_on_a_dead_endpoint_still_finishes(toy_config):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    dead = llm_role(url, max_endpoint_retries=0)
    config = toy_config(
        search={"max_candidates": 2},
        roles={role: dead for role in ("navigator", "generator", "debugger", "downscaler")},
    )
    result = archsmith.run(config)
    assert result.counts["valid"] == 2
    llm_steps = [s for s in steps_of(result) if s.policy == "llm"]
    assert llm_steps and all(s.tools["fallback"].startswith("algorithmic") for s in llm_steps)


# ----------------------------------------------------------------------------- wire and trace


def test_requests_are_what_openai_compatible_servers_accept(toy_config, server):
    server.script(ok(block("C8,C24")))
    config = toy_config(search={"max_candidates": 1}, roles={"generator": llm_role(server.url)})
    archsmith.run(config)
    (request,) = server.chat_requests()
    body = request.body
    assert body["model"] == "fake-model" and body["max_tokens"] == 256
    assert "max_completion_tokens" not in body  # Ollama, LM Studio, older llama.cpp ignore it
    assert body["stream"] is False
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["authorization"] == "Bearer sk-fake-test-key"


def test_trace_command_shows_the_failures(toy_config, server):
    from typer.testing import CliRunner

    from archsmith.graph.cli import app

    server.script(status(429), ok(block("C8,C24")))
    config = toy_config(search={"max_candidates": 1}, roles={"generator": llm_role(server.url)})
    result = archsmith.run(config)
    (step,) = steps_of(result, role="generator")
    shown = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["trace", str(result.run_dir), "--step", str(step.id)])
    assert shown.exit_code == 0, shown.output
    assert '"kind": "rate_limited"' in shown.output and '"llm_errors"' in shown.output


def test_classification_without_a_server():
    class Response:
        headers = {"retry-after": "2"}

    class RateLimited(Exception):
        status_code = 429
        response = Response()

    assert classify_error(RateLimited()) == "rate_limited" and retry_after_s(RateLimited()) == 2.0
    assert classify_error(ConnectionRefusedError()) == "connection"
    assert classify_error(TimeoutError()) == "timeout"
    assert classify_error(type("Unauthorized", (Exception,), {"status_code": 401})()) == "client_error"
    assert classify_error(StopIteration()) == "exhausted"


# ----------------------------------------------------------------------------- phases


def _children(*texts: str) -> list[str]:
    return [block(text) for text in texts]


def _phase_models(path: str):
    """Fake chat models for the exploration ("small") and refinement ("large") phases whose
    answers send every generator step down one path."""
    import itertools

    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    class Refused(GenericFakeChatModel):
        def _generate(self, *args, **kwargs):
            raise ConnectionRefusedError("[Errno 111] Connection refused")

    def model(widths: list[int]):
        texts = [f"C8,C{width}" for width in widths]
        if path == "answer":
            answers = _children(*texts)
        elif path == "reask":  # garbage first, a child on the re-ask
            answers = [a for text in texts for a in (garbage().text, block(text))]
        elif path == "fallback":  # unusable answers until the re-asks are spent
            return GenericFakeChatModel(messages=itertools.repeat(garbage().text))
        else:  # endpoint failures
            return Refused(messages=iter([]))
        return GenericFakeChatModel(messages=iter(answers))

    return {"small": model([24, 32, 40, 48, 56, 64]), "large": model([72, 80, 88, 96, 104, 112])}


@pytest.mark.parametrize(("path", "fallback"), [("answer", "algorithmic"), ("reask", "algorithmic"),
                                                ("fallback", "algorithmic"), ("endpoint", "algorithmic"),
                                                ("endpoint", "none")])
def test_every_step_records_its_phase_whatever_path_it_took(toy_config, path, fallback):
    """PhaseNAS: exploration on the small model, refinement on the large one. Every step (the
    navigator's, each child role's, the tool nodes') says which phase it ran in, whether the
    model answered, was re-asked, failed, or its endpoint did (and the role fell back or not)."""
    config = toy_config(
        search={"max_candidates": 4, "children_per_generation": 2, "max_children": 8},
        phases={"enabled": True, "transition_after": 0.5, "exploration_model": "small", "refinement_model": "large"},
        roles={"generator": {"policy": "llm", "fallback": fallback,
                             "llm": {"max_retries": 1, "max_endpoint_retries": 1, "backoff_s": 0.01,
                                     "backoff_max_s": 0.02}}},
    )
    result = archsmith.run(config, chat_models=_phase_models(path))
    assert result.finished
    steps = steps_of(result)
    assert steps and all(step.phase in ("exploration", "refinement") for step in steps), \
        [(step.node, step.phase) for step in steps if step.phase is None]
    planned = {plan["candidate_id"]: plan["phase"] for step in steps if step.role == "navigator"
               for plan in step.parsed}
    generator = [step for step in steps if step.role == "generator"]
    # with no child at all (fallback = "none", every call refused) the search never leaves exploration
    phases = {"exploration"} if fallback == "none" else {"exploration", "refinement"}
    assert {step.phase for step in generator} == phases
    for step in generator:
        assert step.phase == planned[step.candidate_id]
        assert step.tools["llm_model"] == {"exploration": "small", "refinement": "large"}[step.phase]
        assert step.inputs["phase"] == step.phase  # what the model was told, kept on a fallback too
        errors = kinds(step)
        if path == "answer":
            assert not errors and step.parsed
        elif path == "reask":
            assert errors == ["unparseable"] and "fallback" not in step.tools
        elif path == "fallback":
            assert errors == ["unparseable", "unparseable"] and step.tools["fallback"].startswith("algorithmic")
        else:
            assert errors == ["connection", "connection"]
            assert step.tools["fallback"] == ("none" if fallback == "none" else "algorithmic after 2 failures")
    for record in result.history:
        assert record["phase"] == planned[record["id"]]


def test_a_trace_written_before_steps_had_a_phase_still_opens(tmp_path):
    import sqlite3

    from archsmith.graph.trace import StepRecord, TraceStore

    db = tmp_path / "trace.sqlite"
    with sqlite3.connect(db) as old:  # the steps table as the first release wrote it
        old.execute("CREATE TABLE steps (id INTEGER PRIMARY KEY AUTOINCREMENT, session INTEGER NOT NULL, "
                    "generation INTEGER, candidate_id TEXT, node TEXT NOT NULL, role TEXT NOT NULL, policy TEXT, "
                    "started_at REAL NOT NULL, duration_s REAL NOT NULL, decision TEXT, inputs TEXT, prompts TEXT, "
                    "answers TEXT, parsed TEXT, tools TEXT, tokens TEXT, error TEXT)")
        old.execute("INSERT INTO steps (session, node, role, started_at, duration_s) VALUES (1, 'generator', "
                    "'generator', 0, 0)")
    store = TraceStore(db)
    store.record(StepRecord(node="generator", role="generator", phase="refinement"))
    assert [step.phase for step in store.steps()] == [None, "refinement"]
    store.close()
