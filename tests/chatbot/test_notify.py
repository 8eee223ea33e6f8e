"""Hand-off notifiers against a real local HTTP receiver and a real local SMTP receiver."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chatbot.notify import (
    Delivery,
    EmailNotifier,
    NotifierError,
    QueueNotifier,
    WebhookNotifier,
    make_notifier,
    verify_signature,
)
from chatbot.settings import EmailSettings, HandoffNotifier, HandoffSettings, WebhookSettings

SECRET = "s3cret-for-tests-only"

TICKET: dict[str, Any] = {
    "id": 42,
    "session_id": "sess-abc",
    "site": "Lumora Support",
    "reason": "The customer asked for a person.",
    "contact": {"name": "Ada", "email": "ada@example.com"},
    "transcript": [
        {"role": "user", "content": "My lamp won't pair with the café Wi-Fi."},
        {"role": "assistant", "content": "Have you tried holding the button for 5 seconds?"},
        {"role": "user", "content": "Yes.\nStill nothing. I want a human."},
    ],
    "created_at": "2024-06-10T12:00:00+00:00",
}


def closed_port() -> int:
    """A loopback port nothing listens on, so connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def sleeps() -> list[float]:
    return []


def webhook(url: str, sleeps: list[float], **options: Any) -> WebhookNotifier:
    options = {"max_attempts": 4, "backoff_s": 0.5, "timeout_s": 5.0, **options}
    return WebhookNotifier(url, SECRET, sleep=sleeps.append, **options)


# ----- webhook


def test_delivers_the_signed_ticket(receiver, sleeps):
    before = int(time.time())
    delivery = webhook(receiver.url, sleeps).send(TICKET)

    assert delivery == Delivery(True, 1, "HTTP 200")
    assert sleeps == []
    [request] = receiver.requests
    assert request.path == "/hooks/handoff"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-chatbot-event"] == "handoff"
    assert json.loads(request.body) == TICKET
    assert request.body == json.dumps(TICKET, sort_keys=True, separators=(",", ":")).encode()

    timestamp = request.headers["x-chatbot-timestamp"]
    assert timestamp.isdigit() and before <= int(timestamp) <= time.time()
    signature = request.headers["x-chatbot-signature"]
    expected = hmac.new(
        SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256
    ).hexdigest()
    assert signature == f"sha256={expected}"
    assert verify_signature(SECRET, timestamp, request.body, signature)


def test_retries_a_server_error_then_delivers(receiver, sleeps):
    receiver.script(500, 200)

    delivery = webhook(receiver.url, sleeps, backoff_s=0.5).send(TICKET)

    assert delivery == Delivery(True, 2, "HTTP 200")
    assert sleeps == [0.5]
    assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first.body == second.body
    for request in receiver.requests:
        assert verify_signature(
            SECRET,
            request.headers["x-chatbot-timestamp"],
            request.body,
            request.headers["x-chatbot-signature"],
        )


def test_backoff_doubles_between_attempts(receiver, sleeps):
    receiver.script(500, 502, 503, 200)

    delivery = webhook(receiver.url, sleeps, max_attempts=4, backoff_s=0.5).send(TICKET)

    assert delivery == Delivery(True, 4, "HTTP 200")
    assert sleeps == [0.5, 1.0, 2.0]


def test_honours_retry_after_on_429(receiver, sleeps):
    receiver.script((429, {"Retry-After": "7"}), 200)

    delivery = webhook(receiver.url, sleeps, backoff_s=0.5).send(TICKET)

    assert delivery == Delivery(True, 2, "HTTP 200")
    assert sleeps == [7.0]


