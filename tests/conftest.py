"""Shared fixtures. Tests run on the CPU with no network; os.environ changes only via monkeypatch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # test helper modules (toy_space, sandbox_tasks)
    sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture(scope="session", autouse=True)
def ultralytics_offline(tmp_path_factory):
    """ultralytics probes DNS when first imported unless YOLO_OFFLINE is set: set for every test,
    whatever the order, with its settings in a directory of the session's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_OFFLINE", "1")
        patch.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-config")))
        yield


@pytest.fixture(scope="session")
def ultralytics_env(ultralytics_offline):
    """Offline ultralytics with its font in place; skips where ultralytics is not installed."""
    import importlib.util

    if importlib.util.find_spec("ultralytics") is None:  # importorskip would import it too early
        pytest.skip("ultralytics is not installed (pip install 'archsmith[detection]')")
    from archsmith.tools.detection import prepare_ultralytics

    config = prepare_ultralytics()
    assert (config / "Arial.ttf").is_file()
    return config


@pytest.fixture
def no_network(monkeypatch):
    """Name lookups and connections are recorded and refused (tests assert there are none)."""
    import socket

    attempts: list[str] = []

    def refuse(name: str):
        def blocked(*args, **kwargs):
            attempts.append(f"{name}{args[1:2] if name == 'connect' else args[:1]}")
            raise OSError(f"network access attempted in a test: {name}")

        return blocked

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    return attempts


@pytest.fixture(autouse=True)
def private_data_dir(tmp_path, monkeypatch):
    """Every test gets its own per-user data directory (the default idea store lives there)."""
    monkeypatch.setenv("ARCHSMITH_DATA_DIR", str(tmp_path / "archsmith-data"))
    return tmp_path / "archsmith-data"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small CPU models: one thread is fastest and immune to oversubscription on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy_config(tmp_path):
    """A fast config on the toy space, run in-process, one child at a time (deterministic)."""
    import toy_space  # noqa: F401  (registers the "toy" space)

    from archsmith.graph.config import config_from_dict

    def make(**sections):
        data = {
            "name": "toy",
            "runs_dir": str(tmp_path / "runs"),
            "space": {"name": "toy"},
            "budget": {"params_m": 0.02, "input_size": 8, "num_classes": 4},
            "evaluator": {"preset": "custom", "batch_size": 4, "repeats": 1},
            "search": {"max_candidates": 4, "children_per_generation": 1},
            "parallel": {"workers": 1},
            "sandbox": {"mode": "inprocess"},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return config_from_dict(data)

    return make
