"""A process-wide lock around ``ast.parse`` (CPython < 3.13).

CPython 3.11's conversion of a parsed tree into ``ast`` objects keeps its recursion counter in
shared module state; two threads parsing at once can fail with "SystemError: AST constructor
recursion depth mismatch" (python/cpython#106905). Archsmith parses candidate sources in parallel
threads, and LangChain parses node functions (``langchain_core.runnables.utils`` calls
``ast.parse``) in the same threads, so a lock around only our own calls is not enough:
:func:`install` wraps ``ast.parse`` itself, once, and :func:`parse` uses the same lock.
"""

from __future__ import annotations

import ast
import sys
import threading
from typing import Any

_LOCK = threading.Lock()
_ORIGINAL_PARSE = ast.parse


def parse(*args: Any, **kwargs: Any) -> ast.Module:
    """``ast.parse`` under the process-wide lock."""
    with _LOCK:
        return _ORIGINAL_PARSE(*args, **kwargs)


def install() -> None:
    """Make every ``ast.parse`` in the process take the lock (idempotent; no-op on 3.13+)."""
    if sys.version_info < (3, 13) and ast.parse is not parse:
        ast.parse = parse  # type: ignore[assignment]
