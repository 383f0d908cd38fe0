"""The open-ended code space (FairNAD): a candidate is one Python file defining ``Network``.

Contract: the source defines, at module level, ``Network(num_classes)`` returning an
``nn.Module`` that maps a float tensor (B, 3, H, W) to logits (B, num_classes). Anything else is
free. The source runs only inside the sandbox (:meth:`CodeSpace.build`); everything else here is
static (``ast``, libcst) and imports no torch.

Built-in bases (``tools/spaces/code_bases/``): ``resnet32`` (FairNAD's base), ``mobilenetv2_w05``,
``shufflenetv2_w05`` and ``nb201_cell``. Settings (``space.settings``): ``bases``, a list of
built-in names or paths of user files honouring the contract (default ``["resnet32"]``), and
``max_source_kb`` (default 200).

The algorithmic operators are libcst rewrites of the source conventions documented in
:mod:`code_transforms` (module-level WIDTHS/DEPTHS/... constants, blocks with ``out_channels``);
a user base without them still works with the llm policies, and mutation then reports that no
operator applies.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from archsmith.tools.spaces.base import Mutation, Validation, ValidationIssue, register_space
from archsmith.tools.spaces.code_transforms import (
    OPERATORS,
    TransformError,
    normalized_ast,
    parse_python,
    shrink,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

BUILTIN_BASES = ("resnet32", "mobilenetv2_w05", "shufflenetv2_w05", "nb201_cell")
ENTRY = "Network"
CANDIDATE_FILENAME = "candidate.py"
# Names a repair may import when a candidate forgot to (small LLMs often do).
IMPORT_FIXES = {
    "torch": "import torch",
    "nn": "import torch.nn as nn",
    "F": "import torch.nn.functional as F",
    "math": "import math",
    "functools": "import functools",
    "Optional": "from typing import Optional",
    "List": "from typing import List",
    "Tuple": "from typing import Tuple",
}


# Which libcst transforms carry out which kind of idea (main category, or main/sub-category).
# Ideas of other categories (attention, normalization, patch embedding, ...) need an LLM.
IDEA_OPERATORS: dict[str, tuple[str, ...]] = {
    "adaptive feature recalibration": ("insert_se",),
    "activation": ("activation",),
    "network-wise scaling": ("scale_width", "scale_width_ratio", "scale_depth"),
    "network-wise scaling/hierarchical feature downsampling": ("stride",),
    "network structural patterns/hierarchical channel scaling": ("scale_width_ratio",),
    "network structural patterns/multi-stage hierarchical structure": ("scale_depth", "stride"),
    "feature extraction operators/convolution": ("kernel_size",),
    "feature extraction operators/local convolution": ("kernel_size",),
    "efficient block structures/bottleneck block": ("scale_width_ratio",),
}


class CodeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bases: list[str] = Field(default_factory=lambda: ["resnet32"],
                             description="built-in base names or paths of user .py files")
    max_source_kb: int = Field(200, ge=1, description="longer sources are rejected unread")


def builtin_base_source(name: str) -> str:
    if name not in BUILTIN_BASES:
        raise ValueError(f"unknown built-in base {name!r} (known: {', '.join(BUILTIN_BASES)})")
    resource = resources.files("archsmith.tools.spaces").joinpath("code_bases", f"{name}.py")
    return resource.read_text("utf-8")


def load_base(entry: str) -> str:
    """A base's source: a built-in name, or a path to a user file."""
    if entry in BUILTIN_BASES:
        return builtin_base_source(entry)
    path = Path(entry).expanduser()
    if not path.is_file():
        raise ValueError(
            f"space.settings.bases: {entry!r} is neither a built-in base ({', '.join(BUILTIN_BASES)}) "
            f"nor a readable file"
        )
    return path.read_text("utf-8")


