"""Crash safety: a run killed with SIGKILL anywhere resumes (`archsmith resume`) to a whole result.

Each test starts `archsmith run` as a subprocess, kills it (between candidates, inside a
checkpoint write, inside a sandboxed evaluation), resumes it and checks the invariants of
``benchmarks/kill_resume.py:check_run``: exactly ``search.max_candidates`` valid records, ids
unique, history.jsonl equal to the final checkpoint's history and never ahead of the checkpoint at
the kill, each valid record's result.json holding its score, best/ in sync, nothing seen before
the kill lost or changed, and no candidate evaluated twice.

"Evaluated twice" counts *finished* score computations: the trace's evaluate step carries
``tools["score"]`` only when it computed a score, and the score is saved (result.json) before that
step is recorded. A computation cut off by the kill left neither, so computing it in the next
session is its first evaluation, not a second one.
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

import archsmith
from archsmith.graph.paths import RunInUseError, RunPaths
from archsmith.tools.tabular import builtin_table

ROOT = Path(__file__).resolve().parents[1]
TABLE = builtin_table("nasbench201-cifar10")  # shipped in the package
CANDIDATES = 24
TESTS_DIR = str(Path(__file__).resolve().parent)


def _load_harness():
    spec = importlib.util.spec_from_file_location("kill_resume", ROOT / "benchmarks" / "kill_resume.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("kill_resume", module)
    spec.loader.exec_module(module)
    return module


kr = _load_harness()


def tabular(runs_dir: Path) -> list[str]:
    return kr.tabular_overrides(runs_dir, TABLE, CANDIDATES)


def kill_and_check(proc: subprocess.Popen, run_dir: Path) -> list[dict]:
    """SIGKILL the run (unless it killed itself); no process of it may survive; returns history.jsonl."""
    below = kr.kill_hard(proc) if proc.poll() is None else set()
    assert proc.returncode == -9, "the run ended before the kill point"
    left = kr.survivors(below, 5.0)
    assert left == set(), "processes of the killed run survived it:\n" + kr.describe(left)
    assert kr.history_ahead_of_checkpoint(run_dir) is None
    return kr.read_history(run_dir)


def resume_and_check(run_dir: Path, log: Path, expected: int, seen: list[dict]) -> None:
    code, _ = kr.resume_to_end(run_dir, log)
    assert code == 0, log.read_text()[-3000:]
    assert kr.check_run(run_dir, expected, seen) == []


def test_killed_between_candidates(tmp_path):
    log = tmp_path / "log.txt"
    proc = kr.start_run(tabular(tmp_path / "runs"), log)
    run_dir = kr.wait_for(lambda: kr.run_dir_in(tmp_path / "runs"), proc)
    assert run_dir is not None, log.read_text()
    assert kr.wait_for(lambda: kr.history_lines(run_dir) >= 9, proc), log.read_text()[-3000:]
    seen = kill_and_check(proc, run_dir)
    assert len(seen) >= 9
    resume_and_check(run_dir, log, CANDIDATES, seen)


# Kill points inside the checkpointer, set in the launched process only (see kill_resume.py):
# ("checkpoint", S) kills just before the search graph's checkpoint of step S is written, after the
# writes of that step's tasks were saved. Steps: -1 the input (nothing checkpointed yet: the resume
# starts from scratch), 1 + 3k a navigator, 2 + 3k the children, 3 + 3k an archive (history.jsonl
# already written). ("commit", K) kills inside the K-th SQLite transaction, before its commit.
@pytest.mark.parametrize(
    "kill",
    [
        ("checkpoint", -1),
        ("checkpoint", 4),
        ("commit", 150),
        pytest.param(("checkpoint", 5), marks=pytest.mark.slow),
        pytest.param(("checkpoint", 6), marks=pytest.mark.slow),
        pytest.param(("commit", 1), marks=pytest.mark.slow),
    ],
    ids=lambda kill: f"{kill[0]}-{kill[1]}",
)
def test_killed_inside_a_checkpoint_write(tmp_path, kill):
    log = tmp_path / "log.txt"
    proc = kr.start_run(tabular(tmp_path / "runs"), log, kill)
    proc.wait(timeout=120)
    run_dir = kr.run_dir_in(tmp_path / "runs")
    assert run_dir is not None, log.read_text()
    seen = kill_and_check(proc, run_dir)
    resume_and_check(run_dir, log, CANDIDATES, seen)


def test_a_killed_resume_resumes_again(tmp_path):
    log = tmp_path / "log.txt"
    proc = kr.start_run(tabular(tmp_path / "runs"), log, ("checkpoint", 4))
    proc.wait(timeout=120)
    run_dir = kr.run_dir_in(tmp_path / "runs")
    kill_and_check(proc, run_dir)
    proc = kr.start_resume(run_dir, log, ("commit", 40))
    proc.wait(timeout=120)
    seen = kill_and_check(proc, run_dir)
    resume_and_check(run_dir, log, CANDIDATES, seen)
    sessions = kr.trace_steps(run_dir, "SELECT kind FROM sessions ORDER BY session")
    assert [kind for (kind,) in sessions] == ["run", "resume", "resume"]


@pytest.mark.slow
def test_random_kill_points(tmp_path):
    reference = kr.reference_run(_mkdir(tmp_path / "reference"), tabular)
    rng = random.Random(7)
    for index in range(3):
        result = kr.trial(rng, _mkdir(tmp_path / f"trial-{index}"), tabular, CANDIDATES, reference)
        assert result.failures == [], f"{result.mode} {result.point}"


@pytest.mark.slow
def test_killed_inside_a_sandboxed_evaluation(tmp_path):
    """The template space scored in the sandbox: killed while a candidate's score is computed."""
    log = tmp_path / "log.txt"
    overrides = kr.template_overrides(tmp_path / "runs", 12) + ["evaluator.repeats=6"]
    proc = kr.start_run(overrides, log)
    run_dir = kr.wait_for(lambda: kr.run_dir_in(tmp_path / "runs"), proc)
    assert run_dir is not None, log.read_text()
    in_flight = kr.wait_for(
        lambda: kr.evaluation_in_flight(run_dir) if kr.sandbox_tasks(proc.pid) else None, proc, timeout_s=120
    )
    assert in_flight, log.read_text()[-3000:]
    seen = kill_and_check(proc, run_dir)
    resume_and_check(run_dir, log, 12, seen)
    # the evaluation cut off by the kill was computed at most once over both sessions (none when
    # its score was saved just before the kill and the trace step was not: the resume reused it)
    assert kr.fresh_scores(run_dir)[in_flight] <= 1


