"""Parsing LLM answers: fenced code blocks and JSON objects, robust to chatter around them.

Every parser raises :class:`AnswerError` with a message that can be shown to the model on a
retry ("your answer had no closing ``` fence").
"""

from __future__ import annotations

import json
import re
from typing import Any

import json_repair

from archsmith.tools.spaces.base import AnswerReadingSpace, SearchSpace

_WHITESPACE = re.compile(r"\s*")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[ \t]*\n(.*?)```", re.DOTALL)


class AnswerError(ValueError):
    """An answer that cannot be used: empty, truncated, garbled or of the wrong shape."""


class AnswerRejected(AnswerError):
    """A well-formed answer that the role's own checks refuse (a child identical to its parent,
    one already proposed). ``value`` is what was read, for a caller that still wants it when the
    re-asks run out."""

    def __init__(self, problem: str, value: object) -> None:
        super().__init__(problem)
        self.value = value


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
    """The JSON object in an answer: a ```json block, or the outermost {...} span.

    JSON that is broken but complete (a bracket missing before the closing fence, a stray comma,
    an object closed one field early) is repaired with ``json_repair``; the callers validate every
    field of what comes back. An answer that stops inside its JSON was cut off: that is an error
    (a retry asks for the whole answer) rather than a repaired fragment.
    """
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
    if last_error.startswith("invalid JSON") and _answer_is_complete(answer):
        repaired = json_repair.loads(candidates[0])
        if isinstance(repaired, list):  # objects one after another: the first that has content
            repaired = next((value for value in repaired if isinstance(value, dict) and value), None)
        if isinstance(repaired, dict) and repaired:
            return repaired
    raise AnswerError(last_error)


def complete_items(answer: str, key: str) -> list[Any]:
    """The complete items of every ``"key": [...]`` array in an answer, in order, even when the
    answer was cut off inside an array or repeats the key (small models run on past the number of
    items asked for until the token limit). An item cut off mid-way is left out; so is everything
    after it in that array. Empty when the answer has no such array."""
    decoder = json.JSONDecoder()
    items: list[Any] = []
    for opening in re.finditer(r'"' + re.escape(key) + r'"\s*:\s*\[', answer or ""):
        position = opening.end()
        while True:
            position = _WHITESPACE.match(answer, position).end()  # type: ignore[union-attr]
            if answer.startswith("]", position):
                break
            try:
                item, position = decoder.raw_decode(answer, position)
            except json.JSONDecodeError:  # cut off inside the item (or at the end of the answer)
                break
            items.append(item)
            position = _WHITESPACE.match(answer, position).end()  # type: ignore[union-attr]
            if answer.startswith(",", position):
                position += 1
    return items


def _answer_is_complete(answer: str) -> bool:
    """False when the answer ends inside its JSON (cut off by the token limit)."""
    text = answer.rstrip()
    return text.endswith("```") or text.endswith("}") or text.endswith("]")


def extract_candidate(answer: str, space: SearchSpace | None = None) -> str:
    """A candidate text from an answer: a fenced block, else a bare one-token answer.

    A lone line without whitespace (``SuperConvK3BNRELU(3,8,1,1)...``) is accepted because small
    models often drop the fence; a line of prose is not a candidate. With a ``space`` that reads
    answers (:class:`AnswerReadingSpace`), a text that does not validate is looked for inside the
    answer instead: the last one that validates; else the block or line itself when it has the
    space's shape somewhere (the verifier then says what is wrong with it), else the last span of
    that shape. An answer with nothing of the space's shape is an error, retried.
    """
    try:
        found: str | None = _fenced_or_bare(answer)
        problem: AnswerError | None = None
    except AnswerError as error:
        found, problem = None, error
    if not isinstance(space, AnswerReadingSpace) or (found is not None and space.validate(found).ok):
        if found is None:
            raise problem  # type: ignore[misc]
        return found
    shaped = space.candidates_in_answer(answer or "")
    valid = [text for text in shaped if space.validate(text).ok]
    if valid:
        return valid[-1]
    if found is not None and space.candidates_in_answer(found):
        return found  # the model's whole (invalid) text, so that the verifier names what is wrong with it
    if shaped:
        return shaped[-1]
    if problem is not None and "truncated" in str(problem):
        raise problem
    raise AnswerError(
        f"the answer holds no {space.name} candidate (no text of its form); write the candidate "
        "itself in the search space's language, not code that builds it"
    )


def extract_candidates(answer: str, space: SearchSpace) -> list[str]:
    """Every candidate an answer holds, each read on its own (CoLLM-NAS asks for 10-20 arch dicts
    in one answer): the fenced blocks, and with a space that reads answers the spans of its shape
    inside them or in the prose. Duplicates are dropped; the valid ones come first, in the
    answer's order. An answer with no candidate at all is an error, retried."""
    if not answer or not answer.strip():
        raise AnswerError("the answer was empty")
    found: list[str] = []
    reads_answers = isinstance(space, AnswerReadingSpace)
    for _, body in _FENCE.findall(answer):
        body = body.strip()
        spans = space.candidates_in_answer(body) if reads_answers else []
        found.extend(spans if len(spans) > 1 or (spans and not space.validate(body).ok) else [body] if body else [])
    if reads_answers and not found:
        found.extend(space.candidates_in_answer(answer))
    if not found:
        return [extract_candidate(answer, space)]  # one candidate (or the error that names why none)
    unique = list(dict.fromkeys(found))
    return [t for t in unique if space.validate(t).ok] + [t for t in unique if not space.validate(t).ok]


def _fenced_or_bare(answer: str) -> str:
    try:
        return extract_fenced(answer, ("python", "py", "yaml"))  # code and YAML answers tag their block
    except AnswerError as error:
        lines = [line.strip() for line in (answer or "").splitlines() if line.strip()]
        if "```" not in (answer or "") and len(lines) == 1 and not any(c.isspace() for c in lines[0]):
            return lines[0]
        raise error
