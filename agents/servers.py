"""Managed local LLM servers: start an OpenAI-compatible server for a run and own its lifetime.

Presets:

* ``llamacpp``: llama-cpp-python's server (``python -m llama_cpp.server``), one or more GGUF files,
  each served under its alias (so PhaseNAS's small and large models can share one server);
* ``vllm``: ``vllm serve MODEL`` (for GPU machines; vLLM pins its own torch, so ``executable``
  usually points into its own environment);
* ``command``: any command line, with ``{port}`` and ``{host}`` placeholders, and a health path.

A server listens on a free loopback port, is started in its own process group, is waited for
until its health URL answers (bounded), is restarted a bounded number of times if it dies, and is
stopped (SIGTERM, then SIGKILL after ``stop_grace_s``, to the whole group) when the run ends or is
interrupted. On Linux a watchdog process holds the server and does the same when the run's process
dies without stopping it (killed, even with SIGKILL), so no server outlives its run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A managed server that did not start, or died more often than allowed."""


class ServedModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(description="GGUF file (llamacpp) or model id (vllm).")
    alias: str = Field(description="The name requests use (the role's llm.model).")


class ServerSpec(BaseModel):
    """How to start one server (the ``[roles.<role>.llm.server]`` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    preset: Literal["llamacpp", "vllm", "command"] = "llamacpp"
    models: tuple[ServedModel, ...] = Field(default=(), description="llamacpp/vllm: what to serve.")
    command: tuple[str, ...] = Field(default=(), description="command preset: argv with {host}/{port}.")
    health_path: str = "/v1/models"
    executable: str | None = Field(None, description="python (llamacpp) or vllm binary to use.")
    context: int = Field(4096, ge=256, description="llamacpp n_ctx / vllm --max-model-len.")
    threads: int = Field(2, ge=1, description="llamacpp: CPU threads.")
    extra_args: tuple[str, ...] = ()
    startup_timeout_s: float = Field(300.0, gt=0)
    stop_grace_s: float = Field(10.0, gt=0, description="Seconds a stopped server may take to exit before it is killed.")
    max_restarts: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _complete(self) -> ServerSpec:
        if self.preset == "command" and not self.command:
            raise ValueError("preset 'command' needs a command (argv with {port})")
        if self.preset in ("llamacpp", "vllm") and not self.models:
            raise ValueError(f"preset {self.preset!r} needs models = [{{path = ..., alias = ...}}]")
        if self.preset == "vllm" and len(self.models) != 1:
            raise ValueError("preset 'vllm' serves exactly one model per server")
        return self


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def command_line(spec: ServerSpec, port: int, workdir: Path) -> list[str]:
    """The argv that starts ``spec`` on ``port`` (llamacpp writes its config file into ``workdir``)."""
    if spec.preset == "command":
        return [part.format(host=HOST, port=port) for part in spec.command]
    if spec.preset == "vllm":
        model = spec.models[0]
        return [spec.executable or "vllm", "serve", model.path, "--host", HOST, "--port", str(port),
                "--served-model-name", model.alias, "--max-model-len", str(spec.context), *spec.extra_args]
    config = {
        "host": HOST, "port": port,
        "models": [{"model": str(Path(m.path).expanduser()), "model_alias": m.alias, "n_ctx": spec.context,
                    "n_threads": spec.threads, "verbose": False} for m in spec.models],
    }
    config_file = workdir / "llamacpp.json"
    config_file.write_text(json.dumps(config, indent=2), "utf-8")
    return [spec.executable or sys.executable, "-m", "llama_cpp.server", "--config_file", str(config_file),
            *spec.extra_args]


# The server's watchdog, run in the child (Linux). The kernel sends it SIGTERM when the process that
# started it dies, however it dies (PR_SET_PDEATHSIG), and ManagedServer.stop sends SIGTERM to its
# process group; either way it passes SIGTERM to the server and, if the server has not exited
# within the grace period (uvicorn can wait for ever on a generation whose client is gone), kills
# the whole group. It exits with the server's exit code, so a crashed server still shows as
# exited. Exits at once if the process that started it is already gone.
_WATCHDOG = """\
import ctypes, os, signal, sys, time
grace_s, argv = float(sys.argv[2]), sys.argv[3:]
libc = ctypes.CDLL(None, use_errno=True)
def die_with_parent(sig):
    if libc.prctl(1, int(sig), 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
        raise SystemExit("prctl(PR_SET_PDEATHSIG) failed: errno %d" % ctypes.get_errno())
def stop(signum, frame):
    try:
        os.kill(server, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if os.waitpid(server, os.WNOHANG)[0]:
            os._exit(0)
        time.sleep(0.1)
    os.killpg(0, signal.SIGKILL)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # until the server's pid is known
die_with_parent(signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    raise SystemExit("the run that started this server is gone")
server = os.fork()
if server == 0:  # the server: killed outright if the watchdog itself is killed
    die_with_parent(signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    os.execvp(argv[0], argv)
signal.signal(signal.SIGTERM, stop)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
while True:
    try:
        status = os.waitpid(server, 0)[1]
        break
    except InterruptedError:
        continue
sys.exit(os.waitstatus_to_exitcode(status))
"""


def dies_with_this_process(argv: list[str], grace_s: float) -> list[str]:
    """``argv`` run under a watchdog that stops the server (SIGTERM, then after ``grace_s`` SIGKILL
    to the whole process group) when this process dies (Linux; elsewhere ``argv`` unchanged, and a
    run killed without cleanup can leave its server running).

    The parent-death signal follows the thread that started the watchdog, which is the thread
    inside :func:`archsmith.run` for the whole life of the server.
    """
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-c", _WATCHDOG, str(os.getpid()), f"{grace_s:g}", *argv]


class ManagedServer:
    """One running server; use as a context manager or call start()/stop()."""

    def __init__(self, spec: ServerSpec, log_dir: str | Path | None = None) -> None:
        self.spec = spec
        self.workdir = Path(tempfile.mkdtemp(prefix="archsmith-server-", dir=log_dir))
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    @property
    def log_file(self) -> Path:
        return self.workdir / "server.log"

    def start(self) -> ManagedServer:
        self.port = free_port()
        argv = command_line(self.spec, self.port, self.workdir)
        with open(self.log_file, "ab") as log:
            try:
                self.process = subprocess.Popen(dies_with_this_process(argv, self.spec.stop_grace_s), stdout=log,
                                                stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as error:
                raise ServerError(f"cannot start {argv[0]!r}: {error.strerror or error}") from None
        self._wait_healthy()
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}{self.spec.health_path}", timeout=2) as reply:
                return 200 <= reply.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"the {self.spec.preset} server exited with code {self.process.returncode} "
                                  f"while starting; last log lines:\n{self.tail()}")
            if self._healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"the {self.spec.preset} server did not answer {self.spec.health_path} within "
                          f"{self.spec.startup_timeout_s:g} s; last log lines:\n{self.tail()}")

    def ensure_running(self) -> None:
        """Restart a server that died (at most ``max_restarts`` times over its life)."""
        if self.process is not None and self.process.poll() is None:
            return
        if self.process is not None:  # whatever is left of the old server's process group
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.restarts >= self.spec.max_restarts:
            raise ServerError(f"the {self.spec.preset} server died {self.restarts + 1} times; giving up")
        self.restarts += 1
        self.start()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text("utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the server's process group; SIGKILL when it has not exited after the grace
        period (the watchdog would send it too)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, self.spec.stop_grace_s + 1.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
