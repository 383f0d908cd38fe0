"""Calling an LLM with a role's settings and parsing its answer, in one place.

* :class:`ChatModelProvider` turns a role's :class:`LLMSettings` (plus a phase's model override)
  into a LangChain chat model. The built-in provider is any OpenAI-compatible endpoint
  (``vllm serve``, llama.cpp's server, Ollama, hosted APIs) through ``base_url``; callers of the
  Python API may inject any LangChain chat model instead (tests use fake chat models).
* :func:`ask` sends a rendered system + user prompt under a per-call timeout and parses the
  answer. An endpoint failure (refused connection, timeout, HTTP 429/5xx, a body that is not a
  completion) is retried up to ``max_endpoint_retries`` times after an exponential, jittered
  backoff that honours a short ``Retry-After``; an unusable answer (empty, truncated, garbled) is
  re-asked up to ``max_retries`` times, telling the model what was wrong. It never raises for
  either: the caller gets ``None`` and the exchange (every prompt, answer, classified failure,
  token count) for the trace.
* With a managed server (agents/servers.py) behind the endpoint, a failed request whose server
  process has died is a ``server_crashed`` failure, not an endpoint fault: it names the exit code
  or signal and carries the server's last log lines; the server is restarted (``max_restarts``)
  and the request sent again, without a backoff and without using an endpoint retry. Once the
  server is given up on, every later ask fails at once as ``server_down``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from archsmith.agents.answers import AnswerError, AnswerRejected
from archsmith.agents.prompts import PromptLoader
from archsmith.graph.config import LLMSettings
from archsmith.graph.trace import PromptRecord

if TYPE_CHECKING:  # pragma: no cover
    from archsmith.agents.servers import ManagedServer, ServerCrash

T = TypeVar("T")
ModelFactory = Callable[[str, LLMSettings], BaseChatModel]

FailureKind = Literal[
    "connection",  # refused, reset, dropped before an answer
    "timeout",  # no answer within timeout_s
    "rate_limited",  # HTTP 429
    "server_error",  # HTTP 5xx
    "malformed",  # HTTP 200 with a body that is not a chat completion
    "client_error",  # HTTP 4xx other than 429 (bad key, unknown model): retrying cannot help
    "error",  # any other exception from the chat model
    "exhausted",  # a scripted (fake) model ran out of answers
    "empty",  # the model answered nothing
    "truncated",  # cut off (max_tokens reached, an unclosed ``` block, an unclosed JSON object)
    "unparseable",  # an answer in the wrong shape
    "rejected",  # well-formed, but refused by the role's own checks (e.g. a child equal to its parent)
    "server_crashed",  # the managed server's process died during the request (exit code or signal)
    "server_down",  # the managed server was given up on (max_restarts used up): not asked
]
ENDPOINT_RETRIED: frozenset[str] = frozenset(
    {"connection", "timeout", "rate_limited", "server_error", "malformed", "error"}
)
# How long a managed server whose connection dropped may take to be seen as exited (the kernel
# closes its sockets before its watchdog reports the exit).
SERVER_EXIT_WAIT_S = 2.0


class LLMUnavailable(RuntimeError):
    """The configured LLM cannot be constructed (missing package, missing key)."""


class CallTimeout(TimeoutError):
    """The chat model gave no answer within the per-call timeout."""


def _hosted_openai(base_url: str | None) -> bool:
    return base_url is None or "api.openai.com" in base_url


def openai_compatible_model(model: str, settings: LLMSettings) -> BaseChatModel:
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:  # pragma: no cover - depends on the optional extra
        raise LLMUnavailable(
            "policy 'llm' with provider 'openai' needs langchain-openai: "
            "pip install 'archsmith[openai]'"
        ) from None
    api_key = os.environ.get(settings.api_key_env)
    if not api_key:
        if settings.base_url is None:
            raise LLMUnavailable(
                f"no API key: set the environment variable {settings.api_key_env} "
                "or point llm.base_url at a local OpenAI-compatible server"
            )
        api_key = "not-needed"  # local servers (vllm serve, llama.cpp) accept any key
    # ChatOpenAI sends the token cap as `max_completion_tokens`, which OpenAI wants but Ollama,
    # LM Studio, llama-cpp-python and llama.cpp's server before 2026 ignore (then generate
    # without a cap). Every OpenAI-compatible server reads `max_tokens`, so send that instead.
    if _hosted_openai(settings.base_url):
        tokens: dict[str, Any] = {"max_tokens": settings.max_tokens}
    else:
        tokens = {"extra_body": {"max_tokens": settings.max_tokens}}
    return ChatOpenAI(
        model=model,
        base_url=settings.base_url,
        api_key=api_key,
        temperature=settings.temperature,
        timeout=settings.timeout_s,
        max_retries=0,  # retries are ours, so that each one is classified, counted and traced
        **tokens,
    )


class ChatModelProvider:
    """Chat models per (role, model name), built once and shared between threads.

    ``injected`` maps a role name or a model name to a ready chat model (or a factory); a model
    name wins over a role name so that phase-specific models can be injected.
    """

    def __init__(
        self,
        injected: Mapping[str, BaseChatModel | ModelFactory] | None = None,
        factory: ModelFactory = openai_compatible_model,
    ) -> None:
        self._injected = dict(injected or {})
        self._factory = factory
        self._cache: dict[tuple[str, str], BaseChatModel] = {}
        self._lock = threading.Lock()

    def get(self, role: str, settings: LLMSettings, model: str | None = None) -> BaseChatModel:
        name = model or settings.model
        key = (role, name)
        with self._lock:
            if key not in self._cache:
                chosen = self._injected.get(name, self._injected.get(role))
                if chosen is None:
                    self._cache[key] = self._factory(name, settings)
                elif isinstance(chosen, BaseChatModel):
                    self._cache[key] = chosen
                else:
                    self._cache[key] = chosen(name, settings)
            return self._cache[key]


# ----------------------------------------------------------------------------- failures


@dataclass
class LLMFailure:
    """One failed attempt: what went wrong, on which attempt, and how long we waited after it."""

    kind: FailureKind
    message: str
    attempt: int
    wait_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "wait_s": round(self.wait_s, 3)}


def _names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def classify_error(error: BaseException) -> FailureKind:
    """The kind of an exception raised by a chat model's ``invoke``.

    Duck-typed on class names and ``status_code`` so that it needs neither ``openai`` nor
    ``httpx`` and covers langchain-core's provider-neutral ``Model*Error`` classes.
    """
    names = _names(error)
    status = getattr(error, "status_code", None)
    if isinstance(error, StopIteration):
        return "exhausted"
    if names & {"CallTimeout", "APITimeoutError", "ModelTimeoutError", "TimeoutException", "TimeoutError"}:
        return "timeout"
    if status == 429 or names & {"RateLimitError", "ModelRateLimitError"}:
        return "rate_limited"
    if isinstance(status, int) and status >= 500 or names & {"InternalServerError", "ModelAPIError"}:
        return "server_error"
    if isinstance(status, int) and 400 <= status < 500:
        return "client_error"
    if names & {"APIConnectionError", "ModelConnectionError", "ConnectError", "RemoteProtocolError",
                "NetworkError", "ConnectionError"}:
        return "connection"
    if names & {"JSONDecodeError", "APIResponseValidationError", "ValidationError", "KeyError",
                "TypeError", "DecodingError"}:
        return "malformed"
    return "error"


def describe_error(error: BaseException) -> str:
    """``Type: message`` plus the underlying cause (``Connection error.`` alone says little)."""
    text = f"{type(error).__name__}: {error}"
    root, seen = error, {id(error)}
    while (cause := root.__cause__ or root.__context__) is not None and id(cause) not in seen:
        seen.add(id(cause))
        root = cause
    if root is not error and str(root) and str(root) not in text:
        text += f" ({type(root).__name__}: {root})"
    return text[:500]


def retry_after_s(error: BaseException) -> float | None:
    """The server's ``Retry-After`` (seconds or an HTTP date; or ``retry-after-ms``), if any."""
    headers = getattr(getattr(error, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        if (millis := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(millis) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def classify_answer(answer: str, problem: str, finish_reason: str | None) -> FailureKind:
    if not answer.strip():
        return "empty"
    lowered = problem.lower()
    if finish_reason == "length" or "truncated" in lowered or "not closed" in lowered:
        return "truncated"
    return "unparseable"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of one :func:`ask`: attempts, exponential backoff with jitter, per-call timeout."""

    max_retries: int = 2  # re-asks after an unusable answer
    max_endpoint_retries: int = 3  # retries after an endpoint failure
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    timeout_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> RetryPolicy:
        return cls(
            max_retries=settings.max_retries,
            max_endpoint_retries=settings.max_endpoint_retries,
            backoff_s=settings.backoff_s,
            backoff_max_s=settings.backoff_max_s,
            timeout_s=settings.timeout_s,
        )

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Wait after the ``failures``-th endpoint failure: base x 2^(n-1), capped, "equal jitter"
        (uniform in the upper half, so waits still grow and concurrent callers spread out)."""
        ceiling = min(self.backoff_max_s, self.backoff_s * 2 ** (failures - 1))
        return rng.uniform(ceiling / 2, ceiling)


# ----------------------------------------------------------------------------- one call


def _native_async(chat_model: BaseChatModel) -> bool:
    """Whether ``ainvoke`` has a path of its own; LangChain's default runs ``invoke`` in a thread pool."""
    cls = type(chat_model)
    return any(getattr(cls, name, None) is not getattr(BaseChatModel, name) for name in ("_agenerate", "_astream"))


class _CallLoop:
    """The asyncio loop that LLM calls run on: one, in a daemon thread, started at the first call.

    One loop for the life of the process, not one per call or per run: the async HTTP clients of
    chat models (langchain-openai caches one per endpoint) keep their pooled connections on the
    loop that opened them, and a connection reused on another loop fails ("Event loop is closed").
    The loop is nobody's current loop and changes nothing else in the process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:  # a forked child has the loop object but not its thread: start anew
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="archsmith-llm-loop", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop


_CALL_LOOP = _CallLoop()
# How long a timed-out request may take to end once cancelled (its HTTP connection closing).
CANCEL_WAIT_S = 2.0


async def _bounded_ainvoke(chat_model: BaseChatModel, messages: list[BaseMessage], timeout_s: float) -> BaseMessage:
    task = asyncio.ensure_future(chat_model.ainvoke(messages))
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()  # closes the HTTP connection: the server stops generating the abandoned answer
        await asyncio.wait({task}, timeout=CANCEL_WAIT_S)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning
        raise CallTimeout(f"no answer within timeout_s = {timeout_s:g} s")
    return task.result()


def _invoke_in_thread(chat_model: BaseChatModel, messages: list[BaseMessage], timeout_s: float) -> BaseMessage:
    outcome: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()  # keeps LangChain/LangGraph callbacks and config

    def call() -> None:
        try:
            outcome["reply"] = context.run(chat_model.invoke, messages)
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=call, name="archsmith-llm-call", daemon=True).start()
    if not done.wait(timeout_s):
        raise CallTimeout(f"no answer within timeout_s = {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["reply"]


def invoke_with_timeout(chat_model: BaseChatModel, messages: list[BaseMessage], timeout_s: float) -> BaseMessage:
    """The chat model's answer, or :class:`CallTimeout` at ``timeout_s``; a timed-out request is cancelled.

    The OpenAI client's own timeout bounds each network read, not the whole call (a server that
    trickles bytes would never time out). A model with an async path (``ChatOpenAI``) is called
    with ``ainvoke`` on the call loop (:class:`_CallLoop`, in its own thread, so this works from a
    sync graph node and from a thread that already runs a loop, as in Jupyter); at the deadline the
    request is cancelled, which closes its HTTP connection, so a one-slot local server (llama.cpp)
    stops generating the abandoned answer instead of making the retry queue behind it. A model
    without one (LangChain would only run ``invoke`` in a thread pool) is called in a daemon thread
    that is abandoned at the deadline. Either way the call sees the caller's context variables
    (LangChain/LangGraph callbacks and config).
    """
    if not _native_async(chat_model):
        return _invoke_in_thread(chat_model, messages, timeout_s)
    # run_coroutine_threadsafe schedules the task from this thread's context (a copy of it).
    future = asyncio.run_coroutine_threadsafe(_bounded_ainvoke(chat_model, messages, timeout_s), _CALL_LOOP.get())
    try:
        done, _ = concurrent.futures.wait([future], timeout=timeout_s + CANCEL_WAIT_S + 1.0)
    except BaseException:  # KeyboardInterrupt: the request ends with the wait
        future.cancel()
        raise
    if not done:  # the loop is blocked (a coroutine that never yields): give up on the call
        future.cancel()
        raise CallTimeout(f"no answer within timeout_s = {timeout_s:g} s")
    return future.result()


@dataclass
class LLMExchange:
    """Everything that passed between a role and its model, for the trace."""

    model: str
    prompts: list[PromptRecord] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    errors: list[LLMFailure] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=lambda: {"input": 0, "output": 0})
    attempts: int = 0
    wait_s: float = 0.0  # waiting for the model
    backoff_s: float = 0.0  # sleeping between retries
    last_rejected: Any = None  # what the last refused answer read as (AnswerRejected.value)
    crashes: list[ServerCrash] = field(default_factory=list)  # managed-server crashes met (server_crashed)

    @property
    def failures(self) -> int:
        return len(self.errors)

    def kinds(self) -> list[str]:
        return [failure.kind for failure in self.errors]


def _count_tokens(message: BaseMessage, exchange: LLMExchange) -> None:
    usage = getattr(message, "usage_metadata", None) or {}
    exchange.tokens["input"] += int(usage.get("input_tokens", 0) or 0)
    exchange.tokens["output"] += int(usage.get("output_tokens", 0) or 0)


def _endpoint_wait(
    error: BaseException, failures: int, policy: RetryPolicy, rng: random.Random
) -> tuple[float | None, str]:
    """How long to wait before retrying after an endpoint failure (None: do not retry)."""
    if failures > policy.max_endpoint_retries:
        return None, f"; gave up after {failures} endpoint failures"
    wait = policy.backoff(failures, rng)
    requested = retry_after_s(error)
    if requested is None:
        return wait, ""
    if requested > policy.backoff_max_s:
        return None, f"; Retry-After {requested:g} s exceeds backoff_max_s = {policy.backoff_max_s:g} s: not retrying"
    return min(policy.backoff_max_s, max(wait, requested)), f"; Retry-After {requested:g} s honoured"


def ask(
    chat_model: BaseChatModel,
    *,
    model_name: str,
    system: PromptRecord,
    user: PromptRecord,
    parse: Callable[[str], T],
    max_retries: int | None = None,
    prompts: PromptLoader,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    server: ManagedServer | None = None,
) -> tuple[T | None, LLMExchange]:
    """Ask, parse, retry within ``policy``; ``None`` when no attempt gave a usable answer.

    ``server``: the managed server behind the endpoint, whose crashes are told from endpoint
    faults (and restarted) rather than retried as such.
    """
    policy = policy or RetryPolicy()
    if max_retries is not None:
        policy = RetryPolicy(**{**asdict(policy), "max_retries": max_retries})
    rng = rng or random.Random()
    exchange = LLMExchange(model=model_name, prompts=[system, user])
    messages: list[BaseMessage] = [SystemMessage(system.text), HumanMessage(user.text)]
    endpoint_failures = answer_failures = 0
    while True:
        if server is not None and server.down is not None:  # its crash is in the trace of the step that met it
            exchange.errors.append(LLMFailure("server_down", f"not asked: {server.down.headline}", exchange.attempts))
            break
        exchange.attempts += 1
        attempt = exchange.attempts
        incarnation = server.incarnation if server is not None else 0
        started = time.perf_counter()
        try:
            reply = invoke_with_timeout(chat_model, messages, policy.timeout_s)
        except Exception as error:  # endpoint faults; never the caller's problem
            exchange.wait_s += time.perf_counter() - started
            kind = classify_error(error)
            if kind == "exhausted":
                exchange.errors.append(LLMFailure(kind, "the model produced no answer (its script ran out)", attempt))
                break
            message = describe_error(error)
            crash = _server_crash(server, incarnation, kind)
            if crash is not None:
                exchange.crashes.append(crash)
                failure = f"{crash.message}\n(the request: {message})"
                exchange.errors.append(LLMFailure("server_crashed", failure, attempt))
                if crash.restarted:
                    continue  # the same request, to the new process
                break
            if kind not in ENDPOINT_RETRIED:
                exchange.errors.append(LLMFailure(kind, f"{message}; not retried", attempt))
                break
            endpoint_failures += 1
            wait, note = _endpoint_wait(error, endpoint_failures, policy, rng)
            exchange.errors.append(LLMFailure(kind, message + note, attempt, wait or 0.0))
            if wait is None:
                break
            exchange.backoff_s += wait
            sleep(wait)
            continue
        exchange.wait_s += time.perf_counter() - started
        _count_tokens(reply, exchange)
        answer = reply.content if isinstance(reply.content, str) else str(reply.content or "")
        exchange.answers.append(answer)
        try:
            return parse(answer), exchange
        except AnswerError as error:
            finish = (getattr(reply, "response_metadata", None) or {}).get("finish_reason")
            problem = str(error)
            if finish == "length":
                problem += " (the answer hit the max_tokens limit: keep it shorter)"
            if isinstance(error, AnswerRejected):
                kind: FailureKind = "rejected"
                exchange.last_rejected = error.value
            else:
                kind = classify_answer(answer, problem, finish)
            exchange.errors.append(LLMFailure(kind, problem, attempt))
            answer_failures += 1
            if answer_failures > policy.max_retries:
                break
            retry = prompts.render("common", "retry", problem=problem)
            exchange.prompts.append(retry)
            messages = [*messages, AIMessage(answer), HumanMessage(retry.text)]
    return None, exchange


def _server_crash(server: ManagedServer | None, incarnation: int, kind: FailureKind) -> ServerCrash | None:
    """The managed server's crash behind an endpoint failure, if it died (see ManagedServer.after_failure)."""
    if server is None or kind not in ENDPOINT_RETRIED:
        return None
    return server.after_failure(incarnation, SERVER_EXIT_WAIT_S if kind == "connection" else 0.0)


def exchange_trace(exchange: LLMExchange | None) -> dict[str, Any]:
    """The parts of an exchange that go into a StepRecord."""
    if exchange is None:
        return {}
    return {
        "prompts": exchange.prompts,
        "answers": exchange.answers,
        "tokens": {**exchange.tokens, "failures": exchange.failures},
        "errors": [failure.as_dict() for failure in exchange.errors],
        "attempts": exchange.attempts,
        "wait_s": round(exchange.wait_s, 3),
        "backoff_s": round(exchange.backoff_s, 3),
        "server_crashes": [crash.as_dict() for crash in exchange.crashes],
    }
