"""A process-wide lock around ``ast.parse`` (CPython < 3.13).

CPython 3.11's conversion of a parsed tree into ``ast`` objects keeps its recursion counter in
shared module state; two threads parsing at once can fail with "SystemError: AST constructor
recursion depth mismatch" (python/cpython#106905). Archsmith parses candidate sources in parallel
threads, and LangChain parses node functions (``langchain_core.runnables.utils`` calls
``ast.parse``) in the same threads, so a lock around only our own calls is not enough: while a
run goes, :func:`installed` makes ``ast.parse`` itself take the lock, and puts back what was there
when the run ends; :func:`parse` always takes it.
"""

from __future__ import annotations

import ast
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_LOCK = threading.Lock()
_ORIGINAL_PARSE = ast.parse


def parse(*args: Any, **kwargs: Any) -> ast.Module:
    """``ast.parse`` under the process-wide lock."""
    with _LOCK:
        return _ORIGINAL_PARSE(*args, **kwargs)


_INSTALL_LOCK = threading.Lock()
_installs = 0  # blocks inside installed(), across threads: runs may overlap in one process
_replaced: Any = None  # what ast.parse was before the first of them


@contextmanager
def installed() -> Iterator[None]:
    """Every ``ast.parse`` in the process takes the lock while the block runs (no-op on 3.13+).

    Blocks nest and overlap (two runs in one process): the first to enter installs the lock, the
    last to leave restores what ``ast.parse`` was, unless something replaced it meanwhile.
    """
    global _installs, _replaced
    if sys.version_info >= (3, 13):
        yield
        return
    with _INSTALL_LOCK:
        if _installs == 0:
            _replaced = ast.parse
            ast.parse = parse  # type: ignore[assignment]
        _installs += 1
    try:
        yield
    finally:
        with _INSTALL_LOCK:
            _installs -= 1
            if _installs == 0:
                if ast.parse is parse:
                    ast.parse = _replaced
                _replaced = None
