"""Reading and writing NAS-Bench-201 cell strings: the grammar, parse errors, lenient repair.

``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: node 1 reads node 0, node 2 nodes 0,1, node 3 nodes
0,1,2; a node's edges may be written in any order; :func:`format_cell` writes the benchmark's
spelling.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from archsmith.tools.spaces.base import ValidationIssue

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
Ops = tuple[str, ...]
_NODES = "node 1 from node 0; node 2 from nodes 0,1; node 3 from nodes 0,1,2"


class CellSyntaxError(ValueError):
    """A cell string that cannot be read; ``position`` is a character offset."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position})")
        self.message = message
        self.position = position


def format_cell(ops: Sequence[str]) -> str:
    """The canonical string of six edge operations in :data:`EDGES` order."""
    nodes: list[str] = []
    for target in (1, 2, 3):
        edges = [f"{op}~{source}" for op, (node, source) in zip(ops, EDGES) if node == target]
        nodes.append("|" + "|".join(edges) + "|")
    return "+".join(nodes)


# A cell written anywhere in free text: node groups joined by '+', the first bar may be missing
# (``nor_conv_3x3~0|+|...`` inside a string literal); whitespace is removed before matching.
_EDGE_IN_TEXT = r"[A-Za-z0-9_]+~\d+\|"
_CELL_IN_TEXT = re.compile(rf"\|?(?:{_EDGE_IN_TEXT})+(?:\+\|(?:{_EDGE_IN_TEXT})+)+")


def cells_in_text(text: str) -> list[str]:
    """Every cell-shaped span in ``text`` (an LLM answer), in order, each opened with '|'.

    Shape only: a span may still name unknown operations or read the wrong nodes.
    """
    found = []
    for line in text.splitlines():
        for match in _CELL_IN_TEXT.finditer(re.sub(r"[ \t]+", "", line)):
            cell = match.group(0)
            found.append(cell if cell.startswith("|") else "|" + cell)
    return found


