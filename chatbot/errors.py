"""Failures a customer may meet, each with a short code and a polite sentence to show."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Characters that show nothing: format characters (zero-width spaces and joiners), controls,
# separators.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zs", "Zl", "Zp"})


def shows_nothing(text: str) -> bool:
    """Whether ``text`` is empty to the eye (only invisible characters): an empty message, a
    nameless token."""
    return all(unicodedata.category(c) in INVISIBLE_CATEGORIES for c in text)


@dataclass(frozen=True)
class ChatFailure:
    """A classified failure: ``code`` for programs, ``message`` for people."""

    code: str
    message: str
    detail: str = ""


class Refused(Exception):
    """A request refused for a reason the caller can act on: a short code for programs, a
    sentence for people, and, when waiting helps, how many seconds to wait."""

    def __init__(self, code: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class InputRejected(Refused, ValueError):
    """The customer's message cannot be sent as it is (empty, too long)."""


MESSAGES = {
    "rate_limited": "Our assistant is very busy right now. Please try again in a minute.",
    "content_filter": (
        "I can't help with that request as it's written. Could you rephrase it? "
        "I can also connect you with a person from our support team."
    ),
    "context_overflow": (
        "This conversation has grown too long for me to follow. "
        "Please start a new conversation and ask again."
    ),
    "timeout": "The assistant took too long to answer. Please try again.",
    "unavailable": "The assistant is unavailable at the moment. Please try again shortly.",
}

# When the model could not answer for a passing reason, the articles the search found are still
# listed, and the apology says what they are. After a refusal they are withdrawn.
SOURCES_STILL_SHOWN = frozenset({"rate_limited", "timeout", "unavailable"})
SOURCES_MAY_HELP = "In the meantime, the articles below may answer your question."


def classify(exc: BaseException) -> ChatFailure:
    """Map a model-call exception to a failure a customer can be shown."""
    import openai

    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        detail = f"{type(exc).__name__}: the endpoint refused the API key; check its environment variable"
    if isinstance(exc, openai.RateLimitError):
        code = "rate_limited"
    elif isinstance(exc, openai.APITimeoutError | TimeoutError):
        code = "timeout"
    elif isinstance(exc, openai.BadRequestError):
        text = str(exc).lower()
        error_code = str(getattr(exc, "code", "") or "").lower()
        if (
            "content_filter" in error_code
            or "content_filter" in text
            or "content management" in text
        ):
            code = "content_filter"
        elif "context_length" in error_code or _overflow(text):
            code = "context_overflow"
        else:
            code = "unavailable"
    elif isinstance(exc, openai.APIStatusError) and _overflow(str(exc).lower()):
        # llama.cpp's server answers a prompt over its window with a 500.
        code = "context_overflow"
    else:
        code = "unavailable"
    return ChatFailure(code=code, message=MESSAGES[code], detail=detail)


def _overflow(text: str) -> bool:
    """Whether an error message says the prompt did not fit the model's window (OpenAI, Azure,
    vLLM: "maximum context length"; llama.cpp: "exceed context window")."""
    return any(
        phrase in text for phrase in ("context length", "maximum context", "exceed context window")
    )
