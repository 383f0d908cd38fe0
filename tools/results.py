"""Result objects shared by every tool.

A faulty candidate is a result, never an exception in the caller (DESIGN.md, convention 5).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ToolResult(BaseModel):
    """Outcome of running a tool on one candidate."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    error_type: str | None = Field(
        default=None,
        description="Classified failure: an exception class name (SyntaxError, RuntimeError, ...) "
        "or one of Timeout, MemoryLimit, Crashed, OutputShape, NonFinite, InvalidStructure.",
    )
    error_message: str | None = None
    traceback: str | None = None
    stdout: str = ""
    timed_out: bool = False
    duration_s: float = 0.0

    def short_error(self) -> str:
        """One line naming the failure, for tables and prompts."""
        if self.ok:
            return "ok"
        return f"{self.error_type}: {self.error_message}" if self.error_message else str(self.error_type)


class SandboxResult(ToolResult):
    """What a task run in the sandbox returned: ``value`` is its JSON-decoded return value."""

    value: dict[str, Any] = Field(default_factory=dict)
    exit_code: int | None = None
    mechanism: str = ""


class ProfileResult(ToolResult):
    """Params and compute of a network at one input size.

    ``macs`` counts multiply-accumulates (what thop reports); ``flops`` = 2 x ``macs``.
    """

    params: int = 0
    macs: int = 0
    flops: int = 0
    input_size: int = 0

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def flops_m(self) -> float:
        return self.flops / 1e6


class ScoreResult(ToolResult):
    """A candidate's score: ``score`` is the mean over repeats, used for ranking."""

    name: str = ""
    score: float | None = None
    std: float = 0.0
    repeats: int = 0
    settings: dict[str, Any] = Field(default_factory=dict)
    report: dict[str, float] = Field(
        default_factory=dict, description="Metrics recorded for reporting only (test accuracy), never searched on."
    )
    details: dict[str, Any] = Field(
        default_factory=dict, description="What the evaluator recorded beyond numbers: loss curve, device."
    )
