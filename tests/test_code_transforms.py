"""Source-to-source mutations of the open-ended code space (libcst rewrites of a Network file)."""

from __future__ import annotations

import math
import random

import pytest

from archsmith.tools.spaces.code_transforms import (
    ACTIVATIONS,
    OPERATORS,
    TransformError,
    Transformed,
    constant_kind,
    count_layer_calls,
    hyperparameters,
    normalized_ast,
    shrink,
)

SAMPLE = '''\
"""A small ResNet-like network for the code-transform tests."""

import torch
import torch.nn as nn

# Stage table (one entry per stage).
WIDTHS = (16, 32, 64)  # channels per stage
DEPTHS = (1, 2, 1)
STRIDES = (1, 2, 2)
STEM_WIDTH = 16
HEAD_WIDTH = 128
KERNEL_SIZE = 3
ACTIVATION = nn.ReLU
EXPANSION = 2


class BasicBlock(nn.Module):
    """Two KxK convs and a shortcut."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.out_channels = out_channels
        WIDTHS = (1, 2)  # a local name: never a hyperparameter
        pad = KERNEL_SIZE // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, KERNEL_SIZE, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, KERNEL_SIZE, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = ACTIVATION()
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, KxK, 1x1 expand (by EXPANSION), plus a projection shortcut."""

    def __init__(self, in_channels, width, stride=1):
        super().__init__()
        self.out_channels = width * EXPANSION
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            ACTIVATION(),
            nn.Conv2d(width, width, KERNEL_SIZE, stride, KERNEL_SIZE // 2, bias=False),
            nn.BatchNorm2d(width),
            ACTIVATION(),
            nn.Conv2d(width, self.out_channels, 1, bias=False),
            nn.BatchNorm2d(self.out_channels),
        )
        self.shortcut = nn.Conv2d(in_channels, self.out_channels, 1, stride, bias=False)

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class Network(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, STEM_WIDTH, 3, padding=1)
        blocks, channels = [], STEM_WIDTH
        for stage, (width, depth, stride) in enumerate(zip(WIDTHS, DEPTHS, STRIDES)):
            for index in range(depth):
                block_class = Bottleneck if stage == len(WIDTHS) - 1 else BasicBlock
                block = block_class(channels, width, stride if index == 0 else 1)
                blocks.append(block)
                channels = block.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(channels, HEAD_WIDTH, 1), ACTIVATION())
        self.classifier = nn.Linear(HEAD_WIDTH, num_classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(x.mean(dim=(2, 3)))
'''

HPARAMS = {
    "WIDTHS": (16, 32, 64),
    "DEPTHS": (1, 2, 1),
    "STRIDES": (1, 2, 2),
    "STEM_WIDTH": 16,
    "HEAD_WIDTH": 128,
    "KERNEL_SIZE": 3,
    "ACTIVATION": "nn.ReLU",
    "EXPANSION": 2,
}
WIDTH_NAMES = {"WIDTHS", "STEM_WIDTH", "HEAD_WIDTH"}
CONSTANT_OPS = ["scale_depth", "scale_width", "scale_width_ratio", "kernel_size", "stride", "activation"]
EXPECTED_KEYS = {
    "scale_depth": {"DEPTHS"},
    "scale_width": WIDTH_NAMES,
    "kernel_size": {"KERNEL_SIZE"},
    "stride": {"STRIDES"},
    "activation": {"ACTIVATION"},
}


def changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if before[k] != after[k]}


def changed_lines(before: str, after: str) -> list[str]:
    old, new = before.splitlines(), after.splitlines()
    assert len(old) == len(new)
    return [b for a, b in zip(old, new) if a != b]


def ints(value) -> tuple[int, ...]:
    return (value,) if isinstance(value, int) else tuple(value)


def round8(x: float) -> int:
    return max(8, math.floor(x / 8 + 0.5) * 8)


def replace_line(source: str, old: str, new: str) -> str:
    assert old in source
    return source.replace(old, new)


