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
``nn.Linear``. A helper class that composes catalogue modules in sequence (conv > BN) is inlined.

Everything else the ``__init__`` builds is kept as an **opaque leaf** (``Opaque`` node): another
``nn`` module (``nn.GroupNorm(4, 64)``), a catalogue module with arguments the tree does not model,
a class or function of the file whose ``forward`` is not a plain sequence (attention, a gate), or a
whole block of that kind. The leaf keeps its constructor call with the values resolved, and the
file's definitions it needs (imports, classes, functions, constants) travel in the tree's
``definitions``. Its channels are what it is fed; what it gives is the value of an
``out_channels``-like argument, else what the next understood module is declared to take
(``nn.Conv2d(64, ...)``, ``nn.BatchNorm2d(64)``), else its input's. Its stride is a ``stride``
argument's. Edits leave opaque leaves as they are, so a change of width around one is refused by
shape inference, and the size estimate counts none of their parameters (the Verifier measures the
built network). The control flow of ``__init__`` itself (an unsupported statement or expression)
still raises :class:`ParseError` naming the line.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass, field
from typing import Any

from archsmith.tools.spaces.tree_model import ACTIVATIONS, POOLS, Block, Head, Node, Stage, Tree, node_out

SHORTCUTS = ("shortcut", "downsample", "skip")
# Constructor arguments that give an opaque leaf's output channels.
OUT_NAMES = ("out_channels", "out_planes", "planes", "c_out", "c2", "oup", "out_ch", "outp", "channels_out")
# Arguments whose value is a temporary note of the parse, removed before the tree is built.
_DECLARED_IN, _OUT = "_c_in", "_out"
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
    call: str = ""  # the constructor call with its values resolved (``Block(16, 32, stride=2)``)
    out_channels: int | None = None  # an out_channels-like argument's value

    def as_nodes(self) -> list[Node]:
        """The instance as modules inside another block: its own modules when it is a plain sequence
        (its stride back on the first module that can apply it), else one opaque leaf."""
        if self.residual or self.post or any(n.type == "Opaque" for n in self.nodes):
            return [_opaque(self.call, self.stride, self.out_channels)]
        nodes = [n.model_copy(deep=True) for n in self.nodes]
        if self.stride != 1:
            first = next((n for n in nodes if n.type in ("Conv2d", *POOLS)), None)
            if first is None:
                return [_opaque(self.call, self.stride, self.out_channels)]
            first.args["stride"] = self.stride
        return nodes


def _opaque(call: str, stride: int = 1, out_channels: int | None = None) -> Node:
    """An opaque leaf; its input (and, unless known here, output) channels are set after the parse."""
    args: dict[str, Any] = {"call": call, "stride": stride}
    if out_channels is not None:
        args[_OUT] = out_channels
    return Node(type="Opaque", args=args)


def _literal(value: Any, expr: ast.AST) -> str:
    """Python source for a value the parse resolved (an argument of an opaque leaf's call)."""
    if isinstance(value, ModuleRef):
        return f"nn.{value.name}"
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v, expr) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise ParseError(expr, f"cannot keep {ast.unparse(expr)!r} as written: an argument is {type(value).__name__}")


