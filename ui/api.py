"""The customer REST API under /api/v1: sessions, chat (JSON or server-sent events), history,
feedback and hand-off, plus the health checks. Thin: every rule lives in CustomerChat."""

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from chatbot.customer_chat import (
    CustomerChat,
    CustomerError,
    CustomerEvent,
    CustomerSession,
    TicketEvent,
)
from chatbot.errors import MESSAGES, Refused
from chatbot.rate_limit import retry_after_header
from chatbot.service import ChatResult, DoneEvent, SourcesEvent, TokenEvent

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
# SQLite's integers are 64-bit: a larger id is refused as invalid, not failed on (a 500).
ROW_ID_MAX = 2**63 - 1
SORRY = "Sorry, something went wrong on our side. Please try again in a moment."
STATUS = {
    "site_not_allowed": 403,
    "origin_not_allowed": 403,
    "invalid_token": 401,
    "missing_token": 401,
    "session_expired": 401,
    "unknown_session": 404,
    "unknown_turn": 404,
    "rate_limited": 429,
    "invalid_rating": 400,
    "nothing_to_hand_off": 400,
    "empty_message": 400,
    "answer_in_progress": 409,
    "unreadable_message": 400,
    "message_too_long": 413,
    "request_too_large": 413,
    "unknown_channel": 400,
    "unknown_collection": 404,
    "unknown_upload": 404,
    "invalid_upload_id": 400,
    "upload_id_in_use": 409,
    "internal": 500,
}


# ----- request and response bodies (they make the OpenAPI schema)
class SiteInfo(BaseModel):
    name: str
    greeting: str
    max_message_chars: int


class SessionCreated(BaseModel):
    session_id: str
    session_token: str = Field(description="Send as 'Authorization: Bearer <token>'; shown once.")
    idle_timeout_s: int
    site: SiteInfo


class ChatRequest(BaseModel):
    session_id: str
    message: str


class SourceLink(BaseModel):
    source: str
    title: str
    url: str
    snippet: str = ""


class TicketInfo(BaseModel):
    ticket_id: int
    status: Literal["open", "done"]
    message: str
    created_at: float = Field(description="When it was opened (Unix time).")
    has_email: bool = Field(
        description="Whether the customer left an email address for a reply (without one, "
        "ask for it: POST /api/v1/handoff again with the contact)."
    )


class ChatAnswer(BaseModel):
    turn_id: int | None
    answer: str
    sources: list[SourceLink]
    handoff: bool
    handoff_reason: Literal["no_match", "off_topic", "declined"] | None = Field(
        description="Why the bot handed this turn off: no_match (nothing relevant found, or "
        "a question about the company's own compliance that the documents never mention), "
        "off_topic (about another company's product, or nothing the help center covers), "
        "declined (the sources did not answer it); null when it did not (a person the "
        "customer asked for is in handoff_ticket)."
    )
    handoff_ticket: TicketInfo | None
    cut: bool
    error: str | None
    usage: dict[str, int]
    timings_ms: dict[str, float]


class Message(BaseModel):
    id: int
    role: Literal["user", "assistant"]
    content: str
    sources: list[SourceLink]
    rating: Literal["up", "down"] | None
    created_at: float
    interrupted: bool = Field(
        False, description="An answer cut short because the customer left while it was written."
    )


class SessionHistory(BaseModel):
    session_id: str
    messages: list[Message]
    handoff_ticket: TicketInfo | None
    answer_in_progress: bool = Field(
        False, description="An answer to the last message is still being written (another tab)."
    )


class FeedbackRequest(BaseModel):
    session_id: str
    turn_id: int = Field(ge=1, le=ROW_ID_MAX)
    rating: Literal["up", "down"]
    comment: str = Field("", max_length=2000)


class FeedbackSaved(BaseModel):
    ok: bool
    handoff_ticket: TicketInfo | None


class Contact(BaseModel):
    name: str = Field("", max_length=200)
    email: str | None = Field(None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class HandoffRequest(BaseModel):
    session_id: str
    contact: Contact | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    retry_after: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 429)}


