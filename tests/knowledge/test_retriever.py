"""Hybrid retrieval over the sample help center: customer questions find their article."""

from __future__ import annotations

import json
import shutil

import pytest

from knowledge.ingest import ingest_paths
from knowledge.retriever import (
    FusionWeights,
    HybridRetriever,
    WeightedQuery,
    WordCoverage,
    expand_synonyms,
)
from tests.conftest import REPO, SAMPLE_HELP

pytestmark = pytest.mark.slow

QUESTIONS = {
    q["id"]: q
    for q in map(
        json.loads, (REPO / "knowledge" / "sample_questions.jsonl").read_text().splitlines()
    )
}


@pytest.fixture(scope="module")
def retriever(sample_store) -> HybridRetriever:
    return HybridRetriever(sample_store)


def _sources(hits) -> list[str]:
    return [h.source for h in hits]


@pytest.mark.parametrize(
    "question_id", ["lum-001", "lum-002", "lum-003", "lum-005", "lum-009", "lum-010", "lum-013"]
)
def test_customer_question_finds_its_article_first(retriever, question_id):
    question = QUESTIONS[question_id]

    hits = retriever.retrieve([WeightedQuery(question["question"])], k=5)

    assert _sources(hits)[0] == question["gold_docs"][0]


@pytest.mark.parametrize("question_id", ["lum-004", "lum-007", "lum-011", "lum-012"])
def test_customer_question_finds_its_article_in_the_top_three(retriever, question_id):
    question = QUESTIONS[question_id]

    hits = retriever.retrieve([WeightedQuery(question["question"])], k=3)

    assert question["gold_docs"][0] in _sources(hits)


def test_follow_up_is_found_with_the_previous_question(retriever):
    question = QUESTIONS["lum-015"]
    previous = question["history"][0]["content"]

    hits = retriever.retrieve(
        [
            WeightedQuery(question["question"]),
            WeightedQuery(f"{previous} {question['question']}", 0.5),
        ],
        k=3,
    )

    assert _sources(hits)[0] == "pair-a-new-bulb.md"


def test_results_are_grouped_per_document(retriever):
    hits = retriever.retrieve([WeightedQuery("hub status light pulsing amber")], k=8)

    assert len(hits) == 8
    assert len(set(_sources(hits))) == len(hits)
    for hit in hits:
        assert hit.chunks, hit.source
        assert {c.source for c in hit.chunks} == {hit.source}
        assert len({c.chunk_id for c in hit.chunks}) == len(hit.chunks)
        assert hit.similarity == max(c.similarity for c in hit.chunks)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # "Pulsing amber" is explained in two sections of the setup article.
    setup = next(h for h in hits if h.source == "set-up-the-hub.md")
    assert len(setup.chunks) > 1


def test_k_limits_the_number_of_documents(retriever):
    assert len(retriever.retrieve([WeightedQuery("refund")], k=2)) == 2


def test_ingest_in_between_is_picked_up(store, tmp_path):
    folder = tmp_path / "help"
    folder.mkdir()
    for name in ("reset-the-hub.md", "warranty.md", "scenes.md"):
        shutil.copy(SAMPLE_HELP / name, folder / name)
    ingest_paths(store, [folder])
    retriever = HybridRetriever(store)
    question = [WeightedQuery("Can I pay for Lumora with a Zorblax gift voucher?")]
    assert "gift-vouchers.md" not in _sources(retriever.retrieve(question))
    generation = store.generation()

    (folder / "gift-vouchers.md").write_text(
        "# Gift vouchers\n\nZorblax gift vouchers can be redeemed for any Lumora plan "
        "under Account > Billing > Redeem.\n"
    )
    report = ingest_paths(store, [folder])

    assert report.added == ["gift-vouchers.md"]
    assert store.generation() != generation
    hits = retriever.retrieve(question)
    assert _sources(hits)[0] == "gift-vouchers.md"
    # The keyword index was rebuilt too: the made-up word alone finds the new article.
    assert any(c.source == "gift-vouchers.md" for c in retriever._keyword_index().chunks)
    scores = retriever._keyword_index().scores("zorblax")
    assert scores is not None and scores.max() > 0

    store.delete_document("gift-vouchers.md")

    assert "gift-vouchers.md" not in _sources(retriever.retrieve(question))


def test_synonyms_widen_the_keyword_search(sample_store):
    question = [WeightedQuery("how do i get my echo dot to turn my lumora lights on")]
    widened = HybridRetriever(sample_store, synonyms={"echo": ["alexa"]})

    assert _sources(widened.retrieve(question, k=1)) == ["voice-assistants.md"]


def test_expand_synonyms_matches_whole_words_only():
    synonyms = {"echo": ["alexa"], "wifi": ["wi-fi", "wireless"]}

    assert expand_synonyms("My Echo dot", synonyms) == "My Echo dot alexa"
    assert expand_synonyms("echoes in the hall", synonyms) == "echoes in the hall"
    assert expand_synonyms("no wifi", synonyms) == "no wifi wi-fi wireless"
    assert expand_synonyms("no wifi", {}) == "no wifi"


def test_empty_store_returns_nothing(store):
    assert HybridRetriever(store).retrieve([WeightedQuery("anything at all")]) == []


