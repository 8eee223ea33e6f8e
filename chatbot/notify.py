"""Hand-off notifiers: tell the support team about a ticket by the staff queue, a webhook or email.

Every ticket is already in the staff queue when a notifier runs, so a failed delivery is reported
(``Delivery.delivered`` is False) and logged, never raised.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from chatbot.settings import (
    PLACEHOLDER_SECRETS,
    EmailSettings,
    HandoffNotifier,
    HandoffSettings,
    SettingsError,
    WebhookSettings,
)

logger = logging.getLogger(__name__)

# A receiver asking for a longer pause would hold the hand-off for minutes; the ticket is safe in
# the staff queue anyway, so waiting longer than this buys nothing.
RETRY_AFTER_CAP_S = 60.0
SIGNATURE_PREFIX = "sha256="
ROLE_LABELS = {"user": "Customer", "assistant": "Assistant"}


class NotifierError(SettingsError):
    """The hand-off notifier is misconfigured; the message names the setting to fix."""


@dataclass(frozen=True)
class Delivery:
    """What became of one ticket: ``detail`` is short and readable, e.g. "HTTP 200"."""

    delivered: bool
    attempts: int
    detail: str


class Notifier(Protocol):
    name: str

    def send(self, ticket: dict[str, Any]) -> Delivery: ...


class QueueNotifier:
    """Nothing more to do: staff read tickets from the queue in the app's database."""

    name = "queue"

    def send(self, ticket: dict[str, Any]) -> Delivery:
        return Delivery(True, 0, "queued for staff")


# ----- webhook


def _signature(secret: str | bytes, timestamp: str | int, body: bytes) -> str:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    signed = f"{timestamp}.".encode() + body
    return SIGNATURE_PREFIX + hmac.new(key, signed, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | bytes,
    timestamp: str | int,
    body: bytes,
    header: str,
    *,
    max_age_s: float = 300,
    now: float | None = None,
) -> bool:
    """True if ``header`` (X-Chatbot-Signature) signs ``body`` at ``timestamp`` with ``secret``.

    ``timestamp`` is the X-Chatbot-Timestamp header as received and ``body`` the raw request
    bytes. A timestamp more than ``max_age_s`` from ``now`` (either way) is refused, so a captured
    request cannot be replayed later.
    """
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > max_age_s:
        return False
    expected = _signature(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace"))


@dataclass(frozen=True)
class _Attempt:
    delivered: bool
    detail: str
    retryable: bool = False
    retry_after_s: float | None = None


def _retry_after_s(response: httpx.Response) -> float | None:
    """Retry-After in seconds, capped; None for an HTTP-date or no header (backoff applies)."""
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_CAP_S)


