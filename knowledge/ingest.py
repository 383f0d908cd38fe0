"""Paper ingestion (FairNAD 4.2): filter by title and abstract, then extract tagged ideas.

Two LLM steps with our own prompts (agents/prompts/knowledge/{filter,extract}.md): the filter
step keeps a paper only if it matches some attribute of the tree; the extract step reads the method
section and returns ideas, each tagged at every level. Ideas with a tag outside the tree are
rejected one by one (and reported); an answer with no usable idea is retried like any malformed
answer. Pre-extracted idea JSONL imports with no LLM at all.

Idempotent and resumable: a ledger (``ingested.sqlite`` in the store directory) records every paper
by content hash once its ideas are stored, so a re-run skips finished papers and redoes only a
paper that was interrupted (its ideas already stored are skipped by id). Papers whose LLM answers
were unusable are recorded as failed and tried again next time.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archsmith.agents.answers import AnswerError, extract_json
from archsmith.agents.llm import RetryPolicy, ask
from archsmith.agents.prompts import PromptLoader
from archsmith.graph.config import LLMSettings
from archsmith.knowledge.ideas import Idea, IdeaError, Provenance, Source, parse_idea, read_ideas
from archsmith.knowledge.papers import Paper, collect
from archsmith.knowledge.store import IdeaStore
from archsmith.knowledge.tree import TARGETS, AttributeTree, Tag, TreeError
from langchain_core.language_models import BaseChatModel

LEDGER = "ingested.sqlite"
ROLE = "knowledge"


@dataclass
class IngestSummary:
    papers_kept: int = 0
    papers_discarded: int = 0
    papers_skipped: int = 0  # already ingested (same content hash)
    papers_failed: list[str] = field(default_factory=list)
    ideas_added: int = 0
    ideas_merged: int = 0
    ideas_skipped: int = 0  # exact text already stored
    ideas_rejected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # inputs that could not be read
    per_category: Counter[str] = field(default_factory=Counter)  # ideas added, by main category

    def as_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items() if k != "per_category"},
                "per_category": dict(sorted(self.per_category.items()))}


class Ledger:
    """Which papers were ingested, by content hash (sqlite beside the store)."""

    def __init__(self, store: IdeaStore) -> None:
        self._db = sqlite3.connect(store.path / LEDGER)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS papers (hash TEXT PRIMARY KEY, origin TEXT, title TEXT, "
            "status TEXT, ideas_added INTEGER, ideas_merged INTEGER, model TEXT, reason TEXT, at REAL)"
        )
        self._db.commit()

    def finished(self, paper_hash: str) -> bool:
        row = self._db.execute("SELECT status FROM papers WHERE hash = ?", (paper_hash,)).fetchone()
        return row is not None and row[0] in ("kept", "discarded")

    def record(self, paper: Paper, status: str, model: str, added: int = 0, merged: int = 0, reason: str = "") -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO papers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (paper.hash, paper.origin, paper.title, status, added, merged, model, reason, time.time()),
        )
        self._db.commit()

    def close(self) -> None:
        self._db.close()


class PaperReader:
    """The two LLM steps for one paper, with the knowledge role's model and retry settings."""

    def __init__(self, chat_model: BaseChatModel, settings: LLMSettings, tree: AttributeTree,
                 prompts: PromptLoader, max_paper_chars: int) -> None:
        self.chat_model = chat_model
        self.settings = settings
        self.tree = tree
        self.prompts = prompts
        self.max_paper_chars = max_paper_chars

    def _ask(self, purpose: str, variables: dict[str, Any], parse: Callable[[str], Any]) -> Any:
        trees = {f"{target}_tree": self.tree.render(target) for target in TARGETS}
        variables = {**variables, **trees}
        result, exchange = ask(
            self.chat_model, model_name=self.settings.model,
            system=self.prompts.render(ROLE, "system", **variables),
            user=self.prompts.render(ROLE, purpose, **variables),
            parse=parse, prompts=self.prompts, policy=RetryPolicy.from_settings(self.settings),
        )
        if result is None:
            reasons = "; ".join(failure.message for failure in exchange.errors[-2:])
            raise IdeaError(f"{purpose}: no usable answer after {exchange.attempts} attempt(s) ({reasons})")
        return result

    def relevant(self, paper: Paper) -> list[Tag]:
        """The tree attributes the paper's title and abstract match (empty: discard the paper)."""

        def parse(answer: str) -> list[Tag]:
            data = extract_json(answer)
            if not isinstance(data.get("relevant"), bool):
                raise AnswerError('expected {"relevant": true|false, "attributes": [...]}')
            if not data["relevant"]:
                return []
            tags, problems = self._tags(data.get("attributes"))
            if not tags:
                raise AnswerError("relevant papers need at least one attribute from the tree"
                                  + (f": {problems[0]}" if problems else ""))
            return tags

        return self._ask("filter", {"title": paper.title, "abstract": paper.abstract}, parse)

    def _tags(self, items: Any) -> tuple[list[Tag], list[str]]:
        tags, problems = [], []
        for item in items if isinstance(items, list) else []:
            try:
                tag = Tag(*(str(item[key]) for key in ("target", "granularity", "main_category", "sub_category")))
                tags.append(self.tree.check(tag))
            except (KeyError, TypeError):
                problems.append(f"attribute {item!r} lacks target/granularity/main_category/sub_category")
            except TreeError as error:
                problems.append(str(error))
        return tags, problems

    def extract(self, paper: Paper, provenance: Provenance) -> tuple[list[Idea], list[str]]:
        """Tagged ideas from the method section, and the reasons for any rejected item."""
        source = Source(title=paper.title, year=paper.year, url=paper.url)

        def parse(answer: str) -> tuple[list[Idea], list[str]]:
            items = extract_json(answer).get("ideas")
            if not isinstance(items, list) or not items:
                raise AnswerError('expected {"ideas": [{"text": ..., "target": ..., "granularity": ..., '
                                  '"main_category": ..., "sub_category": ...}, ...]}')
            ideas, rejected = [], []
            for index, item in enumerate(items):
                if not isinstance(item, dict):
                    rejected.append(f"ideas[{index}] is not an object")
                    continue
                record = {**item, "source": source.model_dump(exclude_none=True)}
                try:
                    ideas.append(parse_idea(record, self.tree, provenance))
                except IdeaError as error:
                    rejected.append(f"ideas[{index}]: {error}")
            if not ideas:
                raise AnswerError("no idea was usable: " + "; ".join(rejected[:3]))
            return ideas, rejected

        variables = {"title": paper.title, "paper": paper.method_section(self.max_paper_chars)}
        return self._ask("extract", variables, parse)


