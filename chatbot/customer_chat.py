"""The customer chat of the embeddable widget: sites, session tokens, limits and hand-off.

What the REST API does for a customer lives here, with no HTTP in it: which site a public key
names and which origins it accepts, the random token that is the only way into a session, idle
expiry, message rate limits, ratings, and when a conversation is handed to a person.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from urllib.parse import quote

from chatbot.conversations import SessionRecord, Ticket
from chatbot.errors import Refused
from chatbot.handoff import HandoffDesk, accepts_offer, wants_person
from chatbot.prompts import HANDOFF_OFFER
from chatbot.rate_limit import RateLimiter, whole_seconds
from chatbot.service import (
    DECLINED,
    NO_MATCH,
    OFF_TOPIC,
    ChatEvent,
    ChatResult,
    ChatService,
    DoneEvent,
    Source,
    SourcesEvent,
    TokenEvent,
    site_options,
)
from chatbot.settings import Settings, SiteSettings

SELF_ORIGIN = "self"
# How long a plain "yes" still answers the bot's offer of a person.
OFFER_STANDS_S = 30 * 60


class CustomerError(Refused):
    """A refused customer request: a short code for programs and a sentence for people."""


@dataclass(frozen=True)
class CustomerSession:
    record: SessionRecord
    site: SiteSettings


# The app's own chat page (Gradio, at /) as a site: the configured defaults, and tickets
# marked as coming from it. Not in the settings' sites, so no widget or API key reaches it.
CHAT_PAGE_SITE = SiteSettings(key="chat-page", name="Chat page", allowed_origins=[SELF_ORIGIN])


@dataclass(frozen=True)
class TicketEvent:
    """The turn opened (or joined) a hand-off ticket."""

    ticket: Ticket
    message: str


CustomerEvent = ChatEvent | TicketEvent


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CustomerChat:
    """Customer-facing chat for the sites in the settings; safe to share across threads."""

    def __init__(
        self,
        service: ChatService,
        settings: Settings,
        desk: HandoffDesk,
        *,
        clock: Callable[[], float] | None = None,
    ):
        """``clock`` (tests) replaces both the wall clock of idle expiry and the rate limits'."""
        self.service = service
        self.settings = settings
        self.desk = desk
        self.sites = {site.key: site for site in settings.sites}
        self._clock = clock or time.time
        limits, ticking = settings.rate_limits, clock or time.monotonic
        self._per_session = RateLimiter(limits.per_session_per_minute, clock=ticking)
        self._per_client = RateLimiter(limits.per_client_per_minute, clock=ticking)
        self._new_sessions = RateLimiter(settings.widget.max_sessions_per_minute, clock=ticking)

    # ----- sites and origins
    def site(self, key: str | None, origin: str | None, own_origin: str) -> SiteSettings:
        site = self.sites.get(key or "")
        if site is None:
            raise CustomerError(
                "site_not_allowed", "This site key is unknown, so the chat is not available here."
            )
        self.check_origin(site, origin, own_origin)
        return site

    @staticmethod
    def origin_allowed(site: SiteSettings, origin: str | None, own_origin: str) -> bool:
        """Browsers always send Origin on these requests; programs without one are let through
        (the key is public anyway: the check keeps other websites from embedding the chat)."""
        if origin is None:
            return True
        allowed = {own_origin if o == SELF_ORIGIN else o for o in site.allowed_origins}
        return origin.rstrip("/") in allowed

    def check_origin(self, site: SiteSettings, origin: str | None, own_origin: str) -> None:
        if not self.origin_allowed(site, origin, own_origin):
            raise CustomerError(
                "origin_not_allowed", "The chat of this site is not available on this page."
            )

    def cors_origins(self, own_origin: str) -> set[str]:
        return {
            own_origin if o == SELF_ORIGIN else o
            for site in self.sites.values()
            for o in site.allowed_origins
        }

    # ----- sessions
    def open_session(self, site: SiteSettings, client: str) -> tuple[SessionRecord, str]:
        """A new conversation and its token; the token is shown once and only its hash kept."""
        self._limit("conversations", (self._new_sessions, f"client:{client}"))
        token = secrets.token_urlsafe(32)
        record = self.service.conversations.create_session(
            site.channel.value, site=site.key, token_hash=hash_token(token)
        )
        return record, token

    def authenticate(
        self, session_id: str, token: str | None, origin: str | None, own_origin: str
    ) -> CustomerSession:
        """The session, if ``token`` is its token; refused otherwise, or when it has expired."""
        record = self.service.conversations.get_session(session_id)
        expected = record.token_hash if record is not None else None
        given = hash_token(token) if token else ""
        if record is None or not expected:
            raise CustomerError("unknown_session", "This conversation does not exist.")
        if not hmac.compare_digest(expected, given):
            raise CustomerError("invalid_token", "This conversation belongs to someone else.")
        site = self.sites.get(record.site or "")
        if site is None:
            raise CustomerError("site_not_allowed", "This site's chat has been switched off.")
        self.check_origin(site, origin, own_origin)
        idle_s = self.settings.widget.session_idle_minutes * 60
        if self._clock() - record.updated_at > idle_s:
            raise CustomerError(
                "session_expired", "This conversation has expired. Please start a new one."
            )
        return CustomerSession(record, site)

    def idle_timeout_s(self) -> int:
        return self.settings.widget.session_idle_minutes * 60

    # ----- limits
    def _limit(self, what: str, *limits: tuple[RateLimiter, str]) -> None:
        """Count one hit on every (limiter, key), or refuse if any of them is used up.

        All are checked before any counts, so a request one limit refuses does not use up
        another's allowance.
        """
        wait = max(limiter.blocked(key) for limiter, key in limits)
        if wait:
            raise CustomerError(
                "rate_limited",
                f"Too many {what} in a short time. Please wait {whole_seconds(wait)} s.",
                retry_after=wait,
            )
        for limiter, key in limits:
            limiter.hit(key)

    def check_message_rate(self, session: CustomerSession, client: str) -> None:
        self._limit(
            "messages",
            (self._per_session, f"session:{session.record.id}"),
            (self._per_client, f"client:{client}"),
        )

    # ----- chatting
    def stream(self, session: CustomerSession, message: str) -> Iterator[CustomerEvent]:
        """The service's answer events, with a TicketEvent before the DoneEvent of a hand-off.

        Raises InputRejected before any work for an empty or oversized message.
        """
        message = self.service.check_message(message)
        if wants_person(message) or (accepts_offer(message) and self._offered_person(session)):
            yield from self._person_requested(session, message)
            return
        ticket_reasons = self._ticket_reasons()
        options = replace(site_options(session.site), ticket_on=frozenset(ticket_reasons))
        for event in self.service.stream(
            message,
            session_id=session.record.id,
            channel=session.site.channel.value,
            options=options,
        ):
            if isinstance(event, DoneEvent) and event.result.handoff:
                reason = ticket_reasons.get(event.result.handoff_reason)
                if reason is not None:
                    yield self._ticket_event(session, reason)
            yield event

    def _ticket_reasons(self) -> dict[str, str]:
        """The service's hand-offs that open a ticket at once, each with the ticket's reason.
        Their answers confirm the ticket instead of offering a person."""
        cfg = self.settings.handoff
        reasons = {NO_MATCH: "no_answer", DECLINED: "no_answer"} if cfg.on_no_answer else {}
        return reasons | ({OFF_TOPIC: "off_topic"} if cfg.on_off_topic else {})

    def _offered_person(self, session: CustomerSession) -> bool:
        """Whether the conversation's last turn is the bot's offer of a person, or a hand-off
        (a ticket's confirmation, an answer the bot did not have), made recently.

        A ticket may already be open (a question without an answer opens one with
        ``handoff.on_no_answer``, or the widget's button was pressed): then the yes is answered
        with that ticket's confirmation, not asked as a new question."""
        turns = self.service.conversations.turns(session.record.id)
        last = turns[-1] if turns else None
        if last is None or last.role != "assistant":
            return False
        if not (last.content.rstrip().endswith(HANDOFF_OFFER) or last.meta.get("handoff")):
            return False
        return self._clock() - last.created_at <= OFFER_STANDS_S

    def _person_requested(self, session: CustomerSession, message: str) -> Iterator[CustomerEvent]:
        conversations, counter = self.service.conversations, self.service.counter
        with self.service.one_turn_at_a_time(session.record.id):
            conversations.add_turn(session.record.id, "user", message, counter.count(message))
            event = self._ticket_event(session, "customer_asked")
            result = ChatResult(
                answer=event.message,
                sources=[],
                handoff=True,
                channel=session.site.channel.value,
                session_id=session.record.id,
            )
            turn = conversations.add_turn(
                session.record.id,
                "assistant",
                result.answer,
                counter.count(result.answer),
                {
                    "channel": result.channel,
                    "handoff": True,
                    "ticket": event.ticket.id,
                    "sources": [],
                },
            )
            result.turn_id = turn.id
        yield SourcesEvent([])
        yield TokenEvent(result.answer)
        yield event
        yield DoneEvent(result)

    def _ticket_event(
        self, session: CustomerSession, reason: str, contact: dict | None = None
    ) -> TicketEvent:
        opened = self.desk.open(
            session.record.id,
            reason,
            site=session.site.key,
            contact=contact,
            notifier=session.site.handoff_notifier,
        )
        cfg = self.settings.handoff
        # Asked again: the team already has it, unless this time the customer left a new way
        # to reach them, which the confirmation's "by email if you left an address" answers.
        confirmed = opened.new or opened.contact_changed
        return TicketEvent(opened.ticket, cfg.confirmation if confirmed else cfg.already_open)

    def handoff(self, session: CustomerSession, contact: dict | None) -> TicketEvent:
        """The customer pressed "talk to a person". Refused before the conversation holds a
        message, unless the customer leaves an email: the team would get a ticket that says
        neither what it is about nor how to reach anyone."""
        if not (contact or {}).get("email") and not self.open_ticket(session):
            turns = self.service.conversations.turns(session.record.id)
            if not any(t.role == "user" for t in turns):
                raise CustomerError(
                    "nothing_to_hand_off",
                    "Please type your question first, or leave an email address, so our team "
                    "knows what it's about and how to reach you.",
                )
        return self._ticket_event(session, "customer_asked", contact)

    def rate(
        self, session: CustomerSession, turn_id: int, rating: str, comment: str
    ) -> TicketEvent | None:
        """Store a rating; enough thumbs-down in a row hand the conversation off."""
        conversations = self.service.conversations
        try:
            conversations.set_feedback(session.record.id, turn_id, rating, comment.strip())
        except KeyError:
            raise CustomerError(
                "unknown_turn", "That answer is not part of this conversation."
            ) from None
        except ValueError:
            raise CustomerError("invalid_rating", "A rating is either 'up' or 'down'.") from None
        needed = self.settings.handoff.dislikes_in_a_row
        if rating != "down" or not needed:
            return None
        ratings = conversations.feedback(session.record.id)
        answers = [t.id for t in conversations.turns(session.record.id) if t.role == "assistant"]
        recent = answers[: answers.index(turn_id) + 1][-needed:]
        disliked = [r for r in recent if r in ratings and ratings[r].rating == "down"]
        if len(recent) == needed and len(disliked) == needed:
            return self._ticket_event(session, "disliked_answers")
        return None

    # ----- reading
    def history(self, session: CustomerSession) -> list[dict]:
        ratings = self.service.conversations.feedback(session.record.id)
        messages = []
        for turn in self.service.conversations.turns(session.record.id):
            sources = turn.meta.get("source_details") or [
                {"source": s, "title": s} for s in turn.meta.get("sources", [])
            ]
            rating = ratings.get(turn.id)
            messages.append(
                {
                    "id": turn.id,
                    "role": turn.role,
                    "content": turn.content,
                    "sources": [self.source_link(session.site, s) for s in sources],
                    "rating": rating.rating if rating else None,
                    "created_at": turn.created_at,
                    # The customer left while it was being written: it stops mid-sentence.
                    "interrupted": turn.meta.get("error") == "interrupted",
                }
            )
        return messages

    @staticmethod
    def source_link(site: SiteSettings, source: Source | dict) -> dict:
        data = source if isinstance(source, dict) else source.__dict__
        path = data["source"]
        slug = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if site.source_url:
            url = site.source_url.format(source=quote(path), slug=quote(slug))
        else:
            # A site answering from its own collection names itself, so the page finds the article.
            url = f"/help/{quote(path)}" + (f"?site={quote(site.key)}" if site.collection else "")
        return {
            "source": path,
            "title": data.get("title") or path,
            "snippet": data.get("snippet", ""),
            "url": url,
        }

    def open_ticket(self, session: CustomerSession) -> TicketEvent | None:
        """The conversation's open hand-off, with what the customer was told about it."""
        ticket = self.service.conversations.open_ticket(session.record.id)
        return TicketEvent(ticket, self.settings.handoff.confirmation) if ticket else None