def _syntax_issue(error: SyntaxError, source: str) -> ValidationIssue:
    line = error.lineno or 0
    last = len(source.rstrip().splitlines())
    truncated = line >= last and any(
        phrase in (error.msg or "") for phrase in ("was never closed", "unexpected EOF", "expected an indented block")
    )
    hint = " (the file looks cut off: truncated answer?)" if truncated else ""
    return ValidationIssue(message=f"line {line}: {error.msg}{hint}", kind="syntax")


def defines_entry(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == ENTRY:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == ENTRY for t in node.targets):
            return True
    return False


def top_level_definitions(source: str) -> set[str]:
    """Names of the classes and functions a source defines at module level."""
    try:
        tree = parse_python(source)
    except SyntaxError:
        return set()
    return {node.name for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))}


_MATMUL_SHAPES = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")


def fix_classifier_width(text: str, error: str) -> str | None:
    """``nn.Linear(IN, ...)`` given the width the features have, when ``error`` is the matrix
    multiply's shape error (features of width A met a Linear expecting B). The Linear changed is
    the one whose input is literally B, else the one given ``num_classes``, else the last; None
    when the error is another or no Linear call is found."""
    match = _MATMUL_SHAPES.search(error)
    if match is None:
        return None
    got, expected = int(match[2]), int(match[3])
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    linears = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and node.args
               and ast.unparse(node.func).split(".")[-1] == "Linear"]
    if not linears:
        return None
    literal = [node for node in linears if isinstance(node.args[0], ast.Constant) and node.args[0].value == expected]
    heads = [node for node in linears if "num_classes" in ast.unparse(node)]
    target = (literal or heads or linears)[-1].args[0]
    lines = text.splitlines(keepends=True)
    if target.end_lineno is None or target.end_col_offset is None:
        return None
    encoded = [line.encode("utf-8") for line in lines]  # ast offsets count UTF-8 bytes
    start = sum(len(line) for line in encoded[:target.lineno - 1]) + target.col_offset
    end = sum(len(line) for line in encoded[:target.end_lineno - 1]) + target.end_col_offset
    data = "".join(lines).encode("utf-8")
    fixed = (data[:start] + str(got).encode() + data[end:]).decode("utf-8")
    return None if fixed == text else fixed


