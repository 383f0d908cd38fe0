"""Paper ingestion with fake chat models: filter, extract, malformed answers, idempotence, resume."""

from __future__ import annotations

import json

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from archsmith.agents.prompts import PromptLoader
from archsmith.graph.config import LLMSettings
from archsmith.knowledge.ingest import Ledger, PaperReader, ingest
from archsmith.knowledge.papers import collect, find_method, split_title_abstract
from archsmith.knowledge.store import IdeaStore
from archsmith.knowledge.tree import AttributeTree

TREE = AttributeTree.load()
SE_TAG = {"target": "performance", "granularity": "block and connectivity",
          "main_category": "adaptive feature recalibration", "sub_category": "channel attention (SE block)"}
DW_TAG = {"target": "efficiency", "granularity": "operation", "main_category": "efficient convolution",
          "sub_category": "depthwise convolution"}

RELEVANT = """# Gated Channel Recalibration for Convolutional Networks

## Abstract
We recalibrate channel responses with a learned gate computed from global context.

## 1 Introduction
Convolutions mix space and channels.

## 3 Method
A global average pool feeds two small fully connected layers whose sigmoid output scales each channel.

## 4 Experiments
It helps on CIFAR.
"""
IRRELEVANT = """A Better Learning Rate Schedule

Abstract
We propose a cosine schedule with warm restarts for SGD.
"""
MALFORMED = """Depthwise Everything

Abstract
Depthwise convolutions are cheap.
"""


def fake(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(list(answers)))


def reader(model) -> PaperReader:
    return PaperReader(model, LLMSettings(model="fake-model", max_retries=1), TREE, PromptLoader(), 4000)


def answer(data) -> str:
    return "Here is my answer:\n```json\n" + json.dumps(data) + "\n```"


@pytest.fixture
def papers(tmp_path):
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "a_relevant.md").write_text(RELEVANT, "utf-8")
    (folder / "b_irrelevant.txt").write_text(IRRELEVANT, "utf-8")
    (folder / "c_malformed.txt").write_text(MALFORMED, "utf-8")
    return folder


@pytest.fixture
def store(tmp_path):
    return IdeaStore.open(tmp_path / "store", embedding="hashing", seed_starter=False)


def test_sections_are_found_by_headings():
    title, abstract = split_title_abstract(RELEVANT)
    assert title == "Gated Channel Recalibration for Convolutional Networks"
    assert abstract == "We recalibrate channel responses with a learned gate computed from global context."
    assert find_method(RELEVANT).startswith("A global average pool feeds")
    assert "CIFAR" not in find_method(RELEVANT)


def test_ingest_keeps_relevant_discards_irrelevant_and_reports_malformed(papers, store):
    model = fake(
        answer({"relevant": True, "attributes": [SE_TAG]}),
        answer({"ideas": [
            {"text": "Scale each channel by a sigmoid gate computed from its global average.", **SE_TAG},
            {"text": "Pool globally before the gate.", **{**SE_TAG, "sub_category": "nonsense"}},
        ]}),
        answer({"relevant": False, "attributes": []}),
        "I am not sure what you mean.",  # malformed, then malformed again after the retry prompt
        "Still no JSON here.",
    )
    summary = ingest([str(papers)], store, reader(model))
    assert (summary.papers_kept, summary.papers_discarded, len(summary.papers_failed)) == (1, 1, 1)
    assert "c_malformed.txt: filter: no usable answer after 2 attempt(s)" in summary.papers_failed[0]
    assert summary.ideas_added == 1
    assert len(summary.ideas_rejected) == 1 and "'nonsense' is not under" in summary.ideas_rejected[0]
    assert summary.per_category == {"performance/block and connectivity/adaptive feature recalibration": 1}
    [stored] = store.ideas()
    assert stored.idea.source.title == "Gated Channel Recalibration for Convolutional Networks"
    assert stored.idea.provenance.by == "fake-model"
    assert stored.idea.provenance.origin.endswith("a_relevant.md")

    # Re-ingest: finished papers are skipped by hash (no LLM call: this model has no answers for
    # them); only the failed paper is tried again.
    again = ingest([str(papers)], store, reader(fake(answer({"relevant": False, "attributes": []}))))
    assert (again.papers_skipped, again.papers_discarded, again.papers_kept) == (2, 1, 0)
    assert store.count() == 1


