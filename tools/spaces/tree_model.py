"""The tree of the ``tree`` search space: model, shape inference, closed-form size, rendering.

A network is a tree: ``Network -> stem (modules) -> stages -> blocks (modules, repeat, residual)
-> module nodes -> head``. A module node names a type of the small built-in catalogue
(:data:`CATALOGUE`: torch.nn modules, depthwise/pointwise convolutions as ``Conv2d`` with
``depthwise``/``kernel_size 1``, and an ``SE`` squeeze-excitation block) or a ``Mined`` module
from a module library (see :mod:`archsmith.tools.modules`).

Channels are never written for inputs: every node reads the channels its predecessor gives, and
:func:`infer` walks the tree and tells each node's input/output channels and stride, naming the
path of the first node that does not fit (``stages[1].blocks[0].nodes[3]``). Strides inside
blocks are the block's: its first repetition applies ``Block.stride`` at its first
stride-capable node (a convolution or a pooling), later repetitions use stride 1.

:func:`render` writes the candidate: a self-contained Python file (``import torch``, block
classes, ``Network(num_classes)``) whose first line is the tree as JSON (``# archsmith-tree:``)
and whose second line, when there is one, is the edit that made it (``# archsmith-edit:``).
Nothing here imports torch.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TREE_PREFIX = "# archsmith-tree: "
EDIT_PREFIX = "# archsmith-edit: "
ACTIVATIONS = ("ReLU", "ReLU6", "GELU", "SiLU", "Hardswish")
POOLS = ("MaxPool2d", "AvgPool2d")
KERNELS = (3, 5, 7)
# type -> the arguments it takes (name -> default; None: required)
CATALOGUE: dict[str, dict[str, Any]] = {
    "Conv2d": {"out_channels": None, "kernel_size": 3, "depthwise": False, "bias": False, "stride": 1},
    "BatchNorm2d": {},
    **{name: {} for name in ACTIVATIONS},
    "MaxPool2d": {"kernel_size": 3, "stride": 1},
    "AvgPool2d": {"kernel_size": 3, "stride": 1},
    "Identity": {},
    "Dropout": {"p": 0.1},
    "SE": {"reduction": 4},
    "Mined": {"module": None, "class_name": None, "kwargs": {}, "params": 0},
    # A module of a parsed code base that the tree does not model (see tree_parse): its constructor
    # call as written (values resolved), the channels it takes and gives, the stride it applies and
    # its parameters when known (0: unknown, the estimate leaves it out; the Verifier measures).
    "Opaque": {"call": None, "in_channels": None, "out_channels": None, "stride": 1, "params": 0},
}
SHAPE_KEEPING = frozenset({"BatchNorm2d", *ACTIVATIONS, "Identity", "Dropout", "SE", "Mined"})
STRIDE_CAPABLE = frozenset({"Conv2d", *POOLS})
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Node(BaseModel):
    """One module: a catalogue type and its constructor arguments (input channels are inferred)."""

    model_config = ConfigDict(extra="forbid")

    type: str
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _drop_defaults(self) -> Node:
        """Arguments equal to the catalogue's defaults are left out (one spelling per network)."""
        spec = CATALOGUE.get(self.type, {})
        for name in [n for n, v in self.args.items() if n in spec and spec[n] is not None
                     and type(v) is type(spec[n]) and v == spec[n]]:
            del self.args[name]
        return self

    def arg(self, name: str) -> Any:
        return self.args.get(name, CATALOGUE.get(self.type, {}).get(name))

    def label(self) -> str:
        if self.type == "Mined":
            return str(self.args.get("class_name"))
        if self.type == "Opaque":
            return f"opaque({str(self.args.get('call', '')).split('(')[0]})"
        if self.type == "Conv2d":
            kind = "dw" if self.arg("depthwise") else ("pw" if self.arg("kernel_size") == 1 else "conv")
            out = "" if self.arg("depthwise") else f"{self.arg('out_channels')},"
            return f"{kind}({out}k{self.arg('kernel_size')})"
        return self.type


