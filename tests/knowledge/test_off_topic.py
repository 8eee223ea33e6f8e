"""Off-topic examples: reading the list, caching its vectors, and setting aside what a store covers."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from knowledge.off_topic import (
    BUNDLED_EXAMPLES,
    OffTopicExamples,
    OffTopicExamplesError,
    read_examples,
)
from knowledge.retriever import own_names, without_words
from knowledge.store import StoredChunk

VOCABULARY = ["bank", "fee", "pizza", "bulb", "wifi", "invoice", "recipe"]


class WordEmbeddings(Embeddings):
    """One dimension per vocabulary word, and a count of the texts it was asked to embed."""

    def __init__(self):
        self.embedded: list[str] = []

    def _vector(self, text: str) -> list[float]:
        words = text.lower().split()
        vector = np.array([float(w in words) for w in VOCABULARY]) + 0.01
        return (vector / np.linalg.norm(vector)).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded.extend(texts)
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


def test_read_examples_skips_comments_blank_lines_and_repeats(tmp_path):
    path = tmp_path / "examples.txt"
    path.write_text("# a comment\n\n  bank fee refund  \nbank fee refund\npizza recipe\n# end\n")

    assert read_examples(path) == ["bank fee refund", "pizza recipe"]


def test_read_examples_names_a_missing_or_empty_file(tmp_path):
    with pytest.raises(OffTopicExamplesError, match="missing.txt"):
        read_examples(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(OffTopicExamplesError, match="no off-topic examples"):
        read_examples(empty)


def test_bundled_examples_are_a_real_list():
    examples = read_examples(BUNDLED_EXAMPLES)

    assert len(examples) >= 300
    assert all(4 <= len(e.split()) <= 40 for e in examples)


def test_closest_example_and_its_similarity():
    examples = OffTopicExamples(["bank fee", "pizza recipe"], WordEmbeddings())
    index = examples.index_for(np.zeros((0, len(VOCABULARY))), overlap=0.5)

    match = index.closest(WordEmbeddings().embed_query("pizza"))

    assert match.example == "pizza recipe"
    assert match.similarity == pytest.approx(0.707, abs=0.01)


def test_examples_a_store_covers_are_set_aside():
    embeddings = WordEmbeddings()
    examples = OffTopicExamples(["bulb wifi", "bank fee", "pizza recipe"], embeddings)
    lighting_docs = np.array(embeddings.embed_documents(["bulb wifi invoice"]))

    index = examples.index_for(lighting_docs, overlap=0.7)

    assert index.examples == ["bank fee", "pizza recipe"]
    assert index.closest(embeddings.embed_query("bulb wifi")).example != "bulb wifi"


def test_every_example_covered_leaves_no_check():
    embeddings = WordEmbeddings()
    examples = OffTopicExamples(["bank fee"], embeddings)

    index = examples.index_for(np.array(embeddings.embed_documents(["bank fee"])), overlap=0.5)

    assert len(index) == 0
    assert index.closest(embeddings.embed_query("bank")) is None


def test_vectors_are_cached_per_model_and_list(tmp_path):
    first = WordEmbeddings()
    OffTopicExamples(["bank fee", "pizza"], first, model_name="m", cache_dir=tmp_path).vectors()
    assert first.embedded == ["bank fee", "pizza"]

    again = WordEmbeddings()
    vectors = OffTopicExamples(
        ["bank fee", "pizza"], again, model_name="m", cache_dir=tmp_path
    ).vectors()
    assert again.embedded == []  # read from the cache
    assert vectors.shape == (2, len(VOCABULARY))

    changed_list, other_model = WordEmbeddings(), WordEmbeddings()
    OffTopicExamples(["bank fee"], changed_list, model_name="m", cache_dir=tmp_path).vectors()
    OffTopicExamples(
        ["bank fee", "pizza"], other_model, model_name="n", cache_dir=tmp_path
    ).vectors()
    assert changed_list.embedded == ["bank fee"]
    assert other_model.embedded == ["bank fee", "pizza"]


def test_an_unreadable_cache_is_embedded_afresh(tmp_path, caplog):
    examples = OffTopicExamples(["bank fee"], WordEmbeddings(), cache_dir=tmp_path)
    examples.cache_path.write_bytes(b"not numpy")
    embeddings = WordEmbeddings()
    fresh = OffTopicExamples(["bank fee"], embeddings, cache_dir=tmp_path)

    with caplog.at_level(logging.WARNING):
        vectors = fresh.vectors()

    assert embeddings.embedded == ["bank fee"]
    assert vectors.shape == (1, len(VOCABULARY))
    assert "ignoring unreadable" in caplog.text
    assert np.load(fresh.cache_path).shape == (1, len(VOCABULARY))  # rewritten


def _chunk(source: str, text: str, title: str = "") -> StoredChunk:
    return StoredChunk(f"{source}#0", source, title or source, "", text)


def test_own_names_are_unknown_words_in_most_documents():
    chunks = [
        _chunk("a.md", "Pair a bulb with the Lumora app."),
        _chunk("b.md", "Lumora plans and pricing: the bulb is free."),
        _chunk("c.md", "Reset the hub.", title="Lumora hub"),
        _chunk("d.md", "Zigbee bulbs pair with the hub."),
    ]
    vocabulary = frozenset(
        {"pair", "a", "bulb", "bulbs", "with", "the", "app", "hub", "reset", "plans", "and"}
    )

    # "bulb" and "the" are in most documents but are known words; "zigbee" is in one.
    assert own_names(chunks, vocabulary) == {"lumora"}


def test_a_small_store_has_no_own_names():
    chunks = [_chunk("a.md", "Lumora"), _chunk("b.md", "Lumora")]

    assert own_names(chunks, frozenset()) == frozenset()


def test_without_words_drops_the_name_and_its_possessive():
    names = frozenset({"zulip"})

    assert without_words("Who is Zulip's CEO, and does zulip hire?", names) == (
        "Who is CEO, and does hire?"
    )
    assert without_words("zulipchat and zulip-like apps", names) == "zulipchat and -like apps"
    assert without_words("Zulip?", names) == "?"
    assert without_words("zulip", names) == "zulip"  # nothing else left: unchanged
    assert without_words("anything", frozenset()) == "anything"
