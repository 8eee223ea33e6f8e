"""ChatService answering from a real store through the Azure provider, against the HTTP stub."""

from __future__ import annotations

import logging

import pytest

from chatbot.errors import MESSAGES, SOURCES_MAY_HELP, InputRejected
from chatbot.prompts import HANDOFF_OFFER, NO_ANSWER_REPLY
from chatbot.providers import make_chat_model, model_probe
from chatbot.service import ChatService, SourcesEvent
from chatbot.settings import load_settings
from knowledge.ingest import ingest_paths
from knowledge.retriever import HybridRetriever
from tests.conftest import TEST_PROFILE
from tests.fixtures.azure_stub import (
    completion,
    content_filter,
    context_length_exceeded,
    model_list,
    rate_limited,
    slow,
    sse_completion,
    unauthorized,
)

pytestmark = pytest.mark.slow  # loads the embedding model

DOC_NAME = "lumora-kettle.md"
DESCALE_STEP = "Hold the Brew button for seven seconds until the ring glows amber."
DOC = f"""# Descaling the Lumora Smart Kettle

Limescale builds up in the Lumora Smart Kettle after about three months of daily use.

## How to descale

1. Fill the kettle with equal parts water and white vinegar up to the MAX line.
2. {DESCALE_STEP}
3. Wait twenty minutes, then rinse the kettle twice with clean water.
"""
QUESTION = "How do I descale my Lumora kettle?"
ANSWER = "Fill it with water and vinegar, then hold the Brew button for seven seconds [1]."


@pytest.fixture
def make_service(tmp_path, store, azure_stub, azure_key):
    """``make_service(max_retries=0, ...)``: a ChatService with one article, aimed at the stub."""
    docs = tmp_path / "kb"
    docs.mkdir()
    (docs / DOC_NAME).write_text(DOC, encoding="utf-8")
    report = ingest_paths(store, [docs])
    assert report.ok and report.added == [DOC_NAME], report

    def build(memory: dict | None = None, **llm) -> ChatService:
        settings = load_settings(
            TEST_PROFILE,
            data_dir=tmp_path / "data",
            **({"memory": memory} if memory else {}),
            llm={
                "provider": "azure",
                "max_retries": 0,
                "timeout_s": 10,
                "azure": {"endpoint": azure_stub.url, "deployment": "support-phi"},
                **llm,
            },
        )
        return ChatService(
            settings,
            store,
            HybridRetriever(store),
            make_chat_model(settings.llm),
            model_probe=model_probe(settings.llm),
        )

    return build


def test_an_answer_comes_from_the_model_with_its_sources(make_service, azure_stub):
    azure_stub.script(sse_completion(ANSWER, usage=(321, 17)))

    result = make_service().ask(QUESTION)

    assert result.error is None
    assert result.handoff is False
    assert result.answer == ANSWER
    assert [s.source for s in result.sources] == [DOC_NAME]
    assert result.usage == {"prompt_tokens": 321, "completion_tokens": 17}


def test_the_request_quotes_the_source_and_asks_the_question(make_service, azure_stub):
    azure_stub.script(completion(ANSWER))

    make_service(max_output_tokens=300).ask(QUESTION)

    (request,) = azure_stub.requests
    assert request.path == "/openai/deployments/support-phi/chat/completions"
    system = request.message_text("system")
    assert f"\n> 2. {DESCALE_STEP}\n" in system, "the source is quoted line by line"
    assert f"[1] Descaling the Lumora Smart Kettle ({DOC_NAME})" in system
    last = request.messages[-1]
    assert last["role"] == "user" and last["content"].startswith(QUESTION)
    assert "words" in last["content"].removeprefix(QUESTION), "the length reminder follows it"
    assert request.body["max_completion_tokens"] == 300
    assert request.body["stream"] is True


def test_the_prompt_asks_for_the_no_answer_reply_when_the_sources_fall_short(
    make_service, azure_stub
):
    azure_stub.script(completion(ANSWER))

    make_service().ask(QUESTION)

    assert f'exactly this sentence and nothing else: "{NO_ANSWER_REPLY}"' in (
        azure_stub.requests[0].message_text("system")
    )


@pytest.mark.parametrize(
    "reply",
    [NO_ANSWER_REPLY, "“I couldn’t find that in our help center.” [1]", NO_ANSWER_REPLY.upper()],
    ids=["exact", "quoted-and-cited", "shouting"],
)
def test_a_model_that_finds_no_answer_in_the_sources_hands_off(make_service, azure_stub, reply):
    azure_stub.script(sse_completion(reply))

    events = list(make_service().stream("Do you sell replacement filters for the kettle?"))

    result = events[-1].result
    assert result.handoff is True
    assert result.error is None
    assert result.answer == f"{reply}\n\n{HANDOFF_OFFER}"
    assert result.sources == [], "sources that did not answer are not cited"
    shown = [e.sources for e in events if isinstance(e, SourcesEvent)]
    assert [[s.source for s in sources] for sources in shown] == [[DOC_NAME], []]


