"""The SPOS ShuffleNetV2 supernet, subnet extraction and the ``spos_shufflenet`` search space.

``official_table`` below is the state-dict manifest of megvii-model/SinglePathOneShot's
``ShuffleNetV2_OneShot`` (src/Supernet/network.py and blocks.py), written out layer by layer from
that code: every BatchNorm there has ``affine=False`` (buffers only), the choice units are held in
``features[block][choice]``, the classifier is ``nn.Sequential(nn.Linear(1024, n, bias=False))``.
``reference_logits`` is an independent functional forward of a subnet straight from the
checkpoint tensors, with the official reshape/permute channel shuffle.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from archsmith.tools.spaces import EnumerableSpace, SpaceError, get_space, space_names
from archsmith.tools.spaces.features import closed_form_costs, structure_features
from archsmith.tools.supernets import (
    SPOSArch,
    SPOSSettings,
    SPOSShuffleNetV2,
    build_spos_subnet,
    count_params,
    extract_subnet,
    spos_macs,
    spos_param_count,
    spos_subnet_with_weights,
    supernet_settings,
)

OFFICIAL_ARCH = [2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3]  # the SPOS README's model
COLLM_ARCH = [0, 0, 3, 3, 3, 2, 1, 3, 3, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3]  # CoLLM-NAS, Table 9
SMALL = SPOSSettings(n_classes=10, input_size=32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the official supernet's state dict, from its code -------------------------------------------


def official_table(n_class: int = 1000) -> dict[str, list[int]]:
    table: dict[str, list[int]] = {}

    def layers(prefix: str, entries: list[tuple[int, list[int] | int]]) -> None:
        for index, shape in entries:
            if isinstance(shape, list):  # Conv2d(bias=False)
                table[f"{prefix}{index}.weight"] = shape
            else:  # BatchNorm2d(shape, affine=False)
                table[f"{prefix}{index}.running_mean"] = [shape]
                table[f"{prefix}{index}.running_var"] = [shape]
                table[f"{prefix}{index}.num_batches_tracked"] = []

    stage_out_channels = [-1, 16, 64, 160, 320, 640, 1024]
    layers("first_conv.", [(0, [16, 3, 3, 3]), (1, 16)])
    input_channel, arch_index = 16, 0
    for stage, repeats in enumerate([4, 4, 8, 4]):
        output_channel = stage_out_channels[stage + 2]
        for i in range(repeats):
            inp, stride = (input_channel, 2) if i == 0 else (input_channel // 2, 1)
            mid, outputs = output_channel // 2, output_channel - inp
            for choice in range(4):
                prefix = f"features.{arch_index}.{choice}."
                if choice < 3:  # Shufflenet(ksize=3/5/7): pw, bn, relu, dw, bn, pw-linear, bn, relu
                    k = (3, 5, 7)[choice]
                    main = [(0, [mid, inp, 1, 1]), (1, mid), (3, [mid, 1, k, k]), (4, mid),
                            (5, [outputs, mid, 1, 1]), (6, outputs)]
                else:  # Shuffle_Xception: dw, bn, pw, bn, relu, dw, bn, pw, bn, relu, dw, bn, pw, bn, relu
                    k = 3
                    main = [(0, [inp, 1, 3, 3]), (1, inp), (2, [mid, inp, 1, 1]), (3, mid), (5, [mid, 1, 3, 3]),
                            (6, mid), (7, [mid, mid, 1, 1]), (8, mid), (10, [mid, 1, 3, 3]), (11, mid),
                            (12, [outputs, mid, 1, 1]), (13, outputs)]
                layers(prefix + "branch_main.", main)
                if stride == 2:  # dw, bn, pw-linear, bn, relu
                    layers(prefix + "branch_proj.", [(0, [inp, 1, k, k]), (1, inp), (2, [inp, inp, 1, 1]), (3, inp)])
            arch_index += 1
            input_channel = output_channel
    layers("conv_last.", [(0, [1024, 640, 1, 1]), (1, 1024)])
    table["classifier.0.weight"] = [n_class, 1024]
    return table


def random_state(n_class: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint of well-scaled random tensors with the official names and shapes."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in official_table(n_class).items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(5, dtype=torch.long)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(shape, generator=gen)
        elif name.endswith("running_mean"):
            state[name] = 0.1 * torch.randn(shape, generator=gen)
        else:
            state[name] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
    return state


def random_arch(seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(4) for _ in range(20)]


def official_shuffle(x):
    b, c, h, w = x.shape
    x = x.reshape(b * c // 2, 2, h * w).permute(1, 0, 2).reshape(2, -1, c // 2, h, w)
    return x[0], x[1]


def reference_logits(state, arch, x):
    def bn(y, p, relu=False):
        y = F.batch_norm(y, state[p + "running_mean"], state[p + "running_var"], None, None, False, 0.0, 1e-5)
        return torch.relu(y) if relu else y

    def conv(y, p, stride=1):
        w = state[p + "weight"]
        groups = y.shape[1] if w.shape[1] == 1 else 1
        return F.conv2d(y, w, None, stride, w.shape[-1] // 2, 1, groups)

    y = bn(conv(x, "first_conv.0.", 2), "first_conv.1.", True)
    for block, choice in enumerate(arch):
        p = f"features.{block}.{choice}."
        stride = 2 if p + "branch_proj.0.weight" in state else 1
        if stride == 1:
            keep, y = official_shuffle(y)
        else:
            keep = bn(conv(bn(conv(y, p + "branch_proj.0.", 2), p + "branch_proj.1."), p + "branch_proj.2."),
                      p + "branch_proj.3.", True)
        m = p + "branch_main."
        if choice < 3:
            z = bn(conv(y, m + "0."), m + "1.", True)
            z = bn(conv(z, m + "3.", stride), m + "4.")
            z = bn(conv(z, m + "5."), m + "6.", True)
        else:
            z = bn(conv(y, m + "0.", stride), m + "1.")
            z = bn(conv(z, m + "2."), m + "3.", True)
            z = bn(conv(z, m + "5."), m + "6.")
            z = bn(conv(z, m + "7."), m + "8.", True)
            z = bn(conv(z, m + "10."), m + "11.")
            z = bn(conv(z, m + "12."), m + "13.", True)
        y = torch.cat((keep, z), 1)
    y = bn(conv(y, "conv_last.0."), "conv_last.1.", True).mean((2, 3))
    return F.linear(y, state["classifier.0.weight"])


# -- the supernet ---------------------------------------------------------------------------------


def test_state_dict_equals_the_official_table_and_loads_strictly(tmp_path):
    ours = {name: list(t.shape) for name, t in SPOSShuffleNetV2().state_dict().items()}
    official = official_table()
    assert len(official) == 1337
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {n: s for n, s in ours.items() if official[n] != s} == {}
    state = {f"module.{k}": v for k, v in random_state(1000).items()}  # as DataParallel saves it
    path = tmp_path / "checkpoint-150000.pth.tar"
    torch.save({"state_dict": state}, path)
    net = SPOSShuffleNetV2()
    result = net.load_state_dict(torch.load(path, weights_only=True)["state_dict"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert not any(isinstance(m, nn.BatchNorm2d) and m.affine for m in net.modules())


@pytest.mark.parametrize("seed", [1, 2])
def test_extraction_equals_the_supernet_path_and_the_reference(seed, tmp_path):
    state = random_state(10, seed)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state}, path)
    arch = random_arch(seed)
    subnet = extract_subnet("spos_shufflenet", {"choices": arch}, path)
    assert not subnet.training and subnet.classifier[0].out_features == 10  # classes from the checkpoint
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    supernet = SPOSShuffleNetV2(SMALL)
    supernet.load_state_dict(state)
    supernet.eval().set_active_subnet(arch)
    with torch.no_grad():
        extracted, dynamic, reference = subnet(x), supernet(x), reference_logits(state, arch, x)
        assert torch.equal(supernet(x, SPOSArch(tuple(arch))), dynamic)  # the official call form
    assert reference.abs().max() > 1e-2
    torch.testing.assert_close(dynamic, reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(extracted, dynamic, rtol=1e-4, atol=1e-5)
    assert count_params(subnet) == spos_param_count(SPOSArch(tuple(arch)), SMALL)


def test_extraction_argument_forms_and_the_static_subnet_names():
    state = random_state(10, 3)
    arch = random_arch(3)
    space = get_space("spos_shufflenet")
    for form in (SPOSSettings(), space, "spos_shufflenet"):
        assert isinstance(supernet_settings(form), SPOSSettings)
    prefixed = {f"module.{k}": v for k, v in state.items()}
    subnet = extract_subnet(space, json.dumps(arch), {"state_dict": prefixed})  # JSON text, bare list
    again = extract_subnet(SPOSSettings(n_classes=10), SPOSArch(tuple(arch)), state)
    for name, tensor in subnet.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name])
    assert "features.0.branch_proj.0.weight" in subnet.state_dict()  # the evaluation network's names
    built = build_spos_subnet(arch, SMALL)
    built.load_state_dict(subnet.state_dict(), strict=True)
    copied = spos_subnet_with_weights(SPOSShuffleNetV2(SMALL).train(), arch)
    assert copied.training and torch.equal(copied.conv_last[1].weight, torch.ones(1024))
    with pytest.raises(ValueError, match="unknown supernet"):
        supernet_settings("spos")


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ([0] * 19, "'choices' has 19 entries, expected 20"),
        ([0] * 7 + [4] + [0] * 12, r"'choices'\[7\] = 4 is not one of \[0, 1, 2, 3\]"),
        ({"choice": [0] * 20}, "missing choices"),
    ],
)
def test_bad_archs_name_the_field_and_position(arch, message):
    with pytest.raises(ValueError, match=message):
        SPOSShuffleNetV2(SMALL).set_active_subnet(arch)


def test_closed_form_params_equal_the_built_network():
    for seed in range(4):
        arch = SPOSArch(tuple(random_arch(seed)))
        assert count_params(build_spos_subnet(arch, SMALL)) == spos_param_count(arch, SMALL)
    standard = SPOSSettings()
    assert spos_param_count(SPOSArch((0,) * 20), standard) == 3_154_880
    assert spos_param_count(SPOSArch((3,) * 20), standard) == 3_870_816
    assert spos_param_count(SPOSArch(tuple(OFFICIAL_ARCH)), standard) == 3_558_464  # README: 3.5M
    assert spos_param_count(SPOSArch(tuple(COLLM_ARCH)), standard) == 3_747_728  # CoLLM-NAS: 3.7M


def conv_linear_macs(net: nn.Module, size: int) -> int:
    """What SPOS's own ``get_flops`` counts: conv and linear multiply-adds, by forward hooks."""
    total = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            per_out = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total.append(output[0].numel() * per_out)
        else:
            total.append(module.weight.numel())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        net.eval()(torch.randn(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return sum(total)


def test_closed_form_macs_equal_the_counted_ones():
    for seed, size in ((4, 64), (5, 96)):
        settings = SPOSSettings(n_classes=10, input_size=size)
        arch = SPOSArch(tuple(random_arch(seed)))
        assert conv_linear_macs(build_spos_subnet(arch, settings), size) == spos_macs(arch, settings)
    standard = SPOSSettings()
    assert spos_macs(SPOSArch((0,) * 20), standard) == 295_842_496
    assert spos_macs(SPOSArch((3,) * 20), standard) == 358_825_920
    assert spos_macs(SPOSArch(tuple(COLLM_ARCH)), standard) == 324_957_120  # CoLLM-NAS: 325M
    official = SPOSArch(tuple(OFFICIAL_ARCH))
    assert spos_macs(official, standard) == 322_918_720  # README: 323M
    thop = pytest.importorskip("thop")

    def uncounted(module, inputs, output):
        module.total_ops += torch.DoubleTensor([0.0])

    macs, _ = thop.profile(build_spos_subnet(official).eval(), inputs=(torch.randn(1, 3, 224, 224),),
                           custom_ops={nn.BatchNorm2d: uncounted, nn.ReLU: uncounted}, verbose=False)
    assert int(macs) == 322_918_720


def test_importing_the_arch_module_and_the_space_does_not_import_torch():
    code = ("import sys, archsmith.tools.supernets.spos_arch, archsmith.tools.spaces.spos_shufflenet; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the search space -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def space():
    return get_space("spos_shufflenet")


def text(choices) -> str:
    return json.dumps({"choices": list(choices)})


def test_registered_and_enumerable(space):
    assert "spos_shufflenet" in space_names()
    assert isinstance(space, EnumerableSpace)
    assert "choices[i]" in space.describe() and "Xception" in space.describe()
    for seed in space.initial():
        assert space.validate(seed).ok and space.canonical(seed) == seed


@pytest.mark.parametrize(
    ("candidate", "messages"),
    [
        (text([0] * 7 + [4] + [0] * 12), ["choices[7] = 4 is not one of [0, 1, 2, 3]"]),
        (text([0] * 19 + [True]), ["choices[19] = True"]),
        (text([0] * 19), ["choices must be a list of 20 ints, got 19 entries"]),
        ('{"choices": [0, 1', ["syntax: not JSON", "(at character"]),
        ('{"ops": [0]}', ["missing field 'choices'", "unknown field 'ops'"]),
        ('"0,1,2"', ["expected {\"choices\""]),
    ],
)
def test_validation_names_the_field_and_position(space, candidate, messages):
    validation = space.validate(candidate)
    assert not validation.ok
    for message in messages:
        assert message in validation.summary()


def test_canonical_encode_decode_round_trip(space):
    rng = random.Random(0)
    assert len(space.choices()) == 20 and space.choices()[0] == ["0", "1", "2", "3"]
    for _ in range(20):
        candidate = space.sample(rng)
        assert space.validate(candidate).ok and candidate == space.canonical(candidate)
        assert space.decode(space.encode(candidate)) == candidate
    bare = json.dumps(COLLM_ARCH)
    assert space.validate(bare).ok and space.canonical(bare) == text(COLLM_ARCH)
    assert space.canonical(" {bad ") == "{bad"
    with pytest.raises(ValueError):
        space.decode([0] * 19)
    with pytest.raises(ValueError):
        space.decode([0] * 19 + [4])


def test_mutations_give_a_different_valid_child(space):
    rng = random.Random(1)
    parents = space.initial() + [space.sample(rng) for _ in range(15)] + [text([3] * 20)]
    for parent in parents:
        for operator in space.operators():
            for _ in range(3):
                mutation = space.mutate(parent, rng, operator)
                assert mutation.operator == operator and mutation.description
                assert space.validate(mutation.child).ok
                assert mutation.child == space.canonical(mutation.child) != space.canonical(parent)
        assert space.mutate(parent, rng).operator in space.operators()
    assert space.local_operators() == ["block", "stage"]

    def changed(a: str, b: str) -> int:
        return sum(x != y for x, y in zip(space.encode(a), space.encode(b)))

    assert changed(parents[0], space.mutate(parents[0], rng, "block").child) == 1
    assert 2 <= changed(parents[0], space.mutate(parents[0], rng, "blocks").child) <= 4
    with pytest.raises(ValueError, match="unknown operator"):
        space.mutate(parents[0], rng, "width")


def test_shrink_reduces_params(space):
    rng = random.Random(2)
    big = text([3] * 20)
    before = space.param_count(big)
    smaller = space.shrink(big, 0.9, rng)
    assert smaller.operator == "shrink" and space.validate(smaller.child).ok
    assert 0.85 * before < space.param_count(smaller.child) <= 0.9 * before
    tiny = space.shrink(text(COLLM_ARCH), 0.1, rng)
    assert tiny.child == text([0] * 20) and "smallest" in tiny.description
    assert space.param_count(tiny.child) < space.param_count(text(COLLM_ARCH))


def test_sizes_depth_build_and_features(space):
    candidate = text(COLLM_ARCH)
    assert space.param_count(candidate) == 3_747_728 and space.macs(candidate) == 324_957_120
    assert closed_form_costs(space, candidate, 1000) == (3_747_728, 2 * 324_957_120)
    assert space.depth(candidate) == 3 + 3 * 8 + 6 * 12 and space.depth("{") == 0
    features = structure_features(space, candidate)
    assert len(features) == 20 * 4 + 4 and features[-4:] == [2.0, 5.0, 1.0, 12.0]  # one-hots, then counts
    net = space.build(candidate, 10)
    assert count_params(net) == space.param_count(candidate, 10)
    assert count_params(space.build(candidate, 10, plain=True)) == space.param_count(candidate, 10, plain=True)
    with torch.no_grad():
        out = net.eval()(torch.randn(1, 3, 32, 32))
        assert net.forward_pre_gap(torch.randn(1, 3, 32, 32)).shape == (1, 1024, 1, 1)
    assert out.shape == (1, 10) and bool(torch.isfinite(out).all())


def test_answers_and_repair(space):
    answer = f'Here it is:\n```json\n{{"choices": {COLLM_ARCH}}}\n```\nand also [1, 2] as notes.'
    assert space.candidates_in_answer(answer) == [text(COLLM_ARCH), "[1, 2]"]
    assert space.repair(answer, "") == text(COLLM_ARCH)
    fixed = space.repair("try [0, 1, 2.6, 7, -1]", "invalid")
    assert fixed == text([0, 1, 3, 3, 0] + [0] * 15)
    assert space.repair(json.dumps({"choices": [1] * 25}), "") == text([1] * 20)
    assert space.repair("no arch here", "") is None
    assert space.repair('{"choices": "all 3x3"}', "") is None


def test_settings_are_checked():
    with pytest.raises(SpaceError, match="input_size"):
        get_space("spos_shufflenet", {"input_size": 100})
    with pytest.raises(SpaceError, match="initial"):
        get_space("spos_shufflenet", {"initial": [text([5] * 20)]})
    with pytest.raises(SpaceError, match="width_mult: Extra inputs"):
        get_space("spos_shufflenet", {"width_mult": 1.0})
    seeded = get_space("spos_shufflenet", {"initial": [json.dumps(COLLM_ARCH)], "input_size": 160})
    assert seeded.initial() == [text(COLLM_ARCH)]
    assert seeded.macs(text(COLLM_ARCH)) < 324_957_120
