"""ChatService end to end: the sample help center in a real store, SmolLM2 behind llama.cpp.

The model is tiny, so these tests check what a customer would notice (the article cited, the
handoff, a streamed answer, its usage and timings), never the wording of an answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from chatbot.errors import MESSAGES, SOURCES_MAY_HELP, InputRejected
from chatbot.history import Turn
from chatbot.prompts import HANDOFF_ANSWER
from chatbot.providers import make_chat_model
from chatbot.service import ChatService, DoneEvent, SourcesEvent, TokenEvent, create_service
from chatbot.settings import load_settings
from knowledge.retriever import HybridRetriever
from tests.chatbot.conftest_e2e import unreachable_base_url
from tests.conftest import TEST_PROFILE

pytestmark = pytest.mark.slow

RESET_QUESTION = "How long do I have to hold the hub's reset button?"
OFF_TOPIC_QUESTION = "What's a good recipe for banana bread?"
BULB_TURNS = [
    Turn("user", "How do I pair a new bulb with my hub?"),
    Turn(
        "assistant",
        "In the Lumora app, go to Devices > Add device > Bulb and tap Search. "
        "The bulb blinks twice once it's added.",
    ),
]
FOLLOW_UP_QUESTION = "and what if it still doesn't show up?"
BULB_ARTICLES = {"pair-a-new-bulb.md", "troubleshoot-offline-bulbs.md"}


@pytest.fixture
def service_at(settings, sample_store) -> Iterator[Callable[..., ChatService]]:
    """``service_at(base_url, **llm_overrides)``: a ChatService over the sample help center.

    ``sample_store`` holds knowledge/sample_help ingested once per run with ingest_paths.
    """
    built: list[ChatService] = []

    def build(base_url: str, **llm_overrides) -> ChatService:
        cfg = settings.model_copy(update={"llm": settings.llm.model_copy(update=llm_overrides)})
        model = make_chat_model(cfg.llm, local_base_url=base_url)
        built.append(ChatService(cfg, sample_store, HybridRetriever(sample_store), model))
        return built[-1]

    yield build
    for service in built:
        service.close()


@pytest.fixture
def service(service_at, llama_server) -> ChatService:
    """Answers with the real SmolLM2 server."""
    return service_at(llama_server.base_url)


@pytest.fixture
def offline_service(service_at) -> Iterator[ChatService]:
    """Its model's address refuses connections: any call to the model fails at once."""
    with unreachable_base_url() as url:
        yield service_at(url)


def _names(sources) -> list[str]:
    return [s.source for s in sources]


def test_answers_a_product_question_from_its_article(service):
    events = list(service.stream(RESET_QUESTION))

    kinds = [type(e) for e in events]
    assert kinds[0] is SourcesEvent, "sources come before the answer"
    assert kinds[-1] is DoneEvent and kinds.count(DoneEvent) == 1
    tokens = [e.text for e in events if isinstance(e, TokenEvent)]
    assert kinds[1:-1] == [TokenEvent] * len(tokens)
    assert len(tokens) >= 3, "the answer is streamed, not delivered in one piece"

    result = events[-1].result
    assert result.answer.strip()
    assert result.error is None
    assert not result.handoff
    assert _names(result.sources)[0] == "reset-the-hub.md"
    assert events[0].sources == result.sources
    assert result.usage["prompt_tokens"] > 0
    assert result.usage["completion_tokens"] > 0
    timings = result.timings_ms
    assert timings["retrieve"] > 0
    assert 0 < timings["first_token"] <= timings["total"]

    streamed = "".join(tokens)
    if result.answer != streamed:
        # Only a cut answer may differ: text streamed before the hold-back began cannot be
        # taken back, so the final answer ends at an earlier sentence and pages re-render it.
        assert result.cut, "an uncut answer is exactly what was streamed"
        note = service.settings.length_policy.more_detail_note
        body = result.answer.removesuffix(note).rstrip()
        assert streamed.startswith(body) and len(body) < len(streamed.rstrip())


def test_off_topic_question_hands_off_without_calling_the_model(offline_service):
    # The model's address refuses connections, so a handoff that reached the model would fail.
    events = list(offline_service.stream(OFF_TOPIC_QUESTION))

    assert events[0] == SourcesEvent([])
    result = events[-1].result
    assert result.handoff
    assert result.sources == []
    assert result.answer == HANDOFF_ANSWER
    assert result.error is None
    assert result.usage == {"prompt_tokens": 0, "completion_tokens": 0}

    again = offline_service.ask(OFF_TOPIC_QUESTION)
    assert again.handoff and again.error is None and again.answer == HANDOFF_ANSWER


