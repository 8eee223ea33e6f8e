"""Staff sign-in and the hand-off queue over HTTP: every staff route checks who is calling."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import time
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

from chatbot.service import ChatService
from chatbot.users import Role
from knowledge.retriever import HybridRetriever
from ui.web import create_web_app

PASSWORD = "correct horse battery"
ROLES = [Role.STAFF, Role.CONTENT_OWNER, Role.ADMIN]


@pytest.fixture
def app(settings, sample_store):
    """The web app without a chat model: staff routes never call it."""
    service = ChatService(settings, sample_store, HybridRetriever(sample_store), None)
    web = create_web_app(service, settings)
    for role in ROLES:
        web.state.users.add_user(role.value, PASSWORD, role, actor="test")
    yield web
    web.state.desk.close()
    service.close()


@pytest.fixture
def anonymous(app) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def signed_in(app, username: str) -> TestClient:
    # As a browser on the app's own pages: it names where a request comes from.
    client = TestClient(app, headers={"Sec-Fetch-Site": "same-origin"})
    response = client.post(
        "/login", data={"username": username, "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    assert "httponly" in response.headers["set-cookie"].lower()
    assert "samesite=strict" in response.headers["set-cookie"].lower()
    return client


@pytest.fixture
def ticket(app, anonymous) -> dict:
    """A customer's hand-off, made through the customer API before any message (allowed with
    an email address to reply to)."""
    session = anonymous.post(
        "/api/v1/sessions", headers={"X-Site-Key": "demo-site-key"}, json={}
    ).json()
    headers = {"Authorization": f"Bearer {session['session_token']}"}
    response = anonymous.post(
        "/api/v1/handoff",
        headers=headers,
        json={
            "session_id": session["session_id"],
            "contact": {"name": "Ana", "email": "ana@example.com"},
        },
    )
    return {**response.json(), **session, "headers": headers}


def staff_routes(ticket: dict) -> list[tuple[str, str]]:
    return [
        ("GET", "/staff/tickets"),
        ("GET", f"/staff/conversations/{ticket['session_id']}"),
        ("GET", "/api/v1/tickets"),
        ("POST", f"/api/v1/tickets/{ticket['ticket_id']}/done"),
        ("POST", f"/staff/tickets/{ticket['ticket_id']}/done"),
        ("POST", f"/api/v1/tickets/{ticket['ticket_id']}/reopen"),
        ("POST", f"/staff/tickets/{ticket['ticket_id']}/reopen"),
    ]


def test_anonymous_callers_and_customers_get_401_on_every_staff_route(anonymous, ticket):
    for method, path in staff_routes(ticket):
        plain = anonymous.request(method, path, follow_redirects=False)
        as_customer = anonymous.request(
            method, path, headers=ticket["headers"], follow_redirects=False
        )
        assert plain.status_code == 401, (method, path)
        assert as_customer.status_code == 401, (method, path)
    ticket_now = anonymous.app.state.desk.conversations.get_ticket(ticket["ticket_id"])
    assert ticket_now.status == "open"


@pytest.mark.parametrize("role", ROLES)
def test_each_staff_role_may_use_the_hand_off_queue(app, ticket, role):
    client = signed_in(app, role.value)

    page = client.get("/staff/tickets")
    listed = client.get("/api/v1/tickets").json()
    conversation = client.get(f"/staff/conversations/{ticket['session_id']}")

    assert page.status_code == 200 and "Ana" in page.text
    assert [t["id"] for t in listed] == [ticket["ticket_id"]]
    assert listed[0]["reason"] == "customer_asked"
    assert conversation.status_code == 200
    assert '<a href="/staff/conversations">← All conversations</a>' in conversation.text


def test_staff_mark_a_ticket_done_and_it_is_audited(app, ticket):
    client = signed_in(app, "staff")

    response = client.post(f"/staff/tickets/{ticket['ticket_id']}/done", follow_redirects=False)

    assert response.status_code == 303
    assert client.get("/api/v1/tickets").json() == []
    done = client.get("/api/v1/tickets?status=done").json()
    assert done[0]["status"] == "done" and done[0]["closed_at"]
    entry = app.state.users.audit_log()[0]
    assert (entry.actor, entry.action, entry.target) == ("staff", "ticket.done", str(done[0]["id"]))


def test_an_api_token_authorizes_and_revoking_it_stops_it(app, ticket, anonymous):
    users = app.state.users
    record, secret = users.create_token("staff", "script", actor="admin")
    headers = {"Authorization": f"Bearer {secret}"}

    assert anonymous.get("/api/v1/tickets", headers=headers).status_code == 200
    users.revoke_token(record.id, actor="admin")
    assert anonymous.get("/api/v1/tickets", headers=headers).status_code == 401


def test_wrong_password_and_sign_out(app, anonymous):
    wrong = anonymous.post("/login", data={"username": "staff", "password": "nope nope nope"})
    client = signed_in(app, "staff")
    client.post("/logout", follow_redirects=False)

    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    assert client.get("/staff/tickets").status_code == 401


def test_sign_in_redirects_only_within_the_app(app):
    client = TestClient(app)
    response = client.post(
        "/login",
        data={"username": "staff", "password": PASSWORD, "next": "https://evil.example/x"},
        follow_redirects=False,
    )

    assert response.headers["location"] == "/staff"


def sign_in_link(response) -> str:
    """The ``next`` of the refusal page's sign-in link."""
    assert response.status_code == 401
    href = re.search(r'href="/login\?next=([^"]*)"', response.text).group(1)
    return unquote(html.unescape(href))


