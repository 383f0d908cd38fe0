"""The once-for-all MobileNetV3 supernet and subnet extraction (archsmith.tools.supernets).

The manifest tests/data/ofa_mbv3_state_dict_shapes.json.gz lists the names and shapes of the two
published checkpoints (official OFAMobileNetV3.state_dict()); a random state dict built from it
must load strictly. The reference figures (parameter counts of the all-max and all-min subnets)
are the official code's. ``reference_logits`` below is an independent, functional forward of a
subnet straight from the checkpoint tensors, against which extraction is checked.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from archsmith.tools.supernets import (
    OFAArch,
    OFAMbv3Settings,
    OFAMobileNetV3,
    build_static_subnet,
    count_params,
    extract_subnet,
    subnet_param_count,
    supernet_settings,
)

MANIFEST = Path(__file__).parent / "data" / "ofa_mbv3_state_dict_shapes.json.gz"
WIDTHS = (1.0, 1.2)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def manifest(width: float) -> dict[str, list[int]]:
    data = json.loads(gzip.decompress(MANIFEST.read_bytes()))
    return data[f"ofa_mbv3_d234_e346_k357_w{width}"]


def random_tensor(name: str, shape: list[int], gen: torch.Generator) -> torch.Tensor:
    """A well-scaled random value for one checkpoint entry (so 20 blocks neither explode nor vanish)."""
    if name.endswith("num_batches_tracked"):
        return torch.tensor(7, dtype=torch.long)
    if name.endswith("_matrix"):
        return torch.eye(shape[0]) + 0.2 * torch.randn(shape, generator=gen)
    if name.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=gen)
    if name.endswith(("running_mean", "bias")):
        return 0.1 * torch.randn(shape, generator=gen)
    if len(shape) == 1:  # BN weight
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=gen) / math.sqrt(fan_in)


@functools.lru_cache(maxsize=4)
def _random_state(width: float, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: random_tensor(name, shape, gen) for name, shape in manifest(width).items()}


def random_state(width: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint of random tensors with the official names and shapes (a fresh dict each call)."""
    return dict(_random_state(width, seed))


def uniform_arch(ks: int, e: int, d: int, r: int = 224) -> dict:
    return {"ks": [ks] * 20, "e": [e] * 20, "d": [d] * 5, "r": r}


def random_arch(seed: int) -> dict:
    rng = random.Random(seed)
    return {
        "ks": [rng.choice([3, 5, 7]) for _ in range(20)],
        "e": [rng.choice([3, 4, 6]) for _ in range(20)],
        "d": [rng.choice([2, 3, 4]) for _ in range(5)],
        "r": 160,
    }


# -- an independent reference: the subnet's forward straight from the checkpoint tensors -----------


