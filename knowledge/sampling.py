"""Fair idea sampling (FairNAD 4.3.1 and its ablation, Table 6) and the mutation target.

``main_category`` (the default, FairNAD's best setting) draws a main category uniformly, then an
idea uniformly within it; ``granularity`` and ``sub_category`` do the same at another level;
``uniform`` draws over all ideas, ignoring the tags. Pure functions of the ideas and an explicit
``random.Random``: the same store content and seed give the same draws.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from archsmith.knowledge.ideas import Idea
from archsmith.knowledge.store import StoredIdea

SamplingLevel = Literal["main_category", "uniform", "granularity", "sub_category"]
SAMPLING_LEVELS: tuple[SamplingLevel, ...] = ("main_category", "uniform", "granularity", "sub_category")

NEW_MODULE = "create a new module"
MODIFY_MODULE = "modify an existing module"
NETWORK = "change the network structure"

_GROUP_KEY: dict[str, Callable[[Idea], str]] = {
    "uniform": lambda idea: "",
    "granularity": lambda idea: idea.granularity,
    "main_category": lambda idea: idea.tag.main_key,
    "sub_category": lambda idea: f"{idea.tag.main_key}/{idea.sub_category}",
}


@dataclass(frozen=True)
class SampledIdea:
    stored: StoredIdea
    mutation_target: str  # NEW_MODULE | MODIFY_MODULE | NETWORK

    def describe(self) -> str:
        idea = self.stored.idea
        return f"{idea.text} [{idea.tag.path()}; {self.mutation_target}]"


def mutation_target(idea: Idea, rng: random.Random) -> str:
    """Where the idea is applied: operation and block ideas create a new module or modify an
    existing one (chosen uniformly); network ideas change the network structure."""
    if idea.granularity == "network":
        return NETWORK
    return rng.choice((NEW_MODULE, MODIFY_MODULE))


class IdeaSampler:
    """Draws ideas from a fixed list with fairness at one tree level."""

    def __init__(self, ideas: Sequence[StoredIdea], level: SamplingLevel = "main_category") -> None:
        if level not in _GROUP_KEY:
            raise ValueError(f"unknown sampling level {level!r} (known: {', '.join(SAMPLING_LEVELS)})")
        if not ideas:
            raise ValueError("no ideas to sample from (the store, or the filter applied to it, is empty)")
        self.level = level
        key = _GROUP_KEY[level]
        groups: dict[str, list[StoredIdea]] = {}
        for stored in sorted(ideas, key=lambda s: s.id):
            groups.setdefault(key(stored.idea), []).append(stored)
        self.groups = dict(sorted(groups.items()))
        self._keys = list(self.groups)

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups.values())

    def draw(self, rng: random.Random) -> SampledIdea:
        group = self.groups[rng.choice(self._keys)]
        stored = rng.choice(group)
        return SampledIdea(stored, mutation_target(stored.idea, rng))

    def draw_from(self, candidates: Sequence[StoredIdea], rng: random.Random) -> SampledIdea:
        """One of ``candidates`` (e.g. a semantic-search result), uniformly, with its target."""
        if not candidates:
            return self.draw(rng)
        stored = rng.choice(list(candidates))
        return SampledIdea(stored, mutation_target(stored.idea, rng))
