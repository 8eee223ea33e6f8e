"""The embeddable widget end to end: a customer's website on another origin embeds it from the
real `chatbot serve` (real model, sample help center), driven by Debian's Chromium."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.sync_api import Page, Response, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from chatbot.settings import load_settings
from tests.conftest import TEST_PROFILE
from tests.ui.conftest import start_app

if TYPE_CHECKING:
    from tests.ui.conftest import ServedApp

# Every test here talks to the real app, which starts the real local model.
pytestmark = pytest.mark.slow

SITE_KEY = "shop-site-key"
SITE_NAME = "Acme Shop Support"
GREETING = "Hello from Acme! Ask about your Lumora lights."
QUESTION = "How long do I hold the reset button on the hub?"
EXPECTED_SOURCE = "reset-the-hub.md"
EXPECTED_TITLE = "Restart or factory reset the Lumora Hub"
CONTACT = {"name": "Ada Customer", "email": "ada@example.com"}
# As in test_chat_page: SmolLM2 on two busy cores starts within seconds but may take minutes to
# finish, since llama-cpp-python ignores the output-token cap that langchain-openai sends.
ANSWER_STARTS_S = 90
ANSWER_ENDS_S = 240
PAGE_LOAD_TIMEOUT_MS = 30_000
# The widget retries a failed start once, 3 s later, before it gives up on a page.
GIVES_UP_S = 20
APP_ERROR = "something went wrong on our side"
NOT_AVAILABLE_WARNING = "Support chat: not available on this page"

ANSWER = '[data-role="assistant"]:not([data-testid="greeting"])'
# A customer's message as shown (beside it, a "You said:" for screen readers).
QUESTION_SHOWN = '[data-role="user"] .bubble'
# A 4xx (say, a page's missing favicon) is logged by Chromium itself; it is no widget failure.
HTTP_4XX = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d\b")
# What Chromium logs when the app refuses a page's origin: the refusal the test expects.
CORS_REFUSAL = (
    re.compile(r"has been blocked by CORS policy"),
    re.compile(r"^Failed to load resource: net::ERR_FAILED"),
)


# ----- the customer's website, on an origin of its own


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body><h1>{title}</h1><p>Smart lights for every room.</p>
<nav><a href="/">Home</a> <a href="/pricing">Pricing</a></nav>
<script src="{app}/widget.js" data-site-key="{key}" async></script>
</body></html>
"""


class _Pages(BaseHTTPRequestHandler):
    server: CustomerSite

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        titles = {"/": "Acme Lights", "/pricing": "Acme Lights: pricing"}
        if self.path not in titles or not self.server.app_url:
            self.send_error(404)
            return
        body = PAGE.format(title=titles[self.path], app=self.server.app_url, key=SITE_KEY)
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class CustomerSite(ThreadingHTTPServer):
    """Pages of a company's website on 127.0.0.1:<own port>, each embedding the widget."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Pages)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.app_url = ""  # known once the app has started
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def shop_site() -> Iterator[CustomerSite]:
    """The website the shop site key allows."""
    site = CustomerSite()
    yield site
    site.close()


@pytest.fixture(scope="module")
def stranger_site() -> Iterator[CustomerSite]:
    """Another website that pastes the shop's embed tag, from an origin the key does not allow."""
    site = CustomerSite()
    yield site
    site.close()


@pytest.fixture(scope="module")
def widget_app(tmp_path_factory, shop_site, stranger_site) -> Iterator[ServedApp]:
    """The real app with one site, allowed only on the shop's origin."""
    sites = [
        {
            "key": SITE_KEY,
            "name": SITE_NAME,
            "greeting": GREETING,
            "allowed_origins": [shop_site.url],
        }
    ]
    app = start_app(
        tmp_path_factory.mktemp("widget") / "data",
        env={
            "CHATBOT_SITES": json.dumps(sites),
            # Every test here opens conversations from one address, many within a minute.
            "CHATBOT_WIDGET__MAX_SESSIONS_PER_MINUTE": "100",
        },
    )
    try:
        configured = httpx.get(
            f"{app.url}/api/v1/sites/{SITE_KEY}", headers={"Origin": shop_site.url}, timeout=10
        )
        assert configured.status_code == 200 and configured.json()["name"] == SITE_NAME, (
            "the app did not take CHATBOT_SITES from start_app(env=...): "
            f"{configured.status_code} {configured.text}"
        )
    except BaseException:
        app.stop(grace_s=5)
        raise
    shop_site.app_url = stranger_site.app_url = app.url
    yield app
    app.stop()


