"""The run directory, addressed through one paths object (DESIGN.md, convention 9).

```
runs/<id>/config.toml          the resolved configuration
runs/<id>/trace.sqlite         LangGraph checkpoints + the `steps` table of the trace
runs/<id>/candidates/<cid>/    candidate.txt (the source), result.json
runs/<id>/history.jsonl        one archived record per line, in order
runs/<id>/best/                the best candidate: candidate.txt, result.json
runs/<id>/lineage.json         the lineage graph (networkx node-link JSON), written with the summary
runs/<id>/knowledge.json       the idea store (and its version) each session used, when knowledge.use
runs/<id>/summary.json         written when the run stops
runs/<id>/.lock                held (flock) by the process running the run, so no two sessions overlap
```
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


class RunInUseError(RuntimeError):
    """Another process holds the run (a run or resume still going)."""


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @classmethod
    def new(cls, runs_dir: str | Path, name: str) -> RunPaths:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
        base = Path(runs_dir) / f"{stamp}-{slug}"
        root, suffix = base, 1
        while root.exists():
            suffix += 1
            root = base.with_name(f"{base.name}-{suffix}")
        root.mkdir(parents=True)
        return cls(root)

    @classmethod
    def existing(cls, path: str | Path) -> RunPaths:
        root = Path(path)
        if not (root / "config.toml").is_file():
            raise FileNotFoundError(f"{root} is not an Archsmith run directory (no config.toml)")
        return cls(root)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run for this process; a second session on it fails at once.

        The lock is an flock, released by the kernel when its process dies, so a killed run never
        stays locked. Temporary files that a killed session's writes left behind are removed.
        """
        with open(self.root / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunInUseError(f"{self.root} is in use by another process (a run or resume still going)") from None
            for stale in self.root.rglob(f".*{TMP_SUFFIX}"):
                stale.unlink(missing_ok=True)
            yield

    def in_use(self) -> bool:
        """Whether a process holds the run now (:meth:`lock`), probed without taking it."""
        if not (self.root / ".lock").is_file():
            return False
        with open(self.root / ".lock") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def trace_db(self) -> Path:
        return self.root / "trace.sqlite"

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def lineage(self) -> Path:
        """Parents -> children as a networkx node-link graph (graph.lineage)."""
        return self.root / "lineage.json"

    @property
    def knowledge(self) -> Path:
        """The idea store each session of the run used (path, model, content fingerprint)."""
        return self.root / "knowledge.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def candidate(self, candidate_id: str) -> Path:
        return self.root / "candidates" / candidate_id