@register_space("code")
class CodeSpace:
    """Python sources defining ``Network(num_classes)``."""

    name: ClassVar[str] = "code"
    file_suffix: ClassVar[str] = ".py"  # best/model.py, `archsmith export`

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = CodeSettings.model_validate(settings or {})
        if not self.settings.bases:
            raise ValueError("space.settings.bases: give at least one base model")
        self._initial = []
        for index, entry in enumerate(self.settings.bases):
            source = load_base(entry)
            validation = self.validate(source)
            if not validation.ok:
                raise ValueError(f"space.settings.bases[{index}] ({entry}) is invalid: {validation.summary()}")
            self._initial.append(source)

    # -- static checks -----------------------------------------------------------------------

    def validate(self, text: str) -> Validation:
        if not text or not text.strip():
            return Validation(ok=False, issues=[ValidationIssue(message="empty source", kind="syntax")])
        if len(text.encode("utf-8")) > self.settings.max_source_kb * 1024:
            return Validation(ok=False, issues=[ValidationIssue(
                message=f"source is larger than {self.settings.max_source_kb} KB", kind="limit")])
        try:
            tree = parse_python(text, filename=CANDIDATE_FILENAME)
        except SyntaxError as error:
            return Validation(ok=False, issues=[_syntax_issue(error, text)])
        except ValueError as error:  # e.g. null bytes
            return Validation(ok=False, issues=[ValidationIssue(message=str(error), kind="syntax")])
        if not defines_entry(tree):
            return Validation(ok=False, issues=[ValidationIssue(
                message=f"no module-level {ENTRY} (a class or function Network(num_classes))", kind="invalid")])
        return Validation(ok=True)

    def canonical(self, text: str) -> str:
        """Hash of the normalized AST: comments, docstrings and formatting do not count."""
        try:
            form = normalized_ast(text)
        except TransformError:
            form = text
        return "ast:" + hashlib.sha256(form.encode("utf-8")).hexdigest()[:32]

    def depth(self, text: str) -> int | None:
        """None: the weight layers are counted when the candidate runs (loops make a static count wrong)."""
        return None

    # -- search --------------------------------------------------------------------------------

    def initial(self) -> list[str]:
        return list(self._initial)

    def operators(self) -> list[str]:
        return list(OPERATORS)

    def local_operators(self) -> list[str]:
        return ["kernel_size", "activation", "scale_width_ratio", "insert_se"]

    def operators_for_idea(self, tag: Any) -> list[str]:
        """The transforms that realise an idea of this attribute-tree tag without an LLM (may be
        empty). Matched on the main category, then the sub-category (see IDEA_OPERATORS)."""
        by_sub = IDEA_OPERATORS.get(f"{tag.main_category}/{tag.sub_category}")
        return list(by_sub if by_sub is not None else IDEA_OPERATORS.get(tag.main_category, ()))

    def mutate(self, text: str, rng: random.Random, operator: str | None = None) -> Mutation:
        """Apply ``operator`` (or, when None, the first of a shuffled list that applies)."""
        if operator is not None and operator not in OPERATORS:
            raise ValueError(f"unknown operator {operator!r} (known: {', '.join(OPERATORS)})")
        names = [operator] if operator else rng.sample(list(OPERATORS), len(OPERATORS))
        problems = []
        for name in names:
            try:
                done = OPERATORS[name](text, rng)
            except TransformError as error:
                problems.append(f"{name}: {error}")
                continue
            return Mutation(child=done.source, operator=done.operator, description=done.description)
        raise ValueError("no operator applies to this source: " + "; ".join(problems))

    def repair(self, text: str, error: str) -> str | None:
        """Deterministic fixes of two common mistakes: a missing standard import named by a
        NameError; a classifier whose input width no longer matches the features (the widths
        were changed, its ``nn.Linear`` was not). None for anything else."""
        for name, statement in IMPORT_FIXES.items():
            if f"name '{name}' is not defined" in error and statement not in text:
                return f"{statement}\n{text}"
        return fix_classifier_width(text, error)

    def shrink(self, text: str, factor: float, rng: random.Random) -> Mutation:
        try:
            done = shrink(text, factor, rng)
        except TransformError as error:
            raise ValueError(str(error)) from None
        return Mutation(child=done.source, operator="shrink", description=done.description)

    def repair_violation(self, parent: str | None, before: str, after: str) -> str | None:
        """Why a repair of ``before`` into ``after`` is not acceptable (it deleted the new module)."""
        added = top_level_definitions(before) - top_level_definitions(parent or "")
        removed = sorted(added - top_level_definitions(after))
        if removed:
            return f"the repair deleted the newly added {', '.join(removed)} instead of fixing it"
        return None

    def describe(self) -> str:
        return (
            "A candidate is one complete Python source file. It must define, at module level,\n"
            f"`{ENTRY}(num_classes)`: an nn.Module (or a function returning one) that maps a float\n"
            "tensor of shape (B, 3, H, W) to logits of shape (B, num_classes), for any H, W >= 16.\n"
            "Import what you use (torch, torch.nn as nn, torch.nn.functional as F); no other files,\n"
            "no downloads, no pretrained weights, no randomness or I/O at import time. The file is\n"
            "run as a whole: give the complete file, not a fragment or a diff."
        )

    def build(self, text: str, num_classes: int, *, plain: bool = False) -> nn.Module:
        """Execute the source and construct the network (inside the sandbox only).

        ``plain`` is ignored: open-ended code has no generic residual-free form, so Zen-score
        sees the network as written (its ``forward_pre_gap`` is the last feature map, found by
        :class:`~archsmith.tools.spaces.code_net.CodeNetwork`).
        """
        from archsmith.tools.spaces.code_net import CodeNetwork, load_entry

        return CodeNetwork(load_entry(text, ENTRY)(num_classes))
