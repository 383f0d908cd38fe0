"""Mutation, counting, shrinking and repair of YOLO model specs (pure functions, no torch).

Each operator lists the edits it could make, in an order drawn from ``rng``; the first edit whose
result passes the static check (strides, channels, Detect on P3/P4/P5) is the child. An operator
with no valid edit raises :class:`NotApplicable` ("operator X does not apply: ..."), which the
space turns into a ValueError, or (operator chosen by ``rng``) moves on to another operator.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from archsmith.tools.spaces.yolo_yaml import (
    KERNELS,
    MAX_REPEATS,
    MODULES_STAR,
    REG_MAX,
    UPSAMPLE_MODES,
    Layer,
    Shape,
    Spec,
    check_spec,
    load_yaml,
    psa_heads,
    scaled_channels,
    scaled_repeats,
    strip_fences,
)

Edit = tuple[Spec, str]
Operator = Callable[[Spec, list[Shape], random.Random], Iterator[Edit]]
WIDTH_FACTORS = (0.5, 0.75, 1.25, 1.5)
PSA_MIN_STRIDE = 16  # attention over the positions of P4 and P5 only (cost grows with positions^2)


class NotApplicable(ValueError):
    """An operator that has no valid edit on this candidate."""


def _with_layer(spec: Spec, index: int, **changes: Any) -> Spec:
    layers = list(spec.layers)
    layers[index] = replace(layers[index], **changes)
    return replace(spec, layers=tuple(layers))


def _shuffled(items: list[Any], rng: random.Random) -> list[Any]:
    items = list(items)
    rng.shuffle(items)
    return items


def insert_layer(spec: Spec, at: int, layer: Layer, redirect: int | None = None) -> Spec:
    """Insert ``layer`` at index ``at`` (into the backbone when ``at`` < its length). Later
    references shift by one; with ``redirect``, later layers that read ``redirect`` read the new
    layer instead (it then sits between ``redirect`` and all its consumers)."""

    def shift(j: int, consumer: int) -> int:
        if redirect is not None and j == redirect and consumer > at:
            return at
        return j + 1 if j >= at else j

    layers: list[Layer] = []
    for index, old in enumerate(spec.layers):
        new_index = index + 1 if index >= at else index
        source = old.source
        source = tuple(shift(j, new_index) for j in source) if isinstance(source, tuple) else shift(source, new_index)
        layers.append(replace(old, source=source))
    layers.insert(at, layer)
    return replace(spec, layers=tuple(layers), backbone=spec.backbone + (1 if at < spec.backbone else 0))


def op_repeat_block(spec: Spec, shapes: list[Shape], rng: random.Random) -> Iterator[Edit]:
    options = []
    for i, layer in enumerate(spec.layers):
        if layer.module != "C2f":
            continue
        now = scaled_repeats(spec, layer.repeats)
        for target in (now - 1, now + 1):
            raw = next((r for r in range(1, MAX_REPEATS + 1) if scaled_repeats(spec, r) == target), None)
            if target >= 1 and raw is not None:
                options.append((i, raw, now, target))
    for i, raw, now, target in _shuffled(options, rng):
        yield (_with_layer(spec, i, repeats=raw),
               f"repeat_block: {spec.where(i)} repeats {spec.layers[i].repeats} -> {raw} ({now} -> {target} bottlenecks)")


def op_replace_block(spec: Spec, shapes: list[Shape], rng: random.Random) -> Iterator[Edit]:
    options = []
    for i, layer in enumerate(spec.layers):
        c2 = layer.channels
        if layer.module == "C2f":
            options.append((i, Layer(layer.source, 1, "Conv", (c2, 3, 1))))
        elif layer.module == "Conv" and layer.args[2] == 1:
            options.append((i, Layer(layer.source, 1, "C2f", (c2, i < spec.backbone))))
        elif layer.module == "SCDown":
            options.append((i, Layer(layer.source, 1, "Conv", (c2, 3, layer.args[2]))))
        elif layer.module == "PSA":
            options.append((i, Layer(layer.source, 1, "C2f", (c2, True))))
    for i, new in _shuffled(options, rng):
        child = _with_layer(spec, i, repeats=new.repeats, module=new.module, args=new.args)
        yield child, f"replace_block: {spec.where(i)} {list(spec.layers[i].args)} -> {new.module} {list(new.args)}"


def op_reorder(spec: Spec, shapes: list[Shape], rng: random.Random) -> Iterator[Edit]:
    options = []
    for i in range(spec.backbone - 1):
        a, b = spec.layers[i], spec.layers[i + 1]
        if a.source == i - 1 and b.source == i and (a.module, a.args, a.repeats) != (b.module, b.args, b.repeats):
            options.append(i)
    for i in _shuffled(options, rng):
        a, b = spec.layers[i], spec.layers[i + 1]
        layers = list(spec.layers)
        layers[i], layers[i + 1] = replace(b, source=i - 1), replace(a, source=i)
        yield replace(spec, layers=tuple(layers)), f"reorder: swapped backbone layers {i} ({a.module}) and {i + 1} ({b.module})"


def op_reparameterize(spec: Spec, shapes: list[Shape], rng: random.Random) -> Iterator[Edit]:
    options: list[tuple[int, tuple[Any, ...], str]] = []
    for i, layer in enumerate(spec.layers):
        args = layer.args
        if layer.module == "C2f":
            options.append((i, (args[0], not args[1]), f"shortcut {args[1]} -> {not args[1]}"))
        elif layer.module in ("Conv", "SCDown"):
            options += [(i, (args[0], k, args[2]), f"kernel {args[1]} -> {k}") for k in KERNELS[layer.module] if k != args[1]]
        elif layer.module == "SPPF":
            options += [(i, (args[0], k), f"pooling kernel {args[1]} -> {k}") for k in KERNELS["SPPF"] if k != args[1]]
        elif layer.module == "nn.Upsample":
            options += [(i, (args[0], 2, m), f"mode {args[2]} -> {m}") for m in UPSAMPLE_MODES if m != args[2]]
    for i, args, change in _shuffled(options, rng):
        yield _with_layer(spec, i, args=args), f"reparameterize: {spec.where(i)} {change}"


def _unit(spec: Spec) -> int:
    """The step of written channels that moves the scaled width by 8."""
    return max(1, round(8 / spec.width))


def op_width(spec: Spec, shapes: list[Shape], rng: random.Random) -> Iterator[Edit]:
    options = []
    unit = _unit(spec)
    for i, layer in enumerate(spec.layers):
        if layer.module not in ("Conv", "C2f", "SPPF", "SCDown"):
            continue
        for factor in WIDTH_FACTORS:
            raw = max(unit, round(layer.args[0] * factor / unit) * unit)
            if spec.max_channels:
                raw = min(raw, spec.max_channels)
            if scaled_channels(spec, raw) != shapes[i].channels:
                options.append((i, raw, factor))
    for i, raw, factor in _shuffled(options, rng):
        child = _with_layer(spec, i, args=(raw, *spec.layers[i].args[1:]))
        for j, layer in enumerate(child.layers):  # a PSA keeps its channels: it follows its input
            if layer.module == "PSA" and layer.source == i:
                child = _with_layer(child, j, args=(raw,))
        old, new = shapes[i].channels, scaled_channels(spec, raw)
        yield child, f"width: {spec.where(i)} channels x{factor}: {spec.layers[i].args[0]} -> {raw} ({old} -> {new} after width_multiple)"


def op_insert_scdown(spec: Spec, shapes: list[Shape], rng: random.Random) -> Iterator[Edit]:
    options = [i for i, layer in enumerate(spec.layers) if layer.module == "Conv" and layer.args[2] == 2]
    for i in _shuffled(options, rng):
        c2 = spec.layers[i].args[0]
        yield (_with_layer(spec, i, module="SCDown", args=(c2, 3, 2)),
               f"insert_scdown: {spec.where(i)} stride-2 Conv -> SCDown [{c2}, 3, 2]")


def op_insert_psa(spec: Spec, shapes: list[Shape], rng: random.Random) -> Iterator[Edit]:
    options = []
    for j in range(spec.backbone):
        layer = spec.layers[j]
        follower = spec.layers[j + 1] if j + 1 < len(spec.layers) else None
        if (layer.channels is not None and layer.module != "PSA" and shapes[j].stride >= PSA_MIN_STRIDE
                and not (follower is not None and follower.module == "PSA" and follower.source == j)):
            options.append(j)
    for j in _shuffled(options, rng):
        new = Layer(j, 1, "PSA", (spec.layers[j].args[0],))
        yield (insert_layer(spec, j + 1, new, redirect=j),
               f"insert_psa: PSA after {spec.where(j)} (P{shapes[j].stride.bit_length() - 1}, {shapes[j].channels} ch); "
               f"layers reading {j} now read the PSA at {j + 1}")


OPERATORS: dict[str, Operator] = {
    "repeat_block": op_repeat_block,
    "replace_block": op_replace_block,
    "reorder": op_reorder,
    "reparameterize": op_reparameterize,
    "width": op_width,
    "insert_scdown": op_insert_scdown,
    "insert_psa": op_insert_psa,
}
STAR_ONLY = ("insert_scdown", "insert_psa")
LOCAL_OPERATORS = ("reparameterize", "repeat_block", "width")


def operator_names(mode: str) -> list[str]:
    return [name for name in OPERATORS if mode == "yolov8*" or name not in STAR_ONLY]


def apply_operator(spec: Spec, shapes: list[Shape], name: str, rng: random.Random, mode: str) -> tuple[Spec, list[Shape], str]:
    """The first valid edit of operator ``name`` (NotApplicable when there is none)."""
    if name not in operator_names(mode):
        known = ", ".join(operator_names(mode))
        raise ValueError(f"unknown operator {name!r} for mode {mode} (known: {known})")
    tried = 0
    for child, description in OPERATORS[name](spec, shapes, rng):
        tried += 1
        checked, child_shapes, _ = check_spec(child, mode)
        if checked is not None and checked != spec:
            return checked, child_shapes, description
    reason = f"none of its {tried} possible edits keeps a valid model" if tried else "nothing to edit in this model"
    raise NotApplicable(f"operator {name} does not apply: {reason}")


# -- counting (exact params, as the built model has them; used by shrink) -----------------------


def _conv(c1: int, c2: int, k: int = 1, groups: int = 1) -> int:
    """Parameters of ultralytics' Conv: a bias-free convolution plus BatchNorm (weight, bias)."""
    return c1 // groups * c2 * k * k + 2 * c2