class Block(BaseModel):
    """A sequence of modules, repeated ``repeat`` times; ``residual`` adds a shortcut (a 1x1
    conv + BN projection where the shape changes), ``post`` runs after the addition."""

    model_config = ConfigDict(extra="forbid")

    name: str = "Block"
    nodes: list[Node]
    residual: bool = False
    post: list[Node] = Field(default_factory=list)
    repeat: int = Field(1, ge=1)
    stride: int = Field(1, ge=1, le=2)


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blocks: list[Block] = Field(min_length=1)


class Head(BaseModel):
    """Global pooling then a linear classifier (``dropout`` before it when > 0)."""

    model_config = ConfigDict(extra="forbid")

    pool: Literal["avg", "max"] = "avg"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class Tree(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stem: list[Node] = Field(min_length=1)
    stages: list[Stage] = Field(min_length=1)
    head: Head = Field(default_factory=Head)
    # Source the opaque leaves need (imports, classes, functions, constants of the parsed code
    # base), in the base's order; rendered after the standard imports.
    definitions: list[str] = Field(default_factory=list)


class TreeEdit(BaseModel):
    """What one operator changed: ``kind`` is the meta-operation applied (``operator`` differs only
    for ``repeat``, which applies its parent's kind again); ``path`` names the place."""

    model_config = ConfigDict(extra="forbid")

    operator: str
    kind: str
    path: str
    before: str
    after: str

    def human(self) -> str:
        via = f" (repeating {self.kind})" if self.operator != self.kind else ""
        return f"{self.operator}{via} at {self.path}: {self.before} -> {self.after}"


class TreeError(ValueError):
    """A tree that does not fit together; ``path`` names where."""

    def __init__(self, path: str, message: str, kind: str = "channels") -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message, self.kind = path, message, kind


# -- shape inference ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One node where it sits: its path, input/output channels and the stride it applies."""

    path: str
    node: Node
    c_in: int
    c_out: int
    stride: int


def _check_args(node: Node, path: str, in_block: bool) -> None:
    spec = CATALOGUE.get(node.type)
    if spec is None:
        known = ", ".join(CATALOGUE)
        raise TreeError(path, f"unknown module type {node.type!r} (known: {known})", "invalid")
    for name in node.args:
        if name not in spec:
            raise TreeError(path, f"{node.type} takes no argument {name!r} (takes: {', '.join(spec) or 'none'})",
                            "invalid")
        if name == "stride" and in_block and node.args[name] != 1 and node.type != "Opaque":
            raise TreeError(path, "strides inside blocks are the block's (Block.stride), not a node's", "invalid")
    for name, default in spec.items():
        if default is None and name not in node.args and not (name == "out_channels" and node.arg("depthwise")):
            raise TreeError(path, f"{node.type} needs {name!r}", "invalid")
    k = node.arg("kernel_size")
    if k is not None and (not isinstance(k, int) or k < 1 or k % 2 == 0 or k > 7):
        raise TreeError(path, f"kernel_size must be an odd integer 1..7, not {k!r}", "invalid")
    stride = node.arg("stride")
    if stride is not None and stride not in (1, 2):
        raise TreeError(path, f"stride must be 1 or 2, not {stride!r}", "invalid")
    if node.type == "Conv2d" and not node.arg("depthwise"):
        out = node.args.get("out_channels")
        if not isinstance(out, int) or isinstance(out, bool) or out < 1:
            raise TreeError(path, f"out_channels must be a positive integer, not {out!r}", "channels")
    if node.type == "Conv2d" and node.arg("depthwise") and "out_channels" in node.args:
        raise TreeError(path, "a depthwise Conv2d keeps its input channels: give no out_channels", "channels")
    if node.type == "Dropout" and not (isinstance(node.arg("p"), (int, float)) and 0 <= node.arg("p") < 1):
        raise TreeError(path, f"Dropout p must be in [0, 1), not {node.arg('p')!r}", "invalid")
    if node.type == "SE" and not (isinstance(node.arg("reduction"), int) and node.arg("reduction") >= 1):
        raise TreeError(path, "SE reduction must be a positive integer", "invalid")
    if node.type == "Mined":
        module, cls = node.args.get("module"), node.args.get("class_name")
        if not (isinstance(module, str) and _DOTTED.match(module) and isinstance(cls, str) and _IDENT.match(cls)):
            raise TreeError(path, "a Mined node needs an import path 'module' and an identifier 'class_name'",
                            "invalid")
        if module.split(".")[0] not in ("torch", "torchvision"):
            raise TreeError(path, f"mined module {module} is not importable in the sandbox (torch, torchvision)",
                            "invalid")
        kwargs = node.args.get("kwargs") or {}
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) and _IDENT.match(k) for k in kwargs):
            raise TreeError(path, "Mined kwargs must map identifiers to values", "invalid")
    if node.type == "Opaque":
        _check_opaque(node, path)


