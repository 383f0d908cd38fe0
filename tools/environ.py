"""Changes to ``os.environ`` that last only while a block runs.

Some libraries read a switch from the environment once (ultralytics at import, Ray when it starts
its processes, which inherit it). Archsmith sets such switches only around that moment and puts
back what was there, so that no variable it sets outlives the call (docs/architecture.md, "Side
effects"). The blocks of all threads take one lock: two of them never interleave their restores.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

__all__ = ["scoped_environ"]

_LOCK = threading.RLock()


@contextmanager
def scoped_environ(updates: Mapping[str, str], *, keep_existing: bool = False) -> Iterator[None]:
    """``updates`` in ``os.environ`` while the block runs, then each name as it was (or unset).

    ``keep_existing``: a name the user already set keeps its value (a default, not an override).
    """
    with _LOCK:
        saved = {name: os.environ.get(name) for name in updates}
        for name, value in updates.items():
            if not (keep_existing and saved[name] is not None):
                os.environ[name] = value
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
