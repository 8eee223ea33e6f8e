"""The chat service: one object that the web pages, the CLI and the API all call."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from langchain_core.language_models import BaseChatModel

import knowledge
from chatbot.chain import build_answer_chain, build_prompt
from chatbot.conversations import ConversationStore, SQLiteConversationStore, StoredTurn
from chatbot.errors import (
    MESSAGES,
    SOURCES_MAY_HELP,
    SOURCES_STILL_SHOWN,
    InputRejected,
    classify,
    shows_nothing,
)
from chatbot.history import Turn
from chatbot.length_policy import DEFAULT_STYLE, LengthPolicy, SentenceCutter, closing_fence
from chatbot.memory import ConversationMemory
from chatbot.prompts import (
    HANDOFF_ANSWER,
    HANDOFF_OFFER,
    NO_ANSWER_TEXT,
    context_blocks,
    is_decline,
)
from chatbot.providers import ModelProbe, model_probe, token_limit
from chatbot.query import search_queries, standalone_query
from chatbot.settings import Channel, ChannelPolicySettings, Provider, Settings, SiteSettings
from chatbot.small_talk import DETAIL_REPLY, SMALL_TALK_REPLIES, needs_detail, small_talk_reply
from chatbot.tokens import EstimatingCounter, TokenCounter
from knowledge.ingest import IngestReport, ingest_paths
from knowledge.loaders import LoadLimits
from knowledge.macros import readable
from knowledge.off_topic import (
    BUNDLED_COMPLIANCE,
    BUNDLED_EXAMPLES,
    BUNDLED_PRODUCTS,
    ComplianceNames,
    OffTopicExamples,
    OffTopicMatch,
    OtherProducts,
)
from knowledge.retriever import DocumentHit, FusionWeights, HybridRetriever, WordCoverage
from knowledge.store import KnowledgeStore

log = logging.getLogger(__name__)

SAMPLE_KNOWLEDGE_DIR = Path(knowledge.__file__).resolve().parent / "sample_help"
SNIPPET_CHARS = 240
# A question in the documents' own words can be off-topic only when it has at least this many
# topic words and no passage holds more than this share of them: a two-word question ("does
# your company know my location") easily has its words in two passages.
KNOWN_WORDS_MIN_TOPIC_WORDS = 3
KNOWN_WORDS_MAX_COVERAGE = 0.5
# Why a turn was handed off without an answer (ChatResult.handoff_reason).
NO_MATCH = "no_match"  # no document reached the relevance threshold
OFF_TOPIC = "off_topic"  # names an unmentioned product, or is closer to an off-topic example
DECLINED = "declined"  # the model found no answer in the sources
# How the staff pages name them.
HANDOFF_REASON_TEXT = {
    NO_MATCH: "nothing relevant found",
    OFF_TOPIC: "off-topic",
    DECLINED: "the model found no answer",
}
# Streamed pieces are about one token each; past max_tokens by this many, the stream is closed.
MAX_TOKENS_SLACK = 8


@dataclass(frozen=True)
class Source:
    source: str
    title: str
    score: float
    snippet: str
    heading: str = ""


@dataclass(frozen=True)
class AnswerOptions:
    """Per-request overrides (the staff playground); None keeps the configured value."""

    top_k: int | None = None
    relevance_threshold: float | None = None
    temperature: float | None = None
    length_policy: bool | None = None
    # A site's own length policy, instructions and knowledge collection (the widget's sites).
    channel_policy: ChannelPolicySettings | None = None
    instructions: str = ""
    collection: str | None = None
    # Keep the exact messages sent to the model in the result (playground, benchmarks).
    trace: bool = False
    # Hand-off reasons (NO_MATCH, OFF_TOPIC, DECLINED) for which the caller opens a ticket at
    # once: the answer then does not ask whether the customer wants a person.
    ticket_on: frozenset[str] = frozenset()


def site_options(site: SiteSettings, base: AnswerOptions | None = None) -> AnswerOptions:
    """``base`` with a site's own length policy, instructions and knowledge collection."""
    return replace(
        base or AnswerOptions(),
        channel_policy=site.length_policy,
        instructions=site.instructions,
        collection=site.collection,
    )


