"""Tree transformations of the ``tree`` space: each edits a copy of the tree, and the result is
kept only when shape inference (:func:`~archsmith.tools.spaces.tree_model.infer`) passes and the
tree changed. Every operator returns the child tree and a :class:`TreeEdit`.

``hyperparameter`` (a kernel size, a stage's width x0.75/x1.25, a block's repeat +-1, a stage's
activation type), ``swap`` (a module by a shape-compatible one), ``insert`` (a shape-keeping
module into a block), ``delete`` (a shape-keeping module from a block), ``compose`` (a new
residual block type from two modules found in the tree, see :func:`units`, used in one stage)
and ``repeat`` (the parent's last kind of edit again). :func:`edits` enumerates an operator's
valid edits (the rule tool an LLM chooses among); :func:`apply` picks one at random.
:func:`shrink_tree` lowers widths and repeats to a parameter budget.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from archsmith.tools.spaces.tree_model import (
    ACTIVATIONS,
    KERNELS,
    POOLS,
    SHAPE_KEEPING,
    Block,
    Node,
    Tree,
    TreeEdit,
    TreeError,
    infer,
    size,
)

INSERTABLE = ("BatchNorm2d", "SE", "Dropout")


@dataclass
class Limits:
    """What every child must respect, and the mined modules ``swap`` may use."""

    max_blocks: int = 24
    max_channels: int = 256
    mined: list[Node] = field(default_factory=list)


Edit = tuple[Tree, TreeEdit]
Candidate = Callable[[], Edit]


def round8(x: float) -> int:
    return max(8, int(round(x / 8.0)) * 8)


def total_blocks(tree: Tree) -> int:
    return sum(b.repeat for st in tree.stages for b in st.blocks)


def _block_sites(tree: Tree) -> list[tuple[int, int, Block]]:
    return [(s, b, block) for s, st in enumerate(tree.stages) for b, block in enumerate(st.blocks)]


def _node_sites(tree: Tree) -> list[tuple[str, list[Node], int]]:
    """(path, the list holding it, index) of every module node in blocks (post included)."""
    sites = []
    for s, b, block in _block_sites(tree):
        for where, nodes in (("nodes", block.nodes), ("post", block.post)):
            sites += [(f"stages[{s}].blocks[{b}].{where}[{i}]", nodes, i) for i in range(len(nodes))]
    return sites


def _stem_sites(tree: Tree) -> list[tuple[str, list[Node], int]]:
    return [(f"stem[{i}]", tree.stem, i) for i in range(len(tree.stem))]


def _copy(tree: Tree) -> Tree:
    return tree.model_copy(deep=True)


# -- operators: each lists candidate edits (closures on a fresh copy) ----------------------------


def _hyperparameter(tree: Tree, limits: Limits) -> list[Candidate]:
    out: list[Candidate] = []
    for path, _, i in _stem_sites(tree) + _node_sites(tree):
        node = _resolve(tree, path)
        if node.type == "Conv2d" and node.arg("kernel_size") in KERNELS:
            for k in KERNELS:
                if k != node.arg("kernel_size"):
                    out.append(lambda path=path, k=k: _set_arg(tree, path, "kernel_size", k))
    for s in range(len(tree.stages)):
        for ratio in (0.75, 1.25):
            out.append(lambda s=s, ratio=ratio: _scale_stage(tree, s, ratio))
        for old in sorted(_stage_acts(tree, s)):
            for act in ACTIVATIONS:
                if act != old:
                    out.append(lambda s=s, old=old, act=act: _stage_activation(tree, s, old, act))
    for s, b, block in _block_sites(tree):
        for delta in (1, -1):
            if block.repeat + delta >= 1:
                out.append(lambda s=s, b=b, delta=delta: _repeat(tree, s, b, delta))
    return out


def _stage_acts(tree: Tree, s: int) -> set[str]:
    return {n.type for b in tree.stages[s].blocks for n in (*b.nodes, *b.post) if n.type in ACTIVATIONS}


def _resolve(tree: Tree, path: str) -> Node:
    """The node at ``stem[i]`` or ``stages[s].blocks[b].nodes[i]`` / ``.post[i]``."""
    if path.startswith("stem["):
        return tree.stem[int(path[5:-1])]
    head, tail = path.rsplit(".", 1)
    s, b = (int(part.split("[")[1].rstrip("]")) for part in head.split("."))
    where, i = tail.split("[")
    return getattr(tree.stages[s].blocks[b], where)[int(i.rstrip("]"))]


def _holder(tree: Tree, path: str) -> tuple[list[Node], int]:
    if path.startswith("stem["):
        return tree.stem, int(path[5:-1])
    head, tail = path.rsplit(".", 1)
    s, b = (int(part.split("[")[1].rstrip("]")) for part in head.split("."))
    where, i = tail.split("[")
    return getattr(tree.stages[s].blocks[b], where), int(i.rstrip("]"))


def _set_arg(tree: Tree, path: str, name: str, value: object) -> Edit:
    child = _copy(tree)
    node = _resolve(child, path)
    before = node.arg(name)
    node.args[name] = value
    return child, TreeEdit(operator="hyperparameter", kind="hyperparameter", path=path,
                           before=f"{name}={before}", after=f"{name}={value}")


def _scale_stage(tree: Tree, s: int, ratio: float) -> Edit:
    child = _copy(tree)
    changed = []
    for block in child.stages[s].blocks:
        for node in block.nodes:
            if node.type == "Conv2d" and not node.arg("depthwise"):
                old = int(node.args["out_channels"])
                node.args["out_channels"] = round8(old * ratio)
                changed.append((old, node.args["out_channels"]))
    if not changed:
        raise TreeError(f"stages[{s}]", "no convolution to widen")
    return child, TreeEdit(operator="hyperparameter", kind="hyperparameter", path=f"stages[{s}]",
                           before=f"width {changed[-1][0]}", after=f"width {changed[-1][1]} (x{ratio})")


def _stage_activation(tree: Tree, s: int, old: str, new: str) -> Edit:
    child = _copy(tree)
    for block in child.stages[s].blocks:
        for node in (*block.nodes, *block.post):
            if node.type == old:
                node.type = new
    return child, TreeEdit(operator="hyperparameter", kind="hyperparameter", path=f"stages[{s}]",
                           before=f"activation {old}", after=f"activation {new}")


def _repeat(tree: Tree, s: int, b: int, delta: int) -> Edit:
    child = _copy(tree)
    block = child.stages[s].blocks[b]
    block.repeat += delta
    return child, TreeEdit(operator="hyperparameter", kind="hyperparameter", path=f"stages[{s}].blocks[{b}]",
                           before=f"repeat {block.repeat - delta}", after=f"repeat {block.repeat}")


def _replace(tree: Tree, path: str, new: list[Node], width: int = 1, kind: str = "swap") -> Edit:
    child = _copy(tree)
    nodes, i = _holder(child, path)
    before = " + ".join(n.label() for n in nodes[i:i + width])
    nodes[i:i + width] = [n.model_copy(deep=True) for n in new]
    return child, TreeEdit(operator=kind, kind=kind, path=path, before=before,
                           after=" + ".join(n.label() for n in new))


def _swap(tree: Tree, limits: Limits) -> list[Candidate]:
    out: list[Candidate] = []
    for path, nodes, i in _node_sites(tree):
        node = nodes[i]
        if node.type in ACTIVATIONS or (node.type == "Mined" and node.arg("params") == 0):
            options = [Node(type=a) for a in ACTIVATIONS if a != node.type]
            options += [m for m in limits.mined if m != node]
            out += [lambda path=path, new=new: _replace(tree, path, [new]) for new in options]
        elif node.type in POOLS:
            other = Node(type=POOLS[1 - POOLS.index(node.type)], args=dict(node.args))
            out.append(lambda path=path, new=other: _replace(tree, path, [new]))
        elif node.type == "Conv2d" and not node.arg("depthwise") and node.arg("kernel_size") > 1:
            k = node.arg("kernel_size")
            pair = [Node(type="Conv2d", args={"depthwise": True, "kernel_size": k}),
                    Node(type="Conv2d", args={"out_channels": node.args["out_channels"], "kernel_size": 1})]
            out.append(lambda path=path, pair=pair: _replace(tree, path, pair))
        elif (node.type == "Conv2d" and node.arg("depthwise") and i + 1 < len(nodes)
              and nodes[i + 1].type == "Conv2d" and nodes[i + 1].arg("kernel_size") == 1
              and not nodes[i + 1].arg("depthwise")):
            full = Node(type="Conv2d", args={"out_channels": nodes[i + 1].args["out_channels"],
                                             "kernel_size": node.arg("kernel_size")})
            out.append(lambda path=path, full=full: _replace(tree, path, [full], width=2))
    return out


def _insert(tree: Tree, limits: Limits) -> list[Candidate]:
    out: list[Candidate] = []
    for s, b, block in _block_sites(tree):
        for i in range(len(block.nodes) + 1):
            for kind in INSERTABLE:
                neighbours = block.nodes[max(0, i - 1):i + 1]
                if any(n.type == kind for n in neighbours):
                    continue  # no BN right next to a BN
                path = f"stages[{s}].blocks[{b}].nodes[{i}]"
                out.append(lambda path=path, kind=kind: _insert_at(tree, path, Node(type=kind)))
    return out


def _insert_at(tree: Tree, path: str, node: Node) -> Edit:
    child = _copy(tree)
    nodes, i = _holder(child, path)
    nodes.insert(i, node)
    return child, TreeEdit(operator="insert", kind="insert", path=path, before="-", after=node.label())


# Never deleted: without its BatchNorms a deep residual stack's activations overflow at
# initialisation (Zen-score came out non-finite for 15 of 15 such children), so neither a
# zero-cost proxy nor training can use the child.
UNDELETABLE = frozenset({"BatchNorm2d"})


def _delete(tree: Tree, limits: Limits) -> list[Candidate]:
    out: list[Candidate] = []
    for path, nodes, i in _node_sites(tree):
        if (nodes[i].type in SHAPE_KEEPING and nodes[i].type not in UNDELETABLE
                and (len(nodes) > 1 or ".post[" in path)):
            out.append(lambda path=path: _delete_at(tree, path))
    return out


def _delete_at(tree: Tree, path: str) -> Edit:
    child = _copy(tree)
    nodes, i = _holder(child, path)
    removed = nodes.pop(i)
    return child, TreeEdit(operator="delete", kind="delete", path=path, before=removed.label(), after="-")


def units(tree: Tree) -> list[list[Node]]:
    """The distinct modules of the tree at the level compose works on: a convolution with the
    shape-keeping nodes after it (conv > BN > ReLU), from the stem and every block."""
    found: dict[str, list[Node]] = {}
    for nodes in [tree.stem, *(b.nodes for st in tree.stages for b in st.blocks)]:
        current: list[Node] = []
        for node in nodes:
            if node.type == "Opaque":  # kept as written where it is: not a unit to copy elsewhere
                if current:
                    found.setdefault(" > ".join(n.label() for n in _neutral(current)), current)
                current = []
                continue
            if node.type == "Conv2d" and current:
                found.setdefault(" > ".join(n.label() for n in _neutral(current)), current)
                current = []
            if node.type == "Conv2d" or current:
                current.append(node)
        if current:
            found.setdefault(" > ".join(n.label() for n in _neutral(current)), current)
    return list(found.values())


def _neutral(nodes: list[Node], width: int = 0) -> list[Node]:
    """Copies with the stride dropped and the full convolutions' outputs set to ``width``."""
    out = []
    for node in nodes:
        node = node.model_copy(deep=True)
        node.args.pop("stride", None)
        if node.type == "Conv2d" and not node.arg("depthwise"):
            node.args["out_channels"] = width
        out.append(node)
    return out


