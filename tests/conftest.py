"""Shared fixtures, and the skip allow-list. Tests run on the CPU with no network; os.environ
changes only via monkeypatch.

Skip allow-list: every skip (a ``skip``/``skipif`` mark, a runtime ``pytest.skip``, an
``importorskip``, a module skipped at collection) is recorded with its reason, and at the end of
the session any reason that no entry of ``tests/skip_allowlist.txt`` matches (an entry is a
regular expression matched against the whole reason, the ``Skipped: `` prefix removed) is printed
under "skips outside the allow-list" and the session exits non-zero (1), so that a feature
cannot silently stop being tested. The list holds only environmental reasons that legitimately
differ between machines (no CUDA device, no chromium, kernel features); a package of the
``[test]`` extra missing is never one. Deselected tests (``-m``, ``-k``) are not skips.

The integration tier (tests marked ``integration``) may skip in a plain ``pytest`` run (no
llama-cpp-python server installed yet: CI installs it afterwards). Once the tier is asked for by
``-m`` (``pytest -m integration``), a skip of one of its tests is never allowed, whatever its reason.

Escape hatch, for local use only (CI must not set it): ``ARCHSMITH_ALLOW_ANY_SKIP=1`` still prints
the unlisted skips but leaves the exit status alone.

This file imports only the standard library and pytest at the top: tests/test_skip_allowlist.py
runs a copy of it on generated test files.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # test helper modules (toy_space, sandbox_tasks)
    sys.path.insert(0, str(TESTS_DIR))

# -- the skip allow-list ---------------------------------------------------------------------------

SKIP_ALLOWLIST = TESTS_DIR / "skip_allowlist.txt"
ALLOW_ANY_SKIP_ENV = "ARCHSMITH_ALLOW_ANY_SKIP"
INTEGRATION_MARK = "integration"


def load_skip_allowlist(path: Path = SKIP_ALLOWLIST) -> list[re.Pattern[str]]:
    """The allow-list's patterns. Lines starting with ``#`` are comments; blank lines end a group;
    each pattern must come right after a comment (or another pattern under one) saying why."""
    patterns: list[re.Pattern[str]] = []
    explained = False
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        text = line.strip()
        if not text:
            explained = False
        elif text.startswith("#"):
            explained = True
        elif not explained:
            raise pytest.UsageError(f"{path}:{number}: an allow-list entry needs a comment above it saying why")
        else:
            try:
                patterns.append(re.compile(text))
            except re.error as error:
                raise pytest.UsageError(f"{path}:{number}: not a regular expression ({error}): {text}") from None
    return patterns


def skip_reason(longrepr: object) -> str:
    """The reason of a skipped report, without pytest's ``Skipped: `` prefix."""
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return str(reason).removeprefix("Skipped: ")


def asks_for_integration(markexpr: str) -> bool:
    """Whether ``-m`` asks for the integration tier: it selects a test marked ``integration`` and
    not an unmarked one (``-m integration``, ``-m "integration and not gpu"``)."""
    if not markexpr.strip():
        return False
    try:
        from _pytest.mark.expression import Expression

        expression = Expression.compile(markexpr)
        return expression.evaluate(lambda name, **_: name == INTEGRATION_MARK) and not expression.evaluate(
            lambda name, **_: False
        )
    except Exception:  # noqa: BLE001 - a pytest without this API: read the words
        return re.search(rf"(?<!not )\b{INTEGRATION_MARK}\b", markexpr) is not None


