"""Managed local LLM servers: command lines, health wait, restart, group stop, and a run whose
generator talks to a server the run started itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import archsmith
from archsmith.agents.servers import ManagedServer, ServerError, ServerSpec, command_line
from archsmith.graph.trace import read_steps

TINY = str(Path(__file__).parent / "tiny_openai_server.py")


def tiny_spec(answer: str = "```\nC8,C24\n```", **extra) -> ServerSpec:
    return ServerSpec(preset="command", command=(sys.executable, TINY, "{port}", answer), startup_timeout_s=30, **extra)


def test_preset_command_lines(tmp_path):
    vllm = ServerSpec(preset="vllm", models=({"path": "Qwen/Qwen3-8B", "alias": "qwen3"},), executable="/opt/vllm/bin/vllm")
    assert command_line(vllm, 8123, tmp_path) == [
        "/opt/vllm/bin/vllm", "serve", "Qwen/Qwen3-8B", "--host", "127.0.0.1", "--port", "8123",
        "--served-model-name", "qwen3", "--max-model-len", "4096"]
    llama = ServerSpec(models=({"path": "/m/small.gguf", "alias": "small"}, {"path": "/m/big.gguf", "alias": "big"}))
    argv = command_line(llama, 8124, tmp_path)
    assert argv[1:4] == ["-m", "llama_cpp.server", "--config_file"]
    import json

    config = json.loads(Path(argv[4]).read_text())
    assert config["port"] == 8124 and config["host"] == "127.0.0.1"
    assert [m["model_alias"] for m in config["models"]] == ["small", "big"]
    with pytest.raises(ValueError, match="needs models"):
        ServerSpec(preset="llamacpp")


def test_start_restart_and_stop_the_whole_group(tmp_path):
    with ManagedServer(tiny_spec(max_restarts=1), tmp_path) as server:
        assert server.base_url.startswith("http://127.0.0.1:") and server._healthy()
        first = server.process.pid
        os.kill(first, 9)
        server.process.wait()
        server.ensure_running()  # restarted once
        assert server.process.pid != first and server._healthy()
        os.kill(server.process.pid, 9)
        server.process.wait()
        with pytest.raises(ServerError, match="died 2 times"):
            server.ensure_running()
    assert server.process is None


def _alive(pid: int) -> bool:
    """A zombie nobody reaps (no init in a container) counts as gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize("server_argv", [(), ("ignore-sigterm",)], ids=["server", "server-stuck-in-shutdown"])
def test_a_server_dies_with_a_run_killed_without_cleanup(tmp_path, server_argv):
    """SIGKILL gives the run no chance to stop its server: the kernel's parent-death signal tells
    the server's watchdog, which stops the server, and kills it when it does not exit (llama.cpp's
    uvicorn waited for ever on the generation of a client that was gone)."""
    import signal
    import subprocess
    import time

    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "sys.path.insert(0, sys.argv[1])\n"
         "from test_servers import tiny_spec\n"
         "from archsmith.agents.servers import ManagedServer, ServerSpec\n"
         "spec = tiny_spec(stop_grace_s=1.0)\n"
         "spec = spec.model_copy(update={'command': (*spec.command, *sys.argv[3:])})\n"
         "server = ManagedServer(spec, sys.argv[2]).start()\n"
         "print(server.process.pid, flush=True)\n"
         "time.sleep(120)\n",
         str(Path(__file__).parent), str(tmp_path), *server_argv],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    processes: list[int] = []
    try:
        watchdog = int(owner.stdout.readline())  # type: ignore[union-attr]
        processes = [watchdog, *_children(watchdog)]
        assert len(processes) == 2 and all(_alive(pid) for pid in processes)  # watchdog and server, serving
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in processes):
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in processes), "the server outlived the run that started it"
    finally:
        owner.kill()
        for pid in processes:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_server_that_ignores_sigterm_is_killed_by_stop(tmp_path):
    import time

    spec = tiny_spec(stop_grace_s=1.0)
    server = ManagedServer(spec.model_copy(update={"command": (*spec.command, "ignore-sigterm")}), tmp_path).start()
    processes = [server.process.pid, *_children(server.process.pid)]
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 8 and not any(_alive(pid) for pid in processes)


def test_a_server_that_never_answers_is_reported(tmp_path):
    spec = ServerSpec(preset="command", command=(sys.executable, "-c", "import time; time.sleep(60)"),
                      startup_timeout_s=2)
    with pytest.raises(ServerError, match="did not answer /v1/models within 2 s"):
        ManagedServer(spec, tmp_path).start()
    crashing = ServerSpec(preset="command", command=(sys.executable, "-c", "raise SystemExit('no model file')"))
    with pytest.raises(ServerError, match="exited with code 1 while starting"):
        ManagedServer(crashing, tmp_path).start()


def test_a_run_starts_and_stops_its_server(toy_config):
    spec = tiny_spec().model_dump()
    config = toy_config(search={"max_candidates": 1},
                        roles={"generator": {"policy": "llm", "llm": {"model": "tiny", "server": spec}}})
    result = archsmith.run(config)
    [record] = result.history
    assert record["status"] == "valid" and record["text"] == "C8,C24"
    [step] = read_steps(result.run_dir / "trace.sqlite", role="generator")
    assert step.tokens["input"] == 10 and step.tokens["output"] == 5
    assert "server" in (result.run_dir / "config.toml").read_text()  # the spec is saved, not the port