def test_signing_in_leads_back_to_the_page_with_its_query(app, anonymous):
    page = "/staff/conversations?q=jane&handoff=yes"
    refused = anonymous.get(page, headers={"Accept": "text/html"})
    assert sign_in_link(refused) == page

    client = TestClient(app)
    response = client.post(
        "/login",
        data={"username": "staff", "password": PASSWORD, "next": page},
        follow_redirects=False,
    )
    assert response.headers["location"] == page


def test_a_form_sent_after_the_sign_in_ended_leads_back_to_the_page_it_was_on(anonymous, ticket):
    done = f"/staff/tickets/{ticket['ticket_id']}/done"
    html_page = {"Accept": "text/html"}
    from_list = anonymous.post(
        done, headers=html_page | {"Referer": "http://testserver/staff/tickets?status=open"}
    )
    from_elsewhere = anonymous.post(
        done, headers=html_page | {"Referer": "https://evil.example/staff/x"}
    )

    # Not the form's POST-only path, which a sign-in would load as a page.
    assert sign_in_link(from_list) == "/staff/tickets?status=open"
    assert sign_in_link(from_elsewhere) == "/staff"


def test_sign_in_does_not_lead_to_a_backslash_path(app):
    response = TestClient(app).post(
        "/login",
        data={"username": "staff", "password": PASSWORD, "next": "/\\evil.example/x"},
        follow_redirects=False,
    )

    assert response.headers["location"] == "/staff"


def test_the_playground_calls_after_the_sign_in_ended_get_a_message_not_a_page(anonymous):
    response = anonymous.post(
        "/staff/playground/gradio_api/queue/join",
        headers={"Accept": "*/*", "Content-Type": "application/json"},
        json={},
    )

    assert response.status_code == 401
    assert "sign in again" in response.json()["detail"]


def test_a_form_posted_from_another_site_is_refused(app, ticket):
    client = signed_in(app, "staff")

    response = client.post(
        f"/staff/tickets/{ticket['ticket_id']}/done",
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )

    assert response.status_code == 403
    assert app.state.desk.conversations.get_ticket(ticket["ticket_id"]).status == "open"


def test_a_hand_off_asked_for_before_any_message_is_listed_found_and_exported(app, ticket):
    # The ticket fixture presses "talk to a person" on a conversation with no message yet.
    session_id = ticket["session_id"]
    assert app.state.desk.conversations.turns(session_id) == []
    staff = signed_in(app, "staff")

    def found(**params) -> list[str]:
        page = staff.get("/staff/conversations", params=params).text
        return re.findall(r'data-session="([^"]+)"', page)

    assert found() == [session_id]
    assert found(q="Ana") == [session_id] and found(q=session_id) == [session_id]
    assert found(handoff="yes") == [session_id] and found(handoff="no") == []
    listed = staff.get("/staff/conversations").text
    assert "(no message: a person was asked for before any)" in listed
    assert staff.get(f"/staff/conversations/{session_id}").status_code == 200
    exported = staff.get("/staff/conversations/export?format=jsonl").text.splitlines()
    assert [json.loads(line)["session_id"] for line in exported] == [session_id]
    # The customer's contact travels with the export: it may be all the team has.
    [line] = exported
    assert json.loads(line)["ticket"]["contact"] == {"name": "Ana", "email": "ana@example.com"}
    assert json.loads(line)["ticket"]["status"] == "open"
    rows = list(csv.DictReader(io.StringIO(staff.get("/staff/conversations/export").text)))
    assert [(r["session_id"], r["handoff"], r["content"]) for r in rows] == [
        (session_id, "True", "")
    ]
    assert [(r["ticket_status"], r["contact_name"], r["contact_email"]) for r in rows] == [
        ("open", "Ana", "ana@example.com")
    ]


def test_a_session_id_that_starts_like_a_formula_is_quoted_in_the_csv(app):
    conversations = app.state.desk.conversations
    session_id = conversations.create_session("widget").id
    with conversations._db() as db:  # ids are random: make one start with "-"
        db.execute("UPDATE sessions SET id = ? WHERE id = ?", ("-" + session_id, session_id))
    conversations.add_turn("-" + session_id, "user", "hello there", 3)
    staff = signed_in(app, "staff")

    rows = list(csv.DictReader(io.StringIO(staff.get("/staff/conversations/export").text)))

    assert [r["session_id"] for r in rows] == ["'-" + session_id]


