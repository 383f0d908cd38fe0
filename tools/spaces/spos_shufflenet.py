"""The SPOS ShuffleNetV2 macro space (Guo et al., ECCV 2020), registered as ``"spos_shufflenet"``.

A candidate is the JSON object ``{"choices": [20 ints]}``: for each of the 20 choice blocks
(stages of 4, 4, 8 and 4 blocks with 64, 160, 320 and 640 channels), which unit it runs: 0, 1, 2
= a ShuffleNetV2 unit with a 3x3, 5x5 or 7x7 depthwise conv, 3 = an Xception-like unit (three
depthwise 3x3 convs). 4^20 subnets. A bare list of 20 ints is read too; the canonical form is the
object. Sizes are closed forms: every parameter of the built subnet, and the multiply-adds of its
convs and classifier at ``input_size`` (SPOS's FLOPs: 296M to 359M at 224). ``build`` makes the
static subnet with fresh weights; :func:`archsmith.tools.supernets.extract_subnet` makes it with
the weights a supernet checkpoint gives it. Settings: ``initial`` (seed archs), ``input_size``.
Importing this module does not import torch.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from archsmith.tools.spaces.base import Mutation, Validation, ValidationIssue, checked_seeds, register_space
from archsmith.tools.spaces.spos_shufflenet_mutation import mutate_arch, repair_choices, shrink_arch
from archsmith.tools.supernets.spos_arch import (
    N_CHOICES,
    XCEPTION,
    SPOSArch,
    SPOSSettings,
    spos_macs,
    spos_param_count,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

OPERATORS = ("block", "stage", "blocks")
EXPECTED = 'expected {"choices": [one int 0-3 per block]}'


class SPOSSpaceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    initial: list[str] | None = Field(None, description="seed archs (JSON) replacing the built-in ones")
    input_size: int = Field(224, description="image size the closed-form MACs are counted at")

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value < 32 or value % 32:
            raise ValueError("input_size must be a positive multiple of 32")
        return value


@register_space("spos_shufflenet")
class SPOSShuffleNetSpace:
    """SPOS ShuffleNetV2 subnets: parsing, checks, canonical form, closed-form size, mutation, build."""

    name: ClassVar[str] = "spos_shufflenet"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = SPOSSpaceSettings.model_validate(settings or {})
        self.supernet_settings = SPOSSettings(input_size=self.settings.input_size)
        self.n_blocks = self.supernet_settings.n_blocks
        seeds = self.settings.initial if self.settings.initial is not None else self._default_seeds()
        self._seeds = checked_seeds(self, seeds, "seed arch")

    def _default_seeds(self) -> list[str]:
        """Two arbitrary subnets: every block a 3x3 ShuffleNetV2 unit, and the 1:2:1 mix 0, 1, 2, 1
        repeated (no Xception)."""
        n = self.n_blocks
        return [self._text(SPOSArch((0,) * n)), self._text(SPOSArch(tuple((0, 1, 2, 1)[i % 4] for i in range(n))))]

    # -- reading ---------------------------------------------------------------------------

    def _issues(self, text: str) -> tuple[list[Any] | None, list[ValidationIssue]]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            return None, [ValidationIssue(message=f"not JSON: {error.msg}", position=error.pos, kind="syntax")]
        if isinstance(data, dict):
            issues = [ValidationIssue(message=f"unknown field {key!r} (the only field is 'choices')")
                      for key in data if key != "choices"]
            if "choices" not in data:
                return None, [ValidationIssue(message="missing field 'choices'"), *issues]
            values = data["choices"]
        elif isinstance(data, list):
            issues, values = [], data
        else:
            return None, [ValidationIssue(message=f"{EXPECTED}, got {type(data).__name__}", kind="syntax")]
        if not isinstance(values, list) or len(values) != self.n_blocks:
            got = f"{len(values)} entries" if isinstance(values, list) else type(values).__name__
            message = f"choices must be a list of {self.n_blocks} ints, got {got}"
            return None, [*issues, ValidationIssue(message=message)]
        issues += [ValidationIssue(message=f"choices[{i}] = {v!r} is not one of {list(range(N_CHOICES))}")
                   for i, v in enumerate(values) if not _is_choice(v)]
        return values, issues

    def arch(self, text: str) -> SPOSArch:
        """The typed arch of a valid text; ValueError naming the problems otherwise."""
        values, issues = self._issues(text)
        if issues or values is None:
            raise ValueError(f"invalid spos_shufflenet arch: {Validation(ok=False, issues=issues).summary()}")
        return SPOSArch(tuple(values))

    @staticmethod
    def _text(arch: SPOSArch) -> str:
        return json.dumps(arch.to_json())

    def validate(self, text: str) -> Validation:
        _, issues = self._issues(text)
        return Validation(ok=not issues, issues=issues)

    def canonical(self, text: str) -> str:
        """``{"choices": [...]}`` (a bare list becomes the object); an invalid text comes back
        with its whitespace removed."""
        _, issues = self._issues(text)
        return "".join(text.split()) if issues else self._text(self.arch(text))

    def depth(self, text: str) -> int:
        """Weight layers on the input -> logits path: stem 1, 3 per ShuffleNetV2 unit, 6 per
        Xception unit, ``conv_last`` and classifier 2 (0 for an invalid text)."""
        _, issues = self._issues(text)
        return 0 if issues else 3 + sum(6 if c == XCEPTION else 3 for c in self.arch(text).choices)

    def _sized(self, num_classes: int) -> SPOSSettings:
        return SPOSSettings(n_classes=num_classes, input_size=self.settings.input_size)

    def param_count(self, text: str, num_classes: int = 1000, *, plain: bool = False) -> int:
        """All parameters of :meth:`build`'s network (``plain`` changes nothing here)."""
        return spos_param_count(self.arch(text), self._sized(num_classes))

    def macs(self, text: str, num_classes: int = 1000) -> int:
        """Multiply-adds of the convs and the classifier at ``input_size``."""
        return spos_macs(self.arch(text), self._sized(num_classes))

    # -- EnumerableSpace -------------------------------------------------------------------

    def choices(self) -> list[list[str]]:
        return [[str(c) for c in range(N_CHOICES)] for _ in range(self.n_blocks)]

    def encode(self, text: str) -> list[int]:
        return list(self.arch(text).choices)

    def decode(self, indices: list[int]) -> str:
        if len(indices) != self.n_blocks or any(not _is_choice(i) for i in indices):
            raise ValueError(f"expected {self.n_blocks} option indices, each in 0..{N_CHOICES - 1}")
        return self._text(SPOSArch(tuple(indices)))

    def sample(self, rng: random.Random) -> str:
        return self.decode([rng.randrange(N_CHOICES) for _ in range(self.n_blocks)])

    # -- search ----------------------------------------------------------------------------

    def initial(self) -> list[str]:
        return list(self._seeds)

    def operators(self) -> list[str]:
        return list(OPERATORS)

    def local_operators(self) -> list[str]:
        return [op for op in self.operators() if op != "blocks"]

    def mutate(self, text: str, rng: random.Random, operator: str | None = None) -> Mutation:
        """``block``: one block gets another choice; ``stage``: every block of one stage the same
        choice; ``blocks``: two to four blocks each another choice. The child always differs."""
        arch = self.arch(text)
        if operator is None:
            operator = rng.choice(self.operators())
        elif operator not in self.operators():
            raise ValueError(f"unknown operator {operator!r}; known: {', '.join(self.operators())}")
        child, description = mutate_arch(arch, operator, rng, self.supernet_settings)
        return Mutation(child=self._text(child), operator=operator, description=description)

    def shrink(self, text: str, factor: float, rng: random.Random) -> Mutation:
        """Cheaper units (by their parameters), one block at a time, until the params are at most
        ``factor`` times the parent's (or every block is a 3x3 ShuffleNetV2 unit)."""
        child, description = shrink_arch(self.arch(text), factor, rng, self.supernet_settings)
        return Mutation(child=self._text(child), operator="shrink", description=description)

    def repair(self, text: str, error: str) -> str | None:
        """Deterministic fix, whatever ``error`` says: the first candidate of the text (an object
        with ``choices`` or a bare list), entries rounded and clamped to 0..3, the list cut or
        padded with 0 to 20 entries. None when no list of numbers can be read."""
        decoder = json.JSONDecoder()
        for span in self.candidates_in_answer(text):
            fixed = repair_choices(decoder.decode(span), self.n_blocks)
            if fixed is not None:
                return self._text(SPOSArch(tuple(fixed)))
        return None

    def build(self, text: str, num_classes: int, *, plain: bool = False) -> nn.Module:
        from archsmith.tools.supernets.spos_shufflenet import build_static_subnet

        return build_static_subnet(self.arch(text), self._sized(num_classes), plain=plain)

    def candidates_in_answer(self, answer: str) -> list[str]:
        """JSON objects with a ``choices`` field, and bare JSON lists of numbers, written anywhere
        in an LLM answer (a list inside an object found is not counted again)."""
        decoder, spans, start = json.JSONDecoder(), [], _next_open(answer, 0)
        while start != -1:
            try:
                value, end = decoder.raw_decode(answer, start)
            except json.JSONDecodeError:
                start = _next_open(answer, start + 1)
                continue
            if (isinstance(value, dict) and "choices" in value) or _is_number_list(value):
                spans.append(answer[start:end])
            start = _next_open(answer, end)
        return spans

    def describe(self) -> str:
        s = self.supernet_settings
        smallest, largest = (spos_macs(SPOSArch((c,) * self.n_blocks), s) / 1e6 for c in (0, XCEPTION))
        return _DESCRIPTION.format(n=self.n_blocks, repeats=list(s.stage_repeats),
                                   widths=list(s.stage_out_channels), size=s.input_size,
                                   lo=smallest, hi=largest, seed=self._seeds[-1])


