"""The search query of a turn: the question, and the earlier turn it is read with."""

from __future__ import annotations

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from chatbot.conversations import StoredTurn
from chatbot.history import Turn
from chatbot.query import search_queries, standalone_query
from chatbot.service import ChatService, turn_from_stored
from knowledge.retriever import HybridRetriever, WeightedQuery


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


def test_an_answer_to_an_older_message_showed_nothing_for_the_last_one():
    history = [
        Turn("user", "how do i pair a bulb?"),
        Turn("assistant", "Open the app and tap Add.", ("pair-a-new-bulb.md",)),
        Turn("user", "and a light strip?"),  # its answer was never stored
    ]

    queries = search_queries("hello?", history, 0.5)

    assert queries[1] == WeightedQuery("and a light strip?", 0.5, earlier=True)
    assert queries[2].shown == ()


def test_a_stored_answer_keeps_its_sources_unless_it_answered_nothing():
    def stored(role, meta):
        return StoredTurn(1, "s", role, "text", 1, 0.0, meta)

    answered = {"sources": ["a.md", "b.md"], "handoff": False}
    assert turn_from_stored(stored("assistant", answered)) == Turn(
        "assistant", "text", ("a.md", "b.md")
    )
    cut_short = {**answered, "error": "interrupted"}  # the customer read the start of it
    assert turn_from_stored(stored("assistant", cut_short)).sources == ("a.md", "b.md")
    timed_out = {**answered, "error": "timeout"}  # sources shown as a pointer, no answer
    assert turn_from_stored(stored("assistant", timed_out)).sources == ()
    handed_off = {"sources": ["a.md"], "handoff": True}
    assert turn_from_stored(stored("assistant", handed_off)).sources == ()
    # A customer's request for a person, as the customer chat stores it.
    person = {"channel": "widget", "handoff": True, "ticket": 3}
    assert turn_from_stored(stored("assistant", person)).sources == ()
    assert turn_from_stored(stored("assistant", {})) == Turn(
        "assistant", "text"
    )  # seeded: not known
    assert turn_from_stored(stored("user", {})) == Turn("user", "text")


def test_a_follow_up_in_a_stored_conversation_lowers_the_first_source_shown(
    settings, sample_store, monkeypatch
):
    model = GenericFakeChatModel(messages=iter([AIMessage("Open Scenes."), AIMessage("Yes.")]))
    service = ChatService(settings, sample_store, HybridRetriever(sample_store), model)
    searched: list[list[WeightedQuery]] = []
    retrieve = service.retriever.retrieve
    monkeypatch.setattr(
        service.retriever,
        "retrieve",
        lambda queries, k=5, vector=None: searched.append(queries) or retrieve(queries, k, vector),
    )
    try:
        session_id = service.start_session("widget")
        first = list(service.stream("how do I create a scene?", session_id=session_id))[-1]
        list(service.stream("can it turn on by itself at sunset?", session_id=session_id))
    finally:
        service.close()

    shown = tuple(s.source for s in first.result.sources)
    assert shown and shown[0] == "scenes.md"
    assert searched[-1][2].shown == shown
    assert len(searched) == 2, "the previous message was not searched again"


def test_a_conversation_started_again_keeps_its_answers_sources(settings, sample_store):
    service = ChatService(settings, sample_store, HybridRetriever(sample_store), None)
    seed = [
        Turn("user", "how do i pair a bulb?"),
        Turn("assistant", "Open the app and tap Add.", ("pair-a-new-bulb.md", "scenes.md")),
        Turn("user", "what is the airspeed of a swallow?"),
        Turn("assistant", "A person will reply.", ()),  # a hand-off
        Turn("user", "ok"),
        Turn("assistant", "Anything else?"),  # not known
    ]
    try:
        session_id = service.start_session("widget", seed=seed)
        again = [turn_from_stored(t) for t in service.session_turns(session_id)]
    finally:
        service.close()

    assert again == seed
