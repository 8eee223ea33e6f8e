"""The response-length policy: clean cuts on streamed text, per-channel policies, and the service.

Streamed text is fed to ``SentenceCutter`` in pieces of 1-4 characters, about a token each, as a
model's stream arrives; "truncated" means the model stopped because it reached ``max_tokens``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from chatbot.errors import InputRejected
from chatbot.length_policy import LengthPolicy, SentenceCutter, closing_fence, safe_boundary
from chatbot.service import AnswerOptions, ChatService, DoneEvent, TokenEvent
from chatbot.settings import Channel, load_settings
from knowledge.ingest import ingest_paths
from knowledge.retriever import HybridRetriever
from tests.conftest import TEST_PROFILE

FENCE = "```"


def pieces(text: str, seed: int = 0) -> list[str]:
    """``text`` split into pieces of 1-4 characters, as a model streams tokens."""
    rng = random.Random(seed)
    out, position = [], 0
    while position < len(text):
        size = rng.randint(1, 4)
        out.append(text[position : position + size])
        position += size
    return out


def run_cutter(
    parts: list[str], *, truncated: bool, max_tokens: int | None = None, holdback: int = 48
) -> tuple[str, str, bool]:
    """Feed ``parts``; return (everything shown while streaming, the final answer, cut)."""
    cutter = SentenceCutter(max_tokens if max_tokens is not None else len(parts), holdback)
    shown = "".join(cutter.feed(part) for part in parts)
    rest, answer, cut = cutter.finish(truncated)
    return shown + rest, answer, cut


def truncated_answer(text: str, seed: int = 0) -> str:
    """The final answer when the model stopped for length after ``text``."""
    shown, answer, cut = run_cutter(pieces(text, seed), truncated=True)
    assert cut is True
    return answer


def open_fences(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip().startswith(FENCE)) % 2


SEEDS = [0, 1, 2, 3]


# ----- truncated answers end cleanly


@pytest.mark.parametrize("seed", SEEDS)
def test_an_answer_cut_mid_sentence_ends_at_the_last_complete_sentence(seed):
    complete = "Hold the reset button for ten seconds. The light turns amber when the hub restarts."
    text = complete + " Then open the app and wai"

    shown, answer, cut = run_cutter(pieces(text, seed), truncated=True)

    assert cut is True
    assert answer == complete
    assert shown.rstrip() == answer, "what was streamed is exactly the final answer"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "cut_inside",
    ["3. Choose Bulb and tap Sea", "3. ", "3.", "3"],
    ids=["mid-item", "after-marker", "marker-only", "digit-only"],
)
def test_a_numbered_list_cut_mid_item_ends_after_the_last_complete_item(seed, cut_inside):
    complete = "To pair a bulb:\n1. Open the Lumora app\n2. Tap Devices, then Add device\n"
    text = complete + cut_inside

    shown, answer, _ = run_cutter(pieces(text, seed), truncated=True)

    assert answer == complete.rstrip()
    assert not answer.endswith("3."), "a dangling list number is not a complete item"
    assert shown.rstrip() == answer


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("marker", ["3.\n", "> 3.\n", "> 3.", "-\n", "> \n"])
def test_a_quoted_or_finished_line_holding_only_a_list_marker_is_no_item(seed, marker):
    complete = "> 1. Open the Lumora app.\n> 2. Tap Devices.\n"
    answer = truncated_answer(complete + marker, seed)

    assert answer == complete.rstrip()


@pytest.mark.parametrize("seed", SEEDS)
def test_list_items_written_as_sentences_do_not_leave_the_next_number_behind(seed):
    complete = "1. Open the Lumora app.\n2. Tap Devices.\n"
    answer = truncated_answer(complete + "3. Tap Add dev", seed)

    assert answer == complete.rstrip()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "inside",
    ["```", "```bash", "```bash\nlumora-cli reset --hub\nlumora-cli pair --bul"],
    ids=["fence", "fence-with-language", "code-lines"],
)
def test_an_answer_cut_inside_an_open_code_block_ends_before_the_fence(seed, inside):
    # The line announcing the commands goes too: without them it would promise nothing.
    before = "Sign in to the app first.\nRun these two commands on your computer:\n"
    shown, answer, _ = run_cutter(pieces(before + inside, seed), truncated=True)

    assert answer == "Sign in to the app first."
    assert FENCE not in answer
    assert FENCE not in shown, "an unclosed fence is never streamed near the limit"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("after", ["\nAfter that, the hub restar", "\n", ""])
def test_a_closed_code_block_is_a_place_to_end(seed, after):
    block = "Run this:\n```bash\nlumora-cli reset --hub\n```"
    answer = truncated_answer(block + after, seed)

    assert answer == block
    assert open_fences(answer) == 0


def test_text_streamed_before_the_hold_back_stays_in_the_answer_even_without_a_clean_end():
    # Far from the limit text streams at once, so the fence is shown before the hold-back
    # begins and no sentence ends after it. The answer is what the customer saw (the service
    # closes the fence); it is never cut back to an earlier sentence, or to nothing.
    intro = "Here is what to do. " * 3
    text = intro + "Run this:\n```bash\n" + "lumora-cli status --verbose\n" * 10 + "lumora-cl"
    shown, answer, cut = run_cutter(pieces(text), truncated=True, holdback=8)

    assert FENCE in shown
    assert cut is True
    assert answer == shown.rstrip() == text, "all the model wrote, as shown"

    one_long_sentence = "To reset the hub keep it plugged in and " + "hold the button " * 40
    shown, answer, cut = run_cutter(pieces(one_long_sentence), truncated=True, holdback=8)
    assert cut is True and answer == shown.rstrip() == one_long_sentence.rstrip()


@pytest.mark.parametrize(
    ("complete", "rest"),
    [
        ("Hold the button for ten seconds [2].", " Then the light tu"),
        ("Reset the hub [1][3].", " Then pair the bul"),
        ("Hold the button for ten seconds. [1]", " Then the light tu"),
        ("Hold the button for ten seconds.[1, 2]", " Then the light tu"),
        ("Reset the hub.[1,3]", " Then pair the bul"),
        ('The app says "Hub offline."', " Check the cab"),
        ("The app says “Hub offline.”", " Check the cab"),
        ("The app says 'Hub offline.'", " Check the cab"),
        ("(Hold it for ten seconds.)", " Then relea"),
        ("Keep it plugged in (about ten minutes).", " Then relea"),
        ("Is the light amber?", " If it is no"),
        ("It worked!", " Now open the a"),
        ("Wait for the chime…", " Then op"),
        ("*Note: this works on the web app only.*", " On pho"),
        ("**Hold it for ten seconds.**", " Then relea"),
        ("_It restarts by itself._", " Then op"),
    ],
)
@pytest.mark.parametrize("seed", SEEDS)
def test_citations_closing_quotes_and_brackets_end_a_sentence(complete, rest, seed):
    assert truncated_answer(complete + rest, seed) == complete


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "sentence",
    [
        "The hub has a 1.5 GHz processor and 2.4 GHz Wi-Fi for older bulbs.",
        "Use a thin pin, e.g. a paperclip, and hold the button for ten seconds.",
        "Firmware v2.3.1 fixes it, i.e. update the hub first and then the bulbs.",
    ],
    ids=["decimals", "e.g.", "i.e."],
)
def test_decimals_and_abbreviations_never_end_an_answer_mid_word(seed, sentence):
    """Truncated at every character of the second sentence, the answer is the first one.

    Everything is within the hold-back, so what was streamed must equal the final answer: a
    piece like "1." must not be released before the next piece shows it is "1.5".
    """
    first = "Here is what matters."
    text = f"{first} {sentence}"
    for end in range(len(first) + 1, len(text)):
        prefix = text[:end]
        shown, answer, _ = run_cutter(pieces(prefix, end), truncated=True)
        assert answer == first, f"truncated after {prefix!r}"
        assert shown.rstrip() == answer, f"streamed more than the answer after {prefix!r}"


SENTENCE = st.sampled_from(
    [
        "Hold the reset button for ten seconds.",
        "The hub has a 1.5 GHz processor, e.g. for older bulbs.",
        'The app says "Hub offline."',
        "See the pairing guide [2].",
        "Is the light amber?",
        "Unplug the hub (not the bulbs).",
    ]
)
BLOCK = st.one_of(
    st.lists(SENTENCE, min_size=1, max_size=4).map(" ".join),
    st.lists(SENTENCE, min_size=1, max_size=4).map(
        lambda items: "\n".join(f"{n}. {item}" for n, item in enumerate(items, start=1))
    ),
    st.just("```bash\nlumora-cli reset --hub\nlumora-cli pair\n```"),
)


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(BLOCK, min_size=1, max_size=6),
    share=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
    max_tokens=st.integers(1, 400),
    holdback=st.integers(0, 64),
)
def test_any_truncated_answer_is_a_clean_prefix(blocks, share, seed, max_tokens, holdback):
    text = "\n\n".join(blocks)
    prefix = text[: int(len(text) * share)]
    parts = pieces(prefix, seed)

    shown, answer, cut = run_cutter(parts, truncated=True, max_tokens=max_tokens, holdback=holdback)

    assert cut is True
    assert prefix.startswith(answer)
    # The answer is what the customer saw, never less.
    assert answer == shown.rstrip()
    assert open_fences(answer + closing_fence(answer)) == 0
    if answer and len(answer) > safe_boundary(prefix, ended=True):
        # Shown before the hold-back began, with no clean end after it: kept as shown.
        return
    assert open_fences(answer) == 0
    if answer:
        following = prefix[len(answer) :]
        assert not following or not following[0].isalnum(), f"{answer!r} ends mid-word"
        # Every complete line of these blocks ends a sentence or a code block.
        assert answer.endswith((".", "!", "?", '"', FENCE)), f"{answer!r} ends mid-sentence"
        last_line = answer.splitlines()[-1]
        assert not re.fullmatch(r"\s*\d+\.", last_line), "a dangling list number"


# ----- answers that were not cut pass through


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("ab .!?\n`[]1\"')(…-")) | st.characters(), max_size=600
    ),
    seed=st.integers(0, 10_000),
    max_tokens=st.integers(1, 400),
    holdback=st.integers(0, 64),
)
def test_an_answer_that_was_not_cut_passes_through_unchanged(text, seed, max_tokens, holdback):
    shown, answer, cut = run_cutter(
        pieces(text, seed), truncated=False, max_tokens=max_tokens, holdback=holdback
    )

    assert (shown, answer, cut) == (text, text, False)


def test_far_from_the_limit_text_is_released_without_waiting_for_the_sentence():
    sentence = (
        "When the hub has been offline for a while and the bulbs no longer respond to the app "
        "or to voice assistants, start by unplugging the hub for thirty seconds, plug it back "
        "in, wait until the ring light turns solid white, and then open the app again"
    )
    cutter = SentenceCutter(max_tokens=1000)

    released = "".join(cutter.feed(part) for part in pieces(sentence))

    last_word = sentence.rsplit(" ", 1)[1]
    assert released == sentence[: -len(last_word)], "everything but the unfinished word"
    assert len(released) > 0.9 * len(sentence)


def test_near_the_limit_text_waits_for_the_end_of_the_sentence():
    cutter = SentenceCutter(max_tokens=10, holdback_tokens=48)

    held = "".join(cutter.feed(part) for part in pieces("Unplug the hub and wait thirty"))
    released = cutter.feed(" seconds. ")

    assert held == ""
    assert released == "Unplug the hub and wait thirty seconds."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two", "One."),
        ("One.\nTwo", "One.\n"),
        ("Intro:\n```\ncode\n", ""),
        ("Done.\nIntro:\n```\ncode\n", "Done.\n"),
        ("It runs at 1.", ""),
        ("", ""),
    ],
)
def test_safe_boundary_while_streaming(text, expected):
    assert text[: safe_boundary(text)] == expected


@pytest.mark.parametrize(
    ("text", "fence"),
    [
        ("Run:\n```bash\nlumora reset", "\n```"),
        ("Run:\n```bash\nlumora reset\n", "```"),
        ("Run:\n```bash\nlumora reset\n```\nDone.", ""),
        ("No code here.", ""),
        ("1. Run:\n\n   ```bash\n   lumora reset", "\n   ```"),
        ("> ```bash\n> lumora reset", "\n> ```"),
        ("````md\n```\ninner\n```\nstill inside", "\n````"),
        ("~~~\nlumora reset", "\n~~~"),
        ("```npm install``` then run the app.", ""),
    ],
    ids=[
        "no-newline",
        "newline",
        "closed",
        "no-code",
        "in-list",
        "quoted",
        "wider",
        "tilde",
        "inline",
    ],
)
def test_a_code_block_left_open_is_closed_by_a_fence_like_its_opening(text, fence):
    assert closing_fence(text) == fence
    assert closing_fence(text + fence) == "", "nothing is left open"


@pytest.mark.parametrize("label", ["**1.**", "**Step 2.**", "_3._"])
def test_a_bold_list_number_is_no_sentence_end(label):
    text = f"Intro line.\n\n{label} Open the app and tap"

    assert text[: safe_boundary(text, ended=True)].rstrip() == "Intro line."


def test_a_full_stop_at_the_end_counts_once_the_stream_has_ended():
    assert safe_boundary("It is ready.") == 0
    assert safe_boundary("It is ready.", ended=True) == len("It is ready.")
    # Unless the stream may have stopped inside "1.5" or "e.g.".
    assert safe_boundary("It runs at 1.", ended=True) == 0
    assert safe_boundary("Use a pin, e.", ended=True) == 0


# ----- the policy and its channels


def test_the_instruction_asks_for_the_target_length():
    policy = LengthPolicy("widget", target_words=60, max_tokens=200)

    assert "60 words" in policy.instruction()
    assert "No greeting" in policy.instruction()


def test_a_disabled_policy_adds_no_instruction():
    policy = LengthPolicy("widget", target_words=60, max_tokens=200, enabled=False)

    assert policy.instruction() == ""


@pytest.fixture
def policy_service(tmp_path):
    """``policy_service(**overrides)``: a service for policy_for, which needs no store or model."""
    built: list[ChatService] = []

    def build(**overrides) -> ChatService:
        cfg = load_settings(TEST_PROFILE, data_dir=tmp_path / "data", **overrides)
        built.append(ChatService(cfg, store=None, retriever=None, model=None))  # type: ignore[arg-type]
        return built[-1]

    yield build
    for service in built:
        service.close()


@pytest.mark.parametrize(
    ("channel", "target_words", "max_tokens"),
    [("widget", 60, 200), ("staff", 150, 400), ("api", 100, 300)],
)
def test_each_channel_gets_its_configured_policy(policy_service, channel, target_words, max_tokens):
    # Defaults from configs/default.yaml; staff's 450 is capped by llm.max_output_tokens.
    service = policy_service(llm={"max_output_tokens": 400})

    policy = service.policy_for(channel)

    assert policy.enabled
    assert policy.channel == channel
    assert (policy.target_words, policy.max_tokens) == (target_words, max_tokens)
    assert f"under {target_words} words" in policy.instruction()


def test_channel_settings_and_style_come_from_the_configuration(policy_service):
    service = policy_service(
        llm={"max_output_tokens": 512},
        length_policy={"api": {"target_words": 25, "max_tokens": 80, "style": "Reply tersely."}},
    )

    policy = service.policy_for(Channel.API)

    assert (policy.target_words, policy.max_tokens) == (25, 80)
    assert policy.instruction() == "Reply tersely. Keep the answer under 25 words."


def test_the_test_profile_caps_every_channel_at_max_output_tokens(policy_service):
    service = policy_service()
    cap = service.settings.llm.max_output_tokens

    assert {service.policy_for(c.value).max_tokens for c in Channel} == {cap}


def test_answer_options_can_switch_the_policy_off_and_on(policy_service):
    service = policy_service(llm={"max_output_tokens": 400})

    off = service.policy_for("widget", AnswerOptions(length_policy=False))
    assert not off.enabled
    assert off.instruction() == ""
    assert off.max_tokens == 400, "only llm.max_output_tokens caps the answer"

    disabled = policy_service(llm={"max_output_tokens": 400}, length_policy={"enabled": False})
    assert not disabled.policy_for("widget").enabled
    assert disabled.policy_for("widget", AnswerOptions(length_policy=True)).max_tokens == 200


def test_an_unknown_channel_is_rejected(policy_service):
    with pytest.raises(InputRejected) as caught:
        policy_service().policy_for("sms")

    assert caught.value.code == "unknown_channel"


# ----- the service with a model that stops for length


class ScriptedChatModel(BaseChatModel):
    """Streams ``text`` in pieces of 1-4 characters (a token each), stopping at ``max_tokens``.

    Like a server that honours the cap, the last piece says why it stopped: "length" at the cap,
    "stop" at the end of the text.
    """

    text: str
    calls: list[tuple[list[BaseMessage], dict]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.calls.append((messages, kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.text))])

    def parts(self, messages: list[BaseMessage]) -> list[str]:
        """The pieces streamed for this prompt, a token each."""
        return pieces(self.text)

    def _stream(self, messages, stop=None, run_manager=None, **kwargs) -> Iterator:
        self.calls.append((messages, kwargs))
        parts = self.parts(messages)
        limit = kwargs.get("max_tokens") or len(parts)
        sent = parts[:limit]
        reason = "length" if len(parts) > limit else "stop"
        for number, part in enumerate(sent, start=1):
            metadata = {"finish_reason": reason} if number == len(sent) else {}
            yield ChatGenerationChunk(message=AIMessageChunk(part, response_metadata=metadata))


DOC = """# Descaling the Lumora Smart Kettle