class WebhookNotifier:
    """POSTs each ticket as JSON to ``url``, signed with HMAC-SHA256, retrying transient failures.

    Each request carries::

        Content-Type: application/json
        X-Chatbot-Event: handoff
        X-Chatbot-Timestamp: 1718000000            (unix seconds when this attempt was sent)
        X-Chatbot-Signature: sha256=<hex digest>

    The body is ``json.dumps(ticket, sort_keys=True, separators=(",", ":"))`` in UTF-8. To verify
    a request, a receiver takes the raw body bytes (before parsing the JSON), computes
    HMAC-SHA256 with the shared secret over ``timestamp + "." + body``, compares
    ``"sha256=" + hexdigest`` with X-Chatbot-Signature in constant time, and refuses timestamps
    more than five minutes old. In Python that is ``verify_signature(secret,
    headers["X-Chatbot-Timestamp"], body, headers["X-Chatbot-Signature"])``.

    Connection errors, timeouts, 429 and 5xx are retried after ``backoff_s * 2**(attempt - 1)``
    seconds, or after Retry-After seconds (at most a minute) when the receiver sends one. Any other
    answer except 2xx, redirects included, is final.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        max_attempts: int = 4,
        backoff_s: float = 1.0,
        timeout_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
    ):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._url = url
        self._secret = secret
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._client = client
        # Webhook URLs often carry a token in their path or query, so logs name the host only.
        self._host = urlsplit(url).hostname or "?"

    def send(self, ticket: dict[str, Any]) -> Delivery:
        body = json.dumps(ticket, sort_keys=True, separators=(",", ":")).encode("utf-8")
        ticket_id = ticket.get("id", "?")
        if self._client is not None:
            return self._deliver(self._client, body, ticket_id)
        with httpx.Client() as client:
            return self._deliver(client, body, ticket_id)

    def _deliver(self, client: httpx.Client, body: bytes, ticket_id: object) -> Delivery:
        for attempt in range(1, self._max_attempts + 1):
            result = self._attempt(client, body)
            if result.delivered:
                return Delivery(True, attempt, result.detail)
            if not result.retryable:
                self._warn(ticket_id, attempt, result.detail, "not retried")
                return Delivery(False, attempt, f"{result.detail} (not retried)")
            if attempt == self._max_attempts:
                break
            delay = result.retry_after_s
            if delay is None:
                delay = self._backoff_s * 2 ** (attempt - 1)
            self._warn(ticket_id, attempt, result.detail, f"retrying in {delay:g} s")
            self._sleep(delay)
        self._warn(ticket_id, self._max_attempts, result.detail, "giving up")
        return Delivery(
            False,
            self._max_attempts,
            f"gave up after {self._max_attempts} attempts: {result.detail}",
        )

    def _attempt(self, client: httpx.Client, body: bytes) -> _Attempt:
        # A fresh timestamp per attempt, so a retry after a long backoff is not refused as stale.
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Chatbot-Event": "handoff",
            "X-Chatbot-Timestamp": str(timestamp),
            "X-Chatbot-Signature": _signature(self._secret, timestamp, body),
        }
        try:
            response = client.post(
                self._url, content=body, headers=headers, timeout=self._timeout_s
            )
        except httpx.TimeoutException:
            return _Attempt(False, "timed out", retryable=True)
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            return _Attempt(False, f"connection failed: {exc}", retryable=True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # Only the exception's type: some messages quote the URL, which may hold a token.
            return _Attempt(False, f"request failed: {type(exc).__name__}")
        status = f"HTTP {response.status_code}"
        if response.is_success:
            return _Attempt(True, status)
        if response.status_code == 429 or response.status_code >= 500:
            return _Attempt(False, status, retryable=True, retry_after_s=_retry_after_s(response))
        return _Attempt(False, status)

    def _warn(self, ticket_id: object, attempt: int, detail: str, outcome: str) -> None:
        logger.warning(
            "Hand-off ticket %s: webhook to %s failed on attempt %d of %d (%s); %s",
            ticket_id,
            self._host,
            attempt,
            self._max_attempts,
            detail,
            outcome,
        )


# ----- email


def _one_line(value: object) -> str:
    # Header values must not contain line breaks (email raises on them, and they could inject).
    return " ".join(str(value).split())


def _contact_text(contact: object) -> str:
    if not contact:
        return "none left"
    if isinstance(contact, Mapping):
        return (
            ", ".join(f"{key}: {value}" for key, value in contact.items() if value) or "none left"
        )
    return str(contact)


def _transcript_lines(transcript: object) -> list[str]:
    lines = []
    for turn in transcript or []:
        if isinstance(turn, Mapping):
            role = str(turn.get("role", ""))
            label = ROLE_LABELS.get(role, role.title() or "Unknown")
            content = str(turn.get("content", ""))
        else:
            label, content = "Unknown", str(turn)
        # Continuation lines are indented so every turn still starts with its speaker.
        lines.append(f"{label}: " + content.strip().replace("\n", "\n    "))
    return lines or ["(empty)"]


def _ticket_email(ticket: dict[str, Any], sender: str, recipients: Sequence[str]) -> EmailMessage:
    site = ticket.get("site", "?")
    session = ticket.get("session_id", "?")
    message = EmailMessage()
    added = ticket.get("event") == "contact_added"
    subject = f"Hand-off: {site} session {session}" + (" (contact details added)" if added else "")
    message["Subject"] = _one_line(subject)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=True)
    # Without a domain make_msgid asks DNS for this machine's name, which can stall for seconds.
    message["Message-ID"] = make_msgid(
        domain=parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    )
    body = [
        "The customer added contact details to this open hand-off."
        if added
        else "A customer asked to talk to a person.",
        "",
        f"Ticket: {ticket.get('id', '?')}",
        f"Site: {site}",
        f"Session: {session}",
        f"Opened: {ticket.get('created_at', '?')}",
        f"Reason: {ticket.get('reason') or 'not given'}",
        f"Contact: {_contact_text(ticket.get('contact'))}",
        "",
        "Transcript:",
        *_transcript_lines(ticket.get("transcript")),
    ]
    message.set_content("\n".join(body) + "\n")
    return message


def _smtp_error_text(exc: Exception) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = (
            exc.smtp_error.decode("utf-8", "replace")
            if isinstance(exc.smtp_error, bytes)
            else exc.smtp_error
        )
        return f"SMTP {exc.smtp_code} {reply}".strip()
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "every recipient was refused"
    return str(exc) or type(exc).__name__


class EmailNotifier:
    """Emails each ticket, as plain text with the transcript, to the support team over SMTP."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout_s: float = 10.0,
    ):
        self._host = host
        self._port = port
        self._sender = sender
        self._recipients = list(recipients)
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout_s = timeout_s

    def send(self, ticket: dict[str, Any]) -> Delivery:
        message = _ticket_email(ticket, self._sender, self._recipients)
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout_s) as smtp:
                if self._starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._username:
                    smtp.login(self._username, self._password or "")
                refused = smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            detail = f"SMTP server {self._host}:{self._port}: {_smtp_error_text(exc)}"
            logger.warning("Hand-off ticket %s: email not sent (%s)", ticket.get("id", "?"), detail)
            return Delivery(False, 1, detail)
        accepted = len(self._recipients) - len(refused)
        if refused:
            logger.warning(
                "Hand-off ticket %s: the SMTP server refused %s",
                ticket.get("id", "?"),
                ", ".join(sorted(refused)),
            )
            return Delivery(
                True,
                1,
                f"emailed {accepted} of {len(self._recipients)} recipients; "
                f"refused: {', '.join(sorted(refused))}",
            )
        return Delivery(True, 1, f"emailed {accepted} recipient{'s' if accepted != 1 else ''}")


