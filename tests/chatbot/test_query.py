"""The search query of a turn: the question, and the earlier turn it is read with."""

from __future__ import annotations

from chatbot.conversations import StoredTurn
from chatbot.history import Turn
from chatbot.query import search_queries, standalone_query
from chatbot.service import _turn
from knowledge.retriever import WeightedQuery


def test_a_first_question_is_searched_alone():
    assert search_queries("  how do i pair a bulb? ", [], 0.5) == [
        WeightedQuery("how do i pair a bulb?", 1.0)
    ]


def test_a_follow_up_reads_the_previous_turn_marked_as_earlier():
    history = [
        Turn("user", "old question"),
        Turn("assistant", "old answer"),
        Turn("user", "how do i pair a bulb?"),
        Turn("assistant", "Open the app and tap Add."),
    ]

    queries = search_queries("and on my phone?", history, 0.5)

    assert queries == [
        WeightedQuery("and on my phone?", 1.0),
        WeightedQuery("how do i pair a bulb?", 0.5, earlier=True),
        WeightedQuery("Open the app and tap Add.", 0.0, earlier=True),
    ]
    assert standalone_query(queries) == (
        "and on my phone? | how do i pair a bulb? | Open the app and tap Add."
    )


def test_an_answer_from_the_store_says_which_documents_it_cited():
    history = [
        Turn("user", "how do i pair a bulb?"),
        Turn("assistant", "Open the app and tap Add.", ("pair-a-new-bulb.md", "scenes.md")),
    ]

    queries = search_queries("and a light strip?", history, 0.5)

    assert queries[2] == WeightedQuery(
        "Open the app and tap Add.", 0.0, earlier=True, shown=("pair-a-new-bulb.md", "scenes.md")
    )


def test_a_stored_answer_keeps_its_sources_unless_it_was_handed_off():
    def stored(role, meta):
        return StoredTurn(1, "s", role, "text", 1, 0.0, meta)

    answered = stored("assistant", {"sources": ["a.md", "b.md"], "handoff": False})
    handed_off = stored("assistant", {"sources": ["a.md"], "handoff": True})

    assert _turn(answered) == Turn("assistant", "text", ("a.md", "b.md"))
    assert _turn(handed_off) == Turn("assistant", "text", ())
    assert _turn(stored("assistant", {})) == Turn("assistant", "text")  # not known
    assert _turn(stored("user", {})) == Turn("user", "text")
