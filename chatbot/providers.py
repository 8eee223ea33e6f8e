"""Chat models by provider name; every one goes through langchain-openai."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from langchain_core.language_models import BaseChatModel

from chatbot.settings import PLACEHOLDER_SECRETS, AzureRoute, LLMSettings, Provider, SettingsError

PROVIDER_NAMES = [p.value for p in Provider]


def _secret_from_env(variable: str, *, required: bool, purpose: str) -> str | None:
    value = os.environ.get(variable, "").strip()
    if required and not value:
        raise SettingsError(f"{purpose} needs an API key in the environment variable {variable}.")
    if required and value.lower() in PLACEHOLDER_SECRETS:
        raise SettingsError(
            f"The environment variable {variable} holds a placeholder; set it to the real API key."
        )
    return value or None


def token_limit(provider: Provider, max_tokens: int) -> dict:
    """Call options that cap an answer at ``max_tokens`` on this provider.

    langchain-openai sends the cap as ``max_completion_tokens``, which llama.cpp's server (and
    some other OpenAI-compatible servers) ignore; for those the classic ``max_tokens`` field is
    sent as well.
    """
    options: dict = {"max_tokens": max_tokens}
    if provider in (Provider.LOCAL, Provider.OPENAI_COMPATIBLE):
        options["extra_body"] = {"max_tokens": max_tokens}
    return options


# The longest Retry-After a rate-limited request waits for before its retry. The customer waits
# with nothing on screen, and the openai client would honour up to two minutes per retry; past
# this the request is not retried and the customer hears at once to try again later.
MAX_RETRY_WAIT_S = 10.0


def _retry_after_s(headers) -> float | None:
    """The wait a response asks for (``retry-after-ms``, or ``retry-after`` in seconds or as a
    date), or None."""
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return float(ms) / 1000
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            return (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError, OverflowError):
        return None


def _no_long_waits(response) -> None:
    wait = _retry_after_s(response.headers)
    if wait is not None and wait > MAX_RETRY_WAIT_S:
        # Honoured by the openai client: this response is not retried.
        response.headers["x-should-retry"] = "false"


async def _no_long_waits_async(response) -> None:
    _no_long_waits(response)


class _TimeoutNotRetried:
    """A transport whose timeout ends the call instead of being retried: the customer has waited
    ``llm.timeout_s`` with nothing on screen, and a stuck or overloaded model would keep them
    waiting as long again for each retry. Rate limits, server errors and dropped connections
    are still retried."""

    def __init__(self, inner):
        self.inner = inner

    def handle_request(self, request):
        try:
            return self.inner.handle_request(request)
        except Exception as exc:
            if (timeout := _not_retried_timeout(exc, request)) is None:
                raise
            raise timeout from exc

    async def handle_async_request(self, request):
        try:
            return await self.inner.handle_async_request(request)
        except Exception as exc:
            if (timeout := _not_retried_timeout(exc, request)) is None:
                raise
            raise timeout from exc

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _not_retried_timeout(exc: Exception, request) -> Exception | None:
    """For a timeout, the openai client's own timeout error, which it does not retry (it
    retries its HTTP library's timeouts); None for any other error."""
    import openai

    if any(cls.__name__ == "TimeoutException" for cls in type(exc).__mro__):
        return openai.APITimeoutError(request=request)
    return None


def _timeouts_not_retried(client):
    """``client`` with each of its transports (the direct one and those of proxies from the
    environment) wrapped in ``_TimeoutNotRetried``."""
    client._transport = _TimeoutNotRetried(client._transport)
    client._mounts = {
        pattern: None if transport is None else _TimeoutNotRetried(transport)
        for pattern, transport in client._mounts.items()
    }
    return client


def _http_clients() -> dict:
    """The openai client's own HTTP clients (its timeouts, connection limits and redirects, and
    proxies from the environment), with a hook that stops retries after a long Retry-After, and
    timeouts that are not retried."""
    import openai

    return {
        "http_client": _timeouts_not_retried(
            openai.DefaultHttpxClient(event_hooks={"response": [_no_long_waits]})
        ),
        "http_async_client": _timeouts_not_retried(
            openai.DefaultAsyncHttpxClient(event_hooks={"response": [_no_long_waits_async]})
        ),
    }