# ----- request context
def own_origin(request: Request) -> str:
    """The app's own origin as the browser sees it (the 'self' of a site's allowed origins)."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def client_address(request: Request) -> str:
    """The client's address. Behind a proxy (``rate_limits.trust_forwarded_for``) the server
    has already taken it from X-Forwarded-For: the last address there that is not one of
    ``rate_limits.trusted_proxies``, and only on a request that came from one of them."""
    return request.client.host if request.client else "unknown"


def error_response(code: str, message: str, retry_after: float | None = None) -> JSONResponse:
    body: dict = {"code": code, "message": message}
    headers = {}
    if retry_after is not None:
        body["retry_after"] = int(retry_after_header(retry_after))
        headers["Retry-After"] = retry_after_header(retry_after)
    return JSONResponse({"error": body}, status_code=STATUS.get(code, 400), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        return error_response(exc.code, exc.message, exc.retry_after)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # A closed tab or a dropped network during an upload: nothing was done with the part
        # that arrived, and it is no server fault. The answer reaches nobody.
        log.info(
            "%s %s: the client went away before its request was complete",
            request.method,
            request.url.path,
        )
        return error_response(
            "incomplete_request", "The request ended before all of it arrived. Send it again."
        )


def ticket_info(event: TicketEvent | None) -> TicketInfo | None:
    if event is None:
        return None
    ticket = event.ticket
    return TicketInfo(
        ticket_id=ticket.id,
        status=ticket.status,
        message=event.message,
        created_at=ticket.created_at,
        has_email=ticket.has_email,
    )


# ----- streaming
_END = object()
# Longest a read of a conversation waits for an answer being written to be stored, and how
# often it looks.
SETTLE_WAIT_S = 3.0
SETTLE_POLL_S = 0.05


async def turn_settled(chat: CustomerChat, session_id: str) -> bool:
    """Whether the conversation has no answer being written, after waiting up to
    SETTLE_WAIT_S for one to be stored. The wait polls on the event loop and holds no worker
    thread, so many reads of a busy conversation cannot take the server's threads."""
    deadline = time.monotonic() + SETTLE_WAIT_S
    while not chat.service.turn_settled(session_id, timeout_s=0):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(SETTLE_POLL_S)
    return True


