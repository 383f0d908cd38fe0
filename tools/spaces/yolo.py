"""The YOLOv8 detection search space of PhaseNAS (section 2.2): candidates are ultralytics model YAMLs.

Settings (``space.settings``): ``base`` (``yolov8n`` or ``yolov8s``: the seed and the budget the
search keeps to), ``mode`` (``yolov8+``: reorder, repeat, replace and re-parameterize the
YOLOv8 blocks Conv, C2f, SPPF, nn.Upsample, Concat, Detect; ``yolov8*``: also SCDown and PSA),
``nc`` (classes written in the seed), ``imgsz`` (the image size budgets refer to) and
``llm_answer`` (what the ``llm`` Generator asks the model for: ``edit``, the number of one of
:meth:`YoloSpace.edit_options`'s valid edits, which a 0.5B model manages; ``yaml``, PhaseNAS's
complete child YAML, for larger models).

Reading, checking and mutating texts is pure Python (:mod:`yolo_yaml`, :mod:`yolo_mutation`);
only :meth:`YoloSpace.build` needs ultralytics (``pip install 'archsmith[detection]'``), and it
is imported there, inside the sandbox.
"""

from __future__ import annotations

import random
import re
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from archsmith.tools.spaces.base import Mutation, Validation, register_space
from archsmith.tools.spaces.tree_model import TreeEdit
from archsmith.tools.spaces.yolo_edits import enumerate_edits
from archsmith.tools.spaces.yolo_mutation import (
    LOCAL_OPERATORS,
    NotApplicable,
    apply_operator,
    conv_macs,
    load_for_repair,
    operator_names,
    param_count,
    repair_dict,
    repair_psa,
    shrink_spec,
    weight_layers,
)
from archsmith.tools.spaces.yolo_yaml import (
    DETECT_STRIDES,
    KERNELS,
    MAX_REPEATS,
    MODES,
    Shape,
    Spec,
    check,
    check_spec,
    parse,
    render,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

# Ultralytics' yolov8.yaml (cfg/models/v8), one scale written out as multiples.
BASE_SCALES = {"yolov8n": (0.33, 0.25, 1024), "yolov8s": (0.33, 0.50, 1024)}
# Figures at nc=80, imgsz=640 from ultralytics' model.info(): params, GFLOPs (= 2 x thop MACs, every
# layer counted). Counting convolutions only (profile_model's default) gives 8.744 / 28.603, the
# 8.7 G / 28.6 G of the PhaseNAS paper.
BASE_FIGURES = {"yolov8n": (3_157_200, 8.855), "yolov8s": (11_166_560, 28.812)}
YOLOV8_ROWS = """\
backbone:
  # [from, repeats, module, args]
  - [-1, 1, Conv, [64, 3, 2]] # 0-P1/2
  - [-1, 1, Conv, [128, 3, 2]] # 1-P2/4
  - [-1, 3, C2f, [128, True]]
  - [-1, 1, Conv, [256, 3, 2]] # 3-P3/8
  - [-1, 6, C2f, [256, True]]
  - [-1, 1, Conv, [512, 3, 2]] # 5-P4/16
  - [-1, 6, C2f, [512, True]]
  - [-1, 1, Conv, [1024, 3, 2]] # 7-P5/32
  - [-1, 3, C2f, [1024, True]]
  - [-1, 1, SPPF, [1024, 5]] # 9
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]] # cat backbone P4
  - [-1, 3, C2f, [512]] # 12
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 4], 1, Concat, [1]] # cat backbone P3
  - [-1, 3, C2f, [256]] # 15 (P3/8-small)
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 12], 1, Concat, [1]] # cat head P4
  - [-1, 3, C2f, [512]] # 18 (P4/16-medium)
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 9], 1, Concat, [1]] # cat head P5
  - [-1, 3, C2f, [1024]] # 21 (P5/32-large)
  - [[15, 18, 21], 1, Detect, [nc]] # Detect(P3, P4, P5)
"""


def base_yaml(base: str, nc: int = 80) -> str:
    """YOLOv8n/s as ultralytics defines it (yolov8.yaml with that scale), as a model YAML."""
    depth, width, max_channels = BASE_SCALES[base]
    return (
        f"# Ultralytics {base.replace('yolo', 'YOLO')} (yolov8.yaml, scale {base[-1]})\n"
        f"nc: {nc}\ndepth_multiple: {depth}\nwidth_multiple: {width}\nmax_channels: {max_channels}\n{YOLOV8_ROWS}"
    )


_SCALE_IN_NAME = re.compile(r"yolo(e-)?[v]?\d+([nslmx])")


def guess_model_scale(filename: str) -> str:
    """The scale letter (n, s, m, l, x) a model file's name gives, as ultralytics'
    ``guess_model_scale`` reads it (``yolov8n.yaml`` -> ``n``); "" when the name gives none."""
    match = _SCALE_IN_NAME.search(PurePath(filename).stem)
    return match.group(2) if match else ""


def with_scale_from_name(text: str, filename: str) -> str:
    """``text`` with ``scale:`` set from the file name when the YAML has a ``scales`` table and no
    ``scale`` (ultralytics' ``YOLO("yolov8n.yaml")`` builds yolov8.yaml at scale n); else ``text``."""
    import yaml

    scale = guess_model_scale(filename)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # validation names the syntax error
    if not (scale and isinstance(data, dict) and isinstance(data.get("scales"), dict)) or "scale" in data:
        return text
    if scale not in data["scales"]:
        return text  # validation lists the scales there are
    named = f"scale: {scale} # from the file name {PurePath(filename).name}, as ultralytics reads it\n{text}"
    try:
        if (yaml.safe_load(named) or {}).get("scale") == scale:
            return named
    except yaml.YAMLError:
        pass
    return yaml.safe_dump({"scale": scale, **data}, sort_keys=False)  # e.g. a flow-style document


class YoloSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: Literal["yolov8n", "yolov8s"] = Field("yolov8n", description="seed model and budget reference")
    mode: Literal["yolov8+", "yolov8*"] = Field("yolov8+", description="yolov8*: SCDown and PSA allowed too")
    nc: int = Field(80, ge=1, description="classes written in the seed YAML")
    imgsz: int = Field(640, ge=32, description="image size the budgets refer to")
    llm_answer: Literal["edit", "yaml"] = Field(
        "edit", description="what the llm Generator asks for: 'edit' (the number of a listed valid edit; small "
                            "models) or 'yaml' (the whole child YAML, PhaseNAS's way; large models)")

    @field_validator("imgsz")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"imgsz must be a multiple of 32 (the P5 stride), got {value}")
        return value


