"""Run untrusted candidate work in another process and get data back, never an exception.

A :class:`Sandbox` keeps ``workers`` warm worker processes ("zygotes", see
:mod:`archsmith.tools.sandbox_worker`) that have imported torch and archsmith once. Each
:meth:`Sandbox.run` forks a fresh child from a zygote, which runs the task with resource limits,
its own process group and temporary directory, and a hard wall-clock kill. The result is a
:class:`~archsmith.tools.results.SandboxResult`.

No network: the zygotes start under ``unshare`` in new user, network and (when possible) PID
namespaces: only a loopback interface that is down, and every process a task leaves behind dies
with it. Where ``unshare`` is unavailable, a shim in the child makes IP sockets refuse to connect
(best effort: it patches the ``socket`` module). ``Sandbox.mechanism`` says which is in use.

File system: each task starts in its own temporary directory, removed afterwards. With
``SandboxLimits.filesystem`` ``"auto"``/``"landlock"`` and a kernel with Landlock, the child confines
its writes (create, write, truncate, delete, rename, link, mknod) to that directory and a few
devices (``/dev/null`` ...) right before the task runs (mechanism ``+landlock-fs``); otherwise
(``+no-fs-isolation``) a task can write whatever the user can. Reads are never restricted. ``max_processes`` (RLIMIT_NPROC) applies only under
``unshare`` and not to root. Without a PID namespace (``unshare-net``, ``socket-block``), a grandchild that leaves
the task's process group (``setsid``) escapes the kill.

Tasks are named ``"package.module:function"``: plain functions taking a JSON-like payload dict and
returning a JSON-serialisable dict. Modules outside the installed packages (tests) are made
importable with ``python_path``.
"""

from __future__ import annotations

import fcntl
import glob
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from archsmith.tools.results import SandboxResult
from archsmith.tools.sandbox_inprocess import run_inprocess, to_result
from archsmith.tools.sandbox_protocol import ChannelClosed, read_message, write_message
from archsmith.tools.sandbox_worker import landlock_abi

__all__ = [
    "Sandbox",
    "SandboxLimits",
    "detect_filesystem_isolation",
    "detect_isolation",
    "run_inprocess",
    "scrub_environment",
    "uses_gpu",
]

Isolation = Literal["auto", "unshare-pid", "unshare", "socket-block"]
FilesystemIsolation = Literal["auto", "landlock", "none"]
DEFAULT_PRELOAD = (
    "torch",
    "thop",
    "archsmith.tools.spaces",
    "archsmith.tools.tasks",
    "archsmith.tools.profile",
    "archsmith.tools.zen_score",
    "archsmith.tools.train_task",
)

_SECRET_WORDS = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|PRIVATE|SESSION", re.IGNORECASE)
_SECRET_PREFIXES = (
    "OPENAI_", "ANTHROPIC_", "AWS_", "AZURE_", "GOOGLE_", "GCP_", "HF_", "HUGGING", "GITHUB_", "GH_",
    "GITLAB_", "LANGCHAIN_", "LANGSMITH_", "COHERE_", "MISTRAL_", "GROQ_", "TOGETHER_", "WANDB_",
    "NPM_", "PYPI_", "TWINE_", "DOCKER_", "SSH_",
)  # fmt: skip
_STARTUP_TIMEOUT_S = 180.0
_GRACE_S = 15.0  # beyond the task's own limit, before the parent gives up on a zygote


