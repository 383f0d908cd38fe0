"""The hostile-candidate corpus (tests/data/hostile/*.py): each file must come back as a classified
failure, through `archsmith check FILE` and inside a run, while nothing outside the sandbox changes
and the run goes on.

Each file starts with ``# expect: ErrorType|OtherType`` (the classifications accepted) and may use
``{CANARY_DIR}`` and ``{PROJECT_FILE}``, filled in with paths of the test. HOME points at a
temporary home holding a secret the candidates must not read.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from typer.testing import CliRunner

import archsmith
from archsmith.graph.cli import app
from archsmith.tools.sandbox import detect_isolation
from archsmith.tools.sandbox_worker import landlock_abi
from archsmith.tools.spaces.code import builtin_base_source

pytestmark = pytest.mark.slow
CORPUS = sorted((Path(__file__).parent / "data" / "hostile").glob("*.py"))
NEEDS_LANDLOCK = {"write_outside", "delete_outside", "overwrite_project", "read_home"}
# Only a PID namespace lets the sandbox kill everything these leave behind: without one a fork bomb
# runs on the host (as root RLIMIT_NPROC is not enforced) and a setsid grandchild escapes the kill.
NEEDS_PID_NAMESPACE = {"fork_bomb", "background_process"}
SANDBOX = ["--set", "sandbox.timeout_s=4", "--set", "evaluator.preset=custom", "--set", "evaluator.batch_size=4",
           "--set", "budget.input_size=16"]


class World:
    """Everything outside the sandbox a candidate might try to change, and how to check it."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.home.mkdir()
        (self.home / ".archsmith-test-secret").write_text("the secret", "utf-8")
        self.canary_dir = root / "canary"
        self.canary_dir.mkdir()
        (self.canary_dir / "canary.txt").write_text("alive", "utf-8")
        self.project_file = root / "project" / "module.py"
        self.project_file.parent.mkdir()
        self.project_file.write_text("VALUE = 1\n", "utf-8")
        self.cwd = os.getcwd()
        self.environ = dict(os.environ)

    def source(self, path: Path) -> tuple[str, set[str]]:
        text = path.read_text("utf-8")
        expected = set(text.splitlines()[0].removeprefix("# expect:").strip().split("|"))
        text = text.replace("{CANARY_DIR}", str(self.canary_dir)).replace("{PROJECT_FILE}", str(self.project_file))
        return text, expected

    def assert_untouched(self, name: str) -> None:
        assert (self.canary_dir / "canary.txt").read_text("utf-8") == "alive", name
        assert sorted(p.name for p in self.canary_dir.iterdir()) == ["canary.txt"], name
        assert self.project_file.read_text("utf-8") == "VALUE = 1\n", name
        assert os.getcwd() == self.cwd, name
        assert os.environ.get("ARCHSMITH_POISON") is None and os.environ.get("PATH") == self.environ.get("PATH"), name
        survivors = subprocess.run(["pgrep", "-f", "sleep 7654321"], capture_output=True, text=True).stdout.split()
        assert not survivors, f"{name}: background processes survived: {survivors}"


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    built = World(tmp_path)
    yield built
    subprocess.run(["pkill", "-f", "sleep 7654321"], capture_output=True)


@functools.cache
def sandbox_isolation() -> str:
    """The mechanism the sandbox starts its workers under here (``unshare-net-pid`` has a PID namespace)."""
    return detect_isolation()[1]


def runs_here(name: str) -> bool:
    return (name not in NEEDS_LANDLOCK or landlock_abi() >= 1) and (
        name not in NEEDS_PID_NAMESPACE or sandbox_isolation() == "unshare-net-pid")


def skip_without_isolation(name: str) -> None:
    """Skip (with an allow-listed reason) a candidate this machine's sandbox cannot contain."""
    if name in NEEDS_LANDLOCK and landlock_abi() < 1:
        pytest.skip("file-system isolation needs Landlock")
    if name in NEEDS_PID_NAMESPACE and (isolation := sandbox_isolation()) != "unshare-net-pid":
        pytest.skip(f"{name} needs a PID namespace; the sandbox's isolation here is {isolation}")


def test_the_corpus_has_at_least_twenty_candidates():
    assert len(CORPUS) >= 20


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_check_classifies_each_hostile_candidate(path, world, tmp_path):
    skip_without_isolation(path.stem)
    source, expected = world.source(path)
    candidate = tmp_path / f"{path.stem}.py"
    candidate.write_text(source, "utf-8")
    result = CliRunner().invoke(app, ["check", str(candidate), *SANDBOX])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) or result.exception is None  # no traceback wall
    flat = " ".join(result.output.split())
    assert any(kind in flat for kind in expected), f"{path.stem}: expected {expected} in:\n{result.output[-1500:]}"
    world.assert_untouched(path.stem)


def test_a_run_survives_the_whole_corpus(world, code_config_factory):
    entries = [(p.stem, *world.source(p)) for p in CORPUS if runs_here(p.stem)]
    answers = [f"```python\n{source}\n```" for _, source, _ in entries]
    answers.append(f"```python\n{builtin_base_source('resnet32').replace('(16, 32, 64)', '(16, 32, 48)')}\n```")
    config = code_config_factory(len(entries) + 1)
    result = archsmith.run(config, chat_models={"generator": GenericFakeChatModel(messages=iter(answers))})
    records = result.history
    assert len(records) == len(entries) + 1
    for (name, _, expected), record in zip(entries, records):
        assert record["status"] == "discarded", name
        assert any(kind in (record["discard_reason"] or "") for kind in expected), (name, record["discard_reason"])
    assert records[-1]["status"] == "valid"  # the run went on and evaluated a good child after all that
    world.assert_untouched("run")


@pytest.fixture
def code_config_factory(toy_config):
    def make(children: int):
        return toy_config(
            space={"name": "code", "settings": {"bases": ["resnet32"]}},
            budget={"params_m": 1.5, "input_size": 16, "num_classes": 10},
            search={"max_candidates": 1, "max_children": children, "children_per_generation": 1},
            parallel={"workers": 1},
            sandbox={"mode": "sandbox", "timeout_s": 4},
            workflow={"max_debug": 0},
            roles={"generator": {"policy": "llm", "fallback": "none"}},
        )

    return make
