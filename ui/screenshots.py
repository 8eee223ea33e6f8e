"""`make screenshots`: pictures of the widget and each staff page for the README, in docs/.

Starts the real app on a scratch data directory with the sample help center and the bundled
local model, drives Debian's Chromium (never a downloaded browser) through a customer's chat and
a hand-off, signs in as an admin and photographs every page.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]
ADMIN = "admin"
QUESTION = "How long do I hold the reset button on the hub?"
ANSWER_TIMEOUT_MS = 240_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, password: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env |= {
        "CHATBOT_DATA_DIR": str(data_dir),
        "CHATBOT_ADMIN_USERNAME": ADMIN,
        "CHATBOT_ADMIN_PASSWORD": password,
        "CHATBOT_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "chatbot.cli", "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(data_dir.parent / "serve.log").open("w"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app exited; see {data_dir.parent / 'serve.log'}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    process.terminate()
    raise SystemExit("the app did not become ready within 300 s")


def widget(page, url: str, out: Path) -> None:
    page.goto(f"{url}/widget/demo")
    page.get_by_test_id("bubble").click()
    page.get_by_test_id("input").fill(QUESTION)
    page.get_by_test_id("send").click()
    page.get_by_test_id("source-link").first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    page.wait_for_function(
        "() => !document.querySelector('support-chat-widget')"
        ".shadowRoot.querySelector('[data-testid=send]').disabled",
        timeout=ANSWER_TIMEOUT_MS,
    )
    page.screenshot(path=out / "widget-demo.png")
    page.get_by_test_id("thumbs-up").first.click()
    page.get_by_test_id("handoff").click()
    page.get_by_test_id("handoff-name").fill("Ana Example")
    page.get_by_test_id("handoff-email").fill("ana@example.com")
    page.get_by_test_id("handoff-send").click()
    page.locator("[data-role=system]").last.wait_for(timeout=30_000)


def sign_in(page, url: str, password: str) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("User name").fill(ADMIN)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/staff/**")


def playground(page, url: str, out: Path) -> None:
    page.goto(f"{url}/staff/playground/")
    page.locator("#playground-question textarea").fill(QUESTION)
    page.locator("#playground-ask").click()
    page.locator("#playground-chunks").get_by_text("reset-the-hub.md").first.wait_for(
        timeout=ANSWER_TIMEOUT_MS
    )
    page.wait_for_timeout(1500)
    page.screenshot(path=out / "staff-playground.png", full_page=True)


def staff_pages(page, url: str, out: Path) -> None:
    for path, name in (
        ("/staff/conversations", "staff-conversations"),
        ("/staff/tickets", "staff-handoffs"),
        ("/staff/documents", "staff-documents"),
        ("/staff/admin", "staff-admin"),
    ):
        page.goto(f"{url}{path}")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=out / f"{name}.png")
    page.goto(f"{url}/staff/conversations")
    page.locator("[data-session] a").first.click()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=out / "staff-conversation.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(REPO / "docs"), help="folder for the PNG files")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="chatbot-screenshots-") as scratch:
        process, url = start_server(Path(scratch) / "data", password)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                print("widget…", flush=True)
                widget(page, url, out)
                sign_in(page, url, password)
                print("playground…", flush=True)
                playground(page, url, out)
                print("staff pages…", flush=True)
                staff_pages(page, url, out)
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=30)
    for path in sorted(out.glob("*.png")):
        print(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
