"""The SPOS ShuffleNetV2 subnet (a list of choice indices), the supernet settings, and the
subnet's closed-form size and cost.

Pure Python (no torch), so the ``spos_shufflenet`` search space can read, check and size
candidates without building anything. A subnet is the list of SPOS's choice indices, one per
choice block (20 for the standard space: stages of 4, 4, 8 and 4 blocks), each one of

- 0: ShuffleNetV2 unit with a 3x3 depthwise conv,
- 1: the same with 5x5,
- 2: the same with 7x7,
- 3: Xception-like unit (three depthwise 3x3 convs, each followed by a pointwise conv),

as in megvii-model/SinglePathOneShot (Guo et al., ECCV 2020). JSON form: ``{"choices": [...]}``
(a bare list is read too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CHOICE_NAMES = ("shufflenet_3x3", "shufflenet_5x5", "shufflenet_7x7", "xception_3x3")
CHOICE_KERNELS = (3, 5, 7, 3)
XCEPTION = 3
N_CHOICES = len(CHOICE_NAMES)


@dataclass(frozen=True)
class SPOSSettings:
    """Construction settings of the supernet (the defaults are the published 1.0x ImageNet one).

    ``input_size`` changes no weight; it is the image size the closed-form MACs are counted at.
    """

    n_classes: int = 1000
    stage_repeats: tuple[int, ...] = (4, 4, 8, 4)
    stage_out_channels: tuple[int, ...] = (64, 160, 320, 640)
    first_channels: int = 16
    last_channels: int = 1024
    input_size: int = 224
    dropout_rate: float = 0.1

    def __post_init__(self) -> None:
        if len(self.stage_repeats) != len(self.stage_out_channels):
            raise ValueError("stage_repeats and stage_out_channels must have one entry per stage")
        for channels in (self.first_channels, *self.stage_out_channels):
            if channels % 4:
                raise ValueError(f"channel count {channels} is not a multiple of 4 (channel split needs it)")

    @property
    def n_blocks(self) -> int:
        """Choice blocks in all (20 for the standard space)."""
        return sum(self.stage_repeats)

    def stage_of(self, block: int) -> int:
        """The stage block ``block`` (0-based, over all stages) belongs to."""
        for stage, end in enumerate(self.stage_ends()):
            if block < end:
                return stage
        raise IndexError(f"block {block} is beyond the {self.n_blocks} blocks")

    def stage_ends(self) -> list[int]:
        ends, total = [], 0
        for repeat in self.stage_repeats:
            total += repeat
            ends.append(total)
        return ends

    def blocks(self) -> list[BlockSpec]:
        """The fixed shape of every choice block (the same for all four choices)."""
        specs, channels, size = [], self.first_channels, conv_out_size(self.input_size, 3, 2)
        for stage, (repeat, out) in enumerate(zip(self.stage_repeats, self.stage_out_channels)):
            for i in range(repeat):
                stride = 2 if i == 0 else 1
                inp = channels if stride == 2 else channels // 2
                specs.append(BlockSpec(stage, inp, out, out // 2, stride, size))
                size = conv_out_size(size, 3, stride)
                channels = out
        return specs


@dataclass(frozen=True)
class BlockSpec:
    """One choice block: ``inp`` channels into the main branch (the whole input at stride 2, half
    of it after the channel split at stride 1), ``out`` channels out, ``mid`` the main branch's
    width, ``size`` the input's height (= width)."""

    stage: int
    inp: int
    out: int
    mid: int
    stride: int
    size: int

    @property
    def main_out(self) -> int:
        """Channels the main branch adds (the rest come from the projection or the split)."""
        return self.out - self.inp


