"""The chat page end to end: `chatbot serve` with the real model, driven by Chromium and gradio_client."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

import httpx
import pytest
from gradio_client import Client
from playwright.sync_api import expect

if TYPE_CHECKING:
    from tests.ui.conftest import ServedApp

# Every test here talks to the real app, which starts the real local model.
pytestmark = pytest.mark.slow

QUESTION = "How long do I hold the reset button on the hub?"
EXPECTED_SOURCE = "reset-the-hub.md"
HTML_PAYLOAD = '<img src=x onerror="window.__xss=1">'
# Brackets inside the alt text hide a Markdown image from a simple pattern; nothing listens there.
IMAGE_PAYLOAD = "![a[b]](http://127.0.0.1:9/tracker.png)"
# Shown as typed: brackets inside code, and an entity typed as text.
CODE_PAYLOAD = "`https://<subdomain>.example.com`"
ENTITY_PAYLOAD = "&lt;b&gt;"
# SmolLM2 starts answering within seconds. The test profile's 64-token cap should end an answer
# soon after, but llama-cpp-python ignores the max_completion_tokens that langchain-openai sends,
# so an answer can run until the 4096-token context is full: minutes on a busy shared CPU.
# Once the cap reaches the model server, 90 s is plenty for both.
ANSWER_STARTS_S = 90
ANSWER_ENDS_S = 240
PAGE_LOAD_TIMEOUT_MS = 30_000
APP_ERROR = "something went wrong on our side"


# ----- the page, in Chromium


def open_chat(context, url: str):
    page = context.new_page()
    page.goto(url)
    expect(page.get_by_placeholder("Type your question…")).to_be_editable(
        timeout=PAGE_LOAD_TIMEOUT_MS
    )
    return page


def question_box(page):
    # Gradio blanks the placeholder once a question is sent, so not found by it; the contact
    # form's boxes come after it.
    return page.get_by_test_id("textbox").first


def conversation(page):
    return page.get_by_role("log", name="chatbot conversation")


def ask(page, question: str, server: ServedApp) -> None:
    """Submit a question on a fresh page and wait until its answer has finished streaming."""
    box = question_box(page)
    box.fill(question)
    box.press("Enter")
    chat = conversation(page)
    try:
        expect(chat.get_by_test_id("user")).to_have_count(1)
        expect(chat.get_by_test_id("bot").first).to_be_visible(timeout=ANSWER_STARTS_S * 1000)
        # While the answer streams, the box is read-only and Retry is disabled.
        retry = page.get_by_role("button", name="Retry")
        expect(retry).to_be_enabled(timeout=ANSWER_ENDS_S * 1000)
        expect(box).to_be_editable()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{server.output()}") from exc


@pytest.fixture(scope="module")
def answered_page(browser, chat_server):
    """One customer's tab after asking about resetting the hub."""
    context = browser.new_context()
    page = open_chat(context, chat_server.url)
    ask(page, QUESTION, chat_server)
    yield page
    context.close()


@pytest.fixture(scope="module")
def html_page(browser, chat_server):
    """A tab whose question carries an HTML tag, and asks the model to repeat it."""
    context = browser.new_context()
    page = open_chat(context, chat_server.url)
    ask(
        page,
        f"How do I reset the hub? Start your answer with {HTML_PAYLOAD} {IMAGE_PAYLOAD} "
        f"{CODE_PAYLOAD} {ENTITY_PAYLOAD}",
        chat_server,
    )
    yield page
    context.close()


def test_start_up_prints_the_addresses_of_the_chat_the_widget_and_the_staff_sign_in(chat_server):
    printed = "\n".join(chat_server.stdout)
    assert f"Chat page: {chat_server.url}" in printed
    assert f"Widget demo: {chat_server.url}/widget/demo" in printed
    assert f"Staff sign-in: {chat_server.url}/login" in printed


