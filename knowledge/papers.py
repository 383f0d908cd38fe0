"""Reading papers for ingestion: .txt/.md/.pdf files and JSONL paper records.

A :class:`Paper` has a title, an abstract and a method section found by headings (with fallbacks
when a paper has no such headings), and a content hash that makes re-ingestion a no-op.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archsmith.knowledge.ideas import IdeaError, is_idea_record, read_jsonl
from archsmith.knowledge.errors import KnowledgeError

PAPER_SUFFIXES = (".txt", ".md", ".pdf")
INGEST_SUFFIXES = (*PAPER_SUFFIXES, ".jsonl")
ABSTRACT_CHARS = 3000

_HEADING = re.compile(r"^\s{0,3}(?:#{1,6}\s*)?(?:[0-9IVX]+(?:\.[0-9]+)*\.?\s+)?([A-Za-z][A-Za-z &-]{1,60})\s*:?\s*$")
_METHOD = re.compile(r"^(?:proposed\s+)?(?:method|methods|methodology|approach|our approach|the proposed method|"
                     r"architecture|model|network design|design)\b", re.IGNORECASE)
_AFTER_METHOD = re.compile(r"^(?:experiment|experiments|results|evaluation|conclusion|conclusions|"
                           r"discussion|related work|references|acknowledg)", re.IGNORECASE)


class PaperError(KnowledgeError, ValueError):
    """A paper file or record that cannot be read; names the file (and line)."""


@dataclass(frozen=True)
class Paper:
    origin: str  # file, or file:line for a JSONL record
    title: str
    abstract: str
    text: str
    year: int | None = None
    url: str | None = None

    @property
    def hash(self) -> str:
        body = f"{self.title}\n{self.abstract}\n{self.text}"
        return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]

    def method_section(self, max_chars: int) -> str:
        """The method section (by heading), else the body after the abstract; at most max_chars."""
        return find_method(self.text)[:max_chars] or self.text[:max_chars]


def find_method(text: str) -> str:
    lines = text.splitlines()
    start = end = None
    for index, line in enumerate(lines):
        heading = _HEADING.match(line)
        if not heading:
            continue
        name = heading.group(1).strip()
        if start is None and _METHOD.match(name):
            start = index + 1
        elif start is not None and _AFTER_METHOD.match(name):
            end = index
            break
    if start is None:
        return ""
    return "\n".join(lines[start:end]).strip()


def split_title_abstract(text: str) -> tuple[str, str]:
    """Title (first non-empty line) and abstract (after an 'Abstract' heading, else the opening)."""
    lines = [line.strip() for line in text.splitlines()]
    title = next((line.lstrip("# ").strip() for line in lines if line), "")
    match = re.search(r"(?im)^\s*(?:#+\s*)?abstract\b[\s.:—-]*", text)
    if match:
        rest = text[match.end():]
        stop = re.search(r"(?m)^\s*(?:#{1,6}\s+|(?:1|I)\.?\s+Introduction\b|Introduction\s*$|Keywords\b)", rest)
        abstract = rest[: stop.start()] if stop else rest[:ABSTRACT_CHARS]
    else:
        body = text.split("\n", 1)[1] if "\n" in text else text
        abstract = body[:ABSTRACT_CHARS // 2]
    return title[:300], " ".join(abstract.split())[:ABSTRACT_CHARS]


def read_paper_file(path: Path) -> Paper:
    if path.suffix.lower() == ".pdf":
        text = _pdf_text(path)
    else:
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError:
            raise PaperError(f"{path}: not UTF-8 text") from None
        except OSError as error:
            raise PaperError(f"{path}: cannot read ({error.strerror or error})") from None
    if not text.strip():
        raise PaperError(f"{path}: no text")
    title, abstract = split_title_abstract(text)
    return Paper(origin=str(path), title=title, abstract=abstract, text=text)


def _pdf_text(path: Path) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError:
        raise PaperError(f"{path}: reading PDF needs the pypdf package") from None
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise PaperError(f"{path}: encrypted PDF")
        text = "\n".join(page.extract_text() or "" for page in reader.pages)
    except PyPdfError as error:
        raise PaperError(f"{path}: unreadable PDF ({error})") from None
    except OSError as error:
        raise PaperError(f"{path}: cannot read ({error.strerror or error})") from None
    if not text.strip():
        raise PaperError(f"{path}: the PDF has no extractable text (scanned images?)")
    return text


def paper_from_record(record: dict[str, Any], origin: str) -> Paper:
    """A JSONL paper record: {title, abstract, text} (text optional; year and url optional)."""
    title = record.get("title")
    if not isinstance(title, str) or not title.strip():
        raise PaperError(f"{origin}: a paper record needs a non-empty 'title'")
    abstract = record.get("abstract") or ""
    text = record.get("text") or ""
    if not isinstance(abstract, str) or not isinstance(text, str):
        raise PaperError(f"{origin}: 'abstract' and 'text' must be strings")
    if not abstract.strip() and not text.strip():
        raise PaperError(f"{origin}: a paper record needs an 'abstract' or a 'text'")
    year = record.get("year")
    if year is not None and not isinstance(year, int):
        raise PaperError(f"{origin}: 'year' must be an integer")
    if not abstract.strip():
        abstract = split_title_abstract(text)[1]
    return Paper(origin=origin, title=title.strip(), abstract=" ".join(abstract.split()),
                 text=text or abstract, year=year, url=record.get("url"))


@dataclass
class Sources:
    """What a list of ingest paths holds: papers, idea-record files, and files that failed."""

    papers: list[Paper]
    idea_files: list[Path]
    errors: list[str]


def collect(paths: list[str | Path]) -> Sources:
    """Expand directories and sort every input into papers, idea JSONL files and read errors."""
    sources = Sources([], [], [])
    for file in _expand(paths, sources.errors):
        if file.suffix.lower() != ".jsonl":
            try:
                sources.papers.append(read_paper_file(file))
            except PaperError as error:
                sources.errors.append(str(error))
            continue
        try:
            records = list(read_jsonl(file))
        except (IdeaError, OSError, UnicodeDecodeError) as error:
            sources.errors.append(f"{file}: {error}")
            continue
        if records and all(is_idea_record(record) for _, record in records):
            sources.idea_files.append(file)
            continue
        for number, record in records:
            try:
                if is_idea_record(record):
                    raise PaperError(f"{file}:{number}: idea records and paper records are mixed in one file")
                sources.papers.append(paper_from_record(record, f"{file}:{number}"))
            except PaperError as error:
                sources.errors.append(str(error))
    return sources


def _expand(paths: list[str | Path], errors: list[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INGEST_SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() in INGEST_SUFFIXES:
                yield path
            else:
                errors.append(f"{path}: unsupported file type (expected {', '.join(INGEST_SUFFIXES)})")
        else:
            errors.append(f"{path}: no such file or directory")