class SandboxLimits(BaseModel):
    """Resource limits for one task (applied in the forked child)."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=60.0, gt=0, description="Wall-clock limit; the process group is killed.")
    memory_mb: int | None = Field(
        default=4096,
        ge=16,
        description="Address space the task may map beyond the warm interpreter's (RLIMIT_AS = the "
        "child's size at fork + this). Torch alone reserves ~3 GB of mostly unbacked address space, "
        "so an absolute limit would mean little.",
    )
    cpu_s: int | None = Field(default=None, ge=1, description="CPU-time limit (RLIMIT_CPU), None for none.")
    max_processes: int | None = Field(
        default=64,
        ge=1,
        description="RLIMIT_NPROC: processes and threads of the sandbox's user namespace. Applied only "
        "under unshare (outside one the count would include all the user's processes) and not "
        "enforced for root.",
    )
    max_file_mb: int | None = Field(default=256, ge=1, description="Largest file the task may write.")
    max_open_files: int | None = Field(default=1024, ge=16)
    output_cap_bytes: int = Field(default=64 * 1024, ge=0, description="stdout+stderr kept (head and tail).")
    network: bool = Field(default=False, description="Allow network access (no namespace, no shim).")
    filesystem: FilesystemIsolation = Field(
        default="auto",
        description="Write isolation: 'landlock' confines the task's writes to its temporary directory "
        "(and /dev/null, /dev/zero, /dev/urandom, /dev/random); reads: see private_home. 'auto' uses "
        "Landlock where the kernel supports it, 'landlock' makes the sandbox fail to start without it, "
        "'none' leaves the file system open.",
    )
    private_home: bool = Field(
        default=True,
        description="With Landlock: reads are confined too, to system directories, the Python "
        "installation, the import path and the task's directory, so the home directory (beyond "
        "those) is unreadable (mechanism +private-home).",
    )


def uses_gpu(payload: Mapping[str, Any]) -> bool:
    """Whether a task payload asks for a GPU (``device`` "cuda" or "cuda:N")."""
    return str(payload.get("device") or "").startswith("cuda")


def scrub_environment(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` without variables whose names look like secrets."""
    return {
        name: value
        for name, value in env.items()
        if not _SECRET_WORDS.search(name) and not name.upper().startswith(_SECRET_PREFIXES)
    }


