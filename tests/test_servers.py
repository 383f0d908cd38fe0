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


def test_a_server_that_crashes_on_its_first_completion_is_restarted_then_given_up(toy_config):
    """llama.cpp built for kernels the CPU cannot run (AMX in a VM) answers /v1/models and dies of
    SIGSEGV on its first completion: the trace and the run's output say so (signal, log lines),
    apart from endpoint faults; the server is restarted within max_restarts, then given up on, and
    the run finishes on the generator's algorithmic fallback without asking it again."""
    from io import StringIO

    from rich.console import Console

    from archsmith.graph.cli_tables import summary_table

    spec = tiny_spec(max_restarts=1)
    spec = spec.model_copy(update={"command": (*spec.command, "segv-on-chat")})
    config = toy_config(search={"max_candidates": 2},
                        roles={"generator": {"policy": "llm", "fallback": "algorithmic",
                                             "llm": {"model": "tiny", "server": spec.model_dump(), "timeout_s": 20,
                                                     "max_endpoint_retries": 3, "backoff_s": 5.0}}})
    result = archsmith.run(config)
    assert result.finished and result.counts["valid"] == 2  # the algorithmic generator's children
    first, second = read_steps(result.run_dir / "trace.sqlite", role="generator")
    kinds = [error["kind"] for error in first.tools["llm_errors"]]
    assert kinds == ["server_crashed", "server_crashed"]  # no endpoint retry, no backoff (backoff_s = 5)
    assert "llm_backoff_s" not in first.tools
    restarted, given_up = first.tools["llm_server_crashes"]
    for crash in (restarted, given_up):
        assert crash["signal"] == "SIGSEGV" and crash["returncode"] == -11
        assert "ggml_amx_init" in crash["log_tail"]
    assert restarted["restarted"] and not given_up["restarted"]
    messages = [error["message"] for error in first.tools["llm_errors"]]
    assert "was killed by SIGSEGV (signal 11); restarted (1 of max_restarts = 1)" in messages[0]
    assert "not restarted: max_restarts = 1 used up" in messages[1] and "ggml_amx_init" in messages[1]
    assert first.tools["fallback"] == "algorithmic after 2 failures"
    assert first.decision.endswith("[algorithmic fallback]")
    assert "was killed by SIGSEGV" in first.error
    # the next child does not ask a server that is down
    assert [error["kind"] for error in second.tools["llm_errors"]] == ["server_down"]
    assert second.tools["llm_attempts"] == 0 and second.tools["fallback"].startswith("algorithmic")
    assert "not restarted: max_restarts = 1 used up" in second.tools["llm_errors"][0]["message"]
    assert "llm_server_crashes" not in second.tools and "server is down" in second.error
    # the run's output: the result, summary.json and the printed summary
    (report,) = result.servers
    assert report.down and len(report.crashes) == 2 and report.restarts == 1
    assert "crashed 2 times (was killed by SIGSEGV (signal 11))" in report.summary
    assert "generator (fallback = algorithmic)" in report.summary
    import json

    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["servers"][0]["crashes"][0]["signal"] == "SIGSEGV" and summary["servers"][0]["down"]
    out = StringIO()
    Console(file=out, width=400).print(summary_table(result))
    assert "LLM server (command)" in out.getvalue() and "SIGSEGV" in out.getvalue()


def test_exit_causes_name_the_signal():
    from archsmith.agents.servers import exit_cause

    assert exit_cause(-11) == "was killed by SIGSEGV (signal 11)"
    assert exit_cause(1) == "exited with code 1"
    assert "SIGSEGV" in exit_cause(139)  # what a shell or `timeout` reports for a segfault
    assert exit_cause(300) == "exited with code 300"


def test_a_crash_that_a_restart_cures_costs_one_restart(toy_config, tmp_path):
    """The request that met the crash goes to the restarted server (same port) and is answered."""
    spec = tiny_spec(max_restarts=2)
    spec = spec.model_copy(update={"command": (*spec.command, f"segv-once:{tmp_path / 'crashed'}")})
    config = toy_config(search={"max_candidates": 2},
                        roles={"generator": {"policy": "llm", "llm": {"model": "tiny", "server": spec.model_dump()}}})
    result = archsmith.run(config)
    assert [record["text"] for record in result.history][:1] == ["C8,C24"]  # the model's child
    first = read_steps(result.run_dir / "trace.sqlite", role="generator")[0]
    assert [error["kind"] for error in first.tools["llm_errors"]] == ["server_crashed"]
    assert first.tools["llm_attempts"] == 2 and "fallback" not in first.tools and first.error is None
    (report,) = result.servers
    assert report.restarts == 1 and not report.down and "restarted 1 of max_restarts = 2" in report.summary


def test_the_smoke_test_names_a_crashed_server_and_the_portable_build(tmp_path):
    """`scripts/local_llm.py prepare` asks each model for one token: a server that dies on its first
    completion fails it at once, with the signal, the log and the flags to rebuild with."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import local_llm

    local_llm.smoke_test(["tiny"], tiny_spec())  # a server that answers passes
    spec = tiny_spec()
    crashing = spec.model_copy(update={"command": (*spec.command, "segv-on-chat")})
    with pytest.raises(SystemExit) as failed:
        local_llm.smoke_test(["tiny"], crashing)
    message = str(failed.value.code)
    assert message.startswith("tiny: the llama.cpp server was killed by SIGSEGV (signal 11) during a one-token")
    assert "compiled for CPU features this machine cannot run" in message
    assert local_llm.PORTABLE_CMAKE_ARGS in message and "ggml_amx_init" in message
    assert "-DGGML_NATIVE=OFF" in local_llm.PORTABLE_CMAKE_ARGS and "AMX_INT8=OFF" in local_llm.PORTABLE_CMAKE_ARGS
