"""Staff sign-in and the staff pages and API: who may do what is checked on every route.

Anonymous callers get 401, signed-in callers without the role 403. A browser signs in with a
form and keeps an HttpOnly, SameSite=Strict cookie; programs send an API token as
``Authorization: Bearer cbt_...``.
"""

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from chatbot.handoff import REASONS, HandoffDesk
from chatbot.users import AccountError, Role, User, UserDirectory

COOKIE = "chatbot_staff"
TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
TEMPLATES.env.filters["when"] = lambda ts: (
    dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else ""
)
# (path, label, role needed to see it in the menu)
NAV = [
    ("/staff/playground/", "Playground", Role.STAFF),
    ("/staff/conversations", "Conversations", Role.STAFF),
    ("/staff/tickets", "Hand-offs", Role.STAFF),
    ("/staff/documents", "Documents", Role.CONTENT_OWNER),
    ("/staff/admin", "Admin", Role.ADMIN),
]


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
            _check_same_origin(request)
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
                if refusal is not None:
                    if scope["type"] == "websocket":
                        await send({"type": "websocket.close", "code": 1008})
                        return
                    code, title, message = refusal
                    request.state.user = user
                    response = render(
                        request, "refused.html", code, title=title, message=message, next=path
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def current_user_from(users: UserDirectory, request: Request) -> User | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return users.token_user(token.strip())
    return users.session_user(request.cookies.get(COOKIE))


def _check_same_origin(request: Request) -> None:
    # The cookie is SameSite=Strict already; this also refuses forms posted from other origins
    # by browsers that send Origin.
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin and origin != own:
        raise HTTPException(403, "Cross-site request refused.")


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", "text/html"
    )


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
        if _wants_html(request):
            return render(
                request,
                "refused.html",
                401,
                title="Sign-in needed",
                message="This page is for support staff. Please sign in.",
                next=request.url.path,
            )
        return JSONResponse(
            {"error": {"code": "not_signed_in", "message": "Sign in or send an API token."}},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        message = f"This needs the {exc.needed.value} role, which your account does not have."
        if _wants_html(request):
            request.state.user = current_user(request)
            return render(request, "refused.html", 403, title="Not allowed", message=message)
        return JSONResponse({"error": {"code": "forbidden", "message": message}}, status_code=403)


def _safe_next(target: str | None) -> str:
    # Only a path of this app: an absolute or scheme-relative URL would be an open redirect.
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/staff"


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
        users.sign_out(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @router.get("/staff", include_in_schema=False)
    def staff_home(user: staff) -> Response:
        return RedirectResponse("/staff/tickets", status_code=303)

    @router.get("/staff/tickets", include_in_schema=False)
    def tickets_page(
        request: Request, user: staff, status: Literal["open", "done", "all"] = "open"
    ) -> HTMLResponse:
        tickets = desk.conversations.tickets(None if status == "all" else status)
        return render(
            request, "tickets.html", title="Hand-offs", tickets=tickets, status=status,
            reasons=REASONS,
        )  # fmt: skip

    @router.post("/staff/tickets/{ticket_id}/done", include_in_schema=False)
    def ticket_done_form(ticket_id: int, user: staff) -> Response:
        _close(ticket_id, user)
        return RedirectResponse("/staff/tickets", status_code=303)

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
        )

    def _close(ticket_id: int, user: User):
        ticket = desk.close_ticket(ticket_id)
        if ticket is None:
            raise HTTPException(404, "No such ticket.")
        users.audit(user.username, "ticket.done", str(ticket_id))
        return ticket

    @router.get(
        "/api/v1/tickets", response_model=list[TicketOut], tags=["staff"], summary="Hand-offs"
    )
    def list_tickets(
        user: staff, status: Literal["open", "done", "all"] = "open"
    ) -> list[TicketOut]:
        tickets = desk.conversations.tickets(None if status == "all" else status)
        return [TicketOut(**t.__dict__) for t in tickets]

    @router.post(
        "/api/v1/tickets/{ticket_id}/done",
        response_model=TicketOut,
        tags=["staff"],
        summary="Mark a hand-off done",
    )
    def close_ticket(ticket_id: int, user: staff) -> TicketOut:
        return TicketOut(**_close(ticket_id, user).__dict__)

    return router
