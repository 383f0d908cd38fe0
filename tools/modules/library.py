"""The module library: mined :class:`~archsmith.tools.modules.mining.ModuleRecord` rows in SQLite.

Default file: ``<data dir>/modules/library.sqlite`` (see
:func:`archsmith.tools.datasets.default_data_dir`). One row per qualified name: mining the same
class again updates its row; an unchanged class source (same hash) keeps an earlier probe when
the new mining did not probe, a changed source replaces the row.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from archsmith.tools.modules.mining import ModuleRecord

__all__ = ["ModuleLibrary", "default_library_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS modules (
    name TEXT PRIMARY KEY,
    class_name TEXT NOT NULL,
    package TEXT NOT NULL,
    source TEXT NOT NULL,
    source_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    mined_at REAL NOT NULL
)
"""


def default_library_path() -> Path:
    """``<data dir>/modules/library.sqlite``."""
    from archsmith.tools.datasets import default_data_dir

    return default_data_dir() / "modules" / "library.sqlite"


class ModuleLibrary:
    """A SQLite file of mined modules (``with ModuleLibrary(path) as library: ...``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_library_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute(_SCHEMA)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ModuleLibrary:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def upsert(self, records: Iterable[ModuleRecord]) -> dict[str, int]:
        """Store records; returns counts of ``added``, ``updated`` (same source) and ``replaced``."""
        counts = {"added": 0, "updated": 0, "replaced": 0}
        with self._db:
            for record in records:
                row = self._db.execute("SELECT source_hash, record FROM modules WHERE name = ?", (record.name,)).fetchone()
                if row is None:
                    counts["added"] += 1
                elif row[0] == record.source_hash:
                    counts["updated"] += 1
                    old = ModuleRecord.model_validate_json(row[1])
                    if record.probe is None and old.probe is not None:
                        record = record.model_copy(update={"probe": old.probe})
                else:
                    counts["replaced"] += 1
                self._db.execute(
                    "INSERT OR REPLACE INTO modules VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.name, record.class_name, record.package, record.source, record.source_hash,
                     record.status, record.model_dump_json(), time.time()),
                )
        return counts

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM modules").fetchone()[0])

    def records(self, source: str | None = None, ok_only: bool = False) -> list[ModuleRecord]:
        """Stored records by name; ``source``: a package name (and its subpackages) or source as given."""
        query, args = "SELECT record FROM modules WHERE 1=1", []
        if source:
            query += " AND (package = ? OR source = ? OR substr(name, 1, ?) = ?)"
            args += [source, source, len(source) + 1, source + "."]
        if ok_only:
            query += " AND status = 'ok'"
        rows = self._db.execute(query + " ORDER BY name", args).fetchall()
        return [ModuleRecord.model_validate_json(row[0]) for row in rows]

    def find(self, name: str) -> list[ModuleRecord]:
        """Records matching ``name``: the qualified name, else a dotted suffix or the class name."""
        row = self._db.execute("SELECT record FROM modules WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return [ModuleRecord.model_validate_json(row[0])]
        rows = self._db.execute("SELECT record FROM modules WHERE class_name = ? ORDER BY name",
                                (name.split(".")[-1],)).fetchall()
        found = [ModuleRecord.model_validate_json(r[0]) for r in rows]
        return [r for r in found if r.name.endswith("." + name) or r.class_name == name]

    def to_jsonl(self) -> str:
        """Every record, one JSON object a line (for export)."""
        return "".join(json.dumps(r.model_dump()) + "\n" for r in self.records())
