"""The served app trusts X-Forwarded-For only when told it runs behind a proxy, and then only
the address its proxy added."""

from __future__ import annotations

import httpx
import pytest

from tests.ui.conftest import start_app

pytestmark = pytest.mark.slow

SITE = {"X-Site-Key": "demo-site-key"}


def new_sessions(url: str, forwarded_for: list[str]) -> list[int]:
    return [
        httpx.post(
            f"{url}/api/v1/sessions",
            headers={**SITE, "X-Forwarded-For": value},
            json={},
            timeout=30,
        ).status_code
        for value in forwarded_for
    ]


@pytest.mark.parametrize("behind_proxy", [False, True])
def test_a_forwarded_for_header_moves_the_rate_limit_only_behind_a_proxy(tmp_path, behind_proxy):
    app = start_app(
        tmp_path / "data",
        sample_knowledge=False,
        env={
            "CHATBOT_WIDGET__MAX_SESSIONS_PER_MINUTE": "2",
            "CHATBOT_RATE_LIMITS__TRUST_FORWARDED_FOR": str(behind_proxy).lower(),
        },
    )
    try:
        # A client that writes its own addresses before the one the proxy (here, the test on
        # 127.0.0.1) appends: only the appended one counts.
        spoofed = new_sessions(app.url, [f"6.6.6.{n}, 203.0.113.7" for n in range(3)])
        # Three real clients behind the proxy.
        clients = new_sessions(app.url, [f"198.51.100.{n}" for n in range(3)])
    finally:
        app.stop()

    assert spoofed == [201, 201, 429]
    # Without a proxy, every request comes from the test's own address, already used up.
    assert clients == ([201, 201, 201] if behind_proxy else [429, 429, 429])