def _compose(tree: Tree, limits: Limits) -> list[Candidate]:
    found = units(tree)
    return [lambda a=a, b=b, s=s, k=k: _compose_into(tree, a, b, s, k)
            for a in found for b in found for s, k, _ in _block_sites(tree)]


def _compose_into(tree: Tree, first: list[Node], second: list[Node], s: int, b: int) -> Edit:
    """Block ``stages[s].blocks[b]`` becomes a new residual block type: module ``first`` then
    module ``second``, its convolutions at the replaced block's output width."""
    child = _copy(tree)
    target = child.stages[s].blocks[b]
    width = next((int(n.args["out_channels"]) for n in reversed(target.nodes)
                  if n.type == "Conv2d" and not n.arg("depthwise")), None)
    if width is None:
        raise TreeError(f"stages[{s}].blocks[{b}]", "no convolution gives the block's width")
    nodes = _neutral([*first, *second], width)
    if [n.model_dump() for n in nodes] == [n.model_dump() for n in target.nodes]:
        raise TreeError(f"stages[{s}].blocks[{b}]", "the composition equals the block")
    before = " > ".join(n.label() for n in target.nodes)
    child.stages[s].blocks[b] = Block(name="Composed", nodes=nodes, residual=True, post=target.post,
                                      repeat=target.repeat, stride=target.stride)
    return child, TreeEdit(operator="compose", kind="compose", path=f"stages[{s}].blocks[{b}]", before=before,
                           after=" > ".join(n.label() for n in nodes))


