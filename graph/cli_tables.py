"""What `archsmith run` and `resume` print at the end: the summary, the top candidates, a short
best candidate (a YAML, a small source file)."""

from __future__ import annotations

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
            text = f"{len(text.splitlines())} lines: {result.run_dir / 'best' / 'candidate.txt'}"
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


def top_table(result, k: int = 5) -> Table | None:
    """The k best valid candidates: score +- std, params, FLOPs and the structure (or its file)."""
    valid = sorted((r for r in result.history if r.get("status") == "valid" and r.get("score") is not None),
                   key=lambda r: r["score"], reverse=True)[:k]
    if len(valid) < 2:
        return None
    table = Table(title=f"top {len(valid)} candidates (files relative to the run directory)")
    for column in ("candidate", "score", "params", "FLOPs", "structure"):
        table.add_column(column, overflow="fold", no_wrap=column == "candidate")
    for record in valid:
        text = record["text"]
        if "\n" in text:  # source files and YAML: point at the file
            text = f"candidates/{record['id']}/candidate.txt"
        elif len(text) > 60:  # the whole string is in history.jsonl and the report
            text = f"{text[:57]}... ({len(text)} chars)"
        params = f"{record['params'] / 1e6:.3f} M" if record.get("params") is not None else ""
        table.add_row(record["id"], f"{record['score']:.4f} +- {record.get('score_std') or 0:.4f}", params,
                      flops_text(record.get("flops")), text)
    return table


def print_result(result) -> None:
    console.print(summary_table(result))
    top = top_table(result)
    if top is not None:
        console.print(top)
    best = result.best
    if best and "\n" in best["text"] and len(best["text"].splitlines()) <= 80:  # a YAML or a short source file
        from rich.syntax import Syntax

        lexer = "python" if best["text"].lstrip().startswith(("import", "from", '"""', "#!")) else "yaml"
        console.print(f"best candidate {best['id']} (best/candidate.txt):")
        console.print(Syntax(best["text"], lexer, word_wrap=True))