def test_hyperparameters_and_kinds():
    assert hyperparameters(SAMPLE) == HPARAMS
    assert list(hyperparameters(SAMPLE)) == list(HPARAMS)  # source order
    kinds = {
        "WIDTHS": "width", "STEM_WIDTH": "width", "INPLANES": "width", "HEAD_CHANNELS": "width",
        "IN_PLANES": None,
        "DEPTHS": "depth", "NUM_BLOCKS": "depth", "REPEATS": "depth", "NUM_LAYERS": "depth",
        "KERNEL_SIZE": "kernel", "DEPTHWISE_KERNEL": "kernel", "STRIDES": "stride",
        "ACTIVATION": "activation", "ACT": "activation", "FACTOR": None, "IN_CHANNELS": None,
        "INPUT_CHANNELS": None, "EXPANSIONS": None, "NUM_CLASSES": None, "LAYER_SCALE": None,
    }
    assert {name: constant_kind(name) for name in kinds} == kinds
    assert count_layer_calls(SAMPLE) == 10


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("op", CONSTANT_OPS)
def test_constant_operators_change_only_their_constants(op, seed):
    result = OPERATORS[op](SAMPLE, random.Random(seed))
    assert isinstance(result, Transformed) and result.operator == op and result.description
    after = hyperparameters(result.source)
    keys = changed(HPARAMS, after)
    if op == "scale_width_ratio":
        assert len(keys) == 1 and keys <= WIDTH_NAMES
    else:
        assert keys == EXPECTED_KEYS[op]
    # Only the rewritten constants' lines differ; comments, docstrings, locals stay byte for byte.
    lines = changed_lines(SAMPLE, result.source)
    assert sorted(line.split(" =")[0] for line in lines) == sorted(keys)
    assert "# Stage table (one entry per stage)." in result.source
    assert "WIDTHS = (1, 2)  # a local name: never a hyperparameter" in result.source
    if "WIDTHS" in keys:
        assert f"WIDTHS = {after['WIDTHS']}  # channels per stage" in result.source
    for name in keys:
        assert name in result.description
    assert normalized_ast(result.source) != normalized_ast(SAMPLE)


@pytest.mark.parametrize("seed", range(4))
def test_operator_values(seed):
    rng = random.Random(seed)
    depths = hyperparameters(OPERATORS["scale_depth"](SAMPLE, rng).source)["DEPTHS"]
    plus_one = {(2, 2, 1), (1, 3, 1), (1, 2, 2)}
    scaled = {(1, 3, 1), (2, 3, 2), (2, 4, 2)}  # x1.25, x1.5, x2 (halves round up)
    assert depths in plus_one | scaled

    widths = hyperparameters(OPERATORS["scale_width"](SAMPLE, rng).source)
    options = [{k: tuple(round8(v * f) for v in ints(HPARAMS[k])) for k in WIDTH_NAMES} for f in (1.25, 1.5)]
    assert {k: ints(widths[k]) for k in WIDTH_NAMES} in options
    assert all(v % 8 == 0 for k in WIDTH_NAMES for v in ints(widths[k]))

    ratio = hyperparameters(OPERATORS["scale_width_ratio"](SAMPLE, rng).source)
    (name,) = changed(HPARAMS, ratio)
    diffs = [(a, b) for a, b in zip(ints(HPARAMS[name]), ints(ratio[name])) if a != b]
    assert len(diffs) == 1 and diffs[0][1] in (round8(diffs[0][0] * 1.5), diffs[0][0] * 2)

    assert hyperparameters(OPERATORS["kernel_size"](SAMPLE, rng).source)["KERNEL_SIZE"] in (5, 7)
    assert hyperparameters(OPERATORS["stride"](SAMPLE, rng).source)["STRIDES"] == (2, 1, 2)
    act = hyperparameters(OPERATORS["activation"](SAMPLE, rng).source)["ACTIVATION"]
    assert act.startswith("nn.") and act[3:] in ACTIVATIONS and act != "nn.ReLU"