def _probe(prefix: list[str]) -> bool:
    try:
        probe = subprocess.run([*prefix, sys.executable, "-S", "-c", ""], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def detect_isolation(isolation: Isolation = "auto", network: bool = False) -> tuple[list[str], str]:
    """The command prefix that starts a zygote, and the name of the network mechanism.

    ``auto`` tries user+net+PID namespaces, then user+net namespaces, then the socket shim.
    Naming a mechanism that does not work here raises ``RuntimeError``.
    """
    if network:
        return [], "network-allowed"
    unshare = shutil.which("unshare")
    candidates: list[tuple[str, list[str]]] = []
    if unshare:
        for mapping in ("--map-current-user", "--map-root-user"):
            base = [unshare, "--user", mapping, "--net"]
            # A PID namespace gets its own /proc (a mount namespace too): the CUDA driver reads its
            # process's /proc entries and fails to start (error 304) under the host's /proc.
            pid = ["--pid", "--mount", "--mount-proc", "--fork", "--kill-child", "--"]
            candidates.append(("unshare-pid", [*base, *pid]))
            candidates.append(("unshare", [*base, "--"]))
    names = {"unshare-pid": "unshare-net-pid", "unshare": "unshare-net"}
    for kind, prefix in candidates:
        if isolation in ("auto", kind) and _probe(prefix):
            return prefix, names[kind]
    if isolation in ("auto", "socket-block"):
        return [], "socket-block"
    raise RuntimeError(f"sandbox isolation {isolation!r} is not available on this machine")


def detect_filesystem_isolation(filesystem: FilesystemIsolation = "auto") -> str:
    """``"landlock-fs"`` when the task's writes will be confined, else ``"no-fs-isolation"``.

    Naming ``"landlock"`` where the kernel lacks Landlock raises ``RuntimeError``.
    """
    if filesystem == "none":
        return "no-fs-isolation"
    if landlock_abi() >= 1:
        return "landlock-fs"
    if filesystem == "landlock":
        raise RuntimeError("Landlock file-system isolation is not available on this machine")
    return "no-fs-isolation"


def _error(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "error_type": error_type, "error_message": message, **extra}


class _Worker:
    """One zygote process and the pipes to it; used by one thread at a time."""

    def __init__(
        self, argv: list[str], env: dict[str, str], config: dict[str, Any], log_path: str, same_pids: bool
    ) -> None:
        self.argv, self.env, self.config, self.log_path = argv, env, config, log_path
        self.same_pids = same_pids  # the zygote's PIDs are ours (no PID namespace)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.child_pid: int | None = None
        self.preload_errors: dict[str, str] = {}
        self.closed = False
        self._next_id = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.argv, sys.executable, "-m", "archsmith.tools.sandbox_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.env,
                cwd=self.config["work_root"],
                start_new_session=True,
                close_fds=True,
            )
        self.ready = False
        assert self.proc.stdin is not None
        write_message(self.proc.stdin.fileno(), self.config)

    def _fds(self) -> tuple[int, int]:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        return self.proc.stdin.fileno(), self.proc.stdout.fileno()

    def ensure_ready(self) -> None:
        """Start (or restart) the zygote and wait until it has preloaded its modules."""
        if self.closed:
            raise ChannelClosed("the sandbox is closed")
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            self.start()
        if not self.ready:
            message = read_message(self._fds()[1], time.monotonic() + _STARTUP_TIMEOUT_S)
            if message.get("event") != "ready":
                raise ChannelClosed(f"unexpected first message from the sandbox worker: {message}")
            self.preload_errors = dict(message.get("preload_errors") or {})
            self.ready = True

    def log_tail(self, size: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - size))
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """Kill the zygote's process group, and the running child's when it shares our PID view."""
        if self.child_pid is not None and self.same_pids:
            try:
                os.killpg(self.child_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.child_pid = None
        proc, self.proc, self.ready = self.proc, None, False
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def execute(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request and wait for its result; restarts a dead zygote once before giving up."""
        self._next_id += 1
        request = {**request, "id": self._next_id, "timeout_s": timeout_s}
        for attempt in range(2):
            try:
                self.ensure_ready()
                to_worker, from_worker = self._fds()
                write_message(to_worker, request)
                started = read_message(from_worker, time.monotonic() + 60.0)
                break
            except (OSError, ChannelClosed, TimeoutError, ValueError) as exc:
                tail = self.log_tail()
                self.kill()
                if attempt == 1:
                    return _error("SandboxError", f"the sandbox worker failed: {exc!r}", traceback=tail or None)
        self.child_pid = started.get("pid")
        try:
            message = read_message(from_worker, time.monotonic() + timeout_s + _GRACE_S)
        except TimeoutError:
            self.kill()
            return _error("Timeout", f"the sandbox worker did not answer within {timeout_s:g} s", timed_out=True)
        except (OSError, ChannelClosed, ValueError) as exc:
            tail = self.log_tail()
            self.kill()
            return _error("Crashed", f"the sandbox worker died while running the task: {exc!r}", traceback=tail or None)
        self.child_pid = None
        result = message.get("result")
        if message.get("event") != "done" or not isinstance(result, dict):
            self.kill()
            return _error("SandboxError", f"unexpected message from the sandbox worker: {str(message)[:200]}")
        return result


WORK_ROOT_PREFIX = "archsmith-sandbox-"
_OWNER_LOCK = ".owner.lock"


def claim_work_root(parent: str | None = None) -> tuple[str, int]:
    """A new temporary directory for a sandbox, and the descriptor of the lock that marks it in use.

    The lock is an flock on ``.owner.lock`` inside the directory, held until the owner closes it or
    dies, however it dies (SIGKILL included: a Ray worker at shutdown). The file is locked before it
    gets its name, so :func:`remove_abandoned_work_roots` never sees it unlocked while its owner lives.
    First removes the directories abandoned by owners that died without closing their sandbox.
    """
    remove_abandoned_work_roots(parent)
    work_root = tempfile.mkdtemp(prefix=WORK_ROOT_PREFIX, dir=parent)
    unnamed = os.path.join(work_root, f"{_OWNER_LOCK}.{os.getpid()}")
    fd = os.open(unnamed, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(unnamed, os.path.join(work_root, _OWNER_LOCK))
    return work_root, fd


def remove_abandoned_work_roots(parent: str | None = None) -> list[str]:
    """Remove sandbox directories whose owner died (their owner lock can be taken); returns them.

    Works across processes and PID namespaces that share the temporary directory, since it asks
    the kernel's lock rather than a PID. Directories without a lock (being created, or made by an
    older version) and other users' directories are left alone.
    """
    removed = []
    for work_root in glob.glob(os.path.join(parent or tempfile.gettempdir(), WORK_ROOT_PREFIX + "*")):
        try:
            fd = os.open(os.path.join(work_root, _OWNER_LOCK), os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its owner is alive
        else:
            shutil.rmtree(work_root, ignore_errors=True)
            removed.append(work_root)
        finally:
            os.close(fd)
    return removed


def _kill_all(workers: Sequence[_Worker], work_root: str, owner_lock_fd: int) -> None:
    for worker in workers:
        worker.closed = True
        worker.kill()
    shutil.rmtree(work_root, ignore_errors=True)
    os.close(owner_lock_fd)


class Sandbox:
    """A pool of warm, isolated worker processes that run tasks and return data.

    ``run`` is thread-safe: up to ``workers`` tasks run at once, other callers wait for a free
    worker. Workers start in the constructor (importing ``preload`` takes a few seconds; see
    :meth:`warm_up`) and restart transparently if they die.

    - ``python_path``: directories put first on the workers' ``sys.path`` (e.g. a tests folder
      holding task modules).
    - ``torch_threads``: torch's intra-op threads in each child (None: torch's default).
    - ``isolation``: see :func:`detect_isolation`; ``env``: the environment to pass on (default
      ``os.environ``), always without secrets.
    - ``mode = "inprocess"``: run tasks in the caller's process instead, with no limits, timeout
      or capture of C-level output (debugging; ``python_path`` is not applied).

    ``SandboxResult.exit_code`` is the child's exit status when it ended without returning a
    result (negative: killed by that signal), None when the task returned.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        workers: int = 1,
        *,
        python_path: Sequence[str] = (),
        preload: Sequence[str] = DEFAULT_PRELOAD,
        torch_threads: int | None = 1,
        isolation: Isolation = "auto",
        env: Mapping[str, str] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.limits = limits or SandboxLimits()
        self.torch_threads = torch_threads
        self.mode: Literal["fork-server", "inprocess"] = "fork-server"
        prefix, network = detect_isolation(isolation, self.limits.network)
        files = detect_filesystem_isolation(self.limits.filesystem)
        self._landlock = files == "landlock-fs"
        self._private_home = self._landlock and self.limits.private_home
        self.mechanism = f"fork-server+{network}+rlimits+{files}" + ("+private-home" if self._private_home else "")
        self._block_network = network == "socket-block"
        self._own_user_namespace = network.startswith("unshare")
        self._work_root, owner_lock_fd = claim_work_root()
        child_env = scrub_environment(os.environ if env is None else env)
        if torch_threads is not None:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                child_env[var] = str(torch_threads)
        config = {
            "python_path": [os.path.abspath(p) for p in python_path],
            "preload": list(preload),
            "work_root": self._work_root,
        }
        same_pids = network != "unshare-net-pid"
        self._workers = [
            _Worker(prefix, child_env, config, os.path.join(self._work_root, f"worker-{i}.log"), same_pids)
            for i in range(workers)
        ]
        self._free: queue.Queue[_Worker] = queue.Queue()
        for worker in self._workers:
            worker.start()  # they import torch in parallel while we return
            self._free.put(worker)
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _kill_all, self._workers, self._work_root, owner_lock_fd)

    @property
    def workers(self) -> int:
        return len(self._workers)

    def worker_pids(self) -> list[int | None]:
        """Process ids of the zygotes as started (for diagnostics and tests)."""
        return [w.proc.pid if w.proc is not None else None for w in self._workers]

    def preload_errors(self) -> dict[str, str]:
        """Modules the started workers failed to preload (tasks then import them per run)."""
        return {name: error for w in self._workers for name, error in w.preload_errors.items()}

    def warm_up(self) -> None:
        """Wait until every worker is ready (otherwise the first runs wait for their worker)."""
        for _ in self._workers:
            worker = self._free.get()
            try:
                worker.ensure_ready()
            except (OSError, ChannelClosed, TimeoutError, ValueError):
                worker.kill()
            finally:
                self._free.put(worker)

    def run(self, task: str, payload: dict[str, Any], timeout_s: float | None = None) -> SandboxResult:
        """Run ``task`` ("package.module:function") on ``payload`` and classify what happened."""
        if self._closed:
            raise RuntimeError("the sandbox is closed")
        if self.mode == "inprocess":
            return run_inprocess(task, payload, output_cap_bytes=self.limits.output_cap_bytes)
        limits = self.limits.model_dump()
        if not self._own_user_namespace:
            limits["max_processes"] = None
        gpu = uses_gpu(payload)
        if gpu:  # CUDA maps tens of GB of address space and starts threads of its own
            limits["memory_mb"] = None
            limits["max_processes"] = None
        request = {
            "task": task,
            "payload": payload,
            "limits": limits,
            "torch_threads": self.torch_threads,
            "block_network": self._block_network,
            "landlock": self._landlock,
            "private_home": self._private_home,
            "gpu": gpu,
            # Data directories the task reads (training sets): readable even under private_home.
            "read_paths": [str(p) for p in payload.get("read_paths") or ()],
        }
        worker = self._free.get()
        try:
            fields = worker.execute(request, float(timeout_s or self.limits.timeout_s))
        finally:
            self._free.put(worker)
        return to_result(fields, self.mechanism)

    def close(self) -> None:
        """Kill every worker and every task still running; remove the temporary directories."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Sandbox(workers={self.workers}, mechanism={self.mechanism!r}, mode={self.mode!r})"
