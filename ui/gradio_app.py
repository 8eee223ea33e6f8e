"""The customer chat page (Gradio): streams answers and lists their sources under each one."""

from __future__ import annotations

import html
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator

import gradio as gr
from markdown_it import MarkdownIt
from pydantic import ValidationError

from chatbot.conversations import StoredTurn, new_session_id
from chatbot.customer_chat import (
    CHAT_PAGE_SITE,
    CustomerChat,
    CustomerError,
    CustomerSession,
    TicketEvent,
)
from chatbot.errors import InputRejected
from chatbot.history import Turn
from chatbot.rate_limit import RateLimiter, whole_seconds
from chatbot.service import (
    SURROGATES,
    ChatService,
    DoneEvent,
    Source,
    SourcesEvent,
    TokenEvent,
    turn_from_stored,
)
from chatbot.settings import Settings
from ui.api import Contact

log = logging.getLogger(__name__)

SOURCES_TITLE = "Sources"
IMAGE_RE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
SORRY = "Sorry, something went wrong on our side. Please try again in a moment."
# Customer messages a page may carry into a new stored conversation after a restart.
MAX_SEEDED_MESSAGES = 20
# Held while a tab's stored conversation is looked up or started: a tab's chat turn and its
# hand-off form may both be the first to need it.
_STARTING = threading.Lock()
# Tabs remembered with the conversation id drawn for them, until their state holds it.
MAX_REMEMBERED_TABS = 10_000


class _TabIds:
    """The conversation id drawn for each tab (Gradio session) that has not been told it yet.

    A tab learns its id with the first answer's first words; the hand-off form pressed before
    then finds the same id here. Held under ``_STARTING``."""

    def __init__(self, most: int = MAX_REMEMBERED_TABS):
        self._ids: OrderedDict[str, str] = OrderedDict()
        self._most = most

    def draw(self, tab: str | None) -> str:
        if tab is None:
            return new_session_id()
        if tab not in self._ids:
            self._ids[tab] = new_session_id()
            if len(self._ids) > self._most:
                self._ids.popitem(last=False)
        self._ids.move_to_end(tab)
        return self._ids[tab]


_TAB_IDS = _TabIds()


def safe_markdown(text: str) -> str:
    """Text shown as Markdown with no raw HTML and no remote images, and shown as written.

    Outside code, every ``<`` and ``&`` gets a Markdown backslash, so it shows as itself and
    opens no tag or entity; inside code spans and fenced blocks, where Markdown shows text as
    it is, nothing is changed ("`https://<subdomain>.example.com`" keeps its brackets). Should
    the result still hold raw HTML for a CommonMark reader (a code span this function took for
    one that the reader does not), code gets the backslashes too.

    Idempotent, because the chat history travels back and forth between browser and server and
    is escaped again on every update.
    """
    shown = "".join(part if code else _escaped(part) for code, part in _code_and_text(text))
    # Raw HTML needs a "<": most answers have none and skip the parse.
    if "<" in text and _has_raw_html(shown):
        shown = _escaped(text)  # code too: it may then show a backslash, but never a tag
    return shown


# A fence opens a code block: three or more backticks (no backtick after them on the line) or
# tildes, indented by at most three spaces.
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}(?=[^`]*$)|~{3,})")
# An inline code span on one line, its opening backticks not escaped.
_CODE_SPAN_RE = re.compile(r"(?<![\\`])(`+)(?!`)(.+?)(?<!`)\1(?!`)")
# A "<" or "&" with no backslash of its own before it (an even number of backslashes escape
# each other, not it).
_OPENER_RE = re.compile(r"(?<!\\)((?:\\\\)*)([<&])")


def _code_and_text(text: str) -> Iterator[tuple[bool, str]]:
    """``text`` in pieces, each with whether it is code (a fenced block or a code span)."""
    fence = ""
    prose: list[str] = []
    code: list[str] = []
    for line in text.splitlines(keepends=True):
        if fence:
            code.append(line)
            closing = _FENCE_RE.match(line)
            if (
                closing
                and closing.group(1)[0] == fence[0]
                and len(closing.group(1)) >= len(fence)
                and not line.strip().strip(fence[0])
            ):
                yield True, "".join(code)
                fence, code = "", []
            continue
        opening = _FENCE_RE.match(line)
        if opening:
            yield from _spans("".join(prose))
            prose, fence, code = [], opening.group(1), [line]
        else:
            prose.append(line)
    yield from _spans("".join(prose))
    if code:
        yield True, "".join(code)  # a block left open runs to the end