# ----- the server's database


def query(app: ServedApp, sql: str, *params: object) -> list[sqlite3.Row]:
    assert app.data_dir is not None
    path = app.data_dir / load_settings(TEST_PROFILE).memory.database
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql, params).fetchall()


# ----- a customer's tab


@dataclass
class Tab:
    """A page with a record of its console errors and its chat requests."""

    page: Page
    allowed: tuple[re.Pattern[str], ...] = (HTTP_4XX,)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chat_requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        self.page.on("request", self._request)

    def _request(self, request) -> None:
        if "/api/v1/chat" in request.url:
            self.chat_requests.append(request.url)

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(message.text)
        elif message.type == "warning":
            self.warnings.append(message.text)

    def assert_no_unexpected_errors(self) -> None:
        unexpected = [e for e in self.errors if not any(p.search(e) for p in self.allowed)]
        assert not unexpected, f"errors in the page's console: {unexpected}"


@contextlib.contextmanager
def customer_tab(browser, url: str, **context_options) -> Iterator[Tab]:
    context = browser.new_context(**context_options)
    try:
        tab = Tab(context.new_page())
        tab.page.goto(url)
        yield tab
    finally:
        context.close()


def open_panel(page: Page) -> None:
    """Open the chat with the bubble, unless it is already open."""
    bubble = page.get_by_test_id("bubble")
    expect(bubble).to_be_visible(timeout=PAGE_LOAD_TIMEOUT_MS)
    if page.get_by_test_id("panel").is_hidden():
        bubble.click()
    expect(page.get_by_test_id("panel")).to_be_visible()


def answers(page: Page):
    return page.get_by_test_id("log").locator(ANSWER)


def answer_text(page: Page):
    return answers(page).locator(".bubble")


def stored_session(page: Page) -> dict:
    raw = page.evaluate("key => localStorage.getItem(key)", f"supportchat:{SITE_KEY}")
    assert raw, "the widget kept no session in the page's storage"
    return json.loads(raw)


def ask(page: Page, question: str, app: ServedApp) -> Response:
    """Send a question from the open panel; wait until its answer has streamed to the end."""
    log = page.get_by_test_id("log")
    try:
        with page.expect_response(
            lambda r: r.url == f"{app.url}/api/v1/chat/stream", timeout=ANSWER_STARTS_S * 1000
        ) as stream:
            page.get_by_test_id("input").fill(question)
            page.get_by_test_id("input").press("Enter")
        expect(log.locator(QUESTION_SHOWN)).to_have_text([question])
        expect(answer_text(page)).not_to_be_empty(timeout=ANSWER_STARTS_S * 1000)
        # The rating buttons come with the `done` event; Send stays disabled until then.
        expect(answers(page).get_by_test_id("thumbs-up")).to_be_visible(
            timeout=ANSWER_ENDS_S * 1000
        )
        expect(page.get_by_test_id("send")).to_be_enabled()
        expect(page.get_by_test_id("typing")).to_have_count(0)
    except (AssertionError, PlaywrightTimeoutError) as exc:
        raise AssertionError(f"{exc}\n{app.output()}") from exc
    return stream.value


@dataclass
class Answered:
    """The tab after its answer, with the answer's text and its event stream."""

    tab: Tab
    answer: str
    stream: Response
    stream_body: str


@pytest.fixture(scope="module")
def answered(browser, widget_app, shop_site) -> Iterator[Answered]:
    """A customer on the shop's website who asked about resetting the hub."""
    with customer_tab(browser, shop_site.url + "/") as tab:
        open_panel(tab.page)
        stream = ask(tab.page, QUESTION, widget_app)
        answer = answer_text(tab.page).text_content() or ""
        yield Answered(tab, answer, stream, stream.text())


# ----- on the allowed website