class SkipAllowList:
    """A plugin that records every skip and, at the end, fails the session on unlisted ones."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.skips: list[tuple[str, str, bool]] = []  # (node id, reason, a test of the integration tier)

    def _record(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            integration = INTEGRATION_MARK in getattr(report, "keywords", {})  # a CollectReport has none
            self.skips.append((report.nodeid, skip_reason(report.longrepr), integration))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def unlisted(self) -> list[tuple[str, str]]:
        """(node id, reason) of each skip that is not allowed."""
        if not self.skips:
            return []
        patterns = load_skip_allowlist()
        tier_asked = asks_for_integration(self.config.getoption("markexpr", "") or "")
        refused = []
        for nodeid, reason, integration in self.skips:
            if integration and tier_asked:
                refused.append((nodeid, f"{reason} [the integration tier was asked for with -m: it must run]"))
            elif not any(pattern.fullmatch(reason) for pattern in patterns):
                refused.append((nodeid, reason))
        return refused

    @staticmethod
    def allow_any() -> bool:
        return os.environ.get(ALLOW_ANY_SKIP_ENV) == "1"

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.refused = self.unlisted()
        if self.refused and not self.allow_any():
            if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        refused = getattr(self, "refused", None)
        if refused is None:
            refused = self.unlisted()
        if not refused:
            return
        allowed = self.allow_any()
        terminalreporter.section("skips outside the allow-list", sep="=", red=not allowed, yellow=allowed, bold=True)
        for nodeid, reason in refused:
            terminalreporter.line(f"{nodeid}: {reason}")
        listed = SKIP_ALLOWLIST.relative_to(TESTS_DIR.parent)
        terminalreporter.line(
            f"{len(refused)} skip(s) outside {listed}: "
            + (f"{ALLOW_ANY_SKIP_ENV}=1, so the session does not fail" if allowed else
               "the session fails. Make the test run here, or list an environmental reason with a comment saying why")
        )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipAllowList(config), "archsmith-skip-allowlist")


@pytest.fixture(scope="session", autouse=True)
def ultralytics_offline(tmp_path_factory):
    """ultralytics probes DNS when first imported unless YOLO_OFFLINE is set: set for every test,
    whatever the order, with its settings in a directory of the session's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_OFFLINE", "1")
        patch.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-config")))
        yield


@pytest.fixture(scope="session")
def ultralytics_env(ultralytics_offline):
    """Offline ultralytics with its font in place; skips where ultralytics is not installed."""
    import importlib.util

    if importlib.util.find_spec("ultralytics") is None:  # importorskip would import it too early
        pytest.skip("ultralytics is not installed (pip install 'archsmith[detection]')")
    from archsmith.tools.detection import prepare_ultralytics

    config = prepare_ultralytics()
    assert (config / "Arial.ttf").is_file()
    return config


@pytest.fixture
def no_network(monkeypatch):
    """Name lookups and connections are recorded and refused (tests assert there are none)."""
    import socket

    attempts: list[str] = []

    def refuse(name: str):
        def blocked(*args, **kwargs):
            attempts.append(f"{name}{args[1:2] if name == 'connect' else args[:1]}")
            raise OSError(f"network access attempted in a test: {name}")

        return blocked

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    return attempts


@pytest.fixture(autouse=True)
def private_data_dir(tmp_path, monkeypatch):
    """Every test gets its own per-user data directory (the default idea store lives there)."""
    monkeypatch.setenv("ARCHSMITH_DATA_DIR", str(tmp_path / "archsmith-data"))
    return tmp_path / "archsmith-data"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small CPU models: one thread is fastest and immune to oversubscription on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy_config(tmp_path):
    """A fast config on the toy space, run in-process, one child at a time (deterministic)."""
    import toy_space  # noqa: F401  (registers the "toy" space)

    from archsmith.graph.config import config_from_dict

    def make(**sections):
        data = {
            "name": "toy",
            "runs_dir": str(tmp_path / "runs"),
            "space": {"name": "toy"},
            "budget": {"params_m": 0.02, "input_size": 8, "num_classes": 4},
            "evaluator": {"preset": "custom", "batch_size": 4, "repeats": 1},
            "search": {"max_candidates": 4, "children_per_generation": 1},
            "parallel": {"workers": 1},
            "sandbox": {"mode": "inprocess"},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return config_from_dict(data)

    return make
