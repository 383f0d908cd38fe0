"""The knowledge layer: attribute tree, ideas, Chroma store, fair sampling, starter corpus.

Store tests use the lexical ``hashing`` embedding (no model to load); the packaged MiniLM model is
exercised in test_knowledge_offline.py with the network blocked.
"""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from archsmith.knowledge.ideas import IdeaError, Provenance, parse_idea, read_ideas, starter_corpus_path
from archsmith.knowledge.sampling import MODIFY_MODULE, NETWORK, NEW_MODULE, IdeaSampler
from archsmith.knowledge.store import IdeaStore, StoreError
from archsmith.knowledge.tree import AttributeTree, Tag, TreeError

TREE = AttributeTree.load()
CHI2_14_DOF_P001 = 36.12  # chi-square critical value, 14 degrees of freedom, p = 0.001


def idea_record(text: str, main: str = "efficient convolution", sub: str = "depthwise convolution",
                target: str = "efficiency", granularity: str = "operation", **extra):
    return {"text": text, "target": target, "granularity": granularity, "main_category": main,
            "sub_category": sub, "source": {"title": "MobileNets", "year": 2017}, **extra}


def make_ideas(records):
    provenance = Provenance(origin="test", by="hand")
    return [parse_idea(record, TREE, provenance) for record in records]


def open_store(path, **kwargs):
    return IdeaStore.open(path, embedding="hashing", seed_starter=kwargs.pop("seed_starter", False), **kwargs)


# -- tree ------------------------------------------------------------------------------------


def test_packaged_tree_has_fairnads_fifteen_main_categories():
    mains = TREE.main_categories()
    assert len(mains) == 15
    assert sum(1 for tag in mains if tag.target == "performance") == 9
    assert TREE.check(Tag("performance", "operation", "activation", "gelu"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[speed.operation]\nx = ['a']", "speed: unknown target"),
        ("[performance.layer]\nx = ['a']", "performance.layer: unknown granularity"),
        ("[performance.operation]\nx = []", "needs a non-empty list of sub-categories"),
        ("[performance.operation]\nx = ['a', 'a']", "listed twice"),
        ("[performance.operation]\nx = 'a'", "needs a non-empty list"),
        ("[performance", "not valid TOML"),
        ("", "empty"),
    ],
)
def test_tree_validation_names_the_problem(text, message):
    with pytest.raises(TreeError, match=message):
        AttributeTree.from_text(text, "my_tree.toml")


def test_tree_check_suggests_the_nearest_name():
    with pytest.raises(TreeError, match="did you mean 'normalization'"):
        TREE.check(Tag("performance", "operation", "normalisation", "grn"))
    with pytest.raises(TreeError, match="sub_category 'swish' is not under 'activation'"):
        TREE.check(Tag("performance", "operation", "activation", "swish"))


def test_user_tree_file(tmp_path):
    path = tmp_path / "tree.toml"
    path.write_text('[efficiency.network]\n"pruning" = ["channel pruning"]\n', "utf-8")
    tree = AttributeTree.load(path)
    assert [tag.main_key for tag in tree.main_categories()] == ["efficiency/network/pruning"]
    with pytest.raises(TreeError, match="cannot read"):
        AttributeTree.load(tmp_path / "missing.toml")


# -- ideas -----------------------------------------------------------------------------------


def test_idea_validation_errors_name_file_and_line(tmp_path):
    path = tmp_path / "ideas.jsonl"
    lines = [
        json.dumps(idea_record("Use depthwise convolutions in every block.")),
        json.dumps(idea_record("word " * 51)),
        json.dumps(idea_record("A fine idea.", sub="not a sub-category")),
        json.dumps({"text": "no tags"}),
    ]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    with pytest.raises(IdeaError) as raised:
        read_ideas(path, TREE)
    message = str(raised.value)
    assert "3 bad idea record(s)" in message
    assert "ideas.jsonl:2: text: Value error, idea text has 51 words (at most 50)" in message
    assert "ideas.jsonl:3: sub_category 'not a sub-category' is not under 'efficient convolution'" in message
    assert "ideas.jsonl:4:" in message and "target: Field required" in message
    path.write_text("{not json\n", "utf-8")
    with pytest.raises(IdeaError, match="ideas.jsonl:1: not JSON"):
        read_ideas(path, TREE)


def test_idea_id_is_a_hash_of_its_folded_text():
    a, b = make_ideas([idea_record("Use  depthwise convolutions."), idea_record("use depthwise convolutions.")])
    assert a.id == b.id and len(a.id) == 16


def test_starter_corpus_is_valid_and_covers_every_main_category():
    ideas = read_ideas(starter_corpus_path(), TREE)
    assert len(ideas) >= 150
    assert len({idea.id for idea in ideas}) == len(ideas)
    covered = Counter(idea.tag.main_key for idea in ideas)
    assert set(covered) == {tag.main_key for tag in TREE.main_categories()}
    assert all(idea.source.title and idea.source.year for idea in ideas)


