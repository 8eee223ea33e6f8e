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


@pytest.mark.parametrize(
    ("trusted_proxies", "forwarded_for", "expected"),
    [
        # The outer proxy (10.0.0.5) forwards to the inner one (the test, on 127.0.0.1): each
        # customer has a limit of their own, not one shared as the outer proxy's.
        (
            '["127.0.0.1", "10.0.0.0/8"]',
            [f"6.6.6.{n}, 198.51.100.{n}, 10.0.0.5" for n in range(3)],
            [201, 201, 201],
        ),
        # The test's own address is no proxy's: what it writes in the header does not count.
        ('["10.9.9.9"]', [f"198.51.100.{n}" for n in range(3)], [201, 201, 429]),
    ],
    ids=["behind two proxies", "not from a proxy"],
)
def test_only_a_listed_proxy_names_the_client_and_every_proxy_is_passed_over(
    tmp_path, trusted_proxies, forwarded_for, expected
):
    app = start_app(
        tmp_path / "data",
        sample_knowledge=False,
        env={
            "CHATBOT_WIDGET__MAX_SESSIONS_PER_MINUTE": "2",
            "CHATBOT_RATE_LIMITS__TRUST_FORWARDED_FOR": "true",
            "CHATBOT_RATE_LIMITS__TRUSTED_PROXIES": trusted_proxies,
        },
    )
    try:
        codes = new_sessions(app.url, forwarded_for)
    finally:
        app.stop()

    assert codes == expected