@register_space("yolo")
class YoloSpace:
    """Ultralytics YOLOv8 model YAMLs: validation, mutation, shrinking, repair and building."""

    name: ClassVar[str] = "yolo"
    file_suffix: ClassVar[str] = ".yaml"  # best/model.yaml, `archsmith export`
    # The verifier's execution check (archsmith.tools.spaces.check_task): a detector's outputs.
    check_task: ClassVar[str] = "archsmith.tools.detection_tasks:check_detection_candidate"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = YoloSettings.model_validate(settings or {})
        self.mode = self.settings.mode
        seed = base_yaml(self.settings.base, self.settings.nc)
        spec, shapes, issues = check(seed, self.mode)
        assert spec is not None, issues  # the shipped YAML is valid in both modes
        self._seed = render(spec, shapes)
        self._last_edits: tuple[tuple[str, str], list[tuple[str, TreeEdit, str]]] | None = None

    # -- reading ---------------------------------------------------------------------------

    def spec(self, text: str) -> tuple[Spec, list[Shape]]:
        """The canonical spec and per-layer shapes of a valid text; ValueError otherwise."""
        spec, shapes, issues = check(text, self.mode)
        if spec is None:
            raise ValueError(f"invalid model YAML: {Validation(ok=False, issues=issues).summary()}")
        return spec, shapes

    def validate(self, text: str) -> Validation:
        _, _, issues = check(text, self.mode)
        return Validation(ok=not issues, issues=issues)

    def canonical(self, text: str) -> str:
        """Normal form: comments, key order, spacing, default args and relative/absolute ``from``
        do not count; channels above max_channels are written capped (ultralytics caps them)."""
        spec, shapes, _ = check(text, self.mode)
        if spec is None:
            parsed, _ = parse(text)
            return render(parsed) if parsed is not None else "\n".join(line.rstrip() for line in text.strip().splitlines())
        return render(spec, shapes)

    def depth(self, text: str) -> int | None:
        """Convolutions a training forward runs (None for an invalid text: counted when it runs)."""
        spec, _, _ = check(text, self.mode)
        return weight_layers(spec) if spec is not None else None

    def param_count(self, text: str, num_classes: int | None = None) -> int:
        """Exact parameter count of :meth:`build`'s model, without building it."""
        spec, shapes = self.spec(text)
        return param_count(spec, shapes, num_classes)

    def conv_flops(self, text: str, num_classes: int | None = None) -> int:
        """Approximate FLOPs (2 x convolution MACs) at the settings' imgsz, without building."""
        spec, shapes = self.spec(text)
        return 2 * conv_macs(spec, shapes, self.settings.imgsz, num_classes)

    def reference_budget(self) -> dict[str, float]:
        """The base model's params and GFLOPs at nc=80 and imgsz 640 (ultralytics' model.info())."""
        params, gflops = BASE_FIGURES[self.settings.base]
        return {"params": params, "gflops": gflops, "imgsz": 640}

    # -- search ----------------------------------------------------------------------------

    def initial(self) -> list[str]:
        return [self._seed]

    def operators(self) -> list[str]:
        return operator_names(self.mode)

    def local_operators(self) -> list[str]:
        return list(LOCAL_OPERATORS)

    def mutate(self, text: str, rng: random.Random, operator: str | None = None) -> Mutation:
        """Apply ``operator`` (ValueError "operator X does not apply: ..." when it has no valid
        edit here) or, when None, the first operator of a shuffled list that applies."""
        spec, shapes = self.spec(text)
        names = [operator] if operator is not None else rng.sample(self.operators(), len(self.operators()))
        problems = []
        for name in names:
            try:
                child, child_shapes, description = apply_operator(spec, shapes, name, rng, self.mode)
            except NotApplicable as error:
                problems.append(str(error))
                continue
            return Mutation(child=render(child, child_shapes), operator=name, description=description)
        raise ValueError("; ".join(problems) if operator is not None else "no operator applies: " + "; ".join(problems))

    def offers_edit_choice(self) -> bool:
        """Whether the llm Generator picks one of :meth:`edit_options` (``llm_answer = "edit"``)
        rather than writing the child YAML (``"yaml"``)."""
        return self.settings.llm_answer == "edit"

    def edit_options(self, text: str, operator: str, limit: int | None = None) -> list[TreeEdit]:
        """The rule tool: every valid edit of ``operator`` on the candidate, in a fixed order
        (layer by layer, as the operator lists them; each child passes the static check and
        differs from the parent and the others); ``limit``: only the first that many. ValueError
        for an unknown operator or an invalid text."""
        return [edit for _, edit, _ in self._edits(text, operator)[:limit]]

    def apply_edit(self, text: str, edit: TreeEdit) -> Mutation:
        """The child that one of :meth:`edit_options`'s edits gives; ValueError when ``edit`` is not
        one of them."""
        for child, option, description in self._edits(text, edit.operator):
            if option == edit:
                return Mutation(child=child, operator=edit.operator, description=description)
        raise ValueError(f"not a valid edit of this candidate: {edit.human()}")

    def _edits(self, text: str, operator: str) -> list[tuple[str, TreeEdit, str]]:
        """(child text, edit, description) of every valid edit; the latest enumeration is kept, so
        that applying one of the options just listed does not enumerate them again."""
        last = self._last_edits
        if last is not None and last[0] == (text, operator):
            return last[1]
        spec, shapes = self.spec(text)
        found = [(render(child, child_shapes), edit, description)
                 for child, child_shapes, edit, description in enumerate_edits(spec, shapes, operator, self.mode)]
        self._last_edits = ((text, operator), found)
        return found

    def repair(self, text: str, error: str) -> str | None:
        """Deterministic fixes, whatever ``error`` says: strips a Markdown fence, drops unknown keys,
        adds missing multiples (the base's), fixes module-name case and aliases (Upsample), repeats
        of non-C2f blocks, the fixed args of Detect/Concat/nn.Upsample, even kernels, strides > 2
        and PSA channels. None when the result is still invalid (e.g. ``from`` pointing forward)."""
        import yaml

        data = load_for_repair(text)
        if data is None:
            return None
        fixed = repair_dict(data, BASE_SCALES[self.settings.base])
        spec, _ = parse(yaml.safe_dump(fixed, sort_keys=False))
        if spec is None:
            return None
        checked, shapes, _ = check_spec(repair_psa(spec), self.mode)
        return render(checked, shapes) if checked is not None else None

    def shrink(self, text: str, factor: float, rng: random.Random) -> Mutation:
        """About ``factor`` times the params (and FLOPs): depth_multiple (sometimes, by ``rng``)
        then width_multiple lowered; ValueError for an invalid text or a factor outside (0, 1)."""
        spec, shapes = self.spec(text)
        child, description = shrink_spec(spec, shapes, factor, rng, self.mode)
        _, child_shapes, _ = check_spec(child, self.mode)
        return Mutation(child=render(child, child_shapes), operator="shrink", description=description)

    def build(self, text: str, num_classes: int, *, plain: bool = False) -> nn.Module:
        """The ultralytics ``DetectionModel`` (``nc = num_classes``); ``plain`` is ignored (NAS_det
        scores the model as built). Raises :class:`~archsmith.tools.detection.DetectionUnavailable`
        without ultralytics."""
        from archsmith.tools.detection import build_detection_model

        spec, _ = self.spec(text)
        return build_detection_model(spec, num_classes)

    def describe(self) -> str:
        blocks = ", ".join(MODES[self.mode])
        star = (
            "- SCDown: [channels, kernel (3, 5, 7), stride (1, 2)], pointwise then depthwise downsampling.\n"
            "- PSA: [channels], self-attention block; its channels must equal its input's (write the input\n"
            "  layer's channel argument); use it at stride 16 or 32.\n"
            if self.mode == "yolov8*" else ""
        )
        return _DESCRIPTION.format(
            mode=self.mode, blocks=blocks, star=star, base=self.settings.base, imgsz=self.settings.imgsz,
            conv_k=KERNELS["Conv"], sppf_k=KERNELS["SPPF"], max_repeats=MAX_REPEATS,
            detect=", ".join(map(str, DETECT_STRIDES)),
        )


