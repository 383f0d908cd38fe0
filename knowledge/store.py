"""The idea store: Chroma collections of tagged ideas with offline embeddings, one per embedding model.

One directory per store (default: the per-user data directory, see :func:`default_store_path`):
Chroma's files plus ``store.json``, which records the attribute tree's fingerprint and, per embedding
model, its collection and whether the starter corpus was imported into it. Vectors of two models are
never mixed: each model has its own collection, made (with the starter ideas) the first time the
store is opened with that model, so a command or run using one embedding never locks out another.
Ideas added later (ingest) go into the collection of the embedding in use. A store written by the
first format (one collection, ``ideas``, for the one model it was built with) is migrated in place:
that collection becomes the one of its model. Near-duplicate ideas (cosine similarity at least
``merge_threshold`` to an idea already stored, or earlier in the same batch) are merged into the
existing idea, whose ``merged`` count goes up; an idea whose exact text is stored is skipped.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from archsmith.knowledge.embedding import Embedder, get_embedder
from archsmith.knowledge.ideas import Idea, read_ideas, starter_corpus_path
from archsmith.knowledge.tree import AttributeTree
from archsmith.knowledge.errors import KnowledgeError
from archsmith.tools.datasets import default_data_dir
from archsmith.tools.environ import scoped_environ

LEGACY_COLLECTION = "ideas"  # format 1: the one collection, of the one model the store was built with
STORE_FORMAT = 2
READS_FORMATS = (1, 2)
MANIFEST = "store.json"
LOCK = ".store.lock"
ADD_CHUNK = 1000  # ideas embedded and deduplicated per step
LEVELS = ("target", "granularity", "main_category", "sub_category")


class StoreError(KnowledgeError, RuntimeError):
    """A store that cannot be opened or used as asked; the message says why and what to do."""


def collection_name(model: str) -> str:
    """The Chroma collection of an embedding model's vectors (3-63 characters of [A-Za-z0-9._-])."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-._") or "model"
    return f"ideas-{slug}"[:63].rstrip("-._")


def default_store_path() -> Path:
    """``knowledge/`` in the per-user data directory: ``$ARCHSMITH_DATA_DIR/knowledge``, else
    ``$XDG_DATA_HOME/archsmith/knowledge``, else ``~/.local/share/archsmith/knowledge``."""
    return default_data_dir() / "knowledge"


@dataclass(frozen=True)
class StoredIdea:
    """An idea as read back from the store (with its id and how many duplicates it absorbed)."""

    id: str
    idea: Idea
    merged: int = 0
    similarity: float | None = None  # set by search


@dataclass
class AddReport:
    added: list[str] = field(default_factory=list)
    merged: dict[str, str] = field(default_factory=dict)  # new idea id -> the stored idea it joined
    skipped: list[str] = field(default_factory=list)  # exact text already stored

    def extend(self, other: AddReport) -> None:
        self.added += other.added
        self.merged.update(other.merged)
        self.skipped += other.skipped


def where_filter(**levels: str | None) -> dict[str, Any] | None:
    """A Chroma metadata filter on any tree levels (target, granularity, main_category, sub_category)."""
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise StoreError(f"unknown filter level(s) {sorted(unknown)} (known: {', '.join(LEVELS)})")
    clauses = [{level: value} for level, value in levels.items() if value]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


