"""Source-to-source mutations for the open-ended code search space (FairNAD style).

A candidate is one Python file defining ``Network(num_classes)``, an ``nn.Module`` mapping
``(B, 3, H, W)`` to ``(B, num_classes)``. The algorithmic (no-LLM) policy mutates a parent by
rewriting its source with libcst (never regex, never exec), so comments, docstrings and formatting
outside the rewritten nodes survive byte for byte. The operators rely on two conventions:

1. Hyperparameters are module-level ``UPPER_CASE`` assignments (``NAME = ...`` or
   ``NAME: T = ...``, top-level statements only) of an int literal, a tuple or list of int
   literals, or a dotted class reference such as ``nn.ReLU``. The words of the name (split at
   ``_``) give the kind, first match wins: ``KERNEL`` kernel size (odd), ``STRIDE`` stride,
   ``ACT``/``ACTIVATION`` activation class, ``WIDTH``/``CHANNEL``/``PLANES`` width (channels;
   names with an ``IN``/``INPUT``/``IMAGE``/``IMG``/``RGB`` word are the data's channels and left
   alone), ``DEPTH`` (not ``DEPTHWISE``)/``BLOCKS``/``REPEAT``/``LAYERS`` depth (blocks per
   stage). Tuples hold one entry per stage (``WIDTHS = (16, 32, 64)``, ``DEPTHS = (5, 5, 5)``,
   ``STRIDES = (1, 2, 2)``); scalars are single values (``STEM_WIDTH = 16``, ``KERNEL_SIZE = 3``).
   Other constants (``EXPANSIONS``, ``NUM_CLASSES``, ...) are reported but never changed.
2. Block classes are module-level ``nn.Module`` subclasses other than ``Network``; ``insert_se``
   uses those whose ``__init__`` sets ``self.out_channels = <expr>`` (a top-level statement) and
   whose ``forward`` ends with ``return <expr>``, a tensor with that many channels.

Every operator is ``fn(source, rng) -> Transformed``, deterministic given ``rng``, and raises
:class:`TransformError` when it has no site or the source does not parse. Widths are rounded to
multiples of 8 (at least 8) when every width value of the source is a multiple of 8, otherwise to
ints >= 1; a scaling that would round back to the old values rounds away from them instead.
"""

from __future__ import annotations

import ast
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import libcst as cst

from archsmith.tools import threadsafe_ast