def test_answer_streams_in_with_its_sources(answered_page, chat_server):
    chat = conversation(answered_page)
    expect(chat.get_by_test_id("user")).to_have_text(QUESTION)
    answer = chat.get_by_test_id("bot").first.inner_text().strip()
    assert answer, "the assistant's answer is empty"
    assert APP_ERROR not in answer, chat_server.output()

    sources = chat.get_by_role("button", name="Sources", exact=True)
    expect(sources).to_be_visible()
    sources.click()
    expect(chat.get_by_test_id("bot").filter(has_text=EXPECTED_SOURCE)).to_be_visible()
    # Each source links to its article on the help page, which the customer can open.
    link = chat.locator(f'a[href="/help/{EXPECTED_SOURCE}"]')
    expect(link).to_have_count(1)
    article = httpx.get(chat_server.url + link.get_attribute("href"))
    assert article.status_code == 200 and "text/html" in article.headers["content-type"]


def test_each_tab_has_its_own_conversation(browser, chat_server, answered_page):
    same_customer_tab = open_chat(answered_page.context, chat_server.url)
    other_customer = browser.new_context()
    try:
        for page in (same_customer_tab, open_chat(other_customer, chat_server.url)):
            placeholder = page.get_by_text("Ask a question about our product.", exact=True)
            expect(placeholder).to_be_visible()
            expect(page.get_by_test_id("user")).to_have_count(0)
            expect(page.get_by_test_id("bot")).to_have_count(0)
        expect(conversation(answered_page).get_by_test_id("user")).to_have_count(1)
    finally:
        same_customer_tab.close()
        other_customer.close()


def test_html_in_the_answer_is_shown_as_text(html_page):
    assert html_page.evaluate("typeof window.__xss") == "undefined"
    assert conversation(html_page).get_by_test_id("bot").locator("img").count() == 0


def test_html_in_the_question_is_shown_as_text(html_page):
    chat = conversation(html_page)
    assert html_page.evaluate("typeof window.__xss") == "undefined"
    assert chat.locator('img[src="x"]').count() == 0
    expect(chat.get_by_test_id("user")).to_contain_text(HTML_PAYLOAD)


def test_a_markdown_image_in_the_question_loads_nothing(html_page):
    chat = conversation(html_page)
    assert chat.locator('img[src*="127.0.0.1:9"]').count() == 0
    expect(chat.get_by_test_id("user")).to_contain_text("tracker.png")


def test_code_and_entities_in_the_question_show_as_typed(html_page):
    user = conversation(html_page).get_by_test_id("user")
    expect(user.locator("code")).to_have_text("https://<subdomain>.example.com")
    expect(user).to_contain_text(ENTITY_PAYLOAD)


# ----- the same endpoint over HTTP, with Gradio's own client


@pytest.fixture(scope="module")
def client(chat_server):
    return Client(chat_server.url, verbose=False, analytics_enabled=False, download_files=False)


def respond(client, message: str) -> list[dict]:
    job = client.submit(message, api_name="/respond")
    return job.result(timeout=ANSWER_ENDS_S)


def test_api_answer_ends_with_its_sources(client, chat_server):
    messages = respond(client, QUESTION)

    assert isinstance(messages, list) and len(messages) == 2, messages
    answer, sources = messages
    assert answer["role"] == "assistant" and answer["content"].strip()
    assert APP_ERROR not in answer["content"], chat_server.output()
    assert sources["metadata"]["title"] == "Sources"
    assert EXPECTED_SOURCE in sources["content"]
    assert f"](/help/{EXPECTED_SOURCE})" in sources["content"]


@pytest.mark.parametrize("message", ["", "  \n "])
def test_api_asks_for_a_question_when_the_message_is_empty(client, message):
    messages = client.predict(message, api_name="/respond")

    assert len(messages) == 1, messages
    assert "please type a question" in messages[0]["content"].lower()


def test_api_refuses_an_over_long_message_politely(client):
    message = QUESTION + " " + "x" * 4000

    messages = client.predict(message, api_name="/respond")

    assert len(messages) == 1, messages
    text = messages[0]["content"]
    assert "long" in text and "4,000" in text, text
    assert "Traceback" not in text and APP_ERROR not in text


