"""errors.classify: every model failure becomes a short code and a sentence a customer can read."""

from __future__ import annotations

import httpx2
import openai
import pytest

from chatbot.errors import MESSAGES, ChatFailure, InputRejected, classify
from tests.fixtures.azure_stub import CONTENT_FILTER_MESSAGE

REQUEST = httpx2.Request("POST", "https://my-resource.openai.azure.com/openai/v1/chat/completions")


def _status_error(cls: type[openai.APIStatusError], status: int, error: dict):
    """The exception the openai client raises for an Azure error body (``body`` is its "error")."""
    response = httpx2.Response(status, request=REQUEST, json={"error": error})
    return cls(f"Error code: {status} - {error.get('message', '')}", response=response, body=error)


def test_every_code_has_a_polite_sentence():
    for code, message in MESSAGES.items():
        assert message.endswith((".", "?")), code
        assert "error" not in message.lower(), code
        assert "exception" not in message.lower(), code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ({"code": "content_filter", "message": CONTENT_FILTER_MESSAGE}, "content_filter"),
        # Older api-versions: no code, only the sentence about the content management policy.
        ({"message": CONTENT_FILTER_MESSAGE}, "content_filter"),
        (
            {"code": "context_length_exceeded", "message": "maximum context length is 8192"},
            "context_overflow",
        ),
        ({"message": "This model's maximum context length is 4096 tokens."}, "context_overflow"),
        ({"code": "invalid_value", "message": "temperature is out of range"}, "unavailable"),
    ],
)
def test_bad_requests(error, code):
    failure = classify(_status_error(openai.BadRequestError, 400, error))

    assert failure.code == code
    assert failure.message == MESSAGES[code]
    assert "BadRequestError" in failure.detail, "developers keep the cause"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (
            _status_error(openai.RateLimitError, 429, {"code": "429", "message": "slow down"}),
            "rate_limited",
        ),
        (openai.APITimeoutError(request=REQUEST), "timeout"),
        (TimeoutError("read timed out"), "timeout"),
        (openai.APIConnectionError(request=REQUEST), "unavailable"),
        (
            _status_error(
                openai.InternalServerError,
                500,
                {"message": "Requested tokens (4416) exceed context window of 4096"},
            ),
            "context_overflow",
        ),
        (_status_error(openai.InternalServerError, 500, {"message": "oops"}), "unavailable"),
        (_status_error(openai.AuthenticationError, 401, {"message": "bad key"}), "unavailable"),
        (RuntimeError("anything else"), "unavailable"),
    ],
    ids=[
        "429",
        "api-timeout",
        "timeout",
        "connection",
        "llama.cpp-overflow",
        "500",
        "401",
        "other",
    ],
)
def test_other_failures(exc, code):
    failure = classify(exc)

    assert failure == ChatFailure(code=code, message=MESSAGES[code], detail=failure.detail)
    assert type(exc).__name__ in failure.detail


def test_input_rejected_carries_its_code():
    rejected = InputRejected("empty_message", "Please type a question first.")

    assert isinstance(rejected, ValueError)
    assert rejected.code == "empty_message"
    assert str(rejected) == rejected.message == "Please type a question first."
