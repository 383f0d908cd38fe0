"""The interface every search space implements, and the space registry.

A candidate is always a text (a structure string, a cell string, a source file, a YAML): that is
what the agents read and write, what is stored on disk and what the sandbox builds.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

T = TypeVar("T")


class ValidationIssue(BaseModel):
    """One problem with a candidate text; ``position`` is a character offset when known."""

    model_config = ConfigDict(extra="forbid")

    message: str
    position: int | None = None
    kind: str = "invalid"  # "syntax" | "channels" | "limit" | "invalid"

    def __str__(self) -> str:
        where = f" (at character {self.position})" if self.position is not None else ""
        return f"{self.kind}: {self.message}{where}"


class Validation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool
    issues: list[ValidationIssue] = Field(default_factory=list)

    def summary(self) -> str:
        return "ok" if self.ok else "; ".join(str(issue) for issue in self.issues)


class Mutation(BaseModel):
    """A child produced from a parent by one named operator."""

    model_config = ConfigDict(extra="forbid")

    child: str
    operator: str
    description: str


@runtime_checkable
class SearchSpace(Protocol):
    """What the agents and tools need from a search space.

    Implementations are plain classes holding their settings; every method is pure given its
    arguments (randomness comes in through ``rng``).
    """

    name: ClassVar[str]

    def validate(self, text: str) -> Validation:
        """Parse and check a candidate without building it."""

    def canonical(self, text: str) -> str:
        """A normal form: two texts describing the same network have the same canonical form."""

    def initial(self) -> list[str]:
        """Seed candidates that start a search (at least one, valid, within a sensible budget)."""

    def operators(self) -> list[str]:
        """Names of the mutation operators ``mutate`` accepts."""

    def mutate(self, text: str, rng: random.Random, operator: str | None = None) -> Mutation:
        """Apply one operator (chosen by ``rng`` when None) to a valid candidate."""

    def repair(self, text: str, error: str) -> str | None:
        """A deterministic fix for a candidate that failed to validate or run, or None."""

    def shrink(self, text: str, factor: float, rng: random.Random) -> Mutation:
        """A smaller variant (fewer params/FLOPs), scaling by about ``factor`` (< 1)."""

    def depth(self, text: str) -> int | None:
        """Number of weight layers, for the structural check (None: counted when it runs)."""

    def describe(self) -> str:
        """The grammar and rules of the space, in words, for prompts."""

    def build(self, text: str, num_classes: int, *, plain: bool = False) -> nn.Module:
        """The PyTorch network. Called inside the sandbox only.

        The module must provide ``forward_pre_gap(x)`` (the feature map before global pooling,
        used by Zen-score) besides ``forward``. ``plain=True`` builds the form Zen-NAS scores:
        residual links and their projections removed.
        """


@runtime_checkable
class EnumerableSpace(SearchSpace, Protocol):
    """A finite space of categorical choices (NAS-Bench-201 cells, string-encoded macro spaces).

    Baselines that need a distribution over the space (random search, REINFORCE) use this.
    """

    def choices(self) -> list[list[str]]:
        """Per position, the options (e.g. 6 edges x 5 operations)."""

    def encode(self, text: str) -> list[int]:
        """Option index per position (ValueError for an invalid text)."""

    def decode(self, indices: list[int]) -> str:
        """The canonical text for one option index per position."""

    def sample(self, rng: random.Random) -> str:
        """A uniformly random candidate."""


@runtime_checkable
class AnswerReadingSpace(SearchSpace, Protocol):
    """A space whose candidates can be recognised inside free text (an LLM answer).

    Small models wrap a candidate in prose or in code of another language
    (``return "nor_conv_3x3~0|+|..."``); such a space finds it there, and an answer with nothing
    of its shape is retried with a message naming the expected form.
    """

    def candidates_in_answer(self, answer: str) -> list[str]:
        """Candidate-shaped spans of ``answer`` in order (shape only: they may not validate)."""


@runtime_checkable
class ParentRepairingSpace(SearchSpace, Protocol):
    """A space that can repair a broken child from what it changed in its parent.

    Small models often drop or garble part of a child while changing another part (an NB201 cell
    with one edge left out); :meth:`SearchSpace.repair` cannot know what was meant, but the parent
    can: what the child leaves out or garbles is taken from the parent. The algorithmic Debugger
    tries it when ``repair`` finds nothing.
    """

    def repair_from_parent(self, text: str, parent: str) -> str | None:
        """The child's readable parts over its (valid) parent's, or None when nothing is readable."""


@runtime_checkable
class EditListingSpace(SearchSpace, Protocol):
    """A space that lists its valid edits (LLMasTool's rule tool: the ``tree`` and ``yolo`` spaces).

    The ``llm`` Generator then asks the model for the number of one edit instead of a whole child
    (:func:`offers_edit_choice`). An edit is a record with ``operator``, ``kind``, ``path``,
    ``before``, ``after`` and ``human()`` (:class:`~archsmith.tools.spaces.tree_model.TreeEdit`).
    """

    def edit_options(self, text: str, operator: str, limit: int | None = None) -> list[Any]:
        """Every valid edit of ``operator`` in a fixed order, each giving a valid child that differs
        from the parent and the others (ValueError for an unknown operator or an invalid text)."""

    def apply_edit(self, text: str, edit: Any) -> Mutation:
        """The child of one listed edit (ValueError for any other)."""


def offers_edit_choice(space: SearchSpace) -> bool:
    """Whether the ``llm`` Generator should pick one of the space's listed edits: a space with
    ``edit_options`` does unless its ``offers_edit_choice()`` says no (the yolo space's
    ``llm_answer = "yaml"``: the model writes the child)."""
    if not hasattr(space, "edit_options"):
        return False
    asked = getattr(space, "offers_edit_choice", None)
    return bool(asked()) if callable(asked) else True


DEFAULT_CHECK_TASK = "archsmith.tools.tasks:check_candidate"


def check_task(space: SearchSpace) -> str:
    """The sandbox task that builds, runs and profiles a candidate of this space.

    A space whose networks are not classifiers (detection) names its own as ``check_task``; it
    returns what :func:`archsmith.tools.tasks.check_candidate` returns.
    """
    return str(getattr(space, "check_task", DEFAULT_CHECK_TASK))


def local_operators(space: SearchSpace) -> list[str]:
    """The operators that make the smallest changes, used when refining around one candidate.

    A space may define ``local_operators()``; without it every operator counts as local.
    """
    chosen = getattr(space, "local_operators", None)
    return list(chosen()) if callable(chosen) else list(space.operators())


SpaceFactory = Callable[[dict[str, Any]], SearchSpace]
_SPACES: dict[str, SpaceFactory] = {}


def checked_seeds(space: SearchSpace, seeds: Sequence[str], what: str = "seed") -> list[str]:
    """The canonical forms of ``space.settings.initial``-style seeds, in order without repeats;
    ValueError naming the first invalid one (or an empty list)."""
    if not seeds:
        raise ValueError(f"space.settings.initial: give at least one {what}")
    for index, seed in enumerate(seeds):
        validation = space.validate(seed)
        if not validation.ok:
            raise ValueError(f"space.settings.initial[{index}] is invalid: {validation.summary()}")
    return list(dict.fromkeys(space.canonical(seed) for seed in seeds))


def greedy_shrink(start: T, size: Callable[[T], int], smaller: Callable[[T], Sequence[tuple[T, str]]],
                  factor: float, rng: random.Random) -> tuple[T, list[str], int, int]:
    """One-step reductions of ``start`` until ``size`` is at most ``factor`` x its own: each step
    takes the move that fits and keeps the most when one fits, else the one that saves the most
    (ties broken by ``rng``). Returns (the result, the moves' descriptions, size before, after)."""
    before = size(start)
    target, current, changes = before * factor, start, []
    while size(current) > target:
        moves = [(size(candidate), candidate, description) for candidate, description in smaller(current)]
        if not moves:
            break
        fitting = [move for move in moves if move[0] <= target]
        key = max(m[0] for m in fitting) if fitting else min(m[0] for m in moves)
        _, current, description = rng.choice([move for move in (fitting or moves) if move[0] == key])
        changes.append(description)
    return current, changes, before, size(current)


def register_space(name: str) -> Callable[[SpaceFactory], SpaceFactory]:
    """Class or factory decorator: ``@register_space("template")``."""

    def decorator(factory: SpaceFactory) -> SpaceFactory:
        _SPACES[name] = factory
        return factory

    return decorator


class SpaceError(ValueError):
    """An unknown space name or unusable ``space.settings``; the message names the setting."""


def get_space(name: str, settings: dict[str, Any] | None = None) -> SearchSpace:
    """Instantiate a registered space with its settings (the ``space.settings`` config table)."""
    from pydantic import ValidationError

    from archsmith.tools import spaces as _builtin  # noqa: F401  (registers the built-in spaces)

    if name not in _SPACES:
        known = ", ".join(sorted(_SPACES)) or "none"
        raise SpaceError(f"space.name: unknown search space {name!r}; known spaces: {known}")
    try:
        return _SPACES[name](dict(settings or {}))
    except ValidationError as error:
        problems = "; ".join(f"space.settings.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise SpaceError(problems) from None
    except (ValueError, TypeError, OSError) as error:
        text = str(error)
        raise SpaceError(text if text.startswith("space.") else f"space.settings ({name}): {text}") from None


def space_names() -> list[str]:
    from archsmith.tools import spaces as _builtin  # noqa: F401

    return sorted(_SPACES)
