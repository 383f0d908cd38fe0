"""The sandbox's warm worker (a "zygote"), run as ``python -m archsmith.tools.sandbox_worker``.

The zygote imports torch and archsmith once, then serves requests from its parent (framed JSON,
see :mod:`archsmith.tools.sandbox_protocol`). It never runs torch ops itself, so forking it is
safe (no thread pools exist yet); ``gc.freeze()`` keeps the children's garbage collections off
the preloaded objects. For each request it forks a child that gets its own process group and
temporary directory, drops to resource limits, sends stdout/stderr into a pipe the zygote caps,
runs the task and writes the framed JSON outcome over another pipe, then exits with ``os._exit``.

The zygote enforces the wall-clock limit by killing the child's process group and classifies what
happened. Once a task has returned, its process group is killed at once and reaped later (tearing
down a process with torch loaded takes 10-30 ms, which then overlaps the next task). When the
zygote is PID 1 of its own PID namespace (started under ``unshare --pid``), it also kills every
process a task left behind, wherever it went. The zygote exits when its parent closes the command
pipe (the parent died, even by SIGKILL), also while it preloads and in the middle of a task: the
task dies with it.
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import fcntl
import gc
import importlib
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import termios
import threading
import time
from typing import Any

from archsmith.tools.sandbox_protocol import (
    FRAME_HEADER,
    CappedOutput,
    ChannelClosed,
    call_task,
    encode_outcome,
    failure,
    looks_like_memory_failure,
    read_message,
    write_message,
)

MAX_RESULT_BYTES = 64 * 1024 * 1024
_PR_SET_PDEATHSIG = 1
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper bound on 64-bit
_CHILD_SETUP_FAILED = 70


# ----------------------------------------------------------------------------------------------
# Landlock: confine the child's writes to its temporary directory and, optionally, its reads to
# the system, the Python installation, the import path and that directory (no home directory).

_PR_SET_NO_NEW_PRIVS = 38
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_READ_RIGHTS = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
# Readable when reads are confined: what the interpreter, torch and its libraries need.
SYSTEM_READABLE = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/dev",
                   "/opt", "/run/shm", "/dev/shm")
_FS_REMOVE_DIR, _FS_REMOVE_FILE = 1 << 4, 1 << 5
_FS_MAKE_CHAR, _FS_MAKE_DIR, _FS_MAKE_REG, _FS_MAKE_SOCK = 1 << 6, 1 << 7, 1 << 8, 1 << 9
_FS_MAKE_FIFO, _FS_MAKE_BLOCK, _FS_MAKE_SYM = 1 << 10, 1 << 11, 1 << 12
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_WRITE_RIGHTS_V1 = (
    _FS_WRITE_FILE | _FS_REMOVE_DIR | _FS_REMOVE_FILE | _FS_MAKE_CHAR | _FS_MAKE_DIR | _FS_MAKE_REG
    | _FS_MAKE_SOCK | _FS_MAKE_FIFO | _FS_MAKE_BLOCK | _FS_MAKE_SYM
)  # fmt: skip
# Devices a task (or a library) may legitimately open for writing; only file rights apply to them.
LANDLOCK_WRITABLE_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
# A task on a GPU also opens the driver's device files read-write (CUDA: nvidiactl, nvidiaN, uvm).
GPU_DEVICE_PATTERNS = ("/dev/nvidia*", "/dev/dri/*")
# ... and writes (open O_WRONLY|O_TRUNC) files of its own process under /proc at initialisation:
# denied, cuInit fails with error 304 (seen on an H100, driver 580). Only the task's own entries.
GPU_WRITABLE_PROC = ("/proc/self",)
_RULESET_ATTR = struct.Struct("=Q")  # handled_access_fs only (ABI >= 4 adds net, >= 6 scoped)
_PATH_BENEATH_ATTR = struct.Struct("=Qi")  # packed: allowed_access (u64), parent_fd (s32)


def _syscall() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is unsupported or disabled."""
    try:
        libc = _syscall()
        abi = libc.syscall(
            ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
            ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
        )  # fmt: skip
    except (OSError, AttributeError):
        return 0
    return max(int(abi), 0)


def landlock_handled_rights(abi: int) -> int:
    """The write-related rights this sandbox handles (denies unless allowed) at ``abi``."""
    rights = _FS_WRITE_RIGHTS_V1
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    return rights


