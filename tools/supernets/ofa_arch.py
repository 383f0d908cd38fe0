"""The once-for-all MobileNetV3 arch dict and supernet settings, and the subnet's closed-form size.

Pure Python (no torch), so the ``ofa_mbv3`` search space can read, check and size candidates
without building anything. A subnet is OFA's own arch dict
``{"ks": [20 ints], "e": [20 ints], "d": [5 ints], "r": resolution}``: kernel size and expand
ratio of each of the 5 stages x 4 blocks, the depth of each stage (its first d blocks run; the
``ks``/``e`` entries of the other blocks do not matter), and the input resolution (which changes no
weight).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CHANNEL_DIVISIBLE = 8
SE_REDUCTION = 4


def make_divisible(value: float, divisor: int = CHANNEL_DIVISIBLE, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor`` (TF MobileNet rule: never more than 10% down)."""
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def se_mid_channels(channels: int) -> int:
    """Hidden width of the squeeze-and-excitation block on ``channels`` channels."""
    return make_divisible(channels // SE_REDUCTION, CHANNEL_DIVISIBLE)


def middle_channels(in_channels: int, expand_ratio: float) -> int:
    """Width of an inverted bottleneck: ``in_channels * expand_ratio``, rounded to a multiple of 8."""
    return make_divisible(round(in_channels * expand_ratio), CHANNEL_DIVISIBLE)



BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)  # stem, first block, 5 stages, expand, mix
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_ACTS = ("relu", "relu", "h_swish", "h_swish", "h_swish")
STAGE_SE = (False, True, False, True, True)
N_STAGES = 5


@dataclass(frozen=True)
class OFAMbv3Settings:
    """Construction settings of the supernet (the published ones are the defaults, width 1.0 or 1.2)."""

    width_mult: float = 1.0
    n_classes: int = 1000
    ks_list: tuple[int, ...] = (3, 5, 7)
    expand_list: tuple[int, ...] = (3, 4, 6)
    depth_list: tuple[int, ...] = (2, 3, 4)
    dropout_rate: float = 0.1

    @property
    def max_depth(self) -> int:
        return max(self.depth_list)

    @property
    def n_blocks(self) -> int:
        """Elastic blocks in all (``5 * max depth``; the fixed first block is not counted)."""
        return N_STAGES * self.max_depth

    def widths(self) -> list[int]:
        """Channel widths: stem, first block, the 5 stages, final expand, feature mix."""
        return [make_divisible(w * self.width_mult) for w in BASE_WIDTHS]

    @property
    def checkpoint_name(self) -> str:
        d, e, k = ("".join(str(v) for v in sorted(x)) for x in (self.depth_list, self.expand_list, self.ks_list))
        return f"ofa_mbv3_d{d}_e{e}_k{k}_w{self.width_mult}"


@dataclass(frozen=True)
class OFAArch:
    """One subnet: per-block kernel sizes and expand ratios, per-stage depths, input resolution."""

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int = 224

    @classmethod
    def from_json(cls, arch: Mapping[str, Any] | str | OFAArch) -> OFAArch:
        """From the arch dict (or its JSON text). Shapes are checked by ``check``, not here."""
        if isinstance(arch, OFAArch):
            return arch
        data = json.loads(arch) if isinstance(arch, str) else dict(arch)
        missing = [key for key in ("ks", "e", "d") if key not in data]
        if missing:
            raise ValueError(f"arch is missing {', '.join(missing)} (expected keys ks, e, d, r)")
        return cls(tuple(data["ks"]), tuple(data["e"]), tuple(data["d"]), int(data.get("r", 224)))

    def to_json(self) -> dict[str, Any]:
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r}

    def check(self, settings: OFAMbv3Settings) -> None:
        """Raise ``ValueError`` naming the field and position of the first bad entry."""
        lengths = {"ks": settings.n_blocks, "e": settings.n_blocks, "d": N_STAGES}
        allowed = {"ks": settings.ks_list, "e": settings.expand_list, "d": settings.depth_list}
        for name, length in lengths.items():
            values = getattr(self, name)
            if len(values) != length:
                raise ValueError(f"arch field {name!r} has {len(values)} entries, expected {length}")
            for i, value in enumerate(values):
                if value not in allowed[name]:
                    raise ValueError(f"arch field {name!r}[{i}] = {value!r} is not one of {list(allowed[name])}")


def normalised(arch: OFAArch, settings: OFAMbv3Settings) -> OFAArch:
    """The same subnet with the ``ks``/``e`` entries of blocks beyond each stage's depth set to the
    smallest choices, so that two archs of the same network compare equal."""
    ks, e = list(arch.ks), list(arch.e)
    for stage, depth in enumerate(arch.d):
        for block in range(stage * settings.max_depth + depth, (stage + 1) * settings.max_depth):
            ks[block], e[block] = min(settings.ks_list), min(settings.expand_list)
    return OFAArch(tuple(ks), tuple(e), tuple(arch.d), arch.r)


def active_blocks(arch: OFAArch, settings: OFAMbv3Settings) -> list[tuple[int, int]]:
    """(stage, block index into ``ks``/``e``) of every block that runs, in order."""
    return [(stage, stage * settings.max_depth + i) for stage, depth in enumerate(arch.d) for i in range(depth)]


def subnet_param_count(arch: OFAArch, settings: OFAMbv3Settings) -> int:
    """Parameters of the static subnet: convs, affine BatchNorms, SE biases, the classifier."""
    widths = settings.widths()
    stem, first = widths[0], widths[1]
    total = 3 * stem * 9 + 2 * stem  # first conv + BN
    total += stem * 9 + 2 * stem + stem * first + 2 * first  # first block: depthwise 3x3, 1x1
    channels = first
    for stage, block in active_blocks(arch, settings):
        out, k = widths[2 + stage], arch.ks[block]
        mid = middle_channels(channels, arch.e[block])
        total += channels * mid + 2 * mid + mid * k * k + 2 * mid + mid * out + 2 * out
        if STAGE_SE[stage]:
            se = se_mid_channels(mid)
            total += 2 * mid * se + se + mid
        channels = out
    expand, mix = widths[-2], widths[-1]
    total += channels * expand + 2 * expand + expand * mix
    return total + mix * settings.n_classes + settings.n_classes
