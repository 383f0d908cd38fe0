"""Tabular benchmarks: evaluation of a candidate is a lookup in a CSV.

A table has an ``arch`` column and metric columns, one row per architecture, and optionally a
``dataset`` column (then one row per (architecture, dataset); see :class:`TabularSpec` for how
the rows are chosen). The search signal is one metric (``valid_acc`` by default); other metrics
(``test_acc``) are recorded for reporting only, never shown to the search. Architecture strings
are matched through the search space's canonical form, so equivalent spellings agree. A file
that starts with gzip's magic bytes (e.g. ``table.csv.gz``) is decompressed on the fly.

Errors name the file, the line and the column (:class:`TabularError`). The path is always given:
a file, or ``builtin:<name>`` for a table shipped inside the package (:data:`BUILTIN_TABLES`;
:func:`default_table` names the one for a space and data set).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from archsmith.tools.results import ScoreResult
from archsmith.tools.spaces.base import SearchSpace


class TabularError(ValueError):
    """A table that cannot be used; the message says where and what."""


BUILTIN_PREFIX = "builtin:"
BUILTIN_TABLES: dict[str, str] = {
    # NAS-Bench-201 (Dong & Yang, ICLR 2020; MIT-licensed upstream), CIFAR-10, all 15,625 cells:
    # arch,dataset,valid_acc,test_acc,params_m,flops_m. See NOTICE and the README.
    "nasbench201-cifar10": "nasbench201-cifar10.csv.gz",
}
"""Tables shipped in ``archsmith/tools/data``, by the name that follows ``builtin:``."""
DEFAULT_TABLES: dict[tuple[str, str], str] = {("nb201", "cifar10"): "nasbench201-cifar10"}
"""(space, data set) -> the builtin table used when no table is given."""


def builtin_table(name: str) -> Path:
    """The file of a shipped table (``name`` with or without the ``builtin:`` prefix)."""
    key = name.removeprefix(BUILTIN_PREFIX)
    if key not in BUILTIN_TABLES:
        known = ", ".join(BUILTIN_PREFIX + n for n in sorted(BUILTIN_TABLES))
        raise TabularError(f"no builtin table {name!r}; the package ships: {known}")
    return Path(str(files("archsmith.tools").joinpath("data", BUILTIN_TABLES[key])))


def default_table(space: str, dataset: str | None) -> str | None:
    """``builtin:<name>`` of the table shipped for ``space`` on ``dataset`` (cifar10 when None)."""
    name = DEFAULT_TABLES.get((space, dataset or "cifar10"))
    return BUILTIN_PREFIX + name if name else None


def table_file(path: str) -> Path:
    """The file behind a spec's ``path``: a builtin table's file, else the path itself."""
    return builtin_table(path) if path.startswith(BUILTIN_PREFIX) else Path(path)


class TabularSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="CSV file (optionally gzip-compressed) with an arch column and metric columns, "
        "or builtin:<name> for a table shipped with Archsmith (builtin:nasbench201-cifar10)."
    )
    dataset: str | None = Field(
        None,
        description="Rows whose dataset column holds this value. Unset: cifar10 if the table has "
        "such rows, else the table's only dataset; a table with no dataset column is one dataset "
        "(all rows), and naming a dataset for it is an error.",
    )
    signal: str = Field("valid_acc", description="Metric the search sees (higher is better).")
    report: list[str] = Field(default_factory=lambda: ["test_acc"], description="Metrics recorded only.")
    params_column: str | None = Field("params_m", description="Params in millions, if the table has them.")
    flops_column: str | None = Field("flops_m", description="FLOPs in millions, if the table has them.")
    flops_are_macs: bool = Field(
        True, description="The FLOPs column counts multiply-accumulates (NAS-Bench-201 does); "
        "Archsmith's FLOPs are 2 x MACs."
    )
    arch_column: str = "arch"
    dataset_column: str | None = Field(
        "dataset", description="Column naming each row's dataset; a table without it (or None) is one dataset."
    )


Row = dict[str, float]


class TabularBenchmark:
    """The rows of one dataset of a table, keyed by canonical architecture string; ``dataset`` is
    the dataset the rows belong to (None for a table with no dataset column)."""

    def __init__(self, spec: TabularSpec, rows: dict[str, Row], source: str, dataset: str | None = None) -> None:
        self.spec = spec
        self.rows = rows
        self.source = source
        self.dataset = dataset if dataset is not None else spec.dataset
        self._canonical: Callable[[str], str] = lambda text: text.strip()

    @classmethod
    def load(cls, spec: TabularSpec, space: SearchSpace | None = None) -> TabularBenchmark:
        """Read and validate the table. With ``space``, every architecture must be valid in it
        and rows are keyed by the space's canonical form."""
        file = table_file(spec.path)
        dataset, rows = _read_rows(str(file.resolve()), spec.model_dump_json())
        of = f" for {dataset!r}" if dataset is not None else ""
        normalise: Callable[[str], str] = space.canonical if space is not None else str.strip
        keyed: dict[str, Row] = {}
        for arch, (line, row) in rows.items():
            try:
                if space is not None:
                    validation = space.validate(arch)
                    if not validation.ok:
                        raise ValueError(validation.summary())
                key = normalise(arch)
            except ValueError as error:
                raise TabularError(f"{spec.path}:{line}: architecture {arch!r} is not valid: {error}") from None
            if key in keyed:
                raise TabularError(f"{spec.path}:{line}: architecture {arch!r} appears twice{of}")
            keyed[key] = row
        bench = cls(spec, keyed, spec.path, dataset)
        bench._canonical = normalise
        return bench

    def __len__(self) -> int:
        return len(self.rows)

    def key(self, text: str) -> str:
        return self._canonical(text)

    def lookup(self, text: str) -> Row | None:
        try:
            return self.rows.get(self._canonical(text))
        except ValueError:
            return None

    def best(self, metric: str | None = None) -> tuple[str, Row]:
        """The architecture with the highest ``metric`` (the signal by default)."""
        metric = metric or self.spec.signal
        arch = max(self.rows, key=lambda a: (self.rows[a][metric], a))
        return arch, self.rows[arch]

    def evaluate(self, text: str) -> ScoreResult:
        """A lookup as a score: ``score`` = the signal; the report columns go into ``report``."""
        started = time.perf_counter()
        row = self.lookup(text)
        if row is None:
            return ScoreResult(
                ok=False,
                name="tabular",
                error_type="NotInTable",
                error_message=f"architecture not in {self.source}"
                + (f" for dataset {self.dataset!r}" if self.dataset is not None else ""),
                duration_s=time.perf_counter() - started,
            )
        return ScoreResult(
            ok=True,
            name="tabular",
            score=row[self.spec.signal],
            repeats=1,
            settings={"table": self.source, "dataset": self.dataset, "signal": self.spec.signal},
            report={name: row[name] for name in self.spec.report},
            duration_s=time.perf_counter() - started,
        )

    def profile(self, text: str) -> tuple[int | None, int | None]:
        """(params, FLOPs = 2 x MACs) from the table's columns when it has them."""
        row = self.lookup(text)
        if row is None:
            return None, None
        params = row.get(self.spec.params_column) if self.spec.params_column else None
        flops = row.get(self.spec.flops_column) if self.spec.flops_column else None
        return (
            round(params * 1e6) if params is not None else None,
            round(flops * 1e6 * (2 if self.spec.flops_are_macs else 1)) if flops is not None else None,
        )