SANDBOX_PARENT = """
import sys
from archsmith.tools.sandbox import Sandbox, SandboxLimits
box = Sandbox(SandboxLimits(timeout_s=120), 1, python_path=[sys.argv[1]], preload=(), isolation=sys.argv[2])
box.run("sandbox_tasks:nap", {"seconds": 120})
"""


@pytest.mark.parametrize("isolation", ["auto", "socket-block"])
def test_sandbox_workers_die_with_their_parent_mid_task(isolation):
    proc = subprocess.Popen([sys.executable, "-c", SANDBOX_PARENT, TESTS_DIR, isolation])
    try:
        assert kr.wait_for(lambda: kr.sandbox_tasks(proc.pid), proc, timeout_s=60), "no task started"
        below = kr.kill_hard(proc)
        started = time.monotonic()
        assert kr.survivors(below, 5.0) == set()
        assert time.monotonic() - started < 5.0
    finally:
        if proc.poll() is None:
            kr.kill_leftovers(kr.descendants(proc.pid) | {proc.pid})


def test_a_run_in_use_cannot_be_resumed_twice(toy_config):
    config = toy_config(search={"max_candidates": 2})
    result = archsmith.run(config)
    paths = RunPaths.existing(result.run_dir)
    stale = paths.candidate("c0001") / ".result.json.999999.tmp"
    stale.write_text("{")
    assert not paths.in_use()
    with paths.lock():
        assert paths.in_use()  # the probe `archsmith trace --follow` uses to see a run end
        with pytest.raises(RunInUseError):
            archsmith.resume(result.run_dir)
    assert not stale.exists()  # removed by the lock's holder: a killed session's unfinished write
    assert archsmith.resume(result.run_dir).counts == result.counts


class Interrupt(Exception):
    pass


def test_a_resume_announces_the_records_history_jsonl_lacks(toy_config):
    """The CLI counts history.jsonl as done and the resume announces the rest, each once."""
    config = toy_config(search={"max_candidates": 4, "children_per_generation": 2})
    announced: list[str] = []

    def stop_in_second_generation(record):
        if record["generation"] == 2:
            raise Interrupt
        announced.append(record["id"])

    with pytest.raises(Interrupt):
        archsmith.run(config, on_record=stop_in_second_generation)
    (run_dir,) = Path(config.runs_dir).iterdir()
    done = [record["id"] for record in kr.read_history(run_dir)]
    assert done == announced  # the archive of generation 2 wrote nothing
    result = archsmith.resume(run_dir, on_record=lambda record: announced.append(record["id"]))
    assert announced == [record["id"] for record in result.history]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
