"""The staff playground's callbacks in-process over the sample help center and the real SmolLM2,
and the page behind its role gate in the real web app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from markdown_it import MarkdownIt

from chatbot.conversations import SessionFilter
from chatbot.history import Turn
from chatbot.prompts import (
    HANDOFF_ANSWER,
    NO_ANSWER_REPLY,
    SYSTEM_PROMPT,
    context_blocks,
    join_context,
)
from chatbot.providers import make_chat_model
from chatbot.service import OFF_TOPIC, ChatResult, ChatService
from chatbot.users import Role
from knowledge.off_topic import (
    BUNDLED_EXAMPLES,
    BUNDLED_PRODUCTS,
    OffTopicExamples,
    OffTopicMatch,
    OtherProducts,
)
from knowledge.retriever import DocumentHit, HybridRetriever
from knowledge.store import StoredChunk
from ui.playground import (
    ANSWER_OUTPUTS,
    SET_OUTPUTS,
    AskedQuestion,
    Playground,
    _quoted,
    off_topic_text,
    parse_prior_turns,
    prompt_text,
    signed_in_text,
)
from ui.web import create_web_app

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAMPLE_QUESTIONS = REPO / "knowledge" / "sample_questions.jsonl"
QUESTION = "How long do I hold the reset button on the hub?"
PRIOR_TURNS = "customer: I have a Lumora hub at home.\nassistant: Great! How can I help with it?"
PARTS = ["system", "history", "context", "question", "answer"]
PASSWORD = "correct horse battery"
SYSTEM_PROMPT_START = SYSTEM_PROMPT.split("\n", 1)[0]


@pytest.fixture
def answering(settings, sample_store, llama_server) -> Iterator[Playground]:
    """The playground over the sample help center, answering with the real SmolLM2 server."""
    model = make_chat_model(settings.llm, local_base_url=llama_server.base_url)
    service = ChatService(settings, sample_store, HybridRetriever(sample_store), model)
    yield Playground(service, settings)
    service.close()


@pytest.fixture
def modelless(settings, sample_store) -> Iterator[Playground]:
    """No chat model at all: anything that reaches the model fails."""
    service = ChatService(settings, sample_store, HybridRetriever(sample_store), None)
    yield Playground(service, settings)
    service.close()


def knobs(playground: Playground, **overrides) -> dict:
    cfg = playground.settings
    return {
        "top_k": cfg.retrieval.top_k,
        "relevance_threshold": cfg.retrieval.relevance_threshold,
        "length_policy": cfg.length_policy.enabled,
        "temperature": cfg.llm.temperature,
    } | overrides


def ask(
    playground: Playground, question: str = QUESTION, prior: str = "", channel="widget", **over
) -> tuple[dict, list[tuple]]:
    """The final view by output name, and every view yielded on the way."""
    views = list(playground.ask(question, prior, channel, **knobs(playground, **over)))
    return dict(zip(ANSWER_OUTPUTS, views[-1], strict=True)), views


def rows(table: pd.DataFrame) -> dict:
    return dict(zip(table["part"], table["tokens"], strict=True))


def test_shows_the_chunks_the_prompt_the_tokens_and_the_timings(answering):
    view, views = ask(answering, prior=PRIOR_TURNS)

    chunks = view["chunks"]
    assert chunks["source"].iloc[0] == "reset-the-hub.md"
    assert chunks["in prompt"].iloc[0] == "yes", "the best chunk is quoted to the model"
    assert set(chunks["in prompt"]) <= {"yes", "no"}
    assert (chunks["chunk similarity"] > 0).all() and chunks["text"].str.len().min() > 0
    assert QUESTION in view["query"]

    prompt = view["prompt"]
    assert "=== system ===" in prompt and SYSTEM_PROMPT_START in prompt
    assert "=== user ===\n" + QUESTION in prompt
    assert "Great! How can I help with it?" in prompt, "the prior turns are sent"
    assert "reset-the-hub.md" in prompt, "the retrieved chunks are quoted"

    tokens = rows(view["tokens"])
    assert all(tokens[part] > 0 for part in PARTS), tokens
    assert tokens["summary"] == 0, "no stored conversation, so nothing was summarised"
    timings = dict(zip(view["timings"]["stage"], view["timings"]["ms"], strict=True))
    assert timings["retrieve"] > 0
    assert 0 < timings["first token"] <= timings["total"]

    assert view["answer"].strip()
    assert "**Handed off:** no" in view["outcome"]
    assert "**Length policy:** widget: about" in view["outcome"]
    assert "**Cut by the length policy:** " in view["outcome"]
    assert view["last"] == AskedQuestion(QUESTION, PRIOR_TURNS, "widget")
    streamed = [v[0] for v in views if isinstance(v[0], str) and v[0]]
    assert len(streamed) >= 3, "the answer streams in pieces"


def test_playground_questions_are_not_stored_as_conversations(answering):
    view, _ = ask(answering, channel="staff", top_k=1)

    assert "**Channel:** staff" in view["outcome"] and view["answer"].strip()
    assert answering.service.conversations.list_sessions(SessionFilter()) == []


def test_knobs_change_top_k_and_the_length_policy_and_re_run_asks_again(answering):
    first, _ = ask(answering, top_k=1)

    assert set(first["chunks"]["rank"]) == {1}
    assert first["chunks"]["source"].iloc[0] == "reset-the-hub.md"
    assert "**Documents quoted in the prompt:** 1" in first["outcome"]
    assert "**Length policy:** widget: about" in first["outcome"]

    views = list(answering.rerun(first["last"], **knobs(answering, top_k=3, length_policy=False)))
    again = dict(zip(ANSWER_OUTPUTS, views[-1], strict=True))

    assert again["last"] == first["last"]
    assert again["chunks"]["rank"].max() > 1
    assert "**Length policy:** disabled" in again["outcome"]
    assert "**Cut by the length policy:** no" in again["outcome"]
    assert again["answer"].strip()


def test_an_off_topic_hand_off_names_the_example(settings, sample_store, embeddings, tmp_path):
    examples = OffTopicExamples.from_file(BUNDLED_EXAMPLES, embeddings, cache_dir=tmp_path)
    retriever = HybridRetriever(sample_store, off_topic=examples)
    service = ChatService(settings, sample_store, retriever, None)  # no model to reach
    try:
        view, _ = ask(Playground(service, settings), "my xbox controller wont pair anymore")
    finally:
        service.close()

    assert "**Handed off:** yes (off-topic)" in view["outcome"]
    assert view["answer"] == HANDOFF_ANSWER
    assert view["prompt"].startswith("No model call: the question is closer to the off-topic")
    assert "controller" in view["prompt"]  # the example it resembled
    assert "failed" not in view["outcome"]


def test_a_hand_off_for_another_product_names_it(settings, sample_store):
    products = OtherProducts.from_file(BUNDLED_PRODUCTS)
    retriever = HybridRetriever(sample_store, other_products=products)
    service = ChatService(settings, sample_store, retriever, None)  # no model to reach
    try:
        question = "how do i turn on two-factor authentication for my github account"
        view, _ = ask(Playground(service, settings), question)
    finally:
        service.close()

    assert "**Handed off:** yes (off-topic)" in view["outcome"]
    assert view["answer"] == HANDOFF_ANSWER
    assert view["prompt"].startswith("No model call: the question names 'github', another")


def test_a_hand_off_for_a_question_about_another_product_itself_says_so():
    result = ChatResult(
        answer=HANDOFF_ANSWER,
        sources=[],
        handoff=True,
        handoff_reason=OFF_TOPIC,
        other_products=["slack"],
        product_itself=True,
    )

    text = prompt_text(result, 0.3)

    assert text.startswith("No model call: the question asks about 'slack' itself")
    assert "mention it" in text and "none of" not in text


def test_a_high_relevance_threshold_hands_off_without_a_model_call(modelless):
    # This service has no model: reaching it would fail the request.
    view, _ = ask(modelless, relevance_threshold=0.99)

    assert "**Handed off:** yes (nothing relevant found)" in view["outcome"]
    assert "failed" not in view["outcome"]
    assert view["answer"] == HANDOFF_ANSWER
    assert view["prompt"].startswith("No model call")
    assert rows(view["tokens"])["answer"] == 0
    assert "not applied" in view["outcome"]
    assert "reset-the-hub.md" in set(view["chunks"]["source"]), "what was retrieved is shown"
    assert set(view["chunks"]["in prompt"]) == {"no"}


def test_a_model_that_finds_no_answer_is_handed_off_and_its_prompt_is_shown(settings, sample_store):
    model = GenericFakeChatModel(messages=iter([AIMessage(NO_ANSWER_REPLY)]))
    service = ChatService(settings, sample_store, HybridRetriever(sample_store), model)
    try:
        view, _ = ask(Playground(service, settings))
    finally:
        service.close()

    assert "**Handed off:** yes (the model found no answer)" in view["outcome"]
    assert view["answer"].startswith(NO_ANSWER_REPLY)
    assert view["prompt"].startswith("=== system ===")
    assert SYSTEM_PROMPT_START in view["prompt"]


@pytest.mark.parametrize(
    ("prior", "message"),
    [
        ('[{"role": "user", "content": "hi"', "Prior turns: not valid JSON"),
        ('[{"role": "system", "content": "hi"}]', "needs role 'user' or 'assistant'"),
        ("hello there", "Prior turns, line 1: no speaker"),
        ("customer:", "Prior turns, line 1: the customer said nothing."),
    ],
)
def test_bad_prior_turns_get_a_clear_message(modelless, prior, message):
    view, views = ask(modelless, prior=prior)

    assert len(views) == 1
    assert message in view["outcome"]
    assert view["answer"] == "" and view["chunks"].empty


def test_prior_turns_as_lines_or_as_json():
    lines = "Customer: My bulb is offline.\nit blinks red\n\nassistant: Try the wall switch."
    as_json = (
        '[{"role": "user", "content": "My bulb is offline.\\nit blinks red"},'
        ' {"role": "assistant", "content": "Try the wall switch."}]'
    )
    expected = [
        Turn("user", "My bulb is offline.\nit blinks red"),
        Turn("assistant", "Try the wall switch."),
    ]

    assert parse_prior_turns(lines) == expected
    assert parse_prior_turns(as_json) == expected
    assert parse_prior_turns("  ") == []


def test_empty_questions_unknown_channels_and_re_run_before_asking(modelless):
    empty, _ = ask(modelless, question="   ")
    channel, _ = ask(modelless, channel="fax")
    rerun = dict(zip(ANSWER_OUTPUTS, next(modelless.rerun(None, **knobs(modelless))), strict=True))

    assert "Please type a question first." in empty["outcome"]
    assert "Unknown channel" in channel["outcome"]
    assert "ask a question first" in rerun["outcome"]


def test_the_signed_in_user_is_shown_as_text():
    shown = signed_in_text(SimpleNamespace(username="<img src=x onerror=alert(1)>"))
    rendered = MarkdownIt("commonmark").render(shown)

    assert "<img" not in rendered and "&lt;img src=x onerror=alert(1)&gt;" in rendered


def run_set(playground: Playground, path, with_answers: bool, **knobs) -> tuple[dict, list]:
    calls: list[tuple] = []

    def progress(value, desc=None):
        calls.append(value)

    out = playground.run_question_set(str(path), with_answers, **knobs, progress=progress)
    return dict(zip(SET_OUTPUTS, out, strict=True)), calls


def test_a_question_set_runs_retrieval_only_by_default(modelless):
    view, progress = run_set(modelless, SAMPLE_QUESTIONS, with_answers=False)

    table = view["rows"]
    lines = [line for line in SAMPLE_QUESTIONS.read_text().splitlines() if line.strip()]
    assert len(table) == len(lines)
    assert table["id"].tolist() == [f"lum-{n:03d}" for n in range(1, len(lines) + 1)]
    assert {"hit@1", "hit@5", "all_gold@5", "handoff", "sources"} <= set(table.columns)
    assert "must_include" not in table.columns
    reset = table[table["id"] == "lum-001"].iloc[0]
    assert reset["hit@5"] == "yes" and "reset-the-hub.md" in reset["sources"]
    summary = view["summary"].set_index("kind")
    assert {"answerable", "follow_up", "in_scope", "out_of_scope"} <= set(summary.index)
    assert summary.loc["in_scope", "n"] == 17 and summary.loc["out_of_scope", "n"] == 3
    assert 0 < summary.loc["in_scope", "hit@5"] <= 1
    assert 0 <= summary.loc["out_of_scope", "decline_rate"] <= 1
    # Which check handed the out-of-scope questions off (no off-topic check on this service).
    declined = round(summary.loc["out_of_scope", "decline_rate"] * 3)
    assert summary.loc["out_of_scope", "declined_by"] == f"no_match {declined}"
    assert f"{len(lines)} questions, retrieval only" in view["status"]
    assert progress[0] == (0, len(lines)) and progress[-1] == (len(lines), len(lines))


def test_a_question_set_runs_with_the_knobs_of_the_page(modelless):
    view, _ = run_set(
        modelless, SAMPLE_QUESTIONS, with_answers=False, top_k=2, relevance_threshold=0.99
    )

    assert set(view["rows"]["handoff"]) == {"yes"}, "nothing reaches a threshold of 0.99"
    assert set(view["rows"]["why"]) == {"nothing relevant found"}
    summary = view["summary"].set_index("kind")
    assert summary.loc["out_of_scope", "decline_rate"] == 1
    assert "hit@2" in view["rows"].columns
    assert "top 2, relevance threshold 0.99" in view["status"]


def test_a_question_set_with_answers_checks_must_include(answering, tmp_path):
    subset = tmp_path / "two.jsonl"
    subset.write_text("\n".join(SAMPLE_QUESTIONS.read_text().splitlines()[:2]) + "\n")

    view, _ = run_set(answering, subset, with_answers=True)

    table = view["rows"]
    assert len(table) == 2
    assert set(table["must_include"]) <= {"yes", "no"}
    assert table["answer"].str.strip().str.len().min() > 0
    assert "must_include" in view["summary"].columns
    assert "2 questions, with answers" in view["status"]


def test_a_bad_question_set_gets_a_clear_message(modelless, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "ok"}\nnot json\n')

    view, _ = run_set(modelless, bad, with_answers=False)
    nothing = dict(zip(SET_OUTPUTS, modelless.run_question_set(None, False), strict=True))
    no_model, _ = run_set(modelless, SAMPLE_QUESTIONS, with_answers=True)

    assert "Cannot read the question set: bad.jsonl:2: not valid JSON" in view["status"]
    assert str(tmp_path) not in view["status"], "the server's folder is not shown"
    assert view["rows"].empty
    assert "Upload a JSONL question set first." in nothing["status"]
    assert "No chat model" in no_model["status"]


# ----- over HTTP, in the real web app


@pytest.fixture
def web(settings, sample_store):
    service = ChatService(settings, sample_store, HybridRetriever(sample_store), None)
    app = create_web_app(service, settings)
    app.state.users.add_user("staff", PASSWORD, Role.STAFF, actor="test")
    yield app
    app.state.desk.close()
    service.close()


def test_the_playground_needs_a_signed_in_staff_member(web):
    # As a browser on the app's own pages: it names where a request comes from.
    with TestClient(web, headers={"Sec-Fetch-Site": "same-origin"}) as client:
        anonymous = client.get("/staff/playground/", follow_redirects=False)
        signed_in = client.post(
            "/login", data={"username": "staff", "password": PASSWORD}, follow_redirects=False
        )
        page = client.get("/staff/playground/")
        config = client.get("/staff/playground/config")

    assert anonymous.status_code == 401
    assert signed_in.status_code == 303
    assert page.status_code == 200
    assert config.status_code == 200
    elem_ids = {c.get("props", {}).get("elem_id") for c in config.json()["components"]}
    assert {
        "playground-question",
        "playground-ask",
        "playground-answer",
        "playground-chunks",
        "playground-prompt",
        "playground-tokens",
    } <= elem_ids


def test_asking_as_a_site_uses_its_channel_instructions_and_collection(
    settings, sample_store, tmp_path
):
    from chatbot.settings import SiteSettings
    from knowledge.ingest import ingest_file
    from tests.conftest import SAMPLE_HELP

    lamp = SiteSettings(
        key="lamp-site-key",
        name="Lamp shop",
        allowed_origins=["self"],
        channel="staff",
        instructions="Sign off as Lumi.",
        collection="lamp",
    )
    settings = settings.model_copy(update={"sites": [*settings.sites, lamp]})
    model = GenericFakeChatModel(messages=iter([AIMessage("Hold it for ten seconds.")] * 3))
    service = ChatService(settings, sample_store, HybridRetriever(sample_store), model)
    playground = Playground(service, settings)
    asked_channels = []
    real_ask = service.ask

    def ask_and_note(*args, **kwargs):
        asked_channels.append(kwargs.get("channel"))
        return real_ask(*args, **kwargs)

    service.ask = ask_and_note
    try:
        # The site's collection is empty: nothing is found there, though the default has it.
        empty, _ = ask(playground, site="lamp-site-key")
        assert "**Handed off:** yes (nothing relevant found)" in empty["outcome"]
        assert empty["chunks"].empty
        assert empty["last"] == AskedQuestion(QUESTION, "", "widget", "lamp-site-key")

        lamp_store = service.retriever_for("lamp").store
        reset = SAMPLE_HELP / "reset-the-hub.md"
        assert ingest_file(lamp_store, reset, "reset-the-hub.md").status == "added"
        view, _ = ask(playground, site="lamp-site-key")
        assert view["answer"].startswith("Hold it for ten seconds.")
        assert set(view["chunks"]["source"]) == {"reset-the-hub.md"}
        assert "Sign off as Lumi." in view["prompt"]
        assert "**Channel:** staff" in view["outcome"], "the site's channel, not the radio's"

        unknown, _ = ask(playground, site="no-such-site")
        assert "No configured site has the key 'no-such-site'." in unknown["outcome"]

        subset = SAMPLE_QUESTIONS.read_text().splitlines()[:3]
        path = tmp_path / "three.jsonl"
        path.write_text("\n".join(subset) + "\n")
        by_site, _ = run_set(playground, path, with_answers=False, site="lamp-site-key")
        found = {s for row in by_site["rows"]["sources"] for s in row.split(", ") if s}
        assert found == {"reset-the-hub.md"}, "only the site's collection is searched"
        one = tmp_path / "one.jsonl"
        one.write_text(subset[0] + "\n")
        answered, _ = run_set(playground, one, with_answers=True, site="lamp-site-key")
        assert answered["rows"]["answer"].str.startswith("Hold it").all()
        assert asked_channels == ["staff"], "the question set asks with the site's channel"
        missing, _ = run_set(playground, path, with_answers=False, site="no-such-site")
        assert "No configured site has the key" in missing["status"]
    finally:
        service.close()


def test_a_question_set_is_read_only_from_an_upload(web, tmp_path):
    """A file path the browser names is not read: only a file uploaded to the page is."""
    import uuid

    import gradio.utils

    marker = f"SECRET-{uuid.uuid4().hex}"
    secret = tmp_path / "elsewhere.jsonl"
    secret.write_text(f'{{"id": "q1", "question": "{marker}", "kind": "answerable"}}\n')
    # As a browser on the app's own pages: it names where a request comes from.
    with TestClient(web, headers={"Sec-Fetch-Site": "same-origin"}) as client:
        client.post("/login", data={"username": "staff", "password": PASSWORD})
        config = client.get("/staff/playground/config").json()
        file_box = next(
            c["id"]
            for c in config["components"]
            if c.get("props", {}).get("elem_id") == "playground-set-file"
        )
        values = {c["id"]: c.get("props", {}).get("value") for c in config["components"]}
        fn_index, inputs = next(
            (n, d["inputs"])
            for n, d in enumerate(config["dependencies"])
            if d["inputs"] and d["inputs"][0] == file_box
        )
        named = {"path": str(secret), "meta": {"_type": "gradio.FileData"}}
        response = client.post(
            "/staff/playground/gradio_api/run/predict",
            json={
                "fn_index": fn_index,
                "data": [named, *(values[i] for i in inputs[1:])],
                "session_hash": "s",
            },
        )

        uploaded = client.post(
            "/staff/playground/gradio_api/upload",
            files={"files": ("set.jsonl", secret.read_bytes(), "application/octet-stream")},
        ).json()[0]
        run_upload = client.post(
            "/staff/playground/gradio_api/run/predict",
            json={
                "fn_index": fn_index,
                "data": [{**named, "path": uploaded}, *(values[i] for i in inputs[1:])],
                "session_hash": "s",
            },
        )

    assert marker not in response.text
    copies = Path(gradio.utils.get_upload_folder()).rglob("elsewhere.jsonl")
    assert not [c for c in copies if marker in c.read_text()]
    assert run_upload.status_code == 200 and marker in run_upload.text


def test_the_playground_takes_no_upload_over_its_limit(web):
    from ui.playground import PLAYGROUND_MAX_UPLOAD

    # As a browser on the app's own pages: it names where a request comes from.
    with TestClient(web, headers={"Sec-Fetch-Site": "same-origin"}) as client:
        client.post("/login", data={"username": "staff", "password": PASSWORD})
        too_big = client.post(
            "/staff/playground/gradio_api/upload",
            files={"files": ("huge.exe", b"0" * (PLAYGROUND_MAX_UPLOAD + 1), "application/x")},
        )
        small = client.post(
            "/staff/playground/gradio_api/upload",
            files={"files": ("set.jsonl", b'{"id": "q1", "question": "hi"}\n', "text/plain")},
        )

    assert too_big.status_code == 413, too_big.text
    assert small.status_code == 200 and small.json()[0].endswith("set.jsonl")


@pytest.mark.parametrize(
    "question, outcome",
    [("it doesn't work", "the customer is asked for details"), ("hi there", "a greeting")],
)
def test_a_turn_answered_without_a_search_says_why_it_was_not_handed_off(
    modelless, question, outcome
):
    # This service has no model: reaching it would fail the request.
    view, _ = ask(modelless, question)

    assert "**Handed off:** no (" in view["outcome"] and outcome in view["outcome"]
    assert "failed" not in view["outcome"]
    assert view["prompt"].startswith("No model call: ")


def test_a_chunk_with_inline_html_counts_as_quoted_in_the_prompt():
    text = "Press <kbd>Enter</kbd> to send.\nThen wait."
    chunk = StoredChunk("send.md:v1:0", "send.md", "Send", "", text, 0.5)
    prompt = join_context(context_blocks([DocumentHit("send.md", "Send", 0.9, 0.5, [chunk])]))

    assert _quoted(text, prompt)
    assert not _quoted("Press Escape to close.", prompt)


def test_the_off_topic_explanation_says_which_rule_handed_off():
    unknown = OffTopicMatch("who is your ceo", 0.7, 0.4, unknown_words=("ceo",))
    spread = OffTopicMatch("where is your company headquartered", 0.6, 0.2)

    assert "uses words no document uses (ceo)" in off_topic_text(unknown)
    said = off_topic_text(spread)
    assert "no passage holds more than half of its words" in said
    assert "retrieval.off_topic_known_words_margin" in said and "()" not in said
