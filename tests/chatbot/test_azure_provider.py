"""The Azure provider on the wire: requests checked and answers replayed by a real HTTP stub."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from chatbot.errors import MESSAGES, classify
from chatbot.providers import MAX_RETRY_WAIT_S, make_chat_model
from chatbot.settings import AzureSettings, LLMSettings, SettingsError, load_settings
from tests.fixtures.azure_stub import (
    completion,
    content_filter,
    context_length_exceeded,
    json_completion,
    rate_limited,
    slow,
    sse_completion,
    stalled_stream,
)

ANSWER = "Hold the Brew button for seven seconds to descale the kettle."
MESSAGES_IN = [
    SystemMessage("You answer questions about the Lumora kettle."),
    HumanMessage("How do I descale it?"),
]
EXPECTED_MESSAGES = [
    {"role": "system", "content": "You answer questions about the Lumora kettle."},
    {"role": "user", "content": "How do I descale it?"},
]


def _failure_of(model, messages=MESSAGES_IN):
    with pytest.raises(openai.APIError) as caught:
        model.invoke(messages)
    return classify(caught.value)


# ----- deployment route


def test_deployment_route_sends_the_azure_request(azure_stub, azure_llm, azure_key):
    llm = azure_llm(
        temperature=0.3,
        max_output_tokens=200,
        azure={"deployment": "support-phi", "api_version": "2024-10-21"},
    )
    azure_stub.script(completion(ANSWER))

    reply = make_chat_model(llm).invoke(MESSAGES_IN)

    assert reply.content == ANSWER
    (request,) = azure_stub.requests
    assert request.method == "POST"
    assert request.path == "/openai/deployments/support-phi/chat/completions"
    assert request.query == {"api-version": ["2024-10-21"]}
    assert request.headers["api-key"] == azure_key
    assert "authorization" not in request.headers
    body = request.body
    assert body["messages"] == EXPECTED_MESSAGES
    # langchain-openai renames max_tokens to max_completion_tokens for every OpenAI-style call.
    assert body["max_completion_tokens"] == 200
    assert "max_tokens" not in body
    assert body["temperature"] == 0.3
    # make_chat_model always streams (the service shows tokens as they come), invoke included.
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_deployment_route_streams_and_reassembles_the_text(azure_stub, azure_llm):
    azure_stub.script(sse_completion(ANSWER, usage=(120, 13)))

    chunks = list(make_chat_model(azure_llm()).stream(MESSAGES_IN))

    texts = [c.content for c in chunks if c.content]
    assert len(texts) > 1, "the stub sends one chunk per word"
    assert "".join(texts) == ANSWER
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage and usage[-1]["input_tokens"] == 120 and usage[-1]["output_tokens"] == 13
    assert [c.response_metadata.get("finish_reason") for c in chunks].count("stop") == 1
    (request,) = azure_stub.requests
    assert request.body["stream"] is True


def test_invoke_reports_usage(azure_stub, azure_llm):
    azure_stub.script(completion(ANSWER, usage=(300, 12)))

    reply = make_chat_model(azure_llm()).invoke(MESSAGES_IN)

    assert reply.usage_metadata["input_tokens"] == 300
    assert reply.usage_metadata["output_tokens"] == 12


def test_a_plain_json_completion_is_understood(azure_stub, azure_llm):
    azure_stub.script(json_completion(ANSWER, usage=(50, 9)))
    model = make_chat_model(azure_llm()).model_copy(update={"streaming": False})

    reply = model.invoke(MESSAGES_IN)

    assert reply.content == ANSWER
    assert reply.usage_metadata["input_tokens"] == 50
    assert azure_stub.requests[0].body["stream"] is False


# ----- v1 route


def test_v1_route_sends_the_model_name(azure_stub, azure_llm, azure_key):
    llm = azure_llm(azure={"route": "v1", "model": "Phi-4-mini-instruct-v1", "deployment": "x"})
    azure_stub.script(completion(ANSWER))

    reply = make_chat_model(llm).invoke(MESSAGES_IN)

    assert reply.content == ANSWER
    (request,) = azure_stub.requests
    assert request.path == "/openai/v1/chat/completions"
    assert request.query == {}
    assert request.body["model"] == "Phi-4-mini-instruct-v1"
    assert request.body["messages"] == EXPECTED_MESSAGES
    # The v1 route takes the key as a Bearer token (an api-key header would leak into repr).
    assert request.headers["authorization"] == f"Bearer {azure_key}"


def test_v1_route_streams(azure_stub, azure_llm):
    azure_stub.script(sse_completion(ANSWER))

    chunks = list(make_chat_model(azure_llm(azure={"route": "v1"})).stream(MESSAGES_IN))

    assert "".join(c.content for c in chunks) == ANSWER


# ----- rate limits and retries


def test_a_429_is_retried_after_retry_after(azure_stub, azure_llm):
    azure_stub.script(rate_limited(retry_after=1), completion(ANSWER))

    reply = make_chat_model(azure_llm(max_retries=2)).invoke(MESSAGES_IN)

    assert reply.content == ANSWER
    first, second = azure_stub.requests
    assert second.received_at - first.received_at >= 0.9
    assert second.body == first.body
    assert second.headers["x-stainless-retry-count"] == "1"


def test_a_429_surfaces_without_retries(azure_stub, azure_llm):
    azure_stub.script(rate_limited())

    failure = _failure_of(make_chat_model(azure_llm(max_retries=0)))

    assert failure.code == "rate_limited"
    assert failure.message == MESSAGES["rate_limited"]
    assert len(azure_stub.requests) == 1


def test_a_429_asking_for_a_long_wait_is_not_retried(azure_stub, azure_llm):
    # A customer would wait 3 x 30 s with nothing on screen; they hear at once instead.
    azure_stub.script(rate_limited(retry_after=30), completion(ANSWER))

    started = time.monotonic()
    failure = _failure_of(make_chat_model(azure_llm(max_retries=3)))

    assert failure.code == "rate_limited"
    assert len(azure_stub.requests) == 1
    assert time.monotonic() - started < MAX_RETRY_WAIT_S


def test_retries_are_bounded(azure_stub, azure_llm):
    azure_stub.script(rate_limited(retry_after=1))

    failure = _failure_of(make_chat_model(azure_llm(max_retries=2)))

    assert failure.code == "rate_limited"
    assert len(azure_stub.requests) == 3


# ----- failures a customer may meet


@pytest.mark.parametrize(
    ("reply", "code"),
    [(content_filter(), "content_filter"), (context_length_exceeded(), "context_overflow")],
    ids=["content_filter", "context_length_exceeded"],
)
def test_bad_requests_are_classified(azure_stub, azure_llm, reply, code):
    azure_stub.script(reply)

    failure = _failure_of(make_chat_model(azure_llm(max_retries=2)))

    assert failure.code == code
    assert failure.message == MESSAGES[code]
    assert len(azure_stub.requests) == 1, "a 400 is not retried"


def test_a_slow_answer_times_out(azure_stub, azure_llm):
    azure_stub.script(slow(5))
    model = make_chat_model(azure_llm(timeout_s=0.5))

    started = time.monotonic()
    failure = _failure_of(model)

    assert failure.code == "timeout"
    assert time.monotonic() - started < 4


def test_a_timeout_is_not_retried(azure_stub, azure_llm):
    # A stuck model would keep the customer waiting timeout_s again for each retry.
    azure_stub.script(slow(3), slow(3), slow(3))
    model = make_chat_model(azure_llm(timeout_s=0.5, max_retries=2))

    started = time.monotonic()
    with pytest.raises(openai.APIError) as caught:
        list(model.stream(MESSAGES_IN))
    waited = time.monotonic() - started

    assert classify(caught.value).code == "timeout"
    assert len(azure_stub.requests) == 1
    assert waited < 1.4, f"waited {waited:.1f} s"


def test_a_timeout_is_not_retried_by_the_async_client_either(azure_stub, azure_llm):
    azure_stub.script(slow(3), slow(3), slow(3))
    model = make_chat_model(azure_llm(timeout_s=0.5, max_retries=2))

    with pytest.raises(openai.APIError) as caught:
        asyncio.run(model.ainvoke(MESSAGES_IN))

    assert classify(caught.value).code == "timeout"
    assert len(azure_stub.requests) == 1


def test_a_stream_that_stalls_times_out(azure_stub, azure_llm):
    azure_stub.script(stalled_stream(5))
    model = make_chat_model(azure_llm(timeout_s=0.5))

    with pytest.raises(openai.APIError) as caught:
        list(model.stream(MESSAGES_IN))

    assert classify(caught.value).code == "timeout"


def test_connection_refused_is_unavailable(azure_key):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe is closed.
    llm = LLMSettings(
        provider="azure",
        max_retries=0,
        timeout_s=5,
        azure=AzureSettings(endpoint=f"http://127.0.0.1:{port}"),
    )

    failure = _failure_of(make_chat_model(llm))

    assert failure.code == "unavailable"
    assert failure.message == MESSAGES["unavailable"]


# ----- secrets and start-up errors


@pytest.mark.parametrize("route", ["deployment", "v1"])
def test_the_key_is_never_logged_nor_shown(azure_stub, azure_llm, azure_key, caplog, route):
    caplog.set_level(logging.DEBUG)
    azure_stub.script(rate_limited(), completion(ANSWER), content_filter())
    model = make_chat_model(azure_llm(max_retries=1, azure={"route": route}))

    model.invoke(MESSAGES_IN)
    _failure_of(model)

    assert len(azure_stub.requests) == 3
    assert caplog.records, "DEBUG logging was captured"
    assert azure_key not in caplog.text
    assert all(azure_key not in str(r.__dict__) for r in caplog.records)
    assert azure_key not in repr(model)
    assert azure_key not in str(model.model_dump())


def test_the_key_is_not_in_the_settings(azure_key, monkeypatch):
    monkeypatch.setenv("CHATBOT_LLM__AZURE__ENDPOINT", "https://my-resource.openai.azure.com")
    settings = load_settings("azure")

    assert settings.llm.provider == "azure"
    assert azure_key not in repr(settings)
    assert azure_key not in settings.model_dump_json()


def test_a_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("MY_AZURE_KEY", raising=False)
    llm = LLMSettings(
        provider="azure",
        azure=AzureSettings(
            endpoint="https://my-resource.openai.azure.com", api_key_env="MY_AZURE_KEY"
        ),
    )

    with pytest.raises(SettingsError, match="MY_AZURE_KEY"):
        make_chat_model(llm)


def test_the_default_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    llm = LLMSettings(
        provider="azure", azure=AzureSettings(endpoint="https://my-resource.openai.azure.com")
    )

    with pytest.raises(SettingsError, match="AZURE_OPENAI_API_KEY"):
        make_chat_model(llm)


@pytest.mark.parametrize("placeholder", ["changethis", "  ", "your-key-here"])
def test_a_placeholder_key_is_refused(monkeypatch, placeholder):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", placeholder)
    llm = LLMSettings(
        provider="azure", azure=AzureSettings(endpoint="https://my-resource.openai.azure.com")
    )

    with pytest.raises(SettingsError, match="AZURE_OPENAI_API_KEY"):
        make_chat_model(llm)


@pytest.mark.parametrize(
    "endpoint",
    ["", "my-resource.openai.azure.com", "http://my-resource.openai.azure.com", "ftp://x"],
)
def test_a_bad_endpoint_is_refused(azure_key, endpoint):
    llm = LLMSettings(provider="azure", azure=AzureSettings(endpoint=endpoint))

    with pytest.raises(SettingsError, match="llm.azure.endpoint"):
        make_chat_model(llm)