def test_insert_se_adds_one_gated_block_and_nothing_else():
    result = OPERATORS["insert_se"](SAMPLE, random.Random(0))
    assert hyperparameters(result.source) == HPARAMS
    src = result.source
    assert src.count("class SqueezeExcite(nn.Module):") == 1
    assert src.index("class SqueezeExcite") < src.index("class BasicBlock") < src.index("class Bottleneck")
    assert src.count("self.se = SqueezeExcite(self.out_channels)") == 1
    assert ("return self.se(self.act(out + self.shortcut(x)))" in src) != (
        "return self.se(self.body(x) + self.shortcut(x))" in src
    )
    assert count_layer_calls(src) == count_layer_calls(SAMPLE) + 2
    # Everything of the parent survives: dropping the SE class (and the two blank lines inserted before
    # it) and the new __init__ line leaves the parent with only the wrapped return changed.
    lines = src.splitlines()
    start = lines.index("class SqueezeExcite(nn.Module):") - 2
    end = lines.index("class BasicBlock(nn.Module):") - 2
    new_line = "        self.se = SqueezeExcite(self.out_channels)"
    kept = [line for line in lines[:start] + lines[end:] if line != new_line]
    parent = SAMPLE.splitlines()
    assert len(kept) == len(parent)
    (diff,) = [(a, b) for a, b in zip(parent, kept) if a != b]
    assert diff[1] == diff[0].replace("return ", "return self.se(", 1) + ")"


def test_insert_se_twice_reuses_the_class_then_runs_out_of_blocks():
    rng = random.Random(3)
    first = OPERATORS["insert_se"](SAMPLE, rng)
    second = OPERATORS["insert_se"](first.source, rng)
    assert "reused SqueezeExcite" in second.description
    assert second.source.count("class SqueezeExcite") == 1
    assert second.source.count("self.se = SqueezeExcite(self.out_channels)") == 2
    with pytest.raises(TransformError, match="no block class"):
        OPERATORS["insert_se"](second.source, rng)


def test_insert_se_makes_a_unique_name_and_keeps_torch_nn_prefix():
    clashing = replace_line(SAMPLE, "EXPANSION = 2\n", "EXPANSION = 2\n\n\nclass SqueezeExcite:\n    pass\n")
    result = OPERATORS["insert_se"](clashing, random.Random(0))
    assert "class SqueezeExcite2(nn.Module):" in result.source
    assert "self.se = SqueezeExcite2(self.out_channels)" in result.source
    spelled = SAMPLE.replace("import torch.nn as nn\n", "").replace("nn.", "torch.nn.")
    result = OPERATORS["insert_se"](spelled, random.Random(0))
    assert "class SqueezeExcite(torch.nn.Module):" in result.source
    assert "self.reduce = torch.nn.Conv2d(channels, hidden, kernel_size=1)" in result.source
    act = OPERATORS["activation"](spelled, random.Random(0))
    assert hyperparameters(act.source)["ACTIVATION"].startswith("torch.nn.")


def test_transformed_sources_execute_and_insert_se_adds_parameters(one_torch_thread):
    torch = pytest.importorskip("torch")

    def build(source: str):
        namespace: dict = {"__name__": "candidate"}
        exec(compile(source, "<candidate>", "exec"), namespace)
        torch.manual_seed(0)
        net = namespace["Network"](10).eval()
        with torch.no_grad():
            assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        return sum(p.numel() for p in net.parameters())

    base = build(SAMPLE)
    assert build(OPERATORS["insert_se"](SAMPLE, random.Random(0)).source) > base
    assert build(OPERATORS["insert_se"](SAMPLE, random.Random(1)).source) > base
    for name, op in OPERATORS.items():
        build(op(SAMPLE, random.Random(5)).source)
    assert build(shrink(SAMPLE, 0.5, random.Random(0)).source) < base


