"""The run report: one self-contained HTML file (inline CSS, JS and SVG plots; no network).

``write_report(run_dir)`` renders graph/templates/report.html.j2 from the data that
graph/view_data.py gathers; ``ReportServer`` serves the file on 127.0.0.1 for ``archsmith view --serve``.
Prompts and answers are untrusted text: the template autoescapes everything.
"""

from __future__ import annotations

import html
import io
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from archsmith.graph.view_data import (
    LineageEdge,
    LineageNode,
    RunData,
    best_so_far,
    load_run,
    pareto_front,
    split_blocks,
    step_summary,
)

REPORT_NAME = "report.html"
TEMPLATES = Path(__file__).resolve().parent / "templates"


# ---------------------------------------------------------------- plots (matplotlib, inline SVG)

def _figure(width: float = 5.2, height: float = 3.4):
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _svg(fig) -> str:
    """The figure as an inline <svg> element: no XML prolog, metadata or namespace URLs."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    return text


def _empty(message: str) -> str:
    """A one-line message in place of a plot; it shrinks with its box (no text cut off)."""
    width = 20 + 8 * len(message)
    return (f'<svg class="empty" width="{width}" height="60" viewBox="0 0 {width} 60">'
            f'<text x="10" y="35">{html.escape(message)}</text></svg>')


def plot_best_so_far(data: RunData) -> dict[str, str]:
    scores = [r.get("score") if r.get("status") == "valid" else None for r in data.history]
    if not any(s is not None for s in scores):
        empty = _empty("no valid candidate yet")
        return {"candidates": empty, "time": empty}
    best = best_so_far(scores)
    fig, ax = _figure()
    ax.plot(range(1, len(best) + 1), [b if b is not None else float("nan") for b in best], drawstyle="steps-post")
    ax.scatter([i + 1 for i, s in enumerate(scores) if s is not None], [s for s in scores if s is not None],
               s=8, alpha=0.4, color="grey")
    ax.set_xlabel("candidates archived")
    ax.set_ylabel("best score so far")
    by_candidates = _svg(fig)
    timed = sorted((data.finished_at.get(r["id"], 0.0), r.get("score")) for r in data.history
                   if r.get("status") == "valid" and r.get("score") is not None)
    fig, ax = _figure()
    ax.plot([t for t, _ in timed], best_so_far([s for _, s in timed]), drawstyle="steps-post", marker=".")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("best score so far")
    return {"candidates": by_candidates, "time": _svg(fig)}


def _token(text: str) -> str:
    """A string safe inside an SVG id (and a CSS selector)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text)


PARETO_OFFSETS = ((5, -9, "left"), (5, 3, "left"), (-5, 3, "right"), (-5, -9, "right"))


def _place_labels(fig, ax, points: list[tuple[float, float, str]], gid: str) -> None:
    """Label the points whose labels fit: each tries four offsets around its point and is dropped
    when all of them would overlap a label already placed, a marker or the legend, or leave the
    axes. The best-scoring and the cheapest point go first. Freezes the layout (labels placed
    in display space must stay where they were measured)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    renderer = FigureCanvasAgg(fig).get_renderer()
    frame = ax.get_window_extent(renderer)
    pad = 2.0 * fig.dpi / 72
    radius = 3.0 * fig.dpi / 72  # the front's markers: 5 pt across
    taken = [Bbox.from_extents(px - radius, py - radius, px + radius, py + radius)
             for px, py in ax.transData.transform([(x, y) for x, y, _ in points])]
    legend = ax.get_legend()
    if legend is not None:
        taken.append(legend.get_window_extent(renderer))
    order = sorted(range(len(points)), key=lambda i: (i not in (len(points) - 1, 0), -points[i][1]))
    for index in order:
        x, y, cid = points[index]
        for dx, dy, align in PARETO_OFFSETS:
            label = ax.annotate(cid, (x, y), fontsize=6, xytext=(dx, dy), textcoords="offset points", ha=align)
            label.set_in_layout(False)
            box = label.get_window_extent(renderer).padded(pad / 2)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in taken):
                label.set_gid(f"{gid}-label-{_token(cid)}")
                taken.append(box.padded(pad / 2))
                break
            label.remove()


def _titled(svg: str, titles: dict[str, str]) -> str:
    """Hover text: a <title> inside each <g id=...> that matplotlib wrote for an artist's gid."""
    for gid, title in titles.items():
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{gid}"><title>{html.escape(title)}</title>', 1)
    return svg


