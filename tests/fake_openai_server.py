"""A scripted OpenAI-compatible chat server on 127.0.0.1 that injects endpoint faults.

It implements ``POST /v1/chat/completions`` (non-streaming) the way ``vllm serve`` and
llama.cpp's server do, and answers each request with the next behaviour of its script:

    with FakeOpenAIServer([status(503), hang(2.0), ok("```\\nC8,C24\\n```")]) as server:
        settings.base_url = server.url          # http://127.0.0.1:<port>/v1
        ...
        server.requests                          # what it got, in order

Behaviours: :func:`ok`, :func:`status` (429/5xx, optional Retry-After), :func:`hang` (answers
late, for timeouts), :func:`trickle` (answers late, sending a byte every so often, so that no
network read of the client ever times out), :func:`drop` (closes the connection without an answer), :func:`empty`,
:func:`malformed` (HTTP 200 with a body that is not JSON), :func:`truncated` (an unclosed ```
fence, ``finish_reason: length``) and :func:`garbage`. When the script runs out, ``default``
answers (a server error unless given). A connection refused is a port with nothing listening:
:func:`closed_port`.

``FakeOpenAIServer(slots=1)`` is a one-slot server like llama.cpp's: it answers one request at a
time (the others wait their turn) and stops generating an answer whose client has disconnected.
Each request records when its turn came (``served_at``) and how it ended (``outcome``).

Stdlib only; it binds to 127.0.0.1 and never talks to anything else.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Behaviour:
    kind: str
    text: str = ""
    status: int = 200
    retry_after: float | None = None
    seconds: float = 0.0
    finish_reason: str = "stop"
    every_s: float = 0.0


def ok(text: str) -> Behaviour:
    return Behaviour("ok", text=text)


def status(code: int, retry_after: float | None = None) -> Behaviour:
    return Behaviour("status", status=code, retry_after=retry_after)


def hang(seconds: float, text: str = "```\nC8,C16\n```") -> Behaviour:
    """Answer ``text`` only after ``seconds`` (a client with a shorter timeout gives up first)."""
    return Behaviour("hang", text=text, seconds=seconds)


def trickle(seconds: float, text: str = "```\nC8,C16\n```", every_s: float = 0.2) -> Behaviour:
    """Send the headers at once, then a space every ``every_s`` for ``seconds``, then the answer."""
    return Behaviour("trickle", text=text, seconds=seconds, every_s=every_s)


def drop() -> Behaviour:
    return Behaviour("drop")


def empty() -> Behaviour:
    return Behaviour("ok", text="")


def malformed() -> Behaviour:
    return Behaviour("malformed")


def truncated(text: str = "Here is the child:\n```\nC8,C16,C2") -> Behaviour:
    return Behaviour("ok", text=text, finish_reason="length")


def garbage(text: str = "I am sorry, as a language model I like turtles.") -> Behaviour:
    return Behaviour("ok", text=text)


def closed_port() -> int:
    """A loopback port with nothing listening on it (connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    at: float
    behaviour: str
    served_at: float | None = None  # when its turn came (a one-slot server queues the others)
    outcome: str = ""  # "answered", or "client gone" when the client disconnected before the answer


def _completion(text: str, model: str, finish_reason: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": max(1, len(text) // 4), "total_tokens": 11 + max(1, len(text) // 4)},
    }


@dataclass
class _Script:
    items: list[Behaviour]
    default: Behaviour
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> Behaviour:
        with self.lock:
            return self.items.pop(0) if self.items else self.default


class FakeOpenAIServer:
    """Threaded fake endpoint; a context manager that starts and stops it."""

    def __init__(self, script: list[Behaviour] | None = None, default: Behaviour | None = None,
                 slots: int | None = None) -> None:
        self._script = _Script(list(script or []), default or status(500))
        self._slots = threading.Semaphore(slots) if slots else None
        self.requests: list[Request] = []
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers that hang
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def script(self, *behaviours: Behaviour, default: Behaviour | None = None) -> None:
        """Replace what the next requests get."""
        with self._script.lock:
            self._script.items = list(behaviours)
            if default is not None:
                self._script.default = default

    def chat_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == CHAT_PATH]

    # -- the handler ------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                return

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None,
                      content_type: str = "application/json") -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up first
                    self.close_connection = True

            def _error(self, code: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
                body = json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()
                self._send(code, body, headers)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/") == "/v1/models":
                    body = {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "fake"}]}
                    self._send(200, json.dumps(body).encode())
                else:
                    self._error(404, f"no route {self.path}", "not_found")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = None
                if self.path != CHAT_PATH:
                    fake.requests.append(Request(self.path, dict(self.headers), body, time.monotonic(), "404"))
                    self._error(404, f"no route {self.path}", "not_found")
                    return
                if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
                    fake.requests.append(Request(self.path, dict(self.headers), body, time.monotonic(), "400"))
                    self._error(400, "a chat completion needs 'model' and 'messages'", "invalid_request_error")
                    return
                if body.get("stream"):
                    fake.requests.append(Request(self.path, dict(self.headers), body, time.monotonic(), "400"))
                    self._error(400, "this fake server does not stream", "invalid_request_error")
                    return
                behaviour = fake._script.next()
                request = Request(self.path, dict(self.headers), body, time.monotonic(), behaviour.kind)
                fake.requests.append(request)
                if fake._slots is None:
                    self._serve(request, behaviour, str(body["model"]))
                    return
                while not fake._slots.acquire(timeout=0.05):
                    if fake._stopping.is_set() or self._client_gone():
                        request.outcome = "client gone"
                        self.close_connection = True
                        return
                try:
                    self._serve(request, behaviour, str(body["model"]))
                finally:
                    fake._slots.release()

            def _serve(self, request: Request, behaviour: Behaviour, model: str) -> None:
                request.served_at = time.monotonic()
                request.outcome = "answered" if self._behave(behaviour, model) else "client gone"

            def _client_gone(self) -> bool:
                """The client closed its end (an HTTP/1.1 client sends nothing while it waits)."""
                try:
                    readable, _, _ = select.select([self.connection], [], [], 0)
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _trickle(self, behaviour: Behaviour, model: str) -> bool:
                body = json.dumps(_completion(behaviour.text, model, behaviour.finish_reason)).encode()
                spaces = int(behaviour.seconds / behaviour.every_s)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(spaces + len(body)))
                    self.end_headers()
                    self.wfile.flush()
                    for _ in range(spaces):  # leading whitespace: the body is still valid JSON
                        if fake._stopping.wait(behaviour.every_s) or self._client_gone():
                            self.close_connection = True
                            return False
                        self.wfile.write(b" ")
                        self.wfile.flush()
                    self.wfile.write(body)
                    return True
                except OSError:  # the client gave up first
                    self.close_connection = True
                    return False

            def _behave(self, behaviour: Behaviour, model: str) -> bool:
                """Answer as scripted; False when the client disconnected first."""
                if behaviour.kind == "status":
                    headers = {}
                    if behaviour.retry_after is not None:
                        headers["Retry-After"] = f"{behaviour.retry_after:g}"
                    kind = "rate_limit_exceeded" if behaviour.status == 429 else "server_error"
                    self._error(behaviour.status, f"fake {behaviour.status}", kind, headers)
                    self.close_connection = behaviour.status >= 500
                    return True
                if behaviour.kind == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return True
                if behaviour.kind == "malformed":
                    self._send(200, b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"mess')
                    return True
                if behaviour.kind == "trickle":
                    return self._trickle(behaviour, model)
                if behaviour.kind == "hang":
                    deadline = time.monotonic() + behaviour.seconds
                    while (left := deadline - time.monotonic()) > 0:  # generating, until the client goes
                        if fake._stopping.wait(min(left, 0.05)) or self._client_gone():
                            self.close_connection = True
                            return False
                body = _completion(behaviour.text, model, behaviour.finish_reason)
                self._send(200, json.dumps(body).encode())
                return True

        return Handler