def test_caps_a_long_retry_after_and_ignores_a_date(receiver, sleeps):
    receiver.script(
        (429, {"Retry-After": "3600"}),
        (503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        200,
    )

    delivery = webhook(receiver.url, sleeps, backoff_s=0.5).send(TICKET)

    assert delivery.delivered and delivery.attempts == 3
    assert sleeps == [60.0, 1.0]


def test_gives_up_cleanly_after_max_attempts(receiver, sleeps, caplog):
    receiver.script(500)

    with caplog.at_level(logging.WARNING, logger="chatbot.notify"):
        delivery = webhook(receiver.url, sleeps, max_attempts=3).send(TICKET)

    assert delivery == Delivery(False, 3, "gave up after 3 attempts: HTTP 500")
    assert len(receiver.requests) == 3
    assert sleeps == [0.5, 1.0]  # no pause after the last attempt
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all("127.0.0.1" in w and "HTTP 500" in w for w in warnings)
    for text in (SECRET, "lamp", "hooks/handoff"):
        assert not any(text in w for w in warnings), text


def test_client_error_is_not_retried(receiver, sleeps):
    receiver.script(400, 200)

    delivery = webhook(receiver.url, sleeps).send(TICKET)

    assert delivery == Delivery(False, 1, "HTTP 400 (not retried)")
    assert len(receiver.requests) == 1
    assert sleeps == []


def test_redirect_is_not_followed(receiver, sleeps):
    receiver.script((302, {"Location": "http://127.0.0.1:1/elsewhere"}))

    delivery = webhook(receiver.url, sleeps).send(TICKET)

    assert not delivery.delivered and "HTTP 302" in delivery.detail
    assert len(receiver.requests) == 1


def test_connection_refused_gives_up_cleanly(sleeps):
    url = f"http://127.0.0.1:{closed_port()}/hooks/handoff"

    delivery = webhook(url, sleeps, max_attempts=3).send(TICKET)

    assert not delivery.delivered
    assert delivery.attempts == 3
    assert delivery.detail.startswith("gave up after 3 attempts: connection failed")
    assert sleeps == [0.5, 1.0]


def test_a_timeout_is_retried(receiver, sleeps):
    receiver.delay_s = 1.0

    delivery = webhook(receiver.url, sleeps, max_attempts=2, timeout_s=0.2).send(TICKET)

    assert delivery == Delivery(False, 2, "gave up after 2 attempts: timed out")
    assert len(receiver.requests) == 2


# ----- verify_signature


def signed(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    return (
        "sha256="
        + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    )


def test_verify_signature_accepts_a_fresh_signature():
    now = 1_718_000_000
    assert verify_signature(SECRET, str(now), b"{}", signed(b"{}", now), now=now + 10)
    assert verify_signature(SECRET.encode(), now, b"{}", signed(b"{}", now), now=now)


@pytest.mark.parametrize(
    ("secret", "body", "age_s"),
    [
        ("another-secret", b'{"id":1}', 0),  # wrong secret
        (SECRET, b'{"id":2}', 0),  # tampered body
        (SECRET, b'{"id":1}', 301),  # too old: a replay
        (SECRET, b'{"id":1}', -301),  # too far in the future
    ],
)
def test_verify_signature_rejects(secret, body, age_s):
    sent_at = 1_718_000_000
    header = signed(b'{"id":1}', sent_at)
    assert not verify_signature(secret, str(sent_at), body, header, now=sent_at + age_s)


@pytest.mark.parametrize("header", ["", "sha256=", "md5=abc", "sha256=" + "0" * 64])
def test_verify_signature_rejects_malformed_headers(header):
    assert not verify_signature(SECRET, "1718000000", b"{}", header, now=1_718_000_000)


def test_verify_signature_rejects_a_malformed_timestamp():
    header = signed(b"{}", 1_718_000_000)
    assert not verify_signature(SECRET, "yesterday", b"{}", header, now=1_718_000_000)


# ----- a real SMTP receiver
# smtpd is deprecated in 3.11 and gone in 3.12, and aiosmtpd is not a dependency, so this speaks
# just enough SMTP (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT) for smtplib, without TLS.


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: list[str]
    data: bytes
    login: str | None

    def message(self) -> email.message.EmailMessage:
        # SMTP carries CRLF line ends; a mailbox stores the local ones.
        data = self.data.replace(b"\r\n", b"\n")
        return email.message_from_bytes(data, policy=email.policy.default)


class _SMTPHandler(socketserver.StreamRequestHandler):
    server: _SMTPServer

    def reply(self, *lines: str) -> None:
        for line in lines:
            self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply("220 localhost test SMTP")
        sender, recipients, login = "", [], None
        while raw := self.rfile.readline():
            command = raw.decode().rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.reply("250-localhost", "250-8BITMIME", "250 AUTH PLAIN")
            elif verb == "AUTH":
                login = command.split(" ", 2)[2]
                self.reply("235 2.7.0 Authentication successful")
            elif verb == "MAIL":
                sender, recipients = command.partition(":")[2].strip("<> "), []
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command.partition(":")[2].strip("<> "))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                self.server.mails.append(Mail(sender, recipients, self.read_data(), login))
                self.reply("250 OK queued")
            elif verb == "QUIT":
                self.reply("221 Bye")
                return
            elif verb in ("RSET", "NOOP"):
                self.reply("250 OK")
            else:
                self.reply("502 Command not implemented")

    def read_data(self) -> bytes:
        lines = []
        while (line := self.rfile.readline()) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)
        return b"".join(lines)


