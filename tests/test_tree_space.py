"""The tree space (LLMasTool): the seed tree, closed-form sizes against built networks, every tree
transformation, the header round trip, validation messages, shrink, mined modules, and a run."""

from __future__ import annotations

import json
import random

import pytest
import torch

import archsmith
from archsmith.tools.modules import ModuleLibrary, ModuleRecord
from archsmith.tools.spaces import get_space
from archsmith.tools.spaces.tree_model import EDIT_PREFIX, TREE_PREFIX, Node, infer, read_header, render
from archsmith.tools.tasks import forward_counting_weight_layers

SPACE = get_space("tree", {})
SEED = SPACE.initial()[0]


def built(text: str, space=SPACE) -> tuple[int, tuple[int, ...]]:
    """Parameters and the output shape of the built network on a [2, 3, 32, 32] batch."""
    net = space.build(text, 10)
    with torch.no_grad():
        out = net.eval()(torch.randn(2, 3, 32, 32))
    return sum(p.numel() for p in net.parameters()), tuple(out.shape)


def with_header(text: str, tree_json: str) -> str:
    lines = text.splitlines(keepends=True)
    return TREE_PREFIX + tree_json + "\n" + "".join(lines[1:])


def test_seed_is_resnet32_and_runs(one_torch_thread):
    assert SPACE.validate(SEED).ok
    assert "import archsmith" not in SEED and "from archsmith" not in SEED
    assert SEED.startswith(TREE_PREFIX) and "class Network(nn.Module)" in SEED
    params, shape = built(SEED)
    assert shape == (2, 10)
    assert params == SPACE.param_count(SEED) == 466_906  # the code space's resnet32 base
    _, layers = forward_counting_weight_layers(SPACE.build(SEED, 10), torch.randn(2, 3, 32, 32))
    assert SPACE.depth(SEED) == layers == 34  # 31 convs + 2 projections + the classifier
    tree, edit = read_header(SEED)
    assert edit is None and [b.repeat for st in tree.stages for b in st.blocks] == [5, 5, 5]
    assert SPACE.param_count(SEED, plain=True) == sum(p.numel() for p in SPACE.build(SEED, 10, plain=True).parameters())


def test_closed_form_params_match_built_over_random_mutations(one_torch_thread):
    rng, text = random.Random(7), SEED
    for _ in range(20):
        mutation = SPACE.mutate(text, rng)
        assert SPACE.validate(mutation.child).ok, mutation.description
        params, shape = built(mutation.child)
        assert shape == (2, 10) and params == SPACE.param_count(mutation.child), mutation.description
        text = mutation.child if params < 1.5e6 else SEED


@pytest.fixture(scope="module")
def fixed_tree():
    """The seed after one insert (so that ``repeat`` has an edit to repeat)."""
    return SPACE.mutate(SEED, random.Random(3), "insert").child


@pytest.mark.parametrize("operator", SPACE.operators())
def test_every_operator_gives_a_different_valid_tree(operator, fixed_tree, one_torch_thread):
    mutation = SPACE.mutate(fixed_tree, random.Random(11), operator)
    child = mutation.child
    assert mutation.operator == operator
    assert SPACE.validate(child).ok
    assert SPACE.canonical(child) != SPACE.canonical(fixed_tree)
    tree, edit = read_header(child)
    infer(tree)
    assert edit is not None and edit.operator == operator
    assert edit.kind == ("insert" if operator == "repeat" else operator)
    assert edit.path in mutation.description
    assert json.loads(child.splitlines()[1][len(EDIT_PREFIX):])["kind"] == edit.kind
    params, shape = built(child)
    assert shape == (2, 10) and params == SPACE.param_count(child)


def test_repeat_needs_a_previous_edit():
    with pytest.raises(ValueError, match="no previous edit"):
        SPACE.mutate(SEED, random.Random(0), "repeat")


def test_swap_replaces_conv_by_depthwise_pointwise_pair_and_back():
    rng, text = random.Random(0), SEED
    for _ in range(40):
        text = SPACE.mutate(SEED, rng, "swap").child
        if "dw(" in text.splitlines()[1]:
            break
    assert "groups=" in text and SPACE.validate(text).ok
    back = [SPACE.mutate(text, random.Random(i), "swap") for i in range(300)]
    assert any(SPACE.canonical(m.child) == SPACE.canonical(SEED) for m in back)