def test_an_export_larger_than_one_file_holds_is_refused_not_cut(app, monkeypatch):
    conversations = app.state.desk.conversations
    for n in range(3):
        conversations.add_turn(conversations.create_session("widget").id, "user", f"q{n}", 2)
    monkeypatch.setattr("ui.staff.EXPORT_MAX", 2)
    staff = signed_in(app, "staff")

    refused = staff.get("/staff/conversations/export", headers={"Accept": "application/json"})
    assert staff.head("/staff/conversations/export").status_code == 400, "as the download would"
    narrowed = staff.get("/staff/conversations/export", params={"q": "q1"})

    assert refused.status_code == 400 and "match 3 conversations" in refused.text
    assert "Narrow them with the dates" in refused.text
    assert narrowed.status_code == 200 and "q1" in narrowed.text


def test_staff_find_a_conversation_by_what_the_customer_can_tell_them(app, ticket):
    conversations = app.state.desk.conversations
    session_id = ticket["session_id"]
    conversations.add_turn(session_id, "user", "my lantern will not charge", 6)
    answer = conversations.add_turn(session_id, "assistant", "Use the USB-C cable [1].", 8)
    conversations.set_feedback(session_id, answer.id, "down", "wrong, it has no USB-C port")
    other = conversations.create_session("widget").id
    conversations.add_turn(other, "user", "how do i pair a bulb", 6)
    staff = signed_in(app, "staff")

    def found(q: str) -> list[str]:
        page = staff.get("/staff/conversations", params={"q": q}).text
        return re.findall(r'data-session="([^"]+)"', page)

    assert found("lantern") == [session_id], "a message"
    assert found("no USB-C port") == [session_id], "a rating's comment"
    assert found("Ana") == [session_id], "the name left with the hand-off"
    assert found(session_id) == [session_id], "the conversation's id"
    assert found("pair a bulb") == [other]
    assert found("nothing like this") == []

    page = staff.get(f"/staff/conversations/{session_id}").text
    row = page.split(f'data-ticket="{ticket["ticket_id"]}"')[1].split("</tr>")[0]
    assert "Ana" in row and "open" in row
    assert f'action="/staff/tickets/{ticket["ticket_id"]}/done"' in row
    back = re.search(r'name="back" value="([^"]+)"', row).group(1)
    assert back == f"/staff/conversations/{session_id}"
    # Marked done there, staff stay on the conversation; a foreign address is not followed.
    done = staff.post(
        f"/staff/tickets/{ticket['ticket_id']}/done", data={"back": back}, follow_redirects=False
    )
    assert done.headers["location"] == back
    assert "done" in staff.get(back).text.split(f'data-ticket="{ticket["ticket_id"]}"')[1]
    for foreign in ("https://evil.example/", "//evil.example/x", "/login"):
        other = staff.post(
            f"/staff/tickets/{ticket['ticket_id']}/done",
            data={"back": foreign},
            follow_redirects=False,
        )
        assert other.headers["location"] == "/staff/tickets", foreign


def test_customer_text_in_staff_pages_is_escaped(app, anonymous):
    session = anonymous.post(
        "/api/v1/sessions", headers={"X-Site-Key": "demo-site-key"}, json={}
    ).json()
    headers = {"Authorization": f"Bearer {session['session_token']}"}
    anonymous.post(
        "/api/v1/handoff",
        headers=headers,
        json={
            "session_id": session["session_id"],
            "contact": {"name": "<script>x()</script>", "email": "x@example.com"},
        },
    )
    client = signed_in(app, "staff")

    page = client.get("/staff/tickets").text

    assert "<script>x()</script>" not in page and "&lt;script&gt;" in page


def test_marking_a_done_ticket_done_again_changes_nothing(app, ticket):
    client = signed_in(app, "staff")
    first = client.post(f"/api/v1/tickets/{ticket['ticket_id']}/done").json()

    again = client.post(f"/api/v1/tickets/{ticket['ticket_id']}/done")

    assert again.status_code == 200
    assert again.json()["closed_at"] == first["closed_at"]
    audited = [e for e in app.state.users.audit_log() if e.action == "ticket.done"]
    assert len(audited) == 1


def test_staff_reopen_a_done_ticket_and_it_is_audited(app, ticket):
    client = signed_in(app, "staff")
    client.post(f"/api/v1/tickets/{ticket['ticket_id']}/done")
    done_page = client.get("/staff/tickets?status=done").text
    assert f'action="/staff/tickets/{ticket["ticket_id"]}/reopen"' in done_page

    response = client.post(
        f"/staff/tickets/{ticket['ticket_id']}/reopen",
        data={"back": "/staff/tickets?status=done"},
        follow_redirects=False,
    )
    again = client.post(f"/api/v1/tickets/{ticket['ticket_id']}/reopen")

    assert response.status_code == 303
    assert response.headers["location"] == "/staff/tickets?status=done"
    reopened = client.get("/api/v1/tickets").json()
    assert [(t["id"], t["status"], t["closed_at"]) for t in reopened] == [
        (ticket["ticket_id"], "open", None)
    ]
    assert again.status_code == 200 and again.json()["status"] == "open"
    audited = [
        e.action for e in app.state.users.audit_log() if e.target == str(ticket["ticket_id"])
    ]
    assert audited == ["ticket.reopen", "ticket.done"], "newest first; the no-op is not audited"
    # The customer's next request for a person goes to the reopened ticket.
    follow_up = app.state.desk.open(ticket["session_id"], "customer_asked")
    assert follow_up[0].id == ticket["ticket_id"] and follow_up[1] is False