async def run_in_thread(events: Callable[[], Iterator[CustomerEvent]]) -> AsyncIterator:
    """Iterate a blocking event stream on a thread of its own.

    When the consumer stops (the client disconnected), the thread closes the stream after the
    event it is waiting for, which closes the model's request too. Closing it from here instead
    could collide with a ``next()`` still running on the thread.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def put(item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def produce() -> None:
        stream = events()
        try:
            for event in stream:
                if stop.is_set():
                    break
                put(event)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which decides
            put(exc)
        finally:
            stream.close()  # type: ignore[attr-defined]
            put(_END)

    threading.Thread(target=produce, name="chat-stream", daemon=True).start()
    try:
        while (item := await queue.get()) is not _END:
            yield item
    finally:
        stop.set()


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def answer_json(result: ChatResult, links: list[SourceLink], ticket: TicketEvent | None) -> dict:
    return ChatAnswer(
        turn_id=result.turn_id,
        answer=result.answer,
        sources=links,
        handoff=result.handoff or ticket is not None,
        handoff_reason=result.handoff_reason or None,
        handoff_ticket=ticket_info(ticket),
        cut=result.cut,
        error=result.error,
        usage=result.usage,
        timings_ms=result.timings_ms,
    ).model_dump()


# ----- routes
def api_router(chat: CustomerChat) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["customer chat"], responses=ERRORS)
    max_chars = chat.settings.chat.max_message_chars

    def session_of(
        request: Request,
        session_id: str,
        authorization: Annotated[str | None, Header()] = None,
    ) -> CustomerSession:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CustomerError(
                "missing_token", "Send the session token as 'Authorization: Bearer <token>'."
            )
        return chat.authenticate(
            session_id, token.strip(), request.headers.get("origin"), own_origin(request)
        )

    def links(session: CustomerSession, sources) -> list[SourceLink]:
        return [SourceLink(**chat.source_link(session.site, s)) for s in sources]

    def site_info(site) -> SiteInfo:
        return SiteInfo(name=site.name, greeting=site.greeting, max_message_chars=max_chars)

    @router.get("/sites/{site_key}", response_model=SiteInfo, summary="A site's public settings")
    def get_site(site_key: str, request: Request) -> SiteInfo:
        site = chat.site(site_key, request.headers.get("origin"), own_origin(request))
        return site_info(site)

    @router.post(
        "/sessions", status_code=201, response_model=SessionCreated, summary="Start a conversation"
    )
    def create_session(
        request: Request, x_site_key: Annotated[str | None, Header()] = None
    ) -> SessionCreated:
        site = chat.site(x_site_key, request.headers.get("origin"), own_origin(request))
        record, token = chat.open_session(site, client_address(request))
        return SessionCreated(
            session_id=record.id,
            session_token=token,
            idle_timeout_s=chat.idle_timeout_s(),
            site=site_info(site),
        )

    @router.get(
        "/sessions/{session_id}", response_model=SessionHistory, summary="A conversation so far"
    )
    async def get_session(
        session_id: str, session: Annotated[CustomerSession, Depends(session_of)]
    ) -> SessionHistory:
        """The stored conversation. If an answer is being written, it waits a moment for it: a
        page reloaded mid-answer then gets what its old page was shown."""
        settled = await turn_settled(chat, session.record.id)
        return await run_in_threadpool(
            lambda: SessionHistory(
                session_id=session_id,
                messages=[Message(**m) for m in chat.history(session)],
                handoff_ticket=ticket_info(chat.open_ticket(session)),
                answer_in_progress=not settled,
            )
        )

    def start_turn(body: ChatRequest, request: Request, authorization: str | None):
        session = session_of(request, body.session_id, authorization)
        chat.service.check_message(body.message)
        chat.check_message_rate(session, client_address(request))
        return session

    @router.post("/chat", response_model=ChatAnswer, summary="Ask; the whole answer at once")
    def post_chat(
        body: ChatRequest,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict:
        session = start_turn(body, request, authorization)
        result, sources, ticket = None, [], None
        try:
            for event in chat.stream(session, body.message):
                if isinstance(event, SourcesEvent):
                    sources = event.sources
                elif isinstance(event, TicketEvent):
                    ticket = event
                elif isinstance(event, DoneEvent):
                    result = event.result
        except Refused:
            raise
        except Exception:  # noqa: BLE001 - a customer gets a sentence, never a stack trace
            log.exception("chat turn failed")
            return error_response("internal", SORRY)
        assert result is not None
        return answer_json(result, links(session, sources), ticket)

    @router.post(
        "/chat/stream",
        summary="Ask; the answer as server-sent events",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "Events: `sources`, `token` (many), then `done` with the "
                "finished answer, usage and timings; `error` with a code and message. A second, "
                "empty `sources` withdraws the first when the model found no answer in them.",
            }
        },
    )
    async def post_chat_stream(
        body: ChatRequest,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        session = await asyncio.to_thread(start_turn, body, request, authorization)

        async def events() -> AsyncIterator[str]:
            ticket = None
            async for event in run_in_thread(lambda: chat.stream(session, body.message)):
                if isinstance(event, Refused):
                    yield sse("error", {"code": event.code, "message": event.message})
                    return
                if isinstance(event, BaseException):
                    log.error("chat stream failed", exc_info=event)
                    yield sse("error", {"code": "internal", "message": SORRY})
                    return
                if isinstance(event, SourcesEvent):
                    sources = [s.model_dump() for s in links(session, event.sources)]
                    yield sse("sources", {"sources": sources})
                elif isinstance(event, TokenEvent):
                    yield sse("token", {"text": event.text})
                elif isinstance(event, TicketEvent):
                    ticket = event
                elif isinstance(event, DoneEvent):
                    result = event.result
                    if result.error and result.error in MESSAGES:
                        yield sse(
                            "error", {"code": result.error, "message": MESSAGES[result.error]}
                        )
                    done = answer_json(result, [], ticket)
                    done.pop("sources")
                    yield sse("done", done)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.post("/feedback", response_model=FeedbackSaved, summary="Rate one answer")
    def post_feedback(
        body: FeedbackRequest,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> FeedbackSaved:
        session = session_of(request, body.session_id, authorization)
        ticket = chat.rate(session, body.turn_id, body.rating, body.comment)
        return FeedbackSaved(ok=True, handoff_ticket=ticket_info(ticket))

    @router.post("/handoff", response_model=TicketInfo, summary="Ask for a person")
    def post_handoff(
        body: HandoffRequest,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> TicketInfo:
        session = session_of(request, body.session_id, authorization)
        # Counted as messages: each call may send the team an update.
        chat.check_message_rate(session, client_address(request))
        contact = body.contact.model_dump(exclude_none=True) if body.contact else None
        info = ticket_info(chat.handoff(session, contact))
        assert info is not None
        return info

    return router


def health_router(readiness: Callable[[], dict[str, str]]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process is up")
    def healthz() -> dict:
        return {"status": "ok"}

    @router.get("/readyz", summary="Model, knowledge store and database are reachable")
    def readyz() -> JSONResponse:
        checks = readiness()
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    return router