KINDS: dict[str, Callable[[Tree, Limits], list[Candidate]]] = {
    "hyperparameter": _hyperparameter,
    "swap": _swap,
    "insert": _insert,
    "delete": _delete,
    "compose": _compose,
}
OPERATORS = (*KINDS, "repeat")


def fits(tree: Tree, limits: Limits) -> bool:
    try:
        infer(tree, limits.max_channels)
    except TreeError:
        return False
    return total_blocks(tree) <= limits.max_blocks


def _kind(operator: str, previous: TreeEdit | None) -> str:
    """The edit kind an operator applies (``repeat``: the previous edit's)."""
    if operator == "repeat":
        if previous is None:
            raise ValueError("repeat: the parent has no previous edit to repeat")
        if previous.kind not in KINDS:  # e.g. the Downscaler's shrink: not an edit to repeat
            raise ValueError(f"repeat: the parent's last edit ({previous.kind}) is not one of {', '.join(KINDS)}")
        return previous.kind
    if operator in KINDS:
        return operator
    raise ValueError(f"unknown operator {operator!r} (known: {', '.join(OPERATORS)})")


def edits(tree: Tree, operator: str, limits: Limits, previous: TreeEdit | None = None,
          limit: int | None = None) -> list[Edit]:
    """Every valid edit of kind ``operator`` (``repeat``: the previous edit's kind), in a fixed
    order: each child passes shape inference and the limits, differs from ``tree`` and from the
    children listed before it. ``limit`` stops the enumeration after that many."""
    kind = _kind(operator, previous)
    original = Tree.model_validate(tree.model_dump()).model_dump()
    seen: set[str] = set()
    out: list[Edit] = []
    for make in KINDS[kind](tree, limits):
        if limit is not None and len(out) >= limit:
            break
        try:
            child, edit = make()
        except TreeError:
            continue
        child = Tree.model_validate(child.model_dump())  # arguments at their defaults dropped
        dumped = child.model_dump()
        key = child.model_dump_json()
        if dumped == original or key in seen or not fits(child, limits):
            continue
        seen.add(key)
        if operator == "repeat":
            edit = edit.model_copy(update={"operator": "repeat"})
        out.append((child, edit))
    return out