def test_a_ticket_is_not_reopened_beside_a_newer_open_one(app, ticket, anonymous):
    client = signed_in(app, "staff")
    client.post(f"/api/v1/tickets/{ticket['ticket_id']}/done")
    again = {"session_id": ticket["session_id"], "contact": {"email": "ana@example.com"}}
    newer = anonymous.post("/api/v1/handoff", headers=ticket["headers"], json=again).json()
    assert newer["ticket_id"] != ticket["ticket_id"]

    api = client.post(f"/api/v1/tickets/{ticket['ticket_id']}/reopen")
    page = client.post(f"/staff/tickets/{ticket['ticket_id']}/reopen")
    missing = client.post("/api/v1/tickets/999999/reopen")

    assert api.status_code == 409
    assert api.json()["error"] == {
        "code": "conflict",
        "message": f"This conversation already has an open hand-off, #{newer['ticket_id']}.",
    }
    assert page.status_code == 409 and f"#{newer['ticket_id']}" in page.text
    assert missing.status_code == 404
    open_ids = [t["id"] for t in client.get("/api/v1/tickets").json()]
    assert open_ids == [newer["ticket_id"]]


def test_the_hand_off_queue_pages_through_every_ticket(app):
    conversations = app.state.desk.conversations
    for n in range(105):
        session = conversations.create_session("widget")
        conversations.create_ticket(session.id, None, "requested", {"name": f"C{n:03}"}, "log")
    client = signed_in(app, "staff")

    first, second = client.get("/staff/tickets").text, client.get("/staff/tickets?page=2").text

    assert first.count("data-ticket=") == 100 and "C104" in first and "C004" not in first
    assert "1–100 of 105" in first and 'href="/staff/tickets?status=open&amp;page=2"' in first
    assert second.count("data-ticket=") == 5 and "C000" in second and "101–105 of 105" in second
    assert client.get("/staff/tickets?page=0").status_code == 422
    assert "past the end" in client.get("/staff/tickets?page=9").text
    api = client.get("/api/v1/tickets?limit=10&offset=100")
    assert api.headers["x-total-count"] == "105"
    assert [t["contact"]["name"] for t in api.json()] == ["C004", "C003", "C002", "C001", "C000"]
    assert client.get("/api/v1/tickets?limit=501").status_code == 422


def test_errors_are_pages_for_a_browser_and_error_objects_for_the_api(app, anonymous):
    client = signed_in(app, "staff")

    missing = client.get("/staff/conversations/no-such-id", headers={"Accept": "text/html"})
    bad_page = client.get("/staff/tickets?page=zero", headers={"Accept": "text/html"})
    api_missing = client.post("/api/v1/tickets/99999/done")
    api_invalid = client.get("/api/v1/tickets?status=closed&limit=0")
    unknown = anonymous.get("/api/v1/no-such-route")

    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
    assert "No such conversation." in missing.text and 'href="/staff/tickets"' in missing.text
    assert (
        bad_page.status_code == 422
        and "page: " in bad_page.text
        and '"detail"' not in bad_page.text
    )
    assert api_missing.status_code == 404
    assert api_missing.json() == {"error": {"code": "not_found", "message": "No such ticket."}}
    assert api_invalid.status_code == 422
    error = api_invalid.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("status: ") and "; limit: " in error["message"]
    assert unknown.json()["error"]["code"] == "not_found"
    not_json = anonymous.post(
        "/api/v1/feedback", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 422
    assert not_json.json()["error"]["message"] == "The request body is not valid JSON."
    not_utf8 = anonymous.post(
        "/api/v1/feedback", content=b'{"a": "\xff"}', headers={"Content-Type": "application/json"}
    )
    assert not_utf8.status_code == 422
    assert not_utf8.json()["error"] == not_json.json()["error"]
    for form in (
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "text/plain"},
    ):
        sent = anonymous.post("/api/v1/feedback", content=b"rating=up", headers=form)
        assert sent.status_code == 415, sent.text
        assert sent.json()["error"] == {
            "code": "unsupported_media_type",
            "message": "Send the body as JSON, with Content-Type: application/json.",
        }


