"""The chat service: one object that the web pages, the CLI and the API all call."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from langchain_core.language_models import BaseChatModel
from langchain_core.messages.utils import count_tokens_approximately

import knowledge
from chatbot.chain import build_answer_chain
from chatbot.errors import MESSAGES, InputRejected, classify
from chatbot.history import Turn
from chatbot.prompts import HANDOFF_ANSWER, format_context
from chatbot.query import search_queries, standalone_query
from chatbot.settings import Provider, Settings
from knowledge.ingest import IngestReport, ingest_paths
from knowledge.loaders import LoadLimits
from knowledge.retriever import DocumentHit, FusionWeights, HybridRetriever
from knowledge.store import KnowledgeStore

log = logging.getLogger(__name__)

SAMPLE_KNOWLEDGE_DIR = Path(knowledge.__file__).resolve().parent / "sample_help"
SNIPPET_CHARS = 240


@dataclass(frozen=True)
class Source:
    source: str
    title: str
    score: float
    snippet: str
    heading: str = ""


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
        default_factory=lambda: {"retrieve": 0.0, "first_token": 0.0, "total": 0.0}
    )
    query: str = ""
    error: str | None = None

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


class ChatService:
    """Answers questions from the knowledge store; stateless between calls, safe across threads."""

    def __init__(
        self,
        settings: Settings,
        store: KnowledgeStore,
        retriever: HybridRetriever,
        model: BaseChatModel | None,
        on_close: Callable[[], None] | None = None,
    ):
        self.settings = settings
        self.store = store
        self.retriever = retriever
        self.model = model
        self._chain = build_answer_chain(model) if model is not None else None
        self._on_close = on_close

    # ----- input
    def check_message(self, question: str) -> str:
        text = (question or "").strip()
        if not text:
            raise InputRejected("empty_message", "Please type a question first.")
        limit = self.settings.chat.max_message_chars
        if len(text) > limit:
            raise InputRejected(
                "message_too_long",
                f"Your message is {len(text):,} characters long; please keep it under {limit:,}.",
            )
        return text

    # ----- retrieval
    def retrieve(self, question: str, history: Sequence[Turn] = ()) -> Retrieval:
        cfg = self.settings.retrieval
        queries = search_queries(question, history, cfg.history_weight)
        hits = self.retriever.retrieve(queries, k=cfg.top_k)
        handoff = not hits or max(h.similarity for h in hits) < cfg.relevance_threshold
        return Retrieval(standalone_query(queries), hits, handoff)

    @staticmethod
    def sources_of(hits: Sequence[DocumentHit]) -> list[Source]:
        return [
            Source(
                source=h.source,
                title=h.title,
                score=round(h.similarity, 4),
                snippet=_snippet(h.chunks[0].text if h.chunks else ""),
                heading=h.chunks[0].heading if h.chunks else "",
            )
            for h in hits
        ]

    def retrieval_only(self, question: str, history: Sequence[Turn] = ()) -> ChatResult:
        """What a turn would retrieve and whether it would hand off, without calling the model."""
        started = time.perf_counter()
        found = self.retrieve(self.check_message(question), history)
        elapsed = (time.perf_counter() - started) * 1000
        return ChatResult(
            answer="",
            sources=[] if found.handoff else self.sources_of(found.hits),
            handoff=found.handoff,
            timings_ms={
                "retrieve": round(elapsed, 1),
                "first_token": 0.0,
                "total": round(elapsed, 1),
            },
            query=found.query,
        )

    # ----- answering
    def stream(self, question: str, history: Sequence[Turn] = ()) -> Iterator[ChatEvent]:
        """Sources first, then the answer token by token, then the finished result.

        Raises InputRejected before any work for an empty or over-long message.
        """
        question = self.check_message(question)
        started = time.perf_counter()
        found = self.retrieve(question, history)
        retrieve_ms = (time.perf_counter() - started) * 1000
        result = ChatResult(answer="", sources=[], handoff=found.handoff, query=found.query)
        result.timings_ms["retrieve"] = round(retrieve_ms, 1)
        if found.handoff:
            result.answer = HANDOFF_ANSWER
            yield SourcesEvent([])
            yield TokenEvent(HANDOFF_ANSWER)
            result.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 1)
            yield DoneEvent(result)
            return
        result.sources = self.sources_of(found.hits)
        yield SourcesEvent(result.sources)
        yield from self._generate(question, history, found, result, started)

    def _generate(
        self,
        question: str,
        history: Sequence[Turn],
        found: Retrieval,
        result: ChatResult,
        started: float,
    ) -> Iterator[ChatEvent]:
        if self._chain is None:
            raise RuntimeError("this service was built without a chat model")
        recent = (
            list(history)[-self.settings.chat.history_turns :]
            if self.settings.chat.history_turns
            else []
        )
        inputs = {
            "context": format_context(found.hits),
            "history": [t.to_message() for t in recent],
            "question": question,
            "max_words": self.settings.chat.max_answer_words,
        }
        parts: list[str] = []
        usage = None
        try:
            for chunk in self._chain.stream(inputs):
                text = chunk.content if isinstance(chunk.content, str) else ""
                if text:
                    if not parts:
                        result.timings_ms["first_token"] = round(
                            (time.perf_counter() - started) * 1000, 1
                        )
                    parts.append(text)
                    yield TokenEvent(text)
                if chunk.usage_metadata:
                    usage = chunk.usage_metadata
                if (chunk.response_metadata or {}).get("finish_reason") == "content_filter":
                    result.error = "content_filter"
        except Exception as exc:  # noqa: BLE001 - every model failure becomes a polite answer
            failure = classify(exc)
            log.warning("model call failed: %s (%s)", failure.code, failure.detail)
            result.error = failure.code
        if result.error:
            # Also when Azure's content filter stopped a stream part-way through.
            notice = ("\n\n" if parts else "") + MESSAGES[result.error]
            parts.append(notice)
            yield TokenEvent(notice)
        result.answer = "".join(parts)
        result.usage = self._usage(usage, inputs, result.answer)
        result.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 1)
        yield DoneEvent(result)

    def _usage(self, reported, inputs: dict, answer: str) -> dict[str, int]:
        if reported and reported.get("input_tokens"):
            return {
                "prompt_tokens": int(reported["input_tokens"]),
                "completion_tokens": int(reported.get("output_tokens", 0)),
            }
        prompt_messages = self._chain.first.invoke(inputs).to_messages()  # type: ignore[union-attr]
        return {
            "prompt_tokens": count_tokens_approximately(prompt_messages),
            "completion_tokens": count_tokens_approximately([answer]) if answer else 0,
        }

    def ask(self, question: str, history: Sequence[Turn] = ()) -> ChatResult:
        """The whole answer at once."""
        for event in self.stream(question, history):
            if isinstance(event, DoneEvent):
                return event.result
        raise RuntimeError("the answer stream ended without a result")

    # ----- knowledge
    def ingest(self, paths: Sequence[Path], progress=None) -> IngestReport:
        cfg = self.settings.retrieval
        return ingest_paths(
            self.store,
            paths,
            chunk_size=cfg.chunk_size,
            chunk_overlap=cfg.chunk_overlap,
            limits=LoadLimits(cfg.max_file_bytes, cfg.max_pdf_pages),
            progress=progress,
        )

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1].rstrip() + "…"


def create_service(settings: Settings, *, with_model: bool = True) -> ChatService:
    """Build the store, the retriever and (unless ``with_model`` is false) the chat model.

    The local provider starts its llama.cpp server here; ``ChatService.close`` stops it.
    """
    from chatbot.providers import make_chat_model
    from knowledge.embeddings import make_embeddings

    cfg = settings.retrieval
    store = KnowledgeStore(settings.data_dir, make_embeddings(cfg.embedding_model), cfg.collection)
    retriever = HybridRetriever(
        store,
        weights=FusionWeights(keywords=cfg.keyword_weight, title=cfg.title_weight),
        synonyms=cfg.synonyms,
    )
    model = None
    on_close = None
    if with_model:
        local_url = None
        if settings.llm.provider == Provider.LOCAL:
            from chatbot.local_server import LocalLlamaServer

            server = LocalLlamaServer(settings.llm.local, settings.llm.context_window)
            server.start(log_dir=settings.data_dir / "logs")
            local_url, on_close = server.base_url, server.stop
        try:
            model = make_chat_model(settings.llm, local_base_url=local_url)
        except Exception:
            if on_close:
                on_close()
            raise
    service = ChatService(settings, store, retriever, model, on_close=on_close)
    return service


def ensure_sample_knowledge(service: ChatService) -> IngestReport | None:
    """Ingest the bundled sample help center when the store is empty and the setting allows it."""
    if not service.settings.retrieval.sample_knowledge or service.store.documents():
        return None
    log.info("knowledge store is empty; ingesting the sample help center")
    return service.ingest([SAMPLE_KNOWLEDGE_DIR])
