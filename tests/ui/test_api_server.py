"""The customer API over a real socket: what only a running server shows (a dropped client)."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest

from tests.ui.conftest import start_app

pytestmark = pytest.mark.slow

LONG_QUESTION = "Explain in detail how to set up the hub, pair bulbs and update the firmware."


@pytest.fixture(scope="module")
def long_answer_server(tmp_path_factory):
    """The app with room for long answers, so that one is still being written when dropped."""
    app = start_app(
        tmp_path_factory.mktemp("api") / "data",
        env={
            "CHATBOT_LLM__MAX_OUTPUT_TOKENS": "400",
            "CHATBOT_LENGTH_POLICY__ENABLED": "false",
        },
    )
    yield app
    app.stop()


def stored_answer(database, session_id: str, timeout_s: float = 30) -> tuple[str, dict] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sqlite3.connect(database) as db:
            row = db.execute(
                "SELECT content, meta FROM turns WHERE session_id = ? AND role = 'assistant'",
                (session_id,),
            ).fetchone()
        if row:
            return row[0], json.loads(row[1])
        time.sleep(0.2)
    return None


def test_a_client_that_disconnects_mid_stream_stops_the_answer(long_answer_server):
    base = long_answer_server.url
    session = httpx.post(
        f"{base}/api/v1/sessions", headers={"X-Site-Key": "demo-site-key"}, json={}
    ).json()
    headers = {"Authorization": f"Bearer {session['session_token']}"}
    body = {"session_id": session["session_id"], "message": LONG_QUESTION}

    received = []
    with httpx.stream(
        "POST", f"{base}/api/v1/chat/stream", headers=headers, json=body, timeout=120
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and '"text"' in line:
                received.append(json.loads(line[6:])["text"])
                if len(received) == 3:
                    break
    dropped_at = time.monotonic()

    database = long_answer_server.data_dir / "conversations.sqlite3"
    stored = stored_answer(database, session["session_id"])
    assert stored is not None, long_answer_server.output()
    answer, meta = stored
    assert meta["error"] == "interrupted", "the answer was written to the end"
    assert time.monotonic() - dropped_at < 15
    assert answer.startswith("".join(received)), "what the customer saw is kept"
    assert meta["completion_tokens"] < 400
    history = httpx.get(f"{base}/api/v1/sessions/{session['session_id']}", headers=headers).json()
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
    assert [m["interrupted"] for m in history["messages"]] == [False, True]