def test_the_answer_streams_in_with_a_link_to_its_source(answered, widget_app):
    page = answered.tab.page
    expect(page.get_by_test_id("panel")).to_have_attribute("aria-label", f"{SITE_NAME} chat")
    expect(page.get_by_test_id("greeting").locator(".bubble")).to_have_text(GREETING)
    assert answered.answer.strip(), "the assistant's answer is empty"
    assert APP_ERROR not in answered.answer, widget_app.output()
    expect(page.get_by_test_id("log").locator('[data-role="system"]')).to_have_count(0)

    assert answered.stream.headers["content-type"].startswith("text/event-stream")
    events = re.findall(r"^event: (\w+)$", answered.stream_body, flags=re.MULTILINE)
    assert events.count("token") > 1 and events.count("sources") == 1, events
    assert events[-1] == "done", events

    links = answers(page).get_by_test_id("source-link")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    article = f"{widget_app.url}/help/{EXPECTED_SOURCE}"
    assert article in hrefs, f"{article} is not among the answer's sources: {hrefs}"
    cited = links.nth(hrefs.index(article))
    expect(cited).to_have_attribute("target", "_blank")
    expect(cited).to_have_attribute("rel", re.compile(r"\bnoopener\b"))
    shown = httpx.get(article, timeout=30)
    assert shown.status_code == 200 and EXPECTED_TITLE in shown.text
    answered.tab.assert_no_unexpected_errors()


def test_text_from_the_model_and_the_documents_cannot_add_html(answered):
    log = answered.tab.page.get_by_test_id("log")

    expect(log.locator("img, script, iframe, object, embed, style")).to_have_count(0)
    hrefs = log.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert hrefs, "the answer shows no links at all (expected at least its source)"
    assert all(re.match(r"https?://", href or "") for href in hrefs), hrefs
    handlers = log.locator("*").evaluate_all(
        "els => els.flatMap(el => [...el.attributes].map(a => a.name))"
        ".filter(name => name.startsWith('on'))"
    )
    assert not handlers, f"event-handler attributes in the log: {handlers}"


def test_the_conversation_survives_a_reload_and_another_page(answered, widget_app, shop_site):
    tab = answered.tab
    page = tab.page
    session = stored_session(page)
    asked = len(tab.chat_requests)

    for visit in (page.reload, lambda: page.goto(shop_site.url + "/pricing")):
        visit()
        open_panel(page)
        log = page.get_by_test_id("log")
        expect(log.locator(QUESTION_SHOWN)).to_have_text([QUESTION])
        expect(answer_text(page)).to_have_text(answered.answer)
        expect(answers(page).get_by_test_id("source-link").first).to_have_attribute(
            "href", re.compile("^" + re.escape(widget_app.url + "/help/"))
        )
        assert stored_session(page)["session_id"] == session["session_id"]

    assert len(tab.chat_requests) == asked, "the question was asked again after the reload"
    turns = query(
        widget_app,
        "SELECT role, content FROM turns WHERE session_id = ? ORDER BY id",
        session["session_id"],
    )
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[0]["content"] == QUESTION
    tab.assert_no_unexpected_errors()


def test_talk_to_a_person_opens_a_ticket_with_the_contact(answered, widget_app):
    page = answered.tab.page
    open_panel(page)
    confirmation = load_settings(TEST_PROFILE).handoff.confirmation

    page.get_by_test_id("handoff").click()
    form = page.get_by_test_id("handoff-form")
    expect(form).to_be_visible()
    expect(page.get_by_test_id("handoff-name")).to_be_focused()
    page.get_by_test_id("handoff-name").fill(CONTACT["name"])
    page.get_by_test_id("handoff-email").fill(CONTACT["email"])
    page.get_by_test_id("handoff-send").click()

    note = page.get_by_test_id("log").locator('[data-role="system"]')
    expect(note).to_have_text([confirmation], timeout=PAGE_LOAD_TIMEOUT_MS)
    expect(form).to_be_hidden()
    expect(page.get_by_test_id("input")).to_be_focused()
    expect(page.get_by_test_id("composer")).to_be_visible()

    session_id = stored_session(page)["session_id"]
    tickets = query(
        widget_app,
        "SELECT site, reason, contact, status FROM tickets WHERE session_id = ?",
        session_id,
    )
    assert len(tickets) == 1, [dict(t) for t in tickets]
    ticket = tickets[0]
    assert (ticket["site"], ticket["reason"], ticket["status"]) == (
        SITE_KEY,
        "customer_asked",
        "open",
    )
    assert json.loads(ticket["contact"]) == CONTACT
    answered.tab.assert_no_unexpected_errors()


