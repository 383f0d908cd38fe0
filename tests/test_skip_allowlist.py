"""The skip allow-list (tests/conftest.py, tests/skip_allowlist.txt): a skip for a reason outside the
list fails the session; a listed one does not. Sessions of a copy of conftest.py run on generated
test files in a subprocess, with a small allow-list of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ALLOW_ANY_SKIP_ENV, asks_for_integration, load_skip_allowlist

TESTS_DIR = Path(__file__).resolve().parent

TINY_TESTS = {
    "test_listed.py": """
        import pytest

        def test_runs():
            pass

        @pytest.mark.skipif(True, reason="no frobnicator on this machine")
        def test_marked():
            pass

        def test_at_run_time():
            pytest.skip("no frobnicator on this machine")
    """,
    "test_unlisted.py": """
        import pytest

        def test_gives_up():
            pytest.skip("the feature broke, skipping for now")
    """,
    "test_importorskip.py": """
        import pytest

        def test_needs_a_package():
            pytest.importorskip("archsmith_no_such_package")
    """,
    "test_module_skip.py": """
        import pytest

        pytest.skip("the whole module is off", allow_module_level=True)
    """,
    "test_tier.py": """
        import pytest

        pytestmark = pytest.mark.integration

        def test_needs_a_server():
            pytest.skip("no frobnicator on this machine")
    """,
}
ALLOWLIST = "# the generated tests' environmental reason\nno frobnicator on this machine\n"


@pytest.fixture
def session_dir(tmp_path):
    shutil.copy(TESTS_DIR / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "skip_allowlist.txt").write_text(ALLOWLIST, "utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    integration: the tier\n", "utf-8")
    for name, source in TINY_TESTS.items():
        (tmp_path / name).write_text(textwrap.dedent(source), "utf-8")
    return tmp_path


def session(where: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in (ALLOW_ANY_SKIP_ENV, "PYTEST_ADDOPTS")}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", str(where / "pytest.ini"),
               "--rootdir", str(where), *args]
    environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # langsmith's plugin alone takes seconds to import
    return subprocess.run(command, cwd=where, env={**environ, **env}, capture_output=True, text=True, timeout=120)


def test_listed_skips_pass_the_session(session_dir):
    done = session(session_dir, "test_listed.py")
    assert done.returncode == 0, done.stdout
    assert "1 passed, 2 skipped" in done.stdout and "outside the allow-list" not in done.stdout


@pytest.mark.parametrize(
    "test_file, reason",
    [
        ("test_unlisted.py", "the feature broke, skipping for now"),
        ("test_importorskip.py", "could not import 'archsmith_no_such_package'"),
        ("test_module_skip.py", "the whole module is off"),
    ],
)
def test_an_unlisted_skip_fails_the_session(session_dir, test_file, reason):
    done = session(session_dir, "test_listed.py", test_file)
    assert done.returncode == 1, done.stdout
    assert "skips outside the allow-list" in done.stdout
    assert f"{test_file}" in done.stdout and reason in done.stdout
    assert "no frobnicator" not in done.stdout.split("skips outside the allow-list")[1]  # listed ones are not named


def test_the_escape_hatch_reports_but_does_not_fail(session_dir):
    done = session(session_dir, "test_unlisted.py", **{ALLOW_ANY_SKIP_ENV: "1"})
    assert done.returncode == 0, done.stdout
    assert "the feature broke" in done.stdout and f"{ALLOW_ANY_SKIP_ENV}=1" in done.stdout


def test_the_integration_tier_may_not_skip_once_asked_for(session_dir):
    plain = session(session_dir, "test_tier.py")
    assert plain.returncode == 0, plain.stdout  # a listed reason in a plain run
    asked = session(session_dir, "-m", "integration", "test_tier.py")
    assert asked.returncode == 1, asked.stdout
    assert "the integration tier was asked for with -m" in asked.stdout
    deselected = session(session_dir, "-m", "not integration", "test_tier.py", "test_unlisted.py")
    assert deselected.returncode == 1 and "test_tier" not in deselected.stdout.split("outside the allow-list")[1]
    only_deselected = session(session_dir, "-m", "not integration", "test_tier.py", "test_listed.py")
    assert only_deselected.returncode == 0, only_deselected.stdout  # deselection is not a skip


def test_an_entry_without_a_reason_is_refused(session_dir):
    (session_dir / "skip_allowlist.txt").write_text(ALLOWLIST + "\nsomething else\n", "utf-8")
    done = session(session_dir, "test_listed.py")
    assert done.returncode != 0
    assert "needs a comment above it" in done.stdout + done.stderr


def test_asks_for_integration():
    assert asks_for_integration("integration") and asks_for_integration("integration and not slow")
    assert not asks_for_integration("") and not asks_for_integration("not integration")
    assert not asks_for_integration("slow") and not asks_for_integration("not slow")


def test_the_repository_allowlist():
    """Environmental reasons of this suite are listed; a package of the [test] extra missing is not."""
    patterns = load_skip_allowlist()

    def allowed(reason: str) -> bool:
        return any(pattern.fullmatch(reason) for pattern in patterns)

    for reason in [
        "needs a CUDA device",
        "no chromium on this machine (apt install chromium)",
        "needs unshare -rn (network namespaces)",
        "fork_bomb needs a PID namespace; the sandbox's isolation here is socket-block",
        "background_process needs a PID namespace; the sandbox's isolation here is unshare-net",
        "file-system isolation needs Landlock",
        "the kernel has no Landlock",
        "llama-cpp-python[server] is not installed",
        "models not prepared (smollm2, qwen-coder): python scripts/local_llm.py prepare",
    ]:
        assert allowed(reason), reason
    for reason in [
        "ultralytics is not installed",
        "ultralytics is not installed (pip install 'archsmith[detection]')",
        "could not import 'ray': No module named 'ray'",
        "could not import 'playwright.sync_api': No module named 'playwright'",
        "MLflow is not installed: pip install 'archsmith[tracking]'",
        "CUDA is available here",
        "needs a CUDA device, and also the feature broke",
    ]:
        assert not allowed(reason), reason
