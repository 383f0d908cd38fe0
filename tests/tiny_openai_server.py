"""A minimal OpenAI-compatible server for the managed-server tests: every chat completion answers
with the text given on the command line. Run: python tiny_openai_server.py PORT ANSWER [MODE], MODE
``ignore-sigterm`` to play a server that never finishes its graceful shutdown, ``segv-on-chat`` to
play llama.cpp built with kernels the CPU lacks (answers /v1/models, then dies of SIGSEGV on its
first chat completion, after a line in its log), ``segv-once:FILE`` to die so only while FILE does
not exist (it creates it first: a crash that a restart cures)."""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    port, answer = int(sys.argv[1]), sys.argv[2]
    if sys.argv[3:] == ["ignore-sigterm"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._send({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            mode = sys.argv[3] if len(sys.argv) > 3 else ""
            if mode.startswith("segv-once:") and not os.path.exists(mode.split(":", 1)[1]):
                open(mode.split(":", 1)[1], "w").close()
                mode = "segv-on-chat"
            if mode == "segv-on-chat":
                print("ggml_amx_init: AMX tiles in use (tiny_openai_server plays a crash)", file=sys.stderr, flush=True)
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the test's directory
                # To this thread, so that it dies before it could answer (os.kill may deliver the
                # signal to another thread while this one writes its reply).
                signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)
                time.sleep(60)
            self._send({"id": "x", "object": "chat.completion", "created": int(time.time()), "model": "tiny",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
