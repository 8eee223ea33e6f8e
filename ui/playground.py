"""The staff playground: ask as any channel and see why the bot answered what it answered.

A thin page over ChatService: one question with per-request knobs (the retrieved chunks, the
exact prompt, tokens per part, timings, the length policy, cut and hand-off shown beside the
streamed answer), and question sets in the format of `chatbot eval`. Nothing asked here is
stored as a customer conversation: questions are sent with their prior turns, never a session.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import pandas as pd

from chatbot.errors import InputRejected
from chatbot.evaluation import declined_text, load_questions, run_eval
from chatbot.history import Turn, turns_from_dicts
from chatbot.prompts import quote, readable
from chatbot.service import (
    HANDOFF_REASON_TEXT,
    OFF_TOPIC,
    AnswerOptions,
    ChatResult,
    ChatService,
    DoneEvent,
    Retrieval,
    TokenEvent,
    site_options,
)
from chatbot.settings import Channel, Settings, SiteSettings
from knowledge.off_topic import OffTopicMatch
from ui.gradio_app import safe_markdown

log = logging.getLogger(__name__)

CHANNELS = [
    ("Customer widget", Channel.WIDGET.value),
    ("Staff", Channel.STAFF.value),
    ("API", Channel.API.value),
]
# What a line of prior turns may start with, and the role it stands for.
SPEAKERS = {"customer": "user", "user": "user", "assistant": "assistant", "bot": "assistant"}
PRIOR_TURNS_HELP = (
    "One turn per line, starting with 'customer:' or 'assistant:' (a line without a speaker "
    'continues the turn above), or a JSON list of {"role": "user"|"assistant", "content": ...}.'
)
CHUNK_COLUMNS = [
    "rank",
    "source",
    "section",
    "chunk similarity",
    "doc similarity",
    "doc score",
    "in prompt",
    "text",
]
CHUNK_WIDTHS = ["4%", "13%", "15%", "7%", "7%", "6%", "6%", "42%"]
TOKEN_PARTS = ["system", "summary", "history", "context", "question"]
TOKEN_COLUMNS = ["part", "tokens"]
TIMING_STAGES = [
    ("retrieve", "retrieve"),
    ("memory", "memory"),
    ("first token", "first_token"),
    ("total", "total"),
]
TIMING_COLUMNS = ["stage", "ms"]
# The outputs of ask and rerun, in order; tests read the yielded tuples by these names.
ANSWER_OUTPUTS = ("answer", "query", "chunks", "prompt", "tokens", "timings", "outcome", "last")
SET_OUTPUTS = ("rows", "summary", "status")
LINK_STYLE = "background:none;border:0;padding:0;font:inherit;color:inherit;cursor:pointer"
# Signing out is a POST (ui.staff), so it needs a form, not a link.
STAFF_LINKS = (
    '<nav class="playground-links">'
    '<a href="/staff/tickets">Hand-offs</a> · <a href="/staff/conversations">Conversations</a>'
    ' · <a href="/staff">Staff pages</a> · '
    '<form method="post" action="/logout" style="display:inline">'
    f'<button type="submit" id="playground-sign-out" style="{LINK_STYLE};'
    'text-decoration:underline">Sign out</button></form></nav>'
)

# Largest question set the playground takes, in bytes.
PLAYGROUND_MAX_UPLOAD = 5_000_000


@dataclass(frozen=True)
class AskedQuestion:
    """What was asked last in this browser tab, so Re-run asks it again."""

    question: str
    prior_turns: str
    channel: str
    # The key of the site asked as ("" for none): its channel, instructions, length policy
    # and knowledge collection apply.
    site: str = ""


@dataclass(frozen=True)
class Knobs:
    """Overrides for one request; the configured settings stay as they are."""

    top_k: int
    relevance_threshold: float
    length_policy: bool
    temperature: float

    def options(self) -> AnswerOptions:
        return AnswerOptions(
            top_k=int(self.top_k),
            relevance_threshold=float(self.relevance_threshold),
            temperature=float(self.temperature),
            length_policy=bool(self.length_policy),
            trace=True,
        )


def parse_prior_turns(text: str | None) -> list[Turn]:
    """The prior turns typed in the playground; ValueError with a sentence saying what to fix."""
    text = (text or "").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"Prior turns: not valid JSON ({exc.msg} at line {exc.lineno}, "
                f"column {exc.colno}). {PRIOR_TURNS_HELP}"
            ) from exc
        try:
            return turns_from_dicts(items)
        except ValueError as exc:
            raise ValueError(f"Prior turns: {exc}. {PRIOR_TURNS_HELP}") from exc
    turns: list[Turn] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        speaker, colon, rest = line.partition(":")
        role = SPEAKERS.get(speaker.strip().lower()) if colon else None
        if role is not None:
            if not rest.strip():
                raise ValueError(f"Prior turns, line {number}: the {speaker.strip()} said nothing.")
            turns.append(Turn(role, rest.strip()))  # type: ignore[arg-type]
        elif turns:
            turns[-1] = Turn(turns[-1].role, f"{turns[-1].content}\n{line.strip()}")
        else:
            raise ValueError(f"Prior turns, line {number}: no speaker. {PRIOR_TURNS_HELP}")
    return turns


def chunk_table(found: Retrieval, prompt: str | None = None) -> pd.DataFrame:
    """Every retrieved chunk with its scores, and whether it was quoted in ``prompt`` (the text
    sent to the model; None while that is not known yet)."""
    rows = []
    for rank, hit in enumerate(found.hits, start=1):
        for chunk in hit.chunks:
            parts = [hit.title] + ([chunk.heading] if chunk.heading != hit.title else [])
            section = " › ".join(part for part in parts if part)
            rows.append(
                [
                    rank,
                    hit.source,
                    section,
                    round(chunk.similarity, 4),
                    round(hit.similarity, 4),
                    round(hit.score, 4),
                    "…" if prompt is None else ("yes" if _quoted(chunk.text, prompt) else "no"),
                    chunk.text,
                ]
            )
    return pd.DataFrame(rows, columns=CHUNK_COLUMNS)


def _quoted(text: str, prompt: str) -> bool:
    # The context quotes whole chunks, cut at its character budget: a chunk is in the prompt
    # when its opening line is.
    first = next((line for line in readable(text).splitlines() if line.strip()), "")
    return bool(first) and quote(first) in prompt


def sent_text(result: ChatResult) -> str:
    return "\n".join(m["content"] for m in result.prompt_messages or [])


def prompt_text(result: ChatResult, threshold: float, found: Retrieval | None = None) -> str:
    if result.handoff and not result.prompt_messages:
        if result.handoff_reason == OFF_TOPIC:
            if result.other_products:
                return other_products_text(result.other_products, result.product_itself)
            # ``found`` is a second search: it explains this hand-off only if it agrees.
            agrees = found is not None and found.reason == OFF_TOPIC
            return off_topic_text(found.off_topic if agrees else None)
        if result.compliance:
            return compliance_text(result.compliance)
        return (
            "No model call: nothing retrieved reached the relevance threshold "
            f"({threshold:.2f}), so the hand-off answer was given."
        )
    if result.small_talk:
        return "No model call: a greeting, thanks or goodbye is answered in kind, unsearched."
    if result.asked_detail:
        return (
            "No model call: the message names no topic and nothing retrieved reached the "
            f"relevance threshold ({threshold:.2f}), so the customer is asked what they were "
            "doing (once per conversation, and only before any answer)."
        )
    if not result.prompt_messages:
        return "The prompt was not recorded."
    return "\n\n".join(f"=== {m['role']} ===\n{m['content']}" for m in result.prompt_messages)


def token_table(result: ChatResult) -> pd.DataFrame:
    parts = result.prompt_tokens_by_part
    rows = [[part, parts.get(part, 0)] for part in TOKEN_PARTS]
    rows.append(["answer", result.usage.get("completion_tokens", 0)])
    rows.append(["prompt, as the model counted it", result.usage.get("prompt_tokens", 0)])
    if "answer_reserve" in parts:
        rows.append(["reserved for the answer", parts["answer_reserve"]])
    return pd.DataFrame(rows, columns=TOKEN_COLUMNS)


def timing_table(result: ChatResult) -> pd.DataFrame:
    rows = [[label, result.timings_ms.get(key, 0.0)] for label, key in TIMING_STAGES]
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)


def policy_text(policy: dict) -> str:
    if not policy:
        return "not applied (no model call)"
    if not policy.get("enabled"):
        return f"disabled (the answer is capped at {policy.get('max_tokens')} tokens only)"
    return (
        f"{policy.get('channel')}: about {policy.get('target_words')} words, "
        f"at most {policy.get('max_tokens')} tokens"
    )


def outcome_text(result: ChatResult) -> str:
    lines = [
        f"**Channel:** {result.channel}",
        f"**Handed off:** {_handoff_text(result)}",
        f"**Cut by the length policy:** {'yes' if result.cut else 'no'}",
        f"**Length policy:** {policy_text(result.policy)}",
        f"**Documents quoted in the prompt:** {len(result.sources)}",
    ]
    if result.error:
        lines.append(f"**Error:** {result.error}")
    return "  \n".join(lines)


def other_products_text(products: Sequence[str], itself: bool = False) -> str:
    names = ", ".join(repr(p) for p in products)
    if itself:
        return (
            f"No model call: the question asks about {names} itself (something done in it, or "
            "its account, plan or bill), another company's product (retrieval.other_products); "
            "your documents mention it, but the article found first is not about it, so the "
            "hand-off answer was given."
        )
    return (
        f"No model call: the question names {names}, another company's product that none of "
        "your documents mentions (retrieval.other_products), so the hand-off answer was given."
    )


def compliance_text(names: Sequence[str]) -> str:
    quoted = [repr(n) for n in names]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"
    return (
        f"No model call: the question asks about the company's own standing on {listed} "
        "(compliance, a certification, a report or an agreement), which none of your documents "
        "mentions (retrieval.compliance_names); only a person can say, so the hand-off answer "
        "was given."
    )


def off_topic_text(match: OffTopicMatch | None) -> str:
    if match is None:
        return "No model call: the question was handed off as off-topic."
    compared = (
        f" (both compared without {', '.join(repr(w) for w in match.without)})"
        if match.without
        else ""
    )
    words = (
        f"uses words no document uses ({', '.join(match.unknown_words)})"
        if match.unknown_words
        else "no passage holds more than half of its words (retrieval.off_topic_known_words_margin)"
    )
    return (
        f'No model call: the question is closer to the off-topic example "{match.example}" '
        f"({match.similarity:.2f}) than to any document (best {match.document_similarity or 0:.2f})"
        f"{compared}, and {words}, so the hand-off answer was given."
    )


def _handoff_text(result: ChatResult) -> str:
    if result.asked_detail:
        return (
            "no (the message named no topic and found nothing: the customer is asked for details)"
        )
    if result.small_talk:
        return "no (a greeting, thanks or goodbye: answered without a search or a model call)"
    if not result.handoff:
        return "no"
    reason = HANDOFF_REASON_TEXT.get(result.handoff_reason)
    return f"yes ({reason})" if reason else "yes"


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame([], columns=list(columns))


def _notice(message: str, last: AskedQuestion | None) -> tuple:
    return (
        "",
        "",
        _empty(CHUNK_COLUMNS),
        "",
        _empty(TOKEN_COLUMNS),
        _empty(TIMING_COLUMNS),
        safe_markdown(message),
        last,
    )


class Playground:
    """The page's callbacks over one ChatService; per-tab state travels in gr.State."""

    def __init__(self, service: ChatService, settings: Settings):
        self.service = service
        self.settings = settings

    # ----- one question
    def ask(
        self,
        question: str,
        prior_turns: str,
        channel: str,
        top_k: float,
        relevance_threshold: float,
        length_policy: bool,
        temperature: float,
        site: str = "",
    ) -> Iterator[tuple]:
        asked = AskedQuestion(question or "", prior_turns or "", channel, site or "")
        knobs = Knobs(int(top_k), relevance_threshold, length_policy, temperature)
        yield from self._answer(asked, knobs)

    def rerun(
        self,
        last: AskedQuestion | None,
        top_k: float,
        relevance_threshold: float,
        length_policy: bool,
        temperature: float,
    ) -> Iterator[tuple]:
        if last is None:
            yield _notice("Nothing to re-run yet: ask a question first.", None)
            return
        knobs = Knobs(int(top_k), relevance_threshold, length_policy, temperature)
        yield from self._answer(last, knobs)

    def site(self, key: str | None) -> SiteSettings | None:
        """The configured site with this key (None for none); ValueError if no site has it."""
        if not key:
            return None
        for site in self.settings.sites:
            if site.key == key:
                return site
        raise ValueError(f"No configured site has the key '{key}'.")

    def _as_site(
        self, knobs: Knobs, site_key: str | None, channel: str
    ) -> tuple[AnswerOptions, str]:
        """The request's options and channel: the knobs', with the site's own when one is
        chosen (its channel replaces ``channel``); ValueError for an unknown site."""
        site = self.site(site_key)
        if site is None:
            return knobs.options(), channel
        return site_options(site, knobs.options()), site.channel.value

    def _answer(self, asked: AskedQuestion, knobs: Knobs) -> Iterator[tuple]:
        skip = gr.skip()
        try:
            options, channel = self._as_site(knobs, asked.site, asked.channel)
            turns = parse_prior_turns(asked.prior_turns)
            question = self.service.check_message(asked.question)
            # Retrieved once more than the answer needs: the service's result names only the
            # documents quoted, and the playground shows every chunk with its scores.
            found = self.service.retrieve(question, turns, options)
        except (ValueError, InputRejected) as exc:
            yield _notice(str(exc), asked)
            return
        chunks = chunk_table(found)
        yield (
            "",
            found.query,
            chunks,
            "",
            _empty(TOKEN_COLUMNS),
            _empty(TIMING_COLUMNS),
            "Answering…",
            asked,
        )
        answer, result = "", None
        try:
            for event in self.service.stream(question, turns, channel=channel, options=options):
                if isinstance(event, TokenEvent):
                    answer += event.text
                    yield (answer, skip, skip, skip, skip, skip, skip, skip)
                elif isinstance(event, DoneEvent):
                    result = event.result
        except InputRejected as exc:
            yield _notice(exc.message, asked)
            return
        except Exception as exc:  # noqa: BLE001 - staff see the cause instead of a dead page
            log.exception("playground request failed")
            yield _notice(f"The request failed: {type(exc).__name__}: {exc}", asked)
            return
        if result is None:
            yield _notice("The answer stream ended without a result.", asked)
            return
        yield (
            result.answer,
            result.query,
            chunk_table(found, sent_text(result)),
            prompt_text(result, knobs.relevance_threshold, found),
            token_table(result),
            timing_table(result),
            outcome_text(result),
            asked,
        )

    # ----- a question set
    def run_question_set(
        self,
        file: str | None,
        with_answers: bool,
        top_k: float | None = None,
        relevance_threshold: float | None = None,
        length_policy: bool | None = None,
        temperature: float | None = None,
        site: str | None = None,
        progress=gr.Progress(),  # noqa: B008 - Gradio finds its progress bar by this default
    ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
        """Per-question verdicts, the summary and a status line, as `chatbot eval` makes them,
        with the knobs of the page (the configured settings where a knob is not given)."""
        if not file:
            return _set_notice("Upload a JSONL question set first.")
        path = Path(getattr(file, "name", file))
        doubts: list[str] = []
        try:
            # Named as uploaded: the server's folder for uploads is nobody's business.
            questions = load_questions(path, name=path.name, warnings=doubts)
        except OSError:
            return _set_notice(f"Cannot read the question set {path.name}: upload it again.")
        except (UnicodeDecodeError, ValueError) as exc:
            return _set_notice(f"Cannot read the question set: {exc}")
        if not questions:
            return _set_notice("The file holds no questions.")
        if with_answers and self.service.model is None:
            return _set_notice("No chat model is configured: run retrieval only.")
        cfg = self.settings
        knobs = Knobs(
            int(top_k or cfg.retrieval.top_k),
            cfg.retrieval.relevance_threshold
            if relevance_threshold is None
            else relevance_threshold,
            cfg.length_policy.enabled if length_policy is None else length_policy,
            cfg.llm.temperature if temperature is None else temperature,
        )
        try:
            options, channel = self._as_site(knobs, site, Channel.WIDGET.value)
        except ValueError as exc:
            return _set_notice(str(exc))
        k = knobs.top_k
        results: list[dict] = []
        answer = self._eval_answer(with_answers, results, options, channel)
        progress((0, len(questions)), desc="Running the question set")
        started = time.perf_counter()
        try:
            rows, summary = run_eval(
                questions,
                answer,
                k=k,
                with_answers=with_answers,
                progress=lambda done, total: progress((done, total), desc="Questions"),
            )
        except InputRejected as exc:
            number = len(results) + 1
            return _set_notice(f"Question {number}: {exc.message}")
        seconds = time.perf_counter() - started
        table = _question_rows(questions, rows, results, k, with_answers)
        mode = "with answers" if with_answers else "retrieval only"
        status = (
            f"{len(questions)} questions, {mode}, top {k}, relevance threshold "
            f"{knobs.relevance_threshold:.2f}, in {seconds:.1f} s."
        )
        if doubts:
            more = f" (and {len(doubts) - 3} more)" if len(doubts) > 3 else ""
            status += f" Check: {'; '.join(doubts[:3])}{more}."
        return table, summary_table(summary, k), status

    def _eval_answer(
        self, with_answers: bool, results: list[dict], options: AnswerOptions, channel: str
    ) -> Callable[[str, list], dict]:
        options = replace(options, trace=False)

        def answer(question: str, history: list) -> dict:
            if with_answers:
                result = self.service.ask(
                    question, history, channel=channel, options=options
                ).to_dict()
            else:
                result = self.service.retrieval_only(question, history, options).to_dict()
            results.append(result)
            return result

        return answer


def _set_notice(message: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    return _empty(["id"]), _empty(["kind"]), safe_markdown(message)


def _question_rows(
    questions: Sequence, rows: list[dict], results: list[dict], k: int, with_answers: bool
) -> pd.DataFrame:
    """One row per question: its verdicts first, then what was retrieved (and answered)."""

    def verdict(row: dict, metric: str) -> str:
        return "" if metric not in row else ("yes" if row[metric] else "no")

    metrics = ["hit@1", "hit@k", "all_gold@k"] + (["must_include"] if with_answers else [])
    table = []
    for question, row, result in zip(questions, rows, results, strict=True):
        cells = {"id": row["id"], "kind": row["kind"]}
        cells |= {m.replace("@k", f"@{k}"): verdict(row, m) for m in metrics}
        cells["handoff"] = "yes" if row["handoff"] else "no"
        cells["why"] = HANDOFF_REASON_TEXT.get(result.get("handoff_reason", ""), "")
        cells["sources"] = ", ".join(Path(s["source"]).name for s in result["sources"][:k])
        cells["question"] = question.question
        if with_answers:
            cells["answer"] = result.get("answer", "")
        table.append(cells)
    return pd.DataFrame(table)


def summary_table(summary: dict[str, dict], k: int) -> pd.DataFrame:
    """The rates per kind of question, as `chatbot eval` prints them, and which check declined
    the questions that were handed off."""
    flat = {
        kind: {
            name: declined_text(value) if name == "declined_by" else value
            for name, value in stats.items()
        }
        for kind, stats in summary.items()
    }
    table = pd.DataFrame.from_dict(flat, orient="index").round(3)
    table = table.rename(columns=lambda name: name.replace("@k", f"@{k}"))
    table.insert(0, "kind", table.index)
    return table.astype(object).where(table.notna(), "").reset_index(drop=True)


def site_choices(settings: Settings) -> list[tuple[str, str]]:
    """The site picker's entries: none (the chosen channel as configured), then each site."""
    return [("None: the channel as configured", "")] + [
        (f"{site.name} ({site.key})", site.key) for site in settings.sites
    ]


def signed_in_text(request: gr.Request) -> str:
    name = getattr(request, "username", None) or "unknown"
    return f"Signed in as **{safe_markdown(name)}**"


def create_playground(service: ChatService, settings: Settings) -> gr.Blocks:
    """The playground page; mounted by ui.web behind the staff role gate."""
    playground = Playground(service, settings)
    cfg = settings.retrieval
    # Uploaded question sets are deleted from Gradio's cache a day after their upload.
    with gr.Blocks(
        title="Playground", analytics_enabled=False, delete_cache=(3600, 86400)
    ) as blocks:
        with gr.Row():
            gr.Markdown("## Playground\nAsk as a customer would and see why the bot answered.")
            with gr.Column(scale=0, min_width=320):
                gr.HTML(STAFF_LINKS, js_on_load=None, elem_id="playground-links")
                who = gr.Markdown(elem_id="playground-user")
        last = gr.State(None)
        with gr.Tab("Ask"):
            with gr.Row():
                with gr.Column(scale=2):
                    question = gr.Textbox(
                        label="Question",
                        lines=2,
                        max_length=settings.chat.max_message_chars,
                        elem_id="playground-question",
                    )
                    prior = gr.Textbox(
                        label="Prior turns (optional)",
                        lines=3,
                        placeholder="customer: How do I pair a bulb?\nassistant: Open Devices…",
                        info=PRIOR_TURNS_HELP,
                        elem_id="playground-prior-turns",
                    )
                    channel = gr.Radio(
                        CHANNELS,
                        value=Channel.WIDGET.value,
                        label="Ask as",
                        elem_id="playground-channel",
                    )
                    site = gr.Dropdown(
                        site_choices(settings),
                        value="",
                        label="Site",
                        info="Ask as a site: its own channel (in place of 'Ask as'), "
                        "instructions, length policy and knowledge; also used by the question "
                        "set.",
                        elem_id="playground-site",
                    )
                with gr.Column(scale=1):
                    top_k = gr.Slider(
                        1,
                        max(20, cfg.top_k),
                        value=cfg.top_k,
                        step=1,
                        label="Top-k",
                        elem_id="playground-top-k",
                    )
                    threshold = gr.Slider(
                        min(0.0, cfg.relevance_threshold),
                        1.0,
                        value=cfg.relevance_threshold,
                        step=0.01,
                        label="Relevance threshold",
                        elem_id="playground-threshold",
                    )
                    policy = gr.Checkbox(
                        value=settings.length_policy.enabled,
                        label="Length policy",
                        elem_id="playground-length-policy",
                    )
                    temperature = gr.Slider(
                        0.0,
                        2.0,
                        value=settings.llm.temperature,
                        step=0.05,
                        label="Temperature",
                        elem_id="playground-temperature",
                    )
                    gr.Markdown("The knobs apply to this request only.")
            with gr.Row():
                ask = gr.Button("Ask", variant="primary", elem_id="playground-ask")
                rerun = gr.Button("Re-run with these knobs", elem_id="playground-rerun")
            with gr.Row():
                with gr.Column(scale=1):
                    answer = gr.Textbox(
                        label="Answer", lines=8, interactive=False, elem_id="playground-answer"
                    )
                    outcome = gr.Markdown(elem_id="playground-outcome")
                    query = gr.Textbox(
                        label="Standalone query searched",
                        interactive=False,
                        elem_id="playground-query",
                    )
                    tokens = gr.Dataframe(
                        _empty(TOKEN_COLUMNS),
                        label="Tokens per part",
                        interactive=False,
                        elem_id="playground-tokens",
                    )
                    timings = gr.Dataframe(
                        _empty(TIMING_COLUMNS),
                        label="Time per stage (ms)",
                        interactive=False,
                        elem_id="playground-timings",
                    )
                with gr.Column(scale=1):
                    prompt = gr.Textbox(
                        label="Prompt sent to the model",
                        lines=30,
                        max_lines=60,
                        interactive=False,
                        buttons=["copy"],
                        elem_id="playground-prompt",
                    )
            chunks = gr.Dataframe(
                _empty(CHUNK_COLUMNS),
                label="Retrieved chunks",
                interactive=False,
                wrap=True,
                max_height=800,
                column_widths=CHUNK_WIDTHS,
                elem_id="playground-chunks",
            )
        with gr.Tab("Question set"):
            gr.Markdown(
                "Upload a JSONL file in the format of `chatbot eval` (up to 5 MB). The set "
                "runs like `chatbot eval`, with the knobs above and the chosen site."
            )
            questions = gr.File(
                label="Question set (JSONL)", file_types=[".jsonl"], elem_id="playground-set-file"
            )
            with_answers = gr.Checkbox(
                False, label="Also ask the model (slow)", elem_id="playground-set-answers"
            )
            run_set = gr.Button("Run the question set", elem_id="playground-set-run")
            set_status = gr.Markdown(elem_id="playground-set-status")
            set_summary = gr.Dataframe(
                _empty(["kind"]),
                label="Summary",
                interactive=False,
                elem_id="playground-set-summary",
            )
            set_rows = gr.Dataframe(
                _empty(["id"]),
                label="Per question",
                interactive=False,
                wrap=True,
                elem_id="playground-set-rows",
            )

        knobs = [top_k, threshold, policy, temperature]
        outputs = [answer, query, chunks, prompt, tokens, timings, outcome, last]
        events = dict(outputs=outputs, concurrency_id="playground-answer")
        ask.click(playground.ask, [question, prior, channel, *knobs, site], **events)
        question.submit(playground.ask, [question, prior, channel, *knobs, site], **events)
        rerun.click(playground.rerun, [last, *knobs], **events)
        # A question set holds its slot for minutes; one at a time leaves room for questions.
        run_set.click(
            playground.run_question_set,
            [questions, with_answers, *knobs, site],
            [set_rows, set_summary, set_status],
            concurrency_limit=1,
            concurrency_id="playground-question-set",
        )
        blocks.load(signed_in_text, None, who)
    return blocks
