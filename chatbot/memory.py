"""Conversation memory: fit summary, recent turns and sources into the window; summarise old turns.

Every request is planned against a token budget: system prompt + running summary + recent turns +
retrieved context + question + the tokens reserved for the answer never exceed the model's window.
When the unsummarised history passes a share of its budget, older turns are folded into the
running summary by the model, incrementally (old summary + newly folded turns), after the answer
has streamed. Facts the customer stated (numbers, product, device, what they tried) are also
pinned verbatim beside the summary, so a small model's summary cannot lose them.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, trim_messages

from chatbot.conversations import ConversationStore, SessionRecord, StoredTurn
from chatbot.history import Turn
from chatbot.prompts import join_context, one_line, quote
from chatbot.settings import MemorySettings
from chatbot.tokens import MESSAGE_OVERHEAD_TOKENS, TokenCounter, defuse_control_tokens

log = logging.getLogger(__name__)

SUMMARY_PROMPT = """Update the running summary of a customer-support chat for the agent who \
continues it. Keep every fact the customer gave (order numbers, product, device, what they \
already tried) and what they were told. At most {max_words} words. Reply with the summary only.

Current summary:
{summary}

New messages:
{turns}"""

SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\n+")
# Numbers and ids ("order 48213", "#4411", "HUB-2"; not "mp3"): worth keeping in a question too.
ID_RE = re.compile(r"\d{2,}|#\w+|\b[A-Z]{1,5}-?\d+\b")
# Where a question starts after a statement ("I have a Hub 2, does it work offline?").
LAST_CLAUSE_RE = re.compile(r"[,;:]\s+|\s+(?:but|and|so)\s+", re.IGNORECASE)
# What the customer states about themselves; a question ("does it work when my phone is
# off?") states nothing.
STATEMENT_RE = re.compile(
    r"\b(?:i have|i've got|i use|i'm using|i am using|i own|i bought|i ordered|i tried|"
    r"i've tried|i already|i've already|my \w+(?: \w+)? (?:is|was|are)|model|version|serial)\b",
    re.IGNORECASE,
)
MAX_FACTS = 16
# Fewest messages worth a summary call while the whole history still fits its budget.
MIN_FOLD_MESSAGES = 4
MAX_FACT_CHARS = 240
# Tokens kept free beyond the computed prompt, against small differences between the counter
# and the server's chat template.
SAFETY_MARGIN_TOKENS = 16
# The blank line between two context blocks: at most one token more than the blocks alone.
CONTEXT_JOIN_TOKENS = 1
# When even the best source does not fit whole, its start is sent if at least this much fits.
MIN_EXCERPT_TOKENS = 64
# Ends an excerpt that was cut to fit.
CUT_MARK = " …"


def extract_facts(texts: Sequence[str]) -> list[str]:
    """Customer sentences that state something specific: numbers, ids, devices, attempts."""
    facts = []
    for text in texts:
        for sentence in SENTENCE_SPLIT_RE.split(text):
            sentence = sentence.strip()
            if not sentence:
                continue
            # In a question, only what comes before its last clause can state something.
            said = sentence
            if sentence.endswith("?"):
                said = " ".join(LAST_CLAUSE_RE.split(sentence)[:-1])
            if STATEMENT_RE.search(said) or ID_RE.search(sentence):
                facts.append(sentence[:MAX_FACT_CHARS])
    return facts


def merge_facts(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """Old facts first, new ones after, without repeats; the first and latest are kept if too many."""
    merged = list(dict.fromkeys([*old, *new]))
    if len(merged) > MAX_FACTS:
        half = MAX_FACTS // 2
        merged = merged[:half] + merged[-half:]
    return merged


def memory_block(summary: str, facts: Sequence[str]) -> str:
    """The summary and pinned facts as they appear in the system prompt: quoted, like the
    sources, since they repeat what the customer and the model wrote."""
    parts = []
    if summary.strip():
        parts.append(f"Summary of the earlier conversation:\n{quote(summary)}")
    if facts:
        listed = "\n".join(f"- {one_line(f)}" for f in facts)
        parts.append(f"Facts the customer gave earlier:\n{quote(listed)}")
    return "\n".join(parts)


@dataclass
class PromptPlan:
    """What one request sends, and the tokens of each part."""

    messages: list[BaseMessage]
    inputs: dict
    hits_used: int
    tokens: dict[str, int] = field(default_factory=dict)
    history_budget: int = 0

    @property
    def prompt_tokens(self) -> int:
        return sum(v for k, v in self.tokens.items() if k != "answer_reserve")


class ConversationMemory:
    """Plans prompts within the window and keeps running summaries up to date."""

    def __init__(
        self,
        store: ConversationStore,
        counter: TokenCounter,
        settings: MemorySettings,
        context_window: int,
        call_options: Callable[[int], dict] = lambda limit: {"max_tokens": limit},
    ):
        self.call_options = call_options
        self.store = store
        self.counter = counter
        self.settings = settings
        self.context_window = context_window
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="summariser")
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()

    # ----- the customer's path
    def load(self, session_id: str) -> tuple[SessionRecord, list[StoredTurn]]:
        session = self.store.get_session(session_id)
        if session is None:
            raise KeyError(session_id)
        return session, self.store.turns(session_id, after_id=session.summarised_upto)

    def count_text(self, text: str) -> int:
        return self.counter.count(text) + MESSAGE_OVERHEAD_TOKENS

    def plan(
        self,
        *,
        render: Callable[[dict], list[BaseMessage]],
        inputs: dict,
        context_blocks: Sequence[str],
        history: Sequence[Turn],
        history_tokens: Sequence[int] | None,
        summary: str,
        facts: Sequence[str],
        answer_reserve: int,
    ) -> PromptPlan:
        """Choose how much context and history fit; ``context_blocks[i]`` quotes hit i+1.

        Each block is counted once, on its own (the counter caches what it has seen, and blocks
        recur from turn to turn); the context of n hits is counted as the sum of its blocks plus
        one token per join, which never under-counts the joined text.
        """
        base_inputs = {**inputs, "context": "", "memory": "", "history": []}
        base = self._count(render(base_inputs))
        question = self.count_text(inputs["question"])
        free = self.context_window - answer_reserve - base - SAFETY_MARGIN_TOKENS
        if free < 0:
            raise ValueError("the question and system prompt alone do not fit the context window")
        context_tokens, used, running = 0, 0, -CONTEXT_JOIN_TOKENS
        room = int(free * self.settings.context_share)
        for number, block in enumerate(context_blocks, start=1):
            running += self.counter.count(block) + CONTEXT_JOIN_TOKENS
            if running > room:
                break
            context_tokens, used = running, number
        context = join_context(context_blocks[:used])
        if not used and context_blocks:
            # The best source alone is longer than its room (a small window): its start beats
            # sending none, which would leave the model nothing to answer from.
            excerpt = self._cut_to_fit(context_blocks[0], room)
            if excerpt:
                context, context_tokens, used = excerpt, self.counter.count(excerpt), 1
        history_budget = max(0, free - context_tokens)
        block, block_tokens = "", 0
        # The summary and pinned facts if they fit, else the facts alone.
        for candidate in (memory_block(summary, facts), memory_block("", facts)):
            tokens = self.counter.count(candidate) if candidate else 0
            if candidate and tokens <= history_budget:
                block, block_tokens = candidate, tokens
                break
        kept = self._recent(history, history_tokens, history_budget - block_tokens)
        final_inputs = {**inputs, "context": context, "memory": block, "history": kept}
        messages = render(final_inputs)
        tokens = {
            "system": base - question,
            "summary": block_tokens,
            "history": self._count(kept),
            "context": context_tokens,
            "question": question,
            "answer_reserve": answer_reserve,
        }
        return PromptPlan(messages, final_inputs, used, tokens, history_budget)

    def _cut_to_fit(self, block: str, room: int) -> str:
        """The longest start of ``block``, cut at a space and marked, within ``room`` tokens;
        "" if fewer than MIN_EXCERPT_TOKENS fit."""
        if room < MIN_EXCERPT_TOKENS:
            return ""
        chars = len(block) * room // max(1, self.counter.count(block))
        while chars > 0:
            head = block[:chars]
            space = max(head.rfind(" "), head.rfind("\n"))
            cut = head[:space] if space > 0.8 * len(head) else head  # a word, if one ends near
            excerpt = cut.rstrip() + CUT_MARK
            tokens = self.counter.count(excerpt)
            if tokens <= room:
                return excerpt if tokens >= MIN_EXCERPT_TOKENS else ""
            chars = min(len(cut) - 1, chars * room // tokens)
        return ""

    def _count(self, messages: Sequence[BaseMessage]) -> int:
        return sum(self.count_text(str(m.content)) for m in messages)

    def _recent(
        self, history: Sequence[Turn], counts: Sequence[int] | None, budget: int
    ) -> list[BaseMessage]:
        if not history or budget <= 0:
            return []
        messages = [t.to_message() for t in history]
        known = list(counts) if counts is not None else [None] * len(messages)
        # A stored count may predate a correction of the estimate, so the larger count wins.
        sizes = {
            id(m): max(n or 0, self.counter.count(str(m.content))) + MESSAGE_OVERHEAD_TOKENS
            for m, n in zip(messages, known, strict=True)
        }
        return trim_messages(
            messages,
            max_tokens=budget,
            token_counter=lambda msgs: sum(sizes[id(m)] for m in msgs),
            strategy="last",
            start_on="human",
            allow_partial=False,
        )

    # ----- after the answer
    def schedule_summary(self, session_id: str, history_budget: int, model: BaseChatModel) -> None:
        """Fold old turns into the summary in the background, if the history has grown."""
        with self._lock:
            running = self._pending.get(session_id)
            if running is not None and not running.done():
                return
            self._pending[session_id] = self._executor.submit(
                self.summarise_if_needed, session_id, history_budget, model
            )

    def wait_idle(self, timeout: float | None = None) -> None:
        with self._lock:
            pending = list(self._pending.values())
        for future in pending:
            future.result(timeout=timeout)

    def summarise_if_needed(
        self, session_id: str, history_budget: int, model: BaseChatModel
    ) -> bool:
        session, turns = self.load(session_id)
        unsummarised = sum(t.tokens + MESSAGE_OVERHEAD_TOKENS for t in turns)
        if unsummarised <= self.settings.summary_trigger * history_budget:
            return False
        keep = self.settings.keep_recent_messages
        fold = turns[:-keep] if keep else turns
        if not fold:
            return False
        if len(fold) < MIN_FOLD_MESSAGES and unsummarised <= history_budget:
            # Long recent messages alone pass the trigger: folding the one exchange before them
            # after every turn would cost a model call per turn (and hold the local model's only
            # slot) while everything still fits. Wait for more, or for the budget to run out.
            return False
        facts = merge_facts(
            session.facts, extract_facts([t.content for t in fold if t.role == "user"])
        )
        # The summarising call must fit the window too: its oldest turns are dropped if not.
        room = self.context_window - 2 * self.settings.summary_max_tokens - 200
        included = list(fold)
        while included and sum(t.tokens + MESSAGE_OVERHEAD_TOKENS for t in included) > room:
            included.pop(0)
        if not included:
            # Too long to summarise at all: only dropped, the facts kept.
            tokens = self.counter.count(session.summary)
            self.store.save_summary(
                session_id, session.summary, tokens, facts, fold[-1].id, made=False
            )
            return True
        summary, made = self._summarise(session.summary, included, model)
        if not made:
            # The model failed (an outage, a refusal): the turns stay, trimmed per request when
            # they do not fit, with their facts pinned meanwhile; the next turn tries again.
            self.store.save_summary(
                session_id,
                session.summary,
                session.summary_tokens,
                facts,
                session.summarised_upto,
                made=False,
            )
            return False
        tokens = self.counter.count(summary)
        self.store.save_summary(session_id, summary, tokens, facts, fold[-1].id)
        return True

    def _summarise(
        self, summary: str, fold: Sequence[StoredTurn], model: BaseChatModel
    ) -> tuple[str, bool]:
        """The updated summary, and whether the model made it (False: the old one, kept)."""
        transcript = "\n".join(
            f"{'Customer' if t.role == 'user' else 'Assistant'}: {t.content}" for t in fold
        )
        limit = self.settings.summary_max_tokens
        prompt = SUMMARY_PROMPT.format(
            max_words=max(20, int(limit * 0.6)), summary=summary or "(none yet)", turns=transcript
        )
        # What the customer and the model wrote reaches the model as plain text here too.
        prompt = defuse_control_tokens(prompt)
        try:
            reply = model.invoke([HumanMessage(prompt)], **self.call_options(limit), temperature=0)
            text = reply.content if isinstance(reply, AIMessage) else str(reply)
            text = str(text).strip()
        except Exception as exc:  # noqa: BLE001 - fall back to dropping the oldest turns
            log.warning("summary failed (%s); the turns stay until the next try", exc)
            return summary, False
        return (self._truncate(text, limit), True) if text else (summary, False)

    def _truncate(self, text: str, limit: int) -> str:
        while text and self.counter.count(text) > limit:
            text = text[: int(len(text) * 0.9)].rsplit(" ", 1)[0]
        return text

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