def layer_params(spec: Spec, shapes: list[Shape], index: int, nc: int) -> int:
    layer = spec.layers[index]
    c1 = shapes[layer.sources()[0]].channels if layer.sources()[0] >= 0 else 3
    c2 = shapes[index].channels
    if layer.module == "Conv":
        return _conv(c1, c2, layer.args[1])
    if layer.module == "C2f":
        c, n = int(c2 * 0.5), scaled_repeats(spec, layer.repeats)
        return _conv(c1, 2 * c) + _conv((2 + n) * c, c2) + n * 2 * _conv(c, c, 3)
    if layer.module == "SPPF":
        return _conv(c1, c1 // 2) + _conv(c1 // 2 * 4, c2)
    if layer.module == "SCDown":
        return _conv(c1, c2) + _conv(c2, c2, layer.args[1], groups=c2)
    if layer.module == "PSA":
        c, heads = psa_heads(c1)
        qkv = c + 2 * int(c // heads * 0.5) * heads
        attention = _conv(c, qkv) + _conv(c, c) + _conv(c, c, 3, groups=c)
        return _conv(c1, 2 * c) + _conv(2 * c, c1) + attention + _conv(c, 2 * c) + _conv(2 * c, c)
    if layer.module == "Detect":
        return REG_MAX + sum(detect_level_params(spec, shapes, index, nc))  # + the DFL's fixed 1x1 conv
    return 0


def detect_level_params(spec: Spec, shapes: list[Shape], index: int, nc: int) -> list[int]:
    """Parameters of the Detect head's box and class branches, per input level."""
    channels = [shapes[j].channels for j in spec.layers[index].sources()]
    box, cls = max(16, channels[0] // 4, REG_MAX * 4), max(channels[0], min(nc, 100))
    return [
        _conv(x, box, 3) + _conv(box, box, 3) + box * 4 * REG_MAX + 4 * REG_MAX
        + _conv(x, cls, 3) + _conv(cls, cls, 3) + cls * nc + nc
        for x in channels
    ]


def param_count(spec: Spec, shapes: list[Shape], nc: int | None = None) -> int:
    """Exact parameter count of the built model (what ultralytics' ``model.info()`` prints)."""
    classes = nc if nc is not None else spec.nc
    return sum(layer_params(spec, shapes, i, classes) for i in range(len(spec.layers)))


def conv_macs(spec: Spec, shapes: list[Shape], imgsz: int, nc: int | None = None) -> int:
    """Approximate multiply-accumulates: each layer's parameters times its output positions
    (exact for the convolutions; ignores BatchNorm, pooling, upsampling and attention products)."""
    classes = nc if nc is not None else spec.nc
    total = 0
    for index, layer in enumerate(spec.layers):
        if layer.module == "Detect":
            levels = detect_level_params(spec, shapes, index, classes)
            total += sum(p * (imgsz // shapes[j].stride) ** 2 for p, j in zip(levels, layer.sources(), strict=True))
        else:
            total += layer_params(spec, shapes, index, classes) * (imgsz // shapes[index].stride) ** 2
    return total


def weight_layers(spec: Spec) -> int:
    """Convolutions a training-mode forward runs (what the sandbox check's hooks count)."""
    per_module = {"Conv": 1, "SPPF": 2, "SCDown": 2, "PSA": 7}
    total = 0
    for layer in spec.layers:
        if layer.module == "C2f":
            total += 2 + 2 * scaled_repeats(spec, layer.repeats)
        elif layer.module == "Detect":
            total += 6 * len(layer.sources())
        else:
            total += per_module.get(layer.module, 0)
    return total


# -- shrinking -------------------------------------------------------------------------------


def _fit_width(spec: Spec, target: float, mode: str) -> tuple[Spec, list[Shape]] | None:
    """The largest width_multiple (4 decimals, <= the current one) under ``target`` params."""
    best = None
    low, high = 0.0, spec.width
    for _ in range(20):
        mid = round((low + high) / 2, 4)
        if mid <= 0 or mid in (low, high):
            break
        checked, shapes, _ = check_spec(replace(spec, width=mid), mode)
        if checked is not None and param_count(checked, shapes) <= target:
            low, best = mid, (checked, shapes)
        else:
            high = mid
    return best


def shrink_spec(spec: Spec, shapes: list[Shape], factor: float, rng: random.Random, mode: str) -> tuple[Spec, str]:
    """About ``factor`` times the parameters: lower depth_multiple (chosen by ``rng``, when some
    C2f repeats), then the largest width_multiple that fits."""
    if not 0 < factor < 1:
        raise ValueError(f"shrink factor must be in (0, 1), got {factor}")
    base = param_count(spec, shapes)
    target = base * factor
    current, current_shapes, steps = spec, shapes, []
    if rng.random() < 0.5 and any(layer.module == "C2f" and scaled_repeats(spec, layer.repeats) > 1 for layer in spec.layers):
        depth = round(spec.depth * max(factor, 0.5), 4)
        checked, checked_shapes, _ = check_spec(replace(spec, depth=depth), mode)
        if checked is not None:
            current, current_shapes = checked, checked_shapes
            steps.append(f"depth_multiple {spec.depth} -> {depth}")
    if param_count(current, current_shapes) > target:
        fitted = _fit_width(current, target, mode)
        if fitted is None:
            raise ValueError(f"cannot shrink to x{factor:.2f}: no width_multiple reaches {int(target)} params")
        current, current_shapes = fitted
        steps.append(f"width_multiple {spec.width} -> {current.width}")
    after = param_count(current, current_shapes)
    return current, f"shrink x{factor:.2f}: params {base} -> {after} ({', '.join(steps) or 'no change'})"


# -- repair ----------------------------------------------------------------------------------

_ALIASES = {name.lower(): name for name in MODULES_STAR} | {
    "upsample": "nn.Upsample", "torch.nn.upsample": "nn.Upsample", "nn.upsample": "nn.Upsample",
}


def _repair_row(row: list[Any]) -> list[Any]:
    source, repeats, module, args = row
    module = _ALIASES.get(str(module).lower(), module)
    args = list(args) if isinstance(args, (list, tuple)) else [args]
    valid_count = isinstance(repeats, int) and not isinstance(repeats, bool)
    repeats = max(1, min(repeats, MAX_REPEATS)) if module == "C2f" and valid_count else 1
    if module == "Detect":
        args = ["nc"]
    elif module == "Concat":
        args = [1]
    elif module == "nn.Upsample":
        args = ["None", 2, args[2] if len(args) == 3 and args[2] in UPSAMPLE_MODES else "nearest"]
    elif module in ("Conv", "SCDown") and len(args) >= 2 and isinstance(args[1], int):
        args[1] = min(max(args[1] | 1, 1), 7)  # odd kernels only
        if len(args) >= 3 and isinstance(args[2], int):
            args[2] = min(max(args[2], 1), 2)
    return [source, repeats, module, args]


def repair_dict(data: dict[str, Any], defaults: tuple[float, float, int]) -> dict[str, Any]:
    """Row and key fixes on a loaded YAML dict (module names, repeats, fixed args, multiples)."""
    fixed = {k: v for k, v in data.items() if k in ("nc", "depth_multiple", "width_multiple", "max_channels",
                                                   "scales", "scale", "backbone", "head")}
    if "scales" not in fixed and not ("depth_multiple" in fixed and "width_multiple" in fixed):
        fixed.setdefault("depth_multiple", defaults[0])
        fixed.setdefault("width_multiple", defaults[1])
        fixed.setdefault("max_channels", defaults[2])
    if not isinstance(fixed.get("nc"), int) or isinstance(fixed.get("nc"), bool) or fixed["nc"] < 1:
        fixed["nc"] = 80
    for section in ("backbone", "head"):
        rows = fixed.get(section)
        if isinstance(rows, list):
            fixed[section] = [_repair_row(r) if isinstance(r, list) and len(r) == 4 else r for r in rows]
    return fixed


def repair_psa(spec: Spec) -> Spec:
    """Give every PSA its input's written channels (a PSA keeps its channel count)."""
    for i, layer in enumerate(spec.layers):
        if layer.module == "PSA" and not isinstance(layer.source, tuple) and layer.source >= 0:
            before = spec.layers[layer.source].channels
            if before is not None and layer.args and before != layer.args[0]:
                spec = _with_layer(spec, i, args=(before,))
    return spec


def load_for_repair(text: str) -> dict[str, Any] | None:
    data, _ = load_yaml(strip_fences(text))
    return data