@contextmanager
def _open_text(file: Path) -> Iterator[io.TextIOBase]:
    """The file as text; gzip-compressed files (by their magic bytes) are decompressed."""
    with open(file, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    handle = gzip.open(file, "rt", newline="", encoding="utf-8") if compressed else open(
        file, newline="", encoding="utf-8"
    )
    with handle:
        yield handle


@lru_cache(maxsize=8)
def _read_rows(path: str, spec_json: str) -> tuple[str | None, dict[str, tuple[int, Row]]]:
    """(dataset, arch -> (line number, metrics)) for the spec's dataset; cached per file and spec."""
    spec = TabularSpec.model_validate_json(spec_json)
    file = Path(path)
    if not file.is_file():
        raise TabularError(f"tabular benchmark not found: {path}")
    try:
        with _open_text(file) as handle:
            return _parse(csv.DictReader(handle), path, spec)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
        raise TabularError(f"{path}: cannot be read as a CSV table: {error}") from None


def _parse(reader: csv.DictReader, path: str, spec: TabularSpec) -> tuple[str | None, dict[str, tuple[int, Row]]]:
    metrics = list(dict.fromkeys([spec.signal, *spec.report]))
    optional = [c for c in (spec.params_column, spec.flops_column) if c]
    header = reader.fieldnames or []
    by_dataset = spec.dataset_column is not None and spec.dataset_column in header
    if not by_dataset and spec.dataset is not None:
        column = f"dataset column {spec.dataset_column!r}" if spec.dataset_column else "dataset column"
        raise TabularError(
            f"{path}: dataset {spec.dataset!r} was asked for, but the table has no {column}: it holds one "
            f"dataset, so leave the dataset (--dataset) unset; the header has {', '.join(header)}"
        )
    missing = [c for c in (spec.arch_column, *metrics) if c not in header]
    if missing:
        raise TabularError(f"{path}: missing column(s) {', '.join(missing)}; the header has {', '.join(header)}")
    present_optional = [c for c in optional if c in header]
    # by dataset: dataset -> arch -> (line, metrics); else one dataset, None.
    tables: dict[str | None, dict[str, tuple[int, Row]]] = {}
    for line, record in enumerate(reader, start=2):
        dataset = (record.get(spec.dataset_column) or "").strip() if by_dataset else None
        rows = tables.setdefault(dataset, {})
        if spec.dataset is not None and dataset != spec.dataset:
            continue
        arch = (record.get(spec.arch_column) or "").strip()
        if not arch:
            raise TabularError(f"{path}:{line}: empty {spec.arch_column!r}")
        values: Row = {}
        for column in [*metrics, *present_optional]:
            raw = (record.get(column) or "").strip()
            try:
                value = float(raw)
            except ValueError:
                raise TabularError(f"{path}:{line}: column {column!r} is not a number: {raw!r}") from None
            if not math.isfinite(value):
                raise TabularError(f"{path}:{line}: column {column!r} is not finite: {raw!r}")
            values[column] = value
        if arch in rows:
            of = f" for {dataset!r}" if dataset is not None else ""
            raise TabularError(f"{path}:{line}: architecture {arch!r} appears twice{of}")
        rows[arch] = (line, values)
    known = ", ".join(sorted(d for d in tables if d)) or "none"
    if not by_dataset:
        chosen: str | None = None
    elif spec.dataset is not None:
        chosen = spec.dataset
    elif "cifar10" in tables or len(tables) != 1:
        chosen = "cifar10"  # the default of tables with a dataset column
    else:
        (chosen,) = tables
    rows = tables.get(chosen) or {}
    if not rows:
        if not by_dataset:
            raise TabularError(f"{path}: no rows")
        several = spec.dataset is None and len(tables) > 1
        unset = " (no dataset was given, and the table has several: choose one)" if several else ""
        raise TabularError(f"{path}: no rows for dataset {chosen!r}{unset}; datasets in the file: {known}")
    return chosen, rows
