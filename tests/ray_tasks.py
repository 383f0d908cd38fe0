"""Tasks for tests/test_ray_executor.py (made importable in Ray workers through python_path)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any


def die_once(payload: dict[str, Any]) -> dict[str, Any]:
    """Kill the calling process (a Ray worker, when run in-process) the first time; then answer.

    ``payload["marker"]`` is a file that records the first attempt.
    """
    marker = Path(payload["marker"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # never reached
    return {"ok": True, "attempt": 2, "first_pid": int(marker.read_text()), "pid": os.getpid()}


def where(payload: dict[str, Any]) -> dict[str, Any]:
    """The device the job was placed on and the process that ran it."""
    time.sleep(float(payload.get("sleep_s", 0)))
    return {"ok": True, "device": payload.get("device"), "pid": os.getpid(), "key": payload.get("key")}
