"""Knowledge store figures: import speed, search latency, sampling fairness. Prints tables.

    python benchmarks/knowledge_bench.py                 # the issue's targets (about 3 minutes on 2 cores)
    python benchmarks/knowledge_bench.py --search-size 2000 --embedding hashing   # quick look

1. Import N pre-extracted ideas (default 1,000, JSONL -> validated -> embedded -> near-duplicate
   check -> stored) into a fresh store; the embedding model's one-off load is timed apart.
2. Semantic search latency (p50/p90/p99 of 200 queries, n=5) on a store of M ideas (default 20,000;
   built with merge_threshold 1.0 so that the synthetic ideas are all kept).
3. Fair sampling: draws per main category over 10,000 draws from the starter corpus (imbalanced
   across categories), with the chi-square statistic against uniform.
Synthetic ideas are combinations of phrases, tagged with real leaves of the attribute tree.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from archsmith.knowledge.embedding import get_embedder
from archsmith.knowledge.ideas import Provenance, parse_idea, read_ideas, starter_corpus_path
from archsmith.knowledge.sampling import IdeaSampler
from archsmith.knowledge.store import IdeaStore
from archsmith.knowledge.tree import AttributeTree

ACTIONS = ["Replace", "Insert", "Stack", "Widen", "Narrow", "Reorder", "Split", "Fuse", "Gate", "Share"]
THINGS = ["the 3x3 convolutions", "the stem", "every bottleneck", "the last stage", "the shortcut path",
          "the pointwise layers", "the downsampling blocks", "the attention heads", "the classifier input",
          "the second stage", "the expansion layers", "the early stages"]
HOWS = ["with depthwise separable filters", "with a channel gate", "with a larger kernel", "with grouped filters",
        "with a parallel branch", "with learnable scaling", "with a pooling mixer", "with a dilated filter",
        "with layer normalization", "with a squeeze block", "with dense concatenation", "with halved width"]
WHYS = ["to save FLOPs", "to widen the receptive field", "to keep accuracy at lower cost", "to mix channels",
        "to reuse features", "to stabilise deep stacks", "to capture global context", "to cut parameters"]
CHI2_CRITICAL_P001 = {14: 36.12}  # chi-square critical values at p = 0.001 by degrees of freedom


def synthetic_records(count: int, tree: AttributeTree, seed: int) -> list[dict]:
    rng = random.Random(seed)
    leaves = tree.leaves()
    seen: set[str] = set()
    records = []
    while len(records) < count:
        text = f"{rng.choice(ACTIONS)} {rng.choice(THINGS)} {rng.choice(HOWS)} {rng.choice(WHYS)}, variant {rng.randrange(10**6)}."
        if text in seen:
            continue
        seen.add(text)
        leaf = rng.choice(leaves)
        records.append({"text": text, "target": leaf.target, "granularity": leaf.granularity,
                        "main_category": leaf.main_category, "sub_category": leaf.sub_category,
                        "source": {"title": "Synthetic benchmark paper", "year": 2026}})
    return records


def bench_import(workdir: Path, embedding: str, count: int) -> dict:
    tree = AttributeTree.load()
    path = workdir / "import.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in synthetic_records(count, tree, 1)) + "\n", "utf-8")
    started = time.perf_counter()
    get_embedder(embedding).embed(["warm up the model"])
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    store = IdeaStore.open(workdir / "import-store", embedding, tree, seed_starter=False)
    report = store.add(read_ideas(path, tree))
    import_s = time.perf_counter() - started
    return {"ideas": count, "added": len(report.added), "merged": len(report.merged),
            "model_load_s": load_s, "import_s": import_s, "ideas_per_s": count / import_s}


def bench_search(workdir: Path, embedding: str, size: int) -> dict:
    tree = AttributeTree.load()
    provenance = Provenance(origin="benchmark", by="hand")
    ideas = [parse_idea(r, tree, provenance) for r in synthetic_records(size, tree, 2)]
    started = time.perf_counter()
    store = IdeaStore.open(workdir / "search-store", embedding, tree, merge_threshold=1.0, seed_starter=False)
    store.add(ideas)
    build_s = time.perf_counter() - started
    rng = random.Random(3)
    queries = [f"{rng.choice(HOWS)} {rng.choice(WHYS)}" for _ in range(200)]
    store.search(queries[0], n=5)  # first query pays one-off costs
    latencies = []
    for query in queries:
        started = time.perf_counter()
        store.search(query, n=5)
        latencies.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(latencies, n=100)
    return {"store_ideas": store.count(), "build_s": build_s, "p50_ms": cuts[49], "p90_ms": cuts[89],
            "p99_ms": cuts[98]}


def bench_sampling(draws: int) -> dict:
    tree = AttributeTree.load()
    ideas = read_ideas(starter_corpus_path(), tree)
    from archsmith.knowledge.store import StoredIdea

    sampler = IdeaSampler([StoredIdea(idea.id, idea) for idea in ideas], "main_category")
    rng = random.Random(0)
    counts = Counter(sampler.draw(rng).stored.idea.tag.main_key for _ in range(draws))
    corpus = Counter(idea.tag.main_key for idea in ideas)
    expected = draws / len(sampler.groups)
    chi2 = sum((counts.get(key, 0) - expected) ** 2 / expected for key in sampler.groups)
    dof = len(sampler.groups) - 1
    try:
        from scipy.stats import chi2 as chi2_distribution

        p_value = float(chi2_distribution.sf(chi2, dof))
    except ImportError:
        p_value = None
    return {"draws": draws, "groups": len(sampler.groups), "chi2": chi2, "dof": dof, "p_value": p_value,
            "critical_p001": CHI2_CRITICAL_P001.get(dof), "per_category": {k: (corpus[k], counts[k]) for k in sampler.groups}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedding", default="minilm", choices=["minilm", "hashing"])
    parser.add_argument("--import-size", type=int, default=1000)
    parser.add_argument("--search-size", type=int, default=20000)
    parser.add_argument("--draws", type=int, default=10000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        imported = bench_import(workdir, args.embedding, args.import_size)
        searched = bench_search(workdir, args.embedding, args.search_size)
    sampled = bench_sampling(args.draws)

    print(f"\n## import ({args.embedding})  target: 1,000 ideas in <= 30 s")
    print("| ideas | added | merged | model load s | import s | ideas/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {imported['ideas']} | {imported['added']} | {imported['merged']} | {imported['model_load_s']:.1f} "
          f"| {imported['import_s']:.1f} | {imported['ideas_per_s']:.0f} |")
    print(f"\n## search ({args.embedding}, n=5, 200 queries)  target: p50 <= 50 ms on 20,000 ideas")
    print("| store ideas | build s | p50 ms | p90 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {searched['store_ideas']} | {searched['build_s']:.0f} | {searched['p50_ms']:.1f} "
          f"| {searched['p90_ms']:.1f} | {searched['p99_ms']:.1f} |")
    print(f"\n## fair sampling over main categories ({sampled['draws']} draws, starter corpus)")
    print("| main category | ideas in corpus | draws |")
    print("|---|---:|---:|")
    for key, (corpus, draws) in sampled["per_category"].items():
        print(f"| {key} | {corpus} | {draws} |")
    p_text = f", p = {sampled['p_value']:.3f}" if sampled["p_value"] is not None else ""
    critical = sampled["critical_p001"]
    print(f"\nchi-square vs uniform: {sampled['chi2']:.2f} with {sampled['dof']} dof{p_text}"
          + (f" (critical value at p=0.001: {critical})" if critical else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