def test_another_site_can_neither_sign_a_browser_in_nor_out(app, anonymous):
    evil = {"Origin": "http://evil.example"}
    client = signed_in(app, "staff")

    forced_in = anonymous.post(
        "/login",
        data={"username": "staff", "password": PASSWORD},
        headers=evil,
        follow_redirects=False,
    )
    forced_out = client.post("/logout", headers=evil, follow_redirects=False)

    assert forced_in.status_code == 403 and "set-cookie" not in forced_in.headers
    assert forced_out.status_code == 403
    assert client.get("/staff/tickets", follow_redirects=False).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Referer": "https://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Referer": "https://other.testserver/"},
        # None of the three: a browser always names where a form comes from.
        {},
    ],
    ids=["referer", "sec-fetch-site", "sibling-site", "no-origin-at-all"],
)
def test_a_change_sent_from_another_site_without_an_origin_is_refused(app, ticket, headers):
    staff = signed_in(app, "staff")
    del staff.headers["Sec-Fetch-Site"]  # only the headers of each case
    number = ticket["ticket_id"]

    page_form = staff.post(f"/staff/tickets/{number}/done", headers=headers)
    api_call = staff.post(f"/api/v1/tickets/{number}/done", headers=headers)

    assert page_form.status_code == 403 and api_call.status_code == 403
    assert [t["id"] for t in staff.get("/api/v1/tickets?status=open").json()] == [number]
    # Its own pages' forms still work, and so does a script that uses an API token.
    own = {"Referer": "http://testserver/staff/tickets", "Sec-Fetch-Site": "same-origin"}
    done = staff.post(f"/api/v1/tickets/{number}/done", headers=own)
    assert done.status_code == 200, done.text
    _, secret = app.state.users.create_token("staff", "script", actor="admin")
    script = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    reopened = script.post(f"/api/v1/tickets/{number}/reopen")
    assert reopened.status_code == 200, reopened.text


def test_an_id_or_page_too_large_for_the_database_is_refused_as_invalid(app, anonymous):
    staff, admin = signed_in(app, "staff"), signed_in(app, "admin")
    huge = "9" * 25
    session = anonymous.post(
        "/api/v1/sessions", headers={"X-Site-Key": "demo-site-key"}, json={}
    ).json()
    bearer = {"Authorization": f"Bearer {session['session_token']}"}

    responses = [
        anonymous.post(
            "/api/v1/feedback",
            headers=bearer,
            json={"session_id": session["session_id"], "turn_id": int(huge), "rating": "up"},
        ),
        staff.post(f"/api/v1/tickets/{huge}/done"),
        staff.post(f"/staff/tickets/{huge}/done"),
        staff.get(f"/staff/tickets?page={huge}"),
        staff.get(f"/staff/conversations?page={huge}"),
        staff.get(f"/api/v1/tickets?offset={huge}"),
        admin.get(f"/staff/admin?audit_page={huge}"),
        admin.post(f"/staff/admin/tokens/{huge}/revoke"),
    ]

    assert [r.status_code for r in responses] == [422] * len(responses)


def test_a_known_route_asked_with_another_method_says_which_methods_it_takes(app, anonymous):
    client = signed_in(app, "staff")

    api_wrong = anonymous.get("/api/v1/sessions")
    page_wrong = client.post("/staff/conversations", headers={"Accept": "text/html"})
    head_unknown = anonymous.head("/api/v1/no-such-route")
    options_unknown = anonymous.options("/api/v1/no-such-route")

    assert api_wrong.status_code == 405 and api_wrong.headers["allow"] == "POST"
    assert api_wrong.json()["error"]["code"] == "method_not_allowed"
    assert page_wrong.status_code == 405 and "GET" in page_wrong.headers["allow"]
    assert "text/html" in page_wrong.headers["content-type"]
    assert head_unknown.status_code == 404 and not head_unknown.content
    assert options_unknown.status_code == 404
    assert options_unknown.json()["error"]["code"] == "not_found"


def test_head_on_a_page_or_get_route_answers_like_get_without_the_body(app, anonymous):
    client = signed_in(app, "staff")

    for path, by in [
        ("/login", anonymous),
        ("/widget.js", anonymous),
        ("/healthz", anonymous),
        ("/staff/tickets", client),
    ]:
        get, head = by.get(path), by.head(path)
        assert get.status_code == head.status_code == 200, (path, head.status_code)
        assert head.headers["content-type"] == get.headers["content-type"], path
        assert head.content == b"" and get.content, path
    # A staff page still checks the role for HEAD.
    assert anonymous.head("/staff/tickets").status_code in (303, 401, 403)


def test_head_and_wrong_methods_see_every_route_on_the_path(app):
    client = signed_in(app, "admin")

    # /api/v1/documents has a POST route first and a GET route after it.
    listed = client.head("/api/v1/documents")
    wrong = client.delete("/api/v1/documents")
    assert listed.status_code == 200 and listed.content == b""
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD, POST"


def _audit_actions(app) -> list[str]:
    return [entry.action for entry in app.state.users.audit_log()]


def test_head_on_the_export_neither_exports_nor_audits(app):
    client = signed_in(app, "staff")

    head = client.head("/staff/conversations/export")
    after_head = _audit_actions(app)
    get = client.get("/staff/conversations/export")

    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/csv")
    assert "conversations.export" not in after_head
    assert get.status_code == 200 and "conversations.export" in _audit_actions(app)


# ----- transcripts


def customer_chat(app, anonymous, messages: list[str], rating: str | None = None) -> str:
    """A customer conversation stored the way the service stores it (no model needed)."""
    conversations = app.state.chat.service.conversations
    session = anonymous.post(
        "/api/v1/sessions", headers={"X-Site-Key": "demo-site-key"}, json={}
    ).json()
    for message in messages:
        conversations.add_turn(session["session_id"], "user", message, 5)
        answer = conversations.add_turn(
            session["session_id"], "assistant", f"About {message}", 5, {"sources": ["a.md"]}
        )
    if rating:
        conversations.set_feedback(session["session_id"], answer.id, rating, "meh")
    return session["session_id"]