def _follow_up(
    previous: str, question: str, shown: tuple[str, ...] | None = None
) -> list[WeightedQuery]:
    from chatbot.history import Turn
    from chatbot.query import search_queries

    answer = Turn("assistant", "Here is how.", shown)
    return search_queries(question, [Turn("user", previous), answer], 0.5)


def test_a_follow_up_that_moves_on_finds_the_next_article(sample_store):
    queries = _follow_up("how do I create a scene?", "can it turn on by itself at sunset?")
    without = HybridRetriever(sample_store, weights=FusionWeights(previous_article=0))

    # The earlier question's share of the query keeps its article first without the penalty.
    assert _sources(without.retrieve(queries, k=2)) == ["scenes.md", "schedules-and-routines.md"]
    assert _sources(HybridRetriever(sample_store).retrieve(queries, k=2)) == [
        "schedules-and-routines.md",
        "scenes.md",
    ]


def test_a_follow_up_on_the_same_article_still_finds_it_first(retriever):
    queries = _follow_up("how do I share access with my family?", "how do I remove someone later?")

    assert _sources(retriever.retrieve(queries, k=1)) == ["share-access-with-family.md"]


def test_the_penalty_lowers_only_the_earlier_articles_score(sample_store):
    queries = _follow_up("how do I create a scene?", "can it turn on by itself at sunset?")
    with_penalty = HybridRetriever(sample_store, weights=FusionWeights(previous_article=0.05))
    without = HybridRetriever(sample_store, weights=FusionWeights(previous_article=0))

    penalised = {h.source: h.score for h in with_penalty.retrieve(queries, k=10)}
    plain = {h.source: h.score for h in without.retrieve(queries, k=10)}

    assert penalised.keys() == plain.keys()
    assert penalised["scenes.md"] == pytest.approx(plain["scenes.md"] - 0.05)
    assert {s: v for s, v in penalised.items() if s != "scenes.md"} == pytest.approx(
        {s: v for s, v in plain.items() if s != "scenes.md"}
    )
    # A question with no earlier turn is scored as before.
    alone = [WeightedQuery("can it turn on by itself at sunset?")]
    assert [h.score for h in with_penalty.retrieve(alone, k=5)] == pytest.approx(
        [h.score for h in without.retrieve(alone, k=5)]
    )


def test_a_follow_up_embeds_only_its_new_question(sample_store, monkeypatch):
    embedded: list[str] = []
    embed = sample_store.embeddings.embed_documents

    def counting(texts):
        embedded.extend(texts)
        return embed(texts)

    monkeypatch.setattr(sample_store.embeddings, "embed_documents", counting)
    retriever = HybridRetriever(sample_store)
    retriever.retrieve([WeightedQuery("how do I create a scene?")])
    assert embedded == ["how do I create a scene?"]

    retriever.retrieve(_follow_up("how do I create a scene?", "can it turn on at sunset?"))

    # The earlier question was embedded a turn before, for its own search.
    assert embedded == ["how do I create a scene?", "can it turn on at sunset?"]


def test_word_coverage_counts_the_topic_words_one_passage_holds(retriever):
    # The refund article: "You were charged twice for the same period."
    assert retriever.word_coverage("hi, i was charged twice, thanks!") == WordCoverage(2, 2)
    assert retriever.word_coverage("charged twice by zorblax") == WordCoverage(2, 3)
    assert retriever.word_coverage("charged twice by zorblax").share == pytest.approx(2 / 3)
    assert retriever.word_coverage("zorblax quuxle") == WordCoverage(0, 2)
    # A misspelt word counts as the word; a message of no topic words misses nothing.
    assert retriever.word_coverage("i was chargd twice") == WordCoverage(2, 2)
    assert retriever.word_coverage("hi, thanks!") == WordCoverage(0, 0)
    assert retriever.word_coverage("hi, thanks!").share == 1.0


def test_word_coverage_in_an_empty_store_holds_nothing(store):
    assert HybridRetriever(store).word_coverage("charged twice") == WordCoverage(0, 2)


def test_the_article_the_previous_answer_cited_first_is_the_one_lowered(sample_store, monkeypatch):
    question = ("how do I create a scene?", "can it turn on by itself at sunset?")
    retriever = HybridRetriever(sample_store)
    searched = []
    retrieve = retriever.retrieve
    monkeypatch.setattr(
        retriever, "retrieve", lambda q, k=5, vector=None: searched.append(q) or retrieve(q, k)
    )

    # Known from the conversation's store: that answer is lowered, and nothing more is searched.
    cited = retriever.retrieve(_follow_up(*question, ("schedules-and-routines.md",)), k=2)
    assert _sources(cited) == ["scenes.md", "schedules-and-routines.md"]
    assert len(searched) == 1
    # An answer that cited nothing (a hand-off) lowers nothing.
    assert _sources(retriever.retrieve(_follow_up(*question, ()), k=1)) == ["scenes.md"]
    # Not known (a history sent by a client): the earlier message is searched on its own.
    searched.clear()
    assert _sources(retriever.retrieve(_follow_up(*question), k=1)) == ["schedules-and-routines.md"]
    assert len(searched) == 2
