"""Secrets stay out of logs and stored details, even when an error message repeats one."""

from __future__ import annotations

import io
import logging

from chatbot.conversations import SQLiteConversationStore
from chatbot.handoff import HandoffDesk
from chatbot.notify import Delivery
from chatbot.redact import RedactSecrets, redact, redact_logs
from chatbot.settings import HandoffSettings, Settings, WebhookSettings
from tests.chatbot.test_handoff import conversation, delivered

ENVIRON = {
    "AZURE_OPENAI_API_KEY": "az-key-0123456789",
    "MY_GATEWAY": "gateway-pass-98765",  # named only in settings
    "GITHUB_TOKEN": "ghp_abcdefghijkl",
    "CHATBOT_WEBHOOK_SECRET": "hook-secret-abcdef",
    "SMTP_PASSWD": "az-key-0123456789-and-more",  # holds another secret: replaced whole
    "SHORT_KEY": "abc",  # too short to be a secret, and would garble text
    "PATH": "/usr/local/bin:/usr/bin",
    "SMTP_PASS": "hunter2",  # short, but named in settings
    "CHATBOT_HANDOFF__EMAIL__PASSWORD_ENV": "SMTP_PASS",  # a variable's name, no secret
}


def test_secret_values_are_replaced_and_other_text_kept():
    text = (
        "401 for az-key-0123456789 via gateway-pass-98765 (token ghp_abcdefghijkl, "
        "login az-key-0123456789-and-more, hook hook-secret-abcdef) abc /usr/local/bin:/usr/bin"
    )

    clean = redact(text, ["MY_GATEWAY"], ENVIRON)

    assert clean == (
        "401 for [redacted] via [redacted] (token [redacted], login [redacted], hook [redacted])"
        " abc /usr/local/bin:/usr/bin"
    )
    assert redact(text, [], ENVIRON).count("gateway-pass-98765") == 1, "named only in settings"
    assert redact("set SMTP_PASS (now hunter2)", ["SMTP_PASS"], ENVIRON) == (
        "set SMTP_PASS (now [redacted])"
    )


def test_settings_name_their_secret_variables():
    settings = Settings(llm={"openai_compatible": {"api_key_env": "MY_GATEWAY"}})

    assert "MY_GATEWAY" in settings.secret_env_names()
    assert "AZURE_OPENAI_API_KEY" in settings.secret_env_names()
    assert "CHATBOT_ADMIN_PASSWORD" in settings.secret_env_names()


def test_log_records_and_tracebacks_lose_their_secrets(monkeypatch):
    monkeypatch.setenv("MY_GATEWAY", "gateway-pass-98765")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactSecrets(["MY_GATEWAY"]))
    logger = logging.getLogger("tests.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("model call failed: %s", "Bad request for key gateway-pass-98765")
        try:
            raise RuntimeError("refused gateway-pass-98765")
        except RuntimeError:
            logger.exception("summary failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    text = out.getvalue()
    assert "gateway-pass-98765" not in text
    assert "model call failed: Bad request for key [redacted]" in text
    assert "RuntimeError: refused [redacted]" in text


def test_every_configured_handler_gets_the_filter_once():
    handler = logging.StreamHandler(io.StringIO())
    logger = logging.getLogger("tests.redact.server")
    logger.addHandler(handler)
    try:
        redact_logs(["MY_GATEWAY"])
        redact_logs(["MY_GATEWAY"])
        assert [type(f) for f in handler.filters] == [RedactSecrets]
    finally:
        logger.removeHandler(handler)


class EchoingNotifier:
    name = "webhook"

    def send(self, ticket: dict) -> Delivery:
        return Delivery(
            False, 1, f"HTTP 401: bad signature key {ENVIRON['CHATBOT_WEBHOOK_SECRET']}"
        )


def test_a_delivery_detail_shown_to_staff_loses_the_secret(tmp_path):
    conversations = SQLiteConversationStore(tmp_path / "app.sqlite3")
    settings = HandoffSettings(notifier="webhook", webhook=WebhookSettings(url="http://hook"))
    desk = HandoffDesk(
        conversations,
        settings,
        environ=ENVIRON,
        notifier_factory=lambda *args, **kwargs: EchoingNotifier(),
    )

    ticket, _, _ = desk.open(conversation(conversations), "customer_asked")
    outcome = delivered(conversations, ticket.id)
    desk.close()

    assert outcome == "webhook not sent: HTTP 401: bad signature key [redacted]"