def _check_opaque(node: Node, path: str) -> None:
    call = node.args.get("call")
    try:
        parsed = ast.parse(call, mode="eval").body if isinstance(call, str) else None
    except SyntaxError:
        parsed = None
    if not isinstance(parsed, ast.Call) or not _DOTTED.match(ast.unparse(parsed.func)):
        raise TreeError(path, f"an Opaque node's 'call' must be one constructor call such as 'nn.GroupNorm(4, 64)', "
                              f"not {call!r}", "invalid")
    for name in ("in_channels", "out_channels"):
        value = node.args.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TreeError(path, f"an Opaque node's {name} must be a positive integer, not {value!r}", "invalid")
    params = node.arg("params")
    if not isinstance(params, int) or isinstance(params, bool) or params < 0:
        raise TreeError(path, f"an Opaque node's params must be a non-negative integer, not {params!r}", "invalid")


def node_out(node: Node, c_in: int, path: str) -> int:
    """The output channels of ``node`` fed ``c_in`` channels."""
    if node.type == "Conv2d":
        return c_in if node.arg("depthwise") else int(node.args["out_channels"])
    if node.type == "SE" and c_in < 1:
        raise TreeError(path, "SE needs at least one channel")
    if node.type == "Opaque":
        if c_in != node.args["in_channels"]:
            raise TreeError(path, f"{node.args['call']} is kept as written and takes {node.args['in_channels']} "
                                  f"channels, not {c_in}")
        return int(node.args["out_channels"])
    return c_in


def _walk(nodes: list[Node], c_in: int, stride: int, prefix: str, in_block: bool, out: list[Shape]) -> tuple[int, int]:
    """Infer a node sequence; ``stride`` goes to the first stride-capable node. Returns (channels,
    stride left unapplied)."""
    c = c_in
    for index, node in enumerate(nodes):
        path = f"{prefix}[{index}]"
        _check_args(node, path, in_block)
        applied = 1
        if node.type == "Opaque":  # its stride is in its call: it takes the block's if they agree
            applied = int(node.arg("stride"))
            if in_block and applied != 1:
                if stride != applied:
                    raise TreeError(path, f"{node.args['call']} applies stride {applied} where the block has "
                                          f"{'none left' if stride == 1 else f'stride {stride}'}")
                stride = 1
        elif node.type in STRIDE_CAPABLE:
            if in_block:
                applied, stride = stride, 1
            else:
                applied = int(node.arg("stride"))
        c_out = node_out(node, c, path)
        out.append(Shape(path, node, c, c_out, applied))
        c = c_out
    return c, stride