class _SMTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    mails: list[Mail]


@pytest.fixture
def smtp_server() -> Iterator[_SMTPServer]:
    server = _SMTPServer(("127.0.0.1", 0), _SMTPHandler)
    server.mails = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def emailer(port: int, **options: Any) -> EmailNotifier:
    return EmailNotifier(
        "127.0.0.1",
        port,
        "bot@example.com",
        ["support@example.com", "lead@example.com"],
        starttls=False,
        timeout_s=5.0,
        **options,
    )


def test_email_reaches_the_team(smtp_server):
    delivery = emailer(smtp_server.server_address[1]).send(TICKET)

    assert delivery == Delivery(True, 1, "emailed 2 recipients")
    [mail] = smtp_server.mails
    assert mail.sender == "bot@example.com"
    assert mail.recipients == ["support@example.com", "lead@example.com"]
    assert mail.login is None
    message = mail.message()
    assert message["Subject"] == "Hand-off: Lumora Support session sess-abc"
    assert message["To"] == "support@example.com, lead@example.com"
    body = message.get_content()
    assert "Reason: The customer asked for a person." in body
    assert "ada@example.com" in body
    assert "Customer: My lamp won't pair with the café Wi-Fi." in body
    assert "Assistant: Have you tried holding the button for 5 seconds?" in body
    assert "Customer: Yes.\n    Still nothing. I want a human." in body


def test_email_logs_in_when_given_a_username(smtp_server):
    notifier = emailer(smtp_server.server_address[1], username="bot", password="pw-123")

    assert notifier.send(TICKET).delivered
    [mail] = smtp_server.mails
    assert mail.login is not None
    assert base64.b64decode(mail.login) == b"\0bot\0pw-123"  # AUTH PLAIN's credentials


def test_email_subject_stays_on_one_line(smtp_server):
    ticket = {**TICKET, "site": "Evil\r\nBcc: victim@example.com"}

    assert emailer(smtp_server.server_address[1]).send(ticket).delivered
    [mail] = smtp_server.mails
    assert mail.recipients == ["support@example.com", "lead@example.com"]
    assert mail.message()["Bcc"] is None


def test_email_connection_refused_is_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="chatbot.notify"):
        delivery = emailer(closed_port(), username="bot", password="pw-123").send(TICKET)

    assert delivery.delivered is False
    assert delivery.attempts == 1
    assert delivery.detail.startswith("SMTP server 127.0.0.1:")
    assert "refused" in delivery.detail.lower()
    assert not any("pw-123" in r.getMessage() for r in caplog.records)


# ----- make_notifier


