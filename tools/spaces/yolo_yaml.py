"""YOLO model YAML for the detection space: parsing, static checks, normal form, analysis.

A candidate is an ultralytics model YAML (``nc``, scale multiples, ``backbone`` and ``head`` lists
of ``[from, repeats, module, args]`` rows). This module reads it into a :class:`Spec` without
importing torch or ultralytics, checks it symbolically (stride and channels of every layer,
computed as ultralytics' ``parse_model`` does) and renders the one canonical text.

Scale multiples: ``depth_multiple`` + ``width_multiple`` (+ optional ``max_channels``), or
ultralytics' ``scales`` table with ``scale:`` naming the entry (a single entry needs no name).
A layer's output channels are ``ceil(min(c, max_channels) * width / 8) * 8`` and a C2f with
``n > 1`` repeats runs ``max(round(n * depth), 1)`` bottlenecks, as in ``parse_model``.

``from`` is stored as absolute layer indices (``-1`` for the input image of layer 0); the canonical
text writes the previous layer as ``-1`` and every other reference as an absolute index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from archsmith.tools.spaces.base import ValidationIssue

MODULES_PLUS = ("Conv", "C2f", "SPPF", "nn.Upsample", "Concat", "Detect")
MODULES_STAR = (*MODULES_PLUS, "SCDown", "PSA")
MODES = {"yolov8+": MODULES_PLUS, "yolov8*": MODULES_STAR}
KERNELS = {"Conv": (1, 3, 5, 7), "SPPF": (3, 5, 7, 9), "SCDown": (3, 5, 7)}
STRIDES = (1, 2)
UPSAMPLE_MODES = ("nearest", "bilinear")
DETECT_STRIDES = [8, 16, 32]
MAX_STRIDE = 32
MAX_REPEATS = 12  # raw C2f repeats (before depth_multiple)
MAX_SCALED_CHANNELS = 2048
TOP_KEYS = ("nc", "depth_multiple", "width_multiple", "max_channels", "scales", "scale", "backbone", "head")
REG_MAX = 16  # ultralytics' DFL bins (Detect's box branch outputs 4 * REG_MAX channels)


@dataclass(frozen=True)
class Layer:
    """One row; ``source`` holds absolute indices (``-1``: the input image)."""

    source: int | tuple[int, ...]
    repeats: int
    module: str
    args: tuple[Any, ...]

    @property
    def channels(self) -> int | None:
        """The written output-channel argument (before width scaling), for blocks that have one."""
        return self.args[0] if self.module in ("Conv", "C2f", "SPPF", "SCDown", "PSA") else None

    def sources(self) -> tuple[int, ...]:
        return self.source if isinstance(self.source, tuple) else (self.source,)


@dataclass(frozen=True)
class Spec:
    nc: int
    depth: float
    width: float
    max_channels: int | None
    backbone: int  # number of backbone rows; the rest is the head
    layers: tuple[Layer, ...]

    def section(self, index: int) -> str:
        return "backbone" if index < self.backbone else "head"

    def where(self, index: int) -> str:
        return f"{self.section(index)} layer {index} ({self.layers[index].module})"


@dataclass(frozen=True)
class Shape:
    stride: int
    channels: int


def make_divisible(x: float, divisor: int = 8) -> int:
    return math.ceil(x / divisor) * divisor


def scaled_channels(spec: Spec, channels: int) -> int:
    capped = min(channels, spec.max_channels) if spec.max_channels else channels
    return make_divisible(capped * spec.width, 8)


def scaled_repeats(spec: Spec, repeats: int) -> int:
    return max(round(repeats * spec.depth), 1) if repeats > 1 else repeats


def psa_heads(channels: int) -> tuple[int, int]:
    """(hidden channels, attention heads) of ultralytics' PSA on ``channels`` inputs."""
    hidden = int(channels * 0.5)
    return hidden, max(hidden // 64, 1)


# -- reading ---------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def strip_fences(text: str) -> str:
    """The YAML inside a Markdown code fence (LLM answers), or the text itself."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("```"):
        lines = lines[1:]
        if lines and lines[-1].strip().startswith("```"):
            lines = lines[:-1]
    return "\n".join(lines)


def load_yaml(text: str) -> tuple[dict[str, Any] | None, list[ValidationIssue]]:
    import yaml

    if not text or not text.strip():
        return None, [ValidationIssue(message="empty model YAML", kind="syntax")]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        return None, [ValidationIssue(message=f"YAML does not parse{where}: {problem}", kind="syntax")]
    if not isinstance(data, dict):
        return None, [ValidationIssue(message="the model YAML must be a mapping (nc, backbone, head, ...)", kind="syntax")]
    return data, []


def _multiples(data: dict[str, Any], issues: list[ValidationIssue]) -> tuple[float, float, int | None] | None:
    def fail(message: str) -> None:
        issues.append(ValidationIssue(message=message))

    if "scales" in data:
        scales, key = data["scales"], data.get("scale")
        if "depth_multiple" in data or "width_multiple" in data:
            return fail("give either scales (+ scale) or depth_multiple/width_multiple, not both")
        if not isinstance(scales, dict) or not scales:
            return fail("scales must map a scale name to [depth, width, max_channels]")
        if key is None and len(scales) > 1:
            return fail(f"scales has {len(scales)} entries; add scale: <one of {', '.join(map(str, scales))}> "
                        "or name the file after its scale (yolov8n.yaml), as ultralytics does")
        key = key if key is not None else next(iter(scales))
        entry = scales.get(key)
        if not (isinstance(entry, list) and len(entry) == 3 and all(_is_number(v) for v in entry)):
            return fail(f"scales.{key} must be [depth, width, max_channels] (scales: {', '.join(map(str, scales))})")
        depth, width, max_channels = entry
    else:
        missing = [k for k in ("depth_multiple", "width_multiple") if k not in data]
        if missing:
            return fail(f"missing scale multiples: {', '.join(missing)} (or a scales table with scale:)")
        depth, width, max_channels = data["depth_multiple"], data["width_multiple"], data.get("max_channels")
    count = len(issues)
    for name, value in (("depth_multiple", depth), ("width_multiple", width)):
        if not _is_number(value) or not 0 < value <= 2:
            fail(f"{name} must be a number in (0, 2], got {value!r}")
    if max_channels is not None and (not _is_number(max_channels) or max_channels < 8):
        fail(f"max_channels must be a number >= 8, got {max_channels!r}")
    if len(issues) > count:
        return None
    return float(depth), float(width), int(max_channels) if max_channels is not None else None


def _resolve(raw: Any, index: int, where: str, issues: list[ValidationIssue]) -> int | None:
    if not _is_int(raw):
        issues.append(ValidationIssue(message=f"{where}: from {raw!r} must be an integer layer index"))
        return None
    if index == 0:
        if raw != -1:
            issues.append(ValidationIssue(message=f"{where}: the first layer must take the image, from -1"))
            return None
        return -1
    target = index + raw if raw < 0 else raw
    if raw < 0 and target < 0:
        issues.append(ValidationIssue(message=f"{where}: from {raw} points before the first layer"))
        return None
    if target >= index:
        what = "at the layer itself" if target == index else "forward"
        issues.append(ValidationIssue(message=f"{where}: from {raw} points {what} (only earlier layers, index < {index})"))
        return None
    return target


def parse(text: str) -> tuple[Spec | None, list[ValidationIssue]]:
    """The spec of a model YAML, or None and the issues (syntax, keys, row form, ``from``)."""
    data, issues = load_yaml(text)
    if data is None:
        return None, issues
    unknown = [str(k) for k in data if k not in TOP_KEYS]
    if unknown:
        issues.append(ValidationIssue(message=f"unknown top-level keys {', '.join(unknown)} (allowed: {', '.join(TOP_KEYS)})"))
    nc = data.get("nc")
    if not _is_int(nc) or nc < 1:
        issues.append(ValidationIssue(message=f"nc must be a positive integer, got {nc!r}"))
    multiples = _multiples(data, issues)
    rows: list[tuple[str, Any]] = []
    for section in ("backbone", "head"):
        block = data.get(section)
        if not isinstance(block, list) or not block:
            issues.append(ValidationIssue(message=f"{section} must be a non-empty list of [from, repeats, module, args] rows"))
            continue
        rows.extend((section, row) for row in block)
    if issues:
        return None, issues
    layers: list[Layer] = []
    for index, (section, row) in enumerate(rows):
        where = f"{section} layer {index}"
        if not (isinstance(row, list) and len(row) == 4):
            issues.append(ValidationIssue(message=f"{where}: expected [from, repeats, module, args], got {row!r}"))
            continue
        raw_from, repeats, module, args = row
        if not isinstance(module, str):
            issues.append(ValidationIssue(message=f"{where}: module must be a name, got {module!r}"))
            continue
        where = f"{where} ({module})"
        if isinstance(raw_from, list):
            resolved = [_resolve(f, index, where, issues) for f in raw_from]
            source: int | tuple[int, ...] | None = None if None in resolved else tuple(r for r in resolved if r is not None)
        else:
            source = _resolve(raw_from, index, where, issues)
        if not _is_int(repeats) or repeats < 1:
            issues.append(ValidationIssue(message=f"{where}: repeats must be a positive integer, got {repeats!r}"))
        if not isinstance(args, list):
            issues.append(ValidationIssue(message=f"{where}: args must be a list, got {args!r}"))
        if source is None or not _is_int(repeats) or not isinstance(args, list):
            continue
        layers.append(Layer(source, repeats, module, tuple(args)))
    if issues or multiples is None:
        return None, issues
    depth, width, max_channels = multiples
    return Spec(nc, depth, width, max_channels, len(data["backbone"]), tuple(layers)), []


# -- checking --------------------------------------------------------------------------------


# Blocks with a channel argument: (name, default or REQUIRED, allowed values or None) per argument.
REQUIRED = object()
ARGS: dict[str, tuple[tuple[str, Any, tuple[Any, ...] | None], ...]] = {
    "Conv": (("channels", REQUIRED, None), ("kernel", 1, KERNELS["Conv"]), ("stride", 1, STRIDES)),
    "C2f": (("channels", REQUIRED, None), ("shortcut", False, (True, False))),
    "SPPF": (("channels", REQUIRED, None), ("pooling kernel", 5, KERNELS["SPPF"])),
    "SCDown": (("channels", REQUIRED, None), ("kernel", REQUIRED, KERNELS["SCDown"]), ("stride", REQUIRED, STRIDES)),
    "PSA": (("channels", REQUIRED, None),),
}


def _normal_args(layer: Layer, where: str, issues: list[ValidationIssue]) -> tuple[Any, ...] | None:
    """The args in full canonical form (defaults written out), or None with an issue."""
    module, args = layer.module, list(layer.args)

    def bad(message: str) -> None:
        issues.append(ValidationIssue(message=f"{where}: args {list(layer.args)!r}: {message}"))

    if module in ARGS:
        rules = ARGS[module]
        required = sum(default is REQUIRED for _, default, _ in rules)
        if not required <= len(args) <= len(rules):
            return bad(f"{module} takes [{', '.join(name for name, _, _ in rules)}]" + (
                " (channels equal to its input's)" if module == "PSA" else ""))
        full = args + [default for _, default, _ in rules[len(args):]]
        if not _is_int(full[0]) or full[0] < 1:
            return bad("the first argument is the output channels, a positive integer")
        for (name, _, allowed), value in zip(rules[1:], full[1:], strict=True):
            boolean = allowed == (True, False)
            if (isinstance(value, bool) != boolean) or value not in allowed:  # type: ignore[operator]
                choices = "True or False" if boolean else f"in {', '.join(map(str, allowed or ()))}"
                return bad(f"{name} {value!r} must be {choices}" if boolean else f"{name} {value!r} not {choices}")
        return tuple(full)
    if module == "nn.Upsample":
        if len(args) != 3 or args[0] not in (None, "None") or args[1] != 2 or args[2] not in UPSAMPLE_MODES:
            return bad(f"nn.Upsample takes [None, 2, mode] with mode one of {', '.join(UPSAMPLE_MODES)}")
        return ("None", 2, args[2])
    if module == "Concat":
        return (1,) if args == [1] else bad("Concat takes [1] (concatenate channels)")
    if module == "Detect":
        if len(args) != 1 or not (args[0] == "nc" or (_is_int(args[0]) and args[0] >= 1)):
            return bad("Detect takes [nc]")
        return ("nc",)
    return None


def analyze(spec: Spec, mode: str, issues: list[ValidationIssue]) -> tuple[Spec, list[Shape]]:
    """Check every layer and compute its output stride and channels; returns the spec with
    canonical args (defaults written, channels capped at max_channels) and the shapes."""
    allowed = MODES[mode]
    shapes: list[Shape] = []
    layers: list[Layer] = []
    input_shape = Shape(1, 3)
    last = len(spec.layers) - 1
    for index, layer in enumerate(spec.layers):
        where = spec.where(index)
        if layer.module not in allowed:
            other = " (only in mode yolov8*)" if layer.module in MODULES_STAR else ""
            issues.append(ValidationIssue(
                message=f"{where}: unknown module {layer.module!r}{other}; allowed in {mode}: {', '.join(allowed)}"))
            return spec, shapes
        multi = layer.module in ("Concat", "Detect")
        if multi != isinstance(layer.source, tuple):
            need = "a list of layers" if multi else "a single layer index"
            issues.append(ValidationIssue(message=f"{where}: from must be {need}"))
            return spec, shapes
        if layer.repeats > 1 and layer.module != "C2f":
            issues.append(ValidationIssue(message=f"{where}: repeats {layer.repeats}; only C2f repeats (use 1)"))
        if layer.repeats > MAX_REPEATS:
            issues.append(ValidationIssue(message=f"{where}: repeats {layer.repeats} > {MAX_REPEATS}", kind="limit"))
        args = _normal_args(layer, where, issues)
        if args is None:
            return spec, shapes
        if layer.channels is not None and spec.max_channels:
            args = (min(args[0], spec.max_channels), *args[1:])
        inputs = [shapes[j] if j >= 0 else input_shape for j in layer.sources()]
        first = inputs[0]
        out = scaled_channels(spec, args[0]) if layer.channels is not None else first.channels
        if out > MAX_SCALED_CHANNELS:
            issues.append(ValidationIssue(message=f"{where}: {out} channels > {MAX_SCALED_CHANNELS}", kind="limit"))
        stride = first.stride
        if layer.module in ("Conv", "SCDown"):
            stride = first.stride * args[2]
        elif layer.module == "nn.Upsample":
            if first.stride < 2:
                issues.append(ValidationIssue(message=f"{where}: upsamples above the input resolution"))
            stride = max(1, first.stride // 2)
        elif layer.module == "PSA":
            hidden, heads = psa_heads(first.channels)
            if out != first.channels:
                issues.append(ValidationIssue(message=(
                    f"{where}: PSA keeps its channels: {first.channels} in, {out} out (args[0] {args[0]} scales to "
                    f"{out}); write the input layer's channel argument"), kind="channels"))
            elif hidden % heads:
                issues.append(ValidationIssue(message=(
                    f"{where}: PSA on {first.channels} channels: {hidden} hidden channels do not split into "
                    f"{heads} heads"), kind="channels"))
        elif layer.module == "Concat":
            strides = [s.stride for s in inputs]
            if len(inputs) < 2 or len(set(strides)) != 1:
                issues.append(ValidationIssue(message=(
                    f"{where}: Concat inputs {list(layer.sources())} have strides {strides}; they must be equal "
                    f"(two or more inputs)"), kind="channels"))
            out = sum(s.channels for s in inputs)
        elif layer.module == "Detect":
            strides = [s.stride for s in inputs]
            if index != last:
                issues.append(ValidationIssue(message=f"{where}: Detect must be the last layer"))
            if strides != DETECT_STRIDES:
                issues.append(ValidationIssue(message=(
                    f"{where}: Detect inputs {list(layer.sources())} have strides {strides}; expected P3/P4/P5 = "
                    f"{', '.join(map(str, DETECT_STRIDES))}"), kind="channels"))
        if stride > MAX_STRIDE:
            issues.append(ValidationIssue(message=f"{where}: stride {stride} > {MAX_STRIDE} (P5 is the deepest level)"))
        shapes.append(Shape(stride, out))
        layers.append(replace(layer, args=args))
    if spec.layers[-1].module != "Detect":
        issues.append(ValidationIssue(message="the head must end with a Detect layer: [[P3, P4, P5], 1, Detect, [nc]]"))
    if spec.backbone >= len(spec.layers):
        issues.append(ValidationIssue(message="the head is empty"))
    return replace(spec, layers=tuple(layers)), shapes


def check(text: str, mode: str) -> tuple[Spec | None, list[Shape], list[ValidationIssue]]:
    """Parse and check; returns the canonical spec and shapes when there is no issue."""
    spec, issues = parse(text)
    if spec is None:
        return None, [], issues
    spec, shapes = analyze(spec, mode, issues)
    return (None, [], issues) if issues else (spec, shapes, [])


def check_spec(spec: Spec, mode: str) -> tuple[Spec | None, list[Shape], list[ValidationIssue]]:
    issues: list[ValidationIssue] = []
    spec, shapes = analyze(spec, mode, issues)
    return (None, [], issues) if issues else (spec, shapes, [])


# -- writing ---------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, str):
        return value if value in ("None", "nc") or value.startswith("nn.") or value.isidentifier() else repr(value)
    return str(value)


def _source(layer: Layer, index: int) -> str:
    def one(j: int) -> str:
        return "-1" if j == index - 1 or j == -1 else str(j)

    if isinstance(layer.source, tuple):  # -1 only in first place (ultralytics' style: [-1, 6], [15, 18, 21])
        return "[" + ", ".join(one(j) if k == 0 else str(j) for k, j in enumerate(layer.source)) + "]"
    return one(layer.source)


def render(spec: Spec, shapes: list[Shape] | None = None) -> str:
    """The canonical text; with ``shapes``, each row carries a comment (index, level, channels)."""
    lines = [f"nc: {spec.nc}", f"depth_multiple: {_scalar(spec.depth)}", f"width_multiple: {_scalar(spec.width)}"]
    if spec.max_channels:
        lines.append(f"max_channels: {spec.max_channels}")
    for section, start, stop in (("backbone", 0, spec.backbone), ("head", spec.backbone, len(spec.layers))):
        lines.append(f"{section}:")
        if section == "backbone":
            lines.append("  # [from, repeats, module, args]")
        for index in range(start, stop):
            layer = spec.layers[index]
            args = ", ".join(_scalar(a) if a != "nearest" and a != "bilinear" else f'"{a}"' for a in layer.args)
            row = f"  - [{_source(layer, index)}, {layer.repeats}, {layer.module}, [{args}]]"
            if shapes and layer.module == "Detect":
                levels = ", ".join(f"P{int(math.log2(shapes[j].stride))}" for j in layer.sources())
                row += f"  # {index}: Detect({levels})"
            elif shapes:
                shape = shapes[index]
                row += f"  # {index}: P{int(math.log2(shape.stride))}/{shape.stride}, {shape.channels} ch"
            lines.append(row)
    return "\n".join(lines) + "\n"
