"""The served app trusts X-Forwarded-For only when told it runs behind a proxy."""

from __future__ import annotations

import httpx
import pytest

from tests.ui.conftest import start_app

pytestmark = pytest.mark.slow

SITE = {"X-Site-Key": "demo-site-key"}


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
        statuses = [
            httpx.post(
                f"{app.url}/api/v1/sessions",
                headers={**SITE, "X-Forwarded-For": f"203.0.113.{n}"},
                json={},
                timeout=30,
            ).status_code
            for n in range(3)
        ]
    finally:
        app.stop()

    # Three addresses of its own choosing: one client to the app, unless a proxy vouches.
    assert statuses == ([201, 201, 201] if behind_proxy else [201, 201, 429])
