"""The Zen-NAS template search space (structure strings), as used by Zen-NAS and PhaseNAS.

The language and the alias rule are documented in :mod:`template_grammar`; the layer expansion
(exactly Zen-NAS's PlainNet super blocks) in :mod:`template_rules`; mutation, shrinking and
repair in :mod:`template_mutation`. Importing this module does not import torch: only
:meth:`TemplateSpace.build` does, inside the sandbox.

Settings (the ``space.settings`` table): ``max_layers`` (default 18, Zen-NAS's CIFAR search,
counted as Zen-NAS counts layers: the sum of ``sub_layers``) and ``initial`` (seed structures
that replace the built-in ones; the built-in seeds are trimmed to fit ``max_layers``).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from archsmith.tools.spaces.base import Mutation, Validation, ValidationIssue, checked_seeds, register_space
from archsmith.tools.spaces.template_grammar import (
    CONV_ARGS,
    RES_ARGS,
    Block,
    TemplateSyntaxError,
    parse,
    render,
)
from archsmith.tools.spaces.template_mutation import (
    OPERATORS,
    mutate_blocks,
    repair_blocks,
    shrink_blocks,
)
from archsmith.tools.spaces.template_rules import check, conv_depth, param_count

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

DEFAULT_MAX_LAYERS = 18

# Seeds for CIFAR (32x32, 10 classes), each under 1.0 M parameters. The first is the initial
# structure of Zen-NAS's CIFAR searches (scripts/Zen_NAS_cifar_params1M.sh).
DEFAULT_SEEDS = (
    "SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,1,8,1)SuperResK3K3(16,32,2,16,1)"
    "SuperResK3K3(32,64,2,32,1)SuperResK3K3(64,64,2,32,1)SuperConvK1BNRELU(64,128,1,1)",
    "SuperConvK3BNRELU(3,32,1,1)SuperResK1K3K1(32,64,1,16,1)SuperResK1K5K1(64,128,2,32,1)"
    "SuperResK1K3K1(128,256,2,64,1)SuperConvK1BNRELU(256,512,1,1)",
    "SuperConvK3BNRELU(3,16,1,1)SuperResIDWE4K3(16,24,1,16,1)SuperResIDWE4K3(24,40,2,24,2)"
    "SuperResIDWE6K5(40,80,2,40,2)SuperConvK1BNRELU(80,256,1,1)",
)


class TemplateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_layers: int = Field(DEFAULT_MAX_LAYERS, ge=1, description="limit on the sum of sub_layers")
    initial: list[str] | None = Field(None, description="seed structures replacing the built-in ones")


@register_space("template")
class TemplateSpace:
    """Zen-NAS structure strings: validation, mutation, repair, shrinking and building."""

    name: ClassVar[str] = "template"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = TemplateSettings.model_validate(settings or {})
        self.max_layers = self.settings.max_layers
        if self.settings.initial is None:  # the built-in seeds, trimmed to the layer limit
            trimmed = (repair_blocks(seed, self.max_layers) for seed in DEFAULT_SEEDS)
            seeds = list(dict.fromkeys(render(blocks) for blocks in trimmed if blocks is not None))
        else:
            seeds = checked_seeds(self, self.settings.initial, "seed structure")
        self._seeds = [self.canonical(seed) for seed in seeds]

    # -- reading ---------------------------------------------------------------------------

    def parse(self, text: str) -> list[Block]:
        """The blocks of a structure; raises :class:`TemplateSyntaxError` (with a position)."""
        return parse(text)

    def _valid_blocks(self, text: str) -> list[Block]:
        """The blocks of a valid structure; ValueError naming the problems otherwise."""
        validation = self.validate(text)
        if not validation.ok:
            raise ValueError(f"invalid template structure: {validation.summary()}")
        return parse(text)

    def validate(self, text: str) -> Validation:
        try:
            blocks = parse(text)
        except TemplateSyntaxError as err:
            issue = ValidationIssue(message=err.message, position=err.position, kind="syntax")
            return Validation(ok=False, issues=[issue])
        issues = check(blocks, self.max_layers)
        return Validation(ok=not issues, issues=issues)

    def canonical(self, text: str) -> str:
        try:
            return render(parse(text))
        except TemplateSyntaxError:
            return "".join(text.split())

    def depth(self, text: str) -> int:
        try:
            return conv_depth(parse(text))
        except TemplateSyntaxError:
            return 0

    def param_count(self, text: str, num_classes: int, *, plain: bool = False) -> int:
        """Exact parameter count of :meth:`build`'s network, without building it."""
        return param_count(self._valid_blocks(text), num_classes, plain)

    # -- search ----------------------------------------------------------------------------

    def initial(self) -> list[str]:
        return list(self._seeds)

    def operators(self) -> list[str]:
        return list(OPERATORS)

    def local_operators(self) -> list[str]:
        """Refinement keeps the block structure (PhaseNAS): it tunes blocks, never adds/removes."""
        return [op for op in OPERATORS if op not in ("insert_block", "remove_block", "block_type")]

    def mutate(self, text: str, rng: random.Random, operator: str | None = None) -> Mutation:
        """One operator on a valid structure (ValueError for an invalid parent or an unknown
        operator name); an operator that does not apply falls back to another (see description)."""
        blocks = self._valid_blocks(text)
        child, applied, description = mutate_blocks(blocks, rng, operator, self.max_layers)
        return Mutation(child=render(child), operator=applied, description=description)

    def repair(self, text: str, error: str) -> str | None:
        """Deterministic fix of channels, strides, sub_layers, kernels and the layer limit;
        ``error`` is not needed (every rule is fixed whatever failed). None when no block can be
        read or the result would still be invalid."""
        blocks = repair_blocks(text, self.max_layers)
        return render(blocks) if blocks is not None else None

    def shrink(self, text: str, factor: float, rng: random.Random) -> Mutation:
        """Widths (and, chosen by ``rng`` or when needed, sub_layers) scaled so that the parameter
        count drops to about ``factor`` times; ValueError for an invalid structure."""
        child, description = shrink_blocks(self._valid_blocks(text), factor, rng)
        return Mutation(child=render(child), operator="shrink", description=description)

    def build(self, text: str, num_classes: int, *, plain: bool = False) -> nn.Module:
        from archsmith.tools.spaces.template_blocks import TemplateNet

        return TemplateNet(self._valid_blocks(text), num_classes, plain=plain)

    def describe(self) -> str:
        return _DESCRIPTION.format(
            max_layers=self.max_layers, conv_args=CONV_ARGS, res_args=RES_ARGS, seed=DEFAULT_SEEDS[0]
        )