def infer(tree: Tree, max_channels: int | None = None) -> list[Shape]:
    """Every node's shape, in order (stem, then blocks; a block's first repetition). Raises
    :class:`TreeError` naming the path of the first problem."""
    shapes: list[Shape] = []
    c, _ = _walk(tree.stem, 3, 1, "stem", False, shapes)
    if max_channels is not None:
        for sh in shapes:
            if sh.c_out > max_channels:
                raise TreeError(sh.path, f"{sh.c_out} channels > max_channels {max_channels}", "limit")
    for s, stage in enumerate(tree.stages):
        for b, block in enumerate(stage.blocks):
            prefix = f"stages[{s}].blocks[{b}]"
            if not block.nodes:
                raise TreeError(prefix, "a block needs at least one module", "invalid")
            if not _IDENT.match(block.name):
                raise TreeError(prefix, f"block name {block.name!r} is not an identifier", "invalid")
            first = len(shapes)
            c_out, left = _walk(block.nodes, c, block.stride, f"{prefix}.nodes", True, shapes)
            if left != 1:
                raise TreeError(prefix, f"stride {block.stride} but no convolution or pooling to apply it")
            if block.repeat > 1:  # later repetitions read c_out channels: the block must accept them
                again: list[Shape] = []
                c_again, _ = _walk(block.nodes, c_out, 1, f"{prefix}.nodes", True, again)
                if c_again != c_out:
                    raise TreeError(prefix, f"repeat {block.repeat} but a repetition maps {c_out} -> {c_again} "
                                            "channels")
            for index, node in enumerate(block.post):
                if node.type not in SHAPE_KEEPING and not (
                        node.type == "Opaque" and node.args.get("in_channels") == node.args.get("out_channels")
                        and node.arg("stride") == 1):
                    raise TreeError(f"{prefix}.post[{index}]", f"post modules must keep the shape, not {node.type}")
            _walk(block.post, c_out, 1, f"{prefix}.post", True, shapes)
            if max_channels is not None:
                for sh in shapes[first:]:
                    if sh.c_out > max_channels:
                        raise TreeError(sh.path, f"{sh.c_out} channels > max_channels {max_channels}", "limit")
            c = c_out
    return shapes


def channels_out(tree: Tree) -> list[list[tuple[int, int]]]:
    """Per stage, per block: (input channels of the first repetition, output channels)."""
    shapes = {sh.path: sh for sh in infer(tree)}
    c = [sh for sh in shapes.values() if sh.path.startswith("stem")][-1].c_out
    result = []
    for s, stage in enumerate(tree.stages):
        row = []
        for b, block in enumerate(stage.blocks):
            last = shapes[f"stages[{s}].blocks[{b}].nodes[{len(block.nodes) - 1}]"]
            row.append((c, last.c_out))
            c = last.c_out
        result.append(row)
    return result


# -- size ---------------------------------------------------------------------------------------


