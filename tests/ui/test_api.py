"""The customer REST API, every route, in process: the real app, the sample help center in a real
store, SmolLM2 behind the real llama.cpp server, a real SQLite conversation file.

Answers are checked for what a widget would show (sources, streamed text, the stored turns,
refusals with their codes), never for the tiny model's wording.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from chatbot.handoff import accepts_offer, wants_person
from chatbot.prompts import HANDOFF_ANSWER, HANDOFF_OFFER, NO_ANSWER_TEXT
from chatbot.providers import ModelProbe, make_chat_model
from chatbot.service import ChatService
from chatbot.settings import Settings, SiteSettings
from chatbot.small_talk import DETAIL_REPLY, GOODBYE_REPLY, GREETING_REPLY, THANKS_REPLY
from knowledge.ingest import ingest_paths
from knowledge.off_topic import BUNDLED_EXAMPLES, OffTopicExamples
from knowledge.retriever import HybridRetriever
from knowledge.store import KnowledgeStore
from tests.chatbot.conftest_e2e import unreachable_base_url
from ui.web import create_web_app

pytestmark = pytest.mark.slow

SITE_KEY = "site-key-for-tests"
SHOP = "https://shop.example.com"
RESET_QUESTION = "How long do I have to hold the hub's reset button?"
OFF_TOPIC_QUESTION = "What's a good recipe for banana bread?"


class Clock:
    """A clock the test moves by hand (rate-limit windows, idle expiry).

    It starts at the wall-clock time, which the conversation store stamps its turns with.
    """

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def site_settings(settings: Settings, **changes) -> Settings:
    site = SiteSettings(key=SITE_KEY, name="Test shop", allowed_origins=[SHOP, "self"])
    return settings.model_copy(update={"sites": [site], **changes})


@pytest.fixture
def make_client(settings, sample_store, clock) -> Iterator[Callable[..., TestClient]]:
    """``make_client(base_url, off_topic=None, **settings_changes)``: the whole web app over a
    ChatService (with ``off_topic``, the off-topic examples its retriever checks)."""
    built: list[tuple[ChatService, TestClient]] = []

    def build(base_url: str, off_topic: OffTopicExamples | None = None, **changes) -> TestClient:
        cfg = site_settings(settings, **changes)
        model = make_chat_model(cfg.llm, local_base_url=base_url)
        retriever = HybridRetriever(sample_store, off_topic=off_topic)
        service = ChatService(cfg, sample_store, retriever, model, model_probe=None)
        client = TestClient(create_web_app(service, cfg, clock=clock))
        client.__enter__()
        built.append((service, client))
        return client

    yield build
    for service, client in built:
        client.__exit__(None, None, None)
        client.app.state.desk.close()
        service.close()


@pytest.fixture
def client(make_client, llama_server) -> TestClient:
    return make_client(llama_server.base_url)


@pytest.fixture
def offline_client(make_client) -> Iterator[TestClient]:
    """The model's address refuses connections."""
    with unreachable_base_url() as url:
        yield make_client(url)


def new_session(client: TestClient, origin: str | None = SHOP) -> tuple[str, dict]:
    headers = {"X-Site-Key": SITE_KEY} | ({"Origin": origin} if origin else {})
    response = client.post("/api/v1/sessions", headers=headers, json={})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["session_id"], {"Authorization": f"Bearer {body['session_token']}"}


def chat(client: TestClient, session_id: str, headers: dict, message: str):
    return client.post(
        "/api/v1/chat", headers=headers, json={"session_id": session_id, "message": message}
    )


def read_events(response) -> list[tuple[str, dict]]:
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def error_code(response) -> str:
    return response.json()["error"]["code"]


def db_path(client: TestClient):
    return client.app.state.chat.service.conversations.path


# ----- sessions, sites and origins


def test_a_session_token_is_random_and_only_its_hash_is_stored(client):
    first = client.post("/api/v1/sessions", headers={"X-Site-Key": SITE_KEY}, json={}).json()
    second = client.post("/api/v1/sessions", headers={"X-Site-Key": SITE_KEY}, json={}).json()

    assert first["session_token"] != second["session_token"]
    assert len(first["session_token"]) >= 40
    assert first["site"]["name"] == "Test shop"
    with sqlite3.connect(db_path(client)) as db:
        stored = db.execute(
            "SELECT token_hash FROM sessions WHERE id = ?", (first["session_id"],)
        ).fetchone()[0]
        everything = "\n".join(str(row) for row in db.execute("SELECT * FROM sessions"))
    assert stored == hashlib.sha256(first["session_token"].encode()).hexdigest()
    assert first["session_token"] not in everything


def test_unknown_site_key_and_disallowed_origin_are_refused(client):
    unknown = client.post("/api/v1/sessions", headers={"X-Site-Key": "no-such-key"}, json={})
    missing = client.post("/api/v1/sessions", json={})
    elsewhere = client.post(
        "/api/v1/sessions",
        headers={"X-Site-Key": SITE_KEY, "Origin": "https://evil.example"},
        json={},
    )
    site = client.get(f"/api/v1/sites/{SITE_KEY}", headers={"Origin": "https://evil.example"})

    assert (unknown.status_code, error_code(unknown)) == (403, "site_not_allowed")
    assert (missing.status_code, error_code(missing)) == (403, "site_not_allowed")
    assert (elsewhere.status_code, error_code(elsewhere)) == (403, "origin_not_allowed")
    assert "access-control-allow-origin" not in elsewhere.headers
    assert (site.status_code, error_code(site)) == (403, "origin_not_allowed")


