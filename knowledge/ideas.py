"""Design ideas: short text, a tag at every level of the attribute tree, source and provenance.

An idea's id is the hash of its normalized text, so importing the same idea twice is a no-op.
Pre-extracted ideas come as JSONL (one object per line, the fields of :class:`Idea` with ``tag``
flattened: ``target``, ``granularity``, ``main_category``, ``sub_category``); errors name the file
and line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from archsmith.knowledge.tree import AttributeTree, Tag, TreeError
from archsmith.knowledge.errors import KnowledgeError

MAX_WORDS = 50
TAG_FIELDS = ("target", "granularity", "main_category", "sub_category")


class IdeaError(KnowledgeError, ValueError):
    """A record that is not a usable idea; the message names where it came from."""


class Source(BaseModel):
    """The paper an idea comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    title: str = Field(min_length=1)
    year: int | None = Field(None, ge=1900, le=2100)
    url: str | None = None
    doi: str | None = None


class Provenance(BaseModel):
    """How the idea got into the store."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    origin: str = Field(description="File (or corpus) the idea was ingested from.")
    by: str = Field("hand", description="The model that extracted it, or 'hand'.")


class Idea(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str
    target: str
    granularity: str
    main_category: str
    sub_category: str
    source: Source
    provenance: Provenance

    @field_validator("text")
    @classmethod
    def _short(cls, text: str) -> str:
        text = " ".join(text.split())
        if not text:
            raise ValueError("empty idea text")
        words = len(text.split())
        if words > MAX_WORDS:
            raise ValueError(f"idea text has {words} words (at most {MAX_WORDS})")
        return text

    @property
    def tag(self) -> Tag:
        return Tag(self.target, self.granularity, self.main_category, self.sub_category)

    @property
    def id(self) -> str:
        return content_hash(self.text)

    def metadata(self) -> dict[str, Any]:
        """Flat, scalar metadata as stored beside the embedding (Chroma accepts no nesting)."""
        return {
            "target": self.target,
            "granularity": self.granularity,
            "main_category": self.main_category,
            "sub_category": self.sub_category,
            "main_key": self.tag.main_key,
            "source_title": self.source.title,
            "source_year": self.source.year or 0,
            "source_url": self.source.url or "",
            "source_doi": self.source.doi or "",
            "origin": self.provenance.origin,
            "by": self.provenance.by,
            "merged": 0,
        }

    @classmethod
    def from_metadata(cls, text: str, meta: dict[str, Any]) -> Idea:
        return cls(
            text=text,
            target=meta["target"],
            granularity=meta["granularity"],
            main_category=meta["main_category"],
            sub_category=meta["sub_category"],
            source=Source(
                title=meta["source_title"],
                year=meta.get("source_year") or None,
                url=meta.get("source_url") or None,
                doi=meta.get("source_doi") or None,
            ),
            provenance=Provenance(origin=meta["origin"], by=meta.get("by", "hand")),
        )

    def as_record(self) -> dict[str, Any]:
        """The JSONL form (what ``read_ideas`` accepts)."""
        return {"id": self.id, **self.model_dump(exclude_none=True)}


def content_hash(text: str) -> str:
    """Id of an idea: the hash of its text, case and whitespace folded."""
    normalized = re.sub(r"\s+", " ", text.strip().lower())
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()[:16]


def parse_idea(record: dict[str, Any], tree: AttributeTree, provenance: Provenance) -> Idea:
    """One idea from a JSONL record; provenance applies unless the record brings its own."""
    record = {k: v for k, v in record.items() if k != "id"}
    record.setdefault("provenance", provenance.model_dump())
    if isinstance(record.get("source"), str):
        record["source"] = {"title": record["source"]}
    try:
        idea = Idea.model_validate(record)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in error.errors()
        )
        raise IdeaError(problems) from None
    try:
        tree.check(idea.tag)
    except TreeError as error:
        raise IdeaError(str(error)) from None
    return idea


def is_idea_record(record: dict[str, Any]) -> bool:
    """Whether a JSONL record is a pre-extracted idea (rather than a paper)."""
    return "text" in record and "main_category" in record


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; IdeaError names a line that is not JSON."""
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise IdeaError(f"{path}:{number}: not JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise IdeaError(f"{path}:{number}: expected a JSON object")
            yield number, record


def read_ideas(path: str | Path, tree: AttributeTree, by: str = "hand") -> list[Idea]:
    """Every idea of a JSONL file, or an IdeaError listing each bad line (nothing half-read)."""
    file = Path(path)
    ideas: list[Idea] = []
    problems: list[str] = []
    provenance = Provenance(origin=file.name, by=by)
    for number, record in read_jsonl(file):
        try:
            ideas.append(parse_idea(record, tree, provenance))
        except IdeaError as error:
            problems.append(f"{file}:{number}: {error}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise IdeaError(f"{len(problems)} bad idea record(s):\n  {shown}{more}")
    return ideas


def starter_corpus_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("archsmith.knowledge").joinpath("data", "starter_ideas.jsonl")))
