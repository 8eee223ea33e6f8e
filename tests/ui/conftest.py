"""Fixtures for the page tests: the real `chatbot serve` in a subprocess and a headless Chromium."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# No network in the test environment: keep Chromium from phoning home or updating itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# First start ingests the sample help center and loads the embedder and SmolLM2.
STARTUP_TIMEOUT_S = 180
CHAT_PAGE_LINE = "Chat page: http://"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Proc:
    """A process named by pid and start time, so a recycled pid is never mistaken for it."""

    pid: int
    started: str
    command: str

    @classmethod
    def read(cls, pid: int) -> Proc | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return None
        # Field 22 (starttime); the command name in field 2 may itself hold spaces or parens.
        return cls(pid, stat.rsplit(")", 1)[1].split()[19], command.strip())

    def running(self) -> bool:
        now = Proc.read(self.pid)
        if now is None or now.started != self.started:
            return False
        state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")

    def children(self) -> list[Proc]:
        pids = set()
        for task in Path(f"/proc/{self.pid}/task").glob("*/children"):
            try:
                pids.update(int(p) for p in task.read_text().split())
            except OSError:
                continue
        return [proc for pid in sorted(pids) if (proc := Proc.read(pid))]

    def descendants(self) -> list[Proc]:
        found = []
        for child in self.children():
            found += [child, *child.descendants()]
        return found

    def end(self, grace_s: float = 10) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; only while it is still this very process."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
            if not self.running():
                return
            os.kill(self.pid, sig)
            deadline = time.monotonic() + wait_s
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.1)


@dataclass
class ServedApp:
    """A running `chatbot serve`: its URL, its stdout lines and its stderr log."""

    url: str
    process: subprocess.Popen[str]
    log_path: Path
    stdout: list[str] = field(default_factory=list)
    helpers: list[Proc] = field(default_factory=list)
    reader: threading.Thread | None = None
    data_dir: Path | None = None

    def output(self, lines: int = 60) -> str:
        log = (
            self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        )
        return "\n".join(["--- stdout", *self.stdout[-lines:], "--- stderr", *log[-lines:]])

    def stop(self, grace_s: float = 20) -> list[Proc]:
        """SIGTERM the app as a process manager would, then kill; return helpers it left running.

        The llama.cpp server runs in a session of its own, so signalling the app's process
        group does not reach it: it is looked up in /proc while the app is still alive.
        """
        app = Proc.read(self.process.pid)
        self.helpers = app.descendants() if app else self.helpers
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Orphans are reparented to init, which reaps them soon after they exit.
        deadline = time.monotonic() + 5
        while any(p.running() for p in self.helpers) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = [p for p in self.helpers if p.running()]
        for proc in orphans:
            proc.end()
        if self.reader is not None:
            self.reader.join(timeout=5)
        return orphans


def start_app(
    data_dir: Path, *, sample_knowledge: bool = True, env: dict[str, str] | None = None
) -> ServedApp:
    """`python -m chatbot.cli --profile test serve` on a free port, returned once the page loads.

    ``env`` adds settings as CHATBOT_* variables.
    """
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    overrides = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env |= {
        "CHATBOT_DATA_DIR": str(data_dir),
        "CHATBOT_RETRIEVAL__SAMPLE_KNOWLEDGE": "true" if sample_knowledge else "false",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }
    log_path = data_dir.parent / f"serve-{port}.log"
    command = [sys.executable, "-m", "chatbot.cli", "--profile", "test", "serve"]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
    app = ServedApp(f"http://127.0.0.1:{port}", process, log_path, data_dir=data_dir)
    app.reader = threading.Thread(target=_collect, args=(process, app.stdout), daemon=True)
    app.reader.start()
    try:
        _wait_until_served(app)
    except BaseException:
        app.stop(grace_s=5)
        raise
    app.helpers = proc.descendants() if (proc := Proc.read(process.pid)) else []
    return app


def _collect(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))


def _wait_until_served(app: ServedApp) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            pytest.fail(
                f"`chatbot serve` exited with status {app.process.returncode}\n{app.output()}"
            )
        if any(line.startswith(CHAT_PAGE_LINE) for line in app.stdout):
            try:
                if httpx.get(app.url + "/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    pytest.fail(
        f"`chatbot serve` did not serve {app.url} within {STARTUP_TIMEOUT_S} s\n{app.output()}"
    )


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory) -> Iterator[ServedApp]:
    """The real app with the sample help center ingested, shared by the tests of a module."""
    app = start_app(tmp_path_factory.mktemp("serve") / "data", sample_knowledge=True)
    yield app
    app.stop()


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def start_chat_server(tmp_path) -> Iterator[Callable[..., ServedApp]]:
    """Start a private app for one test (``start_chat_server(sample_knowledge=False)``)."""
    started: list[ServedApp] = []

    def start(**options) -> ServedApp:
        app = start_app(tmp_path / f"data{len(started)}", **options)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()