def test_width_ops_on_non_multiples_of_8():
    odd = replace_line(SAMPLE, "WIDTHS = (16, 32, 64)", "WIDTHS = (10, 20, 40)")
    odd = replace_line(odd, "STEM_WIDTH = 16", "STEM_WIDTH = 12")
    for seed in range(6):
        after = hyperparameters(OPERATORS["scale_width"](odd, random.Random(seed)).source)
        options = [
            {"WIDTHS": (13, 25, 50), "STEM_WIDTH": 15, "HEAD_WIDTH": 160},  # x1.25, halves up
            {"WIDTHS": (15, 30, 60), "STEM_WIDTH": 18, "HEAD_WIDTH": 192},  # x1.5
        ]
        assert {k: after[k] for k in WIDTH_NAMES} in options
        ratio = hyperparameters(OPERATORS["scale_width_ratio"](odd, random.Random(seed)).source)
        (name,) = changed(hyperparameters(odd), ratio)
        old, new = ints(hyperparameters(odd)[name]), ints(ratio[name])
        (pair,) = [(a, b) for a, b in zip(old, new) if a != b]
        assert pair[1] in (math.floor(pair[0] * 1.5 + 0.5), pair[0] * 2)
    tiny = replace_line(SAMPLE, "WIDTHS = (16, 32, 64)", "WIDTHS = [1, 1, 1]")
    tiny = replace_line(tiny, "STEM_WIDTH = 16", "STEM_WIDTH = 1")
    tiny = replace_line(tiny, "HEAD_WIDTH = 128", "HEAD_WIDTH = 1")
    result = OPERATORS["scale_width"](tiny, random.Random(0))
    assert "WIDTHS = [2, 2, 2]  # channels per stage" in result.source  # list stays a list; 1 x1.25 rounds up
    assert hyperparameters(result.source)["STEM_WIDTH"] == 2


def test_missing_constants_and_sites_raise_clear_errors():
    rng = random.Random(0)
    cases = {
        "scale_depth": ("DEPTHS = (1, 2, 1)", "NUM = (1, 2, 1)", "depth constant"),
        "scale_width": ("WIDTHS = (16, 32, 64)", "SIZES = (16, 32, 64)", "width constant"),
        "kernel_size": ("KERNEL_SIZE = 3", "KERNEL_SIZE = 1", "kernel constant"),
        "stride": ("STRIDES = (1, 2, 2)", "STRIDES = (2, 2, 2)", "stride > 1 next to a 1"),
        "activation": ("ACTIVATION = nn.ReLU", "ACTIVATION = 3", "activation constant"),
    }
    for op, (old, new, message) in cases.items():
        source = replace_line(SAMPLE, old, new)
        if op == "scale_width":
            source = source.replace("STEM_WIDTH = 16", "STEM = 16").replace("HEAD_WIDTH = 128", "HEAD = 128")
        with pytest.raises(TransformError, match=message):
            OPERATORS[op](source, rng)
    functional = replace_line(SAMPLE, "ACTIVATION = nn.ReLU", "ACTIVATION = torch.relu")  # a function, no class
    with pytest.raises(TransformError, match="activation constant"):
        OPERATORS["activation"](functional, rng)
    with pytest.raises(TransformError, match="WIDTH/CHANNEL/PLANES"):
        OPERATORS["scale_width"]("import torch\n", rng)
    no_blocks = SAMPLE.replace("self.out_channels =", "self.channels =")
    with pytest.raises(TransformError, match="no block class"):
        OPERATORS["insert_se"](no_blocks, rng)
    broken = "import torch\nWIDTHS = (16, 32\nDEPTHS = 3\n"
    for op in OPERATORS.values():
        with pytest.raises(TransformError, match="does not parse: line"):
            op(broken, rng)
    with pytest.raises(TransformError, match="line 1"):
        normalized_ast("def (:\n")


def test_only_module_level_constants_count_and_change():
    nested = SAMPLE + "\n\nif False:\n    KERNEL_SIZE = 5\n\n\ndef helper():\n    DEPTHS = (9, 9)\n    return 0\n"
    assert hyperparameters(nested) == HPARAMS
    result = OPERATORS["kernel_size"](nested, random.Random(0))
    assert "    KERNEL_SIZE = 5\n" in result.source and "    DEPTHS = (9, 9)\n" in result.source
    only_nested = SAMPLE.replace("KERNEL_SIZE = 3\n", "") + "\n\ndef f():\n    KERNEL_SIZE = 3\n"
    with pytest.raises(TransformError, match="kernel constant"):
        OPERATORS["kernel_size"](only_nested, random.Random(0))