_DESCRIPTION = """\
A candidate is an Ultralytics YOLO detection model YAML (search mode {mode}, base {base}; budgets at
image size {imgsz}). Top-level keys: nc, depth_multiple, width_multiple, max_channels, backbone, head.
Each of backbone and head is a list of rows [from, repeats, module, args]; rows are numbered 0, 1, ...
through backbone then head. `from` is -1 (the previous row), an earlier row's index, or a negative
offset; Concat and Detect take a list of rows. Only earlier rows may be read.
Channels written in args are scaled: actual = ceil(min(c, max_channels) * width_multiple / 8) * 8.
C2f repeats n > 1 become max(round(n * depth_multiple), 1) bottlenecks; other blocks use repeats 1.
Blocks ({blocks}):
- Conv: [channels, kernel {conv_k}, stride (1 or 2)]: convolution + BatchNorm + SiLU.
- C2f: [channels, shortcut (True/False)]: CSP block of `repeats` bottlenecks.
- SPPF: [channels, pooling kernel {sppf_k}]: spatial pyramid pooling, keeps the stride.
- nn.Upsample: [None, 2, "nearest"] (or "bilinear"): doubles the resolution (halves the stride).
- Concat: [1]: concatenates channels of inputs with the same stride.
- Detect: [nc], last row, reading exactly three rows at strides {detect} (P3, P4, P5) in that order.
{star}Rules: stride-2 Conv/SCDown double the stride (never beyond 32); everything else keeps it except
nn.Upsample. Concat inputs must share a stride. At most {max_repeats} repeats per C2f. Stay within the
base model's parameters and FLOPs. Write the complete YAML, no Markdown fences and no other keys.
"""