def test_staff_filter_and_export_conversations(app, anonymous):
    liked = customer_chat(app, anonymous, ["pairing bulbs"], "up")
    disliked = customer_chat(app, anonymous, ["=HYPERLINK(1)", "billing"], "down")
    unrated = customer_chat(app, anonymous, ["firmware"])
    client = signed_in(app, "staff")

    def listed(query: str) -> list[str]:
        page = client.get(f"/staff/conversations?{query}")
        assert page.status_code == 200, page.text
        return [sid for sid in (liked, disliked, unrated) if f'data-session="{sid}"' in page.text]

    assert listed("") == [liked, disliked, unrated]
    assert listed("rating=down") == [disliked]
    assert listed("rating=none") == [unrated]
    assert listed("q=bulbs") == [liked]
    assert listed("handoff=yes") == []
    assert listed("since=2000-01-01&until=2000-01-02") == []
    assert "must be a date" in client.get("/staff/conversations?since=yesterday").text
    # The first and last days a date can name are days like any other.
    assert listed("since=0001-01-01&until=9999-12-31") == [liked, disliked, unrated]
    assert listed("since=9999-12-31") == listed("until=0001-01-01") == []
    swapped = client.get("/staff/conversations?since=2026-02-01&until=2026-01-01").text
    assert "From is after To" in swapped
    one_day = client.get("/staff/conversations?since=2026-02-01&until=2026-02-01").text
    assert "From is after To" not in one_day

    jsonl = client.get("/staff/conversations/export?format=jsonl&rating=down")
    records = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [r["session_id"] for r in records] == [disliked]
    assert [t["role"] for t in records[0]["turns"]] == ["user", "assistant"] * 2
    assert records[0]["turns"][-1]["rating"] == "down"
    exported = client.get("/staff/conversations/export?format=csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert "attachment" in exported.headers["content-disposition"]
    assert len(rows) == 8 and {r["session_id"] for r in rows} == {liked, disliked, unrated}
    assert "'=HYPERLINK(1)" in {r["content"] for r in rows}, "formulas are defused"


@pytest.fixture
def berlin_time(monkeypatch):
    """The server's clock in Central European Time (UTC+1 in November)."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_staff_pages_and_exports_name_the_time_zone_of_their_times(app, anonymous, berlin_time):
    session = customer_chat(app, anonymous, ["pairing bulbs"])
    conversations = app.state.chat.service.conversations
    with conversations._db() as db:  # 2026-11-27 09:30 UTC
        db.execute("UPDATE turns SET created_at = 1795771800 WHERE session_id = ?", (session,))
    client = signed_in(app, "staff")

    page = client.get(f"/staff/conversations/{session}").text
    listing = client.get("/staff/conversations").text
    records = client.get("/staff/conversations/export?format=jsonl").text.splitlines()

    assert "2026-11-27 10:30 CET" in page
    assert "(CET)" in listing, "the date filters say which zone their days are in"
    turns = json.loads(records[0])["turns"]
    assert turns[0]["created_at"] == "2026-11-27T10:30:00+01:00"


def test_the_conversations_list_pages_through_every_match(app):
    conversations = app.state.chat.service.conversations
    for n in range(103):
        session = conversations.create_session("widget")
        conversations.add_turn(session.id, "user", f"question {n:03}", 5)
    client = signed_in(app, "staff")

    first = client.get("/staff/conversations?q=question").text
    second = client.get("/staff/conversations?q=question&page=2").text

    assert first.count("data-session=") == 100 and "1–100 of 103" in first
    assert 'href="/staff/conversations?q=question&amp;page=2"' in first
    assert second.count("data-session=") == 3 and "101–103 of 103" in second
    listed = {line for line in (first + second).splitlines() if "question " in line}
    assert len(listed) == 103, "every conversation on exactly one page"


def test_staff_pages_may_not_be_framed_or_cached_and_customer_pages_are_left_alone(app, anonymous):
    staff, admin = signed_in(app, "staff"), signed_in(app, "admin")

    private = {
        "login page": anonymous.get("/login"),
        "refusal": anonymous.get("/staff/tickets"),
        "tickets": staff.get("/staff/tickets"),
        "admin": admin.get("/staff/admin"),
        "export": staff.get("/staff/conversations/export?format=csv"),
        "playground": staff.get("/staff/playground/"),
        "redirect": admin.post(
            "/staff/admin/tokens",
            data={"username": "staff", "name": "cms"},
            follow_redirects=False,
        ),
    }
    api = staff.get("/api/v1/tickets")
    session = anonymous.post(
        "/api/v1/sessions", headers={"X-Site-Key": "demo-site-key"}, json={}
    ).json()
    stream = anonymous.post(
        "/api/v1/chat/stream",
        headers={"Authorization": f"Bearer {session['session_token']}"},
        json={"session_id": session["session_id"], "message": "hello"},
    )
    docs_script = anonymous.get("/api/v1/docs-assets/swagger-ui-bundle.js")
    customer = {
        "chat page": anonymous.get("/"),
        "help article": anonymous.get("/help/reset-the-hub.md"),
        "widget": anonymous.get("/widget.js"),
    }

    for name, response in private.items():
        assert response.status_code in (200, 303, 401), name
        assert response.headers["x-frame-options"] == "DENY", name
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], name
        assert response.headers["cache-control"] == "no-store", name
    assert api.status_code == 200 and api.headers["cache-control"] == "no-store"
    assert stream.status_code == 200 and stream.headers["cache-control"] == "no-cache"
    assert "event: done" in stream.text, "the answer still streams"
    assert docs_script.status_code == 200
    assert "no-store" not in docs_script.headers.get("cache-control", ""), "a script is cacheable"
    for name, response in customer.items():
        assert response.status_code == 200, name
        assert "x-frame-options" not in response.headers, name
        assert "frame-ancestors" not in response.headers.get("content-security-policy", ""), name
    # The article's own policy is kept, and the widget stays cacheable.
    assert "default-src 'none'" in customer["help article"].headers["content-security-policy"]
    assert customer["widget"].headers["cache-control"] == "public, max-age=300"


# ----- admin


def test_only_admins_open_the_admin_page(app, anonymous):
    assert anonymous.get("/staff/admin").status_code == 401
    for role, status in (("staff", 403), ("content_owner", 403), ("admin", 200)):
        assert signed_in(app, role).get("/staff/admin").status_code == status, role
    staff = signed_in(app, "staff")
    refused = staff.post(
        "/staff/admin/users", data={"username": "mallory", "role": "admin", "password": PASSWORD}
    )
    assert refused.status_code == 403 and app.state.users.get("mallory") is None


def test_admin_manages_users_and_tokens_from_the_page(app, anonymous):
    admin = signed_in(app, "admin")

    added = admin.post(
        "/staff/admin/users", data={"username": "newbie", "role": "staff", "password": PASSWORD}
    )
    promoted = admin.post("/staff/admin/users/newbie/role", data={"role": "content_owner"})
    weak = admin.post("/staff/admin/users/newbie/password", data={"password": "short"})
    token_page = admin.post("/staff/admin/tokens", data={"username": "newbie", "name": "cms"})

    assert added.status_code == 200 and "Added newbie" in added.text
    assert "newbie is now content_owner" in promoted.text
    assert weak.status_code == 400 and "at least" in weak.text
    secret = token_page.text.split('data-testid="new-token">')[1].split("<")[0]
    headers = {"Authorization": f"Bearer {secret}"}
    assert anonymous.get("/api/v1/tickets", headers=headers).status_code == 200
    token_id = app.state.users.tokens("newbie")[0][1].id
    admin.post(f"/staff/admin/tokens/{token_id}/revoke")
    assert anonymous.get("/api/v1/tickets", headers=headers).status_code == 401
    removed = admin.post("/staff/admin/users/newbie/remove")
    assert "Removed newbie" in removed.text and app.state.users.get("newbie") is None
    page = admin.get("/staff/admin").text
    for action in ("user.add", "user.set_role", "token.create", "token.revoke", "user.remove"):
        assert action in page


def test_an_admin_page_form_refuses_a_nameless_token_and_removing_yourself(app):
    app.state.users.add_user("other-admin", PASSWORD, "admin", actor="test")
    admin = signed_in(app, "admin")

    nameless = admin.post("/staff/admin/tokens", data={"username": "staff", "name": "   "})
    page = admin.get("/staff/admin").text
    yourself = admin.post("/staff/admin/users/admin/remove")

    assert nameless.status_code == 400 and "Name the token" in nameless.text
    assert app.state.users.tokens("staff") == []
    assert 'action="/staff/admin/users/admin/remove"' not in page
    assert 'action="/staff/admin/users/other-admin/remove"' in page
    assert yourself.status_code == 400 and "your own account" in yourself.text
    assert app.state.users.get("admin") is not None
    assert admin.get("/staff/admin").status_code == 200, "still signed in"


def test_a_reload_after_an_admin_form_repeats_nothing(app):
    app.state.users.add_user("other-admin", PASSWORD, "admin", actor="test")
    admin = signed_in(app, "admin")
    other_admin = signed_in(app, "other-admin")

    created = admin.post(
        "/staff/admin/tokens", data={"username": "staff", "name": "cms"}, follow_redirects=False
    )
    assert created.status_code == 303
    shown_at = created.headers["location"]
    assert shown_at.startswith("/staff/admin?done=")
    shown = admin.get(shown_at)
    reloaded = admin.get(shown_at)

    secret = shown.text.split('data-testid="new-token">')[1].split("<")[0]
    assert app.state.users.token_user(secret).username == "staff"
    assert "data-testid" not in reloaded.text, "the token is shown once"
    assert [name for _, t in app.state.users.tokens("staff") for name in [t.name]] == ["cms"]
    added = admin.post(
        "/staff/admin/users", data={"username": "newbie", "role": "staff", "password": PASSWORD}
    )
    assert added.status_code == 200 and "Added newbie (staff)." in added.text
    assert "Added newbie" not in admin.get(str(added.url)).text
    # Another signed-in user cannot read a notice by its address.
    removed = admin.post("/staff/admin/users/newbie/remove", follow_redirects=False)
    assert "Removed newbie" not in other_admin.get(removed.headers["location"]).text


def test_a_notice_is_shown_once_to_its_user_and_forgotten_when_it_expires(monkeypatch):
    from ui.staff import PageNotices

    clock = [1000.0]
    monkeypatch.setattr("ui.staff.time.monotonic", lambda: clock[0])
    notices = PageNotices(ttl_s=60)
    kept = notices.put("alice", new_token=("bob", "cbt_secret"))
    expiring = notices.put("alice", notice="Added bob.")

    assert notices.pop(kept, "mallory") == {}
    assert notices.pop(kept, "alice") == {"new_token": ("bob", "cbt_secret")}
    assert notices.pop(kept, "alice") == {}, "once"
    clock[0] += 61
    assert notices.pop("any", "alice") == {}
    assert notices._items == {}, "an expired notice (and any secret in it) is dropped"
    assert notices.pop(expiring, "alice") == {}


def test_an_admin_who_resets_their_own_password_or_leaves_the_role_is_sent_on(app):
    users = app.state.users
    users.add_user("second-admin", PASSWORD, "admin", actor="test")
    admin = signed_in(app, "admin")

    own = admin.post(
        "/staff/admin/users/admin/password",
        data={"password": "a brand new password"},
        follow_redirects=False,
    )
    assert (own.status_code, own.headers["location"]) == (303, "/login?next=/staff/admin")
    assert admin.get("/staff/admin").status_code == 401

    second = signed_in(app, "second-admin")
    demoted = second.post(
        "/staff/admin/users/second-admin/role", data={"role": "staff"}, follow_redirects=False
    )
    assert (demoted.status_code, demoted.headers["location"]) == (303, "/staff")
    assert users.get("second-admin").role.value == "staff"


def test_the_playground_refuses_cross_site_requests_with_the_cookie(app):
    client = signed_in(app, "staff")

    same_site = client.get("/staff/playground/config")
    cross_site = client.post(
        "/staff/playground/gradio_api/queue/join",
        headers={"Origin": "https://evil.example"},
        json={},
    )

    assert same_site.status_code == 200
    assert cross_site.status_code == 403


def test_the_audit_log_pages_on_the_admin_page(app):
    users = app.state.users
    for n in range(120):
        users.audit("admin", "test.entry", f"target-{n:03}")
    client = signed_in(app, "admin")

    first = client.get("/staff/admin").text
    second = client.get("/staff/admin?audit_page=2").text

    assert "target-119" in first and "target-019" not in first
    assert 'href="/staff/admin?audit_page=2"' in first
    assert "target-019" in second and "target-119" not in second
    # A page rendered by a form post links to the admin page itself.
    posted = client.post(
        "/staff/admin/users", data={"username": "new-staff", "role": "staff", "password": PASSWORD}
    )
    assert posted.status_code == 200 and 'href="/staff/admin?audit_page=2"' in posted.text


def test_a_conversation_says_which_product_a_turn_asked_about(app):
    service = app.state.chat.service
    session = service.start_session()
    service.conversations.add_turn(session, "user", "how do i mute a channel in slack", 7, {})
    meta = {"handoff": True, "handoff_reason": "off_topic", "other_products": ["slack"]}
    service.conversations.add_turn(
        session, "assistant", "I couldn't find that.", 5, {**meta, "product_itself": True}
    )

    page = signed_in(app, "staff").get(f"/staff/conversations/{session}")

    assert "Handed off: off-topic (asks about slack)" in page.text


def test_a_conversation_says_why_each_turn_was_handed_off(app):
    service = app.state.chat.service
    session = service.start_session()
    # Stored as a turn handed off because it named another company's product.
    service.conversations.add_turn(session, "user", "is there a <b>linkedin</b> app?", 5, {})
    service.conversations.add_turn(
        session,
        "assistant",
        "I couldn't find that in our help center.",
        8,
        {"handoff": True, "handoff_reason": "off_topic", "other_products": ["linkedin"]},
    )
    service.conversations.add_turn(session, "user", "how do i reset the hub", 5, {})
    service.conversations.add_turn(
        session, "assistant", "Hold the button.", 4, {"handoff": False, "sources": ["a.md"]}
    )

    page = signed_in(app, "staff").get(f"/staff/conversations/{session}")

    assert page.status_code == 200
    assert page.text.count("data-handoff") == 1
    assert "Handed off: off-topic (names linkedin)" in page.text
    assert "asks about" not in page.text
    assert "&lt;b&gt;linkedin&lt;/b&gt;" in page.text and "<b>linkedin" not in page.text


def test_a_conversation_says_which_regulation_a_turn_named(app):
    service = app.state.chat.service
    session = service.start_session()
    service.conversations.add_turn(session, "user", "is it hipaa compliant?", 5, {})
    meta = {"handoff": True, "handoff_reason": "no_match", "compliance": ["hipaa", "baa"]}
    service.conversations.add_turn(session, "assistant", "I couldn't find that.", 5, meta)

    page = signed_in(app, "staff").get(f"/staff/conversations/{session}")

    assert "Handed off: nothing relevant found (asks about hipaa, baa)" in page.text