def plot_pareto(data: RunData, cost: str, label: str) -> str:
    """Score against a cost with the Pareto front; front points carry their id as hover text and
    as a label where the label has room (labels never overlap one another)."""
    points = [(float(r[cost]), float(r["score"]), r["id"]) for r in data.history
              if r.get("status") == "valid" and r.get("score") is not None and r.get(cost) is not None]
    if not points:
        return _empty(f"no {label} recorded")
    fig, ax = _figure()
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=12, alpha=0.6, label="valid candidates")
    front = [points[i] for i in pareto_front([(x, y) for x, y, _ in points])]
    ax.plot([p[0] for p in front], [p[1] for p in front], color="crimson", marker="o", markersize=5,
            drawstyle="steps-post", label="Pareto front")
    gid = f"pareto-{_token(cost)}"
    titles = {}
    for x, y, cid in front:
        point = f"{gid}-point-{_token(cid)}"
        ax.plot([x], [y], "o", markersize=7, color="crimson", alpha=0.01, gid=point)
        titles[point] = f"{cid}: score {y:.4g}, {label} {x:,.0f}"
    ax.set_xlabel(label)
    ax.set_ylabel("score")
    ax.legend(fontsize=7, loc="lower right")
    _place_labels(fig, ax, front, gid)
    return _titled(_svg(fig), titles)


def plot_predictions(data: RunData) -> str:
    """The score model's prediction for each child it chose vs the score the child got
    (search.strategy = "model"); bars are one predicted standard deviation."""
    points = [(float(r["predicted_score"]), float(r.get("predicted_std") or 0.0), float(r["score"]))
              for r in data.history if r.get("predicted_score") is not None
              and r.get("status") == "valid" and r.get("score") is not None]
    if len(points) < 2:
        return _empty("no predictions recorded (search.strategy = 'model' records them)")
    from scipy.stats import kendalltau

    fig, ax = _figure()
    ax.errorbar([p[0] for p in points], [p[2] for p in points], xerr=[p[1] for p in points], fmt="o",
                markersize=3, alpha=0.6, elinewidth=0.6)
    low = min(min(p[0], p[2]) for p in points)
    high = max(max(p[0], p[2]) for p in points)
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
    tau = kendalltau([p[0] for p in points], [p[2] for p in points]).statistic
    ax.set_title(f"{len(points)} children, Kendall tau {tau:.2f}", fontsize=8)
    ax.set_xlabel("predicted score when chosen")
    ax.set_ylabel("score")
    return _svg(fig)


