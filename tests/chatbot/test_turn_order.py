"""Turns of one conversation are taken one at a time: a message sent while an answer is still
being written waits for it, and so is stored after it and answered with it in view."""

from __future__ import annotations

import threading
import time

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from chatbot.service import ChatService, TokenEvent
from knowledge.retriever import HybridRetriever

FIRST, SECOND = (
    "how long do I hold the reset button on the hub?",
    "and the bulbs, how do I reset them?",
)


def service_answering(settings, sample_store, *replies: str) -> ChatService:
    """The service over the sample help center, its model answering ``replies`` in turn."""
    model = GenericFakeChatModel(messages=iter([AIMessage(r) for r in replies]))
    return ChatService(settings, sample_store, HybridRetriever(sample_store), model)


def answer_started(service: ChatService, question: str, session_id: str):
    """The answer stream of ``question``, once its first words are out: the turn is in
    progress, holding its conversation."""
    stream = service.stream(question, session_id=session_id)
    while not isinstance(next(stream), TokenEvent):
        pass
    return stream


def test_a_second_message_waits_for_the_answer_being_written(settings, sample_store):
    replies = ["Hold it for ten seconds.", "Hold the button for five seconds.", "Switch them."]
    service = service_answering(settings, sample_store, *replies)
    try:
        session_id = service.start_session("widget")
        first = answer_started(service, FIRST, session_id)
        # Another conversation is not held up by it.
        other = service.start_session("widget")
        elsewhere = threading.Thread(target=lambda: list(service.stream(FIRST, session_id=other)))
        elsewhere.start()
        elsewhere.join(timeout=60)
        other_turns = [t.role for t in service.session_turns(other)]
        second_done = threading.Event()
        second = threading.Thread(
            target=lambda: (list(service.stream(SECOND, session_id=session_id)), second_done.set())
        )
        second.start()
        time.sleep(0.5)
        waiting = [(t.role, t.content) for t in service.session_turns(session_id)]
        list(first)  # the first answer finishes
        second.join(timeout=60)
    finally:
        service.close()

    assert other_turns == ["user", "assistant"]
    assert waiting == [("user", FIRST)], "the second message was not taken while answering"
    assert second_done.is_set()
    turns = [(t.role, t.content) for t in service.session_turns(session_id)]
    assert [role for role, _ in turns] == ["user", "assistant", "user", "assistant"]
    assert [content for role, content in turns if role == "user"] == [FIRST, SECOND]
    assert not service._turns_in_progress._locks, "no lock is left behind"


def test_a_message_that_waits_too_long_is_refused_and_not_stored(
    settings, sample_store, monkeypatch
):
    import pytest

    import chatbot.service
    from chatbot.errors import InputRejected

    monkeypatch.setattr(chatbot.service, "TURN_WAIT_S", 0.2)
    service = service_answering(settings, sample_store, "Hold it for ten seconds.")
    try:
        session_id = service.start_session("widget")
        first = answer_started(service, FIRST, session_id)
        with pytest.raises(InputRejected) as refused:
            list(service.stream(SECOND, session_id=session_id))
        list(first)
    finally:
        service.close()

    assert refused.value.code == "answer_in_progress"
    assert [t.content for t in service.session_turns(session_id) if t.role == "user"] == [FIRST]
    assert not service._turns_in_progress._locks


def test_only_one_message_waits_per_conversation_and_a_third_is_refused_at_once(
    settings, sample_store, monkeypatch
):
    """Each waiting message holds a worker thread: a visitor sending one message after another
    while an answer is written must not take them all."""
    import pytest

    import chatbot.service
    from chatbot.errors import InputRejected

    monkeypatch.setattr(chatbot.service, "TURN_WAIT_S", 600.0)
    replies = ["Hold it for ten seconds.", "Switch them off and on.", "unused"]
    service = service_answering(settings, sample_store, *replies)
    try:
        session_id = service.start_session("widget")
        first = answer_started(service, FIRST, session_id)
        second = threading.Thread(
            target=lambda: list(service.stream(SECOND, session_id=session_id))
        )
        second.start()
        deadline = time.monotonic() + 10
        while service._turns_in_progress._locks[session_id][1] < 2:  # the second now waits
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(InputRejected) as refused:
            list(service.stream("and the hub?", session_id=session_id))
        refused_after = time.monotonic() - started
        list(first)
        second.join(timeout=60)
    finally:
        service.close()

    assert refused.value.code == "answer_in_progress"
    assert refused_after < 60, "refused at once, not after waiting (up to 600 s)"
    user_turns = [t.content for t in service.session_turns(session_id) if t.role == "user"]
    assert user_turns == [FIRST, SECOND]
    assert not service._turns_in_progress._locks


def test_a_read_waits_for_the_answer_being_written_to_be_stored(settings, sample_store):
    """A page reloaded mid-answer reads the conversation before the server has noticed that the
    old page left: the read waits a moment, and then sees the answer cut short."""
    service = service_answering(settings, sample_store, "Hold the button for ten seconds.")
    try:
        session_id = service.start_session("widget")
        answering = answer_started(service, FIRST, session_id)
        # The server notices the dropped connection half a second later.
        noticed = threading.Timer(0.5, answering.close)
        noticed.start()

        settled = service.turn_settled(session_id, timeout_s=30)
        turns = [(t.role, t.meta.get("error")) for t in service.session_turns(session_id)]
        noticed.join()
        # While an answer is still being written, the read gives up after its wait.
        busy = answer_started(service, SECOND, session_id)
        still_busy = service.turn_settled(session_id, timeout_s=0.2)
        busy.close()
    finally:
        service.close()

    assert settled is True
    assert turns == [("user", None), ("assistant", "interrupted")]
    assert still_busy is False
