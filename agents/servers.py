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

A server that dies while the run needs it (llama.cpp built with kernels the CPU cannot run dies
of SIGSEGV on its first completion) is a :class:`ServerCrash`: how it ended (exit code or signal
name) and the last lines of its log. :meth:`ManagedServer.after_failure`, called by
:func:`archsmith.agents.llm.ask` after a failed request, tells a crash from an endpoint fault
and restarts the server on the same port within ``max_restarts``; once they are used up the
server is down for the rest of the run (:attr:`ManagedServer.down`) and the roles that use it
fall back without asking. :meth:`ManagedServer.report` is what the run says about it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

HOST = "127.0.0.1"
LOG_TAIL_LINES = 20


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
# the whole group. It exits with the server's exit code, or dies of the signal that killed the
# server (without a core file), so that the run sees how the server ended (SIGSEGV, not 245).
# Exits at once if the process that started it is already gone.
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
code = os.waitstatus_to_exitcode(status)
if code < 0:
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(-code, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {-code})
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), -code)
    code = 128 - code  # a signal whose default action does not end a process
sys.exit(code)
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


def exit_cause(returncode: int) -> str:
    """How a process ended, in words: ``killed by SIGSEGV (signal 11)``, ``exited with code 1``;
    a code above 128 that a shell (or ``timeout``) made of a signal names the signal too."""
    if returncode < 0:
        return f"was killed by {_signal_name(-returncode)} (signal {-returncode})"
    text = f"exited with code {returncode}"
    if returncode > 128 and _signal_name(returncode - 128).startswith("SIG"):
        text += f" (128 + {returncode - 128}: {_signal_name(returncode - 128)}, as a shell reports a signal)"
    return text


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass(frozen=True)
class ServerCrash:
    """A managed server's process that ended while the run needed it."""

    preset: str
    returncode: int
    cause: str  # exit_cause(returncode)
    log_tail: str  # its last log lines
    restarted: bool  # whether it runs again (False: max_restarts used up, or the restart failed)
    restarts: int  # restarts used, counting this one's
    max_restarts: int
    note: str = ""  # why a restart failed

    @property
    def signal(self) -> str | None:
        """The signal that killed it (``SIGSEGV``), if one did."""
        return _signal_name(-self.returncode) if self.returncode < 0 else None

    @property
    def headline(self) -> str:
        """What happened, in one line."""
        if self.restarted:
            then = f"restarted ({self.restarts} of max_restarts = {self.max_restarts})"
        elif self.note:
            then = f"not running again: {self.note}"
        else:
            then = f"not restarted: max_restarts = {self.max_restarts} used up"
        return f"the {self.preset} server {self.cause}; {then}"

    @property
    def message(self) -> str:
        """The headline and the server's last log lines."""
        tail = f"; last log lines:\n{self.log_tail}" if self.log_tail else "; its log is empty"
        return self.headline + tail

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "signal": self.signal}


@dataclass(frozen=True)
class ServerReport:
    """What the run says about one managed server at its end."""

    preset: str
    roles: tuple[str, ...]  # the roles that used it, with their fallback: "generator (fallback = algorithmic)"
    log_file: str
    restarts: int
    max_restarts: int
    crashes: tuple[ServerCrash, ...]
    down: bool  # given up on: the roles' later steps did not ask it

    @property
    def summary(self) -> str:
        if not self.crashes:
            return "ran without crashing"
        causes = ", ".join(dict.fromkeys(crash.cause for crash in self.crashes))
        text = f"crashed {len(self.crashes)} time{'s' if len(self.crashes) > 1 else ''} ({causes}), " \
               f"restarted {self.restarts} of max_restarts = {self.max_restarts}"
        if self.down:
            text += f"; then given up on: the later llm steps of {', '.join(self.roles)} did without it"
        return f"{text}; log: {self.log_file}"

    def as_dict(self) -> dict[str, object]:
        return {"preset": self.preset, "roles": list(self.roles), "log_file": self.log_file,
                "restarts": self.restarts, "max_restarts": self.max_restarts, "down": self.down,
                "crashes": [crash.as_dict() for crash in self.crashes], "summary": self.summary}