@dataclass
class ChatResult:
    """One answered turn, as the CLI prints it and the pages show it."""

    answer: str
    sources: list[Source]
    handoff: bool
    usage: dict[str, int] = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0}
    )
    timings_ms: dict[str, float] = field(
        default_factory=lambda: {"retrieve": 0.0, "memory": 0.0, "first_token": 0.0, "total": 0.0}
    )
    query: str = ""
    error: str | None = None
    channel: str = Channel.WIDGET.value
    session_id: str | None = None
    cut: bool = False
    policy: dict = field(default_factory=dict)
    prompt_tokens_by_part: dict[str, int] = field(default_factory=dict)
    # Tokens that were free for the summary and recent turns in this request.
    memory_budget: int = 0
    prompt_messages: list[dict] | None = None
    # The stored answer's id (sessions only), which ratings refer to.
    turn_id: int | None = None
    # With handoff: NO_MATCH, OFF_TOPIC or DECLINED.
    handoff_reason: str = ""
    # With OFF_TOPIC: the other companies' products the question named that no document does,
    # or (product_itself) that it asked about for themselves: "cancel my Slack plan".
    other_products: list[str] = field(default_factory=list)
    product_itself: bool = False
    # With NO_MATCH: the regulations and certifications the question named that no document
    # does ("is it HIPAA compliant?"); a person answers those.
    compliance: list[str] = field(default_factory=list)
    # A greeting, thanks or goodbye, answered without a search or a model call.
    small_talk: bool = False
    # A message that named no topic ("it doesn't work") and found nothing: the customer was
    # asked what they were doing instead of being handed off.
    asked_detail: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sources"] = [
            {k: s[k] for k in ("source", "title", "score", "snippet")} for s in data["sources"]
        ]
        return data


@dataclass(frozen=True)
class SourcesEvent:
    sources: list[Source]


@dataclass(frozen=True)
class TokenEvent:
    text: str


@dataclass(frozen=True)
class DoneEvent:
    result: ChatResult


ChatEvent = SourcesEvent | TokenEvent | DoneEvent


@dataclass(frozen=True)
class Retrieval:
    query: str
    hits: list[DocumentHit]
    handoff: bool
    # With handoff: NO_MATCH or OFF_TOPIC.
    reason: str = ""
    # The off-topic example closest to the question, when the check ran (it runs only for a
    # question with a word that no document uses).
    off_topic: OffTopicMatch | None = None
    # Other companies' products the question names and no document mentions (OFF_TOPIC), or,
    # with product_itself, that the documents mention but the question asks about for
    # themselves (their settings, account or plan).
    other_products: tuple[str, ...] = ()
    product_itself: bool = False
    # With NO_MATCH: the regulations and certifications the question names that no document
    # mentions ("hipaa").
    compliance: tuple[str, ...] = ()


@dataclass
class _Conversation:
    """The history a turn is answered with, and where (if anywhere) it is stored."""

    session_id: str | None
    turns: list[Turn]
    token_counts: list[int] | None
    summary: str = ""
    facts: list[str] = field(default_factory=list)
    # The bot's last answer was a hand-off (no answer, a ticket's confirmation): it asked
    # nothing, so a plain "no" after it is a goodbye.
    handed_off: bool = False


# Longest a message waits for the answer to the previous one in the same conversation.
TURN_WAIT_S = 300.0
ANSWER_IN_PROGRESS = (
    "Your previous message is still being answered. Please send this one again once that "
    "answer is complete."
)