Value = int | tuple[int, ...] | str
ACTIVATIONS = ("ReLU", "ReLU6", "SiLU", "GELU", "Hardswish", "Mish")
KERNEL_CHOICES = (3, 5, 7)
DEPTH_FACTORS = (1.25, 1.5, 2.0)
WIDTH_FACTORS = (1.25, 1.5)
RATIO_FACTORS = (1.5, 2.0)
SE_NAME = "SqueezeExcite"
LAYER_CLASSES = frozenset({"Conv1d", "Conv2d", "Conv3d", "Linear", "LazyConv1d", "LazyConv2d", "LazyConv3d",
                           "LazyLinear", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"})
_INPUT_WORDS = frozenset({"IN", "INPUT", "IMAGE", "IMG", "RGB"})
_SE_LIKE = frozenset({"SE", "SEBlock", "SELayer", "SEModule"})  # besides SqueezeExcit*
_WHAT = {
    "width": "width constant (a name with WIDTH/CHANNEL/PLANES bound to ints)",
    "depth": "depth constant (a name with DEPTH/BLOCKS/REPEAT/LAYERS bound to ints)",
    "kernel": "kernel constant (a name with KERNEL bound to odd ints > 1)",
    "stride": "stride constant (a name with STRIDE bound to ints)",
    "activation": "activation constant (a name with ACTIVATION/ACT bound to an attribute such as nn.ReLU)",
}
_SE_TEMPLATE = '''\
class {name}({nn}.Module):
    """Squeeze-and-excitation: gates each channel by a function of all channels' global means."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.pool = {nn}.AdaptiveAvgPool2d(1)
        self.reduce = {nn}.Conv2d(channels, hidden, kernel_size=1)
        self.act = {nn}.ReLU(inplace=True)
        self.expand = {nn}.Conv2d(hidden, channels, kernel_size=1)
        self.sigmoid = {nn}.Sigmoid()

    def forward(self, x):
        gate = self.sigmoid(self.expand(self.act(self.reduce(self.pool(x)))))
        return x * gate
'''


class TransformError(ValueError):
    """A transform found no applicable site, or the source does not parse."""


@dataclass(frozen=True)
class Transformed:
    source: str
    operator: str
    description: str


@dataclass(frozen=True)
class _Const:
    name: str
    kind: str | None
    value: Value
    shape: str  # "int", "()" (tuple), "[]" (list) or "dotted"

    @property
    def ints(self) -> tuple[int, ...]:
        return (self.value,) if isinstance(self.value, int) else tuple(self.value)  # type: ignore[arg-type]

    def like(self, ints: list[int] | tuple[int, ...]) -> Value:
        return ints[0] if self.shape == "int" else tuple(ints)

    def at(self, index: int, value: int) -> Value:
        return self.like([value if i == index else v for i, v in enumerate(self.ints)])

    def entry(self, index: int) -> str:
        return self.name if self.shape == "int" else f"{self.name}[{index}]"


def constant_kind(name: str) -> str | None:
    """The convention kind of a constant's name (see the module docstring), or None."""
    words = [w.replace("DEPTHWISE", "") for w in name.split("_")]

    def has(*parts: str) -> bool:
        return any(p in w for w in words for p in parts)

    if has("KERNEL") or has("STRIDE"):
        return "kernel" if has("KERNEL") else "stride"
    if any(w in ("ACT", "ACTS") or w.startswith("ACTIVATION") for w in words):
        return "activation"
    if any(w in _INPUT_WORDS for w in words):
        return None
    if has("WIDTH", "CHANNEL", "PLANES"):
        return "width"
    return "depth" if has("DEPTH", "BLOCKS", "REPEAT", "LAYERS") else None


def _parse(source: str) -> cst.Module:
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        where = f"line {exc.raw_line}, column {exc.raw_column}"
        raise TransformError(f"source does not parse: {where}: {exc.message}") from None


def parse_python(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse`` under the process-wide lock of :mod:`archsmith.tools.threadsafe_ast`."""
    return threadsafe_ast.parse(source, filename=filename)


def _ast_parse(source: str) -> ast.Module:
    try:
        return parse_python(source)
    except SyntaxError as exc:
        raise TransformError(f"source does not parse: line {exc.lineno}: {exc.msg}") from None


def _dotted(expr: cst.BaseExpression) -> str | None:
    if isinstance(expr, cst.Name):
        return expr.value
    base = _dotted(expr.value) if isinstance(expr, cst.Attribute) else None
    return f"{base}.{expr.attr.value}" if base else None  # type: ignore[attr-defined]


def _binding(stmt: cst.CSTNode) -> tuple[str, cst.BaseExpression] | None:
    """(name, value) of ``UPPER = value`` / ``UPPER: T = value``; None for anything else."""
    if isinstance(stmt, cst.Assign) and len(stmt.targets) == 1:
        target, value = stmt.targets[0].target, stmt.value
    elif isinstance(stmt, cst.AnnAssign) and stmt.value is not None:
        target, value = stmt.target, stmt.value
    else:
        return None
    name = target.value if isinstance(target, cst.Name) else ""
    return (name, value) if name == name.upper() and name.strip("_0123456789") else None


def _read(expr: cst.BaseExpression) -> tuple[Value, str] | None:
    if isinstance(expr, cst.Integer):
        return int(expr.evaluated_value), "int"
    if isinstance(expr, (cst.Tuple, cst.List)) and expr.elements:
        if all(isinstance(e, cst.Element) and isinstance(e.value, cst.Integer) for e in expr.elements):
            ints = tuple(int(e.value.evaluated_value) for e in expr.elements)  # type: ignore[attr-defined]
            return ints, "()" if isinstance(expr, cst.Tuple) else "[]"
        return None
    dotted = _dotted(expr) if isinstance(expr, cst.Attribute) else None
    return (dotted, "dotted") if dotted else None


def _constants(module: cst.Module) -> dict[str, _Const]:
    found: dict[str, _Const] = {}
    for line in module.body:
        for bound in map(_binding, line.body if isinstance(line, cst.SimpleStatementLine) else ()):
            read = _read(bound[1]) if bound else None
            if read:
                found[bound[0]] = _Const(bound[0], constant_kind(bound[0]), *read)  # type: ignore[index]
            elif bound:
                found.pop(bound[0], None)  # rebound to something else: no longer a convention constant
    return found


def hyperparameters(source: str) -> dict[str, Value]:
    """The module-level convention constants, in source order (activations as dotted names)."""
    return {c.name: c.value for c in _constants(_parse(source)).values()}


def _sites(module: cst.Module, kind: str) -> list[_Const]:
    found = [c for c in _constants(module).values()  # an activation must name a class: nn.ReLU, not F.relu
             if c.kind == kind and (c.shape == "dotted") == (kind == "activation")
             and (kind != "activation" or str(c.value).rsplit(".", 1)[-1][:1].isupper())]
    if not found:
        raise TransformError(f"no module-level {_WHAT[kind]}")
    return found


class _ConstantRewriter(cst.CSTTransformer):
    """Replaces the literals of the named module-level constants; nothing nested is visited."""

    def __init__(self, new: dict[str, Value]) -> None:
        super().__init__()
        self.new = new

    def visit_IndentedBlock(self, node: cst.IndentedBlock | cst.SimpleStatementSuite) -> bool:
        return False  # class, function, if ... bodies are not module level

    visit_SimpleStatementSuite = visit_IndentedBlock  # type: ignore[assignment]

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.Assign:
        bound = _binding(updated_node)
        if bound is None or bound[0] not in self.new:
            return updated_node
        expr, value = bound[1], self.new[bound[0]]
        if isinstance(value, str) and isinstance(expr, cst.Attribute):
            expr = expr.with_changes(attr=cst.Name(value.rsplit(".", 1)[-1]))  # the prefix stays
        elif isinstance(value, int) and isinstance(expr, cst.Integer):
            expr = expr.with_changes(value=str(value))
        elif isinstance(value, tuple) and _read(expr) and len(expr.elements) == len(value):  # type: ignore
            expr = expr.with_changes(elements=[e.with_changes(value=e.value.with_changes(value=str(v)))
                                               for e, v in zip(expr.elements, value)])
        return updated_node.with_changes(value=expr)

    leave_AnnAssign = leave_Assign  # type: ignore[assignment]


def _set(module: cst.Module, consts: list[_Const], new: dict[str, Value], op: str, note: str = "") -> Transformed:
    """Rewrite the constants in ``new`` and describe what changed."""
    changed = [c for c in consts if new.get(c.name, c.value) != c.value]
    changes = "; ".join(f"{c.name} {c.value} -> {new[c.name]}" for c in changed)
    return _done(module.visit(_ConstantRewriter(new)), op, f"{changes} ({note})" if note else changes)


def _done(module: cst.Module, operator: str, description: str) -> Transformed:
    _ast_parse(module.code)  # libcst prints only what it parsed; keep the guarantee explicit
    return Transformed(module.code, operator, description)


def _round(x: float, step: int, mode: str) -> int:
    """``x`` to a multiple of ``step`` (at least ``step``): nearest (halves up), up or down."""
    q = x / step
    n = {"nearest": math.floor(q + 0.5), "up": math.ceil(q - 1e-9), "down": math.floor(q + 1e-9)}[mode]
    return max(step, n * step)


def _width_step(consts: list[_Const]) -> int:
    return 8 if all(v % 8 == 0 for c in consts for v in c.ints) else 1


def _scale_all(consts: list[_Const], factor: float, step: int) -> dict[str, Value]:
    """Every value (but 0, "none") times ``factor``; rounds away from the old values if nothing would change."""
    new: dict[str, Value] = {}
    for mode in ("nearest", "up" if factor > 1 else "down"):
        new = {c.name: c.like([v and _round(v * factor, step, mode) for v in c.ints]) for c in consts}  # 0 stays
        if any(new[c.name] != c.value for c in consts):
            break
    return new


def scale_depth(source: str, rng: random.Random) -> Transformed:
    """All depth constants x(1.25|1.5|2), or (probability 1/2) one stage +1 block."""
    module = _parse(source)
    consts = _sites(module, "depth")
    if rng.random() < 0.5:
        c, i = rng.choice([(c, i) for c in consts for i in range(len(c.ints))])
        return _set(module, consts, {c.name: c.at(i, c.ints[i] + 1)}, "scale_depth", f"+1 in {c.entry(i)}")
    factor = rng.choice(DEPTH_FACTORS)
    return _set(module, consts, _scale_all(consts, factor, 1), "scale_depth", f"depths x{factor}")


def scale_width(source: str, rng: random.Random) -> Transformed:
    """All width constants times one factor (1.25|1.5), keeping their ratios."""
    module = _parse(source)
    consts = _sites(module, "width")
    factor = rng.choice(WIDTH_FACTORS)
    new = _scale_all(consts, factor, _width_step(consts))
    return _set(module, consts, new, "scale_width", f"widths x{factor}")


def scale_width_ratio(source: str, rng: random.Random) -> Transformed:
    """One width entry (a stage of a width tuple, or a width scalar) times 1.5 or 2."""
    module = _parse(source)
    consts = _sites(module, "width")
    c, i = rng.choice([(c, i) for c in consts for i in range(len(c.ints))])
    factor = rng.choice(RATIO_FACTORS)
    value = _round(c.ints[i] * factor, _width_step(consts), "up")  # = nearest (halves up) for x1.5, x2
    return _set(module, consts, {c.name: c.at(i, value)}, "scale_width_ratio", f"{c.entry(i)} x{factor}")


def kernel_size(source: str, rng: random.Random) -> Transformed:
    """One odd kernel entry (> 1: a 1 is a deliberate pointwise conv) to another of 3, 5, 7."""
    module = _parse(source)
    consts = _sites(module, "kernel")
    sites = [(c, i) for c in consts for i, v in enumerate(c.ints) if v % 2 == 1 and v > 1]
    if not sites:
        raise TransformError(f"no module-level {_WHAT['kernel']}")
    c, i = rng.choice(sites)
    value = rng.choice([k for k in KERNEL_CHOICES if k != c.ints[i]])
    return _set(module, consts, {c.name: c.at(i, value)}, "kernel_size")


def stride(source: str, rng: random.Random) -> Transformed:
    """Swap a strided entry (> 1) of a stride tuple with a neighbouring 1: the downsampling moves."""
    module = _parse(source)
    consts = _sites(module, "stride")
    moves = [(c, i, j) for c in consts if c.shape != "int" for i, v in enumerate(c.ints) if v > 1
             for j in (i - 1, i + 1) if 0 <= j < len(c.ints) and c.ints[j] == 1]
    if not moves:
        raise TransformError("no module-level stride tuple (a name with STRIDE) with a stride > 1 next to a 1")
    c, i, j = rng.choice(moves)
    ints = list(c.ints)
    ints[i], ints[j] = ints[j], ints[i]
    return _set(module, consts, {c.name: c.like(ints)}, "stride", f"stride {c.ints[i]} moved from {i} to {j}")


def activation(source: str, rng: random.Random) -> Transformed:
    """The activation class to another of ReLU, ReLU6, SiLU, GELU, Hardswish, Mish (same prefix)."""
    module = _parse(source)
    consts = _sites(module, "activation")
    c = rng.choice(consts)
    prefix, current = str(c.value).rsplit(".", 1)
    calls = [n for n in ast.walk(_ast_parse(source)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    with_args = any(n.func.id == c.name and (n.args or n.keywords) for n in calls)  # nn.GELU takes no inplace
    choices = [a for a in ACTIVATIONS if a != current and not (a == "GELU" and with_args)]
    return _set(module, consts, {c.name: f"{prefix}.{rng.choice(choices)}"}, "activation")


def _self(fn: cst.FunctionDef) -> str:
    return fn.params.params[0].name.value if fn.params.params else "self"


def _names(module: cst.Module, node: cst.CSTNode) -> set[str]:
    """Every name, dotted ``name.attr`` and defined or imported name in ``node``."""
    nodes = list(ast.walk(_ast_parse(module.code_for_node(node))))
    defined = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.alias)
    return {ast.unparse(n) for n in nodes if isinstance(n, (ast.Name, ast.Attribute))} | {
        getattr(n, "asname", None) or n.name for n in nodes if isinstance(n, defined)}


def _module_classes(module: cst.Module) -> list[tuple[int, cst.ClassDef, list[str]]]:
    """(index, class, base names) of the nn.Module subclasses, directly or through earlier classes."""
    found: list[tuple[int, cst.ClassDef, list[str]]] = []
    for index, stmt in enumerate(module.body):
        if isinstance(stmt, cst.ClassDef):
            bases = [_dotted(arg.value) or "" for arg in stmt.bases]
            local = {c.name.value for _, c, _ in found}
            if any(b == "Module" or b.endswith(".Module") or b in local for b in bases):
                found.append((index, stmt, bases))
    return found


def _se_candidate(module: cst.Module, cls: cst.ClassDef) -> bool:
    """Sets ``self.out_channels`` in ``__init__``, ends ``forward`` with ``return <expr>``, has no SE."""
    methods = {s.name.value: s for s in getattr(cls.body, "body", ()) if isinstance(s, cst.FunctionDef)}
    init, forward = methods.get("__init__"), methods.get("forward")
    if init is None or forward is None or not isinstance(forward.body, cst.IndentedBlock):
        return False
    me, last, names = _self(init), forward.body.body[-1], _names(module, cls)
    statements = [s for line in init.body.body if isinstance(line, cst.SimpleStatementLine) for s in line.body]
    sets_out = any(_dotted(t.target) == f"{me}.out_channels" for s in statements if isinstance(s, cst.Assign)
                   for t in s.targets)
    returns = isinstance(last, cst.SimpleStatementLine) and isinstance(last.body[-1], cst.Return)
    has_se = f"{me}.se" in names or any(n.startswith("SqueezeExcit") or n in _SE_LIKE for n in names)
    return sets_out and returns and last.body[-1].value is not None and not has_se  # type: ignore[union-attr]


def _se_class(module: cst.Module, name: str, nn: str) -> cst.ClassDef:
    code = _SE_TEMPLATE.format(name=name, nn=nn).replace("    ", module.default_indent)
    return cst.parse_statement(code, config=module.config_for_parsing)  # type: ignore[return-value]


def _add_se(cls: cst.ClassDef, se_name: str) -> cst.ClassDef:
    """``self.se = SE(self.out_channels)`` ends ``__init__``; ``forward`` returns ``self.se(<expr>)``."""
    body = list(cls.body.body)
    for k, fn in enumerate(body):
        if not isinstance(fn, cst.FunctionDef) or fn.name.value not in ("__init__", "forward"):
            continue
        me, statements = _self(fn), list(fn.body.body)
        if fn.name.value == "__init__":
            statements.append(cst.parse_statement(f"{me}.se = {se_name}({me}.out_channels)\n"))
        else:
            last = statements[-1]
            value = last.body[-1].value
            if isinstance(value, cst.Tuple) and not value.lpar:  # return a, b -> self.se((a, b))
                value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
            call = cst.Call(func=cst.Attribute(cst.Name(me), cst.Name("se")), args=[cst.Arg(value=value)])
            statements[-1] = last.with_changes(body=[*last.body[:-1], last.body[-1].with_changes(value=call)])
        body[k] = fn.with_changes(body=fn.body.with_changes(body=statements))
    return cls.with_changes(body=cls.body.with_changes(body=body))


def insert_se(source: str, rng: random.Random) -> Transformed:
    """Define a squeeze-and-excitation module before the first block class; gate one block's output."""
    module = _parse(source)
    classes = _module_classes(module)
    blocks = [(i, cls) for i, cls, _ in classes if cls.name.value != "Network"]
    candidates = [(i, cls) for i, cls in blocks if _se_candidate(module, cls)]
    if not candidates:
        raise TransformError("no block class (an nn.Module subclass other than Network whose __init__ sets "
                             "self.out_channels and whose forward ends with return <expr>) without an SE")
    target, block = rng.choice(candidates)
    prefixes = [b.rsplit(".", 1)[0] for _, _, bases in classes for b in bases if b.endswith(".Module")]
    if not prefixes:
        raise TransformError("insert_se needs nn.Module spelled with its module (nn.Module or torch.nn.Module)")
    taken, name, reused = _names(module, module), SE_NAME, False
    while name in taken:  # reuse an SE class this operator inserted before, else take a fresh name
        existing = [s for s in module.body if isinstance(s, cst.ClassDef) and s.name.value == name]
        template = module.code_for_node(_se_class(module, name, prefixes[0]))
        if existing and normalized_ast(module.code_for_node(existing[0])) == normalized_ast(template):
            reused = True
            break
        name = f"{SE_NAME}{int(name[len(SE_NAME):] or 1) + 1}"
    body = list(module.body)
    body[target] = _add_se(block, name)
    if not reused:
        se = _se_class(module, name, prefixes[0]).with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()])
        body.insert(blocks[0][0], se)
    what = f"{'reused' if reused else 'defined'} {name}; {block.name.value} now returns self.se(<old output>)"
    return _done(module.with_changes(body=body), "insert_se", what)


def shrink(source: str, factor: float, rng: random.Random) -> Transformed:
    """About ``factor`` (< 1) times the parameters: widths x sqrt(factor) or depths x factor."""
    if not 0 < factor < 1:
        raise ValueError(f"shrink factor must be in (0, 1), got {factor}")
    module = _parse(source)
    consts = [c for c in _constants(module).values() if c.shape != "dotted"]
    widths, depths = [c for c in consts if c.kind == "width"], [c for c in consts if c.kind == "depth"]
    if not widths and not depths:
        raise TransformError(f"no module-level {_WHAT['width']} or {_WHAT['depth']}")
    step = _width_step(widths)
    can_width = any(v > step for c in widths for v in c.ints)
    can_depth = any(v > 1 for c in depths for v in c.ints)
    if not can_width and not can_depth:
        raise TransformError("nothing left to shrink: every width is at its minimum and every depth is 1")
    if (rng.random() < 0.5 or not can_depth) and can_width:
        scale = math.sqrt(factor)
        return _set(module, widths, _scale_all(widths, scale, step), "shrink", f"widths x{scale:.3g}")
    return _set(module, depths, _scale_all(depths, factor, 1), "shrink", f"depths x{factor:.3g}")


def normalized_ast(source: str) -> str:
    """``ast.dump`` without docstrings or positions: comments, formatting and docstrings don't count."""
    tree = _ast_parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
                node.body = node.body[1:]  # a docstring (only a str Constant has a str .value)
    return ast.dump(tree, include_attributes=False)


def count_layer_calls(source: str) -> int:
    """Call sites constructing parametric layers (``nn.Conv2d(...)``, ``nn.Linear(...)``): a static hint."""
    funcs = [n.func for n in ast.walk(_ast_parse(source)) if isinstance(n, ast.Call)]
    return sum(getattr(f, "attr", getattr(f, "id", "")) in LAYER_CLASSES for f in funcs)


OPERATORS: dict[str, Callable[[str, random.Random], Transformed]] = {
    op.__name__: op for op in (scale_depth, scale_width, scale_width_ratio, kernel_size, stride, activation, insert_se)
}
