"""Hubness correction: chunks that sit close to everything lose a share of their similarity."""

from __future__ import annotations

import numpy as np

from knowledge.retriever import FusionWeights, HybridRetriever, WeightedQuery, hubness
from knowledge.store import StoredChunk


def test_a_vector_close_to_many_others_has_the_highest_hubness():
    rng = np.random.default_rng(7)
    centre = rng.normal(size=16)
    near = [centre + rng.normal(scale=0.3, size=16) for _ in range(4)]
    far = [rng.normal(size=16) * 3 for _ in range(4)]
    vectors = np.asarray([centre, *near, *far])

    values = hubness(vectors, neighbours=3)

    assert values.shape == (9,)
    assert values.argmax() == 0, "the centre is near all of its neighbours"
    assert values[0] > values[5:].max()


def test_a_vector_is_not_its_own_neighbour_and_blocks_give_the_same_answer():
    vectors = np.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])

    values = hubness(vectors, neighbours=1)

    np.testing.assert_allclose(values, [1.0, 1.0, 0.8, 0.8], atol=1e-6)
    np.testing.assert_allclose(hubness(vectors, neighbours=2, block=3), hubness(vectors, 2))


def test_too_few_vectors_have_no_hubness():
    assert hubness(np.zeros((1, 4)), neighbours=5).tolist() == [0.0]
    assert hubness(np.zeros((0, 4)), neighbours=5).shape == (0,)


class FakeStore:
    """Two documents found by a query: an overview (a hub) slightly closer than the article."""

    def __init__(self):
        self.embeddings = self
        self.chunks = [
            StoredChunk("overview:1:0", "overview.md", "Overview", "", "all the things", 0.60),
            StoredChunk("schedules:1:0", "schedules.md", "Schedules", "", "timers at night", 0.55),
        ]
        # The overview's chunk points the same way as three others; the article's is alone.
        self.vectors = np.asarray(
            [[1.0, 0.1, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.1], [1.0, 0.1, 0.1], [0.9, 0.2, 0.0]]
        )

    def embed_documents(self, texts):
        return [[1.0, 0.0, 0.0] for _ in texts]

    def generation(self):
        return 1

    def live_chunks(self):
        return self.chunks

    def live_vectors(self):
        neighbours = [StoredChunk(f"{n}:1:0", f"{n}.md", n, "", "", 0.0) for n in "abc"]
        return self.chunks + neighbours, self.vectors

    def search(self, vector, n):
        return list(self.chunks)

    def search_titles(self, vector, n):
        return {}


def test_the_article_outranks_a_hub_that_is_only_slightly_closer():
    query = [WeightedQuery("qqq", 1.0)]
    plain = HybridRetriever(FakeStore(), weights=FusionWeights(0, 0, hubness=0))
    corrected = HybridRetriever(FakeStore(), weights=FusionWeights(0, 0, hubness=0.2))

    assert [h.source for h in plain.retrieve(query)] == ["overview.md", "schedules.md"]
    hits = corrected.retrieve(query)
    assert [h.source for h in hits] == ["schedules.md", "overview.md"]
    assert [h.similarity for h in hits] == [0.55, 0.60], "the threshold sees plain similarity"
    assert corrected.chunk_hubness("overview:1:0") > corrected.chunk_hubness("schedules:1:0")
