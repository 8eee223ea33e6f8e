"""Hand-off tickets: one per conversation, the transcript sent through the configured notifier."""

from __future__ import annotations

import json
import time

import pytest

from chatbot.conversations import SQLiteConversationStore
from chatbot.handoff import HandoffDesk
from chatbot.notify import NotifierError, verify_signature
from chatbot.settings import HandoffSettings, WebhookSettings

SECRET = "a-webhook-secret-for-tests"


@pytest.fixture
def conversations(tmp_path) -> SQLiteConversationStore:
    return SQLiteConversationStore(tmp_path / "app.sqlite3")


def webhook_desk(conversations, url: str, **webhook) -> HandoffDesk:
    settings = HandoffSettings(
        notifier="webhook",
        webhook=WebhookSettings(url=url, secret_env="HOOK_SECRET", backoff_s=0, **webhook),
    )
    return HandoffDesk(conversations, settings, environ={"HOOK_SECRET": SECRET})


def conversation(conversations) -> str:
    session = conversations.create_session("widget", site="demo-site-key")
    conversations.add_turn(session.id, "user", "My hub blinks red.", 5)
    conversations.add_turn(session.id, "assistant", "Try restarting it.", 4)
    return session.id


def delivered(conversations, ticket_id: int, timeout_s: float = 10) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        delivery = conversations.get_ticket(ticket_id).delivery
        if delivery:
            return delivery
        time.sleep(0.05)
    raise AssertionError("the ticket was never sent")


def test_a_ticket_reaches_the_webhook_signed_with_the_transcript(conversations, receiver):
    desk = webhook_desk(conversations, receiver.url)
    session_id = conversation(conversations)

    ticket, new, _ = desk.open(session_id, "customer_asked", contact={"email": "ana@example.com"})
    outcome = delivered(conversations, ticket.id)
    again, new_again, added = desk.open(session_id, "no_answer", contact={"name": "Ana"})
    _, _, nothing_new = desk.open(session_id, "customer_asked", contact={"name": "Ana"})
    renamed, _, changed = desk.open(session_id, "customer_asked", contact={"name": "Ana B."})
    desk.close()

    assert new and not new_again and again.id == ticket.id
    assert added and changed and not nothing_new, "what the request did to the contact"
    assert again.contact == {"email": "ana@example.com", "name": "Ana"}
    assert renamed.contact == {"email": "ana@example.com", "name": "Ana B."}
    assert conversations.get_ticket(ticket.id).delivery == outcome, "the first sending stands"
    assert outcome.startswith("webhook sent: HTTP 200")
    sent = [json.loads(r.body) for r in receiver.requests]
    assert [(p["event"], p["contact"]) for p in sent] == [
        ("opened", {"email": "ana@example.com"}),
        ("contact_added", {"email": "ana@example.com", "name": "Ana"}),
    ], "the contact details given later are sent on too"
    request = receiver.requests[0]
    assert verify_signature(
        SECRET, request.headers["x-chatbot-timestamp"], request.body,
        request.headers["x-chatbot-signature"],
    )  # fmt: skip
    payload = json.loads(request.body)
    assert payload["session_id"] == session_id and payload["reason"] == "customer_asked"
    assert [t["content"] for t in payload["transcript"]] == [
        "My hub blinks red.",
        "Try restarting it.",
    ]


def test_a_failing_webhook_leaves_the_ticket_in_the_staff_queue(conversations, receiver):
    receiver.script(500)
    desk = webhook_desk(conversations, receiver.url, max_attempts=2)
    session_id = conversation(conversations)

    ticket, _, _ = desk.open(session_id, "disliked_answers")
    outcome = delivered(conversations, ticket.id)
    desk.close()

    assert outcome.startswith("webhook not sent:") and "500" in outcome
    assert len(receiver.requests) == 2
    assert [t.id for t in conversations.tickets("open")] == [ticket.id]


def test_a_misconfigured_webhook_is_refused_at_start_up(conversations):
    desk = HandoffDesk(
        conversations,
        HandoffSettings(notifier="webhook", webhook=WebhookSettings(url="")),
        environ={},
    )

    with pytest.raises(NotifierError, match="handoff.webhook.url"):
        desk.check({None})


def test_marking_a_ticket_done_lets_the_next_hand_off_open_a_new_one(conversations):
    desk = HandoffDesk(conversations, HandoffSettings())
    session_id = conversation(conversations)

    first, _, _ = desk.open(session_id, "customer_asked")
    desk.close_ticket(first.id)
    second, new, _ = desk.open(session_id, "customer_asked")
    desk.close()

    assert new and second.id != first.id
    assert conversations.get_ticket(first.id).status == "done"
    assert conversations.get_ticket(first.id).closed_at


def test_concurrent_hand_offs_open_one_ticket(conversations):
    from concurrent.futures import ThreadPoolExecutor

    desk = HandoffDesk(conversations, HandoffSettings())
    session_id = conversation(conversations)

    with ThreadPoolExecutor(8) as pool:
        tickets = list(pool.map(lambda _: desk.open(session_id, "customer_asked")[0].id, range(8)))
    desk.close()

    assert len(set(tickets)) == 1
    assert len(conversations.tickets("open")) == 1
