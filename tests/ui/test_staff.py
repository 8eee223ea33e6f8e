"""Staff sign-in and the hand-off queue over HTTP: every staff route checks who is calling."""

from __future__ import annotations

from collections.abc import Iterator

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
    client = TestClient(app)
    response = client.post(
        "/login", data={"username": username, "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    assert "httponly" in response.headers["set-cookie"].lower()
    assert "samesite=strict" in response.headers["set-cookie"].lower()
    return client


@pytest.fixture
def ticket(app, anonymous) -> dict:
    """A customer's hand-off, made through the customer API."""
    session = anonymous.post(
        "/api/v1/sessions", headers={"X-Site-Key": "demo-site-key"}, json={}
    ).json()
    headers = {"Authorization": f"Bearer {session['session_token']}"}
    response = anonymous.post(
        "/api/v1/handoff",
        headers=headers,
        json={"session_id": session["session_id"], "contact": {"name": "Ana"}},
    )
    return {**response.json(), **session, "headers": headers}


def staff_routes(ticket: dict) -> list[tuple[str, str]]:
    return [
        ("GET", "/staff/tickets"),
        ("GET", f"/staff/conversations/{ticket['session_id']}"),
        ("GET", "/api/v1/tickets"),
        ("POST", f"/api/v1/tickets/{ticket['ticket_id']}/done"),
        ("POST", f"/staff/tickets/{ticket['ticket_id']}/done"),
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


def test_a_form_posted_from_another_site_is_refused(app, ticket):
    client = signed_in(app, "staff")

    response = client.post(
        f"/staff/tickets/{ticket['ticket_id']}/done",
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )

    assert response.status_code == 403
    assert app.state.desk.conversations.get_ticket(ticket["ticket_id"]).status == "open"


def test_customer_text_in_staff_pages_is_escaped(app, anonymous):
    session = anonymous.post(
        "/api/v1/sessions", headers={"X-Site-Key": "demo-site-key"}, json={}
    ).json()
    headers = {"Authorization": f"Bearer {session['session_token']}"}
    anonymous.post(
        "/api/v1/handoff",
        headers=headers,
        json={"session_id": session["session_id"], "contact": {"name": "<script>x()</script>"}},
    )
    client = signed_in(app, "staff")

    page = client.get("/staff/tickets").text

    assert "<script>x()</script>" not in page and "&lt;script&gt;" in page
