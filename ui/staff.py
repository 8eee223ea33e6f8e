"""Staff sign-in and the staff pages and API: who may do what is checked on every route.

Anonymous callers get 401, signed-in callers without the role 403. A browser signs in with a
form and keeps an HttpOnly, SameSite=Strict cookie; programs send an API token as
``Authorization: Bearer cbt_...``.
"""

import csv
import datetime as dt
import io
import json
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatbot.conversations import SessionFilter, SessionSummary
from chatbot.handoff import REASONS, HandoffDesk, StillOpen
from chatbot.service import HANDOFF_REASON_TEXT
from chatbot.users import AccountError, Role, User, UserDirectory
from ui.api import ROW_ID_MAX, own_origin

COOKIE = "chatbot_staff"
# Set in the scope of a HEAD request that a GET route answers (see ui.web).
HEAD_ONLY = "chatbot.head_only"
TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")


def local_time(ts: float) -> dt.datetime:
    """``ts`` in the server's time zone, with the zone attached, so that pages and exports can
    say which zone their times are in."""
    return dt.datetime.fromtimestamp(ts).astimezone()


def server_zone() -> str:
    """The server's time zone as staff pages name it ("UTC", "CET")."""
    return dt.datetime.now().astimezone().strftime("%Z")


TEMPLATES.env.filters["when"] = lambda ts: (
    local_time(ts).strftime("%Y-%m-%d %H:%M %Z") if ts else ""
)
TEMPLATES.env.globals["server_zone"] = server_zone
# (path, label, role needed to see it in the menu)
NAV = [
    ("/staff/playground/", "Playground", Role.STAFF),
    ("/staff/conversations", "Conversations", Role.STAFF),
    ("/staff/tickets", "Hand-offs", Role.STAFF),
    ("/staff/documents", "Documents", Role.CONTENT_OWNER),
    ("/staff/admin", "Admin", Role.ADMIN),
]


