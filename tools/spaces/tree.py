"""The ``tree`` search space (LLMasTool): networks as trees of modules, evolved by tree edits.

A candidate is a Python file honouring the code space's contract (``Network(num_classes)``, see
:mod:`archsmith.tools.spaces.code`), rendered from a tree kept in its first line as JSON
(``# archsmith-tree: {...}``; the second line, ``# archsmith-edit: {...}``, records the edit that
made it). The tree (:mod:`tree_model`) is ``stem -> stages -> blocks -> module nodes -> head``;
shape inference checks every tree without running anything, so each operator
(:mod:`tree_transforms`) gives a valid child by construction. The canonical form is the rendered
file without the edit line: equal trees are duplicates whatever edit made them.

Settings: ``seed`` (``resnet32``, or ``code:<base>``: a code-space base in the usual style parsed
into a tree by :mod:`tree_parse`, what it does not model kept as opaque leaves), ``library`` (a mined module library, see
:mod:`archsmith.tools.modules`: its probed channel- and size-keeping torch/torchvision modules
join the activations ``swap`` chooses from), ``max_blocks`` and ``max_channels``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from archsmith.tools.spaces.base import Mutation, Validation, ValidationIssue, register_space
from archsmith.tools.spaces.tree_model import (
    CATALOGUE,
    TREE_PREFIX,
    Block,
    Head,
    Node,
    Stage,
    Tree,
    TreeEdit,
    TreeError,
    dumps,
    infer,
    read_header,
    render,
    size,
)
from archsmith.tools.spaces.tree_transforms import OPERATORS, Limits, apply, edits, shrink_tree, total_blocks

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

SANDBOX_PACKAGES = ("torch", "torchvision")


# Which tree edits carry out which kind of idea (main category, or main/sub-category of the
# attribute tree; see CodeSpace.operators_for_idea). Other ideas need an LLM.
IDEA_OPERATORS: dict[str, tuple[str, ...]] = {
    "adaptive feature recalibration": ("insert",),
    "activation": ("swap", "hyperparameter"),
    "normalization": ("insert", "delete"),
    "regularization": ("insert",),
    "network-wise scaling": ("hyperparameter",),
    "feature extraction operators/convolution": ("hyperparameter", "swap"),
    "feature extraction operators/local convolution": ("hyperparameter", "swap"),
    "efficient block structures": ("swap", "compose"),
    "network structural patterns": ("compose", "hyperparameter"),
}


class TreeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: str = Field("resnet32", description="the seed tree: 'resnet32', or 'code:<base>' to parse a code-space "
                                              "base (a built-in name or a .py path) into a tree")
    library: str | None = Field(None, description="path of a mined module library (archsmith modules mine)")
    max_blocks: int = Field(24, ge=1, description="most blocks in all stages, repeats counted")
    max_channels: int = Field(256, ge=8, description="most channels of any module")


def conv(out: int, k: int = 3, **args: Any) -> Node:
    return Node(type="Conv2d", args={"out_channels": out, "kernel_size": k, **args})


def resnet32_tree() -> Tree:
    """ResNet-32 for CIFAR as a tree: a 16-channel conv-BN-ReLU stem, three stages of five residual
    basic blocks (16/32/64 channels, strides 1/2/2), global average pooling and a linear layer."""
    stages = []
    for width, stride in ((16, 1), (32, 2), (64, 2)):
        block = Block(name="BasicBlock", residual=True, repeat=5, stride=stride,
                      nodes=[conv(width), Node(type="BatchNorm2d"), Node(type="ReLU"), conv(width),
                             Node(type="BatchNorm2d")],
                      post=[Node(type="ReLU")])
        stages.append(Stage(blocks=[block]))
    return Tree(stem=[conv(16), Node(type="BatchNorm2d"), Node(type="ReLU")], stages=stages, head=Head())


SEEDS = {"resnet32": resnet32_tree}


def seed_tree(seed: str) -> Tree:
    """A built-in seed, or (``code:<base>``) a code-space base parsed into a tree."""
    if seed in SEEDS:
        return SEEDS[seed]()
    if seed.startswith("code:"):
        from archsmith.tools.spaces.code import load_base
        from archsmith.tools.spaces.tree_parse import parse_code_base

        try:
            return parse_code_base(load_base(seed[5:]))
        except ValueError as error:
            raise ValueError(f"space.settings.seed: {seed} cannot be read as a tree: {error}") from None
    raise ValueError(f"space.settings.seed: unknown seed {seed!r} (known: {', '.join(SEEDS)}, or code:<base>)")


def mined_nodes(path: str | Path) -> list[Node]:
    """The library's modules that ``swap`` may use: probed ok on an image-like input, C -> C
    channels at stride 1 keeping the spatial size, from a package the sandbox imports, built
    without a channel-sized argument and not lazy (so the probed arguments and parameter count
    hold at any width)."""
    from archsmith.tools.modules import ModuleLibrary

    if not Path(path).expanduser().is_file():
        raise ValueError(f"space.settings.library: no module library at {path}")
    nodes = []
    with ModuleLibrary(Path(path).expanduser()) as library:
        for record in library.records(ok_only=True):
            probe = record.probe or {}
            kwargs = dict(probe.get("kwargs") or {})
            channels = probe.get("channels_in")
            if (record.module.split(".")[0] not in SANDBOX_PACKAGES or record.private or record.abstract
                    or record.class_name in CATALOGUE or record.class_name.startswith("Lazy")  # sized by input
                    or not isinstance(probe.get("params"), int) or len(probe.get("input_shape") or []) != 4
                    or probe.get("output_kind", "tensor") != "tensor" or not probe.get("keeps_spatial")
                    or probe.get("stride") != 1 or channels is None or probe.get("channels_out") != channels
                    or any(v == channels and not isinstance(v, bool) for v in kwargs.values())
                    or any(isinstance(v, str) and any(ch in v for ch in "<>()") for v in kwargs.values())):
                continue
            nodes.append(Node(type="Mined", args={"module": record.module, "class_name": record.class_name,
                                                  "kwargs": kwargs, "params": int(probe.get("params") or 0)}))
    return nodes


@register_space("tree")
class TreeSpace:
    """Trees of modules rendered as Python files defining ``Network(num_classes)``."""

    name: ClassVar[str] = "tree"
    file_suffix: ClassVar[str] = ".py"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = TreeSettings.model_validate(settings or {})
        mined = mined_nodes(self.settings.library) if self.settings.library else []
        self.limits = Limits(max_blocks=self.settings.max_blocks, max_channels=self.settings.max_channels,
                             mined=mined)
        self._seed = seed_tree(self.settings.seed)
        self._last_edits: tuple[tuple[str, str], list[tuple[Tree, TreeEdit]]] | None = None
        try:
            infer(self._seed, self.limits.max_channels)
        except TreeError as error:
            hint = " (raise space.settings.max_channels)" if error.kind == "limit" else ""
            raise ValueError(f"space.settings.seed: {error}{hint}") from None
        if total_blocks(self._seed) > self.limits.max_blocks:
            raise ValueError(f"space.settings.seed: {total_blocks(self._seed)} blocks > max_blocks "
                             f"{self.limits.max_blocks} (raise space.settings.max_blocks)")

    # -- reading ---------------------------------------------------------------------------------

    def tree(self, text: str) -> tuple[Tree, TreeEdit | None]:
        """The tree and last edit of a valid candidate (ValueError naming the problem otherwise)."""
        tree, edit = read_header(text)
        infer(tree, self.limits.max_channels)
        return tree, edit

    def validate(self, text: str) -> Validation:
        if not text or not text.strip():
            return Validation(ok=False, issues=[ValidationIssue(message="empty candidate", kind="syntax")])
        try:
            tree, edit = self.tree(text)
        except TreeError as error:
            return Validation(ok=False, issues=[ValidationIssue(message=str(error), kind=error.kind)])
        if total_blocks(tree) > self.limits.max_blocks:
            return Validation(ok=False, issues=[ValidationIssue(
                message=f"stages: {total_blocks(tree)} blocks > max_blocks {self.limits.max_blocks}", kind="limit")])
        if text != render(tree, edit):
            return Validation(ok=False, issues=[ValidationIssue(
                message="body: the code differs from the rendering of the tree in the header (edit the tree; "
                        "the code is generated from it)", kind="invalid")])
        return Validation(ok=True)

    def canonical(self, text: str) -> str:
        """The rendered file without the edit line; the text itself when it does not parse."""
        try:
            tree, _ = self.tree(text)
        except TreeError:
            return text
        return render(tree)

    def depth(self, text: str) -> int | None:
        """Weight layers (convolutions, shortcut projections, SE convolutions and the classifier)."""
        try:
            return size(self.tree(text)[0])[1]
        except TreeError:
            return None

    def param_count(self, text: str, num_classes: int = 10, *, plain: bool = False) -> int:
        """Parameters of the built network, in closed form (ValueError for an invalid text)."""
        return size(self.tree(text)[0], num_classes, plain)[0]

    # -- search ----------------------------------------------------------------------------------

    def initial(self) -> list[str]:
        return [render(self._seed)]

    def operators(self) -> list[str]:
        return list(OPERATORS)

    def local_operators(self) -> list[str]:
        return ["hyperparameter", "swap", "insert", "delete"]

    def operators_for_idea(self, tag: Any) -> list[str]:
        """The tree edits that realise an idea of this attribute-tree tag (may be empty)."""
        by_sub = IDEA_OPERATORS.get(f"{tag.main_category}/{tag.sub_category}")
        return list(by_sub if by_sub is not None else IDEA_OPERATORS.get(tag.main_category, ()))

    def mutate(self, text: str, rng: random.Random, operator: str | None = None) -> Mutation:
        """Apply ``operator`` (when None, the first of a shuffled list that applies)."""
        if operator is not None and operator not in OPERATORS:
            raise ValueError(f"unknown operator {operator!r} (known: {', '.join(OPERATORS)})")
        tree, previous = self.tree(text)
        names = [operator] if operator else rng.sample(list(OPERATORS), len(OPERATORS))
        problems = []
        for name in names:
            try:
                child, edit = apply(tree, name, rng, self.limits, previous)
            except ValueError as error:
                problems.append(str(error))
                continue
            return Mutation(child=render(child, edit), operator=name, description=edit.human())
        raise ValueError("no operator applies to this tree: " + "; ".join(problems))

    def edit_options(self, text: str, operator: str, limit: int | None = None) -> list[TreeEdit]:
        """The rule tool: every valid edit of ``operator`` on the candidate, in a fixed order (each
        child passes shape inference and the limits, and differs from the parent and the others);
        ``limit``: only the first that many. ValueError for an unknown operator or an invalid text."""
        if operator not in OPERATORS:
            raise ValueError(f"unknown operator {operator!r} (known: {', '.join(OPERATORS)})")
        return [edit for _, edit in self._edits(text, operator)[:limit]]

    def _edits(self, text: str, operator: str) -> list[tuple[Tree, TreeEdit]]:
        """All of :func:`edits` for the candidate; the latest enumeration is kept, so that applying
        one of the options just listed does not enumerate them again."""
        last = self._last_edits
        if last is not None and last[0] == (text, operator):
            return last[1]
        tree, previous = self.tree(text)
        found = edits(tree, operator, self.limits, previous)
        self._last_edits = ((text, operator), found)
        return found

    def summary(self, text: str) -> str:
        """The candidate's tree in a few lines (stem, each block with its path, head) and its size."""
        tree, _ = self.tree(text)
        lines = ["stem: " + " > ".join(n.label() for n in tree.stem)]
        for s, stage in enumerate(tree.stages):
            for b, block in enumerate(stage.blocks):
                post = f", then {' > '.join(n.label() for n in block.post)}" if block.post else ""
                lines.append(f"stages[{s}].blocks[{b}] {block.name} x{block.repeat}, stride {block.stride}"
                             f"{', residual' if block.residual else ''}: "
                             + " > ".join(n.label() for n in block.nodes) + post)
        dropout = f", dropout {tree.head.dropout}" if tree.head.dropout else ""
        params, layers = size(tree)
        lines.append(f"head: {tree.head.pool} pool{dropout}, linear ({params} params, {layers} weight layers)")
        return "\n".join(lines)

    def apply_edit(self, text: str, edit: TreeEdit) -> Mutation:
        """The child that one of :meth:`edit_options`'s edits gives (its header records the edit);
        ValueError when ``edit`` is not one of them."""
        if edit.operator not in OPERATORS:
            raise ValueError(f"unknown operator {edit.operator!r} (known: {', '.join(OPERATORS)})")
        for child, option in self._edits(text, edit.operator):
            if option == edit:
                return Mutation(child=render(child, option), operator=edit.operator, description=option.human())
        raise ValueError(f"not a valid edit of this candidate: {edit.human()}")

    def shrink(self, text: str, factor: float, rng: random.Random) -> Mutation:
        child, edit = shrink_tree(self.tree(text)[0], factor)
        return Mutation(child=render(child, edit), operator="shrink", description=edit.human())

    def repair(self, text: str, error: str) -> str | None:
        """Regenerate the code from a valid header (a hand-edited body); None otherwise."""
        try:
            tree, edit = self.tree(text)
        except TreeError:
            return None
        fixed = render(tree, edit)
        return fixed if fixed != text else None

    def candidates_in_answer(self, answer: str) -> list[str]:
        """The trees an (LLM) answer writes as ``# archsmith-tree: {...}`` lines, each rendered into
        its file (the code is generated, so a tree line is enough; an edit line is not carried over:
        a hand-made child records no edit); a line whose tree does not parse is returned as it is."""
        found = []
        for line in (answer or "").splitlines():
            line = line.strip().strip("`").strip()
            if not line.startswith(TREE_PREFIX):
                continue
            try:
                found.append(render(self.tree(line)[0]))
            except TreeError:
                found.append(line)
        return found

    def describe(self) -> str:
        types = ", ".join(t for t in CATALOGUE if t not in ("Mined", "Opaque"))
        return (
            "A candidate is a Python file generated from a tree written as JSON in its first line:\n"
            "`# archsmith-tree: {...}`. Change the tree and give that line (in a code block); the\n"
            "code below it is generated from the tree, so it need not be written again.\n"
            "Tree: {stem: [node], stages: [{blocks: [block]}], head: {pool: avg|max, dropout}}.\n"
            "A block is {name, nodes: [node], residual, post: [node], repeat, stride (1 or 2)}: its\n"
            "first repetition applies the stride at its first convolution or pooling; a residual block\n"
            "adds a shortcut (a 1x1 projection when the shape changes); post modules run after the sum.\n"
            "A node is {type, args}; input channels are never written, they come from the previous node.\n"
            f"Types: {types}.\n"
            "Conv2d args: out_channels, kernel_size (odd, 'same' padding), depthwise (keeps channels,\n"
            "no out_channels), bias. Pools: kernel_size. Dropout: p. SE: reduction.\n"
            "Every repetition after the first must map its output channels to themselves.\n"
            f"Limits: at most {self.limits.max_blocks} blocks (repeats counted), "
            f"{self.limits.max_channels} channels per module."
            + "".join(f"\nMined module (keeps channels and size): {dumps(node)}" for node in self.limits.mined[:20])
        )

    def build(self, text: str, num_classes: int, *, plain: bool = False) -> nn.Module:
        """Execute the rendering of the tree (inside the sandbox only); ``plain`` drops residual
        shortcuts (the form Zen-score measures)."""
        from archsmith.tools.spaces.code_net import CodeNetwork, load_entry

        tree, edit = self.tree(text)
        return CodeNetwork(load_entry(render(tree, edit, plain=plain), "Network")(num_classes))