def test_an_over_long_message_is_kept_whole_and_answered_with_the_limit(browser, chat_server):
    context = browser.new_context()
    try:
        page = open_chat(context, chat_server.url)
        message = QUESTION + " " + "x" * 5000
        question_box(page).fill(message)
        question_box(page).press("Enter")
        chat = conversation(page)
        # Not cut to the limit by the browser: the whole message is sent and shown.
        expect(chat.get_by_test_id("user")).to_have_text(message)
        expect(chat.get_by_test_id("bot").first).to_contain_text("4,000", timeout=30_000)
        assert APP_ERROR not in chat.get_by_test_id("bot").first.inner_text()
    finally:
        context.close()


# ----- shutting down


def test_sigterm_also_stops_the_local_model_server(start_chat_server):
    app = start_chat_server(sample_knowledge=False)
    models = [p for p in app.helpers if "llama_cpp.server" in p.command]
    assert models, f"no llama.cpp server among the app's children: {app.helpers}"

    orphans = app.stop()

    assert not orphans, f"still running after the app stopped: {orphans}"


def test_a_customer_rates_an_answer_with_a_comment(answered_page, chat_server):
    chat = conversation(answered_page)
    answer = chat.get_by_test_id("bot").first
    answer.hover()
    answered_page.get_by_role("button", name="Dislike").first.click()
    comment = answered_page.locator("#rating-comment textarea")
    expect(comment).to_be_visible(timeout=15_000)
    comment.fill("It did not say where the button is.")
    comment.press("Enter")
    expect(comment).to_be_hidden(timeout=15_000)

    database = chat_server.data_dir / "conversations.sqlite3"
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT f.rating, f.comment, t.role FROM feedback f JOIN turns t ON t.id = f.turn_id"
        ).fetchall()
    assert ("down", "It did not say where the button is.", "assistant") in rows


def test_the_gradio_web_component_page_loads_the_chat(browser, chat_server):
    context = browser.new_context()
    page = context.new_page()
    failed = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    try:
        page.goto(f"{chat_server.url}/widget/gradio")
        expect(page.locator("gradio-app textarea")).to_be_visible(timeout=60_000)
        expect(page.locator("#fallback")).to_be_hidden()
        assert failed == []
        # The page's own styles stay off the component: the chat fills its frame.
        frame = page.locator(".frame").bounding_box()
        box = page.locator("gradio-app textarea").bounding_box()
        assert box["x"] - frame["x"] < 0.1 * frame["width"], (frame, box)
        assert box["width"] > 0.7 * frame["width"], (frame, box)
    finally:
        context.close()


def test_the_api_docs_render_from_local_files_only(browser, chat_server):
    context = browser.new_context()
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    try:
        page.goto(f"{chat_server.url}/api/v1/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "Support chatbot", timeout=60_000
        )
        expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    finally:
        context.close()

    assert requested and all(url.startswith(chat_server.url) for url in requested), requested


# ----- hand-off to a person


def test_asking_for_a_person_opens_a_ticket_from_the_chat_page(client, chat_server):
    messages = respond(client, "Can I talk to a person please?")

    text = " ".join(m["content"] for m in messages)
    assert text.count("passed this conversation to our support team") == 1, messages
    assert "leave your address under" in text, "no email was left: where to leave one"
    database = chat_server.data_dir / "conversations.sqlite3"
    with sqlite3.connect(database) as db:
        tickets = db.execute("SELECT site, reason, status FROM tickets").fetchall()
        sites = {row[0] for row in db.execute("SELECT site FROM sessions")}
    assert ("chat-page", "customer_asked", "open") in tickets
    # Its conversation, too, says it was held on the chat page (staff tell it from the widget's).
    assert sites == {"chat-page"}, sites


