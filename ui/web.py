"""The one web server: the REST API, the widget and its demo pages, and the Gradio chat page.

``create_web_app`` builds it from a ChatService; ``serve`` runs it with uvicorn.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import importlib.util
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import gradio as gr
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from markdown_it import MarkdownIt
from starlette.datastructures import MutableHeaders
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbot.customer_chat import CustomerChat
from chatbot.handoff import HandoffDesk
from chatbot.prompts import readable
from chatbot.redact import redact_logs
from chatbot.service import ChatService
from chatbot.settings import Settings
from chatbot.users import Role, UserDirectory
from knowledge.fences import DOCUMENT_FENCE_LINE_RE, CodeFences
from ui import gradio_app
from ui.api import PREFIX, api_router, health_router, install_error_handlers, own_origin
from ui.documents import documents_router, install_collection_refusal
from ui.playground import PLAYGROUND_MAX_UPLOAD, create_playground
from ui.staff import (
    HEAD_ONLY,
    StaffGate,
    current_user_from,
    install_error_pages,
    install_refusals,
    staff_router,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
GRADIO_JS = Path(gr.__file__).resolve().parent / "templates" / "frontend" / "gradio.js"
# JSON bodies of the API are small; anything bigger is refused before it is read.
MAX_API_BODY_BYTES = 64 * 1024
# The chat page sends the conversation it shows with each message: a long one fits.
MAX_PAGE_BODY_BYTES = 1024 * 1024
PLAYGROUND = "/staff/playground"
# When the sign-in ends (signed out in another tab, idle too long), the playground's own calls
# get 401 from the staff gate, which Gradio would show as "Connection to the server was lost":
# the page goes to the sign-in page instead, which leads back here.
PLAYGROUND_HEAD = """<script>
(() => {
  const signIn = "/login?next=" + encodeURIComponent("PLAYGROUND/");
  const fetched = window.fetch;
  window.fetch = async (...args) => {
    const response = await fetched(...args);
    if (response.status === 401 && new URL(response.url, location.href).origin === location.origin) {
      location.assign(signIn);
    }
    return response;
  };
})();
</script>""".replace("PLAYGROUND", PLAYGROUND)
CORS_HEADERS = "Authorization, Content-Type, X-Site-Key"
# Routes a widget on another website calls; staff routes get no CORS and no cross-site use.
CUSTOMER_PATHS = tuple(
    f"{PREFIX}/{name}" for name in ("sessions", "sites", "chat", "feedback", "handoff")
)


class SiteCORS:
    """CORS for the customer API, from the union of the sites' allowed origins.

    A preflight cannot say which site it is for (custom header values are not sent), so any
    site's origin passes here; each route then checks that the origin belongs to the site of
    the key or session it uses. Pure ASGI, so streamed answers are passed through untouched.
    """

    def __init__(self, app: ASGIApp, chat: CustomerChat):
        self.app = app
        self.chat = chat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(CUSTOMER_PATHS):
            await self.app(scope, receive, send)
            return
        limited = await _limited(scope, receive, send, MAX_API_BODY_BYTES)
        if limited is None:
            return
        receive = limited
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        own = own_origin(Request(scope))
        allowed = origin is not None and origin in self.chat.cors_origins(own)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            if not allowed:
                await _reply(send, 403, None)
                return
            await _reply(
                send,
                204,
                None,
                {
                    "access-control-allow-origin": origin,
                    "access-control-allow-methods": "GET, POST, OPTIONS",
                    "access-control-allow-headers": CORS_HEADERS,
                    "access-control-max-age": "600",
                    "vary": "Origin",
                },
            )
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start" and allowed:
                extra = [
                    (b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"access-control-expose-headers", b"Retry-After"),
                    (b"vary", b"Origin"),
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _limited(scope: Scope, receive: Receive, send: Send, limit: int) -> Receive | None:
    """``receive`` for a request body of at most ``limit`` bytes; None when the request was
    refused for its size (413, sent here) or the client left."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    too_large = {"error": {"code": "request_too_large", "message": "The request is too large."}}
    if int(headers.get("content-length") or 0) > limit:
        await _reply(send, 413, too_large)
        return None
    if "content-length" not in headers and scope["method"] in {"POST", "PUT", "PATCH"}:
        # A body sent in chunks announces no size: read it here, up to the limit.
        try:
            body = await _read_body(receive, limit)
        except _ClientGone:
            return None
        if body is None:
            await _reply(send, 413, too_large)
            return None
        return _replay(body, receive)
    return receive


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it passes ``limit`` bytes."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` once, then what the client sends (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(send: Send, status: int, body: dict | None, headers: dict | None = None) -> None:
    response = JSONResponse(body, status) if body is not None else Response(status_code=status)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


