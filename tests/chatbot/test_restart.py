"""A restart of the service mid-conversation: the next message continues it with its history.

What ``chatbot serve`` keeps across a restart is its data directory: the Chroma store and the
SQLite conversations. Two ChatService objects built one after the other on the same directory
stand for the process before and after the restart; both use the real SmolLM2 server.
"""

from __future__ import annotations

import pytest

from chatbot.errors import InputRejected
from chatbot.providers import make_chat_model
from chatbot.service import AnswerOptions, ChatService
from chatbot.settings import Settings, load_settings
from chatbot.tokens import LocalModelCounter
from knowledge.retriever import HybridRetriever
from knowledge.store import KnowledgeStore
from tests.conftest import SAMPLE_HELP, TEST_PROFILE

pytestmark = pytest.mark.slow

QUESTIONS = [
    "My order number is 58213-LX and I use the Lumora Hub 2. How do I restart the hub?",
    "How do I pair a new bulb with my hub?",
    "How do I check the hub for firmware updates?",
]

FEWER_SOURCES = {"retrieval": {"top_k": 2}}


def build_service(settings: Settings, embeddings, llama_server) -> ChatService:
    """What ``create_service`` builds at start-up, answering with the already running server."""
    cfg = settings.retrieval
    store = KnowledgeStore(settings.data_dir, embeddings, cfg.collection)
    return ChatService(
        settings,
        store,
        HybridRetriever(store),
        make_chat_model(settings.llm, local_base_url=llama_server.base_url),
        counter=LocalModelCounter(llama_server.model_path),
    )


def test_a_conversation_continues_after_a_restart(tmp_path, embeddings, llama_server):
    # Two sources instead of five keep the prompts, and so the CPU-bound model, quick.
    settings = load_settings(TEST_PROFILE, data_dir=tmp_path / "data", **FEWER_SOURCES)
    before = build_service(settings, embeddings, llama_server)
    try:
        assert before.ingest([SAMPLE_HELP]).ok
        session_id = before.start_session("widget")
        first = [before.ask(q, session_id=session_id) for q in QUESTIONS[:2]]
    finally:
        before.close()  # no on_close: the shared llama.cpp server keeps running
    assert [r.error for r in first] == [None, None]
    assert not any(r.handoff for r in first)
    earlier = [
        {"role": "user", "content": QUESTIONS[0]},
        {"role": "assistant", "content": first[0].answer},
        {"role": "user", "content": QUESTIONS[1]},
        {"role": "assistant", "content": first[1].answer},
    ]

    restarted = load_settings(TEST_PROFILE, data_dir=settings.data_dir, **FEWER_SOURCES)
    after = build_service(restarted, embeddings, llama_server)
    try:
        assert after.conversations is not before.conversations
        result = after.ask(QUESTIONS[2], session_id=session_id, options=AnswerOptions(trace=True))
        turns = after.session_turns(session_id)
        with pytest.raises(InputRejected) as unknown:
            after.ask(QUESTIONS[2], session_id="no-such-session")
    finally:
        after.close()

    assert result.error is None and not result.handoff
    assert result.session_id == session_id
    assert result.answer.strip()
    # The third request was sent with the whole conversation before it.
    sent = result.prompt_messages
    assert sent[0]["role"] == "system"
    assert sent[1:5] == earlier
    # The question last, followed only by the length policy's reminder.
    assert sent[-1]["role"] == "user" and sent[-1]["content"].startswith(QUESTIONS[2])
    assert "58213-LX" in " ".join(m["content"] for m in sent)

    assert [(t.role, t.content) for t in turns] == [
        *((m["role"], m["content"]) for m in earlier),
        ("user", QUESTIONS[2]),
        ("assistant", result.answer),
    ]
    assert [t.id for t in turns] == sorted(t.id for t in turns)
    assert unknown.value.code == "unknown_session"
