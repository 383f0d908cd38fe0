"""Mutation, shrinking and repair of ``ofa_mbv3`` archs (see :mod:`archsmith.tools.spaces.ofa_mbv3`).

Pure functions of an ``OFAArch`` and an explicit ``random.Random``; the results are normalised
(blocks a stage does not run at the smallest choices), so a change always changes the network.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from archsmith.tools.spaces.base import greedy_shrink
from archsmith.tools.supernets.ofa_arch import (
    OFAArch,
    OFAMbv3Settings,
    active_blocks,
    normalised,
    subnet_param_count,
)

SINGLE = ("kernel", "expand", "depth", "resolution")


def _set(values: tuple[int, ...], index: int, value: int) -> tuple[int, ...]:
    return values[:index] + (value,) + values[index + 1:]


def _block_name(block: int, settings: OFAMbv3Settings) -> str:
    return f"block {block} (stage {block // settings.max_depth}, position {block % settings.max_depth})"


def _one_change(
    arch: OFAArch, kind: str, rng: random.Random, s: OFAMbv3Settings, resolutions: Sequence[int]
) -> tuple[OFAArch, str]:
    """One change of ``kind`` to a different value (kernel/expand only on a running block)."""
    if kind in ("kernel", "expand"):
        field, options = ("ks", s.ks_list) if kind == "kernel" else ("e", s.expand_list)
        _, block = rng.choice(active_blocks(arch, s))
        old = getattr(arch, field)[block]
        new = rng.choice([v for v in options if v != old])
        return replace(arch, **{field: _set(getattr(arch, field), block, new)}), \
            f"{_block_name(block, s)}: {field} {old} -> {new}"
    if kind == "depth":
        stage = rng.randrange(len(arch.d))
        new = rng.choice([v for v in s.depth_list if v != arch.d[stage]])
        return replace(arch, d=_set(arch.d, stage, new)), f"stage {stage}: depth {arch.d[stage]} -> {new}"
    if kind == "resolution":
        new = rng.choice([v for v in resolutions if v != arch.r])
        return replace(arch, r=new), f"resolution {arch.r} -> {new}"
    raise ValueError(f"unknown change {kind!r}")


def mutate_arch(
    arch: OFAArch, operator: str, rng: random.Random, settings: OFAMbv3Settings, resolutions: Sequence[int]
) -> tuple[OFAArch, str]:
    """The child of ``operator``: one of ``SINGLE``, or ``blocks`` (two to four kernel, expand or
    depth changes)."""
    parent = normalised(arch, settings)
    if operator != "blocks":
        child, description = _one_change(parent, operator, rng, settings, resolutions)
        return normalised(child, settings), description
    kinds = ("kernel", "expand", "depth")
    for _ in range(20):  # a later change may undo an earlier one; try again then
        child, changes = parent, []
        for _ in range(rng.randint(2, 4)):
            child, description = _one_change(child, rng.choice(kinds), rng, settings, resolutions)
            changes.append(description)
        child = normalised(child, settings)
        if child != parent:
            return child, "; ".join(changes)
    return _one_change(parent, "depth", rng, settings, resolutions)


def _smaller(arch: OFAArch, s: OFAMbv3Settings) -> list[tuple[OFAArch, str]]:
    """Every one-step reduction: a stage one block shallower, a running block's kernel size or
    expand ratio one choice smaller."""
    moves = []
    for stage, depth in enumerate(arch.d):
        smaller = [v for v in s.depth_list if v < depth]
        if smaller:
            moves.append((replace(arch, d=_set(arch.d, stage, max(smaller))),
                          f"stage {stage}: depth {depth} -> {max(smaller)}"))
    for _, block in active_blocks(arch, s):
        for field, options in (("ks", s.ks_list), ("e", s.expand_list)):
            old = getattr(arch, field)[block]
            smaller = [v for v in options if v < old]
            if smaller:
                moves.append((replace(arch, **{field: _set(getattr(arch, field), block, max(smaller))}),
                              f"{_block_name(block, s)}: {field} {old} -> {max(smaller)}"))
    return [(normalised(a, s), d) for a, d in moves]


def shrink_arch(arch: OFAArch, factor: float, rng: random.Random, s: OFAMbv3Settings) -> tuple[OFAArch, str]:
    """Greedy one-step reductions until the params are at most ``factor`` x the parent's: the step
    that fits and keeps the most params when one fits, else the one that saves the most."""
    current, changes, before, after = greedy_shrink(
        normalised(arch, s), lambda a: subnet_param_count(a, s), lambda a: _smaller(a, s), factor, rng)
    summary = f"params {before:,} -> {after:,} (x{after / before:.2f}, asked x{factor:.2f})"
    if after > before * factor:
        summary += "; the smallest subnet of the space"
    return current, "; ".join([*changes, summary])


def _nearest(value: Any, options: Sequence[int]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return min(options, key=lambda option: (abs(option - value), option))


def repair_fields(data: dict[str, Any], allowed: dict[str, Sequence[int]], lengths: dict[str, int]) -> dict | None:
    """``data`` with every entry at its nearest allowed value, lists cut or padded (with the
    smallest choice) to their length and a missing ``r`` at the largest resolution; None when
    ``ks``, ``e`` or ``d`` is not a list of numbers."""
    fixed: dict[str, Any] = {}
    for key, length in lengths.items():
        values = data.get(key)
        if not isinstance(values, list):
            return None
        nearest = [_nearest(v, allowed[key]) for v in values[:length]]
        if any(v is None for v in nearest):
            return None
        fixed[key] = nearest + [min(allowed[key])] * (length - len(nearest))
    r = _nearest(data.get("r"), allowed["r"])
    fixed["r"] = max(allowed["r"]) if r is None else r
    return fixed