class KeyedLocks:
    """A lock per key (a conversation), made when first wanted and dropped when nobody holds or
    waits for it."""

    def __init__(self, max_waiting: int = 1) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}
        self.max_waiting = max_waiting

    def wait_idle(self, key: str, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until nobody holds ``key``'s lock, without queueing for it;
        whether it is free now."""
        with self._guard:
            entry = self._locks.get(key)
        if entry is None:
            return True
        got = entry[0].acquire(timeout=timeout_s) if timeout_s > 0 else entry[0].acquire(False)
        if not got:
            return False
        entry[0].release()
        return True

    @contextmanager
    def hold(self, key: str, timeout_s: float | None = None) -> Iterator[None]:
        """Hold ``key``'s lock; InputRejected (answer_in_progress) after ``timeout_s``, or at
        once when ``max_waiting`` others already wait for it: each waiter holds a worker
        thread, so one visitor sending message after message cannot take them all."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            if users > self.max_waiting:
                raise InputRejected("answer_in_progress", ANSWER_IN_PROGRESS)
            self._locks[key] = (lock, users + 1)
        try:
            if not lock.acquire(timeout=-1 if timeout_s is None else timeout_s):
                raise InputRejected("answer_in_progress", ANSWER_IN_PROGRESS)
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class ChatService:
    """Answers questions from the knowledge store; safe to share across threads."""

    def __init__(
        self,
        settings: Settings,
        store: KnowledgeStore,
        retriever: HybridRetriever,
        model: BaseChatModel | None,
        *,
        conversations: ConversationStore | None = None,
        counter: TokenCounter | None = None,
        on_close: Callable[[], None] | None = None,
        model_probe: ModelProbe | None = None,
    ):
        self.settings = settings
        self.model_probe = model_probe
        self.store = store
        self.retriever = retriever
        self.model = model
        self.counter = counter or EstimatingCounter()
        self.conversations = conversations or SQLiteConversationStore(
            settings.data_dir / settings.memory.database
        )
        self.memory = ConversationMemory(
            self.conversations,
            self.counter,
            settings.memory,
            settings.llm.window,
            call_options=lambda limit: token_limit(settings.llm.provider, limit),
        )
        self._prompt = build_prompt()
        self._on_close = on_close
        self._lock = threading.Lock()
        self._turns_in_progress = KeyedLocks()
        self._retrievers: dict[str, HybridRetriever] = {}
        self._watcher: tuple[threading.Event, threading.Thread] | None = None

    # ----- input
    def check_message(self, question: str) -> str:
        text = validate_message(question, self.settings.chat.max_message_chars)
        # Characters are not tokens: 4,000 characters of Chinese or emoji can fill a small
        # model's whole window. A message must leave room for the instructions and the answer.
        llm = self.settings.llm
        room = max(llm.window // 2, llm.window - llm.max_output_tokens - MESSAGE_ROOM_TOKENS)
        if self.counter.count(text) > room:
            raise InputRejected(
                "message_too_long",
                "Your message is too long for me to read at once; please shorten it or send it "
                "in parts.",
            )
        return text

    # ----- sessions
    def start_session(
        self,
        channel: str = Channel.WIDGET.value,
        seed: Sequence[Turn] = (),
        session_id: str | None = None,
        site: str | None = None,
    ) -> str:
        """A new stored conversation, optionally continuing turns the caller already has.

        ``session_id``: an id drawn beforehand with ``new_session_id`` and not stored yet;
        ``site``: the key of the site (or page) the conversation is held on, shown to staff."""
        session = self.conversations.create_session(
            _channel(channel), site=site, session_id=session_id
        )
        for turn in seed:
            # An answer carried over keeps its sources (see turn_from_stored).
            known = turn.role == "assistant" and turn.sources is not None
            self.conversations.add_turn(
                session.id,
                turn.role,
                turn.content,
                self.counter.count(turn.content),
                {"sources": list(turn.sources or ())} if known else None,
            )
        return session.id

    def session_turns(self, session_id: str) -> list[StoredTurn]:
        return self.conversations.turns(session_id)

    def _conversation(self, session_id: str | None, history: Sequence[Turn]) -> _Conversation:
        if session_id is None:
            return _Conversation(None, list(history), None)
        try:
            session, stored = self.memory.load(session_id)
        except KeyError:
            raise InputRejected(
                "unknown_session", "This conversation has ended. Please start a new one."
            ) from None
        last = next((t for t in reversed(stored) if t.role == "assistant"), None)
        return _Conversation(
            session_id,
            [turn_from_stored(t) for t in stored],
            [t.tokens for t in stored],
            session.summary,
            session.facts,
            handed_off=bool(last and last.meta.get("handoff")),
        )

    # ----- policy
    def policy_for(self, channel: str, options: AnswerOptions | None = None) -> LengthPolicy:
        cfg = self.settings.length_policy
        channel_cfg = (options and options.channel_policy) or getattr(cfg, _channel(channel))
        enabled = (
            cfg.enabled
            if options is None or options.length_policy is None
            else options.length_policy
        )
        if not enabled:
            return LengthPolicy(channel, 0, self.settings.llm.max_output_tokens, "", enabled=False)
        return LengthPolicy(
            channel,
            channel_cfg.target_words,
            min(channel_cfg.max_tokens, self.settings.llm.max_output_tokens),
            channel_cfg.style or DEFAULT_STYLE,
        )

    # ----- retrieval
    def retrieve(
        self, question: str, history: Sequence[Turn] = (), options: AnswerOptions | None = None
    ) -> Retrieval:
        cfg = self.settings.retrieval
        options = options or AnswerOptions()
        threshold = (
            cfg.relevance_threshold
            if options.relevance_threshold is None
            else options.relevance_threshold
        )
        queries = search_queries(question, history, cfg.history_weight)
        retriever = self.retriever_for(options.collection)
        vector = retriever.query_vector(queries)
        hits = retriever.retrieve(queries, k=options.top_k or cfg.top_k, vector=vector)
        best = max((h.similarity for h in hits), default=None)
        query = standalone_query(queries)
        # "my profile photo on linkedin" is as close to "Change your profile picture" as "my
        # profile photo" is: only the name says that it is about another company's product.
        # Checked first, so that such a question counts as off-topic however far the articles
        # are (no ticket by default), not as a search that found nothing.
        products = retriever.unmentioned_products(question)
        if products:
            return Retrieval(query, hits, True, OFF_TOPIC, other_products=products)
        # "how do i mute a channel in slack" is as close to the help center's article on muting
        # as to anything, however well its documents cover an import from Slack. An article
        # about that product ("Sign in with GitHub") found first may answer it, though.
        products = retriever.products_asked_about(question, hits[0].title if hits else "")
        if products:
            return Retrieval(
                query, hits, True, OFF_TOPIC, other_products=products, product_itself=True
            )
        # "Is it HIPAA compliant?" sits close to a GDPR article; only a person can say what the
        # company has signed or been audited for, when the documents never name it.
        compliance = retriever.unmentioned_compliance(question)
        if compliance:
            return Retrieval(query, hits, True, NO_MATCH, compliance=compliance)
        if best is None or best < threshold:
            return Retrieval(query, hits, True, NO_MATCH)
        if retriever.off_topic is None:
            return Retrieval(query, hits, False)
        # A question with a word the help center never uses (another company's name, "hipaa",
        # "overdraft") is off-topic when an example is closer than any document by the margin.
        # One in the documents' own words needs an example far closer than any document, and
        # at least three topic words spread over the documents, no passage holding more than
        # half of them ("sql query to find duplicate emails in a table"): "i was charged twice"
        # is as far from the articles, and one of them says "you were charged twice". Most
        # questions have a passage with most of their words, and skip the comparison.
        unknown = tuple(retriever.unknown_words(question))
        margin = cfg.off_topic_margin if unknown else cfg.off_topic_known_words_margin
        if not unknown and (not margin or not _spread(retriever.word_coverage(question))):
            return Retrieval(query, hits, False)
        closest = retriever.closest_off_topic(queries, vector)
        if closest is None:
            return Retrieval(query, hits, False)
        closest = replace(closest, unknown_words=unknown)
        if closest.lead > margin:
            return Retrieval(query, hits, True, OFF_TOPIC, closest)
        return Retrieval(query, hits, False, off_topic=closest)

    @property
    def off_topic(self) -> OffTopicExamples | None:
        """The off-topic examples (None when the check is off); every collection uses them."""
        return self.retriever.off_topic

    def retriever_for(self, collection: str | None) -> HybridRetriever:
        """The retriever of a knowledge collection (a site may answer from its own)."""
        if not collection or collection == self.store.collection:
            return self.retriever
        with self._lock:
            if collection not in self._retrievers:
                store = KnowledgeStore(self.settings.data_dir, self.store.embeddings, collection)
                self._retrievers[collection] = _make_retriever(
                    store,
                    self.settings,
                    self.off_topic,
                    self.retriever.other_products,
                    self.retriever.compliance,
                )
            return self._retrievers[collection]

    @staticmethod
    def sources_of(hits: Sequence[DocumentHit]) -> list[Source]:
        return [
            Source(
                source=h.source,
                title=readable(h.title),
                score=round(h.similarity, 4),
                snippet=_snippet(h.chunks[0].text if h.chunks else ""),
                heading=h.chunks[0].heading if h.chunks else "",
            )
            for h in hits
        ]

    def retrieval_only(
        self, question: str, history: Sequence[Turn] = (), options: AnswerOptions | None = None
    ) -> ChatResult:
        """What a turn would retrieve and whether it would hand off, without calling the model."""
        started = time.perf_counter()
        found = self.retrieve(self.check_message(question), history, options)
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        result = ChatResult(
            answer="",
            sources=[] if found.handoff else self.sources_of(found.hits),
            handoff=found.handoff,
            query=found.query,
            handoff_reason=found.reason,
            other_products=list(found.other_products),
            product_itself=found.product_itself,
            compliance=list(found.compliance),
        )
        result.timings_ms.update(retrieve=elapsed, total=elapsed)
        if _asks_detail(found, question, history):
            result.handoff, result.handoff_reason, result.asked_detail = False, "", True
        return result

    # ----- answering
    def stream(
        self,
        question: str,
        history: Sequence[Turn] = (),
        *,
        session_id: str | None = None,
        channel: str = Channel.WIDGET.value,
        options: AnswerOptions | None = None,
    ) -> Iterator[ChatEvent]:
        """Sources first, then the answer piece by piece, then the finished result.

        With ``session_id`` the stored conversation is used (``history`` is ignored) and both
        turns are saved; the customer's message is saved before the model is called, so a
        failure loses nothing. Raises InputRejected before any work for a bad message.
        """
        question = self.check_message(question)
        channel = _channel(channel)
        if session_id is None:
            yield from self._stream(question, history, None, channel, options)
            return
        with self.one_turn_at_a_time(session_id):
            yield from self._stream(question, history, session_id, channel, options)

    def turn_settled(self, session_id: str, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for an answer being written in the conversation to be stored
        (finished, or cut short because its page was closed); False if one is still being
        written then. A page reloaded mid-answer thus reads the answer its old page left."""
        return self._turns_in_progress.wait_idle(session_id, timeout_s)

    def one_turn_at_a_time(self, session_id: str):
        """A context holding the conversation for one turn: a message sent while an answer is
        still being written (a double submit, a second tab) waits for it, and then sees it; after
        TURN_WAIT_S it is refused instead."""
        return self._turns_in_progress.hold(session_id, TURN_WAIT_S)

    def _stream(
        self,
        question: str,
        history: Sequence[Turn],
        session_id: str | None,
        channel: str,
        options: AnswerOptions | None,
    ) -> Iterator[ChatEvent]:
        started = time.perf_counter()
        conversation = self._conversation(session_id, history)
        if session_id is not None:
            self.conversations.add_turn(
                session_id, "user", question, self.counter.count(question), {"channel": channel}
            )
        memory_ms = (time.perf_counter() - started) * 1000
        last_answer = next(
            (t.content for t in reversed(conversation.turns) if t.role == "assistant"), ""
        )
        reply = small_talk_reply(question, "" if conversation.handed_off else last_answer)
        if reply is not None:
            yield from self._small_talk(reply, session_id, channel, started)
            return
        found = self.retrieve(question, conversation.turns, options)
        if _asks_detail(found, question, conversation.turns):
            yield from self._small_talk(DETAIL_REPLY, session_id, channel, started, detail=True)
            return
        result = ChatResult(
            answer="",
            sources=[],
            handoff=found.handoff,
            query=found.query,
            handoff_reason=found.reason,
            other_products=list(found.other_products),
            product_itself=found.product_itself,
            compliance=list(found.compliance),
            channel=channel,
            session_id=session_id,
        )
        result.timings_ms["retrieve"] = round((time.perf_counter() - started) * 1000 - memory_ms, 1)
        if found.handoff:
            ticket_opens = options is not None and found.reason in options.ticket_on
            result.answer = NO_ANSWER_TEXT if ticket_opens else HANDOFF_ANSWER
            yield SourcesEvent([])
            yield TokenEvent(result.answer)
        else:
            answering = self._answer(
                question, conversation, found, result, options, memory_ms, started
            )
            shown: list[str] = []
            try:
                for event in answering:
                    if isinstance(event, TokenEvent):
                        shown.append(event.text)
                    yield event
            except GeneratorExit:
                # The caller went away mid-answer (a closed tab, a dropped connection): closing
                # the model's stream cancels its request, and what was shown is kept.
                answering.close()
                result.answer, result.error = "".join(shown), "interrupted"
                result.usage["completion_tokens"] = self.counter.count(result.answer)
                result.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 1)
                if result.answer:  # an empty bubble would only confuse the next page load
                    self._save_answer(result)
                raise
        result.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 1)
        self._save_answer(result)
        yield DoneEvent(result)

    def _small_talk(
        self, reply: str, session_id: str | None, channel: str, started: float, detail=False
    ) -> Iterator[ChatEvent]:
        """A greeting, thanks or goodbye, answered in kind: no search, no model call; with
        ``detail``, the request for details to a message that named no topic (no model call)."""
        result = ChatResult(
            answer=reply, sources=[], handoff=False, channel=channel, session_id=session_id
        )
        result.small_talk, result.asked_detail = not detail, detail
        result.usage["completion_tokens"] = self.counter.count(reply)
        yield SourcesEvent([])
        yield TokenEvent(reply)
        result.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 1)
        self._save_answer(result)
        yield DoneEvent(result)

    def _answer(
        self,
        question: str,
        conversation: _Conversation,
        found: Retrieval,
        result: ChatResult,
        options: AnswerOptions | None,
        memory_ms: float,
        started: float,
    ) -> Iterator[ChatEvent]:
        if self.model is None:
            raise RuntimeError("this service was built without a chat model")
        policy = self.policy_for(result.channel, options)
        result.policy = {
            "channel": policy.channel,
            "enabled": policy.enabled,
            "target_words": policy.target_words,
            "max_tokens": policy.max_tokens,
        }
        plan_started = time.perf_counter()
        plan = self.memory.plan(
            render=lambda inputs: self._prompt.invoke(inputs).to_messages(),
            inputs={
                "policy": _instructions(policy, options),
                "question": question,
                "reminder": policy.reminder(),
            },
            context_blocks=context_blocks(found.hits),
            history=conversation.turns,
            history_tokens=conversation.token_counts,
            summary=conversation.summary,
            facts=conversation.facts,
            answer_reserve=policy.max_tokens,
        )
        result.timings_ms["memory"] = round(
            memory_ms + (time.perf_counter() - plan_started) * 1000, 2
        )
        result.prompt_tokens_by_part = plan.tokens
        result.memory_budget = plan.history_budget
        if options is not None and options.trace:
            roles = {"system": "system", "human": "user", "ai": "assistant"}
            result.prompt_messages = [
                {"role": roles.get(m.type, m.type), "content": str(m.content)}
                for m in plan.messages
            ]
        result.sources = self.sources_of(found.hits[: plan.hits_used])
        yield SourcesEvent(result.sources)

        call_options = token_limit(self.settings.llm.provider, policy.max_tokens)
        if options is not None and options.temperature is not None:
            call_options["temperature"] = options.temperature
        chain = build_answer_chain(self.model, **call_options)
        cutter = SentenceCutter(policy.max_tokens, self.settings.length_policy.holdback_tokens)
        raw: list[str] = []
        usage, truncated = None, False
        try:
            for chunk in chain.stream(plan.inputs):
                text = chunk.content if isinstance(chunk.content, str) else ""
                if len(raw) >= policy.max_tokens + MAX_TOKENS_SLACK:
                    # The server ignored the cap; closing the stream cancels the request.
                    truncated = True
                    break
                if text:
                    if not raw:
                        result.timings_ms["first_token"] = round(
                            (time.perf_counter() - started) * 1000, 1
                        )
                    raw.append(text)
                    shown = cutter.feed(text) if policy.enabled else text
                    if shown:
                        yield TokenEvent(shown)
                if chunk.usage_metadata:
                    usage = chunk.usage_metadata
                finish = (chunk.response_metadata or {}).get("finish_reason")
                if finish == "length":
                    truncated = True
                elif finish == "content_filter":
                    result.error = "content_filter"
        except Exception as exc:  # noqa: BLE001 - every model failure becomes a polite answer
            failure = classify(exc)
            log.warning("model call failed: %s (%s)", failure.code, failure.detail)
            result.error = failure.code
        if not raw and not result.error:
            log.warning("the model returned an empty answer")
            result.error = "unavailable"
        sources_note = None
        if result.error and result.sources:
            if result.error not in SOURCES_STILL_SHOWN:
                # After a refusal (a content filter, also one that stopped the answer midway,
                # whose shown part stays) the sources are withdrawn.
                result.sources = []
                yield SourcesEvent([])
            elif not raw:
                # Nothing was answered from them. While the model is away they may help the
                # customer, and the apology says so.
                sources_note = SOURCES_MAY_HELP
        if policy.enabled:
            rest, answer, result.cut = cutter.finish(truncated and not result.error)
            if rest:
                yield TokenEvent(rest)
            if cutter.emitted.rstrip() == answer:
                # Keep exactly what was streamed, trailing line breaks included.
                answer = cutter.emitted
        else:
            answer = "".join(raw)
        if fence := closing_fence(answer):
            answer += fence
            yield TokenEvent(fence)
        notes = []
        if not result.error and is_decline(answer):
            # The model found no answer in the sources: the turn is handed off like one whose
            # search found nothing, the sources are withdrawn (they did not answer it), and the
            # customer is offered a person (unless the caller opens a ticket at once).
            result.handoff = True
            result.handoff_reason = DECLINED
            result.sources = []
            yield SourcesEvent([])
            if options is None or DECLINED not in options.ticket_on:
                notes.append(HANDOFF_OFFER)
        elif result.cut:
            notes.append(self.settings.length_policy.more_detail_note)
        if result.error:
            notes.append(MESSAGES[result.error])
        if sources_note:
            notes.append(sources_note)
        for note in notes:
            addition = _paragraph_break(answer) + note
            answer += addition
            yield TokenEvent(addition)
        result.answer = answer
        result.usage = self._usage(usage, plan.prompt_tokens, "".join(raw))

    def _usage(self, reported, planned_prompt: int, raw_answer: str) -> dict[str, int]:
        if reported and reported.get("input_tokens"):
            self.counter.observe(planned_prompt, int(reported["input_tokens"]))
            return {
                "prompt_tokens": int(reported["input_tokens"]),
                "completion_tokens": int(reported.get("output_tokens", 0)),
            }
        return {
            "prompt_tokens": planned_prompt,
            "completion_tokens": self.counter.count(raw_answer),
        }

    def _save_answer(self, result: ChatResult) -> None:
        if result.session_id is None:
            return
        meta = {
            "channel": result.channel,
            "handoff": result.handoff,
            "handoff_reason": result.handoff_reason,
            "other_products": result.other_products,
            "product_itself": result.product_itself,
            "compliance": result.compliance,
            "small_talk": result.small_talk,
            "asked_detail": result.asked_detail,
            "cut": result.cut,
            "policy": result.policy,
            "error": result.error,
            "completion_tokens": result.usage.get("completion_tokens", 0),
            "sources": [s.source for s in result.sources],
            "source_details": [{"source": s.source, "title": s.title} for s in result.sources],
        }
        turn = self.conversations.add_turn(
            result.session_id, "assistant", result.answer, self.counter.count(result.answer), meta
        )
        result.turn_id = turn.id
        # After a failed turn the model is likely down: its summary would fail too.
        if self.model is not None and result.memory_budget and not result.error:
            self.memory.schedule_summary(result.session_id, result.memory_budget, self.model)

    def ask(self, question: str, history: Sequence[Turn] = (), **kwargs) -> ChatResult:
        """The whole answer at once."""
        for event in self.stream(question, history, **kwargs):
            if isinstance(event, DoneEvent):
                return event.result
        raise RuntimeError("the answer stream ended without a result")

    # ----- knowledge
    def ingest(
        self, paths: Sequence[Path], progress=None, prune: bool = False, file_progress=None
    ) -> IngestReport:
        cfg = self.settings.retrieval
        return ingest_paths(
            self.store,
            paths,
            chunk_size=cfg.chunk_size,
            chunk_overlap=cfg.chunk_overlap,
            limits=LoadLimits(cfg.max_file_bytes, cfg.max_pdf_pages),
            progress=progress,
            prune=prune,
            file_progress=file_progress,
        )

    # ----- health
    def prepare_search(self) -> None:
        """Build the search indexes of every configured collection, so that the first question
        after start-up does not wait for them."""
        for collection in self.settings.collections():
            self.retriever_for(collection).refresh()

    def readiness(self) -> dict[str, str]:
        """Whether the model, the knowledge store and the database answer: "ok" or the failure."""
        return {
            "model": _check(self._probe_model),
            "store": _check(self.store.chunk_count),
            "database": _check(lambda: self.conversations.get_session("readiness-probe")),
        }

    def _probe_model(self) -> None:
        if self.model is None:
            raise RuntimeError("no chat model is configured")
        if self.model_probe is not None:
            import httpx

            probe = self.model_probe
            httpx.get(probe.url, headers=probe.headers, timeout=2).raise_for_status()

    def keep_search_ready(self, every_s: float) -> None:
        """Check every ``every_s`` seconds, in the background, whether a collection changed
        (``chatbot ingest`` in another process, say) and rebuild its search indexes then, rather
        than on the next question."""
        if self._watcher is not None or every_s <= 0:
            return
        stop = threading.Event()

        def watch() -> None:
            failing = False
            while not stop.wait(every_s):
                try:
                    self.prepare_search()
                    failing = False
                except Exception as exc:
                    # The whole trace once; while it keeps failing, one line per check.
                    if failing:
                        log.warning("rebuilding the search indexes still fails: %s", exc)
                    else:
                        log.exception("rebuilding the search indexes failed")
                    failing = True

        thread = threading.Thread(target=watch, name="search-indexes", daemon=True)
        thread.start()
        self._watcher = (stop, thread)

    def close(self) -> None:
        if self._watcher is not None:
            stop, thread = self._watcher
            stop.set()
            # A build under way finishes on its own (the thread does not keep the process up);
            # the local model server must not wait long for it.
            thread.join(timeout=2)
            self._watcher = None
        self.memory.close()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


# Halves of a broken character (a lone surrogate): such text cannot be encoded to be stored.
SURROGATES = re.compile("[\ud800-\udfff]")
# Control characters (NUL, bell, escape): nothing a customer means to say, and trouble in
# stored transcripts and exports. Each becomes a space, so no two words run together; the
# rarer line breaks (vertical tab, as Word pastes Shift+Enter, form feed, next line) a line
# break. Tab, line feed and carriage return stay.
LINE_BREAK_CONTROLS = re.compile("[\x0b\x0c\x85]")
CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")


# What a customer's message leaves, beside the longest answer, for the instructions and at least
# some of the sources.
MESSAGE_ROOM_TOKENS = 1024


def validate_message(question: str, limit: int) -> str:
    """The message, stripped and without control characters; InputRejected if it is empty
    (invisible characters only counts as empty), holds text that is not valid Unicode, or is
    longer than ``limit`` characters."""
    text = CONTROLS.sub(" ", LINE_BREAK_CONTROLS.sub("\n", question or "")).strip()
    if shows_nothing(text):
        raise InputRejected("empty_message", "Please type a question first.")
    if SURROGATES.search(text):
        # A lone surrogate (a broken emoji from a client's string handling) cannot be stored,
        # searched or sent to the model.
        raise InputRejected(
            "unreadable_message",
            "Part of your message could not be read (a broken character). Please type it again.",
        )
    if len(text) > limit:
        raise InputRejected(
            "message_too_long",
            f"Your message is {len(text):,} characters long; please keep it to {limit:,} or fewer.",
        )
    return text


def turn_from_stored(stored: StoredTurn) -> Turn:
    """A stored turn as the chain reads it. An answer keeps the documents it was written from
    (its sources, as shown), and has none when it was handed off, small talk, or failed before
    answering (the sources shown then were a pointer, not an answer); unknown for a turn stored
    without them (seeded)."""
    meta = stored.meta
    if stored.role != "assistant":
        return Turn(stored.role, stored.content)  # type: ignore[arg-type]
    if meta.get("handoff") or meta.get("error") not in (None, "interrupted"):
        return Turn("assistant", stored.content, ())
    if "sources" not in meta:
        return Turn("assistant", stored.content)
    return Turn("assistant", stored.content, tuple(meta["sources"]))


def _spread(coverage: WordCoverage) -> bool:
    """Whether a question's topic words are spread over the documents, none of which holds
    most of them (see KNOWN_WORDS_MAX_COVERAGE)."""
    return (
        coverage.words >= KNOWN_WORDS_MIN_TOPIC_WORDS and coverage.share <= KNOWN_WORDS_MAX_COVERAGE
    )


def _asks_detail(found: Retrieval, question: str, turns: Sequence[Turn]) -> bool:
    """Whether a message that found nothing is asked for details instead of handed off: it
    names no topic ("it doesn't work"), and the bot has answered nothing yet but greetings and
    thanks. After an answer, "why?" is about that answer; after the request for details (asked
    once per conversation), or a hand-off, it is handed off as it is."""
    return (
        found.handoff
        and found.reason in (NO_MATCH, OFF_TOPIC)
        and needs_detail(question)
        and all(t.content in SMALL_TALK_REPLIES for t in turns if t.role == "assistant")
    )


def _channel(name: str) -> str:
    try:
        return Channel(name).value
    except ValueError:
        allowed = ", ".join(c.value for c in Channel)
        raise InputRejected(
            "unknown_channel", f"Unknown channel '{name}'; use {allowed}."
        ) from None


def _paragraph_break(text: str) -> str:
    """What starts a new paragraph after ``text`` (nothing at its very start)."""
    if not text or text.endswith("\n\n"):
        return ""
    return "\n" if text.endswith("\n") else "\n\n"


def _check(probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is a health check
        # The details (addresses, paths) go to the log, not to whoever asks; one line, since a
        # load balancer may ask every few seconds.
        log.warning("readiness check failed: %s: %s", type(exc).__name__, exc)
        return "failed"
    return "ok"


def _instructions(policy: LengthPolicy, options: AnswerOptions | None) -> str:
    extra = options.instructions.strip() if options is not None else ""
    return policy.instruction() + (f"\n{extra}" if extra else "")


def _make_retriever(
    store: KnowledgeStore,
    settings: Settings,
    off_topic: OffTopicExamples | None = None,
    other_products: OtherProducts | None = None,
    compliance: ComplianceNames | None = None,
) -> HybridRetriever:
    cfg = settings.retrieval
    return HybridRetriever(
        store,
        weights=FusionWeights(
            keywords=cfg.keyword_weight,
            title=cfg.title_weight,
            hubness=cfg.hubness_weight,
            previous_article=cfg.previous_article_penalty,
        ),
        hubness_neighbours=cfg.hubness_neighbours,
        synonyms=cfg.synonyms,
        off_topic=off_topic,
        off_topic_overlap=cfg.off_topic_overlap,
        other_products=other_products,
        overview_margin=cfg.overview_margin,
        compliance=compliance,
        product_names=cfg.product_names,
    )


def _snippet(text: str) -> str:
    flat = " ".join(readable(text).split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1].rstrip() + "…"


def create_service(settings: Settings, *, with_model: bool = True) -> ChatService:
    """Build the store, the retriever and (unless ``with_model`` is false) the chat model.

    The local provider starts its llama.cpp server here; ``ChatService.close`` stops it.
    """
    from chatbot.providers import make_chat_model
    from knowledge.embeddings import make_embeddings

    cfg = settings.retrieval
    embeddings = make_embeddings(cfg.embedding_model, threads=cfg.embedding_threads)
    store = KnowledgeStore(settings.data_dir, embeddings, cfg.collection)
    off_topic, other_products = None, None
    if cfg.off_topic_check:
        other_products = OtherProducts.from_file(cfg.other_products or BUNDLED_PRODUCTS)
        off_topic = OffTopicExamples.from_file(
            cfg.off_topic_examples or BUNDLED_EXAMPLES,
            embeddings,
            model_name=cfg.embedding_model,
            cache_dir=settings.data_dir / "cache",
        )
        off_topic.vectors()  # embedded (or read from the cache) now, not on the first question
    compliance = (
        ComplianceNames.from_file(cfg.compliance_names or BUNDLED_COMPLIANCE)
        if cfg.compliance_check
        else None
    )
    retriever = _make_retriever(store, settings, off_topic, other_products, compliance)
    model, counter, on_close, local_url = None, None, None, None
    if with_model:
        if settings.llm.provider == Provider.LOCAL:
            from chatbot.local_server import LocalLlamaServer
            from chatbot.tokens import LocalModelCounter

            server = LocalLlamaServer(settings.llm.local, settings.llm.context_window)
            server.start(log_dir=settings.data_dir / "logs")
            server.supervise()  # started again if it ever exits, so the chat recovers
            local_url, on_close = server.base_url, server.stop
            counter = LocalModelCounter(server.model_path)
        try:
            model = make_chat_model(settings.llm, local_base_url=local_url)
        except Exception:
            if on_close:
                on_close()
            raise
    return ChatService(
        settings,
        store,
        retriever,
        model,
        counter=counter,
        on_close=on_close,
        model_probe=model_probe(settings.llm, local_base_url=local_url) if with_model else None,
    )


def ensure_sample_knowledge(service: ChatService) -> IngestReport | None:
    """Ingest the bundled sample help center when the store is empty and the setting allows it."""
    if not service.settings.retrieval.sample_knowledge or service.store.documents():
        return None
    log.info("knowledge store is empty; ingesting the sample help center")
    return service.ingest([SAMPLE_KNOWLEDGE_DIR])
