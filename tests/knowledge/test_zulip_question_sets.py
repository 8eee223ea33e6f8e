"""The extra Zulip question sets (tests/data) are well formed and point at real articles.

The tuning set chose the off-topic settings beside the development set; the unseen set chose
nothing. Each asks about articles neither the development set nor the other set asks about.
The follow-up set (follow-ups with one earlier exchange, and questions that need two articles)
asks about none of the development set's articles. The same-articles set asks about the
development set's own articles in other words, as a held-out set on them would. The product set
names another company's product in every question: half ask how it meets Zulip (an import, a
sign-in, a link), half ask about that product itself. The compliance set's answerable questions
give a regulation or audit as the customer's reason for a how-to; its out-of-scope ones ask
about the vendor's own compliance, certifications and assurances.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from chatbot.evaluation import IN_SCOPE_KINDS, OUT_OF_SCOPE, load_questions
from knowledge.off_topic import BUNDLED_PRODUCTS, OtherProducts

DATA = Path(__file__).resolve().parents[1] / "data"
UNSEEN = DATA / "zulip_unseen_questions.jsonl"
TUNING = DATA / "zulip_tuning_questions.jsonl"
FOLLOW_UPS = DATA / "zulip_followup_questions.jsonl"
SAME_ARTICLES = DATA / "zulip_same_articles_questions.jsonl"
PRODUCTS = DATA / "zulip_product_questions.jsonl"
COMPLIANCE = DATA / "zulip_compliance_questions.jsonl"
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


def test_follow_up_set_has_one_exchange_before_each_follow_up_and_two_articles_per_multi_doc():
    questions = load_questions(FOLLOW_UPS)
    assert Counter(q.kind for q in questions) == {"follow_up": 40, "multi_doc": 15}
    assert len({q.id for q in questions}) == len({q.question.lower() for q in questions}) == 55
    for q in questions:
        if q.kind == "follow_up":
            assert [turn["role"] for turn in q.history] == ["user", "assistant"], q.id
            assert len(q.gold_docs) == 1, q.id
        else:
            assert not q.history and len(set(q.gold_docs)) == 2, q.id
    follow_up_articles = [q.gold_docs[0] for q in questions if q.kind == "follow_up"]
    assert len(set(follow_up_articles)) == len(follow_up_articles)


def test_follow_up_set_asks_about_real_articles_the_development_set_does_not(shared_kb):
    dev_gold = {g for q in load_questions(shared_kb / "dev_questions.jsonl") for g in q.gold_docs}
    for q in load_questions(FOLLOW_UPS):
        for gold in q.gold_docs:
            assert (shared_kb / "help" / gold).is_file(), (q.id, gold)
            assert gold not in dev_gold, (q.id, gold)


def test_same_articles_set_asks_about_the_development_sets_articles_in_other_words(shared_kb):
    questions = load_questions(SAME_ARTICLES)
    dev = load_questions(shared_kb / "dev_questions.jsonl")
    dev_gold = {g for q in dev for g in q.gold_docs}
    assert Counter(q.kind for q in questions) == {
        "answerable": 30,
        "follow_up": 15,
        "multi_doc": 5,
        OUT_OF_SCOPE: 10,
    }
    assert len({q.id for q in questions}) == len(questions)
    assert not {q.question.lower() for q in questions} & {q.question.lower() for q in dev}
    for q in questions:
        assert bool(q.gold_docs) == (q.kind != OUT_OF_SCOPE), q.id
        assert set(q.gold_docs) <= dev_gold, q.id
        assert (q.kind == "follow_up") == bool(q.history), q.id
        texts = [
            _with_snippets(shared_kb / "help" / gold, shared_kb / "help" / "include")
            for gold in q.gold_docs
        ]
        for fact in q.must_include:
            assert any(fact.lower() in text for text in texts), (q.id, fact)
    assert {g for q in questions for g in q.gold_docs} == dev_gold


def test_product_set_names_another_product_in_every_question():
    questions = load_questions(PRODUCTS)
    products = OtherProducts.from_file(BUNDLED_PRODUCTS)

    assert Counter(q.kind for q in questions) == {"answerable": 40, OUT_OF_SCOPE: 30}
    assert len({q.id for q in questions}) == len(questions)
    assert len({q.question.lower() for q in questions}) == len(questions)
    for q in questions:
        assert products.named_in(q.question), q.id
        assert bool(q.gold_docs) == (q.kind != OUT_OF_SCOPE), q.id
        assert not q.history and not q.must_include, q.id


def test_product_set_asks_about_real_articles(shared_kb):
    for q in load_questions(PRODUCTS):
        for gold in q.gold_docs:
            assert (shared_kb / "help" / gold).is_file(), (q.id, gold)


def test_compliance_set_is_three_authors_halves_of_answerable_and_out_of_scope_questions():
    questions = load_questions(COMPLIANCE)

    assert Counter(q.kind for q in questions) == {"answerable": 85, OUT_OF_SCOPE: 85}
    assert Counter(q.id[:2] for q in questions) == {"cq": 60, "cr": 50, "cs": 60}
    for part in ("cq", "cr", "cs"):
        kinds = Counter(q.kind for q in questions if q.id.startswith(part))
        assert kinds["answerable"] == kinds[OUT_OF_SCOPE], part
    assert len({q.id for q in questions}) == len(questions)
    assert len({q.question.lower() for q in questions}) == len(questions)
    for q in questions:
        assert bool(q.gold_docs) == (q.kind != OUT_OF_SCOPE), q.id
        assert not q.history, q.id


def test_compliance_set_asks_about_real_articles(shared_kb):
    include = shared_kb / "help" / "include"
    for q in load_questions(COMPLIANCE):
        texts = [_with_snippets(shared_kb / "help" / gold, include) for gold in q.gold_docs]
        for fact in q.must_include:
            assert any(fact.lower() in text for text in texts), (q.id, fact)
