"""The NAS-Bench-201 cell space: parsing, canonical form, DAG view, sizes, mutation, build."""

from __future__ import annotations

import csv
import gzip
import random
import subprocess
import sys
from collections import Counter
from itertools import islice

import pytest

from archsmith.tools.spaces import EnumerableSpace, SearchSpace, get_space
from archsmith.tools.spaces.nb201 import OPS, NB201Space
from archsmith.tools.tabular import builtin_table

TABLE = builtin_table("nasbench201-cifar10")  # the NAS-Bench-201 CIFAR-10 table shipped in the package
CELL = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
DEAD = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|none~1|none~2|"
NO_CONV = "|skip_connect~0|+|avg_pool_3x3~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return NB201Space({})


@pytest.fixture(scope="module")
def table_rows() -> list[dict[str, str]]:
    with gzip.open(TABLE, "rt", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return rows[::997]  # 16 rows spread over the table


def _issue(space: NB201Space, text: str):
    validation = space.validate(text)
    assert not validation.ok
    return validation.issues[0]


def test_registered_and_protocols() -> None:
    space = get_space("nb201")
    assert isinstance(space, SearchSpace) and isinstance(space, EnumerableSpace)
    with pytest.raises(ValueError, match=r"initial\[0\]"):
        NB201Space({"initial": ["|conv~0|"]})
    assert NB201Space({"initial": [f" {CELL} "]}).initial() == [CELL]


def test_import_does_not_need_torch_or_networkx() -> None:
    code = (
        "import sys, archsmith.tools.spaces.nb201, archsmith.tools.spaces.positions; "
        "assert 'torch' not in sys.modules and 'networkx' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("", 0, "empty cell"),
        ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", 0, "expected '|' to open node 1"),
        ("|conv3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", 1, "unknown operation 'conv3x3'"),
        ("|none~0|+|none~0|max_pool_3x3~1|+|none~0|none~1|none~2|", 17, "allowed: none, skip_connect"),
        ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", 5, "expected '~'"),
        ("|none~x|+|none~0|none~1|+|none~0|none~1|none~2|", 6, "node index"),
        ("|none~0+|none~0|none~1|+|none~0|none~1|none~2|", 7, "expected '|' after edge 'none~0'"),
        ("|none~0|+|none~0||none~1|+|none~0|none~1|none~2|", 17, "expected an operation name"),
        ("|none~0|+|none~0|none~1|+", 25, "expected a node after '+'"),
        ("|none~0|+|none~0|none~1|", 24, "a cell has 3 nodes"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|", 48, "found 4"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", 9, "node 2 has 2 edge(s) (from nodes 0,1), found 1"),
        ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", 22, "node 2 cannot read node 2"),
        ("|none~0|+|none~0|none~1|+|none~0|none~0|none~2|", 38, "node 3 reads node 0 twice"),
    ],
)
def test_parse_errors_carry_position(space: NB201Space, text: str, position: int, words: str) -> None:
    issue = _issue(space, text)
    assert issue.kind == "syntax"
    assert words in issue.message
    assert issue.position == position


