"""The second Zulip question set (tests/data) is well formed and points at real articles."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from chatbot.evaluation import IN_SCOPE_KINDS, OUT_OF_SCOPE, load_questions

UNSEEN = Path(__file__).resolve().parents[1] / "data" / "zulip_unseen_questions.jsonl"


def test_unseen_questions_load_and_are_distinct():
    questions = load_questions(UNSEEN)
    kinds = Counter(q.kind for q in questions)
    assert set(kinds) <= {*IN_SCOPE_KINDS, OUT_OF_SCOPE}
    assert kinds["answerable"] == 60 and kinds[OUT_OF_SCOPE] == 30
    assert len({q.id for q in questions}) == len(questions)
    assert len({q.question.lower() for q in questions}) == len(questions)
    for q in questions:
        assert bool(q.gold_docs) == (q.kind != OUT_OF_SCOPE), q.id
        assert not q.history, q.id


def test_unseen_questions_ask_about_other_articles_than_the_dev_set(shared_kb):
    questions = load_questions(UNSEEN)
    dev = load_questions(shared_kb / "dev_questions.jsonl")
    dev_gold = {g for q in dev for g in q.gold_docs}
    for q in questions:
        texts = []
        for gold in q.gold_docs:
            article = shared_kb / "help" / gold
            assert article.is_file(), (q.id, gold)
            texts.append(_with_snippets(article, shared_kb / "help" / "include"))
        for fact in q.must_include:
            assert any(fact.lower() in text for text in texts), (q.id, fact)
    main_articles = {q.gold_docs[0] for q in questions if q.gold_docs}
    assert not main_articles & dev_gold
    assert len(main_articles) == 60


def _with_snippets(article: Path, include_dir: Path) -> str:
    """The article's text and the snippets it includes (``{!name.md!}``), lower-cased."""
    text = article.read_text(encoding="utf-8")
    names = re.findall(r"\{!([\w.-]+?)(?:\.md)?!\}", text)
    snippets = [include_dir / f"{name}.md" for name in names]
    return " ".join(
        [text, *(s.read_text(encoding="utf-8") for s in snippets if s.is_file())]
    ).lower()