# Gradio's routes that take or serve files (uploads, recordings, media streams, a proxy) or
# belong to its development tools: the chat page uses none of them.
CLOSED_PAGE_ROUTES = tuple(
    f"/gradio_api/{route}"
    for route in (
        "upload",
        "file",
        "process_recording",
        "proxy=",
        "stream/",
        "custom_component/",
        "dev/",
        "vibe-edit",
        "undo-vibe-edit",
        "run-history",
        "runs",
    )
)

NO_FILES = {"error": {"code": "forbidden", "message": "No files here."}}


class ChatPageLimits:
    """The customer chat page takes and serves no files: Gradio's routes for them stay closed
    there (the playground's uploads share their folder). Its requests, which carry the
    conversation shown, are refused past ``MAX_PAGE_BODY_BYTES``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/gradio_api/"):
            if scope["path"].startswith(CLOSED_PAGE_ROUTES):
                await _reply(send, 403, NO_FILES)
                return
            limited = await _limited(scope, receive, send, MAX_PAGE_BODY_BYTES)
            if limited is None:
                return
            receive = limited
            if scope["method"] == "POST":
                # A file named in the data (a web address to fetch, a path) would be copied
                # into Gradio's cache before any handler runs: the page sends none.
                try:
                    body = await _read_body(receive, MAX_PAGE_BODY_BYTES)
                except _ClientGone:
                    return
                if body is None or _names_a_file(body):
                    await _reply(send, 403, NO_FILES)
                    return
                receive = _replay(body, receive)
        await self.app(scope, receive, send)


def _names_a_file(body: bytes) -> bool:
    """Whether a JSON request body holds an object with a ``path`` or ``url`` (Gradio's file
    data), at any depth; a body that is not JSON, or nests too deep to read, counts as one."""
    if not body.strip():
        return False
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return b"path" in body
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "path" in item or "url" in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# Staff pages are never shown inside another site's frame (clickjacking the Remove and Revoke
# buttons), and what they and the API return (transcripts, a new token) is not kept in caches.
FRAMELESS_PREFIXES = ("/staff", "/login", "/logout")
UNCACHED_PREFIXES = (*FRAMELESS_PREFIXES, PREFIX)
# Scripts, styles, fonts and images (the playground's and the API docs' own files) say nothing
# private and keep their caching.
CACHEABLE_TYPES = ("text/javascript", "application/javascript", "text/css", "font/", "image/")
# An answer's event stream is the reply to a POST, which no cache stores, and says no-cache
# itself; with no-store, Chromium sometimes kept no copy of the finished stream for its
# developer tools (seen in the browser tests).
STREAM_TYPE = "text/event-stream"


class PrivatePages:
    """Anti-framing and no-store headers on the staff pages and the API. Pure ASGI, so that the
    mounted playground gets them too; its scripts and styles keep their own caching."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(UNCACHED_PREFIXES):
            await self.app(scope, receive, send)
            return
        frameless = path.startswith(FRAMELESS_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                kind = headers.get("content-type", "")
                if not kind.startswith((*CACHEABLE_TYPES, STREAM_TYPE)):
                    headers["Cache-Control"] = "no-store"
                if frameless:
                    headers["X-Frame-Options"] = "DENY"
                    policy = headers.get("content-security-policy")
                    headers["Content-Security-Policy"] = (
                        f"{policy}; frame-ancestors 'none'" if policy else "frame-ancestors 'none'"
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>body{{font:16px/1.55 system-ui,sans-serif;"
        "max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1f2933}pre,code{background:"
        "#f1f3f5;border-radius:4px}pre{padding:.75rem;overflow:auto}a{color:#2456c7}</style>"
        f"</head><body>{body}</body></html>",
        status_code=status,
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


def pages(app: FastAPI, service: ChatService, chat: CustomerChat) -> None:
    """The widget script, its demo pages, and a readable copy of each help-center document."""
    # html=False: raw HTML in a document is shown as text, never passed to the browser.
    markdown = MarkdownIt("commonmark", {"html": False}).disable("image")

    script = (STATIC / "widget.js").read_bytes()
    script_gz = gzip.compress(script, compresslevel=9)

    @app.get("/widget.js", include_in_schema=False)
    def widget_js(request: Request) -> Response:
        headers = {"Cache-Control": "public, max-age=300", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(script_gz, media_type="text/javascript", headers=headers)
        return Response(script, media_type="text/javascript", headers=headers)

    @app.get("/widget/demo", include_in_schema=False)
    def widget_demo() -> FileResponse:
        return FileResponse(STATIC / "demo.html", media_type="text/html")

    @app.get("/widget/gradio", include_in_schema=False)
    def gradio_embed() -> FileResponse:
        return FileResponse(STATIC / "gradio_embed.html", media_type="text/html")

    @app.get("/widget/assets/{path:path}", include_in_schema=False)
    def gradio_assets(path: str) -> RedirectResponse:
        # gradio.js loads its styles relative to the page, here /widget/gradio.
        return RedirectResponse(f"/assets/{quote(path)}", status_code=308)

    @app.get("/gradio.js", include_in_schema=False)
    def gradio_js() -> FileResponse:
        return FileResponse(GRADIO_JS, media_type="text/javascript")

    @app.get("/help/{source:path}", include_in_schema=False)
    def help_document(source: str, site: str | None = None) -> HTMLResponse:
        # ``source`` is already percent-decoded: a name with "%41" in it stays as it is.
        # ?site=KEY: the article comes from that site's knowledge collection.
        known = chat.sites.get(site) if site is not None else None
        store = service.retriever_for(known.collection if known else None).store
        chunks = store.document_chunks(source) if site is None or known else []
        if not chunks:
            return _page(
                "Not found", "<h1>Not found</h1><p>No help article has this name.</p>", 404
            )
        # Chunks overlap by a few sentences; the preview shows each one once, in order.
        # Inline HTML reads as the sources in an answer do ("Press <kbd>Enter</kbd>": "Press
        # Enter", icons left out, images by their alt text); the rest is shown as text.
        body = "".join(
            f"<section>{markdown.render(_heading(readable(c.heading)) + readable(text))}</section>"
            for c, text in zip(chunks, _whole_code_blocks([c.text for c in chunks]), strict=True)
        )
        title = readable(chunks[0].title) or source
        return _page(title, f"<h1>{html.escape(title)}</h1>{body}")


def api_docs(app: FastAPI) -> None:
    """The interactive API docs at /api/v1/docs, with Swagger UI's files from the
    fastapi-offline package: nothing is fetched from the internet."""
    assets = Path(importlib.util.find_spec("fastapi_offline").origin).parent / "static"
    app.mount(f"{PREFIX}/docs-assets", StaticFiles(directory=assets), name="api-docs-assets")

    @app.get(f"{PREFIX}/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{PREFIX}/openapi.json",
            title=f"{app.title} – API",
            swagger_js_url=f"{PREFIX}/docs-assets/swagger-ui-bundle.js",
            swagger_css_url=f"{PREFIX}/docs-assets/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/docs-assets/favicon.png",
        )


def _whole_code_blocks(texts: list[str]) -> list[str]:
    """Consecutive parts of one document, each with whole code blocks: a block a part starts
    inside is opened again at its start, and one it ends inside is closed at its end, so that
    code is read (and shown) as code and the text after it as text."""
    fences = CodeFences(DOCUMENT_FENCE_LINE_RE)
    whole = []
    for text in texts:
        reopened = f"{fences.open}\n{text}" if fences.open else text
        for line in text.splitlines():
            fences.feed(line)
        whole.append(f"{reopened}\n{fences.open}" if fences.open else reopened)
    return whole


def _heading(heading: str) -> str:
    return f"## {heading}\n\n" if heading else ""


def create_web_app(
    service: ChatService, settings: Settings, *, clock: Callable[[], float] | None = None
) -> FastAPI:
    """The whole web app; a misconfigured hand-off notifier stops it with a NotifierError."""
    desk = HandoffDesk(service.conversations, settings.handoff)
    desk.check({settings.handoff.notifier, *(s.handoff_notifier for s in settings.sites)})
    chat = CustomerChat(service, settings, desk, clock=clock)
    users = UserDirectory(settings.data_dir / settings.memory.database, settings.auth)
    users.ensure_first_admin(os.environ)

    app = FastAPI(
        title="Support chatbot",
        summary="Customer chat with answers from your help center.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,  # served below from local files: FastAPI's page loads them from a CDN
        redoc_url=None,
    )
    app.state.chat = chat
    app.state.desk = desk
    app.state.users = users
    install_error_handlers(app)
    install_refusals(app)
    install_error_pages(app)
    install_collection_refusal(app)
    api_docs(app)
    app.include_router(api_router(chat))
    app.include_router(staff_router(users, desk, settings.auth.secure_cookies))
    app.include_router(documents_router(service, users))
    app.include_router(health_router(service.readiness))
    pages(app, service, chat)

    app.router.routes.append(_OwnRoutesFirst(list(app.router.routes)))

    # Below the API prefix, a path no route has is the API's 404, not the chat page's.
    @app.api_route(
        f"{PREFIX}/{{path:path}}",
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        include_in_schema=False,
    )
    def _no_such_api_route(path: str) -> None:
        raise HTTPException(404, "No such API route.")

    app.add_middleware(SiteCORS, chat=chat)
    app.add_middleware(ChatPageLimits)
    app.add_middleware(StaffGate, users=users, prefixes={PLAYGROUND: Role.STAFF})
    app.add_middleware(PrivatePages)

    playground = create_playground(service, settings)
    playground.queue(default_concurrency_limit=settings.server.concurrency)
    gr.mount_gradio_app(
        app,
        playground,
        path=PLAYGROUND,
        head=PLAYGROUND_HEAD,
        show_error=False,
        # Its only upload is a question set; without a cap any file of any size would land on
        # the server's disk.
        max_file_size=PLAYGROUND_MAX_UPLOAD,
        # Inside the mounted app, request.app is Gradio's own: use the directory in scope.
        auth_dependency=lambda request: getattr(
            current_user_from(users, request), "username", None
        ),
    )
    blocks = gradio_app.create_app(service, settings, chat)
    blocks.queue(default_concurrency_limit=settings.server.concurrency)
    # Gradio takes a file an input names for one a user uploaded only once the app has
    # launched; a mounted app never launches, so without this the playground would read any
    # file on the server that a browser names.
    playground.has_launched = blocks.has_launched = True
    return gr.mount_gradio_app(app, blocks, path="", show_error=False)


class _OwnRoutesFirst(BaseRoute):
    """A path some of ``routes`` serve, asked with a method none of them takes, gets a 405
    naming the methods they take. Without this, the chat page's mount at "/" (which takes every
    path and method) would answer with its own 404. HEAD on a path with a GET route gets that
    route's status and headers without the body; the scope says so (``HEAD_ONLY``) to a handler
    that would otherwise do work nobody receives."""

    def __init__(self, routes: list[BaseRoute]):
        self.routes = routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or not any(
            route.matches(scope)[0] is Match.PARTIAL for route in self.routes
        ):
            return Match.NONE, {}
        if scope["method"] == "HEAD":
            for route in self.routes:
                match, child = route.matches({**scope, "method": "GET"})
                if match is Match.FULL:
                    return Match.FULL, {**child, "head_as_get": route}
        # Asked of every route: routers included in the app take part as one route each.
        allowed = [
            method
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
            if any(
                route.matches({**scope, "method": method})[0] is Match.FULL for route in self.routes
            )
        ]
        if "GET" in allowed:
            allowed.append("HEAD")
        return Match.FULL, {"allowed_methods": ", ".join(sorted(allowed))}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope.get("head_as_get")
        if route is None:
            raise HTTPException(405, headers={"Allow": scope["allowed_methods"]})

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # A copy: the server's own scope keeps HEAD, so it sends no body either.
        await route.handle({**scope, "method": "GET", HEAD_ONLY: True}, receive, headers_only)


def serve(service: ChatService, settings: Settings, listening: socket.socket) -> None:
    """Serve the web app on ``listening``, a socket bound to the configured host and port."""
    import uvicorn

    app = create_web_app(service, settings)
    url = f"http://{settings.server.host}:{settings.server.port}"
    print(f"Chat page: {url}", flush=True)
    print(f"Widget demo: {url}/widget/demo · API docs: {url}{PREFIX}/docs", flush=True)
    print(f"Staff sign-in: {url}/login", flush=True)
    try:
        behind_proxy = settings.rate_limits.trust_forwarded_for
        config = uvicorn.Config(
            app,
            host=settings.server.host,
            port=settings.server.port,
            log_level="warning",
            timeout_graceful_shutdown=5,
            # Uvicorn would otherwise take the client address (and scheme) from X-Forwarded-*
            # headers of any local caller, and a customer could pick their own rate-limit key.
            proxy_headers=behind_proxy,
            # Only the proxies' own addresses: with "*", the leftmost address (the client's own
            # say-so) would win.
            forwarded_allow_ips=",".join(settings.rate_limits.trusted_proxies)
            if behind_proxy
            else None,
        )
        # The web server has set up its own log handlers: they leave secrets out too.
        redact_logs(settings.secret_env_names())
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or SIGTERM: a clean stop
            uvicorn.Server(config).run(sockets=[listening])
    finally:
        app.state.desk.close(wait=False)
