"""The embedded llama.cpp server as a process: what it is started with."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.local_server import LocalLlamaServer, model_server_environment
from chatbot.settings import load_settings
from tests.conftest import TEST_PROFILE

SECRETS = {
    "CHATBOT_ADMIN_PASSWORD": "admin-secret-1",
    "AZURE_OPENAI_API_KEY": "azure-secret-2",
    "MY_SMTP_PASSWORD": "smtp-secret-3",
    "GITHUB_TOKEN": "token-secret-4",
}


def test_the_model_server_environment_leaves_out_secrets_and_settings():
    env = model_server_environment({**SECRETS, "PATH": "/usr/bin", "HOME": "/home/me"})

    assert env == {"PATH": "/usr/bin", "HOME": "/home/me", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_the_running_model_server_does_not_see_the_apps_secrets(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    cfg = load_settings(TEST_PROFILE)
    server = LocalLlamaServer(cfg.llm.local, cfg.llm.context_window).start()
    try:
        environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().decode()
    finally:
        server.stop()

    names = {item.split("=", 1)[0] for item in environ.split("\0") if item}
    assert "PATH" in names
    assert not names & set(SECRETS)
    assert not any(value in environ for value in SECRETS.values())
