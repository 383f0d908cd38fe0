"""The sandbox: results as data, classified failures, hard kills, limits, no network, no secrets.

Most tests use workers that preload nothing (they start in milliseconds); the task module
``sandbox_tasks`` lives next to this file and reaches the child through ``python_path``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from archsmith.tools.sandbox import (
    Sandbox,
    SandboxLimits,
    claim_work_root,
    remove_abandoned_work_roots,
    run_inprocess,
    scrub_environment,
)

HERE = str(Path(__file__).parent)


def make_sandbox(workers: int = 1, **kwargs: object) -> Sandbox:
    limits = kwargs.pop("limits", SandboxLimits(timeout_s=10, memory_mb=512))
    return Sandbox(limits, workers, python_path=[HERE], preload=(), **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with make_sandbox(workers=2) as box:
        box.warm_up()
        yield box


def test_good_task_returns_its_value(sandbox: Sandbox) -> None:
    result = sandbox.run("sandbox_tasks:echo", {"a": [1, 2], "b": "x"})
    assert result.ok, result.short_error()
    assert result.value["echo"] == {"a": [1, 2], "b": "x"}
    assert "hello from the task" in result.stdout
    assert result.mechanism == sandbox.mechanism and result.mechanism.startswith("fork-server+")
    assert result.value["pid"] != os.getpid()


def test_exception_is_classified_with_traceback(sandbox: Sandbox) -> None:
    result = sandbox.run("sandbox_tasks:fail", {"name": "net7"})
    assert not result.ok
    assert result.error_type == "ValueError"
    assert result.error_message == "bad candidate net7"
    assert result.traceback and "sandbox_tasks.py" in result.traceback


@pytest.mark.parametrize(
    ("task", "error_type"),
    [
        ("sandbox_tasks:not_a_dict", "InvalidResult"),
        ("sandbox_tasks:not_json", "NonJSONResult"),
        ("sandbox_tasks:no_such_function", "AttributeError"),
        ("no_such_module:task", "ModuleNotFoundError"),
        ("not a task path", "ValueError"),
    ],
)
def test_bad_tasks_and_results_are_classified(sandbox: Sandbox, task: str, error_type: str) -> None:
    result = sandbox.run(task, {})
    assert not result.ok and result.error_type == error_type


def test_a_task_reporting_failure_fails_the_result(sandbox: Sandbox) -> None:
    result = sandbox.run("sandbox_tasks:reports_failure", {})
    assert not result.ok and result.error_type == "TaskFailed"
    assert result.error_message == "the candidate is no good" and result.value["detail"] == 7


def test_infinite_loop_times_out(sandbox: Sandbox) -> None:
    started = time.monotonic()
    result = sandbox.run("sandbox_tasks:spin", {}, timeout_s=0.5)
    assert result.error_type == "Timeout" and result.timed_out
    assert time.monotonic() - started < 5
    assert sandbox.run("sandbox_tasks:echo", {}).ok  # the worker survives


def test_timeout_kills_grandchildren(tmp_path: Path) -> None:
    marker = tmp_path / "ticks"  # outside the task's directory: file-system isolation off here
    with make_sandbox(limits=SandboxLimits(timeout_s=10, memory_mb=512, filesystem="none")) as box:
        result = box.run("sandbox_tasks:spawn_and_hang", {"marker": str(marker)}, timeout_s=1.0)
        assert result.error_type == "Timeout"
        assert marker.exists()  # the grandchild did run
        time.sleep(0.3)
        size = marker.stat().st_size
        time.sleep(0.5)
        assert marker.stat().st_size == size, "a grandchild outlived the task"


def test_memory_bomb_is_stopped(sandbox: Sandbox) -> None:
    result = sandbox.run("sandbox_tasks:eat_memory", {"blocks": 64})  # 4 GiB against a 512 MiB limit
    assert not result.ok
    assert result.error_type == "MemoryLimit"


def test_hard_exit_is_classified(sandbox: Sandbox) -> None:
    result = sandbox.run("sandbox_tasks:hard_exit", {"code": 3})
    assert result.error_type == "Crashed" and result.exit_code == 3
    assert sandbox.run("sandbox_tasks:echo", {}).exit_code is None  # returned: not waited for
    assert "status 3" in (result.error_message or "")


def test_sys_exit_is_classified(sandbox: Sandbox) -> None:
    result = sandbox.run("sandbox_tasks:soft_exit", {"code": 2})
    assert result.error_type == "SystemExit"
    assert "sys.exit(2)" in (result.error_message or "")


def test_segfault_is_a_crash(sandbox: Sandbox) -> None:
    result = sandbox.run("sandbox_tasks:segfault", {})
    assert result.error_type == "Crashed"
    assert "SIGSEGV" in (result.error_message or "")
    assert result.exit_code == -signal.SIGSEGV
    assert result.traceback and "sandbox_tasks.py" in result.traceback  # from faulthandler


def test_huge_output_is_capped(sandbox: Sandbox) -> None:
    result = sandbox.run("sandbox_tasks:shout", {"lines": 20_000})  # 20 MB
    assert result.ok and result.value == {"done": True}
    assert len(result.stdout) < sandbox.limits.output_cap_bytes + 200
    assert "bytes of output dropped" in result.stdout
    assert result.stdout.rstrip().endswith("the end")


def test_file_size_limit() -> None:
    with make_sandbox(limits=SandboxLimits(timeout_s=10, max_file_mb=1)) as box:
        result = box.run("sandbox_tasks:write_file", {"bytes": 2 * 1024 * 1024})
    assert result.error_type == "OSError"
    assert "File too large" in (result.error_message or "")


def test_cpu_limit_is_a_timeout() -> None:
    with make_sandbox(limits=SandboxLimits(timeout_s=20, cpu_s=1)) as box:
        result = box.run("sandbox_tasks:spin", {})
    assert result.error_type == "Timeout" and result.timed_out
    assert "CPU" in (result.error_message or "")


def test_task_runs_in_its_own_temporary_directory(sandbox: Sandbox) -> None:
    result = sandbox.run("sandbox_tasks:where_am_i", {})
    assert result.ok
    cwd = result.value["cwd"]
    assert cwd != os.getcwd() and result.value["files"] == ["scratch.txt"]
    assert not os.path.exists(cwd), "the task's directory was not removed"


def test_two_workers_run_concurrently(sandbox: Sandbox) -> None:
    results = []

    def call() -> None:
        results.append(sandbox.run("sandbox_tasks:nap", {"seconds": 1.0}))

    threads = [threading.Thread(target=call) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 1.8
    assert all(r.ok for r in results)
    assert results[0].value["pid"] != results[1].value["pid"]


def test_more_callers_than_workers_wait_their_turn() -> None:
    with make_sandbox(workers=1) as box:
        results = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(box.run("sandbox_tasks:echo", {"i": i})))
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(r.value["echo"]["i"] for r in results) == [0, 1, 2, 3]


def test_killed_worker_restarts(sandbox: Sandbox) -> None:
    box = make_sandbox(workers=1)
    with box:
        assert box.run("sandbox_tasks:echo", {}).ok
        (pid,) = box.worker_pids()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        result = box.run("sandbox_tasks:echo", {"again": True})
        assert result.ok, result.short_error()
        assert box.worker_pids()[0] != pid
    with pytest.raises(RuntimeError):
        box.run("sandbox_tasks:echo", {})


def _living_processes() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, argv) of every process that is not a zombie, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            found[int(entry.name)] = (int(fields[1]), argv)
    return found


def _descendants(pid: int, processes: dict[int, tuple[int, list[str]]]) -> set[int]:
    below, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        children = {child for child, (of, _) in processes.items() if of == parent} - below
        below |= children
        todo.extend(children)
    return below


def test_zygotes_die_with_an_owner_killed_while_they_preload() -> None:
    """A run SIGKILLed while its zygotes still import torch (seconds when cold): they exit at once
    instead of finishing the imports (this preload takes a minute)."""
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from archsmith.tools.sandbox import Sandbox; "
         f"box = Sandbox(workers=2, python_path=[{HERE!r}], preload=['sandbox_slow_preload']); "
         "print(box.mechanism, flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    below: set[int] = set()
    try:
        assert owner.stdout is not None and owner.stdout.readline().startswith("fork-server+")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # both zygotes run, importing sandbox_slow_preload
            processes = _living_processes()
            below = _descendants(owner.pid, processes)
            zygotes = [p for p in below if processes[p][1][-2:] == ["-m", "archsmith.tools.sandbox_worker"]
                       and "unshare" not in processes[p][1][0]]  # fmt: skip
            if len(zygotes) == 2:
                break
            time.sleep(0.05)
        assert len(zygotes) == 2, f"the zygotes did not start: {[processes[p][1] for p in below]}"
        time.sleep(0.5)  # well into the preload
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 5
        while (left := below & _living_processes().keys()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, "processes of the sandbox outlived their killed owner"
    finally:
        owner.kill()
        for pid in below & _living_processes().keys():  # only when the test failed
            os.kill(pid, signal.SIGKILL)


def test_close_kills_a_running_task(tmp_path: Path) -> None:
    box = make_sandbox(workers=1, limits=SandboxLimits(timeout_s=10, memory_mb=512, filesystem="none"))
    marker = tmp_path / "ticks"
    worker = threading.Thread(
        target=lambda: box.run("sandbox_tasks:spawn_and_hang", {"marker": str(marker)}, timeout_s=30)
    )
    worker.start()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    box.close()
    worker.join(timeout=10)
    assert not worker.is_alive()
    time.sleep(0.3)
    size = marker.stat().st_size
    time.sleep(0.5)
    assert marker.stat().st_size == size, "a task's process outlived close()"


def test_close_removes_the_work_root() -> None:
    box = make_sandbox(workers=1)
    work_root = Path(box._work_root)
    assert (work_root / ".owner.lock").is_file()
    box.close()
    assert not work_root.exists()


def test_work_roots_of_killed_owners_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    """A sandbox owner killed with SIGKILL (a Ray worker at shutdown) leaves its directory behind;
    the next sandbox removes it, and never a directory whose owner still runs."""
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from archsmith.tools.sandbox import claim_work_root; "
         f"print(claim_work_root({str(tmp_path)!r})[0], flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    abandoned = Path(owner.stdout.readline().strip())  # type: ignore[union-attr]
    live, live_fd = claim_work_root(str(tmp_path))
    unlocked = tmp_path / "archsmith-sandbox-older-version"
    unlocked.mkdir()
    try:
        assert remove_abandoned_work_roots(str(tmp_path)) == []  # the owner still runs
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        assert remove_abandoned_work_roots(str(tmp_path)) == [str(abandoned)]
        assert not abandoned.exists()
        assert Path(live).is_dir() and unlocked.is_dir()
    finally:
        owner.kill()
        os.close(live_fd)


@pytest.fixture()
def listener() -> Iterator[int]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


def test_no_network(sandbox: Sandbox, listener: int) -> None:
    result = sandbox.run("sandbox_tasks:connect", {"host": "127.0.0.1", "port": listener})
    assert result.ok and result.value["connected"] is False


def test_no_network_with_socket_shim(listener: int) -> None:
    with make_sandbox(isolation="socket-block") as box:
        assert "socket-block" in box.mechanism
        result = box.run("sandbox_tasks:connect", {"host": "127.0.0.1", "port": listener})
    assert result.ok and result.value["connected"] is False
    assert "disabled in the sandbox" in result.value["error"]


def test_network_when_allowed(listener: int) -> None:
    with make_sandbox(limits=SandboxLimits(timeout_s=10, network=True)) as box:
        assert "network-allowed" in box.mechanism
        result = box.run("sandbox_tasks:connect", {"host": "127.0.0.1", "port": listener})
    assert result.ok and result.value["connected"] is True  # so the tests above are meaningful


def test_secrets_are_not_passed_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "t")
    monkeypatch.setenv("DB_PASSWORD", "p")
    monkeypatch.setenv("ARCHSMITH_HARMLESS", "1")
    with make_sandbox() as box:
        result = box.run("sandbox_tasks:environment", {})
    names = set(result.value["names"])
    assert "ARCHSMITH_HARMLESS" in names and "PATH" in names
    assert not names & {"OPENAI_API_KEY", "MY_SERVICE_TOKEN", "DB_PASSWORD"}


def test_scrub_environment() -> None:
    env = {"PATH": "/bin", "HF_TOKEN": "x", "aws_secret": "y", "ANTHROPIC_BASE_URL": "z", "LANG": "C"}
    assert scrub_environment(env) == {"PATH": "/bin", "LANG": "C"}


def test_inprocess_mode_classifies_alike() -> None:
    good = run_inprocess("sandbox_tasks:echo", {"x": (1, 2)})
    assert good.ok and good.value["echo"] == {"x": [1, 2]} and good.mechanism == "inprocess"
    assert "hello from the task" in good.stdout
    bad = run_inprocess("sandbox_tasks:fail", {"name": "n"})
    assert bad.error_type == "ValueError" and bad.traceback
    assert run_inprocess("sandbox_tasks:soft_exit", {}).error_type == "SystemExit"

    box = make_sandbox()
    with box:
        box.mode = "inprocess"
        result = box.run("sandbox_tasks:echo", {})
    assert result.ok and result.value["pid"] == os.getpid()


def test_concurrent_inprocess_runs_restore_stdout() -> None:
    import sys

    before = sys.stdout
    threads = [threading.Thread(target=run_inprocess, args=("sandbox_tasks:nap", {"seconds": 0.1})) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sys.stdout is before


# -- the candidate tasks (archsmith.tools.tasks), in a worker that preloads torch ---------------

TEMPLATE = (
    "SuperConvK3BNRELU(3,16,2,1)SuperResK3K3(16,32,2,16,1)SuperResK1K3K1(32,64,2,16,1)SuperConvK1BNRELU(64,128,1,1)"
)


def candidate(text: str, space: str = "template", **extra: object) -> dict[str, object]:
    return {"space": space, "space_settings": {}, "text": text, "num_classes": 10, "input_size": 16, **extra}


@pytest.fixture(scope="module")
def torch_sandbox() -> Iterator[Sandbox]:
    pytest.importorskip("torch")
    with Sandbox(SandboxLimits(timeout_s=60), workers=1, python_path=[HERE]) as box:
        yield box


def test_torch_worker_sets_threads_and_catches_allocation_failures(torch_sandbox: Sandbox) -> None:
    assert torch_sandbox.run("sandbox_tasks:torch_threads", {}).value == {"threads": 1}
    assert torch_sandbox.preload_errors() == {}
    result = torch_sandbox.run("sandbox_tasks:torch_huge_tensor", {"numel": 10**10})  # 40 GB
    assert result.error_type == "MemoryLimit"


def test_check_candidate_in_the_sandbox(torch_sandbox: Sandbox) -> None:
    from archsmith.tools.spaces import get_space

    result = torch_sandbox.run("archsmith.tools.tasks:check_candidate", candidate(TEMPLATE))
    assert result.ok and result.value["ok"], result.value
    value = result.value
    assert value["params"] == get_space("template").param_count(TEMPLATE, 10)
    assert value["macs"] > 0 and value["flops"] == 2 * value["macs"]
    assert value["output_shape"] == [2, 10] and value["stage"] is None


def test_evaluate_candidate_in_the_sandbox_matches_inprocess(torch_sandbox: Sandbox) -> None:
    payload = candidate(TEMPLATE, zen={"batch_size": 8, "repeats": 2, "seed": 3})
    boxed = torch_sandbox.run("archsmith.tools.tasks:evaluate_candidate", payload)
    local = run_inprocess("archsmith.tools.tasks:evaluate_candidate", payload)
    assert boxed.ok and boxed.value["ok"] and local.value["ok"]
    assert boxed.value["zen"]["score"] == pytest.approx(local.value["zen"]["score"], rel=1e-5)
    assert boxed.value["zen"]["repeats"] == 2 and boxed.value["zen"]["settings"]["resolution"] == 16
    assert boxed.value["check"]["macs"] == local.value["check"]["macs"]


def test_zen_score_candidate_reports_a_build_failure(torch_sandbox: Sandbox) -> None:
    result = torch_sandbox.run("archsmith.tools.tasks:zen_score_candidate", candidate("SuperConvK3BNRELU(3,16,2"))
    assert not result.ok and result.error_type == "InvalidStructure"  # lifted from the task's answer
    assert result.value["ok"] is False and result.value["stage"] == "build"
    assert result.exit_code is None  # the task itself returned


@pytest.mark.parametrize(
    ("fault", "stage", "error_type"),
    [
        ("raise_build", "build", "RuntimeError"),
        ("nonsense", "build", "InvalidStructure"),
        ("raise_forward", "forward", "IndexError"),
        ("wrong_shape", "forward", "OutputShape"),
        ("tuple", "forward", "OutputShape"),
        ("nan", "forward", "NonFinite"),
        ("no_grad", "backward", "RuntimeError"),
    ],
)
def test_check_candidate_classifies_each_stage(fault: str, stage: str, error_type: str) -> None:
    pytest.importorskip("torch")
    payload = candidate(fault, space="faulty", task="check_candidate")
    result = run_inprocess("sandbox_tasks:evaluate_faulty", payload)
    value = result.value
    assert value["ok"] is False, value
    assert not result.ok and result.error_type == error_type and result.error_message == value["error_message"]
    assert (value["stage"], value["error_type"]) == (stage, error_type), value
    assert value["error_message"]
    assert (value["traceback"] is None) == (error_type in {"OutputShape", "NonFinite", "InvalidStructure"})


def test_evaluate_candidate_stops_after_a_failed_check() -> None:
    pytest.importorskip("torch")
    failed = run_inprocess("sandbox_tasks:evaluate_faulty", candidate("nan", "faulty", task="evaluate_candidate"))
    assert failed.value["ok"] is False and failed.value["zen"] is None
    assert failed.value["error_type"] == "NonFinite" and failed.value["stage"] == "forward"
    good = run_inprocess("sandbox_tasks:evaluate_faulty", candidate("ok", "faulty", task="evaluate_candidate"))
    assert good.value["ok"] and good.value["check"]["params"] == 3 * 8 * 9 + 8 + 16 + 8 * 10 + 10
    assert good.value["zen"]["ok"] and good.value["zen"]["score"] is not None


def test_zen_settings_are_checked() -> None:
    pytest.importorskip("torch")
    payload = candidate("ok", "faulty", task="zen_score_candidate", zen={"batch_size": 4, "bogus": 1})
    result = run_inprocess("sandbox_tasks:evaluate_faulty", payload)
    assert not result.ok and result.error_type == "TypeError" and result.value["stage"] == "zen"
