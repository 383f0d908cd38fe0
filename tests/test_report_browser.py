"""The run report in a real headless browser: Debian's chromium driven by Playwright, with its
executable path set (no browser download). Skipped where Playwright or chromium is missing.

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
from archsmith.graph.trace import read_steps
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