def se_hidden(channels: int, reduction: int) -> int:
    return max(8, channels // reduction)


def node_params(node: Node, c_in: int) -> int:
    """Parameters of one node fed ``c_in`` channels (BatchNorm: weight and bias, not buffers)."""
    if node.type == "Conv2d":
        k = int(node.arg("kernel_size"))
        out = node_out(node, c_in, "")
        groups = c_in if node.arg("depthwise") else 1
        return (c_in // groups) * out * k * k + (out if node.arg("bias") else 0)
    if node.type == "BatchNorm2d":
        return 2 * c_in
    if node.type == "SE":
        h = se_hidden(c_in, int(node.arg("reduction")))
        return c_in * h + h + h * c_in + c_in
    if node.type in ("Mined", "Opaque"):
        return int(node.arg("params") or 0)
    return 0


def _block_params(block: Block, c_in: int, stride: int, plain: bool) -> tuple[int, int, int]:
    """(params, weight layers, output channels) of one repetition."""
    params = layers = 0
    c = c_in
    for node in [*block.nodes, *block.post]:
        params += node_params(node, c)
        layers += node.type == "Conv2d" or (2 if node.type == "SE" else 0)
        c = node_out(node, c, "")
    if block.residual and not plain and (stride != 1 or c_in != c):
        params += c_in * c + 2 * c
        layers += 1
    return params, layers, c


def size(tree: Tree, num_classes: int = 10, plain: bool = False) -> tuple[int, int]:
    """(parameters, weight layers) of the built network, in closed form."""
    infer(tree)
    params = layers = 0
    c = 3
    for node in tree.stem:
        params += node_params(node, c)
        layers += node.type == "Conv2d" or (2 if node.type == "SE" else 0)
        c = node_out(node, c, "")
    for stage in tree.stages:
        for block in stage.blocks:
            for rep in range(block.repeat):
                p, n, c = _block_params(block, c, block.stride if rep == 0 else 1, plain)
                params, layers = params + p, layers + n
    return params + c * num_classes + num_classes, layers + 1


# -- text ---------------------------------------------------------------------------------------


def dumps(model: BaseModel) -> str:
    return json.dumps(model.model_dump(mode="json", exclude_defaults=True), separators=(",", ":"), sort_keys=True)


def read_header(text: str) -> tuple[Tree, TreeEdit | None]:
    """The tree (and edit) in a candidate's header. Raises TreeError (path ``header``)."""
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or not lines[0].startswith(TREE_PREFIX):
        raise TreeError("header", f"the first line must be '{TREE_PREFIX.strip()} {{json}}'", "syntax")
    try:
        tree = Tree.model_validate_json(lines[0][len(TREE_PREFIX):])
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "tree"
        kind = "syntax" if first["type"] == "json_invalid" else "invalid"
        raise TreeError(f"header: {where}", first["msg"], kind) from None
    edit = None
    if len(lines) > 1 and lines[1].startswith(EDIT_PREFIX):
        try:
            edit = TreeEdit.model_validate_json(lines[1][len(EDIT_PREFIX):])
        except ValidationError as error:
            raise TreeError("header: edit", error.errors()[0]["msg"], "syntax") from None
    return tree, edit


def _py(value: Any) -> str:
    return repr(value)


def _node_expr(node: Node, c_in: str, c_out: str, stride: str | None) -> str:
    """The constructor call of one node; channel expressions are Python source."""
    a = node.arg
    if node.type == "Conv2d":
        k = int(a("kernel_size"))
        parts = [c_in, c_out, str(k)]
        if stride is not None and stride != "1":
            parts.append(f"stride={stride}")
        if k > 1:
            parts.append(f"padding={k // 2}")
        if a("depthwise"):
            parts.append(f"groups={c_in}")
        parts.append(f"bias={bool(a('bias'))}")
        return f"nn.Conv2d({', '.join(parts)})"
    if node.type in POOLS:
        k = int(a("kernel_size"))
        return f"nn.{node.type}({k}, stride={stride or 1}, padding={k // 2})"
    if node.type == "BatchNorm2d":
        return f"nn.BatchNorm2d({c_in})"
    if node.type == "Dropout":
        return f"nn.Dropout({_py(a('p'))})"
    if node.type == "SE":
        return f"SqueezeExcite({c_in}, {int(a('reduction'))})"
    if node.type == "Mined":
        kwargs = ", ".join(f"{k}={_py(v)}" for k, v in sorted((a("kwargs") or {}).items()))
        return f"{a('class_name')}({kwargs})"
    if node.type == "Opaque":
        return str(a("call"))
    return f"nn.{node.type}()"


SE_SOURCE = '''

class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: channel weights from globally pooled features."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        weights = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(weights))))
'''


def _seq(lines: list[str], indent: str) -> str:
    if not lines:
        return "nn.Identity()"
    inner = "".join(f"{indent}    {line},\n" for line in lines)
    return f"nn.Sequential(\n{inner}{indent})"


def _block_class(name: str, block: Block, where: str, plain: bool) -> tuple[str, str]:
    """A block's class source and its output channels as an expression of ``in_channels``."""
    c_expr = "in_channels"
    stride_left = True
    body = []
    for node in block.nodes:
        if node.type == "Opaque":
            out_expr = str(node.args["out_channels"])
        elif node.type == "Conv2d" and not node.arg("depthwise"):
            out_expr = str(node.args["out_channels"])
        else:
            out_expr = c_expr
        stride = None
        if node.type in STRIDE_CAPABLE:
            stride = "stride" if stride_left else "1"
            stride_left = False
        body.append(_node_expr(node, c_expr, out_expr, stride))
        c_expr = out_expr
    post = [_node_expr(node, c_expr, c_expr, None) for node in block.post]
    summary = " > ".join(n.label() for n in block.nodes)
    lines = [
        f"class {name}(nn.Module):",
        f'    """{where}: {summary}{" (residual)" if block.residual else ""}."""',
        "",
        "    def __init__(self, in_channels, stride=1):",
        "        super().__init__()",
        f"        out_channels = {c_expr}",
        f"        self.body = {_seq(body, '        ')}",
    ]
    residual = block.residual and not plain
    if residual:
        lines += [
            "        if stride != 1 or in_channels != out_channels:",
            "            self.shortcut = nn.Sequential(",
            "                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),",
            "                nn.BatchNorm2d(out_channels),",
            "            )",
            "        else:",
            "            self.shortcut = nn.Identity()",
        ]
    if post:
        lines.append(f"        self.post = {_seq(post, '        ')}")
    lines += ["", "    def forward(self, x):"]
    out = "self.body(x) + self.shortcut(x)" if residual else "self.body(x)"
    lines.append(f"        return self.post({out})" if post else f"        return {out}")
    return "\n".join(lines) + "\n", c_expr


def render(tree: Tree, edit: TreeEdit | None = None, *, plain: bool = False) -> str:
    """The candidate file for ``tree`` (the tree must pass :func:`infer`)."""
    tree = Tree.model_validate(tree.model_dump())  # arguments at their defaults dropped
    per_block = channels_out(tree)
    nodes = [*tree.stem] + [n for st in tree.stages for b in st.blocks for n in (*b.nodes, *b.post)]
    header = [TREE_PREFIX + dumps(tree)]
    if edit is not None:
        header.append(EDIT_PREFIX + dumps(edit))
    imports = ["import torch", "import torch.nn as nn"]
    for mod, cls in sorted({(n.args["module"], n.args["class_name"]) for n in nodes if n.type == "Mined"}):
        imports.append(f"from {mod} import {cls}")
    parts = ["\n".join(header),
             '"""A network of the archsmith "tree" search space, rendered from the tree in the first line.\n\n'
             'Edit the tree, not this code: the code is generated from it.\n"""',
             "\n".join(imports)]
    parts += [definition.strip("\n") for definition in tree.definitions]
    if any(n.type == "SE" for n in nodes):
        parts.append(SE_SOURCE.strip("\n"))
    classes, calls = [], []
    for s, stage in enumerate(tree.stages):
        for b, block in enumerate(stage.blocks):
            name = f"{block.name}S{s}B{b}"
            source, _ = _block_class(name, block, f"stage {s}, block {b}", plain)
            classes.append(source)
            c_in, c_out = per_block[s][b]
            calls.append(f"{name}({c_in}, {block.stride})")
            if block.repeat > 1:
                calls.append(f"*[{name}({c_out}) for _ in range({block.repeat - 1})]")
    parts += [c.rstrip("\n") for c in classes]
    stem, c = [], 3
    for node in tree.stem:
        out = node_out(node, c, "stem")
        stride = str(node.arg("stride")) if node.type in STRIDE_CAPABLE else None
        stem.append(_node_expr(node, str(c), str(out), stride))
        c = out
    last = per_block[-1][-1][1]
    pool = "nn.AdaptiveAvgPool2d(1)" if tree.head.pool == "avg" else "nn.AdaptiveMaxPool2d(1)"
    net = [
        "class Network(nn.Module):",
        "    def __init__(self, num_classes=10):",
        "        super().__init__()",
        f"        self.stem = {_seq(stem, '        ')}",
        f"        self.stages = {_seq(calls, '        ')}",
        f"        self.pool = {pool}",
    ]
    if tree.head.dropout > 0:
        net.append(f"        self.dropout = nn.Dropout({tree.head.dropout!r})")
    net += [
        f"        self.classifier = nn.Linear({last}, num_classes)",
        "",
        "    def forward(self, x):",
        "        x = self.stages(self.stem(x))",
        "        x = torch.flatten(self.pool(x), 1)",
    ]
    if tree.head.dropout > 0:
        net.append("        x = self.dropout(x)")
    net.append("        return self.classifier(x)")
    parts.append("\n".join(net))
    return parts[0] + "\n" + "\n\n\n".join(parts[1:]) + "\n"
