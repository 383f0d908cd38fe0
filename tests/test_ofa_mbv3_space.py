"""The ``ofa_mbv3`` search space: OFA MobileNetV3 subnets as JSON arch dicts."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from archsmith.tools.spaces import EnumerableSpace, SpaceError, get_space, space_names
from archsmith.tools.spaces.ofa_mbv3 import OFAMbv3Space


def arch_text(ks=3, e=3, d=2, r=224) -> str:
    as_list = lambda v, n: v if isinstance(v, list) else [v] * n  # noqa: E731
    return json.dumps({"ks": as_list(ks, 20), "e": as_list(e, 20), "d": as_list(d, 5), "r": r})


@pytest.fixture(scope="module")
def space() -> OFAMbv3Space:
    return get_space("ofa_mbv3")


def test_registered_and_import_does_not_need_torch(space):
    assert "ofa_mbv3" in space_names()
    assert isinstance(space, EnumerableSpace)
    code = "import sys, archsmith.tools.spaces.ofa_mbv3; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("text", "messages"),
    [
        (arch_text(ks=[3] * 7 + [9] + [3] * 12), ["ks[7] = 9 is not one of [3, 5, 7]"]),
        (arch_text(e=[3] * 19 + [True]), ["e[19] = True is not one of [3, 4, 6]"]),
        (arch_text(d=[2, 2, 5, 2, 2], r=100), ["d[2] = 5", "r = 100 is not one of [128, 144"]),
        (arch_text(ks=[3] * 19), ["ks must be a list of 20 ints, got 19 entries"]),
        ('{"ks": [3], "e": [3]', ["syntax: not JSON", "(at character"]),
        ('{"ks": [], "e": [], "depth": [2]}', ["missing field 'd'", "missing field 'r'", "unknown field 'depth'"]),
        ("[1, 2]", ["expected a JSON object"]),
    ],
)
def test_validation_names_the_field_and_position(space, text, messages):
    validation = space.validate(text)
    assert not validation.ok
    for message in messages:
        assert message in validation.summary()


def test_canonical_ignores_blocks_a_stage_does_not_run(space):
    ks = [7, 5, 3, 3] * 5
    other = [7, 5, 7, 5] * 5  # differs only in blocks 2 and 3 of each stage
    a, b = space.canonical(arch_text(ks=ks, d=2)), space.canonical(arch_text(ks=other, d=2))
    assert a == b and space.canonical(a) == a
    assert list(json.loads(a)) == ["ks", "e", "d", "r"]
    assert space.canonical(arch_text(ks=ks, d=3)) != space.canonical(arch_text(ks=other, d=3))
    assert space.canonical(" {bad ") == "{bad"


def test_enumerable_round_trip_and_sampling(space):
    rng = random.Random(0)
    assert len(space.choices()) == 46
    for _ in range(20):
        text = space.sample(rng)
        assert space.validate(text).ok and text == space.canonical(text)
        assert space.decode(space.encode(text)) == text
    with pytest.raises(ValueError):
        space.decode([0] * 45)


def test_mutations_give_a_different_valid_child(space):
    rng = random.Random(1)
    parents = space.initial() + [space.sample(rng) for _ in range(10)]
    for parent in parents:
        for operator in space.operators():
            mutation = space.mutate(parent, rng, operator)
            assert mutation.operator == operator and mutation.description
            assert space.validate(mutation.child).ok
            assert mutation.child == space.canonical(mutation.child) != space.canonical(parent)
    assert space.local_operators() == ["kernel", "expand", "depth", "resolution"]
    with pytest.raises(ValueError, match="unknown operator"):
        space.mutate(parents[0], rng, "width")


def test_shrink_fits_the_factor_or_reaches_the_smallest_subnet(space):
    rng = random.Random(2)
    big = arch_text(7, 6, 4)
    before = space.param_count(big)
    half = space.shrink(big, 0.6, rng)
    assert space.validate(half.child).ok and half.operator == "shrink"
    assert 0.5 * before < space.param_count(half.child) <= 0.6 * before
    tiny = space.shrink(arch_text(3, 4, 2), 0.1, rng)
    assert space.param_count(tiny.child) == 3_410_792 and "smallest" in tiny.description


@pytest.mark.usefixtures("one_torch_thread")
def test_param_count_matches_the_built_network_and_build_runs(space):
    import torch

    from archsmith.tools.supernets import count_params

    rng = random.Random(3)
    for text in [space.sample(rng) for _ in range(2)]:
        net = space.build(text, 10)
        assert count_params(net) == space.param_count(text, 10)
    assert count_params(space.build(text, 10, plain=True)) == space.param_count(text, 10, plain=True)
    assert space.param_count(arch_text(7, 6, 4)) == 7_664_760
    assert get_space("ofa_mbv3", {"width_mult": 1.2}).param_count(arch_text(7, 6, 4)) == 10_701_632
    with torch.no_grad():
        out = net.eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 10) and bool(torch.isfinite(out).all())
    assert space.depth(text) == 6 + 3 * sum(json.loads(text)["d"]) and space.depth("{") == 0


def test_repair_and_answers(space):
    broken = json.dumps({"ks": [4] * 22, "e": [5, 2], "d": [2, 3, 4, 9, 1]})
    answer = f"Sure! Here is the arch:\n```json\n{broken}\n```\nIt should work."
    assert space.candidates_in_answer(answer) == [broken]
    fixed = space.repair(answer, "invalid")
    data = json.loads(fixed)
    assert space.validate(fixed).ok
    assert data["ks"][0] == 3 and data["d"] == [2, 3, 4, 4, 2] and data["r"] == 224
    assert data["e"][:2] == [4, 3]
    assert space.repair("no arch here", "") is None
    assert space.repair('{"ks": "big", "e": [3], "d": [2]}', "") is None


def test_settings_are_checked(space):
    with pytest.raises(SpaceError, match="resolutions"):
        get_space("ofa_mbv3", {"resolutions": []})
    with pytest.raises(SpaceError, match="initial"):
        get_space("ofa_mbv3", {"initial": [arch_text(r=160)], "resolutions": [224]})
    only = get_space("ofa_mbv3", {"resolutions": [192]})
    assert "resolution" not in only.operators() and json.loads(only.initial()[0])["r"] == 192
    assert "ks[i], e[i]" in space.describe()
