"""The verbosity benchmark: the same questions with the length policy off and on, compared fairly."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chatbot.bench import verbosity_benchmark
from chatbot.prompts import NO_ANSWER_REPLY
from chatbot.service import ChatService
from knowledge.ingest import ingest_paths
from knowledge.retriever import HybridRetriever
from tests.chatbot.test_length_policy import ScriptedChatModel

pytestmark = pytest.mark.slow  # loads the embedding model

DOC = """# Descaling the Lumora Smart Kettle

Limescale builds up in the Lumora Smart Kettle after about three months of daily use.

## How to descale

1. Fill the kettle with equal parts water and white vinegar up to the MAX line.
2. Hold the Brew button for seven seconds until the ring glows amber.
3. Wait twenty minutes, then rinse the kettle twice with clean water.

## Filters

The kettle has a mesh limescale filter behind the spout.
"""
LONG_ANSWER = " ".join(
    [
        "Fill the kettle with water and white vinegar up to the MAX line [1].",
        "Then hold the Brew button for seven seconds until the ring glows amber [1].",
        "After twenty minutes, rinse the kettle twice with clean water [1].",
        "Descale it about every three months if you use it daily [1].",
    ]
    * 3
)
QUESTIONS = [
    {"id": "q1", "question": "How do I descale the kettle?", "must_include": ["vinegar"]},
    {"id": "q2", "question": "How often should I descale it?", "must_include": ["vinegar"]},
    {"id": "q3", "question": "Can I buy a spare limescale filter?", "must_include": []},
    {"id": "q4", "question": "Any good pizza near the station?", "kind": "out_of_scope"},
]


class WordModel(ScriptedChatModel):
    """Streams a word at a time, stopping at ``max_tokens``; declines questions about filters."""

    text: str = LONG_ANSWER

    def parts(self, messages) -> list[str]:
        text = NO_ANSWER_REPLY if "filter" in str(messages[-1].content) else self.text
        return [word + " " for word in text.split()]


@pytest.fixture
def bench_setup(tmp_path, settings, store) -> Iterator[tuple[ChatService, WordModel, object]]:
    docs = tmp_path / "kb"
    docs.mkdir()
    (docs / "kettle.md").write_text(DOC, encoding="utf-8")
    assert ingest_paths(store, [docs]).ok
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"gold_docs": ["kettle.md"], "kind": "answerable"} | q) + "\n"
            for q in QUESTIONS
        ),
        encoding="utf-8",
    )
    cfg = settings.model_copy(
        update={
            "llm": settings.llm.model_copy(update={"max_output_tokens": 400}),
            "length_policy": settings.length_policy.model_copy(
                update={
                    "widget": settings.length_policy.widget.model_copy(
                        update={"target_words": 20, "max_tokens": 30}
                    )
                }
            ),
        }
    )
    model = WordModel()
    service = ChatService(cfg, store, HybridRetriever(store), model)
    yield service, model, questions
    service.close()


def test_policy_off_and_on_are_compared_on_the_same_answered_questions(bench_setup, tmp_path):
    service, model, questions = bench_setup
    answers = tmp_path / "answers.jsonl"

    summary = verbosity_benchmark(service, questions, channel="widget", answers_path=answers)

    assert summary["questions"] == 3, "out-of-scope questions are not asked"
    assert (summary["answered_both_ways"], summary["handed_off"]) == (2, 1)
    # The fake model reports no usage, so tokens are the service's own count of the answer.
    assert summary["tokens_off"] == service.counter.count(
        "".join(w + " " for w in LONG_ANSWER.split())
    )
    assert summary["tokens_on"] < summary["tokens_off"]
    assert summary["reduction"] == round(1 - summary["tokens_on"] / summary["tokens_off"], 4)
    assert (summary["facts_off"], summary["facts_on"]) == (1.0, 1.0)
    assert (summary["cut_on"], summary["cut_mid_sentence"]) == (2, 0)
    assert sorted(kwargs.get("max_tokens") for _, kwargs in model.calls) == [30] * 3 + [400] * 3

    rows = [json.loads(line) for line in answers.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["policy"]) for r in rows] == [
        (q, p) for q in ("q1", "q2", "q3") for p in ("off", "on")
    ]
    assert {r["id"] for r in rows if r["handoff"]} == {"q3"}
    assert all(r["answer"] for r in rows)


def test_an_answers_file_that_cannot_be_written_fails_before_any_question(bench_setup, tmp_path):
    service, model, questions = bench_setup

    with pytest.raises(FileNotFoundError):
        verbosity_benchmark(
            service, questions, channel="widget", answers_path=tmp_path / "no" / "such.jsonl"
        )

    assert model.calls == []