def apply(tree: Tree, operator: str, rng: random.Random, limits: Limits, previous: TreeEdit | None = None) -> Edit:
    """One edit of kind ``operator``, valid by construction: a random one of :func:`edits`."""
    options = edits(tree, operator, limits, previous)
    if not options:
        raise ValueError(f"{operator}: no valid {_kind(operator, previous)} edit applies to this tree")
    return rng.choice(options)


def shrink_tree(tree: Tree, factor: float, num_classes: int = 10) -> Edit:
    """Lower stage widths (x0.75) and block repeats (-1) until the closed-form parameter count is
    at most ``factor`` x the tree's: each step takes the gentlest change that reaches the target,
    else the one that removes the most parameters."""
    target = factor * size(tree, num_classes)[0]
    child = _copy(tree)
    steps = []
    for _ in range(64):
        params = size(child, num_classes)[0]
        if params <= target:
            before = f"{size(tree, num_classes)[0]} params"
            edit = TreeEdit(operator="shrink", kind="shrink", path="stages", before=before,
                            after=f"{params} params ({'; '.join(steps)})"[:300])
            return child, edit
        options = []
        for s, b, block in _block_sites(child):
            if block.repeat > 1:
                options.append((f"repeat {s}.{b}", lambda s=s, b=b: _repeat(child, s, b, -1)[0]))
        for s in range(len(child.stages)):
            options.append((f"width {s}", lambda s=s: _scale_stage(child, s, 0.75)[0]))
        results = []
        for label, make in options:
            try:
                candidate = make()
                infer(candidate)
            except TreeError:
                continue
            smaller = size(candidate, num_classes)[0]
            if smaller < params:
                results.append((smaller, label, candidate))
        if not results:
            break
        enough = [r for r in results if r[0] <= target]  # the gentlest step that reaches the target
        best = max(enough, key=lambda r: r[0]) if enough else min(results, key=lambda r: r[0])
        steps.append(best[1])
        child = best[2]
    raise ValueError(f"shrink: cannot bring {size(tree, num_classes)[0]} params to {int(target)} "
                     "by lowering widths and repeats")