def readable_paths(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """What a task may read when reads are confined: system directories, the Python installation
    (prefixes), every directory on the import path and of the loaded packages, except the home
    directory itself and its ancestors (so ``~/.ssh`` stays unreadable unless it is on the path);
    plus ``extra``, the directories the task's payload names as its data (``read_paths``)."""
    home = os.path.realpath(os.path.expanduser("~"))
    wanted = [os.path.realpath(p) for p in extra if isinstance(p, str) and os.path.isdir(p)]
    candidates = [*SYSTEM_READABLE, sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]
    for module in list(sys.modules.values()):
        entries = getattr(module, "__path__", None)
        if isinstance(entries, (list, tuple)) or type(entries).__name__ == "_NamespacePath":
            candidates.extend(entry for entry in entries if isinstance(entry, str))
    paths: list[str] = []
    for entry in candidates:
        if not entry or not isinstance(entry, str):
            continue
        real = os.path.realpath(entry)
        if not os.path.isdir(real) or real == home or home.startswith(real.rstrip("/") + "/"):
            continue  # the home directory, or an ancestor of it (e.g. "/")
        if real not in paths:
            paths.append(real)
    return paths + [p for p in wanted if p not in paths]


def gpu_device_files() -> tuple[str, ...]:
    """The GPU driver's device files present on this machine (empty without a GPU)."""
    import glob

    return tuple(sorted(path for pattern in GPU_DEVICE_PATTERNS for path in glob.glob(pattern)))


def restrict_writes_to(
    directory: str,
    devices: tuple[str, ...] = LANDLOCK_WRITABLE_DEVICES,
    readable: list[str] | None = None,
) -> int:
    """Confine this process (and whatever it starts) to writing inside ``directory``.

    With ``readable`` (see :func:`readable_paths`), reading, listing and executing are confined to
    those directories and ``directory`` too; without it they stay unrestricted. Returns the ABI
    used; raises ``OSError`` when Landlock cannot be applied. Irrevocable for this process.
    """
    abi = landlock_abi()
    if abi < 1:
        raise OSError(errno.EOPNOTSUPP, "Landlock is not supported by this kernel")
    libc = _syscall()
    handled = landlock_handled_rights(abi) | (_FS_READ_RIGHTS if readable is not None else 0)
    attr = ctypes.create_string_buffer(_RULESET_ATTR.pack(handled), _RULESET_ATTR.size)
    ruleset = libc.syscall(
        ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), attr, ctypes.c_size_t(_RULESET_ATTR.size), ctypes.c_uint32(0)
    )
    if ruleset < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    ruleset = int(ruleset)
    try:
        file_rights = handled & (_FS_WRITE_FILE | _FS_TRUNCATE | _FS_READ_FILE)  # the rights a file takes
        rules = [(directory, handled, True)] + [(device, file_rights, False) for device in devices]
        rules += [(path, _FS_READ_RIGHTS, False) for path in readable or []]
        for path, allowed, required in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                if required:
                    raise
                continue
            try:
                rule = ctypes.create_string_buffer(_PATH_BENEATH_ATTR.pack(allowed, fd), _PATH_BENEATH_ATTR.size)
                added = libc.syscall(
                    ctypes.c_long(_SYS_LANDLOCK_ADD_RULE), ctypes.c_int(ruleset),
                    ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), rule, ctypes.c_uint32(0),
                )  # fmt: skip
                if added < 0 and required:
                    err = ctypes.get_errno()
                    raise OSError(err, f"landlock_add_rule({path}): {os.strerror(err)}")
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
        if libc.syscall(ctypes.c_long(_SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(ruleset)
    return abi


# ----------------------------------------------------------------------------------------------
# The child: runs one task under limits and exits with os._exit.


def _vm_size_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _set_limit(kind: int, soft: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, soft if hard == resource.RLIM_INFINITY else hard))


def _apply_limits(limits: dict[str, Any]) -> None:
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.get("memory_mb") is not None:
        # Relative to the warm interpreter: torch alone reserves gigabytes of address space.
        _set_limit(resource.RLIMIT_AS, _vm_size_bytes() + int(limits["memory_mb"]) * mb)
    if limits.get("cpu_s") is not None:
        soft = max(1, int(limits["cpu_s"]))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 5))
    if limits.get("max_processes") is not None:
        _set_limit(resource.RLIMIT_NPROC, int(limits["max_processes"]))
    if limits.get("max_file_mb") is not None:
        _set_limit(resource.RLIMIT_FSIZE, int(limits["max_file_mb"]) * mb)
    if limits.get("max_open_files") is not None:
        _set_limit(resource.RLIMIT_NOFILE, int(limits["max_open_files"]))


