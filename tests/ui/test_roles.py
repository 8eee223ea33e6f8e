"""Every staff and content route checks its role: a table of what each role may open, and a
guard that no staff route is left out of it."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from chatbot.service import ChatService
from chatbot.users import Role
from knowledge.retriever import HybridRetriever
from ui.web import create_web_app

PASSWORD = "correct horse battery"
CALLERS = ["anonymous", "customer", "staff", "content_owner", "admin"]
RANK = {"staff": 0, "content_owner": 1, "admin": 2}
# Staff routes by path prefix, most specific first: the role each one needs.
NEEDS = [
    ("/staff/documents", "content_owner"),
    ("/api/v1/documents", "content_owner"),
    ("/staff/admin", "admin"),
    ("/staff", "staff"),
    ("/api/v1/tickets", "staff"),
]
# Not APIRoutes: the playground is a mounted Gradio app behind the staff gate.
MOUNTED = [("GET", "/staff/playground/"), ("GET", "/staff/playground/config")]


def needed_role(path: str) -> str | None:
    return next((role for prefix, role in NEEDS if path.startswith(prefix)), None)


def api_routes(routes, prefix: str = "") -> list[APIRoute]:
    """Every APIRoute, also inside included routers (newer FastAPI keeps those wrapped)."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append((prefix + route.path, route))
        elif hasattr(route, "original_router"):
            found += api_routes(route.original_router.routes, prefix + route.include_context.prefix)
    return found


def staff_routes(app) -> list[tuple[str, str]]:
    routes = []
    for path, route in api_routes(app.routes):
        if needed_role(path):
            for method in sorted(route.methods - {"HEAD"}):
                # Any value in a path parameter: the role check comes before the lookup.
                routes.append((method, re.sub(r"\{[^}]+\}", "1", path)))
    return routes + MOUNTED


@pytest.fixture(scope="module")
def app(tmp_path_factory, sample_store):
    from chatbot.settings import load_settings

    settings = load_settings("test", data_dir=tmp_path_factory.mktemp("roles") / "data")
    service = ChatService(settings, sample_store, HybridRetriever(sample_store), None)
    web = create_web_app(service, settings)
    for role in Role:
        web.state.users.add_user(role.value, PASSWORD, role, actor="test")
    yield web
    web.state.desk.close()
    service.close()


@pytest.fixture(scope="module")
def callers(app) -> dict[str, tuple[TestClient, dict]]:
    """A client and headers per kind of caller; staff roles signed in with the cookie."""
    found = {}
    anonymous = TestClient(app)
    found["anonymous"] = (anonymous, {})
    session = anonymous.post(
        "/api/v1/sessions", headers={"X-Site-Key": "demo-site-key"}, json={}
    ).json()
    found["customer"] = (anonymous, {"Authorization": f"Bearer {session['session_token']}"})
    for role in Role:
        # As a browser on the app's own pages: it names where a request comes from.
        client = TestClient(app, headers={"Sec-Fetch-Site": "same-origin"})
        response = client.post(
            "/login", data={"username": role.value, "password": PASSWORD}, follow_redirects=False
        )
        assert response.status_code == 303
        found[role.value] = (client, {})
    return found


def expected(caller: str, needed: str) -> str:
    if caller in ("anonymous", "customer"):
        return "401"
    return "allowed" if RANK[caller] >= RANK[needed] else "403"


def test_the_table_covers_every_staff_route(app):
    routes = staff_routes(app)
    paths = {path for _, path in routes}

    assert len(routes) >= 25, routes
    for must in ("/staff/tickets", "/staff/conversations", "/staff/conversations/export"):
        assert must in paths
    assert ("DELETE", "/api/v1/documents/1") in routes
    assert ("POST", "/staff/admin/users") in routes


@pytest.mark.parametrize("caller", CALLERS)
def test_each_caller_gets_exactly_its_rights(app, callers, caller):
    client, headers = callers[caller]
    wrong = []
    for method, path in staff_routes(app):
        needed = needed_role(path)
        response = client.request(method, path, headers=headers, follow_redirects=False)
        got = {401: "401", 403: "403"}.get(response.status_code, "allowed")
        if got != expected(caller, needed):
            wrong.append((method, path, response.status_code))

    assert wrong == [], f"{caller}: routes with the wrong answer"