def test_follow_up_is_read_with_the_previous_turn(service):
    result = service.ask(FOLLOW_UP_QUESTION, BULB_TURNS)

    assert not result.handoff
    assert result.error is None
    assert result.answer.strip()
    assert _names(result.sources)[0] in BULB_ARTICLES
    assert "pair a new bulb" in result.query, "the query shows the turn it was read with"
    # Alone, the same words are about nothing in particular.
    alone = service.retrieval_only(FOLLOW_UP_QUESTION)
    assert alone.handoff or _names(alone.sources)[0] not in BULB_ARTICLES


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("", "empty_message"),
        ("   \n\t ", "empty_message"),
        ("x" * 4001, "message_too_long"),
    ],
)
def test_bad_messages_are_rejected_before_retrieval(offline_service, monkeypatch, message, code):
    assert offline_service.settings.chat.max_message_chars == 4000

    def no_retrieval(*args, **kwargs):
        pytest.fail("retrieval ran for a rejected message")

    monkeypatch.setattr(offline_service.retriever, "retrieve", no_retrieval)

    for attempt in (
        lambda: offline_service.ask(message),
        lambda: next(offline_service.stream(message)),
        lambda: offline_service.retrieval_only(message),
    ):
        with pytest.raises(InputRejected) as caught:
            attempt()
        assert caught.value.code == code
        assert caught.value.message.endswith(".")


def test_control_characters_are_taken_out_of_a_message(offline_service):
    assert offline_service.check_message("\x00\x01hello\x07there\x1b") == "hello there"
    assert offline_service.check_message("reset\x0bthe hub\x0cnow") == "reset\nthe hub\nnow"
    assert offline_service.check_message("line one\r\n\tline two") == "line one\r\n\tline two"
    with pytest.raises(InputRejected) as caught:
        offline_service.check_message("\x00\x07\x1b")
    assert caught.value.code == "empty_message"


def test_message_at_the_limit_is_accepted(offline_service):
    limit = offline_service.settings.chat.max_message_chars

    assert offline_service.check_message("x" * limit) == "x" * limit


def test_unreachable_model_gives_a_polite_answer(offline_service):
    result = offline_service.ask(RESET_QUESTION)

    assert result.error == "unavailable"
    assert result.answer == f"{MESSAGES['unavailable']}\n\n{SOURCES_MAY_HELP}"
    assert not result.handoff
    assert "reset-the-hub.md" in _names(result.sources), "retrieval still worked"

    events = list(offline_service.stream(RESET_QUESTION))
    assert isinstance(events[0], SourcesEvent)
    assert events[-1].result.error == "unavailable"


def test_readiness_asks_an_openai_compatible_server_for_its_models(tmp_path, llama_server):
    def readiness_of(base_url: str) -> str:
        settings = load_settings(
            TEST_PROFILE,
            data_dir=tmp_path / "data",
            llm={
                "provider": "openai_compatible",
                "openai_compatible": {"base_url": base_url, "model": "served-elsewhere"},
            },
        )
        service = create_service(settings)
        try:
            return service.readiness()["model"]
        finally:
            service.close()

    assert readiness_of(llama_server.base_url) == "ok"
    with unreachable_base_url() as url:
        assert readiness_of(url) == "failed"


def test_one_service_answers_several_customers_at_once(service_at, llama_server):
    # llama.cpp answers one request at a time, so the last of three queued requests waits for
    # the other two before its first byte: the timeout has to cover the queue, not one answer.
    service = service_at(llama_server.base_url, timeout_s=600)
    questions = {
        RESET_QUESTION: "reset-the-hub.md",
        "How do I give my wife access to the lights from her phone?": (
            "share-access-with-family.md"
        ),
        "Can I cut the light strip shorter?": "install-a-light-strip.md",
    }
    start = threading.Barrier(len(questions))

    def ask(question: str):
        start.wait(timeout=60)
        return service.ask(question)

    with ThreadPoolExecutor(max_workers=len(questions)) as pool:
        results = list(pool.map(ask, questions))

    for (question, article), result in zip(questions.items(), results, strict=True):
        assert result.query == question
        assert result.error is None, (question, result.error)
        assert not result.handoff
        assert _names(result.sources)[0] == article, (question, _names(result.sources))
    cut_short = [q for q, r in zip(questions, results, strict=True) if not r.answer.strip()]
    if cut_short:
        # llama_cpp.server's interrupt_requests (on unless --interrupt_requests False is passed)
        # ends the answer being streamed when another request waits, and the service takes
        # that early end for a finished, empty answer.
        pytest.xfail(f"known bug: concurrent answers cut short to nothing: {cut_short}")
