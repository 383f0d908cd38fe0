"""The step trace: what every node was given, asked, answered and decided.

Steps live in a ``steps`` table inside the run's trace.sqlite, beside LangGraph's checkpoint
tables, so a run directory alone is enough to step through a run (``archsmith trace``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

_SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session INTEGER NOT NULL,
    generation INTEGER,
    candidate_id TEXT,
    phase TEXT,
    node TEXT NOT NULL,
    role TEXT NOT NULL,
    policy TEXT,
    started_at REAL NOT NULL,
    duration_s REAL NOT NULL,
    decision TEXT,
    inputs TEXT,
    prompts TEXT,
    answers TEXT,
    parsed TEXT,
    tools TEXT,
    tokens TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    session INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    kind TEXT NOT NULL,
    sandbox TEXT
);
"""

_JSON_COLUMNS = ("inputs", "prompts", "answers", "parsed", "tools", "tokens")
# Columns added after the first release, each with its type: older trace files get them on open.
_ADDED_COLUMNS = {"phase": "TEXT"}


class PromptRecord(BaseModel):
    template: str
    sha256: str
    text: str


class StepRecord(BaseModel):
    """One node execution. JSON-able fields hold whatever the role found worth showing."""

    node: str
    role: str
    policy: str | None = None
    generation: int | None = None
    candidate_id: str | None = None
    phase: str | None = None  # the search phase the step ran in (exploration, refinement)
    started_at: float = Field(default_factory=time.time)
    duration_s: float = 0.0
    decision: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    prompts: list[PromptRecord] = Field(default_factory=list)
    answers: list[str] = Field(default_factory=list)
    parsed: Any = None
    tools: dict[str, Any] = Field(default_factory=dict)
    tokens: dict[str, int] = Field(default_factory=dict)
    error: str | None = None
    # filled when read back
    id: int | None = None
    session: int | None = None


class TraceStore:
    """Thread-safe writer/reader of the steps table (its own connection, WAL mode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._add_missing_columns()
        self._conn.commit()
        self.session: int | None = None

    def _add_missing_columns(self) -> None:
        """Bring a trace written by an older version up to this schema (read-only files are read as
        they are: a missing column reads as None)."""
        present = {row[1] for row in self._conn.execute("PRAGMA table_info(steps)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                try:
                    self._conn.execute(f"ALTER TABLE steps ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError:  # read-only, or another process added it meanwhile
                    pass

    def start_session(self, kind: str, sandbox: str) -> int:
        with self._lock, self._conn:
            row = self._conn.execute("SELECT COALESCE(MAX(session), 0) + 1 FROM sessions").fetchone()
            self.session = int(row[0])
            self._conn.execute(
                "INSERT INTO sessions (session, started_at, kind, sandbox) VALUES (?, ?, ?, ?)",
                (self.session, time.time(), kind, sandbox),
            )
        return self.session

    def record(self, step: StepRecord) -> int:
        data = step.model_dump(exclude={"id", "session"})
        for column in _JSON_COLUMNS:
            data[column] = json.dumps(data[column], default=str)
        data["session"] = self.session or 0
        columns = ", ".join(data)
        marks = ", ".join("?" for _ in data)
        with self._lock, self._conn:
            cursor = self._conn.execute(
                f"INSERT INTO steps ({columns}) VALUES ({marks})", tuple(data.values())
            )
        return int(cursor.lastrowid)

    def steps(
        self, *, role: str | None = None, candidate_id: str | None = None, after_id: int | None = None
    ) -> list[StepRecord]:
        """Steps in order, optionally of one role, one candidate, or only those after a step id."""
        query, args = "SELECT * FROM steps", []
        where = []
        if after_id is not None:
            where.append("id > ?")
            args.append(after_id)
        if role:
            where.append("role = ?")
            args.append(role)
        if candidate_id:
            where.append("candidate_id = ?")
            args.append(candidate_id)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id"
        with self._lock:
            cursor = self._conn.execute(query, args)
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        return [self._to_record(dict(zip(names, row))) for row in rows]

    def step(self, step_id: int) -> StepRecord | None:
        with self._lock:
            cursor = self._conn.execute("SELECT * FROM steps WHERE id = ?", (step_id,))
            names = [d[0] for d in cursor.description]
            row = cursor.fetchone()
        return self._to_record(dict(zip(names, row))) if row else None

    def sessions(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT session, started_at, kind, sandbox FROM sessions")
            return [dict(zip(("session", "started_at", "kind", "sandbox"), r)) for r in rows]

    @staticmethod
    def _to_record(row: dict[str, Any]) -> StepRecord:
        for column in _JSON_COLUMNS:
            row[column] = json.loads(row[column]) if row[column] else None
        row = {k: v for k, v in row.items() if v is not None}
        return StepRecord.model_validate(row)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def read_steps(trace_db: Path, **filters: Any) -> list[StepRecord]:
    """The steps of a run's trace.sqlite (filters as :meth:`TraceStore.steps`), for scripts."""
    store = TraceStore(trace_db)
    try:
        return store.steps(**filters)
    finally:
        store.close()
