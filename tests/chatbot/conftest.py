"""Fixtures for the chatbot tests: the Azure HTTP stub and Azure settings pointing at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chatbot.settings import AzureSettings, LLMSettings
from tests.fixtures.azure_stub import AzureStub
from tests.fixtures.receiver import receiver  # noqa: F401 - a fixture for the webhook tests

TEST_KEY = "test-secret-key"


@pytest.fixture
def azure_stub() -> Iterator[AzureStub]:
    with AzureStub() as stub:
        yield stub


@pytest.fixture
def azure_key(monkeypatch) -> str:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", TEST_KEY)
    return TEST_KEY


@pytest.fixture
def azure_llm(azure_stub, azure_key) -> Callable[..., LLMSettings]:
    """``azure_llm(max_retries=2, azure={"route": "v1"})``: LLMSettings aimed at the stub.

    No retries and a short timeout unless a test asks otherwise, so failures surface fast.
    """

    def build(*, azure: dict[str, Any] | None = None, **llm: Any) -> LLMSettings:
        options: dict[str, Any] = {"max_retries": 0, "timeout_s": 10, **llm}
        return LLMSettings(
            provider="azure",
            azure=AzureSettings(endpoint=azure_stub.url, **(azure or {})),
            **options,
        )

    return build
