"""The design attribute tree: target > granularity > main category > sub-category (FairNAD 4.1).

Loaded from a TOML file (the packaged default is ``knowledge/data/attribute_tree.toml``) and
validated on load: every error names the file and the path in the tree that is wrong. Ideas are
tagged with one full path (:class:`Tag`); :meth:`AttributeTree.check` validates a tag and suggests
the nearest known name when a level is misspelled.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal
from archsmith.knowledge.errors import KnowledgeError

TARGETS = ("performance", "efficiency")
GRANULARITIES = ("operation", "block and connectivity", "network")
Granularity = Literal["operation", "block and connectivity", "network"]


class TreeError(KnowledgeError, ValueError):
    """An attribute tree file that cannot be used, or a tag that is not in the tree."""


@dataclass(frozen=True)
class Tag:
    """One idea's place in the tree, at every level."""

    target: str
    granularity: str
    main_category: str
    sub_category: str

    @property
    def main_key(self) -> str:
        """The main category's unique key (a main category name may repeat across targets)."""
        return f"{self.target}/{self.granularity}/{self.main_category}"

    def path(self) -> str:
        return f"{self.target} > {self.granularity} > {self.main_category} > {self.sub_category}"


class AttributeTree:
    """A validated attribute tree; read-only after loading."""

    def __init__(self, branches: dict[str, dict[str, dict[str, list[str]]]], origin: str) -> None:
        self.branches = branches
        self.origin = origin

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path | None = None) -> AttributeTree:
        """The tree in ``path``, or the packaged default when ``path`` is None."""
        if path is None:
            resource = resources.files("archsmith.knowledge").joinpath("data", "attribute_tree.toml")
            return cls.from_text(resource.read_text("utf-8"), "archsmith.knowledge/data/attribute_tree.toml")
        file = Path(path)
        try:
            text = file.read_text("utf-8")
        except OSError as error:
            raise TreeError(f"attribute tree {file}: cannot read ({error.strerror or error})") from None
        return cls.from_text(text, str(file))

    @classmethod
    def from_text(cls, text: str, origin: str = "<text>") -> AttributeTree:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise TreeError(f"attribute tree {origin}: not valid TOML ({error})") from None
        return cls(_validate(data, origin), origin)

    # -- queries -----------------------------------------------------------------------------

    def main_categories(self) -> list[Tag]:
        """One tag per main category (sub_category empty), in file order."""
        return [
            Tag(target, granularity, main, "")
            for target, granularities in self.branches.items()
            for granularity, mains in granularities.items()
            for main in mains
        ]

    def leaves(self) -> list[Tag]:
        return [
            Tag(target, granularity, main, sub)
            for target, granularities in self.branches.items()
            for granularity, mains in granularities.items()
            for main, subs in mains.items()
            for sub in subs
        ]

    def check(self, tag: Tag) -> Tag:
        """``tag`` if it is a path of this tree; a TreeError naming the first wrong level if not."""
        level = self.branches
        for name, value in (("target", tag.target), ("granularity", tag.granularity),
                            ("main_category", tag.main_category)):
            if value not in level:
                raise TreeError(f"{name} {value!r} is not in the tree{_suggest(value, level)}")
            level = level[value]  # type: ignore[assignment]
        if tag.sub_category not in level:
            raise TreeError(
                f"sub_category {tag.sub_category!r} is not under {tag.main_category!r}"
                f"{_suggest(tag.sub_category, level)}"
            )
        return tag

    def fingerprint(self) -> str:
        """A short hash of the tree's content (recorded with a store and in runs)."""
        canonical = json.dumps(self.branches, sort_keys=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]

    def render(self, target: str) -> str:
        """The tree of one target as indented text, for prompts."""
        lines = []
        for granularity, mains in self.branches.get(target, {}).items():
            lines.append(f"{granularity} level:")
            for main, subs in mains.items():
                lines.append(f"  {main}: [{', '.join(subs)}]")
        return "\n".join(lines)


def _suggest(value: str, known: object) -> str:
    names = list(known)  # type: ignore[call-overload]
    close = difflib.get_close_matches(value, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f" (known: {', '.join(repr(n) for n in names)}){hint}"


def _validate(data: dict, origin: str) -> dict[str, dict[str, dict[str, list[str]]]]:
    def fail(where: str, problem: str) -> TreeError:
        return TreeError(f"attribute tree {origin}: {where}: {problem}")

    if not data:
        raise TreeError(f"attribute tree {origin}: empty (expected [performance.operation] ... tables)")
    branches: dict[str, dict[str, dict[str, list[str]]]] = {}
    for target, granularities in data.items():
        if target not in TARGETS:
            raise fail(target, f"unknown target (expected one of {', '.join(TARGETS)})")
        if not isinstance(granularities, dict) or not granularities:
            raise fail(target, "expected tables of granularities, e.g. [performance.operation]")
        branches[target] = {}
        for granularity, mains in granularities.items():
            where = f"{target}.{granularity}"
            if granularity not in GRANULARITIES:
                raise fail(where, f"unknown granularity (expected one of {', '.join(GRANULARITIES)})")
            if not isinstance(mains, dict) or not mains:
                raise fail(where, 'expected main categories: "name" = ["sub-category", ...]')
            branches[target][granularity] = {}
            for main, subs in mains.items():
                here = f"{where}.{main!r}"
                if not main.strip():
                    raise fail(here, "empty main category name")
                if not isinstance(subs, list) or not subs:
                    raise fail(here, "needs a non-empty list of sub-categories (an idea is tagged at every level)")
                seen: set[str] = set()
                for index, sub in enumerate(subs):
                    if not isinstance(sub, str) or not sub.strip():
                        raise fail(f"{here}[{index}]", "sub-category must be a non-empty string")
                    if sub in seen:
                        raise fail(f"{here}[{index}]", f"sub-category {sub!r} listed twice")
                    seen.add(sub)
                branches[target][granularity][main] = list(subs)
    return branches
