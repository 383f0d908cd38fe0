"""Module mining on real code: ``torch.nn`` and ``torchvision.models``, parsed and probed.

Each source is parsed (``archsmith.tools.modules.mine``) and every public module is built and run
once in the sandbox (one sandbox call each, ``--timeout`` seconds), into a temporary library. The
table gives per source: files parsed, modules found, private/abstract ones (not probed), probed ok,
needing arguments, failed, and seconds; then the commonest failure reasons.

Usage: ``python benchmarks/mine_modules.py [--sources torch.nn torchvision.models] [--limit N]
[--timeout 20] [--workers 1] [--out benchmarks/results/modules]``. ``--limit`` probes only the
first N public modules of each source (the others count as not probed).
"""

from __future__ import annotations

import argparse
import collections
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from archsmith.tools.modules import ModuleLibrary
from archsmith.tools.modules.mining import parse_sources, probe_records, resolve_source
from archsmith.tools.sandbox import Sandbox, SandboxLimits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", nargs="+", default=["torch.nn", "torchvision.models"])
    parser.add_argument("--limit", type=int, default=None, help="Probe at most N public modules per source.")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="Directory for mining.md.")
    args = parser.parse_args()

    lines = ["| source | version | files parsed | skipped | modules | private/abstract | probed ok | needs args | failed "
             "| not probed | seconds |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    reasons: dict[str, collections.Counter] = {}
    with tempfile.TemporaryDirectory() as tmp, ModuleLibrary(Path(tmp) / "library.sqlite") as library:
        for source in args.sources:
            started = time.perf_counter()
            resolved = resolve_source(source)
            report = parse_sources([resolved])
            public = [r for r in report.modules if not (r.private or r.abstract)]
            todo = public[: args.limit] if args.limit is not None else public
            preload = ("torch", "archsmith.tools.modules.probe", source.split(".")[0])
            limits = SandboxLimits(timeout_s=args.timeout, memory_mb=4096)
            with Sandbox(limits, workers=args.workers, preload=preload) as sandbox:
                done = [0]

                def progress(record, total=len(todo)) -> None:
                    done[0] += 1
                    if done[0] % 25 == 0 or done[0] == total:
                        print(f"  {source}: {done[0]}/{total} probed", flush=True)

                probe_records(todo, sandbox, args.timeout, args.workers, progress)
            seconds = time.perf_counter() - started
            library.upsert(report.modules)
            statuses = collections.Counter(r.status for r in report.modules)
            failed = sum(n for s, n in statuses.items() if s not in ("ok", "needs_args", "private", "not probed"))
            reasons[source] = collections.Counter(
                f"{r.status}: {(r.probe or {}).get('error_type') or '?'}" for r in todo
                if r.status not in ("ok", "needs_args"))
            lines.append(f"| {source} | {resolved.version or '-'} | {report.files_parsed} | {len(report.skipped)} | "
                         f"{len(report.modules)} | {statuses['private']} | {statuses['ok']} | {statuses['needs_args']} | "
                         f"{failed} | {statuses['not probed']} | {seconds:.0f} |")
            print(lines[-1], flush=True)
        stored = len(library)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    limit = f"; probing limited to the first {args.limit} public modules of each source" if args.limit else ""
    text = [f"# Module mining (commit {commit}; {platform.machine()}, timeout {args.timeout:g} s a module, "
            f"{args.workers} sandbox worker(s){limit})", "", *lines, "",
            f"{stored} records in the library. Seconds: parsing plus probing (sandbox start included).", ""]
    for source, counter in reasons.items():
        if counter:
            text.append(f"Failures in {source}: " + ", ".join(f"{name} x{n}" for name, n in counter.most_common(8)))
    text.append("")
    print("\n".join(text))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "mining.md").write_text("\n".join(text), encoding="utf-8")


if __name__ == "__main__":
    main()