def _spans(prose: str) -> Iterator[tuple[bool, str]]:
    start = 0
    for match in _CODE_SPAN_RE.finditer(prose):
        yield False, prose[start : match.start()]
        yield True, match.group(0)
        start = match.end()
    yield False, prose[start:]


def _escaped(prose: str) -> str:
    prose = _OPENER_RE.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", prose)
    prose = IMAGE_RE.sub(lambda m: f"[image: {m.group(1)}]", prose)
    # Any image syntax left (brackets inside the alt text, a reference image whose address is
    # defined on another line) loses its bracket, so it shows as text and loads nothing.
    return prose.replace("![", "!\\[")


def _has_raw_html(markdown: str) -> bool:
    for token in _COMMONMARK.parse(markdown):
        if token.type == "html_block":
            return True
        if any(child.type == "html_inline" for child in token.children or ()):
            return True
    return False


_COMMONMARK = MarkdownIt("commonmark")


def escape_customer_messages(chatbot: gr.Chatbot) -> gr.Chatbot:
    """Show the customer's own messages as text, never as HTML.

    ChatInterface adds the customer's message to the history itself, unescaped, and Gradio's
    sanitiser still lets tags such as ``<img>`` through. A subclass would make Gradio look for a
    custom front-end component, so the instance's postprocess is wrapped instead.
    """
    original = chatbot.postprocess

    def postprocess(value):
        for message in value or []:
            if isinstance(message, dict):
                if message.get("role") == "user" and isinstance(message.get("content"), str):
                    message["content"] = safe_markdown(message["content"])
            elif getattr(message, "role", None) == "user" and isinstance(message.content, str):
                message.content = safe_markdown(message.content)
        return original(value)

    chatbot.postprocess = postprocess  # type: ignore[method-assign]
    return chatbot


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text_of(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    return ""


def history_turns(history: list) -> list[Turn]:
    """The conversation so far as the service wants it, without the Sources boxes (and without
    broken characters, which could not be stored)."""
    turns = []
    for message in history or []:
        item = message if isinstance(message, dict) else getattr(message, "__dict__", {})
        metadata = item.get("metadata") or {}
        if metadata.get("title") == SOURCES_TITLE:
            continue
        role = item.get("role")
        if role in ("user", "assistant"):
            text = SURROGATES.sub("", unescaped(_text_of(item.get("content"))))
            turns.append(Turn(role, text))
    return turns


# Markdown's ASCII punctuation: each backslash-escaped, text shows as written.
_MARKDOWN_PUNCTUATION = re.compile(r"""([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])""")


def markdown_literal(text: str) -> str:
    """``text`` as Markdown that shows it as written: no link, emphasis, code or tag, however
    a document's title or heading is written ("Reset\\](https://…)" stays text)."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def sources_markdown(sources: list[Source], linked: bool = False) -> str:
    """The numbered sources; ``linked``: each title links to the article on the help page."""
    lines = []
    for number, source in enumerate(sources, start=1):
        title = f"**{markdown_literal(source.title or source.source)}**"
        if linked:
            # The page's link (a quoted path, which holds no space, bracket or parenthesis).
            title = f"[{title}]({CustomerChat.source_link(CHAT_PAGE_SITE, source)['url']})"
        heading = f" › {markdown_literal(source.heading)}" if source.heading else ""
        name = safe_markdown(source.source).replace("`", "'")
        lines.append(f"{number}. {title}{heading} — `{name}`")
    return "\n".join(lines)


# After a hand-off that left no email address, on the chat page (whose form is below the chat).
ASK_FOR_EMAIL = (
    'To get a reply by email, leave your address under "Talk to a person" below the chat.'
)


def _needs_email(event: TicketEvent) -> bool:
    """Whether a hand-off left the team no address to reply to."""
    return event.ticket.status == "open" and not event.ticket.has_email


def make_respond(
    service: ChatService, limiter: RateLimiter | None = None, chat: CustomerChat | None = None
):
    """The chat callback: one stored session per browser tab, kept in that tab's state.

    After a server restart a tab's state is gone, and Gradio hands the chat function an empty
    history too: the tab's next message starts a new stored conversation. With ``chat``,
    turns go through its hand-offs (asking for a person, the help center having no answer), and
    the ticket's confirmation is shown at the end of the answer.
    """

    def events(message: str, session_id: str) -> Iterator:
        if chat is None:
            return service.stream(message, session_id=session_id, channel="widget")
        record = service.conversations.get_session(session_id)
        assert record is not None
        return chat.stream(CustomerSession(record, CHAT_PAGE_SITE), message)

    def respond(
        message: str, history: list, session_id: str | None, request: gr.Request | None = None
    ) -> Iterator[tuple[list[gr.ChatMessage], str | None]]:
        client = request.client.host if request is not None and request.client else "unknown"
        wait = limiter.hit(f"client:{client}") if limiter is not None else 0
        if wait:
            note = f"You're sending messages quickly. Please wait {whole_seconds(wait)} s."
            yield [gr.ChatMessage(role="assistant", content=note)], session_id
            return
        try:
            tab = request.session_hash if request is not None else None
            session_id = _stored_session(service, session_id, history, tab=tab, sending=message)
            answer, sources, ticket = "", [], None
            for event in events(message, session_id):
                if isinstance(event, TicketEvent):
                    ticket = event
                elif isinstance(event, SourcesEvent):
                    sources = event.sources
                elif isinstance(event, TokenEvent):
                    answer += event.text
                    yield (
                        [gr.ChatMessage(role="assistant", content=safe_markdown(answer))],
                        session_id,
                    )
                elif isinstance(event, DoneEvent):
                    answer = event.result.answer
            if ticket is not None:
                # In the answer's own message: one message per stored answer keeps ratings on
                # the right turn. A "talk to a person" answer is the confirmation itself.
                if ticket.message not in answer:
                    answer = f"{answer}\n\n{ticket.message}"
                if _needs_email(ticket):
                    answer = f"{answer}\n\n{ASK_FOR_EMAIL}"
            messages = [gr.ChatMessage(role="assistant", content=safe_markdown(answer))]
            if sources:
                messages.append(
                    gr.ChatMessage(
                        role="assistant",
                        content=sources_markdown(sources, linked=chat is not None),
                        metadata={"title": SOURCES_TITLE, "status": "done"},
                    )
                )
            yield messages, session_id
        except InputRejected as exc:
            yield [gr.ChatMessage(role="assistant", content=exc.message)], session_id
        except Exception:  # noqa: BLE001 - a customer never sees a stack trace
            log.exception("chat turn failed")
            yield [gr.ChatMessage(role="assistant", content=SORRY)], session_id

    return respond


def _stored_session(
    service: ChatService,
    session_id: str | None,
    history: list,
    *,
    tab: str | None = None,
    sending: str | None = None,
) -> str:
    """The tab's stored conversation, or a new one holding what the page shows: on a new tab,
    after a restart (the tab's state is gone), after the trash button (nothing), after Undo or
    Retry (the turns that are left).

    ``tab``: the Gradio session, which keeps the id drawn for a new tab until its state holds
    it, so a chat turn and the hand-off form pressed before its answer starts share one
    conversation. ``sending``: the message this chat turn is about to store; when the form has
    already stored it as the conversation's last, unanswered message, it is taken off for the
    turn to store again with its answer (so it is neither lost nor stored twice).

    The page's messages come from the browser, so its answers are never taken for the bot's:
    a new conversation keeps the stored exchanges whose question is still on the page, in order,
    or, with nothing stored for the tab, only the customer's own messages, the last
    ``MAX_SEEDED_MESSAGES`` of them, each cut to the message limit. The page may show more than
    is stored (a message refused for sending too fast, or for having no text)."""
    asked = [t.content for t in history_turns(history) if t.role == "user"]
    with _STARTING:
        if session_id is None:
            session_id = _TAB_IDS.draw(tab)
        record = service.conversations.get_session(session_id)
        if record is None:
            limit = service.settings.chat.max_message_chars
            seed = [Turn("user", text[:limit]) for text in asked if text.strip()]
            return service.start_session(
                "widget",
                seed=seed[-MAX_SEEDED_MESSAGES:],
                session_id=session_id,
                site=CHAT_PAGE_SITE.key,
            )
        stored = service.conversations.turns(record.id)
        if (
            sending is not None
            and stored
            and stored[-1].role == "user"
            and _comparable(stored[-1].content) == _comparable(sending)
        ):
            service.conversations.delete_turn(record.id, stored[-1].id)
            stored = stored[:-1]
        kept = _still_shown(stored, [_comparable(text) for text in asked])
        if _questions(kept) == _questions(stored):  # nothing was taken off the page
            return record.id
        return service.start_session("widget", seed=kept, site=CHAT_PAGE_SITE.key)


def _questions(turns: list) -> int:
    return sum(1 for turn in turns if turn.role == "user")


def _still_shown(stored: list[StoredTurn], shown: list[str]) -> list[Turn]:
    """The stored exchanges (a customer message and the answers after it) whose message is on
    the page, looked for in order: each after the one before it."""
    kept, keep, position = [], False, 0
    for turn in stored:
        if turn.role == "user":
            comparable = _comparable(turn.content)
            keep = comparable in shown[position:]
            if keep:
                position = shown.index(comparable, position) + 1
        if keep:
            kept.append(turn_from_stored(turn))
    return kept


def _comparable(text: str) -> str:
    """A message's words, however often the page escaped it for display."""
    previous = None
    while previous != text:
        previous, text = text, html.unescape(text)
    return " ".join(re.findall(r"\w+", text.lower()))


def _shown(text: str) -> str:
    """Text as compared between the page and the store: unescaped, whitespace collapsed."""
    return " ".join(unescaped(text).split())


def unescaped(text: str) -> str:
    """A page's message as written: without the backslashes ``safe_markdown`` adds, nor the
    entities that pages opened before it used them may still hold."""
    return html.unescape(_MARKDOWN_ESCAPE.sub(r"\1", text))


_MARKDOWN_ESCAPE = re.compile(r"\\([<&\[])")


def answer_turn(history: list, index: int, answers: list[StoredTurn]) -> StoredTurn | None:
    """The stored answer that message ``index`` of the page shows, or None if it shows none.

    The page's messages and the stored answers are walked in step: a Sources box or a notice
    that was never stored (the rate-limit note, "please type a question", an apology after an
    error) is passed over instead of shifting every later answer onto the wrong turn, and a
    stored answer the page never showed is skipped. A shown answer starts with its stored text
    (a hand-off's confirmation may follow it).
    """
    position = 0
    for number, message in enumerate((history or [])[: index + 1]):
        item = message if isinstance(message, dict) else getattr(message, "__dict__", {})
        if item.get("role") != "assistant" or (item.get("metadata") or {}).get("title") == (
            SOURCES_TITLE
        ):
            continue
        shown = _shown(_text_of(item.get("content")))
        match = next(
            (
                p
                for p in range(position, len(answers))
                if (stored := _shown(safe_markdown(answers[p].content)))
                and shown.startswith(stored)
            ),
            None,
        )
        if number == index:
            return None if match is None else answers[match]
        if match is not None:
            position = match + 1
    return None


def make_rate(service: ChatService, chat: CustomerChat | None = None):
    """The thumbs of each answer: the rating is stored on that answer's turn. With ``chat``,
    enough thumbs-down in a row hand the conversation off, as in the widget."""

    def rate(history: list, session_id: str | None, like: gr.LikeData):
        index = like.index if isinstance(like.index, int) else like.index[0]
        if not session_id or like.liked not in (True, False):
            return None, gr.update(visible=False)
        answers = [t for t in service.conversations.turns(session_id) if t.role == "assistant"]
        turn = answer_turn(history, index, answers)
        if turn is None:
            return None, gr.update(visible=False)
        rating = "up" if like.liked else "down"
        record = service.conversations.get_session(session_id) if chat is not None else None
        if chat is None or record is None:
            service.conversations.set_feedback(session_id, turn.id, rating, "")
        elif ticket := chat.rate(CustomerSession(record, CHAT_PAGE_SITE), turn.id, rating, ""):
            gr.Info(f"{ticket.message} {ASK_FOR_EMAIL}" if _needs_email(ticket) else ticket.message)
        return turn.id, gr.update(visible=True, value="")

    def comment(session_id: str | None, turn_id: int | None, rating_text: str):
        if not session_id or turn_id is None or not rating_text.strip():
            return gr.update(visible=False)
        ratings = service.conversations.feedback(session_id)
        if turn_id in ratings:
            service.conversations.set_feedback(
                session_id, turn_id, ratings[turn_id].rating, rating_text.strip()[:2000]
            )
        gr.Info("Thanks for your feedback!")
        return gr.update(visible=False, value="")

    return rate, comment


def make_request_person(service: ChatService, chat: CustomerChat, limiter: RateLimiter):
    """The "Talk to a person" form: opens (or updates) the conversation's ticket with the
    customer's optional name and email, as the widget's button does."""

    def request_person(
        name: str,
        email: str,
        history: list,
        session_id: str | None,
        request: gr.Request | None = None,
    ):
        if not any(t.role == "user" for t in history_turns(history)):
            gr.Warning(
                "Please type your question in the chat first, so our team knows what it's about."
            )
            return session_id, gr.update()
        try:
            contact = Contact(name=name.strip(), email=email.strip() or None)
        except ValidationError:
            gr.Warning("Please check the email address (like name@example.com), or leave it empty.")
            return session_id, gr.update()
        client = request.client.host if request is not None and request.client else "unknown"
        # Counted as a message, as in the widget: each request may send the team an update.
        wait = limiter.hit(f"client:{client}")
        if wait:
            gr.Warning(f"You're sending requests quickly. Please wait {whole_seconds(wait)} s.")
            return session_id, gr.update()
        try:
            tab = request.session_hash if request is not None else None
            session_id = _stored_session(service, session_id, history, tab=tab)
            record = service.conversations.get_session(session_id)
            assert record is not None
            ticket = chat.handoff(
                CustomerSession(record, CHAT_PAGE_SITE), contact.model_dump(exclude_none=True)
            )
        except CustomerError as exc:  # the page showed a message that was never stored
            gr.Warning(exc.message)
            return session_id, gr.update()
        except Exception:  # noqa: BLE001 - a customer never sees a stack trace
            log.exception("hand-off from the chat page failed")
            gr.Warning(SORRY)
            return session_id, gr.update()
        return session_id, gr.update(value=safe_markdown(ticket.message), visible=True)

    return request_person


def create_app(
    service: ChatService, settings: Settings, chat: CustomerChat | None = None
) -> gr.Blocks:
    """The chat page as a Gradio Blocks app; each browser tab keeps its own conversation.

    ``chat`` (the web app's customer chat) adds hand-offs to a person."""
    with gr.Blocks(title="Support chat", analytics_enabled=False) as app:
        gr.Markdown(
            "## Support chat\nAsk a question about our product. Answers cite the help center."
        )
        # The tab's stored conversation id, set with its first answer (see _stored_session).
        session = gr.State(None)
        rated_turn = gr.State(None)
        chatbot = escape_customer_messages(
            gr.Chatbot(
                height=560,
                label="Support assistant",
                sanitize_html=True,
                placeholder="Ask a question about our product.",
            )
        )
        limiter = RateLimiter(settings.rate_limits.per_client_per_minute)
        gr.ChatInterface(
            fn=make_respond(service, limiter, chat),
            additional_inputs=[session],
            additional_outputs=[session],
            chatbot=chatbot,
            # No max_length: the browser would cut a long paste without a word and send the
            # rest. The whole message is sent, stays on the page, and is answered with the limit.
            textbox=gr.Textbox(placeholder="Type your question…", submit_btn=True),
            concurrency_limit=settings.server.concurrency,
            save_history=False,
        )
        feedback = gr.Textbox(
            label="Tell us more about your rating (optional)",
            placeholder="What was missing or wrong?",
            max_lines=3,
            visible=False,
            elem_id="rating-comment",
        )
        rate, comment = make_rate(service, chat)
        chatbot.like(rate, inputs=[chatbot, session], outputs=[rated_turn, feedback])
        feedback.submit(comment, inputs=[session, rated_turn, feedback], outputs=[feedback])
        if chat is not None:
            with gr.Accordion("Talk to a person", open=False, elem_id="handoff"):
                gr.Markdown(
                    "Our support team will see this conversation. Leave an email address if "
                    "you'd like a reply by email."
                )
                with gr.Row():
                    name = gr.Textbox(label="Name (optional)", max_length=200)
                    email = gr.Textbox(label="Email (optional)", max_length=254, type="email")
                ask = gr.Button("Ask for a person", elem_id="ask-person")
                confirmation = gr.Markdown(visible=False, elem_id="handoff-confirmation")
            ask.click(
                make_request_person(service, chat, limiter),
                inputs=[name, email, chatbot, session],
                outputs=[session, confirmation],
                api_name="request_person",
            )
    return app
