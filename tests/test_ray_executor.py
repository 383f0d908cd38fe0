"""The Ray executor against a real local Ray instance, in a network namespace of its own.

Ray is started by tests/ray_scenarios.py under ``unshare -rn`` (only a loopback interface), so
nothing it does can leave the machine; one test also proves, under strace, that the instance
does not even attempt a connection off the loopback (the metadata and route probes Ray makes by
default are switched off by tools/ray_executor.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import private_network

pytest.importorskip("ray")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not private_network.available(), reason="needs unshare -rn (network namespaces)"),
]
TESTS_DIR = Path(__file__).resolve().parent
_LOOPBACK = re.compile(r'inet_addr\("127\.|"::1"|"::ffff:127\.')


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "outcome.json"
    command = private_network.command(str(TESTS_DIR / "ray_scenarios.py"), str(out))
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and out.is_file(), f"scenarios failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return json.loads(out.read_text())


def test_local_and_ray_give_the_same_results_for_the_same_seeds(scenarios):
    assert scenarios["local"]["train"]["ok"], scenarios["local"]["train"]["error"]
    assert scenarios["local"]["zen"]["ok"], scenarios["local"]["zen"]["error"]
    assert scenarios["ray"] == scenarios["local"]
    assert scenarios["local"]["train"]["score"] > 25.0  # 4 classes: clearly above chance
    assert "worker sandbox" in scenarios["mechanism"]


def test_results_stream_back_as_they_finish(scenarios):
    assert scenarios["streamed"] == ["fast", "slow"]


def test_a_killed_worker_is_retried_and_the_candidate_answered(scenarios):
    retried = scenarios["killed_retried"]
    assert retried["ok"] and retried["value"]["attempt"] == 2
    assert retried["value"]["pid"] != retried["value"]["first_pid"]  # a new worker ran it


def test_a_killed_worker_without_retries_marks_the_candidate_failed(scenarios):
    lost = scenarios["killed_lost"]
    assert lost["ok"] is False and lost["error_type"] == "WorkerLost"
    assert "died" in lost["message"]


def _off_loopback_connects(log: Path) -> list[str]:
    lines = [line for line in log.read_text().splitlines() if "connect(" in line and "AF_INET" in line]
    return [line for line in lines if not _LOOPBACK.search(line)]


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_local_instance_attempts_no_connection_off_the_loopback(tmp_path):
    script = tmp_path / "start_ray.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS_DIR)!r})\n"
        "from archsmith.tools.ray_executor import RayExecutor, RunnerSpec\n"
        f"runner = RunnerSpec(mode='inprocess', python_path=({str(TESTS_DIR)!r},))\n"
        "with RayExecutor(num_cpus=1, runner=runner) as executor:\n"
        "    assert executor.run('ray_tasks:where', {}).ok\n"
        "    import time; time.sleep(3)  # the API server's cloud probe runs shortly after start-up\n"
    )
    probe = tmp_path / "probe.py"  # the control: a probe of the metadata address must be seen
    probe.write_text("import socket\ntry:\n    socket.create_connection(('169.254.169.254', 80), 1)\n"
                     "except OSError:\n    pass\n")
    for target, expect_off_loopback in ((probe, True), (script, False)):
        log = tmp_path / f"{target.stem}.strace"
        command = ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(log),
                   *private_network.command(str(target))]
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        found = _off_loopback_connects(log)
        assert bool(found) == expect_off_loopback, found[:5]
