"""The knowledge layer from a config section: open the store, build the sampler and the paper reader.

Used by the run lifecycle, the Navigator and the ``archsmith knowledge`` commands, so each reads
``[knowledge]`` the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archsmith.graph.config import KnowledgeConfig
from archsmith.knowledge.sampling import IdeaSampler
from archsmith.knowledge.store import IdeaStore, StoreError
from archsmith.knowledge.tree import AttributeTree


def open_store(config: KnowledgeConfig, seed_starter: bool = True) -> IdeaStore:
    """The store named by the config (created, with the starter corpus, if it does not exist)."""
    tree = AttributeTree.load(config.tree)
    return IdeaStore.open(config.path, config.embedding, tree, config.merge_threshold, seed_starter)


def make_sampler(store: IdeaStore, config: KnowledgeConfig) -> IdeaSampler:
    ideas = store.ideas(target=config.target)
    if not ideas:
        raise StoreError(
            f"the idea store at {store.path} has no ideas"
            + (f" with target {config.target!r}" if config.target else "")
            + "; import some with `archsmith knowledge ingest`"
        )
    return IdeaSampler(ideas, config.sampling)


def make_reader(config: KnowledgeConfig, tree: AttributeTree, prompts_dir: str | Path | None = None,
                models: Any = None):  # noqa: ANN201 - PaperReader, imported lazily (LangChain)
    """The two-step LLM paper reader, with the model of ``[knowledge.llm]``."""
    from archsmith.agents.llm import ChatModelProvider
    from archsmith.agents.prompts import PromptLoader
    from archsmith.knowledge.ingest import ROLE, PaperReader

    provider = models or ChatModelProvider()
    chat_model = provider.get(ROLE, config.llm)
    return PaperReader(chat_model, config.llm, tree, PromptLoader(prompts_dir), config.max_paper_chars)