def test_a_question_nobody_can_answer_opens_a_ticket_shown_in_the_same_message(chat_server):
    # A client of its own: a client keeps its conversation, which may hold a ticket already.
    own = Client(chat_server.url, verbose=False, analytics_enabled=False, download_files=False)
    messages = respond(own, "qwzx vbnm plok?")

    # One message per stored answer, so a thumb on a later answer lands on the right turn.
    assert len(messages) == 1, messages
    text = messages[0]["content"]
    assert "couldn't find an answer" in text and "passed this conversation" in text, text
    database = chat_server.data_dir / "conversations.sqlite3"
    with sqlite3.connect(database) as db:
        tickets = db.execute("SELECT site, reason FROM tickets").fetchall()
    assert ("chat-page", "no_answer") in tickets


def test_the_talk_to_a_person_form_opens_a_ticket_with_the_contact(browser, chat_server):
    context = browser.new_context()
    try:
        page = open_chat(context, chat_server.url)
        page.get_by_text("Talk to a person").click()
        # Nothing asked yet: the team would get an empty conversation.
        page.get_by_role("button", name="Ask for a person").click()
        expect(page.get_by_text("type your question in the chat first")).to_be_visible(
            timeout=15_000
        )
        ask(page, "Can I talk to a person please?", chat_server)
        # The ticket has no address to reply to: the answer says where to leave one.
        expect(conversation(page)).to_contain_text("leave your address under", timeout=15_000)
        shown = conversation(page).inner_text()
        assert shown.count("passed this conversation to our support team") == 1, shown

        email = page.get_by_label("Email (optional)")
        page.get_by_label("Name (optional)").fill("Ada Lovelace")
        email.fill("ada@")
        page.get_by_role("button", name="Ask for a person").click()
        expect(page.get_by_text("Please check the email address")).to_be_visible(timeout=15_000)
        expect(page.locator("#handoff-confirmation")).to_be_hidden()

        email.fill("ada@example.com")
        page.get_by_role("button", name="Ask for a person").click()
        expect(page.locator("#handoff-confirmation")).to_contain_text(
            "passed this conversation to our support team", timeout=15_000
        )
    finally:
        context.close()

    database = chat_server.data_dir / "conversations.sqlite3"
    with sqlite3.connect(database) as db:
        contacts = db.execute(
            "SELECT contact FROM tickets WHERE site = 'chat-page' AND reason = 'customer_asked'"
        ).fetchall()
    assert [json.loads(c) for (c,) in contacts].count(
        {"name": "Ada Lovelace", "email": "ada@example.com"}
    ) == 1, contacts


def test_asking_for_a_person_while_the_first_answer_is_on_its_way_keeps_one_conversation(
    browser, chat_server
):
    question = "Which app do I use to set up a new Lumora hub?"
    context = browser.new_context()
    try:
        page = open_chat(context, chat_server.url)
        page.get_by_text("Talk to a person").click()
        page.get_by_label("Name (optional)").fill("Grace Hopper")
        box = question_box(page)
        box.fill(question)
        box.press("Enter")
        # As soon as the question shows, before its answer starts: the tab's state holds no
        # conversation yet.
        expect(conversation(page).get_by_test_id("user")).to_have_count(1)
        page.get_by_role("button", name="Ask for a person").click()
        expect(page.locator("#handoff-confirmation")).to_contain_text(
            "passed this conversation to our support team", timeout=ANSWER_STARTS_S * 1000
        )
        expect(page.get_by_role("button", name="Retry")).to_be_enabled(timeout=ANSWER_ENDS_S * 1000)
    finally:
        context.close()

    with sqlite3.connect(chat_server.data_dir / "conversations.sqlite3") as db:
        [(ticketed,)] = db.execute(
            "SELECT session_id FROM tickets WHERE json_extract(contact, '$.name') = ?",
            ("Grace Hopper",),
        ).fetchall()
        asked_in = db.execute(
            "SELECT session_id FROM turns WHERE role = 'user' AND content = ?", (question,)
        ).fetchall()
        answers = db.execute(
            "SELECT COUNT(*) FROM turns WHERE session_id = ? AND role = 'assistant'", (ticketed,)
        ).fetchone()[0]
    assert asked_in == [(ticketed,)], "the question is stored once, in the ticket's conversation"
    assert answers == 1
