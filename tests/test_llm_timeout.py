"""A timed-out LLM request is cancelled, not abandoned.

On a one-slot local server (llama.cpp) an abandoned request keeps generating and the retry queues
behind it; agents/llm.py's ``invoke_with_timeout`` cancels the request at the deadline, which
closes its connection, so the server (tests/fake_openai_server.py with ``slots=1``) stops and
serves the retry at once. The call also works from a thread that already runs an event loop
(Jupyter), keeps the caller's context variables, and still times out a model without an async path.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time

import pytest
from fake_openai_server import FakeOpenAIServer, hang, ok, trickle

pytest.importorskip("langchain_openai")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402

from archsmith.agents.llm import (  # noqa: E402
    CallTimeout,
    RetryPolicy,
    ask,
    invoke_with_timeout,
    openai_compatible_model,
)
from archsmith.agents.prompts import PromptLoader  # noqa: E402
from archsmith.graph.config import LLMSettings  # noqa: E402
from archsmith.graph.trace import PromptRecord  # noqa: E402

SLOW_S = 30.0  # how long the abandoned answer would take
TIMEOUT_S = 1.0


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def record(text: str) -> PromptRecord:
    return PromptRecord(template="test", sha256="0" * 64, text=text)


def config_model(url: str) -> ChatOpenAI:
    """As a run builds it: the client's own timeout is the per-call timeout (it bounds each read)."""
    return openai_compatible_model("fake-model", LLMSettings(model="fake-model", base_url=url, timeout_s=TIMEOUT_S))


def patient_model(url: str) -> ChatOpenAI:
    """An injected client whose own timeout is far longer than the per-call timeout."""
    return ChatOpenAI(model="fake-model", base_url=url, api_key="not-needed", timeout=120, max_retries=0)


@pytest.mark.parametrize(
    ("slow", "make_model"),
    [
        pytest.param(trickle(SLOW_S), config_model, id="trickling-server"),
        pytest.param(hang(SLOW_S), patient_model, id="patient-client"),
    ],
)
def test_the_retry_after_a_timeout_is_served_at_once_by_a_one_slot_server(slow, make_model):
    with FakeOpenAIServer([slow, ok("the retry's answer")], slots=1) as server:
        started = time.monotonic()
        answer, exchange = ask(
            make_model(server.url),
            model_name="fake-model",
            system=record("system"),
            user=record("user"),
            parse=str,
            prompts=PromptLoader(),
            policy=RetryPolicy(max_endpoint_retries=1, backoff_s=0.05, backoff_max_s=0.1, timeout_s=TIMEOUT_S),
            rng=random.Random(0),
        )
        took = time.monotonic() - started
        first, retry = server.chat_requests()
    assert answer == "the retry's answer" and exchange.kinds() == ["timeout"]
    assert took < 6.0, f"the retry waited {took:.1f} s behind the abandoned answer"
    assert first.outcome == "client gone"  # the server stopped generating it
    assert retry.served_at is not None and retry.served_at - retry.at < 2.0


def test_works_from_a_thread_that_runs_an_event_loop():
    """Jupyter's thread runs a loop: asyncio.run there would fail, the call must not."""
    with FakeOpenAIServer(default=ok("from inside a loop"), slots=1) as server:
        model = config_model(server.url)

        async def notebook_cell():
            first = invoke_with_timeout(model, [HumanMessage("hi")], 5.0)
            second = invoke_with_timeout(model, [HumanMessage("again")], 5.0)  # the pooled connection, reused
            return first.content, second.content

        assert asyncio.run(notebook_cell()) == ("from inside a loop", "from inside a loop")


CALLER = contextvars.ContextVar("CALLER", default="unset")


class AsyncProbe(GenericFakeChatModel):
    """A model with an async path of its own that reports the caller's context variable."""

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        return ChatResult(generations=[ChatGeneration(message=AIMessage(CALLER.get()))])


class SyncProbe(GenericFakeChatModel):
    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        return ChatResult(generations=[ChatGeneration(message=AIMessage(CALLER.get()))])


@pytest.mark.parametrize("model", [AsyncProbe(messages=iter([])), SyncProbe(messages=iter([]))], ids=["async", "sync"])
def test_the_call_sees_the_callers_context_variables(model):
    token = CALLER.set("the caller")
    try:
        assert invoke_with_timeout(model, [HumanMessage("who?")], 5.0).content == "the caller"
    finally:
        CALLER.reset(token)


class StuckAsync(GenericFakeChatModel):
    """An async path that never answers."""

    async def _agenerate(self, *args, **kwargs):
        await asyncio.sleep(SLOW_S)
        raise AssertionError("not cancelled")


class StuckSync(GenericFakeChatModel):
    """No async path: LangChain's ainvoke would run this in a thread pool."""

    def _generate(self, *args, **kwargs):
        time.sleep(3.0)
        return super()._generate(*args, **kwargs)


@pytest.mark.parametrize("model", [StuckAsync(messages=iter([])), StuckSync(messages=iter(["late"]))],
                         ids=["async", "sync"])
def test_any_model_times_out_at_the_deadline(model):
    started = time.monotonic()
    with pytest.raises(CallTimeout, match="timeout_s = 0.3"):
        invoke_with_timeout(model, [HumanMessage("hi")], 0.3)
    assert time.monotonic() - started < 1.5