def _is_choice(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < N_CHOICES


def _is_number_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value)


def _next_open(text: str, start: int) -> int:
    """Index of the next ``{`` or ``[`` at or after ``start`` (-1 when none)."""
    found = [i for i in (text.find("{", start), text.find("[", start)) if i != -1]
    return min(found) if found else -1


_DESCRIPTION = """\
A network is a subnet of the Single Path One-Shot (SPOS) ShuffleNetV2 supernet, written as one
JSON object: {{"choices": [{n} ints]}}. choices[i] says which unit choice block i runs:
- 0: ShuffleNetV2 unit, 3x3 depthwise conv
- 1: ShuffleNetV2 unit, 5x5 depthwise conv
- 2: ShuffleNetV2 unit, 7x7 depthwise conv
- 3: Xception-like unit: three depthwise 3x3 convs, each followed by a 1x1 conv (deeper, more
  parameters and FLOPs than the others)
The network: a 3x3 stride-2 conv to 16 channels; the {n} choice blocks in stages of
{repeats} blocks with {widths} output channels;
a 1x1 conv to 1024 channels, global average pooling and a linear classifier.
Blocks 0-3 are stage 0, 4-7 stage 1, 8-15 stage 2, 16-19 stage 3. The first block of a stage
halves the resolution; every other block keeps half of its channels as they are and transforms
the other half (channel split and shuffle). All four choices keep the block's width: they differ
in receptive field, depth and cost only.
Larger kernels and Xception units cost more: at {size}x{size} the network takes {lo:.0f}M
multiply-adds with every block 0 and {hi:.0f}M with every block 3.
Example: {seed}
"""
