"""The search query of a turn: the question, and the earlier turn it is read with."""

from __future__ import annotations

from chatbot.history import Turn
from chatbot.query import search_queries, standalone_query
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