def make_chat_model(llm: LLMSettings, *, local_base_url: str | None = None) -> BaseChatModel:
    """Build the chat model for ``llm.provider``; the local provider needs the running server's URL."""
    common = {
        "temperature": llm.temperature,
        **token_limit(llm.provider, llm.max_output_tokens),
        "timeout": llm.timeout_s,
        "max_retries": llm.max_retries,
        "streaming": True,
        "stream_usage": True,
        **_http_clients(),
    }
    match llm.provider:
        case Provider.LOCAL:
            from langchain_openai import ChatOpenAI

            from chatbot.local_server import LOCAL_MODEL_ALIAS

            if not local_base_url:
                raise SettingsError("The local provider needs a started llama.cpp server.")
            return ChatOpenAI(
                model=LOCAL_MODEL_ALIAS, base_url=local_base_url, api_key="not-needed", **common
            )
        case Provider.AZURE:
            return _make_azure(llm, common)
        case Provider.OPENAI_COMPATIBLE:
            from langchain_openai import ChatOpenAI

            cfg = llm.openai_compatible
            if not cfg.base_url or not cfg.model:
                raise SettingsError(
                    "llm.openai_compatible.base_url and llm.openai_compatible.model must be set "
                    "for the openai_compatible provider."
                )
            key = _compatible_key(llm)
            return ChatOpenAI(
                model=cfg.model, base_url=cfg.base_url, api_key=key or "not-needed", **common
            )
    raise SettingsError(f"llm.provider must be one of {', '.join(PROVIDER_NAMES)}")


def _make_azure(llm: LLMSettings, common: dict) -> BaseChatModel:
    cfg = llm.azure
    if not cfg.endpoint.startswith("https://") and not cfg.endpoint.startswith("http://127."):
        raise SettingsError(
            "llm.azure.endpoint must be your Azure endpoint, e.g. "
            "https://<resource>.openai.azure.com (set CHATBOT_LLM__AZURE__ENDPOINT)."
        )
    key = _azure_key(llm)
    if cfg.route == AzureRoute.DEPLOYMENT:
        from langchain_openai import AzureChatOpenAI

        return AzureChatOpenAI(
            azure_endpoint=cfg.endpoint,
            azure_deployment=cfg.deployment,
            api_version=cfg.api_version,
            api_key=key,
            **common,
        )
    from langchain_openai import ChatOpenAI

    base_url = _azure_v1_base_url(llm)
    # Azure's v1 route takes the key as a Bearer token, which ChatOpenAI keeps in a SecretStr.
    # An api-key entry in default_headers would be a plain field and show in repr(model).
    return ChatOpenAI(model=cfg.model, base_url=base_url, api_key=key, **common)


@dataclass(frozen=True)
class ModelProbe:
    """A cheap request that shows whether the model's server answers and accepts the key: its
    list of models (``GET …/models``), which every provider serves and which costs no tokens."""

    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)


def model_probe(llm: LLMSettings, *, local_base_url: str | None = None) -> ModelProbe | None:
    """The readiness probe for ``llm.provider``, sent with the same key as the chat requests."""
    match llm.provider:
        case Provider.LOCAL:
            return ModelProbe(f"{local_base_url}/models") if local_base_url else None
        case Provider.OPENAI_COMPATIBLE:
            key = _compatible_key(llm)
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return ModelProbe(llm.openai_compatible.base_url.rstrip("/") + "/models", headers)
        case Provider.AZURE:
            cfg, key = llm.azure, _azure_key(llm)
            if cfg.route == AzureRoute.DEPLOYMENT:
                endpoint = cfg.endpoint.rstrip("/")
                return ModelProbe(
                    f"{endpoint}/openai/models?api-version={cfg.api_version}", {"api-key": key}
                )
            return ModelProbe(
                f"{_azure_v1_base_url(llm)}/models", {"Authorization": f"Bearer {key}"}
            )
    return None


def _compatible_key(llm: LLMSettings) -> str | None:
    variable = llm.openai_compatible.api_key_env
    return _secret_from_env(variable, required=False, purpose="openai_compatible")


def _azure_key(llm: LLMSettings) -> str | None:
    return _secret_from_env(llm.azure.api_key_env, required=True, purpose="The azure provider")


def _azure_v1_base_url(llm: LLMSettings) -> str:
    return llm.azure.endpoint.rstrip("/") + "/openai/v1"