def test_a_ticket_opened_without_an_email_asks_for_one(browser, widget_app, shop_site):
    with customer_tab(browser, shop_site.url + "/") as tab:
        page = tab.page
        open_panel(page)
        _ask_off_topic(page)  # no answer in the help center: a ticket opens, with no address

        form = page.get_by_test_id("handoff-form")
        expect(form).to_be_visible()
        expect(page.get_by_test_id("handoff-title")).to_have_text("Get a reply by email")
        email = page.get_by_test_id("handoff-email")
        expect(email).to_be_focused()
        expect(page.get_by_label("Email", exact=True)).to_have_count(1)  # not "(optional)"
        email.fill(CONTACT["email"])
        page.get_by_test_id("handoff-send").click()
        expect(form).to_be_hidden(timeout=PAGE_LOAD_TIMEOUT_MS)

        tickets = query(
            widget_app,
            "SELECT contact FROM tickets WHERE session_id = ?",
            stored_session(page)["session_id"],
        )
        assert [json.loads(t["contact"]) for t in tickets] == [{"email": CONTACT["email"]}]
        # "Talk to a person" shows the usual form again.
        page.get_by_test_id("handoff").click()
        expect(page.get_by_test_id("handoff-title")).to_have_text("Talk to a person")
        expect(page.get_by_label("Email (optional)")).to_have_count(1)
        tab.assert_no_unexpected_errors()


def test_a_person_asked_for_before_any_question_needs_an_email(browser, widget_app, shop_site):
    with customer_tab(browser, shop_site.url + "/") as tab:
        page = tab.page
        open_panel(page)
        page.get_by_test_id("handoff").click()
        expect(page.get_by_test_id("handoff-hint")).to_contain_text("type your question first")
        email = page.get_by_label("Email", exact=True)
        expect(email).to_have_attribute("required", "")

        page.get_by_test_id("handoff-send").click()  # the browser asks for the address
        expect(page.get_by_test_id("handoff-form")).to_be_visible()
        email.fill(CONTACT["email"])
        page.get_by_test_id("handoff-send").click()
        expect(page.get_by_test_id("handoff-form")).to_be_hidden(timeout=PAGE_LOAD_TIMEOUT_MS)

        tickets = query(
            widget_app,
            "SELECT contact FROM tickets WHERE session_id = ?",
            stored_session(page)["session_id"],
        )
        assert [json.loads(t["contact"]) for t in tickets] == [{"email": CONTACT["email"]}]
        tab.assert_no_unexpected_errors()


def test_keyboard_opens_into_the_message_box_and_escape_returns_to_the_bubble(
    browser, widget_app, shop_site
):
    with customer_tab(browser, shop_site.url + "/") as tab:
        page = tab.page
        bubble = page.get_by_test_id("bubble")
        expect(bubble).to_be_visible(timeout=PAGE_LOAD_TIMEOUT_MS)

        bubble.focus()
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("panel")).to_be_visible()
        expect(bubble).to_have_attribute("aria-expanded", "true")
        expect(page.get_by_test_id("input")).to_be_focused()

        page.keyboard.press("Escape")
        expect(page.get_by_test_id("panel")).to_be_hidden()
        expect(bubble).to_have_attribute("aria-expanded", "false")
        expect(bubble).to_be_focused()
        tab.assert_no_unexpected_errors()


def test_on_a_phone_the_open_panel_covers_the_screen(browser, widget_app, shop_site):
    width, height = 375, 700
    with customer_tab(
        browser, shop_site.url + "/", viewport={"width": width, "height": height}
    ) as tab:
        page = tab.page
        open_panel(page)
        box = page.get_by_test_id("panel").bounding_box()
        assert box is not None
        assert box == pytest.approx({"x": 0, "y": 0, "width": width, "height": height}, abs=1)
        expect(page.get_by_test_id("input")).to_be_in_viewport()
        expect(page.get_by_test_id("close")).to_be_in_viewport()

        page.get_by_test_id("close").click()
        expect(page.get_by_test_id("panel")).to_be_hidden()
        expect(page.get_by_test_id("bubble")).to_be_focused()
        tab.assert_no_unexpected_errors()


