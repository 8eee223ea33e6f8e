"""Hybrid retrieval: dense (cosine) and keyword (BM25) rankings fused, then grouped by document.

Several weighted query texts can be searched at once (the question alone, the question with the
previous turn), so that a follow-up finds its article without a slow rewriting call to the model.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from knowledge.store import KnowledgeStore, StoredChunk

# Reciprocal-rank-fusion constant from Cormack et al. (2009); 60 is the usual default.
RRF_K = 60

WORD_RE = re.compile(r"[a-z0-9]+(?:['+#.-][a-z0-9]+)*")


@dataclass(frozen=True)
class WeightedQuery:
    """One text to search for and its share in the fused ranking."""

    text: str
    weight: float = 1.0


@dataclass
class DocumentHit:
    """A retrieved document: its best chunks and scores."""

    source: str
    title: str
    fused: float
    similarity: float
    chunks: list[StoredChunk] = field(default_factory=list)


class _KeywordIndex:
    """BM25 over the live chunks, rebuilt when the store's generation changes."""

    def __init__(self, chunks: list[StoredChunk], synonyms: dict[str, list[str]]):
        import bm25s
        import Stemmer

        self.chunks = chunks
        self._stemmer = Stemmer.Stemmer("english")
        self._synonyms = synonyms
        self._bm25 = None
        if chunks:
            texts = [f"{c.title} {c.heading} {c.title} {c.text}" for c in chunks]
            tokens = bm25s.tokenize(
                texts, stopwords="en", stemmer=self._stemmer, show_progress=False
            )
            self._bm25 = bm25s.BM25()
            self._bm25.index(tokens, show_progress=False)
            self._vocab = tokens.vocab

    def rank(self, text: str, n: int) -> list[tuple[int, float]]:
        if self._bm25 is None:
            return []
        import bm25s

        words = [w for w in expand_synonyms(text.lower(), self._synonyms).split() if w]
        tokens = bm25s.tokenize(
            " ".join(words),
            stopwords="en",
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )[0]
        known = [t for t in tokens if t in self._vocab]
        if not known:
            return []
        scores = self._bm25.get_scores(known)
        order = scores.argsort()[::-1][:n]
        return [(int(i), float(scores[i])) for i in order if scores[i] > 0]


def expand_synonyms(text: str, synonyms: dict[str, list[str]]) -> str:
    """Append the configured alternative words for terms found in ``text``."""
    if not synonyms:
        return text
    words = set(WORD_RE.findall(text.lower()))
    extra = [alt for term, alts in synonyms.items() if term.lower() in words for alt in alts]
    return f"{text} {' '.join(extra)}" if extra else text


class HybridRetriever:
    """Searches the knowledge store; safe to share between threads."""

    def __init__(
        self,
        store: KnowledgeStore,
        *,
        dense_candidates: int = 40,
        keyword_candidates: int = 40,
        keyword_weight: float = 1.0,
        synonyms: dict[str, list[str]] | None = None,
    ):
        self.store = store
        self.dense_candidates = dense_candidates
        self.keyword_candidates = keyword_candidates
        self.keyword_weight = keyword_weight
        self.synonyms = dict(synonyms or {})
        self._index: _KeywordIndex | None = None
        self._generation = -1
        self._lock = threading.Lock()

    def _keyword_index(self) -> _KeywordIndex:
        generation = self.store.generation()
        with self._lock:
            if self._index is None or generation != self._generation:
                self._index = _KeywordIndex(self.store.live_chunks(), self.synonyms)
                self._generation = generation
            return self._index

    def retrieve(self, queries: Sequence[WeightedQuery], k: int = 5) -> list[DocumentHit]:
        """The ``k`` best documents for the weighted queries, best first."""
        fused: dict[str, float] = defaultdict(float)
        by_id: dict[str, StoredChunk] = {}
        similarity: dict[str, float] = {}
        index = self._keyword_index()
        texts = [expand_synonyms(q.text, self.synonyms) for q in queries]
        vectors = self.store.embeddings.embed_documents(texts) if texts else []
        for query, vector in zip(queries, vectors, strict=True):
            for rank, chunk in enumerate(self.store.search(vector, self.dense_candidates)):
                fused[chunk.chunk_id] += query.weight / (RRF_K + rank)
                by_id.setdefault(chunk.chunk_id, chunk)
                if query is queries[0]:
                    similarity[chunk.chunk_id] = chunk.similarity
            for rank, (position, _score) in enumerate(
                index.rank(query.text, self.keyword_candidates)
            ):
                chunk = index.chunks[position]
                fused[chunk.chunk_id] += self.keyword_weight * query.weight / (RRF_K + rank)
                by_id.setdefault(chunk.chunk_id, chunk)
        return self._group(fused, by_id, similarity, k)

    @staticmethod
    def _group(
        fused: dict[str, float],
        by_id: dict[str, StoredChunk],
        similarity: dict[str, float],
        k: int,
    ) -> list[DocumentHit]:
        docs: dict[str, DocumentHit] = {}
        for chunk_id in sorted(fused, key=fused.__getitem__, reverse=True):
            chunk = by_id[chunk_id]
            sim = similarity.get(chunk_id, 0.0)
            scored = StoredChunk(**{**chunk.__dict__, "similarity": sim})
            hit = docs.get(chunk.source)
            if hit is None:
                docs[chunk.source] = DocumentHit(
                    chunk.source, chunk.title, fused[chunk_id], sim, [scored]
                )
            else:
                hit.similarity = max(hit.similarity, sim)
                hit.chunks.append(scored)
        ranked = sorted(docs.values(), key=lambda d: d.fused, reverse=True)
        return ranked[:k]