def test_an_answer_that_only_mentions_not_finding_something_is_no_decline(make_service, azure_stub):
    reply = "If the descaler couldn't find the MAX line, fill it to the top [1]."
    azure_stub.script(sse_completion(reply))

    result = make_service().ask(QUESTION)

    assert result.handoff is False
    assert result.answer == reply


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (content_filter(), "content_filter"),
        (context_length_exceeded(), "context_overflow"),
        (rate_limited(), "rate_limited"),
    ],
    ids=["content_filter", "context_length_exceeded", "429"],
)
def test_a_refused_request_becomes_a_polite_answer(make_service, azure_stub, reply, code):
    azure_stub.script(reply)

    result = make_service().ask(QUESTION)

    assert result.error == code
    assert "Traceback" not in result.answer and "Error code" not in result.answer
    assert result.handoff is False
    if code == "rate_limited":
        # A passing failure: the articles found are still listed, and the apology says so.
        assert result.answer == f"{MESSAGES[code]}\n\n{SOURCES_MAY_HELP}"
        assert [s.source for s in result.sources] == [DOC_NAME]
    else:
        assert result.answer == MESSAGES[code]
        assert result.sources == [], "a refused request lists no sources"


def test_a_timeout_becomes_a_polite_answer(make_service, azure_stub):
    azure_stub.script(slow(5))

    result = make_service(timeout_s=0.5).ask(QUESTION)

    assert result.error == "timeout"
    assert result.answer == f"{MESSAGES['timeout']}\n\n{SOURCES_MAY_HELP}"
    assert [s.source for s in result.sources] == [DOC_NAME]


def test_a_turn_the_model_failed_keeps_the_history_and_asks_for_no_summary(
    make_service, azure_stub
):
    # Summarise whenever four messages are unsummarised, none kept out of the summary.
    service = make_service(memory={"summary_trigger": 0.001, "keep_recent_messages": 0})
    session = service.conversations.create_session("widget").id
    azure_stub.script(sse_completion(ANSWER), rate_limited())

    first = service.ask(QUESTION, session_id=session)
    second = service.ask("And how often should I do that?", session_id=session)
    service.memory.wait_idle(timeout=30)  # any summary in the background

    assert (first.error, second.error) == (None, "rate_limited")
    assert len(azure_stub.requests) == 2, "no summary request after the failed turn"
    record, turns = service.memory.load(session)
    assert (record.summarised_upto, record.summaries) == (0, 0)
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]


def test_a_message_within_the_character_limit_but_over_half_the_window_is_refused(
    make_service, azure_stub
):
    service = make_service()
    session = service.conversations.create_session("widget").id
    chinese = "如何重置集线器" * 570  # 3,990 characters: under chat.max_message_chars

    with pytest.raises(InputRejected) as refused:
        service.ask(chinese, session_id=session)

    assert refused.value.code == "message_too_long"
    assert azure_stub.requests == [] and service.session_turns(session) == []
    azure_stub.script(sse_completion(ANSWER))
    english = service.ask(("How do I descale my Lumora kettle? " * 114)[:3990], session_id=session)
    assert english.error is None and english.answer == ANSWER


def test_an_answer_cut_by_the_output_filter_is_flagged(make_service, azure_stub):
    azure_stub.script(sse_completion("Fill the kettle with", finish_reason="content_filter"))

    events = list(make_service().stream(QUESTION))
    result = events[-1].result

    assert result.error == "content_filter"
    assert result.sources == [], "withdrawn as after any refusal"
    sources = [e.sources for e in events if isinstance(e, SourcesEvent)]
    assert sources[0] and sources[-1] == [], "the sources shown first are taken back"
    assert result.answer.startswith("Fill the kettle with")
    assert result.answer.endswith(MESSAGES["content_filter"])


def test_the_key_stays_out_of_the_logs(make_service, azure_stub, azure_key, caplog):
    caplog.set_level(logging.DEBUG)
    azure_stub.script(completion(ANSWER), content_filter())
    service = make_service()

    service.ask(QUESTION)
    failed = service.ask(QUESTION)

    assert failed.error == "content_filter"
    assert any("content_filter" in r.getMessage() for r in caplog.records), "the failure is logged"
    assert azure_key not in caplog.text
    assert azure_key not in repr(service.settings)


# ----- readiness


@pytest.mark.parametrize(
    "route, path, query, header, value",
    [
        ("deployment", "/openai/models", {"api-version": ["2024-10-21"]}, "api-key", "{key}"),
        ("v1", "/openai/v1/models", {}, "authorization", "Bearer {key}"),
    ],
)
def test_readiness_asks_azure_for_its_model_list_with_the_key(
    make_service, azure_stub, azure_key, route, path, query, header, value
):
    azure = {"endpoint": azure_stub.url, "route": route, "api_version": "2024-10-21"}
    service = make_service(azure={**azure, "deployment": "support-phi"})
    azure_stub.script(model_list())

    assert service.readiness()["model"] == "ok"

    (request,) = azure_stub.requests
    assert (request.method, request.path, request.query) == ("GET", path, query)
    assert request.headers[header] == value.format(key=azure_key)


def test_readiness_fails_when_azure_refuses_the_key_or_is_gone(
    make_service, azure_stub, azure_key, caplog
):
    caplog.set_level(logging.DEBUG)
    service = make_service()
    azure_stub.script(unauthorized())

    assert service.readiness()["model"] == "failed"
    assert "401" in caplog.text and azure_key not in caplog.text

    azure_stub.stop()
    assert service.readiness()["model"] == "failed"