def _call_source(name: str, args: list[Any], kwargs: dict[str, Any], expr: ast.AST) -> str:
    parts = [_literal(a, expr) for a in args] + [f"{k}={_literal(v, expr)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _stride_of(value: Any) -> int:
    if isinstance(value, tuple) and value and all(v == value[0] for v in value):
        value = value[0]
    return value if isinstance(value, int) and not isinstance(value, bool) and value in (1, 2) else 1


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
        self.functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
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
            try:
                return self.instance(expr, env)
            except ParseError:
                return self.opaque_instance(expr, env)
        if name in self.functions:
            args, kwargs = self.arguments(expr, env)
            bound = self.bind(self.functions[name], args, kwargs)
            return _opaque(_call_source(name, args, kwargs, expr), _stride_of(bound.get("stride")),
                           self.out_channels(bound))
        target = self.eval(expr.func, env)
        if not isinstance(target, ModuleRef):
            raise ParseError(expr, f"unsupported call {ast.unparse(expr.func)!r}")
        args, kwargs = self.arguments(expr, env)
        return self.module(target.name, args, kwargs, expr)

    def arguments(self, expr: ast.Call, env: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        if any(isinstance(a, ast.Starred) for a in expr.args) or any(k.arg is None for k in expr.keywords):
            raise ParseError(expr, f"unsupported call with * or ** arguments {ast.unparse(expr)!r}")
        return [self.eval(a, env) for a in expr.args], {k.arg: self.eval(k.value, env) for k in expr.keywords
                                                          if k.arg}

    def bind(self, function: ast.FunctionDef, args: list[Any], kwargs: dict[str, Any],
             method: bool = False) -> dict[str, Any]:
        """The call's values by parameter name (defaults included where they are constants)."""
        params = [a.arg for a in function.args.args[1 if method else 0:]]
        bound: dict[str, Any] = {}
        for param, default in zip(params[len(params) - len(function.args.defaults):], function.args.defaults):
            try:
                bound[param] = self.eval(default, {})
            except ParseError:
                pass
        bound.update(zip(params, args))
        bound.update(kwargs)
        return bound

    @staticmethod
    def out_channels(bound: dict[str, Any]) -> int | None:
        value = next((bound[n] for n in OUT_NAMES if n in bound), None)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def opaque_instance(self, expr: ast.Call, env: dict[str, Any]) -> Instance:
        """A file class the parse cannot expand, kept as one opaque leaf (a block of its own when
        ``Network.__init__`` builds it)."""
        cls = self.classes[_dotted(expr.func) or ""]
        args, kwargs = self.arguments(expr, env)
        init = next((i for i in cls.body if isinstance(i, ast.FunctionDef) and i.name == "__init__"), None)
        bound = self.bind(init, args, kwargs, method=True) if init is not None else {}
        attrs: dict[str, Any] = {}
        if init is not None:  # what it records (self.out_channels = ...) may be read by its caller
            try:
                self.run(init.body, dict(bound), attrs, [])
            except (ParseError, TypeError, ValueError, KeyError, ZeroDivisionError):
                pass
        call, stride, out = _call_source(cls.name, args, kwargs, expr), _stride_of(bound.get("stride")), \
            self.out_channels(bound)
        out = out if out is not None else self.out_channels(attrs)
        return Instance(cls.name, [_opaque(call, stride, out)], [], False, stride,
                        {k: v for k, v in attrs.items() if isinstance(v, (int, float, str))}, call=call,
                        out_channels=out)

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
            groups = a.get("groups", 1)
            if (not isinstance(k, int) or a.get("padding", 0) != k // 2 or a.get("dilation", 1) != 1
                    or groups not in (1, c_in) or (groups != 1 and c_out != c_in) or k > 7 or k % 2 == 0
                    or a.get("stride", 1) not in (1, 2) or set(a) - set(names)):
                node = _opaque(_call_source("nn.Conv2d", args, kw, expr), _stride_of(a.get("stride", 1)), c_out)
            else:
                node = Node(type="Conv2d", args={"out_channels": c_out, "kernel_size": k})
                if groups != 1:
                    node = Node(type="Conv2d", args={"depthwise": True, "kernel_size": k})
                if a.get("bias", True):
                    node.args["bias"] = True
                node.args["stride"] = a.get("stride", 1)
            if isinstance(c_in, int):
                node.args[_DECLARED_IN] = c_in
            return node
        if name == "BatchNorm2d":
            node = Node(type=name)
            features = args[0] if args else kw.get("num_features")
            if isinstance(features, int):
                node.args[_DECLARED_IN] = features
            return node
        if name in ACTIVATIONS or name == "Identity":
            return Node(type=name)
        if name in POOLS:
            k = args[0] if args else kw.get("kernel_size")
            stride = args[1] if len(args) > 1 else kw.get("stride", k)
            padding = args[2] if len(args) > 2 else kw.get("padding", 0)
            if not isinstance(k, int) or padding != k // 2 or k % 2 == 0 or k > 7 or stride not in (1, 2):
                return _opaque(_call_source(f"nn.{name}", args, kw, expr), _stride_of(stride))
            return Node(type=name, args={"kernel_size": k, "stride": stride})
        if name == "Dropout":
            return Node(type="Dropout", args={"p": args[0] if args else kw.get("p", 0.5)})
        if name == "Linear":
            return ("linear", args, kw)
        return _opaque(_call_source(f"nn.{name}", args, kw, expr), _stride_of(kw.get("stride", 1)),
                       self.out_channels(kw))

    # -- statements --------------------------------------------------------------------------

    def run(self, body: list[ast.stmt], env: dict[str, Any], attrs: dict[str, Any], made: list[Instance]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                func = stmt.value.func
                if isinstance(func, ast.Attribute) and func.attr == "__init__":
                    continue  # super().__init__()
                if isinstance(func, ast.Attribute) and func.attr == "append":
                    for arg in stmt.value.args:  # blocks.append(Block(...)); a named block was recorded
                        item = self.eval(arg, env)
                        if isinstance(arg, ast.Call) and isinstance(item, Instance):
                            made.append(item)
                        if isinstance(func.value, ast.Name) and isinstance(env.get(func.value.id), tuple):
                            env[func.value.id] += (item,)
                    continue
                raise ParseError(stmt, f"unsupported statement {ast.unparse(stmt)!r}")
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target, value = stmt.targets[0], stmt.value
                if isinstance(value, ast.Call) and _dotted(value.func) in ("nn.Sequential", "torch.nn.Sequential") \
                        and any(isinstance(a, ast.Starred) for a in value.args):
                    items: list[Any] = []
                    for arg in value.args:
                        items += list(self.eval(arg.value, env)) if isinstance(arg, ast.Starred) \
                            else [self.eval(arg, env)]
                    # the network's blocks (a marker: they were recorded as they were built), or modules
                    result: Any = "blocks" if any(isinstance(i, Instance) for i in items) \
                        else self.module("Sequential", items, {}, value)
                else:
                    result = self.eval(value, env)
                if isinstance(result, Instance):
                    made.append(result)
                elif isinstance(result, tuple):  # blocks = [Block(...), Block(...)]
                    made += [item for item in result if isinstance(item, Instance)]
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
        args, kwargs = self.arguments(expr, env)
        local = self.bind(init, args, kwargs, method=True)
        attrs: dict[str, Any] = {}
        self.run(init.body, local, attrs, [])
        order, residual_at = self.forward_order(self.method(cls, "forward"), attrs)
        for name in SHORTCUTS:
            if name in attrs and attrs[name] != "shortcut":
                raise ParseError(cls, f"{cls.name}.{name} is not the usual projection (a 1x1 conv and BN under "
                                      "an if, else nn.Identity)")
        per_attr: list[list[Node]] = []
        for attr in order:
            value = attrs.get(attr)
            items = value if isinstance(value, list) else [value]
            nodes_here: list[Node] = []
            for item in items:
                if isinstance(item, Instance):
                    nodes_here += item.as_nodes()
                elif isinstance(item, Node):
                    nodes_here.append(item.model_copy(deep=True))
                else:
                    raise ParseError(cls, f"{cls.name}.{attr} is not a module")
            per_attr.append(nodes_here)
        nodes = [n for group in per_attr for n in group]
        split = sum(len(group) for group in per_attr[:residual_at]) if residual_at is not None else len(nodes)
        strides = [n.args.pop("stride") if n.type != "Opaque" else n.arg("stride") for n in nodes
                   if "stride" in n.args]
        stride = next((s for s in strides if s != 1), 1)
        if sum(1 for s in strides if s != 1) > 1:
            raise ParseError(cls, f"{cls.name} strides more than once")
        return Instance(cls.name, nodes[:split], nodes[split:], residual_at is not None, stride,
                        {k: v for k, v in attrs.items() if isinstance(v, (int, float, str))},
                        call=_call_source(cls.name, args, kwargs, expr),
                        out_channels=self.out_channels({**local, **kwargs}))

    def forward_order(self, forward: ast.FunctionDef, attrs: dict[str, Any]) -> tuple[list[str], int | None]:
        """The ``self.<module>`` calls of a forward, innermost first; the index where a shortcut
        (``self.shortcut(x)``, or the input itself: ``out + x``) is added (None: no residual). An
        ``if`` on the block's recorded values (``if self.use_residual:``) takes its branch."""
        order: list[str] = []
        residual: list[int] = []
        given = forward.args.args[1].arg if len(forward.args.args) > 1 else None
        me = {"self": Instance("self", [], [], False, 1, attrs)}

        def visit(expr: ast.AST) -> None:
            func = expr.func if isinstance(expr, ast.Call) else None
            if isinstance(func, ast.Attribute) and _dotted(func.value) == "self":
                for arg in expr.args:  # type: ignore[union-attr]
                    visit(arg)
                if func.attr not in SHORTCUTS:
                    order.append(func.attr)
            elif isinstance(expr, ast.BinOp):
                visit(expr.left)
                visit(expr.right)
                sides = [e for e in (expr.left, expr.right) if (isinstance(e, ast.Name) and e.id == given) or (
                    isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and e.func.attr in SHORTCUTS)]
                if isinstance(expr.op, ast.Add) and len(sides) == 1:
                    residual.append(len(order))
            elif isinstance(expr, (ast.Name, ast.Constant)):
                return
            else:
                raise ParseError(expr, f"unsupported forward expression {ast.unparse(expr)!r}")

        def walk(body: list[ast.stmt]) -> None:
            for stmt in body:
                if isinstance(stmt, (ast.Assign, ast.Return)) and stmt.value is not None:
                    visit(stmt.value)
                elif isinstance(stmt, ast.If):
                    walk(stmt.body if self.eval(stmt.test, me) else stmt.orelse)
                elif not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
                    raise ParseError(stmt, "unsupported forward statement")

        walk(forward.body)
        if len(residual) > 1:
            raise ParseError(forward, "more than one residual addition")
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
        if node.args.get("stride") == 1 and node.type != "Opaque":
            del node.args["stride"]
    made += _after_the_blocks(attrs, network)
    _settle_opaque_channels([*stem, *(n for inst in made for n in (*inst.nodes, *inst.post))])
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
    called = {str(n.args["call"]).split("(")[0] for n in [*stem, *(n for inst in made for n in (*inst.nodes, *inst.post))]
              if n.type == "Opaque"}
    definitions = _definitions(module, called)
    return Tree(stem=stem, stages=stages, head=Head(), definitions=definitions)


_POOLING = ("nn.AdaptiveAvgPool2d(", "nn.AdaptiveMaxPool2d(", "nn.Flatten(")


def _after_the_blocks(attrs: dict[str, Any], network: ast.ClassDef) -> list[Instance]:
    """Modules ``Network.__init__`` assigns after its blocks (a 1x1 head convolution), as blocks of
    their own in that order; global pooling, dropout and the classifier are the tree's head."""
    names = list(attrs)
    if "blocks" not in attrs.values():
        return []
    after = names[[attrs[n] for n in names].index("blocks") + 1:]
    found = []
    for name in after:
        value = attrs[name]
        items = value if isinstance(value, list) else [value]
        nodes: list[Node] = []
        for item in items:
            if isinstance(item, Instance):
                nodes += item.as_nodes()
            elif isinstance(item, Node):
                nodes.append(item.model_copy(deep=True))
        nodes = [n for n in nodes if n.type != "Dropout"
                 and not (n.type == "Opaque" and str(n.args["call"]).startswith(_POOLING))]
        if not nodes or len(nodes) != len(items) and not any(isinstance(i, Instance) for i in items):
            continue
        strides = [n.args.pop("stride") if n.type != "Opaque" else n.arg("stride") for n in nodes if "stride" in n.args]
        if sum(1 for st in strides if st != 1) > 1:
            raise ParseError(network, f"self.{name} strides more than once")
        block_name = "".join(part.title() for part in name.split("_")) or "Tail"
        found.append(Instance(block_name, nodes, [], False, next((st for st in strides if st != 1), 1)))
    return found


def _settle_opaque_channels(nodes: list[Node]) -> None:
    """Give each opaque leaf the channels it is fed and those it gives (see the module doc), and
    drop the parse's notes, over the network's modules in forward order."""
    channels = 3
    for index, node in enumerate(nodes):
        if node.type == "Opaque":
            node.args["in_channels"] = channels
            out = node.args.pop(_OUT, None)
            if out is None:
                following = next((n for n in nodes[index + 1:] if _DECLARED_IN in n.args or n.type == "Opaque"), None)
                out = following.args.get(_DECLARED_IN) if following is not None else None
            node.args["out_channels"] = out if isinstance(out, int) else channels
        channels = node_out(node, channels, "")
    for node in nodes:
        node.args.pop(_DECLARED_IN, None)


_STANDARD_IMPORTS = ("import torch", "import torch.nn as nn")


def _definitions(module: ast.Module, needed: set[str]) -> list[str]:
    """The file-level statements the opaque leaves need, with what they use in turn (by name), in
    the file's order; ``import torch`` and ``import torch.nn as nn`` are the rendering's own."""
    defines: dict[str, list[ast.stmt]] = {}
    for stmt in module.body:
        if isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            defines.setdefault(stmt.name, []).append(stmt)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        defines.setdefault(name.id, []).append(stmt)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                defines.setdefault((alias.asname or alias.name).split(".")[0], []).append(stmt)
    chosen: list[ast.stmt] = []
    todo = sorted(needed)
    while todo:
        name = todo.pop()
        for stmt in defines.get(name, []):
            if any(stmt is c for c in chosen):
                continue
            chosen.append(stmt)
            todo += [n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and n.id in defines]
    order = {id(stmt): i for i, stmt in enumerate(module.body)}
    sources = [ast.unparse(stmt) for stmt in sorted(chosen, key=lambda st: order[id(st)])]
    return [src for src in sources if src.strip() not in _STANDARD_IMPORTS]
