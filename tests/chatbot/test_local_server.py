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


@pytest.mark.slow
def test_a_model_server_that_dies_is_started_again_and_a_stopped_one_is_not(tmp_path):
    import os
    import signal
    import time

    import httpx

    cfg = load_settings(TEST_PROFILE)
    server = LocalLlamaServer(cfg.llm.local, cfg.llm.context_window).start(log_dir=tmp_path)
    try:
        server.supervise(every_s=0.2)
        first = server.process.pid
        os.kill(first, signal.SIGKILL)  # a crash, an out-of-memory kill
        deadline = time.monotonic() + 120
        while server.restarts == 0:
            assert time.monotonic() < deadline, "not started again"
            time.sleep(0.2)
        answer = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 5},
            timeout=60,
        )
        second = server.process.pid
    finally:
        server.stop()
    time.sleep(1)  # several supervision checks: a stopped server stays stopped

    assert second != first and answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"]
    assert server.process.poll() is not None and server.restarts == 1
