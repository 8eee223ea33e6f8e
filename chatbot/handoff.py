"""Hand-off to a person: when a customer wants one, open a ticket and tell the support team.

Every ticket lands in the staff queue (the tickets table); the configured notifier (a signed
webhook, an email) also sends it, in the background, so the customer never waits for delivery.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import NamedTuple

from chatbot.conversations import ConversationStore, Ticket
from chatbot.notify import Notifier, NotifierError, make_notifier
from chatbot.redact import redact
from chatbot.settings import HandoffNotifier, HandoffSettings

log = logging.getLogger(__name__)

# "Can I talk to a person?", "speak with a human agent", "connect me to support staff", or just
# "agent" / "a human please". Questions that merely mention people ("transfer my plan to
# someone else", "add a person to my home") must not match.
_PERSON = (
    r"(?:a |an |the |one of your |some |your )?(?:real |live |actual )?"
    r"(?:human|person|agent|representative|operator|somebody|someone|staff member"
    r"|support (?:agent|person|staff|team))"
)
# "from your team", "from support": the vendor's own people.
_FROM_YOU = (
    r"(?:from|on|at)\s+(?:your (?:support )?(?:team|staff|company)|your support|support"
    r"|the support (?:team|staff))\b"
)
WANTS_PERSON = re.compile(
    rf"\b(?:talk|speak|chat)\s+(?:to|with)\s+{_PERSON}\b(?!\s+(?:else|in|from my|at home))"
    rf"|\b(?:connect|transfer|put)\s+me\s+(?:to|with|through to)\s+{_PERSON}\b"
    r"|\b(?:need|want|get)\s+(?:a |an |to talk to a )?(?:real |live )?(?:human|person|agent)\b"
    r"(?!\s+(?:to|in|on|from|account))"
    r"|^\s*(?:an? )?(?:agent|human|operator|representative|person)\s*(?:please)?\s*[.!?]*\s*$"
    # A whole message that only asks to be put through: "please connect me", "customer service!"
    # ("customer support?" or "live chat?" asks about them, and is searched).
    r"|^\s*(?:(?:please|pls)[\s,]+)?"
    r"(?:connect me|transfer me|put me through|live (?:agent|person)"
    r"|customer (?:service|support|care)|(?:a )?real person)"
    r"(?:[\s,]+(?:please|pls|now|asap))*\s*[.!]*\s*$"
    r"|^\s*(?:can|could) you (?:please )?(?:connect|transfer) me(?: please)?\s*[.!?]*\s*$"
    # "I need someone", "can someone from your team call me?", "is there anyone I can talk
    # to?". Questions and statements are not requests: "I need someone to be able to post
    # here", "someone from your team told me to...", "is there anyone I can talk to in my org
    # who is an admin?".
    r"|^\s*(?:i\s+)?(?:really\s+|just\s+)?(?:need|want)\s+(?:someone|somebody)"
    rf"(?:\s+(?:to help me|to talk to|{_FROM_YOU}))?"
    r"(?:[\s,]+(?:real|please|pls|now|asap|urgently))*\s*[.!?]*\s*$"
    rf"|\b(?:want|need|like|get|have)\s+(?:someone|somebody|a person|a human)\s+{_FROM_YOU}"
    rf"|\b(?:can|could|would|will)\s+(?:someone|somebody|a person|anyone)\s+{_FROM_YOU}"
    r"\s+(?:please\s+)?(?:call|contact|email|help|reach|get back to|look at|check)\b"
    r"|\bis there (?:a person|a human|someone|somebody|anyone|anybody) (?:i|we) (?:can|could) "
    r"(?:talk|speak|chat)(?: to| with)?(?:[\s,]+(?:please|here|now))*\s*[.!?]*\s*$",
    re.IGNORECASE,
)


class Opened(NamedTuple):
    """What asking for a person did: the conversation's open ticket, whether it is new, and
    (for a ticket already open) whether this request added or changed its contact details."""

    ticket: Ticket
    new: bool
    contact_changed: bool = False


class StillOpen(Exception):
    """The conversation already has an open ticket."""

    def __init__(self, ticket: Ticket):
        super().__init__(f"This conversation already has an open hand-off, #{ticket.id}.")
        self.ticket = ticket


REASONS = {
    "customer_asked": "The customer asked for a person.",
    "no_answer": "The help center had no answer to the customer's question.",
    "off_topic": "The customer asked about something the help center does not cover.",
    "disliked_answers": "The customer rated answers down several times in a row.",
}


# A short yes, as a reply to the bot's offer of a person ("yes please", "sure", "ok, go ahead").
# A bare "ok" or "ok thanks" is a sign-off, and anything more ("yes but how do I ...") is a new
# question.
_CONNECT = (
    r"connect me|put me through|transfer me|a person|a human|someone|do it|go ahead|"
    r"i'?d like that|i would like that|that would (?:be )?(?:great|good|helpful|nice|help)|"
    r"sounds good|please do"
)
_MORE = rf"(?:[\s,]+(?:please|pls|plz|thanks|thank you|do|yes|{_CONNECT}))*"
ACCEPTS_OFFER = re.compile(
    r"^\s*(?:(?:yes|yeah|yep|yup|sure|please|y|sure thing|absolutely|definitely|of course|"
    # the commonest yes-please of a few other languages
    r"s[ií],? por favor|oui,? s'il (?:vous|te) pla[iî]t|ja,? bitte|sì,? per favore|sim,? por favor|"
    + _CONNECT
    + ")"
    + _MORE
    + rf"|(?:ok|okay)[\s,]+(?:please|yes|{_CONNECT})"
    + _MORE
    # Then punctuation or an emoji ("yes please 🙂"), but not a question mark.
    + r")[^\w?]*$",
    re.IGNORECASE,
)
# A request for a person turned around by the words right before it ("I don't want to talk to
# a person", "I don't need a human", "I'd rather not speak to an agent"). Only a negation of the
# request itself counts: "it's not working, I want to talk to a person" is a request.
NEGATED_BEFORE = re.compile(
    r"\b(?:don't|dont|do not|doesn't|does not|won't|will not|never|rather not|no need to)\s+"
    r"(?:(?:really|even)\s+)?(?:(?:want|need|wish)\s+)?(?:to\s+)?$",
    re.IGNORECASE,
)
NO_BEFORE = re.compile(r"\bno\s+$", re.IGNORECASE)


def wants_person(message: str) -> bool:
    """Whether a chat message asks for a human instead of an answer (and does not say it
    doesn't want one)."""
    message = plain_apostrophes(message)
    return any(not _negated(message, match) for match in WANTS_PERSON.finditer(message))


def _negated(message: str, match: re.Match) -> bool:
    before = message[: match.start()]
    if NEGATED_BEFORE.search(before):
        return True
    # "no need to talk to a human": the request's own first word is the negated one
    return match.group(0).lower().startswith("need") and bool(NO_BEFORE.search(before))


def accepts_offer(message: str) -> bool:
    """Whether a chat message is a plain yes (to be read against what the bot asked last)."""
    return bool(ACCEPTS_OFFER.match(plain_apostrophes(message)))


def plain_apostrophes(text: str) -> str:
    """``text`` with typographic apostrophes (as phones type them) made plain."""
    return text.replace("\u2019", "'").replace("\u2018", "'")


# What a notification says happened to the ticket (the payload's "event").
OPENED = "opened"
CONTACT_ADDED = "contact_added"


class HandoffDesk:
    """Opens tickets (one open ticket per conversation) and sends them through a notifier."""

    def __init__(
        self,
        conversations: ConversationStore,
        settings: HandoffSettings,
        *,
        environ: Mapping[str, str] = os.environ,
        notifier_factory: Callable[..., Notifier] = make_notifier,
    ):
        self.conversations = conversations
        self.settings = settings
        self._environ = environ
        self._factory = notifier_factory
        self._notifiers: dict[str, Notifier] = {}
        self._lock = threading.Lock()
        self._notifiers_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="handoff")

    def check(self, names: set[HandoffNotifier | None]) -> None:
        """Build every notifier that may be used, so a wrong setting stops start-up."""
        for name in names:
            self._notifier(name)

    def _notifier(self, name: HandoffNotifier | str | None) -> Notifier:
        name = HandoffNotifier(name or self.settings.notifier)
        with self._notifiers_lock:
            if name.value not in self._notifiers:
                self._notifiers[name.value] = self._factory(name, self.settings, self._environ)
            return self._notifiers[name.value]

    def open(
        self,
        session_id: str,
        reason: str,
        *,
        site: str | None = None,
        contact: dict | None = None,
        notifier: HandoffNotifier | None = None,
    ) -> Opened:
        """The conversation's open ticket, or a new one (sent on in the background).

        Asking again while a ticket is open only adds the contact details the customer gave
        this time.
        """
        contact = {k: v for k, v in (contact or {}).items() if v}
        with self._lock:
            return self._open(session_id, reason, site, contact, notifier)

    def _open(
        self,
        session_id: str,
        reason: str,
        site: str | None,
        contact: dict,
        notifier: HandoffNotifier | None,
    ) -> Opened:
        existing = self.conversations.open_ticket(session_id)
        if existing is not None:
            merged = {**existing.contact, **contact}
            if merged != existing.contact:
                added = merged.keys() - existing.contact.keys()
                existing = self.conversations.update_ticket(existing.id, contact=merged) or existing
                if added:
                    # The team has the ticket without a way to reach the customer that it now
                    # has: send it again. (A changed name or address is kept, not re-sent, so
                    # nobody can flood the team with updates.)
                    name = HandoffNotifier(existing.notifier)
                    self._executor.submit(self._deliver, existing.id, name, CONTACT_ADDED)
                return Opened(existing, new=False, contact_changed=True)
            return Opened(existing, new=False)
        name = HandoffNotifier(notifier or self.settings.notifier)
        ticket = self.conversations.create_ticket(session_id, site, reason, contact, name.value)
        log.info("hand-off ticket %s opened (%s)", ticket.id, reason)
        self._executor.submit(self._deliver, ticket.id, name, OPENED)
        return Opened(ticket, new=True)

    def payload(self, ticket: Ticket, event: str = OPENED) -> dict:
        """The ticket as the notifier sends it: who, why, and the whole conversation.

        ``event`` is "opened" for a new ticket, "contact_added" when the customer later gave
        contact details for it.
        """
        data = asdict(ticket)
        data["event"] = event
        data["reason_text"] = REASONS.get(ticket.reason, ticket.reason)
        data["transcript"] = [
            {"role": turn.role, "content": turn.content, "at": turn.created_at}
            for turn in self.conversations.turns(ticket.session_id)
        ]
        return data

    def _deliver(self, ticket_id: int, name: HandoffNotifier, event: str = OPENED) -> None:
        ticket = self.conversations.get_ticket(ticket_id)
        if ticket is None:
            return
        try:
            delivery = self._notifier(name).send(self.payload(ticket, event))
            if name == HandoffNotifier.QUEUE:
                detail = "staff queue only"
            elif delivery.delivered:
                detail = f"{name.value} sent: {delivery.detail}"
            else:
                detail = f"{name.value} not sent: {delivery.detail}"
        except NotifierError as exc:
            detail = f"{name.value} not sent: {exc}"
        except Exception:  # noqa: BLE001 - a broken notifier must not lose the queued ticket
            log.exception("hand-off notifier %s failed", name.value)
            detail = f"{name.value} not sent: the notifier failed (see the log)"
        # A mail server's or a webhook's reply may echo a credential; staff see this detail.
        secrets = (self.settings.webhook.secret_env, self.settings.email.password_env)
        detail = redact(detail, secrets, self._environ)
        if event == OPENED:
            self.conversations.update_ticket(ticket_id, delivery=detail)
        else:
            # The ticket shows how it was first sent; an update's outcome is only logged.
            log.info("hand-off ticket %s, %s: %s", ticket_id, event, detail)

    def close_ticket(self, ticket_id: int) -> Ticket | None:
        return self.conversations.update_ticket(ticket_id, status="done")

    def reopen_ticket(self, ticket_id: int) -> Ticket | None:
        """Open a done ticket again (None if there is no such ticket).

        Raises ``StillOpen`` when its conversation has another open ticket: a conversation has
        at most one, which the customer's later messages and contact details go to.
        """
        with self._lock:  # the same lock as opening one, so no second open ticket slips in
            ticket = self.conversations.get_ticket(ticket_id)
            if ticket is None or ticket.status == "open":
                return ticket
            other = self.conversations.open_ticket(ticket.session_id)
            if other is not None:
                raise StillOpen(other)
            return self.conversations.update_ticket(ticket_id, status="open")

    def close(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait)
