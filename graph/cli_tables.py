"""What `archsmith run` and `resume` print at the end: the summary, the top candidates, a short
best candidate (a YAML, a small source file)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

console = Console()


def summary_table(result) -> Table:
    table = Table(title=f"run {result.run_id}", show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    best = result.best
    table.add_row("stop reason", str(result.stop_reason or "interrupted"))
    if best:
        table.add_row("best candidate", best["id"])
        text = best["text"]
        if "\n" in text:  # a source file: point at it rather than print it
            text = f"{len(text.splitlines())} lines: {best_path(result.run_dir)}"
        table.add_row("best structure", text)
        table.add_row("score", f"{best['score']:.4f} (std {best.get('score_std') or 0:.4f})")
        if best.get("params") is not None:
            table.add_row("params", f"{best['params']:,} ({best['params'] / 1e6:.3f} M)")
        if best.get("flops") is not None:
            table.add_row("FLOPs (2 x MACs)", f"{best['flops']:,} ({flops_text(best['flops'])})")
        for name, value in (best.get("metrics") or {}).items():
            table.add_row(f"{name} (reported only)", f"{value:.4f}")
    else:
        table.add_row("best candidate", "none valid")
    counts = result.counts
    table.add_row("generated", str(counts["generated"]))
    table.add_row("valid", str(counts["valid"]))
    table.add_row("repaired by debugger", str(counts["repaired_by_debugger"]))
    table.add_row("repaired by downscaler", str(counts["repaired_by_downscaler"]))
    table.add_row("discarded", str(counts["discarded"]))
    if counts["generated"]:
        table.add_row("pass rate (valid / generated)", f"{counts['valid'] / counts['generated']:.1%}")
    table.add_row("wall time", f"{result.elapsed_s:.1f} s")
    table.add_row("sandbox", result.sandbox)
    for report in result.servers:
        if report.crashes:  # a server that ran without crashing goes unmentioned
            table.add_row(f"[red]LLM server ({report.preset})[/red]", report.summary)
    table.add_row("run directory", str(result.run_dir))
    return table


def flops_text(flops: int | None) -> str:
    if flops is None:
        return ""
    return f"{flops / 1e9:.2f} G" if flops >= 1e9 else f"{flops / 1e6:.1f} M"


def best_path(run_dir: Path) -> Path:
    """The winner's file: best/model.py or best/model.yaml when the space has one, else candidate.txt."""
    real = sorted((run_dir / "best").glob("model.*"))
    return real[0] if real else run_dir / "best" / "candidate.txt"


_TOKEN = re.compile(r"[^()|+]+\([^)]*\)|[^()|+]+")  # template blocks "Name(args)", NB201 edges "op~i"


def _blocks(text: str) -> list[str]:
    return [token.strip() for token in _TOKEN.findall(text) if token.strip()]


