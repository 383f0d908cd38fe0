"""The packaged MiniLM embedding works with the network blocked, and attempts no connection."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from archsmith.knowledge.ideas import read_ideas, starter_corpus_path
from archsmith.knowledge.store import IdeaStore
from archsmith.knowledge.tree import AttributeTree

pytestmark = pytest.mark.slow  # loads the 90 MB model (several seconds)


@pytest.fixture
def no_network(monkeypatch):
    """Refuse, and record, every connection that is not to a Unix socket or the loopback."""
    attempts: list[object] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def local(address) -> bool:
        if isinstance(address, (str, bytes)):  # AF_UNIX
            return True
        host = str(address[0])
        return host in ("localhost", "::1") or host.startswith("127.")

    def guarded(real):
        def connect(self, address):
            if not local(address):
                attempts.append(address)
                raise OSError(f"network blocked by the test: {address}")
            return real(self, address)
        return connect

    monkeypatch.setattr(socket.socket, "connect", guarded(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(real_connect_ex))
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            attempts.append(host)
            raise OSError(f"name resolution blocked by the test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def test_minilm_store_works_offline(tmp_path, no_network):
    tree = AttributeTree.load()
    store = IdeaStore.open(tmp_path / "store", embedding="minilm", seed_starter=False)
    ideas = read_ideas(starter_corpus_path(), tree)[:40]
    report = store.add(ideas)
    assert len(report.added) + len(report.merged) == 40
    hits = store.search("make the network cheaper with depthwise separable convolutions", n=3)
    assert any("depthwise" in hit.idea.text.lower() for hit in hits)
    assert all(hit.similarity > 0.3 for hit in hits)
    assert no_network == []
    assert store.version()["embedding_model"] == "all-MiniLM-L6-v2"


def test_minilm_merges_paraphrases_lexical_hashing_does_not(tmp_path, no_network):
    from archsmith.knowledge.ideas import Provenance, parse_idea

    tag = {"target": "performance", "granularity": "block and connectivity",
           "main_category": "adaptive feature recalibration", "sub_category": "channel attention (SE block)",
           "source": {"title": "Squeeze-and-Excitation Networks", "year": 2018}}
    texts = ["Add a squeeze-and-excitation block after every residual block to reweight channels.",
             "After each residual block, add a squeeze and excitation module that reweights the channels."]
    ideas = [parse_idea({"text": t, **tag}, AttributeTree.load(), Provenance(origin="t")) for t in texts]
    minilm = IdeaStore.open(tmp_path / "minilm", embedding="minilm", seed_starter=False, merge_threshold=0.88)
    assert len(minilm.add(ideas).merged) == 1
    hashing = IdeaStore.open(tmp_path / "hashing", embedding="hashing", seed_starter=False, merge_threshold=0.88)
    assert len(hashing.add(ideas).merged) == 0
    assert no_network == []


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a network namespace")
def test_store_builds_inside_a_namespace_without_network(tmp_path):
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unprivileged network namespaces are not available here")
    script = textwrap.dedent(f"""
        from archsmith.knowledge.store import IdeaStore
        store = IdeaStore.open({str(tmp_path / 'store')!r}, embedding="minilm")
        print(store.count(), store.search("channel attention", n=1)[0].idea.main_category)
    """)
    result = subprocess.run(["unshare", "-rn", sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    count, category = result.stdout.split(maxsplit=1)
    assert int(count) >= 150
    assert category.strip() == "adaptive feature recalibration"
