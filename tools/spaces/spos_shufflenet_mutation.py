"""Mutation, shrinking and repair of ``spos_shufflenet`` archs (see
:mod:`archsmith.tools.spaces.spos_shufflenet`).

Pure functions of an ``SPOSArch`` and an explicit ``random.Random``; every mutation changes at
least one block, so a child always differs from its parent.
"""

from __future__ import annotations

import random
from typing import Any

from archsmith.tools.spaces.base import greedy_shrink
from archsmith.tools.supernets.spos_arch import (
    CHOICE_NAMES,
    N_CHOICES,
    SPOSArch,
    SPOSSettings,
    block_param_count,
    spos_param_count,
)


def _set(arch: SPOSArch, block: int, choice: int) -> SPOSArch:
    return SPOSArch(arch.choices[:block] + (choice,) + arch.choices[block + 1:])


def block_name(block: int, s: SPOSSettings) -> str:
    stage = s.stage_of(block)
    return f"block {block} (stage {stage}, position {block - ([0] + s.stage_ends())[stage]})"


def _change(block: int, old: int, new: int, s: SPOSSettings) -> str:
    return f"{block_name(block, s)}: {old} ({CHOICE_NAMES[old]}) -> {new} ({CHOICE_NAMES[new]})"


def mutate_arch(arch: SPOSArch, operator: str, rng: random.Random, s: SPOSSettings) -> tuple[SPOSArch, str]:
    """The child of ``operator``: ``block`` (one block another choice), ``stage`` (every block of
    one stage the same choice, one that some block there does not hold yet) or ``blocks`` (two
    to four different blocks each another choice)."""
    if operator in ("block", "blocks"):
        count = 1 if operator == "block" else min(rng.randint(2, 4), s.n_blocks)
        child, changes = arch, []
        for block in sorted(rng.sample(range(s.n_blocks), count)):
            old = arch.choices[block]
            new = rng.choice([c for c in range(N_CHOICES) if c != old])
            child = _set(child, block, new)
            changes.append(_change(block, old, new, s))
        return child, "; ".join(changes)
    if operator == "stage":
        stage = rng.randrange(len(s.stage_repeats))
        start = ([0] + s.stage_ends())[stage]
        blocks = range(start, start + s.stage_repeats[stage])
        held = [arch.choices[b] for b in blocks]
        new = rng.choice([c for c in range(N_CHOICES) if any(h != c for h in held)])
        choices = list(arch.choices)
        for b in blocks:
            choices[b] = new
        description = f"stage {stage}: all {len(blocks)} blocks {held} -> {new} ({CHOICE_NAMES[new]})"
        return SPOSArch(tuple(choices)), description
    raise ValueError(f"unknown operator {operator!r}")


def _cheaper(arch: SPOSArch, s: SPOSSettings) -> list[tuple[SPOSArch, str]]:
    """Every one-step reduction: one block to the next cheaper choice (by its parameters)."""
    moves = []
    for block, spec in enumerate(s.blocks()):
        old = arch.choices[block]
        own = block_param_count(spec, old)
        cheaper = [(block_param_count(spec, c), c) for c in range(N_CHOICES) if block_param_count(spec, c) < own]
        if cheaper:
            new = max(cheaper)[1]
            moves.append((_set(arch, block, new), _change(block, old, new, s)))
    return moves


def shrink_arch(arch: SPOSArch, factor: float, rng: random.Random, s: SPOSSettings) -> tuple[SPOSArch, str]:
    """Greedy one-step reductions until the params are at most ``factor`` x the parent's: the step
    that fits and keeps the most params when one fits, else the one that saves the most."""
    current, changes, before, after = greedy_shrink(
        arch, lambda a: spos_param_count(a, s), lambda a: _cheaper(a, s), factor, rng)
    summary = f"params {before:,} -> {after:,} (x{after / before:.2f}, asked x{factor:.2f})"
    if after > before * factor:
        summary += "; the smallest subnet of the space (every block a 3x3 ShuffleNetV2 unit)"
    return current, "; ".join([*changes, summary])


def repair_choices(data: Any, n_blocks: int) -> list[int] | None:
    """The choices of ``data`` (``{"choices": [...]}`` or a bare list) rounded and clamped to
    0..3, cut or padded (with 0) to ``n_blocks``; None when they are not a list of numbers."""
    values = data.get("choices") if isinstance(data, dict) else data
    if not isinstance(values, list) or not values:
        return None
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        return None
    fixed = [min(N_CHOICES - 1, max(0, round(v))) for v in values[:n_blocks]]
    return fixed + [0] * (n_blocks - len(fixed))