def test_activation_avoids_gelu_when_called_with_inplace():
    source = SAMPLE.replace("ACTIVATION()", "ACTIVATION(inplace=True)")
    def seen(src: str) -> set[str]:
        results = [OPERATORS["activation"](src, random.Random(s)).source for s in range(10)]
        return {hyperparameters(result)["ACTIVATION"] for result in results}

    assert seen(source) == {"nn.ReLU6", "nn.SiLU", "nn.Hardswish", "nn.Mish"}
    assert "nn.GELU" in seen(SAMPLE)


def test_multiline_tuple_keeps_its_layout():
    source = SAMPLE.replace("DEPTHS = (1, 2, 1)", "DEPTHS = (\n    1,  # stage one\n    2,\n    1,\n)")
    result = OPERATORS["scale_depth"](source, random.Random(1))
    assert "# stage one" in result.source and "DEPTHS = (\n    " in result.source
    assert hyperparameters(result.source)["DEPTHS"] != (1, 2, 1)


def test_shrink_reduces_until_minimum():
    rng = random.Random(0)
    source, seen = SAMPLE, set()
    for _ in range(40):
        try:
            result = shrink(source, 0.5, rng)
        except TransformError as exc:
            assert "nothing left to shrink" in str(exc)
            break
        before, after = hyperparameters(source), hyperparameters(result.source)
        keys = changed(before, after)
        assert keys and (keys <= WIDTH_NAMES or keys == {"DEPTHS"})
        assert all(b <= a for k in keys for a, b in zip(ints(before[k]), ints(after[k])))
        seen.add("width" if keys <= WIDTH_NAMES else "depth")
        source = result.source
    else:
        pytest.fail("shrink never reached the minimum")
    final = hyperparameters(source)
    assert final["WIDTHS"] == (8, 8, 8) and final["STEM_WIDTH"] == 8 and final["HEAD_WIDTH"] == 8
    assert final["DEPTHS"] == (1, 1, 1) and seen == {"width", "depth"}
    with pytest.raises(ValueError):
        shrink(SAMPLE, 1.5, rng)
    with pytest.raises(TransformError, match="width constant"):
        shrink("import torch\nKERNEL_SIZE = 3\n", 0.5, rng)


def test_shrink_depth_only_when_widths_are_minimal():
    source = SAMPLE.replace("(16, 32, 64)", "(8, 8, 8)").replace("= 16", "= 8").replace("= 128", "= 8")
    source = source.replace("DEPTHS = (1, 2, 1)", "DEPTHS = (4, 4, 4)")
    for seed in range(5):
        assert hyperparameters(shrink(source, 0.5, random.Random(seed)).source)["DEPTHS"] == (2, 2, 2)


def test_normalized_ast_ignores_comments_docstrings_and_formatting():
    reformatted = (
        SAMPLE.replace('"""Two KxK convs and a shortcut."""', '"""Another docstring."""')
        .replace("# Stage table (one entry per stage).", "# a different comment")
        .replace("WIDTHS = (16, 32, 64)  # channels per stage", "WIDTHS = (16,32,  64)")
        .replace("        return self.classifier(x.mean(dim=(2, 3)))", "        return self.classifier(\n"
                 "            x.mean(dim=(2, 3))  # pooled\n        )")
    )
    assert reformatted != SAMPLE
    assert normalized_ast(reformatted) == normalized_ast(SAMPLE)
    no_docstrings = SAMPLE.replace('    """Two KxK convs and a shortcut."""\n', "")
    assert normalized_ast(no_docstrings) == normalized_ast(SAMPLE)
    assert normalized_ast(SAMPLE.replace("HEAD_WIDTH = 128", "HEAD_WIDTH = 136")) != normalized_ast(SAMPLE)
    assert normalized_ast(SAMPLE.replace("padding=1)", "padding=2)")) != normalized_ast(SAMPLE)


def test_operators_are_deterministic_given_the_rng():
    for name, op in [*OPERATORS.items(), ("shrink", lambda s, r: shrink(s, 0.5, r))]:
        outputs = [op(SAMPLE, random.Random(7)) for _ in range(2)]
        assert outputs[0] == outputs[1], name
    variety = {OPERATORS["scale_depth"](SAMPLE, random.Random(s)).source for s in range(10)}
    assert len(variety) > 2