Limescale builds up in the Lumora Smart Kettle after about three months of daily use.

## How to descale

1. Fill the kettle with equal parts water and white vinegar up to the MAX line.
2. Hold the Brew button for seven seconds until the ring glows amber.
3. Wait twenty minutes, then rinse the kettle twice with clean water.
"""
QUESTION = "How do I descale my Lumora kettle?"
SENTENCES = [
    "Fill the kettle with equal parts water and white vinegar up to the MAX line [1].",
    "Then hold the Brew button for seven seconds until the ring glows amber [1].",
    "After twenty minutes, rinse the kettle twice with clean water [1].",
    "Descale it about every three months if you use it daily [1].",
]
LONG_ANSWER = " ".join(SENTENCES)
SHORT_ANSWER = "Fill it with water and vinegar, then hold Brew for seven seconds [1]."
NOTE = "Ask me for the rest."


@pytest.fixture
def kettle_service(tmp_path, settings, store):
    """``kettle_service(model)``: a ChatService over one kettle article, answering with ``model``."""
    docs = tmp_path / "kb"
    docs.mkdir()
    (docs / "lumora-kettle.md").write_text(DOC, encoding="utf-8")
    report = ingest_paths(store, [docs])
    assert report.ok and report.added, report
    cfg = settings.model_copy(
        update={
            "length_policy": settings.length_policy.model_copy(update={"more_detail_note": NOTE})
        }
    )
    built: list[ChatService] = []

    def build(model: BaseChatModel) -> ChatService:
        built.append(ChatService(cfg, store, HybridRetriever(store), model))
        return built[-1]

    yield build
    for service in built:
        service.close()


@pytest.mark.slow  # loads the embedding model
def test_an_answer_stopped_for_length_ends_at_a_sentence_with_the_note(kettle_service):
    model = ScriptedChatModel(text=LONG_ANSWER)
    service = kettle_service(model)
    widget = service.policy_for("widget")
    session_id = service.start_session("widget")

    events = list(service.stream(QUESTION, session_id=session_id, channel="widget"))

    messages, kwargs = model.calls[-1]
    assert kwargs["max_tokens"] == widget.max_tokens
    assert f"under {widget.target_words} words" in messages[0].content
    received = "".join(pieces(LONG_ANSWER)[: widget.max_tokens])
    assert received != LONG_ANSWER, "the model ran into max_tokens"
    complete = [" ".join(SENTENCES[:n]) for n in range(1, len(SENTENCES) + 1)]
    expected = max((c for c in complete if received.startswith(c)), key=len)

    result = events[-1].result
    assert isinstance(events[-1], DoneEvent)
    assert result.error is None and not result.handoff
    assert result.cut is True
    assert result.answer == f"{expected}\n\n{NOTE}"
    streamed = "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert streamed == result.answer

    saved = service.session_turns(session_id)
    assert [t.role for t in saved] == ["user", "assistant"]
    assert saved[-1].content == result.answer
    meta = saved[-1].meta
    assert meta["cut"] is True
    assert meta["channel"] == "widget"
    assert meta["policy"] == {
        "channel": "widget",
        "enabled": True,
        "target_words": widget.target_words,
        "max_tokens": widget.max_tokens,
    }
    assert meta["completion_tokens"] == result.usage["completion_tokens"] > 0


@pytest.mark.slow  # loads the embedding model
@pytest.mark.parametrize(
    "text",
    [
        "To descale the kettle fill it with water and vinegar " + "and wait and rinse " * 80,
        "Run this on the kettle's app:\n```\n" + "lumora descale --kettle --verbose\n" * 60,
    ],
    ids=["one-long-sentence", "long-code-block"],
)
def test_an_answer_cut_with_no_clean_end_is_stored_as_it_was_streamed(kettle_service, text):
    service = kettle_service(ScriptedChatModel(text=text))
    session_id = service.start_session("widget")

    events = list(service.stream(QUESTION, session_id=session_id, channel="widget"))

    result = events[-1].result
    streamed = "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert result.cut is True
    assert streamed == result.answer, "the customer saw the stored answer"
    assert result.answer.startswith(text[:40])
    assert result.answer.endswith(NOTE)
    assert open_fences(result.answer) == 0, "the note is outside any code block"
    assert service.session_turns(session_id)[-1].content == result.answer


@pytest.mark.slow  # loads the embedding model
def test_an_answer_that_stopped_by_itself_is_kept_whole(kettle_service):
    service = kettle_service(ScriptedChatModel(text=SHORT_ANSWER))

    result = service.ask(QUESTION, channel="staff")

    assert result.cut is False
    assert result.answer == SHORT_ANSWER
    assert result.policy["channel"] == "staff"


def test_a_line_announcing_a_list_is_not_an_ending():
    text = "Reset the hub first. Then do this:\n"

    assert safe_boundary(text) == len("Reset the hub first.")
    assert safe_boundary(text + "1. Open the app.\n") == len(text + "1. Open the app.\n")


@pytest.mark.slow  # loads the embedding model
@pytest.mark.parametrize("policy_on", [True, False])
def test_an_answer_that_stops_inside_a_code_block_gets_the_block_closed(kettle_service, policy_on):
    text = "Run this on the hub:\n```bash\nlumora-cli descale --start"
    service = kettle_service(ScriptedChatModel(text=text))

    events = list(service.stream(QUESTION, options=AnswerOptions(length_policy=policy_on)))

    result = events[-1].result
    assert result.cut is False and result.error is None
    assert result.answer == text + "\n```"
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == result.answer