def plot_operator_posteriors(data: RunData) -> str:
    """The operator bandit's Beta posteriors at the last generation (mean, 90% interval)."""
    latest = next((s.tools["operator_posteriors"] for s in reversed(data.steps)
                   if s.role == "navigator" and s.tools.get("operator_posteriors")), None)
    if not latest:
        return _empty("no operator posteriors recorded (search.operator_bandit)")
    from scipy.stats import beta

    fig, ax = _figure(height=max(2.0, 0.4 * len(latest) + 1))
    names = [p["operator"] for p in latest]
    means = [p["alpha"] / (p["alpha"] + p["beta"]) for p in latest]
    lows = [m - beta.ppf(0.05, p["alpha"], p["beta"]) for m, p in zip(means, latest)]
    highs = [beta.ppf(0.95, p["alpha"], p["beta"]) - m for m, p in zip(means, latest)]
    ax.barh(names, means, xerr=[lows, highs], alpha=0.7)
    # the counts go with the names (drawn on the bars they ran into the error bars)
    ax.set_yticks(range(len(latest)), [f"{p['operator']}\n{p['alpha'] - 1:g} better / {p['beta'] - 1:g} not"
                                       for p in latest], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(child beats its parent)")
    return _svg(fig)


def plot_stages(data: RunData) -> str:
    if not data.stages:
        return _empty("no verifier steps")
    routes = sorted({route for stage in data.stages for route in stage.routes},
                    key=lambda r: (r != "evaluate", r))
    fig, ax = _figure()
    names = [s.stage for s in data.stages]
    bottom = [0] * len(names)
    for route in routes:
        values = [s.routes.get(route, 0) for s in data.stages]
        ax.bar(names, values, bottom=bottom, label=route)
        bottom = [b + v for b, v in zip(bottom, values)]
    for index, stage in enumerate(data.stages):
        ax.annotate(f"{stage.pass_rate:.0%} pass", (index, bottom[index]), ha="center", fontsize=7,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_ylabel("verifier checks")
    ax.set_xlabel("stage the check ended at")
    ax.legend(fontsize=7)
    return _svg(fig)


def plot_role_time(data: RunData) -> str:
    if not data.role_seconds:
        return _empty("no steps")
    fig, ax = _figure(height=max(2.0, 0.4 * len(data.role_seconds) + 1))
    roles = list(data.role_seconds)[::-1]
    ax.barh(roles, [data.role_seconds[r] for r in roles])
    ax.set_xlabel("seconds (sum of step durations)")
    return _svg(fig)


# ---------------------------------------------------------------- lineage (hand-laid SVG)

def _colour(score: float | None, low: float, high: float) -> str:
    if score is None:
        return "#cccccc"
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    fraction = 0.5 if high <= low else (score - low) / (high - low)
    return to_hex(colormaps["viridis"](fraction))


def _operator_colours(edges: list[LineageEdge]) -> dict[str, str]:
    """A colour per operator, most used first (tab10; grey past ten and for no operator)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    counts = Counter(edge.label for edge in edges if edge.label)
    palette = [to_hex(c) for c in colormaps["tab10"].colors]
    colours = {op: palette[i] if i < len(palette) else "#999999" for i, (op, _) in enumerate(counts.most_common())}
    colours[""] = "#999999"
    return colours


def lineage_html(nodes: list[LineageNode], edges: list[LineageEdge]) -> str:
    """The lineage as HTML: a legend of operators and, in a scrolling box, an <svg> with the
    generations as rows (seeds at the top), each row's candidates placed near their parents;
    node colour = score, edge colour = operator (hover an edge for the idea, a node for its text).

    The <svg> shrinks to its box's width down to 70 % of its size; past that (or past the box's
    height) the box scrolls, so every generation stays reachable."""
    if not nodes:
        return f'<div class="scroll lineage-box">{_empty("no candidates yet")}</div>'
    rows: dict[int, list[LineageNode]] = {}
    for node in nodes:
        rows.setdefault(node.generation, []).append(node)
    generations = sorted(rows)
    parents: dict[str, list[str]] = {}
    for edge in edges:
        parents.setdefault(edge.child, []).append(edge.parent)
    label_chars = max(len(node.id) for node in nodes)
    col_w, row_h, top, left = max(56, 6 * label_chars + 26), 34, 14, 96
    where: dict[str, tuple[float, float]] = {}

    def near_parents(item: tuple[int, LineageNode]) -> tuple[float, int]:
        xs = [where[p][0] for p in parents.get(item[1].id, []) if p in where]
        return (sum(xs) / len(xs) if xs else float("inf"), item[0])

    widest = max(len(r) for r in rows.values())
    for ri, gen in enumerate(generations):
        indent = (widest - len(rows[gen])) * col_w / 2  # rows centred: a family tree
        for ci, (_, node) in enumerate(sorted(enumerate(rows[gen]), key=near_parents)):
            where[node.id] = (left + 12 + indent + ci * col_w, top + 10 + ri * row_h)
    width = left + widest * col_w + 8
    height = top + len(generations) * row_h
    scores = [n.score for n in nodes if n.score is not None]
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    colours = _operator_colours(edges)
    esc = html.escape
    parts = [f'<svg class="lineage" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'style="min-width: {round(0.7 * width)}px">']
    for ri, gen in enumerate(generations):
        y = top + 10 + ri * row_h
        parts.append(f'<text x="4" y="{y + 4}" class="genlabel" data-generation="{gen}">'
                     f'{"seeds" if gen == 0 else f"generation {gen}"}</text>')
    for edge in edges:
        if edge.parent not in where or edge.child not in where:
            continue
        (x1, y1), (x2, y2) = where[edge.parent], where[edge.child]
        y1, y2 = y1 + 9, y2 - 9
        mid = (y1 + y2) / 2 if y2 - y1 <= row_h else y2 - row_h / 2
        title = f"{edge.parent} \u2192 {edge.child}: {edge.label or 'no operator'}"
        if edge.idea:
            title += f" \u2014 {edge.idea}"
        parts.append(f'<path class="edge" d="M{x1},{y1} C{x1},{mid} {x2},{mid} {x2},{y2}" fill="none" '
                     f'stroke="{colours.get(edge.label, "#999999")}" stroke-width="1.3">'
                     f'<title>{esc(title)}</title></path>')
    for node in nodes:
        x, y = where[node.id]
        stroke = ' stroke="#c00" stroke-dasharray="3,2"' if node.status not in ("valid", "seed") else ' stroke="#333"'
        score = f"{node.score:.4g}" if node.score is not None else node.status
        text = node.text if len(node.text) <= 400 else node.text[:400] + "\u2026"
        parts.append(f'<g class="node"><title>{esc(node.id)} ({esc(node.status)}) score {esc(score)}\n'
                     f'{esc(text)}</title><a href="#cand-{esc(node.id)}">'
                     f'<circle cx="{x}" cy="{y}" r="8" fill="{_colour(node.score, low, high)}"{stroke}/>'
                     f'<text x="{x + 11}" y="{y + 4}" class="nodelabel">{esc(node.id)}</text></a></g>')
    parts.append("</svg>")
    legend = "".join(f'<span class="op"><i style="background: {colour}"></i>{esc(op)}</span>'
                     for op, colour in colours.items() if op)
    return (f'<div class="legend">{legend}</div>' if legend else "") + \
        f'<div class="scroll lineage-box">{"".join(parts)}</div>'


# ---------------------------------------------------------------- rendering and serving

def _pretty(value: Any) -> str:
    if value in (None, {}, [], ""):
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _compact(value: Any, decimals: int = 3) -> str:
    """Params and FLOPs as the CLI prints them: 0.995 M (decimals=3), 838.9 M (1), 1.28 G."""
    if value is None:
        return "-"
    value = float(value)
    if value >= 1e9:
        return f"{value / 1e9:.2f} G"
    return f"{value / 1e6:.{decimals}f} M" if value >= 1e5 else f"{value:,.0f}"


def _line_count(text: str | None) -> int:
    return len((text or "").strip("\n").splitlines())


def _breakable(text: str | None) -> Markup:
    """A one-line structure with a line-break opportunity after each block (and cell or token)."""
    return Markup("<wbr>").join(escape(part) for part in split_blocks(text or ""))


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = _pretty
    env.filters["num"] = _num
    env.filters["compact"] = _compact
    env.filters["line_count"] = _line_count
    env.filters["breakable"] = _breakable
    return env


def render_report(data: RunData) -> str:
    # plots are built here, with every text in them escaped
    curves = plot_best_so_far(data)
    plots = {
        "best_vs_candidates": curves["candidates"],
        "best_vs_time": curves["time"],
        "pareto_params": plot_pareto(data, "params", "params"),
        "pareto_flops": plot_pareto(data, "flops", "FLOPs"),
        "stages": plot_stages(data),
        "role_time": plot_role_time(data),
        "predictions": plot_predictions(data),
        "operators": plot_operator_posteriors(data),
    }
    from archsmith.graph.cli_tables import distinguishing  # the CLI's top table says the same

    texts = [r.get("text") or "" for r in data.best]
    differs = {}
    if len(texts) > 1 and not any("\n" in text for text in texts):
        differs = {r["id"]: cell for r, cell in zip(data.best, distinguishing(texts))}
    template = environment().get_template("report.html.j2")
    return template.render(
        run=data,
        differs=differs,
        plots={k: Markup(v) for k, v in plots.items()},
        lineage=Markup(lineage_html(data.lineage_nodes, data.lineage_edges)),
        summaries={step.id: step_summary(step) for step in data.steps},
        roles=sorted({s.role for s in data.steps}),
        candidates=sorted({s.candidate_id for s in data.steps if s.candidate_id}
                          | {r["id"] for r in data.history}),
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the report of a run (finished or not); returns the file written."""
    data = load_run(run_dir)
    path = Path(out) if out is not None else data.root / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_report(data), encoding="utf-8")
    tmp.replace(path)
    return path


class ReportServer:
    """Serves one report file on 127.0.0.1 (port 0: any free port); stop with ``close()``."""

    def __init__(self, report: Path, port: int = 0) -> None:
        body = Path(report).read_bytes()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?", 1)[0] not in ("/", f"/{REPORT_NAME}", f"/{Path(report).name}"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        """Blocks until ``shutdown()`` from another thread (or Ctrl-C in the caller)."""
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> ReportServer:
        """Serve from a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Make ``serve_forever`` return (call it from another thread)."""
        self._server.shutdown()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ReportServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
