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

from chatbot.conversations import ConversationStore, Ticket
from chatbot.notify import Notifier, NotifierError, make_notifier
from chatbot.settings import HandoffNotifier, HandoffSettings

log = logging.getLogger(__name__)

# "Can I talk to a person?", "speak with a human agent", or just "agent" / "human please".
WANTS_PERSON = re.compile(
    r"\b(talk|speak|chat|connect|transfer|put)\b.{0,40}?\b(human|person|agent|someone|somebody"
    r"|representative|operator|staff|real people)\b"
    r"|\b(human|live|real)\s+(agent|support|person|being)\b"
    r"|^\s*(agent|human|operator|representative|a person)\s*(please)?\s*[.!?]*\s*$",
    re.IGNORECASE,
)

REASONS = {
    "customer_asked": "The customer asked for a person.",
    "no_answer": "The help center had no answer to the customer's question.",
    "disliked_answers": "The customer rated answers down several times in a row.",
}


def wants_person(message: str) -> bool:
    """Whether a chat message asks for a human instead of an answer."""
    return bool(WANTS_PERSON.search(message))


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
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="handoff")

    def check(self, names: set[HandoffNotifier | None]) -> None:
        """Build every notifier that may be used, so a wrong setting stops start-up."""
        for name in names:
            self._notifier(name)

    def _notifier(self, name: HandoffNotifier | str | None) -> Notifier:
        name = HandoffNotifier(name or self.settings.notifier)
        with self._lock:
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
    ) -> tuple[Ticket, bool]:
        """The conversation's open ticket, or a new one (sent on in the background).

        Returns the ticket and whether it is new; asking again while a ticket is open only adds
        the contact details the customer gave this time.
        """
        contact = {k: v for k, v in (contact or {}).items() if v}
        existing = self.conversations.open_ticket(session_id)
        if existing is not None:
            if contact and contact != existing.contact:
                existing = (
                    self.conversations.update_ticket(
                        existing.id, contact={**existing.contact, **contact}
                    )
                    or existing
                )
            return existing, False
        name = HandoffNotifier(notifier or self.settings.notifier)
        ticket = self.conversations.create_ticket(session_id, site, reason, contact, name.value)
        log.info("hand-off ticket %s opened (%s)", ticket.id, reason)
        self._executor.submit(self._deliver, ticket.id, name)
        return ticket, True

    def payload(self, ticket: Ticket) -> dict:
        """The ticket as the notifier sends it: who, why, and the whole conversation."""
        data = asdict(ticket)
        data["reason_text"] = REASONS.get(ticket.reason, ticket.reason)
        data["transcript"] = [
            {"role": turn.role, "content": turn.content, "at": turn.created_at}
            for turn in self.conversations.turns(ticket.session_id)
        ]
        return data

    def _deliver(self, ticket_id: int, name: HandoffNotifier) -> None:
        ticket = self.conversations.get_ticket(ticket_id)
        if ticket is None:
            return
        try:
            delivery = self._notifier(name).send(self.payload(ticket))
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
        self.conversations.update_ticket(ticket_id, delivery=detail)

    def close_ticket(self, ticket_id: int) -> Ticket | None:
        return self.conversations.update_ticket(ticket_id, status="done")

    def close(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait)