def _block_network() -> None:
    """Fallback when no network namespace is available: IP sockets refuse to connect or send."""
    import socket

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "network access is disabled in the sandbox")

    def guard(method_name: str) -> None:
        original = getattr(socket.socket, method_name)

        def guarded(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
            if self.family in (socket.AF_INET, socket.AF_INET6):
                refuse()
            return original(self, *args, **kwargs)

        setattr(socket.socket, method_name, guarded)

    for name in ("connect", "connect_ex", "sendto", "sendmsg", "bind"):
        guard(name)
    socket.getaddrinfo = refuse  # type: ignore[assignment]
    socket.gethostbyname = refuse  # type: ignore[assignment]
    socket.create_connection = refuse  # type: ignore[assignment]


def _set_torch_threads(threads: int | None) -> None:
    torch = sys.modules.get("torch")
    if threads is None or torch is None:
        return
    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(int(threads))
    except RuntimeError:  # already set in this process
        pass


def _child_main(request: dict[str, Any], task_dir: str, result_fd: int, output_fd: int) -> None:
    os.setpgid(0, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the zygote
    # A long-running process reuses freed tensor memory because glibc raises its mmap threshold
    # as large blocks are freed; a fresh child would mmap (and page-fault) every large tensor
    # anew. Start the child where a warm process ends up.
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises EFBIG instead
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # kept if the task crashes
    except (AttributeError, ValueError):
        pass
    os.chdir(task_dir)
    for var in ("TMPDIR", "TMP", "TEMP"):
        os.environ[var] = task_dir
    tempfile.tempdir = task_dir
    faulthandler.enable(file=sys.stderr, all_threads=True)
    _apply_limits(request.get("limits", {}))
    if request.get("block_network"):
        _block_network()
    _set_torch_threads(request.get("torch_threads"))
    if request.get("landlock"):  # last: everything above may still write where it needs to
        gpu = gpu_device_files() if request.get("gpu") else ()
        # /proc/self takes file rights only, like a device (restrict_writes_to).
        devices = LANDLOCK_WRITABLE_DEVICES + (gpu + GPU_WRITABLE_PROC if gpu else ())
        readable = readable_paths(request.get("read_paths") or ()) if request.get("private_home") else None
        restrict_writes_to(task_dir, devices, readable=readable)

    outcome = call_task(request["task"], request.get("payload", {}))
    data = encode_outcome(outcome)
    if len(data) > MAX_RESULT_BYTES:
        data = encode_outcome(failure("ResultTooLarge", f"the result exceeds {MAX_RESULT_BYTES} bytes as JSON"))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the task may have closed or replaced its streams
            pass
    faulthandler.disable()
    os.close(1)  # the zygote sees the end of the output now, not after this process is torn down
    os.close(2)
    view = memoryview(FRAME_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(result_fd, view) :]


def _run_child(request: dict[str, Any], task_dir: str, result_fd: int, output_fd: int, keep: list[int]) -> None:
    """Entry point after fork; never returns."""
    code = 0
    try:
        for fd in keep:
            os.close(fd)
        _child_main(request, task_dir, result_fd, output_fd)
    except BaseException:  # noqa: BLE001 - anything here is a setup failure the zygote reports
        code = _CHILD_SETUP_FAILED
        try:
            import traceback

            os.write(2, traceback.format_exc().encode("utf-8", "replace"))
        except Exception:  # noqa: BLE001
            pass
    finally:
        os._exit(code)


# ----------------------------------------------------------------------------------------------
# The zygote: forks a child per request, enforces the wall clock and classifies the outcome.


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_namespace() -> None:
    """As PID 1 of a private PID namespace, kill every process a task left behind."""
    if os.getpid() != 1:  # never kill(-1) outside our own namespace
        return
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap_finished() -> None:
    """Collect the exit status of children that have ended (earlier tasks, orphans as PID 1).

    Finished tasks are not waited for when they return a result: tearing down a process with
    torch loaded takes 10-30 ms, which then overlaps with the next task.
    """
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class _Collector:
    """Reads a child's framed result and its capped stdout/stderr."""

    def __init__(self, result_fd: int, output_fd: int, cap: int) -> None:
        self.result = bytearray()
        self.capture = CappedOutput(cap)
        self.open = {result_fd: self._feed_result, output_fd: self.capture.feed}

    def _feed_result(self, chunk: bytes) -> None:
        if len(self.result) <= MAX_RESULT_BYTES + FRAME_HEADER.size:  # beyond that, drained unread
            self.result += chunk

    def _size(self) -> int | None:
        if len(self.result) < FRAME_HEADER.size:
            return None
        return int(FRAME_HEADER.unpack_from(self.result)[0])

    def complete(self) -> bool:
        size = self._size()
        return size is not None and (size > MAX_RESULT_BYTES or len(self.result) >= FRAME_HEADER.size + size)

    def outcome_bytes(self) -> bytes | None:
        size = self._size()
        if size is None or size > MAX_RESULT_BYTES or not self.complete():
            return None
        return bytes(self.result[FRAME_HEADER.size : FRAME_HEADER.size + size])

    def read(self, fds: list[int]) -> None:
        for fd in fds:
            chunk = os.read(fd, 1 << 16)
            if chunk:
                self.open[fd](chunk)
            else:
                del self.open[fd]

    def drain(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while self.open and time.monotonic() < until:
            self.read(select.select(list(self.open), [], [], 0.02)[0])

    def close(self) -> None:
        for fd in list(self.open):
            os.close(fd)


def _classify(collector: _Collector, status: int | None, timed_out: bool, timeout_s: float) -> dict[str, Any]:
    """The SandboxResult fields for how the child ended; ``exit_code`` only when it returned nothing."""
    output = collector.capture.text()
    exit_code = os.waitstatus_to_exitcode(status) if status is not None else None
    if timed_out:
        result = failure("Timeout", f"the task ran past its wall-clock limit of {timeout_s:g} s and was killed")
        return {**result, "timed_out": True, "exit_code": exit_code}
    if collector.complete():
        data = collector.outcome_bytes()
        if data is None:
            return failure("ResultTooLarge", f"the result exceeds {MAX_RESULT_BYTES} bytes")
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError as exc:
            return failure("NonJSONResult", f"the task's result could not be decoded: {exc}")
    crash_tb = output[output.find("Fatal Python error") :] if "Fatal Python error" in output else None
    if exit_code is None:
        result = failure("Crashed", "the task's process ended without a result")
    elif exit_code < 0:
        sig = signal.Signals(-exit_code)
        if sig == signal.SIGXCPU:
            result = {**failure("Timeout", "the task ran past its CPU-time limit (SIGXCPU)"), "timed_out": True}
        elif looks_like_memory_failure(output) or sig == signal.SIGKILL:  # SIGKILL not from us: OOM killer
            result = failure("MemoryLimit", f"killed by {sig.name} after running out of memory", crash_tb)
        else:
            result = failure("Crashed", f"killed by signal {sig.name}", crash_tb)
    elif exit_code == _CHILD_SETUP_FAILED:
        result = failure("SandboxError", "the sandbox could not set up the task's process", output[-4000:] or None)
    else:
        result = failure("Crashed", f"exited with status {exit_code} without returning a result", crash_tb)
    return {**result, "exit_code": exit_code}


def serve(request: dict[str, Any], proto_in: int, proto_out: int, keep: list[int], work_root: str) -> dict[str, Any]:
    """Run one request in a forked child; returns the SandboxResult fields as a dict.

    The parent sends nothing while a task runs, so ``proto_in`` turning readable means it is gone
    (killed, even with SIGKILL): the task is killed and ``ChannelClosed`` raised, and the zygote
    exits instead of finishing work nobody will read.
    """
    _reap_finished()
    limits = request.get("limits", {})
    timeout_s = float(request.get("timeout_s") or limits.get("timeout_s") or 60.0)
    task_dir = tempfile.mkdtemp(prefix="task-", dir=work_root)
    result_r, result_w = os.pipe()
    output_r, output_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(result_r)
        os.close(output_r)
        _run_child(request, task_dir, result_w, output_w, keep)
    os.close(result_w)
    os.close(output_w)
    try:
        os.setpgid(pid, pid)
    except (ProcessLookupError, PermissionError):
        pass  # the child already did it, or already exited
    write_message(proto_out, {"event": "started", "id": request.get("id"), "pid": pid})

    collector = _Collector(result_r, output_r, int(limits.get("output_cap_bytes", 64 * 1024)))
    try:
        pidfd: int | None = os.pidfd_open(pid)  # readable once the child exits
    except (AttributeError, OSError):
        pidfd = None  # old kernel: poll with waitpid below
    status: int | None = None
    timed_out = exited = orphaned = False
    deadline = started + timeout_s
    try:
        while not exited and not collector.complete():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            watched = [*collector.open, proto_in] if pidfd is None else [*collector.open, proto_in, pidfd]
            ready, _, _ = select.select(watched, [], [], min(left, 1.0 if pidfd is not None else 0.02))
            if proto_in in ready:
                orphaned = True
                break
            if pidfd is None:
                reaped, waited = os.waitpid(pid, os.WNOHANG)
                exited, status = (True, waited) if reaped else (False, None)
            exited = exited or pidfd in ready
            collector.read([fd for fd in ready if fd != pidfd])
        if exited and not collector.complete():
            collector.drain(0.5)  # the result may have arrived just before the exit
        returned = collector.complete() and not timed_out and not orphaned
        if returned:
            collector.drain(0.1)  # at end of file already, unless a grandchild holds the output
        _kill_group(pid)  # the task's whole group, grandchildren included
        _kill_namespace()
        if not returned:
            if status is None:
                _, status = os.waitpid(pid, 0)
            collector.drain(0.5)
        duration = time.monotonic() - started
    finally:
        collector.close()
        if pidfd is not None:
            os.close(pidfd)
        shutil.rmtree(task_dir, ignore_errors=True)
    if orphaned:
        raise ChannelClosed("the parent closed the channel while a task ran")
    outcome = _classify(collector, status, timed_out, timeout_s)
    outcome.setdefault("timed_out", False)
    return {**outcome, "stdout": collector.capture.text(), "duration_s": duration}


def _preload(modules: list[str]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported to the parent in the ready message
            errors[name] = f"{type(exc).__name__}: {exc}"
    return errors


def _preload_unless_orphaned(modules: list[str], proto_in: int) -> dict[str, str]:
    """``_preload``, but exit at once if the parent dies meanwhile.

    The parent sends nothing until the zygote says it is ready, so ``proto_in`` turning readable
    with no bytes to read is end of file: the parent is gone (even by SIGKILL). Importing torch
    cold takes many seconds; without this watch a zygote (and, as PID 1 of its namespace, nothing
    else) outlived its killed parent until the imports ended. The watcher thread is joined before
    the zygote ever forks.
    """
    stop_r, stop_w = os.pipe()

    def watch() -> None:
        ready, _, _ = select.select([proto_in, stop_r], [], [])
        if proto_in in ready and stop_r not in ready and _bytes_waiting(proto_in) == 0:
            os._exit(0)

    watcher = threading.Thread(target=watch, name="parent-watch", daemon=True)
    watcher.start()
    try:
        return _preload(modules)
    finally:
        os.write(stop_w, b"x")
        watcher.join()
        os.close(stop_r)
        os.close(stop_w)


def _bytes_waiting(fd: int) -> int:
    """How many bytes a read of the pipe ``fd`` would get now (0 at end of file)."""
    count = bytearray(struct.calcsize("i"))
    try:
        fcntl.ioctl(fd, termios.FIONREAD, count)
    except OSError:
        return 0
    return int(struct.unpack("i", count)[0])


def main() -> None:
    """Serve requests on stdin/stdout until stdin closes."""
    proto_in, proto_out = os.dup(0), os.dup(1)  # non-inheritable copies for the protocol
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # stray prints go to the zygote's log, never into the protocol
    config = read_message(proto_in)
    here = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", here)]
    sys.path[:0] = [p for p in config.get("python_path", []) if p not in sys.path]
    work_root = config.get("work_root") or here
    errors = _preload_unless_orphaned(list(config.get("preload", [])), proto_in)
    gc.collect()
    gc.freeze()  # children's collections skip (and so do not copy-on-write) the preloaded objects
    write_message(proto_out, {"event": "ready", "pid": os.getpid(), "preload_errors": errors})
    keep = [proto_in, proto_out]
    while True:
        try:
            request = read_message(proto_in)
            outcome = serve(request, proto_in, proto_out, keep, work_root)
        except ChannelClosed:  # the parent is gone: so is every task (PDEATHSIG, PID namespace)
            break
        write_message(proto_out, {"event": "done", "id": request.get("id"), "result": outcome})


if __name__ == "__main__":
    main()