# -- store -----------------------------------------------------------------------------------


def test_store_add_is_idempotent_and_persists_across_reopen(tmp_path):
    path = tmp_path / "store"
    ideas = make_ideas([
        idea_record("Replace 3x3 convolutions with depthwise 3x3 plus pointwise 1x1 convolutions."),
        idea_record("Add a squeeze and excitation gate after each residual block.",
                    target="performance", granularity="block and connectivity",
                    main="adaptive feature recalibration", sub="channel attention (SE block)"),
    ])
    store = open_store(path)
    first = store.add(ideas)
    assert len(first.added) == 2 and not first.merged
    again = store.add(ideas)
    assert again.added == [] and sorted(again.skipped) == sorted(i.id for i in ideas)
    version = store.version()
    del store
    reopened = open_store(path)
    assert reopened.count() == 2
    assert reopened.version() == version
    assert {s.idea for s in reopened.ideas()} == set(ideas)


def test_near_duplicates_merge_into_the_stored_idea(tmp_path):
    store = open_store(tmp_path / "store", merge_threshold=0.8)
    original = make_ideas([idea_record("Insert a squeeze and excitation channel gate after every residual block of the network.")])
    store.add(original)
    near = make_ideas([idea_record("Insert a squeeze and excitation channel gate after each residual block of the network.")])
    report = store.add(near)
    assert report.merged == {near[0].id: original[0].id}
    assert store.count() == 1
    assert store.ideas()[0].merged == 1
    batch = make_ideas([idea_record("Use a hard swish activation in the deeper stages of the model."),
                        idea_record("Use a hard swish activation in the deeper stages of this model.")])
    report = store.add(batch)
    assert len(report.added) == 1 and len(report.merged) == 1  # duplicates inside one batch


def test_filters_by_any_level_and_search(tmp_path):
    store = open_store(tmp_path / "store")
    store.add(make_ideas([
        idea_record("Use depthwise convolutions in the stem."),
        idea_record("Use grouped convolutions with eight groups in every bottleneck.", sub="grouped convolution"),
        idea_record("Apply GELU after each pointwise convolution.", target="performance",
                    main="activation", sub="gelu"),
    ]))
    assert len(store.ideas(target="efficiency")) == 2
    assert len(store.ideas(main_category="efficient convolution", sub_category="grouped convolution")) == 1
    assert len(store.ideas(granularity="network")) == 0
    found = store.search("grouped convolutions bottleneck", n=2)
    assert found[0].idea.sub_category == "grouped convolution"
    assert found[0].similarity > found[1].similarity
    assert store.search("gelu", n=3, target="performance")[0].idea.main_category == "activation"
    with pytest.raises(StoreError, match="unknown filter level"):
        store.ideas(colour="red")


def test_each_embedding_has_its_own_collection_with_the_starter_ideas(tmp_path):
    path = tmp_path / "store"
    hashing = IdeaStore.open(path, embedding="hashing")
    hashing.add(make_ideas([idea_record("Use depthwise convolutions in the stem.")]))
    lexical = hashing.count()
    minilm = IdeaStore.open(path, embedding="minilm", seed_starter=False)  # no vectors needed here
    assert minilm.count() == 0 and minilm.embedder.name == "all-MiniLM-L6-v2"
    assert minilm.embeddings == {"all-MiniLM-L6-v2": 0, "hashing-384": lexical}
    reopened = IdeaStore.open(path, embedding="hashing")  # unharmed by the other model's collection
    assert reopened.count() == lexical and reopened.stats()["embeddings"]["hashing-384"] == lexical
    manifest = json.loads((path / "store.json").read_text("utf-8"))
    assert manifest["format"] == 2 and set(manifest["collections"]) == {"hashing-384", "all-MiniLM-L6-v2"}
    assert manifest["collections"]["hashing-384"]["starter_imported"] is True


def _legacy_store(path, ideas):
    """A store as the first format wrote it: one collection, 'ideas', tagged with its model."""
    import chromadb
    from chromadb.config import Settings

    from archsmith.knowledge.embedding import get_embedder

    embedder = get_embedder("hashing")
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    collection = client.get_or_create_collection(
        "ideas", configuration={"hnsw": {"space": "cosine"}},
        metadata={"embedding_model": embedder.name, "dim": embedder.dim}, embedding_function=None)
    collection.add(ids=[idea.id for idea in ideas], embeddings=embedder.embed([idea.text for idea in ideas]),
                   documents=[idea.text for idea in ideas], metadatas=[idea.metadata() for idea in ideas])
    (path / "store.json").write_text(json.dumps({
        "format": 1, "embedding_model": embedder.name, "dim": embedder.dim, "tree": TREE.fingerprint(),
        "created": "2026-01-01T00:00:00+0000", "starter_imported": True}), "utf-8")
    del client


