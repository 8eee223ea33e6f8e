"""The extra Zulip question sets (tests/data) are well formed and point at real articles.

The tuning set chose the off-topic settings beside the development set; the unseen set chose
nothing. Each asks about articles neither the development set nor the other set asks about.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from chatbot.evaluation import IN_SCOPE_KINDS, OUT_OF_SCOPE, load_questions

DATA = Path(__file__).resolve().parents[1] / "data"
UNSEEN = DATA / "zulip_unseen_questions.jsonl"
TUNING = DATA / "zulip_tuning_questions.jsonl"
SETS = {UNSEEN: (60, 30), TUNING: (60, 40)}


@pytest.mark.parametrize("path", SETS, ids=lambda p: p.stem)
def test_question_set_loads_and_is_distinct(path):
    questions = load_questions(path)
    kinds = Counter(q.kind for q in questions)
    assert set(kinds) <= {*IN_SCOPE_KINDS, OUT_OF_SCOPE}
    assert (kinds["answerable"], kinds[OUT_OF_SCOPE]) == SETS[path]
    assert len({q.id for q in questions}) == len(questions)
    assert len({q.question.lower() for q in questions}) == len(questions)
    for q in questions:
        assert bool(q.gold_docs) == (q.kind != OUT_OF_SCOPE), q.id
        assert not q.history, q.id


def test_the_sets_share_no_question():
    unseen = {q.question.lower() for q in load_questions(UNSEEN)}
    assert not unseen & {q.question.lower() for q in load_questions(TUNING)}


@pytest.mark.parametrize("path", SETS, ids=lambda p: p.stem)
def test_question_set_asks_about_articles_no_other_set_asks_about(path, shared_kb):
    questions = load_questions(path)
    others = [shared_kb / "dev_questions.jsonl", *(p for p in SETS if p != path)]
    other_gold = {g for other in others for q in load_questions(other) for g in q.gold_docs}
    for q in questions:
        texts = []
        for gold in q.gold_docs:
            article = shared_kb / "help" / gold
            assert article.is_file(), (q.id, gold)
            texts.append(_with_snippets(article, shared_kb / "help" / "include"))
        for fact in q.must_include:
            assert any(fact.lower() in text for text in texts), (q.id, fact)
    main_articles = {q.gold_docs[0] for q in questions if q.gold_docs}
    assert not main_articles & other_gold
    assert len(main_articles) == SETS[path][0]


def _with_snippets(article: Path, include_dir: Path) -> str:
    """The article's text and the snippets it includes (``{!name.md!}``), lower-cased."""
    text = article.read_text(encoding="utf-8")
    names = re.findall(r"\{!([\w.-]+?)(?:\.md)?!\}", text)
    snippets = [include_dir / f"{name}.md" for name in names]
    return " ".join(
        [text, *(s.read_text(encoding="utf-8") for s in snippets if s.is_file())]
    ).lower()