class IdeaStore:
    def __init__(self, path: Path, embedder: Embedder, tree: AttributeTree, merge_threshold: float,
                 seed_starter: bool = False) -> None:
        self.path = path
        self.embedder = embedder
        self.tree = tree
        self.merge_threshold = merge_threshold
        # onnxruntime (which chromadb may import) reports usage over the network unless told not
        # to: the switch is on while chromadb is imported, unless the user chose otherwise.
        with scoped_environ({"ORT_DISABLE_TELEMETRY": "1"}, keep_existing=True):
            import chromadb
            from chromadb.config import Settings

        self._check_not_foreign()
        self.path.mkdir(parents=True, exist_ok=True)
        with self._locked():  # two processes adding one model's collection at once make it once
            self.manifest = self._read_manifest()
            entry = self.manifest["collections"].get(embedder.name)
            if entry is None:
                entry = {"collection": collection_name(embedder.name), "dim": embedder.dim,
                         "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "starter_imported": False}
                self.manifest["collections"][embedder.name] = entry
                self._write_manifest()
            self._client = chromadb.PersistentClient(
                path=str(path), settings=Settings(anonymized_telemetry=False, allow_reset=False)
            )
            self._collection = self._client.get_or_create_collection(
                entry["collection"],
                configuration={"hnsw": {"space": "cosine"}},
                metadata={"embedding_model": embedder.name, "dim": embedder.dim},
                embedding_function=None,
            )
            stored_model = (self._collection.metadata or {}).get("embedding_model")
            if stored_model != embedder.name:
                raise StoreError(
                    f"the idea store at {path}: collection {entry['collection']!r} holds vectors of "
                    f"embedding model {stored_model!r}, but {MANIFEST} lists it for {embedder.name!r}; "
                    f"the store is inconsistent: move it away, or set knowledge.path (--store) to a new "
                    f"directory (a new store gets the starter ideas again)"
                )
            if seed_starter and not entry.get("starter_imported"):
                starter = read_ideas(starter_corpus_path(), self.tree, by="hand")
                # the slow first use (embedding every starter idea): say so, on stderr, before it starts
                print(f"first use of the idea store at {path} ({embedder.name}): importing {len(starter)} starter "
                      f"ideas (this can take a minute)...", file=sys.stderr, flush=True)
                self.add(starter)
                entry["starter_imported"] = True
                self._write_manifest()

    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        embedding: str = "minilm",
        tree: AttributeTree | None = None,
        merge_threshold: float = 0.88,
        seed_starter: bool = True,
    ) -> IdeaStore:
        """Open (or create) the store at ``path`` with the collection of ``embedding``'s model; a
        collection made now gets the starter corpus (unless ``seed_starter`` is false)."""
        return cls(Path(path) if path else default_store_path(), get_embedder(embedding),
                   tree or AttributeTree.load(), merge_threshold, seed_starter)

    @property
    def embeddings(self) -> dict[str, int]:
        """Each embedding model with a collection in this store, and how many ideas it holds."""
        counts: dict[str, int] = {}
        for model, entry in sorted(self.manifest["collections"].items()):
            if model == self.embedder.name:
                counts[model] = self._collection.count()
                continue
            try:
                counts[model] = self._client.get_collection(entry["collection"]).count()
            except Exception:  # noqa: BLE001 - listed but never made (a crash before the first add)
                counts[model] = 0
        return counts

    # -- manifest ------------------------------------------------------------------------------

    def _check_not_foreign(self) -> None:
        if (self.path / MANIFEST).exists() or not self.path.exists():
            return
        if not self.path.is_dir():
            raise StoreError(f"{self.path} is a file, not an idea store directory; set knowledge.path "
                             f"(or --store) to a directory")
        if any(entry.name != LOCK for entry in self.path.iterdir()):
            raise StoreError(f"{self.path} is not empty and has no {MANIFEST}: not an Archsmith idea store; "
                             f"set knowledge.path (or --store) to a new or empty directory")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (one process at a time is then up to the user)
            yield
            return
        with open(self.path / LOCK, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_manifest(self) -> dict[str, Any]:
        file = self.path / MANIFEST
        if not file.exists():
            manifest = {"format": STORE_FORMAT, "tree": self.tree.fingerprint(),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "collections": {}}
            self._write_manifest(manifest)
            return manifest
        try:
            manifest = json.loads(file.read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise StoreError(f"{file}: unreadable store manifest ({error}); restore the file, or move the "
                             f"store away to start a new one (with the starter ideas)") from None
        if not isinstance(manifest, dict) or manifest.get("format") not in READS_FORMATS:
            found = manifest.get("format") if isinstance(manifest, dict) else None
            raise StoreError(f"{file}: store format {found!r}, this Archsmith reads formats "
                             f"{', '.join(map(str, READS_FORMATS))}; upgrade Archsmith, or set knowledge.path "
                             f"(or --store) to another directory")
        if manifest["format"] == 1:  # one collection, of the model the store was built with
            model = str(manifest.pop("embedding_model"))
            manifest["collections"] = {model: {
                "collection": LEGACY_COLLECTION, "dim": manifest.pop("dim", None),
                "created": manifest.get("created"), "starter_imported": manifest.pop("starter_imported", False),
            }}
            manifest["format"] = STORE_FORMAT
            self._write_manifest(manifest)
        return manifest

    def _write_manifest(self, manifest: dict[str, Any] | None = None) -> None:
        if manifest is not None:
            self.manifest = manifest
        temporary = self.path / f".{MANIFEST}.tmp"
        temporary.write_text(json.dumps(self.manifest, indent=2), "utf-8")
        os.replace(temporary, self.path / MANIFEST)

    # -- writing -------------------------------------------------------------------------------

    def add(self, ideas: list[Idea]) -> AddReport:
        """Add ideas, skipping stored texts and merging near-duplicates (see the module doc)."""
        report = AddReport()
        for start in range(0, len(ideas), ADD_CHUNK):
            report.extend(self._add_chunk(ideas[start:start + ADD_CHUNK]))
        return report

    def _add_chunk(self, ideas: list[Idea]) -> AddReport:
        report = AddReport()
        unique: dict[str, Idea] = {}
        for idea in ideas:
            if idea.id in unique:
                report.skipped.append(idea.id)
            else:
                unique[idea.id] = idea
        stored = set(self._collection.get(ids=list(unique), include=[])["ids"]) if unique else set()
        report.skipped += [i for i in unique if i in stored]
        fresh = [idea for i, idea in unique.items() if i not in stored]
        if not fresh:
            return report
        vectors = self.embedder.embed([idea.text for idea in fresh])
        nearest = self._nearest(vectors)
        keep: list[int] = []
        absorbed: Counter[str] = Counter()
        for row, idea in enumerate(fresh):
            match = nearest[row]
            if match is None and keep:  # a near-duplicate earlier in this batch
                similarities = vectors[keep] @ vectors[row]
                best = int(np.argmax(similarities))
                if similarities[best] >= self.merge_threshold:
                    match = fresh[keep[best]].id
            if match is not None:
                report.merged[idea.id] = match
                absorbed[match] += 1
            else:
                keep.append(row)
        if keep:
            self._collection.add(
                ids=[fresh[r].id for r in keep],
                embeddings=vectors[keep],
                documents=[fresh[r].text for r in keep],
                metadatas=[fresh[r].metadata() for r in keep],
            )
            report.added += [fresh[r].id for r in keep]
        if absorbed:
            self._count_merges(absorbed)
        return report

    def _nearest(self, vectors: np.ndarray) -> list[str | None]:
        """For each vector, the stored idea at or above the merge threshold, if any."""
        if self._collection.count() == 0:
            return [None] * len(vectors)
        result = self._collection.query(query_embeddings=vectors, n_results=1, include=["distances"])
        out: list[str | None] = []
        for ids, distances in zip(result["ids"], result["distances"] or []):
            similar = bool(ids) and 1.0 - float(distances[0]) >= self.merge_threshold
            out.append(ids[0] if similar else None)
        return out

    def _count_merges(self, absorbed: Counter[str]) -> None:
        ids = list(absorbed)
        current = self._collection.get(ids=ids, include=["metadatas"])
        metadatas = []
        for idea_id, meta in zip(current["ids"], current["metadatas"] or []):
            updated = dict(meta)
            updated["merged"] = int(updated.get("merged", 0)) + absorbed[idea_id]
            metadatas.append(updated)
        self._collection.update(ids=current["ids"], metadatas=metadatas)

    # -- reading -------------------------------------------------------------------------------

    def count(self) -> int:
        return self._collection.count()

    def _filter(self, levels: dict[str, str | None]) -> dict[str, Any] | None:
        """The Chroma filter for ``levels``; a StoreError names a value the tree does not have."""
        where = where_filter(**levels)
        leaves = self.tree.leaves()
        for level in LEVELS:
            value = levels.get(level)
            known = list(dict.fromkeys(getattr(tag, level) for tag in leaves))
            if value and value not in known:
                close = difflib.get_close_matches(value, known, n=1)
                listed = f" (known: {', '.join(known)})" if len(known) <= 20 else ""
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise StoreError(f"filter: {level} {value!r} is not in the attribute tree{listed}{hint}")
        return where

    def ideas(self, **levels: str | None) -> list[StoredIdea]:
        """Every stored idea, optionally filtered by tree levels, ordered by id."""
        result = self._collection.get(where=self._filter(levels), include=["documents", "metadatas"])
        out = [
            StoredIdea(idea_id, Idea.from_metadata(text, meta), int(meta.get("merged", 0)))
            for idea_id, text, meta in zip(result["ids"], result["documents"] or [], result["metadatas"] or [])
        ]
        return sorted(out, key=lambda stored: stored.id)

    def search(self, query: str, n: int = 5, **levels: str | None) -> list[StoredIdea]:
        """The ``n`` ideas nearest in meaning to ``query`` (most similar first)."""
        if n < 1:
            raise StoreError(f"search: -n must be at least 1, got {n}")
        vector = self.embedder.embed([query])
        result = self._collection.query(
            query_embeddings=vector, n_results=n, where=self._filter(levels),
            include=["documents", "metadatas", "distances"],
        )
        return [
            StoredIdea(idea_id, Idea.from_metadata(text, meta), int(meta.get("merged", 0)), 1.0 - float(d))
            for idea_id, text, meta, d in zip(
                result["ids"][0], (result["documents"] or [[]])[0],
                (result["metadatas"] or [[]])[0], (result["distances"] or [[]])[0],
            )
        ]

    def stats(self) -> dict[str, Any]:
        """Total and per-category counts (every main category of the tree, zeros included)."""
        ideas = self.ideas()
        per_main = Counter(stored.idea.tag.main_key for stored in ideas)
        per_sub = Counter(f"{stored.idea.tag.main_key}/{stored.idea.sub_category}" for stored in ideas)
        return {
            "total": len(ideas),
            "merged_duplicates": sum(stored.merged for stored in ideas),
            "main_categories": {tag.main_key: per_main.get(tag.main_key, 0) for tag in self.tree.main_categories()},
            "sub_categories": dict(sorted(per_sub.items())),
            "embeddings": self.embeddings,  # every model's collection in this store, with its size
            **self.version(ideas),
        }

    def version(self, ideas: list[StoredIdea] | None = None) -> dict[str, Any]:
        """What a run records about the store it used: where, which model, which content."""
        ids = [stored.id for stored in ideas] if ideas is not None else sorted(
            self._collection.get(include=[])["ids"]
        )
        digest = hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()[:12]
        return {
            "path": str(self.path),
            "embedding_model": self.embedder.name,
            "tree": self.tree.fingerprint(),
            "ideas": len(ids),
            "fingerprint": digest,
        }
