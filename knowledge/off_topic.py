"""Examples of questions a help center should not answer, and how close a question comes to them.

A question that is more like one of these examples than like any document (another company's
app, someone's bank, a joke request) is better handed to a person than answered from the
nearest article, which would be about something else.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

log = logging.getLogger(__name__)

BUNDLED_EXAMPLES = Path(__file__).resolve().parent / "off_topic_examples.txt"


class OffTopicExamplesError(ValueError):
    """The examples file cannot be used."""


@dataclass(frozen=True)
class OffTopicMatch:
    """The example closest to a question, and its cosine similarity to the question.

    ``document_similarity`` is the best chunk's similarity to the same question, the one the
    example's is compared with (the retriever fills it in).
    """

    example: str
    similarity: float
    document_similarity: float | None = None

    @property
    def lead(self) -> float:
        """How much closer the question is to the example than to the documents."""
        return self.similarity - (self.document_similarity or 0.0)


def read_examples(path: Path) -> list[str]:
    """One question per line; blank lines and lines starting with # are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OffTopicExamplesError(f"cannot read off-topic examples {path}: {exc}") from exc
    examples = [line.strip() for line in text.splitlines()]
    examples = list(dict.fromkeys(e for e in examples if e and not e.startswith("#")))
    if not examples:
        raise OffTopicExamplesError(f"{path} holds no off-topic examples")
    return examples


class OffTopicExamples:
    """The examples' embeddings, computed on first use and kept in ``cache_dir`` if given.

    The cache file's name is a hash of the embedding model and the examples, so a changed
    list or model is embedded afresh. Safe to share across threads.
    """

    def __init__(
        self,
        examples: Sequence[str],
        embeddings: Embeddings,
        *,
        model_name: str = "",
        cache_dir: Path | None = None,
    ):
        if not examples:
            raise OffTopicExamplesError("no off-topic examples given")
        self.examples = list(examples)
        self.embeddings = embeddings
        digest = hashlib.sha256("\n".join([model_name, *self.examples]).encode()).hexdigest()
        self.cache_path = cache_dir / f"off_topic-{digest[:16]}.npy" if cache_dir else None
        self._vectors: np.ndarray | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_file(
        cls,
        path: Path,
        embeddings: Embeddings,
        *,
        model_name: str = "",
        cache_dir: Path | None = None,
    ) -> OffTopicExamples:
        return cls(read_examples(path), embeddings, model_name=model_name, cache_dir=cache_dir)

    def vectors(self) -> np.ndarray:
        with self._lock:
            if self._vectors is None:
                cached = self._cached()
                self._vectors = cached if cached is not None else self._embedded()
            return self._vectors

    def index_for(self, knowledge: np.ndarray, overlap: float, block: int = 4096) -> OffTopicIndex:
        """The examples a knowledge base does not cover.

        An example whose cosine similarity to some chunk vector in ``knowledge`` reaches
        ``overlap`` is set aside: that help center has a document on the topic (a lighting
        company's help center and an example about another brand's bulbs), so a question like
        it is not off-topic there.
        """
        vectors = self.vectors()
        nearest = np.full(len(vectors), -1.0, dtype=np.float32)
        if len(knowledge):
            unit = _unit(np.asarray(knowledge, dtype=np.float32))
            for start in range(0, len(unit), block):
                sims = vectors @ unit[start : start + block].T
                nearest = np.maximum(nearest, sims.max(axis=1))
        keep = nearest < overlap
        return OffTopicIndex(
            [e for e, k in zip(self.examples, keep, strict=True) if k], vectors[keep]
        )

    def _cached(self) -> np.ndarray | None:
        if self.cache_path is None or not self.cache_path.is_file():
            return None
        try:
            vectors = np.load(self.cache_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.cache_path, exc)
            return None
        if vectors.ndim != 2 or len(vectors) != len(self.examples):
            return None
        return vectors

    def _embedded(self) -> np.ndarray:
        vectors = _unit(np.asarray(self.embeddings.embed_documents(self.examples), np.float32))
        if self.cache_path is not None:
            try:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                partial = self.cache_path.with_suffix(".partial.npy")
                np.save(partial, vectors, allow_pickle=False)
                partial.replace(self.cache_path)
            except OSError as exc:
                log.warning("cannot cache off-topic vectors in %s: %s", self.cache_path, exc)
        log.info("embedded %d off-topic examples", len(vectors))
        return vectors


class OffTopicIndex:
    """The off-topic examples in use for one knowledge base, and their vectors."""

    def __init__(self, examples: list[str], vectors: np.ndarray):
        self.examples = examples
        self.vectors = vectors

    def __len__(self) -> int:
        return len(self.examples)

    def closest(self, vector: Sequence[float]) -> OffTopicMatch | None:
        """The example most similar to a normalised query ``vector`` (None without examples)."""
        if not self.examples:
            return None
        similarities = self.vectors @ np.asarray(vector, dtype=np.float32)
        best = int(similarities.argmax())
        return OffTopicMatch(self.examples[best], float(similarities[best]))


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)