def test_cors_allows_only_the_sites_origins(client):
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = client.options("/api/v1/chat", headers={"Origin": SHOP, **preflight})
    refused = client.options(
        "/api/v1/chat", headers={"Origin": "https://evil.example", **preflight}
    )
    site = client.get(f"/api/v1/sites/{SITE_KEY}", headers={"Origin": SHOP})
    own = client.get(f"/api/v1/sites/{SITE_KEY}", headers={"Origin": "http://testserver"})

    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == SHOP
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    assert site.status_code == 200 and site.headers["access-control-allow-origin"] == SHOP
    assert site.json()["greeting"]
    assert own.status_code == 200, "'self' is the app's own origin"


def test_a_session_is_refused_from_another_sites_origin(make_client, settings, llama_server):
    client = make_client(llama_server.base_url)
    session_id, headers = new_session(client)

    other = client.get(
        f"/api/v1/sessions/{session_id}", headers={**headers, "Origin": "https://evil.example"}
    )

    assert (other.status_code, error_code(other)) == (403, "origin_not_allowed")


# ----- chatting


def test_chat_answers_with_sources_and_stores_both_turns(client):
    session_id, headers = new_session(client)

    response = chat(client, session_id, headers, RESET_QUESTION)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"].strip()
    assert body["sources"][0]["source"] == "reset-the-hub.md"
    assert body["sources"][0]["url"] == "/help/reset-the-hub.md"
    assert body["handoff"] is False and body["handoff_ticket"] is None
    assert body["handoff_reason"] is None
    assert body["usage"]["completion_tokens"] > 0
    history = client.get(f"/api/v1/sessions/{session_id}", headers=headers).json()
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("user", RESET_QUESTION),
        ("assistant", body["answer"]),
    ]
    assert history["messages"][1]["id"] == body["turn_id"]
    assert history["messages"][1]["sources"][0]["title"].startswith("Restart or factory reset")