def ingest(
    paths: list[str],
    store: IdeaStore,
    reader: PaperReader | None,
    on_progress: Callable[[str], None] | None = None,
) -> IngestSummary:
    """Ingest papers and idea files into ``store``; ``reader`` is needed only for papers."""
    summary = IngestSummary()
    sources = collect(paths)
    summary.errors += sources.errors
    for file in sources.idea_files:
        try:
            ideas = read_ideas(file, store.tree)
        except IdeaError as error:
            summary.errors.append(str(error))
        else:
            _store(ideas, store, summary)
        if on_progress:
            on_progress(str(file))
    if sources.papers and reader is None:
        summary.errors.append(f"{len(sources.papers)} paper(s) need an LLM ([knowledge.llm]); only idea files were imported")
        return summary
    ledger = Ledger(store)
    try:
        for paper in sources.papers:
            _ingest_paper(paper, store, reader, ledger, summary)  # type: ignore[arg-type]
            if on_progress:
                on_progress(paper.origin)
    finally:
        ledger.close()
    return summary


def _ingest_paper(paper: Paper, store: IdeaStore, reader: PaperReader, ledger: Ledger, summary: IngestSummary) -> None:
    model = reader.settings.model
    if ledger.finished(paper.hash):
        summary.papers_skipped += 1
        return
    try:
        if not reader.relevant(paper):
            ledger.record(paper, "discarded", model)
            summary.papers_discarded += 1
            return
        ideas, rejected = reader.extract(paper, Provenance(origin=paper.origin, by=model))
    except IdeaError as error:
        ledger.record(paper, "failed", model, reason=str(error))
        summary.papers_failed.append(f"{paper.origin}: {error}")
        return
    summary.ideas_rejected += [f"{paper.origin}: {reason}" for reason in rejected]
    added, merged = _store(ideas, store, summary)
    ledger.record(paper, "kept", model, added, merged)
    summary.papers_kept += 1


def _store(ideas: list[Idea], store: IdeaStore, summary: IngestSummary) -> tuple[int, int]:
    report = store.add(ideas)
    summary.ideas_added += len(report.added)
    summary.ideas_merged += len(report.merged)
    summary.ideas_skipped += len(report.skipped)
    added = set(report.added)
    summary.per_category.update(idea.tag.main_key for idea in ideas if idea.id in added)
    return len(report.added), len(report.merged)
