"""Secrets kept out of logs and stored error details.

Keys and passwords come only from environment variables. An error message from a model server,
a gateway or a mail server may still echo one back ("Bad request for key ..."), and such
messages are logged and shown to staff. So before text is written anywhere, the value of every
environment variable that holds a secret is replaced by ``[redacted]``: the variables that
settings name for keys and passwords, and any whose name says it holds one (…KEY, …TOKEN,
…SECRET, …PASSWORD).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"
SECRET_NAME_RE = re.compile(r"KEY|TOKEN|SECRET|PASSW(?:OR)?D|CREDENTIAL", re.IGNORECASE)
# Shorter values of variables only named like a secret ("1", "true", "dev") are not secrets and
# would garble ordinary text.
MIN_SECRET_CHARS = 8


def secret_values(names: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the environment variables ``names`` and of those named like a secret,
    longest first (so that a secret holding another is replaced whole)."""
    environ = os.environ if environ is None else environ
    wanted = set(names)
    values = set()
    for name, value in environ.items():
        value = value.strip()
        if not value:
            continue
        if name in wanted:
            values.add(value)  # named by settings: a secret however short
        elif (
            SECRET_NAME_RE.search(name)
            and not name.endswith("_ENV")  # CHATBOT_..._PASSWORD_ENV holds a variable's name
            and len(value) >= MIN_SECRET_CHARS
        ):
            values.add(value)
    return sorted(values, key=len, reverse=True)


def redact(text: str, names: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret value (see ``secret_values``) replaced by ``[redacted]``."""
    for value in secret_values(names, environ):
        if value in text:
            text = text.replace(value, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """A handler filter that takes secrets out of each record's message and traceback."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        super().__init__()
        self.names = frozenset(names)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.names)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.names)
        return True


def redact_logs(names: Iterable[str] = ()) -> None:
    """Filter every handler of every logger configured so far (call again after a library
    sets up its own, as the web server does)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets(names))
