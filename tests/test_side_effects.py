"""The library leaves no process-wide change behind (docs/architecture.md, "Side effects").

What a run or a tool needs changed in the process (``ast.parse`` behind a lock, environment
switches that ultralytics, Ray and chromadb read, Ray's node-address constant) holds only while it
is needed and is put back after.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import archsmith
from archsmith.tools import threadsafe_ast
from archsmith.tools.environ import scoped_environ

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_leaves_the_process_as_it_found_it(toy_config, tmp_path, monkeypatch):
    monkeypatch.delenv("ORT_DISABLE_TELEMETRY", raising=False)
    environment, parse = dict(os.environ), ast.parse
    during = []
    config = toy_config(search={"max_candidates": 2}, knowledge={"use": True, "embedding": "hashing", "path": str(tmp_path / "store")})
    result = archsmith.run(config, on_record=lambda _: during.append(ast.parse))
    assert result.counts["valid"] >= 1
    if sys.version_info < (3, 13):
        assert during and all(p is threadsafe_ast.parse for p in during)  # the lock, while the run goes
    assert ast.parse is parse
    assert dict(os.environ) == environment


def test_ast_lock_blocks_nest_and_restore_what_was_there():
    def mine(*args, **kwargs):
        return "mine"

    original = ast.parse
    try:
        ast.parse = mine
        with threadsafe_ast.installed():
            with threadsafe_ast.installed():
                pass
            if sys.version_info < (3, 13):
                assert ast.parse is threadsafe_ast.parse  # still installed: the outer block goes on
        assert ast.parse is mine
    finally:
        ast.parse = original


def test_scoped_environ_puts_back_values_and_absences(monkeypatch):
    monkeypatch.setenv("ARCHSMITH_TEST_SET", "user")
    monkeypatch.delenv("ARCHSMITH_TEST_UNSET", raising=False)
    with scoped_environ({"ARCHSMITH_TEST_SET": "ours", "ARCHSMITH_TEST_UNSET": "ours"}):
        assert os.environ["ARCHSMITH_TEST_SET"] == os.environ["ARCHSMITH_TEST_UNSET"] == "ours"
    assert os.environ["ARCHSMITH_TEST_SET"] == "user" and "ARCHSMITH_TEST_UNSET" not in os.environ
    with scoped_environ({"ARCHSMITH_TEST_SET": "ours", "ARCHSMITH_TEST_UNSET": "ours"}, keep_existing=True):
        assert os.environ["ARCHSMITH_TEST_SET"] == "user" and os.environ["ARCHSMITH_TEST_UNSET"] == "ours"
    assert os.environ["ARCHSMITH_TEST_SET"] == "user" and "ARCHSMITH_TEST_UNSET" not in os.environ


def test_prepare_ultralytics_sets_its_switches_only_for_the_import(tmp_path):
    """In a fresh interpreter (ultralytics reads them at its first import)."""
    import importlib.util

    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics is not installed (pip install 'archsmith[detection]')")
    script = textwrap.dedent(f"""
        import json, os
        from archsmith.tools.detection import prepare_ultralytics
        settings = prepare_ultralytics({str(tmp_path)!r})
        from ultralytics.utils import ONLINE
        ours = [name for name in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR") if name in os.environ]
        print(json.dumps({{"left": ours, "online": ONLINE, "settings": str(settings)}}))
    """)  # (ultralytics and cv2 set variables of their own when imported: OMP_NUM_THREADS, ...)
    env = {k: v for k, v in os.environ.items() if k not in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"left": [], "online": False, "settings": str(tmp_path / "Ultralytics")}


def test_ray_loopback_settings_hold_only_while_a_local_instance_starts(monkeypatch):
    pytest.importorskip("ray")
    from ray._private import ray_constants

    from archsmith.tools.ray_executor import LOOPBACK_ENVIRONMENT, _loopback_only

    for name in LOOPBACK_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    environment, rule = dict(os.environ), ray_constants.ENABLE_RAY_CLUSTER
    with _loopback_only():
        assert ray_constants.ENABLE_RAY_CLUSTER is False
        assert all(os.environ[name] == value for name, value in LOOPBACK_ENVIRONMENT.items())
    assert ray_constants.ENABLE_RAY_CLUSTER == rule
    assert dict(os.environ) == environment