_DESCRIPTION = """\
A network is a structure string: blocks written one after another (Zen-NAS template space).
Blocks, with their arguments:
- SuperConvK{{1,3,5,7}}BNRELU({conv_args}): sub_layers x (KxK conv, BatchNorm, ReLU).
- SuperResK{{3,5,7}}K{{3,5,7}}({res_args}): sub_layers residual units of two KxK convs
  (in->bottleneck->out); both kernels equal (K3K3, K5K5, K7K7).
- SuperResK1K{{3,5,7}}K1({res_args}): per sub-layer two residual bottleneck units
  1x1 (->bottleneck), KxK, 1x1 (->out); 6 convs per sub-layer.
- SuperResIDWE{{1,2,4,6}}K{{3,5,7}}({res_args}): per sub-layer two inverted depthwise units;
  1x1 expands to E x channels, KxK depthwise conv, 1x1 projects (first unit to the bottleneck
  width, second to out).
The stride applies to the first sub-layer of a block only. The network ends with global average
pooling and a linear classifier (not written in the string).
Rules:
- The first block takes 3 input channels (the image); each block's in equals the previous out.
- Channels (out, bottleneck) are multiples of 8; stride is 1 or 2; sub_layers >= 1.
- At most {max_layers} layers, counted as Zen-NAS does: the sum of sub_layers over all blocks.
Short aliases are accepted and rewritten to the Super names: ConvK3BNReLU = SuperConvK3BNRELU,
ResK3K3 = SuperResK3K3, ResK1K5K1 = SuperResK1K5K1, ResIDWE4K3 = SuperResIDWE4K3. An alias takes
the same arguments; a Res alias may omit the bottleneck, ResK3K3(in,out,stride,sub_layers), which
means bottleneck = out.
Example: {seed}
"""