# Rows per page of the hand-offs, conversations and audit log pages.
PAGE_SIZE = 100
# Ids and page numbers a request may name: larger ones are a 422, not a 500 from SQLite.
RowId = Annotated[int, PathParam(ge=1, le=ROW_ID_MAX)]
PageNumber = Annotated[int, Query(ge=1, le=ROW_ID_MAX // PAGE_SIZE)]


@dataclass(frozen=True)
class Pager:
    """Where one page sits in a list: its rows are ``first``..``last`` of ``total``."""

    page: int
    total: int
    path: str  # the list's own page (its links must not depend on the URL a form posted to)
    size: int = PAGE_SIZE

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def first(self) -> int:
        return min(self.offset + 1, self.total)

    @property
    def last(self) -> int:
        return min(self.offset + self.size, self.total)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def beyond_the_end(self) -> bool:
        return self.offset >= self.total > 0

    def link(self, page: int, query: str = "", name: str = "page") -> str:
        return f"{self.path}?{query}&{name}={page}" if query else f"{self.path}?{name}={page}"


class NotSignedIn(Exception):
    pass


class Forbidden(Exception):
    def __init__(self, needed: Role):
        self.needed = needed


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def current_user(request: Request) -> User | None:
    return current_user_from(request.app.state.users, request)


def require(role: Role) -> Callable[[Request], User]:
    """A dependency: the signed-in user if they have ``role``; 401 or 403 otherwise."""

    def dependency(request: Request) -> User:
        user = current_user(request)
        if user is None:
            raise NotSignedIn()
        if not user.role.allows(role):
            raise Forbidden(role)
        if request.method not in ("GET", "HEAD") and COOKIE in request.cookies:
            _check_same_origin(request, signed_in=True)
        request.state.user = user
        return user

    return dependency


class StaffGate:
    """Role checks in front of mounted sub-apps (the Gradio playground) that have no FastAPI
    dependencies of their own: every path under a prefix needs its role. Pure ASGI."""

    def __init__(self, app, users: UserDirectory, prefixes: dict[str, Role]):
        self.app = app
        self.users = users
        self.prefixes = prefixes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            needed = next(
                (role for prefix, role in self.prefixes.items() if path.startswith(prefix)), None
            )
            if needed is not None:
                request = Request(scope)
                request.scope.setdefault("app", self.app)
                user = current_user_from(self.users, request)
                refusal = None
                if user is None:
                    refusal = (401, "Sign-in needed", "This page is for support staff.")
                elif not user.role.allows(needed):
                    refusal = (403, "Not allowed", f"This needs the {needed.value} role.")
                elif COOKIE in request.cookies and not _same_origin(request, signed_in=True):
                    refusal = (403, "Not allowed", "Cross-site request refused.")
                if refusal is not None:
                    if scope["type"] == "websocket":
                        await send({"type": "websocket.close", "code": 1008})
                        return
                    code, title, message = refusal
                    request.state.user = user
                    if wants_html(request):
                        response = render(
                            request,
                            "refused.html",
                            code,
                            title=title,
                            message=message,
                            next=return_to(request),
                        )
                    else:
                        # The page's own calls (the playground's Ask after the sign-in ended):
                        # a message its error notice can show, not a page it cannot read.
                        again = " Reload the page to sign in again." if user is None else ""
                        response = JSONResponse({"detail": message + again}, status_code=code)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def current_user_from(users: UserDirectory, request: Request) -> User | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return users.token_user(token.strip())
    return users.session_user(request.cookies.get(COOKIE))


def _same_origin(request: Request, signed_in: bool = False) -> bool:
    # The cookie is SameSite=Strict already; this also refuses requests from other origins by
    # browsers that send Origin (which they do on every cross-site POST and fetch). Without an
    # Origin, a browser's Sec-Fetch-Site or Referer that names another site refuses it too.
    # (A page opened by a link from a sibling site is no request to change anything.)
    # ``signed_in``: a change made with the sign-in cookie must name its origin in one of the
    # three, as every browser's form and fetch does; a script holding the cookie uses a token.
    own = own_origin(request)
    origin = request.headers.get("origin")
    if origin:
        return origin == own
    if request.method in ("GET", "HEAD"):
        return True
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    referer = request.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}" == own
    return not signed_in or "sec-fetch-site" in request.headers


def _check_same_origin(request: Request, signed_in: bool = False) -> None:
    if not _same_origin(request, signed_in):
        raise HTTPException(403, "Cross-site request refused.")


def return_to(request: Request) -> str:
    """Where signing in leads back to: this page, with its query (a collection, filters). For
    a form sent after the sign-in ended, the page the form was on: its POST-only path cannot
    be loaded, and the form is not sent again."""
    if request.method in ("GET", "HEAD"):
        url = request.url
        return url.path + (f"?{url.query}" if url.query else "")
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc and f"{referer.scheme}://{referer.netloc}" == own_origin(request):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return "/staff"


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", "text/html"
    )


class PageNotices:
    """What a staff form did, for the page it redirects to, so that reloading that page repeats
    nothing. A notice is shown once, to the user who acted, within ``ttl_s`` seconds; it may
    carry a one-time secret (a new API token), so it lives in memory only."""

    def __init__(self, ttl_s: float = 300):
        self.ttl_s = ttl_s
        self._items: dict[str, tuple[str, float, dict]] = {}
        self._lock = threading.Lock()

    def put(self, username: str, **context) -> str:
        key = secrets.token_urlsafe(16)
        with self._lock:
            self._forget_expired()
            self._items[key] = (username, time.monotonic() + self.ttl_s, context)
        return key

    def pop(self, key: str, username: str) -> dict:
        with self._lock:
            self._forget_expired()
            item = self._items.get(key)
            if item is None or item[0] != username:
                return {}
            del self._items[key]
        return item[2]

    def _forget_expired(self) -> None:
        now = time.monotonic()
        self._items = {k: v for k, v in self._items.items() if v[1] > now}


def render(request: Request, template: str, code: int = 200, **context) -> HTMLResponse:
    user = getattr(request.state, "user", None)
    nav = [(href, label) for href, label, role in NAV if user and user.role.allows(role)]
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {"user": user, "nav": nav, "active": request.url.path, **context},
        status_code=code,
    )


