"""Question sets are checked line by line before any question is asked."""

from __future__ import annotations

import json

import pytest

from chatbot.evaluation import load_questions

GOOD = {"id": "q1", "question": "how do i reset the hub", "gold_docs": ["reset-the-hub.md"]}


def write(tmp_path, *lines: str, prefix: bytes = b""):
    path = tmp_path / "set.jsonl"
    path.write_bytes(prefix + "".join(line + "\n" for line in lines).encode("utf-8"))
    return path


def test_a_good_set_with_a_byte_order_mark_and_blank_lines_loads(tmp_path):
    follow_up = {
        **GOOD,
        "id": 2,
        "kind": "follow_up",
        "history": [{"role": "user", "content": "hi"}],
    }
    path = write(tmp_path, json.dumps(GOOD), "", json.dumps(follow_up), prefix=b"\xef\xbb\xbf")

    first, second = load_questions(path)

    assert (first.id, first.kind, first.gold_docs) == ("q1", "answerable", ["reset-the-hub.md"])
    assert (second.id, second.kind, second.history[0]["content"]) == ("2", "follow_up", "hi")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "each line must be one JSON object"),
        (json.dumps({**GOOD, "id": None}), '"id" must be a string or a number'),
        (json.dumps({**GOOD, "id": " "}), '"id" must not be blank'),
        (json.dumps({**GOOD, "question": None}), '"question" must be a non-empty string'),
        (json.dumps({**GOOD, "question": "  "}), '"question" must be a non-empty string'),
        (json.dumps({**GOOD, "gold_docs": "reset-the-hub.md"}), '"gold_docs" must be a list'),
        (json.dumps({**GOOD, "must_include": [5]}), '"must_include" must be a list of strings'),
        (json.dumps({**GOOD, "kind": "easy"}), '"kind" must be one of answerable, follow_up'),
        (json.dumps({**GOOD, "history": [{"role": "bot"}]}), "history item 0 needs role"),
        (json.dumps(GOOD), "the id 'q1' is already used on line 1"),
    ],
)
def test_a_bad_line_is_named_with_its_fault(tmp_path, line, message):
    path = write(tmp_path, json.dumps(GOOD), line)

    with pytest.raises(ValueError) as refused:
        load_questions(path)

    assert str(refused.value).startswith(f"{path}:2: ")
    assert message in str(refused.value)


def test_likely_mistakes_are_warned_of_by_line_and_the_set_still_loads(tmp_path):
    lines = [
        {"id": "q1", "question": "how do i reset the hub", "gold_doc": ["reset-the-hub.md"]},
        {"id": "q2", "question": "how do i reset the hub", "kind": "answerable"},
        {
            "id": "q3",
            "question": "what is the meaning of life",
            "kind": "out_of_scope",
            "gold_docs": ["reset-the-hub.md"],
        },
        GOOD | {"id": "q4"},
    ]
    path = write(tmp_path, *(json.dumps(line) for line in lines))
    warnings: list[str] = []

    questions = load_questions(path, warnings=warnings)

    assert [q.line for q in questions] == [1, 2, 3, 4]
    assert warnings == [
        f"{path}:1: the field 'gold_doc' is not one of id, question, kind, gold_docs, "
        "must_include, history and is ignored",
        f"{path}:2: this answerable question has no gold_docs, so it can score no hit",
        f"{path}:3: gold_docs of an out_of_scope question are not scored",
    ]


def test_a_question_without_gold_docs_scores_no_all_gold_hit():
    from chatbot.evaluation import Question, score_one

    found = {"sources": [{"source": "reset-the-hub.md"}], "handoff": False}
    row = score_one(Question("q", "a question", [], [], "answerable", []), found, 5, False)

    assert (row["hit@1"], row["hit@k"], row["all_gold@k"]) == (False, False, False)


def test_gold_documents_match_by_name_and_by_the_folders_both_name():
    from chatbot.evaluation import Question, score_one, unknown_gold

    def row(gold: list[str], sources: list[str]) -> dict:
        found = {"sources": [{"source": s} for s in sources], "handoff": False}
        return score_one(Question("q", "a question", gold, [], "answerable", []), found, 5, False)

    # The question set may name a document with or without the folder it was ingested from.
    assert row(["faq.md"], ["billing/faq.md"])["hit@1"]
    assert row(["help/billing/faq.md"], ["billing/faq.md"])["hit@1"]
    assert row(["billing\\faq.md"], ["billing/faq.md"])["hit@1"]
    assert row(["../help/faq.md"], ["en/help/faq.md"])["hit@1"]
    # Two documents of one file name in different folders are two documents.
    assert not row(["billing/faq.md"], ["setup/faq.md"])["hit@k"]
    both = row(["billing/faq.md", "setup/faq.md"], ["setup/faq.md", "billing/faq.md"])
    assert both["all_gold@k"] and both["hit@1"]
    one = row(["billing/faq.md", "setup/faq.md"], ["setup/faq.md", "setup/other.md"])
    assert one["hit@1"] and not one["all_gold@k"]

    questions = [
        Question(
            "q",
            "a question",
            ["billing/faq.md", "faq.md", "setup/faq.md"],
            [],
            "answerable",
            [],
            line=3,
        )
    ]
    assert unknown_gold(questions, ["billing/faq.md", "pair.md"], "set.jsonl") == [
        "set.jsonl:3: gold document 'setup/faq.md' is not in the knowledge store "
        "(a misspelt name, or not ingested): it counts as a miss"
    ]


def test_an_empty_set_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no questions"):
        load_questions(write(tmp_path, "", "  "))


def test_the_summary_says_which_check_declined_which_questions():
    from chatbot.evaluation import Question, format_summary, score_one, summarise

    def row(kind: str, gold: list[str], result: dict) -> dict:
        return score_one(Question("q", "a question", gold, [], kind, []), result, 5, False)

    found = {"sources": [{"source": "reset-the-hub.md"}], "handoff": False}
    rows = [
        row("out_of_scope", [], {"handoff": True, "handoff_reason": "no_match"}),
        row("out_of_scope", [], {"handoff": True, "handoff_reason": "off_topic"}),
        row("out_of_scope", [], {"handoff": True, "handoff_reason": "off_topic"}),
        row("out_of_scope", [], found),
        row("answerable", ["reset-the-hub.md"], found),
        row("answerable", ["warranty.md"], {"handoff": True, "handoff_reason": "no_match"}),
    ]

    summary = summarise(rows)

    assert summary["out_of_scope"]["decline_rate"] == 0.75
    assert summary["out_of_scope"]["declined_by"] == {"no_match": 1, "off_topic": 2}
    assert summary["in_scope"]["declined_by"] == {"no_match": 1}
    assert summary["answerable"].get("declined_by") is None
    lines = format_summary(summary, 5).splitlines()
    assert lines[-2:] == [
        "out of scope declined by: no_match 1, off_topic 2",
        "in scope (false) declined by: no_match 1",
    ]
    json.dumps(summary)  # --json prints it
