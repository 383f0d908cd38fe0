"""The run report in a real headless browser: Debian's chromium driven by Playwright, with its
executable path set (no browser download). Skipped where Playwright or chromium is missing.

Besides a real (small) run, two run directories written by hand stand in for the reports a user
found unreadable: a template-space run of 30 generations with 13-block structures and a Pareto
front of every candidate, and a code-space run whose best candidates are 70-line model sources,
20 of them in one generation. At 1,400 and 900 px the page must fit its window, a clicked
candidate must open below the sticky filter bar, sources must stay folded, Pareto labels must not
overlap, and every generation of the lineage must be reachable.

The screenshot is saved as a test artifact: ``$ARCHSMITH_TEST_ARTIFACTS`` (default
``<pytest tmp>/artifacts``)/report.png.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

import archsmith
from archsmith.graph.trace import PromptRecord, StepRecord, TraceStore, read_steps
from archsmith.graph.view import write_report

pytestmark = pytest.mark.slow
CHROMIUM = next((path for path in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if path), None)


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (apt install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def test_report_in_a_browser(browser, toy_config, tmp_path):
    plan = {"plans": [{"parent_ids": ["seed0"], "operator": None, "idea": "widen", "rationale": "r"}] * 2}
    models = {"navigator": GenericFakeChatModel(messages=iter([json.dumps(plan)] * 10)),
              "generator": GenericFakeChatModel(messages=iter(["```\nC8,C24\n```", "```\nC16,C32\n```",
                                                                "```\nC8,C40\n```", "```\nC16,C16\n```"]))}
    config = toy_config(search={"max_candidates": 4, "children_per_generation": 2},
                        roles={"navigator": {"policy": "llm"}, "generator": {"policy": "llm"}})
    result = archsmith.run(config, chat_models=models)
    report = write_report(result.run_dir)
    steps = read_steps(result.run_dir / "trace.sqlite")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.as_uri())
    page.wait_for_load_state("load")

    assert errors == []
    assert page.evaluate(SCROLL_WIDTH) <= 1280
    assert all(url.startswith("file://") for url in requests)  # self-contained: no network
    assert page.locator("details.step:not(.cand)").count() == len(steps)
    assert page.locator("#f-count").inner_text() == f"{len(steps)} steps shown"
    svgs = page.locator("svg")
    assert svgs.count() >= 5 and all(svgs.nth(i).bounding_box()["width"] > 50 for i in range(svgs.count()))

    generator = next(s for s in steps if s.role == "generator" and s.answers)
    item = page.locator(f"#step-{generator.id}")
    assert not item.locator("pre").first.is_visible()
    item.locator("summary").click()
    assert item.locator("pre", has_text=generator.prompts[1].text.splitlines()[0]).first.is_visible()
    assert item.locator("pre", has_text="C8,C24").first.is_visible()  # the answer

    page.select_option("#f-role", "navigator")
    shown = sum(1 for s in steps if s.role == "navigator")
    assert page.locator("#f-count").inner_text() == f"{shown} steps shown"

    artifacts = Path(os.environ.get("ARCHSMITH_TEST_ARTIFACTS") or tmp_path / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    page.select_option("#f-role", "")
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    assert (artifacts / "report.png").stat().st_size > 20_000
    assert errors == []


# ---------------------------------------------------------------- layout at 1,400 and 900 px

SCROLL_WIDTH = "document.documentElement.scrollWidth"
OPERATORS = ["insert_block", "bottleneck", "kernel", "sub_layers", "remove_block", "block_type", "expansion"]


def _record(cid: str, generation: int, parent: str, text: str, score: float, params: int, operator: str) -> dict:
    return {"id": cid, "generation": generation, "parent_ids": [parent], "text": text, "status": "valid",
            "score": score, "params": params, "flops": params * 1290, "operator": operator,
            "idea": f"{operator}: a change to block {generation % 7 + 1}", "metrics": {}}


def template_history() -> tuple[list[dict], dict[str, str]]:
    """30 generations of 2 children; structures of 7 to 20 blocks (up to ~560 characters); score
    rises with params, so that every candidate is on the Pareto front, packed close together."""
    from archsmith.tools.spaces import get_space

    seed = get_space("template").initial()[0]
    extra = ["SuperResK1K5K1(64,64,1,16,1)", "SuperResIDWE6K3(64,64,1,32,2)", "SuperResK3K3(64,64,1,32,1)"]
    history, number = [], 0
    for generation in range(1, 31):
        for child in range(2):
            number += 1
            text = seed + "".join(extra[(generation + child + k) % 3] for k in range(generation // 2 + 1))
            parent = f"seed{child + 1}" if generation == 1 else f"c{number - 2:04d}"
            history.append(_record(f"c{number:04d}", generation, parent, text, 20.0 + number * 1.25,
                                   300_000 + number * 11_000, OPERATORS[number % len(OPERATORS)]))
    return history, {"seed1": seed, "seed2": seed}


def code_history() -> tuple[list[dict], dict[str, str]]:
    """The ResNet-32 base's source (about 70 lines) with other stage widths: 4 generations of
    8, 20, 13 and 2 children."""
    from archsmith.tools.spaces import get_space

    base = get_space("code", {"bases": ["resnet32"]}).initial()[0]
    assert "WIDTHS = (16, 32, 64)" in base
    history, number, previous = [], 0, ["seed0"]
    for generation, size in enumerate([8, 20, 13, 2], start=1):
        current = []
        for child in range(size):
            number += 1
            widths = f"WIDTHS = ({16 + number % 5 * 4}, {32 + number % 3 * 8}, {64 + number % 4 * 16})"
            current.append(f"c{number:04d}")
            operator = ["scale_width", "scale_depth", "insert_se"][number % 3]
            history.append(_record(current[-1], generation, previous[child % len(previous)],
                                   base.replace("WIDTHS = (16, 32, 64)", widths), 50.0 + (number * 37) % 80,
                                   400_000 + (number * 7919) % 900_000, operator))
        previous = current
    return history, {"seed0": base}


def written_run(root: Path, space: str) -> Path:
    """A run directory written by hand (config, history, a trace of its steps): what the report reads."""
    history, seeds = template_history() if space == "template" else code_history()
    run_dir = root / f"20260101-000000-{space}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(f'name = "{space}"\n\n[space]\nname = "{space}"\n')
    (run_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    trace = TraceStore(run_dir / "trace.sqlite")
    trace.start_session("run", "inprocess")
    texts = {**seeds, **{r["id"]: r["text"] for r in history}}
    clock = 1_700_000_000.0
    for generation in sorted({r["generation"] for r in history}):
        children = [r for r in history if r["generation"] == generation]
        plans = [{"parent_ids": r["parent_ids"], "parent_texts": [texts[r["parent_ids"][0]]], "operator": r["operator"]}
                 for r in children]
        trace.record(StepRecord(node="navigator", role="navigator", policy="algorithmic", generation=generation,
                                started_at=clock, duration_s=0.01, decision=f"{len(children)} children", parsed=plans))
        for r in children:
            clock += 1.0
            prompt = f"Change this network ({r['operator']}):\n{texts[r['parent_ids'][0]]}"
            trace.record(StepRecord(node="generator", role="generator", policy="llm", generation=generation,
                                    candidate_id=r["id"], started_at=clock, duration_s=0.5, decision=r["idea"],
                                    prompts=[PromptRecord(template="generator", sha256="0" * 64, text=prompt)],
                                    answers=[f"```\n{r['text']}\n```"], tokens={"input": 900, "output": 300}))
            trace.record(StepRecord(node="verifier", role="verifier", policy="algorithmic", generation=generation,
                                    candidate_id=r["id"], started_at=clock + 0.5, duration_s=0.2, decision="evaluate",
                                    parsed={"route": "evaluate", "stage": "budget"}))
            trace.record(StepRecord(node="evaluate", role="evaluate", generation=generation, candidate_id=r["id"],
                                    started_at=clock + 0.7, duration_s=0.3, decision="valid",
                                    tools={"score": {"score": r["score"]}}))
    trace.close()
    return run_dir


@pytest.fixture(scope="module")
def written_reports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {space: write_report(written_run(root, space)) for space in ("template", "code")}


BAR_AND_TARGET = """(id) => {
  const bar = document.querySelector('.filters').getBoundingClientRect();
  const row = document.getElementById(id);
  return {barTop: bar.top, barBottom: bar.bottom, rowTop: row.getBoundingClientRect().top, open: row.open,
          scrollY: window.scrollY};
}"""

FOLDED_SOURCES = """() => {
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT), out = [];
  while (walker.nextNode()) {
    if (!walker.currentNode.data.includes('def forward')) { continue; }
    const fold = walker.currentNode.parentElement.closest('details');
    out.push(fold === null ? 'unfolded' : fold.open ? 'open'
             : fold.classList.contains('source') ? 'folded' : 'in a step');
  }
  return out;
}"""

LABEL_BOXES = """(prefix) => [...document.querySelectorAll(`g[id^="${prefix}-label-"]`)].map(g => {
  const r = g.getBoundingClientRect(); return [g.id, r.left, r.top, r.right, r.bottom]; })"""

LINEAGE_REACH = """() => {
  const box = document.querySelector('.lineage-box');
  const style = getComputedStyle(box);
  const out = {fitsX: box.scrollWidth <= box.clientWidth, fitsY: box.scrollHeight <= box.clientHeight,
               overflowX: style.overflowX, overflowY: style.overflowY, unreachable: [], generations: 0};
  const inView = (el) => {
    const r = el.getBoundingClientRect(), b = box.getBoundingClientRect();
    return r.left >= b.left - 1 && r.right <= b.left + box.clientWidth + 1 &&
           r.top >= b.top - 1 && r.bottom <= b.top + box.clientHeight + 1 &&
           r.left >= -1 && r.right <= window.innerWidth + 1 && r.top >= -1 && r.bottom <= window.innerHeight + 1;
  };
  box.scrollIntoView({block: 'start'});
  out.atOnce = [...box.querySelectorAll('.genlabel')].filter(inView).length;
  const targets = [...box.querySelectorAll('.genlabel'), ...box.querySelectorAll('.node circle')];
  for (const el of targets) {
    el.scrollIntoView({block: 'nearest', inline: 'nearest'});
    if (!inView(el)) { out.unreachable.push(el.textContent || el.getAttribute('cx')); }
  }
  out.generations = box.querySelectorAll('.genlabel').length;
  return out;
}"""


def _intersect(a, b) -> bool:
    return a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]


@pytest.mark.parametrize("width", [1400, 900])
@pytest.mark.parametrize("space", ["template", "code"])
def test_report_fits_its_window(browser, written_reports, space, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(written_reports[space].as_uri())
    page.wait_for_load_state("load")

    # no sideways scrolling: long structures wrap or fold, wide tables scroll in their own box
    assert page.evaluate(SCROLL_WIDTH) <= page.evaluate("window.innerWidth")

    # model sources stay folded (closed <details>), in the best table and in the candidates
    folds = page.evaluate(FOLDED_SOURCES)
    if space == "code":
        assert folds.count("folded") >= 10 + 43 and set(folds) <= {"folded", "in a step"}, folds
        rows = page.locator("table.best tr")
        assert rows.count() == 11 and all(rows.nth(i).bounding_box()["height"] < 60 for i in range(rows.count()))
    else:
        assert folds == []

    # a clicked candidate opens below the sticky filter bar, not under it
    link = page.locator("table.best a").nth(3)
    target = link.get_attribute("href")[1:]
    link.click()
    seen = page.evaluate(BAR_AND_TARGET, target)
    assert seen["scrollY"] > 0 and seen["barTop"] == 0, seen  # scrolled, and the bar is stuck at the top
    assert seen["open"] and seen["rowTop"] >= seen["barBottom"], seen

    # the Pareto plots label some front points, and no two labels overlap
    for cost in ("params", "flops"):
        boxes = page.evaluate(LABEL_BOXES, f"pareto-{cost}")
        assert len(boxes) >= 3, (cost, boxes)
        clashes = [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[i + 1:] if _intersect(a, b)]
        assert clashes == [], clashes

    # every generation of the lineage fits or can be scrolled to inside its box
    page.evaluate("window.scrollTo(0, 0)")
    lineage = page.evaluate(LINEAGE_REACH)
    assert lineage["generations"] == (31 if space == "template" else 5)
    assert lineage["unreachable"] == [], lineage
    assert lineage["atOnce"] >= min(lineage["generations"], 15), lineage  # most of them without panning
    if not lineage["fitsX"]:
        assert lineage["overflowX"] in ("auto", "scroll"), lineage
    if not lineage["fitsY"]:
        assert lineage["overflowY"] in ("auto", "scroll"), lineage
    assert errors == []
    page.close()
