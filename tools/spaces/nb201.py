"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020), registered as ``"nb201"``.

A candidate is a cell string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (node 1 reads node 0, node 2
nodes 0,1, node 3 nodes 0,1,2; each edge one of :data:`OPS`). The canonical form is the
benchmark's (and the table's) spelling; the edges of a node may be written in any order. A cell
whose ``none`` edges cut every input -> output path is valid (it is in the benchmark):
:meth:`NB201Space.has_path` tells it apart. The size closed forms count every parameter of the
built network, affine BatchNorms included, as the table's ``params_m`` does (one nor_conv_3x3
edge: 5 x 9 x (16² + 32² + 64²) conv + 5 x 2 x (16 + 32 + 64) BatchNorm weights = 243,040).
Settings: ``initial`` (seed cells). Importing this module imports neither torch nor networkx.
"""

from __future__ import annotations

import itertools
import random
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from archsmith.tools.spaces.base import Mutation, Validation, checked_seeds, register_space
from archsmith.tools.spaces.nb201_grammar import (
    EDGES,
    OPS,
    Ops,
    cells_in_text,
    format_cell,
    ops_over_parent,
    parse_cell,
    repair_ops,
)

if TYPE_CHECKING:  # pragma: no cover
    import networkx as nx
    import torch.nn as nn

CONV_OPS = frozenset({"nor_conv_1x1", "nor_conv_3x3"})
FREE_OPS = ("skip_connect", "avg_pool_3x3")  # parameter-free and path-keeping
# (target node, source node) of each edge, in the order of the cell string.
OPERATORS = ("edge", "edges")

# Closed forms (10 classes: params 72,656 + 650 + 243,040·n3 + 28,000·n1).
BASE_PARAMS = 72_656  # stem, two reduction blocks (with their shortcut convs), last BatchNorm
BASE_FLOPS = 7_782_400
SHORTCUT_PARAMS = 16 * 32 + 32 * 64  # the reduction shortcuts' 1x1 convs (absent when plain)
SHORTCUT_FLOPS = 16 * 32 * 16 * 16 + 32 * 64 * 8 * 8
EDGE_PARAMS = {"nor_conv_3x3": 243_040, "nor_conv_1x1": 28_000}
EDGE_FLOPS = {"nor_conv_3x3": 35_389_440, "nor_conv_1x1": 3_932_160}
HEAD_FEATURES = 64
STEM_LAYERS, REDUCTION_LAYERS, HEAD_LAYERS, CELLS = 1, 2 * 2, 1, 15

# Built-in seeds: two arbitrary cells with a path from input to output (not tuned on the table).
DEFAULT_SEEDS = (
    "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_1x1~2|",
)



def _graph(ops: Ops) -> nx.DiGraph:
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(range(4))
    for op, (target, source) in zip(ops, EDGES):
        if op != "none":
            graph.add_edge(source, target, op=op)
    return graph


def _effective(ops: Ops) -> list[int]:
    """Positions (in EDGES order) of the edges that lie on some input -> output path."""
    import networkx as nx

    graph = _graph(ops)
    from_input = nx.descendants(graph, 0) | {0}
    to_output = nx.ancestors(graph, 3) | {3}
    return [
        position
        for position, (op, (target, source)) in enumerate(zip(ops, EDGES))
        if op != "none" and source in from_input and target in to_output
    ]


def _params(ops: Ops, num_classes: int = 10, plain: bool = False) -> int:
    base = BASE_PARAMS - (SHORTCUT_PARAMS if plain else 0) + (HEAD_FEATURES + 1) * num_classes
    return base + sum(EDGE_PARAMS.get(op, 0) for op in ops)


def _macs(ops: Ops, num_classes: int = 10, plain: bool = False) -> int:
    base = BASE_FLOPS - (SHORTCUT_FLOPS if plain else 0) + (HEAD_FEATURES + 1) * num_classes
    return base + sum(EDGE_FLOPS.get(op, 0) for op in ops)


def _edge_name(position: int) -> str:
    target, source = EDGES[position]
    return f"edge {source}->{target}"


class NB201Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    initial: list[str] | None = Field(None, description="seed cells replacing the built-in ones")


@register_space("nb201")
class NB201Space:
    """NAS-Bench-201 cells: parsing, DAG view, closed-form sizes, mutation, repair, build."""

    name: ClassVar[str] = "nb201"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = NB201Settings.model_validate(settings or {})
        seeds = list(DEFAULT_SEEDS) if self.settings.initial is None else self.settings.initial
        self._seeds = checked_seeds(self, seeds, "seed cell")

    # -- reading ---------------------------------------------------------------------------

    def ops(self, text: str) -> Ops:
        """The six edge operations in string order; ValueError naming the problems otherwise."""
        ops, issues = parse_cell(text)
        if issues:
            raise ValueError(f"invalid NAS-Bench-201 cell: {Validation(ok=False, issues=issues).summary()}")
        return ops

    def validate(self, text: str) -> Validation:
        _, issues = parse_cell(text)
        return Validation(ok=not issues, issues=issues)

    def canonical(self, text: str) -> str:
        """The table's spelling; an unreadable text comes back with its whitespace removed."""
        ops, issues = parse_cell(text)
        return "".join(text.split()) if issues else format_cell(ops)

    def dag(self, text: str) -> nx.DiGraph:
        """Nodes 0..3, an edge source -> target labelled ``op`` for every edge that is not none."""
        return _graph(self.ops(text))

    def has_path(self, text: str) -> bool:
        """Whether the input (node 0) reaches the output (node 3); False for a dead cell."""
        import networkx as nx

        return nx.has_path(self.dag(text), 0, 3)

    def effective_edges(self, text: str) -> list[tuple[int, int, str]]:
        """(source, target, op) of the edges on some input -> output path (empty: dead cell)."""
        ops = self.ops(text)
        return [(EDGES[p][1], EDGES[p][0], ops[p]) for p in _effective(ops)]

    def depth(self, text: str) -> int:
        """Weight layers on the longest input -> logits path of the built network.

        Stem conv (1) + 2 reduction blocks x 2 convs + classifier (1), plus 15 x the longest run
        of conv edges on an effective path of the cell: 6 for a cell without convs, up to 51.
        A dead cell (no input -> output path) has no such path at all: depth 0, so the
        verifier's structural check (``min_layers`` >= 1) discards it. 0 for an invalid text.
        """
        ops, issues = parse_cell(text)
        if issues:
            return 0
        effective = _effective(ops)
        if not effective:
            return 0
        longest = {0: 0}
        for position in sorted(effective, key=lambda p: EDGES[p]):
            target, source = EDGES[position]
            run = longest[source] + (1 if ops[position] in CONV_OPS else 0)
            longest[target] = max(longest.get(target, 0), run)
        return STEM_LAYERS + REDUCTION_LAYERS + HEAD_LAYERS + CELLS * longest[3]

    def param_count(self, text: str, num_classes: int = 10, *, plain: bool = False) -> int:
        """All parameters of :meth:`build`'s network (convs, affine BatchNorms, classifier)."""
        return _params(self.ops(text), num_classes, plain)

    def macs(self, text: str, num_classes: int = 10, *, plain: bool = False) -> int:
        """Multiply-accumulates of convs and the classifier (with its bias) at 32x32.

        This is what NAS-Bench-201 (and its table's ``flops_m`` column) calls FLOPs; Archsmith's
        FLOPs are 2 x MACs.
        """
        return _macs(self.ops(text), num_classes, plain)

    # -- EnumerableSpace -------------------------------------------------------------------

    def choices(self) -> list[list[str]]:
        return [list(OPS) for _ in EDGES]

    def encode(self, text: str) -> list[int]:
        return [OPS.index(op) for op in self.ops(text)]

    def decode(self, indices: list[int]) -> str:
        if len(indices) != len(EDGES) or any(not 0 <= i < len(OPS) for i in indices):
            raise ValueError(f"expected {len(EDGES)} indices in 0..{len(OPS) - 1}, got {indices!r}")
        return format_cell([OPS[i] for i in indices])

    def sample(self, rng: random.Random) -> str:
        return format_cell([rng.choice(OPS) for _ in EDGES])

    # -- search ----------------------------------------------------------------------------

    def initial(self) -> list[str]:
        return list(self._seeds)

    def operators(self) -> list[str]:
        return list(OPERATORS)

    def local_operators(self) -> list[str]:
        """Refinement changes one edge at a time (a local search over single-edge neighbours)."""
        return ["edge"]

    def mutate(self, text: str, rng: random.Random, operator: str | None = None) -> Mutation:
        """``edge``: one edge gets another operation; ``edges``: 2 or 3 edges do. The child is
        always a different valid cell; ValueError for an invalid parent or unknown operator."""
        ops = list(self.ops(text))
        if operator is None:
            operator = rng.choice(OPERATORS)
        elif operator not in OPERATORS:
            raise ValueError(f"unknown operator {operator!r}; known: {', '.join(OPERATORS)}")
        count = 1 if operator == "edge" else rng.choice((2, 3))
        changes = []
        for position in sorted(rng.sample(range(len(EDGES)), count)):
            new = rng.choice([op for op in OPS if op != ops[position]])
            changes.append(f"{_edge_name(position)}: {ops[position]} -> {new}")
            ops[position] = new
        return Mutation(child=format_cell(ops), operator=operator, description="; ".join(changes))

    def repair(self, text: str, error: str) -> str | None:
        """Deterministic fix, whatever ``error`` says: spacing and surrounding prose dropped,
        loose or misspelt names mapped to the closest operation ("Conv3x3" -> nor_conv_3x3,
        "skip" -> skip_connect), wrong or missing node indices renumbered in order (the i-th
        edge of a node reads node i), six edges in wrongly sized nodes regrouped 1+2+3. None
        when a name matches no operation or there are not six edges."""
        ops = repair_ops(text)
        return format_cell(ops) if ops is not None else None

    def repair_from_parent(self, text: str, parent: str) -> str | None:
        """The edges the child writes readably (a known operation, ``~source`` its node can read)
        placed over its parent's six; an edge it leaves out or garbles stays the parent's. The 0.5B
        models drop an edge while changing another (``|skip_connect~0|+|avg_pool_3x3~1|+|...``):
        the change they made is kept. None when the parent does not validate, the child has more
        than three nodes, or no edge of it is readable."""
        parent_ops, issues = parse_cell(parent)
        if issues:
            return None
        ops = ops_over_parent(text, parent_ops)
        return format_cell(ops) if ops is not None else None

    def shrink(self, text: str, factor: float, rng: random.Random) -> Mutation:
        """Conv edges downgraded (3x3 -> 1x1 -> skip_connect/avg_pool_3x3) so that params and
        FLOPs fall to at most ``factor`` times, as close to it as the edges allow. Edges off
        every input -> output path go first; ``none`` is never introduced (paths stay)."""
        ops = self.ops(text)
        before_params, before_macs = _params(ops), _macs(ops)
        convs = [p for p, op in enumerate(ops) if op in CONV_OPS]
        if not convs:
            description = f"no conv edges: already the smallest size for this cell ({before_params:,} params)"
            return Mutation(child=format_cell(ops), operator="shrink", description=description)
        effective = set(_effective(ops))
        levels = {"nor_conv_3x3": ("nor_conv_3x3", "nor_conv_1x1", "free"), "nor_conv_1x1": ("nor_conv_1x1", "free")}

        def rank(combo: tuple[str, ...]) -> tuple[int, ...]:
            """Fitting first, then the largest size, then the fewest changes to effective edges."""
            trial = tuple(dict(zip(convs, combo)).get(p, op) for p, op in enumerate(ops))
            params, fits = _params(trial), _params(trial) <= before_params * factor
            fits = fits and _macs(trial) <= before_macs * factor
            changed = [p for p, op in zip(convs, combo) if op != ops[p]]
            return (int(fits), params if fits else -params, -sum(p in effective for p in changed), -len(changed))

        ranked = [(rank(combo), combo) for combo in itertools.product(*(levels[ops[p]] for p in convs))]
        top = max(key for key, _ in ranked)
        combo = rng.choice([combo for key, combo in ranked if key == top])
        child, changes = list(ops), []
        for position, op in zip(convs, combo):
            if op != ops[position]:
                new = rng.choice(FREE_OPS) if op == "free" else op
                changes.append(f"{_edge_name(position)}: {ops[position]} -> {new}")
                child[position] = new
        after = _params(tuple(child))
        summary = f"params {before_params:,} -> {after:,} (x{after / before_params:.2f}, asked x{factor:.2f})"
        if not top[0]:
            summary += "; the smallest this cell can get without none edges"
        description = "; ".join([*changes, summary]) if changes else f"unchanged: {summary}"
        return Mutation(child=format_cell(child), operator="shrink", description=description)

    def build(self, text: str, num_classes: int, *, plain: bool = False) -> nn.Module:
        from archsmith.tools.spaces.nb201_net import NB201Net

        return NB201Net(self.ops(text), num_classes, plain=plain)

    def candidates_in_answer(self, answer: str) -> list[str]:
        """Cell strings written anywhere in an LLM answer (see :func:`archsmith.agents.answers.extract_candidate`)."""
        return cells_in_text(answer)

    def describe(self) -> str:
        return _DESCRIPTION.format(ops=", ".join(OPS), seed=self._seeds[0])