def test_a_message_over_the_limit_stays_in_the_box_with_a_note(browser, widget_app, shop_site):
    limit = load_settings(TEST_PROFILE).chat.max_message_chars
    with customer_tab(browser, shop_site.url + "/") as tab:
        page = tab.page
        open_panel(page)
        box = page.get_by_test_id("input")
        pasted = "word " * (limit // 5 + 200)

        box.fill(pasted)

        expect(box).to_have_value(pasted)
        expect(page.get_by_test_id("notice")).to_contain_text(f"{limit:,} or fewer")
        expect(page.get_by_test_id("send")).to_be_disabled()
        box.press("Enter")
        page.wait_for_timeout(300)
        assert tab.chat_requests == [], "a message over the limit was sent"
        expect(box).to_have_value(pasted)

        box.fill(pasted[: limit - 10])
        expect(page.get_by_test_id("notice")).to_have_text("")
        expect(page.get_by_test_id("send")).to_be_enabled()

        # Characters are counted as the server counts them: an emoji (2 UTF-16 units) is one.
        box.fill("\U0001f600" * (limit // 2 + 100))
        expect(page.get_by_test_id("notice")).to_have_text("")
        expect(page.get_by_test_id("send")).to_be_enabled()
        box.fill("\U0001f600" * (limit + 1))
        expect(page.get_by_test_id("notice")).to_contain_text(f"{limit + 1:,} characters")
        tab.assert_no_unexpected_errors()


def test_escape_in_the_person_form_closes_the_form_and_screen_readers_hear_who_speaks(
    browser, widget_app, shop_site
):
    with customer_tab(browser, shop_site.url + "/") as tab:
        page = tab.page
        open_panel(page)
        bubble = page.get_by_test_id("bubble")
        expect(bubble).to_have_attribute("aria-label", "Close support chat")
        greeting = page.get_by_test_id("greeting")
        expect(greeting.locator(".sr-only")).to_have_text(f"{SITE_NAME} said:")
        expect(greeting.locator(".bubble")).to_have_attribute("dir", "auto")
        expect(page.get_by_test_id("input")).to_have_attribute("dir", "auto")

        page.get_by_test_id("handoff").click()
        expect(page.get_by_test_id("handoff-name")).to_be_focused()
        page.keyboard.press("Escape")

        expect(page.get_by_test_id("handoff-form")).to_be_hidden()
        expect(page.get_by_test_id("panel")).to_be_visible()
        expect(page.get_by_test_id("input")).to_be_focused()
        page.keyboard.press("Escape")
        expect(page.get_by_test_id("panel")).to_be_hidden()
        expect(bubble).to_have_attribute("aria-label", "Open support chat")
        tab.assert_no_unexpected_errors()


def test_on_a_phone_tab_stays_inside_the_open_panel(browser, widget_app, shop_site):
    with customer_tab(browser, shop_site.url + "/", viewport={"width": 360, "height": 700}) as tab:
        page = tab.page
        open_panel(page)
        panel = page.get_by_test_id("panel")
        expect(panel).to_have_attribute("aria-modal", "true")
        inside = "() => { const w = document.querySelector('support-chat-widget');"
        inside += " return !!w && w.shadowRoot.activeElement !== null; }"

        for _ in range(12):
            page.keyboard.press("Tab")
            assert page.evaluate(inside), "the focus left the panel for the page behind it"
        for _ in range(12):
            page.keyboard.press("Shift+Tab")
            assert page.evaluate(inside), "the focus left the panel for the page behind it"
        tab.assert_no_unexpected_errors()


OFF_TOPIC = "What's a good recipe for banana bread?"  # declined at once: no model call


def test_an_open_chat_opens_again_on_the_next_page_without_taking_the_focus(
    browser, widget_app, shop_site
):
    with customer_tab(browser, shop_site.url + "/") as tab:
        page = tab.page
        panel = page.get_by_test_id("panel")
        # Before any conversation, an open panel is not opened again.
        open_panel(page)
        page.reload()
        expect(page.get_by_test_id("bubble")).to_be_visible(timeout=PAGE_LOAD_TIMEOUT_MS)
        expect(panel).to_be_hidden()
        open_panel(page)
        _ask_off_topic(page, "hello")  # answered without the model; the conversation exists

        page.goto(shop_site.url + "/pricing")
        expect(panel).to_be_visible(timeout=PAGE_LOAD_TIMEOUT_MS)
        expect(page.get_by_test_id("log")).to_contain_text("hello")
        assert page.evaluate("() => document.activeElement === document.body"), (
            "the page keeps its focus"
        )
        page.get_by_test_id("close").click()
        page.goto(shop_site.url + "/")
        expect(page.get_by_test_id("bubble")).to_be_visible(timeout=PAGE_LOAD_TIMEOUT_MS)
        expect(panel).to_be_hidden()
        tab.assert_no_unexpected_errors()


def _ask_off_topic(page: Page, question: str = OFF_TOPIC) -> None:
    page.get_by_test_id("input").fill(question)
    page.get_by_test_id("input").press("Enter")
    expect(page.get_by_test_id("send")).to_be_enabled(timeout=PAGE_LOAD_TIMEOUT_MS)


def test_tabs_of_one_browser_follow_the_same_conversation(browser, widget_app, shop_site):
    context = browser.new_context()
    try:
        first, second = Tab(context.new_page()), Tab(context.new_page())
        first.page.goto(shop_site.url + "/")
        open_panel(first.page)
        _ask_off_topic(first.page)
        old = stored_session(first.page)["session_id"]
        second.page.goto(shop_site.url + "/pricing")
        open_panel(second.page)
        expect(second.page.get_by_test_id("log").locator(QUESTION_SHOWN)).to_have_text([OFF_TOPIC])

        # A new conversation in one tab empties the other, which used to write the old one back.
        second.page.get_by_test_id("new-conversation").click()
        expect(first.page.get_by_test_id("log").locator(QUESTION_SHOWN)).to_have_count(0)
        _ask_off_topic(second.page, "Tell me a joke about programmers")
        new = stored_session(second.page)["session_id"]
        assert new != old
        shown = first.page.get_by_test_id("log").locator(QUESTION_SHOWN)
        expect(shown).to_have_text(["Tell me a joke about programmers"])

        _ask_off_topic(first.page, "What's the capital of Australia?")
        assert stored_session(first.page)["session_id"] == new
        assert stored_session(second.page)["session_id"] == new
        asked = query(
            widget_app,
            "SELECT content FROM turns WHERE session_id = ? AND role = 'user' ORDER BY id",
            new,
        )
        assert [t["content"] for t in asked] == [
            "Tell me a joke about programmers",
            "What's the capital of Australia?",
        ]
        first.assert_no_unexpected_errors()
        second.assert_no_unexpected_errors()
    finally:
        context.close()


def reload_with_history(page: Page, app: ServedApp, change) -> None:
    """Reload the page, with the conversation it reads back changed by ``change(data)``, and
    open the chat again."""

    def changed(route) -> None:
        response = route.fetch()
        data = response.json()
        change(data)
        route.fulfill(response=response, json=data)

    page.route(f"{app.url}/api/v1/sessions/*", changed)
    page.reload()
    open_panel(page)


def test_an_answer_cut_short_says_so_after_a_reload(browser, widget_app, shop_site):
    with customer_tab(browser, shop_site.url + "/") as tab:
        page = tab.page
        open_panel(page)
        _ask_off_topic(page)

        def as_if_interrupted(data: dict) -> None:
            # The server marks an answer whose customer left mid-stream (test_turn_order); here
            # the stored answer is shown as one, to see what the widget makes of the flag.
            data["messages"][-1]["interrupted"] = True

        reload_with_history(page, widget_app, as_if_interrupted)

        notes = page.get_by_test_id("log").locator('[data-role="system"]')
        expect(notes).to_contain_text(["stopped when the page was closed"])
        tab.assert_no_unexpected_errors()


@pytest.mark.parametrize("in_progress", [False, True])
def test_a_question_left_without_an_answer_says_so_unless_one_is_being_written(
    browser, widget_app, shop_site, in_progress
):
    with customer_tab(browser, shop_site.url + "/") as tab:
        page = tab.page
        open_panel(page)
        _ask_off_topic(page)

        reads = []

        def without_the_answer(data: dict) -> None:
            # As the server has it when the page was closed before the answer's first word, or
            # (the first read only) while an answer is still being written.
            reads.append(data["answer_in_progress"])
            if in_progress and len(reads) > 1:
                return  # the answer is stored now
            data["messages"] = data["messages"][:-1]
            data["answer_in_progress"] = in_progress

        reload_with_history(page, widget_app, without_the_answer)

        log = page.get_by_test_id("log")
        expect(log.locator(QUESTION_SHOWN)).to_have_text([OFF_TOPIC])
        expect(log.locator('[data-role="system"]').first).to_be_visible()  # the hand-off's note
        unanswered = log.locator('[data-role="system"]', has_text="was not answered")
        if in_progress:
            # The page looks again and shows the answer once it is stored.
            expect(answers(page)).to_have_count(1, timeout=PAGE_LOAD_TIMEOUT_MS)
            assert len(reads) >= 2
        expect(unanswered).to_have_count(0 if in_progress else 1)
        tab.assert_no_unexpected_errors()


def test_after_a_reload_the_hand_off_note_stays_where_it_happened(browser, widget_app, shop_site):
    confirmation = load_settings(TEST_PROFILE).handoff.confirmation
    later = "Tell me a joke about programmers"
    with customer_tab(browser, shop_site.url + "/") as tab:
        page = tab.page
        open_panel(page)
        log = page.get_by_test_id("log")
        _ask_off_topic(page)  # no answer in the help center: a ticket opens, and says so
        expect(log.locator('[data-role="system"]', has_text=confirmation)).to_have_count(1)
        _ask_off_topic(page, later)

        page.reload()
        open_panel(page)

        expect(log.locator(QUESTION_SHOWN)).to_have_text([OFF_TOPIC, later])
        shown = log.locator("[data-role]")
        texts = [shown.nth(i).text_content() or "" for i in range(shown.count())]
        notes = [n for n, text in enumerate(texts) if confirmation in text]
        asked_later = next(n for n, text in enumerate(texts) if later in text)
        assert len(notes) == 1 and notes[0] < asked_later, texts
        tab.assert_no_unexpected_errors()


def test_a_hand_off_made_while_an_answer_was_written_shows_after_that_answer(
    browser, widget_app, shop_site
):
    confirmation = load_settings(TEST_PROFILE).handoff.confirmation
    with customer_tab(browser, shop_site.url + "/") as tab:
        page = tab.page
        open_panel(page)
        _ask_off_topic(page)  # opens a ticket

        def opened_mid_answer(data: dict) -> None:
            # As when "Talk to a person" is pressed while the answer streams: the ticket is
            # older than the stored answer.
            question, answer = data["messages"][-2:]
            data["handoff_ticket"]["created_at"] = (
                question["created_at"] + answer["created_at"]
            ) / 2

        reload_with_history(page, widget_app, opened_mid_answer)

        shown = page.get_by_test_id("log").locator("[data-role]")
        expect(shown).to_have_count(4)  # greeting, question, answer, note
        roles = [shown.nth(i).get_attribute("data-role") for i in range(4)]
        assert roles == ["assistant", "user", "assistant", "system"]
        expect(shown.nth(3)).to_have_text(confirmation)
        tab.assert_no_unexpected_errors()


def test_a_tab_that_was_answering_catches_up_with_the_other_tab(browser, widget_app, shop_site):
    context = browser.new_context()
    try:
        first, second = Tab(context.new_page()), Tab(context.new_page())
        first.page.goto(shop_site.url + "/")
        open_panel(first.page)
        _ask_off_topic(first.page)  # one conversation for both tabs
        second.page.goto(shop_site.url + "/pricing")
        open_panel(second.page)
        expect(second.page.get_by_test_id("log").locator(QUESTION_SHOWN)).to_have_count(1)

        first.page.get_by_test_id("input").fill(QUESTION)
        first.page.get_by_test_id("input").press("Enter")
        expect(second.page.get_by_test_id("log").locator(QUESTION_SHOWN)).to_have_count(2)
        # Asked while the first tab's answer is on its way: it waits for that answer.
        second.page.get_by_test_id("input").fill("Tell me a joke about programmers")
        second.page.get_by_test_id("input").press("Enter")
        for tab in (first, second):
            expect(tab.page.get_by_test_id("send")).to_be_enabled(timeout=ANSWER_ENDS_S * 1000)

        expected = [OFF_TOPIC, QUESTION, "Tell me a joke about programmers"]
        for tab in (first, second):
            log = tab.page.get_by_test_id("log")
            expect(log.locator(QUESTION_SHOWN)).to_have_text(expected)
            expect(answers(tab.page)).to_have_count(3)
            tab.assert_no_unexpected_errors()
    finally:
        context.close()


def test_a_limit_on_new_conversations_is_not_blamed_on_the_visitor(browser, widget_app, shop_site):
    with customer_tab(browser, shop_site.url + "/") as tab:
        page = tab.page

        def refused(route) -> None:
            route.fulfill(
                status=429,
                headers={"Retry-After": "40", "Access-Control-Allow-Origin": shop_site.url},
                json={
                    "error": {
                        "code": "rate_limited",
                        "message": "Too many conversations in a short time. Please wait 40 s.",
                    }
                },
            )

        page.route(f"{widget_app.url}/api/v1/sessions", refused)
        open_panel(page)
        page.get_by_test_id("input").fill("Hello, is the hub waterproof?")
        page.get_by_test_id("input").press("Enter")

        notice = page.get_by_test_id("notice")
        expect(notice).to_contain_text("Many conversations were started from your network")
        expect(notice).to_contain_text("You can write again in")
        expect(notice).not_to_contain_text("sending messages quickly")
        tab.allowed += (re.compile("status of 429"),)
        tab.assert_no_unexpected_errors()


def test_the_chat_appears_once_the_server_is_back(browser, widget_app, shop_site):
    context = browser.new_context()
    try:
        tab = Tab(context.new_page())
        tab.allowed = (HTTP_4XX, re.compile(r"^Failed to load resource: net::ERR_FAILED"))
        down = f"{widget_app.url}/{{api/v1/sites/**,healthz}}"
        context.route(down, lambda route: route.abort())  # as if the server were restarting
        tab.page.goto(shop_site.url + "/")
        tab.page.wait_for_timeout(4000)
        expect(tab.page.get_by_test_id("bubble")).to_have_count(0)

        context.unroute(down)

        expect(tab.page.get_by_test_id("bubble")).to_be_visible(timeout=PAGE_LOAD_TIMEOUT_MS)
        assert not any(NOT_AVAILABLE_WARNING in w for w in tab.warnings), tab.warnings
        tab.assert_no_unexpected_errors()
    finally:
        context.close()


# ----- on a website the site key does not allow


def session_count(app: ServedApp) -> int:
    return query(app, "SELECT count(*) AS n FROM sessions")[0]["n"]


def test_a_website_the_key_does_not_allow_gets_no_chat(browser, widget_app, stranger_site):
    before = session_count(widget_app)

    with customer_tab(browser, stranger_site.url + "/") as tab:
        tab.allowed = (HTTP_4XX, *CORS_REFUSAL)
        page = tab.page
        deadline = time.monotonic() + GIVES_UP_S
        while not any(NOT_AVAILABLE_WARNING in w for w in tab.warnings):
            assert time.monotonic() < deadline, f"the widget never gave up: {tab.warnings}"
            page.wait_for_timeout(200)
        assert page.evaluate("typeof window.SupportChatWidget") == "object", "widget.js not run"
        expect(page.locator("support-chat-widget")).to_have_count(0)
        expect(page.get_by_test_id("bubble")).to_have_count(0)
        assert page.evaluate("Object.keys(localStorage)") == []
        tab.assert_no_unexpected_errors()

    assert session_count(widget_app) == before
    site = httpx.get(
        f"{widget_app.url}/api/v1/sites/{SITE_KEY}",
        headers={"Origin": stranger_site.url},
        timeout=10,
    )
    new_session = httpx.post(
        f"{widget_app.url}/api/v1/sessions",
        headers={"Origin": stranger_site.url, "X-Site-Key": SITE_KEY},
        json={},
        timeout=10,
    )
    for refused in (site, new_session):
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in refused.headers
    assert session_count(widget_app) == before