def test_unknown_op_suggests_the_closest(space: NB201Space) -> None:
    issue = _issue(space, "|nor_conv_3x2~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert "did you mean 'nor_conv_3x3'" in issue.message


def test_dead_cells_are_valid(space: NB201Space) -> None:
    for text in (ALL_NONE, DEAD):
        assert space.validate(text).ok
        assert not space.has_path(text)
        assert space.effective_edges(text) == []
        assert space.depth(text) == 0


def test_dag_view(space: NB201Space) -> None:
    graph = space.dag(CELL)
    assert sorted(graph.nodes) == [0, 1, 2, 3]
    assert graph.edges[0, 1]["op"] == "nor_conv_3x3" and graph.edges[2, 3]["op"] == "nor_conv_3x3"
    assert not graph.has_edge(1, 3)  # a none edge is omitted
    assert space.has_path(CELL)
    # 0->2 (skip) and 1->2 (1x1) feed node 2, which feeds node 3: every non-none edge is used.
    assert sorted(space.effective_edges(CELL)) == [
        (0, 1, "nor_conv_3x3"), (0, 2, "skip_connect"), (0, 3, "avg_pool_3x3"),
        (1, 2, "nor_conv_1x1"), (2, 3, "nor_conv_3x3"),
    ]  # fmt: skip
    side_branch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|"
    assert space.effective_edges(side_branch) == [(0, 3, "skip_connect")]


def test_depth_counts_weight_layers_on_the_longest_path(space: NB201Space) -> None:
    assert space.depth(NO_CONV) == 6  # stem + 2 x 2 reduction convs + classifier
    assert space.depth(CELL) == 6 + 15 * 3  # 0 -3x3-> 1 -1x1-> 2 -3x3-> 3
    side_branch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|"
    assert space.depth(side_branch) == 6  # its convs lead nowhere
    assert space.depth("garbage") == 0


def test_canonical_form(space: NB201Space) -> None:
    spaced = " | nor_conv_3x3 ~ 0 |+| nor_conv_1x1~1 |skip_connect~0|\n+|none~2|avg_pool_3x3~0|none~1| "
    expected = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|none~2|"
    assert space.validate(spaced).ok
    assert space.canonical(spaced) == expected
    assert space.canonical(expected) == expected
    assert space.canonical("not a cell ~") == "notacell~"


def test_canonical_matches_the_table(space: NB201Space, table_rows: list[dict[str, str]]) -> None:
    for row in table_rows:
        arch = row["arch"]
        assert space.validate(arch).ok
        assert space.canonical(arch) == arch
        assert space.decode(space.encode(arch)) == arch


def test_closed_forms_match_the_table(space: NB201Space, table_rows: list[dict[str, str]]) -> None:
    for row in table_rows:
        assert space.param_count(row["arch"]) == round(float(row["params_m"]) * 1e6)
        assert space.macs(row["arch"]) == round(float(row["flops_m"]) * 1e6)


def test_params_count_every_parameter_of_the_built_network(
    space: NB201Space, table_rows: list[dict[str, str]]
) -> None:
    import torch

    for row in islice(table_rows, 3):
        for plain in (False, True):
            model = space.build(row["arch"], 10, plain=plain)
            total = sum(p.numel() for p in model.parameters())
            assert space.param_count(row["arch"], plain=plain) == total
        # The table's params_m holds BatchNorm weights too, not only conv and linear ones.
        bn = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
        assert bn > 0 and round(float(row["params_m"]) * 1e6) == total + 2560  # plain model: no shortcuts
    assert space.param_count(CELL, 100) == sum(p.numel() for p in space.build(CELL, 100).parameters())
    assert space.param_count(ALL_NONE, 10) == 72_656 + 650
    assert space.macs(ALL_NONE, 10) == 7_782_400 + 650


def test_build_forward_shapes(space: NB201Space) -> None:
    import torch

    x = torch.randn(2, 3, 32, 32)
    for text in (CELL, DEAD):
        model = space.build(text, num_classes=10)
        assert model(x).shape == (2, 10)
        assert model.forward_pre_gap(x).shape == (2, 64, 8, 8)
    plain = space.build(NO_CONV, num_classes=7, plain=True)
    assert plain(x).shape == (2, 7)
    with pytest.raises(ValueError, match="unknown operation"):
        space.build("|conv~0|", 10)


def test_encode_decode_and_choices(space: NB201Space) -> None:
    assert space.choices() == [list(OPS)] * 6
    assert space.encode(CELL) == [3, 1, 2, 4, 0, 3]
    assert space.decode([3, 1, 2, 4, 0, 3]) == CELL
    for bad in ([0] * 5, [0, 0, 0, 0, 0, 5]):
        with pytest.raises(ValueError):
            space.decode(bad)
    with pytest.raises(ValueError):
        space.encode("|none~0|")


def test_uniform_sampling(space: NB201Space) -> None:
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(3000)]
    assert all(space.validate(s).ok and space.canonical(s) == s for s in samples)
    counts = Counter((position, op) for s in samples for position, op in enumerate(space.encode(s)))
    assert len(counts) == 30
    assert all(500 < n < 700 for n in counts.values())  # 600 expected per (edge, op)


@pytest.mark.parametrize("operator", ["edge", "edges", None])
def test_mutation_gives_a_different_valid_cell(space: NB201Space, operator: str | None) -> None:
    for parent in (*space.initial(), CELL, ALL_NONE, DEAD):
        for seed in range(60):
            mutation = space.mutate(parent, random.Random(seed), operator)
            assert space.validate(mutation.child).ok
            assert space.canonical(mutation.child) == mutation.child != space.canonical(parent)
            changed = sum(a != b for a, b in zip(space.encode(parent), space.encode(mutation.child)))
            assert changed == 1 if mutation.operator == "edge" else changed in (2, 3)
            assert mutation.operator in space.operators()
    with pytest.raises(ValueError):
        space.mutate(CELL, random.Random(0), "widen")