_DESCRIPTION = """\
A network is a NAS-Bench-201 cell string. The cell is a small DAG with 4 nodes: node 0 is the
cell input, node 3 the cell output; node j is the sum of one operation applied to every earlier
node. The 6 edges are written node by node, each node between bars, nodes joined by '+':
  |op~0|+|op~0|op~1|+|op~0|op~1|op~2|
(the first group is node 1 reading node 0; the second node 2 reading nodes 0 and 1; the third
node 3 reading nodes 0, 1 and 2; '~k' names the node an edge reads).
Operations (exact names): {ops}.
- nor_conv_1x1 / nor_conv_3x3: ReLU, 1x1 or 3x3 convolution, BatchNorm.
- avg_pool_3x3: 3x3 average pooling (stride 1); skip_connect: identity; none: no edge.
The same cell is repeated 15 times in a fixed network (3x3 stem; 3 stages of 5 cells with
16, 32, 64 channels; residual reduction blocks between stages; global pooling; linear head).
Only the cell is searched: 5^6 = 15,625 cells. Each nor_conv_3x3 edge adds 243,040 parameters,
each nor_conv_1x1 edge 28,000; the other operations add none (72,656 + head otherwise).
If none edges cut every path from node 0 to node 3, the network ignores its input.
Example: {seed}
"""
