"""The run report (`archsmith view`) and the trace reader (`archsmith trace` filters, --json, --follow)."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import urllib.request

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from markupsafe import escape
from typer.testing import CliRunner

import archsmith
from archsmith.graph import view as view_module
from archsmith.graph.cli import app
from archsmith.graph.trace import TraceStore
from archsmith.graph.view import ReportServer, write_report
from archsmith.graph.view_data import best_so_far, pareto_front, split_blocks, text_diff

runner = CliRunner(env={"COLUMNS": "200"})
EVIL = "<script>alert('pwned')</script>"
EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", re.I)


def fake(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(list(answers)))


def block(text: str) -> str:
    return f"{EVIL}\nHere is the architecture:\n```\n{text}\n```\n"


def steps_of(run_dir, **filters):
    store = TraceStore(run_dir / "trace.sqlite")
    try:
        return store.steps(**filters)
    finally:
        store.close()


@pytest.fixture
def algorithmic_run(toy_config):
    config = toy_config(search={"max_candidates": 4, "children_per_generation": 2})
    return archsmith.run(config).run_dir


@pytest.fixture
def llm_run(toy_config):
    config = toy_config(
        search={"max_candidates": 1},
        roles={"generator": {"policy": "llm"}, "debugger": {"policy": "llm"}},
    )
    models = {"generator": fake(block("C8,X")), "debugger": fake(block("C8,C32"))}
    return archsmith.run(config, chat_models=models).run_dir


def assert_self_contained(html: str) -> None:
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    assert "<link" not in html


def test_report_of_an_algorithmic_run(algorithmic_run):
    path = write_report(algorithmic_run)
    assert path == algorithmic_run / "report.html" and path.is_file()
    html = path.read_text("utf-8")
    steps = steps_of(algorithmic_run)
    for step in steps:
        assert f'id="step-{step.id}"' in html
    assert html.count("<svg") >= 7  # six plots and the lineage
    assert "http://" not in html and "https://" not in html
    assert_self_contained(html)
    history = [json.loads(line) for line in (algorithmic_run / "history.jsonl").read_text().splitlines()]
    for record in history:
        assert f'id="cand-{record["id"]}"' in html
    assert "inprocess" in html  # the sandbox mechanism of the session
    assert "Pareto front" in html and "generation 1" in html


def test_report_of_an_llm_run_escapes_untrusted_text(llm_run):
    result = runner.invoke(app, ["view", str(llm_run), "--out", str(llm_run / "r" / "out.html")])
    assert result.exit_code == 0, result.output
    html = (llm_run / "r" / "out.html").read_text("utf-8")
    assert EVIL not in html and str(escape(EVIL)) in html
    (generator,) = steps_of(llm_run, role="generator")
    assert str(escape(generator.prompts[1].text)) in html
    assert generator.prompts[1].sha256[:16] in html
    assert "cannot be built" in html  # the sandbox traceback of the verifier step
    assert_self_contained(html)
    for step in steps_of(llm_run):
        assert f'id="step-{step.id}"' in html
    assert 'class="diff"' in html  # the child against its seed parent


def test_llm_answers_per_role_count_failures_by_kind(toy_config, algorithmic_run):
    from archsmith.graph.view_data import llm_role_stats

    config = toy_config(search={"max_candidates": 1}, roles={"generator": {"policy": "llm"}})
    # Refused (a copy of the seed parent), then cut off, then a child.
    answers = fake(block("C8,C16"), "```\nC8,C", block("C8,C40"))
    run_dir = archsmith.run(config, chat_models={"generator": answers}).run_dir
    (generator,) = llm_role_stats(steps_of(run_dir))
    assert (generator.role, generator.steps, generator.answers) == ("generator", 1, 3)
    assert generator.failures == {"rejected": 1, "truncated": 1} and generator.fell_back == 0
    html = write_report(run_dir).read_text("utf-8")
    assert "LLM answers per role" in html and "rejected 1, truncated 1" in html
    assert "LLM answers per role" not in write_report(algorithmic_run).read_text("utf-8")  # no role asked a model


def test_serve_on_port_zero(algorithmic_run, monkeypatch):
    report = write_report(algorithmic_run)
    with ReportServer(report, 0).start() as server:
        assert server.url.startswith("http://127.0.0.1:")
        body = urllib.request.urlopen(server.url, timeout=5).read().decode()
        assert body == report.read_text("utf-8")
    # through the CLI: serve_forever blocks the command until another thread shuts the server down
    servers: list[ReportServer] = []
    init = ReportServer.__init__

    def capture(self, *args, **kwargs):
        init(self, *args, **kwargs)
        servers.append(self)

    monkeypatch.setattr(view_module.ReportServer, "__init__", capture)
    fetched: list[str] = []

    def client() -> None:
        deadline = time.monotonic() + 10
        while not servers and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            fetched.append(urllib.request.urlopen(servers[0].url, timeout=5).read().decode())
        finally:
            servers[0].shutdown()

    thread = threading.Thread(target=client)
    thread.start()
    result = runner.invoke(app, ["view", str(algorithmic_run), "--serve", "--port", "0"])
    thread.join(timeout=10)
    assert result.exit_code == 0, result.output
    assert "serving on http://127.0.0.1:" in result.output
    assert fetched and "archsmith run" in fetched[0]


def test_trace_filters_and_json(algorithmic_run):
    run = str(algorithmic_run)
    listing = runner.invoke(app, ["trace", run, "--json"])
    assert listing.exit_code == 0, listing.output
    steps = json.loads(listing.output)
    assert [s["id"] for s in steps] == [s.id for s in steps_of(algorithmic_run)]
    assert {"node", "role", "prompts", "tools", "decision"} <= set(steps[0])
    verifier = json.loads(runner.invoke(app, ["trace", run, "--json", "--role", "verifier"]).output)
    assert verifier and {s["role"] for s in verifier} == {"verifier"}
    candidate = verifier[0]["candidate_id"]
    both = json.loads(runner.invoke(app, ["trace", run, "--json", "-r", "verifier", "-c", candidate]).output)
    assert both and all(s["candidate_id"] == candidate and s["role"] == "verifier" for s in both)
    table = runner.invoke(app, ["trace", run, "--candidate", candidate])
    assert table.exit_code == 0 and candidate in table.output and "navigator" not in table.output
    one = json.loads(runner.invoke(app, ["trace", run, "--json", "--step", "2"]).output)
    assert one["id"] == 2 and "inputs" in one


def test_trace_follow_returns(algorithmic_run, tmp_path):
    finished = runner.invoke(app, ["trace", str(algorithmic_run), "--follow", "--role", "evaluate"])
    assert finished.exit_code == 0, finished.output
    assert "run finished" in finished.output and "evaluate" in finished.output
    lines = runner.invoke(app, ["trace", str(algorithmic_run), "--follow", "--json"]).output.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [s.id for s in steps_of(algorithmic_run)]
    unfinished = shutil.copytree(algorithmic_run, tmp_path / "unfinished")
    (unfinished / "summary.json").unlink()
    started = time.monotonic()
    stopped = runner.invoke(app, ["trace", str(unfinished), "--follow", "--timeout", "1"])
    assert stopped.exit_code == 0 and "stopped following after 1 s" in stopped.output
    assert time.monotonic() - started < 5


def test_view_data_helpers():
    assert best_so_far([None, 1.0, 0.5, 2.0]) == [None, 1.0, 1.0, 2.0]
    assert pareto_front([(1, 1), (2, 3), (3, 2), (0.5, 0.5)]) == [3, 0, 1]
    assert split_blocks("A(1,2)B(3)") == ["A(1,2)", "B(3)"]
    diff = text_diff("A(1)B(2)C(3)", "A(1)B(4)C(3)")
    assert ("del", "-B(2)") in diff and ("add", "+B(4)") in diff