def test_repair(space: NB201Space) -> None:
    assert space.repair(f"Here it is: `{CELL.replace('|', ' | ')}`", "") == CELL
    loose = "|Conv3x3~0|+|skip~0|conv_1x1~1|+|avgpool~0|zero~1|NOR_CONV_3X3~2|"
    assert space.repair(loose, "unknown operation") == CELL
    misnumbered = "|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~0|+|avg_pool_3x3|none|nor_conv_3x3|"
    assert space.repair(misnumbered, "") == CELL
    swapped = "|nor_conv_3x3~0|+|nor_conv_1x1~1|skip_connect~0|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    assert space.repair(swapped, "") == CELL
    regrouped = "|nor_conv_3x3~0|skip_connect~0|+|nor_conv_1x1~1|avg_pool_3x3~0|+|none~1|nor_conv_3x3~2|"
    assert space.repair(regrouped, "") == CELL
    assert space.repair("nor_conv_3x3, skip, conv1x1, avg_pool, none, conv3x3", "") == CELL
    assert space.repair("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "") is None  # kernel unknown
    assert space.repair("|sandwich~0|+|none~0|none~1|+|none~0|none~1|none~2|", "") is None
    assert space.repair("|none~0|+|none~0|none~1|+|none~0|none~1|", "") is None
    assert space.repair("no cell here", "") is None


def test_repair_from_parent_keeps_the_childs_edges_and_fills_the_rest(space: NB201Space) -> None:
    parent = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"
    # A change of edge (1,0) with edge (2,0) left out: the change is kept, (2,0) is the parent's.
    dropped = "|skip_connect~0|+|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"
    assert space.repair(dropped, "") is None  # five edges: the plain repair cannot tell which is missing
    fixed = space.repair_from_parent(dropped, parent)
    assert fixed == "|skip_connect~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"
    # Sources a node cannot read and unknown names leave the parent's edge; the first of two wins.
    messy = "|sandwich~0|+|skip_connect~2|nor_conv_3x3~0|none~0|\n|ignored~0|+|more~1|"
    assert space.repair_from_parent(messy, parent) == (
        "|nor_conv_1x1~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|")
    assert space.validate(space.repair_from_parent("|avg_pool_3x3~0|", parent)).ok  # one node written
    assert space.repair_from_parent("|a~0|+|b~0|c~1|+|d~0|+|e~0|", parent) is None  # four nodes
    assert space.repair_from_parent("|sandwich~0|+|skip_connect~5|", parent) is None  # nothing readable
    assert space.repair_from_parent("no cell here", parent) is None
    assert space.repair_from_parent(dropped, "not a cell") is None


@pytest.mark.parametrize("factor", [0.9, 0.6, 0.3])
def test_shrink_lowers_params(space: NB201Space, factor: float) -> None:
    full = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    for parent in (full, CELL, space.sample(random.Random(4))):
        for seed in range(4):
            mutation = space.shrink(parent, factor, random.Random(seed))
            assert space.validate(mutation.child).ok
            assert space.has_path(mutation.child) == space.has_path(parent)
            before, after = space.param_count(parent), space.param_count(mutation.child)
            if before > 72_656 + 650 + 28_000:
                assert after < before
            assert after <= before * factor or "smallest" in mutation.description
            assert space.macs(mutation.child) <= space.macs(parent) * factor or "smallest" in mutation.description
    child = space.shrink(full, 0.8, random.Random(0)).child
    assert space.param_count(child) >= space.param_count(full) * 0.8 * 0.8  # about the factor


def test_shrink_without_convs_is_unchanged(space: NB201Space) -> None:
    mutation = space.shrink(NO_CONV, 0.5, random.Random(0))
    assert mutation.child == NO_CONV and "no conv edges" in mutation.description


def test_describe_and_seeds(space: NB201Space) -> None:
    text = space.describe()
    for words in ("|op~0|+|op~0|op~1|+|op~0|op~1|op~2|", "nor_conv_3x3", "avg_pool_3x3", "15,625"):
        assert words in text
    assert len(space.initial()) >= 2
    assert all(space.validate(seed).ok and space.has_path(seed) for seed in space.initial())


def test_algorithmic_debugger_repairs_from_the_parent_when_plain_repair_fails(space: NB201Space) -> None:
    from types import SimpleNamespace

    from archsmith.agents.debugger import Debugger
    from archsmith.graph.config import config_from_dict

    recorded = []
    ctx = SimpleNamespace(config=config_from_dict({"space": {"name": "nb201"}}), space=space,
                          trace=SimpleNamespace(record=recorded.append))
    parent = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"
    state = {"text": "|skip_connect~0|+|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|",
             "strategy": {"candidate_id": "c0002", "parent_texts": [parent]},
             "verdict": {"reason": "syntax: node 2 has 2 edge(s) (from nodes 0,1), found 1"}}
    update = Debugger(ctx)(state)
    assert update["text"] == "|skip_connect~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"
    assert update["repairs"] == ["debugger"]
    [step] = recorded
    assert step.tools["repair"] == "from the parent" and step.decision == "repaired"
