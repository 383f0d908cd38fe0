"""The yolo space's rule tool (LLMasTool's "LLM as a tool"): every valid edit of one operator.

A small model cannot write a 50-line model YAML with one change in it (Qwen2.5-Coder-0.5B copies
its parent); it can pick a numbered edit. :func:`enumerate_edits` runs an operator of
:mod:`yolo_mutation` with its options in their natural order (layer by layer, no shuffling, so no
run's rng is involved) and keeps each child that passes the static check, differs from the parent
and from the children listed before it. Each child comes with a :class:`TreeEdit` (the tree
space's edit record: operator, kind, path, before, after) read off the difference between parent
and child, so that the Generator's choice prompt (:mod:`archsmith.agents.tool_choice`) shows both
spaces' edits alike; an argument change is written ``name=value`` (``kernel=3 -> kernel=5``), so
that the model may set the same argument to another listed value.
"""

from __future__ import annotations

import random
from typing import Any

from archsmith.tools.spaces.tree_model import TreeEdit
from archsmith.tools.spaces.yolo_mutation import OPERATORS, operator_names
from archsmith.tools.spaces.yolo_yaml import Layer, Shape, Spec, check_spec, scaled_repeats

# Names of the written arguments, per module (what ``name=value`` calls them).
ARG_NAMES: dict[str, tuple[str, ...]] = {
    "Conv": ("channels", "kernel", "stride"),
    "C2f": ("channels", "shortcut"),
    "SPPF": ("channels", "pooling_kernel"),
    "nn.Upsample": ("size", "scale", "mode"),
    "SCDown": ("channels", "kernel", "stride"),
    "PSA": ("channels",),
}


class _InOrder(random.Random):
    """An rng whose shuffle keeps the order: the operators then yield their options as listed."""

    def shuffle(self, x: Any, *args: Any) -> None:  # noqa: D102
        return None


def _row(layer: Layer) -> str:
    return f"{layer.module} [{', '.join(map(str, layer.args))}]"


def describe_change(spec: Spec, child: Spec, operator: str) -> TreeEdit:
    """The edit that turns ``spec`` into ``child`` (one operator's change), as a :class:`TreeEdit`."""
    def edit(path: str, before: str, after: str) -> TreeEdit:
        return TreeEdit(operator=operator, kind=operator, path=path, before=before, after=after)

    if len(child.layers) == len(spec.layers) + 1:  # an inserted layer (insert_psa)
        at = next(i for i in range(len(child.layers))
                  if i == len(spec.layers) or child.layers[i].module != spec.layers[i].module)
        before = _row(spec.layers[at - 1])
        return edit(spec.where(at - 1), before, f"{before} + {_row(child.layers[at])}")
    changed = [i for i, (a, b) in enumerate(zip(spec.layers, child.layers, strict=True)) if a != b]
    if len(changed) == 2 and changed[1] == changed[0] + 1 and operator == "reorder":
        i, j = changed
        return edit(f"{spec.section(i)} layers {i} and {j}", f"{_row(spec.layers[i])}, {_row(spec.layers[j])}",
                    f"{_row(child.layers[i])}, {_row(child.layers[j])}")
    i = changed[0]  # width may change a following PSA too: the first change names the edit
    old, new = spec.layers[i], child.layers[i]
    if old.module != new.module:
        return edit(spec.where(i), _row(old), _row(new))
    if old.repeats != new.repeats:
        return edit(spec.where(i), f"bottlenecks={scaled_repeats(spec, old.repeats)}",
                    f"bottlenecks={scaled_repeats(child, new.repeats)}")
    names = ARG_NAMES.get(old.module, ())
    args = [k for k, (a, b) in enumerate(zip(old.args, new.args, strict=False)) if a != b]
    if len(args) == 1 and args[0] < len(names):
        name = names[args[0]]
        return edit(spec.where(i), f"{name}={old.args[args[0]]}", f"{name}={new.args[args[0]]}")
    return edit(spec.where(i), _row(old), _row(new))


def enumerate_edits(spec: Spec, shapes: list[Shape], operator: str, mode: str
                    ) -> list[tuple[Spec, list[Shape], TreeEdit, str]]:
    """Every valid edit of ``operator`` in a fixed order: (child, its shapes, the edit, the
    operator's own description). ValueError for an operator the mode does not have."""
    if operator not in operator_names(mode):
        raise ValueError(f"unknown operator {operator!r} for mode {mode} (known: {', '.join(operator_names(mode))})")
    found: list[tuple[Spec, list[Shape], TreeEdit, str]] = []
    seen: set[Spec] = {spec}
    for child, description in OPERATORS[operator](spec, shapes, _InOrder()):
        checked, child_shapes, _ = check_spec(child, mode)
        if checked is None or checked in seen:
            continue
        seen.add(checked)
        found.append((checked, child_shapes, describe_change(spec, checked, operator), description))
    return found
