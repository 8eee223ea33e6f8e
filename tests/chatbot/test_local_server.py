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


APP_THAT_STARTS_A_MODEL_SERVER = """
import sys, time
from chatbot.local_server import LocalLlamaServer
from chatbot.settings import load_settings
cfg = load_settings(sys.argv[1])
server = LocalLlamaServer(cfg.llm.local, cfg.llm.context_window).start()
print(server.process.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Whether a process runs (a zombie that nobody has reaped yet does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_the_model_server_ends_when_the_app_is_killed_outright():
    import os
    import signal
    import subprocess
    import sys
    import time

    app = subprocess.Popen(
        [sys.executable, "-c", APP_THAT_STARTS_A_MODEL_SERVER, TEST_PROFILE],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    try:
        child = int(app.stdout.readline())
        assert _running(child)
        os.kill(app.pid, signal.SIGKILL)  # no clean-up code runs
        app.wait()
        deadline = time.monotonic() + 30
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        still_running = _running(child)
    finally:
        app.kill()
    if still_running:
        os.kill(child, signal.SIGKILL)
    assert not still_running, "the model server outlived the app"


class _Child:
    """Stands in for the model server's process: a `sleep` that never answers HTTP."""

    def __init__(self, monkeypatch, failures: int = 0):
        import subprocess

        self.started: list[subprocess.Popen] = []
        self.failures = failures
        real = subprocess.Popen

        def popen(command, **kwargs):
            if self.failures:
                self.failures -= 1
                raise OSError(12, "Cannot allocate memory")
            self.started.append(real(["sleep", "600"], **kwargs))
            return self.started[-1]

        monkeypatch.setattr("chatbot.local_server.subprocess.Popen", popen)


def _until(condition, timeout_s: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_failed_restart_is_tried_again(monkeypatch):
    cfg = load_settings(TEST_PROFILE)
    child = _Child(monkeypatch)
    monkeypatch.setattr(LocalLlamaServer, "_wait_ready", lambda self: None)
    server = LocalLlamaServer(cfg.llm.local, cfg.llm.context_window).start()
    try:
        server.supervise(every_s=0.05)
        child.failures = 1  # the first restart cannot fork
        server.process.kill()
        _until(lambda: server.restarts == 1)
    finally:
        server.stop()

    assert len(child.started) == 2 and child.failures == 0
    assert all(p.poll() is not None for p in child.started), "stopped for good"


def test_stopping_during_a_restart_does_not_wait_for_the_start_up_timeout(monkeypatch):
    import time

    cfg = load_settings(TEST_PROFILE)
    local = cfg.llm.local.model_copy(update={"startup_timeout_s": 600})
    child = _Child(monkeypatch)
    ready = LocalLlamaServer._wait_ready
    monkeypatch.setattr(LocalLlamaServer, "_wait_ready", lambda self: None)
    server = LocalLlamaServer(local, cfg.llm.context_window).start()
    monkeypatch.setattr(LocalLlamaServer, "_wait_ready", ready)  # the restart never gets ready
    server.supervise(every_s=0.05)
    server.process.kill()
    _until(lambda: len(child.started) == 2)

    started = time.monotonic()
    server.stop()
    took = time.monotonic() - started

    assert took < 60, f"stop() waited {took:.0f} s for a restart (its timeout is 600 s)"
    assert all(p.poll() is not None for p in child.started)
    assert server.restarts == 0
