"""A generic string-encoded categorical space, registered as ``"positions"``.

A candidate is ``length`` tokens, each one of ``options``, joined by ``separator``: e.g. with
``{length = 8, options = ["0", "1", "2"]}`` the text ``"01201120"``. It lets tabular benchmarks
of other macro spaces (a string per architecture) be searched with no code change.

With the default separator ``""`` the tokens are concatenated; the options must then be
prefix-free (no option starts another one, e.g. single characters), so a text reads one way
only. Whitespace is never part of a token and is ignored around tokens.

The space has no network and no size model: :meth:`PositionsSpace.build` raises (tabular
evaluation never builds), :meth:`PositionsSpace.depth` is ``length``, and
:meth:`PositionsSpace.shrink` returns a random one-position change whose description says so
(a budget can only be exceeded through a table's params/FLOPs columns; the verifier then
checks the change like any other, and the downscaler's tries are bounded).
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from archsmith.tools.spaces.base import Mutation, Validation, ValidationIssue, checked_seeds, register_space

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

OPERATORS = ("position", "positions")
_FOREIGN_SEPARATORS = ",;|/-_ \t\n"


class PositionsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    length: int = Field(ge=1, description="number of positions")
    options: list[str] = Field(min_length=2, description="the tokens a position can take")
    separator: str = Field("", description="between tokens; '' concatenates (prefix-free options)")
    initial: list[str] | None = Field(None, description="seed candidates (default: first option everywhere)")

    @model_validator(mode="after")
    def _check_options(self) -> PositionsSettings:
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"options must be distinct: {self.options!r}")
        for option in self.options:
            if not option or any(ch.isspace() for ch in option):
                raise ValueError(f"option {option!r}: options are non-empty and contain no whitespace")
            if self.separator.strip() and self.separator.strip() in option:
                raise ValueError(f"option {option!r} contains the separator {self.separator!r}")
        if not self.separator:
            for a in self.options:
                for b in self.options:
                    if a != b and b.startswith(a):
                        raise ValueError(
                            f"options {a!r} and {b!r}: with no separator no option may start another "
                            "(set a separator, e.g. '-')"
                        )
        return self


@register_space("positions")
class PositionsSpace:
    """``length`` categorical positions over ``options``, written as one string."""

    name: ClassVar[str] = "positions"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = PositionsSettings.model_validate(settings or {})
        self.length = self.settings.length
        self.options = list(self.settings.options)
        self.separator = self.settings.separator
        seeds = self.settings.initial
        if seeds is None:
            seeds = [self.decode([0] * self.length)]
        self._seeds = checked_seeds(self, seeds)

    # -- reading ---------------------------------------------------------------------------

    def _tokens(self, text: str) -> tuple[list[str], list[ValidationIssue]]:
        """The tokens with the problems found (a problem means the tokens are not usable)."""
        allowed = ", ".join(repr(o) for o in self.options)
        tokens: list[str] = []
        issues: list[ValidationIssue] = []
        if not self.separator:
            i = 0
            while i < len(text):
                if text[i].isspace():
                    i += 1
                    continue
                match = next((o for o in self.options if text.startswith(o, i)), None)
                if match is None:
                    message = f"position {len(tokens)}: unknown token at {text[i:i + 8]!r}; options: {allowed}"
                    return tokens, [ValidationIssue(message=message, position=i, kind="syntax")]
                tokens.append(match)
                i += len(match)
        else:
            pattern = r"\s+" if self.separator.isspace() else re.escape(self.separator.strip())
            start = len(text) - len(text.lstrip())
            body = text.strip()
            offsets = [0] + [m.end() for m in re.finditer(pattern, body)]
            for index, piece in enumerate(re.split(pattern, body) if body else []):
                token = piece.strip()
                if token not in self.options:
                    where = start + offsets[index] + (len(piece) - len(piece.lstrip()))
                    message = f"position {index}: unknown token {token!r}; options: {allowed}"
                    issues.append(ValidationIssue(message=message, position=where, kind="syntax"))
                tokens.append(token)
        if not issues and len(tokens) != self.length:
            message = f"expected {self.length} tokens, found {len(tokens)}"
            issues.append(ValidationIssue(message=message, position=len(text.rstrip()), kind="syntax"))
        return tokens, issues

    def _valid_tokens(self, text: str) -> list[str]:
        tokens, issues = self._tokens(text)
        if issues:
            raise ValueError(f"invalid candidate: {Validation(ok=False, issues=issues).summary()}")
        return tokens

    def _join(self, tokens: list[str]) -> str:
        return self.separator.join(tokens)

    def validate(self, text: str) -> Validation:
        _, issues = self._tokens(text)
        return Validation(ok=not issues, issues=issues)

    def canonical(self, text: str) -> str:
        """Tokens joined by the separator; an unreadable text comes back stripped."""
        tokens, issues = self._tokens(text)
        return text.strip() if issues else self._join(tokens)

    def depth(self, text: str) -> int:
        """``length`` for a valid candidate (there is no network to count), 0 otherwise."""
        return self.length if self.validate(text).ok else 0

    # -- EnumerableSpace -------------------------------------------------------------------

    def choices(self) -> list[list[str]]:
        return [list(self.options) for _ in range(self.length)]

    def encode(self, text: str) -> list[int]:
        return [self.options.index(token) for token in self._valid_tokens(text)]

    def decode(self, indices: list[int]) -> str:
        if len(indices) != self.length or any(not 0 <= i < len(self.options) for i in indices):
            raise ValueError(f"expected {self.length} indices in 0..{len(self.options) - 1}, got {indices!r}")
        return self._join([self.options[i] for i in indices])

    def sample(self, rng: random.Random) -> str:
        return self._join([rng.choice(self.options) for _ in range(self.length)])

    # -- search ----------------------------------------------------------------------------

    def initial(self) -> list[str]:
        return list(self._seeds)

    def operators(self) -> list[str]:
        return list(OPERATORS)

    def local_operators(self) -> list[str]:
        """Refinement changes one position at a time."""
        return ["position"]

    def mutate(self, text: str, rng: random.Random, operator: str | None = None) -> Mutation:
        """``position``: one token changes; ``positions``: 2 or 3 do (as many as there are when
        ``length`` is smaller). Always a different valid candidate."""
        tokens = self._valid_tokens(text)
        if operator is None:
            operator = rng.choice(OPERATORS)
        elif operator not in OPERATORS:
            raise ValueError(f"unknown operator {operator!r}; known: {', '.join(OPERATORS)}")
        count = 1 if operator == "position" else min(self.length, rng.choice((2, 3)))
        changes = []
        for position in sorted(rng.sample(range(self.length), count)):
            new = rng.choice([o for o in self.options if o != tokens[position]])
            changes.append(f"position {position}: {tokens[position]!r} -> {new!r}")
            tokens[position] = new
        return Mutation(child=self._join(tokens), operator=operator, description="; ".join(changes))

    def repair(self, text: str, error: str) -> str | None:
        """Trivial fixes only: surrounding quotes/backticks, letter case (when every option is
        written in one case), another separator than the configured one. None otherwise (a
        wrong number of tokens or an unknown token included); ``error`` is not needed."""
        body = text.strip().strip("`'\"").strip()
        candidates = [body]
        used = set("".join(self.options)) | set(self.separator)
        for foreign in _FOREIGN_SEPARATORS:
            if foreign not in used and foreign in body:
                candidates.append(self._join([p.strip() for p in body.split(foreign) if p.strip()]))
        for case in (str.lower, str.upper):  # only when every option is written in that case
            if all(case(o) == o for o in self.options):
                candidates += [case(c) for c in candidates]
        for candidate in candidates:
            if self.validate(candidate).ok:
                return self.canonical(candidate)
        return None

    def shrink(self, text: str, factor: float, rng: random.Random) -> Mutation:
        """No size model: a random one-position change (it may or may not be smaller)."""
        mutation = self.mutate(text, rng, "position")
        description = (
            f"{mutation.description} (the positions space has no size model: a random change, "
            f"not a shrink by x{factor:.2f})"
        )
        return Mutation(child=mutation.child, operator="shrink", description=description)

    def build(self, text: str, num_classes: int, *, plain: bool = False) -> nn.Module:
        raise RuntimeError("the positions space has no network: use a tabular evaluator")

    def describe(self) -> str:
        options = ", ".join(repr(o) for o in self.options)
        joined = f"joined by {self.separator!r}" if self.separator else "written one after another with no separator"
        return (
            f"A candidate is a string of exactly {self.length} tokens, {joined}. Each position takes "
            f"one of the options {options}. Positions are independent categorical choices of an "
            f"architecture of a fixed macro space; the string is looked up in a benchmark table. "
            f"Example: {self._seeds[0]!r}."
        )
