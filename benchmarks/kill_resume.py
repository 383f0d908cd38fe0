"""Crash safety: SIGKILL a run at random points, resume it, check that nothing was lost or done twice.

Usage::

    python benchmarks/kill_resume.py [--trials 50] [--seed 0] [--table CSV] [--candidates 40]

Each trial starts ``archsmith run`` as a subprocess on the NAS-Bench-201 space with the tabular
evaluator (no sandbox, so a trial takes seconds), kills it with SIGKILL at a random point, then runs
``archsmith resume RUN`` until the run finishes (in 30 % of the trials the first resume is killed
too), and checks the invariants of :func:`check_run`. Kill points, drawn with a seeded
``random.Random``:

* ``time``: a random delay after the run directory appears (from before the first checkpoint to
  the end of the run);
* ``history``: as soon as history.jsonl holds N records (between generations);
* ``commit``: inside the K-th SQLite transaction of the checkpointer, after its statements ran and
  before its commit;
* ``checkpoint``: just before the checkpoint of step S is written, after the writes of that step's
  tasks were saved.

The last two wrap ``SqliteSaver`` in the launched process only (``python -c``); nothing in the
product reads a hook. Right after each kill, history.jsonl must not be ahead of the last checkpoint;
after the resume: ``search.max_candidates`` valid records, ids unique, history.jsonl equal to the
final checkpoint's history, each valid record's result.json holding its score, best/ in sync, the
records seen at the kill unchanged, no process of a killed run alive 5 s later, and no candidate
evaluated twice.

"Evaluated twice" means two *finished* score computations for one candidate id: the trace records an
evaluate step with ``tools["score"]`` only once a score was computed (a reused score is recorded as
"reused the score saved by an earlier session"), and a computation cut off by the kill leaves no
step and no saved score, so computing it again in the next session is its first evaluation.

The table prints kill points tried, resumed runs that satisfy every invariant, failures by kind,
and the mean wall time of the final ``archsmith resume`` (process start included).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archsmith.tools.tabular import builtin_table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = builtin_table("nasbench201-cifar10")  # shipped in the package (gzip)
CLI = "from archsmith.graph.cli import main; main()"
# Launchers that wrap the checkpointer in the launched process only (the product reads no hook).
# KILL_AT_COMMIT: SIGKILL inside the K-th SQLite transaction of the checkpointer, after its
# statements ran and before its commit; with K = 0 it only counts them and prints the count at exit.
KILL_AT_COMMIT = """
import atexit, contextlib, os, signal, sys
from langgraph.checkpoint.sqlite import SqliteSaver
_kill_at, _count, _original = int(sys.argv.pop(1)), [0], SqliteSaver.cursor
atexit.register(lambda: print(f"checkpoint transactions: {_count[0]}", file=sys.stderr))
@contextlib.contextmanager
def _cursor(self, transaction=True):
    with _original(self, transaction) as cur:
        yield cur
        if transaction:
            _count[0] += 1
            if _count[0] == _kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