def test_a_relevant_answer_needs_a_tag_from_the_tree(papers, store):
    model = fake(
        answer({"relevant": True, "attributes": [{**DW_TAG, "main_category": "fast convs"}]}),
        answer({"relevant": True, "attributes": [DW_TAG]}),  # corrected after the retry prompt
        answer({"ideas": [{"text": "Use depthwise convolutions for every 3x3 layer.", **DW_TAG}]}),
    )
    summary = ingest([str(papers / "c_malformed.txt")], store, reader(model))
    assert summary.papers_kept == 1 and summary.ideas_added == 1


def test_interrupted_ingest_resumes_where_it_stopped(papers, store):
    answers = [
        answer({"relevant": True, "attributes": [SE_TAG]}),
        answer({"ideas": [{"text": "Gate channels with a squeeze and excitation block.", **SE_TAG}]}),
    ]

    def stop_after_first(origin: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest([str(papers)], store, reader(fake(*answers)), on_progress=stop_after_first)
    ledger = Ledger(store)
    assert ledger.finished(collect([papers / "a_relevant.md"]).papers[0].hash)
    ledger.close()
    rest = ingest([str(papers)], store, reader(fake(answer({"relevant": False, "attributes": []}),
                                                    answer({"relevant": False, "attributes": []}))))
    assert rest.papers_skipped == 1 and rest.papers_discarded == 2


def test_pre_extracted_ideas_need_no_llm(tmp_path, store):
    path = tmp_path / "ideas.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"Idea {i} about depthwise convolution layer widths.",
                                          **DW_TAG, "source": {"title": "MobileNets", "year": 2017}})
                              for i in range(3)) + "\n", "utf-8")
    summary = ingest([str(path)], store, reader=None)
    assert summary.ideas_added == 3 and not summary.errors
    assert {s.idea.provenance.origin for s in store.ideas()} == {"ideas.jsonl"}
    assert ingest([str(path)], store, reader=None).ideas_skipped == 3


def test_unreadable_inputs_are_reported_and_the_rest_goes_on(tmp_path, store):
    bad_jsonl = tmp_path / "papers.jsonl"
    bad_jsonl.write_text(json.dumps({"title": "", "abstract": "x"}) + "\n", "utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "empty.txt").write_text("  \n", "utf-8")
    summary = ingest([str(bad_jsonl), str(tmp_path / "image.png"), str(tmp_path / "empty.txt"),
                      str(tmp_path / "missing.md")], store, reader=None)
    text = "\n".join(summary.errors)
    assert "papers.jsonl:1: a paper record needs a non-empty 'title'" in text
    assert "image.png: unsupported file type" in text
    assert "empty.txt: no text" in text
    assert "missing.md: no such file or directory" in text


def test_papers_without_a_model_are_not_silently_dropped(papers, store):
    summary = ingest([str(papers)], store, reader=None)
    assert summary.errors == ["3 paper(s) need an LLM ([knowledge.llm]); only idea files were imported"]


def test_pdf_papers_are_read(tmp_path, store):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["Ghost Modules for Cheap Features", "Abstract", "We make more feature maps from cheap operations.",
             "3 Method", "Apply a cheap depthwise convolution to half of the channels.", "4 Experiments", "Results."]
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        figure = plt.figure(figsize=(8.5, 11))
        for index, line in enumerate(lines):
            figure.text(0.1, 0.9 - 0.05 * index, line)
        figure.savefig(tmp_path / "ghost.pdf")
        plt.close(figure)
    [paper] = collect([tmp_path / "ghost.pdf"]).papers
    assert paper.title == "Ghost Modules for Cheap Features"
    assert paper.abstract.startswith("We make more feature maps")
    assert paper.method_section(1000).startswith("Apply a cheap depthwise convolution")
