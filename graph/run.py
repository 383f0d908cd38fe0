"""Run lifecycle: start a run, resume a stopped one, and summarise either.

``archsmith.run(config) -> RunResult`` is the library entry point; the CLI only calls it.
A run is a LangGraph thread checkpointed to ``runs/<id>/trace.sqlite`` after every step, and
synchronously: a step starts (and writes history.jsonl or best/) only once the state it reads is on
disk. So ``resume`` continues from the last checkpoint even after a SIGKILL; scores are also
cached per candidate on disk, so work done by a node that was interrupted before its checkpoint is
not repeated. One process at a time holds a run (``RunPaths.lock``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import StateSnapshot

from archsmith.agents.llm import ChatModelProvider
from archsmith.agents.prompts import PromptLoader
from archsmith.agents.servers import ManagedServer, ServerReport
from archsmith.graph.builder import build_search_graph, validate_workflow
from archsmith.graph.config import ArchsmithConfig, load_config
from archsmith.graph.context import RunContext, check_supernet_checkpoint, make_evaluator, needs_sandbox
from archsmith.graph.lineage import lineage_json, pass_rates
from archsmith.graph.paths import RunPaths, write_atomic, write_json
from archsmith.graph.state import CandidateRecord, SearchState, best_record
from archsmith.graph.trace import TraceStore
from archsmith.graph.tracking import check_tracking, listeners, tracking
from archsmith.tools import threadsafe_ast
from archsmith.tools.evaluators import Evaluator, TaskRunner
from archsmith.tools.spaces import get_space

THREAD_ID = "search"
RecordListener = Callable[[CandidateRecord], None]


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    best: CandidateRecord | None
    history: list[CandidateRecord]
    counts: dict[str, int]
    stop_reason: str | None
    elapsed_s: float
    sandbox: str
    sessions: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    servers: list[ServerReport] = field(default_factory=list)  # the managed LLM servers: crashes, restarts

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None


def load_history(paths: RunPaths) -> list[CandidateRecord]:
    """The archived records of a run, from its history.jsonl (empty before the first archive)."""
    if not paths.history.is_file():
        return []
    lines = paths.history.read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def summarize_counts(history: list[CandidateRecord]) -> dict[str, int]:
    valid = [r for r in history if r.get("status") == "valid"]
    return {
        "generated": len(history),
        "valid": len(valid),
        "repaired_by_debugger": sum(1 for r in valid if r.get("debug_repairs")),
        "repaired_by_downscaler": sum(1 for r in valid if r.get("downscale_repairs")),
        "discarded": len(history) - len(valid),
    }


def sandbox_limits(config: ArchsmithConfig):  # noqa: ANN201 - SandboxLimits, imported lazily
    """The limits of every sandbox the run starts (its own, and each Ray worker's)."""
    from archsmith.tools.sandbox import SandboxLimits

    return SandboxLimits(timeout_s=config.sandbox.timeout_s, memory_mb=config.sandbox.memory_mb,
                         private_home=config.sandbox.private_home)


def open_sandbox(config: ArchsmithConfig, stack: ExitStack):
    """The task runner the config asks for, closed when ``stack`` closes."""
    from archsmith.tools.sandbox import Sandbox
    from archsmith.tools.sandbox_inprocess import InProcessRunner

    if config.sandbox.mode == "inprocess":
        return InProcessRunner()
    sandbox = Sandbox(sandbox_limits(config), workers=config.parallel.workers, torch_threads=config.sandbox.torch_threads)
    return stack.enter_context(sandbox)


def open_executor(config: ArchsmithConfig, stack: ExitStack, sandbox: TaskRunner):
    """The executor scoring tasks run on (closed when ``stack`` closes).

    local: the run's sandbox, one slot per GPU x ``per_gpu`` (or per worker on a CPU); ray: Ray
    tasks, each in its worker's own sandbox with the run's limits.
    """
    from archsmith.tools.executors import LocalExecutor, device_slots

    settings = config.executor
    if settings.name == "local":
        slots = device_slots(settings.devices, settings.per_gpu, config.parallel.workers)
        return stack.enter_context(LocalExecutor(sandbox, slots))
    from archsmith.tools.ray_executor import RayExecutor, RunnerSpec

    limits = sandbox_limits(config).model_dump()
    runner = RunnerSpec(mode=config.sandbox.mode, limits=tuple(sorted(limits.items())),
                        torch_threads=config.sandbox.torch_threads)
    executor = RayExecutor(address=settings.address, num_cpus=settings.num_cpus, task_cpus=settings.task_cpus,
                           task_gpus=settings.task_gpus, per_gpu=settings.per_gpu,
                           max_retries=settings.max_retries, runner=runner)
    return stack.enter_context(executor)


def _execute(
    paths: RunPaths,
    config: ArchsmithConfig,
    *,
    kind: str,
    chat_models: Mapping[str, Any] | None,
    on_record: RecordListener | None,
    evaluator: Evaluator | None = None,
) -> RunResult:
    space = get_space(config.space.name, config.space.settings)
    with ExitStack() as stack:
        stack.enter_context(threadsafe_ast.installed())  # children (and LangChain) parse Python in parallel threads
        stack.enter_context(paths.lock())
        tracker = stack.enter_context(tracking(config, paths, kind))  # MLflow, when [tracking] asks
        config, servers = start_servers(config, stack, paths.root)
        executes = evaluator.needs_execution if evaluator is not None else needs_sandbox(config)
        sandbox = open_sandbox(config, stack) if executes else None
        mechanism = sandbox.mechanism if sandbox is not None else "none (nothing executed)"
        if evaluator is None:
            executor = open_executor(config, stack, sandbox) if sandbox is not None else None
            evaluator = make_evaluator(config, space, executor, paths.root)
            if executor is not None and executor.name != "local":
                mechanism = f"{mechanism}; scoring on {executor.mechanism}"
        trace = TraceStore(paths.trace_db)
        stack.callback(trace.close)
        session = trace.start_session(kind, mechanism)
        idea_store, ideas = _open_knowledge(config, paths, session)
        conn = sqlite3.connect(paths.trace_db, check_same_thread=False, timeout=30)
        stack.callback(conn.close)
        saver = SqliteSaver(conn)
        ctx = RunContext(
            config=config,
            paths=paths,
            space=space,
            sandbox=sandbox,
            trace=trace,
            prompts=PromptLoader(config.prompts_dir),
            models=ChatModelProvider(chat_models),
            evaluator=evaluator,
            ideas=ideas,
            idea_store=idea_store,
            on_record=_not_yet_announced(paths, listeners(on_record, tracker and tracker.on_record)),
            servers=servers,
        )
        graph = build_search_graph(ctx).compile(checkpointer=saver)
        thread = {
            "configurable": {"thread_id": THREAD_ID},
            "recursion_limit": 10 * config.search.max_candidates + 100,
            "max_concurrency": config.parallel.workers,
        }
        snapshot = graph.get_state(thread, subgraphs=True)
        _restore_archive(ctx, snapshot)
        # "sync": a checkpoint is on disk before the next step starts, so no file a node writes
        # (history.jsonl, best/) ever reflects a state that a kill could still lose.
        if not snapshot.values:  # a new run, or one killed before its first checkpoint
            graph.invoke(SearchState(generation=0, next_candidate=1, phase="exploration",
                                     history=[], memory=[], elapsed_s=0.0), thread, durability="sync")
        elif snapshot.tasks:  # stopped mid-run; `next` leaves out tasks whose writes were saved
            graph.invoke(None, thread, durability="sync")
        final: SearchState = graph.get_state(thread).values
        result = _result(paths, final, mechanism, session)
        result.servers = server_reports(config, servers)
        _write_summary(paths, result)
        if tracker is not None:
            tracker.finish()
    return result


def start_servers(
    config: ArchsmithConfig, stack: ExitStack, log_dir: Path
) -> tuple[ArchsmithConfig, dict[str, ManagedServer]]:
    """Start the managed servers the roles ask for (one per distinct spec; stopped when ``stack``
    closes); return the config with those roles' ``base_url`` pointing at them, and each such
    role's server (whose crashes its llm calls tell apart and restart)."""
    servers: dict[Any, ManagedServer] = {}
    roles, used = {}, {}
    for name, role in config.roles.items():
        spec = role.llm.server
        if spec is None or role.policy != "llm":
            continue
        if spec not in servers:
            servers[spec] = stack.enter_context(ManagedServer(spec, log_dir))
        used[name] = servers[spec]
        llm = role.llm.model_copy(update={"base_url": servers[spec].base_url})
        roles[name] = role.model_copy(update={"llm": llm})
    config = config.model_copy(update={"roles": {**config.roles, **roles}}) if roles else config
    return config, used


def server_reports(config: ArchsmithConfig, servers: Mapping[str, ManagedServer]) -> list[ServerReport]:
    """One report per managed server: its crashes and restarts, and the roles (with their fallback)
    that used it."""
    users: dict[int, dict[str, str]] = {}
    for role, server in servers.items():
        users.setdefault(id(server), {})[role] = config.role(role).fallback
    distinct = {id(server): server for server in servers.values()}
    return [server.report(users[key]) for key, server in distinct.items()]


def _open_knowledge(config: ArchsmithConfig, paths: RunPaths, session: int):  # noqa: ANN202
    """The idea store and sampler when ``knowledge.use``; records which store (and which content)
    this session used in knowledge.json, so that a resume against a changed store shows."""
    if not config.knowledge.use:
        return None, None
    from archsmith.knowledge.api import make_sampler, open_store

    store = open_store(config.knowledge)
    sampler = make_sampler(store, config.knowledge)
    sessions = json.loads(paths.knowledge.read_text("utf-8"))["sessions"] if paths.knowledge.exists() else []
    entry = {"session": session, **store.version(), "sampling": config.knowledge.sampling,
             "drawn_from": len(sampler), "target": config.knowledge.target}
    write_json(paths.knowledge, {"sessions": [*sessions, entry]})
    return store, sampler


def _not_yet_announced(paths: RunPaths, on_record: RecordListener | None) -> RecordListener | None:
    """``on_record`` for the records history.jsonl does not list yet.

    An archive cut off after it had written history.jsonl runs again on resume; the records that
    file lists were announced (the archive announces before it writes) and are counted as done.
    """
    if on_record is None:
        return None
    announced = {record.get("id") for record in load_history(paths)}

    def listener(record: CandidateRecord) -> None:
        if record.get("id") not in announced:
            on_record(record)

    return listener


def _restore_archive(ctx: RunContext, snapshot: StateSnapshot) -> None:
    """The duplicate index as a stopped session left it, so that a resume claims nothing twice.

    Besides the checkpointed history: records of children that finished before the stop (saved as
    pending writes of their task) and the forms that children still in flight had claimed.
    """
    history = list((snapshot.values or {}).get("history", []))
    for task in snapshot.tasks:
        if isinstance(task.result, Mapping):
            history.extend(task.result.get("history") or [])
    ctx.archive.reset(history)
    for task in snapshot.tasks:
        child = task.state.values if isinstance(task.state, StateSnapshot) else {}
        text, verdict = child.get("text"), child.get("verdict") or {}
        candidate = (child.get("strategy") or {}).get("candidate_id")
        if text and candidate and verdict.get("route", "discard") != "discard" and ctx.space.validate(text).ok:
            ctx.archive.claim(ctx.space.canonical(text), candidate)


def _result(paths: RunPaths, state: SearchState, mechanism: str, session: int) -> RunResult:
    history = list(state.get("history", []))
    return RunResult(
        run_id=paths.run_id,
        run_dir=paths.root,
        best=best_record(history),
        history=history,
        counts=summarize_counts(history),
        stop_reason=state.get("stop_reason"),
        elapsed_s=float(state.get("elapsed_s", 0.0)),
        sandbox=mechanism,
        sessions=session,
    )


def _write_summary(paths: RunPaths, result: RunResult) -> None:
    write_json(
        paths.summary,
        {
            "run_id": result.run_id,
            "best": result.best,
            "counts": result.counts,
            "stop_reason": result.stop_reason,
            "elapsed_s": result.elapsed_s,
            "sandbox": result.sandbox,
            "sessions": result.sessions,
            "pass_rate": pass_rates(result.history),
            "servers": [report.as_dict() for report in result.servers],
        },
    )
    write_atomic(paths.lineage, lineage_json(result.history))


def run(
    config: ArchsmithConfig | str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    chat_models: Mapping[str, Any] | None = None,
    on_record: RecordListener | None = None,
    on_start: Callable[[Path], None] | None = None,
    evaluator: Evaluator | None = None,
) -> RunResult:
    """Start a new run. ``config``: a config object, a TOML path, or None for the default.

    ``chat_models`` injects LangChain chat models by role name or model name (for tests, or for
    providers the config does not know); ``on_record`` is called with each archived candidate
    (a resume skips the records that history.jsonl already lists);
    ``on_start`` with the run directory once it exists (so a caller can say where to resume);
    ``evaluator`` replaces the configured one (the bench harness evaluates every method alike).
    """
    if not isinstance(config, ArchsmithConfig):
        config = load_config(config, overrides)
    elif overrides:
        raise ValueError("overrides apply to config files; change the config object instead")
    validate_workflow(config)
    space = get_space(config.space.name, config.space.settings)  # an unknown space fails before any file
    check_tracking(config)  # so does [tracking] mlflow without MLflow installed
    if config.evaluator.name == "train" and config.evaluator.train is not None:
        config.evaluator.train.prepare_data()  # data.download = true: here, as tasks have no network
    if config.evaluator.name == "supernet" and evaluator is None:
        check_supernet_checkpoint(config, space)  # a missing or unfitting checkpoint, before any file
    paths = RunPaths.new(config.runs_dir, config.name)
    write_atomic(paths.config, config.to_toml())
    if on_start is not None:
        on_start(paths.root)
    return _execute(
        paths, config, kind="run", chat_models=chat_models, on_record=on_record, evaluator=evaluator
    )


def resume(
    run_dir: str | Path,
    *,
    chat_models: Mapping[str, Any] | None = None,
    on_record: RecordListener | None = None,
    evaluator: Evaluator | None = None,
) -> RunResult:
    """Continue a stopped run from its last checkpoint with its saved configuration.

    ``chat_models`` and ``evaluator`` as in :func:`run`: a run started with an injected evaluator
    (a bench problem's table) needs the same one to go on.
    """
    paths = RunPaths.existing(run_dir)
    config = load_config(paths.config)
    return _execute(
        paths, config, kind="resume", chat_models=chat_models, on_record=on_record, evaluator=evaluator
    )