class ManagedServer:
    """One running server; use as a context manager or call start()/stop().

    Thread-safe: parallel children may see the same crash; one restarts the server, the others
    learn of it from :attr:`incarnation` (bumped at each start) and retry on the new process.
    """

    def __init__(self, spec: ServerSpec, log_dir: str | Path | None = None) -> None:
        self.spec = spec
        self.workdir = Path(tempfile.mkdtemp(prefix="archsmith-server-", dir=log_dir))
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.incarnation = 0  # starts so far; a request remembers the one it was sent to
        self.crashes: list[ServerCrash] = []
        self.down: ServerCrash | None = None  # the crash after which it was given up on
        self._lock = threading.RLock()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    @property
    def log_file(self) -> Path:
        return self.workdir / "server.log"

    def start(self) -> ManagedServer:
        """Start the server (a restart keeps the port, so that clients built for it still reach it)."""
        with self._lock:
            self.port = self.port or free_port()
            argv = command_line(self.spec, self.port, self.workdir)
            with open(self.log_file, "ab") as log:
                try:
                    self.process = subprocess.Popen(dies_with_this_process(argv, self.spec.stop_grace_s), stdout=log,
                                                    stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, start_new_session=True)
                except OSError as error:
                    raise ServerError(f"cannot start {argv[0]!r}: {error.strerror or error}") from None
            self.incarnation += 1
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
                raise ServerError(f"the {self.spec.preset} server {exit_cause(self.process.returncode)} while "
                                  f"starting; last log lines:\n{self.tail()}")
            if self._healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"the {self.spec.preset} server did not answer {self.spec.health_path} within "
                          f"{self.spec.startup_timeout_s:g} s; last log lines:\n{self.tail()}")

    def after_failure(self, incarnation: int, wait_s: float = 0.0) -> ServerCrash | None:
        """After a request sent to the server's ``incarnation`` failed: the crash behind it, if the
        server died (waiting up to ``wait_s`` for a process whose connection just dropped to be
        seen as ended), restarted within ``max_restarts``; None when it is alive and was not
        restarted meanwhile (an endpoint fault, for the caller to retry as such)."""
        with self._lock:
            if incarnation != self.incarnation and self.crashes:  # someone else saw it die and restarted it
                return self.down or self.crashes[-1]
            if self.down is not None:
                return self.down
            process = self.process
            if process is None:  # stopped: the run is ending
                return None
            try:
                process.wait(timeout=wait_s) if wait_s > 0 else None
            except subprocess.TimeoutExpired:
                return None
            if process.poll() is None:
                return None
            return self._crashed(process)

    def _crashed(self, process: subprocess.Popen[bytes]) -> ServerCrash:
        """Record the end of ``process`` and restart the server if restarts remain."""
        tail = self.tail()
        _kill_group(process)  # whatever is left of the old server's process group
        restarted, note = False, ""
        if self.restarts < self.spec.max_restarts:
            self.restarts += 1
            try:
                self.start()
                restarted = True
            except ServerError as error:
                note = f"the restart failed: {error}"
                if self.process is not None:
                    _kill_group(self.process)
        crash = ServerCrash(self.spec.preset, int(process.returncode), exit_cause(int(process.returncode)), tail,
                            restarted, self.restarts, self.spec.max_restarts, note)
        self.crashes.append(crash)
        if not restarted:
            self.down = crash
            self.process = None
        return crash

    def ensure_running(self) -> None:
        """Restart a server that died (at most ``max_restarts`` times over its life); raises
        :class:`ServerError` when it is down for good."""
        with self._lock:
            if self.down is None and self.process is None:
                self.start()
            elif self.down is None and self.process is not None and self.process.poll() is not None:
                self._crashed(self.process)
            if self.down is not None:
                raise ServerError(f"the {self.spec.preset} server died {len(self.crashes)} times; giving up "
                                  f"({self.down.message})")

    def report(self, roles: Mapping[str, str] | None = None) -> ServerReport:
        """The crashes and restarts so far; ``roles`` maps each role that uses the server to its
        fallback setting."""
        with self._lock:
            return ServerReport(
                preset=self.spec.preset,
                roles=tuple(f"{role} (fallback = {fallback})" for role, fallback in (roles or {}).items()),
                log_file=str(self.log_file), restarts=self.restarts, max_restarts=self.spec.max_restarts,
                crashes=tuple(self.crashes), down=self.down is not None,
            )

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log_file.read_text("utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the server's process group; SIGKILL when it has not exited after the grace
        period (the watchdog would send it too)."""
        with self._lock:
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


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def smoke_completion(base_url: str, model: str, timeout_s: float = 120.0) -> str:
    """One one-token chat completion against ``base_url``: its text, or :class:`ServerError` with
    what came back (a server that answers ``/v1/models`` can still die on its first completion)."""
    body = json.dumps({"model": model, "max_tokens": 1, "temperature": 0,
                       "messages": [{"role": "user", "content": "Say OK."}]}).encode()
    request = urllib.request.Request(f"{base_url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer none"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            answer = json.loads(reply.read())
        return str(answer["choices"][0]["message"].get("content") or "")
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError) as error:
        raise ServerError(f"a one-token completion of {model!r} failed: {type(error).__name__}: {error}") from None
