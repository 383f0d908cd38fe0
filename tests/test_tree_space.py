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
    with pytest.raises(ParseError, match="line 26: unsupported statement While"):
        parse_code_base(SMALL_BASE.replace("        layers = []\n", "        layers = []\n        while False:\n"
                                                                      "            pass\n"))


OPAQUE_BASE = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

REDUCTION = 4


class Gate(nn.Module):
    """Channel gate: not a plain sequence (a product in forward)."""

    def __init__(self, channels, reduction=REDUCTION):
        super().__init__()
        self.fc = nn.Conv2d(channels, max(4, channels // reduction), 1)
        self.back = nn.Conv2d(max(4, channels // reduction), channels, 1)

    def forward(self, x):
        w = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.back(F.relu(self.fc(w))))


def conv_bn(in_channels, out_channels, stride=1):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(out_channels))


class ConvBN(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return self.bn(self.conv(x))


class Block(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.first = ConvBN(in_channels, out_channels, stride)
        self.norm = nn.GroupNorm(4, out_channels)
        self.act = nn.ReLU()
        self.gate = Gate(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        return self.gate(self.act(self.norm(self.first(x)))) + self.shortcut(x)


class Mixer(nn.Module):
    """A whole block kept as written (a loop in forward)."""

    def __init__(self, channels, out_channels, stride=2):
        super().__init__()
        self.proj = nn.Conv2d(channels, out_channels, 1, stride=stride)

    def forward(self, x):
        for _ in range(2):
            x = x + 0.0
        return self.proj(x)


class Network(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks = [Block(16, 16), Block(16, 16), Mixer(16, 32), Block(32, 32), Block(32, 48, 2)]
        self.tail = conv_bn(48, 64)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))
'''


def test_modules_the_tree_does_not_model_are_kept_as_opaque_leaves(tmp_path, one_torch_thread):
    """Issue 22 item 2: an nn module outside the catalogue, a file class whose forward is not a
    plain sequence, and a whole block of that kind stay as written (opaque leaves, with the
    definitions they need); a plain helper class is inlined. The rendering builds the same network."""
    from archsmith.tools.spaces.tree_parse import parse_code_base
    from archsmith.tools.spaces.tree_transforms import OPERATORS

    base = tmp_path / "opaque.py"
    base.write_text(OPAQUE_BASE, "utf-8")
    space = get_space("tree", {"seed": f"code:{base}"})
    text = space.initial()[0]
    tree, _ = read_header(text)
    blocks = [b for st in tree.stages for b in st.blocks]
    assert [(b.name, b.repeat, b.stride) for b in blocks] == \
        [("Block", 2, 1), ("Mixer", 1, 2), ("Block", 1, 1), ("Block", 1, 2)]
    assert [n.label() for n in blocks[0].nodes] == \
        ["conv(16,k3)", "BatchNorm2d", "opaque(nn.GroupNorm)", "ReLU", "opaque(Gate)"]  # ConvBN inlined
    mixer = blocks[1].nodes[0]
    assert mixer.args == {"call": "Mixer(16, 32)", "in_channels": 16, "out_channels": 32, "stride": 2}
    assert blocks[3].nodes[2].args["call"] == "nn.GroupNorm(4, 48)"
    # conv_bn(48, 64) is built in Network.__init__ but Network.forward is not read: it is not a block
    assert [d.split("\n")[0] for d in tree.definitions] == \
        ["import torch.nn.functional as F", "REDUCTION = 4", "class Gate(nn.Module):", "class Mixer(nn.Module):"]
    assert parse_code_base(OPAQUE_BASE) == tree
    reference: dict = {}
    exec(compile(OPAQUE_BASE.replace("self.tail = conv_bn(48, 64)", "pass").replace("Linear(64", "Linear(48"),
                 "base", "exec"), reference)
    params, shape = built(text, space)
    assert shape == (2, 10) and params == sum(p.numel() for p in reference["Network"](10).parameters())
    assert space.validate(text).ok and read_header(render(tree))[0] == tree

    # every edit on offer passes shape inference and builds; widths around an opaque leaf stay
    offered = 0
    for operator in OPERATORS:
        if operator == "repeat":
            continue
        for edit in space.edit_options(text, operator, limit=6):
            child = space.apply_edit(text, edit).child
            assert space.validate(child).ok, edit.human()
            assert built(child, space)[1] == (2, 10), edit.human()
            offered += 1
    assert offered >= 10
    # an opaque leaf takes the channels written in its call: every stage here has one, so no stage
    # width changes (ResNet-32's stages do), and a hand-made tree that changes one is refused
    assert not [e for e in space.edit_options(text, "hyperparameter") if "width" in e.human()]
    assert [e for e in SPACE.edit_options(SEED, "hyperparameter") if "width" in e.human()]
    wider = tree.model_copy(deep=True)
    wider.stages[0].blocks[0].nodes[0].args["out_channels"] = 24
    issues = space.validate(with_header(text, wider.model_dump_json())).issues
    assert "takes 16 channels, not 24" in str(issues)


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
    deeper, _ = read_header(SEED)
    deeper.stages[0].blocks[0].repeat = 6
    issue = get_space("tree", {"max_blocks": 15}).validate(with_header(SEED, deeper.model_dump_json())).issues[0]
    assert issue.kind == "limit" and "16 blocks > max_blocks 15" in issue.message
    with pytest.raises(ValueError, match=r"space.settings.seed: 15 blocks > max_blocks 10 \(raise space.settings"):
        get_space("tree", {"max_blocks": 10})
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


@pytest.mark.parametrize("base", ["mobilenetv2_w05", "shufflenetv2_w05", "nb201_cell"])
def test_every_builtin_code_base_parses_into_the_same_network(base, one_torch_thread):
    """MobileNetV2 parses whole (its `out + x` under `if self.use_residual:` is a residual block,
    its 1x1 head conv a block of its own); ShuffleNetV2's units (channel split and shuffle) and the
    NAS-Bench-201 cells (a DAG in forward) are opaque leaves. Each renders to the base's network."""
    from archsmith.tools.spaces.code import builtin_base_source

    space = get_space("tree", {"seed": f"code:{base}", "max_channels": 2048})
    text = space.initial()[0]
    tree, _ = read_header(text)
    opaque = [n for st in tree.stages for b in st.blocks for n in b.nodes if n.type == "Opaque"]
    assert bool(opaque) == (base != "mobilenetv2_w05")
    reference: dict = {}
    exec(compile(builtin_base_source(base), base, "exec"), reference)
    params, shape = built(text, space)
    assert shape == (2, 10) and params == sum(p.numel() for p in reference["Network"](10).parameters())