def make_div8(v: float) -> int:
    new = max(8, int(v + 4) // 8 * 8)
    return new + 8 if new < 0.9 * v else new


def hswish(x):
    return x * torch.clamp(x + 3, 0, 6) / 6


def bn(x, state, prefix):
    c = x.shape[1]
    return F.batch_norm(x, state[prefix + "running_mean"][:c], state[prefix + "running_var"][:c],
                        state[prefix + "weight"][:c], state[prefix + "bias"][:c], False, 0.0, 1e-5)


def depthwise_kernel(state, prefix, channels, k):
    """Centre crops of the 7x7 kernel, each followed by the learned transform (x @ M^T)."""
    w = state[prefix + "conv.weight"][:channels]
    for big, small in ((7, 5), (5, 3)):
        if k >= big:
            break
        lo = (big - small) // 2
        flat = w[:, :, lo:lo + small, lo:lo + small].reshape(channels, small * small)
        w = (flat @ state[f"{prefix}{big}to{small}_matrix"].T).reshape(channels, 1, small, small)
    return w


def mbconv(x, state, p, k, e, stride, act, se):
    cin = x.shape[1]
    mid = make_div8(round(cin * e))
    out = state[p + "point_linear.conv.conv.weight"].shape[0]
    y = act(bn(F.conv2d(x, state[p + "inverted_bottleneck.conv.conv.weight"][:mid, :cin]), state,
               p + "inverted_bottleneck.bn.bn."))
    y = F.conv2d(y, depthwise_kernel(state, p + "depth_conv.conv.", mid, k), None, stride, k // 2, 1, mid)
    y = act(bn(y, state, p + "depth_conv.bn.bn."))
    if se:
        sm = make_div8(mid // 4)
        s = F.conv2d(y.mean((2, 3), keepdim=True), state[p + "depth_conv.se.fc.reduce.weight"][:sm, :mid],
                     state[p + "depth_conv.se.fc.reduce.bias"][:sm])
        s = F.conv2d(torch.relu(s), state[p + "depth_conv.se.fc.expand.weight"][:mid, :sm],
                     state[p + "depth_conv.se.fc.expand.bias"][:mid])
        y = y * (torch.clamp(s + 3, 0, 6) / 6)
    y = bn(F.conv2d(y, state[p + "point_linear.conv.conv.weight"][:out, :mid]), state, p + "point_linear.bn.bn.")
    return y + x if stride == 1 and cin == out else y


def reference_logits(state, arch, x):
    y = hswish(bn(F.conv2d(x, state["first_conv.conv.weight"], None, 2, 1), state, "first_conv.bn."))
    c = y.shape[1]
    z = torch.relu(bn(F.conv2d(y, state["blocks.0.conv.depth_conv.conv.weight"], None, 1, 1, 1, c), state,
                      "blocks.0.conv.depth_conv.bn."))
    z = bn(F.conv2d(z, state["blocks.0.conv.point_linear.conv.weight"]), state, "blocks.0.conv.point_linear.bn.")
    y = z + y if z.shape[1] == c else z
    stages = [(2, torch.relu, False), (2, torch.relu, True), (2, hswish, False), (1, hswish, True), (2, hswish, True)]
    for stage, (stride, act, se) in enumerate(stages):
        for i in range(arch["d"][stage]):
            j = 4 * stage + i
            y = mbconv(y, state, f"blocks.{j + 1}.conv.", arch["ks"][j], arch["e"][j],
                       stride if i == 0 else 1, act, se)
    y = hswish(bn(F.conv2d(y, state["final_expand_layer.conv.weight"]), state, "final_expand_layer.bn."))
    y = hswish(F.conv2d(y.mean((2, 3), keepdim=True), state["feature_mix_layer.conv.weight"]))
    return F.linear(y.flatten(1), state["classifier.linear.weight"], state["classifier.linear.bias"])


# -- tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_state_dict_names_and_shapes_match_the_official_checkpoint(width):
    net = OFAMobileNetV3(OFAMbv3Settings(width_mult=width))
    ours = {name: list(t.shape) for name, t in net.state_dict().items()}
    official = manifest(width)
    assert len(official) == 475
    assert sorted(set(official) - set(ours)) == []  # every official entry exists here ...
    assert sorted(set(ours) - set(official)) == []  # ... and nothing more
    assert {n: s for n, s in ours.items() if official[n] != s} == {}
    result = net.load_state_dict(random_state(width), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize(
    ("width", "arch", "params"),
    [
        (1.0, uniform_arch(7, 6, 4), 7_664_760),
        (1.2, uniform_arch(7, 6, 4), 10_701_632),
        (1.0, uniform_arch(3, 3, 2), 3_410_792),
        (1.2, uniform_arch(3, 3, 2), 4_602_456),
    ],
)
def test_extracted_param_counts_match_the_official_figures(width, arch, params, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": random_state(width)}, path)
    subnet = extract_subnet(f"ofa_mbv3_w{width}", arch, path)
    assert count_params(subnet) == params
    assert subnet_param_count(OFAArch.from_json(arch), OFAMbv3Settings(width_mult=width)) == params
    assert not subnet.training and subnet.input_resolution == 224


@pytest.mark.parametrize(("width", "seed"), [(1.0, 1), (1.2, 2), (1.0, 3)])
def test_extraction_equals_reference_and_dynamic_supernet(width, seed, tmp_path):
    state = random_state(width, seed)
    path = tmp_path / "bare.pth"
    torch.save(state, path)  # a bare state dict is a checkpoint too
    arch = random_arch(seed)
    subnet = extract_subnet(OFAMbv3Settings(width_mult=width), json.dumps(arch), path)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        extracted = subnet(x)
        reference = reference_logits(state, arch, x)
        supernet = OFAMobileNetV3(OFAMbv3Settings(width_mult=width))
        supernet.load_state_dict(state)
        supernet.eval().set_active_subnet(arch)
        dynamic = supernet(x)
    assert extracted.shape == (2, 1000)
    assert reference.abs().max() > 1e-2  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(extracted, reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dynamic, extracted, rtol=1e-4, atol=1e-5)
    assert subnet.input_resolution == 160
    assert len(subnet.blocks) == 1 + sum(arch["d"])


def test_kernel_transform_is_applied_to_the_centre_crop():
    net = OFAMobileNetV3()
    conv = net.blocks[1].conv.depth_conv.conv
    with torch.no_grad():
        conv.conv.weight.copy_(torch.randn_like(conv.conv.weight))
        getattr(conv, "7to5_matrix").copy_(torch.randn(25, 25))
    five = conv.active_filter(8, 5)
    expected = conv.conv.weight[:8, :, 1:6, 1:6].reshape(8, 25) @ getattr(conv, "7to5_matrix").T
    torch.testing.assert_close(five.reshape(8, 25), expected)
    torch.testing.assert_close(conv.active_filter(8, 7), conv.conv.weight[:8])


def test_n_classes_follow_the_checkpoint_and_legacy_names_load():
    state = random_state(1.0)
    state["classifier.linear.weight"] = state["classifier.linear.weight"][:10]
    state["classifier.linear.bias"] = state["classifier.linear.bias"][:10]
    legacy = {k.replace(".conv.", ".mobile_inverted_conv.", 1) if k.startswith("blocks.") else k: v
              for k, v in state.items()}
    subnet = extract_subnet("ofa_mbv3", uniform_arch(5, 4, 3, 192), {"state_dict": legacy})
    with torch.no_grad():
        assert subnet(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert subnet.state_dict()["blocks.1.conv.depth_conv.conv.weight"].shape[-1] == 5


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({**uniform_arch(3, 3, 2), "ks": [3] * 19}, "'ks' has 19 entries, expected 20"),
        ({**uniform_arch(3, 3, 2), "e": [3] * 7 + [5] + [3] * 12}, "'e'[7] = 5 is not one of [3, 4, 6]"),
        ({**uniform_arch(3, 3, 2), "d": [2, 2, 2, 2, 1]}, "'d'[4] = 1"),
        ({"ks": [3] * 20, "e": [3] * 20}, "missing d"),
    ],
)
def test_bad_archs_name_the_field_and_position(arch, message):
    with pytest.raises(ValueError, match=".*" + message.replace("[", r"\[").replace("]", r"\]")):
        OFAMobileNetV3().set_active_subnet(OFAArch.from_json(arch))


def test_space_argument_forms():
    assert supernet_settings("ofa_mbv3").width_mult == 1.0
    assert supernet_settings("ofa_mbv3_d234_e346_k357_w1.2").width_mult == 1.2
    assert supernet_settings({"width_mult": 1.2, "n_classes": 10}).n_classes == 10
    assert OFAMbv3Settings(width_mult=1.2).checkpoint_name == "ofa_mbv3_d234_e346_k357_w1.2"
    from archsmith.tools.spaces import get_space

    assert supernet_settings(get_space("ofa_mbv3", {"width_mult": 1.2})).width_mult == 1.2
    with pytest.raises(ValueError, match="unknown supernet"):
        supernet_settings("resnet50")


@pytest.mark.parametrize(("width", "seed"), [(1.0, 4), (1.2, 5)])
def test_built_static_subnet_has_the_extracted_names_shapes_and_size(width, seed):
    settings = OFAMbv3Settings(width_mult=width)
    arch = random_arch(seed)
    subnet = extract_subnet(settings, arch, random_state(width))
    built = build_static_subnet(arch, settings).eval()
    built.load_state_dict(subnet.state_dict(), strict=True)  # same names and shapes
    assert count_params(built) == subnet_param_count(OFAArch.from_json(arch), settings)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(built(x), subnet(x))
        assert built.forward_pre_gap(x).shape[1] == settings.widths()[-2]
    plain = build_static_subnet(arch, settings, plain=True)
    assert all(block.shortcut is None for block in plain.blocks)
    assert count_params(plain) == count_params(built)


def test_importing_the_package_and_arch_module_does_not_import_torch():
    code = "import sys, archsmith.tools.supernets.ofa_arch; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