def test_stream_sends_sources_then_tokens_then_done(client):
    session_id, headers = new_session(client)

    response = client.post(
        "/api/v1/chat/stream",
        headers=headers,
        json={"session_id": session_id, "message": RESET_QUESTION},
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = read_events(response)
    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "done"
    assert names.count("sources") == 1 and names.count("token") >= 2
    assert events[0][1]["sources"][0]["source"] == "reset-the-hub.md"
    done = events[-1][1]
    streamed = "".join(data["text"] for name, data in events if name == "token")
    assert streamed.strip() and done["answer"].startswith(streamed[:20])
    assert done["turn_id"] and done["timings_ms"]["first_token"] > 0
    assert done["usage"]["completion_tokens"] > 0


def test_stream_reports_a_model_failure_as_an_error_event(offline_client):
    session_id, headers = new_session(offline_client)

    response = offline_client.post(
        "/api/v1/chat/stream",
        headers=headers,
        json={"session_id": session_id, "message": RESET_QUESTION},
    )

    events = read_events(response)
    errors = [data for name, data in events if name == "error"]
    assert errors and errors[0]["code"] == "unavailable" and errors[0]["message"]
    assert events[-1][0] == "done"
    assert "Traceback" not in response.text


@pytest.mark.parametrize("route", ["/api/v1/chat", "/api/v1/chat/stream"])
def test_wrong_missing_and_foreign_tokens_are_refused(client, route):
    mine, my_headers = new_session(client)
    theirs, _ = new_session(client)
    body = {"message": RESET_QUESTION}

    wrong = client.post(
        route, headers={"Authorization": "Bearer not-the-token"}, json={"session_id": mine, **body}
    )
    missing = client.post(route, json={"session_id": mine, **body})
    foreign = client.post(route, headers=my_headers, json={"session_id": theirs, **body})
    unknown = client.post(route, headers=my_headers, json={"session_id": "nope", **body})

    assert (wrong.status_code, error_code(wrong)) == (401, "invalid_token")
    assert (missing.status_code, error_code(missing)) == (401, "missing_token")
    assert (foreign.status_code, error_code(foreign)) == (401, "invalid_token")
    assert (unknown.status_code, error_code(unknown)) == (404, "unknown_session")
    with sqlite3.connect(db_path(client)) as db:
        assert db.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 0


@pytest.mark.parametrize(
    "route", ["/api/v1/chat", "/api/v1/chat/stream", "/api/v1/feedback", "/api/v1/handoff"]
)
@pytest.mark.parametrize("session_id", ["\\ud800", "x" * 1000], ids=["surrogate", "long"])
def test_a_malformed_session_id_is_an_unknown_session_not_a_crash(client, route, session_id):
    _, headers = new_session(client)
    # Written out by hand: a lone surrogate is valid JSON but no encoder would send it.
    body = f'{{"session_id": "{session_id}", "message": "hi", "turn_id": 1, "rating": "up"}}'

    response = client.post(
        route, headers={**headers, "Content-Type": "application/json"}, content=body
    )

    assert (response.status_code, error_code(response)) == (404, "unknown_session")


def test_another_customers_history_cannot_be_read(client):
    mine, my_headers = new_session(client)
    theirs, their_headers = new_session(client)
    chat(client, theirs, their_headers, "Can I talk to a person?")

    response = client.get(f"/api/v1/sessions/{theirs}", headers=my_headers)

    assert (response.status_code, error_code(response)) == (401, "invalid_token")
    assert "person" not in response.text
    assert client.get(f"/api/v1/sessions/{theirs}", headers=their_headers).status_code == 200


@pytest.mark.parametrize("route", ["/api/v1/chat", "/api/v1/chat/stream"])
def test_oversized_and_empty_messages_are_refused_and_nothing_is_stored(client, route):
    session_id, headers = new_session(client)
    limit = client.app.state.chat.settings.chat.max_message_chars

    too_long = client.post(
        route, headers=headers, json={"session_id": session_id, "message": "x" * (limit + 1)}
    )
    empty = client.post(route, headers=headers, json={"session_id": session_id, "message": "  "})
    huge_body = client.post(
        route, headers=headers, json={"session_id": session_id, "message": "y" * 200_000}
    )

    assert (too_long.status_code, error_code(too_long)) == (413, "message_too_long")
    assert f"{limit:,}" in too_long.json()["error"]["message"]
    assert (empty.status_code, error_code(empty)) == (400, "empty_message")
    assert (huge_body.status_code, error_code(huge_body)) == (413, "request_too_large")
    history = client.get(f"/api/v1/sessions/{session_id}", headers=headers).json()
    assert history["messages"] == []


@pytest.mark.parametrize("route", ["/api/v1/chat", "/api/v1/chat/stream"])
def test_invisible_broken_or_malformed_messages_get_a_clear_error(client, route):
    session_id, headers = new_session(client)
    headers = {**headers, "Content-Type": "application/json"}

    def post(body: str):
        return client.post(route, headers=headers, content=body.encode())

    invisible = post(json.dumps({"session_id": session_id, "message": "\u200b\u2060 \u200b"}))
    # json.dumps keeps a lone surrogate as the escape \ud800, which is valid JSON.
    broken = post(json.dumps({"session_id": session_id, "message": "reset \ud800 hub"}))
    not_json = post('{"session_id": ')
    not_text = post(json.dumps({"session_id": session_id, "message": ["a"]}))

    assert (invisible.status_code, error_code(invisible)) == (400, "empty_message")
    assert (broken.status_code, error_code(broken)) == (400, "unreadable_message")
    for response in (not_json, not_text):
        assert (response.status_code, error_code(response)) == (422, "invalid_request")
        assert "detail" not in response.json()
    assert "message: " in not_text.json()["error"]["message"]
    history = client.get(f"/api/v1/sessions/{session_id}", headers=headers).json()
    assert history["messages"] == []


def test_a_body_sent_in_chunks_is_held_to_the_same_size_limit(client):
    session_id, headers = new_session(client)
    headers = {**headers, "Content-Type": "application/json"}
    small = json.dumps({"session_id": session_id, "message": "  "}).encode()
    big = json.dumps({"session_id": session_id, "message": "y" * 200_000}).encode()

    def chunks(body: bytes):
        yield from (body[i : i + 4096] for i in range(0, len(body), 4096))

    refused = client.post("/api/v1/chat", headers=headers, content=chunks(big))
    read = client.post("/api/v1/chat", headers=headers, content=chunks(small))

    assert (refused.status_code, error_code(refused)) == (413, "request_too_large")
    assert (read.status_code, error_code(read)) == (400, "empty_message"), "a small one is read"
    history = client.get(f"/api/v1/sessions/{session_id}", headers=headers).json()
    assert history["messages"] == []


def kettle_site(settings, embeddings, tmp_path, articles: dict[str, str]) -> SiteSettings:
    """A site answering from a collection of its own that holds ``articles`` (name: text)."""
    docs = tmp_path / "kettle-docs"
    docs.mkdir()
    for name, text in articles.items():
        (docs / name).write_text(text, encoding="utf-8")
    kettle = KnowledgeStore(settings.data_dir, embeddings, "kettle")
    assert ingest_paths(kettle, [docs]).ok
    return SiteSettings(
        key=SITE_KEY, name="Kettle shop", allowed_origins=[SHOP], collection="kettle"
    )


def test_a_site_with_its_own_collection_links_to_articles_from_it(
    make_client, settings, embeddings, tmp_path
):
    descale = (
        "# Descale the kettle\n\nFill it with water and vinegar, then hold Brew for seven "
        "seconds.\n"
    )
    site = kettle_site(settings, embeddings, tmp_path, {"descale-the-kettle.md": descale})
    with unreachable_base_url() as url:
        client = make_client(url, sites=[site])
        session_id, headers = new_session(client)

        answer = chat(client, session_id, headers, "How do I descale my kettle?").json()

    link = f"/help/descale-the-kettle.md?site={SITE_KEY}"
    assert [s["url"] for s in answer["sources"]] == [link]
    page = client.get(link)
    assert page.status_code == 200 and "<h1>Descale the kettle</h1>" in page.text
    assert "No help article" in client.get("/help/descale-the-kettle.md").text
    assert "No help article" in client.get("/help/descale-the-kettle.md?site=nope").text


def test_help_page_reads_inline_html_as_the_sources_do(make_client, settings, embeddings, tmp_path):
    keys = (
        "# Kettle <b>keys</b>\n\n## The <kbd>Brew</kbd> key\n\nPress <kbd>Brew</kbd>, then the "
        '<i class="fa fa-cog"></i> icon <img src=x onerror=alert(9)> and '
        '<img src="lid.png" alt="the lid"> for `<kbd>` help. Open https://<subdomain>.example.com.\n'
    )
    site = kettle_site(settings, embeddings, tmp_path, {"keys.md": keys})
    with unreachable_base_url() as url:
        client = make_client(url, sites=[site])

        page = client.get(f"/help/keys.md?site={SITE_KEY}").text

    assert "<title>Kettle keys</title>" in page and "<h1>Kettle keys</h1>" in page
    assert "<h2>The Brew key</h2>" in page
    assert "Press Brew, then the icon and the lid for <code>&lt;kbd&gt;</code> help." in page
    # A placeholder in angle brackets is text, as it is in the answer's sources.
    assert "https://&lt;subdomain&gt;.example.com" in page
    assert "onerror" not in page and "&lt;img" not in page and "&lt;b&gt;" not in page


def test_help_page_shows_a_code_block_split_between_chunks_as_code(
    make_client, settings, embeddings, tmp_path
):
    lines = "".join(f"<b>setting {n}</b>\n" for n in range(90))
    codes = (
        f"# Kettle codes\n\nPaste this into the kettle's page.\n\n```html\n{lines}```\n\n"
        "Then press <kbd>Save</kbd> to keep it.\n"
    )
    site = kettle_site(settings, embeddings, tmp_path, {"codes.md": codes})
    with unreachable_base_url() as url:
        client = make_client(url, sites=[site])
        chunks = client.app.state.chat.service.retriever_for("kettle").store.document_chunks(
            "codes.md"
        )

        page = client.get(f"/help/codes.md?site={SITE_KEY}").text

    assert len(chunks) >= 2, "the block is longer than one chunk"
    assert page.count("&lt;b&gt;setting 0&lt;/b&gt;") == 1
    assert "&lt;b&gt;setting 89&lt;/b&gt;" in page, "the block's end is still code"
    assert "<p>Then press Save to keep it.</p>" in page, "the text after it is text"


def test_rate_limit_per_session_answers_429_and_resets(make_client, settings, clock):
    limits = settings.rate_limits.model_copy(update={"per_session_per_minute": 2})
    with unreachable_base_url() as url:
        client = make_client(url, rate_limits=limits)
        session_id, headers = new_session(client)

        first = chat(client, session_id, headers, OFF_TOPIC_QUESTION)
        second = chat(client, session_id, headers, OFF_TOPIC_QUESTION)
        clock.now += 10.6  # 49.4 s to wait: the message says as much as the header
        limited = chat(client, session_id, headers, OFF_TOPIC_QUESTION)
        clock.now += 51
        after_reset = chat(client, session_id, headers, OFF_TOPIC_QUESTION)

    assert first.status_code == second.status_code == 200
    assert (limited.status_code, error_code(limited)) == (429, "rate_limited")
    assert limited.headers["retry-after"] == "50"
    assert limited.json()["error"]["retry_after"] == 50
    assert limited.json()["error"]["message"].endswith("Please wait 50 s.")
    assert after_reset.status_code == 200
    history = client.get(f"/api/v1/sessions/{session_id}", headers=headers).json()
    assert len(history["messages"]) == 6, "the refused message was not stored"


def test_rate_limit_per_client_address_spans_sessions(make_client, settings):
    limits = settings.rate_limits.model_copy(update={"per_client_per_minute": 2})
    with unreachable_base_url() as url:
        client = make_client(url, rate_limits=limits)
        sessions = [new_session(client) for _ in range(3)]

        codes = [chat(client, sid, h, OFF_TOPIC_QUESTION).status_code for sid, h in sessions]

    assert codes == [200, 200, 429]


def test_opening_sessions_is_rate_limited_per_address(make_client, settings):
    widget = settings.widget.model_copy(update={"max_sessions_per_minute": 2})
    with unreachable_base_url() as url:
        client = make_client(url, widget=widget)
        codes = [
            client.post("/api/v1/sessions", headers={"X-Site-Key": SITE_KEY}, json={}).status_code
            for _ in range(3)
        ]

    assert codes == [201, 201, 429]


def test_an_idle_session_expires(client, clock):
    session_id, headers = new_session(client)
    idle_s = client.app.state.chat.idle_timeout_s()

    clock.now += 10
    assert client.get(f"/api/v1/sessions/{session_id}", headers=headers).status_code == 200
    clock.now += idle_s + 60
    expired = chat(client, session_id, headers, RESET_QUESTION)

    assert (expired.status_code, error_code(expired)) == (401, "session_expired")


# ----- feedback and hand-off


def test_feedback_rates_an_answer_of_ones_own_session_only(offline_client):
    client = offline_client
    mine, my_headers = new_session(client)
    theirs, their_headers = new_session(client)
    my_turn = chat(client, mine, my_headers, OFF_TOPIC_QUESTION).json()["turn_id"]
    their_turn = chat(client, theirs, their_headers, OFF_TOPIC_QUESTION).json()["turn_id"]

    up = client.post(
        "/api/v1/feedback",
        headers=my_headers,
        json={"session_id": mine, "turn_id": my_turn, "rating": "up", "comment": "clear"},
    )
    foreign = client.post(
        "/api/v1/feedback",
        headers=my_headers,
        json={"session_id": mine, "turn_id": their_turn, "rating": "down"},
    )
    bad = client.post(
        "/api/v1/feedback",
        headers=my_headers,
        json={"session_id": mine, "turn_id": my_turn, "rating": "meh"},
    )

    assert up.status_code == 200 and up.json() == {"ok": True, "handoff_ticket": None}
    assert (foreign.status_code, error_code(foreign)) == (404, "unknown_turn")
    assert bad.status_code == 422
    history = client.get(f"/api/v1/sessions/{mine}", headers=my_headers).json()
    assert history["messages"][1]["rating"] == "up"
    theirs_now = client.get(f"/api/v1/sessions/{theirs}", headers=their_headers).json()
    assert theirs_now["messages"][1]["rating"] is None


def test_two_thumbs_down_in_a_row_hand_off(client):
    session_id, headers = new_session(client)
    turns = [chat(client, session_id, headers, RESET_QUESTION).json()["turn_id"] for _ in range(3)]

    def rate(turn_id: int, rating: str) -> dict:
        return client.post(
            "/api/v1/feedback",
            headers=headers,
            json={"session_id": session_id, "turn_id": turn_id, "rating": rating},
        ).json()

    assert rate(turns[0], "down")["handoff_ticket"] is None
    assert rate(turns[1], "up")["handoff_ticket"] is None
    ticket = rate(turns[2], "down")["handoff_ticket"]
    assert ticket is None, "the two downs were not in a row"
    ticket = rate(turns[1], "down")["handoff_ticket"]
    assert ticket is not None and ticket["status"] == "open" and ticket["message"]
    stored = client.app.state.chat.service.conversations.get_ticket(ticket["ticket_id"])
    assert stored.reason == "disliked_answers" and stored.session_id == session_id


def test_handoff_route_opens_one_ticket_with_the_transcript_and_contact(client):
    session_id, headers = new_session(client)
    chat(client, session_id, headers, RESET_QUESTION)

    first = client.post(
        "/api/v1/handoff",
        headers=headers,
        json={"session_id": session_id, "contact": {"name": "Ana", "email": "ana@example.com"}},
    )
    again = client.post("/api/v1/handoff", headers=headers, json={"session_id": session_id})
    bad_email = client.post(
        "/api/v1/handoff",
        headers=headers,
        json={"session_id": session_id, "contact": {"email": "not an address"}},
    )

    assert first.status_code == 200, first.text
    ticket = first.json()
    assert ticket["status"] == "open" and "support team" in ticket["message"]
    assert again.json()["ticket_id"] == ticket["ticket_id"], "one open ticket per conversation"
    assert bad_email.status_code == 422
    assert bad_email.json()["error"]["message"] == (
        "contact.email: must be an email address like name@example.com"
    ), "the message names what to send, not the pattern it is checked with"
    desk = client.app.state.desk
    stored = desk.conversations.get_ticket(ticket["ticket_id"])
    assert stored.contact == {"name": "Ana", "email": "ana@example.com"}
    assert stored.reason == "customer_asked"
    payload = desk.payload(stored)
    assert [m["role"] for m in payload["transcript"]] == ["user", "assistant"]
    assert payload["transcript"][0]["content"] == RESET_QUESTION
    history = client.get(f"/api/v1/sessions/{session_id}", headers=headers).json()
    assert history["handoff_ticket"]["ticket_id"] == ticket["ticket_id"]
    after = chat(client, session_id, headers, RESET_QUESTION)
    assert after.status_code == 200, "the chat stays open after a hand-off"


def test_a_person_asked_for_before_any_message_needs_an_email(offline_client):
    # Neither what it is about nor how to reach anyone: the team could do nothing with it.
    client = offline_client
    session_id, headers = new_session(client)

    nameless = client.post(
        "/api/v1/handoff",
        headers=headers,
        json={"session_id": session_id, "contact": {"name": "Ana"}},
    )
    reachable = client.post(
        "/api/v1/handoff",
        headers=headers,
        json={"session_id": session_id, "contact": {"email": "ana@example.com"}},
    )

    assert nameless.status_code == 400
    assert nameless.json()["error"]["code"] == "nothing_to_hand_off"
    assert "type your question first, or leave an email" in nameless.json()["error"]["message"]
    assert reachable.status_code == 200, reachable.text
    assert reachable.json()["has_email"] is True


def test_a_ticket_without_an_email_says_so_and_takes_one_later(offline_client):
    client = offline_client
    session_id, headers = new_session(client)
    asked = chat(
        client, session_id, headers, "my hub keeps going offline, I want to talk to a person"
    )
    ticket = asked.json()["handoff_ticket"]

    later = client.post(
        "/api/v1/handoff",
        headers=headers,
        json={"session_id": session_id, "contact": {"email": "ana@example.com"}},
    ).json()

    assert ticket["has_email"] is False
    assert later["ticket_id"] == ticket["ticket_id"] and later["has_email"] is True
    stored = client.app.state.desk.conversations.get_ticket(ticket["ticket_id"])
    assert stored.contact == {"email": "ana@example.com"}


def test_asking_for_a_person_in_the_chat_hands_off_without_the_model(offline_client):
    session_id, headers = new_session(offline_client)

    response = offline_client.post(
        "/api/v1/chat/stream",
        headers=headers,
        json={"session_id": session_id, "message": "Can I speak to a real person please?"},
    )

    events = read_events(response)
    done = events[-1][1]
    assert [name for name, _ in events] == ["sources", "token", "done"]
    assert done["handoff"] is True and done["handoff_ticket"]["status"] == "open"
    assert done["handoff_reason"] is None, "the customer asked: the bot handed nothing off"
    assert done["error"] is None, "the unreachable model was never called"


def test_a_question_the_help_center_cannot_answer_opens_a_ticket(offline_client):
    session_id, headers = new_session(offline_client)

    body = chat(offline_client, session_id, headers, OFF_TOPIC_QUESTION).json()

    # The ticket is opened at once: the answer says so instead of asking whether to.
    assert body["handoff"] is True and body["answer"] == NO_ANSWER_TEXT
    assert body["handoff_reason"] == "no_match"
    assert HANDOFF_OFFER not in body["answer"]
    assert body["handoff_ticket"]["status"] == "open"
    stored = offline_client.app.state.desk.conversations.get_ticket(
        body["handoff_ticket"]["ticket_id"]
    )
    assert stored.reason == "no_answer"


@pytest.fixture
def off_topic_client(make_client, settings, embeddings, tmp_path):
    """``off_topic_client(**handoff_changes)``: the app with the bundled off-topic examples,
    its model unreachable."""
    examples = OffTopicExamples.from_file(BUNDLED_EXAMPLES, embeddings, cache_dir=tmp_path)

    with unreachable_base_url() as url:

        def build(**changes) -> TestClient:
            handoff = settings.handoff.model_copy(update=changes)
            return make_client(url, off_topic=examples, handoff=handoff)

        yield build


XBOX_QUESTION = "how do i reset my xbox controller"


@pytest.mark.parametrize("on_off_topic", [False, True])
def test_an_off_topic_question_opens_a_ticket_only_when_configured(off_topic_client, on_off_topic):
    client = off_topic_client(on_off_topic=on_off_topic)
    session_id, headers = new_session(client)
    body = chat(client, session_id, headers, XBOX_QUESTION).json()

    assert body["handoff"] is True and body["handoff_reason"] == "off_topic"
    assert body["answer"] == (NO_ANSWER_TEXT if on_off_topic else HANDOFF_ANSWER)
    assert body["error"] is None, "no model call"
    if on_off_topic:
        stored = client.app.state.desk.conversations.get_ticket(body["handoff_ticket"]["ticket_id"])
        assert stored.reason == "off_topic"
    else:
        assert body["handoff_ticket"] is None
        assert client.app.state.desk.conversations.tickets() == []


def test_a_yes_to_the_offer_of_a_person_opens_a_ticket(off_topic_client, clock):
    client = off_topic_client(on_no_answer=False)
    session_id, headers = new_session(client)
    # Before any offer, a yes is just a message.
    assert chat(client, session_id, headers, "yes please").json()["handoff_ticket"] is None
    session_id, headers = new_session(client)
    offered = chat(client, session_id, headers, XBOX_QUESTION).json()
    assert offered["answer"] == HANDOFF_ANSWER and offered["handoff_ticket"] is None

    accepted = chat(client, session_id, headers, "Yes please!").json()

    # An offer left unanswered for more than half an hour no longer stands.
    late_id, late_headers = new_session(client)
    chat(client, late_id, late_headers, XBOX_QUESTION)
    clock.now += 31 * 60
    late = chat(client, late_id, late_headers, "yes").json()

    assert accepted["handoff_ticket"]["status"] == "open"
    assert accepted["error"] is None, "no model call"
    stored = client.app.state.desk.conversations.get_ticket(accepted["handoff_ticket"]["ticket_id"])
    assert stored.reason == "customer_asked"
    assert late["handoff_ticket"] is None


def test_greetings_and_thanks_get_a_reply_without_a_search_a_model_call_or_a_ticket(
    off_topic_client,
):
    client = off_topic_client(on_no_answer=True)  # a message without an answer opens a ticket
    session_id, headers = new_session(client)

    hello = chat(client, session_id, headers, "hello, can you help me?").json()
    thanks = chat(client, session_id, headers, "ok thanks \U0001f44d").json()
    question = chat(client, session_id, headers, "hi, " + XBOX_QUESTION).json()

    for body, reply in ((hello, GREETING_REPLY), (thanks, THANKS_REPLY)):
        assert body["answer"] == reply and body["sources"] == []
        assert body["handoff"] is False and body["handoff_ticket"] is None
        assert body["error"] is None, "the model is unreachable: no call was made"
    # A greeting before a question is no small talk: the question is searched (and off-topic).
    assert question["handoff"] is True and question["answer"] == HANDOFF_ANSWER
    stored = client.app.state.desk.conversations.turns(session_id)
    assert [t.content for t in stored[:4]] == [
        "hello, can you help me?",
        GREETING_REPLY,
        "ok thanks \U0001f44d",
        THANKS_REPLY,
    ]


def test_a_first_message_naming_no_topic_is_asked_for_details_once_not_handed_off(
    off_topic_client,
):
    client = off_topic_client(on_no_answer=True)  # a message without an answer opens a ticket
    session_id, headers = new_session(client)

    vague = chat(client, session_id, headers, "it doesn't work").json()
    again = chat(client, session_id, headers, "it just doesn't work!").json()

    assert vague["answer"] == DETAIL_REPLY and vague["sources"] == []
    assert vague["handoff"] is False and vague["handoff_ticket"] is None
    assert vague["error"] is None, "the model is unreachable: no call was made"
    # Asked once already: the second such message is handed off as the help center has nothing.
    assert again["handoff"] is True and again["answer"] == NO_ANSWER_TEXT
    assert again["handoff_ticket"] is not None
    stored = client.app.state.desk.conversations.turns(session_id)
    assert stored[1].content == DETAIL_REPLY and stored[1].meta["asked_detail"] is True

    # Once per conversation, even with a greeting between.
    other, other_headers = new_session(client)
    replies = [
        chat(client, other, other_headers, message).json()["answer"]
        for message in ("why?", "hi", "why?")
    ]
    assert replies == [DETAIL_REPLY, GREETING_REPLY, NO_ANSWER_TEXT]
    # A first message of no words at all opens no ticket either.
    thumbs, thumbs_headers = new_session(client)
    thumbs_down = chat(client, thumbs, thumbs_headers, "\U0001f44e").json()
    assert thumbs_down["answer"] == DETAIL_REPLY and thumbs_down["handoff_ticket"] is None
    # After an answer, "why?" is about that answer: not asked for details.
    third, third_headers = new_session(client)
    chat(client, third, third_headers, XBOX_QUESTION)
    why = chat(client, third, third_headers, "why?").json()
    assert why["answer"] != DETAIL_REPLY and why["handoff"] is True


def test_a_yes_after_the_button_already_opened_a_ticket_confirms_that_ticket(off_topic_client):
    client = off_topic_client(on_no_answer=False)
    session_id, headers = new_session(client)
    offered = chat(client, session_id, headers, XBOX_QUESTION).json()
    assert offered["answer"] == HANDOFF_ANSWER
    pressed = client.post("/api/v1/handoff", headers=headers, json={"session_id": session_id})

    again = chat(client, session_id, headers, "yes please").json()

    handoff = client.app.state.chat.settings.handoff
    assert pressed.json()["message"] == handoff.confirmation
    assert again["handoff_ticket"]["ticket_id"] == pressed.json()["ticket_id"]
    assert again["answer"] == handoff.already_open, "not asked as a new question"
    assert again["error"] is None, "no model call"
    assert len(client.app.state.desk.conversations.tickets()) == 1


@pytest.mark.parametrize("first", [XBOX_QUESTION, "talk to a person"])
def test_after_a_hand_off_a_yes_confirms_its_ticket_and_a_no_thanks_is_a_goodbye(
    off_topic_client, first
):
    # The off-topic question opens a ticket at once; "talk to a person" asks for one.
    client = off_topic_client(on_off_topic=True)
    handoff = client.app.state.chat.settings.handoff
    session_id, headers = new_session(client)
    opened = chat(client, session_id, headers, first).json()
    assert opened["handoff_ticket"]["status"] == "open"

    yes = chat(client, session_id, headers, "yes please").json()
    no = chat(client, session_id, headers, "no thanks").json()
    other, other_headers = new_session(client)
    chat(client, other, other_headers, first)
    plain_no = chat(client, other, other_headers, "no").json()

    assert yes["answer"] == handoff.already_open, "not searched as a question"
    assert yes["handoff_ticket"]["ticket_id"] == opened["handoff_ticket"]["ticket_id"]
    for goodbye in (no, plain_no):
        assert goodbye["answer"] == GOODBYE_REPLY and goodbye["handoff"] is False
    for body in (yes, no, plain_no):
        assert body["error"] is None, "no model call"
    assert len(client.app.state.desk.conversations.tickets()) == 2


def test_pressing_the_button_again_says_the_team_already_has_the_conversation(off_topic_client):
    client = off_topic_client()
    session_id, headers = new_session(client)
    # What it is about, so that a request without an email address is taken.
    client.app.state.chat.service.conversations.add_turn(session_id, "user", "my hub is offline", 4)
    body = {"session_id": session_id}
    first = client.post("/api/v1/handoff", headers=headers, json=body).json()
    second = client.post("/api/v1/handoff", headers=headers, json=body).json()

    handoff = client.app.state.chat.settings.handoff
    assert first["message"] == handoff.confirmation
    assert second["message"] == handoff.already_open
    assert second["ticket_id"] == first["ticket_id"]
    # Contact details given with it are confirmed as the first request was.
    with_email = client.post(
        "/api/v1/handoff",
        headers=headers,
        json=body | {"contact": {"email": "ada@example.com"}},
    ).json()
    assert with_email["message"] == handoff.confirmation
    same_email = client.post(
        "/api/v1/handoff",
        headers=headers,
        json=body | {"contact": {"email": "ada@example.com"}},
    ).json()
    assert same_email["message"] == handoff.already_open, "nothing new was given"
    # The conversation's read still names the ticket with the note shown when it opened.
    read = client.get(f"/api/v1/sessions/{session_id}", headers=headers).json()
    assert read["handoff_ticket"]["message"] == handoff.confirmation


def test_asking_for_a_person_counts_against_the_message_limit(client):
    session_id, headers = new_session(client)
    limit = client.app.state.chat.settings.rate_limits.per_session_per_minute

    statuses = [
        client.post(
            "/api/v1/handoff",
            headers=headers,
            json={"session_id": session_id, "contact": {"email": f"ana{n}@example.com"}},
        ).status_code
        for n in range(limit + 1)
    ]

    assert statuses == [200] * limit + [429]


@pytest.mark.parametrize(
    "message, accepts",
    [
        ("yes", True),
        ("Yes please!", True),
        ("sure, thanks", True),
        ("ok, go ahead", True),
        ("ok", False),
        ("ok thanks", False),
        ("okay, thank you!", False),
        ("yes but how do I reset the hub?", False),
        ("yesterday my hub stopped", False),
        ("no thanks", False),
        ("Yes please connect me", True),
        ("please connect me", True),
        ("yes please \U0001f642", True),
        ("yes, a person please", True),
        ("that would be great", True),
        ("yes pls", True),
        ("s\u00ed, por favor", True),
        ("Oui, s\u2019il vous pla\u00eet", True),
        ("Ja bitte", True),
        ("ja bitte, aber wie?", False),
        ("yes?", False),
    ],
)
def test_what_counts_as_a_yes(message, accepts):
    assert accepts_offer(message) is accepts


@pytest.mark.parametrize(
    "message, asks",
    [
        ("Can I talk to a person?", True),
        ("I want to speak with a human agent", True),
        ("agent", True),
        ("Connect me to someone from support", True),
        ("Put me through to an agent", True),
        ("a human please", True),
        ("please connect me", True),
        ("Can you transfer me?", True),
        ("customer service please!", True),
        ("live agent please", True),
        ("customer support?", False),  # asks about it: searched
        ("live chat?", False),
        ("please connect me to my team's channel", False),
        ("How do I contact customer service about a refund?", False),
        ("How do I add a person to my home?", False),
        ("My hub is not talking to the bulbs", False),
        ("Can I transfer my subscription to someone else?", False),
        ("How do I connect the hub to another person's account?", False),
        ("How do I put a staff member on my plan?", False),
        ("Can I chat with someone in my household?", False),
        ("No, I don't want to talk to a person, just tell me how to reset the hub", False),
        ("I don't need a person, just tell me", False),
        ("i dont want an agent", False),
        ("I do not want a bot, I want a human", True),
        ("Why can't I talk to a person?", True),
        # A negation elsewhere in the message does not turn the request around.
        ("No I want to talk to a person", True),
        ("It's not working so I want to talk to a person", True),
        ("My lights don't turn on and I need a human", True),
        ("Is there no way to talk to a person?", True),
        ("I don\u2019t want to talk to a person", False),  # as phones type the apostrophe
        ("I'd rather not speak to an agent", False),
        ("no need to talk to a human", False),
        ("I need someone", True),
        ("i need somebody now!", True),
        ("Can someone from your team look at my account?", True),
        ("I want a person from the support team to call me", True),
        ("is there anyone i can talk to?", True),
        ("I need someone to be able to post in this channel", False),
        ("Someone on the team deleted my message", False),
        ("How do I add someone to a channel?", False),
        ("I need someone's email address", False),
        ("I don't need someone", False),
        ("I need someone to help me", True),
        ("i really need someone?", True),
        ("need someone from support", True),
        ("Could someone from your support team please call me back?", True),
        ("Someone from your team told me to enable 2FA. How do I do that?", False),
        ("I spoke to someone from your support team yesterday, how do I export?", False),
        ("Anyone at your company using this for schools?", False),
        ("Is there anyone I can talk to in my org who is an admin?", False),
        ("is there anybody I can chat with in this channel?", False),
    ],
)
def test_requests_for_a_person_are_recognised(message, asks):
    assert wants_person(message) is asks


# ----- health, schema and help pages


def test_health_and_readiness(client, offline_client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"model": "ok", "store": "ok", "database": "ok"}


def test_readiness_names_the_part_that_failed(make_client, llama_server, tmp_path):
    client = make_client(llama_server.base_url)
    service = client.app.state.chat.service
    with unreachable_base_url() as url:
        service.model_probe = ModelProbe(url + "/models")
        response = client.get("/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["model"].startswith("failed") and checks["store"] == "ok"


def test_openapi_documents_the_customer_api(client):
    schema = client.get("/api/v1/openapi.json").json()

    assert {
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}",
        "/api/v1/chat",
        "/api/v1/chat/stream",
        "/api/v1/feedback",
        "/api/v1/handoff",
        "/api/v1/sites/{site_key}",
    } <= set(schema["paths"])
    assert "text/event-stream" in json.dumps(schema["paths"]["/api/v1/chat/stream"])


def test_help_page_shows_a_cited_document_as_text(client):
    page = client.get("/help/reset-the-hub.md")
    missing = client.get("/help/no-such-article.md")

    assert page.status_code == 200 and "Restart or factory reset" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert missing.status_code == 404 and "No help article" in missing.text


def test_the_widget_and_its_pages_are_served(client):
    script = client.get("/widget.js")

    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["content-encoding"] == "gzip"
    assert len(gzip.compress(script.content, 9)) < 30 * 1024, "the widget stays under 30 KB"
    assert client.get("/widget/demo").status_code == 200
    assert 'data-site-key="demo-site-key"' in client.get("/widget/demo").text
    assert "<gradio-app" in client.get("/widget/gradio").text


def test_the_chat_page_takes_and_serves_no_files(offline_client):
    response = offline_client.post(
        "/gradio_api/upload", files={"files": ("x.html", b"<h1>hi</h1>", "text/html")}
    )
    # The staff playground's uploads share Gradio's folder: the page never serves from it.
    served = offline_client.get("/gradio_api/file=/tmp/gradio/some/set.jsonl")
    # A recording to convert is a file written to the server's disk too.
    recording = offline_client.post(
        "/gradio_api/process_recording", files={"video": ("v.mp4", b"\0" * 64, "video/mp4")}
    )
    proxied = offline_client.get("/gradio_api/proxy=https://example.com/x")

    # Nor a file named in an event's data, which Gradio would fetch into its cache.
    file_data = {"path": "https://example.com/huge.bin", "meta": {"_type": "gradio.FileData"}}
    history = [{"role": "user", "content": [{"file": file_data, "alt_text": None}]}]
    body = {"data": ["hi", history, None], "fn_index": 0, "session_hash": "s"}
    fetched = offline_client.post("/gradio_api/queue/join", json=body)

    assert response.status_code == served.status_code == 403
    assert recording.status_code == proxied.status_code == fetched.status_code == 403
    # What the page does use stays open.
    assert offline_client.get("/gradio_api/info").status_code == 200


def test_the_chat_page_refuses_an_oversized_request(offline_client):
    history = [{"role": "user", "content": "x" * 3000}] * 400  # 1.2 MB
    body = {"data": ["hello", history, None], "fn_index": 0, "session_hash": "s"}
    declared = offline_client.post("/gradio_api/queue/join", json=body)
    chunked = offline_client.post(
        "/gradio_api/queue/join",
        content=iter([json.dumps(body).encode()]),
        headers={"Content-Type": "application/json"},
    )
    small = offline_client.post("/gradio_api/queue/join", json={**body, "data": ["hi", [], None]})

    assert declared.status_code == chunked.status_code == 413
    assert error_code(declared) == "request_too_large"
    assert small.status_code != 413


def test_an_unexpected_failure_is_a_json_error_without_a_trace(offline_client, monkeypatch):
    session_id, headers = new_session(offline_client)

    def broken(*args, **kwargs):
        raise RuntimeError("database is locked at /srv/secret/path")

    monkeypatch.setattr(offline_client.app.state.chat.service, "retrieve", broken)
    response = chat(offline_client, session_id, headers, RESET_QUESTION)

    assert response.status_code == 500
    assert error_code(response) == "internal"
    assert "secret" not in response.text and "Traceback" not in response.text


def test_a_read_of_a_conversation_being_answered_waits_without_holding_a_thread(
    offline_client, monkeypatch
):
    import ui.api

    monkeypatch.setattr(ui.api, "SETTLE_WAIT_S", 0.3)
    service = offline_client.app.state.chat.service
    waits: list[float] = []
    settled = service.turn_settled
    monkeypatch.setattr(
        service,
        "turn_settled",
        lambda sid, timeout_s: waits.append(timeout_s) or settled(sid, timeout_s),
    )
    session_id, headers = new_session(offline_client)

    with service.one_turn_at_a_time(session_id):  # an answer is being written
        busy = offline_client.get(f"/api/v1/sessions/{session_id}", headers=headers)
    idle = offline_client.get(f"/api/v1/sessions/{session_id}", headers=headers)

    assert busy.status_code == 200 and busy.json()["answer_in_progress"] is True
    assert idle.json()["answer_in_progress"] is False
    assert len(waits) > 2 and set(waits) == {0}, "it looks, and sleeps on the event loop"
