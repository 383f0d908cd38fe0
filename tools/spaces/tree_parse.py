"""Reading a code-space base written in the usual style into a tree of the ``tree`` space.

The source is never run: its ``ast`` is interpreted. Module-level constants (``WIDTHS = (16,
32, 64)``, ``ACTIVATION = nn.ReLU``) are read; ``Network.__init__`` is walked statement by
statement (assignments, ``for`` over ``zip``/``range``/tuples, ``if`` on known values), and each
call of a block class of the file is expanded by walking that class's ``__init__`` with the
arguments given; the block's ``forward`` tells the order of its modules and where a shortcut is
added (``out + self.shortcut(x)``: the modules after the addition become the block's ``post``).
Consecutive equal blocks become one block with ``repeat``; a block with stride 2 starts a stage.
``Network.forward`` is not read: the network is taken to be stem, blocks in the order they were
built, global average pooling and the ``nn.Linear`` classifier.

What it understands: catalogue modules (``nn.Conv2d`` with 'same' padding, groups 1 or depthwise,
``nn.BatchNorm2d``, activations, pools, ``nn.Identity``, ``nn.Dropout``), ``nn.Sequential`` of
them, a ``shortcut``/``downsample`` assigned under an ``if`` (a residual block), and a final
``nn.Linear``. Anything else raises :class:`ParseError` naming the line: opaque leaves (modules
kept as unparsed source) are not supported.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass, field
from typing import Any

from archsmith.tools.spaces.tree_model import ACTIVATIONS, POOLS, Block, Head, Node, Stage, Tree

SHORTCUTS = ("shortcut", "downsample", "skip")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Div: operator.truediv, ast.Mod: operator.mod}
_CMPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.Gt: operator.gt,
         ast.LtE: operator.le, ast.GtE: operator.ge}


class ParseError(ValueError):
    def __init__(self, node: ast.AST | None, message: str) -> None:
        line = getattr(node, "lineno", None)
        super().__init__(f"line {line}: {message}" if line else message)


@dataclass(frozen=True)
class ModuleRef:
    """A torch.nn class named in the source (``nn.ReLU``)."""

    name: str


@dataclass
class Instance:
    """One block built by ``Network.__init__``: its nodes, in forward order, and attributes."""

    cls: str
    nodes: list[Node]
    post: list[Node]
    residual: bool
    stride: int
    attrs: dict[str, Any] = field(default_factory=dict)


def _dotted(expr: ast.AST) -> str | None:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        base = _dotted(expr.value)
        return f"{base}.{expr.attr}" if base else None
    return None


class _Interpreter:
    def __init__(self, tree: ast.Module) -> None:
        self.classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        self.globals: dict[str, Any] = {}
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                try:
                    self.globals[stmt.targets[0].id] = self.eval(stmt.value, {})
                except ParseError:
                    pass

    # -- expressions -------------------------------------------------------------------------

    def eval(self, expr: ast.AST, env: dict[str, Any]) -> Any:
        if isinstance(expr, ast.Constant):
            return expr.value
        if isinstance(expr, ast.Name):
            if expr.id in env:
                return env[expr.id]
            if expr.id in self.globals:
                return self.globals[expr.id]
            raise ParseError(expr, f"unknown name {expr.id!r}")
        if isinstance(expr, (ast.Tuple, ast.List)):
            return tuple(self.eval(e, env) for e in expr.elts)
        if isinstance(expr, ast.BinOp) and type(expr.op) in _BINOPS:
            return _BINOPS[type(expr.op)](self.eval(expr.left, env), self.eval(expr.right, env))
        if isinstance(expr, ast.BoolOp):
            values = [self.eval(v, env) for v in expr.values]
            return any(values) if isinstance(expr.op, ast.Or) else all(values)
        if isinstance(expr, ast.Compare) and len(expr.ops) == 1 and type(expr.ops[0]) in _CMPS:
            return _CMPS[type(expr.ops[0])](self.eval(expr.left, env), self.eval(expr.comparators[0], env))
        if isinstance(expr, ast.IfExp):
            return self.eval(expr.body if self.eval(expr.test, env) else expr.orelse, env)
        if isinstance(expr, ast.Attribute):
            dotted = _dotted(expr)
            if dotted and dotted.split(".")[0] in ("nn", "torch"):
                return ModuleRef(dotted.split(".")[-1])
            owner = self.eval(expr.value, env)
            if isinstance(owner, Instance) and expr.attr in owner.attrs:
                return owner.attrs[expr.attr]
            raise ParseError(expr, f"cannot read attribute {expr.attr!r}")
        if isinstance(expr, ast.Call):
            return self.call(expr, env)
        raise ParseError(expr, f"unsupported expression {ast.unparse(expr)!r}")

    def call(self, expr: ast.Call, env: dict[str, Any]) -> Any:
        name = _dotted(expr.func)
        if name in ("zip", "range", "len", "max", "min", "int"):
            args = [self.eval(a, env) for a in expr.args]
            result = {"zip": zip, "range": range, "len": len, "max": max, "min": min, "int": int}[name](*args)
            return tuple(result) if name in ("zip", "range") else result
        if name in self.classes:
            return self.instance(expr, env)
        target = self.eval(expr.func, env)
        if not isinstance(target, ModuleRef):
            raise ParseError(expr, f"unsupported call {ast.unparse(expr.func)!r}")
        args = [self.eval(a, env) for a in expr.args]
        kwargs = {k.arg: self.eval(k.value, env) for k in expr.keywords if k.arg}
        return self.module(target.name, args, kwargs, expr)

    def module(self, name: str, args: list[Any], kw: dict[str, Any], expr: ast.AST) -> Any:
        """A catalogue node (with its stride in ``args['stride']``), a list for nn.Sequential."""
        if name == "Sequential":
            nodes: list[Node] = []
            for item in args:
                nodes += item if isinstance(item, list) else [item]
            return nodes
        if name == "Conv2d":
            names = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias")
            a = {**dict(zip(names, args)), **kw}
            k, c_in, c_out = a.get("kernel_size"), a.get("in_channels"), a.get("out_channels")
            if not isinstance(k, int) or a.get("padding", 0) != k // 2 or a.get("dilation", 1) != 1:
                raise ParseError(expr, "only square convolutions with 'same' padding are understood")
            groups = a.get("groups", 1)
            node = Node(type="Conv2d", args={"out_channels": c_out, "kernel_size": k})
            if groups != 1:
                if groups != c_in or c_out != c_in:
                    raise ParseError(expr, "only groups=1 or depthwise convolutions are understood")
                node = Node(type="Conv2d", args={"depthwise": True, "kernel_size": k})
            if a.get("bias", True):
                node.args["bias"] = True
            node.args["stride"] = a.get("stride", 1)
            return node
        if name == "BatchNorm2d" or name in ACTIVATIONS or name == "Identity":
            return Node(type=name)
        if name in POOLS:
            k = args[0] if args else kw.get("kernel_size")
            stride = args[1] if len(args) > 1 else kw.get("stride", k)
            padding = args[2] if len(args) > 2 else kw.get("padding", 0)
            if padding != k // 2:
                raise ParseError(expr, "only pools with 'same' padding are understood")
            return Node(type=name, args={"kernel_size": k, "stride": stride})
        if name == "Dropout":
            return Node(type="Dropout", args={"p": args[0] if args else kw.get("p", 0.5)})
        if name == "Linear":
            return ("linear", args, kw)
        raise ParseError(expr, f"nn.{name} is not in the tree space's catalogue (opaque leaves are not supported)")

    # -- statements --------------------------------------------------------------------------

    def run(self, body: list[ast.stmt], env: dict[str, Any], attrs: dict[str, Any], made: list[Instance]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                func = stmt.value.func
                if isinstance(func, ast.Attribute) and func.attr == "__init__":
                    continue  # super().__init__()
                if isinstance(func, ast.Attribute) and func.attr == "append":
                    for arg in stmt.value.args:  # blocks.append(Block(...)); a named block was recorded
                        if isinstance(arg, ast.Call) and isinstance(made_now := self.eval(arg, env), Instance):
                            made.append(made_now)
                    continue
                raise ParseError(stmt, f"unsupported statement {ast.unparse(stmt)!r}")
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target, value = stmt.targets[0], stmt.value
                if isinstance(value, ast.Call) and _dotted(value.func) in ("nn.Sequential", "torch.nn.Sequential") \
                        and any(isinstance(a, ast.Starred) for a in value.args):
                    result: Any = "blocks"
                else:
                    result = self.eval(value, env)
                if isinstance(result, Instance):
                    made.append(result)
                if isinstance(target, ast.Name):
                    env[target.id] = result
                elif isinstance(target, ast.Attribute) and _dotted(target.value) == "self":
                    attrs[target.attr] = result
                elif isinstance(target, ast.Tuple):
                    for t, v in zip(target.elts, result, strict=True):
                        env[t.id] = v  # type: ignore[attr-defined]
                else:
                    raise ParseError(stmt, "unsupported assignment")
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and isinstance(stmt.target, ast.Name):
                env[stmt.target.id] = self.eval(stmt.value, env)
            elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name) and type(stmt.op) in _BINOPS:
                env[stmt.target.id] = _BINOPS[type(stmt.op)](env[stmt.target.id], self.eval(stmt.value, env))
            elif isinstance(stmt, ast.For):
                for item in self.eval(stmt.iter, env):
                    if isinstance(stmt.target, ast.Name):
                        env[stmt.target.id] = item
                    else:
                        for t, v in zip(stmt.target.elts, item, strict=True):  # type: ignore[attr-defined]
                            env[t.id] = v
                    self.run(stmt.body, env, attrs, made)
            elif isinstance(stmt, ast.If):
                shortcut = [t.attr for s in (*stmt.body, *stmt.orelse) if isinstance(s, ast.Assign)
                            for t in s.targets if isinstance(t, ast.Attribute) and t.attr in SHORTCUTS]
                if shortcut:
                    attrs[shortcut[0]] = "shortcut"
                    continue
                self.run(stmt.body if self.eval(stmt.test, env) else stmt.orelse, env, attrs, made)
            elif isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
                continue
            else:
                raise ParseError(stmt, f"unsupported statement {type(stmt).__name__}")

    def method(self, cls: ast.ClassDef, name: str) -> ast.FunctionDef:
        for item in cls.body:
            if isinstance(item, ast.FunctionDef) and item.name == name:
                return item
        raise ParseError(cls, f"class {cls.name} has no {name}")

    def instance(self, expr: ast.Call, env: dict[str, Any]) -> Instance:
        cls = self.classes[_dotted(expr.func) or ""]
        init = self.method(cls, "__init__")
        params = [a.arg for a in init.args.args[1:]]
        defaults = dict(zip(params[len(params) - len(init.args.defaults):], init.args.defaults))
        local = {p: self.eval(d, {}) for p, d in defaults.items()}
        local.update(zip(params, (self.eval(a, env) for a in expr.args)))
        local.update({k.arg: self.eval(k.value, env) for k in expr.keywords if k.arg})
        attrs: dict[str, Any] = {}
        self.run(init.body, local, attrs, [])
        order, residual_at = self.forward_order(self.method(cls, "forward"))
        nodes: list[Node] = []
        for attr in order:
            value = attrs.get(attr)
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(n, Node) for n in items):
                raise ParseError(cls, f"{cls.name}.{attr} is not a catalogue module")
            nodes += [n.model_copy(deep=True) for n in items]
        split = len([n for attr in order[:residual_at] for n in (attrs[attr] if isinstance(attrs[attr], list)
                                                                  else [attrs[attr]])]) \
            if residual_at is not None else len(nodes)
        strides = [n.args.pop("stride") for n in nodes if "stride" in n.args]
        stride = next((s for s in strides if s != 1), 1)
        if sum(1 for s in strides if s != 1) > 1:
            raise ParseError(cls, f"{cls.name} strides more than once")
        return Instance(cls.name, nodes[:split], nodes[split:], residual_at is not None, stride,
                        {k: v for k, v in attrs.items() if isinstance(v, (int, float, str))})

    def forward_order(self, forward: ast.FunctionDef) -> tuple[list[str], int | None]:
        """The ``self.<module>`` calls of a forward, innermost first; the index where a shortcut
        is added (None: no residual)."""
        order: list[str] = []
        residual: list[int] = []

        def visit(expr: ast.AST) -> None:
            func = expr.func if isinstance(expr, ast.Call) else None
            if isinstance(func, ast.Attribute) and _dotted(func.value) == "self":
                for arg in expr.args:  # type: ignore[union-attr]
                    visit(arg)
                if func.attr in SHORTCUTS:
                    residual.append(len(order))
                else:
                    order.append(func.attr)
            elif isinstance(expr, ast.BinOp):
                visit(expr.left)
                visit(expr.right)
            elif isinstance(expr, (ast.Name, ast.Constant)):
                return
            else:
                raise ParseError(expr, f"unsupported forward expression {ast.unparse(expr)!r}")

        for stmt in forward.body:
            if isinstance(stmt, (ast.Assign, ast.Return)) and stmt.value is not None:
                visit(stmt.value)
            elif not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
                raise ParseError(stmt, "unsupported forward statement")
        return order, (residual[0] if residual else None)


def parse_code_base(source: str) -> Tree:
    """The tree of a code-space base (see the module doc); ParseError names what is not understood."""
    module = ast.parse(source)
    interpreter = _Interpreter(module)
    if "Network" not in interpreter.classes:
        raise ParseError(None, "no class Network")
    network = interpreter.classes["Network"]
    init = interpreter.method(network, "__init__")
    env: dict[str, Any] = {"num_classes": 10}
    attrs: dict[str, Any] = {}
    made: list[Instance] = []
    interpreter.run(init.body, env, attrs, made)
    stem = next((v for k, v in attrs.items() if k.startswith("stem")), None)
    if not isinstance(stem, list) or not made:
        raise ParseError(network, "expected self.stem = nn.Sequential(...) and blocks built in __init__")
    for node in stem:
        if node.args.get("stride") == 1:
            del node.args["stride"]
    stages: list[Stage] = []
    for inst in made:
        block = Block(name=inst.cls, nodes=inst.nodes, residual=inst.residual, post=inst.post, stride=inst.stride)
        last = stages[-1].blocks[-1] if stages else None
        if last is not None and inst.stride == 1 and last.model_copy(update={"repeat": 1, "stride": 1}) == block:
            last.repeat += 1
        elif last is None or inst.stride != 1:
            stages.append(Stage(blocks=[block]))
        else:
            stages[-1].blocks.append(block)
    return Tree(stem=stem, stages=stages, head=Head())