def test_canonical_round_trip_and_edits_do_not_count():
    child = SPACE.mutate(SEED, random.Random(5), "hyperparameter").child
    tree, edit = read_header(child)
    assert render(tree, edit) == child
    assert SPACE.canonical(child) == render(tree) and SPACE.canonical(SEED) == SEED
    assert SPACE.canonical(render(tree, edit.model_copy(update={"path": "elsewhere"}))) == SPACE.canonical(child)


def test_validation_names_the_problem():
    bad_json = with_header(SEED, '{"stem": [')
    issue = SPACE.validate(bad_json).issues[0]
    assert issue.kind == "syntax" and "header" in issue.message
    assert "first line" in SPACE.validate("import torch\n").summary()

    tree, _ = read_header(SEED)
    tree.stages[1].blocks[0].nodes[0].args = {"depthwise": True, "out_channels": 48}
    issue = SPACE.validate(with_header(SEED, tree.model_dump_json())).issues[0]
    assert issue.kind == "channels" and "stages[1].blocks[0].nodes[0]" in issue.message

    tree, _ = read_header(SEED)
    tree.stages[2].blocks[0].nodes[3].args["out_channels"] = 0
    issue = SPACE.validate(with_header(SEED, tree.model_dump_json())).issues[0]
    assert issue.kind == "channels" and "stages[2].blocks[0].nodes[3]" in issue.message

    tree, _ = read_header(SEED)
    tree.stages[1].blocks[0].nodes = [Node(type="BatchNorm2d")]
    issue = SPACE.validate(with_header(SEED, tree.model_dump_json())).issues[0]
    assert "stages[1].blocks[0]" in issue.message and "no convolution or pooling" in issue.message

    edited = SEED.replace("nn.Linear(64,", "nn.Linear(65,")
    assert "body" in SPACE.validate(edited).summary()
    assert SPACE.repair(edited, "") == SEED


def test_shrink_lowers_params_below_factor():
    for factor in (0.8, 0.5, 0.3):
        mutation = SPACE.shrink(SEED, factor, random.Random(0))
        assert SPACE.validate(mutation.child).ok
        assert SPACE.param_count(mutation.child) <= factor * SPACE.param_count(SEED)


def test_mined_modules_join_swap(tmp_path, one_torch_thread):
    probe = {"status": "ok", "ok": True, "input_shape": [2, 16, 8, 8], "output_shape": [2, 16, 8, 8],
             "output_kind": "tensor", "channels_in": 16, "channels_out": 16, "stride": 1, "keeps_spatial": True,
             "params": 0, "kwargs": {"inplace": False}}
    mish = ModuleRecord(name="torch.nn.modules.activation.Mish", class_name="Mish",
                        module="torch.nn.modules.activation", package="torch", path="nn/modules/activation.py",
                        line=1, probe=probe)
    sized = mish.model_copy(update={"name": "torch.nn.modules.x.Sized", "class_name": "Sized",
                                    "probe": {**probe, "kwargs": {"channels": 16}}})
    outside = mish.model_copy(update={"name": "mylib.Act", "module": "mylib", "package": "mylib"})
    lazy = mish.model_copy(update={"name": "torch.nn.modules.x.LazyNorm", "class_name": "LazyNorm",
                                   "probe": {**probe, "kwargs": {}, "params": 32}})
    with ModuleLibrary(tmp_path / "library.sqlite") as library:
        library.upsert([mish, sized, outside, lazy])
    space = get_space("tree", {"library": str(tmp_path / "library.sqlite")})
    assert [n.args["class_name"] for n in space.limits.mined] == ["Mish"]
    children = [space.mutate(SEED, random.Random(i), "swap").child for i in range(40)]
    child = next(c for c in children if "Mish" in c)
    assert "from torch.nn.modules.activation import Mish" in child and space.validate(child).ok
    params, shape = built(child, space)
    assert shape == (2, 10) and params == space.param_count(child)


