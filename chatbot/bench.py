"""Benchmarks that print numbers: conversation memory over a long chat, and answer verbosity.

Both run on whatever model the settings select (by default the embedded local model) and print a
table, or one JSON object with ``--json``.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from chatbot.evaluation import OUT_OF_SCOPE, load_questions
from chatbot.history import turns_from_dicts
from chatbot.length_policy import safe_boundary
from chatbot.service import AnswerOptions, ChatService

# Turn 1 of the scripted conversation and the facts in it that must survive to the end.
OPENING = (
    "Hi! My order number is 58213-LX. I have the Lumora Hub 2 with an iPhone 15, "
    "and I already tried restarting the hub twice."
)
OPENING_FACTS = ["58213-LX", "Hub 2", "iPhone 15", "restarting the hub"]
FILLERS = [
    "ok, thanks. and what about the bulbs?",
    "can you say that again more simply?",
    "does that also work on the app?",
    "what should I try next?",
]


LIST_ITEM_RE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S.*\w")


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def ends_cleanly(text: str) -> bool:
    """The answer ends with a sentence, a list item or a code block, not mid-sentence."""
    text = text.rstrip()
    if not text:
        return True
    return safe_boundary(text, ended=True) >= len(text) or bool(
        LIST_ITEM_RE.match(text.splitlines()[-1])
    )


def memory_benchmark(
    service: ChatService,
    *,
    turns: int,
    window: int,
    questions: list[str],
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """A scripted conversation of ``turns`` customer messages in one stored session."""
    # Measured independently of the planner where possible: the local model's own chat
    # template and tokenizer, as the llama.cpp server renders the prompt.
    measure = getattr(service.counter, "count_chat", None)
    session_id = service.start_session("widget")
    memory_ms: list[float] = []
    ratios: list[float] = []
    errors: list[str] = []
    for number in range(turns):
        if number == 0:
            message = OPENING
        elif number % 2:
            message = questions[(number // 2) % len(questions)]
        else:
            message = FILLERS[(number // 2) % len(FILLERS)]
        result = service.ask(message, session_id=session_id, options=AnswerOptions(trace=True))
        if result.error:
            errors.append(result.error)
        if result.prompt_messages is not None:
            memory_ms.append(result.timings_ms.get("memory", 0.0))
            prompt = measure(result.prompt_messages) if measure else result.usage["prompt_tokens"]
            ratios.append(prompt / window)
        service.memory.wait_idle()
        if progress:
            progress(number + 1, turns)
    session = service.conversations.get_session(session_id)
    assert session is not None
    remembered = (session.summary + "\n" + "\n".join(session.facts)).lower()
    retained = [fact for fact in OPENING_FACTS if fact.lower() in remembered]
    return {
        "turns": turns,
        "window": window,
        "max_prompt_ratio": round(max(ratios, default=0.0), 4),
        "summaries": session.summaries,
        "memory_ms_p50": round(percentile(memory_ms, 0.5), 2),
        "memory_ms_p95": round(percentile(memory_ms, 0.95), 2),
        "facts_retained": round(len(retained) / len(OPENING_FACTS), 4),
        "facts_missing": [f for f in OPENING_FACTS if f not in retained],
        "model_errors": len(errors),
        "prompt_measured_by": "model chat template" if measure else "planner estimate",
    }


def verbosity_benchmark(
    service: ChatService,
    questions_path: Path,
    *,
    channel: str,
    progress: Callable[[int, int], None] | None = None,
    answers_path: Path | None = None,
) -> dict:
    """The same in-scope questions answered with the length policy off and on.

    Only questions answered both ways are compared: one handed off either way counts in neither.
    With ``answers_path``, every answer is written there as one JSON line (id, policy, answer,
    tokens, cut, clean_end, handoff), to read which answers were cut or ended badly.
    """
    questions = [q for q in load_questions(questions_path) if q.kind != OUT_OF_SCOPE]
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    handed_off = 0
    # Opened first, so that a path that cannot be written fails before the long run.
    out = answers_path.open("w", encoding="utf-8") if answers_path is not None else None
    try:
        for number, question in enumerate(questions, start=1):
            history = turns_from_dicts(question.history)
            rows = {}
            for mode in ("off", "on"):
                started = time.perf_counter()
                result = service.ask(
                    question.question,
                    history,
                    channel=channel,
                    options=AnswerOptions(length_policy=mode == "on"),
                )
                answer = result.answer
                if result.cut:
                    answer = answer.rsplit("\n\n", 1)[0]
                rows[mode] = {
                    "id": question.id,
                    "policy": mode,
                    "tokens": result.usage["completion_tokens"],
                    "words": len(answer.split()),
                    "seconds": time.perf_counter() - started,
                    "facts": all(t.lower() in answer.lower() for t in question.must_include),
                    "clean_end": ends_cleanly(answer),
                    "cut": result.cut,
                    "handoff": result.handoff,
                    "answer": result.answer,
                }
                if out is not None:
                    out.write(json.dumps(rows[mode], ensure_ascii=False) + "\n")
            if any(row["handoff"] for row in rows.values()):
                handed_off += 1
            else:
                for mode, row in rows.items():
                    runs[mode].append(row)
            if progress:
                progress(number, len(questions))
    finally:
        if out is not None:
            out.close()

    def stats(rows: list[dict], key: str) -> tuple[float, float]:
        values = [float(r[key]) for r in rows]
        return (round(statistics.fmean(values), 1) if values else 0.0, percentile(values, 0.95))

    summary: dict = {
        "channel": channel,
        "questions": len(questions),
        "answered_both_ways": len(runs["on"]),
        "handed_off": handed_off,
    }
    for mode, rows in runs.items():
        summary[f"tokens_{mode}"], summary[f"tokens_{mode}_p95"] = stats(rows, "tokens")
        summary[f"words_{mode}"], summary[f"words_{mode}_p95"] = stats(rows, "words")
        seconds, seconds_p95 = stats(rows, "seconds")
        summary[f"seconds_{mode}"], summary[f"seconds_{mode}_p95"] = seconds, round(seconds_p95, 2)
        summary[f"facts_{mode}"] = (
            round(sum(r["facts"] for r in rows) / len(rows), 4) if rows else 0.0
        )
    summary["reduction"] = (
        round(1 - summary["tokens_on"] / summary["tokens_off"], 4) if summary["tokens_off"] else 0.0
    )
    summary["cut_on"] = sum(r["cut"] for r in runs["on"])
    summary["cut_mid_sentence"] = sum(not r["clean_end"] for r in runs["on"])
    return summary


def format_table(summary: dict) -> str:
    width = max(len(k) for k in summary)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in summary.items())


def scratch_data_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="chatbot-bench-"))