def _scan(text: str) -> list[tuple[int, list[tuple[str, int, int, int]]]]:
    """Nodes as (position, edges), each edge (op, source, op position, index position)."""
    name_re, index_re = re.compile(r"[A-Za-z0-9_]+"), re.compile(r"\d+")

    def skip(i: int) -> int:
        while i < len(text) and text[i].isspace():
            i += 1
        return i

    i = skip(0)
    if i == len(text):
        raise CellSyntaxError("empty cell: expected |op~0|+|op~0|op~1|+|op~0|op~1|op~2|", 0)
    nodes: list[tuple[int, list[tuple[str, int, int, int]]]] = []
    while True:
        if text[i] != "|":
            raise CellSyntaxError(f"expected '|' to open node {len(nodes) + 1}, found {text[i]!r}", i)
        start, edges = i, []
        i = skip(i + 1)
        while True:
            name = name_re.match(text, i)
            if name is None:
                found = repr(text[i]) if i < len(text) else "the end"
                raise CellSyntaxError(f"expected an operation name, found {found}", i)
            op = name.group()
            if op not in OPS:
                close = difflib.get_close_matches(op.lower(), OPS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                allowed = ", ".join(OPS)
                raise CellSyntaxError(f"unknown operation {op!r}{hint}; allowed: {allowed}", i)
            j = skip(name.end())
            if j == len(text) or text[j] != "~":
                raise CellSyntaxError(f"expected '~' and a node index after {op!r}", j)
            j = skip(j + 1)
            index = index_re.match(text, j)
            if index is None:
                raise CellSyntaxError(f"expected a node index (an integer) after '{op}~'", j)
            edges.append((op, int(index.group()), i, j))
            i = skip(index.end())
            if i == len(text) or text[i] != "|":
                raise CellSyntaxError(f"expected '|' after edge '{op}~{index.group()}'", i)
            i = skip(i + 1)
            if i == len(text) or text[i] == "+":
                break
        nodes.append((start, edges))
        if i == len(text):
            return nodes
        i = skip(i + 1)
        if i == len(text):
            raise CellSyntaxError("expected a node after '+'", i)


_OP = "(" + "|".join(OPS) + ")"
# The benchmark's own spelling (what format_cell writes): read by one match, since searches parse
# thousands of such cells per generation; anything else goes through the scanner and its errors.
_CANONICAL_CELL = re.compile(rf"\|{_OP}~0\|\+\|{_OP}~0\|{_OP}~1\|\+\|{_OP}~0\|{_OP}~1\|{_OP}~2\|")


def parse_cell(text: str) -> tuple[Ops, list[ValidationIssue]]:
    """The six operations (EDGES order) and the problems found; a problem means no operations."""
    if (canonical := _CANONICAL_CELL.fullmatch(text)) is not None:
        return canonical.groups(), []
    try:
        nodes = _scan(text)
    except CellSyntaxError as err:
        return (), [ValidationIssue(message=err.message, position=err.position, kind="syntax")]
    if len(nodes) != 3:
        where = nodes[3][0] if len(nodes) > 3 else len(text.rstrip())
        message = f"a cell has 3 nodes separated by '+' ({_NODES}), found {len(nodes)}"
        return (), [ValidationIssue(message=message, position=where, kind="syntax")]
    issues: list[ValidationIssue] = []
    ops: dict[tuple[int, int], str] = {}
    for target, (start, edges) in enumerate(nodes, start=1):
        if len(edges) != target:
            sources = ",".join(str(s) for s in range(target))
            message = f"node {target} has {target} edge(s) (from nodes {sources}), found {len(edges)}"
            issues.append(ValidationIssue(message=message, position=start, kind="syntax"))
            continue
        for op, source, _, where in edges:
            if source >= target:
                message = f"node {target} cannot read node {source} ('~{source}'): use ~0..~{target - 1}"
                issues.append(ValidationIssue(message=message, position=where, kind="syntax"))
            elif (target, source) in ops:
                message = f"node {target} reads node {source} twice ('~{source}')"
                issues.append(ValidationIssue(message=message, position=where, kind="syntax"))
            else:
                ops[(target, source)] = op
    if issues:
        return (), issues
    return tuple(ops[edge] for edge in EDGES), []


def closest_op(name: str) -> str | None:
    """The operation a loose name means ("conv3x3" -> nor_conv_3x3, "skip" -> skip_connect)."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    exact = {op.replace("_", ""): op for op in OPS} | dict.fromkeys(("zero", "zeros", "null", "empty"), "none")
    if key in exact or "pool" in key:
        return exact.get(key, "avg_pool_3x3")
    if "conv" in key or key in {"1x1", "3x3"}:  # None for a conv of unknown kernel
        kernel = "3x3" if "3x3" in key or key.endswith("3") else "1x1" if "1x1" in key or key.endswith("1") else ""
        return f"nor_conv_{kernel}" if kernel else None
    if "skip" in key or "identity" in key or key in {"id", "residual", "shortcut"}:
        return "skip_connect"
    close = difflib.get_close_matches(name.strip().lower(), OPS, n=1, cutoff=0.8)
    return close[0] if close else None


def repair_ops(text: str) -> Ops | None:
    """Six operations read loosely from a broken cell (see :meth:`NB201Space.repair`)."""
    first, last = text.find("|"), text.rfind("|")
    if first != -1 and last > first:
        groups = [[t for t in group.split("|") if t.strip()] for group in text[first : last + 1].split("+")]
    else:  # no bars: six names separated by commas, spaces or '+'
        groups = [[t for t in re.split(r"[\s,+;]+", text.strip(" `'\"\n")) if t]]
    edge_re = re.compile(r"\s*(.*?)\s*(?:~\s*(\d+))?\s*")
    parsed: list[list[tuple[str, int | None]]] = []
    for group in groups:
        node = []
        for token in group:
            match = edge_re.fullmatch(token)
            op = closest_op(match.group(1)) if match else None
            if op is None:
                return None
            node.append((op, int(match.group(2)) if match and match.group(2) else None))
        parsed.append(node)
    if [len(node) for node in parsed] != [1, 2, 3]:
        flat = [edge for node in parsed for edge in node]
        if len(flat) != len(EDGES):
            return None
        parsed = [flat[0:1], flat[1:3], flat[3:6]]
    ops: list[str] = []
    for target, node in enumerate(parsed, start=1):
        sources = [source for _, source in node]
        if sorted(s for s in sources if s is not None) == list(range(target)):
            ordered = sorted(node, key=lambda edge: edge[1] or 0)  # the written indices are right
        else:
            ordered = node  # wrong or missing indices: the i-th edge reads node i
        ops.extend(op for op, _ in ordered)
    return tuple(ops)


def ops_over_parent(text: str, parent: Ops) -> Ops | None:
    """The child's edges placed over its parent's (see :meth:`NB201Space.repair_from_parent`).

    The first line of ``text`` that has bars is read loosely, node by node ('+' separated); an
    edge written as a known operation with a source its node can read (``op~s``, s < node) takes
    that slot, the first time; everything else (an edge left out, a source out of range, a name
    of no operation) leaves the parent's edge in place. None when the text has more than three
    nodes (which is which cannot be told) or no usable edge at all.
    """
    line = next((line for line in text.splitlines() if "|" in line), "")
    first, last = line.find("|"), line.rfind("|")
    if first == -1 or last <= first:
        return None
    groups = line[first : last + 1].split("+")
    if len(groups) > 3:
        return None
    slots: dict[tuple[int, int], str] = {}
    for target, group in enumerate(groups, start=1):
        for token in (t for t in group.split("|") if t.strip()):
            match = re.fullmatch(r"\s*(.*?)\s*~\s*(\d+)\s*", token)
            op = closest_op(match.group(1)) if match else None
            if op is not None and int(match.group(2)) < target:  # type: ignore[union-attr]
                slots.setdefault((target, int(match.group(2))), op)  # type: ignore[union-attr]
    if not slots:
        return None
    return tuple(slots.get(edge, parent_op) for edge, parent_op in zip(EDGES, parent))
