"""Shared fixtures: the test profile, an isolated data directory, the real embedder and local model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _name, _value in {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "ANONYMIZED_TELEMETRY": "False",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)

REPO = Path(__file__).resolve().parent.parent
SHARED_KB = REPO.parent / "shared" / "kb" / "zulip-help"
SAMPLE_HELP = REPO / "knowledge" / "sample_help"
TEST_PROFILE = "test"


@pytest.fixture(autouse=True)
def _no_chatbot_env(monkeypatch):
    """Tests see only the settings they set themselves."""
    for name in list(os.environ):
        if name.startswith("CHATBOT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def settings(tmp_path):
    from chatbot.settings import load_settings

    return load_settings(TEST_PROFILE, data_dir=tmp_path / "data")


@pytest.fixture(scope="session")
def embeddings():
    """The real MiniLM embedder from its PyPI package, loaded once per test run."""
    from knowledge.embeddings import make_embeddings

    return make_embeddings()


@pytest.fixture
def store(tmp_path, embeddings):
    from knowledge.store import KnowledgeStore

    return KnowledgeStore(tmp_path / "store", embeddings)


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory, embeddings):
    """A store holding the bundled sample help center (shared, read-only for tests)."""
    from knowledge.ingest import ingest_paths
    from knowledge.store import KnowledgeStore

    store = KnowledgeStore(tmp_path_factory.mktemp("sample") / "data", embeddings)
    report = ingest_paths(store, [SAMPLE_HELP])
    assert report.ok and report.added, report
    return store


@pytest.fixture(scope="session")
def llama_server():
    """The real llama.cpp server with the bundled SmolLM2 GGUF, started once per test run."""
    from chatbot.local_server import LocalLlamaServer
    from chatbot.settings import load_settings

    cfg = load_settings(TEST_PROFILE)
    server = LocalLlamaServer(cfg.llm.local, cfg.llm.context_window).start()
    yield server
    server.stop()


@pytest.fixture
def shared_kb() -> Path:
    """The Zulip help center beside the repository; absent on a fresh clone."""
    if not (SHARED_KB / "help").is_dir():
        pytest.skip("../shared/kb/zulip-help is not present")
    return SHARED_KB