def _json_fields(text: str) -> list[str] | None:
    """A JSON object's entries as ``key[i]=value`` / ``key=value`` (supernet arch dicts), else None."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    fields: list[str] = []
    for key, value in data.items():
        if isinstance(value, list):
            fields.extend(f"{key}[{i}]={item}" for i, item in enumerate(value))
        else:
            fields.append(f"{key}={value}")
    return fields


def _json_distinguishing(rows: list[list[str]]) -> list[str]:
    """What sets each arch dict apart from the best: its differing entries (``ks[3]=5 +2 more``)."""
    best, cells = rows[0], ["best"]
    for row in rows[1:]:
        parts = [item for item in row if item not in best]
        cells.append(parts[0] + (f" +{len(parts) - 1} more" if len(parts) > 1 else "") if parts else "same as the best")
    return cells


def distinguishing(texts: list[str]) -> list[str]:
    """What sets each one-line text apart, block by block (template blocks, NB201 edges): the
    first (the best) by its block count, each other by one block it has where the best differs,
    one that no other row shows where there is one, and how many more differ
    ("#3 SuperResK3K3(24,48,2,16,1) +1 more"; "#5: 1 block fewer")."""
    from difflib import SequenceMatcher

    fields = [_json_fields(text) for text in texts]
    if all(f is not None for f in fields):
        return _json_distinguishing(fields)  # type: ignore[arg-type]
    rows = [_blocks(text) for text in texts]
    best, changes = rows[0], []
    for row in rows[1:]:
        parts: list[str] = []
        for tag, i1, i2, j1, j2 in SequenceMatcher(a=best, b=row, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            if j2 > j1:
                parts.extend(f"#{j + 1} {row[j]}" for j in range(j1, j2))
            else:
                parts.append(f"#{j1 + 1}: {i2 - i1} block{'s' if i2 - i1 > 1 else ''} fewer")
        changes.append(parts)
    cells = [f"best ({len(best)} blocks)"]
    for index, parts in enumerate(changes):
        if not parts:
            cells.append("same blocks as the best")
            continue
        others = {part for other, theirs in enumerate(changes) if other != index for part in theirs}
        pick = next((part for part in parts if part not in others), parts[0])
        cells.append(pick + (f" +{len(parts) - 1} more" if len(parts) > 1 else ""))
    return cells


def top_table(result, k: int = 5) -> Table | None:
    """The k best valid candidates by id: score +- std, params, FLOPs and what sets each apart
    (the differing part of a structure string; the operator and parent of a source file)."""
    valid = sorted((r for r in result.history if r.get("status") == "valid" and r.get("score") is not None),
                   key=lambda r: r["score"], reverse=True)[:k]
    if len(valid) < 2:
        return None
    multiline = any("\n" in r["text"] for r in valid)
    where = "sources in candidates/<id>/candidate.txt" if multiline else "full texts in history.jsonl"
    table = Table(title=f"top {len(valid)} candidates ({where})", box=box.SIMPLE_HEAD)
    table.add_column("candidate", no_wrap=True)
    table.add_column("score", no_wrap=True)
    table.add_column("params", no_wrap=True)
    table.add_column("FLOPs", no_wrap=True)
    table.add_column("made by" if multiline else "differs", overflow="fold")
    if multiline:
        summaries = [_origin(r) for r in valid]
    else:
        summaries = distinguishing([r["text"] for r in valid])
    spread = any(r.get("score_std") for r in valid)  # no "±0.0000" column of a deterministic score
    for record, summary in zip(valid, summaries):
        params = f"{record['params'] / 1e6:.3f} M" if record.get("params") is not None else ""
        score = f"{record['score']:.4f}" + (f" ±{record.get('score_std') or 0:.4f}" if spread else "")
        table.add_row(record["id"], score, params, flops_text(record.get("flops")), summary)
    return table


def _origin(record, idea_chars: int = 48) -> str:
    """How a candidate was made: its operator and parents, and the start of its idea."""
    parents = ", ".join(record.get("parent_ids") or [])
    operator = record.get("operator") or ("change" if parents else "seed")
    made = f"{operator} of {parents}" if parents else operator
    idea = " ".join((record.get("idea") or "").split())
    if idea:
        made += f": {idea if len(idea) <= idea_chars else idea[:idea_chars - 1] + '…'}"
    return made


SHOWN_SOURCE_LINES = 25  # a longer best source is named by its path only, not printed


def print_result(result) -> None:
    console.print(summary_table(result))
    top = top_table(result)
    if top is not None:
        console.print(top)
    best = result.best
    if best and "\n" in best["text"]:  # a source file or a YAML: where it is, and the text when short
        from rich.syntax import Syntax

        path = best_path(result.run_dir)
        lines = len(best["text"].splitlines())
        console.print(f"best candidate {best['id']}: {path} ({lines} lines)")
        if lines <= SHOWN_SOURCE_LINES:
            lexer = {".py": "python", ".yaml": "yaml"}.get(path.suffix) or (
                "python" if best["text"].lstrip().startswith(("import", "from", '"""', "#!")) else "yaml")
            console.print(Syntax(best["text"], lexer, word_wrap=True))