def conv_out_size(size: int, kernel: int, stride: int) -> int:
    """Output height of a conv with padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class SPOSArch:
    """One subnet: the choice index of every choice block."""

    choices: tuple[int, ...]

    @classmethod
    def from_json(cls, arch: Mapping[str, Any] | Sequence[int] | str | SPOSArch) -> SPOSArch:
        """From ``{"choices": [...]}``, a bare list, or either as JSON text. Values are checked
        by ``check``, not here."""
        if isinstance(arch, SPOSArch):
            return arch
        data = json.loads(arch) if isinstance(arch, str) else arch
        if isinstance(data, Mapping):
            if "choices" not in data:
                raise ValueError("arch is missing choices (expected {\"choices\": [one int per block]})")
            data = data["choices"]
        if isinstance(data, str | bytes) or not isinstance(data, Sequence):
            raise TypeError(f"arch choices must be a list of ints, got {type(data).__name__}")
        return cls(tuple(data))

    def to_json(self) -> dict[str, Any]:
        return {"choices": list(self.choices)}

    def check(self, settings: SPOSSettings) -> None:
        """Raise ``ValueError`` naming the position of the first bad entry."""
        if len(self.choices) != settings.n_blocks:
            raise ValueError(f"arch field 'choices' has {len(self.choices)} entries, expected {settings.n_blocks}")
        for i, value in enumerate(self.choices):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < N_CHOICES:
                raise ValueError(f"arch field 'choices'[{i}] = {value!r} is not one of {list(range(N_CHOICES))}")


def block_param_count(spec: BlockSpec, choice: int) -> int:
    """Parameters of one choice block in the static subnet (convs and affine BatchNorms)."""
    inp, mid, main_out = spec.inp, spec.mid, spec.main_out
    if choice == XCEPTION:
        main = inp * 9 + 2 * inp + inp * mid + 2 * mid + 2 * (mid * 9 + 2 * mid) + mid * mid + 2 * mid
    else:
        k = CHOICE_KERNELS[choice]
        main = inp * mid + 2 * mid + mid * k * k + 2 * mid
    main += mid * main_out + 2 * main_out
    if spec.stride == 2:
        k = CHOICE_KERNELS[choice]
        main += inp * k * k + 2 * inp + inp * inp + 2 * inp
    return main


def block_macs(spec: BlockSpec, choice: int) -> int:
    """Multiply-adds of one choice block's convs (BatchNorm, ReLU and the shuffle not counted)."""
    inp, mid, main_out, stride = spec.inp, spec.mid, spec.main_out, spec.stride
    k = CHOICE_KERNELS[choice]
    big, small = spec.size ** 2, conv_out_size(spec.size, k, stride) ** 2
    if choice == XCEPTION:
        macs = inp * 9 * small + (inp * mid + 2 * mid * 9 + mid * mid + mid * main_out) * small
    else:
        macs = inp * mid * big + mid * k * k * small + mid * main_out * small
    if stride == 2:
        macs += (inp * k * k + inp * inp) * small
    return macs


def spos_param_count(arch: SPOSArch, settings: SPOSSettings) -> int:
    """Parameters of the static subnet: convs, affine BatchNorms, the bias-free classifier."""
    s = settings
    total = 3 * s.first_channels * 9 + 2 * s.first_channels
    total += sum(block_param_count(spec, c) for spec, c in zip(s.blocks(), arch.choices))
    total += s.stage_out_channels[-1] * s.last_channels + 2 * s.last_channels
    return total + s.last_channels * s.n_classes


def spos_macs(arch: SPOSArch, settings: SPOSSettings) -> int:
    """Multiply-adds of the convs and the classifier at ``settings.input_size`` (what SPOS's own
    ``get_flops`` counts and calls FLOPs: 280-360M for the standard space at 224)."""
    s = settings
    size = conv_out_size(s.input_size, 3, 2)
    total = 3 * s.first_channels * 9 * size * size
    specs = s.blocks()
    total += sum(block_macs(spec, c) for spec, c in zip(specs, arch.choices))
    last = conv_out_size(specs[-1].size, 3, specs[-1].stride) if specs else size
    total += s.stage_out_channels[-1] * s.last_channels * last * last
    return total + s.last_channels * s.n_classes