def test_a_store_of_the_first_format_opens_with_its_ideas_and_takes_other_embeddings(tmp_path, monkeypatch):
    monkeypatch.setenv("ORT_DISABLE_TELEMETRY", "1")  # as IdeaStore does before chromadb is imported
    path = tmp_path / "store"
    ideas = make_ideas([idea_record("Use depthwise convolutions in the stem."),
                        idea_record("Replace ReLU with GELU.", target="performance", main="activation", sub="gelu")])
    _legacy_store(path, ideas)
    old = IdeaStore.open(path, embedding="hashing")  # the starter corpus counted as imported: as it was
    assert sorted(stored.id for stored in old.ideas()) == sorted(idea.id for idea in ideas)
    assert old.search("depthwise stem", n=1)[0].id == ideas[0].id
    manifest = json.loads((path / "store.json").read_text("utf-8"))
    assert manifest["format"] == 2 and manifest["collections"]["hashing-384"]["collection"] == "ideas"
    new = IdeaStore.open(path, embedding="minilm", seed_starter=False)
    assert new.count() == 0 and new.embeddings == {"all-MiniLM-L6-v2": 0, "hashing-384": 2}
    assert IdeaStore.open(path, embedding="hashing").count() == 2


def test_an_unknown_store_format_names_the_fix(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "store.json").write_text('{"format": 9}', "utf-8")
    with pytest.raises(StoreError, match="store format 9, this Archsmith reads formats 1, 2; upgrade Archsmith, "
                                         r"or set knowledge.path \(or --store\)"):
        open_store(tmp_path / "store")


def test_a_foreign_directory_is_not_taken_over(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "notes.txt").write_text("mine", "utf-8")
    with pytest.raises(StoreError, match=r"not an Archsmith idea store; set knowledge.path \(or --store\)"):
        open_store(tmp_path / "store")


def test_a_new_store_gets_the_starter_corpus_once(private_data_dir):
    store = IdeaStore.open(embedding="hashing")  # default path: the per-user data directory
    assert store.path == private_data_dir / "knowledge"
    count = store.count()
    assert count >= 140  # the corpus less any near-duplicates merged by the lexical embedding
    stats = store.stats()
    assert stats["total"] == count and all(n > 0 for n in stats["main_categories"].values())
    assert IdeaStore.open(embedding="hashing").count() == count


# -- sampling --------------------------------------------------------------------------------


def _stored(n_per_main: dict[str, int]):
    from archsmith.knowledge.store import StoredIdea

    out = []
    for tag in TREE.main_categories():
        sub = TREE.branches[tag.target][tag.granularity][tag.main_category][0]
        for index in range(n_per_main.get(tag.main_category, 1)):
            record = idea_record(f"{tag.main_category} idea number {index}", target=tag.target,
                                 granularity=tag.granularity, main=tag.main_category, sub=sub)
            idea = make_ideas([record])[0]
            out.append(StoredIdea(idea.id, idea))
    return out


def test_main_category_sampling_is_fair_despite_imbalance():
    ideas = _stored({"feature extraction operators": 60, "activation": 20})  # 13 others have 1 idea
    sampler = IdeaSampler(ideas, "main_category")
    rng = random.Random(0)
    draws = Counter(sampler.draw(rng).stored.idea.tag.main_key for _ in range(10_000))
    assert len(draws) == 15
    expected = 10_000 / 15
    statistic = sum((count - expected) ** 2 / expected for count in draws.values())
    assert statistic < CHI2_14_DOF_P001, statistic
    uniform = IdeaSampler(ideas, "uniform")
    rng = random.Random(0)
    biased = Counter(uniform.draw(rng).stored.idea.main_category for _ in range(10_000))
    assert biased["feature extraction operators"] > 5000  # 60 of 93 ideas


def test_sampling_is_seeded_and_mutation_targets_follow_granularity():
    sampler = IdeaSampler(_stored({}), "granularity")
    first = [sampler.draw(random.Random(7)).stored.id for _ in range(3)]
    assert first == [sampler.draw(random.Random(7)).stored.id for _ in range(3)]
    rng = random.Random(1)
    targets = {}
    for _ in range(300):
        drawn = sampler.draw(rng)
        targets.setdefault(drawn.stored.idea.granularity, set()).add(drawn.mutation_target)
    assert targets["network"] == {NETWORK}
    assert targets["operation"] == {NEW_MODULE, MODIFY_MODULE}
    assert targets["block and connectivity"] == {NEW_MODULE, MODIFY_MODULE}
    with pytest.raises(ValueError, match="no ideas to sample"):
        IdeaSampler([], "main_category")