# ----- factory


def _secret_from(environ: Mapping[str, str], variable: str, needed_by: str, should_be: str) -> str:
    value = environ.get(variable, "").strip()
    if not value:
        raise NotifierError(
            f"{needed_by} needs the environment variable {variable}; set it to {should_be}."
        )
    if value.lower() in PLACEHOLDER_SECRETS:
        raise NotifierError(
            f"The environment variable {variable} holds a placeholder; set it to {should_be}."
        )
    return value


def _webhook_notifier(settings: WebhookSettings, environ: Mapping[str, str]) -> WebhookNotifier:
    if not settings.url.strip():
        raise NotifierError(
            "Hand-offs are set to go to a webhook but handoff.webhook.url is empty; set it to the "
            "address that should receive the tickets."
        )
    url = urlsplit(settings.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise NotifierError(
            "handoff.webhook.url must be a full http:// or https:// address, "
            "e.g. https://support.example.com/hooks/chatbot."
        )
    secret = _secret_from(
        environ,
        settings.secret_env,
        "The hand-off webhook",
        "a long random signing secret shared with the receiver",
    )
    return WebhookNotifier(
        settings.url,
        secret,
        max_attempts=settings.max_attempts,
        backoff_s=settings.backoff_s,
        timeout_s=settings.timeout_s,
    )


def _email_notifier(settings: EmailSettings, environ: Mapping[str, str]) -> EmailNotifier:
    recipients = [address.strip() for address in settings.recipients if address.strip()]
    for key, missing in (
        ("handoff.email.host", not settings.host.strip()),
        ("handoff.email.sender", not settings.sender.strip()),
        ("handoff.email.recipients", not recipients),
    ):
        if missing:
            raise NotifierError(
                f"Hand-offs are set to go by email but {key} is empty; set it in the configuration."
            )
    username = environ.get(settings.username_env, "").strip() or None
    password = None
    if username:
        password = _secret_from(
            environ, settings.password_env, "The SMTP login", "the SMTP user's password"
        )
    elif environ.get(settings.password_env, "").strip():
        raise NotifierError(
            f"The environment variable {settings.password_env} is set but "
            f"{settings.username_env} is not; set both to log in to the SMTP server, or neither."
        )
    return EmailNotifier(
        settings.host.strip(),
        settings.port,
        settings.sender.strip(),
        recipients,
        username=username,
        password=password,
        starttls=settings.starttls,
        timeout_s=settings.timeout_s,
    )


def make_notifier(
    name: HandoffNotifier | str,
    settings: HandoffSettings,
    environ: Mapping[str, str] = os.environ,
) -> Notifier:
    """The notifier called ``name``, built from ``settings``; NotifierError names what is missing."""
    try:
        kind = HandoffNotifier(name)
    except ValueError:
        names = ", ".join(n.value for n in HandoffNotifier)
        raise NotifierError(
            f"Unknown hand-off notifier {name!r}; choose one of: {names}."
        ) from None
    match kind:
        case HandoffNotifier.QUEUE:
            return QueueNotifier()
        case HandoffNotifier.WEBHOOK:
            return _webhook_notifier(settings.webhook, environ)
        case HandoffNotifier.EMAIL:
            return _email_notifier(settings.email, environ)
