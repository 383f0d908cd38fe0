"""The built-in bases of the open-ended code space (tools/spaces/code_bases/*.py).

Each base is executed from its source text (as candidates are), built, run forward and backward,
and checked against its expected parameter count, the source conventions that the libcst
transforms rely on, and variants of its hyperparameter constants (wider, deeper, kernel 5, GELU).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

BASES_DIR = Path(__file__).resolve().parents[1] / "tools" / "spaces" / "code_bases"

# Exact parameter counts at num_classes=10 (thop agrees); checked within PARAM_TOLERANCE.
# resnet32: 0.46 M in He et al. (option A); option B projections add 2.8 k.
# mobilenetv2_w05 / shufflenetv2_w05: the same backbone parameters as torchvision's
# mobilenet_v2(width_mult=0.5) / shufflenet_v2_x0_5 (strides do not change parameter counts).
# nb201_cell: weight for weight the network of tools/spaces/nb201_net.py for that cell.
EXPECTED_PARAMS = {
    "resnet32": 466_906,
    "mobilenetv2_w05": 700_490,
    "shufflenetv2_w05": 352_042,
    "nb201_cell": 1_288_506,
}
PARAM_TOLERANCE = 0.01
BASES = sorted(EXPECTED_PARAMS)

TUPLE_CONSTANTS = ("WIDTHS", "DEPTHS", "STRIDES")
INT_CONSTANTS = ("STEM_WIDTH", "KERNEL_SIZE")
ALLOWED_IMPORTS = {("torch", None), ("torch.nn", "nn"), ("torch.nn.functional", "F")}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def read_source(name: str) -> str:
    return (BASES_DIR / f"{name}.py").read_text("utf-8")


def build(source: str, name: str, num_classes: int = 10) -> torch.nn.Module:
    namespace: dict = {}
    exec(compile(source, name, "exec"), namespace)  # noqa: S102 - our own files
    torch.manual_seed(0)
    return namespace["Network"](num_classes)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def module_constants(tree: ast.Module) -> dict[str, ast.Assign]:
    return {
        node.targets[0].id: node
        for node in tree.body
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
    }


def literal_value(source: str, name: str):
    return ast.literal_eval(module_constants(ast.parse(source))[name].value)


def replace_constant(source: str, name: str, value_source: str) -> str:
    """``source`` with the value expression of the module-level ``name = ...`` replaced (AST positions)."""
    node = module_constants(ast.parse(source))[name].value
    lines = source.encode("utf-8").splitlines(keepends=True)
    start = sum(len(line) for line in lines[: node.lineno - 1]) + node.col_offset
    end = sum(len(line) for line in lines[: node.end_lineno - 1]) + node.end_col_offset
    data = source.encode("utf-8")
    return (data[:start] + value_source.encode("utf-8") + data[end:]).decode("utf-8")


def wider(source: str) -> str:
    widths = literal_value(source, "WIDTHS")
    return replace_constant(source, "WIDTHS", repr(tuple(max(1, round(w * 1.37)) for w in widths)))


def deeper(source: str) -> str:
    depths = literal_value(source, "DEPTHS")
    return replace_constant(source, "DEPTHS", repr(tuple(d + 1 for d in depths)))


def kernel5(source: str) -> str:
    return replace_constant(source, "KERNEL_SIZE", "5")


def gelu(source: str) -> str:
    return replace_constant(source, "ACTIVATION", "nn.GELU")


def everything(source: str) -> str:
    return gelu(kernel5(deeper(wider(source))))


def forward_backward(model: torch.nn.Module, num_classes: int = 10, size: tuple[int, int] = (32, 32)) -> None:
    model.train()
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads), "some parameters get no gradient"
    assert any(g.abs().sum() > 0 for g in grads)


# -- the bases as written ---------------------------------------------------------------------


@pytest.mark.parametrize("name", BASES)
def test_base_builds_runs_and_has_expected_params(name):
    source = read_source(name)
    state = torch.random.get_rng_state()
    model = build(source, name)
    assert count_params(model) == pytest.approx(EXPECTED_PARAMS[name], rel=PARAM_TOLERANCE)

    # Every block's declared out_channels is the channel count it really returns.
    checked = []

    def check(module, inputs, output):
        assert output.shape[1] == module.out_channels, type(module).__name__
        checked.append(module)

    blocks = [m for m in model.modules() if hasattr(m, "out_channels") and not isinstance(m, torch.nn.Conv2d)]
    handles = [m.register_forward_hook(check) for m in blocks]
    forward_backward(model)
    for handle in handles:
        handle.remove()
    assert blocks and len(checked) == len(blocks)

    namespace: dict = {}
    torch.random.set_rng_state(state)
    exec(compile(source, name, "exec"), namespace)  # noqa: S102
    assert torch.equal(torch.random.get_rng_state(), state), "executing the source draws random numbers"


@pytest.mark.parametrize("name", BASES)
def test_base_other_sizes_and_classes(name):
    model = build(read_source(name), name, num_classes=100)
    forward_backward(model, num_classes=100, size=(17, 23))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 100)


# -- source conventions -----------------------------------------------------------------------


def _self_attributes_assigned(function: ast.FunctionDef) -> set[str]:
    names = set()
    for node in ast.walk(function):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                names.add(target.attr)
    return names


def _returns(function: ast.FunctionDef) -> list[ast.Return]:
    found = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                continue
            if isinstance(child, ast.Return):
                found.append(child)
            visit(child)

    visit(function)
    return found


@pytest.mark.parametrize("name", BASES)
def test_source_conventions(name):
    source = read_source(name)
    tree = ast.parse(source)
    body = tree.body

    # Docstring, then the imports, then the constants, then functions and classes, Network last.
    assert ast.get_docstring(tree), "the file starts with a docstring"
    kinds = []
    for node in body[1:]:
        if isinstance(node, ast.Import):
            imported = [(alias.name, alias.asname) for alias in node.names]
            assert len(imported) == 1 and imported[0] in ALLOWED_IMPORTS, f"line {node.lineno}: import {imported}"
            kinds.append(0)
        elif isinstance(node, ast.Assign):
            assert len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            assert node.targets[0].id.isupper(), f"module-level names are UPPER_CASE constants: {node.targets[0].id}"
            kinds.append(1)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            kinds.append(2)
        else:
            raise AssertionError(f"unexpected module-level statement at line {node.lineno}")
    assert kinds == sorted(kinds), "order: imports, constants, definitions"
    assert isinstance(body[-1], ast.ClassDef) and body[-1].name == "Network"

    constants = module_constants(tree)
    for key in TUPLE_CONSTANTS:
        value = ast.literal_eval(constants[key].value)
        assert isinstance(value, tuple) and value and all(type(v) is int and v > 0 for v in value), key
    assert len({len(ast.literal_eval(constants[key].value)) for key in TUPLE_CONSTANTS}) == 1
    for key in INT_CONSTANTS:
        assert type(ast.literal_eval(constants[key].value)) is int, key
    assert ast.literal_eval(constants["KERNEL_SIZE"].value) % 2 == 1
    activation = constants["ACTIVATION"].value
    assert isinstance(activation, ast.Attribute) and isinstance(activation.value, ast.Name)
    assert activation.value.id == "nn"
    for key, node in constants.items():
        if key not in ("ACTIVATION",):
            ast.literal_eval(node.value)  # a literal

    # Every constant is used by the code below it.
    loaded = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    assert set(constants) <= loaded, f"unused constants: {set(constants) - loaded}"

    # ACTIVATION is instantiated without arguments (GELU has no inplace).
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "ACTIVATION":
            assert not node.args and not node.keywords, f"line {node.lineno}: ACTIVATION() takes no arguments"

    classes = [node for node in body if isinstance(node, ast.ClassDef)]
    blocks = 0
    for cls in classes:
        methods = {item.name: item for item in cls.body if isinstance(item, ast.FunctionDef)}
        if "forward" not in methods:
            continue
        if cls.name == "Network":
            init = methods["__init__"]
            params = [arg.arg for arg in init.args.args]
            assert params == ["self", "num_classes"]
            assert ast.literal_eval(init.args.defaults[0]) == 10
            assert "F.adaptive_avg_pool2d(" in ast.get_source_segment(source, methods["forward"])
            continue
        blocks += 1
        assert "out_channels" in _self_attributes_assigned(methods["__init__"]), f"{cls.name} sets self.out_channels"
        forward = methods["forward"]
        returns = _returns(forward)
        assert len(returns) == 1 and forward.body[-1] is returns[0], f"{cls.name}.forward ends with its only return"
        assert returns[0].value is not None
    assert blocks >= 1


# -- variants of the constants ----------------------------------------------------------------

VARIANTS = {"wider": wider, "deeper": deeper, "kernel5": kernel5, "gelu": gelu, "all": everything}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", BASES)
def test_variant_builds_and_runs(name, variant):
    source = read_source(name)
    changed = VARIANTS[variant](source)
    assert changed != source
    model = build(changed, f"{name}-{variant}")
    forward_backward(model)
    base = count_params(build(source, name))
    if variant in ("wider", "deeper", "kernel5", "all"):
        assert count_params(model) > base
    if variant == "gelu":
        assert count_params(model) == base
        assert any(isinstance(m, torch.nn.GELU) for m in model.modules())
        assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)) for m in model.modules())


def test_replace_constant_keeps_the_rest():
    source = 'X = 1  # keep\nWIDTHS = (\n    16,\n    32,\n)\nY = 2\n'
    assert replace_constant(source, "WIDTHS", "(22, 44)") == 'X = 1  # keep\nWIDTHS = (22, 44)\nY = 2\n'