SqliteSaver.cursor = _cursor
""" + CLI
# KILL_BEFORE_CHECKPOINT: SIGKILL just before the search graph's checkpoint of step S is written
# (the writes of that step's tasks are saved, the checkpoint that applies them is not).
KILL_BEFORE_CHECKPOINT = """
import os, signal, sys
from langgraph.checkpoint.sqlite import SqliteSaver
_step, _original = int(sys.argv.pop(1)), SqliteSaver.put
def _put(self, config, checkpoint, metadata, new_versions):
    if metadata.get("step") == _step and not config["configurable"].get("checkpoint_ns"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _original(self, config, checkpoint, metadata, new_versions)
SqliteSaver.put = _put
""" + CLI


def tabular_overrides(runs_dir: Path, table: Path, candidates: int = 40, workers: int = 2) -> list[str]:
    return [
        f"runs_dir='{runs_dir}'", "space.name=nb201", "evaluator.name=tabular",
        f"evaluator.tabular.path='{table}'", f"search.max_candidates={candidates}",
        f"parallel.workers={workers}",
    ]  # fmt: skip


def template_overrides(runs_dir: Path, candidates: int = 12) -> list[str]:
    """The sandboxed template space with a small Zen-score batch (about 0.1 s per candidate)."""
    return [
        f"runs_dir='{runs_dir}'", f"search.max_candidates={candidates}", "parallel.workers=2",
        "evaluator.preset=custom", "evaluator.batch_size=8",
    ]  # fmt: skip


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def _launch(command: str, args: list[str], log: Path, kill: tuple[str, int] | None) -> subprocess.Popen:
    code = [CLI]
    if kill is not None:
        code = [{"commit": KILL_AT_COMMIT, "checkpoint": KILL_BEFORE_CHECKPOINT}[kill[0]], str(kill[1])]
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-c", *code, command, *args],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def start_run(overrides: list[str], log: Path, kill: tuple[str, int] | None = None) -> subprocess.Popen:
    """``archsmith run`` in a subprocess; ``kill``: ("commit", K) or ("checkpoint", S), see above."""
    return _launch("run", _sets(overrides), log, kill)


def start_resume(run_dir: Path, log: Path, kill: tuple[str, int] | None = None) -> subprocess.Popen:
    return _launch("resume", [str(run_dir)], log, kill)


def wait_for(condition: Callable[[], Any], proc: subprocess.Popen | None = None, timeout_s: float = 60.0) -> Any:
    """Poll ``condition`` until it is truthy; None when ``proc`` ends or the time is up first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            return condition() or None
        time.sleep(0.005)
    return None


def run_dir_in(runs_dir: Path) -> Path | None:
    """The run directory under ``runs_dir`` once it has its config (what `archsmith resume` needs)."""
    found = [p for p in runs_dir.glob("*/config.toml")] if runs_dir.is_dir() else []
    return found[0].parent if found else None


def history_lines(run_dir: Path) -> int:
    try:
        return sum(1 for line in (run_dir / "history.jsonl").read_text("utf-8").splitlines() if line)
    except OSError:
        return 0


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


STEPS_QUERY = "SELECT node, candidate_id, decision, tools, session FROM steps ORDER BY id"


def trace_steps(run_dir: Path, query: str = STEPS_QUERY) -> list[tuple]:
    path = run_dir / "trace.sqlite"
    if not path.is_file():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(query).fetchall()
    except sqlite3.OperationalError:  # no steps table yet
        return []
    finally:
        conn.close()


def evaluation_in_flight(run_dir: Path) -> str | None:
    """A candidate the verifier sent to evaluation whose evaluate step is not recorded yet."""
    sent, done = set(), set()
    for node, cid, decision, _, _ in trace_steps(run_dir):
        if node == "verifier" and decision == "evaluate":
            sent.add(cid)
        elif node in ("evaluate", "discard"):
            done.add(cid)
    pending = sorted(sent - done)
    return pending[0] if pending else None


# -- processes ------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """The processes among ``pids`` still running (zombies waiting to be reaped are gone)."""
    return {pid for pid in pids if (stat := _stat(pid)) is not None and stat[1] != "Z"}


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")[:-1]
    except OSError:
        return []


def sandbox_tasks(pid: int) -> set[int]:
    """Task processes running below ``pid``: children of a sandbox zygote (not of `unshare`)."""
    below = descendants(pid)
    zygotes = {
        p for p in below
        if (argv := _argv(p))[-2:] == ["-m", "archsmith.tools.sandbox_worker"] and "unshare" not in Path(argv[0]).name
    }  # fmt: skip
    return {p for p in below if (stat := _stat(p)) is not None and stat[0] in zygotes and stat[1] != "Z"}


def kill_hard(proc: subprocess.Popen) -> set[int]:
    """SIGKILL the process alone (as a crash would); returns the descendants it had."""
    below = descendants(proc.pid)
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return below


def survivors(pids: set[int], within_s: float) -> set[int]:
    """The processes still running ``within_s`` seconds later (checked every 50 ms)."""
    deadline = time.monotonic() + within_s
    while (left := alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def describe(pids: set[int]) -> str:
    """One line per process: pid, parent, state, kernel wait channel and command line (for failures)."""
    lines = []
    for pid in sorted(pids):
        stat = _stat(pid)
        try:
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            wchan = "?"
        lines.append(f"{pid} parent={stat[0] if stat else '?'} state={stat[1] if stat else 'gone'} "
                     f"wchan={wchan} {' '.join(_argv(pid))[:200]}")
    return "\n".join(lines)


def kill_leftovers(pids: set[int]) -> None:
    for pid in alive(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- invariants -----------------------------------------------------------------------------------


def checkpointed_state(run_dir: Path) -> dict[str, Any]:
    """The search state of the run's last checkpoint, read with the run's state schema."""
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    from archsmith.graph.run import THREAD_ID
    from archsmith.graph.state import SearchState

    graph = StateGraph(SearchState)  # the run's channels; nodes that do nothing, named like the run's
    for name in ("navigator", "child", "archive"):
        graph.add_node(name, lambda state: {})
    graph.add_edge(START, "navigator")
    graph.add_edge("navigator", "child")
    graph.add_edge("child", "archive")
    graph.add_edge("archive", END)
    conn = sqlite3.connect(run_dir / "trace.sqlite", check_same_thread=False, timeout=30)
    try:
        snapshot = graph.compile(checkpointer=SqliteSaver(conn)).get_state({"configurable": {"thread_id": THREAD_ID}})
        return dict(snapshot.values or {})
    finally:
        conn.close()


def history_ahead_of_checkpoint(run_dir: Path) -> str | None:
    """Whether history.jsonl holds records the last checkpoint lacks (a file from a lost state)."""
    seen = read_history(run_dir)
    if not seen:
        return None
    checkpointed = list(checkpointed_state(run_dir).get("history") or [])
    if checkpointed[: len(seen)] != seen:
        return f"history.jsonl has {len(seen)} records, the checkpoint {len(checkpointed)} (or others)"
    return None


def fresh_scores(run_dir: Path) -> Counter:
    """Finished score computations per candidate id, over every session of the run."""
    counts: Counter = Counter()
    for node, cid, _, tools, _ in trace_steps(run_dir):
        if node == "evaluate" and "score" in json.loads(tools or "{}"):
            counts[cid] += 1
    return counts


def check_run(run_dir: Path, expected_valid: int, seen: list[dict[str, Any]] | None = None) -> list[tuple[str, str]]:
    """Every broken invariant of a finished run, as (kind, detail); empty when all hold.

    ``seen``: history.jsonl as it was at a kill; those records must survive unchanged, in order.
    """
    failures: list[tuple[str, str]] = []
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        return [("unfinished", "no summary.json")]
    state = checkpointed_state(run_dir)
    history = list(state.get("history") or [])
    if not state.get("stop_reason"):
        failures.append(("unfinished", "the last checkpoint has no stop reason"))
    on_disk = read_history(run_dir)
    if on_disk != history:
        failures.append(("history-vs-checkpoint",
                         f"history.jsonl has {len(on_disk)} records, the checkpoint {len(history)}"))
    ids = [r.get("id") for r in history]
    if len(ids) != len(set(ids)):
        failures.append(("duplicate-id", str(sorted(i for i, n in Counter(ids).items() if n > 1))))
    valid = [r for r in history if r.get("status") == "valid"]
    if len(valid) != expected_valid:
        failures.append(("valid-count", f"{len(valid)} valid records, expected {expected_valid}"))
    canonicals = Counter(r.get("canonical") for r in valid)
    if any(n > 1 for n in canonicals.values()):
        failures.append(("duplicate-architecture", str([c for c, n in canonicals.items() if n > 1][:3])))
    for record in valid:
        path = run_dir / "candidates" / record["id"] / "result.json"
        try:
            saved = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            failures.append(("result-json", f"{record['id']}: {exc}"))
            continue
        if saved.get("score") != record.get("score") or saved.get("text") != record.get("text"):
            failures.append(("result-json", f"{record['id']}: saved {saved.get('score')} vs {record.get('score')}"))
    twice = {cid: n for cid, n in fresh_scores(run_dir).items() if n > 1}
    if twice:
        failures.append(("evaluated-twice", str(twice)))
    if seen and history[: len(seen)] != seen:
        lost = [r["id"] for r in seen if r not in history]
        failures.append(("record-lost-or-changed", f"{len(lost)} records seen before the kill changed: {lost[:5]}"))
    best = max(valid, key=lambda r: r["score"]) if valid else None
    try:
        saved_best = json.loads((run_dir / "best" / "result.json").read_text("utf-8"))
    except (OSError, ValueError):
        saved_best = None
    if best is not None and saved_best != best:
        held = saved_best and saved_best.get("id")
        failures.append(("best-out-of-sync", f"best/ holds {held}, the history's best is {best['id']}"))
    summary = json.loads(summary_path.read_text("utf-8"))
    if summary.get("counts", {}).get("valid") != len(valid):
        failures.append(("summary", f"summary counts {summary.get('counts')}"))
    return failures


# -- one trial ------------------------------------------------------------------------------------


@dataclass
class Trial:
    mode: str
    point: str
    failures: list[tuple[str, str]] = field(default_factory=list)
    resume_s: float = 0.0
    kills: int = 0


def resume_to_end(run_dir: Path, log: Path, timeout_s: float = 120.0) -> tuple[int, float]:
    started = time.monotonic()
    proc = start_resume(run_dir, log)
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_hard(proc)
        code = -9
    return code, time.monotonic() - started


def sessions(run_dir: Path) -> int:
    return len(trace_steps(run_dir, "SELECT session FROM sessions"))


@dataclass
class Reference:
    """An uninterrupted run: the ranges the kill points are drawn from."""

    seconds: float  # from the run directory's appearance to the end
    commits: int  # SQLite transactions of the checkpointer
    steps: int  # checkpoints of the search graph


def reference_run(work: Path, overrides: Callable[[Path], list[str]]) -> Reference:
    runs_dir, log = work / "runs", work / "log.txt"
    proc = start_run(overrides(runs_dir), log, ("commit", 0))
    run_dir = wait_for(lambda: run_dir_in(runs_dir), proc)
    began = time.monotonic()
    if proc.wait(timeout=300) != 0 or run_dir is None:
        sys.exit(f"the reference run failed: {log.read_text()[-2000:]}")
    elapsed = time.monotonic() - began
    counted = [line for line in log.read_text().splitlines() if line.startswith("checkpoint transactions:")]
    ((steps,),) = trace_steps(run_dir, "SELECT COUNT(*) FROM checkpoints WHERE checkpoint_ns = ''")
    return Reference(elapsed, int(counted[-1].split(":")[1]), int(steps))


def _kill_point(rng: random.Random, proc: subprocess.Popen, run_dir: Path | None, mode: str,
                reference: Reference, expected: int) -> str:
    """Wait for the kill point of ``mode`` (the process may kill itself); returns its description."""
    if mode == "time":
        delay = rng.uniform(0.0, reference.seconds)
        if run_dir is not None and proc.poll() is None:
            time.sleep(delay)
        return f"{delay:.2f} s"
    if mode == "history":
        lines = rng.randint(1, expected)
        if run_dir is not None:
            wait_for(lambda: history_lines(run_dir) >= lines, proc)
        return f"{lines} records"
    proc.wait(timeout=120)
    return ""


def trial(rng: random.Random, work: Path, overrides: Callable[[Path], list[str]], expected: int,
          reference: Reference) -> Trial:
    """One run -> SIGKILL -> (resume -> SIGKILL)? -> resume, then the invariants."""
    runs_dir, log = work / "runs", work / "log.txt"
    mode = rng.choice(["time", "history", "commit", "checkpoint"])
    kill = None
    if mode == "commit":
        kill = ("commit", rng.randint(1, reference.commits))
    elif mode == "checkpoint":
        kill = ("checkpoint", rng.randint(-1, reference.steps - 2))
    proc = start_run(overrides(runs_dir), log, kill)
    run_dir = wait_for(lambda: run_dir_in(runs_dir), proc)
    point = _kill_point(rng, proc, run_dir, mode, reference, expected)
    result = Trial(mode, f"{kill[0]} {kill[1]}" if kill else point)
    if proc.poll() is None:
        below = kill_hard(proc)
        result.kills += 1
        if left := survivors(below, 5.0):
            result.failures.append(("leftover-process", str(sorted(left))))
            kill_leftovers(left)
    elif proc.returncode == -signal.SIGKILL:
        result.kills += 1
    else:
        result.point += " (finished first)"
    run_dir = run_dir or run_dir_in(runs_dir)
    if run_dir is None:
        result.failures.append(("no-run-dir", "killed before the run directory existed"))
        return result
    seen = read_history(run_dir)
    if ahead := history_ahead_of_checkpoint(run_dir):
        result.failures.append(("history-ahead-of-checkpoint", ahead))
    if rng.random() < 0.3:  # kill the resume too: inside a commit, or some time after it starts
        by_commit = rng.random() < 0.5
        kill = ("commit", rng.randint(1, 60)) if by_commit else None
        before = sessions(run_dir)
        proc = start_resume(run_dir, log, kill)
        if by_commit:
            proc.wait(timeout=120)
        elif wait_for(lambda: sessions(run_dir) > before, proc):
            time.sleep(rng.uniform(0.0, reference.seconds / 2))
        if proc.poll() is None:
            kill_hard(proc)
        if proc.returncode == -signal.SIGKILL:
            result.kills += 1
            result.point += " + resume killed"
        seen = read_history(run_dir)
    code, result.resume_s = resume_to_end(run_dir, log)
    if code != 0:
        result.failures.append(("resume-failed", f"exit code {code}: {log.read_text()[-400:]!r}"))
        return result
    result.failures += check_run(run_dir, expected, seen)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--work", type=Path, default=None, help="where to keep the runs (default: a temp dir)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if not args.table.is_file():
        sys.exit(f"no tabular benchmark at {args.table}")
    import tempfile

    base = args.work or Path(tempfile.mkdtemp(prefix="archsmith-kill-"))
    base.mkdir(parents=True, exist_ok=True)

    def overrides(runs_dir: Path) -> list[str]:
        return tabular_overrides(runs_dir, args.table.resolve(), args.candidates)

    (base / "reference").mkdir()
    reference = reference_run(base / "reference", overrides)
    print(f"reference run: {reference.seconds:.1f} s, {reference.steps} checkpoints, "
          f"{reference.commits} checkpointer transactions; work dir {base}")
    rng = random.Random(args.seed)
    trials: list[Trial] = []
    for index in range(args.trials):
        work = base / f"trial-{index:03d}"
        work.mkdir()
        result = trial(rng, work, overrides, args.candidates, reference)
        trials.append(result)
        if args.verbose or result.failures:
            status = "ok" if not result.failures else "; ".join(f"{k}: {d}" for k, d in result.failures)
            print(f"  trial {index:3d} {result.mode:8s} {result.point:32s} {status}")
    correct = sum(1 for t in trials if not t.failures)
    kinds = Counter(kind for t in trials for kind, _ in t.failures)
    modes = Counter(t.mode for t in trials)
    resumed = [t.resume_s for t in trials if t.resume_s]
    print()
    print(f"{'kill points tried':32s} {len(trials)} ({', '.join(f'{m} {n}' for m, n in sorted(modes.items()))}; "
          f"{sum(t.kills for t in trials)} SIGKILLs, {sum(1 for t in trials if t.kills > 1)} resumes killed too)")
    print(f"{'resumed runs correct':32s} {correct}/{len(trials)} ({100.0 * correct / max(1, len(trials)):.0f} %)")
    print(f"{'failures by kind':32s} {dict(kinds) if kinds else 'none'}")
    print(f"{'mean resume time':32s} {sum(resumed) / max(1, len(resumed)):.2f} s (process start included)")


if __name__ == "__main__":
    main()