def test_short_run_with_the_tree_space(toy_config):
    config = toy_config(space={"name": "tree"},
                        evaluator={"name": "zen", "preset": "custom", "batch_size": 4, "repeats": 1},
                        budget={"params_m": 1.5, "input_size": 32, "num_classes": 10},
                        search={"max_candidates": 6, "children_per_generation": 2})
    result = archsmith.run(config)
    assert result.counts["valid"] >= 4
    valid = [r for r in result.history if r["status"] == "valid"]
    assert all(SPACE.validate(r["text"]).ok and r["params"] <= 1.5e6 for r in valid)


SMALL_BASE = '''
import torch
import torch.nn as nn

WIDTHS = (24, 48)
ACT = nn.GELU


class Sep(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 5, stride, 2, groups=cin, bias=False)
        self.bn = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.act = ACT()

    def forward(self, x):
        return self.act(self.pw(self.bn(self.dw(x))))


class Network(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 1, 1))
        layers = []
        cin = 16
        for width in WIDTHS:
            layers.append(Sep(cin, width, 2))
            layers.append(Sep(width, width))
            cin = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.layers(self.stem(x)).mean((2, 3)))
'''


def test_code_bases_parse_into_trees(tmp_path, one_torch_thread):
    from archsmith.tools.spaces.code import builtin_base_source
    from archsmith.tools.spaces.tree_parse import ParseError, parse_code_base

    assert render(parse_code_base(builtin_base_source("resnet32"))) == SEED
    assert get_space("tree", {"seed": "code:resnet32"}).initial() == [SEED]
    base = tmp_path / "small.py"
    base.write_text(SMALL_BASE, "utf-8")
    space = get_space("tree", {"seed": f"code:{base}"})
    text = space.initial()[0]
    tree, _ = read_header(text)
    assert [[(b.name, b.repeat, b.stride, b.residual) for b in st.blocks] for st in tree.stages] == \
        [[("Sep", 2, 2, False)], [("Sep", 2, 2, False)]]  # Sep(cin, w, 2) then Sep(w, w): one block, repeat 2
    code_net = get_space("code", {"bases": [str(base)]}).build(SMALL_BASE, 10)
    params, shape = built(text, space)
    assert shape == (2, 10) and params == space.param_count(text) == sum(p.numel() for p in code_net.parameters())
    with pytest.raises(ParseError, match="line 13: nn.LayerNorm is not in the tree space's catalogue"):
        parse_code_base(SMALL_BASE.replace("nn.BatchNorm2d(cin)", "nn.LayerNorm(cin)"))


def test_answers_with_a_tree_line_give_the_rendered_file():
    from archsmith.agents.answers import extract_candidate

    child = SPACE.mutate(SEED, random.Random(2), "swap").child
    tree_line = child.splitlines()[0]
    answer = f"I swapped an activation.\n```python\n{tree_line}\nimport torch  # the rest as before\n```\n"
    text = extract_candidate(answer, SPACE)
    assert SPACE.validate(text).ok and SPACE.canonical(text) == SPACE.canonical(child)
    assert SPACE.candidates_in_answer("# archsmith-tree: {broken") == ["# archsmith-tree: {broken"]


def test_limits_hold_for_every_child():
    space = get_space("tree", {"max_blocks": 15, "max_channels": 64})
    rng = random.Random(4)
    for _ in range(30):
        child = space.mutate(SEED, rng, "hyperparameter").child
        tree, _ = read_header(child)
        assert sum(b.repeat for st in tree.stages for b in st.blocks) <= 15
        assert space.validate(child).ok  # widths stay <= 64
    issue = get_space("tree", {"max_blocks": 10}).validate(SEED).issues[0]
    assert issue.kind == "limit" and "max_blocks 10" in issue.message
    from archsmith.knowledge.tree import Tag

    assert SPACE.operators_for_idea(Tag("layer", "operator", "activation", "x")) == ["swap", "hyperparameter"]


def test_repeat_after_a_shrink_is_refused_not_a_crash():
    """The Downscaler's shrink is recorded as the child's edit; repeat cannot repeat it and says so
    (the Generator then takes another operator), instead of a KeyError ending the run."""
    import random

    from archsmith.tools.spaces import get_space

    space = get_space("tree")
    shrunk = space.shrink(space.initial()[0], 0.7, random.Random(0)).child
    with pytest.raises(ValueError, match="repeat: the parent's last edit \\(shrink\\)"):
        space.mutate(shrunk, random.Random(0), "repeat")