def install_refusals(app: FastAPI) -> None:
    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if wants_html(request):
            return render(
                request,
                "refused.html",
                401,
                title="Sign-in needed",
                message="This page is for support staff. Please sign in.",
                next=return_to(request),
            )
        return JSONResponse(
            {"error": {"code": "not_signed_in", "message": "Sign in or send an API token."}},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        message = f"This needs the {exc.needed.value} role, which your account does not have."
        if wants_html(request):
            request.state.user = current_user(request)
            return render(request, "refused.html", 403, title="Not allowed", message=message)
        return JSONResponse({"error": {"code": "forbidden", "message": message}}, status_code=403)


# How an HTTP error is named in an API error body, and titled on a page.
HTTP_ERRORS = {
    400: ("bad_request", "Bad request"),
    403: ("forbidden", "Not allowed"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Not allowed"),
    409: ("conflict", "Conflict"),
    413: ("too_large", "Too large"),
    415: ("unsupported_media_type", "Not JSON"),
    422: ("invalid_request", "Bad request"),
}


def install_error_pages(app: FastAPI) -> None:
    """Errors the routes raise themselves (no such ticket, a bad filter): a page for a browser,
    ``{"error": {"code", "message"}}`` for the API, as every other refusal is answered."""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == BODY_NOT_DECODED:
            # A body that is not UTF-8 is as unreadable as one that is not JSON: one answer.
            return _error(request, 422, NOT_JSON)
        return _error(request, exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        whole_body = any(tuple(e.get("loc", ())) == ("body",) for e in exc.errors())
        if whole_body and media and media != "application/json" and not media.endswith("+json"):
            # A form or plain text where the route reads JSON: say what to send.
            return _error(
                request, 415, "Send the body as JSON, with Content-Type: application/json."
            )
        return _error(request, 422, _validation_message(exc))


# FastAPI's detail for a body it could not decode (not UTF-8).
BODY_NOT_DECODED = "There was an error parsing the body"
NOT_JSON = "The request body is not valid JSON."


def _error(request: Request, status: int, message: str, headers=None) -> Response:
    code, title = HTTP_ERRORS.get(status, (f"http_{status}", "Something went wrong"))
    if wants_html(request):
        request.state.user = current_user(request)
        page = render(request, "refused.html", status, title=title, message=message)
        page.headers.update(headers or {})  # Allow on a 405
        return page
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _validation_message(exc: RequestValidationError) -> str:
    """One line a person can act on: each wrong field with what it must be."""
    parts = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return NOT_JSON
        where = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(where)
        message = error.get("msg", "invalid")
        if error.get("type") == "string_pattern_mismatch":  # not the pattern itself
            message = (
                "must be an email address like name@example.com"
                if field.endswith("email")
                else "is not in the expected form"
            )
        parts.append(f"{field}: {message}" if field else message)
    return "; ".join(parts) or "The request is not valid."


def _back_to_tickets(back: str) -> RedirectResponse:
    """Back to the staff page a ticket's button was on (a filtered list, a conversation)."""
    target = _safe_next(back)
    return RedirectResponse(target if target.startswith("/staff/") else "/staff/tickets", 303)


def _safe_next(target: str | None) -> str:
    # Only a path of this app: an absolute or scheme-relative URL would be an open redirect.
    # Browsers read a backslash as a slash ("/\\evil.example" is "//evil.example").
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/staff"


class TranscriptQuery(BaseModel):
    """The conversation filters of the staff list and export (query parameters)."""

    q: str = ""
    rating: Literal["", "up", "down", "none"] = ""
    handoff: Literal["", "yes", "no"] = ""
    since: str = ""
    until: str = ""

    def to_filter(self) -> SessionFilter:
        since, until = _day(self.since, "From"), _day(self.until, "To")
        if since and until and since > until:
            raise ValueError("From is after To: no conversation can match. Swap the dates.")
        return SessionFilter(
            rating=self.rating or None,
            handoff=None if not self.handoff else self.handoff == "yes",
            since=_moment(since),
            until=_moment(until, end=True),
            text=self.q.strip() or None,
        )


def _day(value: str, name: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise ValueError(f"{name} must be a date like 2026-01-31.") from None


def _moment(day: dt.date | None, end: bool = False) -> float | None:
    """The start of ``day`` in local time (of the day after, for the ``end`` of a range); None
    for no bound."""
    if day is None:
        return None
    try:
        return (dt.datetime.combine(day, dt.time()) + dt.timedelta(days=int(end))).timestamp()
    except (ValueError, OverflowError):
        # Out of the clock's range (0001-01-01, the day after 9999-12-31): every conversation
        # is after such a day, or before it.
        future = day.year > dt.MAXYEAR // 2
        if future == end:
            return None  # from the distant past, or up to the distant future: no bound
        return math.inf if future else -math.inf


def _transcript(conversations, session_id: str) -> list[dict]:
    ratings = conversations.feedback(session_id)
    rows = []
    for turn in conversations.turns(session_id):
        rating = ratings.get(turn.id)
        rows.append(
            {
                "turn_id": turn.id,
                "role": turn.role,
                "content": turn.content,
                "created_at": local_time(turn.created_at).isoformat(timespec="seconds"),
                "sources": turn.meta.get("sources", []),
                "handoff": bool(turn.meta.get("handoff")),
                "rating": rating.rating if rating else None,
                "comment": rating.comment if rating else "",
            }
        )
    return rows


# Most conversations one export holds.
EXPORT_MAX = 100_000


def _latest_ticket(conversations, session_id: str) -> dict | None:
    """The conversation's newest hand-off, with the contact the customer left, for exports."""
    found = conversations.tickets(session_id=session_id, limit=1)
    if not found:
        return None
    ticket = found[0]
    return {
        "id": ticket.id,
        "status": ticket.status,
        "reason": ticket.reason,
        "contact": ticket.contact,
        "created_at": local_time(ticket.created_at).isoformat(timespec="seconds"),
        "closed_at": (
            local_time(ticket.closed_at).isoformat(timespec="seconds") if ticket.closed_at else None
        ),
    }


def to_jsonl(conversations, sessions: list[SessionSummary]) -> str:
    lines = []
    for s in sessions:
        record = {
            "session_id": s.id,
            "channel": s.channel,
            "site": s.site,
            "handoff": s.handoff,
            "ticket": _latest_ticket(conversations, s.id),
            "turns": _transcript(conversations, s.id),
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    return "\n".join(lines) + ("\n" if lines else "")


def to_csv(conversations, sessions: list[SessionSummary]) -> str:
    out = io.StringIO()
    columns = ["session_id", "channel", "site", "turn_id", "role", "content", "created_at"]
    columns += ["sources", "handoff", "rating", "comment"]
    columns += ["ticket_id", "ticket_status", "contact_name", "contact_email"]
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for s in sessions:
        # A cell starting with = + - @ would run as a formula in a spreadsheet; a session id
        # is random and may start with "-".
        session = {"session_id": _no_formula(s.id), "channel": s.channel, "site": s.site}
        ticket = _latest_ticket(conversations, s.id)
        if ticket is not None:
            session |= {
                "ticket_id": ticket["id"],
                "ticket_status": ticket["status"],
                "contact_name": _no_formula(ticket["contact"].get("name", "")),
                "contact_email": _no_formula(ticket["contact"].get("email", "")),
            }
        rows = _transcript(conversations, s.id)
        if not rows:  # a hand-off asked for before any message: one row says so
            writer.writerow(session | {"handoff": s.handoff})
        for row in rows:
            row["sources"] = _no_formula(" ".join(row["sources"]))
            row["content"] = _no_formula(row["content"])
            row["comment"] = _no_formula(row["comment"])
            writer.writerow(session | row)
    return out.getvalue()


def _no_formula(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class TicketOut(BaseModel):
    id: int
    session_id: str
    site: str | None
    reason: str
    contact: dict
    status: Literal["open", "done"]
    notifier: str
    delivery: str
    created_at: float
    closed_at: float | None


def staff_router(users: UserDirectory, desk: HandoffDesk, secure_cookies: bool) -> APIRouter:
    router = APIRouter()
    staff = Annotated[User, Depends(require(Role.STAFF))]

    @router.get("/login", include_in_schema=False)
    def login_page(request: Request, next: str = "/staff") -> HTMLResponse:
        request.state.user = None
        return render(request, "login.html", title="Sign in", next=_safe_next(next), error=None)

    @router.post("/login", include_in_schema=False)
    def login(
        request: Request,
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
        next: Annotated[str, Form()] = "/staff",
    ) -> Response:
        # Another site's form must not sign a browser in to an account of its choosing.
        _check_same_origin(request)
        try:
            _, token = users.sign_in(username.strip(), password, client_of(request))
        except AccountError as exc:
            request.state.user = None
            code = 429 if exc.code == "too_many_attempts" else 401
            return render(
                request, "login.html", code, title="Sign in", next=_safe_next(next),
                error=exc.message,
            )  # fmt: skip
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
            max_age=users.settings.session_max_hours * 3600,
        )
        return response

    @router.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        _check_same_origin(request, signed_in=COOKIE in request.cookies)
        users.sign_out(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @router.get("/staff", include_in_schema=False)
    def staff_home(user: staff) -> Response:
        return RedirectResponse("/staff/tickets", status_code=303)

    @router.get("/staff/tickets", include_in_schema=False)
    def tickets_page(
        request: Request,
        user: staff,
        status: Literal["open", "done", "all"] = "open",
        page: PageNumber = 1,
    ) -> HTMLResponse:
        wanted = None if status == "all" else status
        pager = Pager(page, desk.conversations.count_tickets(wanted), "/staff/tickets")
        tickets = desk.conversations.tickets(wanted, PAGE_SIZE, pager.offset)
        return render(
            request, "tickets.html", title="Hand-offs", tickets=tickets, status=status,
            reasons=REASONS, pager=pager, query=urlencode({"status": status}),
        )  # fmt: skip

    @router.post("/staff/tickets/{ticket_id}/done", include_in_schema=False)
    def ticket_done_form(
        ticket_id: RowId, user: staff, back: Annotated[str, Form()] = "/staff/tickets"
    ) -> Response:
        _close(ticket_id, user)
        return _back_to_tickets(back)

    @router.post("/staff/tickets/{ticket_id}/reopen", include_in_schema=False)
    def ticket_reopen_form(
        ticket_id: RowId, user: staff, back: Annotated[str, Form()] = "/staff/tickets"
    ) -> Response:
        _reopen(ticket_id, user)
        return _back_to_tickets(back)

    @router.get("/staff/conversations", include_in_schema=False)
    def conversations_page(
        request: Request,
        user: staff,
        filters: Annotated[TranscriptQuery, Depends()],
        page: PageNumber = 1,
    ) -> HTMLResponse:
        try:
            where = filters.to_filter()
            pager = Pager(page, desk.conversations.count_sessions(where), "/staff/conversations")
            sessions = desk.conversations.list_sessions(
                replace(where, limit=PAGE_SIZE, offset=pager.offset)
            )
            error = None
        except ValueError as exc:
            sessions, error, pager = [], str(exc), Pager(1, 0, "/staff/conversations")
        query = urlencode({k: v for k, v in filters.model_dump().items() if v})
        return render(
            request, "conversations.html", title="Conversations", sessions=sessions,
            f=filters, query=query, error=error, pager=pager,
        )  # fmt: skip

    @router.get("/staff/conversations/export", include_in_schema=False)
    def export_conversations(
        request: Request,
        user: staff,
        filters: Annotated[TranscriptQuery, Depends()],
        format: Literal["csv", "jsonl"] = "csv",
    ) -> Response:
        try:
            where = filters.to_filter()
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        media_type = "text/csv" if format == "csv" else "application/x-ndjson"
        total = desk.conversations.count_sessions(where)
        if total > EXPORT_MAX:
            # Cut silently, the file would look complete.
            raise HTTPException(
                400,
                f"These filters match {total:,} conversations, more than the {EXPORT_MAX:,} one "
                "export may hold. Narrow them with the dates and export in parts.",
            )
        if request.scope.get(HEAD_ONLY):  # nothing is downloaded: no export, no audit entry
            return Response(media_type=media_type)
        sessions = desk.conversations.list_sessions(replace(where, limit=EXPORT_MAX))
        users.audit(user.username, "conversations.export", format, {"sessions": len(sessions)})
        body = (to_csv if format == "csv" else to_jsonl)(desk.conversations, sessions)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M")
        return Response(
            body,
            media_type=media_type,
            headers={
                "Content-Disposition": f'attachment; filename="conversations-{stamp}.{format}"'
            },
        )

    @router.get("/staff/conversations/{session_id}", include_in_schema=False)
    def conversation_page(request: Request, session_id: str, user: staff) -> HTMLResponse:
        conversations = desk.conversations
        session = conversations.get_session(session_id)
        if session is None:
            raise HTTPException(404, "No such conversation.")
        return render(
            request,
            "conversation.html",
            title=f"Conversation {session_id}",
            session=session,
            turns=conversations.turns(session_id),
            ratings=conversations.feedback(session_id),
            tickets=conversations.tickets(session_id=session_id),
            reasons=REASONS,
            handoff_reasons=HANDOFF_REASON_TEXT,
        )

    def _close(ticket_id: int, user: User):
        ticket = desk.conversations.get_ticket(ticket_id)
        if ticket is None:
            raise HTTPException(404, "No such ticket.")
        if ticket.status == "done":
            return ticket  # already done: its closing time and audit entry stand
        ticket = desk.close_ticket(ticket_id)
        users.audit(user.username, "ticket.done", str(ticket_id))
        return ticket

    def _reopen(ticket_id: int, user: User):
        ticket = desk.conversations.get_ticket(ticket_id)
        if ticket is None:
            raise HTTPException(404, "No such ticket.")
        if ticket.status == "open":
            return ticket  # already open: nothing changes
        try:
            ticket = desk.reopen_ticket(ticket_id)
        except StillOpen as exc:
            raise HTTPException(409, str(exc)) from None
        users.audit(user.username, "ticket.reopen", str(ticket_id))
        return ticket

    @router.get(
        "/api/v1/tickets", response_model=list[TicketOut], tags=["staff"], summary="Hand-offs"
    )
    def list_tickets(
        response: Response,
        user: staff,
        status: Literal["open", "done", "all"] = "open",
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=ROW_ID_MAX)] = 0,
    ) -> list[TicketOut]:
        """Newest first, ``limit`` after the first ``offset``; the X-Total-Count header says
        how many there are in all."""
        wanted = None if status == "all" else status
        response.headers["X-Total-Count"] = str(desk.conversations.count_tickets(wanted))
        tickets = desk.conversations.tickets(wanted, limit, offset)
        return [TicketOut(**t.__dict__) for t in tickets]

    @router.post(
        "/api/v1/tickets/{ticket_id}/done",
        response_model=TicketOut,
        tags=["staff"],
        summary="Mark a hand-off done",
    )
    def close_ticket(ticket_id: RowId, user: staff) -> TicketOut:
        return TicketOut(**_close(ticket_id, user).__dict__)

    @router.post(
        "/api/v1/tickets/{ticket_id}/reopen",
        response_model=TicketOut,
        tags=["staff"],
        summary="Open a done hand-off again",
        responses={409: {"description": "Its conversation has another open hand-off"}},
    )
    def reopen_ticket(ticket_id: RowId, user: staff) -> TicketOut:
        return TicketOut(**_reopen(ticket_id, user).__dict__)

    # ----- admin: users, API tokens, audit log
    admin = Annotated[User, Depends(require(Role.ADMIN))]

    def admin_page(
        request: Request, code: int = 200, audit_page: int = 1, **context
    ) -> HTMLResponse:
        pager = Pager(audit_page, users.audit_count(), "/staff/admin")
        return render(
            request,
            "admin.html",
            code,
            title="Admin",
            users=users.users(),
            roles=[r.value for r in Role],
            tokens=users.tokens(),
            audit=users.audit_log(PAGE_SIZE, pager.offset),
            pager=pager,
            min_password=users.settings.min_password_chars,
            **{"error": None, "notice": None, "new_token": None, **context},
        )

    notices = PageNotices()

    def admin_done(user: User, **context) -> Response:
        """Back to the admin page (a reload repeats nothing), or, when the admin just ended
        their own sessions or rights, to where they can go on."""
        now = users.get(user.username)
        if now is None or now.role != Role.ADMIN:
            return RedirectResponse("/staff", status_code=303)
        if context.pop("signed_out", False):
            return RedirectResponse("/login?next=/staff/admin", status_code=303)
        key = notices.put(user.username, **context)
        return RedirectResponse(f"/staff/admin?done={key}", status_code=303)

    def admin_action(
        request: Request, user: User, action: Callable[[], str], *, signed_out: bool = False
    ) -> Response:
        try:
            notice = action()
        except AccountError as exc:
            return admin_page(request, 400, error=exc.message)
        return admin_done(user, notice=notice, signed_out=signed_out)

    @router.get("/staff/admin", include_in_schema=False)
    def admin_home(
        request: Request, user: admin, audit_page: PageNumber = 1, done: str = ""
    ) -> HTMLResponse:
        return admin_page(request, audit_page=audit_page, **notices.pop(done, user.username))

    @router.post("/staff/admin/users", include_in_schema=False)
    def admin_add_user(
        request: Request,
        user: admin,
        username: Annotated[str, Form()],
        role: Annotated[str, Form()],
        password: Annotated[str, Form()],
    ) -> Response:
        def add() -> str:
            added = users.add_user(username.strip(), password, role, actor=user.username)
            return f"Added {added.username} ({added.role.value})."

        return admin_action(request, user, add)

    @router.post("/staff/admin/users/{username}/role", include_in_schema=False)
    def admin_set_role(
        request: Request, username: str, user: admin, role: Annotated[str, Form()]
    ) -> Response:
        def change() -> str:
            changed = users.set_role(username, role, actor=user.username)
            return f"{changed.username} is now {changed.role.value}."

        return admin_action(request, user, change)

    @router.post("/staff/admin/users/{username}/password", include_in_schema=False)
    def admin_reset_password(
        request: Request, username: str, user: admin, password: Annotated[str, Form()]
    ) -> Response:
        def reset() -> str:
            users.set_password(username, password, actor=user.username)
            return f"Password of {username} reset; their sign-ins were ended."

        # Your own password too ends your sign-ins: sign in again with the new one.
        own = username.casefold() == user.username.casefold()
        return admin_action(request, user, reset, signed_out=own)

    @router.post("/staff/admin/users/{username}/remove", include_in_schema=False)
    def admin_remove_user(request: Request, username: str, user: admin) -> Response:
        def remove() -> str:
            users.remove(username, actor=user.username)
            return f"Removed {username}."

        return admin_action(request, user, remove)

    @router.post("/staff/admin/tokens", include_in_schema=False)
    def admin_create_token(
        request: Request,
        user: admin,
        username: Annotated[str, Form()],
        name: Annotated[str, Form()],
    ) -> Response:
        try:
            _, secret = users.create_token(username, name, actor=user.username)
        except AccountError as exc:
            return admin_page(request, 400, error=exc.message)
        return admin_done(user, new_token=(username, secret))

    @router.post("/staff/admin/tokens/{token_id}/revoke", include_in_schema=False)
    def admin_revoke_token(request: Request, token_id: RowId, user: admin) -> Response:
        def revoke() -> str:
            if not users.revoke_token(token_id, actor=user.username):
                raise AccountError("unknown_token", "That token does not exist or is revoked.")
            return f"Token {token_id} revoked."

        return admin_action(request, user, revoke)

    return router