def test_queue_notifier():
    notifier = make_notifier(HandoffNotifier.QUEUE, HandoffSettings())
    assert isinstance(notifier, QueueNotifier)
    assert notifier.name == "queue"
    assert notifier.send(TICKET) == Delivery(True, 0, "queued for staff")


def test_webhook_from_settings_delivers(receiver):
    settings = HandoffSettings(webhook=WebhookSettings(url=receiver.url, secret_env="HOOK_SECRET"))

    notifier = make_notifier("webhook", settings, environ={"HOOK_SECRET": SECRET})

    assert notifier.name == "webhook"
    assert notifier.send(TICKET) == Delivery(True, 1, "HTTP 200")
    [request] = receiver.requests
    assert verify_signature(
        SECRET,
        request.headers["x-chatbot-timestamp"],
        request.body,
        request.headers["x-chatbot-signature"],
    )


def test_webhook_needs_a_url():
    with pytest.raises(NotifierError, match=r"handoff\.webhook\.url"):
        make_notifier("webhook", HandoffSettings(), environ={"CHATBOT_WEBHOOK_SECRET": SECRET})


def test_webhook_url_must_be_http():
    settings = HandoffSettings(webhook=WebhookSettings(url="support.example.com/hook"))
    with pytest.raises(NotifierError, match=r"handoff\.webhook\.url"):
        make_notifier("webhook", settings, environ={"CHATBOT_WEBHOOK_SECRET": SECRET})


@pytest.mark.parametrize("secret", [None, "", "   ", "changeme", "changethis", "ChangeMe"])
def test_webhook_refuses_a_missing_or_placeholder_secret(secret):
    settings = HandoffSettings(webhook=WebhookSettings(url="https://hooks.example.com/x"))
    environ = {} if secret is None else {"CHATBOT_WEBHOOK_SECRET": secret}
    with pytest.raises(NotifierError, match="CHATBOT_WEBHOOK_SECRET") as caught:
        make_notifier("webhook", settings, environ=environ)
    assert SECRET not in str(caught.value)


def email_settings(**overrides: Any) -> HandoffSettings:
    values = {
        "host": "smtp.example.com",
        "sender": "bot@example.com",
        "recipients": ["support@example.com"],
        **overrides,
    }
    return HandoffSettings(email=EmailSettings(**values))


def test_email_from_settings_delivers(smtp_server):
    settings = email_settings(host="127.0.0.1", port=smtp_server.server_address[1], starttls=False)

    notifier = make_notifier(HandoffNotifier.EMAIL, settings, environ={})

    assert notifier.name == "email"
    assert notifier.send(TICKET) == Delivery(True, 1, "emailed 1 recipient")
    assert smtp_server.mails[0].recipients == ["support@example.com"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"host": ""}, "handoff.email.host"),
        ({"sender": ""}, "handoff.email.sender"),
        ({"recipients": []}, "handoff.email.recipients"),
        ({"recipients": ["  "]}, "handoff.email.recipients"),
    ],
)
def test_email_needs_each_setting(override, key):
    with pytest.raises(NotifierError, match=key.replace(".", r"\.")):
        make_notifier("email", email_settings(**override), environ={})


def test_email_login_needs_a_real_password():
    with pytest.raises(NotifierError, match="CHATBOT_SMTP_PASSWORD"):
        make_notifier("email", email_settings(), environ={"CHATBOT_SMTP_USERNAME": "bot"})
    with pytest.raises(NotifierError, match="CHATBOT_SMTP_PASSWORD"):
        make_notifier(
            "email",
            email_settings(),
            environ={"CHATBOT_SMTP_USERNAME": "bot", "CHATBOT_SMTP_PASSWORD": "changethis"},
        )
    with pytest.raises(NotifierError, match="CHATBOT_SMTP_USERNAME"):
        make_notifier("email", email_settings(), environ={"CHATBOT_SMTP_PASSWORD": "pw-123"})


def test_unknown_notifier_lists_the_names():
    with pytest.raises(NotifierError, match="queue, webhook, email"):
        make_notifier("pager", HandoffSettings(), environ={})
