"""The once-for-all MobileNetV3 macro space (Cai et al., ICLR 2020), registered as ``"ofa_mbv3"``.

A candidate is OFA's own arch dict as JSON, ``{"ks": [20 ints], "e": [20 ints], "d": [5 ints],
"r": resolution}``: the kernel size (3/5/7) and expand ratio (3/4/6) of each of 5 stages x 4
blocks, each stage's depth (2/3/4: its first d blocks run) and the input resolution (128-224 in
steps of 16). The canonical form writes the four fields in that order with the ``ks``/``e``
entries of the blocks a stage does not run set to the smallest choices (they do not matter).
Sizes are closed forms (every parameter of the built subnet); ``build`` makes the static subnet
with fresh weights; :func:`archsmith.tools.supernets.extract_subnet` makes it with the weights a
supernet checkpoint gives it. Settings: ``width_mult`` (1.0 or 1.2 for the published supernets),
``resolutions``, ``initial`` (seed archs). Importing this module does not import torch.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from archsmith.tools.spaces.base import Mutation, Validation, ValidationIssue, checked_seeds, register_space
from archsmith.tools.spaces.ofa_mbv3_mutation import mutate_arch, repair_fields, shrink_arch
from archsmith.tools.supernets.ofa_arch import (
    N_STAGES,
    OFAArch,
    OFAMbv3Settings,
    normalised,
    subnet_param_count,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

FIELDS = ("ks", "e", "d", "r")
OPERATORS = ("kernel", "expand", "depth", "resolution", "blocks")
DEFAULT_RESOLUTIONS = tuple(range(128, 225, 16))


class OFAMbv3SpaceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width_mult: float = Field(1.0, gt=0, description="width multiplier of the supernet (published: 1.0, 1.2)")
    resolutions: list[int] = Field(default_factory=lambda: list(DEFAULT_RESOLUTIONS), min_length=1)
    kernel_sizes: list[int] = Field([3, 5, 7], min_length=1, description="kernel choices (odd; published: 3, 5, 7)")
    expand_ratios: list[int] = Field([3, 4, 6], min_length=1, description="expand ratio choices (published: 3, 4, 6)")
    depths: list[int] = Field([2, 3, 4], min_length=1, description="stage depth choices (published: 2, 3, 4)")
    initial: list[str] | None = Field(None, description="seed archs (JSON) replacing the built-in ones")

    @field_validator("resolutions")
    @classmethod
    def _positive_sorted(cls, values: list[int]) -> list[int]:
        if any(v < 16 for v in values):
            raise ValueError("every resolution must be at least 16 (the network halves it 5 times)")
        return sorted(set(values))

    @field_validator("kernel_sizes")
    @classmethod
    def _odd_kernels(cls, values: list[int]) -> list[int]:
        if any(v < 1 or v % 2 == 0 for v in values):
            raise ValueError(f"kernel sizes must be odd and positive, got {values}")
        return sorted(set(values))

    @field_validator("expand_ratios", "depths")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if any(v < 1 for v in values):
            raise ValueError(f"every choice must be at least 1, got {values}")
        return sorted(set(values))

    def supernet_settings(self, n_classes: int = 1000) -> OFAMbv3Settings:
        return OFAMbv3Settings(width_mult=self.width_mult, n_classes=n_classes, ks_list=tuple(self.kernel_sizes),
                               expand_list=tuple(self.expand_ratios), depth_list=tuple(self.depths))


@register_space("ofa_mbv3")
class OFAMbv3Space:
    """OFA MobileNetV3 subnets: parsing, checks, canonical form, closed-form size, mutation, build."""

    name: ClassVar[str] = "ofa_mbv3"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = OFAMbv3SpaceSettings.model_validate(settings or {})
        self.supernet_settings = self.settings.supernet_settings()
        s = self.supernet_settings
        self._allowed = {"ks": s.ks_list, "e": s.expand_list, "d": s.depth_list, "r": tuple(self.settings.resolutions)}
        self._lengths = {"ks": s.n_blocks, "e": s.n_blocks, "d": N_STAGES}
        seeds = self.settings.initial if self.settings.initial is not None else self._default_seeds()
        self._seeds = checked_seeds(self, seeds, "seed arch")

    def _default_seeds(self) -> list[str]:
        """Two arbitrary subnets: the smallest at the largest resolution, and a middle one."""
        s, r = self.supernet_settings, self._allowed["r"]
        n, middle = s.n_blocks, (lambda options: sorted(options)[len(options) // 2])
        smallest = OFAArch((min(s.ks_list),) * n, (min(s.expand_list),) * n, (min(s.depth_list),) * N_STAGES, r[-1])
        mid = OFAArch((middle(s.ks_list),) * n, (middle(s.expand_list),) * n, (middle(s.depth_list),) * N_STAGES,
                      middle(r))
        return [self._text(smallest), self._text(mid)]

    # -- reading ---------------------------------------------------------------------------

    def _issues(self, text: str) -> tuple[dict[str, Any] | None, list[ValidationIssue]]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            return None, [ValidationIssue(message=f"not JSON: {error.msg}", position=error.pos, kind="syntax")]
        if not isinstance(data, dict):
            return None, [ValidationIssue(message="expected a JSON object with keys ks, e, d, r", kind="syntax")]
        issues = [ValidationIssue(message=f"missing field {key!r}") for key in FIELDS if key not in data]
        issues += [ValidationIssue(message=f"unknown field {key!r} (fields: ks, e, d, r)") for key in data
                   if key not in FIELDS]
        for key, length in self._lengths.items():
            values = data.get(key)
            if key not in data:
                continue
            if not isinstance(values, list) or len(values) != length:
                got = f"{len(values)} entries" if isinstance(values, list) else type(values).__name__
                issues.append(ValidationIssue(message=f"{key} must be a list of {length} ints, got {got}"))
                continue
            issues += [ValidationIssue(message=f"{key}[{i}] = {v!r} is not one of {list(self._allowed[key])}")
                       for i, v in enumerate(values) if not self._is_choice(v, key)]
        if "r" in data and not self._is_choice(data["r"], "r"):
            issues.append(ValidationIssue(message=f"r = {data['r']!r} is not one of {list(self._allowed['r'])}"))
        return data, issues

    def _is_choice(self, value: Any, key: str) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value in self._allowed[key]

    def arch(self, text: str) -> OFAArch:
        """The typed arch of a valid text (normalised); ValueError naming the problems otherwise."""
        data, issues = self._issues(text)
        if issues or data is None:
            raise ValueError(f"invalid ofa_mbv3 arch: {Validation(ok=False, issues=issues).summary()}")
        return normalised(OFAArch.from_json(data), self.supernet_settings)

    def _text(self, arch: OFAArch) -> str:
        return json.dumps(normalised(arch, self.supernet_settings).to_json())

    def validate(self, text: str) -> Validation:
        _, issues = self._issues(text)
        return Validation(ok=not issues, issues=issues)

    def canonical(self, text: str) -> str:
        """Fields in order, unused blocks at the smallest choices; an invalid text comes back with
        its whitespace removed."""
        _, issues = self._issues(text)
        return "".join(text.split()) if issues else self._text(self.arch(text))

    def depth(self, text: str) -> int:
        """Weight layers on the input -> logits path: stem 1, first block 2, 3 per running block,
        final expand, feature mix and classifier 3 (0 for an invalid text)."""
        _, issues = self._issues(text)
        return 0 if issues else 6 + 3 * sum(self.arch(text).d)

    def param_count(self, text: str, num_classes: int = 1000, *, plain: bool = False) -> int:
        """All parameters of :meth:`build`'s network (plain or not: residual links hold none)."""
        return subnet_param_count(self.arch(text), self.settings.supernet_settings(num_classes))

    # -- EnumerableSpace -------------------------------------------------------------------

    def choices(self) -> list[list[str]]:
        options = [[str(v) for v in self._allowed[key]] for key in FIELDS]
        return [options[0]] * self._lengths["ks"] + [options[1]] * self._lengths["e"] + [options[2]] * N_STAGES + [
            options[3]]

    def encode(self, text: str) -> list[int]:
        arch = self.arch(text)
        values = [*arch.ks, *arch.e, *arch.d, arch.r]
        return [options.index(str(v)) for options, v in zip(self.choices(), values)]

    def decode(self, indices: list[int]) -> str:
        choices = self.choices()
        if len(indices) != len(choices) or any(not 0 <= i < len(c) for i, c in zip(indices, choices)):
            raise ValueError(f"expected {len(choices)} option indices within each position's options")
        values = [int(c[i]) for c, i in zip(choices, indices)]
        n = self._lengths["ks"]
        return self._text(OFAArch(tuple(values[:n]), tuple(values[n:2 * n]), tuple(values[2 * n:-1]), values[-1]))

    def sample(self, rng: random.Random) -> str:
        return self.decode([rng.randrange(len(options)) for options in self.choices()])

    # -- search ----------------------------------------------------------------------------

    def initial(self) -> list[str]:
        return list(self._seeds)

    def operators(self) -> list[str]:
        return [op for op in OPERATORS if op != "resolution" or len(self._allowed["r"]) > 1]

    def local_operators(self) -> list[str]:
        return [op for op in self.operators() if op != "blocks"]

    def mutate(self, text: str, rng: random.Random, operator: str | None = None) -> Mutation:
        """``kernel``/``expand``: one running block gets another kernel size / expand ratio;
        ``depth``: one stage another depth; ``resolution``: another input size; ``blocks``: two to
        four kernel, expand or depth changes. The child is always a different valid arch."""
        arch = self.arch(text)
        if operator is None:
            operator = rng.choice(self.operators())
        elif operator not in self.operators():
            raise ValueError(f"unknown operator {operator!r}; known: {', '.join(self.operators())}")
        child, description = mutate_arch(arch, operator, rng, self.supernet_settings, self._allowed["r"])
        return Mutation(child=self._text(child), operator=operator, description=description)

    def shrink(self, text: str, factor: float, rng: random.Random) -> Mutation:
        """Smaller running blocks, kernels and expand ratios, one step at a time, until the params
        are at most ``factor`` times the parent's (or nothing is left to shrink)."""
        child, description = shrink_arch(self.arch(text), factor, rng, self.supernet_settings)
        return Mutation(child=self._text(child), operator="shrink", description=description)

    def repair(self, text: str, error: str) -> str | None:
        """Deterministic fix, whatever ``error`` says: the first JSON object of the text, entries
        outside the choices moved to the nearest choice, lists cut or padded (smallest choice) to
        their length, a missing ``r`` set to the largest resolution. None when no object with
        ``ks``, ``e`` and ``d`` lists can be read."""
        objects = [json.loads(span) for span in self.candidates_in_answer(text)]
        if not objects:
            return None
        fixed = repair_fields(objects[0], self._allowed, self._lengths)
        return None if fixed is None else self.canonical(json.dumps(fixed))

    def build(self, text: str, num_classes: int, *, plain: bool = False) -> nn.Module:
        from archsmith.tools.supernets.ofa_mbv3 import build_static_subnet

        return build_static_subnet(self.arch(text), self.settings.supernet_settings(num_classes), plain=plain)

    def input_resolution(self, text: str) -> int | None:
        """The input size the candidate fixes itself (its ``r``); None for an invalid text."""
        _, issues = self._issues(text)
        return None if issues else self.arch(text).r

    def candidates_in_answer(self, answer: str) -> list[str]:
        """JSON objects with a ``ks`` field written anywhere in an LLM answer."""
        decoder, spans, start = json.JSONDecoder(), [], answer.find("{")
        while start != -1:
            try:
                value, end = decoder.raw_decode(answer, start)
            except json.JSONDecodeError:
                start = answer.find("{", start + 1)
                continue
            if isinstance(value, dict) and "ks" in value:
                spans.append(answer[start:end])
            start = answer.find("{", end)
        return spans

    def describe(self) -> str:
        s = self.supernet_settings
        return _DESCRIPTION.format(
            width=s.width_mult, n=s.n_blocks, m=s.max_depth, ks=list(s.ks_list), e=list(s.expand_list), d=list(s.depth_list),
            r=self.settings.resolutions, seed=self._seeds[0],
        )


_DESCRIPTION = """\
A network is a subnet of the once-for-all MobileNetV3 supernet (width multiplier {width}), written
as one JSON object: {{"ks": [{n} ints], "e": [{n} ints], "d": [5 ints], "r": int}}.
The network: a 3x3 stride-2 stem, a fixed first block, then stages 0-4 of up to {m}
inverted-bottleneck blocks each (1x1 expand, depthwise k x k, 1x1 project; squeeze-and-excitation
in stages 1, 3 and 4; ReLU in stages 0-1, hard swish after), a final 1x1 expand, global pooling, a
1x1 feature mix and a linear classifier. Stage widths 24, 40, 80, 112, 160 (x {width}, rounded to
multiples of 8); stages 0, 1, 2 and 4 halve the resolution in their first block.
- ks[i], e[i]: kernel size {ks} and expand ratio {e} of block i (stage i // {m}, position i % {m}).
- d[j]: depth {d} of stage j: only its first d[j] blocks run; the entries of the others do not
  matter (the canonical form sets them to the smallest choices).
- r: input resolution, one of {r}; it changes no weight, only the cost of running the network.
Larger kernels, expand ratios and depths cost parameters and FLOPs. Example: {seed}
"""
