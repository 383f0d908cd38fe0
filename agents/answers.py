"""Parsing LLM answers: fenced code blocks and JSON objects, robust to chatter around them.

Every parser raises :class:`AnswerError` with a message that can be shown to the model on a
retry ("your answer had no closing ``` fence").
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[ \t]*\n(.*?)```", re.DOTALL)


class AnswerError(ValueError):
    """An answer that cannot be used: empty, truncated, garbled or of the wrong shape."""


def extract_fenced(answer: str, languages: tuple[str, ...] = ()) -> str:
    """The content of the last fenced block (preferring one tagged with ``languages``).

    A block that opens but never closes is a truncated answer, not something to execute.
    """
    if not answer or not answer.strip():
        raise AnswerError("the answer was empty")
    blocks = [(lang.lower(), body.strip()) for lang, body in _FENCE.findall(answer)]
    if not blocks:
        if answer.count("```") % 2 == 1:
            raise AnswerError("the answer opens a ``` code block but never closes it (truncated?)")
        raise AnswerError("the answer has no ``` fenced code block")
    after_last = answer.rsplit("```", 1)[-1]
    if answer.count("```") % 2 == 1 and after_last.strip():
        raise AnswerError("the last ``` code block is not closed (truncated answer?)")
    preferred = [body for lang, body in blocks if lang in languages] if languages else []
    body = (preferred or [body for _, body in blocks])[-1]
    if not body:
        raise AnswerError("the fenced code block is empty")
    return body


def extract_json(answer: str) -> dict[str, Any]:
    """The JSON object in an answer: a ```json block, or the outermost {...} span."""
    if not answer or not answer.strip():
        raise AnswerError("the answer was empty")
    candidates: list[str] = []
    try:
        candidates.append(extract_fenced(answer, ("json",)))
    except AnswerError:
        pass
    start, end = answer.find("{"), answer.rfind("}")
    if start != -1 and end > start:
        candidates.append(answer[start : end + 1])
    if not candidates:
        if start != -1:
            raise AnswerError("the JSON object is not closed (truncated answer?)")
        raise AnswerError("the answer contains no JSON object")
    last_error = ""
    for text in candidates:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            last_error = f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}"
            continue
        if isinstance(value, dict):
            return value
        last_error = f"expected a JSON object, got {type(value).__name__}"
    raise AnswerError(last_error)


def extract_candidate(answer: str) -> str:
    """A candidate text from an answer: a fenced block, else a bare one-token answer.

    A lone line without whitespace (``SuperConvK3BNRELU(3,8,1,1)...``) is accepted because small
    models often drop the fence; a line of prose is not a candidate.
    """
    try:
        return extract_fenced(answer, ("python", "py", "yaml"))  # code and YAML answers tag their block
    except AnswerError as error:
        lines = [line.strip() for line in (answer or "").splitlines() if line.strip()]
        if "```" not in (answer or "") and len(lines) == 1 and not any(c.isspace() for c in lines[0]):
            return lines[0]
        raise error
