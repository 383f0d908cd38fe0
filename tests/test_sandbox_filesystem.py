"""File-system isolation (Landlock): a task writes only inside its own temporary directory, and
(private_home, the default) reads only system directories, the Python installation, the import
path and its own directory. Where the kernel has no Landlock, the Landlock-specific assertions are
skipped and the sandbox says ``+no-fs-isolation``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from archsmith.tools.sandbox import Sandbox, SandboxLimits, detect_filesystem_isolation
from archsmith.tools.sandbox_worker import landlock_abi

HERE = str(Path(__file__).parent)
HAS_LANDLOCK = landlock_abi() >= 1
needs_landlock = pytest.mark.skipif(not HAS_LANDLOCK, reason="the kernel has no Landlock")
ORIGINAL = "original content"


def make_sandbox(filesystem: str = "auto", private_home: bool = True, **kwargs: object) -> Sandbox:
    limits = SandboxLimits(timeout_s=10, memory_mb=512, filesystem=filesystem,  # type: ignore[arg-type]
                           private_home=private_home)
    return Sandbox(limits, 1, python_path=[HERE], preload=(), **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def confined() -> Iterator[Sandbox]:
    with make_sandbox("auto") as box:
        box.warm_up()
        yield box


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    target = tmp_path / "precious.txt"
    target.write_text(ORIGINAL, encoding="utf-8")
    return target


def test_mechanism_reports_filesystem_isolation(confined: Sandbox) -> None:
    expected = "+landlock-fs" if HAS_LANDLOCK else "+no-fs-isolation"
    assert expected in confined.mechanism
    assert confined.run("sandbox_tasks:echo", {}).mechanism == confined.mechanism


def test_filesystem_settings_are_validated() -> None:
    assert detect_filesystem_isolation("none") == "no-fs-isolation"
    with pytest.raises(ValueError):
        SandboxLimits(filesystem="chroot")  # type: ignore[arg-type]
    if HAS_LANDLOCK:
        assert detect_filesystem_isolation("landlock") == "landlock-fs"
    else:
        with pytest.raises(RuntimeError):
            make_sandbox("landlock")


@needs_landlock
@pytest.mark.parametrize("operation", ["write", "append", "truncate", "delete", "rename", "move_in", "shell_write"])
def test_changing_a_file_outside_fails(confined: Sandbox, outside: Path, operation: str) -> None:
    result = confined.run("sandbox_tasks:file_operation", {"path": str(outside), "operation": operation})
    assert not result.ok
    expected = "CalledProcessError" if operation == "shell_write" else "PermissionError"
    assert result.error_type == expected, result.short_error()
    assert outside.read_text(encoding="utf-8") == ORIGINAL
    assert sorted(p.name for p in outside.parent.iterdir()) == ["precious.txt"]


@needs_landlock
@pytest.mark.parametrize("operation", ["create", "mkdir", "symlink"])
def test_creating_outside_fails(confined: Sandbox, tmp_path: Path, operation: str) -> None:
    result = confined.run("sandbox_tasks:file_operation", {"path": str(tmp_path), "operation": operation})
    assert not result.ok and result.error_type == "PermissionError", result.short_error()
    assert list(tmp_path.iterdir()) == []


@needs_landlock
def test_reading_outside_the_readable_paths_is_denied(confined: Sandbox, outside: Path) -> None:
    assert confined.mechanism.endswith("+landlock-fs+private-home")
    result = confined.run("sandbox_tasks:file_operation", {"path": str(outside), "operation": "read"})
    assert not result.ok and result.error_type == "PermissionError", result.short_error()
    home_file = Path.home() / ".bashrc"
    if home_file.is_file():
        result = confined.run("sandbox_tasks:file_operation", {"path": str(home_file), "operation": "read"})
        assert not result.ok and result.error_type == "PermissionError"
    system = confined.run("sandbox_tasks:file_operation", {"path": "/etc/passwd", "operation": "read"})
    assert system.ok, system.short_error()


@needs_landlock
def test_a_payloads_read_paths_are_readable_but_not_writable(confined: Sandbox, outside: Path) -> None:
    """Training data named in ``read_paths`` can be read under private_home; nothing else opens."""
    payload = {"path": str(outside), "operation": "read", "read_paths": [str(outside.parent)]}
    result = confined.run("sandbox_tasks:file_operation", payload)
    assert result.ok, result.short_error()
    assert result.value["text"] == ORIGINAL
    written = confined.run("sandbox_tasks:file_operation", {**payload, "operation": "write"})
    assert not written.ok and written.error_type == "PermissionError"
    assert outside.read_text(encoding="utf-8") == ORIGINAL


def test_reading_outside_works_without_private_home(outside: Path) -> None:
    with make_sandbox("auto", private_home=False) as box:
        assert not box.mechanism.endswith("+private-home")
        result = box.run("sandbox_tasks:file_operation", {"path": str(outside), "operation": "read"})
    assert result.ok, result.short_error()
    assert result.value["text"] == ORIGINAL


def test_writing_inside_the_task_directory_works(confined: Sandbox) -> None:
    result = confined.run("sandbox_tasks:scratch_work", {})
    assert result.ok, result.short_error()
    cwd = result.value["cwd"]
    assert result.value["temp"].startswith(cwd + os.sep)  # tempfile writes into the task's directory
    assert result.value["files"] == [os.path.basename(result.value["temp"])]
    assert not os.path.exists(cwd)


def test_none_disables_it(outside: Path) -> None:
    with make_sandbox("none") as box:
        assert box.mechanism.endswith("+no-fs-isolation")
        result = box.run("sandbox_tasks:file_operation", {"path": str(outside), "operation": "write"})
    assert result.ok, result.short_error()
    assert outside.read_text(encoding="utf-8") == "changed by the task"


TEMPLATE = (
    "SuperConvK3BNRELU(3,16,2,1)SuperResK3K3(16,32,2,16,1)SuperResK1K3K1(32,64,2,16,1)SuperConvK1BNRELU(64,128,1,1)"
)


@needs_landlock
def test_torch_tasks_work_under_landlock() -> None:
    pytest.importorskip("torch")
    payload = {"space": "template", "space_settings": {}, "text": TEMPLATE, "num_classes": 10, "input_size": 16}
    limits = SandboxLimits(timeout_s=60, filesystem="landlock")
    with Sandbox(limits, workers=1, python_path=[HERE]) as box:
        assert "+landlock-fs" in box.mechanism
        check = box.run("archsmith.tools.tasks:check_candidate", payload)
        assert check.ok and check.value["ok"], check.value
        assert check.value["macs"] > 0 and check.value["output_shape"] == [2, 10]
        zen = box.run("archsmith.tools.tasks:zen_score_candidate", {**payload, "zen": {"batch_size": 8, "repeats": 2}})
        assert zen.ok and zen.value["ok"], zen.value
        evaluated = box.run("archsmith.tools.tasks:evaluate_candidate", payload)
        assert evaluated.ok and evaluated.value["ok"], evaluated.value
        assert box.run("sandbox_tasks:torch_threads", {}).value == {"threads": 1}
